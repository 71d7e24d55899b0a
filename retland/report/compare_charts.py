"""The report's Comparisons section: algorithms compared as `retland compare` does, with
rliable's interval estimates (IQM and its stratified bootstrap CI per env and over the
envs every algorithm has) and the probability of improvement between each pair.

`compare_blocks(ctx)` returns the blocks; sections.py registers the section. Scores are
each run's own-update distributions averaged over its checkpoints, from trained and
imported runs (not the runs `retland stabilize` derives), within the report's --where.
"""
from __future__ import annotations

import altair as alt
import polars as pl

from ..analyses import compare as cmp
from . import charts
from .blocks import Block, Figure, Note, Table
from .context import ReportContext

# The panels, left to right: the paper's two tail metrics, then the mean return.
METRICS = ("ltp", "cvar", "mean")
TITLES = {"ltp": "LTP", "cvar": "CVaR", "mean": "mean return"}
FORMATS = {"ltp": ".3f", "cvar": ",.1f", "mean": ",.1f", "std": ",.1f"}
ALL_LABEL = "all envs"


def compare_blocks(ctx: ReportContext) -> list[Block]:
    if not ctx.row_count("post_update_returns"):
        return [Note("No post-update returns to compare: `retland sample` produces them.")]
    stats = cmp.read_stats(ctx.con, where=ctx.where, alpha=ctx.alpha, beta=ctx.beta)
    own = cmp.run_scores(stats, "mean") if stats.height else None
    if own is None or not _shared_env(own):
        return [Note("No environment has own-update distributions of two algorithms, so there is nothing to compare "
                     "(`retland sample` for a second algorithm on the same env; `retland compare` on the command "
                     "line).")]
    results, notes = [], []
    for metric in METRICS:
        try:
            results.append(cmp.compare(cmp.run_scores(stats, metric), reps=ctx.n_resamples, seed=ctx.seed))
        except cmp.CompareError as exc:
            notes.append(Note(f"{TITLES[metric]}: {exc}"))
    if not results:
        return notes
    estimates = pl.concat([_estimate_rows(r) for r in results])
    ci = (f"95% stratified bootstrap CI ({ctx.n_resamples} resamples: runs redrawn within each env)"
          if ctx.n_resamples else "no CIs (bootstrap turned off)")
    pooled = {TITLES[r.metric]: ", ".join(r.common_envs) or "none" for r in results}
    common = (next(iter(pooled.values())) if len(set(pooled.values())) == 1
              else "; ".join(f"{k}: {v}" for k, v in pooled.items()))
    blocks: list[Block] = [Figure("compare-iqm", _interval_chart(estimates), (
        f"Interval estimates as in rliable (Agarwal et al. 2021): per env and pooled over the envs every algorithm "
        f"has ('{ALL_LABEL}': {common}), the IQM (mean of the middle 50%) of the runs' scores, "
        f"with its {ci}. A run's score is the statistic of its own-update distributions, averaged over its "
        "checkpoints. LTP: lower is better; CVaR and mean: higher is better. `retland compare` prints the same "
        "numbers."))]
    blocks.append(Table("compare-improvement", _improvement_table(results), (
        "P(A better than B): the share of (A run, B run) pairs in which A's score is better in the metric's "
        "direction (ties count ½), per env and averaged over the pooled envs, with its 95% stratified bootstrap "
        "CI (A's and B's runs redrawn independently within each env).")))
    nonpositive = next((r.scores.mode_nonpositive for r in results if r.metric == "ltp"), 0)
    if nonpositive:
        notes.append(Note(f"{nonpositive} distribution{'s' if nonpositive != 1 else ''} with mode ≤ 0 "
                          f"{'is' if nonpositive == 1 else 'are'} included in the LTP scores (their LTP counts "
                          "returns below a threshold ≤ 0, as the paper computes it)."))
    return blocks + notes


def _shared_env(scores) -> bool:
    """Whether some env has scores of at least two groups."""
    return bool(scores.frame.height) and bool(
        scores.frame.group_by("env").agg(pl.col("group").n_unique()).filter(pl.col("group") >= 2).height)


