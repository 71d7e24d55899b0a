"""One-command GPU check: train, sample and write a warehouse the way a paper-scale study does.

    python benchmarks/gpu_study.py --out /tmp/gpu-study            # one GPU, <= ~10 minutes
    python benchmarks/gpu_study.py --tiny --out /tmp/gpu-tiny      # the same code path on CPU, < 2 minutes
    python benchmarks/gpu_study.py --paper --out /tmp/paper        # the paper's TD3 hopper study (one GPU window)

What it does, in one process:
1. trains TD3 on hopper (task rules `paper`) with S vmapped seeds (default 20) for
   T env steps per seed (default 200k: TD3 is latency-bound, ~565 iterations/s on an
   H200, so training takes ~6-7 minutes of the 10), with a few checkpoints;
2. samples N td3-operator post-update returns (default 1000, horizon 1000) at every
   checkpoint of seed 0, through the same planner and chunk engine as `retland sample`,
   appending rows to the warehouse under --out;
3. times a bare vmapped rollout of the same policy (no update, no writing) with the same
   chunk size and horizon, in the same run: sample throughput / bare throughput says what
   the update operator and the warehouse cost on top of the physics;
4. writes `summary.json` (and the HTML report when polars and altair are installed;
   otherwise `retland report -w OUT` makes it later on any machine).

It prints train env-steps/s (all seeds together), sample env-steps/s (rollout steps of the
sampled updates, H per sample) and the ratio to the bare rollout.

The compute path (train, sample, write) needs neither polars nor altair, so this runs on
a machine with only a CUDA jax, flax, optax, orbax, numpy, scipy, pyarrow, rich and typer
plus the wheels the README's GPU section lists. `--forbid polars` makes any import of the
named modules fail, to prove it (the test suite runs `--tiny --forbid polars,altair`).
"""
from __future__ import annotations

import argparse
import importlib.abc
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))


class _Forbid(importlib.abc.MetaPathFinder):
    """Makes `import <name>` (and its submodules) raise ImportError, as on a machine without it."""

    def __init__(self, names):
        self.names = tuple(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ImportError(f"{fullname} is forbidden in this run (gpu_study --forbid)")
        return None


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="output folder: the warehouse, summary.json, the report")
    p.add_argument("--tiny", action="store_true",
                   help="CPU-sized run of the same code path: 2 seeds x 3000 steps, hidden 32x32, horizon 50, 32 samples")
    p.add_argument("--seeds", type=int, help="vmapped training seeds (default 20; tiny 2)")
    p.add_argument("--steps", type=int, help="env steps per seed (default 200000; tiny 3000)")
    p.add_argument("--checkpoints", type=int, help="evenly spaced checkpoints (default 3)")
    p.add_argument("--samples", type=int, help="td3-operator samples per checkpoint (default 1000; tiny 32)")
    p.add_argument("--horizon", type=int, help="episode length of training and sampling (default 1000; tiny 50)")
    p.add_argument("--sample-seeds", default=None,
                   help="how many seeds' checkpoints to sample, or all (default 1: seed 0's; --paper: all)")
    p.add_argument("--paper", action="store_true",
                   help="the paper's TD3 hopper study (studies/paper-hopper-td3.toml's sizes): 20 seeds x 1M steps, "
                        "checkpoints at 50k, 150k, ..., 950k, 1000 samples at every checkpoint of every seed")
    p.add_argument("--batch-size", default="auto", help="sampling chunk size (default auto, as `retland sample`)")
    p.add_argument("--forbid", default="", help="comma-separated modules whose import must fail, e.g. polars,altair")
    p.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    p.add_argument("--packing", action="store_true",
                   help="also run benchmarks/packing.py --gpu: a paper-sized job (20 checkpoints x N=1000, td3, "
                        "T=1000) packed vs unpacked vs full 4096-wide chunks (summary's 'packing')")
    return p.parse_args(argv)


