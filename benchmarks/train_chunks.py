"""Training env steps per call of the compiled program: one step per call (what TD3/SAC/BC
jobs did before `retland.train.job.TRAIN_CHUNK_MAX`) against the job's chunk now.

TD3 on hopper, paper variant, the same compiled loop body either way; a job drives it from
Python, so each call pays the host's dispatch (and on an accelerator a device sync). For
each network size and seed count: compile both programs, fill the buffers with the uniform
warm-up, then time `--steps` env steps as `--steps` calls of 1 step and as calls of
`--chunk` steps, alternated over `--repeats`; the best of each is printed with the ratio.

    python benchmarks/train_chunks.py                       # CPU
    python benchmarks/train_chunks.py --seeds 1,20 --steps 2000   # on a GPU
"""
from __future__ import annotations

import argparse
import time

SIZES = {"table1": dict(hidden=(256, 256), batch_size=256), "tiny": dict(hidden=(16, 16), batch_size=16)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="1,4", help="comma-separated seed counts")
    ap.add_argument("--sizes", default="tiny,table1", help="network sizes: tiny (2x16, batch 16), table1 (2x256, batch 256)")
    ap.add_argument("--steps", type=int, default=1000, help="env steps per timed run (a multiple of --chunk)")
    ap.add_argument("--chunk", type=int, default=None, help="steps per call of the long program (default TRAIN_CHUNK_MAX)")
    ap.add_argument("--prefill", type=int, default=500, help="uniform warm-up steps before timing")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import jax

    from retland.train.config import TD3Config, TrainConfig
    from retland.train.job import TRAIN_CHUNK_MAX
    from retland.train.program import init_states, make_chunk_fn

    chunk = args.chunk or TRAIN_CHUNK_MAX
    if args.steps % chunk:
        ap.error(f"--steps {args.steps} is not a multiple of --chunk {chunk}")
    dev = jax.devices()[0]
    print(f"device: {dev.platform} {getattr(dev, 'device_kind', '')}, jax {jax.__version__}; "
          f"{args.steps} env steps per run as calls of 1 and of {chunk} steps")
    print(f"{'size':>7} {'seeds':>5} {'1 step/call it/s':>17} {f'{chunk} steps/call it/s':>20} {'ratio':>6}")
    for size in args.sizes.split(","):
        for s in (int(x) for x in args.seeds.split(",")):
            agent = TD3Config(learning_starts=args.prefill, **SIZES[size])
            cfg = TrainConfig(env="hopper", variant="paper", seeds=s, agent=agent,
                              total_steps=args.prefill + (2 * args.repeats + 2) * args.steps,
                              checkpoints=(args.prefill,), eval_every=args.prefill)
            ts, rb = init_states(cfg)
            ts, rb = make_chunk_fn(cfg, 0, args.prefill)(ts, rb)
            step = args.prefill
            rates = {1: [], chunk: []}
            for length in (1, chunk):  # compile both
                ts, rb = make_chunk_fn(cfg, step, length)(ts, rb)
                step += length
            jax.block_until_ready(ts)
            for _ in range(args.repeats):
                for length in (1, chunk):
                    t = time.perf_counter()
                    for _ in range(args.steps // length):
                        ts, rb = make_chunk_fn(cfg, step, length)(ts, rb)
                        step += length
                    jax.block_until_ready(ts)
                    rates[length].append(args.steps / (time.perf_counter() - t))
            one, long = max(rates[1]), max(rates[chunk])
            print(f"{size:>7} {s:>5} {one:>17,.1f} {long:>20,.1f} {long / one:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
