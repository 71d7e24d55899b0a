"""Training iterations/s against vmapped seeds, on the paper's physics, per program kind.

TD3 on hopper with the paper variant (Brax 0.0.13's simulator, backend brax0013). Two
network sizes: Table 1's (2x256 networks, batch 256: compute-bound on a CPU) and the
latency proxy `--tiny` adds (2x16 networks, batch 16: per-iteration fixed cost dominates,
as on a GPU). For each seed count S the training chunk program (all S seeds in one
vmapped, jitted program) is compiled once, the uniform warm-up fills the buffers, and
`--repeats` timed chunks of `--steps` iterations follow; the median is reported as
iterations/s (one iteration = one env step and one update of every seed) and env-steps/s
(iterations/s x S). Each row also gives the kernels and conditionals one iteration runs
(`hlo_count.py`, read from the compiled program): on a GPU each kernel is a launch and
each conditional a device-to-host round trip.

Program kinds (`--modes`, each measured in its own process, alternated over `--rounds`
so that a drifting machine hits them alike):
  branching   the chunk whose warm-up, actor-step and reset branches are lax.conds (CPU default)
  fixed       the branch-free chunk (accelerator default; retland.train.program.fixed_branches)
  MODE+graphs the same with XLA's GPU command buffers extended to whole loops and
              conditionals (--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL,
              --xla_gpu_graph_min_graph_size=1; XLA reads them only on a GPU)
`--ref DIR` adds the `branching` program of another checkout (e.g. a worktree of the
commit before a change) as kind `ref`, timed in the same alternation.

    python benchmarks/train_seeds.py                          # CPU: branching, + tiny proxy
    python benchmarks/train_seeds.py --ref /tmp/old-checkout  # before/after in one run
    python benchmarks/train_seeds.py --modes branching,fixed,fixed+graphs   # the GPU check
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
GRAPH_FLAGS = "--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL --xla_gpu_graph_min_graph_size=1"
SIZES = {"table1": dict(hidden=(256, 256), batch_size=256), "tiny": dict(hidden=(16, 16), batch_size=16)}


def worker(args) -> None:
    """Measure in this process (code from sys.path as the parent set it); one JSON line per seed count."""
    import jax
    import numpy as np

    from hlo_count import per_iteration
    from retland.train.config import TD3Config, TrainConfig
    from retland.train.program import init_states, make_chunk_fn

    dev = jax.devices()[0]
    for s in (int(x) for x in args.seeds.split(",")):
        agent = TD3Config(learning_starts=args.prefill, **SIZES[args.size])
        cfg = TrainConfig(env="hopper", variant="paper", seeds=s, total_steps=args.prefill + (args.repeats + 2) * args.steps,
                          checkpoints=(args.prefill,), eval_every=args.prefill, agent=agent)
        ts, rb = init_states(cfg)
        ts, rb = make_chunk_fn(cfg, 0, args.prefill)(ts, rb)  # uniform warm-up fills the buffers
        fn = make_chunk_fn(cfg, args.prefill, args.steps)
        t0 = time.perf_counter()
        compiled = fn.func.lower(ts, rb, fn.keywords["warmup"]).compile()
        compile_s = time.perf_counter() - t0
        # the branch-free TD3 chunk lays out one actor-step period (policy_delay steps) per loop body
        fixed = os.environ.get("RETLAND_FIXED_BRANCHES") == "1"
        counts = per_iteration(compiled.as_text(), agent.policy_delay if fixed else 1)
        ts, rb = compiled(ts, rb, fn.keywords["warmup"])
        jax.block_until_ready(ts)
        rates = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            ts, rb = compiled(ts, rb, fn.keywords["warmup"])
            jax.block_until_ready(ts)
            rates.append(args.steps / (time.perf_counter() - t))
        print(json.dumps(dict(seeds=s, it_s=float(np.median(rates)), compile_s=compile_s, **counts,
                              device=f"{dev.platform} {getattr(dev, 'device_kind', '')}", jax=jax.__version__)),
              flush=True)


def run_worker(root: Path, mode: str, size: str, args) -> list[dict]:
    base, _, extra = mode.partition("+")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(root), str(HERE)]),
               RETLAND_FIXED_BRANCHES="1" if base == "fixed" else "0")
    if extra == "graphs":
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + GRAPH_FLAGS).strip()
    cmd = [sys.executable, str(HERE / "train_seeds.py"), "--worker", "--size", size, "--seeds", args.seeds,
           "--steps", str(args.steps if size == "table1" else args.tiny_steps), "--prefill", str(args.prefill),
           "--repeats", str(args.repeats)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=root)
    if out.returncode:
        sys.exit(f"{mode} ({size}) failed:\n{out.stderr[-3000:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="1,2,4,8,20", help="seed counts to time, comma-separated")
    ap.add_argument("--steps", type=int, default=200, help="iterations per timed chunk, Table 1 networks")
    ap.add_argument("--tiny-steps", type=int, default=1000, help="iterations per timed chunk, tiny networks")
    ap.add_argument("--prefill", type=int, default=1000, help="uniform warm-up steps before timing")
    ap.add_argument("--repeats", type=int, default=3, help="timed chunks per seed count (median)")
    ap.add_argument("--rounds", type=int, default=1, help="alternations of the program kinds (best round kept)")
    ap.add_argument("--modes", default="branching", help="program kinds, comma-separated (see above)")
    ap.add_argument("--ref", type=Path, help="another checkout: its branching program is timed as kind `ref`")
    ap.add_argument("--sizes", default="table1,tiny", help="network sizes: table1, tiny (the latency proxy)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--size", default="table1", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    kinds = [(m, HERE.parent, m) for m in args.modes.split(",")]
    if args.ref:
        kinds.insert(0, ("ref", args.ref.resolve(), "branching"))
    for size in args.sizes.split(","):
        best: dict[tuple[str, int], dict] = {}
        for _ in range(args.rounds):
            for label, root, mode in kinds:
                for row in run_worker(root, mode, size, args):
                    key = (label, row["seeds"])
                    if key not in best or row["it_s"] > best[key]["it_s"]:
                        best[key] = row
        first = next(iter(best.values()))
        net = "2x256, batch 256 (Table 1)" if size == "table1" else "2x16, batch 16 (latency proxy)"
        print(f"\nTD3 hopper (paper variant, brax0013), networks {net}, on {first['device']}, jax {first['jax']}; "
              f"best of {args.rounds} round(s) of the median of {args.repeats} chunks")
        print(f"{'kind':>14}  {'seeds':>5}  {'iterations/s':>12}  {'env-steps/s':>11}  {'vs 1 seed':>9}  "
              f"{'kernels/it':>10}  {'conds/it':>8}  {'compile s':>9}")
        for label, _, _ in kinds:
            one = best.get((label, 1))
            for s in (int(x) for x in args.seeds.split(",")):
                r = best[(label, s)]
                scale = f"{r['it_s'] * s / one['it_s']:>8.2f}x" if one else f"{'':>9}"
                print(f"{label:>14}  {s:>5}  {r['it_s']:>12,.1f}  {r['it_s'] * s:>11,.0f}  {scale}  "
                      f"{r['kernels']:>10.0f}  {r['conditionals']:>8.1f}  {r['compile_s']:>9.1f}", flush=True)
        if len(kinds) > 1:
            base = kinds[0][0]
            for label, _, _ in kinds[1:]:
                ratios = [best[(label, int(s))]["it_s"] / best[(base, int(s))]["it_s"] for s in args.seeds.split(",")]
                print(f"{label} / {base}: " + ", ".join(f"{s} seeds {r:.2f}x" for s, r in zip(args.seeds.split(","), ratios)))


if __name__ == "__main__":
    main()
