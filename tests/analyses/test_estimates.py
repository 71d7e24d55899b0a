"""Estimates from measured throughput: training jobs' evaluations become a rate per
(algo, task, device, seeds); none is made up for a device nothing ran on. (Sampling's
chunk timings are tested with the sampler, tests/purd/test_sampling.py.)"""
from __future__ import annotations

import pytest

from analysis_jobs import TINY_TD3, tiny_job
from retland.analyses.estimates import current_device, fmt_seconds, training_rate


def test_a_trained_job_records_its_stretches_and_gives_a_training_rate_on_its_device(monkeypatch, tmp_path):
    from retland.train import job
    from retland.warehouse import Warehouse

    # A job of its own (tiny_job's is shared by the worker's tests, and may have been trained
    # before this test), with the process's record of timed programs empty: an earlier test
    # may have run the same program, and then the first stretch would not hold the compile.
    monkeypatch.setattr(job, "_TIMED", set())
    wh = Warehouse.open(tmp_path / "wh")
    result = job.train(TINY_TD3, wh)
    t = wh.records("SELECT * FROM training_timings WHERE job_id = ? ORDER BY from_step", [result.job_id])
    # stops at learning_starts (40), the evaluation-checkpoints 60 and 120: one row each
    assert [(r["from_step"], r["to_step"]) for r in t] == [(0, 40), (40, 60), (60, 120)]
    assert [r["includes_compile"] for r in t] == [True, False, False]
    assert [r["warmup"] for r in t] == [True, False, False]
    assert all(r["env_steps"] == TINY_TD3.seeds * (r["to_step"] - r["from_step"]) and r["seconds"] > 0
               and r["source"] == "job" and r["device"] == current_device() and r["seeds"] == TINY_TD3.seeds
               for r in t)
    rows = wh.records("SELECT * FROM training_throughput WHERE algo = 'td3'")
    assert len(rows) == 1
    row = rows[0]
    assert (row["seeds"], row["jobs"], row["source"], row["stretches"]) == (TINY_TD3.seeds, 1, "job", 3)
    assert row["steady_env_steps"] == TINY_TD3.seeds * 80  # 40 -> 120, no compile, no warm-up
    assert row["steady_seconds"] == pytest.approx(t[1]["seconds"] + t[2]["seconds"])
    assert row["first_seconds"] == pytest.approx(t[0]["seconds"]) and row["first_env_steps"] == 2 * 40
    kw = dict(algo="td3", env=TINY_TD3.env, variant=TINY_TD3.variant, backend=TINY_TD3.backend,
              device=current_device())
    rate = training_rate(wh, seeds=20, **kw)  # the closest seed count measured: 2
    assert rate.env_steps_per_second == pytest.approx(row["steady_env_steps"] / row["steady_seconds"])
    assert "2 seed(s)" in rate.measured_on and not rate.calibrated
    expect = max(0.0, t[0]["seconds"] - 80 / rate.env_steps_per_second)
    assert rate.overhead_seconds == pytest.approx(expect)
    assert rate.seconds(1e6) == pytest.approx(expect + 1e6 / rate.env_steps_per_second)
    assert training_rate(wh, seeds=2, **{**kw, "device": "gpu:no such card"}) is None
    assert training_rate(wh, seeds=2, **{**kw, "algo": "sac"}) is None


def test_jobs_from_before_training_timings_are_measured_end_to_end(tmp_path):
    """A warehouse whose job committed no training_timings (retland before them): the
    evaluations' wall clock gives its rate, compile included."""
    import shutil

    from retland.warehouse import Warehouse

    wh, result = tiny_job()
    root = tmp_path / "old"
    shutil.copytree(wh.root, root)
    old = Warehouse.open(root)
    parts = [p for p in (root / "tables").rglob("*.parquet") if "training_timings" in str(p)]
    assert parts
    for p in parts:
        p.unlink()
    rows = old.records("SELECT * FROM training_throughput WHERE algo = 'td3'")
    assert [(r["source"], r["seeds"], r["steady_env_steps"]) for r in rows] == [("evaluations", 2, 240)]
    rate = training_rate(old, algo="td3", env=TINY_TD3.env, variant=TINY_TD3.variant, backend=TINY_TD3.backend,
                         device=current_device(), seeds=2)
    assert "end to end" in rate.measured_on and rate.overhead_seconds == 0


@pytest.mark.parametrize("s, text", [(None, "-"), (12.4, "12 s"), (600, "10 min"), (3 * 3600, "3.0 h")])
def test_durations_read_as_a_person_says_them(s, text):
    assert fmt_seconds(s) == text
