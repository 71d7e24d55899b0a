"""`retland start-states`: post-update LTP from states collected in the replay buffer
against s0 (the paper's Appendix A.4, Fig. 10)."""
from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.markup import escape

from retland.cli.app import (
    CliError,
    FormatOpt,
    OutputFormat,
    OutputOpt,
    WarehouseOpt,
    app,
    count_or_keyword,
    emit,
    err_console,
    int_list,
    require_writable,
)
from retland.cli.progress import progress_bar
from retland.cli.selection import parse_sources, source_option
from retland.config.settings import SampleSettings, default_of, help_of


@app.command("start-states")
def start_states(
    run: Annotated[Optional[list[str]], typer.Option(
        help="Run id or a unique prefix of one (repeatable); all its checkpoints unless --steps.")] = None,
    algo: Annotated[Optional[str], typer.Option(help="Select runs by algorithm (with --env).")] = None,
    env: Annotated[Optional[str], typer.Option(help="Select runs by env (with --algo).")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="Training seeds of the runs, e.g. 0,1,5..9.")] = None,
    source: source_option("that --algo/--env select; default trained") = "trained",
    steps: Annotated[Optional[str], typer.Option(help="Checkpoint env steps, e.g. 50000,150000.")] = None,
    operator: Annotated[Optional[str], typer.Option(
        help="Update operator (as for sample); default: each run's own update (td3 for TD3 runs).",
        show_default=False)] = None,
    rows: Annotated[int, typer.Option(
        help="Replay rows per run (replay:K): one drawn in each of K equal strata of the run's smallest chosen "
             "buffer, seeded by --key-seed, the same rows at every checkpoint.")] = 8,
    start: Annotated[Optional[str], typer.Option(
        help="Instead of --rows: replay:K or rows:R1,R2,... (as for sample --start).", show_default=False)] = None,
    samples: Annotated[int, typer.Option(help="Samples per (checkpoint, row) distribution, and of s0.")] = 200,
    horizon: Annotated[int, typer.Option(help=help_of(SampleSettings, "horizon"))] = default_of(SampleSettings, "horizon"),
    key_seed: Annotated[int, typer.Option(help=help_of(SampleSettings, "key_seed"))] = default_of(SampleSettings, "key_seed"),
    batch_size: Annotated[str, typer.Option(help=help_of(SampleSettings, "batch_size"))] = default_of(SampleSettings, "batch_size"),
    s0: Annotated[bool, typer.Option(
        "--s0/--no-s0", help="Also sample the s0 distributions of the same checkpoints (the reference).")] = True,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the CIs (over checkpoints).")] = 1000,
    bootstrap_seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    progress: Annotated[bool, typer.Option(
        "--progress/--no-progress",
        help="Show progress: a live bar on a terminal, one plain line at most every 10 s when piped.")] = True,
    fmt: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Post-update returns from other start states (the paper's A.4, Fig. 10).

    Samples, for every chosen checkpoint, the operator's distribution with its rollouts
    starting at each of K replay rows (the state the agent observed when it collected
    that row; runs trained with --store-states) and, as the reference, from s0; what the
    warehouse holds is not sampled again. Prints, per run and row, the LTP averaged over
    the checkpoints (the view start_state_ltp: Fig. 10's points) and, over checkpoints
    sampled both ways, the mean LTP from replay rows against s0 with 95% bootstrap CIs.
    """
    from retland.analyses.start_states import StartStatesRequest
    from retland.purd.sampling import SamplingError

    batch = count_or_keyword(batch_size, "--batch-size", "auto")
    seed_list, step_list = int_list(seeds, "--seeds"), int_list(steps, "--steps")
    sources = parse_sources(source)
    if start is not None and rows != 8:
        raise CliError("give --rows K or --start, not both")
    try:
        request = StartStatesRequest(runs=tuple(run or ()), algo=algo, env=env, seeds=seed_list, steps=step_list,
                                     sources=sources, operator=operator, rows=rows, start=start, samples=samples,
                                     horizon=horizon, key_seed=key_seed, batch_size=batch, s0=s0,
                                     bootstrap=bootstrap, bootstrap_seed=bootstrap_seed).check()
    except SamplingError as exc:
        raise CliError(str(exc)) from None
    execute(request, warehouse, progress, fmt, output)


def execute(request, warehouse, progress: bool = True, fmt: OutputFormat = OutputFormat.table, output=None) -> None:
    """Run a checked StartStatesRequest (`retland.analyses.start_states.run_request`) and
    print what `retland start-states` prints; `retland study` calls this for its
    [start_states] stage."""
    from functools import partial

    from retland.analyses.start_states import run_request
    from retland.purd.sampling import SamplingError
    from retland.warehouse import Warehouse
    from retland.warehouse.runs import RunSelectionError

    wh = Warehouse.open(warehouse, create=False)
    require_writable(wh.root)
    try:
        result = run_request(wh, request, progress=partial(progress_bar, enabled=progress))
    except (SamplingError, RunSelectionError) as exc:
        raise CliError(str(exc)) from None
    err_console.print(escape(f"{result.distributions} distribution(s), {result.rows_written} new rows, "
                             f"{result.seconds:.0f} s"), highlight=False)
    emit(result.ltp, fmt, output, title="LTP per replay row, mean over checkpoints (Fig. 10); s0_ltp: the same "
                                        "checkpoints from s0")
    c = result.comparison
    if c and fmt is OutputFormat.table and output is None:
        def ci(name):
            v, (lo, hi) = c[name]
            return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"
        err_console.print(escape(
            f"over {c['checkpoints']} checkpoint(s), {c['rows']} (checkpoint, row) distributions: LTP from replay "
            f"rows {ci('replay_ltp')}, from s0 {ci('s0_ltp')}, difference {ci('difference')} (95% bootstrap CI "
            f"over checkpoints); LTP > 0 at {c['share_rows_ltp_positive']:.0%} of replay-row distributions, "
            f"{c['share_s0_ltp_positive']:.0%} of s0 ones"), highlight=False, soft_wrap=True)
        p = c.get("positive_mode")
        if c.get("rows_mode_nonpositive") and p:
            v, (lo, hi) = p["replay_ltp"]
            d, (dlo, dhi) = p["difference"]
            err_console.print(escape(
                f"{c['rows_mode_nonpositive']} replay-row distribution(s) have mode <= 0 (every update fails at "
                f"once from that state; LTP counts them against a threshold <= 0); without them, over "
                f"{p['checkpoints']} checkpoint(s): LTP from replay rows {v:.3f} [{lo:.3f}, {hi:.3f}], difference "
                f"to s0 {d:.3f} [{dlo:.3f}, {dhi:.3f}]"), highlight=False, soft_wrap=True)