def _estimate_rows(result) -> pl.DataFrame:
    """The chart's rows for one metric: row label, algo, metric, runs, and the estimate
    with its CI as text (tooltips never show an empty value)."""
    m = result.metric
    fmt = FORMATS[m]

    def text(v) -> str:
        return "none" if v is None else format(v, fmt)

    df = result.estimates.with_columns(
        env_label=pl.when(pl.col("env") == cmp.ALL).then(pl.lit(ALL_LABEL)).otherwise(pl.col("env")),
        lo=pl.col("lo").fill_null(pl.col("iqm")), hi=pl.col("hi").fill_null(pl.col("iqm")))
    ci = [f"{text(v)} [{text(lo)}, {text(hi)}]" if result.reps else text(v)
          for v, lo, hi in result.estimates.select("iqm", "lo", "hi").iter_rows()]
    return df.select(
        pl.concat_str([pl.col("env_label"), pl.lit(" · "), pl.col("group")]).alias("row"),
        pl.col("env_label").alias("env"), pl.col("group").alias("algo"), pl.lit(m).alias("metric"), "runs",
        "iqm", "lo", "hi", pl.Series("iqm_text", ci, dtype=pl.String),
        pl.lit(f"{result.direction} is better").alias("better"))


def _interval_chart(estimates: pl.DataFrame):
    """One panel per metric: a row per (env, algo), the pooled rows first, the IQM as a
    point and its CI as a bar; the rows line up across panels, so only the first shows
    their labels."""
    envs = [e for e in estimates["env"].unique(maintain_order=True).to_list() if e != ALL_LABEL]
    order = (estimates.select("row", "env", "algo").unique()
             .with_columns(k=pl.col("env").replace_strict({ALL_LABEL: -1, **{e: i for i, e in enumerate(envs)}},
                                                          return_dtype=pl.Int64))
             .sort("k", "algo")["row"].to_list())
    algos = sorted(estimates["algo"].unique().to_list())
    colour = alt.Color("algo:N", title="algorithm", scale=alt.Scale(domain=algos, range=charts.CATEGORY_RANGE),
                       legend=alt.Legend(orient="top"))
    panels = []
    for k, metric in enumerate(m for m in METRICS if m in estimates["metric"].to_list()):
        sub = estimates.filter(pl.col("metric") == metric)
        better = sub["better"][0]
        y = alt.Y("row:N", title=None, scale=alt.Scale(domain=order),
                  axis=alt.Axis(labelLimit=200) if k == 0 else None)
        base = alt.Chart(charts.values(sub)).encode(y=y, color=colour)
        bars = base.mark_rule(strokeWidth=2.5).encode(
            x=alt.X("lo:Q", title=f"{TITLES[metric]} IQM ({better})", scale=alt.Scale(zero=metric == "ltp")),
            x2="hi:Q")
        points = base.mark_point(filled=True, size=80, opacity=1).encode(
            x="iqm:Q",
            tooltip=[alt.Tooltip("env:N", title="env"), alt.Tooltip("algo:N", title="algorithm"),
                     alt.Tooltip("runs:Q", title="runs (× envs)"),
                     alt.Tooltip("iqm_text:N", title=f"IQM of {TITLES[metric]} [95% CI]"),
                     alt.Tooltip("better:N", title="direction")])
        panels.append(alt.layer(bars, points).properties(width=270, height=alt.Step(20), title=TITLES[metric]))
    return charts.config(alt.hconcat(*panels, spacing=24).properties(
        title="Algorithms compared: IQM over runs with 95% stratified bootstrap CIs (rliable)"))


def _improvement_table(results) -> pl.DataFrame:
    rows = []
    for r in results:
        fmt = ".3f"
        for row in r.improvements.iter_rows(named=True):
            ci = "—" if row["lo"] is None else f"[{format(row['lo'], fmt)}, {format(row['hi'], fmt)}]"
            rows.append({"metric": f"{TITLES[r.metric]} ({r.direction} is better)",
                         "env": ALL_LABEL if row["env"] == cmp.ALL else row["env"],
                         "A": row["a"], "B": row["b"], "P(A better than B)": format(row["p"], fmt),
                         "95% CI": ci, "runs A / B": f"{row['runs_a']} / {row['runs_b']}"})
    return pl.DataFrame(rows, schema={k: pl.String for k in ("metric", "env", "A", "B", "P(A better than B)",
                                                              "95% CI", "runs A / B")})
