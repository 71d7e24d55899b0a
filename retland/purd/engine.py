"""The chunk engine: every rollout retland stores, and every PURD estimate, runs here.

A sample j of a job is
    key_j = fold_in(base key, j)
    θ_j   = make_params(op_state, key_j, j)        (an update operator, a point on a line, …)
    row_j = rollout(θ_j) from the start state (or a perturbed rollout), masked after done.
`sample_rollout` is that computation for one index; a chunk program vmaps it over B
indices and is jitted once per (program, B). Sampling (post-update returns), landscapes
and interpolations drive it through `compute`; Algorithm 1 maps `sample_rollout` over
indices inside its own jitted experiment step.

Chunks. XLA's arithmetic for a vmapped rollout depends on the batch shape, and returns
are chaotic in θ, so the unit of work is a chunk of fixed size B: chunk k holds indices
[kB, (k+1)B), the last one padded with real indices ≥ N whose rows are discarded. B is
chosen once per distribution (or grid, or pair), recorded with its rows and reused by
every later job, so rows are bit-identical however the work was split, on one platform.

Devices. Chunk j of a job goes to local device j mod D with its inputs `device_put`
there, several chunks in flight (async dispatch), results collected in order: the same
executable on every device (on one platform this was measured bit-identical to one
device; `pmap`/`shard_map` of the same code are not).

Start-up. A chunk program is traced once and kept in the program store
(`retland.core.programs`, beside the compile cache), keyed by the program, the argument
shapes, the platform and the code and package versions; a later process loads it
instead of tracing the rollout again (the slow part of a second process's start), and
compiles it through the persistent compilation cache. The reference state s0 is kept
there too. The stored program is the traced one exported by `jax.export`: rows are the
same bit for bit. RETLAND_PROGRAM_CACHE=0 turns the store off.

Storing (`compute`). For each chunk, the rows of indices that are new and inside [0, N)
(`Work.keep`) are checked against the target table's declared rules (finite returns, …)
and against the horizon, then buffered; the buffer is appended as one atomic Parquet
part every `FLUSH_SECONDS` and on the way out (also after an error or Ctrl-C), so a
killed job loses at most the unflushed chunks and leaves only whole files. A chunk that
breaks a rule is refused whole (`NonFiniteReturnError` / `SamplingError` naming the
indices); the chunks before it are kept. Progress is reported through a callback,
`progress(new rows)`, after each chunk.
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

from retland.core import jaxcache, programs, sizing
from retland.core.envs import make_env, reference_env, reference_state
from retland.core.repro import device_label
from retland.core.networks import DeterministicActor
from retland.core.rollout import rollout
from retland.purd.chunks import missing_chunks
from retland.purd.operators import OperatorSpec, params_function, rollout_key, rollout_perturbation, sample_key
from retland.warehouse.tables import TABLES
from retland.warehouse.writer import RowError, check_rows

FLUSH_SECONDS = 10.0
# What a chunk program returns, per index, as stored columns (a table takes those it has).
RESULT_COLUMNS = ("return", "discounted_return", "episode_length", "terminated")


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

    policy(params, obs [O]) -> action [A]; make_params(op_state, key_j, j) -> params.
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
    # The task rules (retland.core.envs.VARIANTS): always the run's own, never a default.
    variant: str = field(kw_only=True)


def program_for(spec: OperatorSpec, env: str, backend: str, policy, agent=None, *, variant: str) -> SampleProgram:
    """The program of operator `spec` rolled out with `policy`; td3/sac/ppo need `agent`."""
    action_noise, reset_noise = rollout_perturbation(spec)
    return SampleProgram(env, backend, spec.horizon, policy, params_function(spec, agent),
                         action_noise, reset_noise, variant=variant)


def sample_rollout(program: SampleProgram, op_state, start_state, base_key, j, per_step: bool = False):
    """Sample j: θ_j = make_params(op_state, fold_in(base_key, j), j), rolled out for the
    program's horizon (a `Rollout`, plus the `Steps` record when per_step)."""
    env = reference_env(program.env, program.backend, variant=program.variant)
    key = sample_key(base_key, j)
    # θ_j is computed once per sample: the barrier keeps XLA from fusing the update
    # into the rollout's loop body, where it would run at each of the H steps.
    params = jax.lax.optimization_barrier(program.make_params(op_state, key, j))
    rkey = rollout_key(key)
    if program.reset_noise > 0:
        start_state = make_env(program.env, program.backend, program.reset_noise, variant=program.variant).reset(rkey)
    return rollout(env, program.policy, params, start_state, program.horizon,
                   action_noise=program.action_noise, key=rkey, per_step=per_step)


