"""Measure the paper's four findings in a study's warehouse (the numbers of FINDINGS.md).

    python -m retland.studies.findings --study cpu-small --warehouse W

Reads only; every number comes with a 95% percentile bootstrap CI (1000 resamples, seed
0). The study file fixes the scope (its runs, its sampled operator, its Algorithm 1
settings).

F1 (Fig. 2)  Similar mean return, different tails: over every pair of the study's
             distributions whose means are within 5% of each other, how many have
             disjoint LTP CIs, the most different such pairs, and the rank correlation
             of mean and LTP over distributions.
F2 (Fig. 3)  Failures are sudden: (a) the share of failing samples (return < 0.5 × the
             mode of their distribution) whose episode terminated early, with a CI that
             resamples distributions; (b) over the re-rolled failure pairs, the failing
             rollout's reward per step before its last 50 steps relative to the
             successful rollout's over the same steps (near 1: it kept up until shortly
             before it fell), and the fall duration: steps from the first time the
             failing torso drops below the lowest height the successful rollout ever
             reaches, to termination; and the divergence step of `failure_divergence`
             (after it the cumulative returns stay more than 5% apart) relative to the
             termination step.
F3 (Fig. 6)  Interpolation: BTP of same-run and different-run pairs (IQM, stratified
             bootstrap CI, as `retland interpolate` prints) and their difference.
F4 (Fig. 7)  Algorithm 1: reject − baseline own-mode LTP and mean return after the last
             proposal, IQM over sources (as `retland stabilize-effect` prints).
"""
from __future__ import annotations

import argparse
import itertools

import numpy as np

from retland import stats
from retland.warehouse import Warehouse
from retland.warehouse.sqlgen import in_list

SIMILAR_MEAN = 0.05  # |mean_a - mean_b| <= 5% of the larger mean
LAST_STEPS = 50  # F2: the window before termination excluded from the "kept up" ratio
BOOT = dict(n_resamples=1000, seed=0)


def _ci(x: np.ndarray, fn, n: int = 1000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    vals = [fn(x[rng.integers(0, len(x), len(x))]) for _ in range(n)]
    return float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))


def _fmt(v, lo, hi, f="{:.3f}") -> str:
    return f"{f.format(v)} [{f.format(lo)}, {f.format(hi)}]"


def distributions(wh, runs: list[str], operator_id: str) -> list[dict]:
    cond, params = in_list("run_id", runs)
    df = wh.query("SELECT run_id, step, list(\"return\" ORDER BY update_index) AS r, "
                  "list(terminated ORDER BY update_index) AS term FROM post_update_returns "
                  f"WHERE operator_id = ? AND {cond} GROUP BY ALL "
                  "ORDER BY run_id, step", [operator_id, *params])
    out = []
    for run, step, r, term in df.iter_rows():
        r = np.asarray(r, np.float64)
        s = stats.summarize(r)
        d = dict(run=run, step=int(step), r=r, term=np.asarray(term, bool), n=len(r), mean=s.mean, std=s.std,
                 ltp=s.ltp, mode=s.mode, cvar=s.cvar)
        for name in ("mean", "std", "ltp"):
            d[name + "_ci"] = stats.bootstrap_ci(r, name, **BOOT)
        out.append(d)
    return out


def f1(ds: list[dict]) -> None:
    from scipy.stats import spearmanr

    print("\n## F1: similar mean return, different left tails")
    pairs = []
    for a, b in itertools.combinations(ds, 2):
        if abs(a["mean"] - b["mean"]) <= SIMILAR_MEAN * max(abs(a["mean"]), abs(b["mean"])):
            disjoint = a["ltp_ci"][1] < b["ltp_ci"][0] or b["ltp_ci"][1] < a["ltp_ci"][0]
            pairs.append((abs(a["ltp"] - b["ltp"]), disjoint, a, b))
    n_dis = sum(p[1] for p in pairs)
    print(f"{len(ds)} distributions; {len(pairs)} pairs with means within {SIMILAR_MEAN:.0%}; "
          f"{n_dis} of them have disjoint 95% LTP CIs")
    rho, p = spearmanr([d["mean"] for d in ds], [d["ltp"] for d in ds])
    print(f"Spearman rank correlation of mean and LTP over distributions: {rho:+.2f} (p = {p:.2g})")
    print("most different tails at similar mean (mean, std, LTP with 95% CIs):")
    for dl, disjoint, a, b in sorted(pairs, key=lambda x: -x[0])[:4]:
        for d in (a, b):
            print(f"  {d['run'][-2:]}@{d['step']:>6,}: mean {_fmt(d['mean'], *d['mean_ci'], '{:.0f}')}, "
                  f"std {_fmt(d['std'], *d['std_ci'], '{:.0f}')}, LTP {_fmt(d['ltp'], *d['ltp_ci'])}")
        print(f"    -> LTP differs by {dl:.3f}; CIs {'disjoint' if disjoint else 'overlap'}")


