"""Reject − baseline per statistic, paired by seed, with a bootstrap CI over seeds."""
from __future__ import annotations

from retland import stats


def arm_effect(final, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0):
    """Reject minus baseline after the last proposal, per experiment and statistic of
    the held policy's PURD (ltp; ltp_source, against the source checkpoint's mode; mean;
    cvar): the mean over rejection seeds of the paired difference (both arms of a seed
    share every key) and its percentile bootstrap CI over seeds.

    final: rows of the view stabilize_final (experiment_id, arm, seed, ltp, ltp_source, mean, cvar).
    Returns a polars DataFrame: experiment_id, statistic, seeds, reject, baseline,
    difference, lo, hi; experiments without both arms are left out. With a few seeds
    the CI says how much the seeds disagree; it is not a test."""
    import polars as pl  # the experiment itself runs where polars is not installed (GPU nodes)

    rows = []
    for (exp,), df in final.sort("experiment_id").group_by(["experiment_id"], maintain_order=True):
        wide = df.filter(pl.col("arm") == "reject").join(df.filter(pl.col("arm") == "baseline"), on="seed",
                                                         suffix="_baseline").sort("seed")
        for name in ("ltp", "ltp_source", "mean", "cvar"):
            pair = wide.select(name, f"{name}_baseline").drop_nulls()
            r, b = pair[name].to_numpy(), pair[f"{name}_baseline"].to_numpy()
            if not r.size:
                continue
            d = r - b
            lo, hi = stats.bootstrap_ci(d, lambda x: x.mean(axis=1), n_resamples, confidence, seed)
            rows.append(dict(experiment_id=exp, statistic=name, seeds=int(d.size), reject=float(r.mean()),
                             baseline=float(b.mean()), difference=float(d.mean()), lo=lo, hi=hi))
    schema = dict(experiment_id=pl.String, statistic=pl.String, seeds=pl.Int64, reject=pl.Float64,
                  baseline=pl.Float64, difference=pl.Float64, lo=pl.Float64, hi=pl.Float64)
    return pl.DataFrame(rows, schema=schema)
