"""Post-update returns from other start states: the paper's Appendix A.4 (Fig. 10).

The paper measures the LTP of a post-update return distribution when the rollouts start
not at the reference state s0 but at states the agent collected during training, named by
their index in the replay buffer, and plots, per seed, LTP against that collection index,
averaged over the run's checkpoints. Here:

- `StartStatesRequest` (typed, frozen): which runs and checkpoints, the operator (default:
  each run's own update), K rows per run (`replay:K`, `retland.core.startstates.spread_rows`)
  or listed rows, N samples, horizon, key seed, and whether to sample s0 as the reference.
- `prepare(wh, request)`: the jobs, resolved and planned (every refusal comes here);
  `run(wh, request, progress=None)`: samples what is missing (one `retland.purd.job` job
  for the replay rows, one for s0: the same rows `retland sample --start` writes) and
  returns a `StartStatesResult`: the view `start_state_ltp` (schema/60_start_states.sql)
  for those runs and the comparison `compare_ltp` makes.
- `compare_ltp(stats)`: over the checkpoints sampled both ways, the mean LTP from replay
  rows (each checkpoint's mean over its rows) and from s0, and their paired difference,
  with percentile bootstrap CIs over checkpoints; and the share of replay-row
  distributions with LTP > 0.

The command is `retland start-states`; docs/method.md "Post-update returns from other
start states" gives every default and its source.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar

import numpy as np
import polars as pl

from retland.config.settings import SampleSettings, default_of
from retland.purd.engine import SamplingError

DEFAULT_ROWS = 8  # start rows per run (the paper does not say how many; Fig. 10 shows many)
DEFAULT_SAMPLES = 200  # per (checkpoint, row); the paper uses 1000 per distribution
BOOTSTRAP = 1000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class StartStatesRequest:
    """What `retland start-states` does, parsed. start: "replay:K" or "rows:R1,R2"
    (None: replay:rows)."""

    runs: tuple[str, ...] = ()
    algo: str | None = None
    env: str | None = None
    seeds: tuple[int, ...] | None = None
    steps: tuple[int, ...] | None = None
    sources: tuple[str, ...] = ("trained",)
    operator: str | None = None  # None: each run's own update (its algo)
    rows: int = DEFAULT_ROWS
    start: str | None = None
    samples: int = DEFAULT_SAMPLES
    horizon: int = default_of(SampleSettings, "horizon")
    key_seed: int = default_of(SampleSettings, "key_seed")
    batch_size: int | str = "auto"
    s0: bool = True  # also sample (or read) the s0 distributions of the same checkpoints
    bootstrap: int = BOOTSTRAP
    bootstrap_seed: int = 0

    command: ClassVar[str] = "start-states"

    def argv(self) -> list[str]:
        """The `retland start-states` command line of this request (options at their
        defaults left out)."""
        from retland.config.requests import int_list_text, options

        runs = [x for r in self.runs for x in ("--run", r)]
        return ["start-states"] + runs + options([
            ("--algo", self.algo), ("--env", self.env),
            ("--seeds", int_list_text(self.seeds) if self.seeds is not None else None),
            ("--source", ",".join(self.sources) if self.sources != ("trained",) else None),
            ("--steps", int_list_text(self.steps) if self.steps is not None else None),
            ("--operator", self.operator),
            ("--rows", self.rows if self.start is None and self.rows != DEFAULT_ROWS else None),
            ("--start", self.start), ("--samples", self.samples), ("--horizon", self.horizon),
            ("--key-seed", self.key_seed or None),
            ("--batch-size", self.batch_size if self.batch_size != "auto" else None),
            ("--no-s0", not self.s0), ("--bootstrap", self.bootstrap if self.bootstrap != BOOTSTRAP else None),
            ("--bootstrap-seed", self.bootstrap_seed or None)])

    @property
    def start_text(self) -> str:
        return self.start if self.start is not None else f"replay:{self.rows}"

    def check(self) -> "StartStatesRequest":
        from retland.core.startstates import parse_start

        if self.bootstrap < 1:
            raise SamplingError(f"--bootstrap {self.bootstrap}: give a whole number >= 1")
        if self.start is None and not 1 <= self.rows <= 10_000:
            raise SamplingError(f"--rows {self.rows}: give a whole number in [1, 10000]")
        try:
            choice = parse_start(self.start_text)
        except ValueError as exc:
            raise SamplingError(str(exc)) from None
        if choice.is_s0:
            raise SamplingError("--start s0: start-states compares replay rows with s0; give replay:K or rows:R1,R2")
        for req in self.sample_requests(self.operator or "td3"):
            req.check()
        return self

    def sample_requests(self, operator: str):
        """The `SampleRequest`s of one operator: replay rows, then s0 if asked."""
        from retland.purd.job import SampleRequest

        common = dict(runs=self.runs, algo=self.algo, env=self.env, seeds=self.seeds, steps=self.steps,
                      sources=self.sources, samples=self.samples, horizon=self.horizon, key_seed=self.key_seed,
                      batch_size=self.batch_size)
        out = [SampleRequest(operator, start=self.start_text, **common)]
        if self.s0:
            out.append(SampleRequest(operator, **common))
        return out


@dataclass
class StartStatesResult:
    rows_written: int = 0
    distributions: int = 0  # sampled or found, replay rows and s0
    ltp: pl.DataFrame = field(default_factory=pl.DataFrame)  # start_state_ltp for the request's runs
    stats: pl.DataFrame = field(default_factory=pl.DataFrame)  # start_state_stats for them
    comparison: dict = field(default_factory=dict)  # compare_ltp
    seconds: float = 0.0


def _operators(wh, request: StartStatesRequest, run_ids: list[str]) -> list[tuple[str, list[str] | None]]:
    """(operator, its runs) pairs: the request's operator on every run (None: as chosen), or
    each algorithm's own update on that algorithm's runs."""
    if request.operator is not None:
        return [(request.operator, None)]
    from retland.warehouse.sqlgen import in_list

    cond, params = in_list("run_id", run_ids)
    by_algo: dict[str, list[str]] = {}
    for r in wh.records(f"SELECT run_id, algo FROM runs WHERE {cond} ORDER BY run_id", params):
        by_algo.setdefault(r["algo"], []).append(r["run_id"])
    if len(by_algo) == 1:
        return [(next(iter(by_algo)), None)]
    return [(algo, ids) for algo, ids in sorted(by_algo.items())]


@dataclass
class StartStatesPlan:
    """The request's sampling jobs, resolved (rows chosen, runs checked), with their work."""

    run_ids: list[str]
    jobs: list  # retland.purd.job.SampleJob: per operator, the replay rows' then s0's
    plans: list  # the fixed-N plans of each job
    new_rows: int  # samples to compute


