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
MAX_PAIRS = 8  # interpolation curves drawn per kind: one colour each, told apart in a legend

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
SELECT pair_id, role, t, reward, cumulative_return, torso_height, done
FROM trajectories
ORDER BY pair_id, role, t
"""
# A short name per failure pair: "seed 0 · 40k · samples 3/17" (its pair_id is long).
FAILURE_PAIRS_SQL = """
SELECT DISTINCT t.pair_id, r.algo, r.env, r.seed, t.step, t.role, t.update_index
FROM trajectories t LEFT JOIN runs r USING (run_id)
ORDER BY t.pair_id
"""
# Each pair's value curve with its BTP, whether the pair is complete, and what a
# legend names it by: the seeds and steps of its two ends.
INTERPOLATION_CURVES_SQL = """
SELECT c.*, b.btp, b.complete, p.step_a, p.step_b, ra.seed AS seed_a, rb.seed AS seed_b
FROM interpolation_curves c JOIN interpolation_btp b USING (pair_id, kind, env, algo)
JOIN interpolation_pairs p USING (pair_id)
LEFT JOIN runs ra ON ra.run_id = p.run_a LEFT JOIN runs rb ON rb.run_id = p.run_b
ORDER BY kind, env, algo, seed_a, step_a, seed_b, step_b, pair_id, point
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
    heat = _heatmaps(vals, "mean", ["mean return", "(sum of rewards)"], alt.Scale(scheme="viridis"),
                     [alt.Tooltip("mean:Q", title="mean return", format=".1f"), alt.Tooltip("n:Q", title="samples")])
    blocks.append(Figure("landscape-mean", charts.config(heat.properties(title="Return landscape J(θ + a·d1 + b·d2)")),
                         "Each cell is a rollout (or the mean of its samples) from the reference state. The outlined "
                         "cell (a = b = 0) is the checkpoint's own policy; with update directions, a = 1 is one "
                         "update (θ + d1 = θ1)."))
    ltp = vals.filter(pl.col("ltp").is_not_null())
    if ltp.height:
        m = _heatmaps(ltp, "ltp", "LTP", alt.Scale(scheme="reds", domain=[0, 1]),
                      [alt.Tooltip("ltp:Q", title="LTP", format=".3f"),
                       alt.Tooltip("cvar:Q", title="CVaR α=0.1", format=".1f"), alt.Tooltip("n:Q", title="samples")])
        blocks.append(Figure("landscape-ltp", charts.config(m.properties(title="LTP of the samples at each point")),
                             "Share of a point's gaussian samples with return below half their mode; the outlined "
                             "cell is the checkpoint."))
    return blocks


def _heatmaps(vals: pl.DataFrame, field: str, title, scale: alt.Scale, tooltip: list):
    """One heatmap per grid over (a, b), three a row, each with its own colour legend
    (unit in the title), the origin's cell outlined, and no gridlines through the cells."""
    cols = ["grid", "a", "b", field, "n"] + (["cvar"] if field == "ltp" else [])
    data = vals.select(cols).with_columns(a_label=pl.col("a").map_elements(lambda v: f"{v:.3g}", return_dtype=pl.Utf8),
                                          b_label=pl.col("b").map_elements(lambda v: f"{v:.3g}", return_dtype=pl.Utf8))
    a_order = data.sort("a")["a_label"].unique(maintain_order=True).to_list()
    b_order = data.sort("b", descending=True)["b_label"].unique(maintain_order=True).to_list()
    x = alt.X("a_label:O", sort=a_order, title="a (along d1)", axis=alt.Axis(labelAngle=0, grid=False, labelOverlap=True))
    y = alt.Y("b_label:O", sort=b_order, title="b (along d2)", axis=alt.Axis(grid=False))
    tips = [alt.Tooltip("a:Q", format=".3g"), alt.Tooltip("b:Q", format=".3g"), *tooltip]
    cells = []
    for grid in data["grid"].unique(maintain_order=True).to_list():
        sub = data.filter(pl.col("grid") == grid)
        rect = alt.Chart(charts.values(sub)).mark_rect().encode(
            x=x, y=y, color=alt.Color(f"{field}:Q", title=title, scale=scale), tooltip=tips)
        at_origin = charts.values(sub.filter((pl.col("a") == 0) & (pl.col("b") == 0)))
        # a white and a black outline: visible on every colour of the scheme
        outline = [alt.Chart(at_origin).mark_rect(fill=None, stroke=c, strokeWidth=w).encode(x=x, y=y)
                   for c, w in (("white", 4), ("black", 1.5))]
        cells.append(alt.layer(rect, *outline).properties(width=230, height=230, title=alt.Title(
            grid.split(" · ")[0], subtitle=" · ".join(grid.split(" · ")[1:]))))
    rows = [alt.hconcat(*cells[k:k + 3], spacing=18).resolve_scale(color="independent") for k in range(0, len(cells), 3)]
    return (rows[0] if len(rows) == 1 else alt.vconcat(*rows)).resolve_scale(color="independent")


