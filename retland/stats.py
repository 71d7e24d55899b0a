"""Statistics of post-update return distributions (PURDs), in NumPy.

The reference twin of ``schema/10_stats.sql``: the same definitions (docs/method.md §2
Statistics of a PURD) with the same arithmetic, so the two agree to rounding and the
tests can hold the SQL to these numbers.

A sample of returns is a 1-D array ``r: [N]`` of finite float64. Every statistic is a
row-wise kernel on a ``[B, N]`` matrix, so a bootstrap evaluates all B resamples in one
call; the scalar functions are the ``B = 1`` case.

Conventions (kept identical in SQL):

- ``std`` has ddof = 0; ``skewness`` is the biased Fisher–Pearson coefficient
  m3 / m2**1.5 (``scipy.stats.skew`` default). A constant sample (including N = 1) has
  std 0 and skewness NaN (NULL in SQL). Moments are summed about a first estimate of the
  mean and then corrected (corrected two-pass), so unlike scipy, which gives NaN once
  m2 <= (eps * mean)**2, a nearly-constant sample still gets an accurate skewness.
- ``mode``: midpoint of the fullest of 100 equal bins over [min, max], values assigned
  to bins exactly as ``numpy.histogram(r, bins=100)`` does (lowest bin wins ties); a
  constant sample's mode is its value. The arithmetic is numpy's, re-done here row-wise,
  so it also covers ranges too narrow for 101 distinct edges, where numpy.histogram
  refuses.
- ``ltp``: share of returns strictly below beta * mode, for every mode, as the
  definition gives it (the authors compute it too). When mode <= 0 the threshold is not
  "a fraction of the usual return", so ``Summary.mode_nonpositive`` (SQL: the boolean
  column ``mode_nonpositive``) flags those distributions; the value is kept, so
  aggregates and the landscape map count them (paper Fig. 2, footnote: they sit on the
  right border).
- ``cvar``: q + mean(min(r - q, 0)) / alpha with q the linear-interpolation
  alpha-quantile: the mean of the lower alpha tail.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import scipy.stats

N_BINS = 100
STATISTICS = ("mean", "std", "skewness", "mode", "ltp", "cvar")

__all__ = [
    "N_BINS",
    "STATISTICS",
    "Kernel",
    "Summary",
    "bootstrap_ci",
    "bootstrap_summary",
    "cvar",
    "iqm",
    "ltp",
    "mean",
    "mode",
    "skewness",
    "std",
    "stratified_bootstrap_ci",
    "summarize",
]

Kernel = Callable[[np.ndarray], np.ndarray]  # [B, N] -> [B]


@dataclass(frozen=True)
class Summary:
    """The statistics of one sample; ``mode_nonpositive`` flags mode <= 0, where ``ltp``
    counts returns below a non-positive threshold."""

    n: int
    mean: float
    std: float
    skewness: float
    mode: float
    ltp: float
    mode_nonpositive: bool
    cvar: float


def _sample(r) -> np.ndarray:
    """``r`` as a validated ``[N]`` float64 array."""
    x = np.asarray(r, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D sample of returns, shape [N]; got shape {x.shape}")
    if x.size == 0:
        raise ValueError("empty sample: statistics need at least one return")
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise ValueError(
            f"sample has {bad.size} non-finite return(s) (NaN or inf), "
            f"first at index {bad[0]}: {x[bad[0]]}"
        )
    with np.errstate(over="ignore"):
        span = x.max() - x.min()
    if not np.isfinite(span):
        raise ValueError(f"sample range max - min overflows float64 ({x.min()} .. {x.max()})")
    return x


def _check_alpha(alpha: float) -> float:
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    return float(alpha)


def _check_beta(beta: float) -> float:
    if not np.isfinite(beta):
        raise ValueError(f"beta must be finite, got {beta}")
    return float(beta)


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, m2, m3 of each row of ``x: [B, N]``; each ``[B]``."""
    n = x.shape[1]
    lo, hi = x.min(axis=1), x.max(axis=1)
    flat = lo == hi
    c = x.mean(axis=1)
    d = x - c[:, None]
    s1, s2, s3 = d.sum(axis=1), (d * d).sum(axis=1), (d * d * d).sum(axis=1)
    a = s1 / n
    mean = np.where(flat, lo, c + a)
    m2 = np.where(flat, 0.0, s2 / n - a * a)
    m3 = s3 / n - 3 * a * (s2 / n) + 2 * a * a * a
    return mean, m2, m3


def _mean(x: np.ndarray) -> np.ndarray:
    return _moments(x)[0]


def _std(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(_moments(x)[1], 0.0))


