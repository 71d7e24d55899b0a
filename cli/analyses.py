"""`retland landscape | failures | interpolate`: the paper's geometric analyses.

Each command validates everything it was given before it computes or writes anything,
appends rows through the warehouse's one write path, and skips work already stored.
"""
from __future__ import annotations

from contextlib import contextmanager
from enum import Enum
from typing import Annotated, Optional

import typer

from retland.cli.app import CliError, OutputFormat, WarehouseOpt, app, console, emit, err_console


@contextmanager
def _bar(total: int, what: str, show: bool = True):
    """A rich progress bar; yields advance(n)."""
    if not show or total <= 0:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=err_console, transient=False) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)


def _user_errors(*types):
    """Map library request errors to CliError (printed, exit 2, nothing written)."""

    @contextmanager
    def guard():
        try:
            yield
        except types as exc:
            raise CliError(str(exc)) from None

    return guard()


# ------------------------------------------------------------------------ interpolate

class PairKind(str, Enum):
    same_run = "same-run"
    different_run = "different-run"
    both = "both"


@app.command()
def interpolate(
    env: Annotated[Optional[str], typer.Option(help="Env whose checkpoints to pair (with --pairs).")] = None,
    algo: Annotated[str, typer.Option(help="Algorithm of the runs to pair.")] = "td3",
    pairs: Annotated[Optional[PairKind], typer.Option(
        help="same-run: consecutive checkpoints of each run; different-run: seed s vs s+1 of a job at "
             "the same step; both.")] = None,
    max_pairs: Annotated[Optional[int], typer.Option(help="At most this many pairs of each kind.")] = None,
    a: Annotated[Optional[str], typer.Option("--a", help="Explicit pair: endpoint λ=0 as RUN_ID:STEP.")] = None,
    b: Annotated[Optional[str], typer.Option("--b", help="Explicit pair: endpoint λ=1 as RUN_ID:STEP.")] = None,
    points: Annotated[int, typer.Option(help="λ = linspace(0, 1, POINTS), endpoints included.")] = 100,
    samples: Annotated[int, typer.Option(help="K gaussian samples per point, the same K draws at every λ.")] = 100,
    sigma: Annotated[float, typer.Option(help="σ of the gaussian samples (0: K copies of θ(λ)).")] = 3e-4,
    seed: Annotated[int, typer.Option(help="Noise seed: sample k uses fold_in(PRNGKey(seed), k).")] = 0,
    horizon: Annotated[Optional[int], typer.Option(help="Rollout steps (default: the runs' training horizon).")] = None,
    batch_size: Annotated[str, typer.Option(help="Rollouts per chunk, or auto (recorded per pair, reused).")] = "auto",
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the BTP CIs.")] = 1000,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="How to print the BTP summary.")] = OutputFormat.table,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    warehouse: WarehouseOpt = None,
) -> None:
    """Evaluate θ(λ) = (1−λ)·θa + λ·θb between pairs of checkpoints (actor parameters
    only) and print each pair's below-threshold proportion (BTP: share of points whose
    mean return < 0.1 × the lower endpoint's) and the IQM of BTP by pair kind with
    stratified bootstrap 95% CIs. Pairs come from --env/--pairs, or one explicit pair
    from --a/--b. Stored in interpolation_pairs / interpolation_points; a pair already
    complete is not recomputed. METHOD.md "Interpolation"."""
    from retland import interpolation as ip
    from retland.warehouse import Warehouse

    if (a is None) != (b is None):
        raise CliError("an explicit pair needs both --a RUN:STEP and --b RUN:STEP")
    if a is not None and pairs is not None:
        raise CliError("give either --a/--b or --pairs, not both")
    if a is None and (pairs is None or env is None):
        raise CliError("say which pairs: --env ENV --pairs same-run|different-run|both, or --a RUN:STEP --b RUN:STEP")
    if batch_size != "auto" and not batch_size.isdigit():
        raise CliError(f"--batch-size {batch_size!r}: a positive integer or auto")
    wh = Warehouse.open(warehouse, create=False)
    settings = ip.Settings(points, samples, sigma, seed, horizon)
    with _user_errors(ip.InterpolationError):
        chosen = [ip.explicit_pair(a, b)] if a is not None else ip.select_pairs(wh, env, algo, pairs.value, max_pairs)
        plans = ip.plan_pairs(wh, chosen, settings, batch_size)
    todo = sum(settings.points * settings.samples - len(p.present) for p in plans if not (
        p.exists and len(p.present) >= settings.points * settings.samples))
    err_console.print(f"{len(plans)} pair(s), {todo} rollouts to compute", highlight=False)
    with _bar(todo, "interpolate", progress) as advance:
        for plan in plans:
            res = ip.run_pair(wh, plan, settings, progress=advance)
            if res.rows_written:
                err_console.print(f"{plan.pair.kind} {plan.pair.label}: {res.rows_written} rows in "
                                  f"{res.seconds:.1f} s", highlight=False, soft_wrap=True)
    ids = [p.pair_id for p in plans]
    btp = wh.query(f"SELECT * FROM interpolation_btp WHERE pair_id IN ({', '.join('?' for _ in ids)}) "
                   "ORDER BY kind, run_a, step_a, run_b", ids)
    emit(btp.select("kind", "run_a", "step_a", "run_b", "step_b", "value_a", "value_b", "btp", "complete"),
         fmt, None, "below-threshold proportion per pair")
    complete = btp.filter(btp["complete"])
    if complete.height:
        emit(ip.btp_summary(complete, n_resamples=bootstrap, seed=seed), fmt, None,
             "BTP: IQM over pairs, stratified bootstrap 95% CI (strata = envs)")
