"""Which checkpoints a sampling job works on (`retland sample`, `retland.sample`)."""
from __future__ import annotations

from typing import Sequence

from retland.purd.engine import SamplingError
from retland.warehouse.runs import resolve_run, run_exists
from retland.warehouse.sqlgen import in_list


def select_checkpoints(wh, runs: Sequence[str] | None, algo: str | None, env: str | None,
                       seeds: Sequence[int] | None, steps: Sequence[int] | None,
                       sources: Sequence[str] = ("trained",)) -> list[tuple[str, int, str]]:
    """(run_id, step, env) of the chosen checkpoints, in (run_id, step) order.

    `runs` are ids or unique prefixes of them (with `seeds`, one prefix may match one run
    per seed; `resolve_run` refuses a prefix that matches none or several with
    `RunSelectionError`). `algo`/`env` take runs of `sources` only (trained by default:
    derived runs share algo, env and seed with their source run and would double the
    work). Only checkpoints with stored parameters can be sampled: runs whose returns were
    imported have none, and are refused by name (`runs`) or left out (`algo`/`env`). The
    messages name the command's options (--run, --algo, --env, --seeds)."""
    if runs:
        if seeds and len(runs) == 1 and not run_exists(wh, runs[0]):
            runs = [resolve_run(wh, runs[0], s, seed_option="--seeds") for s in seeds]
        else:
            runs = [resolve_run(wh, r, seed_option="--seeds") for r in runs]
    elif not (algo and env):
        raise SamplingError("choose checkpoints with --run RUN_ID, or with --algo and --env")
    rows = [(r["run_id"], r["step"], r["env"], r["stored"])
            for r in candidate_checkpoints(wh, runs, algo, env, seeds, steps, sources)]
    found = [(r, int(s), e) for r, s, e, stored in rows if stored]
    bare = [(r, int(s)) for r, s, _, stored in rows if not stored]
    if runs and bare:
        r, s = bare[0]
        raise SamplingError(f"run {r} step {s} has no stored checkpoint to sample from (its returns were imported); "
                            "only trained runs can be sampled")
    if not found:
        raise SamplingError("no checkpoints match " + ", ".join(
            f"{k}={v}" for k, v in dict(run=runs, algo=algo, env=env, seeds=seeds, steps=steps,
                                        source=None if runs else ",".join(sources)).items() if v)
            + (f" ({len(bare)} imported checkpoint(s) without parameters left out)" if bare else ""))
    if runs:
        missing = sorted(set(runs) - {r for r, _, _ in found})
        if missing:
            raise SamplingError(f"no checkpoints for run(s) {', '.join(missing)}")
    return found


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
