"""`retland study FILE`: run a whole study (train/add policies, sample, analyses, report) by
calling, for each request a stage holds, the function its command calls after parsing."""
from __future__ import annotations

import shlex
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from retland.cli.app import CliError, WarehouseOpt, app, console, err_console, require_writable
from retland.cli.sample import (
    CpusOpt,
    ExecutorOpt,
    GpusOpt,
    JobsOpt,
    MemOpt,
    PartitionOpt,
    SlurmFolderOpt,
    cluster_resources,
)

_MARK = {"done": "[green]done[/]", "nothing": "[yellow]nothing to do[/]", "todo": "[cyan]to do[/]",
         "waiting": "[dim]waits[/]"}

# request class -> (command module, its function that runs a parsed request and displays)
EXECUTE = {
    "TrainRequest": ("train", "execute"),
    "ExampleRequest": ("examples", "execute"),
    "SampleRequest": ("sample", "execute"),
    "FailuresRequest": ("analyses", "execute_failures"),
    "LandscapeRequest": ("analyses", "execute_landscape"),
    "InterpolationRequest": ("analyses", "execute_interpolate"),
    "StabilizeRequest": ("stabilize", "execute"),
    "StartStatesRequest": ("start_states", "execute"),
    "CloneRequest": ("clones", "execute_clone"),
    "StatsRequest": ("warehouse_cmds", "execute_stats"),
    "ReportRequest": ("report", "execute"),
}


def execute(request, root: Path, progress: bool) -> None:
    """Run one of a stage's requests in this process: the library runner its command calls
    once it has parsed its options, with the command's display; its errors propagate and
    stop the study."""
    from importlib import import_module

    module, name = EXECUTE[type(request).__name__]
    getattr(import_module(f"retland.cli.{module}"), name)(request, root, progress)


def shell_join(args) -> str:
    """A command line a person can paste into a POSIX shell, quoted readably: an argument
    holding single quotes (SQL in --where) goes in double quotes when nothing in it is
    special there, instead of shlex's '"'"' splicing."""
    out = []
    for a in map(str, args):
        quoted = shlex.quote(a)
        if quoted != a and "'" in a and not any(ch in a for ch in '"$`\\!'):
            quoted = f'"{a}"'
        out.append(quoted)
    return " ".join(out)


def _submit_stage(st, wh, file, executor: str, jobs: int, resources, folder) -> bool:
    """The sample stage's requests as ONE array of `jobs` shard tasks (task i samples
    shard i of every request's job; `retland.cluster.submit`). slurm: submit, say how to
    go on, and return True (the study stops); local: run the tasks, wait, return False."""
    from retland.cli.sample import _submit, say
    from retland.cluster import submit, wait
    from retland.purd.job import plan as plan_job
    from retland.purd.job import resolve
    from retland.purd.sampling import SamplingError
    from retland.warehouse.runs import RunSelectionError

    try:
        resolved = tuple(resolve(wh, r) for r in st.requests)
        plans = [p for job in resolved for p in plan_job(wh, job)]
    except (SamplingError, RunSelectionError) as exc:
        raise CliError(str(exc)) from None
    ids = list(dict.fromkeys(o for job in resolved for o in job.operator_ids))
    for request in st.requests:
        console.print(f"[cyan]$ retland {escape(shell_join(request.argv()))}[/] [dim](as shards of one array)[/]",
                      highlight=False, soft_wrap=True)
    again = shell_join(["retland", "study", str(file), "-w", str(wh.root)])
    _submit(wh, resolved, plans, executor, jobs, resources, folder, ids, say, submit, wait,
            rerun=f"a task that failed can simply be run again: {again} --shard i/{jobs} (it computes only what "
                  "is missing)")
    if executor == "slurm":
        console.print(escape(f"the study goes on once the array has finished: {again}"), highlight=False,
                      soft_wrap=True)
        return True
    return False


