# A fresh machine needs two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Extras installed with the package, comma-separated: `make install EXTRAS=test,dmc` adds
# the DeepMind Control tasks (constraints.txt pins them too). Each set gets its own stamp.
EXTRAS ?= test
comma  := ,
STAMP  := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

# The newest JAX pip gives for this interpreter (inside pyproject's range), in a second
# venv, for the engine's tests: `make test-newest-jax`; on Python 3.12 (where pip gives
# jax 0.12): `make test-newest-jax PYTHON=python3.12 NEWJAX_VENV=.venv-newjax312`.
# `rm -r .venv-newjax` to pick up a newer release.
NEWJAX_VENV  ?= .venv-newjax
NEWJAX_PY    := $(NEWJAX_VENV)/bin/python
NEWJAX_STAMP := $(NEWJAX_VENV)/.installed
# Environments and tasks, rollouts, update operators, sampling (warehouse rows, resume),
# and training smoke runs of every agent: the parts whose results JAX computes. Left out
# for time (make test runs them): walker2d's and ant's task rules, which compile their own
# physics (hopper's stay), and the two-chunk-size distribution comparison.
NEWJAX_TESTS ?= tests/core/test_tasks.py tests/core/test_rollout.py tests/purd/test_operators.py tests/purd/test_sampling.py \
                tests/agents/test_agents.py tests/agents/test_agents_sac_ppo.py
NEWJAX_K ?= not walker2d and not ant_contacts and not another_chunk_size
NEWJAX_PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: install demo test test-newest-jax test-dmc test-minatar test-oracle test-crash test-notebook test-start-states test-slow test-slurm bench clean-demo gpu-wheels

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[$(EXTRAS)]'
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

# The second tested set: constraints.txt with jax, jaxlib and flax left free. flax is freed
# with JAX: the pinned 0.12.6 (the newest that runs on jax 0.9.2) calls
# jax.core.get_opaque_trace_state, which jax 0.12 removed; later flax needs jax >= 0.10.
constraints-newest-jax.txt: constraints.txt
	{ echo "# Made by make from constraints.txt: the same pins, jax, jaxlib and flax left free, so pip"; \
	  echo "# takes the newest JAX inside pyproject's range for the interpreter (make test-newest-jax)."; \
	  grep -v -E '^(#|jax==|jaxlib==|flax==)' constraints.txt; } > $@

$(NEWJAX_STAMP): pyproject.toml constraints-newest-jax.txt
	test -x $(NEWJAX_PY) || $(PYTHON) -m venv $(NEWJAX_VENV)
	echo '*' > $(NEWJAX_VENV)/.gitignore
	$(NEWJAX_PY) -m pip install -q --upgrade pip
	$(NEWJAX_PY) -m pip install -q --upgrade -c constraints-newest-jax.txt -e '.[$(EXTRAS)]' jax jaxlib flax
	$(NEWJAX_PY) -m pip freeze --exclude-editable > $(NEWJAX_VENV)/installed-set.txt
	touch $(NEWJAX_STAMP)

test-newest-jax: $(NEWJAX_STAMP)
	@$(NEWJAX_PY) -c "import sys, jax, jaxlib, flax; print(f'newest JAX: jax {jax.__version__}, jaxlib {jaxlib.__version__}, flax {flax.__version__}, Python {sys.version.split()[0]}')"
	RETLAND_JAX_CACHE=$(abspath $(NEWJAX_VENV))/jax-cache-tests $(NEWJAX_PY) -m pytest -q $(NEWJAX_PYTEST_ARGS) -k "$(NEWJAX_K)" $(NEWJAX_TESTS)

# The DeepMind Control tasks: installs the dmc extra (MuJoCo Playground) into .venv and runs
# every test of tests/core/test_dmc.py, slow ones included (a TD3 train/sample/stats run on
# cheetah-run). CI runs it after make test; `make test` skips them while the extra is absent.
test-dmc:
	$(MAKE) install EXTRAS=test,dmc
	$(PY) -m pytest -q -m "slow or not slow" tests/core/test_dmc.py

# The MinAtar games (the minatar extra: gymnax): installs it into .venv and runs every test
# of tests/core/test_minatar.py, slow ones included (PPO train/sample/stats/interpolate on
# minatar-breakout). CI runs it after make test; `make test` skips them while the extra is absent.
test-minatar:
	$(MAKE) install EXTRAS=test,minatar
	$(PY) -m pytest -q -m "slow or not slow" tests/core/test_minatar.py

