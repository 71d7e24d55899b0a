"""A sampling job, from request to rows: the one path `retland sample`, `retland.sample`
and every task of an `--executor slurm/local` array take.

1. `SampleRequest`: what to sample, as the command line's options say it (run ids or
   prefixes, or algo + env; seeds, steps, sources; the operator's text; N, horizon,
   operator seed, chunk size, devices, shard; or, to a precision, targets with
   max_samples and round_samples; the start state: s0, or replay rows of each
   checkpoint's buffer). `check()` refuses what cannot be honoured before
   anything is read, with the messages the command prints.
2. `resolve(wh, request)` chooses the checkpoints (`purd.selection`: ids, unique
   prefixes, prefix + seeds) and returns a `SampleJob`: the same request with its
   distributions fixed, as plain values, so the tasks of an array (which each get one)
   split the same list into the same shards even if checkpoints are added meanwhile.
   A start other than s0 makes one distribution per (checkpoint, replay row)
   (`purd.starts.start_rows`: rows beyond a buffer, or runs without stored states, are
   refused here).
3. `plan(wh, job, shard)`: `sampling.plan_job` over the job's distributions: chunk
   sizes, what is stored, this shard's chunks.
4. `run_job(wh, job, shard)`: one loop through `sampling.sample_checkpoint` with chunk
   leases and a progress callback, over rounds of plans that a policy hands it. A
   fixed-N job is one round: its plans. A job to a precision is the policy of
   `purd.adaptive.rounds`: per distribution, rounds of whole chunks until every
   bootstrap CI is narrow enough or max_samples.

`run_request(wh, request)` does 2-4 for a checked request in this process (what `retland
sample` without --executor and a study's sample stage call); `sample(warehouse, ...)`
builds the request from keywords first (`retland.sample`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Sequence

from retland.config.requests import Bar, bar, int_list_text, options
from retland.config.settings import MAX_HORIZON, MAX_SEED, SampleSettings, default_of
from retland.purd import sampling
from retland.purd.adaptive import METRICS, ROUND_SAMPLES, AdaptiveResult, parse_targets, rounds
from retland.purd.engine import FLUSH_SECONDS, SamplingError
from retland.purd.leases import LeaseInfo, Leases
from retland.purd.operators import OperatorSpec, check_operator, parse_operator
from retland.purd.packrun import run_packed
from retland.purd.sampling import Plan, SampleResult, parse_shard, plan_job
from retland.purd.selection import select_checkpoints
from retland.purd.starts import start_rows
from retland.core.startstates import parse_start

if TYPE_CHECKING:
    from retland.warehouse import Warehouse

__all__ = ["SampleRequest", "SampleJob", "SampleOutcome", "MAX_SAMPLES", "resolve", "plan", "run_job",
           "run_request", "sample"]

MAX_SAMPLES = 10**9


def _default(name: str):
    return default_of(SampleSettings, name)


@dataclass(frozen=True)
class SampleRequest:
    """What to sample; the fields are `retland sample`'s options (`retland.sample`'s
    keywords), parsed: runs are ids or unique prefixes, seeds/steps lists of ints."""

    operator: str
    runs: tuple[str, ...] = ()
    algo: str | None = None
    env: str | None = None
    seeds: tuple[int, ...] | None = None
    steps: tuple[int, ...] | None = None
    sources: tuple[str, ...] = ("trained",)
    samples: int = _default("samples")
    horizon: int = _default("horizon")
    key_seed: int = _default("key_seed")
    batch_size: int | str = _default("batch_size")  # a count or "auto"
    devices: int | str = _default("devices")  # a count or "all"
    shard: str | tuple[int, int] = _default("shard")  # "i/N", (i, N) or "auto"
    targets: tuple[tuple[str, float], ...] = ()  # to a precision: (metric, half-width) pairs
    max_samples: int | None = None  # with targets: the most samples a distribution gets (default samples)
    round_samples: int = ROUND_SAMPLES  # with targets: samples added per round
    start: str = "s0"  # s0 | replay:K | rows:R1,R2,... (retland.core.startstates)
    pack: int | str = "auto"  # lanes per packed chunk, auto or off (retland.purd.packing)

    command: ClassVar[str] = "sample"

    def argv(self) -> list[str]:
        """The `retland sample` command line of this request (options at their default left out)."""
        out = ["sample"]
        for r in self.runs:
            out += ["--run", r]
        d = SampleRequest(self.operator)
        shard = self.shard if isinstance(self.shard, str) else f"{self.shard[0]}/{self.shard[1]}"
        return out + options([
            ("--algo", self.algo), ("--env", self.env),
            ("--seeds", int_list_text(self.seeds) if self.seeds is not None else None),
            ("--steps", int_list_text(self.steps) if self.steps is not None else None),
            ("--operator", self.operator), ("--samples", self.samples), ("--horizon", self.horizon),
            ("--key-seed", self.key_seed),
            ("--source", ",".join(self.sources) if self.sources != d.sources else None),
            ("--batch-size", self.batch_size if self.batch_size != d.batch_size else None),
            ("--devices", self.devices if self.devices != d.devices else None),
            ("--target-ci", ",".join(f"{k}={v!r}" for k, v in self.targets) if self.targets else None),
            ("--max-samples", self.max_samples),
            ("--round-samples", self.round_samples if self.round_samples != d.round_samples else None),
            ("--pack", self.pack if self.pack != d.pack else None),
            ("--shard", shard if shard != d.shard else None)])

    def check(self) -> "SampleRequest":
        """Refuse, before anything is read, what cannot be honoured (SamplingError)."""
        from retland.warehouse import RUN_SOURCES

        if not 1 <= self.samples <= MAX_SAMPLES:
            raise SamplingError(f"--samples {self.samples}: give a whole number in [1, 1e9]")
        if not 1 <= self.horizon <= MAX_HORIZON:
            raise SamplingError(f"--horizon {self.horizon}: give a whole number of env steps in [1, {MAX_HORIZON}]")
        if not 0 <= self.key_seed <= MAX_SEED:
            raise SamplingError(f"--key-seed {self.key_seed}: give a whole number in [0, {MAX_SEED}]")
        for name, value, word in (("--batch-size", self.batch_size, "auto"), ("--devices", self.devices, "all")):
            if value != word and not (isinstance(value, int) and value >= 1):
                raise SamplingError(f"{name} {value!r}: give a whole number >= 1 or {word}")
        bad = [s for s in self.sources if s not in RUN_SOURCES]
        if bad or not self.sources:
            raise SamplingError(f"--source {','.join(self.sources)!r}: choose from {', '.join(RUN_SOURCES)} "
                                "(comma-separated) or all")
        if self.targets:
            for metric, width in self.targets:
                if metric not in METRICS or not width > 0:
                    raise SamplingError(f"--target-ci {metric}={width}: give half-widths > 0 of "
                                        f"{', '.join(METRICS)}")
            if self.max_samples is not None and self.max_samples < 1:
                raise SamplingError(f"--max-samples {self.max_samples}: give a whole number >= 1")
            if self.round_samples < 1:
                raise SamplingError(f"--round-samples {self.round_samples}: give a whole number >= 1")
        elif self.max_samples is not None:
            raise SamplingError("--max-samples goes with --target-ci (a fixed job takes --samples N)")
        try:  # init_state as a factor resolves per checkpoint's env; its syntax is checked here
            check_operator(self.operator, horizon=self.horizon, seed=self.key_seed)
        except ValueError as exc:
            raise SamplingError(f"--operator {self.operator!r}: {exc}") from None
        try:
            choice = parse_start(self.start)
        except ValueError as exc:
            raise SamplingError(str(exc)) from None
        if not choice.is_s0 and self.operator.strip().split(":", 1)[0].strip() == "init_state":
            raise SamplingError(f"--start {self.start}: operator init_state draws its own start state (a noisy "
                                "reset), so it takes no start row; use s0")
        parse_shard(self.shard)
        if self.pack not in ("auto", "off") and not (isinstance(self.pack, int) and not isinstance(self.pack, bool)
                                                      and self.pack >= 1):
            raise SamplingError(f"--pack {self.pack!r}: give auto, off, or the lanes per packed chunk "
                                "(a whole number >= 1)")
        return self


@dataclass(frozen=True)
class SampleJob:
    """A request resolved against a warehouse: its distributions fixed, as plain values
    (pickled into every task of an array, which each run a shard of it)."""

    root: str
    # (run_id, step, env), or (run_id, step, env, start row) for a start other than s0
    distributions: tuple[tuple, ...]
    operator: str
    horizon: int
    key_seed: int
    batch_size: int | str
    samples: int | None = None  # fixed N, or
    targets: tuple[tuple[str, float], ...] = ()  # half-widths, with
    max_samples: int | None = None
    round_samples: int | None = None
    devices: int | str = "all"
    pack: int | str = "auto"

    def specs(self) -> dict[str, OperatorSpec]:
        """The operator of each env of the job (init_state as a factor is per env)."""
        return {d[2]: parse_operator(self.operator, env=d[2], horizon=self.horizon, seed=self.key_seed)
                for d in self.distributions}

    def resolved(self) -> list[tuple[str, int, OperatorSpec]]:
        """(run_id, step, operator spec) of every distribution, in order (the spec says
        its start row)."""
        specs = self.specs()
        return [(d[0], int(d[1]), specs[d[2]].at_start(d[3] if len(d) > 3 else None)) for d in self.distributions]

    @property
    def operator_ids(self) -> list[str]:
        return sorted({spec.operator_id for spec in self.specs().values()})

    @property
    def start_rows(self) -> int:
        """Distinct start rows of the job (0: every rollout starts at s0)."""
        return len({d[3] for d in self.distributions if len(d) > 3})

    @property
    def n_planned(self) -> int:
        """N of the job's plans: the fixed N, or the most a distribution may get."""
        return self.max_samples if self.targets else self.samples