_COMPILED: dict[tuple[SampleProgram, bool], programs.StoredJit] = {}


def chunk_function(program: SampleProgram, per_step: bool = False) -> programs.StoredJit:
    """jit(fn(op_state, start_state, base_key, indices [B]) -> Rollout [B]).

    op_state and the start state are arguments, never closed-over constants, so one
    executable serves every checkpoint of the same shapes; jit caches one per B.
    per_step=True also returns the `Steps` record [B, T] (trajectory analyses); it is a
    different program, so whether its returns match the summary program's bit for bit
    is for the caller to check.

    The traced program of each argument signature is kept in the program store
    (`retland.core.programs.StoredJit`): a later process loads it instead of tracing.
    start_state may be `reference_start(program)`.
    """
    fn = _COMPILED.get((program, per_step))
    if fn is None:
        jaxcache.enable()

        def chunk(op_state, start_state, base_key, indices):
            return jax.vmap(lambda j: sample_rollout(program, op_state, start_state, base_key, j, per_step))(indices)

        fn = _COMPILED[(program, per_step)] = programs.StoredJit(
            chunk, ("retland.purd.engine.chunk_function", program, per_step), name="chunk")
    return fn


def packed_chunk_function(program: SampleProgram) -> programs.StoredJit:
    """jit(fn(op_states [m, ...], start_states [m, ...], base_key, indices [m, B]) -> Rollout [m, B]):
    m chunks of B samples of m distributions that share `program` (a packed chunk,
    `retland.purd.packing`). Slot s is `chunk_function`'s computation for op_states[s]
    and start_states[s]; the whole is one vmapped program of m·B lanes, so its
    arithmetic is that of its own shape, not of an unpacked chunk's."""
    key = (program, "packed")
    fn = _COMPILED.get(key)
    if fn is None:
        jaxcache.enable()

        def chunk(op_states, start_states, base_key, indices):
            def slot(op_state, start_state, idx):
                return jax.vmap(lambda j: sample_rollout(program, op_state, start_state, base_key, j))(idx)

            return jax.vmap(slot)(op_states, start_states, indices)

        fn = _COMPILED[key] = programs.StoredJit(
            chunk, ("retland.purd.engine.packed_chunk_function", program), name="packed-chunk")
    return fn


def forget_compiled() -> None:
    """Drop this process's chunk functions, so the next call of each program looks it up
    in the program store as a new process would (tests; a long-lived session)."""
    _COMPILED.clear()


def reference_start(program: SampleProgram):
    """The program's reference state s0 for a chunk function, kept in the program store
    (a `programs.StoredValue`: building the env and tracing its reset are skipped when
    it is stored), or the state itself when the store is off."""
    env, backend, variant = program.env, program.backend, program.variant
    return programs.stored_value(("retland.core.envs.reference_state", env, backend, variant),
                                 lambda: reference_state(env, backend, variant=variant))


# --------------------------------------------------------------------------- chunks

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


_FITS: set = set()


def chunk_fits(fn, placed_args, batch_size: int, device, room: int | None = None, *, indices=None,
               option: str = "--batch-size") -> None:
    """On a device with a memory limit (an accelerator), refuse a chunk size whose
    compiled chunk program would not fit, before running it (`retland.core.sizing`):
    the message names the largest --batch-size that does. Once per program, size and
    device kind in a process; nothing is checked on CPU. room: the budget in bytes
    (default `sizing.budget(device)`). indices: the program's index argument when it is not
    [batch_size] (a packed chunk's [m, B]); option: the option the message names."""
    room = sizing.budget(device) if room is None else room
    if room is None:
        return
    key = (id(fn), batch_size, getattr(device, "device_kind", device.platform))
    if key in _FITS:
        return
    idx = jax.device_put(chunk_indices(0, batch_size) if indices is None else indices, device)
    fp = sizing.footprint(fn, *placed_args, idx)
    if fp is not None and fp.need() > room:
        need, per_sample = fp.need(), fp.scaling / batch_size
        fits = max(1, fp.largest_fitting(batch_size, room))
        raise SamplingError(
            f"a chunk of {batch_size} samples needs {sizing.gib(need)} on this "
            f"{getattr(device, 'device_kind', device.platform)} (XLA's memory analysis of the chunk program; "
            f"about {sizing.gib(per_sample)} per sample), more than its budget of {sizing.gib(room)} "
            f"({int(sizing.HEADROOM * 100)}% of the free memory). " + (
                f"A new distribution: pass --batch-size {fits} or less. A started one keeps its chunk size: "
                "resume it on a device with more memory." if option == "--batch-size" else
                f"Pass {option} {fits} or less."))
    _FITS.add(key)