def study_config(args):
    from retland.train.config import TrainConfig, default_checkpoints

    tiny = args.tiny
    seeds = args.seeds or (2 if tiny else 20)
    steps = args.steps or (3000 if tiny else 1_000_000 if args.paper else 200_000)
    k = args.checkpoints or 3
    horizon = args.horizon or (50 if tiny else 1000)
    learning_starts = min(10_000, steps // 3) if not tiny else 500
    first = max(learning_starts + 1, steps // k)
    ckpts = sorted({max(first, steps * (i + 1) // k) for i in range(k)})
    if args.paper and not args.checkpoints:  # retland train's ten: 50k, 150k, ..., 950k of 1M
        ckpts = [c for c in default_checkpoints("td3", steps) if c > learning_starts]
    agent = {"algo": "td3", "learning_starts": learning_starts, "buffer_size": steps}
    if tiny:
        agent.update(hidden=(32, 32), batch_size=32)
    return TrainConfig(env="hopper", variant="paper", seeds=seeds, total_steps=steps, checkpoints=tuple(ckpts),
                       eval_every=steps // 20 if args.paper else steps // k, horizon=horizon, agent=agent)


def bare_rollout_rate(program, actor_params, start_state, batch_size: int, repeats: int = 2) -> float:
    """Env steps/s of the same vmapped rollout with θ unchanged (no update, nothing written)."""
    import jax
    import numpy as np

    from retland.purd.engine import SampleProgram, chunk_function
    from retland.purd.operators import Identity

    bare = SampleProgram(program.env, program.backend, program.horizon, program.policy, Identity(),
                         variant=program.variant)
    fn = chunk_function(bare)
    key = jax.random.PRNGKey(0)
    idx = np.arange(batch_size, dtype=np.int32)
    jax.block_until_ready(fn(actor_params, start_state, key, idx))  # compile
    t = time.perf_counter()
    for r in range(repeats):
        jax.block_until_ready(fn(actor_params, start_state, key, idx + r * batch_size))
    return repeats * batch_size * program.horizon / (time.perf_counter() - t)


def training_memory(cfg, result) -> dict | None:
    """XLA's memory figures of the training chunk program just run (its compile is in the
    cache, so this costs a cache hit): bytes per seed, and how many seeds fit this device."""
    from retland.core import sizing
    from retland.train.job import boundaries
    from retland.train.program import make_chunk_fn

    if result.state is None:  # trained in seed groups (the device could not hold all seeds)
        return {"seed_group": result.seed_group}
    fn = make_chunk_fn(cfg, cfg.steps, boundaries(cfg)[2])
    fp = sizing.footprint(fn.func, result.state, result.replay, fn.keywords["warmup"])
    if fp is None:
        return None
    room = sizing.budget()
    per_seed = fp.total / cfg.seeds
    out = {"need": fp.total, "arguments": fp.arguments, "temporaries": fp.temporaries, "aliased": fp.aliased,
           "per_seed": per_seed, "budget": room, "seed_group": result.seed_group, "seeds_that_fit": None if room is None else int(room // per_seed)}
    print(f"train memory (XLA): {sizing.gib(fp.total)} for {cfg.seeds} seeds ({sizing.gib(per_seed)} per seed, "
          f"buffers of {cfg.agent.buffer_size:,} rows); seeds that fit this device: {out['seeds_that_fit']}", flush=True)
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.forbid:
        sys.meta_path.insert(0, _Forbid(n.strip() for n in args.forbid.split(",") if n.strip()))
    import jax

    from retland.agents import get_agent
    from retland.core.envs import reference_state
    from retland.purd import sampling
    from retland.purd.operators import parse_operator
    from retland.train.checkpoints import load_checkpoint
    from retland.train.job import train
    from retland.warehouse import Warehouse

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    wh = Warehouse.open(out / "warehouse")
    cfg = study_config(args)
    device = jax.devices()[0]
    print(f"gpu_study: {device.platform} {getattr(device, 'device_kind', '')} x{jax.device_count()}, "
          f"jax {jax.__version__}; TD3 hopper (paper), {cfg.seeds} seeds x {cfg.steps:,} steps, "
          f"checkpoints {list(cfg.checkpoint_steps)}, horizon {cfg.horizon}", flush=True)

    t0 = time.perf_counter()
    done = {"steps": 0, "printed": t0}

    def progress(n=0, **info):  # a line every ~20 s: a run cut short still shows its rate
        done["steps"] += n
        now = time.perf_counter()
        if now - done["printed"] > 20 or info:
            done["printed"] = now
            print(f"  train: {done['steps']:,} of {cfg.steps:,} steps per seed after {now - t0:.0f} s"
                  + (f" ({info['eval']})" if "eval" in info else ""), flush=True)

    result = train(cfg, wh, progress=progress)
    train_s = time.perf_counter() - t0
    train_rate = cfg.seeds * cfg.steps / train_s
    print(f"train: {train_s:.1f} s wall, {train_rate:,.0f} env-steps/s over all seeds incl. compile "
          f"({result.env_steps_per_s:,.0f} in the training loop)", flush=True)

    train_memory = training_memory(cfg, result)
    spec = parse_operator("td3", horizon=cfg.horizon, seed=0)
    chosen = (args.sample_seeds or ("all" if args.paper else "1")).strip().lower()
    runs = result.run_ids if chosen == "all" else result.run_ids[:max(1, int(chosen))]
    n = args.samples or (32 if args.tiny else 1000)
    plans = sampling.plan_job(wh, [(run, s, spec) for run in runs for s in cfg.checkpoint_steps], n,
                              batch_size=args.batch_size)
    sample_s, sample_steps, per_ckpt = 0.0, 0, []
    ckpt = None
    for plan in plans:
        ckpt = load_checkpoint(wh, plan.run_id, plan.step)
        t = time.perf_counter()
        res = sampling.sample_checkpoint(wh, plan, checkpoint=ckpt)
        dt = time.perf_counter() - t
        computed = res.chunks_computed * res.batch_size
        per_ckpt.append({"run_id": plan.run_id, "step": plan.step, "rows": res.rows_written,
                         "seconds": round(dt, 2), "batch_size": res.batch_size})
        sample_s += dt
        sample_steps += computed * cfg.horizon
        print(f"sample {plan.run_id[-3:]} @ {plan.step}: {res.rows_written} rows in {dt:.1f} s (B = {res.batch_size})",
              flush=True)
    # The first checkpoint's time includes the compile; the rate is over the rest when there are any.
    warm = per_ckpt[1:] or per_ckpt
    warm_steps = sum(p["rows"] for p in warm) * cfg.horizon
    sample_rate = warm_steps / max(sum(p["seconds"] for p in warm), 1e-9)

    program, op_state = sampling.checkpoint_program(spec, ckpt)
    actor = get_agent(ckpt.algo, ckpt.config).actor_params(ckpt.state)
    start = reference_state(ckpt.env, ckpt.backend, variant=ckpt.variant)
    bare_rate = bare_rollout_rate(program, actor, start, plans[-1].batch_size)
    ratio = sample_rate / bare_rate

    summary = {
        "device": f"{device.platform} {getattr(device, 'device_kind', '')}".strip(),
        "devices": jax.device_count(), "jax": jax.__version__, "tiny": bool(args.tiny),
        "seeds": cfg.seeds, "steps": cfg.steps, "horizon": cfg.horizon, "checkpoints": list(cfg.checkpoint_steps),
        "train_seconds": round(train_s, 2), "train_env_steps_per_s": round(train_rate, 1),
        "train_loop_env_steps_per_s": round(result.env_steps_per_s, 1),
        "samples_per_checkpoint": n, "sampled_runs": len(runs), "sampling": per_ckpt, "sample_seconds": round(sample_s, 2),
        "sample_env_steps_per_s": round(sample_rate, 1), "bare_rollout_env_steps_per_s": round(bare_rate, 1),
        "sample_to_bare_ratio": round(ratio, 3), "warehouse": str(wh.root), "train_memory": train_memory,
        "polars_imported": "polars" in sys.modules,
    }
    print(f"sample: {sample_rate:,.0f} env-steps/s (td3 operator, after the first checkpoint's compile); "
          f"bare vmapped rollout {bare_rate:,.0f}; ratio {ratio:.2f}", flush=True)

    if args.packing:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import packing

        summary["packing"] = packing.measure(packing.parse_args(["--gpu"] + (
            ["--distributions", "4", "--samples", "64", "--horizon", "50", "--repeats", "1"] if args.tiny else [])))

    if not args.no_report:
        try:
            from retland.report import write_report
        except ImportError as exc:
            print(f"report: skipped ({exc}); run `retland report -w {wh.root}` where polars and altair are installed")
        else:
            path = write_report(wh, out / "report.html")
            summary["report"] = str(path)
            print(f"report: {path}")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"summary: {out / 'summary.json'}")
    return summary


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
