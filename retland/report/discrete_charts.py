"""The report's Discrete control section (the paper's appendix A.6, Figs. 20 and 21):
post-update return distributions of the MinAtar games (variant minatar).

`discrete_blocks(ctx)` returns None when no distribution of a MinAtar game passes
--where (the section is then left out), else:

- Fig. 21: the standard deviation of each checkpoint's post-update returns, per game,
  operator and seed, against the checkpoint's step (with its bootstrap CI), and a table
  of the std per game and operator over checkpoints;
- Fig. 20: the distributions themselves, one row per checkpoint: the share of its
  samples in each of the statistics' 100 bins, with its LTP beside it, and the note the
  paper makes about them: on these games the LTP is not a rich description.

The interpolation experiment of A.6 (Fig. 19) is the Interpolation section's, which
draws every env's pairs, the MinAtar games' included.
"""
from __future__ import annotations

import altair as alt
import polars as pl

from . import charts
from .blocks import Block, Figure, Note, Table
from .context import ReportContext

VARIANT = "minatar"

LTP_CAVEAT = (
    "The paper finds (A.6, Fig. 20) that on games the post-update distributions can take shapes unlike the "
    "locomotion tasks', so that the LTP is not a rich description of them. A game's return is its score, an "
    "integer sum of score increments, so a distribution is a few spikes rather than a peak with a left tail; "
    "the mode is the fullest of the 100 bins and the LTP the share of updates scoring below half of it "
    "(β = 0.5). An update that loses a life early and one that scores a little less both count, or neither does, "
    "and a distribution spread over many scores can have LTP 0. Read the LTP beside each row with the "
    "histogram, and the std above.")


def discrete_blocks(ctx: ReportContext) -> list[Block] | None:
    dists = ctx.distributions()
    if not dists.height or "variant" not in dists.columns:
        return None
    games = dists.filter(pl.col("variant") == VARIANT)
    if not games.height:
        return None
    ci = "with 95% bootstrap CIs" if ctx.n_resamples and "std_lo" in games.columns else "(bootstrap turned off)"
    blocks: list[Block] = [
        Figure("discrete-std", _std_chart(games), (
            f"Fig. 21: the standard deviation of each checkpoint's post-update returns {ci}, per MinAtar game "
            "(rows) and operator (columns), one line per seed. The paper finds the post-update returns of PPO on "
            "ALE games vary markedly, as on the locomotion tasks.")),
        Table("discrete-std-table", _std_table(games), (
            "Per game and operator: checkpoints sampled, samples per distribution, and the std of their "
            "post-update returns over checkpoints (mean, min, max), with the mean return and the mean LTP.")),
        Figure("discrete-distributions", _distribution_chart(games, ctx.histograms()), (
            "Fig. 20: each row is one checkpoint's post-update return distribution (seed · step), its colour the "
            "share of the samples in each of the statistics' 100 bins between the distribution's lowest and "
            "highest return; the text at the right is its LTP.")),
        Note(LTP_CAVEAT),
    ]
    return blocks


def _std_chart(games: pl.DataFrame):
    cols = ["env", "operator", "seed", "step", "std", "mean", "ltp", "n"]
    has_ci = "std_lo" in games.columns and games["std_lo"].null_count() < games.height
    if has_ci:
        cols += ["std_lo", "std_hi"]
    rows = games.select(cols).with_columns(pl.col("seed").cast(pl.Utf8))
    base = alt.Chart()
    x = alt.X("step:Q", title="checkpoint (env steps)")
    line = base.mark_line(point=True).encode(
        x=x, y=alt.Y("std:Q", title="std of post-update return"), color=alt.Color("seed:N", title="seed"),
        tooltip=["env:N", "operator:N", "seed:N", alt.Tooltip("step:Q", format=","),
                 alt.Tooltip("std:Q", format=".3f"), alt.Tooltip("mean:Q", format=".3f"),
                 alt.Tooltip("ltp:Q", format=".3f"), "n:Q"])
    layers = [line]
    if has_ci:
        layers.insert(0, base.mark_errorbar(opacity=0.6).encode(
            x=x, y=alt.Y("std_lo:Q", title="std of post-update return"), y2="std_hi:Q", color="seed:N"))
    return alt.layer(*layers, data=charts.values(rows)).properties(width=300, height=160).facet(
        row=alt.Row("env:N", title=None), column=alt.Column("operator:N", title=None)).resolve_scale(y="independent")


def _std_table(games: pl.DataFrame) -> pl.DataFrame:
    return (games.group_by("env", "operator").agg(
        checkpoints=pl.len(), samples=pl.col("n").median().cast(pl.Int64),
        std_mean=pl.col("std").mean(), std_min=pl.col("std").min(), std_max=pl.col("std").max(),
        return_mean=pl.col("mean").mean(), ltp_mean=pl.col("ltp").mean())
        .with_columns(pl.col("std_mean", "std_min", "std_max", "return_mean", "ltp_mean").round(3))
        .sort("env", "operator"))


def _distribution_chart(games: pl.DataFrame, hist: pl.DataFrame):
    keep = games.select("d", "env", "operator", "seed", "step", "n", "lo", "hi", "ltp", "mean").with_columns(
        row=pl.format("s{} · {}", pl.col("seed"), pl.col("step")))
    cells = (hist.join(keep, on="d").with_columns(
        share=pl.col("c") / pl.col("n"),
        x0=pl.col("lo") + pl.col("b") * (pl.col("hi") - pl.col("lo")) / 100,
        x1=pl.col("lo") + (pl.col("b") + 1) * (pl.col("hi") - pl.col("lo")) / 100)
        # scores are integers, so a distribution is often a few spikes one bin wide (or one value,
        # hi == lo): every cell is drawn at least 1/40 of its panel's range wide, to be seen
        .with_columns(span=(pl.col("hi").max() - pl.col("lo").min()).over("env", "operator"))
        .with_columns(x1=pl.max_horizontal("x1", pl.col("x0") + pl.max_horizontal("span", 1.0) / 40))
        .select("env", "operator", "row", "seed", "step", "share", "x0", "x1"))
    order = keep.sort("seed", "step")["row"].unique(maintain_order=True).to_list()
    y = alt.Y("row:N", title="seed · step", sort=order)
    heat = alt.Chart(charts.values(cells)).mark_rect().encode(
        x=alt.X("x0:Q", title="post-update return (score)"), x2="x1:Q", y=y,
        color=alt.Color("share:Q", title="share of samples", scale=alt.Scale(scheme="viridis")),
        tooltip=["row:N", alt.Tooltip("x0:Q", format=".1f", title="from"), alt.Tooltip("x1:Q", format=".1f", title="to"),
                 alt.Tooltip("share:Q", format=".3f")]).properties(width=320, height=alt.Step(12))
    ltp = alt.Chart(charts.values(keep.select("env", "operator", "row", "ltp", "mean"))).mark_text(
        align="left").encode(y=y, text=alt.Text("ltp:Q", format=".2f")).properties(width=30, height=alt.Step(12))
    panels = []
    for env, op in games.select("env", "operator").unique().sort("env", "operator").iter_rows():
        def only(ch):
            return ch.transform_filter((alt.datum.env == env) & (alt.datum.operator == op))
        panels.append(alt.hconcat(only(heat), only(ltp).properties(title="LTP")).properties(
            title=f"{env} · {op}"))
    return alt.vconcat(*panels)
