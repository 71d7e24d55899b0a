"""FINDINGS.md's A.7 measurement: behaviour clones of TD3 hopper teachers at a small CPU scale.

    python benchmarks/clones_cpu.py WAREHOUSE [--steps 30000,50000,70000,100000] [--bc-steps 10000] [--samples 500]

WAREHOUSE must hold trained TD3 runs with checkpoints at the teacher steps (a copy of the
cpu-small study's warehouse); every TD3 run's checkpoint at each step is a teacher. Runs
`retland.analyses.clones.run` (resumable) and prints the comparison (`retland clones`).
"""
from __future__ import annotations

import argparse
import time

from retland.analyses.clones import CloneRequest, compare_clones, read_pairs, run
from retland.warehouse import Warehouse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("warehouse")
    ap.add_argument("--steps", default="30000,50000,70000,100000", help="teacher checkpoint steps")
    ap.add_argument("--bc-steps", type=int, default=10_000, help="gradient steps per BC run")
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--algo-env", default="td3:hopper")
    args = ap.parse_args()
    wh = Warehouse.open(args.warehouse, create=False)
    algo, env = args.algo_env.split(":")
    steps = [int(s) for s in args.steps.split(",")]
    runs = [r["run_id"] for r in wh.records("SELECT run_id FROM runs WHERE algo = ? AND env = ? AND source = "
                                            "'trained' ORDER BY run_id", [algo, env])]
    teachers = tuple(f"{r}@{s}" for r in runs for s in steps)
    request = CloneRequest(teachers=teachers, total_steps=args.bc_steps, eval_every=args.bc_steps // 2,
                           samples=args.samples)
    t0 = time.time()
    out = run(wh, request)
    print(f"{len(teachers)} teachers, trained {len(out.trained)} jobs, wrote {out.rows_written} rows "
          f"in {time.time() - t0:.0f} s")
    cmp = compare_clones(read_pairs(wh))
    print(cmp.correlations)
    print(cmp.ltp)


if __name__ == "__main__":
    main()
