"""A training job: the pure program (`train.program`) driven over chunks, with its rows,
checkpoints, resumption and progress.

Each seed is one run (`runs` row); evaluation returns go to `evaluations`, checkpoints
through `train.checkpoints` into artifacts/ and the `checkpoints` table. A chunk (one
call of the compiled program, a `lax.scan` over its env steps) divides the gcd of the
evaluation, checkpoint and warm-up steps, so each phase compiles once and every stop falls
on a chunk's end; TD3/SAC/BC chunks hold up to TRAIN_CHUNK_MAX steps, PPO's one iteration.
"""
from __future__ import annotations

import math
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from retland.agents import get_agent
from retland.agents.base import TrainState
from retland.core import jaxcache, replay, sizing
from retland.core.repro import device_label, reproducibility_record
from retland.train import checkpoints as ck
from retland.train.config import TrainConfig
from retland.config.registry import OFF_POLICY, OFFLINE, REPLAY_ALGOS
from retland.train.program import _program_key, init_states, make_chunk_fn, make_evaluator
from retland.warehouse import Warehouse

# ---- the job --------------------------------------------------------------------------

# Env steps per seed in one call of a TD3/SAC/BC chunk program: long enough that the host's
# call (dispatch, and on an accelerator a sync) is paid once per hundreds of iterations,
# not per env step; short enough that progress and Ctrl-C answer within seconds on a CPU.
TRAIN_CHUNK_MAX = 500


def chunk_length(stops, granularity: int) -> int:
    """Env steps per chunk: PPO's iteration (`granularity`), or for a one-step iteration
    the largest divisor of the stops' gcd that is at most TRAIN_CHUNK_MAX."""
    if granularity > 1:
        return math.gcd(*stops, granularity)
    g = math.gcd(*stops)
    return next(d for d in range(min(g, TRAIN_CHUNK_MAX), 0, -1) if g % d == 0)


def boundaries(cfg: TrainConfig, start: int = 0) -> tuple[list[int], set[int], int]:
    """(stop steps after `start`, eval steps, chunk length in env steps)."""
    total = cfg.steps
    evals = set(range(cfg.eval_interval, total + 1, cfg.eval_interval)) | set(cfg.checkpoint_steps) | {total}
    stops = set(evals)
    if cfg.algo in OFF_POLICY:
        stops.add(cfg.agent.learning_starts)
    stops.discard(0)
    chunk = chunk_length(sorted(stops), cfg.granularity)
    return sorted(s for s in stops if s > start), evals, chunk


def new_job_id(cfg: TrainConfig) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{cfg.algo}-{cfg.env}-{stamp}-{secrets.token_hex(2)}"


def run_ids(job_id: str, cfg: TrainConfig) -> list[str]:
    return [f"{job_id}-s{cfg.seed + i}" for i in range(cfg.seeds)]


@dataclass
class TrainResult:
    job_id: str
    run_ids: list[str]
    steps: int
    # learning curve: step -> [S] deterministic returns
    curve: dict[int, np.ndarray] = field(default_factory=dict)
    checkpoints: list[int] = field(default_factory=list)
    env_steps_per_s: float = 0.0
    state: TrainState | None = None  # final training state, leading [seeds] axis (None: seed groups)
    replay: replay.Replay | None = None
    seed_group: int = 0  # seeds vmapped together (`seed_group_size`)
    resumed_from: int | None = None  # with resume: the checkpoint step (0: restarted, it had none)
    time_limited: bool = False  # the deadline ended the job before its last step (resume continues it)


def _now():
    return datetime.now(timezone.utc)


def _run_rows(cfg: TrainConfig, job_id: str, ids: list[str]) -> list[dict]:

    base = cfg.model_dump(mode="json")
    # A BC run records its teacher checkpoint as its parent (and in its agent config).
    parent = (cfg.agent.teacher_run_id, cfg.agent.teacher_step) if cfg.algo in OFFLINE else (None, None)
    rows = []
    for i, rid in enumerate(ids):
        config = dict(base, job_id=job_id, seed_index=i)
        rows.append(dict(run_id=rid, algo=cfg.algo, env=cfg.env, seed=cfg.seed + i, backend=cfg.backend,
                         variant=cfg.variant,
                         source="trained", parent_run_id=parent[0], parent_step=parent[1],
                         config=__import__("json").dumps(config), repro=reproducibility_record(config),
                         created_at=_now()))
    return rows


