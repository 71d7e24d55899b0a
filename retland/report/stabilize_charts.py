"""Charts of Algorithm 1 (`retland stabilize`) for the report's stabilize section.

`stabilize_blocks(ctx)` returns the blocks; the section in sections.py wires it in.
"""
from __future__ import annotations

import altair as alt

from ..analyses.stabilize import arm_effect
from . import charts
from .blocks import Block, Figure, Note, Table
from .context import ReportContext

# Per proposal, the seeds' mean of what each arm holds (view stabilize_arms), named for the charts.
ARMS_SQL = """
SELECT experiment_id, arm, proposal, seeds, acceptance, mean_of_mean AS mean,
       mean_ltp AS ltp, mean_ltp_source AS ltp_source, mean_cvar AS cvar
FROM stabilize_arms
ORDER BY experiment_id, arm, proposal
"""
# Every lane's held policy after the last proposal, the input of arm_effect.
FINAL_SQL = "SELECT * FROM stabilize_final"


def stabilize_blocks(ctx: ReportContext) -> list[Block]:
    """Mean and LTP of the policy each arm holds after every proposal (Fig. 7), averaged
    over rejection seeds, one panel row per experiment."""
    if not ctx.row_count("stabilize_steps"):
        return [Note("No Algorithm 1 runs yet: run `retland stabilize`.")]
    df = ctx.sql(ARMS_SQL)
    base = alt.Chart(charts.values(df)).mark_line(point=True).encode(
        x=alt.X("proposal:Q", title="proposal"), color=alt.Color("arm:N", title="arm"),
        tooltip=["experiment_id:N", "arm:N", "proposal:Q", "seeds:Q",
                 alt.Tooltip("acceptance:Q", format=".2f"), alt.Tooltip("mean:Q", format=",.1f"),
                 alt.Tooltip("ltp:Q", format=".3f"), alt.Tooltip("ltp_source:Q", format=".3f"),
                 alt.Tooltip("cvar:Q", format=",.1f")])
    panels = alt.hconcat(base.encode(y=alt.Y("mean:Q", title="mean post-update return", scale=alt.Scale(zero=False))),
                         base.encode(y=alt.Y("ltp:Q", title="LTP")),
                         base.encode(y=alt.Y("ltp_source:Q", title="LTP vs the source's mode")),
                         base.encode(y=alt.Y("cvar:Q", title="CVaR_α", scale=alt.Scale(zero=False))))
    chart = charts.config(alt.vconcat(panels).properties(title="Algorithm 1: reject vs baseline"))

    effect = arm_effect(ctx.sql(FINAL_SQL), n_resamples=ctx.n_resamples, seed=ctx.seed)
    table = [Table("stabilize-effect", effect,
                   "Reject − baseline after the last proposal: mean over rejection seeds of the paired "
                   "difference of the held policy's PURD statistic, with a percentile bootstrap 95% CI over "
                   "seeds.")] if effect.height else []
    return [Figure("stabilize-arms", chart,
                   "Per proposal, the mean over rejection seeds of the PURD statistics of the policy each arm "
                   "holds after the decision (view stabilize_arms). The reject arm keeps a proposal only if "
                   "the criterion holds against its last accepted state; the baseline never rejects. LTP is "
                   "relative to each distribution's own mode; 'LTP vs the source's mode' counts returns below "
                   "β × the source checkpoint's mode, so it also sees a distribution that moved down as a "
                   "whole.")] + table
