"""The analyst's notebook (examples/analysis.ipynb) runs top to bottom against a filled
warehouse: `make test-notebook` (CI) runs the demo study, then this test on its warehouse.
Elsewhere it runs when RETLAND_NOTEBOOK_WAREHOUSE names a warehouse, and skips otherwise
(it needs sampled distributions, minutes of work `make test` leaves to that target)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "analysis.ipynb"


def test_the_notebook_runs_against_a_filled_warehouse(tmp_path):
    where = os.environ.get("RETLAND_NOTEBOOK_WAREHOUSE")
    if not where:
        if os.environ.get("RETLAND_NOTEBOOK_REQUIRED"):
            pytest.fail("RETLAND_NOTEBOOK_WAREHOUSE is not set: run `make test-notebook`")
        pytest.skip("set RETLAND_NOTEBOOK_WAREHOUSE to a sampled warehouse (make test-notebook does)")
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {"RETLAND_WAREHOUSE": str(Path(where).resolve())}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits the environment
    try:
        nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}}).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "stream")
    assert "samples" in text and "95% CI" in text
    # the two chart cells drew charts (Altair's renderer: a Vega-Lite mime bundle or its HTML)
    charts = [o for c in nb.cells for o in c.get("outputs", []) if any(
        k.startswith("application/vnd.vegalite") or (k == "text/html" and "vega" in "".join(v))
        for k, v in o.get("data", {}).items())]
    assert len(charts) == 2
