"""Packed chunks against one-distribution chunks, measured in one run.

    python benchmarks/packing.py                       # CPU: td3 operator, D=4 x N=128, T=200, W=256
    python benchmarks/packing.py --gpu                 # accelerator: D=20 x N=1000, T=1000, W=auto (4096),
                                                       # plus the reference: 5 distributions of N=4096, B=4096

A job samples D distributions that share a program: the shipped example checkpoint
(TD3 hopper, paper variant) added at D checkpoint steps (the same parameters and buffer,
so every distribution is the same computation and law). The same job runs through
`retland.purd.job.run_job` (planner, engine, warehouse writes, no leases) with
`--pack off` (each distribution's chunks alone, B auto or --batch-size) and with
`--pack W`, into fresh copies of the warehouse; compile is excluded (each variant runs
once first), then --repeats interleaved runs, the best counts. Prints env-steps/s (D·N·T
per wall second, padding not counted) and process-CPU seconds of both, and their ratios.
With --gpu it also runs the reference the issue names, full 4096-wide chunks: as many
distributions of N = 4096 (B = 4096, unpacked) as the packed job has chunks, and prints
packed / reference (target >= 0.9). Both are whole jobs, checkpoint loading included (a
packed chunk of 4 distributions loads 4 checkpoints, a full chunk 1; the next chunk's
loading overlaps the device's work on the current one).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import jax  # noqa: E402

from retland import shipped  # noqa: E402
from retland.purd.job import SampleRequest, resolve, run_job  # noqa: E402
from retland.warehouse import Warehouse  # noqa: E402

FIRST_STEP = 1_000_000  # the copies' steps: FIRST_STEP + i (the example itself is not sampled)


def base_warehouse(root: Path, copies: int) -> None:
    example = shipped.get(shipped.DEFAULT)
    for i in range(copies):
        meta = json.loads(json.dumps(example.meta))
        meta["checkpoint"]["step"] = FIRST_STEP + i
        meta["evaluations"] = []
        shipped.add(root, dataclasses.replace(example, meta=meta))


def run(base: Path, tmp: Path, *, operator: str, n: int, horizon: int, batch_size, pack, steps) -> tuple[float, float]:
    root = Path(tempfile.mkdtemp(dir=tmp))
    shutil.rmtree(root)
    shutil.copytree(base, root)
    wh = Warehouse.open(root, create=False)
    request = SampleRequest(operator, algo="td3", env="hopper", steps=tuple(steps), samples=n, horizon=horizon,
                            batch_size=batch_size, pack=pack).check()
    job = resolve(wh, request)
    t, c = time.perf_counter(), time.process_time()
    out = run_job(wh, job, leases=None)
    dt, dc = time.perf_counter() - t, time.process_time() - c
    assert out.rows_written == n * len(steps), out.rows_written
    shutil.rmtree(root, ignore_errors=True)
    return dt, dc


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", action="store_true", help="the accelerator sizes: D=20, N=1000, T=1000, W=auto")
    ap.add_argument("--operator", default="td3")
    ap.add_argument("--distributions", type=int, default=None, help="D (CPU 4, GPU 20)")
    ap.add_argument("--samples", type=int, default=None, help="N per distribution (CPU 128, GPU 1000)")
    ap.add_argument("--horizon", type=int, default=None, help="T (CPU 200, GPU 1000)")
    ap.add_argument("--batch-size", default="auto")
    ap.add_argument("--pack", default=None, help="W (CPU 256, GPU auto)")
    ap.add_argument("--repeats", type=int, default=2)
    return ap.parse_args(argv)


def measure(args) -> dict:
    """Run the variants; print and return their env-steps/s (see the module doc)."""
    d = args.distributions or (20 if args.gpu else 4)
    n = args.samples or (1000 if args.gpu else 128)
    horizon = args.horizon or (1000 if args.gpu else 200)
    pack = args.pack or ("auto" if args.gpu else "256")
    pack = pack if pack in ("auto", "off") else int(pack)
    batch = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    dev = jax.devices()[0]
    print(f"jax {jax.__version__} on {dev.platform} ({getattr(dev, 'device_kind', '')}) x{jax.local_device_count()}; "
          f"operator {args.operator}, D={d} distributions x N={n}, T={horizon}, --batch-size {batch}, --pack {pack}",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="retland-pack-") as tmp:
        tmp = Path(tmp)
        base = tmp / "base"
        base_warehouse(base, max(d, 1))  # the reference uses the first of these
        steps = [FIRST_STEP + i for i in range(d)]
        kw = dict(operator=args.operator, horizon=horizon)
        variants = {"unpacked": dict(n=n, batch_size=batch, pack="off", steps=steps),
                    "packed": dict(n=n, batch_size=batch, pack=pack, steps=steps)}
        if args.gpu:  # as many full 4096-wide chunks (one distribution each) as the packed job runs
            full = max(1, round(d * n / 4096))
            variants["full 4096 chunk"] = dict(n=4096, batch_size=4096, pack="off", steps=steps[:full])
        for name, v in variants.items():  # compile (and warm every cache) first
            t = time.perf_counter()
            run(base, tmp, **kw, **v)
            print(f"  warm-up {name}: {time.perf_counter() - t:.1f} s", flush=True)
        best: dict[str, tuple[float, float]] = {}
        for _ in range(args.repeats):
            for name, v in variants.items():
                dt, dc = run(base, tmp, **kw, **v)
                w, c = best.get(name, (float("inf"), float("inf")))
                best[name] = (min(w, dt), min(c, dc))
    out = {"device": f"{dev.platform} {getattr(dev, 'device_kind', '')}".strip(), "distributions": d, "samples": n,
           "horizon": horizon, "pack": pack, "batch_size": batch, "env_steps_per_s": {}}
    for name, v in variants.items():
        steps_total = v["n"] * len(v["steps"]) * horizon
        rate = out["env_steps_per_s"][name] = steps_total / best[name][0]
        print(f"{name:16s} {steps_total:>12,d} env-steps  best wall {best[name][0]:8.2f} s  "
              f"process CPU {best[name][1]:8.2f} s  {rate:>12,.0f} env-steps/s", flush=True)
    rate = out["env_steps_per_s"]
    out["packed_to_unpacked"] = rate["packed"] / rate["unpacked"]
    out["packed_to_unpacked_cpu_time"] = best["unpacked"][1] / best["packed"][1]
    print(f"packed / unpacked env-steps/s: {out['packed_to_unpacked']:.3f} (wall), "
          f"{out['packed_to_unpacked_cpu_time']:.3f} (process CPU time)")
    if args.gpu:
        out["packed_to_full_chunk"] = rate["packed"] / rate["full 4096 chunk"]
        print(f"packed / full 4096 chunk env-steps/s: {out['packed_to_full_chunk']:.3f} (target >= 0.9)")
    return out


def main(argv=None) -> dict:
    return measure(parse_args(argv))


if __name__ == "__main__":
    main()
