"""Chunk sizes and memory on this machine's first device: the figures behind
`--batch-size auto`, stabilize's `--chunk auto` and training's seed groups.

    python benchmarks/sizing.py --out DIR                  # paper sizes (use a GPU)
    python benchmarks/sizing.py --out DIR --tiny           # the same code on CPU, small sizes
    python benchmarks/sizing.py --out DIR --only stabilize # one part (sample|demo|stabilize|train)

Parts (each prints a table and goes into DIR/sizing.json):

sample     the td3 operator at the shipped example checkpoint (TD3 hopper, paper rules),
           horizon H, for each chunk size B of --sizes: XLA's memory need of the compiled
           chunk program (outputs + temporaries, `retland.core.sizing`), the need the
           linear rule predicts from the first size, the measured env-steps/s (two timed
           chunks after the compile) and the allocator's peak.
demo       --demo-samples td3 samples (default 1000) of the same checkpoint written to
           DIR/warehouse, with the fastest B of `sample` (for the adaptive comparison).
stabilize  Algorithm 1's PURD estimate at the paper's size (2 arms x 10 seeds = 20 lanes,
           N = 1000, replay buffers of --capacity rows) with `--chunk auto`'s rule against
           this device's budget, then one estimate run, timed, with the allocator's peak.
           Set XLA_PYTHON_CLIENT_MEM_FRACTION to emulate a smaller card (0.425 of an H200's
           141 GB is the 60 GB JAX takes by default on an 80 GB card).
train      XLA's need of the TD3 training chunk program for S seeds (buffers of --capacity
           rows; shapes only, nothing is allocated): bytes per seed, and the seeds that fit.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PARTS = ("sample", "demo", "stabilize", "train")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tiny", action="store_true", help="CPU sizes: H 50, B 8/16/32, 2 lanes x 16 samples")
    p.add_argument("--only", default=",".join(PARTS), help=f"comma-separated parts of {', '.join(PARTS)}")
    p.add_argument("--sizes", help="chunk sizes for `sample` (default 256,1024,4096; tiny 8,16,32)")
    p.add_argument("--horizon", type=int, help="rollout length (default 1000; tiny 50)")
    p.add_argument("--demo-samples", type=int, help="samples written by `demo` (default 1000; tiny 32)")
    p.add_argument("--capacity", type=int, help="replay rows per lane/seed (default 1,000,000; tiny 5000)")
    p.add_argument("--seeds", type=int, default=20, help="seeds of the `train` part (default 20)")
    return p.parse_args(argv)


def peak_bytes(device) -> int | None:
    stats = device.memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def part_sample(ckpt, args, out: dict):
    import jax
    import numpy as np

    from retland.core import sizing
    from retland.purd.engine import chunk_function, reference_start
    from retland.purd.operators import parse_operator
    from retland.purd.sampling import checkpoint_program

    device = jax.local_devices()[0]
    spec = parse_operator("td3", horizon=args.horizon, seed=0)
    program, op_state = checkpoint_program(spec, ckpt)
    fn = chunk_function(program)
    start = jax.device_put(reference_start(program), device)
    op_state = jax.device_put(op_state, device)
    key = jax.device_put(spec.base_key, device)
    rows, first = [], None
    print(f"\nsample: td3 operator, H = {args.horizon}, budget {sizing.gib(sizing.budget(device))}")
    print(f"{'B':>6} {'need (XLA)':>12} {'predicted':>12} {'per sample':>11} {'env-steps/s':>13} {'peak':>10}")
    for b in args.sizes:
        idx = jax.device_put(np.arange(b, dtype=np.int32), device)
        fp = sizing.footprint(fn, op_state, start, key, idx)
        need = None if fp is None else fp.scaling - fp.aliased
        if first is None and fp is not None:
            first = (b, fp)
        predicted = None if first is None else int(first[1].scaling / first[0] * b - first[1].aliased)
        t = time.perf_counter()
        jax.block_until_ready(fn(op_state, start, key, idx))
        compile_s = time.perf_counter() - t
        t = time.perf_counter()
        for r in (1, 2):
            jax.block_until_ready(fn(op_state, start, key, idx + r * b))
        rate = 2 * b * args.horizon / (time.perf_counter() - t)
        row = dict(batch_size=b, need=need, predicted=predicted, per_sample=None if need is None else need / b,
                   env_steps_per_s=round(rate, 1), first_call_s=round(compile_s, 2), peak=peak_bytes(device))
        rows.append(row)
        print(f"{b:>6} {sizing.gib(need):>12} {sizing.gib(predicted):>12} "
              f"{'?' if need is None else f'{need / b / 2**20:.2f} MiB':>11} {rate:>13,.0f} {sizing.gib(row['peak']):>10}",
              flush=True)
    best = max(rows, key=lambda r: r["env_steps_per_s"])
    within = [r for r in rows if r["env_steps_per_s"] >= 0.9 * best["env_steps_per_s"]]
    out["sample"] = dict(horizon=args.horizon, rows=rows, fastest=best["batch_size"],
                         smallest_within_90pct=min(r["batch_size"] for r in within))
    print(f"fastest B = {best['batch_size']}; smallest B within 90% of it = {out['sample']['smallest_within_90pct']}")


def part_demo(wh, ckpt, args, out: dict):
    from retland.purd import sampling
    from retland.purd.operators import parse_operator

    b = (out.get("sample") or {}).get("fastest") or args.sizes[-1]
    spec = parse_operator("td3", horizon=args.horizon, seed=0)
    plan = sampling.plan_job(wh, [(ckpt.run_id, ckpt.step, spec)], args.demo_samples, batch_size=b)[0]
    t = time.perf_counter()
    res = sampling.sample_checkpoint(wh, plan, checkpoint=ckpt)
    dt = time.perf_counter() - t
    out["demo"] = dict(samples=args.demo_samples, batch_size=b, rows=res.rows_written, seconds=round(dt, 2),
                       warehouse=str(wh.root), operator_id=spec.operator_id)
    print(f"\ndemo: {res.rows_written} td3 samples of {ckpt.run_id}@{ckpt.step} (B = {b}) in {dt:.1f} s "
          f"-> {wh.root}", flush=True)


def part_stabilize(ckpt, args, out: dict):
    import jax
    import numpy as np

    from retland.analyses.stabilize.experiment import auto_chunk
    from retland.analyses.stabilize.program import initial_lanes, program_config, purd_fn
    from retland.core import sizing
    from retland.config.settings import StabilizeConfig

    device = jax.local_devices()[0]
    n = 16 if args.tiny else 1000
    seeds = tuple(range(1 if args.tiny else 10))
    scfg = StabilizeConfig(run_id=ckpt.run_id, step=ckpt.step, samples=n, seeds=seeds)
    capacity = max(args.capacity, int(ckpt.replay_size) + scfg.proposals)
    lanes, keys = initial_lanes(ckpt, scfg, capacity)
    pcfg = program_config(ckpt.config)
    stats = device.memory_stats() or {}
    print(f"\nstabilize: {len(scfg.lanes)} lanes x N = {n}, buffers of {capacity:,} rows; allocator limit "
          f"{sizing.gib(stats.get('bytes_limit'))}, in use {sizing.gib(stats.get('bytes_in_use'))}, "
          f"budget {sizing.gib(sizing.budget(device))}", flush=True)
    t = time.perf_counter()
    fit = auto_chunk(pcfg, scfg, lanes, keys)
    fit_s = time.perf_counter() - t
    print(f"--chunk auto = {fit.reason} (compiled {len(fit.tried)}x, {fit_s:.1f} s)", flush=True)
    estimate = purd_fn(pcfg, n, fit.size)
    t = time.perf_counter()
    r, own = jax.device_get(estimate(lanes, keys))
    first_s = time.perf_counter() - t
    t = time.perf_counter()
    jax.block_until_ready(estimate(lanes, keys))
    run_s = time.perf_counter() - t
    peak = peak_bytes(device)
    out["stabilize"] = dict(lanes=len(scfg.lanes), samples=n, capacity=capacity, chunk=fit.size,
                            preferred=fit.preferred, budget=fit.budget, need=fit.bytes, tried=fit.tried,
                            bytes_limit=stats.get("bytes_limit"), peak=peak, first_call_s=round(first_s, 2),
                            estimate_s=round(run_s, 2), env_steps_per_s=round(len(scfg.lanes) * (n + 1) *
                                                                              ckpt.config.horizon / run_s, 1),
                            finite=bool(np.all(np.isfinite(r))))
    print(f"one estimate: {run_s:.1f} s ({out['stabilize']['env_steps_per_s']:,.0f} env-steps/s), "
          f"peak {sizing.gib(peak)} of a {sizing.gib(stats.get('bytes_limit'))} limit", flush=True)


def part_train(args, out: dict):
    import jax

    from retland.core import sizing
    from retland.train.config import TrainConfig
    from retland.train.program import init_states, make_chunk_fn

    device = jax.local_devices()[0]
    agent = {"algo": "td3", "buffer_size": args.capacity, "learning_starts": 0}
    if args.tiny:
        agent.update(hidden=(32, 32), batch_size=32)
    s = args.seeds
    cfg = TrainConfig(env="hopper", variant="paper", seeds=s, total_steps=args.capacity,
                      checkpoints=(args.capacity,), eval_every=args.capacity, horizon=args.horizon, agent=agent)
    ts, rb = jax.eval_shape(lambda: init_states(cfg))  # shapes only: nothing is allocated
    fn = make_chunk_fn(cfg, args.capacity, 1000 if not args.tiny else 10)
    t = time.perf_counter()
    fp = sizing.footprint(fn.func, ts, rb, fn.keywords["warmup"])  # the jitted chunk, donation included
    room = sizing.budget(device)
    out["train"] = dict(capacity=args.capacity, seeds=s, arguments=fp.arguments, temporaries=fp.temporaries,
                        outputs=fp.outputs, aliased=fp.aliased, need=fp.total, per_seed=fp.total / s,
                        compile_s=round(time.perf_counter() - t, 1),
                        seeds_that_fit=None if room is None else int(room // (fp.total / s)))
    print(f"\ntrain: TD3 hopper (paper), {s} seeds, buffers of {args.capacity:,} rows: XLA needs "
          f"{sizing.gib(fp.total)} (state and buffers {sizing.gib(fp.arguments)}, temporaries "
          f"{sizing.gib(fp.temporaries)}, donated {sizing.gib(fp.aliased)}); per seed "
          f"{sizing.gib(fp.total / s)}; seeds that fit this device's budget: {out['train']['seeds_that_fit']}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    import jax

    from retland import shipped
    from retland.train.checkpoints import load_checkpoint
    from retland.warehouse import Warehouse

    args.sizes = [int(x) for x in (args.sizes or ("8,16,32" if args.tiny else "256,1024,4096")).split(",")]
    args.horizon = args.horizon or (50 if args.tiny else 1000)
    args.demo_samples = args.demo_samples or (32 if args.tiny else 1000)
    args.capacity = args.capacity or (5000 if args.tiny else 1_000_000)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise SystemExit(f"--only: unknown part(s) {bad}; choose from {PARTS}")
    args.out.mkdir(parents=True, exist_ok=True)
    device = jax.local_devices()[0]
    out: dict = {"device": f"{device.platform} {getattr(device, 'device_kind', '')}".strip(), "jax": jax.__version__,
                 "mem_fraction": os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION"), "tiny": args.tiny}
    print(f"sizing: {out['device']}, jax {jax.__version__}", flush=True)
    wh = Warehouse.open(args.out / "warehouse")
    run_id, step = shipped.add(wh)
    ckpt = load_checkpoint(wh, run_id, step)
    name = "sizing" + ("-" + "-".join(parts) if parts != list(PARTS) else "") + ".json"
    for part in parts:
        if part == "sample":
            part_sample(ckpt, args, out)
        elif part == "demo":
            part_demo(wh, ckpt, args, out)
        elif part == "stabilize":
            part_stabilize(ckpt, args, out)
        elif part == "train":
            part_train(args, out)
        (args.out / name).write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"\n{args.out / name}")
    return out


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
