"""Report blocks of the geometric analyses: 2-D landscapes, failure pairs, interpolation.

Each builder is `(ReportContext) -> list[Block]`, to be wired into the `landscape`,
`failures` and `interpolation` sections: it queries the SQL views of schema/20_landscape,
40_failures and 30_interpolation, and draws with the house style of `charts`. When the
table is empty it returns one Note naming the command that fills it.
"""
from __future__ import annotations

import altair as alt
import polars as pl

from ..analyses import interpolation as ip
from . import charts
from .blocks import Block, Figure, Note, Table
from .context import ReportContext

MAX_GRIDS = 12  # heatmaps drawn; the rest are listed in a note
MAX_PAIRS = 24  # interpolation curves drawn per kind

# The SQL of these blocks, over the views of schema/20_landscape, 30_interpolation and
# 40_failures. Grids with their run's columns, the relation --where scopes (ctx.run_scope).
LANDSCAPE_GRIDS_SQL = """
SELECT g.grid_id, g.run_id, g.step, r.algo, r.env, r.seed
FROM landscape_grids g LEFT JOIN runs r USING (run_id)
"""
# landscape_values of the grids in {grids} (the scoped relation above), with env, algo, seed.
LANDSCAPE_VALUES_SQL = """
SELECT v.*, r.env, r.algo, r.seed
FROM landscape_values v LEFT JOIN runs r USING (run_id)
WHERE grid_id IN (SELECT grid_id FROM ({grids}))
ORDER BY run_id, step, directions, zoom DESC, point
"""
FAILURE_DIVERGENCE_SQL = "SELECT * FROM failure_divergence ORDER BY pair_id"
FAILURE_TRAJECTORIES_SQL = """
SELECT pair_id, role, t, reward, cumulative_return, torso_height
FROM trajectories
ORDER BY pair_id, role, t
"""
# Each pair's value curve with its BTP and whether the pair is complete.
INTERPOLATION_CURVES_SQL = """
SELECT c.*, b.btp, b.complete
FROM interpolation_curves c JOIN interpolation_btp b USING (pair_id, kind, env, algo)
ORDER BY kind, pair_id, point
"""
INTERPOLATION_COMPLETE_BTP_SQL = "SELECT * FROM interpolation_btp WHERE complete"


def _missing(what: str, command: str) -> Note:
    return Note(f"No {what} in this warehouse: `{command}` produces them.")


# ------------------------------------------------------------------------- landscape

def landscape_blocks(ctx: ReportContext) -> list[Block]:
    """One heatmap of mean return over (a, b) per grid (Fig. 1 left, A.12), plus LTP maps
    for grids with several samples per point."""
    if not ctx.row_count("landscape_points"):
        return [_missing("2-D landscapes", "retland landscape")]
    vals = ctx.sql(LANDSCAPE_VALUES_SQL.format(grids=ctx.run_scope(LANDSCAPE_GRIDS_SQL)))
    if vals.height == 0:
        return [Note("No landscape grids match --where.")]
    vals = vals.with_columns(pl.concat_str([
        pl.col("env").fill_null("?"), pl.lit(" · seed "), pl.col("seed").cast(pl.Utf8).fill_null("?"),
        pl.lit(" · step "), charts.steps_text(), pl.lit(" · "), pl.col("directions"), pl.lit(" · zoom "),
        pl.col("zoom").cast(pl.Utf8)]).alias("grid"))
    grids = vals["grid"].unique(maintain_order=True).to_list()
    blocks: list[Block] = []
    if len(grids) > MAX_GRIDS:
        blocks.append(Note(f"{len(grids)} grids; the first {MAX_GRIDS} are drawn."))
        vals = vals.filter(pl.col("grid").is_in(grids[:MAX_GRIDS]))
    tooltip = [alt.Tooltip("a:Q", format=".3g"), alt.Tooltip("b:Q", format=".3g"),
               alt.Tooltip("mean:Q", title="mean return", format=".1f"), alt.Tooltip("n:Q", title="samples")]
    heat = (alt.Chart(charts.values(vals.select("grid", "a", "b", "mean", "n")))
            .mark_rect()
            .encode(x=alt.X("a:O", title="a (along d1; 1 = one update)", axis=alt.Axis(format=".2g")),
                    y=alt.Y("b:O", title="b (along d2)", sort="descending", axis=alt.Axis(format=".2g")),
                    color=alt.Color("mean:Q", title="return", scale=alt.Scale(scheme="viridis")),
                    tooltip=tooltip)
            .properties(width=220, height=220)
            .facet(facet=alt.Facet("grid:N", title=None), columns=3)
            .resolve_scale(color="independent"))
    blocks.append(Figure("landscape-mean", charts.config(heat.properties(title="Return landscape J(θ + a·d1 + b·d2)")),
                         "Each cell is a rollout (or the mean of its samples) from the reference state. The centre "
                         "(a = b = 0) is the checkpoint's own policy."))
    ltp = vals.filter(pl.col("ltp").is_not_null())
    if ltp.height:
        m = (alt.Chart(charts.values(ltp.select("grid", "a", "b", "ltp", "cvar")))
             .mark_rect()
             .encode(x=alt.X("a:O", axis=alt.Axis(format=".2g")), y=alt.Y("b:O", sort="descending",
                                                                          axis=alt.Axis(format=".2g")),
                     color=alt.Color("ltp:Q", title="LTP", scale=alt.Scale(scheme="reds", domain=[0, 1])),
                     tooltip=[alt.Tooltip("a:Q"), alt.Tooltip("b:Q"), alt.Tooltip("ltp:Q", format=".3f"),
                              alt.Tooltip("cvar:Q", format=".1f")])
             .properties(width=220, height=220)
             .facet(facet=alt.Facet("grid:N", title=None), columns=3))
        blocks.append(Figure("landscape-ltp", charts.config(m.properties(title="LTP of the samples at each point")),
                             "Share of a point's gaussian samples with return below half their mode."))
    return blocks


