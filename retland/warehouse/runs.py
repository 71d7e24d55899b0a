"""Runs and checkpoints as the commands look them up: by id or id prefix, with their
stored state, and the listing of `retland runs`.

`records` functions return dicts (no polars needed, as on a compute node); the ones that
feed a printed table return polars DataFrames.
"""
from __future__ import annotations

from .sqlgen import in_list
from .writer import WarehouseError


class RunSelectionError(WarehouseError):
    """A run id or prefix that names no run, or several: the message says how to choose."""


def runs_with_prefix(wh, prefix: str, seed: int | None = None) -> list[dict]:
    """run_id, seed, source of every run whose id starts with `prefix` (and whose
    training seed is `seed`, when given), in run_id order."""
    if seed is not None:
        return wh.records("SELECT run_id, seed, source FROM runs WHERE starts_with(run_id, ?) AND seed = ? "
                          "ORDER BY run_id", [prefix, int(seed)])
    return wh.records("SELECT run_id, seed, source FROM runs WHERE starts_with(run_id, ?) ORDER BY run_id", [prefix])


def resolve_run(wh, text: str, seed: int | None = None, option: str = "--run",
                seed_option: str | None = "--seed") -> str:
    """The one run whose id is `text`, or starts with `text` (and has training seed
    `seed` when given). An exact id always wins; several matches are refused, naming
    them and how to choose (`option` and `seed_option` are the names the message gives
    the prefix and the seed; seed_option None: the caller has no seed to add)."""
    rows = runs_with_prefix(wh, text, seed)
    ids = [r["run_id"] for r in rows]
    if text in ids:
        return text
    seed_text = f" with {seed_option} {seed}" if seed is not None else ""
    if not ids:
        raise RunSelectionError(f"{option} {text!r}: no run id starts with it{seed_text}; `retland runs` lists them")
    if len(ids) == 1:
        return ids[0]
    shown = ", ".join(f"{r['run_id']} (seed {r['seed']}, {r['source']})" for r in rows[:8])
    more = f" and {len(ids) - 8} more" if len(ids) > 8 else ""
    hint = "give more of the id" + ("" if seed is not None or seed_option is None else f" or add {seed_option} N")
    raise RunSelectionError(f"{option} {text!r}{seed_text} matches {len(ids)} runs: {shown}{more}; {hint}")


def run_exists(wh, run_id: str) -> bool:
    """Whether `runs` holds this exact run id."""
    return bool(wh.records("SELECT 1 FROM runs WHERE run_id = ?", [run_id]))


def checkpoint_stored(wh, run_id: str, step: int) -> bool | None:
    """Whether the checkpoint (run_id, step) has stored parameters: None when there is no
    such checkpoint, False for a row without them (a run whose returns were imported)."""
    rows = wh.records("SELECT artifact_path FROM checkpoints WHERE run_id = ? AND step = ?", [run_id, int(step)])
    return None if not rows else rows[0]["artifact_path"] is not None


def require_checkpoint(wh, run_id: str, step: int, what: str) -> None:
    """Refuse (RunSelectionError) a checkpoint row without parameters (a run whose returns
    were imported) before any work; unknown runs and steps are left to the caller."""
    if checkpoint_stored(wh, run_id, step) is False:
        raise RunSelectionError(f"run {run_id} step {step} has no stored checkpoint (its returns were imported); "
                                f"{what} needs a trained run")


def run_info(wh, run_id: str):
    """The run's `runs` row as `retland show` prints it (what it is, and its config) as a
    one-row DataFrame."""
    return wh.query("SELECT run_id, algo, env, variant, seed, source, parent_run_id, parent_step, backend, "
                    "created_at, config FROM runs WHERE run_id = ?", [run_id])


def run_checkpoints(wh, run_id: str):
    """The run's checkpoints in step order: step, eval_return, replay_size, stored."""
    return wh.query("SELECT step, eval_return, replay_size, artifact_path IS NOT NULL AS stored FROM checkpoints "
                    "WHERE run_id = ? ORDER BY step", [run_id])


def run_evaluations(wh, run_id: str):
    """The run's evaluations during training in step order."""
    return wh.query("SELECT step, eval_return, episode_length, wall_seconds FROM evaluations WHERE run_id = ? "
                    "ORDER BY step", [run_id])


def run_configs(con):
    """run_id and config (JSON text) of every run, on a connection from `Warehouse.connect`."""
    return con.sql("SELECT run_id, config FROM runs").pl()


def list_runs(wh, sources, run: str | None = None, seed: int | None = None):
    """What `retland runs` lists: the view run_listing (schema/05_runs.sql) for runs of
    `sources`, whose id starts with `run` and of training seed `seed` (each when given),
    ordered by algo, env, seed, run_id. When post_update_returns cannot be read (a damaged
    part, named in `wh.unreadable`), run_checkpoint_listing: the same columns with 0
    distributions and samples."""
    import duckdb

    from .readonly import query_error

    con = wh.connect()
    view = "run_listing" if "post_update_returns" not in wh.unreadable else "run_checkpoint_listing"
    cond, params = in_list("source", sources)
    if run is not None:
        cond, params = cond + " AND starts_with(run_id, ?)", params + [run]
    if seed is not None:
        cond, params = cond + " AND seed = ?", params + [seed]
    try:
        return con.sql(f"SELECT * FROM {view} WHERE {cond} ORDER BY algo, env, seed, run_id", params=params).pl()
    except duckdb.Error as exc:
        raise query_error(exc) from None
    finally:
        con.close()