def train(cfg: TrainConfig, warehouse=None, *, progress: Callable[..., None] | None = None,
          resume: str | None = None, stop_at: int | None = None, seed_group: int | None = None,
          deadline: "float | Deadline | None" = None) -> TrainResult:
    """Train `cfg.seeds` seeds; write runs, evaluations, checkpoints to the warehouse.

    resume: a job id (the run ids without "-s<seed>") to continue from its last
    checkpoint common to all seeds; `cfg` must then be the job's config (see
    `resume_config`). A job killed before its first checkpoint was published restarts
    from step 0 under the same run ids. stop_at: stop after this env step (for tests
    and time-boxed runs; the run can be resumed later).

    deadline: a `time.monotonic()` instant by which the job must have stopped (a wall-time
    limit, e.g. a SLURM task's), or a `Deadline`. At its start (each seed group's) and
    after each checkpoint the job goes on only if the next checkpoint (or the end) fits
    before the deadline at the rate it has measured since its compile (until then: the
    rate this job recorded on this device before); else it stops there, whole, and
    `resume` continues it. Past the deadline between two
    checkpoints (the estimate was wrong) it stops after the chunk in flight, losing the
    steps since its last checkpoint. Either way `result.time_limited` is set.

    seed_group: seeds vmapped together (default `seed_group_size(cfg)`: all of them,
    unless an accelerator's memory cannot hold their compiled program). Groups run one
    after another, each from its own seeds' keys, so a seed's run does not depend on
    the grouping; a resumed job resumes each group from its own last checkpoint.
    progress(n) counts env steps per seed of the whole job (a group of g of S seeds
    advances it by n * g / S)."""
    jaxcache.enable()  # compiles of the chunk take tens of seconds
    wh = warehouse if isinstance(warehouse, Warehouse) else Warehouse.open(warehouse)
    if resume is None:
        job_id = new_job_id(cfg)
        ids = run_ids(job_id, cfg)
        wh.append("runs", _run_rows(cfg, job_id, ids))
    else:
        job_id, ids = resume, run_ids(resume, cfg)
    size = seed_group_size(cfg) if seed_group is None else seed_group
    if size < 1:
        raise ValueError(f"seed_group must be >= 1, got {size}")
    result = TrainResult(job_id, ids, 0, seed_group=min(size, cfg.seeds))
    report = progress or (lambda n=0, **info: None)
    firsts, seed_steps, loop_seconds, last = [], 0, 0.0, 0
    clock = deadline if isinstance(deadline, Deadline) else Deadline(deadline)
    for g0 in range(0, cfg.seeds, size):
        if result.time_limited:
            break
        g = min(size, cfg.seeds - g0)
        sub = cfg if g == cfg.seeds else cfg.model_copy(update={"seed": cfg.seed + g0, "seeds": g})
        scale = g / cfg.seeds
        first, last, seconds, ts, rb = _train_group(sub, wh, ids[g0:g0 + g], result, resume is not None, stop_at,
                                                    lambda n=0, scale=scale, **info: report(n * scale, **info),
                                                    clock)
        seed_steps += (last - first) * g
        loop_seconds += seconds
        firsts.append(first)
        if g == cfg.seeds:  # groups exist to bound device memory: their states are not kept
            result.state, result.replay = ts, rb
    result.env_steps_per_s = seed_steps / max(loop_seconds, 1e-9)
    result.steps = last
    result.resumed_from = None if resume is None else min(firsts)
    return result


def seed_group_size(cfg: TrainConfig, device=None, room: int | None = None) -> int:
    """How many seeds to vmap in one training program: all of them where the platform
    has no allocator limit (CPU), else the most whose compiled chunk program fits the
    device's budget (`retland.core.sizing`: XLA's memory analysis of the program for the
    seeds' shapes, state and replay buffers included; nothing is allocated to find out).
    On a GPU the seeds are nearly free (a TD3 step is latency-bound), so the most that
    fit is also the fastest. room: the budget in bytes (default `sizing.budget(device)`)."""
    room = sizing.budget(device) if room is None else room
    _, _, n_steps = boundaries(cfg)

    def at(s: int):
        sub = cfg.model_copy(update={"seeds": s})
        ts, rb = jax.eval_shape(lambda: init_states(sub))
        # the program after the warm-up: the branch-free one (fixed_branches) of a warm-up
        # chunk holds no update, so it would understate the memory
        fn = make_chunk_fn(sub, sub.agent.learning_starts if sub.algo in OFF_POLICY else 0, n_steps)
        return sizing.footprint(fn.func, ts, rb, fn.keywords["warmup"])

    try:
        return sizing.fit(at, cfg.seeds, room, resident=False, multiple=1).size
    except MemoryError as exc:
        raise ValueError(f"training: one seed of {cfg.algo} on {cfg.env} does not fit this device ({exc}); "
                         "lower agent.buffer_size") from None


