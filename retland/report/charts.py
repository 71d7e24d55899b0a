"""Altair (Vega-Lite) charts of the report, each a function of Polars frames.

Nothing here reads the warehouse: `sections.py` queries, these draw. Every chart is a
complete top-level spec (it carries its own data), so it renders alone in a notebook,
in the HTML report, or through vl-convert as PNG/SVG. Frames are aggregated before they
get here: a PURD travels as at most 100 binned counts, never as raw samples.
"""
from __future__ import annotations

import json
import math
import warnings

import altair as alt
import numpy as np
import polars as pl

HORIZON = 1000
RETURN_TITLE = f"return (sum of rewards over {HORIZON} steps)"
# Axis titles as two lines, so they fit beside small multiples.
MEAN_RETURN_TITLE = ["mean return", f"(sum of rewards over {HORIZON} steps)"]
STEP_TITLE = "env steps"
# Tableau-10 without the grey, so "none" (grey) never looks like a category.
CATEGORY_RANGE = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#ff9da6", "#9d755d", "#eeca3b"]
# The histogram's bars are light blue: no marker line shares their hue.
MARKER_COLOURS = {"mean": "#222222", "mode": "#7b3294", "ltp": "#d62728", "cvar": "#ff7f0e"}
MARKER_DASHES = {"mean": [2, 2], "mode": [1, 0], "ltp": [6, 3], "cvar": [8, 2, 2, 2]}
FONT = "Helvetica, Arial, sans-serif"


def config(chart):
    """House style: readable fonts, no chart border, labels not truncated."""
    return (chart.configure(font=FONT)
            .configure_view(stroke=None)
            .configure_axis(labelFontSize=11, titleFontSize=12, labelLimit=260, titleLimit=400, grid=True,
                            gridColor="#ececec")
            .configure_header(labelFontSize=12, titleFontSize=12, labelLimit=300)
            .configure_legend(labelFontSize=11, titleFontSize=12, labelLimit=300, symbolLimit=50)
            .configure_title(fontSize=13, anchor="start"))


def values(df: pl.DataFrame) -> alt.InlineData:
    """A frame as inline Vega-Lite data. Passing rows explicitly (not the frame) skips
    Altair's 5000-row guard, meant for raw data: ours are aggregated, and a study's
    histograms legitimately run to tens of thousands of bins. Equal frames still end up
    once in the spec's top-level `datasets`."""
    return alt.InlineData(values=df.to_dicts())


def steps_text(col: str = "step") -> pl.Expr:
    """550000 -> '550k', 1000000 -> '1M': how checkpoints are named in the paper."""
    s = pl.col(col)
    return (pl.when(s >= 1_000_000).then((s / 1_000_000).round(2).cast(pl.Utf8).str.strip_suffix(".0") + "M")
            .when(s >= 1000).then((s / 1000).round(1).cast(pl.Utf8).str.strip_suffix(".0") + "k")
            .otherwise(s.cast(pl.Utf8)))


def distribution_label(df: pl.DataFrame) -> pl.Series:
    """'td3 · hopper · seed 3 · step 550k · td3[…]' for each distribution row."""
    return df.select(pl.concat_str([
        pl.col("algo").fill_null("?"), pl.lit(" · "), pl.col("env").fill_null("?"), pl.lit(" · seed "),
        pl.col("seed").cast(pl.Utf8).fill_null("?"), pl.lit(" · step "), steps_text(), pl.lit(" · "),
        pl.col("operator")]).alias("label")).to_series()


def _panel(df: pl.DataFrame) -> pl.Series:
    """Panel of each distribution in a faceted chart, titled with its env and operator.

    The algorithms' own updates (td3[…] on a td3 run, sac[…] on a sac run) share one panel
    per env, so algorithms can be compared; its title lists those operators. Any other
    operator (gaussian noise, …) is not comparable to them and gets a panel of its own."""
    own = pl.col("operator").str.starts_with(pl.col("algo").fill_null(""))
    env = pl.col("env").fill_null("?")
    ops = (df.with_columns(own=own, env_=env).filter(pl.col("own")).group_by("env_")
           .agg(pl.col("operator").unique().sort().str.join(", ").alias("ops")))
    titles = dict(ops.iter_rows())
    return df.select(pl.when(own).then(env + pl.lit(" · ") + env.replace_strict(titles, default="?"))
                     .otherwise(pl.concat_str([env, pl.lit(" · "), pl.col("operator")])).alias("panel")).to_series()


