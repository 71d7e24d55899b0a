"""The report's start-state section: LTP from replay rows against collection index, per
seed, averaged over checkpoints, with s0 as the reference (the paper's Fig. 10, A.4).

Reads the views start_state_ltp and start_state_stats (schema/60_start_states.sql); the
comparison table is `retland.analyses.start_states.compare_ltp` per env and operator.
"""
from __future__ import annotations

import altair as alt
import polars as pl

from ..analyses.start_states import compare_ltp
from . import charts
from .blocks import Block, Figure, Note, Table
from .context import ReportContext

LTP_SQL = "SELECT * FROM start_state_ltp"
STATS_SQL = "SELECT * FROM start_state_stats"


def start_state_blocks(ctx: ReportContext) -> list[Block] | None:
    """The section's blocks; None (no section) when no distribution starts at a replay row."""
    if not ctx.row_count("post_update_returns"):
        return None
    ltp = ctx.sql(LTP_SQL)
    if ltp.height == 0:
        return None
    ltp = ltp.with_columns(pl.col("env").fill_null("unknown"), seed=pl.col("seed").cast(pl.Utf8).fill_null("?"),
                           panel=pl.format("{} · {}", pl.col("env").fill_null("unknown"), pl.col("base_operator_id")))
    ltp = ltp.with_columns(s0_reference=pl.col("s0_ltp").mean().over("panel", "seed"))
    blocks: list[Block] = [Figure("start-states-fig10", _fig10(ltp),
                                  "Fig. 10: LTP of the post-update return distribution when the rollouts start at a "
                                  "state collected during training (x: its index in the replay buffer), averaged "
                                  "over the run's checkpoints sampled from it; one colour per seed. Dashed: the "
                                  "same seed's mean LTP from s0 over those checkpoints. Triangles: rows whose "
                                  "distribution has mode ≤ 0 at some checkpoint (every update fails at once there; "
                                  "LTP counts against a threshold ≤ 0, as purd_stats does).")]
    stats = ctx.sql(STATS_SQL)
    rows = []
    for (env, op), part in stats.with_columns(pl.col("env").fill_null("unknown")).group_by(
            "env", "base_operator_id", maintain_order=True):
        c = compare_ltp(part, n_resamples=max(ctx.n_resamples, 1), seed=ctx.seed)
        if c:
            rows.append(dict(env=env, operator=op, checkpoints=c["checkpoints"], distributions=c["rows"],
                             replay_ltp=c["replay_ltp"][0], replay_lo=c["replay_ltp"][1][0],
                             replay_hi=c["replay_ltp"][1][1], s0_ltp=c["s0_ltp"][0], s0_lo=c["s0_ltp"][1][0],
                             s0_hi=c["s0_ltp"][1][1], difference=c["difference"][0],
                             difference_lo=c["difference"][1][0], difference_hi=c["difference"][1][1],
                             share_rows_ltp_positive=c["share_rows_ltp_positive"]))
    if rows:
        blocks.append(Table("start-states-compare", pl.DataFrame(rows),
                            "Over the checkpoints sampled both ways: mean LTP from replay rows (each checkpoint's "
                            "mean over its rows) and from s0, and their paired difference, with 95% percentile "
                            "bootstrap CIs over checkpoints; share_rows_ltp_positive: replay-row distributions with "
                            "LTP > 0."))
    else:
        blocks.append(Note("No checkpoint was sampled both from replay rows and from s0, so no comparison: "
                           "`retland start-states` samples both."))
    return blocks


def _fig10(df: pl.DataFrame):
    df = df.with_columns(mode=pl.when(pl.col("mode_nonpositive_checkpoints") > 0).then(pl.lit("mode ≤ 0 at a checkpoint"))
                         .otherwise(pl.lit("mode > 0")))
    base = alt.Chart(charts.values(df.select("panel", "seed", "start_row", "ltp", "ltp_min", "ltp_max",
                                             "checkpoints", "s0_reference", "run_id", "mode",
                                             "mode_nonpositive_checkpoints")))
    colour = alt.Color("seed:N", title="seed")
    line = base.mark_line(opacity=0.6).encode(x="start_row:Q", y="ltp:Q", color=colour)
    points = base.mark_point(filled=True, size=50, opacity=0.9).encode(
        shape=alt.Shape("mode:N", title=None, scale=alt.Scale(domain=["mode > 0", "mode ≤ 0 at a checkpoint"],
                                                              range=["circle", "triangle-up"])),
        x=alt.X("start_row:Q", title="collection index (replay row)"),
        y=alt.Y("ltp:Q", title="LTP (mean over checkpoints)", scale=alt.Scale(domain=[0, 1], clamp=True)),
        color=colour,
        tooltip=["run_id:N", "seed:N", "start_row:Q", "checkpoints:Q", alt.Tooltip("ltp:Q", format=".3f"),
                 alt.Tooltip("ltp_min:Q", format=".3f"), alt.Tooltip("ltp_max:Q", format=".3f"),
                 alt.Tooltip("s0_reference:Q", title="s0 LTP", format=".3f"), "mode_nonpositive_checkpoints:Q"])
    s0 = base.transform_filter("isValid(datum.s0_reference)").mark_rule(strokeDash=[5, 4], opacity=0.8).encode(
        y="s0_reference:Q", color=colour)
    return charts.config(alt.layer(line, points, s0).properties(width=520, height=220).facet(
        row=alt.Row("panel:N", title=None)))