class Deadline:
    """A training job's wall-time limit (`train`'s deadline): whether it has passed, and
    whether the stretch to the next checkpoint still fits, from the job's measured rate."""

    MARGIN = 1.15  # the estimate of the next stretch is stretched by this much ...
    SLACK = 5.0  # ... plus these seconds (a checkpoint's files, an evaluation)

    def __init__(self, at: float | None, clock: Callable[[], float] = time.monotonic):
        self.at, self.clock = at, clock
        self.rates: list[float] = []  # seconds per env step of the stretches measured since the compile
        self.prior: float | None = None  # the job's recorded rate on this device, until one is measured here

    @property
    def set(self) -> bool:
        return self.at is not None

    def passed(self) -> bool:
        return self.at is not None and self.clock() >= self.at

    def measure(self, steps: int, seconds: float) -> None:
        """A stretch of `steps` env steps after the job's warm-up took `seconds`."""
        if steps > 0:
            self.rates.append(seconds / steps)

    def fits(self, steps: int) -> bool:
        """Whether `steps` more env steps end before the deadline, at the slowest of the
        last three stretches measured (their compile left out), else at the job's rate
        recorded before; with neither the answer is yes (nothing to estimate from) until
        the deadline has passed."""
        if self.at is None or steps <= 0:
            return True
        rates = self.rates[-3:] or ([self.prior] if self.prior else [])
        if not rates:
            return not self.passed()
        per_step = max(rates)
        return self.clock() + steps * per_step * self.MARGIN + self.SLACK <= self.at


def _initial_states(wh, cfg: TrainConfig, seeds: int):
    """(ts, rb) at step 0: the seeds' initial states; a behaviour-cloning job's buffer holds
    its teacher's relabelled data (every seed clones the same data)."""
    ts, rb = init_states(cfg)
    if cfg.algo in OFFLINE:
        from retland.train.bc import teacher_dataset

        data = teacher_dataset(wh, cfg)
        rb = replay.Replay(jax.tree.map(lambda x: jnp.broadcast_to(x, (seeds, *x.shape)), data),
                           jnp.full((seeds,), cfg.agent.dataset_size, jnp.int32))
    return ts, rb


def _recorded_rate(wh, job_id: str, seeds: int) -> float | None:
    """Seconds per env step (per seed) of the job's stretches after warm-up and compile
    recorded on this device (an earlier, time-limited call of the same job), or None."""
    rows = wh.records("SELECT sum(seconds) AS s, sum(to_step - from_step) AS n FROM training_timings "
                      "WHERE job_id = ? AND seeds = ? AND device = ? AND NOT includes_compile AND NOT warmup",
                      [job_id, int(seeds), device_label()])
    s, n = (rows[0]["s"], rows[0]["n"]) if rows else (None, None)
    return float(s) / float(n) if s and n else None