# What a tooltip says for a statistic that has no value (never "undefined", which reads
# as a broken chart).
NO_VALUE = {"ltp": "none (mode ≤ 0)"}
STAT_FORMATS = {"mean": ".1f", "std": ".1f", "skewness": ".2f", "mode": ".1f", "ltp": ".3f", "cvar": ".1f"}


def _tooltip_frame(dists: pl.DataFrame) -> pl.DataFrame:
    """Adds `<stat>_text` = '3012.3 [3001.2, 3020.1]': the estimate and its bootstrap
    95% CI (when the frame has `<stat>_lo/_hi`), for tooltips."""
    def fmt(col: str, spec: str) -> pl.Expr:
        return pl.col(col).map_elements(lambda v: format(v, spec), return_dtype=pl.Utf8)

    texts = []
    for stat, spec in STAT_FORMATS.items():
        text = pl.when(pl.col(stat).is_null()).then(pl.lit(NO_VALUE.get(stat, "none"))).otherwise(fmt(stat, spec))
        if f"{stat}_lo" in dists.columns:
            ci = pl.concat_str([text, pl.lit(" ["), fmt(f"{stat}_lo", spec), pl.lit(", "), fmt(f"{stat}_hi", spec),
                                pl.lit("]")])
            text = pl.when(pl.col(f"{stat}_lo").is_null()).then(text).otherwise(ci)
        texts.append(text.alias(f"{stat}_text"))
    return dists.with_columns(*texts)


# ---------------------------------------------------------------------------------------
# Axis labels for env steps: 50k, 1.5M (d3's "~s" would write 0.05M next to 1M).
STEP_LABELS = ("datum.value >= 1e6 ? format(datum.value / 1e6, '~g') + 'M' : "
               "datum.value >= 1e3 ? format(datum.value / 1e3, '~g') + 'k' : format(datum.value, '~g')")


def _grid(rows: list[str], columns: list, cell) -> alt.VConcatChart:
    """Small multiples with one y scale per row (a row is one panel: env[, operator]) and
    x per column: `cell(row, column, left=, top=, bottom=)` draws one, told whether it is
    in the first column (it shows the y axis), first row, or last row (it shows x titles)."""
    lines = []
    for i, row in enumerate(rows):
        charts = [cell(row, col, left=j == 0, top=i == 0, bottom=i == len(rows) - 1) for j, col in enumerate(columns)]
        lines.append(alt.hconcat(*charts, spacing=12, title=alt.Title(row, anchor="start", fontSize=12))
                     .resolve_scale(y="shared"))
    return alt.vconcat(*lines, spacing=14).resolve_scale(x="independent")


def coverage(cells: pl.DataFrame):
    """Checkpoints × runs, coloured by samples taken. cells: run_id, algo, env, seed,
    step, samples, operators."""
    df = cells.with_columns(
        run=pl.concat_str([pl.col("algo"), pl.lit(" · "), pl.col("env"), pl.lit(" · seed "), pl.col("seed").cast(pl.Utf8)]),
        checkpoint=steps_text(),
    ).sort("algo", "env", "seed", "step")
    run_order = df["run"].unique(maintain_order=True).to_list()
    step_order = df.sort("step")["checkpoint"].unique(maintain_order=True).to_list()
    base = alt.Chart(values(df)).encode(
        x=alt.X("checkpoint:O", sort=step_order, title="checkpoint (env steps)", axis=alt.Axis(labelAngle=0, grid=False)),
        y=alt.Y("run:N", sort=run_order, title=None, axis=alt.Axis(grid=False)),
        tooltip=[alt.Tooltip("run:N"), alt.Tooltip("step:Q", format=","), alt.Tooltip("samples:Q", format=","),
                 alt.Tooltip("operators:Q", title="operators")],
    )
    rects = base.mark_rect(stroke="white", strokeWidth=1).encode(
        color=alt.condition("datum.samples > 0",
                            alt.Color("samples:Q", title="post-update samples", scale=alt.Scale(scheme="blues", zero=True)),
                            alt.value("#e6e6e6")))
    # at least 240 px wide, so the x title never runs into the legend (one checkpoint: 44 px)
    return config(rects.properties(width=max(44 * len(step_order), 240), height=alt.Step(16),
                                   title="Checkpoints and post-update samples per run"))


