"""Sampling post-update return distributions: plan a job once, then run its plans.

A distribution is (run, checkpoint step, operator); its sample i is
    key_i = fold_in(PRNGKey(operator seed), i),  θ_i = U(state, key_i),  row_i = J(θ_i)
computed by the chunk engine (`retland.purd.engine`). The base key is the operator seed
alone, so sample i of two checkpoints uses the same key, and no two samples of one
distribution share one. The key is common, the draw is not always: td3/sac minibatches are
randint(key, 0, n) over the checkpoint's buffer size n, which a different n remaps, so only
the gaussian/action/init_state perturbations (and SAC's reparameterisation noise) are
common random numbers across checkpoints (docs/method.md §1).

Planning (`plan_job`) reads once what the warehouse holds for every chosen distribution,
fixes each distribution's chunk size B (the recorded one when it has rows: a resumed
distribution keeps its chunking) and decides which chunks this job computes:

- Resumption: only chunks with a missing index, and only the missing rows of those.
- Shards: `--shard i/N` takes the i-th of N contiguous, equal ranges of all the job's
  chunks, done or not, in (run, step, chunk) order, so N independent jobs cover the
  work exactly once with no coordination; a finished shard's rerun computes nothing.
  `--shard auto` reads i and N from a SLURM array task's environment.
- Leases (`retland.purd.leases`): jobs that overlap anyway (the same array submitted
  twice) take a lease per chunk before computing it and leave chunks leased by a live
  job to that job.

Running (`sample_checkpoint`) loads the checkpoint only when its plan has work, builds
the operator's program and hands it to the engine, which appends rows to
post_update_returns. A whole job (a request resolved against the warehouse, its plans,
the loop over them, adaptive rounds) is `retland.purd.job`. Rows are bit-identical however the work was split, on one
platform; across chunk sizes or platforms the distributions agree statistically.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import jax

from retland.agents import get_agent
from retland.agents.policy import PolicyConfig
from retland.purd.engine import (
    FLUSH_SECONDS,
    AgentPolicy,
    Computed,
    NonFiniteReturnError,
    SampleProgram,
    SamplingError,
    Work,
    compute,
    program_for,
    resolve_devices,
)
from retland.purd.chunks import missing_chunks
from retland.purd.leases import LeaseInfo, Leases, claim
from retland.purd.operators import AGENT_KINDS, OperatorSpec
from retland.train.checkpoints import load_checkpoint
from retland.warehouse.sqlgen import in_list

__all__ = ["Plan", "SampleResult", "SamplingError", "NonFiniteReturnError", "plan_job", "plan_distribution",
           "run_plan", "sample_checkpoint", "sample_distribution", "checkpoint_program", "auto_batch_size",
           "parse_shard", "shard_from_env", "take_shard", "stored_indices", "FLUSH_SECONDS"]

# Chunk size for --batch-size auto, per platform (BENCHMARKS.md "Scale"). On CPU
# throughput is flat for B = 32..1024 (per-sample weight reads dominate), so a small B
# keeps padding and the work lost to a kill small. Accelerators need wide batches: on an
# H200, td3-operator samples of hopper (H = 1000) ran at 0.17 / 0.63 / 1.83 M env-steps/s
# for B = 256 / 1024 / 4096, at about 1.8 MiB of device memory per sample (7.1 GiB at
# 4096, XLA's memory analysis). So accelerators take 4096, shrunk to N; before the first
# chunk runs, `engine.chunk_fits` checks the compiled program against the device's
# memory and, if it does not fit, refuses naming the --batch-size that does.
AUTO_BATCH = {"cpu": 64}
AUTO_BATCH_ACCELERATOR = 4096


def auto_batch_size(n_samples: int, platform: str | None = None) -> int:
    """The platform's chunk size, shrunk (to a multiple of 8) for small distributions."""
    platform = platform or jax.default_backend()
    b = AUTO_BATCH.get(platform, AUTO_BATCH_ACCELERATOR)
    return max(1, min(b, 8 * math.ceil(n_samples / 8)))