# -------------------------------------------------------------------------- failures

def _pair_names(ctx: ReportContext) -> pl.DataFrame:
    """pair_id -> a short name, "hopper s0 @ 40k · update 3 ok, 17 fails" (the successful
    and the failing update index), numbered when two pairs would share one."""
    pairs = ctx.sql(FAILURE_PAIRS_SQL)
    if pairs.height == 0:
        return pl.DataFrame(schema={"pair_id": pl.Utf8, "pair": pl.Utf8})
    wide = pairs.pivot(on="role", index=["pair_id", "algo", "env", "seed", "step"], values="update_index")
    for role in ("success", "failure"):
        if role not in wide.columns:
            wide = wide.with_columns(pl.lit(None, dtype=pl.Int64).alias(role))
    named = wide.with_columns(pair=pl.format("{} s{} @ {} · update {} ok, {} fails", pl.col("env").fill_null("?"),
                                             pl.col("seed").cast(pl.Utf8).fill_null("?"), charts.steps_text(),
                                             pl.col("success").cast(pl.Utf8).fill_null("?"),
                                             pl.col("failure").cast(pl.Utf8).fill_null("?")))
    dup = pl.col("pair").count().over("pair") > 1
    named = named.with_columns(pair=pl.when(dup).then(pl.format("{} #{}", pl.col("pair"),
                                                                pl.col("pair_id").rank("dense").over("pair")))
                               .otherwise(pl.col("pair")))
    return named.select("pair_id", "pair")


