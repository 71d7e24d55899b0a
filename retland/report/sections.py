"""The report's sections: a registry of functions `(ReportContext) -> [Block]`.

A section is one entry in `SECTIONS`, built by one function from SQL over the warehouse
connection. It returns figures (Altair charts), tables and notes; when its data is not
there it returns one `Note` naming the command that would produce it. Sections never
look at each other, so a new analysis table adds one `@section(...)` function here (or
in any module imported before the report is built) and touches nothing else.

`--where` is the condition `retland stats --where` takes, over algo, env, seed, step,
operator, run_id, n and the statistic columns. Distribution sections apply it to each
distribution. Run-level sections (learning curves, contents) apply it to their rows
when it only names run-level columns (algo, env, seed, run_id, step); a condition on
distribution columns (operator, n, ltp, …) keeps the runs that have a matching
distribution.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import polars as pl

from ..distributions import stats_relation, with_bootstrap
from ..warehouse import WarehouseError
from ..warehouse.readonly import filtered, parse_where, query_error
from . import charts

RANKING_ALPHAS = (0.01, 0.1, 1.0)


@dataclass(frozen=True)
class Figure:
    """One chart of a section; `name` is unique in the report (file names, element ids)."""

    name: str
    chart: Any  # an Altair top-level chart
    caption: str = ""


@dataclass(frozen=True)
class Table:
    """A small table shown as HTML (not exported as an image)."""

    name: str
    frame: pl.DataFrame
    caption: str = ""


@dataclass(frozen=True)
class Note:
    """One line instead of (or beside) a chart: what is missing, or what was left out."""

    text: str


Block = Figure | Table | Note


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    build: Callable[["ReportContext"], list[Block]]
    about: str = ""


SECTIONS: list[Section] = []


def section(key: str, title: str, about: str = ""):
    """Register `fn(ctx) -> list[Block]` as a report section, in registration order."""

    def register(fn: Callable[["ReportContext"], list[Block]]):
        if any(s.key == key for s in SECTIONS):
            raise ValueError(f"report section {key!r} registered twice")
        SECTIONS.append(Section(key=key, title=title, build=fn, about=about))
        return fn

    return register


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

    def sql(self, query: str) -> pl.DataFrame:
        try:
            return self.con.sql(query).pl()
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
        (step NULL for a run without checkpoints)."""
        if "checkpoints" not in self._cache:
            self._cache["checkpoints"] = self.sql(self.run_scope(
                "SELECT r.run_id, r.algo, r.env, r.seed, c.step FROM runs AS r LEFT JOIN checkpoints AS c USING (run_id)"))
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
            return self.sql(
                'SELECT run_id, step, operator_id AS operator, min("return") AS lo, max("return") AS hi, '
                'list("return" ORDER BY update_index) AS r '
                "FROM post_update_returns SEMI JOIN report_wanted USING (run_id, step, operator_id) GROUP BY ALL"
            )
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
                    self._cache["histograms"] = self.sql(
                        "SELECT g.d, CASE WHEN g.lo = g.hi THEN 0 ELSE purd_bin(p.\"return\", g.lo, g.hi) END::TINYINT AS b, "
                        "count(*)::INTEGER AS c "
                        "FROM post_update_returns AS p JOIN report_ranges AS g USING (run_id, step, operator_id) "
                        "GROUP BY ALL ORDER BY g.d, b"
                    )
                finally:
                    self.con.unregister("report_ranges")
        return self._cache["histograms"]


def _missing(what: str, command: str) -> Note:
    return Note(f"No {what} in this warehouse: `{command}` produces them.")