def prepare(wh, request: StartStatesRequest) -> StartStatesPlan:
    """Resolve and plan every job of the request; refusals (SamplingError,
    RunSelectionError: one line) come here, before anything is written."""
    from retland.purd.job import plan, resolve
    from retland.purd.selection import select_checkpoints

    request.check()
    chosen = select_checkpoints(wh, list(request.runs), request.algo, request.env,
                                None if request.seeds is None else list(request.seeds),
                                None if request.steps is None else list(request.steps), request.sources)
    run_ids = sorted({r for r, _, _ in chosen})
    jobs = []
    for operator, ids in _operators(wh, request, run_ids):
        # each run's own update samples that run only: runs of another algo cannot take it
        sub = request if ids is None else StartStatesRequest(**{**request.__dict__, "runs": tuple(ids), "algo": None,
                                                                  "env": None, "seeds": None})
        for req in sub.sample_requests(operator):
            jobs.append(resolve(wh, req.check()))
    plans = [plan(wh, job) for job in jobs]
    return StartStatesPlan(run_ids, jobs, plans, sum(p.new_rows for ps in plans for p in ps))


def run(wh, request: StartStatesRequest, *, progress: Callable[[int], None] | None = None,
        prepared: StartStatesPlan | None = None) -> StartStatesResult:
    """Sample the request's missing distributions and summarise them (see the module doc).
    prepared: `prepare(wh, request)` when the caller made it already (to size a progress
    bar); progress(rows) after each flush."""
    import time

    from retland.purd.job import run_job

    t0 = time.monotonic()
    prepared = prepared or prepare(wh, request)
    result = StartStatesResult()
    for job, plans in zip(prepared.jobs, prepared.plans):
        done = run_job(wh, job, plans=plans, progress=progress)
        result.rows_written += done.rows_written
        result.distributions += len(job.distributions)
    result.stats, result.ltp = summary_frames(wh, prepared.run_ids, [j.operator_ids for j in prepared.jobs])
    result.comparison = compare_ltp(result.stats, n_resamples=request.bootstrap, seed=request.bootstrap_seed)
    result.seconds = time.monotonic() - t0
    return result