def resolve(wh, request: SampleRequest) -> SampleJob:
    """The job of a checked request: its checkpoints chosen (`select_checkpoints`; its
    refusals are SamplingError and `RunSelectionError`), its operator parsed per env."""
    chosen = select_checkpoints(wh, list(request.runs), request.algo, request.env,
                                None if request.seeds is None else list(request.seeds),
                                None if request.steps is None else list(request.steps), request.sources)
    adaptive = bool(request.targets)
    distributions = tuple((r, int(s), e) for r, s, e in chosen)
    choice = parse_start(request.start)
    if not choice.is_s0:
        rows = start_rows(wh, distributions, choice, request.key_seed)
        distributions = tuple((r, s, e, row) for r, s, e in distributions for row in rows[(r, s)])
    job = SampleJob(str(wh.root), distributions, request.operator, request.horizon,
                    request.key_seed, request.batch_size, samples=None if adaptive else request.samples,
                    targets=tuple(request.targets),
                    max_samples=(request.max_samples or request.samples) if adaptive else None,
                    round_samples=request.round_samples if adaptive else None, devices=request.devices,
                    pack=request.pack)
    job.specs()  # an operator no env of the job takes is refused now
    return job


def plan(wh, job: SampleJob, shard: tuple[int, int] | str | None = None) -> list[Plan]:
    """The plans of shard i/N of the job (`sampling.plan_job` of its N): what it
    computes, checked (chunk sizes of stored distributions) before anything is."""
    return plan_job(wh, job.resolved(), job.n_planned, batch_size=job.batch_size, shard=shard, pack=job.pack)


