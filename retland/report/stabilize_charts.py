"""Charts of Algorithm 1 (`retland stabilize`) for the report's stabilize section.

`stabilize_blocks(ctx)` returns the blocks; the section in sections.py wires it in:
the Fig. 7 table and chart (reject − baseline over source policies, per env), the A.10
scatter (each source's LTP before and after), and the trajectories behind them.
"""
from __future__ import annotations

import altair as alt
import polars as pl

from ..analyses.stabilize import fig7_table
from . import charts
from .blocks import Block, Figure, Note, Table
from .context import ReportContext

# Per env, setting, arm and proposal: the mean over sources (experiments) and seeds of
# what each lane holds after the decision (view stabilize_trajectory).
TRAJECTORY_SQL = """
SELECT u.env, t.arm, t.proposal, s.criterion, s.proposals, s.n_samples,
       count(DISTINCT t.experiment_id) AS sources, avg(t.accepted::INTEGER) AS acceptance,
       avg(t.cur_mean) AS mean, avg(t.cur_ltp) AS ltp, avg(t.cur_ltp_source) AS ltp_source
FROM stabilize_trajectory t
JOIN (SELECT experiment_id, any_value(criterion) AS criterion, max(proposal) AS proposals,
             any_value(n_samples) AS n_samples FROM stabilize_steps GROUP BY experiment_id) s USING (experiment_id)
LEFT JOIN runs u ON u.run_id = t.run_id
GROUP BY ALL
ORDER BY u.env, s.criterion, s.proposals, s.n_samples, t.arm, t.proposal
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
    blocks.append(Figure("stabilize-arms", _trajectory_chart(traj.filter(pl.col("panel").is_in(panels[:MAX_PANELS]))),
                         "Per proposal, the mean over source policies and rejection seeds of the PURD statistics of "
                         "the policy each arm holds after the decision (view stabilize_trajectory), one row per env "
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
    bars = base.mark_rule(strokeWidth=2).encode(x=alt.X(f"{name}_lo:Q", title=title), x2=f"{name}_hi:Q")
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
            color=alt.Color("arm:N", title="arm", scale=alt.Scale(range=charts.CATEGORY_RANGE)),
            tooltip=["run_id:N", "step:Q", "arm:N", "pairs:Q", alt.Tooltip("ltp_before:Q", format=".3f"),
                     alt.Tooltip("ltp_after:Q", format=".3f")])
        cells.append(alt.layer(diag, pts).properties(width=220, height=220, title=env))
    return charts.config(alt.hconcat(*cells).properties(title="Algorithm 1 per source policy (A.10)"))


def _trajectory_chart(traj: pl.DataFrame):
    rows = []
    for panel in traj["panel"].unique(maintain_order=True).to_list():
        base = alt.Chart(charts.values(traj.filter(pl.col("panel") == panel))).mark_line(point=True).encode(
            x=alt.X("proposal:Q", title="proposal"),
            color=alt.Color("arm:N", title="arm", scale=alt.Scale(range=charts.CATEGORY_RANGE)),
            tooltip=["panel:N", "arm:N", "proposal:Q", "sources:Q", alt.Tooltip("acceptance:Q", format=".2f"),
                     alt.Tooltip("mean:Q", format=",.1f"), alt.Tooltip("ltp:Q", format=".3f"),
                     alt.Tooltip("ltp_source:Q", format=".3f")])
        rows.append(alt.hconcat(
            base.encode(y=alt.Y("mean:Q", title="mean post-update return", scale=alt.Scale(zero=False)))
            .properties(width=300, height=160, title=panel),
            base.encode(y=alt.Y("ltp:Q", title="LTP (own mode)")).properties(width=300, height=160),
            base.encode(y=alt.Y("ltp_source:Q", title="LTP vs the source's mode (retland)"))
            .properties(width=300, height=160)))
    return charts.config(alt.vconcat(*rows).properties(title="Algorithm 1: reject vs baseline per proposal"))
