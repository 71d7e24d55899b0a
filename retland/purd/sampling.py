"""The sampling engine: post-update return distributions, chunked, resumable, sharded.

A sample i of a distribution (run, step, operator) is
    key_i = fold_in(PRNGKey(operator seed), i)
    θ_i   = make_params(op_state, key_i, i)          (the update operator U)
    row_i = rollout(θ_i) from s0 (or a perturbed rollout), rewards masked after done.
The base key is the operator seed alone, so sample i of two checkpoints uses the same
key (common random numbers across checkpoints; no correlation within a distribution).

Chunks. XLA's arithmetic for a vmapped rollout depends on the batch shape, and returns
are chaotic in θ, so the unit of work is a chunk of fixed size B: chunk k holds indices
[kB, (k+1)B), the last one padded with real indices ≥ N whose rows are discarded. B is
chosen once per distribution, recorded in every row (`chunk_size`) and reused by every
later job: resumption, shards and devices all compute whole chunks with the same jitted
single-chunk program, so rows are bit-identical however the work was split, on one
platform. Across different B or platforms the values of individual samples differ (by
chaos, not by bias) and the distributions agree statistically (tests/test_sampling.py
checks this with a KS test).

Devices. Chunk j of a job goes to local device j mod D with its inputs `device_put`
there, several chunks in flight (async dispatch), results collected in order. Measured:
this is bit-identical to one device; `pmap`/`shard_map` of the same code are not.

Resumption. A job first reads which update indices of the distribution exist and
computes only chunks with a missing index, writing only the missing rows. Rows are
appended a chunk group at a time (every `flush_seconds`), each group one atomic Parquet
part, so a killed job loses at most the unflushed chunks and leaves only whole files.

Shards. `--shard i/N` takes the i-th of N contiguous, equal ranges of the job's work
units (chunks, in (run, step, chunk) order), so N independent jobs cover the work
exactly once with no coordination; a finished shard's rerun computes nothing.

Rows that break the warehouse's rules for post_update_returns (`TableSpec.checks`, the
same every write path meets: finite return and discounted return, …) are refused per
chunk: the job writes the chunks before the offending one, nothing of that chunk, and
raises `NonFiniteReturnError` (or `SamplingError`) naming run, step, operator and the
update indices.
"""
from __future__ import annotations

import collections
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

import jax
import numpy as np
import pyarrow as pa

from retland.agents import get_agent
from retland.core import jaxcache
from retland.core.envs import make_env, reference_env, reference_state
from retland.core.networks import DeterministicActor
from retland.core.rollout import rollout
from retland.purd.operators import (
    OperatorSpec,
    params_function,
    rollout_key,
    rollout_perturbation,
    sample_key,
)
from retland.train.checkpoints import load_checkpoint
from retland.warehouse.writer import RowError, check_rows

# Chunk size for --batch-size auto, per platform. On CPU throughput is flat for
# B = 32..1024 (per-sample weight reads dominate) so a small B keeps padding and the
# work lost to a kill small; accelerators need wide batches to be busy.
AUTO_BATCH = {"cpu": 64}
AUTO_BATCH_ACCELERATOR = 512
FLUSH_SECONDS = 10.0


class SamplingError(ValueError):
    """A request that cannot be honoured; the message says why and what to do."""


class NonFiniteReturnError(SamplingError):
    """A sample's return was NaN/inf; nothing of its chunk was stored."""


# --------------------------------------------------------------------------- programs


@dataclass(frozen=True)
class ActorPolicy:
    """π_θ of a `DeterministicActor(action_size, hidden)`: params are its Flax params."""
    action_size: int
    hidden: tuple[int, ...] = (256, 256)

    def __call__(self, params, obs):
        return DeterministicActor(self.action_size, tuple(self.hidden)).apply({"params": params}, obs)


@dataclass(frozen=True)
class AgentPolicy:
    """The deterministic evaluation policy of a trained agent (`agent.policy`)."""
    agent: Any

    def __call__(self, params, obs):
        return self.agent.policy(params, obs)


@dataclass(frozen=True)
class SampleProgram:
    """What one sample computes; equal programs share one compiled chunk function.

    policy(params, obs [O]) -> action [A]; make_params(op_state, key_i, i) -> params.
    Both must be hashable by value (frozen dataclasses), not fresh closures, or every
    call compiles anew. action_noise / reset_noise perturb the rollout (0 = none).
    """
    env: str
    backend: str
    horizon: int
    policy: Callable[[Any, jax.Array], jax.Array]
    make_params: Callable[[Any, jax.Array, jax.Array], Any]
    action_noise: float = 0.0
    reset_noise: float = 0.0


