"""Sampling on a cluster: one SLURM job array of shard jobs, through submitit.

`retland sample --executor slurm --jobs N` resolves the request once (`purd.job.resolve`:
a `SampleJob`, its checkpoints fixed), then submits one array of N tasks; task i runs
`ShardJob()(job, (i, N))` on its node. The task opens the shared warehouse and runs its
shard (`purd.job.run_job`, as `retland sample` does in one process): it plans again (what
is stored now, chunk sizes, this shard's chunks) and samples, so a task that died or was
preempted is simply run again: it computes what is still missing of its shard. On a
timeout or preemption submitit calls `ShardJob.checkpoint`, which requeues the same call.

The checkpoints are resolved at submission, not in each task, so every task splits the
same list of distributions into the same shards even if a training job adds checkpoints
meanwhile. `--executor local` runs the same tasks as local processes (submitit's
LocalExecutor) and waits for them. Every task takes chunk leases (`retland.purd.leases`),
so an array submitted twice does not compute anything twice.

submitit is imported only here, and only when jobs are submitted.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retland.config.requests import parse_duration
from retland.purd.engine import SamplingError
from retland.purd.job import SampleJob

EXECUTORS = ("none", "local", "slurm")


def run_shard(job: SampleJob | tuple[SampleJob, ...], shard: tuple[int, int], *, leases=True, progress=None,
              on_round=None) -> dict[str, Any]:
    """Run shard i/N of `job` in this process (`retland.purd.job.run_job`, the path every
    sampling job takes); its summary as plain values. The body of every task of an
    `--executor slurm/local` array (`ShardJob`). A tuple of jobs (a study's sample
    stage: one job per operator and group of runs) runs shard i/N of each, in order, and
    sums their summaries."""
    from retland.purd.job import run_job
    from retland.warehouse import Warehouse

    jobs = job if isinstance(job, (tuple, list)) else (job,)
    wh = Warehouse.open(jobs[0].root, create=False)
    out = [run_job(wh, j, shard, leases=leases, progress=progress, on_round=on_round).summary() for j in jobs]
    return out[0] if len(out) == 1 else merge_summaries(out)


def merge_summaries(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One task's summary of several jobs' shards: counts and seconds added."""
    merged = dict(parts[0])
    for key in ("rows_written", "busy_chunks", "distributions", "seconds"):
        merged[key] = sum(p[key] for p in parts)
    merged["busy_holders"] = sorted({h for p in parts for h in p["busy_holders"]})
    adaptive = [a for p in parts for a in p.get("adaptive", [])]
    if adaptive:
        merged["adaptive"] = adaptive
    return merged


class ShardJob:
    """The callable submitted for each task: `ShardJob()(job, shard)` runs `run_shard`.

    Its `checkpoint` makes submitit requeue the same call after a timeout or a
    preemption (the rerun plans again and computes only what is missing)."""

    def __call__(self, job: SampleJob, shard: tuple[int, int]) -> dict[str, Any]:
        return run_shard(job, shard)

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(type(self)(), *args, **kwargs)


def parse_time(text: str | None) -> int | None:
    """SLURM --time as whole minutes (at least 1): MIN, MIN:SS, H:MM:SS, or D-HH[:MM[:SS]]."""
    if text is None:
        return None
    try:
        seconds = parse_duration(text, "--time")
    except ValueError as exc:
        raise SamplingError(str(exc)) from None
    return max(1, round(seconds / 60))


UNLIMITED_MINUTES = 365 * 24 * 60  # what a task asks for on a partition without a time limit


