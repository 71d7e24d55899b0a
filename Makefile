# A fresh machine needs two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-slow bench clean-demo

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The main job, end to end on the default warehouse (data/warehouse): the demo study
# (studies/demo.toml).
demo: $(STAMP)
	$(VENV)/bin/retland study demo

# Two workers (one per core on CI), each test file on one worker so it keeps its shared
# compiled programs and trained fixtures.
test: $(STAMP)
	$(VENV)/bin/ruff check --quiet .
	$(PY) -m pytest -q -n 2 --dist loadfile

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) benchmarks/warehouse.py
