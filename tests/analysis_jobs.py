"""The tiny TD3 job the analysis tests share (trained once per pytest process).

2 seeds, 20-step episodes, 16-unit nets, checkpoints at env steps 60 and 120: the
smallest job that has same-run pairs, different-run pairs and a replay buffer for the
td3 operator. Each test module opens it for its own tables.
"""
from __future__ import annotations

import functools
import tempfile
from pathlib import Path

from retland.train.config import TD3Config, TrainConfig

TINY_TD3 = TrainConfig(
    env="hopper", seeds=2, total_steps=120, checkpoints=(60, 120), eval_every=60, horizon=20,
    agent=TD3Config(hidden=(16, 16), batch_size=8, learning_starts=40, buffer_size=120),
)


@functools.lru_cache(maxsize=None)
def tiny_job():
    """(warehouse, TrainResult) in a temporary folder."""
    from retland.train.job import train
    from retland.warehouse import Warehouse

    wh = Warehouse.open(Path(tempfile.mkdtemp(prefix="retland-analyses-")) / "wh")
    return wh, train(TINY_TD3, wh)


@functools.lru_cache(maxsize=None)
def sampled_job(step: int, horizon: int):
    """(warehouse, TrainResult, spec): tiny_job with 32 gaussian:0.3 samples of its first
    run at `step` (horizon `horizon`), computed by the per-step program the failures
    re-roll uses, so a re-roll reproduces them bit for bit. Each step once per process
    (failures uses 60, render 120)."""
    import pytest

    from retland.purd import engine, sampling
    from retland.purd.operators import parse_operator

    real = engine.chunk_function

    def per_step_program(program, per_step=False):
        fn = real(program, per_step=True)
        return fn if per_step else (lambda *args: fn(*args)[0])

    wh, res = tiny_job()
    spec = parse_operator("gaussian:0.3", horizon=horizon, seed=0)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(engine, "chunk_function", per_step_program)
        plan = sampling.plan_distribution(wh, res.run_ids[0], step, spec, 32, batch_size=8)
        sampling.sample_checkpoint(wh, plan, flush_seconds=0)
    return wh, res, spec
