"""The report's Behaviour cloning section (the paper's Appendix A.7, Fig. 22): each BC
run's last clone beside its TD3 teacher, as `retland clones` compares them.

`clone_blocks(ctx)` returns None when the warehouse has no BC run (the section is then
left out of the report), else a scatter of teacher vs clone (mean return and LTP) and
the tables of correlations and mean LTPs. The report's --where keeps the pairs whose
clone distribution it keeps (e.g. --where "env = 'hopper'").
"""
from __future__ import annotations

import altair as alt
import polars as pl

from ..analyses import clones as cl
from . import charts
from .blocks import Block, Figure, Note, Table
from .context import ReportContext

PANELS = {"mean": "mean post-update return", "ltp": "LTP"}


def clone_blocks(ctx: ReportContext) -> list[Block] | None:
    if not ctx.has_table("bc_clones") or not ctx.sql("SELECT count(*) AS n FROM bc_clones")["n"][0]:
        return None
    pairs = ctx.sql("SELECT * FROM bc_pairs ORDER BY env, teacher_run_id, teacher_step, clone_run_id, operator")
    if ctx.where:  # the clones whose own distribution --where keeps
        kept = ctx.distributions().select(pl.col("run_id").alias("clone_run_id"), pl.col("step").alias("clone_step"),
                                          "operator").unique()
        pairs = pairs.join(kept, on=["clone_run_id", "clone_step", "operator"], how="semi")
    if not pairs.height:
        return [Note("No BC run's last clone is sampled beside its teacher: `retland sample --algo bc --operator bc` "
                     "and `retland sample --operator td3` on the teachers (same --horizon) produce them.")]
    result = cl.compare_clones(pairs, reps=ctx.n_resamples, seed=ctx.seed)
    ci = (f"95% bootstrap CIs, {ctx.n_resamples} resamples" if ctx.n_resamples else "no CIs (bootstrap turned off)")
    return [
        Figure("clones-scatter", _scatter(pairs), (
            "Each dot is one BC run's last clone (x: its TD3 teacher's post-update distribution under the td3 "
            "operator; y: the clone's under the bc operator: one more Adam step of the BC objective). The "
            "dashed line is y = x. The paper's Fig. 22 (left) reports Pearson r of these per env.")),
        Table("clones-correlation", result.correlations, (
            f"Pearson r between teacher and clone, per env, of the means and of the LTPs ({ci}, pairs redrawn).")),
        Table("clones-ltp", result.ltp, (
            f"Mean LTP of the BC policies and of their TD3 teachers (each teacher once), with {ci} stratified by "
            "env (Fig. 22, right); env 'all' pools the envs. `retland clones` prints the same numbers.")),
    ]


def _scatter(pairs: pl.DataFrame):
    rows = pl.concat([
        pairs.select("env", "clone_run_id", "teacher_run_id", "teacher_step",
                     pl.lit(PANELS[m]).alias("statistic"), pl.col(f"teacher_{m}").alias("teacher"),
                     pl.col(f"clone_{m}").alias("clone"))
        for m in PANELS])
    base = alt.Chart()
    dots = base.mark_circle(size=60, opacity=0.8).encode(
        x=alt.X("teacher:Q", title="teacher (td3 operator)", scale=alt.Scale(zero=False)),
        y=alt.Y("clone:Q", title="clone (bc operator)", scale=alt.Scale(zero=False)),
        color=alt.Color("env:N", title="env"),
        tooltip=["env:N", "teacher_run_id:N", "teacher_step:Q", "clone_run_id:N",
                 alt.Tooltip("teacher:Q", format=",.3f"), alt.Tooltip("clone:Q", format=",.3f")])
    diagonal = base.transform_aggregate(lo="min(teacher)", hi="max(teacher)", lo2="min(clone)", hi2="max(clone)") \
        .transform_calculate(a="min(datum.lo, datum.lo2)", b="max(datum.hi, datum.hi2)") \
        .transform_fold(["a", "b"], as_=["end", "v"]) \
        .mark_line(strokeDash=[4, 4], color="gray").encode(x="v:Q", y="v:Q")
    return alt.layer(diagonal, dots, data=charts.values(rows)).properties(width=260, height=240).facet(
        column=alt.Column("statistic:N", title=None)).resolve_scale(x="independent", y="independent")
