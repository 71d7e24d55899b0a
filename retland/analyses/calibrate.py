"""Short calibration runs: a task's training and sampling programs timed on this device,
for estimates where the warehouse has measured nothing yet (`retland study --plan
--calibrate`).

`calibrate_training(wh, cfg)` runs the training program of `cfg` (its algorithm, task,
agent settings and seed count: the program a job of `cfg` compiles, with a shorter scan)
from its initial state for one stretch that holds the compile and `stretches` more,
after warm-up (TD3/SAC's updating steps, the slower ones; BC on an empty dataset, whose
gradient step costs what it costs on a full one, as a minibatch is drawn either way), and
commits them as `training_timings` rows with source 'calibration'. It returns the state
reached. `calibrate_sampling` times a few chunks of the sampling program of an operator at
a horizon and chunk size (the rollouts a sampling job of that task runs) from a stored
checkpoint of the task, or from a training calibration's state
(`calibration_checkpoint`: a barely trained policy, which changes no cost, as every
rollout runs the whole horizon), into `sampling_calibrations`. Nothing else is written: no runs, no
checkpoints, no samples.
"""
from __future__ import annotations

import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import jax
import numpy as np

from ..config.requests import Bar, bar
from ..core.repro import device_label

CALIBRATION_STEPS = 200  # at most, env steps per seed of one calibration stretch (PPO: one iteration)


@dataclass
class Calibrated:
    """One calibration measurement: what was timed, its rows, the state it reached."""
    what: str
    rows: list[dict]
    state: Any = None  # (TrainState, Replay | None) with a leading seeds axis (training)
    step: int = 0

    @property
    def seconds(self) -> float:
        return sum(r["seconds"] for r in self.rows)

    @property
    def steady_rate(self) -> float | None:
        steady = [r for r in self.rows if not r["includes_compile"]]
        secs = sum(r["seconds"] for r in steady)
        return sum(r["env_steps"] for r in steady) / secs if steady and secs > 0 else None


def calibrate_training(wh, cfg, *, stretches: int = 2, steps: int | None = None,
                       progress: Bar | None = None) -> Calibrated:
    """Time the training program of `cfg` on this device: 1 + `stretches` stretches of
    about `steps` env steps per seed (default CALIBRATION_STEPS; PPO: at least one
    iteration), each the job's own chunk program called as a job calls it, the first
    stretch holding the compile; commits them to `training_timings` (source
    'calibration')."""
    from retland.config.registry import OFF_POLICY
    from retland.core import jaxcache
    from retland.train.program import init_states, make_chunk_fn

    from retland.train.job import boundaries

    jaxcache.enable()
    # the job's own chunk program, called as the job calls it (the per-call cost is part
    # of the rate), cut to at most `steps` env steps a stretch
    chunk = boundaries(cfg)[2]
    if chunk > (steps or CALIBRATION_STEPS):  # a long scan: a shorter one of the same step
        chunk = max(cfg.granularity, (steps or CALIBRATION_STEPS) // cfg.granularity * cfg.granularity)
    calls = max(1, (steps or CALIBRATION_STEPS) // chunk)
    n = calls * chunk
    start = cfg.agent.learning_starts if cfg.algo in OFF_POLICY else 0
    base = dict(job_id=f"calibration-{secrets.token_hex(4)}", source="calibration", algo=cfg.algo, env=cfg.env,
                variant=cfg.variant, backend=cfg.backend, seeds=int(cfg.seeds), device=device_label(), device_count=1,
                warmup=False)
    what = f"{cfg.algo} {cfg.env} ({cfg.variant}) training, {cfg.seeds} seed(s)"
    rows = []
    with bar(progress, 1 + stretches, f"calibrating {what}", unit="stretches") as advance:
        t0 = time.perf_counter()
        ts, rb = init_states(cfg)
        step = start
        for k in range(1 + stretches):
            for i in range(calls):
                ts, rb = make_chunk_fn(cfg, step + i * chunk, chunk)(ts, rb)
            jax.block_until_ready(ts)
            now = time.perf_counter()
            rows.append(dict(base, timing_id=uuid.uuid4().hex, from_step=step, to_step=step + n,
                             env_steps=n * cfg.seeds, seconds=now - t0, includes_compile=k == 0,
                             recorded_at=datetime.now(timezone.utc)))
            step, t0 = step + n, now
            advance(1)
    wh.append("training_timings", rows)
    return Calibrated(what, rows, (ts, rb), step)


def calibration_checkpoint(cfg, trained: Calibrated):
    """The first seed of a training calibration's state as a `Checkpoint` (in memory only),
    for `calibrate_sampling` where the warehouse holds no checkpoint of the task."""
    from retland.train.checkpoints import Checkpoint

    ts, rb = trained.state
    seed = jax.tree.map(lambda x: np.asarray(x[0]), ts)
    replay = None if rb is None else jax.tree.map(lambda x: np.asarray(x[0]), rb)
    return Checkpoint(run_id="calibration", step=trained.step, algo=cfg.algo, env=cfg.env, backend=cfg.backend,
                      seed=cfg.seed, config=cfg, agent_state=seed.agent,
                      replay_size=0 if replay is None else int(replay.size), artifact_path="",
                      _cache={"state": seed, "replay": None if replay is None else replay.data})


def calibrate_sampling(wh, ckpt, operator: str, horizon: int, batch_size: int | str = "auto",
                       samples: int = 1000, *, chunks: int = 2, progress: Bar | None = None) -> Calibrated:
    """Time 1 + `chunks` chunks of the sampling program of `operator` (text, as `retland
    sample --operator`) at `horizon` from checkpoint `ckpt` (a stored one of the task, or
    `calibration_checkpoint`), chunk size `batch_size` (auto: what a job of `samples`
    samples takes here); commits them to `sampling_calibrations`. The first chunk holds
    the compile. No sample is stored."""
    from retland.purd.engine import run_chunks
    from retland.purd.operators import parse_operator
    from retland.purd.sampling import auto_batch_size, checkpoint_program

    cfg = ckpt.config
    spec = parse_operator(operator, env=cfg.env, horizon=horizon, seed=0)
    program, op_state = checkpoint_program(spec, ckpt)
    b = auto_batch_size(samples) if batch_size == "auto" else int(batch_size)
    base = dict(algo=cfg.algo, env=cfg.env, variant=cfg.variant, backend=cfg.backend, operator_kind=spec.kind,
                operator_id=spec.operator_id, device=device_label(), device_count=1, batch_size=b, horizon=horizon,
                chunks=1, env_steps=b * horizon)
    what = f"{spec.kind} sampling of {cfg.algo} {cfg.env} ({cfg.variant}), {b} x {horizon} steps a chunk"
    rows = []
    with bar(progress, 1 + chunks, f"calibrating {what}", unit="chunks") as advance:
        t0 = time.perf_counter()
        for k, _ in enumerate(run_chunks(program, op_state, spec.base_key, range(1 + chunks), b, in_flight=1)):
            now = time.perf_counter()
            rows.append(dict(base, timing_id=uuid.uuid4().hex, seconds=now - t0, includes_compile=k == 0,
                             recorded_at=datetime.now(timezone.utc)))
            t0 = now
            advance(1)
    wh.append("sampling_calibrations", rows)
    return Calibrated(what, rows)
