"""`retland clone`: the whole behaviour-cloning experiment of the paper's Appendix A.7 (a
BC run per teacher, the clones and teachers sampled); `retland clones`: behaviour clones
beside their TD3 teachers (Fig. 22), from the view bc_pairs (retland.analyses.clones)."""
from __future__ import annotations

from pathlib import Path
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
    console,
    count_or_keyword,
    emit,
    int_list,
    require_writable,
)
from retland.cli.progress import progress_bar


def parse_agent(items: list[str]) -> dict:
    """--agent KEY=VALUE items -> {KEY: VALUE}; VALUE is read as JSON (numbers, lists such
    as [64,64], true/false), else kept as text."""
    import json

    out: dict = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or not text.strip():
            raise CliError(f"--agent {item!r}: expected KEY=VALUE, e.g. hidden=[64,64] or batch_size=128")
        if key in out:
            raise CliError(f"--agent {key}: given twice")
        try:
            out[key] = json.loads(text)
        except ValueError:
            out[key] = text.strip()
    return out


@app.command()
def clone(
    teacher: Annotated[list[str], typer.Option(
        "--teacher", help="A TD3 checkpoint to clone, RUN@STEP (RUN a run id or a unique prefix of one); repeat for "
                          "several teachers.", show_default=False)],
    total_steps: Annotated[int, typer.Option(help="Gradient steps per BC run (the paper's 1M).")] = 1_000_000,
    checkpoints: Annotated[Optional[str], typer.Option(
        help="Gradient steps to checkpoint each BC run at, e.g. 100000,200000 (default: ten evenly spaced, the "
             "last at --total-steps).", show_default=False)] = None,
    eval_every: Annotated[Optional[int], typer.Option(
        help="Gradient steps between evaluations of the clone (default: at its checkpoints).",
        show_default=False)] = None,
    seeds: Annotated[int, typer.Option(help="Clones per teacher (BC runs trained together, vmapped).")] = 1,
    seed: Annotated[int, typer.Option(help="Training seed of the first clone (the next ones: seed+1, ...).")] = 0,
    agent: Annotated[Optional[list[str]], typer.Option(
        "--agent", help="A behaviour-cloning setting over the defaults (TD3's actor network, minibatch and Adam), "
                        "KEY=VALUE: hidden=[64,64], batch_size=128, learning_rate=1e-4; repeatable.",
        show_default=False)] = None,
    samples: Annotated[int, typer.Option(help="Post-update samples per distribution (clone and teacher).")] = 1000,
    horizon: Annotated[Optional[int], typer.Option(
        help="Rollout length in env steps (default: the teacher's task horizon).", show_default=False)] = None,
    key_seed: Annotated[int, typer.Option(help="Sampling key seed (as retland sample --key-seed).")] = 0,
    clone_steps: Annotated[str, typer.Option(
        "--clone", help="Which checkpoints of each BC run to sample: last (its last, the one `retland clones` "
                        "compares by default) or all.")] = "last",
    sample_teachers: Annotated[bool, typer.Option(
        "--sample-teachers/--no-sample-teachers",
        help="Also sample each teacher under the td3 operator where its distribution is missing.")] = True,
    batch_size: Annotated[str, typer.Option(help="Rollouts computed together per chunk, or auto.")] = "auto",
    progress: Annotated[bool, typer.Option(
        "--progress/--no-progress",
        help="Show progress: a live bar on a terminal, one plain line at most every 10 s when piped.")] = True,
    warehouse: WarehouseOpt = None,
) -> None:
    """The behaviour-cloning experiment of the paper's Appendix A.7, from its teachers.

    For each teacher (a TD3 checkpoint RUN@STEP): a BC run trained on the teacher's
    logged data (its replay rows up to STEP) relabelled with the teacher's actions, as
    `retland train --algo bc --teacher RUN@STEP` does; then the clone's checkpoint(s)
    sampled under the bc operator (one more Adam step of the cloning loss) and the
    teacher under td3, --samples each at the same horizon and key seed. Resumable: a BC
    job with the same settings is reused (or resumed where it stopped) and only missing
    samples are computed, so rerunning a killed command continues it. Every teacher is
    checked before anything is written. Compare teachers and clones with `retland
    clones` (Fig. 22)."""
    from pydantic import ValidationError

    from retland.analyses.clones import CLONES, CloneError, CloneRequest
    from retland.cli.app import check_seed

    if clone_steps not in CLONES:
        raise CliError(f"--clone {clone_steps!r}: choose last (each BC run's last checkpoint) or all")
    check_seed(seed, "--seed")
    check_seed(key_seed, "--key-seed")
    fields = dict(teachers=tuple(teacher), total_steps=total_steps,
                  checkpoints=tuple(sorted(set(int_list(checkpoints, "--checkpoints")))) if checkpoints else None,
                  eval_every=eval_every, seeds=seeds, seed=seed, agent=parse_agent(agent or []), samples=samples,
                  horizon=horizon, key_seed=key_seed, clone_steps=clone_steps, sample_teachers=sample_teachers,
                  batch_size=count_or_keyword(batch_size, "--batch-size", "auto"))
    try:
        request = CloneRequest(**fields).check()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = {"teachers": "teacher", "clone_steps": "clone"}.get(str(first["loc"][0]), str(first["loc"][0]))
        value = fields.get(str(first["loc"][0]))
        raise CliError(f"--{name.replace('_', '-')} {value}: {first['msg'].removeprefix('Value error, ')}") from None
    except CloneError as exc:
        raise CliError(str(exc)) from None
    execute_clone(request, warehouse, progress)