def _print_plan(study, rows, root: Path, estimates, device: str) -> None:
    from rich.text import Text

    from retland.analyses.estimates import fmt_seconds
    from retland.cli.tables import Column, print_table
    from retland.study import fmt_env_steps

    console.print(f"study [bold]{escape(study.name)}[/]" + (f": {escape(study.description)}" if study.description
                                                            else ""), highlight=False)
    console.print(f"warehouse {root}", highlight=False)
    columns = [Column("#", "right"), Column("stage"), Column("status"), Column("env steps left", "right"),
               Column("time left", "right"), Column("what")]
    print_table(console, columns, [[str(i), st.name, Text.from_markup(_MARK[st.status]),
                                    fmt_env_steps(st.env_steps),
                                    "-" if est is None else "?" if est.seconds is None else
                                    fmt_seconds(est.seconds) + ("*" if est.calibrated else ""),
                                    st.detail]
                                   for i, (st, est) in enumerate(zip(rows, estimates), 1)])
    total = sum(st.env_steps for st in rows)
    console.print(f"env steps left (estimate, rollouts and training; stages that wait are estimated from the file): "
                  f"{fmt_env_steps(total)}", highlight=False)
    known = [e for e in estimates if e is not None and e.seconds is not None]
    unknown = list(dict.fromkeys(e.basis for e in estimates if e is not None and e.seconds is None))
    if known or unknown:
        line = (f"time left on {device}: {fmt_seconds(sum(e.seconds for e in known))}"
                f"{' and more' if unknown else ''}, scaled from what this warehouse measured "
                f"({'; '.join(dict.fromkeys(e.basis for e in known))})" if known else
                f"time left on {device}: not estimated")
        if unknown:
            line += (f"; ? = {'; '.join(unknown)} (measured as the study runs, or now by a short run: "
                     "--plan --calibrate)")
        console.print(line, highlight=False, soft_wrap=True)
        if any(e.calibrated for e in known):
            console.print("* scaled (in part) from a calibration run on this device (--calibrate): a short "
                          "measurement of the same programs, rougher than a job's own timing, which replaces it "
                          "once the study has run", highlight=False, soft_wrap=True)
    cmds = [c for st in rows for c in st.commands]
    if cmds:
        console.print("commands the next run starts with (later stages are decided as earlier ones finish; the "
                      "study calls the library functions these commands call):")
        for c in cmds:
            console.print("  retland " + escape(shell_join(c)), highlight=False, soft_wrap=True)


def _calibrate(spec, base, rows, wh, device: str, progress: bool) -> None:
    """--calibrate: time what the `?` stages lack (retland.study.estimate.calibrate), with
    a bar per measurement and a line per result."""
    from functools import partial

    from retland.cli.progress import progress_bar
    from retland.study.estimate import calibrate

    from retland.study import StudyError

    console.print(f"calibrating on {device}: the programs of the stages nothing was measured for", highlight=False)
    try:
        done = calibrate(spec, base, rows, wh, device, progress=partial(progress_bar, enabled=progress),
                         say=lambda text: console.print(escape(text), highlight=False, soft_wrap=True))
    except (StudyError, ValueError) as exc:  # a program that cannot be built here (e.g. does not fit the device)
        raise CliError(f"--calibrate: {str(exc).splitlines()[0]}") from None
    if not done:
        console.print("nothing to calibrate: every stage with work left has measured rates here", highlight=False)