def run_request(wh, request: StartStatesRequest, *, progress=None) -> StartStatesResult:
    """`run` with a bar of the samples to compute (progress: a bar factory,
    retland.config.requests.Bar): the runner `retland start-states` and a study's
    [start_states] stage call."""
    from retland.config.requests import bar

    prepared = prepare(wh, request)
    with bar(progress, prepared.new_rows, "start-states", unit="samples", rate_scale=request.horizon,
             rate_unit="env-steps") as advance:
        return run(wh, request, progress=advance, prepared=prepared)


def summary_frames(wh, run_ids: list[str], operator_ids: list[list[str]]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(start_state_stats, start_state_ltp) of these runs and base operators."""
    from retland.warehouse.sqlgen import in_list

    bases = sorted({o for ids in operator_ids for o in ids})
    rc, rp = in_list("run_id", run_ids)
    oc, op = in_list("base_operator_id", bases)
    stats = wh.query(f"SELECT * FROM start_state_stats WHERE {rc} AND {oc}", rp + op)
    ltp = wh.query(f"SELECT * FROM start_state_ltp WHERE {rc} AND {oc}", rp + op)
    return stats, ltp


def compare_ltp(stats: pl.DataFrame, n_resamples: int = BOOTSTRAP, seed: int = 0,
                confidence: float = CONFIDENCE) -> dict:
    """Replay-row LTP against s0 LTP over the checkpoints (run, step, base operator)
    sampled both ways: {checkpoints, rows, replay_ltp, s0_ltp, difference (each a value
    and a (lo, hi) percentile bootstrap CI over checkpoints), share_rows_ltp_positive,
    share_s0_ltp_positive}, rows_mode_nonpositive (replay-row distributions with mode <= 0,
    whose LTP counts against a threshold <= 0) and positive_mode: the same comparison with
    every distribution of mode <= 0 left out. Empty when no checkpoint has both."""
    if stats.is_empty():
        return {}
    out = _compare(stats, n_resamples, seed, confidence)
    if out and "mode_nonpositive" in stats.columns:
        positive = _compare(stats.filter(~pl.col("mode_nonpositive").fill_null(True)), n_resamples, seed, confidence)
        out["rows_mode_nonpositive"] = int(stats.filter(pl.col("start_row").is_not_null())["mode_nonpositive"]
                                           .fill_null(True).sum())
        out["positive_mode"] = positive
    return out


def _compare(stats: pl.DataFrame, n_resamples: int, seed: int, confidence: float) -> dict:
    key = ["run_id", "step", "base_operator_id"]
    rows = stats.filter(pl.col("start_row").is_not_null())
    s0 = stats.filter(pl.col("start_row").is_null()).select(*key, pl.col("ltp").alias("s0_ltp"))
    per = (rows.group_by(key).agg(pl.col("ltp").mean().alias("row_ltp"), pl.len().alias("rows"))
           .join(s0, on=key, how="inner").sort(key))
    if per.is_empty():
        return {}
    a, b = per["row_ltp"].to_numpy(), per["s0_ltp"].to_numpy()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(int(n_resamples), len(a)))
    tail = (1 - confidence) / 2

    def ci(x):
        lo, hi = np.quantile(x[idx].mean(axis=1), [tail, 1 - tail])
        return float(x.mean()), (float(lo), float(hi))

    paired = rows.join(s0, on=key, how="inner")
    return {"checkpoints": len(per), "rows": int(per["rows"].sum()), "replay_ltp": ci(a), "s0_ltp": ci(b),
            "difference": ci(a - b),
            "share_rows_ltp_positive": float((paired["ltp"] > 0).mean()),
            "share_s0_ltp_positive": float((b > 0).mean())}