# -------------------------------------------------------------------------- failures

def failure_blocks(ctx: ReportContext) -> list[Block]:
    """Reward per step and the (G_success, G_failure) curve of each pair (Fig. 3), and
    the divergence table."""
    if not ctx.row_count("trajectories"):
        return [_missing("failure pairs", "retland failures")]
    div = ctx.sql(FAILURE_DIVERGENCE_SQL)
    traj = ctx.sql(FAILURE_TRAJECTORIES_SQL)
    colour = alt.Color("role:N", scale=alt.Scale(domain=["success", "failure"], range=["#4c78a8", "#e45756"]))
    reward = (alt.Chart(charts.values(traj)).mark_line(strokeWidth=1.2)
              .encode(x=alt.X("t:Q", title="env step"), y=alt.Y("reward:Q", title="reward per step"), color=colour)
              .properties(width=320, height=180)
              .facet(row=alt.Row("pair_id:N", title=None, header=alt.Header(labelAngle=0, labelAlign="left"))))
    wide = (traj.pivot(on="role", index=["pair_id", "t"], values="cumulative_return")
            .rename({"success": "g_success", "failure": "g_failure"}))
    curve = (alt.Chart(charts.values(wide)).mark_line(point=False)
             .encode(x=alt.X("g_success:Q", title="G_t of the successful rollout"),
                     y=alt.Y("g_failure:Q", title="G_t of the failing rollout"), order="t:Q",
                     color=alt.Color("pair_id:N", legend=None), tooltip=["pair_id:N", "t:Q"])
             .properties(width=260, height=260))
    diag = alt.Chart(charts.values(wide)).mark_line(color="#bbbbbb", strokeDash=[4, 3]).encode(
        x="g_success:Q", y="g_success:Q")
    return [Figure("failure-rewards", charts.config(reward.properties(title="Reward per step: success vs failure")),
                   "A trajectory that ended collects no more reward."),
            Figure("failure-returns", charts.config((diag + curve).properties(title="Cumulative returns")),
                   "On the dashed diagonal both rollouts have collected the same return so far."),
            Table("failure-divergence", div.select("pair_id", "success_return", "failure_return", "diverge_step",
                                                   "failure_end_step", "failure_kind"),
                  "diverge_step: first step with |G_success − G_failure| > 5% of the successful return.")]


# --------------------------------------------------------------------- interpolation

def interpolation_blocks(ctx: ReportContext) -> list[Block]:
    """Value curves along λ (Fig. 5, 8) by pair kind and the BTP summary (Fig. 6)."""
    if not ctx.row_count("interpolation_points"):
        return [_missing("interpolation curves", "retland interpolate")]
    curves = ctx.sql(INTERPOLATION_CURVES_SQL)
    keep = (curves.select("kind", "pair_id").unique(maintain_order=True)
            .group_by("kind", maintain_order=True).head(MAX_PAIRS)["pair_id"])
    shown = curves.filter(pl.col("pair_id").is_in(keep.implode()))
    line = (alt.Chart(charts.values(shown.select("kind", "env", "pair_id", "lam", "value", "btp")))
            .mark_line(strokeWidth=1.2, opacity=0.7)
            .encode(x=alt.X("lam:Q", title="λ"), y=alt.Y("value:Q", title="mean return of the K samples"),
                    detail="pair_id:N", color=alt.Color("env:N", scale=alt.Scale(range=charts.CATEGORY_RANGE)),
                    tooltip=["pair_id:N", alt.Tooltip("lam:Q", format=".2f"), alt.Tooltip("value:Q", format=".1f"),
                             alt.Tooltip("btp:Q", format=".2f")])
            .properties(width=320, height=220)
            .facet(column=alt.Column("kind:N", title=None)))
    blocks: list[Block] = [Figure("interpolation-curves", charts.config(line.properties(
        title="Returns along θ(λ) = (1−λ)·θa + λ·θb")), "Same-run pairs: two checkpoints of one run; "
        "different-run pairs: seeds s and s+1 at one step.")]
    btp = ctx.sql(INTERPOLATION_COMPLETE_BTP_SQL)
    if btp.height:
        summary = ip.btp_summary(btp, n_resamples=ctx.n_resamples or 1000, seed=ctx.seed)
        bars = alt.Chart(charts.values(summary)).encode(
            y=alt.Y("kind:N", title=None),
            tooltip=["kind:N", "pairs:Q", "envs:Q", alt.Tooltip("btp_iqm:Q", format=".3f"),
                     alt.Tooltip("ci_lo:Q", format=".3f"), alt.Tooltip("ci_hi:Q", format=".3f")])
        chart = (bars.mark_point(filled=True, size=80).encode(x=alt.X("btp_iqm:Q", title="BTP (IQM over pairs)",
                                                                        scale=alt.Scale(domain=[0, 1])))
                 + bars.mark_rule().encode(x="ci_lo:Q", x2="ci_hi:Q")).properties(width=360, height=80)
        blocks += [Figure("interpolation-btp", charts.config(chart.properties(title="Below-threshold proportion")),
                          "Share of points whose value is below 0.1 × the lower endpoint's; IQM over pairs with "
                          "stratified bootstrap 95% CIs (strata = envs)."),
                   Table("interpolation-btp-summary", summary)]
    return blocks
