"""benchmarks/gpu_study.py --tiny: the GPU check's code path, on CPU, with polars and altair
made unimportable (as on a GPU node that has only a CUDA jax stack and a few extra wheels)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import retland

ROOT = Path(__file__).resolve().parents[1]


def test_tiny_gpu_study_trains_samples_and_writes_without_polars(tmp_path):
    """Two calls, as a device session runs them: the first with a 2 s time limit (on a CPU
    the compile alone outlasts it, so it stops in training before its first checkpoint),
    the second going on from there to the end; polars, altair, brax and mujoco
    unimportable (the paper variant's physics is retland's own: a GPU node needs neither
    wheel). Stopping training at a checkpoint is tested in tests/agents/test_agents.py;
    sampling's stop is the engine's Ctrl-C path (its finished chunks flushed)."""
    out = tmp_path / "study"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "gpu_study.py"), "--tiny", "--sample-seeds", "all",
           "--forbid", "polars,altair,brax,mujoco", "--out", str(out)]
    first = subprocess.run(cmd + ["--time-limit", "0:02"], capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-4000:]
    assert "stopped by --time-limit" in first.stdout, first.stdout[-2000:]
    assert not (out / "summary.json").exists()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    stages = json.loads((out / "stages.json").read_text())
    assert [c["status"] for c in stages["calls"]][-1] == "complete" and len(stages["calls"]) == summary["calls"] == 2
    assert stages["calls"][0]["status"].startswith("time limit in ")
    assert summary["stages"]["sample"]["rows"] == summary["rows"]  # over both calls, each row once
    assert summary["polars_imported"] is False
    # the report needs polars: it is skipped with the command that makes it later
    assert "report: skipped" in proc.stdout and "retland report -w" in proc.stdout
    assert "report" not in summary
    for key in ("train_env_steps_per_s", "sample_env_steps_per_s", "bare_rollout_env_steps_per_s",
                "sample_to_bare_ratio"):
        assert summary[key] > 0, key
    # what it wrote is an ordinary warehouse: every checkpoint of every seed holds exactly N td3 samples
    wh = retland.Warehouse.open(summary["warehouse"], create=False)
    got = wh.query("SELECT run_id, step, count(*) AS n, count(DISTINCT update_index) AS k, min(update_index) AS lo, "
                   "max(update_index) AS hi FROM post_update_returns GROUP BY ALL ORDER BY run_id, step").to_dicts()
    n = summary["samples_per_checkpoint"]
    assert summary["sampled_runs"] == summary["seeds"] == len({g["run_id"] for g in got})
    assert [g["step"] for g in got] == summary["checkpoints"] * summary["seeds"]
    assert all(g["n"] == g["k"] == n and g["lo"] == 0 and g["hi"] == n - 1 for g in got), got
    runs = wh.query("SELECT count(*) AS n FROM runs WHERE source = 'trained'")["n"][0]
    assert runs == summary["seeds"]
