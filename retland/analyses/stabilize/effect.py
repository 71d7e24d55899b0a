"""Reject − baseline: per experiment over rejection seeds (`arm_effect`), and per env over
source policies, the paper's Fig. 7 (`fig7_table`)."""
from __future__ import annotations

import numpy as np

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


# The settings that make two experiments comparable: Fig. 7 aggregates sources per env
# within one setting.
SETTING = ("criterion", "alpha", "beta", "tolerance", "proposals", "n_samples")
# (output prefix, column of stabilize_sources) of the paired changes aggregated over sources.
CHANGES = (("ltp", "ltp_change"), ("mean", "mean_change"), ("retland_ltp_source", "ltp_source_change"))


def fig7_table(sources, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0):
    """The paper's Fig. 7 as a table: per env and setting, the reject − baseline change of
    the held policy after the last proposal, aggregated over source policies.

    sources: rows of the view stabilize_sources (one per source policy and setting; its
    *_change columns are already the mean over the source's rejection seeds of the
    paired difference). Per (env, setting): `sources`; for each change — ltp (own-mode
    LTP, the paper's), mean (mean post-update return, to check "at similar return") and
    retland_ltp_source (LTP against the source's mode, retland's extra) — the IQM over
    the sources where it is defined (`<name>_sources`), `<name>_change`, and its
    stratified percentile bootstrap CI `<name>_lo`, `<name>_hi` (rliable's: resample
    sources within each env); plus the means over sources of ltp_before, ltp_reject,
    ltp_baseline, mean_reject and mean_baseline. A setting with sources in ≥ 2 envs also
    gets a row env = 'all': IQM over all its sources, strata = envs (Fig. 7 aggregates
    across tasks). n_resamples 0 leaves the CIs NULL. Returns a polars DataFrame, ordered
    by setting, env ('all' last)."""
    import polars as pl

    levels = ("ltp_before", "ltp_reject", "ltp_baseline", "mean_reject", "mean_baseline")
    schema = dict(env=pl.String, **{k: sources.schema[k] if k in sources.columns else pl.Float64 for k in SETTING},
                  sources=pl.Int64)
    for name, _ in CHANGES:
        schema.update({f"{name}_sources": pl.Int64, f"{name}_change": pl.Float64, f"{name}_lo": pl.Float64,
                       f"{name}_hi": pl.Float64})
    schema.update({k: pl.Float64 for k in levels})
    rows = []
    if not sources.height:
        return pl.DataFrame([], schema=schema)
    sources = sources.with_columns(pl.col("env").fill_null("unknown"))
    # The bootstrap draws sources by position: a canonical order makes the CI independent
    # of the order the rows arrive in (a join upstream may shuffle them).
    order = [*SETTING, "env"] + [c for c in ("run_id", "step") if c in sources.columns]
    for key, grp in sources.sort(order, maintain_order=True).group_by(list(SETTING), maintain_order=True):
        envs = grp["env"].unique(maintain_order=True).to_list()
        for env in envs + (["all"] if len(envs) > 1 else []):
            sub = grp if env == "all" else grp.filter(pl.col("env") == env)
            row = dict(env=env, **dict(zip(SETTING, key)), sources=sub.height)
            for name, col in CHANGES:
                strata = {e: v for e in sub["env"].unique(maintain_order=True)
                          if (v := sub.filter(pl.col("env") == e)[col].drop_nulls().to_numpy()).size}
                pooled = np.concatenate(list(strata.values())) if strata else np.zeros(0)
                row[f"{name}_sources"] = int(pooled.size)
                if pooled.size:
                    # n_resamples 0 (report --bootstrap 0): the IQMs without intervals
                    lo, hi = (stats.stratified_bootstrap_ci(strata, stats.iqm, n_resamples, confidence, seed)
                              if n_resamples > 0 else (None, None))
                    row.update({f"{name}_change": float(stats.iqm(pooled)), f"{name}_lo": lo, f"{name}_hi": hi})
                else:
                    row.update({f"{name}_change": None, f"{name}_lo": None, f"{name}_hi": None})
            row.update({k: sub[k].mean() for k in levels})
            rows.append(row)
    return pl.DataFrame(rows, schema=schema)


def sources_at(wh, config):
    """Rows of the view stabilize_sources (schema/50_stabilize.sql) at the settings of a
    StabilizeConfig: its criterion, alpha, beta, tolerance, proposals and samples."""
    return wh.query("SELECT * FROM stabilize_sources WHERE criterion = ? AND alpha = ? AND beta = ? AND tolerance = ? "
                    "AND proposals = ? AND n_samples = ?",
                    [config.criterion, config.alpha, config.beta, config.tolerance, config.proposals, config.samples])


def source_rows(wh, where: str | None = None):
    """Rows of the view stabilize_sources that `where` (one SQL condition, parsed as an
    expression) keeps, ordered by env, setting, run_id and step."""
    import duckdb

    from retland.warehouse.readonly import filtered, query_error

    con = wh.connect()
    try:
        return filtered(con, "SELECT * FROM stabilize_sources", where).order(
            "env, criterion, alpha, beta, tolerance, proposals, n_samples, run_id, step").pl()
    except duckdb.Error as exc:
        raise query_error(exc) from None
    finally:
        con.close()
