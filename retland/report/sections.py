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
from dataclasses import dataclass

import polars as pl

from . import charts
from .analysis_charts import failure_blocks, interpolation_blocks, landscape_blocks
from .blocks import Block, Figure, Note, Table
from .clone_charts import clone_blocks
from .compare_charts import compare_blocks
from .discrete_charts import discrete_blocks
from .context import ReportContext
from .stabilize_charts import stabilize_blocks
from .start_state_charts import start_state_blocks

RANKING_ALPHAS = (0.01, 0.1, 1.0)

# The SQL of this module's sections; the shapes they read are views of schema/*.sql.
# Learning-curve points (run_id, algo, env, variant, seed, step, eval_return): the training
# evaluations, else the checkpoints' evaluation returns when a warehouse has none. Runs
# derived by `retland stabilize` are not training runs: they are left out. So are BC
# runs: their steps are gradient steps on a teacher's data, not env steps.
EVALUATION_CURVES_SQL = """
SELECT e.run_id, r.algo, r.env, run_variant(r.variant, r.source) AS variant, r.seed, e.step, e.eval_return
FROM evaluations AS e JOIN runs AS r USING (run_id)
WHERE r.source <> 'derived' AND NOT (r.source = 'trained' AND r.algo = 'bc')
"""
CHECKPOINT_CURVES_SQL = """
SELECT c.run_id, r.algo, r.env, run_variant(r.variant, r.source) AS variant, r.seed, c.step, c.eval_return
FROM checkpoints AS c JOIN runs AS r USING (run_id)
WHERE c.eval_return IS NOT NULL AND r.source <> 'derived' AND NOT (r.source = 'trained' AND r.algo = 'bc')
"""
# The α-CVaR (parameters: α twice) of each distribution registered as report_keys (d, run_id,
# step, operator_id).
KEYED_CVAR_SQL = """
SELECT k.d, ?::DOUBLE AS alpha, s.cvar AS alpha_cvar
FROM purd_stats(alpha := ?) AS s
JOIN report_keys AS k USING (run_id, step, operator_id)
"""




@dataclass(frozen=True)
class Section:
    key: str
    title: str
    build: Callable[["ReportContext"], list[Block] | None]  # None: the section is left out
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


def _missing(what: str, command: str) -> Note:
    return Note(f"No {what} in this warehouse: `{command}` produces them.")