def _train_group(cfg: TrainConfig, wh, ids: list[str], result: TrainResult, resuming: bool,
                 stop_at: int | None, report: Callable[..., None], clock: Deadline | None = None):
    """Train the seeds `ids` of `cfg` (its seeds, from cfg.seed) to the end (or stop_at, or
    the deadline of `clock`); their rows go to the warehouse, their curve and checkpoints
    into `result`. Returns (first step, last step, seconds in the training loop, final
    state, final replay)."""
    if resuming:
        ts, rb, step = _resume_state(wh, cfg, ids)
    else:
        ts, rb = _initial_states(wh, cfg, len(ids))
        step = 0
    first = step
    stops, evals, chunk = boundaries(cfg, step)
    if stop_at is not None:
        stops = [s for s in stops if s <= stop_at]
    evaluate = make_evaluator(cfg)
    agent = get_agent(cfg.algo, cfg.agent)
    t_start = time.perf_counter()
    timer = StretchTimer(cfg, ids[0].rsplit("-s", 1)[0], len(ids), chunk, step, t_start)

    def do_eval(step, commit: bool = True):
        """Evaluate the seeds; their rows are committed now (with the timing rows of the
        stretches before), or (commit=False, a checkpoint step) returned to be committed
        with the checkpoint's rows."""
        r = evaluate(agent.actor_params(ts))
        rets, lens = np.asarray(r.ret, np.float64), np.asarray(r.episode_length)
        have = result.curve.get(step)
        result.curve[step] = rets if have is None else np.concatenate([have, rets])
        wall = time.perf_counter() - t_start
        rows = [dict(run_id=rid, step=step, eval_return=float(rets[i]), episode_length=int(lens[i]),
                     wall_seconds=wall) for i, rid in enumerate(ids)]
        if commit:
            timer.stop(step)
            wh.append_many({"evaluations": rows, **timer.take()}, command="train")
        return rets, rows

    if step == 0:
        do_eval(0)
    clock = clock or Deadline(None)
    warmup_end = cfg.agent.learning_starts if cfg.algo in OFF_POLICY else 0
    saves = sorted(set(cfg.checkpoint_steps) | {cfg.steps})
    if clock.set and clock.prior is None:
        clock.prior = _recorded_rate(wh, ids[0].rsplit("-s", 1)[0], len(ids))
    compiled = False  # whether this process has run an update chunk of the job (its compile)
    t_loop = t_mark = time.perf_counter()
    for stop in stops:
        # Decide at a point the job can resume from: its start (a fresh job, a resumed one,
        # a later seed group) and each checkpoint.
        if clock.set and (step == first or step in cfg.checkpoint_steps):
            goal = next(s for s in saves if s > step)  # the next point the job could resume from
            if not clock.fits(goal - step):
                result.time_limited = True
                break
        step0 = step
        while step < stop:
            if clock.passed():
                result.time_limited = True
                break
            ts, rb = make_chunk_fn(cfg, step, chunk)(ts, rb)
            step += chunk
            report(chunk)
            if clock.set:
                # Chunks are dispatched ahead of the device; waiting for each one (a sync per
                # hundreds of steps) keeps the deadline check above on the device's time.
                jax.block_until_ready(ts)
                if not compiled and step - chunk >= warmup_end:
                    compiled = True  # the first update chunk held the compile: the stretch's
                    step0, t_mark = step, time.perf_counter()  # rate starts after it
        jax.block_until_ready(ts)
        if result.time_limited:
            break
        at_checkpoint = step in cfg.checkpoint_steps
        rets, eval_rows = do_eval(step, commit=not at_checkpoint) if step in evals else (None, [])
        if rets is not None:
            report(0, eval=f"eval {float(np.mean(rets)):,.1f}")
        if at_checkpoint:
            _save_checkpoints(wh, ids, step, ts, rb, rets, eval_rows, timer)
            if step not in result.checkpoints:
                result.checkpoints.append(step)
        elif rets is None:
            timer.stop(step)  # a stop without rows (the end of warm-up): committed with the next ones
        now = time.perf_counter()  # a stretch's time holds its chunks, evaluation and checkpoint files
        if step0 >= warmup_end and compiled:
            clock.measure(step - step0, now - t_mark)
        t_mark = now
    if timer.pending:  # stop_at ended the loop between commits
        wh.append_many(timer.take(), command="train")
    return first, step, time.perf_counter() - t_loop, ts, rb


_TIMED: set = set()  # (program, chunk, seeds) whose training program this process has run


class StretchTimer:
    """The `training_timings` rows of one seed group: one per stretch between two stops
    (from the previous commit to the next one: chunks, evaluation, checkpoint files), the
    first one a process runs of a program marked includes_compile."""

    def __init__(self, cfg: TrainConfig, job_id: str, seeds: int, chunk: int, step: int, t0: float,
                 source: str = "job"):
        self.base = dict(job_id=job_id, source=source, algo=cfg.algo, env=cfg.env, variant=cfg.variant,
                         backend=cfg.backend, seeds=int(seeds), device=device_label(),
                         device_count=1)
        self.key = (_program_key(cfg), chunk, seeds)
        self.learning_starts = cfg.agent.learning_starts if cfg.algo in OFF_POLICY else 0
        self.step, self.mark, self.pending = step, t0, []

    def stop(self, step: int) -> None:
        """End the stretch at env step `step` (per seed), now."""
        if step <= self.step:  # nothing trained since (the evaluation at step 0 stays in the first stretch)
            return
        now = time.perf_counter()
        compiled = self.key in _TIMED
        _TIMED.add(self.key)
        self.pending.append(dict(
            self.base, timing_id=uuid.uuid4().hex, from_step=int(self.step), to_step=int(step),
            env_steps=int(step - self.step) * self.base["seeds"], seconds=float(now - self.mark),
            includes_compile=not compiled, warmup=bool(step <= self.learning_starts), recorded_at=_now()))
        self.step, self.mark = step, now

    def take(self) -> dict:
        """{"training_timings": rows} of the stretches not committed yet (and forget them)."""
        rows, self.pending = self.pending, []
        return {"training_timings": rows} if rows else {}


