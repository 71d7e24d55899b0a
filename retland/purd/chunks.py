"""Chunk bookkeeping, without JAX: which chunks of a distribution are complete, and
what the warehouse holds of each distribution (`stored_distributions`).

Chunk k of chunk size B holds update indices [k·B, (k+1)·B); of a job for N samples it
counts the indices below N only. The engine (`missing_chunks`), the lease claim (a chunk
another job flushed meanwhile) and `retland status` (complete chunks of N) all ask
`chunk_complete`, so the three cannot disagree.
"""
from __future__ import annotations

import math
from typing import Container


def chunk_complete(k: int, batch_size: int, n: int, present: Container[int]) -> bool:
    """Whether every index of chunk k below n is in `present` (the stored indices)."""
    return all(i in present for i in range(k * batch_size, min((k + 1) * batch_size, n)))


def missing_chunks(n: int, batch_size: int, present: Container[int]) -> list[int]:
    """Chunks with at least one index < n not yet stored."""
    return [k for k in range(math.ceil(n / batch_size)) if not chunk_complete(k, batch_size, n, present)]


def stored_distributions(wh, operator: str | None = None, run: str | None = None) -> list[dict]:
    """Rows of the view `distribution_progress` (schema/05_runs.sql): one per stored
    distribution whose operator id starts with `operator` and run id with `run` (each
    when given), in (run_id, step, operator_id) order."""
    where, params = [], []
    if operator:
        where.append("starts_with(operator_id, ?)")
        params.append(operator)
    if run:
        where.append("starts_with(run_id, ?)")
        params.append(run)
    return wh.records("SELECT * FROM distribution_progress " + (f"WHERE {' AND '.join(where)} " if where else "")
                      + "ORDER BY run_id, step, operator_id", params)
