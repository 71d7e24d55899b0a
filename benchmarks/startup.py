"""Start-up of `retland sample`: command start -> first chunk dispatched, with and without
the program store (retland.core.programs).

    python benchmarks/startup.py [--horizon 1000] [--samples 64] [--breakdown]

In a temporary folder (warehouse, compile cache and program store all inside it, removed
at the end) the shipped example checkpoint (td3-hopper) is added to two warehouses, and
each run below is a fresh `retland sample --operator gaussian` subprocess sampling a NEW
distribution (a new --key-seed: same program, new rows), as a resumed shard, an array
task or the next analysis does:

    traced, cold   store off (RETLAND_PROGRAM_CACHE=0), empty compile cache
    traced, warm   store off, the compile cache holds the program: the start-up before the store
    stored, cold   store on and empty: traces, exports and stores the program, compiles it
    stored, warm   store on and holding the program: loads it, compile cache hit

"first chunk" is the time from starting the subprocess to the moment its first chunk
program call returned (dispatched; `programs.stats()["first_dispatch"]`, written through
RETLAND_PROGRAM_STATS), "total" the whole command, "CPU" the child's user + system time
(robust to other jobs on a shared machine). The traced and stored runs sample the same
key seeds into their own warehouse, and every row is compared bit for bit.

--breakdown runs one more warm stored start under cProfile and prints where its time went
(imports, warehouse connections, loading the checkpoint, planning, the program store; an
entry at 0 did not run, e.g. building the env) — cProfile slows Python, so read those as
shares, not as times.
"""
from __future__ import annotations

import argparse
import json
import os
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUN_ENV = "hopper"


def retland(args: list[str], env: dict, profile: Path | None = None) -> tuple[float, float, float, dict | None]:
    """Run `retland ARGS` in a fresh interpreter: (seconds to first chunk, total seconds,
    child CPU seconds, program store stats)."""
    stats_file = Path(env["RETLAND_PROGRAM_STATS"])
    stats_file.unlink(missing_ok=True)
    prefix = [sys.executable] + (["-m", "cProfile", "-o", str(profile)] if profile else [])
    code = "import sys; from retland.cli.main import main; sys.argv[0] = 'retland'; main()"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.time()
    if profile:  # cProfile runs a file, not -c
        script = stats_file.with_suffix(".py")
        script.write_text(code + "\n")
        cmd = prefix + [str(script), *args]
    else:
        cmd = prefix + ["-c", code, *args]
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    total = time.time() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"retland {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    stats = json.loads(stats_file.read_text()) if stats_file.exists() else None
    first = (stats["first_dispatch"] - start) if stats and stats.get("first_dispatch") else float("nan")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return first, total, cpu, stats


def rows(warehouse: Path, operator_ids: list[str]) -> dict:
    from retland.warehouse import Warehouse

    wh = Warehouse.open(warehouse, create=False)
    out = {}
    for r in wh.records("SELECT operator_id, update_index, \"return\" AS ret, discounted_return, episode_length, "
                        "terminated FROM post_update_returns ORDER BY operator_id, update_index"):
        if r["operator_id"] in operator_ids:
            out[(r["operator_id"], r["update_index"])] = (r["ret"], r["discounted_return"], r["episode_length"],
                                                          r["terminated"])
    return out


BREAKDOWN = [  # (label, function name as cProfile lists it: file suffix, function)
    ("imports (all modules)", ("<frozen importlib._bootstrap>", "_find_and_load")),
    ("DuckDB connections built (warehouse views)", ("retland/warehouse/__init__.py", "_connect")),
    ("select checkpoints (warehouse queries)", ("retland/purd/selection.py", "select_checkpoints")),
    ("plan (warehouse queries)", ("retland/purd/sampling.py", "plan_job")),
    ("load_checkpoint", ("retland/train/checkpoints.py", "load_checkpoint")),
    ("  of which the agent state's shapes (no env)", ("retland/train/checkpoints.py", "abstract_agent_state")),
    ("  of which importing orbax", ("retland/train/checkpoints.py", "_checkpointer")),
    ("whole TrainState (abstract_seed_state: builds the env)", ("retland/train/program.py", "abstract_seed_state")),
    ("importing brax.envs", ("retland/core/envs.py", "_import_brax_envs")),
    ("reference state s0 (store)", ("retland/purd/engine.py", "reference_start")),
    ("chunk program: load + lower + compile cache + dispatch", ("retland/core/programs.py", "__call__")),
    ("rollouts (waiting for the results)", ("retland/purd/engine.py", "fetch")),
]


