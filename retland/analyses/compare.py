"""Comparisons across algorithms with rliable's estimators (`retland compare`, the
report's Comparisons section).

Agarwal et al. 2021, "Deep RL at the edge of the statistical precipice" (the rliable
library), compare algorithms over a few runs on several tasks with three tools, all
reproduced here in NumPy (rliable itself is not a dependency):

- the interquartile mean (IQM) of the scores, per task and over the pooled runs × tasks
  scores (`iqm`, from `retland.stats`);
- a stratified percentile bootstrap CI: runs are redrawn with replacement within each
  task independently, the statistic recomputed, and the 2.5% / 97.5% quantiles taken
  (`stratified_bootstrap_ci`, from `retland.stats`);
- the probability of improvement P(X > Y): for each task, the Mann–Whitney U statistic of
  X's runs against Y's divided by n·m (the share of pairs where X's score is higher, ties
  counting ½), averaged over tasks (`probability_of_improvement`), with a stratified
  bootstrap CI that redraws X's and Y's runs independently within each task
  (`probability_of_improvement_ci`, rliable's StratifiedIndependentBootstrap).

What a score is (docs/method.md, "Comparing algorithms"): one value per (run, env), the
chosen statistic (`METRICS`) of the run's post-update return distributions under ONE
operator (the run's own update by default: an operator id equal to the algo or starting
with `<algo>[`, e.g. td3[h=1000,seed=0] for a TD3 run), averaged over the run's selected
checkpoints (all by default, the last, or one step). LTP is computed for every mode; the
distributions whose mode is ≤ 0 (flag `mode_nonpositive`) are included and counted. A
statistic that is NULL (none of the metrics today) is left out of the mean and counted.

Every interval draws from `numpy.random.default_rng(seed)` anew, so an interval does not
depend on which other intervals were computed: strata in env order, and for P(X > Y) in
each env X's index draw, then Y's, each one call `rng.integers(0, n, size=(reps, n))`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from itertools import combinations

import duckdb
import numpy as np
import polars as pl

from ..stats import _strata, iqm, stratified_bootstrap_ci
from ..warehouse.readonly import query_error
from .distributions import stats_relation

__all__ = ["METRICS", "BY", "CompareError", "RunScores", "Comparison", "iqm", "stratified_bootstrap_ci",
           "probability_of_improvement", "probability_of_improvement_ci", "read_stats", "run_scores", "require_groups",
           "compare",
           "rliable_scores", "parse_step"]

# Each metric and the direction in which it is better.
METRICS = {"ltp": "lower", "cvar": "higher", "mean": "higher", "std": "lower"}
METRIC_TEXT = {"ltp": "left-tail probability: share of post-update returns below β × mode",
               "cvar": "CVaR: mean of the worst α share of post-update returns",
               "mean": "mean post-update return", "std": "standard deviation of the post-update returns"}
# Run attributes a comparison can group by (each run belongs to exactly one group).
BY = ("algo", "variant", "source")
# The columns of `read_stats` (what --where can name).
STATS_COLUMNS = ("algo", "env", "variant", "seed", "step", "operator", "n", "mean", "std", "skewness", "mode", "ltp",
                 "mode_nonpositive", "cvar", "run_id", "source")
DEFAULT_SOURCES = ("trained", "imported", "added")
DEFAULT_REPS = 2000
MAX_REPS = 1_000_000
CONFIDENCE = 0.95
OWN = "own"
ALL = "all"  # the aggregate row: every env that every group has
UNKNOWN = "unknown"  # the group of a run whose `by` value is NULL
# Bootstrap resamples × runs × runs compared at once by probability_of_improvement_ci.
_PAIR_CELLS = 4_000_000


class CompareError(ValueError):
    """A comparison that cannot be made from what was asked (bad option or too few groups)."""


# ---------------------------------------------------------------------------------------
# Estimators
# ---------------------------------------------------------------------------------------
def _paired_tasks(x, y) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Task-aligned lists of score arrays from two layouts `stratified_bootstrap_ci` takes
    (mappings are aligned by key)."""
    if isinstance(x, dict) and isinstance(y, dict):
        if set(x) != set(y):
            raise ValueError(f"x and y must have the same tasks; got {sorted(x)} and {sorted(y)}")
        y = {k: y[k] for k in x}
    xs, ys = _strata(x), _strata(y)
    if len(xs) != len(ys):
        raise ValueError(f"x has {len(xs)} tasks and y {len(ys)}; give the same tasks in the same order")
    return xs, ys


