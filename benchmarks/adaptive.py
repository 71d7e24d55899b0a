"""How many samples `retland sample --target-ci` saves against a fixed N, at the same CI.

Offline part (no sampling): reads the stored returns of every distribution of a
warehouse (default /work/wh13: 32 TD3 hopper distributions, 500 samples each, B = 64)
and applies the adaptive rule to their stored prefixes: rounds of whole chunks, 95%
percentile bootstrap (1000 resamples, seed 0) after each round, stop when every target
half-width is met. The rows of an adaptive job are the fixed job's prefix, so this is
exactly the n an adaptive job would stop at. Targets: the worst half-width a fixed N
gives over all distributions (the precision a fixed-N job guarantees for every one of
them), for N = the stored N and smaller N.

--rows FILE... reads post_update_returns parquet files instead (e.g. rows sampled on a
GPU and copied back), --chunk sets the rounds' chunk size.

Real part (--real): one adaptive run on the shipped example checkpoint (TD3 hopper,
horizon 1000) in a temporary warehouse, timed.

    .venv/bin/python benchmarks/adaptive.py [--warehouse /work/wh13] [--real]
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from retland import stats
from retland.purd.adaptive import intervals, round_sizes
from retland.warehouse import Warehouse

METRICS = ("ltp", "cvar")


def load(root: str, parquet: list[str] | None = None) -> tuple[list[tuple], list[np.ndarray], int]:
    if parquet:  # post_update_returns rows exported from another machine's warehouse
        import duckdb

        rel = duckdb.sql('SELECT run_id, step, operator_id, list("return" ORDER BY update_index) AS r, '
                         f"min(chunk_size) AS b FROM read_parquet({list(parquet)!r}) GROUP BY ALL "
                         "ORDER BY run_id, step")
        rows = [dict(zip(rel.columns, t)) for t in rel.fetchall()]
        return ([(r["run_id"], r["step"], r["operator_id"]) for r in rows],
                [np.asarray(r["r"], dtype=np.float64) for r in rows], min(int(r["b"]) for r in rows))
    wh = Warehouse.open(root, create=False)
    rows = wh.records('SELECT run_id, step, operator_id, list("return" ORDER BY update_index) AS r, '
                      "min(chunk_size) AS b FROM post_update_returns GROUP BY ALL ORDER BY run_id, step")
    keys = [(r["run_id"], r["step"], r["operator_id"]) for r in rows]
    return keys, [np.asarray(r["r"], dtype=np.float64) for r in rows], int(rows[0]["b"])


def half_widths(r: np.ndarray, n: int) -> dict[str, float]:
    return {iv.metric: iv.half_width for iv in intervals(r[:n], {m: 1.0 for m in METRICS})}


def stop_n(r: np.ndarray, targets: dict[str, float], sizes: list[int]) -> tuple[int, bool]:
    for n in sizes:
        if all(iv.met for iv in intervals(r[:n], targets)):
            return n, True
    return sizes[-1], False


def offline(root: str, round_samples: int, parquet: list[str] | None = None, chunk: int | None = None) -> None:
    keys, data, b = load(root, parquet)
    b = chunk or b
    n_max = min(r.size for r in data)
    sizes = round_sizes(n_max, round_samples, b)
    print(f"{len(data)} distributions of {n_max} stored samples, B = {b}, rounds {sizes}")
    print(f"LTP range {min(stats.ltp(r) or 0 for r in data):.3f}..{max(stats.ltp(r) or 0 for r in data):.3f}, "
          f"CVaR range {min(stats.cvar(r) for r in data):.0f}..{max(stats.cvar(r) for r in data):.0f}")
    print("fixed N | targets (worst half-width of N over all)  | adaptive samples (sum) | fixed N x dists | saved "
          "| n per distribution: min/median/max")
    for n_fixed in [n for n in sizes if n >= 2 * b][-3:]:
        hw = [half_widths(r, n_fixed) for r in data]
        targets = {m: max(h[m] for h in hw if math.isfinite(h[m])) for m in METRICS}
        stops = [stop_n(r, targets, [n for n in sizes if n <= n_fixed]) for r in data]
        used = sum(n for n, _ in stops)
        met = sum(ok for _, ok in stops)
        ns = sorted(n for n, _ in stops)
        total = n_fixed * len(data)
        print(f"{n_fixed:7d} | ltp=±{targets['ltp']:.4f}, cvar=±{targets['cvar']:.1f} | {used:22d} | {total:15d} "
              f"| {100 * (1 - used / total):4.0f}% | {ns[0]}/{ns[len(ns) // 2]}/{ns[-1]} ({met} met)")
    # fixed targets, as a researcher would state them
    for targets in ({"ltp": 0.05}, {"ltp": 0.03}, {"ltp": 0.05, "cvar": 150.0}):
        stops = [stop_n(r, targets, sizes) for r in data]
        ns = sorted(n for n, _ in stops)
        met = sum(ok for _, ok in stops)
        print(f"targets {targets}: {sum(ns)} samples for {met}/{len(data)} distributions meeting them "
              f"(n min/median/max {ns[0]}/{ns[len(ns) // 2]}/{ns[-1]}; a fixed N={n_max} job takes "
              f"{n_max * len(data)})")


def real(target: str, max_samples: int, round_samples: int) -> None:
    from retland import shipped
    from retland.purd.job import SampleJob, run_job
    from retland.warehouse import Warehouse

    root = Path(tempfile.mkdtemp(prefix="retland-adaptive-")) / "wh"
    run_id, step = shipped.add(root, shipped.DEFAULT)
    from retland.purd.adaptive import parse_targets

    job = SampleJob(str(root), ((run_id, step, "hopper"),), "td3", 1000, 0, "auto",
                  targets=tuple(parse_targets(target).items()), max_samples=max_samples, round_samples=round_samples)
    t0 = time.monotonic()
    done = run_job(Warehouse.open(root, create=False), job, (0, 1),
                   on_round=lambda res: print(f"  n={res.n}: " + ", ".join(
                       f"{iv.metric} {iv.value:.4g} ±{iv.half_width:.4g}" for iv in res.intervals), flush=True))
    (res,) = done.adaptive
    print(f"example {run_id} step {step}, td3, H=1000, --target-ci {target} --max-samples {max_samples} "
          f"--round-samples {round_samples}: stopped at n={res.n} ({res.stopped}), "
          f"{time.monotonic() - t0:.0f} s wall on this machine, B={res.batch_size}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warehouse", default="/work/wh13")
    ap.add_argument("--round-samples", type=int, default=64)
    ap.add_argument("--rows", nargs="+", help="read post_update_returns parquet files instead of --warehouse")
    ap.add_argument("--chunk", type=int, help="chunk size of the rounds (default: the stored rows' smallest)")
    ap.add_argument("--real", action="store_true", help="also one real adaptive run on the example checkpoint")
    ap.add_argument("--target", default="ltp=0.03")
    ap.add_argument("--max-samples", type=int, default=1000)
    args = ap.parse_args()
    offline(args.warehouse, args.round_samples, args.rows, args.chunk)
    if args.real:
        real(args.target, args.max_samples, 128)


if __name__ == "__main__":
    main()