def execute_clone(request, warehouse: Path | None, progress: bool = True) -> None:
    """Run a checked CloneRequest (`retland.analyses.clones.run`) and print what `retland
    clone` prints: each teacher's clone runs, the jobs trained now and the rows written;
    `retland study` calls this for its clones stage."""
    from functools import partial

    from retland.analyses.clones import CloneError, run
    from retland.warehouse import Warehouse

    wh = Warehouse.open(warehouse, create=False)
    require_writable(wh.root)
    n = len(request.teachers)
    console.print(f"cloning {n} teacher{'s' if n != 1 else ''}: {request.seeds} BC run{'s' if request.seeds != 1 else ''}"
                  f" x {request.total_steps:,} gradient steps each, then {request.samples} samples of "
                  f"{'the last clone' if request.clone_steps == 'last' else 'every clone checkpoint'}"
                  f"{' and of the teacher' if request.sample_teachers else ''}", highlight=False)
    try:
        outcome = run(wh, request, progress=partial(progress_bar, enabled=progress))
    except CloneError as exc:
        raise CliError(str(exc)) from None
    for name, ids in outcome.clones.items():
        console.print(f"  {escape(name)} -> {escape(', '.join(ids))}", highlight=False)
    trained = ", ".join(outcome.trained) if outcome.trained else "none (every clone was already trained)"
    console.print(f"BC jobs trained now: {escape(trained)}; {outcome.rows_written:,} sample rows written. "
                  "Compare them: retland clones", highlight=False, soft_wrap=True)


@app.command()
def clones(
    clone: Annotated[str, typer.Option(
        help="Which clone of each BC run is compared with its teacher: last (its last checkpoint, the default) "
             "or all (every sampled clone checkpoint, one pair each).")] = "last",
    where: Annotated[Optional[str], typer.Option(
        help="SQL condition on the view bc_pairs (env, teacher_run_id, teacher_step, clone_run_id, clone_step, "
             "operator, clone_ltp, teacher_ltp, …), e.g. \"teacher_step >= 50000\".", show_default=False)] = None,
    pairs: Annotated[bool, typer.Option(
        "--show-pairs", help="Print the pairs themselves (teacher and clone statistics side by side) instead.")] = False,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the CIs (0: none).")] = 2000,
    seed: Annotated[int, typer.Option("--bootstrap-seed", help="Bootstrap seed.")] = 0,
    fmt: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Fig. 22: do behaviour clones inherit their teacher's post-update returns? Per env,
    Pearson's r between teacher (td3 operator) and clone (bc operator) of the
    distributions' means and of their LTPs, with 95% bootstrap CIs over pairs; and the
    mean LTP of the BC policies and of the TD3 teachers with 95% stratified bootstrap
    CIs (env 'all': strata = envs). Pairs come from `retland train --algo bc --teacher
    RUN@STEP` runs sampled with --operator bc, and their teachers sampled with
    --operator td3 at the same --horizon and key seed."""
    from retland.analyses.clones import CLONES, CloneError, compare_clones, read_pairs
    from retland.warehouse import Warehouse

    if clone not in CLONES:
        raise CliError(f"--clone {clone!r}: choose last (each BC run's last checkpoint) or all")
    if not 0 <= bootstrap <= 1_000_000:
        raise CliError(f"--bootstrap {bootstrap}: give a whole number in [0, 1000000]")
    wh = Warehouse.open(warehouse, create=False)
    rows = read_pairs(wh, clone, where)
    if pairs:
        emit(rows, fmt, output, title=f"teachers and their clones ({'last clone' if clone == 'last' else 'every clone'})")
        return
    try:
        result = compare_clones(rows, reps=bootstrap, seed=seed, clone=clone)
    except CloneError as exc:
        raise CliError(str(exc)) from None
    if fmt is OutputFormat.table and output is None:
        emit(result.correlations, fmt, None, title="Pearson r between teacher and clone, per env (95% bootstrap CI "
                                                   "over pairs)")
        emit(result.ltp, fmt, None, title="mean LTP of BC and TD3 policies (95% stratified bootstrap CI)")
        console.print(f"clone = {clone}; {bootstrap} resamples, seed {seed}")
        return
    import polars as pl

    both = pl.concat([result.correlations.with_columns(table=pl.lit("correlation")),
                      result.ltp.with_columns(table=pl.lit("mean_ltp"))], how="diagonal")
    emit(both, fmt, output, title="Fig. 22")