def _improvement_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Share of pairs with x > y, ties ½, for each row: x [B, n], y [B, m] -> [B]."""
    out = np.empty(x.shape[0])
    step = max(1, _PAIR_CELLS // (x.shape[1] * y.shape[1]))
    for s in range(0, x.shape[0], step):
        a, b = x[s:s + step, :, None], y[s:s + step, None, :]
        out[s:s + step] = (a > b).mean(axis=(1, 2)) + 0.5 * (a == b).mean(axis=(1, 2))
    return out


def probability_of_improvement(x, y) -> float:
    """P(X > Y) as rliable defines it: per task, the Mann–Whitney U statistic of x's runs
    against y's over n·m (pairs where x is higher, ties ½), averaged over tasks.

    x, y: one 1-D array of run scores per task, in the same task order (a list, a
    `{task: runs}` mapping with the same keys, or a `[runs, tasks]` array); run counts may
    differ. Higher scores count as better: negate both for a lower-is-better metric."""
    xs, ys = _paired_tasks(x, y)
    return float(np.mean([_improvement_rows(a[None], b[None])[0] for a, b in zip(xs, ys)]))


def probability_of_improvement_ci(x, y, n_resamples: int = DEFAULT_REPS, confidence: float = CONFIDENCE,
                                  seed: int = 0) -> tuple[float, float]:
    """Stratified percentile bootstrap CI of `probability_of_improvement(x, y)`: in each
    resample, x's runs and y's runs are redrawn with replacement independently within
    every task (rliable's StratifiedIndependentBootstrap). The draws come from
    `numpy.random.default_rng(seed)`, task by task: x's `[n_resamples, n]` indices, then
    y's `[n_resamples, m]`."""
    xs, ys = _paired_tasks(x, y)
    _check_reps(n_resamples, minimum=1)
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    rng = np.random.default_rng(seed)
    total = np.zeros(int(n_resamples))
    for a, b in zip(xs, ys):
        ia = rng.integers(0, a.size, size=(int(n_resamples), a.size))
        ib = rng.integers(0, b.size, size=(int(n_resamples), b.size))
        total += _improvement_rows(a[ia], b[ib])
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(total / len(xs), [tail, 1 - tail])
    return float(lo), float(hi)


# ---------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------
def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise CompareError(f"--metric {metric!r}: choose from {', '.join(METRICS)}")
    return metric


def check_by(by: str) -> str:
    """`by` when it is a run attribute in `BY`; the message says whether a refused name
    is a column of the statistics at all."""
    if by not in BY:
        what = ("is a column, but not one that compare groups runs by" if by in STATS_COLUMNS
                else "is not a column")
        raise CompareError(f"--by {by!r} {what}; choose from {', '.join(BY)}")
    return by


def parse_step(text: str | int) -> str | int:
    """'all' | 'last' | a checkpoint step (a whole number >= 0)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        word = str(text).strip().lower()
        if word in ("all", "last"):
            return word
        try:
            value = int(word)
        except ValueError:
            raise CompareError(f"--step {text!r}: give all, last or a checkpoint step (a whole number)") from None
    if value < 0:
        raise CompareError(f"--step {text!r}: a checkpoint step is a whole number >= 0")
    return value


def _check_reps(reps, minimum: int = 0) -> int:
    if isinstance(reps, bool) or int(reps) != reps or not minimum <= reps <= MAX_REPS:
        raise CompareError(f"--bootstrap {reps}: give a whole number in [{minimum}, {MAX_REPS}]")
    return int(reps)


# ---------------------------------------------------------------------------------------
# Scores from the warehouse
# ---------------------------------------------------------------------------------------
def read_stats(con: duckdb.DuckDBPyConnection, where: str | None = None, sources=DEFAULT_SOURCES,
               alpha: float = 0.1, beta: float = 0.5) -> pl.DataFrame:
    """The statistics of every distribution `where` keeps, from the `purd_stats` macro
    (read only): the rows `retland stats` prints."""
    try:
        return stats_relation(con, alpha, beta, where, sources).pl()
    except duckdb.Error as exc:
        raise query_error(exc) from None


@dataclass(frozen=True)
class RunScores:
    """One score per (group, env, run): `frame` has group, env, run_id, seed, score,
    checkpoints (how many distributions the score averages), ordered by group, env,
    seed, run_id (the order the bootstrap draws runs by)."""

    metric: str
    by: str
    operator: str
    step: str | int
    frame: pl.DataFrame
    undefined: int  # distributions left out because the metric is NULL there
    mode_nonpositive: int = 0  # LTP scores only: distributions included whose mode is <= 0

    @property
    def groups(self) -> list[str]:
        return sorted(self.frame["group"].unique().to_list())

    @property
    def envs(self) -> list[str]:
        return sorted(self.frame["env"].unique().to_list())

    def runs(self, group: str, env: str) -> np.ndarray:
        """The scores of one group's runs on one env (empty if it has none)."""
        sub = self.frame.filter((pl.col("group") == group) & (pl.col("env") == env))
        return sub["score"].to_numpy().astype(np.float64)

    def common_envs(self) -> list[str]:
        """The envs every group has a score on: what the aggregate pools."""
        return [e for e in self.envs if all(self.runs(g, e).size for g in self.groups)]


def _operator_filter(operator: str) -> pl.Expr:
    op = pl.col("operator")
    # rollouts from replay rows (start=row<r>) are other distributions than the run's from s0:
    # only an operator id that names its start row selects them
    from_s0 = ~op.str.contains(r"[\[,]start=row[0-9]+,")
    if operator == OWN:
        algo = pl.col("algo").fill_null("")
        return ((op == algo) | op.str.starts_with(algo + "[")) & from_s0
    if re.search(r"[\[,]start=row[0-9]+,", operator):
        return op == operator
    return ((op == operator) | op.str.starts_with(operator + "[")) & from_s0


def run_scores(stats: pl.DataFrame, metric: str, by: str = "algo", operator: str = OWN,
               step: str | int = "all") -> RunScores:
    """Each run's score per env from the statistics of its distributions (`read_stats`).

    operator: 'own' (each run's own update: an operator id equal to its algo or starting
    with `<algo>[`), or an operator id, or a kind name matching ids `<name>[…]`. A run
    left with distributions under more than one operator is refused (name one id).
    step: 'all' (the mean over every checkpoint left), 'last' (each run's last
    checkpoint) or one step. Distributions whose metric is NULL are left out and counted
    in `undefined`; for LTP, those with mode <= 0 are included and counted in
    `mode_nonpositive`."""
    check_metric(metric)
    check_by(by)
    step = parse_step(step)
    if not operator or not operator.strip():
        raise CompareError("--operator is empty: give own, an operator id or an operator kind")
    operator = operator.strip()
    df = stats.filter(_operator_filter(operator)) if stats.height else stats
    if df.height:
        several = (df.group_by("run_id").agg(pl.col("operator").unique().sort()).filter(pl.col("operator").list.len() > 1)
                   .sort("run_id"))
        if several.height:
            run_id, ops = several.row(0)
            which = "its own update" if operator == OWN else repr(operator)
            raise CompareError(f"run {run_id} has distributions under {len(ops)} operators matching {which} "
                               f"({', '.join(ops)}); choose one with --operator ID")
    if step == "last":
        df = df.filter(pl.col("step") == pl.col("step").max().over("run_id"))
    elif step != "all":
        df = df.filter(pl.col("step") == step)
    undefined = int(df[metric].is_null().sum()) if df.height else 0
    df = df.filter(pl.col(metric).is_not_null()) if df.height else df
    nonpositive = (int(df["mode_nonpositive"].fill_null(False).sum())
                   if metric == "ltp" and df.height and "mode_nonpositive" in df.columns else 0)
    schema = {"group": pl.String, "env": pl.String, "run_id": pl.String, "seed": pl.Int64, "score": pl.Float64,
              "checkpoints": pl.UInt32}
    if df.height == 0:
        frame = pl.DataFrame(schema=schema)
    else:
        frame = (df.with_columns(group=pl.col(by).cast(pl.String).fill_null(UNKNOWN),
                                 env=pl.col("env").fill_null(UNKNOWN))
                 .group_by("group", "env", "run_id")
                 .agg(seed=pl.col("seed").first().cast(pl.Int64), score=pl.col(metric).mean().cast(pl.Float64),
                      checkpoints=pl.len())
                 .sort("group", "env", "seed", "run_id", nulls_last=True)
                 .cast(schema))
    return RunScores(metric=metric, by=by, operator=operator, step=step, frame=frame, undefined=undefined,
                     mode_nonpositive=nonpositive)


# ---------------------------------------------------------------------------------------
# The comparison
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Comparison:
    """Interval estimates per env and aggregated, and P(improvement) per pair of groups.

    estimates: env, group, runs, iqm, lo, hi (env 'all' = pooled over `common_envs`).
    improvements: env, a, b, runs_a, runs_b, p, lo, hi, where p = P(a better than b) in
    the metric's good direction. lo/hi are NULL when reps = 0."""

    scores: RunScores
    direction: str  # 'lower' or 'higher' is better
    common_envs: list[str]
    estimates: pl.DataFrame
    improvements: pl.DataFrame
    reps: int
    seed: int

    @property
    def metric(self) -> str:
        return self.scores.metric

    @property
    def groups(self) -> list[str]:
        return self.scores.groups

    def to_json(self) -> dict:
        """Both tables and what they were computed from, as plain JSON values."""
        s = self.scores
        return {"metric": s.metric, "better": self.direction, "by": s.by, "operator": s.operator,
                "step": s.step, "reps": self.reps, "seed": self.seed, "confidence": CONFIDENCE,
                "groups": self.groups, "envs": s.envs, "aggregate_envs": self.common_envs,
                "undefined_distributions": s.undefined, "mode_nonpositive_distributions": s.mode_nonpositive,
                "estimates": self.estimates.to_dicts(), "improvements": self.improvements.to_dicts()}


ESTIMATE_SCHEMA = {"env": pl.String, "group": pl.String, "runs": pl.Int64, "iqm": pl.Float64, "lo": pl.Float64,
                   "hi": pl.Float64}
IMPROVEMENT_SCHEMA = {"env": pl.String, "a": pl.String, "b": pl.String, "runs_a": pl.Int64, "runs_b": pl.Int64,
                      "p": pl.Float64, "lo": pl.Float64, "hi": pl.Float64}


def require_groups(scores: RunScores) -> list[str]:
    """The groups of `scores`, refused (one line) when there are fewer than 2 to compare."""
    groups = scores.groups
    if len(groups) < 2:
        found = f"1 {scores.by} ({groups[0]})" if groups else f"no {scores.by}"
        more = ("train and sample a second algorithm (e.g. `retland train --algo sac --env ENV`, then `retland "
                "sample --algo sac --env ENV --operator sac`)" if scores.by == "algo"
                else f"sample runs with a second value of {scores.by}")
        raise CompareError(f"the selection has scores of {found}; a comparison needs at least 2 values of "
                           f"--by {scores.by}: {more}, or widen --where/--operator/--step/--source if they left "
                           "some out")
    return groups


def compare(scores: RunScores, reps: int = DEFAULT_REPS, seed: int = 0) -> Comparison:
    """IQM with a stratified bootstrap 95% CI per (env, group) and over the envs every
    group has (env 'all'), and P(a better than b) with its CI for every pair a < b of
    groups, per env both have and over those common envs. reps = 0 skips the CIs."""
    reps = _check_reps(reps)
    groups = require_groups(scores)
    sign = -1.0 if METRICS[scores.metric] == "lower" else 1.0
    common = scores.common_envs()
    rows_env = [(e, [e]) for e in scores.envs] + ([(ALL, common)] if common else [])
    estimates, improvements = [], []
    for env, envs in rows_env:
        for g in groups:
            strata = [x for e in envs if (x := scores.runs(g, e)).size]
            if not strata:
                continue
            lo = hi = None
            if reps:
                lo, hi = stratified_bootstrap_ci(strata, statistic=iqm, n_resamples=reps, confidence=CONFIDENCE,
                                                 seed=seed)
            pooled = np.concatenate(strata)
            estimates.append(dict(env=env, group=g, runs=int(pooled.size), iqm=float(iqm(pooled)), lo=lo, hi=hi))
        for a, b in combinations(groups, 2):
            xs = [scores.runs(a, e) for e in envs]
            ys = [scores.runs(b, e) for e in envs]
            if not all(x.size for x in xs) or not all(y.size for y in ys):
                continue
            xs, ys = [sign * x for x in xs], [sign * y for y in ys]
            lo = hi = None
            if reps:
                lo, hi = probability_of_improvement_ci(xs, ys, n_resamples=reps, confidence=CONFIDENCE, seed=seed)
            improvements.append(dict(env=env, a=a, b=b, runs_a=int(sum(x.size for x in xs)),
                                     runs_b=int(sum(y.size for y in ys)), p=probability_of_improvement(xs, ys),
                                     lo=lo, hi=hi))
    return Comparison(scores=scores, direction=METRICS[scores.metric], common_envs=common,
                      estimates=pl.DataFrame(estimates, schema=ESTIMATE_SCHEMA),
                      improvements=pl.DataFrame(improvements, schema=IMPROVEMENT_SCHEMA), reps=reps, seed=seed)


def rliable_scores(scores: RunScores) -> dict:
    """The score matrices for rliable: `scores[group]` is a [runs, envs] list of lists
    with envs in the order of `envs`; row i holds each env's i-th run (by seed, then run
    id), and null where a group has fewer runs on an env (or none). `runs` and `seeds`
    name the run behind each cell the same way."""
    envs = scores.envs
    out = {"format": "retland-compare-scores/1", "metric": scores.metric, "better": METRICS[scores.metric],
           "by": scores.by, "operator": scores.operator, "step": scores.step, "envs": envs,
           "scores": {}, "runs": {}, "seeds": {}}
    for g in scores.groups:
        cols = [scores.frame.filter((pl.col("group") == g) & (pl.col("env") == e)) for e in envs]
        depth = max(c.height for c in cols)

        def matrix(column: str) -> list[list]:
            return [[c[column][i] if i < c.height else None for c in cols] for i in range(depth)]

        out["scores"][g], out["runs"][g], out["seeds"][g] = matrix("score"), matrix("run_id"), matrix("seed")
    out["complete"] = all(v is not None for m in out["scores"].values() for row in m for v in row)
    json.dumps(out, allow_nan=False)  # the file must be plain JSON: scores are finite
    return out