def chunk_indices(k: int, batch_size: int) -> np.ndarray:
    """[B] int32: the indices of chunk k."""
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
        start_state = reference_start(program)
    placed = [
        (jax.device_put(op_state, d), jax.device_put(start_state, d), jax.device_put(base_key, d))
        for d in devs
    ]
    chunk_fits(fn, placed[0], batch_size, devs[0])
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


# ----------------------------------------------------------------------------- work

@dataclass
class Work:
    """Which chunks of an index space [0, n) one job computes, in chunks of batch_size."""

    n: int
    batch_size: int
    todo: list[int]  # chunks to compute, ascending
    present: set[int] = field(default_factory=set)  # indices already stored

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def keep(self, indices: np.ndarray) -> np.ndarray:
        """[B] bool: which rows of a chunk are new and inside [0, n)."""
        return np.array([i < self.n and int(i) not in self.present for i in indices], bool)

    @property
    def new_rows(self) -> int:
        return int(sum(self.keep(chunk_indices(k, self.batch_size)).sum() for k in self.todo))


@dataclass
class Computed:
    chunks: int = 0
    rows_written: int = 0
    seconds: float = 0.0
    chunk_devices: dict[int, int] = field(default_factory=dict)  # chunk -> device position


def _chunk_rows(res: ChunkResult, keep: np.ndarray, columns: Callable[[np.ndarray], dict],
                wanted: Sequence[str]) -> dict:
    j = res.indices[keep].astype(np.int64)
    results = {"return": res.ret[keep].astype(np.float64),
               "discounted_return": res.discounted_return[keep].astype(np.float64),
               "episode_length": res.episode_length[keep].astype(np.int32),
               "terminated": res.terminated[keep].astype(bool)}
    return {**columns(j), **{c: results[c] for c in wanted}}


def check_chunk(table: str, rows: dict, j: np.ndarray, chunk: int, batch_size: int, horizon: int, label: str) -> None:
    """Refuse a chunk whose rows (j [m]: their indices) break the table's rules or the
    horizon, before anything of it is buffered."""
    try:
        check_rows(table, pa.table({c: v for c, v in rows.items() if c in RESULT_COLUMNS}))
    except RowError as exc:
        error = NonFiniteReturnError if exc.problem.startswith("non-finite") else SamplingError
        raise error(
            f"{label}: {exc.problem} in column {exc.column} at update_index {j[exc.rows].tolist()} (chunk {chunk}, "
            f"B={batch_size}); refused: nothing of this chunk was stored, the chunks computed before it were") from None
    bad = rows["episode_length"] > horizon
    if bad.any():
        raise SamplingError(
            f"{label}: episode_length above the horizon {horizon} at update_index {j[bad].tolist()} "
            f"(chunk {chunk}); refused: nothing of this chunk was stored")


def _timing_base(table: str, identity: dict, horizon: int, batch_size: int, devices) -> dict:
    devs = resolve_devices(devices)
    return {"table_name": table, **identity, "device": device_label(devs[0]),
            "device_count": len(devs), "batch_size": int(batch_size), "horizon": int(horizon)}


def _timing_row(base: dict, chunks: int, seconds: float, first_flush: bool) -> dict:
    import datetime
    import uuid

    return {**base, "timing_id": uuid.uuid4().hex, "chunks": int(chunks),
            "env_steps": int(chunks) * base["batch_size"] * base["horizon"], "seconds": float(seconds),
            "includes_compile": bool(first_flush), "recorded_at": datetime.datetime.now(datetime.timezone.utc)}


