"""`retland stabilize`: Algorithm 1, post-update rejection of TD3 updates, from one or many
source policies; `retland stabilize-effect`: the paper's Fig. 7 table over source policies."""
from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from retland.cli.app import (
    CliError,
    FormatOpt,
    OutputFormat,
    OutputOpt,
    WarehouseOpt,
    app,
    console,
    emit,
    int_list,
    renamed,
    require_writable,
)
from retland.cli.progress import progress_bar
from retland.config.intlist import INT32_MAX
from retland.config.settings import ARMS, CRITERIA, StabilizeConfig, default_of, help_of


Criterion = Enum("Criterion", {c: c for c in CRITERIA}, type=str)


def parse_arms(text: str) -> tuple[str, ...]:

    arms = tuple(a.strip() for a in text.split(",") if a.strip())
    bad = [a for a in arms if a not in ARMS]
    if bad or not arms:
        raise CliError(f"--arms {text!r}: choose from {', '.join(ARMS)} (comma-separated)")
    return arms


def parse_source(text: str) -> tuple[str, int]:
    """'RUN_ID:STEP' -> (run id, step); the run id may itself contain ':'."""
    run, sep, step = text.rpartition(":")
    if not sep or not run or not step.strip().isdigit():
        raise CliError(f"--source {text!r}: expected RUN_ID:STEP, e.g. td3-hopper-s0:500000")
    return run, int(step)


@app.command()
def stabilize(
    run: Annotated[Optional[list[str]], typer.Option(
        "--run", help="Source run id (a TD3 run) or a unique prefix of one; repeat with --step for several sources.",
        show_default=False)] = None,
    step: Annotated[Optional[list[int]], typer.Option(
        "--step", help="Env step of the source checkpoint; the i-th --step goes with the i-th --run.",
        show_default=False)] = None,
    source: Annotated[Optional[list[str]], typer.Option(
        "--source", help="A source as RUN_ID:STEP (repeatable).", show_default=False)] = None,
    sources: Annotated[Optional[str], typer.Option(
        "--sources", help="top-ltp:K: the K sampled TD3 checkpoints with the highest LTP > 0 (td3-operator "
                          "PURDs; restrict with --env, --where, --operator).", show_default=False)] = None,
    env: Annotated[Optional[str], typer.Option(help="With --sources: only this env.", show_default=False)] = None,
    where: Annotated[Optional[str], typer.Option(
        help="With --sources: SQL condition on env, run_id, seed, step, operator, n, mean, std, skewness, mode, "
             "ltp, cvar, e.g. \"step >= 500000\".", show_default=False)] = None,
    operator: Annotated[Optional[str], typer.Option(
        help="With --sources: the td3 operator whose PURDs rank the checkpoints (needed when several were "
             "sampled).", show_default=False)] = None,
    proposals: Annotated[int, typer.Option(help=help_of(StabilizeConfig, "proposals"))] = default_of(StabilizeConfig, "proposals"),
    samples: Annotated[int, typer.Option(help=help_of(StabilizeConfig, "samples"))] = default_of(StabilizeConfig, "samples"),
    alpha: Annotated[float, typer.Option(help=help_of(StabilizeConfig, "alpha"))] = default_of(StabilizeConfig, "alpha"),
    tolerance: Annotated[float, typer.Option(help=help_of(StabilizeConfig, "tolerance"))] = default_of(StabilizeConfig, "tolerance"),
    criterion: Annotated[Criterion, typer.Option(help=help_of(StabilizeConfig, "criterion"))] = Criterion(
        default_of(StabilizeConfig, "criterion")),
    arms: Annotated[str, typer.Option(help="reject (Algorithm 1) and/or baseline (never rejects, same keys).")]
    = "reject,baseline",
    seeds: Annotated[str, typer.Option(help="Rejection seeds: 0..9, 0,3,5 or 2..4.")] = "0..9",
    chunk: Annotated[Optional[int], typer.Option(
        help="PURD samples per lane computed at once; memory grows with lanes × chunk. "
             "Default: 256 on CPU; on a GPU 512, or the largest chunk whose compiled program fits "
             "80% of the free device memory (XLA's memory analysis). Recorded with the experiment.",
        show_default=False)] = None,
    skip_done: Annotated[bool, typer.Option(
        "--skip-done/--redo", help="Skip sources whose experiment with these settings is already stored "
                                   "(rerun a killed command to resume); --redo runs them again.")] = True,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    warehouse: WarehouseOpt = None,
) -> None:
    """Algorithm 1 (paper §4.2, Fig. 7): from each source TD3 checkpoint, each proposal
    takes one env step (exploration noise 0.1, collection reset noise 10% of standard),
    appends it to the replay buffer and does one full TD3 update; the proposal's
    post-update return distribution (N td3-operator samples) decides: the reject arm
    keeps it only if the criterion holds against the last accepted state, else restores
    everything. The two PURDs compared are independent estimates: they use the same
    sample keys, but the proposal's buffer holds one more row, which remaps every
    minibatch index (no common random numbers; as in the authors' code). All seeds and
    arms of a source run vmapped in one program; sources run one after another (one
    compile for sources of one training config).

    Sources: --run R --step S (repeatable, paired in order), --source R:S, and/or
    --sources top-ltp:K. Each source is one experiment, written when it finishes: one
    `stabilize_steps` row per lane and proposal, the samples in `stabilize_returns`,
    and each lane's final state as a derived run (runs.source = 'derived'). A killed
    command loses only the source in progress; run it again to resume. Read the result
    with `retland stabilize-effect` (Fig. 7) and the views stabilize_sources,
    stabilize_trajectory, stabilize_arms and stabilize_replay(...)."""
    from pydantic import ValidationError

    from retland.analyses.stabilize import StabilizeRequest

    try:
        base = StabilizeConfig(run_id="-", step=0, proposals=proposals, samples=samples, alpha=alpha,
                               tolerance=tolerance, criterion=criterion.value, arms=parse_arms(arms),
                               seeds=int_list(seeds, "--seeds", maximum=INT32_MAX), chunk=chunk)
    except ValidationError as exc:
        msgs = "; ".join(f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg'].removeprefix('Value error, ')}"
                         for e in exc.errors())
        raise CliError(msgs) from None
    request = StabilizeRequest(run=tuple(run or ()), step=tuple(step or ()),
                               source=tuple(parse_source(x) for x in source or ()), sources=sources, env=env,
                               where=where, operator=operator, config=base, skip_done=skip_done)
    try:
        request.check()
    except ValueError as exc:
        raise CliError(str(exc)) from None
    execute(request, warehouse, progress)