@dataclass
class SampleOutcome:
    """What a job (one shard of it) did."""

    shard: tuple[int, int]
    plans: int = 0  # distributions of the shard (fixed N; adaptive: 0)
    distributions: list[SampleResult] = field(default_factory=list)  # one per plan with work, per round
    adaptive: list[AdaptiveResult] = field(default_factory=list)  # to a precision: one per distribution
    seconds: float = 0.0

    @property
    def rows_written(self) -> int:
        return sum(r.rows_written for r in self.distributions)

    @property
    def busy(self) -> list[LeaseInfo]:
        """Chunks left to other live jobs that lease them (a rerun fills any gap)."""
        return [b for r in self.distributions for b in r.busy]

    @property
    def complete(self) -> int:
        """Distributions of a fixed-N shard that had nothing left to compute."""
        return self.plans - len(self.distributions)

    def summary(self) -> dict[str, Any]:
        """Plain values (what an array task returns to the process that waits for it)."""
        busy = self.busy
        out: dict[str, Any] = {"shard": f"{self.shard[0]}/{self.shard[1]}", "rows_written": self.rows_written,
                               "busy_chunks": len(busy), "busy_holders": sorted({b.holder for b in busy}),
                               "distributions": len(self.adaptive) if self.adaptive else len(self.distributions),
                               "seconds": self.seconds}
        if self.adaptive:
            out["adaptive"] = self.adaptive
        return out