def seed_bands(curves: pl.DataFrame, n_resamples: int = 1000, seed: int = 0) -> pl.DataFrame:
    """Mean over seeds of each curve at each step with a 95% percentile bootstrap CI that
    resamples seeds (the run is the unit, as in rliable): curves has curve, env, step,
    eval_return (one row per seed); returns curve, env, step, seeds, mean, lo, hi. One
    seed, or n_resamples 0: lo = hi = mean."""
    from .. import stats

    rows = []
    groups = curves.group_by("curve", "env", "step", maintain_order=True).agg(r=pl.col("eval_return"))
    for i, (curve, env, step, r) in enumerate(groups.iter_rows()):
        x = np.asarray(r, dtype=np.float64)
        lo = hi = float(x.mean())
        if n_resamples and x.size > 1:
            lo, hi = stats.bootstrap_ci(x, lambda b: b.mean(axis=1), n_resamples=n_resamples, seed=seed + i)
        rows.append({"curve": curve, "env": env, "step": step, "seeds": x.size, "mean": float(x.mean()),
                     "lo": lo, "hi": hi})
    return pl.DataFrame(rows, schema={"curve": pl.Utf8, "env": pl.Utf8, "step": pl.Int64, "seeds": pl.Int64,
                                      "mean": pl.Float64, "lo": pl.Float64, "hi": pl.Float64})


def learning_curves(curves: pl.DataFrame, n_resamples: int = 1000, seed: int = 0):
    """curves: algo, env, seed, step, eval_return (one row per evaluation), optional
    variant. One colour per algorithm (and task variant, when there are several): the mean
    over seeds, its 95% bootstrap CI over seeds as a band, each seed as a thin line."""
    curves = curves.with_columns(curve=pl.col("algo").fill_null("?"))
    if "variant" in curves.columns and curves["variant"].n_unique() > 1:
        curves = curves.with_columns(curve=pl.format("{} · {}", pl.col("curve"), pl.col("variant").fill_null("?")))
    bands = seed_bands(curves, n_resamples, seed)
    title = "algorithm · variant" if "variant" in curves.columns and curves["variant"].n_unique() > 1 else "algorithm"
    colour = alt.Color("curve:N", title=title, scale=alt.Scale(range=CATEGORY_RANGE),
                       legend=alt.Legend(symbolOpacity=1, symbolStrokeWidth=3, symbolType="stroke"))
    x = alt.X("step:Q", title=STEP_TITLE, axis=alt.Axis(labelExpr=STEP_LABELS))
    y_title = f"evaluation {RETURN_TITLE}"
    seeds = (alt.Chart(values(curves.select("curve", "env", "seed", "step", "eval_return")))
             .mark_line(strokeWidth=0.8, opacity=0.3)
             .encode(x=x, y=alt.Y("eval_return:Q", title=y_title), color=colour, detail="seed:N"))
    band = alt.Chart(values(bands)).mark_area(opacity=0.22).encode(x=x, y=alt.Y("lo:Q", title=y_title), y2="hi:Q",
                                                                   color=colour)
    mean = (alt.Chart(values(bands)).mark_line(strokeWidth=2.4, point=alt.OverlayMarkDef(size=14, filled=True))
            .encode(x=x, y=alt.Y("mean:Q", title=y_title), color=colour,
                    tooltip=[alt.Tooltip("curve:N", title=title), alt.Tooltip("env:N"),
                             alt.Tooltip("step:Q", format=","),
                             alt.Tooltip("mean:Q", title="mean over seeds", format=".1f"),
                             alt.Tooltip("lo:Q", title="95% CI from", format=".1f"),
                             alt.Tooltip("hi:Q", title="95% CI to", format=".1f"), alt.Tooltip("seeds:Q")]))
    envs = curves["env"].unique().sort().to_list()
    cells = [alt.layer(*(layer.transform_filter(alt.datum.env == env) for layer in (band, seeds, mean)))
             .properties(width=300, height=210, title=env) for env in envs]
    rows = [alt.hconcat(*cells[k:k + 3], spacing=24) for k in range(0, len(cells), 3)]
    chart = rows[0] if len(rows) == 1 else alt.vconcat(*rows)
    return config(chart.properties(title="Learning curves"))


# The map's marker: distributions whose mode is <= 0 (column mode_nonpositive) have an LTP
# counted against a threshold <= 0. They are drawn at that LTP, as the authors computed it
# (the paper's Fig. 2, footnote 1: such policies sit on the right border), with their own
# marker in every column.
LTP_DEFINED = "> 0"
LTP_BORDER = "≤ 0: LTP against a threshold ≤ 0"
LTP_SHAPES = {LTP_DEFINED: "circle", LTP_BORDER: "triangle-right"}