def f2(wh, ds: list[dict], runs: list[str]) -> None:
    print("\n## F2: failures are sudden (terminations), not gradual declines")
    shares, counts = [], []
    for d in ds:
        if not np.isfinite(d["mode"]) or d["mode"] <= 0:
            continue
        fail = d["r"] < 0.5 * d["mode"]
        if fail.any():
            shares.append(d["term"][fail].mean())
            counts.append(fail.sum())
    if counts:
        shares, counts = np.asarray(shares), np.asarray(counts)
        pooled = float((shares * counts).sum() / counts.sum())
        rng = np.random.default_rng(0)
        boot = []
        for _ in range(1000):
            i = rng.integers(0, len(shares), len(shares))
            boot.append((shares[i] * counts[i]).sum() / counts[i].sum())
        lo, hi = np.percentile(boot, [2.5, 97.5])
        print(f"(a) failing samples (return < 0.5 x mode) that terminated early: {pooled:.3f} [{lo:.3f}, {hi:.3f}] "
              f"({int(counts.sum())} failing samples in {len(counts)} distributions; CI resamples distributions)")
    cond, params = in_list("run_id", runs)
    q = wh.query(
        "WITH e AS (SELECT pair_id, min(t) FILTER (WHERE role = 'failure' AND done) AS t_end, "
        "                  coalesce(min(t) FILTER (WHERE role = 'success' AND done), max(t)) AS s_end, "
        "                  bool_or(role = 'success' AND done) AS s_term "
        "           FROM trajectories WHERE " + cond + " GROUP BY pair_id), "
        # the successful rollout's lowest torso while its episode runs (a rollout that also
        # terminated lies on the floor after it)
        "p AS (SELECT e.pair_id, e.t_end, e.s_term, min(j.torso_height) FILTER (WHERE j.role = 'success' AND j.t <= e.s_end) "
        "             AS s_min_z FROM e JOIN trajectories j USING (pair_id) GROUP BY ALL) "
        "SELECT p.pair_id, p.t_end, p.s_term, "
        "  avg(j.reward) FILTER (WHERE j.role = 'failure' AND j.t < p.t_end - ?) AS f_rate, "
        "  avg(j.reward) FILTER (WHERE j.role = 'success' AND j.t < p.t_end - ?) AS s_rate, "
        "  min(j.t) FILTER (WHERE j.role = 'failure' AND j.torso_height < p.s_min_z) AS t_low "
        "FROM p JOIN trajectories j USING (pair_id) GROUP BY ALL ORDER BY p.pair_id",
        [*params, LAST_STEPS, LAST_STEPS])
    rows = q.to_dicts()
    if not rows:
        print("(b) no failure pairs re-rolled")
        return
    term = [r for r in rows if r["t_end"] is not None]
    print(f"(b) {len(rows)} re-rolled failure pairs; {len(term)} failing rollouts terminated "
          f"(at steps {', '.join(str(r['t_end']) for r in sorted(term, key=lambda r: r['t_end']))})")
    ratio = np.asarray([r["f_rate"] / r["s_rate"] for r in term
                        if r["t_end"] > 2 * LAST_STEPS and r["s_rate"] and r["f_rate"] is not None])
    if len(ratio):
        print(f"    reward per step before the last {LAST_STEPS} steps, failing / successful: median "
              f"{_fmt(float(np.median(ratio)), *_ci(ratio, np.median), '{:.2f}')} over {len(ratio)} pairs "
              f"(range {ratio.min():.2f}-{ratio.max():.2f})")
    div = wh.query("SELECT diverge_step, failure_end_step FROM failure_divergence WHERE failure_end_step IS NOT NULL "
                   f"AND {cond}", params).to_dicts()
    if div:
        gap = np.asarray([(d["diverge_step"] if d["diverge_step"] is not None else d["failure_end_step"])
                          - d["failure_end_step"] for d in div], np.float64)
        kept = gap >= -LAST_STEPS
        print(f"    divergence step (cumulative returns > 5% apart for good) minus termination step: median "
              f"{_fmt(float(np.median(gap)), *_ci(gap, np.median), '{:+.0f}')} (range {int(gap.min()):+d} to "
              f"{int(gap.max()):+d}); within 5% until at most {LAST_STEPS} steps before the fall: "
              f"{kept.mean():.2f} [{_ci(kept.astype(float), np.mean)[0]:.2f}, {_ci(kept.astype(float), np.mean)[1]:.2f}]"
              f" of {len(gap)} pairs")
    # only where the successful rollout ran the whole horizon: one that also terminated sank
    # to the termination height itself, and its lowest torso says nothing about a fall
    fall = np.asarray([r["t_end"] - r["t_low"] for r in term if not r["s_term"] and r["t_low"] is not None
                       and r["t_low"] <= r["t_end"]], np.float64)
    both = sum(1 for r in term if r["s_term"])
    if both:
        print(f"    in {both} of {len(term)} pairs the successful rollout terminated too (later)")
    if len(fall):
        print(f"    fall duration (failing torso below the successful rollout's lowest height -> termination): "
              f"median {_fmt(float(np.median(fall)), *_ci(fall, np.median), '{:.0f}')} steps over {len(fall)} pairs "
              f"whose successful rollout ran the whole horizon (range {int(fall.min())}-{int(fall.max())})")