def breakdown(profile: Path) -> list[tuple[str, float, int]]:
    """(label, cumulative seconds, calls) of each BREAKDOWN entry in a cProfile file."""
    st = pstats.Stats(str(profile)).stats  # {(file, line, func): (cc, nc, tt, ct, callers)}
    total = max(v[3] for v in st.values())
    out = [("whole command (under cProfile)", total, 1)]
    for label, (suffix, func) in BREAKDOWN:
        hits = [v for (f, _, fn), v in st.items() if f.endswith(suffix) and fn == func]
        out.append((label, max(v[3] for v in hits) if hits else 0.0, max(v[0] for v in hits) if hits else 0))
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--horizon", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--breakdown", action="store_true", help="profile one more warm stored start")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)

    from retland.core.repro import cpu_name

    tmp = Path(tempfile.mkdtemp(prefix="retland-startup-"))
    try:
        base = {k: v for k, v in os.environ.items()
                if k not in ("RETLAND_WAREHOUSE", "JAX_COMPILATION_CACHE_DIR", "XLA_FLAGS")}
        base.update(TF_CPP_MIN_LOG_LEVEL="3", RETLAND_JAX_CACHE=str(tmp / "jax"),
                    RETLAND_PROGRAM_STATS=str(tmp / "stats.json"))
        traced_env = dict(base, RETLAND_PROGRAM_CACHE="0")
        stored_env = dict(base, RETLAND_PROGRAM_CACHE=str(tmp / "programs"))
        print(f"startup: {cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
              f"retland sample --operator gaussian --samples {args.samples} --horizon {args.horizon} "
              f"({RUN_ENV} example checkpoint); temp folder {tmp}", flush=True)

        from retland.shipped import get

        example = get("td3-hopper")
        run, step = example.run_id, example.step
        wh_traced, wh_stored = tmp / "wh-traced", tmp / "wh-stored"
        subprocess.run([sys.executable, "-c", "from retland.cli.main import main; main()", "add-example",
                        "-w", str(wh_traced)], env=traced_env, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        shutil.copytree(wh_traced, wh_stored)

        def sample(wh: Path, seed: int) -> list[str]:
            return ["sample", "-w", str(wh), "--run", run, "--steps", str(step), "--operator", "gaussian",
                    "--samples", str(args.samples), "--horizon", str(args.horizon), "--key-seed", str(seed),
                    "--no-progress"]

        plan = [("traced, cold", wh_traced, traced_env, 1), ("traced, warm", wh_traced, traced_env, 2),
                ("stored, cold", wh_stored, stored_env, 1), ("stored, warm", wh_stored, stored_env, 2)]
        results = {}
        print(f"{'run':<14} {'first chunk s':>14} {'total s':>9} {'CPU s':>7}  program store", flush=True)
        for label, wh, env, seed in plan:
            first, total, cpu, stats = retland(sample(wh, seed), env)
            store = ("off" if not stats or not stats["enabled"] else
                     f"hits {stats['hits']}, misses {stats['misses']}, stored {stats['stored']}")
            results[label] = {"first_chunk_s": first, "total_s": total, "cpu_s": cpu, "stats": stats}
            print(f"{label:<14} {first:>14.1f} {total:>9.1f} {cpu:>7.1f}  {store}", flush=True)

        ids = [f"gaussian[sigma=0.0003,h={args.horizon},seed={s}]" for s in (1, 2)]
        a, b = rows(wh_traced, ids), rows(wh_stored, ids)
        same = bool(a) and a.keys() == b.keys() and all(
            all((x == y) or (x != x and y != y) for x, y in zip(a[k], b[k])) for k in a)
        results["rows_bit_identical"], results["rows_compared"] = same, len(a)
        print(f"rows of the traced and stored runs: {len(a)} compared, "
              f"{'bit-identical' if same else 'DIFFERENT'}", flush=True)
        warm = results["stored, warm"]
        print(f"stored warm start: {warm['first_chunk_s']:.1f} s to the first chunk "
              f"(traced warm: {results['traced, warm']['first_chunk_s']:.1f} s); load average now "
              f"{os.getloadavg()[0]:.1f}", flush=True)

        if args.breakdown:
            prof = tmp / "warm.prof"
            first, total, cpu, _ = retland(sample(wh_stored, 3), stored_env, profile=prof)
            print(f"breakdown of one more warm stored start under cProfile (first chunk {first:.1f} s, "
                  f"total {total:.1f} s):")
            results["breakdown"] = breakdown(prof)
            for label, seconds, calls in results["breakdown"]:
                print(f"  {label:<58} {seconds:>7.2f} s" + (f"  ({calls} built)" if label.startswith("DuckDB") else ""))
        if args.json:
            args.json.write_text(json.dumps(results, indent=1, default=str))
        if not same:
            raise SystemExit("rows differ between the traced and the stored program")
        return results
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