def failure_blocks(ctx: ReportContext) -> list[Block]:
    """Reward per step and the (G_success, G_failure) curve of each pair (Fig. 3), and
    the divergence table. A failing rollout that terminated is drawn up to its last step,
    marked there, not as reward 0 continuing."""
    if not ctx.row_count("trajectories"):
        return [_missing("failure pairs", "retland failures")]
    names = _pair_names(ctx)
    div = ctx.sql(FAILURE_DIVERGENCE_SQL).join(names, on="pair_id", how="left")
    traj = ctx.sql(FAILURE_TRAJECTORIES_SQL).join(names, on="pair_id", how="left")
    # the step a rollout ended at (its first done step), and nothing after it
    end = pl.col("t").filter(pl.col("done")).min().over("pair_id", "role")
    traj = traj.with_columns(end=end).filter(pl.col("end").is_null() | (pl.col("t") <= pl.col("end")))
    traj = traj.with_columns(event=pl.when(pl.col("t") == pl.col("end")).then(pl.lit("episode terminated")))
    pair_order = names.sort("pair")["pair"].to_list()
    colour = alt.Color("role:N", title="rollout", scale=alt.Scale(domain=["success", "failure"],
                                                                   range=["#4c78a8", "#e45756"]))
    base = alt.Chart().encode(x=alt.X("t:Q", title="env step"))
    lines = base.mark_line(strokeWidth=1.2).encode(y=alt.Y("reward:Q", title="reward per step"), color=colour,
                                                   tooltip=[alt.Tooltip("pair:N"), alt.Tooltip("role:N")])
    ends = (base.transform_filter("isValid(datum.event)")
            .mark_point(size=90, filled=True, color="black")
            .encode(y="reward:Q", shape=alt.Shape("event:N", title=None, scale=alt.Scale(range=["cross"])),
                    tooltip=[alt.Tooltip("pair:N"), alt.Tooltip("role:N"), alt.Tooltip("t:Q", title="terminated at"),
                             alt.Tooltip("cumulative_return:Q", title="return", format=".1f")]))
    reward = (alt.layer(lines, ends, data=charts.values(traj.select("pair", "role", "t", "reward", "cumulative_return",
                                                                    "event")))
              .properties(width=640, height=150)
              .facet(row=alt.Row("pair:N", title=None, sort=pair_order,
                                 header=alt.Header(labelAngle=0, labelAlign="left", labelOrient="top",
                                                   labelFontWeight="bold", labelLimit=600))))
    full = ctx.sql(FAILURE_TRAJECTORIES_SQL).join(names, on="pair_id", how="left")
    wide = full.pivot(on="role", index=["pair", "t"], values="cumulative_return")
    for role in ("success", "failure"):
        if role not in wide.columns:
            wide = wide.with_columns(pl.lit(None, dtype=pl.Float64).alias(role))
    wide = wide.rename({"success": "g_success", "failure": "g_failure"}).drop_nulls(["g_success", "g_failure"])
    curve = (alt.Chart(charts.values(wide)).mark_line()
             .encode(x=alt.X("g_success:Q", title="G_t of the successful rollout"),
                     y=alt.Y("g_failure:Q", title="G_t of the failing rollout"), order="t:Q",
                     color=alt.Color("pair:N", title="pair", sort=pair_order,
                                     scale=alt.Scale(range=charts.CATEGORY_RANGE)),
                     tooltip=[alt.Tooltip("pair:N")])
             .properties(width=300, height=300))
    diag = alt.Chart(charts.values(wide)).mark_line(color="#bbbbbb", strokeDash=[4, 3]).encode(
        x="g_success:Q", y="g_success:Q")
    # where the failing rollout terminated, on its curve
    ended = wide.join(traj.filter(pl.col("event").is_not_null() & (pl.col("role") == "failure"))
                      .select("pair", "t", "event"), on=["pair", "t"])
    ends = (alt.Chart(charts.values(ended)).mark_point(size=90, filled=True, color="black")
            .encode(x="g_success:Q", y="g_failure:Q",
                    shape=alt.Shape("event:N", title=None, scale=alt.Scale(range=["cross"])),
                    tooltip=[alt.Tooltip("pair:N"), alt.Tooltip("t:Q", title="terminated at step"),
                             alt.Tooltip("g_failure:Q", title="failing return", format=".1f"),
                             alt.Tooltip("g_success:Q", title="successful return so far", format=".1f")]))
    table = div.select(pl.col("pair").alias("pair"),
                       pl.col("success_return").round(1).alias("successful return"),
                       pl.col("failure_return").round(1).alias("failing return"),
                       pl.col("diverge_step").alias("returns part at step"),
                       pl.col("failure_end_step").alias("failing rollout ends at step"),
                       pl.col("failure_kind").alias("kind of failure"), pl.col("pair_id").alias("pair id"))
    blocks: list[Block] = [Figure("failure-rewards", charts.config(reward.properties(
        title="Reward per step: success vs failure")), "Each row is one pair: a successful and a failing post-update rollout of one checkpoint "
                   "(named by their update indices). A failing rollout that terminated ends at the black cross, the "
                   "step it terminated at (it collects no reward after it).")]
    if wide.height:  # pairs with both rollouts stored
        blocks.append(Figure("failure-returns", charts.config(alt.layer(diag, curve, ends).properties(
            title="Cumulative returns")), "On the dashed diagonal both rollouts have collected the same return so "
            "far; after the failing rollout terminates (the cross) its G_t stays flat."))
    else:
        blocks.append(Note("No pair has both a successful and a failing rollout stored, so no cumulative-return curve."))
    blocks.append(Table("failure-divergence", table,
                        "Returns part at step: the first step after which |G_success − G_failure| stays above 5% of "
                        "the successful return (the failure_divergence view's diverge_step)."))
    from .frames import frame_blocks

    blocks += frame_blocks(ctx, names)
    return blocks


# --------------------------------------------------------------------- interpolation

def _interpolation_names() -> pl.Expr:
    """Short legend names: same-run "td3 hopper s0: 30k→50k", different-run
    "td3 hopper 50k: s0↔s1" (both steps when they differ)."""
    a, b = charts.steps_text("step_a"), charts.steps_text("step_b")
    head = pl.format("{} {} ", pl.col("algo"), pl.col("env"))
    same = pl.concat_str([head, pl.lit("s"), pl.col("seed_a").cast(pl.Utf8).fill_null("?"), pl.lit(": "), a,
                          pl.lit("→"), b])
    steps = pl.when(pl.col("step_a") == pl.col("step_b")).then(a).otherwise(pl.concat_str([a, pl.lit("/"), b]))
    other = pl.concat_str([head, steps, pl.lit(": s"), pl.col("seed_a").cast(pl.Utf8).fill_null("?"), pl.lit("↔s"),
                           pl.col("seed_b").cast(pl.Utf8).fill_null("?")])
    return pl.when(pl.col("kind") == "same-run").then(same).otherwise(other)


