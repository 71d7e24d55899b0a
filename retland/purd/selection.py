"""Which checkpoints a sampling job works on (`retland sample`)."""
from __future__ import annotations

from typing import Sequence

from retland.warehouse.sqlgen import in_list


def candidate_checkpoints(wh, run_ids: Sequence[str] | None = None, algo: str | None = None, env: str | None = None,
                          seeds: Sequence[int] | None = None, steps: Sequence[int] | None = None,
                          sources: Sequence[str] = ("trained",)) -> list[dict]:
    """run_id, step, env and stored (whether its parameters are stored: imported returns
    have none) of every checkpoint of the runs `run_ids` (exact ids), or else of the runs
    of `algo` on `env` whose source is one of `sources`; narrowed to training seeds
    `seeds` and env steps `steps` when given. In (run_id, step) order."""
    where, params = [], []
    if run_ids:
        cond, values = in_list("c.run_id", run_ids)
        where.append(cond)
        params += values
    else:
        cond, values = in_list("r.source", sources)
        where += ["r.algo = ?", "r.env = ?", cond]
        params += [algo, env, *values]
    for column, values in (("r.seed", seeds), ("c.step", steps)):
        if values:
            cond, values = in_list(column, values)
            where.append(cond)
            params += values
    return wh.records(
        "SELECT c.run_id, c.step, r.env, c.artifact_path IS NOT NULL AS stored FROM checkpoints c "
        f"JOIN runs r USING (run_id) WHERE {' AND '.join(where)} ORDER BY c.run_id, c.step", params)