class _LastCheckpoint:
    """load_checkpoint that keeps the last checkpoint it loaded: the rounds of one
    distribution load it once, and no more than one is held (with its replay buffer)."""

    def __init__(self) -> None:
        self.key: tuple[str, int] | None = None
        self.checkpoint = None

    def __call__(self, wh, run_id: str, step: int):
        if self.key != (run_id, int(step)):
            from retland.train.checkpoints import load_checkpoint

            self.key, self.checkpoint = None, None  # the old one is freed before the next loads
            self.checkpoint = load_checkpoint(wh, run_id, int(step))
            self.key = (run_id, int(step))
        return self.checkpoint


class _Loaded:
    """load_checkpoint for packed chunks that keeps the last 16 checkpoints it loaded: the
    distributions of one checkpoint's start rows load it once, and the rounds of a job to
    a precision with at most 16 open distributions load each once (more are reloaded
    each round)."""

    def __init__(self) -> None:
        self.held: dict = {}

    def __call__(self, wh, run_id: str, step: int):
        from retland.train.checkpoints import load_checkpoint

        key = (run_id, int(step))
        if key not in self.held:
            while len(self.held) >= 16:  # a few: start rows of one checkpoint, adaptive rounds' open ones
                self.held.pop(next(iter(self.held)))
            self.held[key] = load_checkpoint(wh, run_id, int(step))
        self.held[key] = self.held.pop(key)  # the most recently used last
        return self.held[key]


def _fixed(plans: list[Plan]):
    """The policy of a fixed-N job: one round, its plans."""
    yield plans


def run_job(wh, job: SampleJob, shard: tuple[int, int] | str | None = None, *, plans: list[Plan] | None = None,
        leases: Leases | bool | None = True, devices=None, progress: Callable[[int], None] | None = None,
        on_round: Callable[[AdaptiveResult], None] | None = None,
        flush_seconds: float = FLUSH_SECONDS) -> SampleOutcome:
    """Run shard i/N of `job` in this process (see the module doc).

    plans: the fixed-N job's plans when the caller made them already (`plan` of the same
    shard), else planned here. leases: True for the warehouse's (`Leases(wh.root)`), a
    `Leases`, or None/False for none. devices: a list or count overriding job.devices.
    progress(rows) after each flush; on_round(result) after each round of a job to a
    precision."""
    shard_ij = parse_shard(shard)
    t0 = time.monotonic()
    dists = job.resolved()
    lease_book = Leases(wh.root) if leases is True else (leases or None)
    devices = job.devices if devices is None else devices
    outcome = SampleOutcome(shard_ij)
    if job.targets:
        policy = rounds(wh, dists, dict(job.targets), job.max_samples, outcome.adaptive,
                        round_samples=job.round_samples, batch_size=job.batch_size, shard=shard_ij,
                        on_round=on_round, pack=job.pack)
    else:
        if plans is None:
            plans = plan_job(wh, dists, job.samples, batch_size=job.batch_size, shard=shard_ij, pack=job.pack)
        outcome.plans = len(plans)
        policy = _fixed(plans)
    load = _LastCheckpoint()
    packed_load = _Loaded()
    batch = next(policy, None)
    while batch is not None:
        # Packed plans (several distributions per chunk program) run together first.
        packed = run_packed(wh, batch, load=packed_load, leases=lease_book, devices=devices, progress=progress,
                            flush_seconds=flush_seconds) if any(p.slots > 1 and p.todo for p in batch) else {}
        done = [packed.get(d) if p.slots > 1 else
                sampling.sample_checkpoint(wh, p, load=load, leases=lease_book, devices=devices, progress=progress,
                                           flush_seconds=flush_seconds) if p.todo else None
                for d, p in enumerate(batch)]
        outcome.distributions += [d for d in done if d is not None]
        try:
            batch = policy.send(done)
        except StopIteration:
            batch = None
    outcome.seconds = time.monotonic() - t0
    return outcome