def partition_minutes(partition: str | None) -> int:
    """The wall time of a task without --time: the partition's DefaultTime, else its
    MaxTime (as `sinfo` reports them; a year when unlimited), in minutes. submitit
    would write its own default, --time=5: each run signalled 90 s before its end and
    requeued at most 3 times, a shard of more than about 14 minutes' work would fail."""
    import subprocess

    try:
        res = subprocess.run(["sinfo", "-a", "-h", "-o", "%P|%L|%l"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SamplingError(f"--executor slurm: sinfo did not answer ({exc}); give --time") from None
    if res.returncode != 0:
        raise SamplingError(f"--executor slurm: sinfo failed ({refusal(res.stderr)}); give --time")
    rows = [ln.strip().split("|") for ln in res.stdout.splitlines() if ln.count("|") == 2]
    names = [r[0].rstrip("*") for r in rows]
    if partition is not None and partition not in names:
        raise SamplingError(f"--partition {partition!r}: no such partition (sinfo lists {', '.join(names) or 'none'})")
    chosen = [r for r in rows if (r[0].rstrip("*") == partition if partition else r[0].endswith("*"))]
    if not chosen:
        raise SamplingError("--executor slurm: the cluster has no default partition; give --partition")
    for text in chosen[0][1:]:
        t = text.strip().lower()
        if t in ("infinite", "unlimited"):
            return UNLIMITED_MINUTES
        if t not in ("n/a", "none", ""):
            return parse_time(t)
    return UNLIMITED_MINUTES


@dataclass
class Resources:
    """What each task asks the scheduler for (None: the cluster's default)."""

    partition: str | None = None  # and time None: the partition's default (`partition_minutes`)
    gpus_per_job: int | None = None
    cpus_per_job: int | None = None
    time: str | None = None
    mem: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def slurm_parameters(self, jobs: int) -> dict[str, Any]:
        """SlurmExecutor parameters of an array of `jobs` tasks."""
        params: dict[str, Any] = {"job_name": "retland-sample", "array_parallelism": jobs}
        if self.partition:
            params["partition"] = self.partition
        if self.gpus_per_job is not None:
            params["gpus_per_node"] = self.gpus_per_job
        if self.cpus_per_job is not None:
            params["cpus_per_task"] = self.cpus_per_job
        minutes = parse_time(self.time)
        if minutes is not None:
            params["time"] = minutes
        if self.mem:
            if not re.fullmatch(r"\d+[KMGT]?B?", self.mem.strip().upper()):
                raise SamplingError(f"--mem {self.mem!r}: expected a SLURM size such as 16G or 32000M")
            params["mem"] = self.mem.strip().upper().removesuffix("B")
        return params


def default_folder(root: str | Path) -> Path:
    """Where job files and logs go unless --slurm-folder: beside the rows, on the
    filesystem every task mounts anyway."""
    return Path(root) / "jobs"


@dataclass
class Submitted:
    executor: str
    jobs: list  # submitit Job objects
    folder: Path

    @property
    def array_id(self) -> str:
        return str(self.jobs[0].job_id).split("_")[0]


def submit(job: SampleJob | tuple[SampleJob, ...], jobs: int, executor: str, resources: Resources,
           folder: str | Path | None = None) -> Submitted:
    """Submit `jobs` shard tasks of `job` (or of every job of a tuple: task i runs shard
    i of each) as one array (slurm) or as local processes."""
    if executor not in ("local", "slurm"):
        raise SamplingError(f"--executor {executor!r}: choose from {', '.join(EXECUTORS)}")
    if jobs < 1:
        raise SamplingError(f"--jobs {jobs}: give a whole number >= 1")
    if executor == "slurm":
        import shutil

        if shutil.which("sbatch") is None:  # before submitit writes any job file
            raise SamplingError("--executor slurm: no SLURM here (sbatch not found on PATH); submit from a login "
                                "node of the cluster, or use --executor local")
    submitit = import_submitit(executor)
    first = job[0] if isinstance(job, (tuple, list)) else job
    folder = Path(folder) if folder is not None else default_folder(first.root)
    log_folder = folder / "%j"
    if executor == "slurm":
        params = resources.slurm_parameters(jobs)
        if "time" not in params:
            params["time"] = partition_minutes(resources.partition)
        try:
            ex = submitit.SlurmExecutor(folder=log_folder)
        except RuntimeError:
            raise SamplingError("--executor slurm: no SLURM here (srun not found); submit from a login node of "
                                "the cluster, or use --executor local") from None
        ex.update_parameters(**params)
    else:
        ex = submitit.LocalExecutor(folder=log_folder)
        minutes = parse_time(resources.time) or 7 * 24 * 60
        local: dict[str, Any] = {"timeout_min": minutes}
        if resources.gpus_per_job:
            local["gpus_per_node"] = resources.gpus_per_job
        else:
            # LocalExecutor sets CUDA_VISIBLE_DEVICES to the GPUs it was asked for (none):
            # without --gpus-per-job the tasks see what this shell sees.
            seen = os.environ.get("CUDA_VISIBLE_DEVICES")
            local["setup"] = ["unset CUDA_VISIBLE_DEVICES" if seen is None
                              else f"export CUDA_VISIBLE_DEVICES={shlex.quote(seen)}"]
        ex.update_parameters(**local)
    shards = [(i, jobs) for i in range(jobs)]
    from submitit.core.utils import FailedJobError, FailedSubmissionError

    made = _NewFiles(folder)
    try:
        # submitit prints sbatch's stderr itself before raising; it goes into the one line below
        with contextlib.redirect_stderr(io.StringIO()):
            submitted = ex.map_array(ShardJob(), [tuple(job) if isinstance(job, list) else job] * jobs, shards)
    except (FailedJobError, FailedSubmissionError) as exc:
        made.remove()  # the task pickles and the script of an array that does not exist
        raise SamplingError(f"--executor {executor}: sbatch refused the array: {refusal(str(exc))}") from None
    return Submitted(executor, list(submitted), folder)


class _NewFiles:
    """What submitit is about to create in `folder` (the folder itself, its parents, the
    task pickles and the sbatch script at its top), removed again by `remove()` when the
    submission fails: a refused array leaves nothing behind."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.new_dirs = [p for p in (folder, *folder.parents) if not p.exists()]
        self.before = set(folder.iterdir()) if folder.is_dir() else set()

    # submitit's names: <uuid>.pkl per task, .submission_file_<uuid>.sh
    NAMES = re.compile(r"(?:[0-9a-f]{32}\.pkl|\.submission_file_[0-9a-f]{32}\.sh)")

    def remove(self) -> None:
        if self.folder.is_dir():
            for p in set(self.folder.iterdir()) - self.before:
                if self.NAMES.fullmatch(p.name) and p.is_file():
                    p.unlink()
        for d in self.new_dirs:  # deepest first
            try:
                d.rmdir()
            except OSError:
                break


def refusal(text: str) -> str:
    """sbatch's error lines as one line, without their `sbatch: error: ` prefixes."""
    lines = [re.sub(r"^\s*sbatch:\s*(error:\s*)?", "", ln).strip() for ln in text.splitlines()]
    return "; ".join(ln for ln in lines if ln) or "no error text"


def import_submitit(executor: str = "slurm"):
    """submitit, imported without its logging set-up: at import it runs
    logging.config.dictConfig, which closes every handler the host program installed
    (pytest's, an application's). Its messages in this process go through Python's
    logging; the tasks it starts configure their own and log to their files."""
    import sys

    if "submitit" not in sys.modules:
        prev = os.environ.get("SUBMITIT_LOG_LEVEL")
        os.environ["SUBMITIT_LOG_LEVEL"] = "NOCONFIG"
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise SamplingError(f"--executor {executor} needs the submitit package (pip install submitit)") from None
        finally:
            if prev is None:
                os.environ.pop("SUBMITIT_LOG_LEVEL", None)
            else:
                os.environ["SUBMITIT_LOG_LEVEL"] = prev
    return sys.modules["submitit"]


def wait(sub: Submitted) -> tuple[list[dict], list[str]]:
    """Wait for every task; (summaries of those that finished, one line per failure
    naming the task's log)."""
    from submitit.core.utils import FailedJobError, UncompletedJobError

    done, failed = [], []
    for i, j in enumerate(sub.jobs):
        try:
            done.append(j.result())
        except (FailedJobError, UncompletedJobError) as exc:
            failed.append(f"shard {i}/{len(sub.jobs)} (job {j.job_id}) failed: {last_error_line(str(exc))}; "
                          f"log: {j.paths.stderr}")
    return done, failed


def last_error_line(text: str) -> str:
    """The exception line of a traceback (the last line naming an Error/Exception)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if re.match(r"^[\w.]+(Error|Exception|Exit|Interrupt)\b", ln):
            return ln
    return lines[-1] if lines else "no error text"

