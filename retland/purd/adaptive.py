"""Sampling to a precision: each distribution gets as many samples as its confidence
intervals need, not a fixed N.

A target is a half-width per statistic, e.g. {"ltp": 0.01, "cvar": 5.0}. A distribution
is sampled in rounds of whole chunks: round j holds indices [0, n_j) with
n_j = min(j · R', max) and R' = R rounded up to whole chunks of the distribution's B.
After each round the 95% percentile bootstrap CI of every targeted statistic is computed
from the n_j stored returns (`retland.stats.bootstrap_ci`: 1000 resamples, seed 0, the
definitions of `purd_stats`; the interval `retland stats --bootstrap` prints for a
distribution of exactly those rows). The distribution stops at the first round where
every half-width (hi − lo) / 2 is at most its target, or at max.

The rows are those of a fixed-N job: indices 0..n−1 with the same chunk size give the
same rows, so an adaptive distribution is a prefix of the fixed-N one and can later be
extended by `retland sample --samples N`. The stopping n is a deterministic function of
the rows, hence of the seed.

LTP is a proportion: with no return below β·mode (or all below) the bootstrap interval
is [p, p], width 0, whatever n. Such an interval is widened to the rule of three
(zero events in n: 95% upper bound 3/n), i.e. half-width 1.5/n, so a distribution without
observed failures is not declared precise after a handful of samples.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Generator, Sequence

import numpy as np

from retland.purd.engine import SamplingError
from retland.purd.operators import OperatorSpec
from retland.purd.packing import resolve_pack
from retland.purd.sampling import Plan, SampleResult, parse_shard, plan_job, take_shard

METRICS = ("ltp", "cvar", "mean", "std")
ROUND_SAMPLES = 250  # default round size R (rounded up to whole chunks)
N_RESAMPLES, CONFIDENCE, BOOTSTRAP_SEED = 1000, 0.95, 0


def parse_targets(text: str) -> dict[str, float]:
    """'ltp=0.01,cvar=5' -> {'ltp': 0.01, 'cvar': 5.0}: half-widths > 0 of ltp, cvar,
    mean and std, each at most once."""
    out: dict[str, float] = {}
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise SamplingError(f"--target-ci {text!r}: give METRIC=HALF_WIDTH pairs, e.g. ltp=0.01,cvar=5")
    for part in parts:
        name, eq, value = part.partition("=")
        name = name.strip().lower()
        if not eq or name not in METRICS:
            raise SamplingError(f"--target-ci {text!r}: {part!r} is not METRIC=HALF_WIDTH with METRIC one of "
                                f"{', '.join(METRICS)} (e.g. ltp=0.01,cvar=5)")
        try:
            width = float(value)
        except ValueError:
            raise SamplingError(f"--target-ci {text!r}: half-width {value.strip()!r} of {name} is not a number") from None
        if not (math.isfinite(width) and width > 0):
            raise SamplingError(f"--target-ci {text!r}: half-width of {name} must be a number > 0, got {value.strip()}")
        if name in out:
            raise SamplingError(f"--target-ci {text!r}: {name} is given twice")
        out[name] = width
    return out


def round_sizes(max_samples: int, round_samples: int, batch_size: int) -> list[int]:
    """n after each round: multiples of R rounded up to whole chunks, capped at max."""
    if max_samples < 1:
        raise SamplingError(f"--max-samples must be >= 1, got {max_samples}")
    if round_samples < 1:
        raise SamplingError(f"--round-samples must be >= 1, got {round_samples}")
    step = math.ceil(round_samples / batch_size) * batch_size
    return sorted({min(max_samples, step * j) for j in range(1, math.ceil(max_samples / step) + 1)})


@dataclass
class Interval:
    """The CI of one targeted statistic at n samples."""

    metric: str
    value: float  # NaN when undefined (no metric today: ltp is defined for every mode)
    lo: float
    hi: float
    half_width: float  # NaN when the statistic is undefined in some resample
    target: float

    @property
    def met(self) -> bool:
        return bool(np.isfinite(self.half_width) and self.half_width <= self.target)


def intervals(returns, targets: dict[str, float], *, alpha: float = 0.1, beta: float = 0.5,
              seed: int = BOOTSTRAP_SEED, n_resamples: int = N_RESAMPLES) -> list[Interval]:
    """The bootstrap CI of each targeted statistic of `returns` [n] (see the module doc)."""
    from retland import stats

    r = np.asarray(returns, dtype=np.float64)
    n = r.size
    out = []
    for metric, target in targets.items():
        value = getattr(stats, metric)(r, alpha=alpha) if metric == "cvar" else (
            getattr(stats, metric)(r, beta=beta) if metric == "ltp" else getattr(stats, metric)(r))
        value = float("nan") if value is None else float(value)
        lo, hi = stats.bootstrap_ci(r, metric, n_resamples=n_resamples, confidence=CONFIDENCE, seed=seed,
                                    alpha=alpha, beta=beta)
        half = (hi - lo) / 2
        if metric == "ltp" and value in (0.0, 1.0):
            half = max(half, 1.5 / n)  # rule of three: no event in n draws
        out.append(Interval(metric, value, lo, hi, half, target))
    return out


@dataclass
class AdaptiveResult:
    run_id: str
    step: int
    operator_id: str
    batch_size: int
    n: int = 0  # samples the decision used (indices 0..n-1)
    met: bool = False
    rounds: int = 0
    rows_written: int = 0
    seconds: float = 0.0
    intervals: list[Interval] = field(default_factory=list)
    stopped: str = ""  # why it stopped: "target met", "max samples", or what blocked it


def stored_prefix(wh, run_id: str, step: int, operator_id: str, n: int) -> np.ndarray:
    """Returns of indices 0..n-1 of a distribution, in index order (fewer if missing)."""
    rows = wh.records('SELECT "return" AS r FROM post_update_returns WHERE run_id = ? AND step = ? '
                      "AND operator_id = ? AND update_index < ? ORDER BY update_index",
                      [run_id, int(step), operator_id, int(n)])
    return np.array([row["r"] for row in rows], dtype=np.float64)


def rounds(wh, distributions: Sequence[tuple[str, int, OperatorSpec]], targets: dict[str, float],
           max_samples: int, results: list[AdaptiveResult], *, round_samples: int = ROUND_SAMPLES,
           batch_size: int | str | None = "auto", shard: tuple[int, int] | str | None = None, alpha: float = 0.1,
           beta: float = 0.5, on_round: Callable[[AdaptiveResult], None] | None = None,
           pack: int | str | None = "off") -> Generator[list[Plan], list[SampleResult | None], None]:
    """The precision policy of a sampling job (`retland.purd.job.run`): the plans of each
    round, one distribution at a time (of shard i/N: whole distributions, contiguous
    ranges of the list), until its targets are met or it holds max_samples; see the
    module doc.

    A generator: it yields a round's plans ([one plan]) and is sent back what the job's
    loop made of them (a `SampleResult`, or None for a plan with nothing to compute). It
    appends one `AdaptiveResult` per distribution to `results`, and calls
    on_round(result) after each round with the distribution's state so far. With `pack`
    (`packing.resolve_pack`) room for more than one chunk per packed chunk, a round is
    every open distribution's next chunks, packed, instead."""
    targets = {k: float(v) for k, v in targets.items()}
    bad = [k for k in targets if k not in METRICS]
    if bad or not targets:
        raise SamplingError(f"targets {sorted(bad) or 'none'}: choose from {', '.join(METRICS)}")
    mine = take_shard(list(distributions), parse_shard(shard))
    # The chunk size of each distribution as a job of max_samples would choose it (the
    # recorded one if it has rows); checked for all before anything is computed. A new
    # distribution under --batch-size auto takes at most a round (rounded up to a multiple
    # of 8): an accelerator's auto size (4096) would make the first round the whole job.
    cap = 8 * math.ceil(round_samples / 8)
    sizes = [p.batch_size if p.present or batch_size not in (None, "auto") else min(p.batch_size, cap)
             for p in plan_job(wh, mine, max_samples, batch_size=batch_size)]
    def after(res: AdaptiveResult, done: SampleResult | None, n: int) -> bool:
        """Record a distribution's round of n; whether it stops."""
        res.rounds += 1
        if done is not None:
            res.rows_written += done.rows_written
            res.seconds += done.seconds
        r = stored_prefix(wh, res.run_id, res.step, res.operator_id, n)
        if r.size < n:
            holders = sorted({b.holder for b in done.busy}) if done is not None else []
            res.stopped = (f"indices below {n} are being computed by another job ({', '.join(holders)}); "
                           "rerun when it is done" if holders else f"only {r.size} of {n} rows stored")
            return True
        res.n, res.intervals = n, intervals(r, targets, alpha=alpha, beta=beta)
        res.met = all(iv.met for iv in res.intervals)
        if on_round is not None:
            on_round(res)
        if res.met:
            res.stopped = "target met"
        return res.met

    width = resolve_pack(pack)
    if width and any(width // b > 1 for b in sizes):
        # Packed: round j samples every distribution (of one chunk size) still open at
        # once, its new chunks [n_{j-1}, n_j) packed (`retland.purd.packing`).
        todo = [AdaptiveResult(run_id, int(step), spec.operator_id, b) for (run_id, step, spec), b in zip(mine, sizes)]
        results.extend(todo)
        for b in dict.fromkeys(sizes):
            members = [i for i, size in enumerate(sizes) if size == b]
            prev = 0
            for n in round_sizes(max_samples, round_samples, b):
                done = yield plan_job(wh, [mine[i] for i in members], n, batch_size=b, pack=pack, start=prev)
                members = [i for i, d in zip(members, done) if not after(todo[i], d, n)]
                prev = n
                if not members:
                    break
            for i in members:
                todo[i].stopped = "max samples"
        return
    for (run_id, step, spec), b in zip(mine, sizes):
        res = AdaptiveResult(run_id, int(step), spec.operator_id, b)
        results.append(res)
        for n in round_sizes(max_samples, round_samples, b):
            (done,) = yield plan_job(wh, [(run_id, step, spec)], n, batch_size=b)
            if after(res, done, n):
                break
        else:
            res.stopped = "max samples"
