"""The HTML report: sections from SQL, charts as Vega-Lite, one offline page.

The warehouse here is synthetic but shaped like the study: two algorithms on two
environments, two seeds, three checkpoints each, returns that grow with training and
a left tail of failures in some checkpoints (so LTP > 0), one checkpoint with negative
returns (LTP undefined), one gaussian-operator distribution beside the algorithms' own
updates, and learning curves in `evaluations`.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

N_SAMPLES = 200
STEPS = (50_000, 450_000, 950_000)
BASE = {"hopper": 3000.0, "walker2d": 4200.0}


def synthetic_returns(seed: int = 0) -> pl.DataFrame:
    """Rows for `retland import-returns`: one PURD per (algo, env, seed, step[, operator])."""
    rng = np.random.default_rng(seed)
    rows = []
    for algo in ("td3", "sac"):
        for env, base in BASE.items():
            for s in (0, 1):
                for step in STEPS:
                    level = base * (0.25 + 0.75 * step / STEPS[-1]) * (1.0 if algo == "td3" else 0.9)
                    if (algo, env, s, step) == ("sac", "walker2d", 1, STEPS[0]):
                        r = rng.normal(-40.0, 15.0, N_SAMPLES)  # a policy that falls over: mode < 0
                    else:
                        p_fail = [0.0, 0.04, 0.15, 0.3][(s + STEPS.index(step) + (algo == "sac")) % 4]
                        fail = rng.random(N_SAMPLES) < p_fail
                        r = np.where(fail, level * rng.uniform(0.05, 0.45, N_SAMPLES),
                                     rng.normal(level, 0.03 * level, N_SAMPLES))
                    ops = [algo] + (["gaussian[sigma=0.0003]"] if (algo, env, s, step) == ("td3", "hopper", 0, STEPS[2]) else [])
                    for op in ops:
                        rows += [{"algo": algo, "env": env, "seed": s, "step": step, "operator": op,
                                  "update_index": i, "return": float(x)} for i, x in enumerate(r)]
    return pl.DataFrame(rows)


def build_warehouse(root: Path):
    """A warehouse with the synthetic returns imported and learning curves appended."""
    from retland.importing import import_returns
    from retland.warehouse import Warehouse

    wh = Warehouse.open(root)
    csv = root.parent / "returns.csv"
    synthetic_returns().write_csv(csv)
    import_returns(wh, csv, tag="synth")
    runs = wh.query("SELECT run_id, algo, env, seed FROM runs")
    evals = []
    for run_id, algo, env, seed in runs.iter_rows():
        for k, step in enumerate(range(0, 1_000_001, 50_000)):
            level = BASE[env] * (1 - np.exp(-step / 300_000)) * (1.0 if algo == "td3" else 0.9)
            evals.append({"run_id": run_id, "step": step, "eval_return": level + 80.0 * np.sin(k + seed),
                          "episode_length": 1000})
    wh.append("evaluations", evals)
    return wh


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return build_warehouse(tmp_path_factory.mktemp("report") / "study")
