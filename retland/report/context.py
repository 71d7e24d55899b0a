"""`ReportContext`: what every section reads (the connection, --where, the statistics'
parameters) and the queries several sections share, computed once."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import polars as pl

from ..analyses.distributions import stats_relation, with_bootstrap
from ..warehouse import WarehouseError
from ..warehouse.readonly import filtered, parse_where, query_error
from . import charts

# The SQL of the shared queries. Registered frames: report_wanted (d, run_id, step,
# operator_id) and report_ranges (the same with each distribution's lo, hi).
# Every run with each of its checkpoint steps (step NULL for a run without checkpoints)
# and its source (trained | imported | derived).
RUN_CHECKPOINTS_SQL = """
SELECT r.run_id, r.algo, r.env, r.seed, c.step, r.source
FROM runs AS r LEFT JOIN checkpoints AS c USING (run_id)
"""
# Each wanted distribution's returns in update order (r) and their range (lo, hi).
WANTED_SAMPLES_SQL = """
SELECT run_id, step, operator_id AS operator, min("return") AS lo, max("return") AS hi,
       list("return" ORDER BY update_index) AS r
FROM post_update_returns SEMI JOIN report_wanted USING (run_id, step, operator_id)
GROUP BY ALL
"""
# Samples per (distribution d, bin b of purd_bin's 100 over [lo, hi]); empty bins left out.
RANGE_HISTOGRAMS_SQL = """
SELECT g.d, CASE WHEN g.lo = g.hi THEN 0 ELSE purd_bin(p."return", g.lo, g.hi) END::TINYINT AS b,
       count(*)::INTEGER AS c
FROM post_update_returns AS p JOIN report_ranges AS g USING (run_id, step, operator_id)
GROUP BY ALL ORDER BY g.d, b
"""


@dataclass
class ReportContext:
    """What a section reads: the connection, the filter and the statistics' parameters.

    Queries shared by several sections (the filtered distributions) are computed once.
    """

    con: duckdb.DuckDBPyConnection
    where: str | None = None
    alpha: float = 0.1
    beta: float = 0.5
    n_resamples: int = 1000
    seed: int = 0
    root: Path | None = None  # the warehouse folder: files rows point at (artifacts/renders)
    _cache: dict = field(default_factory=dict, repr=False)
    _scopes: list = field(default_factory=list, repr=False)

    def __post_init__(self):
        parse_where(self.where)  # a condition that does not parse fails before any section runs

    # -- tables ---------------------------------------------------------------------
    def has_table(self, name: str) -> bool:
        """Whether a table or view of that name exists (later analyses add theirs)."""
        return bool(self.con.sql(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ?", params=[name]
        ).fetchall()[0][0])

    def row_count(self, name: str) -> int:
        """Rows in a table or view; 0 when it does not exist (yet)."""
        if not self.has_table(name):
            return 0
        return self.sql(f'SELECT count(*) AS n FROM "{name}"')["n"][0]

    def sql(self, query: str, params: list | None = None) -> pl.DataFrame:
        """Rows of `query`, with `?` bound to `params`, as a polars DataFrame."""
        try:
            return self.con.sql(query, params=params).pl()
        except duckdb.Error as exc:
            raise query_error(exc) from None

    # -- the --where filter ---------------------------------------------------------
    def run_scope(self, relation: str) -> str:
        """SQL for the rows of `relation` (with run_id, algo, env, seed, step columns)
        that --where keeps; see the module docstring.

        The condition is applied through DuckDB's relation API and the result registered
        as a temporary view, so the user's text is parsed as one expression and never
        becomes part of an SQL string."""
        if not self.where:
            return relation
        name = f"report_scope_{len(self._scopes)}"
        try:
            rel = filtered(self.con, relation, self.where)
        except WarehouseError:
            # names distribution columns: keep runs with a matching distribution
            self.con.register("report_scope_runs", self.distributions().select("run_id").unique())
            rel = self.con.sql(relation).filter("run_id IN (SELECT run_id FROM report_scope_runs)")
        rel.create_view(name, replace=True)
        self._scopes.append(name)
        return f"SELECT * FROM {name}"

    def checkpoints(self) -> pl.DataFrame:
        """Runs and their checkpoints that --where keeps: run_id, algo, env, seed, step
        (step NULL for a run without checkpoints), source."""
        if "checkpoints" not in self._cache:
            self._cache["checkpoints"] = self.sql(self.run_scope(RUN_CHECKPOINTS_SQL))
        return self._cache["checkpoints"]

    # -- distributions --------------------------------------------------------------
    def distributions(self) -> pl.DataFrame:
        """The filtered distributions: one row each, with an integer id `d`, the six
        statistics, the sample range (lo, hi), bootstrap CIs `<stat>_lo/_hi` and
        `label`. Ordered by algo, env, seed, step, operator."""
        if "distributions" not in self._cache:
            self._cache["distributions"] = self._distributions()
        return self._cache["distributions"]

    def _distributions(self) -> pl.DataFrame:
        if not self.row_count("post_update_returns"):
            return pl.DataFrame()
        try:
            df = stats_relation(self.con, self.alpha, self.beta, self.where).pl()
        except duckdb.Error as exc:
            raise query_error(exc) from None
        # distributions from replay rows (start=row<r> in the id) have their own section
        df = df.filter(~pl.col("operator").str.contains(r"[\[,]start=row[0-9]+,"))
        if df.height == 0:
            return df
        df = df.with_row_index("d").with_columns(pl.col("d").cast(pl.Int32))
        samples = self._samples(df)
        df = df.join(samples.select("run_id", "step", "operator", "lo", "hi"), on=["run_id", "step", "operator"])
        df = df.sort("d")
        if self.n_resamples:
            df = with_bootstrap(df, samples, self.alpha, self.beta, self.n_resamples, self.seed, nan_as_null=True)
        return df.with_columns(label=charts.distribution_label(df))

    def _samples(self, df: pl.DataFrame) -> pl.DataFrame:
        """Each wanted distribution's returns (a list) and range, in one query."""
        self.con.register("report_wanted", df.select("d", "run_id", "step", pl.col("operator").alias("operator_id")))
        try:
            return self.sql(WANTED_SAMPLES_SQL)
        finally:
            self.con.unregister("report_wanted")

    def histograms(self) -> pl.DataFrame:
        """Binned counts of every filtered distribution, computed in DuckDB with the
        statistics' own 100-bin rule (`purd_bin`): rows (d, b, c) = (distribution,
        bin 0..99, samples in it); empty bins are left out. Bin b spans
        [lo + b·(hi − lo)/100, lo + (b + 1)·(hi − lo)/100]."""
        if "histograms" not in self._cache:
            dists = self.distributions()
            if dists.height == 0:
                self._cache["histograms"] = pl.DataFrame({"d": [], "b": [], "c": []})
            else:
                self.con.register("report_ranges", dists.select(
                    "d", "run_id", "step", pl.col("operator").alias("operator_id"), "lo", "hi"))
                try:
                    self._cache["histograms"] = self.sql(RANGE_HISTOGRAMS_SQL)
                finally:
                    self.con.unregister("report_ranges")
        return self._cache["histograms"]
