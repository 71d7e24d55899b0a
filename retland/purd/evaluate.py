"""Evaluate a batch of parameter vectors θ_0..θ_{N-1}, chunked like the sampler.

Landscapes and interpolations need J(θ_j) for many θ_j that are cheap functions of a
few stored vectors (θ + a·d1 + b·d2, (1−λ)·θa + λ·θb, plus noise). Materialising N
copies of θ on the host would cost N × |θ| floats, so θ_j is built inside the jitted
chunk from its index j by a `make_params(op_state, key, j)` (a frozen dataclass), and
the work runs through the sampling engine's own chunk program (`sampling.SampleProgram`,
`sampling.run_chunks`): the same fixed chunk size B, the same device dispatch, the same
rollout. So the unit of work and of reproducibility is a chunk of B indices, and the
chunk size must be recorded and reused (returns are chaotic in θ and XLA's arithmetic
depends on the batch shape; see `retland.purd.sampling`).

Indices past N in the last chunk are computed on a clamped θ and dropped.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import jax
import numpy as np

from retland.purd import sampling
from retland.purd.sampling import SampleProgram


@dataclass
class Batch:
    """Results for the new indices of one chunk; arrays [n]."""

    indices: np.ndarray  # int64
    ret: np.ndarray  # float64
    episode_length: np.ndarray  # int32
    terminated: np.ndarray  # bool


def program(env: str, backend: str, horizon: int, policy: Callable, make_params: Callable) -> SampleProgram:
    """A deterministic-rollout program (no action or reset noise) for `evaluate`."""
    return SampleProgram(env, backend, int(horizon), policy, make_params)


def todo_chunks(n: int, batch_size: int, present: set[int]) -> list[int]:
    """Chunks holding at least one index in [0, n) not in `present`."""
    return sampling.missing_chunks(n, batch_size, present)


def evaluate(
    prog: SampleProgram,
    op_state: Any,
    n: int,
    batch_size: int,
    *,
    present: set[int] | frozenset = frozenset(),
    devices=None,
    start_state=None,
) -> Iterator[Batch]:
    """Yield the new results of every chunk with a missing index, chunk by chunk.

    Non-finite returns are refused (ValueError naming the indices) before their chunk is
    yielded, so a caller that appends each batch keeps only finite rows.
    """
    if n < 1 or batch_size < 1:
        raise ValueError(f"evaluate: need n >= 1 and batch_size >= 1, got n={n}, batch_size={batch_size}")
    chunks = todo_chunks(n, batch_size, set(present))
    for res in sampling.run_chunks(prog, op_state, jax.random.PRNGKey(0), chunks, batch_size,
                                   start_state=start_state, devices=devices):
        keep = np.array([i < n and int(i) not in present for i in res.indices], bool)
        ret = res.ret[keep].astype(np.float64)
        if not np.isfinite(ret).all():
            raise ValueError(f"non-finite return at index {res.indices[keep][~np.isfinite(ret)].tolist()} "
                             f"(chunk {res.chunk}, B={batch_size}); nothing of this chunk was stored")
        yield Batch(res.indices[keep].astype(np.int64), ret,
                    res.episode_length[keep].astype(np.int32), res.terminated[keep].astype(bool))


def evaluate_into(
    wh,
    table: str,
    columns: Callable[[np.ndarray], dict],
    prog: SampleProgram,
    op_state: Any,
    n: int,
    batch_size: int,
    *,
    present: set[int] | frozenset = frozenset(),
    devices=None,
    flush_seconds: float = 30.0,
    progress: Callable[[int], None] | None = None,
) -> int:
    """`evaluate`, appending results to `table` at least every `flush_seconds` (and on
    the way out, also after an error or interrupt, so finished chunks are kept).

    columns(j): the table's key columns for indices j [m], besides `return`,
    `episode_length` and `terminated`. Returns the number of rows written."""
    buffer: list[Batch] = []
    written = 0
    last = time.monotonic()

    def flush():
        nonlocal written
        if not buffer:
            return
        j = np.concatenate([b.indices for b in buffer])
        written += wh.append(table, {
            **columns(j), "return": np.concatenate([b.ret for b in buffer]),
            "episode_length": np.concatenate([b.episode_length for b in buffer]),
            "terminated": np.concatenate([b.terminated for b in buffer])})
        buffer.clear()

    try:
        for batch in evaluate(prog, op_state, n, batch_size, present=present, devices=devices):
            buffer.append(batch)
            if time.monotonic() - last >= flush_seconds:
                flush()
                last = time.monotonic()
            if progress is not None:
                progress(len(batch.indices))
    finally:
        flush()
    return written


def n_chunks(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)