# Brax 0.0.13 itself as an oracle for retland's brax0013 simulator (the paper variant's
# physics): a separate venv (tests/oracle/requirements.txt), the policies to roll out,
# recordings of 0.0.13's behaviour made there (float32 and float64), tests/core/test_oracle.py
# against each, and the table of residuals (benchmarks/oracle.py).
ORACLE_VENV  ?= .venv-oracle
ORACLE_DIR   ?= .oracle
ORACLE_STAMP := $(ORACLE_VENV)/.installed

$(ORACLE_STAMP): tests/oracle/requirements.txt
	test -x $(ORACLE_VENV)/bin/python || $(PYTHON) -m venv $(ORACLE_VENV)
	echo '*' > $(ORACLE_VENV)/.gitignore
	$(ORACLE_VENV)/bin/python -m pip install -q --upgrade pip
	$(ORACLE_VENV)/bin/python -m pip install -q -r tests/oracle/requirements.txt
	$(ORACLE_VENV)/bin/python -m pip install -q --no-deps brax==0.0.13
	touch $(ORACLE_STAMP)

test-oracle: $(STAMP) $(ORACLE_STAMP)
	rm -rf $(ORACLE_DIR) && mkdir -p $(ORACLE_DIR)
	echo '*' > $(ORACLE_DIR)/.gitignore
	$(PY) tests/oracle/export_policies.py --out $(ORACLE_DIR)/policies
	$(ORACLE_VENV)/bin/python -W ignore tests/oracle/record.py --policies $(ORACLE_DIR)/policies --out $(ORACLE_DIR)/reference
	$(ORACLE_VENV)/bin/python -W ignore tests/oracle/record.py --x64 --out $(ORACLE_DIR)/reference
	RETLAND_ORACLE_DIR=$(abspath $(ORACLE_DIR)) $(PY) -m pytest -q -p no:cacheprovider tests/core/test_oracle.py
	RETLAND_ORACLE_DIR=$(abspath $(ORACLE_DIR)) JAX_ENABLE_X64=1 $(PY) -m pytest -q -p no:cacheprovider tests/core/test_oracle.py
	$(PY) benchmarks/oracle.py $(ORACLE_DIR)

# kill -9 at every write point of `train`, `sample` and `import-returns` (each try a process,
# those of train and sample compile): the warehouse keeps whole commits only, and
# resume/rerun finishes. CI runs it after make test, on two workers (one test each).
test-crash: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist load -m slow -k kill_9 tests/warehouse/test_store_trust.py

# Start states from replay rows (A.4): brax 0.14's hopper restores too, and storing states
# leaves training bit for bit unchanged (two tiny trainings, slow-marked). CI runs it.
test-start-states: $(STAMP)
	$(PY) -m pytest -q -m slow tests/analyses/test_start_states.py

# The main job (make demo, on data/warehouse), then the analyst's notebook
# (examples/analysis.ipynb) executed top to bottom against the warehouse it filled.
test-notebook: $(STAMP)
	$(MAKE) demo
	RETLAND_NOTEBOOK_WAREHOUSE=$(abspath data/warehouse) RETLAND_NOTEBOOK_REQUIRED=1 \
	  $(PY) -m pytest -q -p no:cacheprovider tests/test_notebook.py

# Sampling arrays on a real SLURM: .ci/slurm-up starts a one-node cluster on this host (as
# root, no systemd: Debian's munge, slurmctld and slurmd, installed if missing), then the
# slurm-marked tests submit arrays to it (tests/purd/test_slurm.py). CI runs it last.
test-slurm: $(STAMP)
	.ci/slurm-up
	$(PY) -m pytest -q -p no:cacheprovider -m slurm tests/purd/test_slurm.py

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) benchmarks/warehouse.py

# Wheels for a GPU node that has only a CUDA jax stack (jax, flax, optax, orbax-checkpoint,
# numpy, scipy, pyarrow, rich, typer): what the paper variant's compute path (train,
# sample, the warehouse) needs beyond it, at constraints.txt's versions, for CPython
# $(GPU_PY) on x86-64, into .whl/ (git-ignored; benchmarks/device_check.sh installs it
# there). The paper variant's physics is retland's own, so brax and mujoco are not needed
# (tests/test_gpu_study.py runs the path with them unimportable); add them to GPU_WHEELS
# for variant brax.
GPU_PY     ?= 3.12
GPU_WHEELS ?= duckdb pydantic pydantic_core annotated-types typing-inspection
gpu-wheels:
	rm -rf .whl && mkdir -p .whl
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version $(GPU_PY) --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 --platform any -d .whl \
	  $(foreach w,$(GPU_WHEELS),$(w)$(shell grep -i '^$(w)==' constraints.txt | sed 's/^[^=]*//'))
	@du -sh .whl