def _skewness(x: np.ndarray) -> np.ndarray:
    _, m2, m3 = _moments(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(m2 > 0, m3 / (m2 * np.sqrt(m2)), np.nan)


def _bin_edges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``numpy.linspace(lo, hi, 101)`` for each row: ``[B]`` bounds -> ``[B, 101]`` edges."""
    span = (hi - lo)[:, None]
    step = span / N_BINS
    k = np.arange(N_BINS + 1, dtype=np.float64)
    # linspace divides before multiplying when the step underflows to zero.
    edges = np.where(step == 0, k / N_BINS * span, k * step) + lo[:, None]
    edges[:, -1] = hi
    return edges


def _bins(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """numpy.histogram's bin (0..99) of each element of ``x: [B, N]``, and the
    ``[B, 101]`` edges. Rows with min == max get bin 0."""
    lo, hi = x.min(axis=1), x.max(axis=1)
    edges = _bin_edges(lo, hi)
    span = np.where(lo < hi, hi - lo, 1.0)[:, None]
    i = (((x - lo[:, None]) / span) * N_BINS).astype(np.intp)
    i = np.where((lo < hi)[:, None], np.minimum(i, N_BINS - 1), 0)
    i -= x < np.take_along_axis(edges, i, axis=1)
    i += (x >= np.take_along_axis(edges, i + 1, axis=1)) & (i != N_BINS - 1)
    return i, edges


def _mode(x: np.ndarray) -> np.ndarray:
    b, _ = x.shape
    lo, hi = x.min(axis=1), x.max(axis=1)
    i, edges = _bins(x)
    rows = np.arange(b)
    counts = np.bincount((i + N_BINS * rows[:, None]).ravel(), minlength=b * N_BINS)
    top = counts.reshape(b, N_BINS).argmax(axis=1)  # first maximum: lowest bin on ties
    mid = (edges[rows, top] + edges[rows, top + 1]) / 2
    return np.where(lo == hi, lo, mid)


def _ltp(x: np.ndarray, beta: float) -> np.ndarray:
    m = _mode(x)
    below = (x < (beta * m)[:, None]).sum(axis=1)
    return below / x.shape[1]


def _cvar(x: np.ndarray, alpha: float) -> np.ndarray:
    q = np.quantile(x, alpha, axis=1)
    tail = np.minimum(x - q[:, None], 0.0).sum(axis=1)
    return q + tail / x.shape[1] / alpha


def _kernels(alpha: float, beta: float) -> dict[str, Kernel]:
    return {
        "mean": _mean,
        "std": _std,
        "skewness": _skewness,
        "mode": _mode,
        "ltp": lambda x: _ltp(x, beta),
        "cvar": lambda x: _cvar(x, alpha),
    }


def mean(r) -> float:
    """Mean of ``r: [N]``."""
    return float(_mean(_sample(r)[None])[0])


def std(r) -> float:
    """Population standard deviation (ddof = 0) of ``r: [N]``."""
    return float(_std(_sample(r)[None])[0])


def skewness(r) -> float:
    """Biased Fisher–Pearson skewness of ``r: [N]``; NaN when all returns are equal."""
    return float(_skewness(_sample(r)[None])[0])


def mode(r) -> float:
    """Midpoint of the fullest of numpy.histogram's 100 bins over ``r: [N]``."""
    return float(_mode(_sample(r)[None])[0])


def ltp(r, beta: float = 0.5) -> float:
    """Share of ``r: [N]`` strictly below ``beta * mode(r)``, whatever the mode's sign
    (when mode <= 0 the threshold is <= 0: see ``Summary.mode_nonpositive``)."""
    return float(_ltp(_sample(r)[None], _check_beta(beta))[0])


def cvar(r, alpha: float = 0.1) -> float:
    """Mean of the lower ``alpha`` tail of ``r: [N]`` (Rockafellar–Uryasev), alpha in (0, 1]."""
    return float(_cvar(_sample(r)[None], _check_alpha(alpha))[0])


def summarize(r, alpha: float = 0.1, beta: float = 0.5) -> Summary:
    """All statistics of ``r: [N]``, as one row of the SQL ``purd_stats``."""
    x = _sample(r)[None]
    kernels = _kernels(_check_alpha(alpha), _check_beta(beta))
    values = {name: float(k(x)[0]) for name, k in kernels.items()}
    return Summary(
        n=x.shape[1],
        mean=values["mean"],
        std=values["std"],
        skewness=values["skewness"],
        mode=values["mode"],
        ltp=values["ltp"],
        mode_nonpositive=not values["mode"] > 0,
        cvar=values["cvar"],
    )


def _check_bootstrap(n_resamples: int, confidence: float) -> None:
    if int(n_resamples) != n_resamples or n_resamples < 1:
        raise ValueError(f"n_resamples must be a positive integer, got {n_resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _percentile_ci(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of ``values: [B]``; NaN if any resample's value is NaN."""
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(values, [tail, 1 - tail])
    return float(lo), float(hi)


def _resamples(r: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """``[n_resamples, N]`` resamples of ``r: [N]`` with replacement, from one index draw."""
    rng = np.random.default_rng(seed)
    return r[rng.integers(0, r.size, size=(int(n_resamples), r.size))]


def bootstrap_ci(
    r,
    statistic: str | Kernel,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    alpha: float = 0.1,
    beta: float = 0.5,
) -> tuple[float, float]:
    """Percentile bootstrap CI ``(lo, hi)`` of a statistic of ``r: [N]``.

    ``statistic`` is a name in ``STATISTICS`` (``alpha``/``beta`` parametrise cvar/ltp)
    or a vectorised function ``[B, N] -> [B]`` evaluated along axis 1, e.g.
    ``lambda x: np.median(x, axis=1)``. The interval is NaN when the statistic is
    undefined (NaN) in any resample, e.g. skewness when a resample is constant.
    """
    x = _sample(r)
    _check_bootstrap(n_resamples, confidence)
    if isinstance(statistic, str):
        kernels = _kernels(_check_alpha(alpha), _check_beta(beta))
        if statistic not in kernels:
            raise ValueError(
                f"unknown statistic {statistic!r}; expected one of {STATISTICS} or a function"
            )
        statistic = kernels[statistic]
    return _percentile_ci(np.asarray(statistic(_resamples(x, n_resamples, seed))), confidence)


def bootstrap_summary(
    r,
    alpha: float = 0.1,
    beta: float = 0.5,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CIs of every statistic of ``r: [N]``, all from the same
    resamples: ``{name: (lo, hi)}`` for each name in ``STATISTICS``."""
    x = _sample(r)
    _check_bootstrap(n_resamples, confidence)
    resampled = _resamples(x, n_resamples, seed)
    kernels = _kernels(_check_alpha(alpha), _check_beta(beta))
    return {name: _percentile_ci(k(resampled), confidence) for name, k in kernels.items()}


def iqm(scores, axis: int | None = None):
    """Interquartile mean: the mean of the middle 50% (``scipy.stats.trim_mean`` with
    0.25 cut), as rliable's ``aggregate_iqm``. ``axis=None`` pools all scores (any
    shape, e.g. ``[runs, tasks]``) into a float; ``axis=1`` reduces ``[B, M] -> [B]``."""
    return scipy.stats.trim_mean(np.asarray(scores, dtype=np.float64), 0.25, axis=axis)


def _strata(scores) -> list[np.ndarray]:
    """One validated 1-D array per stratum, from any layout stratified_bootstrap_ci takes."""
    if isinstance(scores, Mapping):
        named = list(scores.items())
    elif isinstance(scores, np.ndarray) and scores.ndim == 2:
        named = list(enumerate(scores.T))
    else:
        named = list(enumerate(scores))
    if not named:
        raise ValueError("no strata: scores is empty")
    strata = []
    for name, s in named:
        s = np.asarray(s, dtype=np.float64)
        if s.ndim != 1 or s.size == 0 or not np.isfinite(s).all():
            raise ValueError(
                f"stratum {name!r} must be a non-empty 1-D array of finite scores; "
                f"got shape {s.shape}"
            )
        strata.append(s)
    return strata


def stratified_bootstrap_ci(
    scores,
    statistic: Callable = iqm,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Stratified percentile bootstrap CI ``(lo, hi)`` of an aggregate, as in rliable.

    ``scores`` holds one 1-D array of run scores per stratum (task/environment): a mapping
    ``{task: [runs_t]}``, a list of ``[runs_t]`` arrays, or a ``[runs, tasks]`` array (one
    stratum per column). Each resample draws runs with replacement within every stratum
    independently, pools them into one row, and evaluates ``statistic(pooled, axis=1)``
    on the ``[B, total_runs]`` matrix (``iqm``, ``np.mean`` and ``np.median`` fit).
    """
    strata = _strata(scores)
    _check_bootstrap(n_resamples, confidence)
    rng = np.random.default_rng(seed)
    pooled = np.concatenate(
        [s[rng.integers(0, s.size, size=(int(n_resamples), s.size))] for s in strata], axis=1
    )
    return _percentile_ci(np.asarray(statistic(pooled, axis=1)), confidence)


def __dir__():
    """The public names only: `dir(retland.stats)` is not cluttered with np, scipy or
    the typing helpers this module imports."""
    return sorted(__all__)
