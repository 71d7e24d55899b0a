"""One-command GPU check: train, sample and write a warehouse the way a paper-scale study does.

    python benchmarks/gpu_study.py --out /tmp/gpu-study            # one GPU, <= ~10 minutes
    python benchmarks/gpu_study.py --tiny --out /tmp/gpu-tiny      # the same code path on CPU, < 2 minutes
    python benchmarks/gpu_study.py --paper --out /tmp/paper        # the paper's TD3 hopper study (one GPU window)
    python benchmarks/gpu_study.py --paper --out /tmp/paper --time-limit 9:00   # the same, in calls of 9 minutes

Run again with the same --out, it goes on where the last call stopped: a training job
of the same config is resumed from its last checkpoint (or skipped when complete), and
sampling computes only the chunks not stored yet (exact on the same platform). With
--time-limit, training stops at the last checkpoint that fits (`retland train
--time-limit`) and sampling stops after its chunk in flight (its rows flushed), so a
study longer than one command may run (a device call, a SLURM task) runs as several;
`stages.json` keeps every call's per-stage times, and summary.json sums them.

What it does, in one process:
1. trains TD3 on hopper (task rules `paper`) with S vmapped seeds (default 20) for
   T env steps per seed (default 200k: TD3 is latency-bound, ~565 iterations/s on an
   H200, so training takes ~6-7 minutes of the 10), with a few checkpoints;
2. samples N td3-operator post-update returns (default 1000, horizon 1000) at every
   checkpoint of seed 0, as `retland sample` does (the same request, planner, packed
   chunks and engine), appending rows to the warehouse under --out;
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
import contextlib
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
    p.add_argument("--pack", default="auto", help="lanes per packed sampling chunk: auto, off or a count (as `retland sample`)")
    p.add_argument("--time-limit", default=None,
                   help="wall time of this call (minutes, MIN:SS or H:MM:SS): training stops at the last checkpoint "
                        "that fits, sampling after its chunk in flight; run the same command again to go on")
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


class OutOfTime(Exception):
    """The call's --time-limit passed while sampling (raised from the progress hook, so the
    engine flushes the chunks it finished and releases their leases on the way out)."""


def find_training(wh, cfg):
    """(job id, run ids, complete) of a job in `wh` trained with exactly `cfg`, or None."""
    from retland.study.scope import find_job, trained_runs

    return find_job(trained_runs(wh), cfg)


def load_stages(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"calls": []}


def stage_totals(calls: list[dict]) -> dict:
    """Per stage, over every call: seconds, and the work done (env steps or rows)."""
    out: dict = {}
    for call in calls:
        for name, st in call["stages"].items():
            t = out.setdefault(name, {"seconds": 0.0, "calls": 0})
            t["seconds"] = round(t["seconds"] + st["seconds"], 2)
            t["calls"] += 1
            for k in ("env_steps", "rows"):
                if k in st:
                    t[k] = t.get(k, 0) + st[k]
    return out


def sampling_rate(wh, since) -> float | None:
    """Env steps/s of the sampling flushes recorded since `since` that hold no compile
    (chunk_timings; padding included), or None when there are none."""
    rows = wh.records("SELECT sum(env_steps) AS steps, sum(seconds) AS s FROM chunk_timings "
                      "WHERE table_name = 'post_update_returns' AND recorded_at >= ? AND NOT includes_compile",
                      [since])
    steps, secs = rows[0]["steps"], rows[0]["s"]
    return float(steps) / float(secs) if steps and secs else None


def main(argv=None) -> dict:
    args = parse_args(argv)
    from retland.config.requests import parse_duration  # no JAX: the limit counts from here, imports included

    limit = None if args.time_limit is None else parse_duration(args.time_limit, "--time-limit")
    deadline = None if limit is None else time.monotonic() + limit
    if args.forbid:
        sys.meta_path.insert(0, _Forbid(n.strip() for n in args.forbid.split(",") if n.strip()))
    from datetime import datetime, timezone

    import jax

    from retland.agents import get_agent
    from retland.core.envs import reference_state
    from retland.purd import sampling
    from retland.purd.job import SampleRequest, run_request
    from retland.purd.operators import parse_operator
    from retland.train.checkpoints import load_checkpoint
    from retland.train.job import train
    from retland.warehouse import Warehouse

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    wh = Warehouse.open(out / "warehouse")
    cfg = study_config(args)
    device = jax.devices()[0]
    device_name = f"{device.platform} {getattr(device, 'device_kind', '')}".strip()
    print(f"gpu_study: {device.platform} {getattr(device, 'device_kind', '')} x{jax.device_count()}, "
          f"jax {jax.__version__}; TD3 hopper (paper), {cfg.seeds} seeds x {cfg.steps:,} steps, "
          f"checkpoints {list(cfg.checkpoint_steps)}, horizon {cfg.horizon}"
          + (f"; this call: {limit:.0f} s" if limit else ""), flush=True)
    stages_path = out / "stages.json"
    record = load_stages(stages_path)
    call = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": device_name,
            "jax": jax.__version__, "time_limit_s": limit, "stages": {}}
    record["calls"].append(call)

    def save(status: str) -> None:
        call["status"] = status
        stages_path.write_text(json.dumps(record, indent=2) + "\n")

    # ---- train (or resume, or find done) ---------------------------------------------------
    t0 = time.perf_counter()
    done = {"steps": 0, "printed": t0}

    def progress(n=0, **info):  # a line every ~20 s: a run cut short still shows its rate
        done["steps"] += n
        now = time.perf_counter()
        if now - done["printed"] > 20 or info:
            done["printed"] = now
            print(f"  train: {int(done['steps']):,} of {cfg.steps:,} steps per seed after {now - t0:.0f} s"
                  + (f" ({info['eval']})" if "eval" in info else ""), flush=True)

    found = find_training(wh, cfg)
    result, train_memory = None, None
    if found and found[2]:
        runs_all = found[1]
        print(f"train: job {found[0]} is complete in {wh.root}; not trained again", flush=True)
    else:
        if found:
            print(f"train: resuming job {found[0]}", flush=True)
        try:
            result = train(cfg, wh, progress=progress, resume=found[0] if found else None, deadline=deadline)
        except KeyboardInterrupt:  # Ctrl-C, or device_check's timeout net: the job resumes from its last checkpoint
            call["stages"]["train"] = {"seconds": round(time.perf_counter() - t0, 2), "interrupted": True}
            save("interrupted in train")
            print("train: interrupted; run the same command again to go on", flush=True)
            raise SystemExit(130) from None
        train_s = time.perf_counter() - t0
        trained = cfg.seeds * (result.steps - (result.resumed_from or 0))
        call["stages"]["train"] = {"seconds": round(train_s, 2), "env_steps": int(trained),
                                   "env_steps_per_s": round(trained / max(train_s, 1e-9), 1),
                                   "loop_env_steps_per_s": round(result.env_steps_per_s, 1),
                                   "from_step": int(result.resumed_from or 0), "to_step": int(result.steps),
                                   "time_limited": result.time_limited}
        print(f"train: {train_s:.1f} s wall, {trained / max(train_s, 1e-9):,.0f} env-steps/s over all seeds incl. "
              f"compile ({result.env_steps_per_s:,.0f} in the training loop)", flush=True)
        if result.time_limited:
            save("time limit in train")
            print(f"train: stopped by --time-limit at step {result.steps:,} of {cfg.steps:,} (checkpoints "
                  f"{result.checkpoints or 'none yet'}); run the same command again to go on", flush=True)
            return {"status": "time limit in train", "stages": str(stages_path)}
        if result.state is not None:
            train_memory = training_memory(cfg, result)
        runs_all = result.run_ids

    # ---- sample, as `retland sample` does -------------------------------------------------
    chosen = (args.sample_seeds or ("all" if args.paper else "1")).strip().lower()
    runs = runs_all if chosen == "all" else runs_all[:max(1, int(chosen))]
    n = args.samples or (32 if args.tiny else 1000)
    pack = args.pack if args.pack in ("auto", "off") else int(args.pack)
    batch = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    request = SampleRequest(operator="td3", runs=tuple(runs), steps=tuple(cfg.checkpoint_steps), samples=n,
                            horizon=cfg.horizon, batch_size=batch, pack=pack)
    since = datetime.now(timezone.utc)
    sampled = {"rows": 0, "printed": time.perf_counter()}

    @contextlib.contextmanager
    def sample_bar(total, description, **options):
        def advance(k=0, **info):
            sampled["rows"] += k
            now = time.perf_counter()
            if now - sampled["printed"] > 20:
                sampled["printed"] = now
                print(f"  sample: {sampled['rows']:,} of {total:,} rows after {now - t1:.0f} s", flush=True)
            if deadline is not None and time.monotonic() >= deadline:
                raise OutOfTime
        yield advance

    def on_plan(job, plans, shard):
        todo = sum(p.new_rows for p in plans)
        packed = sorted({(p.slots, p.batch_size) for p in plans if p.todo and p.slots > 1})
        print(f"sample: {len(plans)} distributions x N={n}, {todo:,} rows to compute"
              + "".join(f", packed {m} chunks of {b} to {m * b} lanes" for m, b in packed), flush=True)

    t1 = time.perf_counter()
    status = "complete"
    try:
        outcome = run_request(wh, request.check(), progress=sample_bar, on_plan=on_plan)
        written = outcome.rows_written
    except OutOfTime:
        status, written = "time limit in sample", sampled["rows"]
    except KeyboardInterrupt:  # the finished chunks were flushed on the way out, as on OutOfTime
        status, written = "interrupted in sample", sampled["rows"]
    sample_s = time.perf_counter() - t1
    steady = sampling_rate(wh, since)
    call["stages"]["sample"] = {"seconds": round(sample_s, 2), "rows": int(written),
                                "env_steps": int(written) * cfg.horizon,
                                "steady_env_steps_per_s": None if steady is None else round(steady, 1)}
    if status != "complete":
        save(status)
        print(f"sample: stopped ({status}) after {written:,} rows; run the same command again to go on", flush=True)
        return {"status": status, "stages": str(stages_path)}
    print(f"sample: {written:,} rows in {sample_s:.1f} s"
          + (f", {steady:,.0f} env-steps/s after the compile (padding included)" if steady else ""), flush=True)

    # ---- the bare rollout, for the ratio --------------------------------------------------
    spec = parse_operator("td3", horizon=cfg.horizon, seed=0)
    ckpt = load_checkpoint(wh, runs[0], cfg.checkpoint_steps[-1])
    program, _ = sampling.checkpoint_program(spec, ckpt)
    actor = get_agent(ckpt.algo, ckpt.config).actor_params(ckpt.state)
    start = reference_state(ckpt.env, ckpt.backend, variant=ckpt.variant)
    chunk = sampling.auto_batch_size(n) if batch == "auto" else batch
    if deadline is not None and time.monotonic() > deadline - 60:  # a compile and two chunks: about a minute
        bare_rate = None
        print("bare rollout: skipped (the call's time limit is near); the study is complete", flush=True)
    else:
        bare_rate = bare_rollout_rate(program, actor, start, chunk)
    rows = wh.records("SELECT count(*) AS n FROM post_update_returns")[0]["n"]
    totals = stage_totals(record["calls"])
    sample_rate = steady or (written * cfg.horizon / max(sample_s, 1e-9))
    summary = {
        "device": device_name, "devices": jax.device_count(), "jax": jax.__version__, "tiny": bool(args.tiny),
        "paper": bool(args.paper), "seeds": cfg.seeds, "steps": cfg.steps, "horizon": cfg.horizon,
        "checkpoints": list(cfg.checkpoint_steps), "calls": len(record["calls"]), "stages": totals,
        "study_seconds": round(sum(t["seconds"] for t in totals.values()), 2),
        "train_env_steps_per_s": totals.get("train", {}).get("env_steps", 0) / max(
            totals.get("train", {}).get("seconds", 0.0), 1e-9) if "train" in totals else None,
        "samples_per_checkpoint": n, "sampled_runs": len(runs), "rows": int(rows),
        "sample_env_steps_per_s": round(sample_rate, 1),
        "bare_rollout_env_steps_per_s": None if bare_rate is None else round(bare_rate, 1),
        "sample_to_bare_ratio": None if bare_rate is None else round(sample_rate / bare_rate, 3),
        "warehouse": str(wh.root),
        "train_memory": train_memory, "polars_imported": "polars" in sys.modules,
    }
    if bare_rate is not None:
        print(f"sample: {sample_rate:,.0f} env-steps/s (td3 operator); bare vmapped rollout {bare_rate:,.0f} "
              f"(B = {chunk}); ratio {sample_rate / bare_rate:.2f}", flush=True)
    print("stages over all calls: " + ", ".join(f"{k} {v['seconds']:.0f} s" for k, v in totals.items())
          + f"; study {summary['study_seconds']:.0f} s in {len(record['calls'])} call(s)", flush=True)

    if args.packing and not (deadline is not None and time.monotonic() > deadline - 120):
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
    save("complete")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"summary: {out / 'summary.json'}")
    return summary


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