# ---------------------------------------------------------------------------------------
# 1. Contents
# ---------------------------------------------------------------------------------------
@section("contents", "Contents", "What the warehouse holds: runs, checkpoints, distributions, samples, operators.")
def contents(ctx: ReportContext) -> list[Block]:
    if not ctx.row_count("runs"):
        return [Note("The warehouse has no runs: `retland train` or `retland import-returns FILE` adds them.")]
    ckpts = ctx.checkpoints()
    if ckpts.height == 0:
        return [Note("No runs match --where.")]
    dists = ctx.distributions()
    if dists.height == 0:
        dists = pl.DataFrame(schema={"run_id": pl.Utf8, "algo": pl.Utf8, "env": pl.Utf8, "seed": pl.Int32,
                                     "step": pl.Int64, "operator": pl.Utf8, "n": pl.Int64})
    per_ckpt = dists.group_by("run_id", "step").agg(samples=pl.col("n").sum(), operators=pl.col("operator").n_unique())
    # a distribution's checkpoint counts even where no checkpoints row records it
    cells = (pl.concat([ckpts.drop_nulls("step").select("run_id", "algo", "env", "seed", "step"),
                        dists.select("run_id", "algo", "env", "seed", "step")]).unique()
             .join(per_ckpt, on=["run_id", "step"], how="left")
             .with_columns(pl.col("samples").fill_null(0), pl.col("operators").fill_null(0)))
    summary = (
        ckpts.group_by("algo", "env").agg(runs=pl.col("run_id").n_unique(), seeds=pl.col("seed").n_unique())
        .join(cells.group_by("algo", "env").agg(checkpoints=pl.len()), on=["algo", "env"], how="left")
        .join(dists.group_by("algo", "env").agg(distributions=pl.len(), samples=pl.col("n").sum(),
                                                operators=pl.col("operator").unique().sort().str.join(", ")),
              on=["algo", "env"], how="left")
        .with_columns(pl.col("checkpoints", "distributions", "samples").fill_null(0), pl.col("operators").fill_null("—"))
        .sort("algo", "env")
    )
    blocks: list[Block] = [Table("contents-table", summary, "Per algorithm and environment, within --where.")]
    if cells.height:
        blocks.append(Figure("contents-coverage", charts.coverage(cells),
                             "Each cell is a checkpoint; its colour is the number of post-update samples "
                             "taken from it (all operators), grey when none."))
    return blocks


# ---------------------------------------------------------------------------------------
# 2. Learning curves
# ---------------------------------------------------------------------------------------
@section("learning-curves", "Learning curves", "Deterministic return from the reference state during training.")
def learning_curves(ctx: ReportContext) -> list[Block]:
    source = "evaluations"
    relation = ("SELECT e.run_id, r.algo, r.env, r.seed, e.step, e.eval_return "
                "FROM evaluations AS e JOIN runs AS r USING (run_id)")
    if not ctx.row_count("evaluations"):
        source = "checkpoints"
        relation = ("SELECT c.run_id, r.algo, r.env, r.seed, c.step, c.eval_return "
                    "FROM checkpoints AS c JOIN runs AS r USING (run_id) WHERE c.eval_return IS NOT NULL")
    if not ctx.sql(f"SELECT count(*) AS n FROM ({relation})")["n"][0]:
        return [_missing("learning curves", "retland train")]
    curves = ctx.sql(ctx.run_scope(relation) + " ORDER BY algo, env, seed, step")
    if curves.height == 0:
        return [Note("No learning curves match --where.")]
    caption = ("Thin lines: one seed each; thick line: mean over seeds at each step."
               + (" From the checkpoints' evaluation returns (no `evaluations` rows)." if source == "checkpoints" else ""))
    return [Figure("learning-curves", charts.learning_curves(curves), caption)]


# ---------------------------------------------------------------------------------------
# 3. The landscape map (paper Fig. 2, A.5) linked to each checkpoint's PURD (Fig. 1)
# ---------------------------------------------------------------------------------------
@section("map", "Post-update return distributions: the landscape map",
         "Each point is one checkpoint's post-update return distribution (PURD). Click a point to see its "
         "histogram; hover for bootstrap 95% CIs.")