def execute(request, warehouse, progress: bool = True) -> None:
    """Run a checked StabilizeRequest (`retland.analyses.stabilize.run_request`) and print
    what `retland stabilize` prints; `retland study` calls this for its stabilize stage."""
    from functools import partial

    from retland.analyses.stabilize import run_request
    from retland.warehouse import Warehouse

    base = request.config
    wh = Warehouse.open(warehouse, create=False)
    require_writable(wh.root)

    def on_select(k, top) -> None:
        console.print(f"--sources {request.sources}: {top.height} checkpoint{'s' if top.height != 1 else ''} with "
                      f"the highest LTP (operator {top['operator'][0]})"
                      + (f" — only {top.height} of the {k} asked for exist" if top.height < k else "") + ":")
        for r in top.iter_rows(named=True):
            console.print(f"  {r['run_id']}:{r['step']} ({r['env']}) LTP {r['ltp']:.3f}, mean {r['mean']:,.1f}, "
                          f"N={r['n']}")

    def on_plan(plan, picked) -> None:
        for c, d in zip(plan.configs, plan.done):
            if d is not None:
                console.print(f"  skip {c.run_id}@{c.step}: done as experiment {d} (--redo runs it again)")
        console.print(f"stabilize {len(plan.todo)} of {len(picked)} source{'s' if len(picked) != 1 else ''}: "
                      f"{len(base.seeds)} seeds x {len(base.arms)} arms = {len(base.lanes)} lanes vmapped per "
                      f"source, {base.proposals} proposals x {base.samples} samples, criterion {base.criterion} "
                      f"(α={base.alpha}, tolerance={base.tolerance})")

    done = run_request(wh, request, progress=partial(progress_bar, enabled=progress), on_select=on_select,
                       on_plan=on_plan, on_result=_print_result)
    if {"reject", "baseline"} <= set(base.arms):
        _print_fig7(wh, base, done.picked)


def _print_result(result) -> None:
    """One source's outcome: acceptances and the held policies' mean and own-mode LTP per arm."""
    scfg = result.config
    P = scfg.proposals
    last = {(r["arm"], r["seed"]): r for r in result.rows if r["proposal"] == P}
    cur = lambda r, k: r[k] if r["accepted"] else r[f"last_{k}"]  # noqa: E731
    parts = []
    for arm in scfg.arms:
        acc = sum(1 for r in result.rows if r["arm"] == arm and r["proposal"] > 0 and r["accepted"])
        held = [last[(arm, s)] for s in scfg.seeds]
        ltps = [cur(r, "ltp") for r in held if cur(r, "ltp") is not None]
        parts.append(f"{arm} accepted {acc}/{P * len(scfg.seeds)}, mean {sum(cur(r, 'mean') for r in held) / len(held):,.1f}"
                     + (f", LTP {sum(ltps) / len(ltps):.3f}" if ltps else ""))
    console.print(f"  {scfg.run_id}@{scfg.step}: experiment [bold]{result.experiment_id}[/] "
                  f"({result.wall_seconds:,.0f} s): " + "; ".join(parts))