def program_for(spec: OperatorSpec, env: str, backend: str, policy, agent=None) -> SampleProgram:
    """The program of operator `spec` rolled out with `policy`; td3/sac/ppo need `agent`."""
    action_noise, reset_noise = rollout_perturbation(spec)
    return SampleProgram(env, backend, spec.horizon, policy, params_function(spec, agent),
                         action_noise, reset_noise)


def _chunk(program: SampleProgram, per_step: bool, op_state, start_state, base_key, indices):
    """indices [B] int32 -> Rollout with fields [B] (and Steps [B, T] when per_step)."""
    env = reference_env(program.env, program.backend)
    noisy = make_env(program.env, program.backend, program.reset_noise) if program.reset_noise > 0 else None

    def one(i):
        key = sample_key(base_key, i)
        # θ_i is computed once per sample: the barrier keeps XLA from fusing the update
        # into the rollout's loop body, where it would run at each of the H steps.
        params = jax.lax.optimization_barrier(program.make_params(op_state, key, i))
        rkey = rollout_key(key)
        state0 = noisy.reset(rkey) if noisy is not None else start_state
        return rollout(env, program.policy, params, state0, program.horizon,
                       action_noise=program.action_noise, key=rkey, per_step=per_step)

    return jax.vmap(one)(indices)


_COMPILED: dict[tuple[SampleProgram, bool], Callable] = {}


def chunk_function(program: SampleProgram, per_step: bool = False) -> Callable:
    """jit(fn(op_state, start_state, base_key, indices [B]) -> Rollout [B]).

    op_state and the start state are arguments, never closed-over constants, so one
    executable serves every checkpoint of the same shapes; jit caches one per B.
    per_step=True also returns the `Steps` record [B, T] (trajectory analyses); it is a
    different program, so whether its returns match the summary program's bit for bit
    is for the caller to check.
    """
    fn = _COMPILED.get((program, per_step))
    if fn is None:
        jaxcache.enable()
        fn = _COMPILED[(program, per_step)] = jax.jit(lambda *args: _chunk(program, per_step, *args))
    return fn


# ---------------------------------------------------------------------------- engine


def resolve_devices(devices: str | int | Sequence | None = None) -> list:
    """None/'all' -> every local device; n -> the first n; a sequence is used as given."""
    local = jax.local_devices()
    if devices is None or devices == "all":
        return list(local)
    if isinstance(devices, str):
        devices = int(devices)
    if isinstance(devices, int):
        if not 1 <= devices <= len(local):
            raise SamplingError(f"--devices {devices}: this host has {len(local)} local device(s)")
        return list(local[:devices])
    return list(devices)


def chunk_indices(k: int, batch_size: int) -> np.ndarray:
    """[B] int32: the update indices of chunk k."""
    return np.arange(k * batch_size, (k + 1) * batch_size, dtype=np.int32)


@dataclass
class ChunkResult:
    chunk: int
    indices: np.ndarray  # [B] int32
    ret: np.ndarray  # [B] float32
    discounted_return: np.ndarray  # [B] float32
    episode_length: np.ndarray  # [B] int32
    terminated: np.ndarray  # [B] bool
    device: int = 0  # position in the device list


def run_chunks(
    program: SampleProgram,
    op_state,
    base_key: jax.Array,
    chunks: Iterable[int],
    batch_size: int,
    *,
    start_state=None,
    devices=None,
    in_flight: int = 2,
) -> Iterator[ChunkResult]:
    """Compute whole chunks, spread over devices, yielded in the order given.

    Chunk number j of `chunks` runs on device j mod D: the same executable with its
    inputs placed there. `in_flight` chunks per device are queued ahead (async dispatch).
    """
    fn = chunk_function(program)
    devs = resolve_devices(devices)
    if start_state is None:
        start_state = reference_state(program.env, program.backend)
    placed = [
        (jax.device_put(op_state, d), jax.device_put(start_state, d), jax.device_put(base_key, d))
        for d in devs
    ]
    pending: collections.deque = collections.deque()

    def fetch(item) -> ChunkResult:
        k, idx, d, out = item
        ret, disc, length, term = jax.device_get(tuple(out))
        return ChunkResult(k, idx, np.asarray(ret), np.asarray(disc), np.asarray(length), np.asarray(term), d)

    for j, k in enumerate(chunks):
        d = j % len(devs)
        idx = chunk_indices(k, batch_size)
        out = fn(*placed[d], jax.device_put(idx, devs[d]))
        pending.append((k, idx, d, out))
        if len(pending) >= in_flight * len(devs):
            yield fetch(pending.popleft())
    while pending:
        yield fetch(pending.popleft())