def ltp_border(panel_ltp: pl.Series) -> float:
    """Right end of a panel's LTP axis: the first multiple of 0.05 above its largest
    LTP (so no LTP sits on the border), at most 1; 1 when the panel has no LTP."""
    top = panel_ltp.drop_nulls().max()
    if top is None:
        return 1.0
    return min(1.0, (math.floor(round(float(top) * 20, 9)) + 1) / 20)


def padded(values: pl.Series, floor: float | None = None) -> list[float]:
    """An axis range around `values` with room at both ends: 8% of their span, or, for
    one value (or equal ones), 10% of its size (at least 0.1), so the axis has ticks."""
    v = values.drop_nulls().drop_nans() if values.dtype.is_float() else values.drop_nulls()
    if v.is_empty():
        return [0.0, 1.0]
    lo, hi = float(v.min()), float(v.max())
    pad = 0.08 * (hi - lo) if hi > lo else max(0.1 * abs(hi), 0.1)
    lo, hi = lo - pad, hi + pad
    if floor is not None:
        lo = max(lo, floor)
    return [lo, hi]


def landscape_map(dists: pl.DataFrame, hist: pl.DataFrame, beta: float = 0.5, alpha: float = 0.1):
    """The map of Fig. 2 linked to the PURD histogram of Fig. 1 (middle).

    dists: one row per distribution (d, algo, env, seed, step, operator, n, the six
    statistics, lo, hi, label, optional <stat>_lo/_hi CIs). hist: d, b, c binned
    counts. Clicking a point (the nearest one) shows that checkpoint's histogram; the
    initial one is the distribution with the largest LTP. A distribution with mode <= 0
    (mode_nonpositive) is drawn at its LTP as a triangle, the marker a legend entry names
    (the paper's Fig. 2 footnote puts these on the right border; their LTP is high).
    """
    ltp_name = f"LTP (β = {beta:g})"
    metrics = {"std": "std of return", "skewness": "skewness of return", "ltp": ltp_name}
    df = (_tooltip_frame(dists)
          .with_columns(panel=_panel(dists), threshold=beta * pl.col("mode")))
    borders = {panel: ltp_border(g["ltp"]) for (panel,), g in df.group_by(["panel"])}
    nonpositive = (pl.col("mode_nonpositive") if "mode_nonpositive" in df.columns else ~(pl.col("mode") > 0))
    df = df.with_columns(
        ltp_x=pl.col("ltp").fill_null(pl.col("panel").replace_strict(borders, return_dtype=pl.Float64)),
        ltp_status=pl.when(nonpositive).then(pl.lit(LTP_BORDER)).otherwise(pl.lit(LTP_DEFINED)),
        ltp_text=pl.when(nonpositive).then(pl.concat_str([pl.col("ltp_text"), pl.lit(" (mode ≤ 0)")]))
        .otherwise(pl.col("ltp_text")))
    on_border = df.filter(pl.col("ltp_status") == LTP_BORDER).height
    # Vega-Lite reads dots and brackets in field names as paths: fields keep plain names,
    # headers and legends show the long ones.
    keep = ["d", "algo", "env", "seed", "step", "operator", "panel", "label", "n", "mean", "mode", "cvar", "threshold",
            "lo", "hi", *metrics, "ltp_x", "ltp_status", *(f"{s}_text" for s in STAT_FORMATS)]
    df = df.select(keep)
    start = dists.sort(pl.col("ltp").fill_null(-1.0), "std", descending=True)["d"][0]
    # No `nearest`: its Voronoi cells lie over the points and carry a tooltip that reads
    # the cell's own datum, not the point's, so every text line showed "undefined".
    pick = alt.selection_point(name="pick", fields=["d"], value=[{"d": int(start)}], on="click", clear=False,
                               empty=False)

    tooltip = [alt.Tooltip("label:N", title="distribution"), alt.Tooltip("n:Q", title="samples"),
               alt.Tooltip("mean_text:N", title="mean [95% CI]"), alt.Tooltip("std_text:N", title="std [95% CI]"),
               alt.Tooltip("skewness_text:N", title="skewness [95% CI]"),
               alt.Tooltip("mode_text:N", title="mode [95% CI]"),
               alt.Tooltip("ltp_text:N", title=f"{ltp_name} [95% CI]"),
               alt.Tooltip("cvar_text:N", title=f"CVaR α={alpha:g} [95% CI]")]
    data = values(df)
    shape = {}
    if on_border:
        shape = dict(shape=alt.Shape("ltp_status:N", title="PURD mode", legend=alt.Legend(labelLimit=400),
                                     scale=alt.Scale(domain=list(LTP_SHAPES), range=list(LTP_SHAPES.values()))))
    base = (alt.Chart(data).mark_point(filled=True)
            .encode(color=alt.Color("algo:N", title="algorithm", scale=alt.Scale(range=CATEGORY_RANGE)),
                    **shape,
                    size=alt.condition(pick, alt.value(170), alt.value(45)),
                    opacity=alt.condition(pick, alt.value(1.0), alt.value(0.65)),
                    stroke=alt.condition(pick, alt.value("black"), alt.value(None)),
                    tooltip=tooltip))

    # std and skewness on one x range for every panel (td3's and gaussian's rows compare),
    # and mean on a padded range per panel: a panel with one point still gets several ticks
    x_domain = {m: padded(df[m], floor=0.0 if m == "std" else None) for m in ("std", "skewness")}
    y_domain = {panel: padded(g["mean"]) for (panel,), g in df.group_by(["panel"])}

    def cell(panel: str, metric: str, left: bool, top: bool, bottom: bool):
        if metric != "ltp":
            x = alt.X(f"{metric}:Q", title=metrics[metric], scale=alt.Scale(domain=x_domain[metric], nice=False),
                      axis=alt.Axis(tickCount=4, labelOverlap=True))
        else:
            x = alt.X("ltp_x:Q", title=metrics[metric], scale=alt.Scale(domain=[0, borders[panel]], nice=False),
                      axis=alt.Axis(tickCount=4, labelOverlap=True))
        return (base.transform_filter(alt.datum.panel == panel)
                .encode(x=x,
                        y=alt.Y("mean:Q", title=MEAN_RETURN_TITLE if left else None,
                                scale=alt.Scale(domain=y_domain[panel], nice=False),
                                axis=alt.Axis(labels=left, ticks=left, tickCount=4)))
                .properties(width=230, height=170))

    with warnings.catch_warnings():
        # Altair merges the one selection every cell shares, and says so: that is the intent.
        warnings.filterwarnings("ignore", message="Automatically deduplicated selection parameter")
        scatter = _grid(df["panel"].unique().sort().to_list(), list(metrics), cell).add_params(pick)

    selected = alt.Chart(data).transform_filter(pick)
    bars = (alt.Chart(values(hist))
            .transform_filter(pick)
            .transform_lookup(lookup="d", from_=alt.LookupData(data, "d", ["lo", "hi"]))
            .transform_calculate(x0="datum.lo + datum.b * (datum.hi - datum.lo) / 100",
                                 x1="datum.hi > datum.lo ? datum.lo + (datum.b + 1) * (datum.hi - datum.lo) / 100"
                                    " : datum.lo + 1")
            .mark_bar(color="#9ecae1", stroke="#4292c6", strokeWidth=0.4)
            .encode(x=alt.X("x0:Q", title=RETURN_TITLE, scale=alt.Scale(zero=False)), x2="x1:Q",
                    y=alt.Y("c:Q", title="samples per bin (100 bins over [min, max])"), y2=alt.datum(0),
                    tooltip=[alt.Tooltip("x0:Q", title="from", format=".1f"),
                             alt.Tooltip("x1:Q", title="to", format=".1f"), alt.Tooltip("c:Q", title="samples")]))
    marker_names = {"mean": "mean", "mode": "mode", "threshold": f"LTP threshold ({beta:g} × mode)",
                    "cvar": f"CVaR (α = {alpha:g})"}
    keys = ("mean", "mode", "ltp", "cvar")
    # colour and dash share field, title and legend: Vega-Lite draws one legend whose
    # swatches are the dashed lines themselves
    legend = alt.Legend(title=None, orient="right", symbolType="stroke", symbolStrokeWidth=2, symbolSize=400,
                        labelLimit=260)
    domain = list(marker_names.values())
    rules = (selected
             .transform_fold(list(marker_names), as_=["key", "value"])
             .transform_calculate(marker=f"{json.dumps(marker_names)}[datum.key]")
             .transform_filter("isValid(datum.value)")
             .mark_rule(strokeWidth=1.6)
             .encode(x="value:Q",
                     color=alt.Color("marker:N", legend=legend,
                                     scale=alt.Scale(domain=domain, range=[MARKER_COLOURS[k] for k in keys])),
                     strokeDash=alt.StrokeDash("marker:N", legend=legend,
                                               scale=alt.Scale(domain=domain, range=[MARKER_DASHES[k] for k in keys])),
                     tooltip=[alt.Tooltip("marker:N"), alt.Tooltip("value:Q", format=".1f")]))
    caption = (selected
               .transform_calculate(caption=f"datum.label + '  ·  n = ' + datum.n + '  ·  {ltp_name} = ' + "
                                            "(isValid(datum.ltp) ? format(datum.ltp, '.3f') : 'none') + "
                                            "(datum.mode <= 0 ? ' (mode ≤ 0)' : '')")
               .mark_text(align="left", baseline="bottom", dy=-6, fontSize=11, fontWeight="bold")
               .encode(text="caption:N", x=alt.value(0), y=alt.value(0)))
    # the markers over the bars (the mode's line runs through the tallest bin), each named
    # at the top of its line in its colour, so no legend lookup is needed
    short = {"mean": "mean", "mode": "mode", "threshold": "LTP threshold", "cvar": "CVaR"}
    labels = [selected.transform_filter(f"isValid(datum.{field})")
              .mark_text(angle=270, align="right", baseline="bottom", dx=-3, dy=-2, fontSize=10, fontWeight="bold",
                         color=MARKER_COLOURS[key])
              .encode(x=f"{field}:Q", y=alt.value(0), text=alt.value(short[field]))
              for field, key in zip(marker_names, keys)]
    histogram = (alt.layer(bars, rules, *labels, caption)
                 .properties(width=720, height=240,
                             title=alt.Title("Post-update return distribution of the selected checkpoint", offset=22)))
    chart = alt.vconcat(scatter, histogram, spacing=30).resolve_scale(color="independent", shape="independent",
                                                                      strokeDash="independent")
    return config(chart.properties(title=alt.Title("Landscape map: mean vs spread, skew and left tail of each PURD",
                                                   offset=12)))