@app.command()
def study(
    file: Annotated[str, typer.Argument(help="Study TOML file, or a preset: demo, cpu-small, paper.",
                                        show_default=False)],
    plan: Annotated[bool, typer.Option("--plan", help="Print what would run, what is done and the env steps "
                                                      "and time left per stage; change nothing.")] = False,
    calibrate: Annotated[bool, typer.Option("--calibrate", help="With --plan: where a stage's time left is ? "
                                            "(nothing measured on this device), first time a short run of its "
                                            "programs here (a few training stretches, a few sampling chunks, "
                                            "seconds to a minute each on CPU) and keep the timings in the "
                                            "warehouse; the estimates they give are marked *.")] = False,
    until: Annotated[str | None, typer.Option(
        help="Stop after the stages of this kind: train, example, sample, failures, landscape, interpolation, "
             "stabilize, start_states, clones or report (e.g. train on one machine, then sample in shards).", show_default=False)] = None,
    shard: Annotated[str | None, typer.Option(
        help="i/N: run this shard's part of the sample stage only (the policies must exist); "
             "stops after sampling. Run the study without --shard once every shard is done.",
        show_default=False)] = None,
    progress: Annotated[bool, typer.Option(help="Progress bars of the stages' work.")] = True,
    executor: ExecutorOpt = "none",
    jobs: JobsOpt = None,
    partition: PartitionOpt = None,
    gpus_per_job: GpusOpt = None,
    cpus_per_job: CpusOpt = None,
    time_limit: Annotated[Optional[str], typer.Option(
        "--time", help="Wall-time limit per task of --executor slurm: minutes, H:MM:SS or D-HH:MM:SS (default: the "
        "partition's default time, else its limit).", rich_help_panel="Clusters")] = None,
    mem: MemOpt = None,
    slurm_folder: SlurmFolderOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Run a study: the paper's pipeline from one file.

    Stages, in order: train the \\[\\[train]] jobs and add the examples, sample their
    post-update return distributions (\\[sample]), run the analyses the file names
    (\\[failures], \\[landscape], \\[interpolation], \\[stabilize], \\[start_states],
    \\[clones], each with its command's options) and write the \\[report]. Copy a preset from the studies/ folder
    of retland's source to start a file. Each stage builds the requests its commands
    would (printed as `$ retland ...` lines) and calls the same library functions the
    commands call, with their output; a stage whose results the warehouse already
    holds is skipped, so rerunning after a kill, or from another machine on the
    same warehouse, continues where it stopped. Analyses pick checkpoints after
    sampling (top-ltp:K: the highest left-tail probabilities; \\[failures] also
    random:K, seeded, as the paper's §3.2). \\[sample] own = { ppo = "..." } says which
    update "own" means per algorithm. The file is checked
    before anything runs; `--plan` shows the stages without running them, with the
    env steps and wall time left on this device (scaled from what the warehouse has
    measured; `?` where nothing was). `--plan --calibrate` first times a short run of
    each program a `?` stands for and keeps the timings, so those stages are estimated
    too (marked *).

    With --executor slurm --jobs N the sample stage is submitted as ONE array of N
    tasks (task i samples shard i of every distribution of the stage) and the study
    stops there: run it again once the array has finished. --executor local runs the
    same tasks as local processes, waits for them and goes on.
    """
    from retland.purd.sampling import parse_shard
    from retland.study import KINDS, StudyError, load_study, stages
    from retland.study.run import sharded
    from retland.warehouse import Warehouse, WarehouseError, resolve_root

    if until is not None and until not in KINDS:
        raise CliError(f"--until {until!r}: choose one of {', '.join(KINDS)}")
    resources = cluster_resources(executor, jobs, partition, gpus_per_job, cpus_per_job, time_limit, mem,
                                  slurm_folder, shard)
    if calibrate and not plan:
        raise CliError("--calibrate times the stages' programs for --plan's estimates: give --plan too")
    if resources is not None and plan:
        raise CliError(f"--executor {executor} submits the sample stage; --plan changes nothing: leave one out")
    if shard is not None:
        try:
            parse_shard(shard)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        if until not in (None, "sample"):
            raise CliError("--shard runs the sample stage only; drop --until or give --until sample")
        until = "sample"

    try:
        spec, base = load_study(file)
    except StudyError as exc:
        lines = str(exc).splitlines()
        for line in lines[:-1]:
            err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
        raise CliError(lines[-1]) from None
    root = resolve_root(warehouse)
    if plan:
        from retland.analyses.estimates import current_device
        from retland.study.estimate import stage_estimates

        device = current_device()
        if calibrate:  # the timings are kept: history for every later plan
            require_writable(root)
            wh = Warehouse.open(root)
            _calibrate(spec, base, [fn(wh) for _, fn in stages(spec, base)], wh, device, progress)
        try:
            wh = Warehouse.open(root, create=False)
        except WarehouseError:
            wh = None
        if wh is None:  # nothing stored yet: plan against an empty warehouse in a temporary folder
            import tempfile

            with tempfile.TemporaryDirectory(prefix="retland-plan-") as tmp:
                empty = Warehouse.open(Path(tmp) / "wh")
                rows = [fn(empty) for _, fn in stages(spec, base)]
                estimates = stage_estimates(spec, rows, empty, device)
        else:
            rows = [fn(wh) for _, fn in stages(spec, base)]
            estimates = stage_estimates(spec, rows, wh, device)
        _print_plan(spec, rows, root, estimates, device)
        return
    steps = stages(spec, base)
    if until is not None:
        kinds = [name.split()[0] for name, _ in steps]
        if until not in kinds:
            raise CliError(f"--until {until}: the study has no {until} stage (its stages: "
                           f"{', '.join(dict.fromkeys(kinds))})")
        steps = steps[:len(kinds) - kinds[::-1].index(until)]
    if shard is not None and not (root / "tables").is_dir():
        raise CliError(f"--shard: no warehouse at {root} yet; run `retland study {file} --until train` "
                       "(and example) once, then the shards")
    require_writable(root)
    wh = Warehouse.open(root)
    from retland.analyses.estimates import current_device, fmt_seconds
    from retland.study.estimate import stage_estimate

    device = current_device()
    t_start = time.perf_counter()
    console.print(f"study [bold]{escape(spec.name)}[/] on {root}: {len(steps)} stages", highlight=False)
    for i, (name, fn) in enumerate(steps, 1):
        st = fn(wh)
        head = f"[bold][{i}/{len(steps)}] {escape(st.name)}[/]"
        if shard is not None and name != "sample":
            if not st.done:  # shards share one warehouse: only sampling is split
                raise CliError(f"--shard: stage {st.name} is not done ({st.detail}); run "
                               f"`retland study {file} --until {name.split()[0]}` once first")
        elif shard is not None:
            st = sharded(st, shard)
        if st.done:
            console.print(f"{head}: {_MARK[st.status]}, skipped ({escape(st.detail)})", highlight=False)
            continue
        if st.status == "waiting":  # an earlier stage did not produce what this one needs
            raise CliError(f"stage {st.name}: {st.detail}; the stages before it did not finish")
        console.print(f"{head}: {escape(st.detail)}", highlight=False)
        if resources is not None and st.kind == "sample":
            if _submit_stage(st, wh, file, executor, jobs, resources, slurm_folder):
                return  # slurm: the array samples; the study goes on when it is run again
            continue
        est = stage_estimate(spec, i - 1, st, wh, device)  # with what the stages before measured
        t0 = time.perf_counter()
        for request in st.requests:
            console.print(f"[cyan]$ retland {escape(shell_join(request.argv()))}[/]", highlight=False,
                          soft_wrap=True)
            execute(request, root, progress)
        took = time.perf_counter() - t0
        guess = "" if est is None or est.seconds is None else (
            f"; estimated {fmt_seconds(est.seconds)}{' from a calibration' if est.calibrated else ''}")
        console.print(f"[dim]({name}: {took:.0f} s{guess})[/]", highlight=False)
    report = spec.report_path() if spec.report is not None and until in (None, "report") else None
    tail = f"; report {report.resolve()}" if report is not None else ""
    if shard is not None:
        tail += f"; shard {shard} of the samples done (other shards may still be running)"
    elif until is not None and until != "report":
        tail += f"; stopped after {until} (--until)"
    console.print(f"study {escape(spec.name)} finished in {time.perf_counter() - t_start:.0f} s{tail}",
                  highlight=False, soft_wrap=True)