def _save_checkpoints(wh, ids, step, ts, rb, rets, eval_rows=(), timer: "StretchTimer | None" = None):
    """Write every seed's state (and replay) files, then commit their `checkpoints` rows
    with the step's `evaluations` rows as one entry: a kill leaves the step whole or absent
    (files without a committed row are an unfinished save that resume replaces)."""

    host_ts = jax.device_get(ts)
    host_rb = jax.device_get(rb) if rb is not None else None
    rows = []
    for i, rid in enumerate(ids):
        size = None
        if host_rb is not None:
            size = int(host_rb.size[i])
            states = None if host_rb.states is None else jax.tree.map(lambda x: x[i], host_rb.states)
            ck.save_replay(wh, rid, jax.tree.map(lambda x: x[i], host_rb.data), size, states)
        path = ck.save_state(wh, rid, step, jax.tree.map(lambda x: x[i], host_ts))
        rows.append(dict(run_id=rid, step=step, artifact_path=path,
                         eval_return=None if rets is None else float(rets[i]),
                         replay_size=size, created_at=_now()))
    timings = {}
    if timer is not None:
        timer.stop(step)
        timings = timer.take()
    wh.append_many({"evaluations": list(eval_rows), "checkpoints": rows, **timings} if eval_rows
                   else {"checkpoints": rows, **timings}, command="train")


def resume_config(warehouse, job_id: str) -> TrainConfig:
    """The config a job was started with (from its runs rows)."""
    wh = warehouse if isinstance(warehouse, Warehouse) else Warehouse.open(warehouse, create=False)
    rows = wh.records("SELECT run_id FROM runs WHERE starts_with(run_id, ?) ORDER BY seed", [job_id + "-s"])
    if not rows:
        raise ValueError(f"no training job {job_id!r} in the warehouse at {wh.root}")
    return ck.run_config(ck.run_record(wh, rows[0]["run_id"]))


def _resume_state(wh, cfg: TrainConfig, ids: list[str]):
    """(ts, rb, step) to resume the job's runs `ids` from. Interrupted saves are cleared
    first. A job with no checkpoint at all (killed during or before its first save)
    restarts from the initial state at step 0: its unpublished artifacts are removed, so
    every file is written afresh by this process."""
    if not any(ck.list_checkpoints(wh, rid) for rid in ids):
        for rid in ids:
            ck.discard_orphan_artifacts(wh, rid)
        ts, rb = _initial_states(wh, cfg, len(ids))
        return ts, rb, 0
    for rid in ids:
        ck.clear_temp_folders(wh, rid)
    return _load_job(wh, cfg, ids)


def _load_job(wh, cfg: TrainConfig, ids: list[str]):

    common = None
    for rid in ids:
        steps = set(ck.list_checkpoints(wh, rid))
        common = steps if common is None else common & steps
    if not common:
        raise ValueError(f"job {ids[0].rsplit('-s', 1)[0]!r} has no checkpoint common to all "
                         f"{len(ids)} seeds to resume from")
    step = max(common)
    cks = [ck.load_checkpoint(wh, rid, step) for rid in ids]
    if any(c.env != cfg.env or c.algo != cfg.algo for c in cks):
        raise ValueError("resume: the checkpoints do not match the job's env/algo")
    stack = lambda *xs: jnp.stack([jnp.asarray(x) for x in xs])  # noqa: E731
    ts = jax.tree.map(stack, *[c.state for c in cks])
    rb = None
    if cfg.algo in REPLAY_ALGOS:
        states = jax.tree.map(stack, *[c.replay_states for c in cks]) if cfg.store_states else None
        rb = replay.Replay(jax.tree.map(stack, *[c.replay for c in cks]),
                           jnp.asarray([c.replay_size for c in cks], jnp.int32), states)
    return ts, rb, step