def interpolation_blocks(ctx: ReportContext) -> list[Block]:
    """Value curves along λ with a ±std band over the K samples (Fig. 5, 8), one colour
    per pair, by pair kind, and the BTP summary (Fig. 6)."""
    if not ctx.row_count("interpolation_points"):
        return [_missing("interpolation curves", "retland interpolate")]
    curves = ctx.sql(INTERPOLATION_CURVES_SQL).with_columns(pair=_interpolation_names())
    curves = curves.with_columns(pair=pl.col("pair").fill_null(pl.col("pair_id")))
    dup = pl.col("pair_id").n_unique().over("kind", "pair") > 1
    curves = curves.with_columns(pair=pl.when(dup).then(pl.format("{} #{}", pl.col("pair"),
                                                                  pl.col("pair_id").rank("dense").over("kind", "pair")))
                                 .otherwise(pl.col("pair")))
    per_kind = curves.select("kind", "pair_id").unique(maintain_order=True)
    keep = per_kind.group_by("kind", maintain_order=True).head(MAX_PAIRS)["pair_id"]
    shown = curves.filter(pl.col("pair_id").is_in(keep.implode())).with_columns(
        lo=pl.col("value") - pl.col("std").fill_null(0.0), hi=pl.col("value") + pl.col("std").fill_null(0.0))
    blocks: list[Block] = []
    if per_kind.height > keep.len():
        counts = per_kind.group_by("kind", maintain_order=True).len()
        blocks.append(Note("Interpolation curves: the first " + f"{MAX_PAIRS} pairs of each kind are drawn ("
                           + ", ".join(f"{n} {k}" for k, n in counts.iter_rows()) + " pairs in all); the BTP "
                           "summary uses every complete pair."))
    cells = []
    for kind in shown["kind"].unique(maintain_order=True).to_list():
        sub = shown.filter(pl.col("kind") == kind).select("kind", "pair", "lam", "value", "std", "lo", "hi", "btp",
                                                          "n_samples")
        order = sub["pair"].unique(maintain_order=True).to_list()
        colour = alt.Color("pair:N", title=f"{kind} pair", sort=order, scale=alt.Scale(range=charts.CATEGORY_RANGE),
                           legend=alt.Legend(orient="bottom", columns=2, symbolType="stroke", symbolStrokeWidth=3,
                                             symbolOpacity=1))
        x = alt.X("lam:Q", title="λ (0: θa, 1: θb)", scale=alt.Scale(domain=[0, 1]))
        band = alt.Chart().mark_area(opacity=0.15).encode(x=x, y=alt.Y("lo:Q"), y2="hi:Q", color=colour)
        line = (alt.Chart().mark_line(strokeWidth=1.6, point=alt.OverlayMarkDef(size=18, filled=True))
                .encode(x=x, y=alt.Y("value:Q", title=["mean return of the K samples", "(sum of rewards), ± std"]),
                        color=colour,
                        tooltip=[alt.Tooltip("pair:N"), alt.Tooltip("lam:Q", title="λ", format=".2f"),
                                 alt.Tooltip("value:Q", title="mean return", format=".1f"),
                                 alt.Tooltip("std:Q", title="std over samples", format=".1f"),
                                 alt.Tooltip("n_samples:Q", title="samples"),
                                 alt.Tooltip("btp:Q", title="pair's BTP", format=".2f")]))
        cells.append(alt.layer(band, line, data=charts.values(sub)).properties(width=440, height=230, title=kind))
    chart = alt.hconcat(*cells, spacing=40).resolve_scale(color="independent")
    blocks.insert(0, Figure("interpolation-curves", charts.config(chart.properties(
        title="Returns along θ(λ) = (1−λ)·θa + λ·θb")), "Same-run pairs: two checkpoints of one run; "
        "different-run pairs: two seeds at one step. Line: mean return of the K gaussian samples at each λ; band: "
        "± their std (the paper's Fig. 8); one colour per pair."))
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
