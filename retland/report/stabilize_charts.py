"""Charts of Algorithm 1 (`retland stabilize`) for the report's stabilize section.

`stabilize_blocks(ctx)` returns the blocks; the section in sections.py wires it in:
the Fig. 7 table and chart (reject − baseline over source policies, per env), the A.10
scatter (each source's LTP before and after), and the trajectories behind them.
"""
from __future__ import annotations

import altair as alt
import numpy as np
import polars as pl

from ..analyses.stabilize import fig7_table
from . import charts
from .blocks import Block, Figure, Note, Table
from .context import ReportContext

# Per env, setting, arm, proposal and lane (source experiment × rejection seed): what the
# lane holds after the decision (view stabilize_trajectory). The chart draws the mean over
# lanes with a bootstrap CI that resamples lanes.
TRAJECTORY_SQL = """
SELECT u.env, t.arm, t.proposal, s.criterion, s.proposals, s.n_samples, t.experiment_id, t.seed,
       t.accepted::INTEGER AS accepted, t.cur_mean AS mean, t.cur_ltp AS ltp, t.cur_ltp_source AS ltp_source
FROM stabilize_trajectory t
JOIN (SELECT experiment_id, any_value(criterion) AS criterion, max(proposal) AS proposals,
             any_value(n_samples) AS n_samples FROM stabilize_steps GROUP BY experiment_id) s USING (experiment_id)
LEFT JOIN runs u ON u.run_id = t.run_id
ORDER BY u.env, s.criterion, s.proposals, s.n_samples, t.arm, t.proposal, t.experiment_id, t.seed
"""
# One row per source policy and setting (Fig. 7's unit), the input of fig7_table.
SOURCES_SQL = "SELECT * FROM stabilize_sources ORDER BY env, run_id, step"
# Panels of the trajectory chart shown at most (one row each).
MAX_PANELS = 8


def _setting() -> pl.Expr:
    return pl.format("{} · {} P={} N={}", pl.col("env"), pl.col("criterion"), pl.col("proposals"),
                     pl.col("n_samples"))


def stabilize_blocks(ctx: ReportContext) -> list[Block]:
    if not ctx.row_count("stabilize_steps"):
        return [Note("No Algorithm 1 runs yet: run `retland stabilize`.")]
    blocks: list[Block] = []
    sources = ctx.sql(SOURCES_SQL).with_columns(pl.col("env").fill_null("unknown"))  # a run not in `runs`
    table = fig7_table(sources, n_resamples=ctx.n_resamples, seed=ctx.seed) if sources.height else None
    if table is not None and table.height:
        blocks.append(Figure("stabilize-fig7", _fig7_chart(table),
                             "Fig. 7: reject − baseline after the last proposal, per env (and pooled, 'all'), IQM "
                             "over source policies with a stratified bootstrap 95% CI; each source counts once, with "
                             "the mean over its rejection seeds of the paired difference. Left: own-mode LTP (each "
                             "PURD's LTP against its own mode, the paper's metric); middle: mean post-update return "
                             "(is the LTP bought with return?); right: LTP against the source's mode, retland's "
                             "extra, not in the paper."))
        blocks.append(Table("stabilize-fig7-table", table.drop("beta"),
                            "Fig. 7 as numbers: <name>_change is the IQM over <name>_sources sources, [<name>_lo, "
                            "<name>_hi] its 95% stratified bootstrap CI; ltp_before / _reject / _baseline and "
                            "mean_reject / _baseline are means over sources. retland_ltp_source_* is retland's LTP "
                            "against the source's mode."))
        blocks.append(Figure("stabilize-a10", _a10_chart(sources),
                             "A.10: each source policy's own-mode LTP before Algorithm 1 (its PURD at proposal 0) "
                             "and after the last proposal, for both arms (mean over rejection seeds). Points below "
                             "the diagonal lowered their LTP."))
    else:
        blocks.append(Note("No experiment has both arms (reject and baseline), so no Fig. 7 comparison."))
    traj = ctx.sql(TRAJECTORY_SQL).with_columns(pl.col("env").fill_null("unknown")).with_columns(panel=_setting())
    panels = traj["panel"].unique(maintain_order=True).to_list()
    if len(panels) > MAX_PANELS:
        blocks.append(Note(f"Trajectories: the first {MAX_PANELS} of {len(panels)} env/setting panels are shown."))
    shown = _lane_bands(traj.filter(pl.col("panel").is_in(panels[:MAX_PANELS])), ctx.n_resamples, ctx.seed)
    blocks.append(Figure("stabilize-arms", _trajectory_chart(shown),
                         "Per proposal, the mean over source policies and rejection seeds of the PURD statistics of "
                         "the policy each arm holds after the decision (view stabilize_trajectory); the band is its "
                         "95% bootstrap CI over those lanes (source × seed)"
                         + ("" if ctx.n_resamples else ", off here (bootstrap turned off)") + "; one row per env "
                         "and setting. The reject arm keeps a proposal only if the criterion holds against its last "
                         "accepted state; the baseline never rejects. 'LTP vs the source's mode' (retland's) counts "
                         "returns below β × the source checkpoint's mode, so it also sees a distribution that moved "
                         "down as a whole."))
    return blocks


