"""Post-update return distributions and their statistics, read from the warehouse.

The statistics are computed in DuckDB by the `purd_stats` macro (schema/); the optional
bootstrap CIs come from the NumPy twin in `retland.stats`, one vectorised bootstrap per
distribution.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import duckdb
import numpy as np
import polars as pl

from .. import stats
from ..config.requests import number, options
from ..warehouse import RUN_SOURCES, Warehouse, WarehouseError
from ..warehouse.readonly import filtered, query_error

STAT_COLUMNS = ("mean", "std", "skewness", "mode", "ltp", "cvar")
KEY = ("run_id", "step", "operator_id")


def _check_alpha_beta(alpha: float, beta: float) -> None:
    if not (0.0 < float(alpha) <= 1.0):
        raise WarehouseError(f"--alpha must be in (0, 1], got {alpha}")
    if not (0.0 < float(beta) <= 1.0):
        raise WarehouseError(f"--beta must be in (0, 1], got {beta}")


SOURCES = RUN_SOURCES  # one spelling, in retland.warehouse


def stats_relation(con: duckdb.DuckDBPyConnection, alpha: float = 0.1, beta: float = 0.5,
                   where: str | None = None, sources=None) -> duckdb.DuckDBPyRelation:
    """The statistics of every distribution that `where` (one SQL condition, parsed as an
    expression, never pasted into SQL) keeps, ordered by algo, env, seed, step, operator,
    source, run_id.

    sources: the runs.source values to keep (trained, imported, derived); None keeps all.
    `source` is also a column, so `where` can name it."""
    _check_alpha_beta(alpha, beta)
    keep = ""
    if sources is not None:
        sources = tuple(sources)
        bad = [s for s in sources if s not in SOURCES]
        if bad or not sources:
            raise WarehouseError(f"sources {list(sources)!r}: choose from {', '.join(SOURCES)}")
        keep = "WHERE r.source IN (" + ", ".join(f"'{s}'" for s in sources) + ")"
    sql = (
        "SELECT p.algo, p.env, p.variant, p.seed, p.step, p.operator_id AS operator, p.n, p.mean, p.std, "
        "p.skewness, p.mode, p.ltp, p.mode_nonpositive, p.cvar, p.run_id, r.source "
        f"FROM purd_stats(alpha := {float(alpha)!r}, beta := {float(beta)!r}) p "
        f"LEFT JOIN runs r USING (run_id) {keep}"
    )
    return filtered(con, sql, where).order("algo, env, seed, step, operator, source, run_id")


def distribution_stats(
    wh: Warehouse,
    alpha: float = 0.1,
    beta: float = 0.5,
    where: str | None = None,
    bootstrap: bool = False,
    n_resamples: int = 1000,
    seed: int = 0,
    sources=None,
) -> pl.DataFrame:
    """One row per (run, checkpoint step, operator): n and the six statistics.

    where: an SQL condition over algo, env, variant, seed, step, operator, run_id, source,
    n and the statistic columns. bootstrap=True adds `<stat>_lo`/`<stat>_hi` 95%
    percentile CIs. sources: the run sources to keep (e.g. ("trained", "imported"));
    None keeps every run, including those `stabilize` derived.
    """
    con = wh.connect()
    try:
        df = stats_relation(con, alpha, beta, where, sources).pl()
        if bootstrap and df.height:
            df = _add_bootstrap(con, df, alpha, beta, n_resamples, seed)
    except duckdb.Error as exc:
        raise query_error(exc) from None
    finally:
        con.close()
    return df


def _add_bootstrap(con, df: pl.DataFrame, alpha, beta, n_resamples, seed) -> pl.DataFrame:
    con.register("wanted", df.select("run_id", "step", pl.col("operator").alias("operator_id")).to_arrow())
    samples = con.sql(
        'SELECT run_id, step, operator_id, list("return" ORDER BY update_index) AS r '
        "FROM post_update_returns SEMI JOIN wanted USING (run_id, step, operator_id) GROUP BY ALL"
    ).pl()
    return with_bootstrap(df, samples.rename({"operator_id": "operator"}), alpha, beta, n_resamples, seed)


def with_bootstrap(df: pl.DataFrame, samples: pl.DataFrame, alpha, beta, n_resamples, seed,
                   nan_as_null: bool = False) -> pl.DataFrame:
    """Add `<stat>_lo`/`<stat>_hi` 95% percentile bootstrap CIs to `df` (one row per
    run_id, step, operator); `samples` holds each distribution's returns in a list column `r`."""

    by_key = {(r["run_id"], r["step"], r["operator"]): np.asarray(r["r"], dtype=np.float64)
              for r in samples.iter_rows(named=True)}
    cols: dict[str, list] = {f"{s}_{b}": [] for s in STAT_COLUMNS for b in ("lo", "hi")}
    for key in df.select("run_id", "step", "operator").iter_rows():
        ci = stats.bootstrap_summary(by_key[key], alpha=alpha, beta=beta, n_resamples=n_resamples, seed=seed)
        for s in STAT_COLUMNS:
            for bound, value in zip(("lo", "hi"), ci[s]):
                cols[f"{s}_{bound}"].append(None if nan_as_null and np.isnan(value) else value)
    return df.with_columns(*[pl.Series(k, v, dtype=pl.Float64) for k, v in cols.items()])


@dataclass(frozen=True)
class StatsRequest:
    """`retland stats`: the statistics of every distribution of runs of `sources` that
    `where` keeps, at α and β, with `bootstrap` resamples for 95% CIs (0: none)."""

    command: ClassVar[str] = "stats"

    where: str | None = None
    sources: tuple[str, ...] = ("trained", "imported", "added")
    alpha: float = 0.1
    beta: float = 0.5
    bootstrap: int = 0

    def argv(self) -> list[str]:
        d = StatsRequest()
        return ["stats"] + options([
            ("--where", self.where), ("--source", ",".join(self.sources) if self.sources != d.sources else None),
            ("--alpha", number(self.alpha) if self.alpha != d.alpha else None),
            ("--beta", number(self.beta) if self.beta != d.beta else None), ("--bootstrap", self.bootstrap or None)])


def run_request(wh: Warehouse, request: StatsRequest, *, progress=None) -> pl.DataFrame:
    """The request's statistics (`distribution_stats`), what `retland stats` prints."""
    return distribution_stats(wh, alpha=request.alpha, beta=request.beta, where=request.where,
                              bootstrap=request.bootstrap > 0, n_resamples=max(request.bootstrap, 1),
                              sources=request.sources)