def f3(wh, runs: list[str], algo: str, env: str) -> None:
    from retland.analyses.interpolation import btp_summary, btp_table

    print("\n## F3: interpolation, same-run vs different-run BTP")
    btp = btp_table(wh, env, algo)
    keep = set(runs)
    btp = btp.filter(btp["run_a"].is_in(list(keep)) & btp["run_b"].is_in(list(keep)))
    if btp.height == 0:
        print("no complete interpolation pairs")
        return
    summ = btp_summary(btp, **BOOT)
    for r in summ.to_dicts():
        print(f"{r['kind']:>13}: {r['pairs']} pairs, BTP IQM {_fmt(r['btp_iqm'], r['ci_lo'], r['ci_hi'])}, "
              f"mean {r['btp_mean']:.3f}")
    same = btp.filter(btp["kind"] == "same-run")["btp"].to_numpy()
    diff = btp.filter(btp["kind"] == "different-run")["btp"].to_numpy()
    if len(same) and len(diff):
        from scipy.stats import fisher_exact

        a, b = int((diff > 0).sum()), int((same > 0).sum())
        p = fisher_exact([[a, len(diff) - a], [b, len(same) - b]], alternative="greater").pvalue
        print(f"pairs with BTP > 0: different-run {a}/{len(diff)}, same-run {b}/{len(same)} "
              f"(one-sided Fisher exact p = {p:.2g})")
        rng = np.random.default_rng(0)
        boot = [stats.iqm(diff[rng.integers(0, len(diff), len(diff))]) - stats.iqm(same[rng.integers(0, len(same),
                                                                                                        len(same))])
                for _ in range(1000)]
        lo, hi = np.percentile(boot, [2.5, 97.5])
        print(f"different-run - same-run BTP (IQM): {stats.iqm(diff) - stats.iqm(same):+.3f} [{lo:+.3f}, {hi:+.3f}]")


def f4(wh, runs: list[str], study) -> None:
    from retland.analyses.stabilize import fig7_table

    print("\n## F4: Algorithm 1 (reject - baseline after the last proposal)")
    base = study.stabilize.base()
    cond, params = in_list("run_id", runs)
    df = wh.query(f"SELECT * FROM stabilize_sources WHERE {cond} "
                  "AND criterion = ? AND proposals = ? AND n_samples = ? ORDER BY env, run_id, step",
                  [*params, base.criterion, base.proposals, base.samples])
    if df.height == 0:
        print("no Algorithm 1 experiment stored")
        return
    for r in df.to_dicts():
        print(f"  source {r['run_id'][-2:]}@{r['step']:,}: own-mode LTP before {r['ltp_before']:.3f}, "
              f"reject - baseline LTP {r['ltp_change']:+.3f} (vs the source's mode {r['ltp_source_change']:+.3f}), "
              f"mean {r['mean_change']:+.1f}, CVaR {r['cvar_change']:+.1f}")
    for r in fig7_table(df, **BOOT).to_dicts():
        print(f"{r['env']}: {r['sources']} sources; own-mode LTP change (IQM) "
              f"{_fmt(r['ltp_change'], r['ltp_lo'], r['ltp_hi'], '{:+.3f}')}; LTP vs the source's mode (IQM) "
              f"{_fmt(r['retland_ltp_source_change'], r['retland_ltp_source_lo'], r['retland_ltp_source_hi'], '{:+.3f}')}"
              f"; mean return change {_fmt(r['mean_change'], r['mean_lo'], r['mean_hi'], '{:+.1f}')} "
              f"(reject {r['mean_reject']:.0f}, baseline {r['mean_baseline']:.0f})")


def main() -> None:
    from retland.study import load_study, study_operator_id, study_scope

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--study", default="cpu-small", help="study file or preset (default cpu-small)")
    ap.add_argument("--warehouse", "-w", default=None)
    a = ap.parse_args()
    study, base = load_study(a.study)
    wh = Warehouse.open(a.warehouse, create=False)
    scope = study_scope(study, wh, base)
    runs = [r for r in scope.runs if scope.algo[r] == "td3"]
    (env,) = {scope.env[r] for r in runs}
    oid = study_operator_id(study, study.sample.operators[0], "td3", env)
    print(f"study {study.name}: {len(runs)} runs, operator {oid}, warehouse {wh.root}")
    ds = [d for d in distributions(wh, runs, oid) if d["step"] in scope.steps[d["run"]]]
    f1(ds)
    f2(wh, ds, runs)
    f3(wh, runs, "td3", env)
    if study.stabilize is not None:
        f4(wh, runs, study)


if __name__ == "__main__":
    main()
