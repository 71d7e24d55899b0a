"""`retland compare`: algorithms (or task variants, or run sources) compared on a statistic
of their post-update return distributions with rliable's estimators: IQM with stratified
bootstrap CIs and the probability of improvement (retland.analyses.compare)."""
from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from retland.cli.app import (
    CliError,
    WarehouseOpt,
    app,
    check_output_file,
    check_seed,
    ci_cell,
    console,
    err_console,
    renamed,
)
from retland.cli.selection import parse_sources, source_option


class CompareFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    rliable_json = "rliable-json"


@app.command()
def compare(
    metric: Annotated[str, typer.Option(
        help="The statistic of each distribution to compare: ltp (lower is better), cvar (higher is better), "
             "mean (higher is better) or std (lower is better).")] = "ltp",
    by: Annotated[str, typer.Option(
        help="The run attribute whose values are compared: algo, variant (task rules) or source.")] = "algo",
    where: Annotated[Optional[str], typer.Option(
        help="SQL condition on the distributions, as `retland stats --where` (algo, env, variant, seed, step, "
             "operator, run_id, source, n or a statistic), e.g. \"step >= 500000\".")] = None,
    operator: Annotated[str, typer.Option(
        help="Whose distributions make a run's score: own (each run's own update, td3[…] for a TD3 run), an "
             "operator id, or a kind (gaussian matches gaussian[…]). A run with distributions under two matching "
             "operators is refused: give the full id.")] = "own",
    step: Annotated[str, typer.Option(
        help="Which checkpoints of a run make its score: all (the mean over them), last, or one step.")] = "all",
    source: source_option("to compare; default trained,imported,added") = "trained,imported,added",
    alpha: Annotated[float, typer.Option(help="CVaR level α in (0, 1].")] = 0.1,
    beta: Annotated[float, typer.Option(help="LTP threshold β: share of returns below β × mode.")] = 0.5,
    reps: Annotated[int, typer.Option(
        "--bootstrap", help="Bootstrap resamples of every CI (0: no CIs).")] = 2000,
    seed: Annotated[int, typer.Option(
        "--bootstrap-seed", help="Seed of every bootstrap (each CI draws from it anew).")] = 0,
    old_reps: Annotated[Optional[int], typer.Option("--reps", hidden=True)] = None,
    old_seed: Annotated[Optional[int], typer.Option("--seed", hidden=True)] = None,
    fmt: Annotated[CompareFormat, typer.Option(
        "--format", "-f", help="table; csv or json: both result tables at full precision; rliable-json: each "
                               "group's score matrix (a row per run, a column per env) with the env order, to feed "
                               "rliable.")
    ] = CompareFormat.table,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Write the result to this file instead of the terminal.")] = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Compare algorithms across envs as rliable does (Agarwal et al. 2021): IQM per env and
    over all envs with 95% stratified bootstrap CIs, and P(A better than B) per pair.

    A score is one number per run and env: the --metric of the run's post-update return
    distributions under one operator (--operator), averaged over its checkpoints (--step).
    LTP is computed for every distribution; those whose mode is ≤ 0 (flag
    mode_nonpositive) are included and counted in a note. The IQM is the mean of the middle 50% of the scores (per env: of its runs;
    'all': of the runs × envs scores pooled over the envs every group has). Its CI
    redraws runs with replacement within each env. P(A better than B) is, per env, the
    share of (A run, B run) pairs where A's score is better in the metric's direction
    (ties ½), averaged over envs; its CI redraws A's and B's runs independently within
    each env. Nothing is written into the warehouse.
    """
    from retland.analyses import compare as cmp
    from retland.warehouse import Warehouse

    cmp.check_metric(metric)
    cmp.check_by(by)
    steps = cmp.parse_step(step)
    sources = parse_sources(source)
    reps = renamed(reps, old_reps, 2000, "--bootstrap", "--reps")
    seed = renamed(seed, old_seed, 0, "--bootstrap-seed", "--seed")
    if not 0 <= reps <= cmp.MAX_REPS:
        raise CliError(f"--bootstrap {reps}: give a whole number in [0, {cmp.MAX_REPS}]")
    check_seed(seed, "--bootstrap-seed", 2**32 - 1)
    if output is not None:
        check_output_file(output)

    wh = Warehouse.open(warehouse, create=False)
    con = wh.connect()
    try:
        stats = cmp.read_stats(con, where=where, sources=sources, alpha=alpha, beta=beta)
    finally:
        con.close()
    if stats.height == 0:
        raise CliError("no post-update return distributions match"
                       + (f" --where {where!r}" if where else "") + f" among {', '.join(sources)} runs")
    scores = cmp.run_scores(stats, metric, by=by, operator=operator, step=steps)
    if fmt is CompareFormat.rliable_json:
        cmp.require_groups(scores)
        _write(_rows_json(cmp.rliable_scores(scores)), output,
               f"{len(scores.groups)} {by} score matrices over {len(scores.envs)} envs")
        return
    result = cmp.compare(scores, reps=reps, seed=seed)
    if fmt is CompareFormat.json:
        _write(json.dumps(result.to_json(), indent=1) + "\n", output, "the comparison")
    elif fmt is CompareFormat.csv:
        _write(_long(result).write_csv(), output, "the comparison")
    else:
        _print_tables(result, alpha, beta, output)


def _rows_json(doc: dict) -> str:
    """JSON with one line per top-level key, and per group and matrix row below
    `scores`, `runs` and `seeds`: readable, and still plain JSON."""
    lines = []
    for key, value in doc.items():
        if isinstance(value, dict) and value and all(isinstance(v, list) for v in value.values()):
            inner = [f'  {json.dumps(g)}: [\n' + ",\n".join(f"   {json.dumps(row)}" for row in rows) + "\n  ]"
                     for g, rows in value.items()]
            lines.append(f' {json.dumps(key)}: {{\n' + ",\n".join(inner) + "\n }")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def _write(text: str, output: Path | None, what: str) -> None:
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
    except OSError as exc:
        raise CliError(f"--output {output}: cannot write it: {exc.strerror or exc}") from None
    err_console.print(f"wrote {what} to {output}")


def _long(result):
    """Both tables as one long frame for CSV: statistic (iqm | p_improvement), env,
    group, versus (the other group of a P(improvement)), runs, runs_versus, estimate, lo, hi."""
    import polars as pl

    e = result.estimates.select(pl.lit("iqm").alias("statistic"), "env", "group", pl.lit(None, pl.String).alias("versus"),
                                "runs", pl.lit(None, pl.Int64).alias("runs_versus"), pl.col("iqm").alias("estimate"),
                                "lo", "hi")
    p = result.improvements.select(pl.lit("p_improvement").alias("statistic"), "env", pl.col("a").alias("group"),
                                   pl.col("b").alias("versus"), pl.col("runs_a").alias("runs"),
                                   pl.col("runs_b").alias("runs_versus"), pl.col("p").alias("estimate"), "lo", "hi")
    return pl.concat([e, p]).with_columns(metric=pl.lit(result.metric), better=pl.lit(result.direction))


def _env_order(envs: list[str]) -> list[str]:
    from retland.analyses.compare import ALL

    return [e for e in envs if e != ALL] + ([ALL] if ALL in envs else [])


def _print_tables(result, alpha: float, beta: float, output: Path | None) -> None:
    """Two terminal tables: IQM [95% CI] (runs) per env and group, P(A better than B) [95% CI]
    per env and pair; then what was left out."""
    from rich.console import Console

    from retland.analyses.compare import ALL, METRIC_TEXT
    from retland.cli.tables import Column, print_table

    s = result.scores
    ci = f"95% stratified bootstrap CI, {result.reps} resamples, seed {result.seed}" if result.reps else "no CIs (--bootstrap 0)"
    param = {"ltp": f", β = {beta:g}", "cvar": f", α = {alpha:g}"}.get(s.metric, "")
    step = {"all": "mean over its checkpoints", "last": "its last checkpoint"}.get(s.step, f"step {s.step}")
    operator = "its own update" if s.operator == "own" else f"operator {s.operator}"
    head = (f"{s.metric} ({METRIC_TEXT[s.metric]}{param}): {result.direction} is better. "
            f"Score = one per run and env: {operator}, {step}. IQM = mean of the middle 50% of the scores. "
            f"P(A better than B) = share of (A run, B run) pairs where A's score is better, ties ½, averaged over "
            f"envs. {ci}.")
    envs = _env_order(result.estimates["env"].unique(maintain_order=True).to_list())
    est = {(r["env"], r["group"]): r for r in result.estimates.iter_rows(named=True)}
    iqm_cols = [Column("env")] + [Column(f"{g} [95% CI] (runs)", "right") for g in result.groups]
    iqm_rows = []
    for env in envs:
        label = f"all ({', '.join(result.common_envs)})" if env == ALL else env
        cells = []
        for g in result.groups:
            r = est.get((env, g))
            cells.append("—" if r is None else f"{ci_cell(r['iqm'], r['lo'], r['hi'])} ({r['runs']})")
        iqm_rows.append([label, *cells])
    pairs = [(a, b) for a, b in result.improvements.select("a", "b").unique(maintain_order=True).iter_rows()]
    imp = {(r["env"], r["a"], r["b"]): r for r in result.improvements.iter_rows(named=True)}
    p_cols = [Column("env")] + [Column(f"P({a} better than {b})", "right") for a, b in pairs]
    p_rows = []
    for env in _env_order(result.improvements["env"].unique(maintain_order=True).to_list()):
        label = f"all ({', '.join(result.common_envs)})" if env == ALL else env
        cells = []
        for a, b in pairs:
            r = imp.get((env, a, b))
            cells.append("—" if r is None else ci_cell(r["p"], r["lo"], r["hi"]))
        p_rows.append([label, *cells])
    notes = []
    if s.undefined:
        notes.append(f"{s.undefined} distribution{'s' if s.undefined != 1 else ''} without a {s.metric} "
                     "left out of the scores.")
    if s.mode_nonpositive:
        notes.append(f"{s.mode_nonpositive} distribution{'s' if s.mode_nonpositive != 1 else ''} with mode ≤ 0 "
                     "included: their LTP counts returns below a threshold ≤ 0 (column mode_nonpositive).")
    left = [e for e in s.envs if e not in result.common_envs]
    if left:
        notes.append(f"Not in 'all' (not every {s.by} has scores there): {', '.join(left)}.")
    if not result.common_envs:
        notes.append(f"No env has scores of every {s.by}: no aggregate row.")
    out = console if output is None else None
    fh = None
    try:
        if output is not None:
            output.parent.mkdir(parents=True, exist_ok=True)
            fh = output.open("w")
            out = Console(file=fh, width=200)  # prose lines; the tables are never capped
        out.print(head, highlight=False, soft_wrap=True)
        print_table(out, iqm_cols, iqm_rows, title=f"IQM of {s.metric} over runs ({result.direction} is better)",
                    fit=output is None)
        print_table(out, p_cols, p_rows, title=f"P(A better than B) in {s.metric}", fit=output is None)
        for line in notes:
            out.print(line, highlight=False, soft_wrap=True)
    except OSError as exc:
        raise CliError(f"--output {output}: cannot write it: {exc.strerror or exc}") from None
    finally:
        if fh is not None:
            fh.close()
    if output is not None:
        err_console.print(f"wrote the comparison to {output}")