def cvar_ranking(ranked: pl.DataFrame, beta: float = 0.5):
    """A.9: policies on (LTP, mean), coloured by their rank under α-CVaR, one column per α.

    ranked: d, algo, env, seed, step, operator, label, mean, ltp, alpha, alpha_cvar, rank, policies."""
    df = (ranked.with_columns(panel=_panel(ranked))
          .with_columns(
                        position=pl.when(pl.col("policies") > 1)
                        .then((pl.col("rank") - 1) / (pl.col("policies") - 1)).otherwise(0.0),
                        alpha_label=pl.concat_str([pl.lit("α = "), pl.col("alpha").cast(pl.Utf8).str.strip_suffix(".0")]))
          .select("panel", "alpha_label", "alpha", "label", "mean", "ltp", "alpha_cvar", "rank", "policies", "position"))
    alphas = df.sort("alpha")["alpha_label"].unique(maintain_order=True).to_list()
    base = (alt.Chart(values(df)).mark_circle(size=45, opacity=0.9, stroke="#333", strokeWidth=0.3)
            .encode(color=alt.Color("position:Q", title=["rank among the panel's", "policies (0% = best)"],
                                    scale=alt.Scale(scheme="viridis", domain=[0, 1]),
                                    legend=alt.Legend(format=".0%", gradientLength=160)),
                    order=alt.Order("position:Q", sort="descending"),
                    tooltip=[alt.Tooltip("label:N", title="distribution"), alt.Tooltip("alpha_label:N", title="α"),
                             alt.Tooltip("alpha_cvar:Q", title="α-CVaR", format=".1f"),
                             alt.Tooltip("rank:Q"), alt.Tooltip("policies:Q", title="of"),
                             alt.Tooltip("mean:Q", format=".1f"), alt.Tooltip("ltp:Q", title="LTP", format=".3f")]))

    def cell(panel: str, alpha_label: str, left: bool, top: bool, bottom: bool):
        return (base.transform_filter((alt.datum.panel == panel) & (alt.datum.alpha_label == alpha_label))
                .encode(x=alt.X("ltp:Q", title=f"LTP (β = {beta:g})", scale=alt.Scale(zero=True)),
                        y=alt.Y("mean:Q", title=MEAN_RETURN_TITLE if left else None, scale=alt.Scale(zero=False),
                                axis=alt.Axis(labels=left, ticks=left)))
                .properties(width=200, height=160, title=f"ranked by {alpha_label}-CVaR" if top else ""))

    chart = _grid(df["panel"].unique().sort().to_list(), alphas, cell)
    return config(chart.properties(title=alt.Title("How α-CVaR ranks policies (paper A.9)", offset=12)))