# ---------------------------------------------------------------------------------------
# 1. Contents
# ---------------------------------------------------------------------------------------
@section("contents", "Warehouse contents", "What the warehouse holds: runs, checkpoints, distributions, samples, operators.")
def contents(ctx: ReportContext) -> list[Block]:
    if not ctx.row_count("runs"):
        return [Note("The warehouse has no runs: `retland train` or `retland import-returns FILE` adds them.")]
    every = ctx.checkpoints()
    if every.height == 0:
        return [Note("No runs match --where.")]
    # runs `retland stabilize` derived share their source's algo, env and seed: counted
    # apart, not drawn (their PURDs are in the stabilize section)
    derived = every.filter(pl.col("source") == "derived").group_by("algo", "env").agg(
        derived_runs=pl.col("run_id").n_unique())
    ckpts = every.filter(pl.col("source").fill_null("") != "derived")
    if ckpts.height == 0:
        return [Note("Only runs derived by `retland stabilize` match --where: see the stabilize section.")]
    dists = ctx.distributions()
    if dists.height == 0:
        dists = pl.DataFrame(schema={"run_id": pl.Utf8, "algo": pl.Utf8, "env": pl.Utf8, "seed": pl.Int32,
                                     "step": pl.Int64, "operator": pl.Utf8, "n": pl.Int64})
    dists = dists.filter(~pl.col("run_id").is_in(every.filter(pl.col("source") == "derived")["run_id"].implode()))
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
    caption = "Per algorithm and environment, within --where: trained and imported runs."
    if derived.height:
        summary = (summary.join(derived, on=["algo", "env"], how="left")
                   .with_columns(pl.col("derived_runs").fill_null(0)))
        caption += (" derived_runs: runs `retland stabilize` derived from them, not counted in runs nor drawn "
                    "below (see the stabilize section).")
    blocks: list[Block] = [Table("contents-table", summary, caption)]
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
    relation = EVALUATION_CURVES_SQL
    if not ctx.row_count("evaluations"):
        source = "checkpoints"
        relation = CHECKPOINT_CURVES_SQL
    if not ctx.sql(f"SELECT count(*) AS n FROM ({relation})")["n"][0]:
        return [_missing("learning curves", "retland train")]
    curves = ctx.sql(ctx.run_scope(relation) + " ORDER BY algo, env, seed, step")
    if curves.height == 0:
        return [Note("No learning curves match --where.")]
    band = (f"band: its 95% percentile bootstrap CI, {ctx.n_resamples} resamples of the seeds (the run is the "
            "unit, as in rliable)" if ctx.n_resamples else "no CI band (bootstrap turned off)")
    caption = (f"Thick line: mean over seeds at each step; {band}; thin lines: one seed each. One colour per "
               "algorithm (and task variant when the runs differ in it); runs derived by `retland stabilize` are "
               "left out."
               + (" From the checkpoints' evaluation returns (no `evaluations` rows)." if source == "checkpoints" else ""))
    return [Figure("learning-curves", charts.learning_curves(curves, ctx.n_resamples, ctx.seed), caption)]


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
    return [Figure("map", charts.landscape_map(dists, ctx.histograms(), beta=ctx.beta, alpha=ctx.alpha),
                   map_caption(dists, ctx.beta, ctx.alpha, ctx.n_resamples))]


def map_caption(dists: pl.DataFrame, beta: float, alpha: float, n_resamples: int) -> str:
    """The map's caption: what LTP and CVaR are, the CIs, and how many distributions
    have mode ≤ 0 (drawn as triangles at their LTP; paper Fig. 2, footnote 1)."""
    text = (f"LTP = share of returns below {beta:g} × mode; CVaR = mean of the worst {alpha:g} share. "
            "The histogram uses the same 100 bins as the mode. "
            + (f"CIs: percentile bootstrap, {n_resamples} resamples." if n_resamples else "Bootstrap CIs were turned off."))
    flagged = dists.filter(pl.col("mode_nonpositive")).height if "mode_nonpositive" in dists.columns else 0
    if flagged:
        text += (f" {flagged} {'distribution' if flagged == 1 else 'distributions'} with mode ≤ 0 "
                 f"{'is drawn as a triangle at its' if flagged == 1 else 'are drawn as triangles at their'} LTP, "
                 "counted against a threshold ≤ 0 as the authors compute it (the paper's Fig. 2 shows such "
                 "policies on the right border).")
    return text


# ---------------------------------------------------------------------------------------
# 4–6. Analyses whose tables other commands add
# ---------------------------------------------------------------------------------------
@section("landscape", "2-D return landscapes", "J(θ + a·d1 + b·d2) over a grid of two update directions (Fig. 1, A.12).")
def landscapes(ctx: ReportContext) -> list[Block]:

    return landscape_blocks(ctx)


@section("failures", "Failure pairs", "A successful and a failing post-update rollout of one checkpoint (Fig. 3, A.8).")
def failures(ctx: ReportContext) -> list[Block]:

    return failure_blocks(ctx)


@section("interpolation", "Interpolation", "Returns along θ(λ) between two checkpoints, and the below-threshold "
         "proportion, same run vs different runs (Fig. 5, 6, 9).")
def interpolation(ctx: ReportContext) -> list[Block]:

    return interpolation_blocks(ctx)


# ---------------------------------------------------------------------------------------
# 7. Stabilize (Algorithm 1) and α-CVaR rankings (A.9)
# ---------------------------------------------------------------------------------------
@section("stabilize", "Stabilizing updates and α-CVaR rankings",
         "Algorithm 1 (post-update CVaR rejection, Fig. 7, A.10) and how α-CVaR orders policies (A.9).")