# ---------------------------------------------------------------------- distributions


def auto_batch_size(n_samples: int, platform: str | None = None) -> int:
    """The platform's chunk size, shrunk (to a multiple of 8) for small distributions."""
    platform = platform or jax.default_backend()
    b = AUTO_BATCH.get(platform, AUTO_BATCH_ACCELERATOR)
    return max(1, min(b, 8 * math.ceil(n_samples / 8)))


def parse_shard(text: str | tuple[int, int] | None) -> tuple[int, int]:
    """'i/N' -> (i, N), 0 <= i < N."""
    if text is None:
        return 0, 1
    if isinstance(text, tuple):
        i, n = text
    else:
        try:
            i, n = (int(x) for x in str(text).split("/"))
        except ValueError:
            raise SamplingError(f"--shard {text!r}: expected i/N, e.g. 0/4") from None
    if n < 1 or not 0 <= i < n:
        raise SamplingError(f"--shard {i}/{n}: need 0 <= i < N")
    return i, n


def take_shard(units: Sequence, shard: tuple[int, int]) -> list:
    """The i-th of N contiguous, near-equal ranges of `units` (deterministic)."""
    i, n = shard
    m = len(units)
    return list(units[i * m // n:(i + 1) * m // n])


def existing_rows(wh, run_id: str, step: int, operator_id: str) -> tuple[set[int], set[int]]:
    """(update indices present, chunk sizes recorded) of one distribution."""
    df = wh.query(
        "SELECT update_index, chunk_size FROM post_update_returns "
        "WHERE run_id = ? AND step = ? AND operator_id = ?",
        [run_id, int(step), operator_id],
    )
    if df.height == 0:
        return set(), set()
    return set(df["update_index"].to_list()), {int(b) for b in df["chunk_size"].drop_nulls().to_list()}


def existing_by_distribution(wh, operator_ids: Iterable[str]) -> dict[tuple[str, int, str], tuple[set[int], set[int]]]:
    """`existing_rows` of every distribution of these operators, in one query."""
    ids = sorted(set(operator_ids))
    df = wh.query(
        "SELECT run_id, step, operator_id, list(update_index) AS idx, list(DISTINCT chunk_size) AS b "
        f"FROM post_update_returns WHERE operator_id IN ({', '.join('?' for _ in ids)}) "
        "GROUP BY ALL", ids)
    return {(r, int(s), o): (set(idx), {int(b) for b in bs if b is not None})
            for r, s, o, idx, bs in df.iter_rows()}


def resolve_batch_size(recorded: set[int], requested: int | str | None, n_samples: int,
                       what: str = "this distribution") -> int:
    """The chunk size to use: the recorded one if any (a conflicting request is refused)."""
    if len(recorded) > 1:
        raise SamplingError(
            f"{what} holds rows of several chunk sizes {sorted(recorded)}; it is not one "
            "distribution. Delete or move one set before sampling more.")
    if recorded:
        (b,) = recorded
        if requested not in (None, "auto") and int(requested) != b:
            raise SamplingError(
                f"{what} was started with --batch-size {b}; resuming it with --batch-size "
                f"{int(requested)} would mix chunkings (rows would not be reproducible). "
                f"Use --batch-size {b} or auto, or a different operator seed.")
        return b
    if requested in (None, "auto"):
        return auto_batch_size(n_samples)
    b = int(requested)
    if b < 1:
        raise SamplingError(f"--batch-size must be >= 1, got {b}")
    return b


def missing_chunks(n_samples: int, batch_size: int, present: set[int]) -> list[int]:
    """Chunks with at least one index < n_samples not yet stored."""
    out = []
    for k in range(math.ceil(n_samples / batch_size)):
        hi = min((k + 1) * batch_size, n_samples)
        if any(i not in present for i in range(k * batch_size, hi)):
            out.append(k)
    return out


def ensure_operator(wh, spec: OperatorSpec) -> None:
    """Record the operator once (a race may write it twice; the view deduplicates)."""
    df = wh.query("SELECT count(*) AS n FROM operators WHERE operator_id = ?", [spec.operator_id])
    if df["n"][0] == 0:
        wh.append("operators", [spec.operators_row()])


@dataclass
class Plan:
    """The work of one job on one distribution: which chunks to compute."""
    run_id: str
    step: int
    spec: OperatorSpec
    n_samples: int
    batch_size: int
    todo: list[int]  # chunks to compute, ascending
    present: set[int]  # update indices already stored

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n_samples / self.batch_size)

    def keep(self, indices: np.ndarray) -> np.ndarray:
        """[B] bool: which rows of a chunk are new and inside [0, n_samples)."""
        return np.array([i < self.n_samples and int(i) not in self.present for i in indices], bool)

    @property
    def new_rows(self) -> int:
        return int(sum(self.keep(chunk_indices(k, self.batch_size)).sum() for k in self.todo))


def plan_distribution(
    wh,
    run_id: str,
    step: int,
    spec: OperatorSpec,
    n_samples: int,
    *,
    batch_size: int | str | None = "auto",
    shard: tuple[int, int] | str | None = None,
    chunks: Sequence[int] | None = None,
    existing: tuple[set[int], set[int]] | None = None,
) -> Plan:
    """Read what is stored and decide B and the chunks this job computes.

    chunks: an explicit set of chunk numbers (the CLI's global work plan over many
    distributions); otherwise the shard's range of this distribution's chunks.
    existing: (indices, chunk sizes) already read (`existing_by_distribution`).
    """
    if n_samples < 1:
        raise SamplingError(f"--samples must be >= 1, got {n_samples}")
    what = f"run {run_id} step {step} operator {spec.operator_id}"
    present, recorded = existing or existing_rows(wh, run_id, step, spec.operator_id)
    b = resolve_batch_size(recorded, batch_size, n_samples, what)
    n_chunks = math.ceil(n_samples / b)
    # A shard owns a fixed range of all chunks, done or not, so the split does not
    # depend on progress made by other shards.
    mine = list(chunks) if chunks is not None else take_shard(range(n_chunks), parse_shard(shard))
    missing = set(missing_chunks(n_samples, b, present))
    todo = sorted(k for k in set(mine) if k in missing)
    return Plan(run_id, int(step), spec, n_samples, b, todo, present)


@dataclass
class SampleResult:
    run_id: str
    step: int
    operator_id: str
    n_samples: int
    batch_size: int
    chunks_total: int
    chunks_computed: int = 0
    rows_written: int = 0
    devices: int = 1
    seconds: float = 0.0
    chunk_devices: dict[int, int] = field(default_factory=dict)  # chunk -> device position


def check_chunk(rows: dict[str, np.ndarray], plan: Plan, chunk: int, batch_size: int) -> None:
    """Refuse a computed chunk whose rows break the warehouse's rules for
    post_update_returns (the same `TableSpec.checks` every write path meets: finite
    return and discounted_return, …), before any of it is buffered."""

    where = f"run {plan.run_id} step {plan.step} operator {plan.spec.operator_id}"
    try:
        check_rows("post_update_returns", pa.table(rows))
    except RowError as exc:
        indices = rows["update_index"][exc.rows].tolist()
        error = NonFiniteReturnError if exc.problem.startswith("non-finite") else SamplingError
        raise error(
            f"{where}: {exc.problem} in column {exc.column} at update_index {indices} (chunk {chunk}, B={batch_size}); "
            "refused: nothing of this chunk was stored, the chunks computed before it were") from None
    bad = rows["episode_length"] > plan.spec.horizon
    if bad.any():
        raise SamplingError(
            f"{where}: episode_length above the horizon {plan.spec.horizon} at update_index "
            f"{rows['update_index'][bad].tolist()} (chunk {chunk}); refused: nothing of this chunk was stored")


def run_plan(
    wh,
    plan: Plan,
    program: SampleProgram,
    op_state,
    *,
    devices=None,
    start_state=None,
    flush_seconds: float = FLUSH_SECONDS,
    progress: Callable[[int], None] | None = None,
) -> SampleResult:
    """Compute the plan's chunks and append their new rows (see the module doc).

    progress(n) is called after each chunk with the number of new rows it gave.
    """
    devs = resolve_devices(devices)
    spec, b = plan.spec, plan.batch_size
    operator_id = spec.operator_id
    result = SampleResult(plan.run_id, plan.step, operator_id, plan.n_samples, b, plan.n_chunks,
                          devices=len(devs))
    if not plan.todo:
        return result
    ensure_operator(wh, spec)
    buffer: list[dict[str, np.ndarray]] = []
    last_flush = time.monotonic()
    t0 = time.monotonic()

    def flush():
        nonlocal last_flush
        if buffer:
            cols = {name: np.concatenate([c[name] for c in buffer]) for name in buffer[0]}
            n = len(cols["update_index"])
            cols.update(run_id=[plan.run_id] * n, step=np.full(n, plan.step, np.int64),
                        operator_id=[operator_id] * n, chunk_size=np.full(n, b, np.int32))
            result.rows_written += wh.append("post_update_returns", cols)
            buffer.clear()
        last_flush = time.monotonic()

    try:
        for res in run_chunks(program, op_state, spec.base_key, plan.todo, b,
                              start_state=start_state, devices=devs):
            keep = plan.keep(res.indices)
            rows = {
                "update_index": res.indices[keep].astype(np.int64),
                "return": res.ret[keep].astype(np.float64),
                "discounted_return": res.discounted_return[keep].astype(np.float64),
                "episode_length": res.episode_length[keep].astype(np.int32),
                "terminated": res.terminated[keep].astype(bool),
            }
            check_chunk(rows, plan, res.chunk, b)
            buffer.append(rows)
            result.chunks_computed += 1
            result.chunk_devices[res.chunk] = res.device
            if time.monotonic() - last_flush >= flush_seconds:
                flush()
            if progress is not None:
                progress(int(keep.sum()))
    finally:
        # Whole chunks computed before an error or Ctrl-C are kept.
        flush()
        result.seconds = time.monotonic() - t0
    return result


def sample_distribution(
    wh,
    *,
    run_id: str,
    step: int,
    spec: OperatorSpec,
    program: SampleProgram,
    op_state,
    n_samples: int,
    batch_size: int | str | None = "auto",
    shard: tuple[int, int] | str | None = None,
    chunks: Sequence[int] | None = None,
    **run_kwargs,
) -> SampleResult:
    """Fill samples [0, n_samples) of the distribution (run_id, step, spec) in `wh`.

    op_state is what `program.make_params` takes (actor params for gaussian/action/
    init_state, `agent.operator_state(ckpt)` for td3/sac/ppo). run_kwargs: devices,
    start_state, flush_seconds, progress (see `run_plan`).
    """
    plan = plan_distribution(wh, run_id, step, spec, n_samples, batch_size=batch_size,
                             shard=shard, chunks=chunks)
    return run_plan(wh, plan, program, op_state, **run_kwargs)


# ------------------------------------------------------------------------ checkpoints


def checkpoint_program(spec: OperatorSpec, ckpt) -> tuple[SampleProgram, Any]:
    """(program, op_state) for sampling `spec` at a loaded checkpoint."""
    agent = get_agent(ckpt.algo, ckpt.config)
    if spec.kind in ("td3", "sac", "ppo"):
        if spec.kind != ckpt.algo:
            raise SamplingError(
                f"operator {spec.kind} needs a {spec.kind} checkpoint; run {ckpt.run_id} is {ckpt.algo}")
        op_state = agent.operator_state(ckpt)
    else:
        op_state = agent.actor_params(ckpt.state)
    program = program_for(spec, ckpt.env, ckpt.backend, AgentPolicy(agent), agent)
    return program, op_state


def sample_checkpoint(
    wh,
    run_id: str,
    step: int,
    spec: OperatorSpec,
    n_samples: int,
    *,
    batch_size: int | str | None = "auto",
    shard: tuple[int, int] | str | None = None,
    chunks: Sequence[int] | None = None,
    checkpoint=None,
    **run_kwargs,
) -> SampleResult:
    """`sample_distribution` for a stored checkpoint; the checkpoint (and its replay
    buffer) is loaded only when this job has chunks to compute."""
    plan = plan_distribution(wh, run_id, step, spec, n_samples, batch_size=batch_size,
                             shard=shard, chunks=chunks)
    if not plan.todo:
        return run_plan(wh, plan, None, None, **run_kwargs)
    if checkpoint is None:
        checkpoint = load_checkpoint(wh, run_id, step)
    program, op_state = checkpoint_program(spec, checkpoint)
    return run_plan(wh, plan, program, op_state, **run_kwargs)