def run_request(wh, request: SampleRequest, *, devices=None, progress: Bar | None = None,
                on_plan: Callable[[SampleJob, list[Plan] | None, tuple[int, int]], None] | None = None,
                on_round: Callable[[AdaptiveResult], None] | None = None) -> SampleOutcome:
    """Sample a checked request's shard into `wh` in this process: `resolve`, `plan` (a
    fixed N), then `run_job`. `on_plan(job, plans, shard)` sees what will be computed
    before anything is (plans None for a job to a precision); `progress` gets one bar of
    the fixed job's new samples; `devices` (a list or count) overrides the request's."""
    shard = parse_shard(request.check().shard)
    job = resolve(wh, request)
    if job.targets:
        if on_plan is not None:
            on_plan(job, None, shard)
        return run_job(wh, job, shard, devices=devices, on_round=on_round)
    plans = plan(wh, job, shard)
    if on_plan is not None:
        on_plan(job, plans, shard)
    total = sum(p.new_rows for p in plans) if any(p.todo for p in plans) else 0
    with bar(progress, total, "sample", unit="samples", rate_scale=job.horizon, rate_unit="env-steps") as advance:
        return run_job(wh, job, shard, plans=plans, devices=devices, progress=advance)


def _ints(values, name: str) -> tuple[int, ...] | None:
    """A list of ints, or the command line's text of one ('0,1,5..9')."""
    if values is None:
        return None
    if isinstance(values, str):
        from retland.config.intlist import IntListError, parse_int_list

        try:
            return tuple(parse_int_list(values, name))
        except IntListError as exc:
            raise SamplingError(str(exc)) from None
    if isinstance(values, int):
        return (values,)
    return tuple(int(v) for v in values)


def sample(warehouse: str | Path | Warehouse | None = None, *, operator: str, run: str | Sequence[str] | None = None,
           algo: str | None = None, env: str | None = None, seeds: Sequence[int] | str | None = None,
           steps: Sequence[int] | str | None = None, source: str | Sequence[str] = "trained",
           samples: int = _default("samples"), horizon: int = _default("horizon"),
           key_seed: int = _default("key_seed"), batch_size: int | str = _default("batch_size"),
           devices: int | str = _default("devices"), shard: str | tuple[int, int] = _default("shard"),
           target_ci: str | dict[str, float] | None = None, max_samples: int | None = None,
           round_samples: int = ROUND_SAMPLES, start: str = "s0", progress: Callable[[int], None] | None = None,
           on_round: Callable[[AdaptiveResult], None] | None = None) -> SampleOutcome:
    """Sample post-update return distributions into a warehouse (a folder, default as
    `retland.resolve_root`, or an open `Warehouse`) as `retland sample` (without
    --executor) does, in this process; the keywords are its options.

        retland.sample("data/warehouse", run="td3-hopper", steps=[120000], operator="td3", samples=256)

    run: ids or unique prefixes (one prefix with seeds: that prefix's run of each seed);
    or algo and env, runs of `source` ("trained" by default; comma-separated, or "all").
    seeds/steps: lists of ints or the command line's text ("0,1,5..9"). target_ci:
    "ltp=0.01,cvar=5" or {"ltp": 0.01}: sample to a precision, at most max_samples
    (default samples) per distribution, in rounds of round_samples. start: "s0" (the
    reference state), "replay:K" (K rows spread over each run's buffer, seeded by
    key_seed) or "rows:R1,R2" (those rows of every checkpoint's buffer): one
    distribution per (checkpoint, row), from runs trained with store_states. Resumable: only
    missing indices are computed. Returns a `SampleOutcome` (rows_written,
    distributions, busy, adaptive); refusals raise SamplingError or
    `retland.warehouse.runs.RunSelectionError` (both ValueError)."""
    from retland.warehouse import RUN_SOURCES, Warehouse

    if isinstance(source, str):
        parts = tuple(dict.fromkeys(p.strip().lower() for p in source.split(",") if p.strip()))
        sources = RUN_SOURCES if parts == ("all",) else parts
    else:
        sources = tuple(source)
    if isinstance(target_ci, str):
        targets = tuple(parse_targets(target_ci).items())
    else:
        targets = tuple((target_ci or {}).items())
    request = SampleRequest(operator, runs=(run,) if isinstance(run, str) else tuple(run or ()), algo=algo, env=env,
                            seeds=_ints(seeds, "seeds"), steps=_ints(steps, "steps"), sources=sources,
                            samples=samples, horizon=horizon, key_seed=key_seed, batch_size=batch_size,
                            devices=devices, shard=shard, targets=targets, max_samples=max_samples,
                            round_samples=round_samples, start=start).check()
    wh = warehouse if isinstance(warehouse, Warehouse) else Warehouse.open(warehouse, create=False)
    job = resolve(wh, request)
    return run_job(wh, job, request.shard, progress=progress, on_round=on_round)
