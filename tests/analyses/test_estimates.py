"""Estimates from measured throughput: training jobs' evaluations become a rate per
(algo, task, device, seeds); none is made up for a device nothing ran on. (Sampling's
chunk timings are tested with the sampler, tests/purd/test_sampling.py.)"""
from __future__ import annotations

import pytest

from analysis_jobs import TINY_TD3, tiny_job
from retland.analyses.estimates import current_device, fmt_seconds, training_rate


def test_a_trained_job_gives_a_training_rate_on_its_device():
    wh, result = tiny_job()
    rows = wh.records("SELECT * FROM training_throughput WHERE algo = 'td3'")
    assert len(rows) == 1
    row = rows[0]
    assert (row["seeds"], row["jobs"], row["env_steps"]) == (TINY_TD3.seeds, 1, TINY_TD3.seeds * TINY_TD3.total_steps)
    assert row["device"] == current_device() and row["seconds"] > 0
    kw = dict(algo="td3", env=TINY_TD3.env, variant=TINY_TD3.variant, backend=TINY_TD3.backend,
              device=current_device())
    rate = training_rate(wh, seeds=20, **kw)  # the closest seed count measured: 2
    assert rate.env_steps_per_second == pytest.approx(row["env_steps"] / row["seconds"])
    assert "2 seed(s)" in rate.measured_on
    assert rate.seconds(1e6) == pytest.approx(1e6 / rate.env_steps_per_second)
    assert training_rate(wh, seeds=2, **{**kw, "device": "gpu:no such card"}) is None
    assert training_rate(wh, seeds=2, **{**kw, "algo": "sac"}) is None


@pytest.mark.parametrize("s, text", [(None, "-"), (12.4, "12 s"), (600, "10 min"), (3 * 3600, "3.0 h")])
def test_durations_read_as_a_person_says_them(s, text):
    assert fmt_seconds(s) == text