def _ci_panel(df: pl.DataFrame, name: str, title: str, fmt: str, labels: bool = True) -> alt.LayerChart:
    """One statistic's IQM and CI per row of the Fig. 7 table; rows keep the table's order
    in every panel, so only the first panel needs the row labels."""
    base = alt.Chart(charts.values(df.filter(pl.col(f"{name}_change").is_not_null()))).encode(
        y=alt.Y("label:N", title=None, scale=alt.Scale(domain=df["label"].to_list()),
                axis=alt.Axis() if labels else None))
    zero = alt.Chart(charts.values(pl.DataFrame({"x": [0.0]}))).mark_rule(color="#888", strokeDash=[4, 3]).encode(
        x="x:Q")
    # the CIs, the IQMs and 0 (the dashed line) in view, with room: all-zero changes still get ticks
    span = pl.concat([df[c].cast(pl.Float64) for c in (f"{name}_lo", f"{name}_hi", f"{name}_change")]
                     + [pl.Series([0.0])])
    bars = base.mark_rule(strokeWidth=2).encode(
        x=alt.X(f"{name}_lo:Q", title=title, scale=alt.Scale(domain=charts.padded(span), nice=False),
                axis=alt.Axis(tickCount=4)), x2=f"{name}_hi:Q")
    points = base.mark_point(filled=True, size=70).encode(
        x=f"{name}_change:Q",
        tooltip=["label:N", f"{name}_sources:Q", alt.Tooltip(f"{name}_change:Q", format=fmt),
                 alt.Tooltip(f"{name}_lo:Q", format=fmt), alt.Tooltip(f"{name}_hi:Q", format=fmt)])
    return alt.layer(zero, bars, points).properties(width=240, height=alt.Step(22))


def _fig7_chart(table: pl.DataFrame):
    df = table.with_columns(label=pl.format("{} ({}) {} α={} tol={} P={} N={}", pl.col("env"), pl.col("sources"),
                                            pl.col("criterion"), pl.col("alpha"), pl.col("tolerance"),
                                            pl.col("proposals"), pl.col("n_samples")))
    return charts.config(alt.hconcat(
        _ci_panel(df, "ltp", "Δ LTP (own mode), reject − baseline", ".3f"),
        _ci_panel(df, "mean", "Δ mean post-update return", ",.1f", labels=False),
        _ci_panel(df, "retland_ltp_source", "Δ LTP vs the source's mode (retland)", ".3f", labels=False),
    ).properties(title="Algorithm 1 (Fig. 7): IQM over source policies, 95% stratified bootstrap CI"))


def _a10_chart(sources: pl.DataFrame):
    long = sources.filter(pl.col("ltp_before").is_not_null()).unpivot(
        index=["env", "run_id", "step", "criterion", "proposals", "n_samples", "ltp_before", "pairs"],
        on=["ltp_reject", "ltp_baseline"], variable_name="arm", value_name="ltp_after").with_columns(
        pl.col("arm").str.strip_prefix("ltp_")).drop_nulls("ltp_after")
    envs = long["env"].unique(maintain_order=True).to_list()[:4]  # 4 x 260 px keeps the chart within 1280 px
    cells = []
    for env in envs:
        sub = long.filter(pl.col("env") == env)
        top = 1.05 * max(float(sub["ltp_before"].max()), float(sub["ltp_after"].max()), 0.05)
        diag = alt.Chart(charts.values(pl.DataFrame({"x": [0.0, top]}))).mark_line(
            color="#888", strokeDash=[4, 3]).encode(x="x:Q", y="x:Q")
        pts = alt.Chart(charts.values(sub)).mark_point(filled=True, size=45, opacity=0.8).encode(
            x=alt.X("ltp_before:Q", title="LTP before (source)", scale=alt.Scale(domain=[0, top])),
            y=alt.Y("ltp_after:Q", title="LTP after", scale=alt.Scale(domain=[0, top])),
            color=alt.Color("arm:N", title="arm", scale=alt.Scale(domain=["reject", "baseline"],
                                                                  range=charts.CATEGORY_RANGE[:2])),
            tooltip=["run_id:N", "step:Q", "arm:N", "pairs:Q", alt.Tooltip("ltp_before:Q", format=".3f"),
                     alt.Tooltip("ltp_after:Q", format=".3f")])
        cells.append(alt.layer(diag, pts).properties(width=220, height=220, title=env))
    return charts.config(alt.hconcat(*cells).properties(title="Algorithm 1 per source policy (A.10)"))