def stabilize(ctx: ReportContext) -> list[Block]:

    blocks: list[Block] = stabilize_blocks(ctx)
    if not ctx.row_count("post_update_returns"):
        blocks.append(_missing("post-update returns to rank policies by α-CVaR", "retland sample"))
        return blocks
    dists = ctx.distributions()
    if dists.height == 0:
        blocks.append(Note("No distributions match --where, so no α-CVaR ranking."))
        return blocks
    ranked = _cvar_rankings(ctx, dists)
    # a rank among one or two policies says nothing (every dot is "0% of 1"): such panels
    # are left out, and named
    few = ranked.filter(pl.col("policies") < MIN_RANKED).select("env", "operator").unique().sort("env", "operator")
    ranked = ranked.filter(pl.col("policies") >= MIN_RANKED)
    if few.height:
        names = ", ".join(f"{e} · {o}" for e, o in few.iter_rows())
        blocks.append(Note(f"No α-CVaR ranking for {names}: fewer than {MIN_RANKED} policies (checkpoints) to rank "
                           "there; sample more checkpoints of that environment and operator."))
    if not ranked.height:
        return blocks
    blocks.append(Figure("cvar-ranking", charts.cvar_ranking(ranked, beta=ctx.beta),
                         "Policies (checkpoints) of one environment and operator ranked by the α-CVaR of their "
                         "post-update returns, as a share of the panel (0% = best): α = 1 ranks by the mean, "
                         "small α by the worst returns."))
    return blocks


MIN_RANKED = 3  # policies a panel of the α-CVaR ranking needs


def _cvar_rankings(ctx: ReportContext, dists: pl.DataFrame) -> pl.DataFrame:
    """One row per (distribution, α) with its α-CVaR and its rank within (env, operator)."""
    ctx.con.register("report_keys", dists.select("d", "run_id", "step", pl.col("operator").alias("operator_id")))
    try:
        cvars = pl.concat([
            ctx.sql(KEYED_CVAR_SQL, [float(a), float(a)])
            for a in RANKING_ALPHAS
        ])
    finally:
        ctx.con.unregister("report_keys")
    out = cvars.join(dists.select("d", "algo", "env", "seed", "step", "operator", "mean", "ltp", "label"), on="d")
    return out.with_columns(
        rank=pl.col("alpha_cvar").rank("min", descending=True).over("env", "operator", "alpha").cast(pl.Int32),
        policies=pl.len().over("env", "operator", "alpha").cast(pl.Int32),
    )


@section("start-states", "Post-update returns from other start states",
         "LTP when the rollouts start at states collected during training, by collection index, against s0 "
         "(A.4, Fig. 10; `retland start-states`). Shown when the warehouse has such distributions.")
def start_states(ctx: ReportContext) -> list[Block] | None:
    return start_state_blocks(ctx)


@section("compare", "Comparisons", "Algorithms compared across environments with rliable's interval estimates "
         "and probability of improvement (`retland compare`).")
def comparisons(ctx: ReportContext) -> list[Block]:
    return compare_blocks(ctx)


@section("clones", "Behaviour cloning", "Do clones of a TD3 policy inherit its post-update returns? Each BC run's "
         "last clone beside its teacher (the paper's A.7, Fig. 22; `retland clones`). Shown when the warehouse "
         "has BC runs.")
def clones(ctx: ReportContext) -> list[Block] | None:
    return clone_blocks(ctx)


@section("discrete", "Discrete control", "Post-update returns of PPO on MinAtar games (discrete actions): their "
         "spread per checkpoint and their shapes (the paper's A.6, Figs. 20-21). Shown when the warehouse has "
         "distributions of a MinAtar game.")
def discrete(ctx: ReportContext) -> list[Block] | None:
    return discrete_blocks(ctx)