def fill(wh, table: str, columns: Callable[[np.ndarray], dict], program: SampleProgram, op_state, n: int,
         batch_size: int, present: set[int], **kwargs) -> Computed:
    """`compute` every chunk of [0, n) with a missing index, for programs whose
    make_params draws its own randomness from op_state (landscapes, interpolation): the
    base key is a constant. kwargs as `compute`."""
    work = Work(n, batch_size, missing_chunks(n, batch_size, present), present)
    return compute(wh, table, columns, program, op_state, jax.random.PRNGKey(0), work, **kwargs)


def compute(
    wh,
    table: str,
    columns: Callable[[np.ndarray], dict],
    program: SampleProgram,
    op_state,
    base_key: jax.Array,
    work: Work,
    *,
    label: str = "",
    start_state=None,
    devices=None,
    flush_seconds: float = FLUSH_SECONDS,
    progress: Callable[[int], None] | None = None,
    with_first: dict | None = None,
    timing: dict | None = None,
) -> Computed:
    """Compute `work`'s chunks and append their new rows to `table` (see the module doc).

    columns(j [m] int64) -> the table's other columns for indices j (keys, chunk size);
    the results (return, discounted return, episode length, terminated) are added for
    those the table has. label names the job in errors. progress(n) is called after
    each chunk with the number of new rows it gave. with_first: rows of other tables
    (table -> rows) committed together with the first flush (e.g. the operators row a
    sampling job needs), so a crash never leaves them without any of the rows.
    timing: the identity columns (run_id, step, operator_id) of a chunk_timings row that
    each flush commits with its rows: how many chunks it computed in how long (the first
    flush's time holds the compile), which study --plan estimates wall time from.
    """
    if not work.todo:
        return Computed()
    wanted = [c for c in RESULT_COLUMNS if c in TABLES[table].schema.names]
    timed = _timing_base(table, timing, program.horizon, work.batch_size, devices) if timing else None

    def chunks() -> Iterator[tuple[int, int, dict, int]]:
        for res in run_chunks(program, op_state, base_key, work.todo, work.batch_size,
                              start_state=start_state, devices=devices):
            keep = work.keep(res.indices)
            rows = _chunk_rows(res, keep, columns, wanted)
            check_chunk(table, rows, res.indices[keep], res.chunk, work.batch_size, program.horizon, label)
            yield res.chunk, res.device, rows, int(keep.sum())

    return store_chunks(wh, table, chunks(), flush_seconds=flush_seconds, progress=progress,
                        with_first=with_first, timed=timed)


def store_chunks(wh, table: str, chunks: Iterable[tuple[int, int, dict, int]], *,
                 flush_seconds: float = FLUSH_SECONDS, progress: Callable[[int], None] | None = None,
                 with_first: dict | None = None, timed: dict | None = None) -> Computed:
    """Buffer the checked rows of computed chunks ((chunk id, device position, rows,
    new rows) each) and append them to `table` every flush_seconds and on the way out,
    an error's or Ctrl-C's too (`compute`'s storing; packed chunks use it as well).
    timed: a `_timing_base` row that each flush commits with its chunk count and time."""
    out = Computed()
    buffer: list[dict] = []
    last_flush = t0 = time.monotonic()
    flushed_chunks = 0

    def flush():
        nonlocal last_flush, flushed_chunks
        if buffer:
            first = buffer[0]
            cols = {name: (np.concatenate([b[name] for b in buffer]) if isinstance(first[name], np.ndarray)
                           else [v for b in buffer for v in b[name]]) for name in first}
            extra = dict(with_first or {})
            if timed is not None:
                chunks = out.chunks - flushed_chunks
                extra["chunk_timings"] = [_timing_row(timed, chunks, time.monotonic() - last_flush,
                                                      first_flush=flushed_chunks == 0)]
            if extra:
                out.rows_written += wh.append_many({**extra, table: cols}, command="sample").get(table, 0)
                if with_first:
                    with_first.clear()
            else:
                out.rows_written += wh.append(table, cols)
            flushed_chunks = out.chunks
            buffer.clear()
        last_flush = time.monotonic()

    try:
        for chunk, device, rows, new in chunks:
            buffer.append(rows)
            out.chunks += 1
            out.chunk_devices[chunk] = device
            if time.monotonic() - last_flush >= flush_seconds:
                flush()
            if progress is not None:
                progress(new)
    finally:
        # Whole chunks computed before an error or Ctrl-C are kept.
        flush()
        out.seconds = time.monotonic() - t0
    return out