def _print_fig7(wh, base: StabilizeConfig, picked: list[tuple[str, int]]) -> None:
    """The Fig. 7 rows of this command's sources at its settings (with their earlier
    experiments of the same settings, if any)."""
    import polars as pl

    from retland.analyses.stabilize import fig7_table, sources_at

    df = sources_at(wh, base)
    keys = pl.DataFrame({"run_id": [r for r, _ in picked], "step": [s for _, s in picked]},
                        schema={"run_id": pl.String, "step": df.schema["step"]})
    table = fig7_table(df.join(keys, on=["run_id", "step"], how="semi"))
    if not table.height:
        return
    console.print("Fig. 7: reject − baseline after the last proposal, IQM over source policies "
                  "(each the mean over its rejection seeds), 95% stratified bootstrap CI:")
    for r in table.iter_rows(named=True):
        console.print(f"  {r['env']:12s} {r['sources']} sources: LTP {_ci(r, 'ltp', '+.3f')} "
                      f"(reject {_f(r['ltp_reject'], '.3f')}, baseline {_f(r['ltp_baseline'], '.3f')}); "
                      f"mean return {_ci(r, 'mean', '+,.1f')} (reject {_f(r['mean_reject'], ',.1f')}, "
                      f"baseline {_f(r['mean_baseline'], ',.1f')}); retland's LTP vs the source's mode "
                      f"{_ci(r, 'retland_ltp_source', '+.3f')}")
    console.print("  (`retland stabilize-effect` prints this table for every source in the warehouse)")


def _f(x, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def _ci(r: dict, name: str, fmt: str) -> str:
    if r[f"{name}_change"] is None:
        return "undefined"
    return f"{format(r[f'{name}_change'], fmt)} [{format(r[f'{name}_lo'], fmt)}, {format(r[f'{name}_hi'], fmt)}]"


@app.command("stabilize-effect")
def stabilize_effect(
    where: Annotated[Optional[str], typer.Option(
        help="SQL condition on the view stabilize_sources (env, run_id, step, criterion, alpha, beta, tolerance, "
             "proposals, n_samples, …), e.g. \"env = 'hopper' AND proposals = 40\".", show_default=False)] = None,
    per_source: Annotated[bool, typer.Option(
        "--per-source", help="One row per source policy instead (A.10: LTP before and after, per arm).")] = False,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the CIs.")] = 1000,
    seed: Annotated[int, typer.Option("--bootstrap-seed", help="Bootstrap seed.")] = 0,
    old_seed: Annotated[Optional[int], typer.Option("--seed", hidden=True)] = None,
    fmt: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """The paper's Fig. 7 from Algorithm 1's experiments: per env and setting, the change
    reject − baseline of the held policy after the last proposal, IQM over source
    policies (each source: the mean over its rejection seeds of the paired difference)
    with a 95% stratified bootstrap CI (sources resampled within each env; an 'all' row
    pools envs, strata = envs). ltp_*: each PURD's LTP against its own mode (the
    paper's); mean_*: mean post-update return, to check "at similar return";
    retland_ltp_source_*: LTP against the source checkpoint's mode, retland's extra, not
    the paper's. --per-source prints the view stabilize_sources (A.10)."""
    from retland.analyses.stabilize import fig7_table, source_rows
    from retland.warehouse import Warehouse

    if not 1 <= bootstrap <= 1_000_000:
        raise CliError(f"--bootstrap {bootstrap}: give a whole number in [1, 1000000]")
    wh = Warehouse.open(warehouse, create=False)
    df = source_rows(wh, where)
    if per_source:
        emit(df, fmt, output, title="Algorithm 1 per source policy (A.10): after the last proposal, mean over "
                                    "rejection seeds")
        return
    seed = renamed(seed, old_seed, 0, "--bootstrap-seed", "--seed")
    table = fig7_table(df, n_resamples=bootstrap, seed=seed)
    if fmt is OutputFormat.table and output is None:
        table = table.drop("beta", "retland_ltp_source_sources")
    emit(table, fmt, output, title="Fig. 7: reject − baseline, IQM over source policies, 95% stratified "
                                   "bootstrap CI (ltp = own-mode LTP; retland_ltp_source = retland's LTP vs the "
                                   "source's mode)")