def parse_shard(text: str | tuple[int, int] | None, environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """'i/N' -> (i, N), 0 <= i < N; 'auto' -> this SLURM array task's (i, N)."""
    if text is None:
        return 0, 1
    if isinstance(text, tuple):
        i, n = text
    elif str(text).strip().lower() == "auto":
        return shard_from_env(os.environ if environ is None else environ)
    else:
        try:
            i, n = (int(x) for x in str(text).split("/"))
        except ValueError:
            raise SamplingError(f"--shard {text!r}: expected i/N, e.g. 0/4, or auto in a SLURM array task") from None
    if n < 1 or not 0 <= i < n:
        raise SamplingError(f"--shard {i}/{n}: need 0 <= i < N")
    return i, n


def shard_from_env(environ: Mapping[str, str]) -> tuple[int, int]:
    """(i, N) of a SLURM array task: N = SLURM_ARRAY_TASK_COUNT tasks whose ids run
    from SLURM_ARRAY_TASK_MIN to _MAX in steps of SLURM_ARRAY_TASK_STEP (1 unless
    --array=LO-HI:STEP), so i = (id - min) / step. Arrays whose ids are not such a range
    (--array=1,4,9) cannot be mapped to shards and are refused."""
    tid = environ.get("SLURM_ARRAY_TASK_ID")
    if tid in (None, ""):
        raise SamplingError("--shard auto: not inside a SLURM array task (SLURM_ARRAY_TASK_ID is not set); "
                            "submit with sbatch --array=0-M, or pass --shard i/N")
    try:
        task = int(tid)
        count = int(environ["SLURM_ARRAY_TASK_COUNT"])
        lo = int(environ.get("SLURM_ARRAY_TASK_MIN", "0"))
        hi = int(environ.get("SLURM_ARRAY_TASK_MAX", str(lo + count - 1)))
        step = int(environ.get("SLURM_ARRAY_TASK_STEP") or 1)
    except (KeyError, ValueError):
        raise SamplingError("--shard auto: SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT/_MIN/_MAX/_STEP "
                            "are missing or not integers; pass --shard i/N") from None
    if count < 1 or step < 1 or hi - lo != (count - 1) * step or (task - lo) % step or not lo <= task <= hi:
        raise SamplingError(
            f"--shard auto: array task {task} of ids {lo}..{hi} (count {count}, step {step}) is not one of a "
            "regular range of ids; submit with --array=LO-HI (optionally :STEP), or pass --shard i/N")
    return (task - lo) // step, count


def take_shard(units: Sequence, shard: tuple[int, int]) -> list:
    """The i-th of N contiguous, near-equal ranges of `units` (deterministic)."""
    i, n = shard
    m = len(units)
    return list(units[i * m // n:(i + 1) * m // n])


def stored_rows(wh, operator_ids: Iterable[str]) -> dict[tuple[str, int, str], tuple[set[int], set[int]]]:
    """(update indices present, chunk sizes recorded) of every stored distribution of
    these operators, keyed by (run_id, step, operator_id), in one query."""
    ids = sorted(set(operator_ids))
    if not ids:
        return {}
    cond, params = in_list("operator_id", ids)
    rows = wh.records(
        "SELECT run_id, step, operator_id, list(update_index) AS idx, list(DISTINCT chunk_size) AS b "
        f"FROM post_update_returns WHERE {cond} GROUP BY ALL", params)
    return {(r["run_id"], int(r["step"]), r["operator_id"]): (set(r["idx"]), {int(b) for b in r["b"] if b is not None})
            for r in rows}


def stored_indices(wh, run_id: str, step: int, operator_id: str) -> set[int]:
    """The update indices of one distribution stored now."""
    rows = wh.records("SELECT list(update_index) AS idx FROM post_update_returns "
                      "WHERE run_id = ? AND step = ? AND operator_id = ?", [run_id, int(step), operator_id])
    return set(rows[0]["idx"] or []) if rows else set()


def resolve_batch_size(recorded: set[int], requested: int | str | None, n_samples: int,
                       what: str = "this distribution") -> int:
    """The chunk size to use: the recorded one if any (a conflicting request is refused)."""
    if len(recorded) > 1:
        raise SamplingError(
            f"{what} holds rows of several chunk sizes {sorted(recorded)}; it is not one "
            "distribution. Delete or move one set before sampling more.")
    if recorded:
        (b,) = recorded
        if requested not in (None, "auto") and int(requested) != b:
            raise SamplingError(
                f"{what} was started with --batch-size {b}; resuming it with --batch-size "
                f"{int(requested)} would mix chunkings (rows would not be reproducible). "
                f"Use --batch-size {b} or auto, or a different operator seed.")
        return b
    if requested in (None, "auto"):
        return auto_batch_size(n_samples)
    b = int(requested)
    if b < 1:
        raise SamplingError(f"--batch-size must be >= 1, got {b}")
    return b


@dataclass
class Plan(Work):
    """The work of one job on one distribution: which chunks of [0, n) to compute."""

    run_id: str = ""
    step: int = 0
    spec: OperatorSpec | None = None
    # Packing (`retland.purd.packing`): chunks of plans of one group > 0 with slots > 1
    # run m = slots to a packed chunk; first_chunk: the job's chunks start there.
    group: int = -1
    slots: int = 1
    first_chunk: int = 0

    @property
    def n_samples(self) -> int:
        return self.n

    @property
    def label(self) -> str:
        return f"run {self.run_id} step {self.step} operator {self.spec.operator_id}"


def plan_job(
    wh,
    distributions: Sequence[tuple[str, int, OperatorSpec]],
    n_samples: int,
    *,
    batch_size: int | str | None = "auto",
    shard: tuple[int, int] | str | None = None,
    pack: int | str | None = "off",
    start: int = 0,
) -> list[Plan]:
    """One plan per (run_id, step, spec), in the order given: the chunk size of each
    distribution and the chunks of it that this job (shard i of N) computes.

    The shard is a contiguous range of the job's work items (`packing.layout`: every chunk
    of every distribution, done or not; with `pack`, packed chunks of distributions that
    share a program), so the split does not depend on progress made by other shards.
    pack: 'auto', 'off' or lanes per packed chunk (`packing.resolve_pack`). start: the
    job's chunks begin at the chunk holding index `start` (an adaptive round's new ones)."""
    if n_samples < 1:
        raise SamplingError(f"--samples must be >= 1, got {n_samples}")
    shard_ij = parse_shard(shard)
    stored = stored_rows(wh, [spec.operator_id for _, _, spec in distributions])
    sizes, present = [], []
    for run_id, step, spec in distributions:
        idx, recorded = stored.get((run_id, int(step), spec.operator_id), (set(), set()))
        what = f"run {run_id} step {step} operator {spec.operator_id}"
        sizes.append(resolve_batch_size(recorded, batch_size, n_samples, what))
        present.append(idx)
    from retland.purd.packing import item_units, layout, program_keys, resolve_pack

    width = resolve_pack(pack)
    keys = program_keys(wh, distributions, sizes) if width else [None] * len(sizes)
    groups: dict = {}
    plans = []
    for d, (run_id, step, spec) in enumerate(distributions):
        slots = max(1, width // sizes[d]) if width else 1
        group = groups.setdefault(keys[d], len(groups)) if slots > 1 else -1
        plans.append(Plan(n_samples, sizes[d], [], present[d], run_id=run_id, step=int(step), spec=spec,
                          group=group, slots=slots, first_chunk=start // sizes[d]))
    mine: dict[int, set[int]] = {}
    for item in take_shard(layout(plans), shard_ij):
        for d, k in item_units(item):
            mine.setdefault(d, set()).add(k)
    for d, p in enumerate(plans):
        p.todo = sorted(mine.get(d, set()) & set(missing_chunks(n_samples, sizes[d], present[d])))
    return plans


def plan_distribution(wh, run_id: str, step: int, spec: OperatorSpec, n_samples: int, *,
                      batch_size: int | str | None = "auto", shard: tuple[int, int] | str | None = None) -> Plan:
    """`plan_job` for one distribution."""
    return plan_job(wh, [(run_id, step, spec)], n_samples, batch_size=batch_size, shard=shard)[0]


@dataclass
class SampleResult:
    run_id: str
    step: int
    operator_id: str
    n_samples: int
    batch_size: int
    chunks_total: int
    chunks_computed: int = 0
    rows_written: int = 0
    devices: int = 1
    seconds: float = 0.0
    chunk_devices: dict[int, int] | None = None  # chunk -> device position
    busy: list[LeaseInfo] = field(default_factory=list)  # chunks left to live jobs that lease them


def ensure_operator(wh, spec: OperatorSpec) -> None:
    """Record the operator once (a race may write it twice; the view deduplicates)."""
    if rows := operator_rows(wh, spec):
        wh.append("operators", rows["operators"])


def operator_rows(wh, spec: OperatorSpec) -> dict:
    """{'operators': [row]} when the operator is not stored yet, else {}: validated now, so
    a value the table refuses stops the job before it computes anything."""
    if wh.records("SELECT 1 FROM operators WHERE operator_id = ?", [spec.operator_id]):
        return {}
    from retland.warehouse.writer import validate

    return {"operators": validate("operators", [spec.operators_row()])}


def run_plan(wh, plan: Plan, program: SampleProgram, op_state, *, devices=None, start_state=None,
             flush_seconds: float = FLUSH_SECONDS, progress=None) -> SampleResult:
    """Compute the plan's chunks with `program` and append their new rows to
    post_update_returns (see `retland.purd.engine.compute`)."""
    result = SampleResult(plan.run_id, plan.step, plan.spec.operator_id, plan.n, plan.batch_size, plan.n_chunks)
    if not plan.todo:
        return result
    first = operator_rows(wh, plan.spec)  # committed with the first rows, never alone

    def columns(j):
        return {"run_id": [plan.run_id] * len(j), "step": [plan.step] * len(j),
                "operator_id": [plan.spec.operator_id] * len(j), "update_index": j,
                "chunk_size": [plan.batch_size] * len(j)}

    done: Computed = compute(wh, "post_update_returns", columns, program, op_state, plan.spec.base_key, plan,
                             label=plan.label, start_state=start_state, devices=devices,
                             flush_seconds=flush_seconds, progress=progress, with_first=first,
                             timing={"run_id": plan.run_id, "step": int(plan.step),
                                     "operator_id": plan.spec.operator_id})
    result.chunks_computed, result.rows_written = done.chunks, done.rows_written
    result.seconds, result.chunk_devices = done.seconds, done.chunk_devices
    result.devices = len(resolve_devices(devices))
    return result


def sample_distribution(wh, *, run_id: str, step: int, spec: OperatorSpec, program: SampleProgram, op_state,
                        n_samples: int, batch_size: int | str | None = "auto",
                        shard: tuple[int, int] | str | None = None, **run_kwargs) -> SampleResult:
    """Fill samples [0, n_samples) of (run_id, step, spec) with any program: plan, then run.

    op_state is what `program.make_params` takes (actor params for gaussian/action/
    init_state, `agent.operator_state(ckpt)` for td3/sac/ppo). run_kwargs: devices,
    start_state, flush_seconds, progress (see `run_plan`)."""
    plan = plan_distribution(wh, run_id, step, spec, n_samples, batch_size=batch_size, shard=shard)
    return run_plan(wh, plan, program, op_state, **run_kwargs)


def checkpoint_program(spec: OperatorSpec, ckpt) -> tuple[SampleProgram, Any]:
    """(program, op_state) for sampling `spec` at a loaded checkpoint."""
    agent = get_agent(ckpt.algo, ckpt.config)
    if spec.kind in AGENT_KINDS:
        if spec.kind != ckpt.algo:
            raise SamplingError(
                f"operator {spec.kind} needs a {spec.kind} checkpoint; run {ckpt.run_id} is {ckpt.algo}")
        if isinstance(ckpt.config, PolicyConfig):  # an added policy that shares an algorithm's name (e.g. bc)
            raise SamplingError(f"operator {spec.kind} needs a {spec.kind} checkpoint; run {ckpt.run_id} is an added "
                                f"policy named {ckpt.algo}, which has no training update")
        op_state = agent.operator_state(ckpt)
    else:
        op_state = agent.actor_params(ckpt.agent_state)
    program = program_for(spec, ckpt.env, ckpt.backend, AgentPolicy(agent), agent, variant=ckpt.variant)
    return program, op_state


def sample_checkpoint(wh, plan: Plan, *, checkpoint=None, load=None, leases: Leases | None = None,
                      **run_kwargs) -> SampleResult:
    """Run a plan of a stored checkpoint's distribution; the checkpoint (and its replay
    buffer) is loaded, with load(wh, run_id, step) (default `load_checkpoint`), only
    when the plan has chunks to compute and `checkpoint` is not given.

    With `leases`, only the chunks this job can lease are computed (`leases.claim`);
    the others are listed in the result's `busy`."""
    with claim(wh, plan, leases, lambda p: stored_indices(wh, p.run_id, p.step, p.spec.operator_id)) as (mine, busy):
        if not mine.todo:
            result = run_plan(wh, mine, None, None, **run_kwargs)
        else:
            if checkpoint is None:
                checkpoint = (load or load_checkpoint)(wh, mine.run_id, mine.step)
            program, op_state = checkpoint_program(mine.spec, checkpoint)
            if mine.spec.start is not None:  # rollouts start at a replay row (purd.starts)
                from retland.purd.engine import reference_start
                from retland.purd.starts import start_state

                run_kwargs = {**run_kwargs, "start_state": start_state(wh, checkpoint, reference_start(program),
                                                                       mine.spec.start)}
            result = run_plan(wh, mine, program, op_state, **run_kwargs)
    result.busy = busy
    return result
