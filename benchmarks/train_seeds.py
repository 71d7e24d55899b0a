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
import time

import jax
import numpy as np

from retland.train.config import TD3Config, TrainConfig
from retland.train.program import init_states, make_chunk_fn


def iterations_per_s(seeds: int, steps: int, prefill: int, repeats: int) -> float:
    cfg = TrainConfig(env="hopper", variant="paper", seeds=seeds, total_steps=prefill + (repeats + 2) * steps,
                      checkpoints=(prefill,), eval_every=prefill, agent=TD3Config(learning_starts=prefill))
    ts, rb = init_states(cfg)
    ts, rb = make_chunk_fn(cfg, 0, prefill)(ts, rb)  # the uniform warm-up fills the buffer
    run = make_chunk_fn(cfg, prefill, steps)
    ts, rb = run(ts, rb)  # compile and one chunk
    jax.block_until_ready(ts)
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        ts, rb = run(ts, rb)
        jax.block_until_ready(ts)
        rates.append(steps / (time.perf_counter() - t))
    return float(np.median(rates))


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