STATISTICS = {"mean": ("mean post-update return", ",.1f"), "ltp": ("LTP (own mode)", ".3f"),
              "ltp_source": ("LTP vs the source's mode (retland)", ".3f")}


def _lane_bands(traj: pl.DataFrame, n_resamples: int, seed: int) -> pl.DataFrame:
    """One row per (panel, arm, proposal, statistic): the mean over lanes, its 95%
    percentile bootstrap CI over lanes (lo = hi with one lane or no resamples), the
    lanes, sources and acceptance rate."""
    from .. import stats

    rows = []
    groups = traj.group_by("panel", "arm", "proposal", maintain_order=True)
    for i, ((panel, arm, proposal), g) in enumerate(groups):
        for name in STATISTICS:
            x = g[name].drop_nulls().to_numpy().astype(np.float64)
            if x.size == 0:
                continue
            lo = hi = float(x.mean())
            if n_resamples and x.size > 1:
                lo, hi = stats.bootstrap_ci(x, lambda b: b.mean(axis=1), n_resamples=n_resamples, seed=seed + i)
            rows.append({"panel": panel, "arm": arm, "proposal": int(proposal), "statistic": name,
                         "value": float(x.mean()), "lo": lo, "hi": hi, "lanes": int(x.size),
                         "sources": g["experiment_id"].n_unique(), "acceptance": float(g["accepted"].mean())})
    return pl.DataFrame(rows)


def _trajectory_chart(bands: pl.DataFrame):
    """Per env/setting row, three panels (mean, LTP, LTP vs the source's mode) of 300 px:
    the arms' mean over lanes with a CI band, the legend above, integer proposals."""
    arms = alt.Color("arm:N", title="arm", scale=alt.Scale(domain=["reject", "baseline"],
                                                           range=charts.CATEGORY_RANGE[:2]),
                     legend=alt.Legend(orient="top", symbolType="stroke", symbolStrokeWidth=3, symbolOpacity=1))
    top = int(bands["proposal"].max()) if bands.height else 1
    x = alt.X("proposal:Q", title="proposal", scale=alt.Scale(domain=[0, max(top, 1)], nice=False),
              axis=alt.Axis(tickMinStep=1, format="d", values=list(range(0, max(top, 1) + 1))
                            if top <= 20 else alt.Undefined))
    rows = []
    for panel in bands["panel"].unique(maintain_order=True).to_list():
        cells = []
        for k, (name, (title, fmt)) in enumerate(STATISTICS.items()):
            sub = bands.filter((pl.col("panel") == panel) & (pl.col("statistic") == name))
            band = alt.Chart().mark_area(opacity=0.2).encode(x=x, y=alt.Y("lo:Q"), y2="hi:Q", color=arms)
            values = pl.concat([sub[c].cast(pl.Float64) for c in ("lo", "hi", "value")]
                               + ([] if name == "mean" else [pl.Series([0.0])]))
            y_scale = alt.Scale(domain=charts.padded(values, floor=None if name == "mean" else 0.0), nice=False)
            line = (alt.Chart().mark_line(point=alt.OverlayMarkDef(size=30, filled=True))
                    .encode(x=x, y=alt.Y("value:Q", title=title, scale=y_scale, axis=alt.Axis(tickCount=4)), color=arms,
                            tooltip=[alt.Tooltip("arm:N"), alt.Tooltip("proposal:Q"),
                                     alt.Tooltip("value:Q", title=f"{title}, mean over lanes", format=fmt),
                                     alt.Tooltip("lo:Q", title="95% CI from", format=fmt),
                                     alt.Tooltip("hi:Q", title="95% CI to", format=fmt),
                                     alt.Tooltip("lanes:Q", title="lanes (source × seed)"), alt.Tooltip("sources:Q"),
                                     alt.Tooltip("acceptance:Q", title="accepted share", format=".2f")]))
            cells.append(alt.layer(band, line, data=charts.values(sub)).properties(
                width=300, height=150, title=panel if k == 0 else ""))
        rows.append(alt.hconcat(*cells, spacing=28))
    return charts.config(alt.vconcat(*rows).properties(title="Algorithm 1: reject vs baseline per proposal"))
