"""Training iterations/s against vmapped seeds, on the paper's physics.

TD3 on hopper with the paper variant (Brax 0.0.13's simulator, backend brax0013), Table 1
settings (2x256 networks, batch 256, one update per env step), the replay buffer prefilled
by the uniform warm-up. For each seed count S the training chunk program (all S seeds in
one vmapped, jitted program) runs once to compile and then `--repeats` timed chunks; the
median is reported as iterations/s (one iteration = one env step and one update of every
seed) and env-steps/s (iterations/s × S), with the speed-up of S seeds over one.

On a CPU the seeds share its cores, so env-steps/s grows little with S; on an accelerator
an iteration is latency-bound and S seeds cost almost what one does (the GPU check of
BENCHMARKS.md). Run: python benchmarks/train_seeds.py [--seeds 1,2,4,8,20]
"""
from __future__ import annotations

import argparse

import jax
from train_throughput import retland_rate  # benchmarks/ is on the path when this runs as a script

from retland.train.config import TD3Config


def iterations_per_s(seeds: int, steps: int, prefill: int, repeats: int) -> float:
    """Training iterations/s of `seeds` vmapped TD3 seeds on the paper's hopper (each
    iteration: one env step and one update of every seed)."""
    return retland_rate(TD3Config(), seeds, steps, prefill, repeats, variant="paper") / seeds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="1,2,4,8,20", help="seed counts to time, comma-separated")
    ap.add_argument("--steps", type=int, default=500, help="env steps per timed chunk")
    ap.add_argument("--prefill", type=int, default=1000, help="uniform warm-up steps before timing")
    ap.add_argument("--repeats", type=int, default=3, help="timed chunks per seed count (median)")
    args = ap.parse_args()
    device = jax.devices()[0]
    print(f"TD3 hopper (paper variant, brax0013) on {device.platform} {getattr(device, 'device_kind', '')}, "
          f"jax {jax.__version__}; {args.steps} steps per chunk, median of {args.repeats}")
    print(f"{'seeds':>5}  {'iterations/s':>12}  {'env-steps/s':>11}  {'vs 1 seed':>9}")
    base = None
    for s in (int(x) for x in args.seeds.split(",")):
        it = iterations_per_s(s, args.steps, args.prefill, args.repeats)
        base = base or it * s
        print(f"{s:>5}  {it:>12,.1f}  {it * s:>11,.0f}  {it * s / base:>8.2f}x", flush=True)


if __name__ == "__main__":
    main()
