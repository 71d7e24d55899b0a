"""Sampling throughput: the full path against a bare vmapped rollout (the floor).

    python benchmarks/sampling.py [--envs hopper,halfcheetah] [--samples 512] [--horizon 1000]

For each env, one policy θ (a fresh 256x256 `DeterministicActor`, or --run/--step for a
stored checkpoint) and N samples of gaussian(σ = 3e-4):
- full: `sample_distribution` into a fresh warehouse: update operator + rollout in one
  jitted chunk program, host transfer, NaN check, Parquet write, resumption query;
- floor: the same N distinct policies θ_i, precomputed and stacked [B, ...], through
  `jax.jit(jax.vmap(rollout))` chunk by chunk, nothing written.
Both use the same chunk size B (auto) and horizon; compile time is excluded (both
paths run once before timing); the best of --repeats interleaved runs counts. Prints
samples/s of both and their ratio (target ≥ 0.95), and the same ratio in process CPU
time, which is robust to other jobs on a shared machine.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from retland.core.envs import DEFAULT_VARIANT, default_backend, env_dims, reference_env, reference_state  # noqa: E402
from retland.core.networks import DeterministicActor, init_params  # noqa: E402
from retland.core.rollout import rollout  # noqa: E402
from retland.purd.operators import Gaussian, parse_operator, sample_key  # noqa: E402
from retland.purd.engine import ActorPolicy, chunk_indices, program_for  # noqa: E402
from retland.purd.sampling import auto_batch_size, sample_distribution  # noqa: E402
from retland.warehouse import Warehouse  # noqa: E402


def bench_env(env: str, n: int, horizon: int, repeats: int) -> dict:
    backend = default_backend(env, DEFAULT_VARIANT)
    obs_size, action_size = env_dims(env, backend, variant=DEFAULT_VARIANT)
    policy = ActorPolicy(action_size)
    theta = init_params(DeterministicActor(action_size), jax.random.PRNGKey(0), jnp.zeros(obs_size))
    spec = parse_operator("gaussian", horizon=horizon)
    program = program_for(spec, env, backend, policy, variant=DEFAULT_VARIANT)
    b = auto_batch_size(n)
    n_chunks = -(-n // b)
    s0 = reference_state(env, backend, variant=DEFAULT_VARIANT)
    renv = reference_env(env, backend, variant=DEFAULT_VARIANT)

    # floor: explicit stacked parameters of the same distinct policies
    perturb = jax.jit(jax.vmap(lambda i: Gaussian(spec.param("sigma"))(theta, sample_key(spec.base_key, i), i)))
    stacks = [jax.block_until_ready(perturb(jnp.asarray(chunk_indices(k, b)))) for k in range(n_chunks)]
    bare = jax.jit(jax.vmap(lambda p, s: rollout(renv, policy, p, s, horizon), in_axes=(0, None)))

    def floor() -> tuple[float, float]:
        t, c = time.perf_counter(), time.process_time()
        outs = [bare(p, s0) for p in stacks]
        jax.block_until_ready(outs)
        [np.asarray(o.ret) for o in outs]
        return time.perf_counter() - t, time.process_time() - c

    def full() -> tuple[float, float]:
        wh = Warehouse.open(tempfile.mkdtemp(prefix="retland-bench-"))
        t, c = time.perf_counter(), time.process_time()
        r = sample_distribution(wh, run_id=f"bench-{env}", step=0, spec=spec, program=program,
                                op_state=theta, n_samples=n, batch_size=b)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        assert r.rows_written == n
        return dt, dc

    t = time.perf_counter()
    floor()
    full()
    compile_s = time.perf_counter() - t
    floors, fulls = [], []
    for _ in range(repeats):  # interleaved, so machine load affects both alike
        floors.append(floor())
        fulls.append(full())
    tf, tu = min(w for w, _ in floors), min(w for w, _ in fulls)
    cf, cu = min(c for _, c in floors), min(c for _, c in fulls)
    return dict(env=env, n=n, b=b, horizon=horizon, compile_s=compile_s,
                floor_sps=n / tf, full_sps=n / tu, ratio=tf / tu, cpu_ratio=cf / cu,
                floor_env_steps=n * horizon / tf, full_env_steps=n * horizon / tu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envs", default="hopper,halfcheetah")
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--horizon", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} x{jax.local_device_count()}, "
          f"variant {DEFAULT_VARIANT} (backend {default_backend('hopper', DEFAULT_VARIANT)})")
    print(f"{'env':12} {'N':>5} {'B':>4} {'T':>5} {'floor samples/s':>16} {'full samples/s':>15} "
          f"{'full env-steps/s':>17} {'ratio':>6} {'CPU-time ratio':>15}")
    for env in args.envs.split(","):
        r = bench_env(env, args.samples, args.horizon, args.repeats)
        print(f"{r['env']:12} {r['n']:5d} {r['b']:4d} {r['horizon']:5d} {r['floor_sps']:16.1f} "
              f"{r['full_sps']:15.1f} {r['full_env_steps']:17,.0f} {r['ratio']:6.3f} {r['cpu_ratio']:15.3f}",
              flush=True)


if __name__ == "__main__":
    main()
