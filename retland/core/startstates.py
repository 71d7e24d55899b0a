"""Start states other than s0: a rollout that starts where training collected a replay row.

The paper measures post-update returns from the fixed reference state s0, and in its
Appendix A.4 also from states the agent visited during training, named by their index in
the replay buffer (docs/method.md "Post-update returns from other start states").

Restoring such a state needs more than the row's observation: the brax tasks' observations
leave out the root's x position, brax 0.14's clip joint velocities, and the paper's
simulator (`retland.core.brax0013`) integrates maximal coordinates (every body's position,
rotation and velocities) whose joint constraints hold only approximately, so joint angles
do not determine them. A run trained with `store_states = true` therefore stores, with each
replay row r, the env state's `pipeline_state` the row's observation was taken in
(`retland.core.replay`). The env's `step` reads only the pipeline state (and the
observation is recomputed from it), so

    restored(r) = s0 with pipeline_state := stored state of row r, obs := obs of row r

steps exactly as the training env did from row r (tests/analyses/test_start_states.py checks that one
step from it reproduces the row's recorded next observation and reward).

Rows spread over a buffer (`spread_rows`): K rows, one drawn uniformly from each of K equal
strata of [0, n), from a NumPy generator seeded by (seed, K, n): evenly spread, seeded, and
the same rows for every checkpoint that shares n.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import jax
import numpy as np

S0 = "s0"
START_SYNTAX = "s0 | replay:K | rows:R1,R2,..."
MAX_ROWS = 10_000  # rows of one request: each is a distribution of its own
_ROW_ID = re.compile(r"^row(\d+)$")


@dataclass(frozen=True)
class StartChoice:
    """A parsed --start: s0, K rows spread over each run's buffer, or listed rows."""

    kind: str  # "s0" | "replay" | "rows"
    count: int = 0  # replay: K
    rows: tuple[int, ...] = ()  # rows: the rows, ascending, distinct

    @property
    def text(self) -> str:
        if self.kind == "replay":
            return f"replay:{self.count}"
        if self.kind == "rows":
            return "rows:" + ",".join(map(str, self.rows))
        return S0

    @property
    def is_s0(self) -> bool:
        return self.kind == S0


def parse_start(text: str | None) -> StartChoice:
    """'s0' | 'replay:K' | 'rows:R1,R2,...' -> StartChoice; ValueError (one line) else."""
    raw = S0 if text is None else str(text).strip()
    kind, sep, body = raw.partition(":")
    kind, body = kind.strip().lower(), body.strip()
    if kind == S0 and not sep:
        return StartChoice(S0)
    if kind == "replay" and sep:
        try:
            k = int(body)
        except ValueError:
            raise ValueError(f"--start {raw!r}: replay:K needs a whole number of rows K") from None
        if not 1 <= k <= MAX_ROWS:
            raise ValueError(f"--start {raw!r}: K must be in [1, {MAX_ROWS}]")
        return StartChoice("replay", count=k)
    if kind == "rows" and sep:
        from retland.config.intlist import IntListError, parse_int_list

        try:
            rows = sorted(set(parse_int_list(body, "--start rows")))
        except IntListError as exc:
            raise ValueError(f"--start {raw!r}: {exc}") from None
        if not rows:
            raise ValueError(f"--start {raw!r}: list at least one replay row")
        if rows[0] < 0:
            raise ValueError(f"--start {raw!r}: replay rows are >= 0")
        if len(rows) > MAX_ROWS:
            raise ValueError(f"--start {raw!r}: at most {MAX_ROWS} rows")
        return StartChoice("rows", rows=tuple(rows))
    raise ValueError(f"--start {raw!r}: expected {START_SYNTAX}")


def spread_rows(k: int, n: int, seed: int) -> list[int]:
    """K distinct rows of [0, n), one uniform draw in each of K equal strata
    [floor(j n / K), floor((j + 1) n / K)), from numpy's default_rng([seed, K, n]).
    With K >= n, every row."""
    if n < 1:
        raise ValueError("the buffer is empty")
    if k >= n:
        return list(range(n))
    rng = np.random.default_rng([int(seed), int(k), int(n)])
    edges = (np.arange(k + 1, dtype=np.int64) * n) // k
    return [int(lo + rng.integers(0, hi - lo)) for lo, hi in zip(edges[:-1], edges[1:])]


def restore(s0, state_row, obs_row):
    """The env state at a replay row: s0 (the reference state, or the program store's
    `StoredValue` of it) with the row's pipeline_state and observation. state_row: the
    pipeline_state pytree of one row (host arrays); obs_row [O]. Keeps s0's container,
    so the chunk program compiled for s0 takes it unchanged."""
    from retland.core.programs import StoredValue

    new = [np.asarray(x) for x in jax.tree.leaves(state_row)]
    obs_row = np.asarray(obs_row)
    if isinstance(s0, StoredValue):
        leaves = list(s0.leaves)
        # a State's leaves: pipeline_state's first (its first field), then obs
        _check(leaves[:len(new)] + [leaves[len(new)]], new + [obs_row])
        leaves[:len(new)] = new
        leaves[len(new)] = obs_row
        return StoredValue(leaves, s0.structure, s0.digest)
    _check(jax.tree.leaves(s0.pipeline_state) + [s0.obs], new + [obs_row])
    pipeline = jax.tree.unflatten(jax.tree.structure(s0.pipeline_state), new)
    return s0.replace(pipeline_state=pipeline, obs=obs_row)


def _check(reference, given) -> None:
    for ref, got in zip(reference, given, strict=True):
        if np.shape(ref) != np.shape(got) or np.asarray(ref).dtype != got.dtype:
            raise ValueError(f"a stored start state has a leaf of shape {np.shape(got)} {got.dtype} where the "
                             f"task's state has {np.shape(ref)} {np.asarray(ref).dtype}")


def row_of(start_id: str | None) -> int | None:
    """'row123' -> 123 (the id form of a start row); None -> None."""
    if start_id is None:
        return None
    m = _ROW_ID.match(start_id)
    if not m:
        raise ValueError(f"start {start_id!r}: expected row<N>")
    return int(m.group(1))
