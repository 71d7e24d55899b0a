"""`retland sample`: fill the warehouse with post-update return distributions."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from retland.cli.app import (
    CliError,
    WarehouseOpt,
    app,
    console,
    count_or_keyword,
    err_console,
    int_list,
    require_writable,
)
from retland.cli.progress import progress_bar
from retland.cli.selection import parse_sources, source_option
from retland.config.settings import SampleSettings, default_of, help_of


# The cluster options, shared with `retland study` (which submits its sample stage).
ExecutorOpt = Annotated[str, typer.Option(
    help="none: sample in this process. slurm: submit ONE SLURM array of --jobs shard tasks (through submitit) "
         "and return; local: run the same tasks as local processes and wait for them.",
    rich_help_panel="Clusters")]
JobsOpt = Annotated[Optional[int], typer.Option(
    help="Number of shard tasks for --executor slurm/local.", rich_help_panel="Clusters")]
PartitionOpt = Annotated[Optional[str], typer.Option(help="SLURM partition.", rich_help_panel="Clusters")]
GpusOpt = Annotated[Optional[int], typer.Option(help="GPUs per task.", rich_help_panel="Clusters")]
CpusOpt = Annotated[Optional[int], typer.Option(help="CPUs per task.", rich_help_panel="Clusters")]
TimeOpt = Annotated[Optional[str], typer.Option(
    help="Wall-time limit per task: minutes, H:MM:SS or D-HH:MM:SS (default: the partition's default time, "
         "else its limit). A task that reaches it is requeued and continues where it stopped.",
    rich_help_panel="Clusters")]
MemOpt = Annotated[Optional[str], typer.Option(help="Memory per task, e.g. 32G.", rich_help_panel="Clusters")]
SlurmFolderOpt = Annotated[Optional[Path], typer.Option(
    help="Folder for the tasks' files and logs, on a filesystem every node mounts (default: WAREHOUSE/jobs).",
    rich_help_panel="Clusters", show_default=False)]


def cluster_resources(executor: str, jobs, partition, gpus_per_job, cpus_per_job, time, mem, slurm_folder,
                      shard: str | None = None):
    """Check the cluster options before anything is read or written (one line, exit 2):
    the Resources of an --executor slurm/local submission, or None for --executor none.
    shard: a --shard given with them (refused: each task gets its own)."""
    from retland.cluster import EXECUTORS, Resources, parse_time
    from retland.purd.sampling import SamplingError

    if executor not in EXECUTORS:
        raise CliError(f"--executor {executor!r}: choose from {', '.join(EXECUTORS)}")
    cluster_opts = {"--jobs": jobs, "--partition": partition, "--gpus-per-job": gpus_per_job,
                    "--cpus-per-job": cpus_per_job, "--time": time, "--mem": mem, "--slurm-folder": slurm_folder}
    if executor == "none":
        given = [k for k, v in cluster_opts.items() if v is not None]
        if given:
            raise CliError(f"{given[0]} is for --executor slurm or local; add one, or leave {given[0]} out")
        return None
    if jobs is None or jobs < 1:
        raise CliError(f"--executor {executor} needs --jobs N (N >= 1 shard tasks)")
    if shard is not None:
        raise CliError(f"--shard {shard}: --executor {executor} gives each of its --jobs tasks its own shard; "
                       "leave --shard out")
    try:
        resources = Resources(partition, gpus_per_job, cpus_per_job, time, mem)
        parse_time(time)
        if executor == "slurm":
            resources.slurm_parameters(jobs)
            import shutil

            if shutil.which("sbatch") is None:  # before any job file is written
                raise SamplingError("--executor slurm: no SLURM here (sbatch not found on PATH); submit from a "
                                    "login node of the cluster, or use --executor local")
    except SamplingError as exc:
        raise CliError(str(exc)) from None
    return resources


@app.command()
def sample(
    operator: Annotated[str, typer.Option(
        help="Update operator: td3 | sac | ppo[:clip=C,rows=R] | bc | gaussian[:sigma] | action[:sigma] | "
             "init_state[:xF | :factor=F | :abs=A]. ppo alone is retland's operator (grad-norm clip as in training, "
             "one random minibatch, R = random); ppo:clip=0.1,rows=first is the authors' (clip 0.1, the minibatch "
             "of the first 1/num_minibatches of the rollout steps). init_state:xF resets within F times the task's "
             "standard reset range (the paper's unit; plain init_state is x1); init_state:abs=A within ±A. "
             "Legacy init_state:scale=A is absolute, as in ids written before the units were named.")],
    run: Annotated[Optional[list[str]], typer.Option(
        help="Run id or a unique prefix of one (repeatable); all its checkpoints unless --steps. One prefix with "
             "--seeds picks that prefix's run of each seed.")] = None,
    algo: Annotated[Optional[str], typer.Option(help="Select runs by algorithm (with --env).")] = None,
    env: Annotated[Optional[str], typer.Option(help="Select runs by env (with --algo).")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="Training seeds of the runs, e.g. 0,1,5..9.")] = None,
    source: source_option("that --algo/--env select; default trained (derived: stabilize's final policies; "
                          "imported runs have no parameters to sample)") = "trained",
    steps: Annotated[Optional[str], typer.Option(help="Checkpoint env steps, e.g. 50000,150000 or 5e4,1.5e5.")] = None,
    start: Annotated[str, typer.Option(
        help="Where the rollouts start: s0 (the fixed reference state); replay:K (K rows of each run's replay "
             "buffer, one drawn in each of K equal strata of the smallest chosen buffer of the run, seeded by "
             "--key-seed: the same rows at every checkpoint); rows:R1,R2,... (those rows at every checkpoint). "
             "One distribution per (checkpoint, row), with start=row<R> in its operator id. Needs runs trained "
             "with store_states (retland train --store-states).")] = "s0",
    samples: Annotated[int, typer.Option(help=help_of(SampleSettings, "samples"))] = default_of(SampleSettings, "samples"),
    horizon: Annotated[int, typer.Option(help=help_of(SampleSettings, "horizon"))] = default_of(SampleSettings, "horizon"),
    key_seed: Annotated[int, typer.Option(help=help_of(SampleSettings, "key_seed"))] = default_of(SampleSettings, "key_seed"),
    batch_size: Annotated[str, typer.Option(help=help_of(SampleSettings, "batch_size"))] = default_of(SampleSettings, "batch_size"),
    shard: Annotated[str, typer.Option(
        help="i/N: this job's share of the work, for N independent jobs; auto: i and N of this SLURM array task "
             "(SLURM_ARRAY_TASK_ID/_MIN/_COUNT).")] = default_of(SampleSettings, "shard"),
    devices: Annotated[str, typer.Option(help=help_of(SampleSettings, "devices"))] = default_of(SampleSettings, "devices"),
    pack: Annotated[str, typer.Option(help=help_of(SampleSettings, "pack"))] = default_of(SampleSettings, "pack"),
    executor: ExecutorOpt = "none",
    jobs: JobsOpt = None,
    partition: PartitionOpt = None,
    gpus_per_job: GpusOpt = None,
    cpus_per_job: CpusOpt = None,
    time: TimeOpt = None,
    mem: MemOpt = None,
    slurm_folder: SlurmFolderOpt = None,
    target_ci: Annotated[Optional[str], typer.Option(
        help="Sample to a precision: METRIC=HALF_WIDTH pairs (metrics ltp, cvar, mean, std), e.g. "
             "'ltp=0.01,cvar=5'. Each distribution is sampled in rounds of whole chunks until every 95% bootstrap "
             "CI half-width is at most its target, or --max-samples.", rich_help_panel="Precision",
        show_default=False)] = None,
    max_samples: Annotated[Optional[int], typer.Option(
        help="With --target-ci: the most samples a distribution gets (default --samples).",
        rich_help_panel="Precision", show_default=False)] = None,
    round_samples: Annotated[int, typer.Option(
        help="With --target-ci: samples added per round, rounded up to whole chunks.",
        rich_help_panel="Precision")] = 250,
    progress: Annotated[bool, typer.Option(
        "--progress/--no-progress",
        help="Show progress: a live bar on a terminal, one plain line at most every 10 s when piped.")] = True,
    warehouse: WarehouseOpt = None,
) -> None:
    """Sample post-update return distributions of checkpoints into the warehouse.

    For each chosen checkpoint and update index i < N: θ_i = U(state, fold_in(key, i)),
    then the deterministic return of π_θ_i from the reference state (or, with --start,
    from states collected in the run's replay buffer). Resumable: a rerun
    computes only missing indices. Shards split the chunks of all chosen distributions
    into N contiguous ranges, so array jobs on many machines can share one warehouse.
    Rows are bit-identical however the work is split, on one platform; across platforms
    or chunk sizes the distributions agree statistically, not bit for bit.
    """
    from retland.cluster import submit, wait
    from retland.purd.adaptive import parse_targets
    from retland.purd.job import SampleRequest, plan, resolve
    from retland.purd.sampling import SamplingError, parse_shard
    from retland.warehouse import Warehouse
    from retland.warehouse.runs import RunSelectionError

    # Options first, then the warehouse: nothing is read, compiled or written for bad input.
    # The request's own checks (`SampleRequest.check`) come after the command line's parsing.
    batch = count_or_keyword(batch_size, "--batch-size", "auto")
    n_devices = count_or_keyword(devices, "--devices", "all")
    packing = pack_option(pack)
    seed_list, step_list = (int_list(seeds, "--seeds"), int_list(steps, "--steps"))
    sources = parse_sources(source)
    resources = cluster_resources(executor, jobs, partition, gpus_per_job, cpus_per_job, time, mem, slurm_folder,
                                  None if shard == default_of(SampleSettings, "shard") else shard)
    try:
        targets = parse_targets(target_ci) if target_ci is not None else {}
        request = SampleRequest(operator, runs=tuple(run or ()), algo=algo, env=env, seeds=seed_list,
                                steps=step_list, sources=sources, samples=samples, horizon=horizon,
                                key_seed=key_seed, batch_size=batch, devices=n_devices, shard=shard,
                                targets=tuple(targets.items()), max_samples=max_samples,
                                round_samples=round_samples, start=start, pack=packing).check()
    except SamplingError as exc:
        raise CliError(str(exc)) from None
    if executor == "none":
        execute(request, warehouse, progress)
        return
    wh = Warehouse.open(warehouse, create=False)
    require_writable(wh.root)
    try:
        shard_ij = parse_shard(shard)
        job = resolve(wh, request)
        plans = plan(wh, job, shard_ij)
    except (SamplingError, RunSelectionError) as exc:
        raise CliError(str(exc)) from None
    _submit(wh, job, plans, executor, jobs, resources, slurm_folder, job.operator_ids, say, submit, wait)


def pack_option(text: str) -> int | str:
    """--pack: auto, off, or lanes per packed chunk (a whole number >= 1)."""
    word = text.strip().lower()
    if word in ("auto", "off"):
        return word
    try:
        return count_or_keyword(text, "--pack", "auto")
    except CliError:
        raise CliError(f"--pack {text!r}: give auto, off, or the lanes per packed chunk (a whole number >= 1)") from None


def say(text: str) -> None:
    err_console.print(escape(text), highlight=False, soft_wrap=True)


def execute(request, warehouse: Path | None, progress: bool = True) -> None:
    """Sample a checked SampleRequest in this process (`retland.purd.job.run_request`) and
    print what `retland sample` prints; `retland study` calls this for its sample stage."""
    from functools import partial

    from retland.purd.engine import resolve_devices
    from retland.purd.job import run_request
    from retland.purd.sampling import SamplingError
    from retland.warehouse import Warehouse
    from retland.warehouse.runs import RunSelectionError

    wh = Warehouse.open(warehouse, create=False)
    require_writable(wh.root)
    shown: dict = {}

    def on_plan(job, plans, shard_ij) -> None:
        shown["job"], shown["shard"] = job, shard_ij
        operator_ids = ", ".join(job.operator_ids)
        if plans is None:
            say(f"{len(job.distributions)} distribution(s), operator {operator_ids}, to a precision "
                f"({', '.join(f'{k}=±{v:g}' for k, v in job.targets)}), at most {job.max_samples} samples each, "
                f"rounds of {job.round_samples}, shard {shard_ij[0]}/{shard_ij[1]} (whole distributions)")
            return
        total = sum(p.new_rows for p in plans)
        work = [p for p in plans if p.todo]
        if job.start_rows:
            operator_ids += f" from {job.start_rows} replay row(s)"
        say(f"{len(job.distributions)} distribution(s), operator {operator_ids}, N={request.samples}, "
            f"shard {shard_ij[0]}/{shard_ij[1]}: {total} new samples in {sum(len(p.todo) for p in work)} "
            f"chunk(s) on {len(devs)} device(s)" + _packed_text(plans))

    def on_round(res) -> None:
        if progress:
            say(f"run {res.run_id} step {res.step}: n={res.n} " + ", ".join(_ci_text(iv) for iv in res.intervals)
                + (" -> target met" if res.met else ""))

    try:
        devs = resolve_devices(request.devices)
        done = run_request(wh, request, devices=devs, progress=partial(progress_bar, enabled=progress),
                           on_plan=on_plan, on_round=on_round)
    except (SamplingError, RunSelectionError) as exc:
        raise CliError(str(exc)) from None
    if shown["job"].targets:
        _print_adaptive(done.adaptive)
        console.print(escape(f"wrote {done.rows_written} rows into {wh.root}"), highlight=False, soft_wrap=True)
        return
    busy = done.busy
    if busy:
        say(f"{len(busy)} chunk(s) left to other live jobs that lease them "
            f"({', '.join(sorted({b.holder for b in busy}))}); rerun after they end to fill any gap")
    console.print(escape(f"wrote {done.rows_written} rows ({len(done.distributions)} distribution(s) computed, "
                         f"{done.complete} already complete for this shard) into {wh.root}"),
                  highlight=False, soft_wrap=True)


def _packed_text(plans) -> str:
    """', packed K chunks of B to a program of W lanes' when the job packs (`purd.packing`)."""
    packed = {(p.slots, p.batch_size) for p in plans if p.slots > 1 and p.todo}
    return "".join(f", packed {m} chunks of {b} to a program of {m * b} lanes" for m, b in sorted(packed))


def status_hints(root, operator_ids, samples: int | None) -> list[str]:
    """`retland status` command lines that show a submitted job's distributions: one per
    operator id, as `status --operator` takes one prefix (a job over several envs can
    have several ids, e.g. init_state's factor resolves per env), quoted for a shell."""
    import shlex

    return [f"retland status -w {shlex.quote(str(root))} --operator {shlex.quote(op)}"
            + (f" --samples {samples}" if samples else "") for op in operator_ids]


def _submit(wh, job, plans, executor, jobs, resources, folder, ids, say, submit, wait, rerun: str | None = None) -> None:
    """--executor slurm/local: submit the array (and, local, wait and report). job: a
    SampleJob, or a tuple of them (a study's sample stage: task i runs shard i of each),
    with plans: all their plans. rerun: how a task that failed is run again (default:
    this sample command with --executor none --shard i/N)."""
    from retland.purd.sampling import SamplingError

    first = job[0] if isinstance(job, tuple) else job
    operator_ids = ", ".join(ids)

    if not first.targets:
        total = sum(p.new_rows for p in plans)
        if total == 0:
            console.print(escape(f"all {first.samples} samples of {len(plans)} distribution(s) are stored in "
                                 f"{wh.root}; nothing submitted"), highlight=False, soft_wrap=True)
            return
        what = f"{total} new samples of {len(plans)} distribution(s), N={first.samples}"
    else:
        what = (f"{len(plans)} distribution(s) to a precision ({', '.join(f'{k}=±{v:g}' for k, v in first.targets)}, "
                f"at most {first.max_samples} samples each)")
    try:
        sub = submit(job, jobs, executor, resources, folder)
    except SamplingError as exc:
        raise CliError(str(exc)) from None
    if executor == "slurm":
        console.print(escape(
            f"submitted SLURM array {sub.array_id}: {jobs} task(s) sampling {what}, operator {operator_ids}"),
            highlight=False, soft_wrap=True)
        console.print(escape(f"watch it:  squeue -j {sub.array_id}   |   logs in {sub.folder}/"),
                      highlight=False, soft_wrap=True)
        for hint in status_hints(wh.root, ids, first.samples):
            console.print(escape(f"progress:  {hint}"), highlight=False, soft_wrap=True)
        console.print(escape(rerun or f"a task that failed can simply be run again: the same command with --executor "
                                      f"none --shard i/{jobs} (it computes only what is missing)"),
                      highlight=False, soft_wrap=True)
        return
    say(f"running {jobs} local task(s) sampling {what}, operator {operator_ids}; logs in {sub.folder}/")
    done, failed = wait(sub)
    written = sum(d["rows_written"] for d in done)
    busy = sum(d.get("busy_chunks", 0) for d in done)
    for d in sorted(done, key=lambda d: d["shard"]):
        say(f"shard {d['shard']}: {d['rows_written']} rows in {d['seconds']:.0f} s"
            + (f", {d['busy_chunks']} chunk(s) left to {', '.join(d['busy_holders'])}" if d.get("busy_chunks") else ""))
    for line in failed[1:]:
        err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    if failed:
        raise CliError(failed[0])
    console.print(escape(f"wrote {written} rows with {len(done)} task(s) into {wh.root}"
                         + (f" ({busy} chunk(s) left to other jobs)" if busy else "")), highlight=False, soft_wrap=True)
    if first.targets:
        _print_adaptive([r for d in done for r in d.get("adaptive", [])])


def _ci_text(iv) -> str:
    from retland.cli.app import rounded

    if iv.half_width != iv.half_width:
        return f"{iv.metric} undefined in some resample (target ±{iv.target:g})"
    return f"{iv.metric} {rounded(iv.value)} ±{rounded(iv.half_width, iv.value)} (target ±{iv.target:g})"


def _print_adaptive(results) -> None:
    """One line per distribution: n used, the CIs reached, whether the targets were met."""
    for res in results:
        cis = ", ".join(_ci_text(iv) for iv in res.intervals) or "no CI"
        flag = "met" if res.met else "NOT met"
        console.print(escape(f"run {res.run_id} step {res.step} {res.operator_id}: n={res.n} {cis}: target {flag} "
                             f"({res.stopped})"), highlight=False, soft_wrap=True)