def landscape_map(ctx: ReportContext) -> list[Block]:
    if not ctx.row_count("post_update_returns"):
        return [_missing("post-update returns", "retland sample")]
    dists = ctx.distributions()
    if dists.height == 0:
        return [Note("No distributions match --where.")]
    blocks: list[Block] = [Figure("map", charts.landscape_map(dists, ctx.histograms(), beta=ctx.beta, alpha=ctx.alpha),
                                  f"LTP = share of returns below {ctx.beta:g} × mode; CVaR = mean of the worst "
                                  f"{ctx.alpha:g} share. The histogram uses the same 100 bins as the mode. "
                                  f"CIs: percentile bootstrap, {ctx.n_resamples} resamples."
                                  if ctx.n_resamples else "Bootstrap CIs were turned off.")]
    undefined = dists.filter(pl.col("ltp").is_null()).height
    if undefined:
        blocks.append(Note(f"{undefined} distribution(s) with mode ≤ 0 have no LTP and are missing from the LTP column."))
    return blocks


# ---------------------------------------------------------------------------------------
# 4–6. Analyses whose tables other commands add
# ---------------------------------------------------------------------------------------
@section("landscape", "2-D return landscapes", "J(θ + a·d1 + b·d2) over a grid of two update directions (Fig. 1, A.12).")
def landscapes(ctx: ReportContext) -> list[Block]:
    from .analysis_charts import landscape_blocks

    return landscape_blocks(ctx)


@section("failures", "Failure pairs", "A successful and a failing post-update rollout of one checkpoint (Fig. 3, A.8).")
def failures(ctx: ReportContext) -> list[Block]:
    from .analysis_charts import failure_blocks

    return failure_blocks(ctx)


@section("interpolation", "Interpolation", "Returns along θ(λ) between two checkpoints, and the below-threshold "
         "proportion, same run vs different runs (Fig. 5, 6, 9).")
def interpolation(ctx: ReportContext) -> list[Block]:
    from .analysis_charts import interpolation_blocks

    return interpolation_blocks(ctx)


# ---------------------------------------------------------------------------------------
# 7. Stabilize (Algorithm 1) and α-CVaR rankings (A.9)
# ---------------------------------------------------------------------------------------
@section("stabilize", "Stabilizing updates and α-CVaR rankings",
         "Algorithm 1 (post-update CVaR rejection, Fig. 7, A.10) and how α-CVaR orders policies (A.9).")
def stabilize(ctx: ReportContext) -> list[Block]:
    from .stabilize_charts import stabilize_blocks

    blocks: list[Block] = stabilize_blocks(ctx)
    if not ctx.row_count("post_update_returns"):
        blocks.append(_missing("post-update returns to rank policies by α-CVaR", "retland sample"))
        return blocks
    dists = ctx.distributions()
    if dists.height == 0:
        blocks.append(Note("No distributions match --where, so no α-CVaR ranking."))
        return blocks
    ranked = _cvar_rankings(ctx, dists)
    blocks.append(Figure("cvar-ranking", charts.cvar_ranking(ranked, beta=ctx.beta),
                         "Policies (checkpoints) of one environment and operator ranked by the α-CVaR of their "
                         "post-update returns, as a share of the panel (0% = best): α = 1 ranks by the mean, "
                         "small α by the worst returns. Distributions without an LTP (mode ≤ 0) are left out."))
    return blocks


def _cvar_rankings(ctx: ReportContext, dists: pl.DataFrame) -> pl.DataFrame:
    """One row per (distribution, α) with its α-CVaR and its rank within (env, operator)."""
    ctx.con.register("report_keys", dists.select("d", "run_id", "step", pl.col("operator").alias("operator_id")))
    try:
        cvars = pl.concat([
            ctx.sql(f"SELECT k.d, {a!r}::DOUBLE AS alpha, s.cvar AS alpha_cvar FROM purd_stats(alpha := {a!r}) AS s "
                    "JOIN report_keys AS k USING (run_id, step, operator_id)")
            for a in RANKING_ALPHAS
        ])
    finally:
        ctx.con.unregister("report_keys")
    out = cvars.join(dists.select("d", "algo", "env", "seed", "step", "operator", "mean", "ltp", "label"), on="d")
    return out.with_columns(
        rank=pl.col("alpha_cvar").rank("min", descending=True).over("env", "operator", "alpha").cast(pl.Int32),
        policies=pl.len().over("env", "operator", "alpha").cast(pl.Int32),
    )
