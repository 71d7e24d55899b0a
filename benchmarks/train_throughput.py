"""Training throughput: retland TD3 (1 and 20 vmapped seeds) and SAC vs brax.training SAC.

Matched settings: hopper/positional, one env per seed, 2x256 ReLU networks, batch 256,
one gradient update per env step, replay prefilled. Timings exclude compilation (each
program runs once before it is timed) and are the median of `--repeats` timed chunks
(brax: of its post-compile training epochs), because a shared 2-core machine drifts by
±15% between minutes. Prints env-steps/s (all seeds together) and the ratios to brax SAC.
Runs on JAX 0.9.2 through 0.12 (brax.training needs the shim in brax_sac_rate from 0.10 on).
Run: python benchmarks/train_throughput.py
"""
from __future__ import annotations

import argparse
import contextlib
import io
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from retland.core.envs import DEFAULT_BACKEND, make_env
from retland.train.config import SACConfig, TD3Config, TrainConfig
from retland.train.program import init_states, make_chunk_fn

ENV = "hopper"


def retland_rate(agent, seeds: int, steps: int, prefill: int = 1000, repeats: int = 3, variant: str = "brax") -> float:
    """Env steps/s of all `seeds` together: the median of `repeats` timed training chunks
    of `steps` env steps, after the warm-up fills the buffer and one chunk compiles."""
    cfg = TrainConfig(env=ENV, variant=variant, seeds=seeds, total_steps=prefill + (repeats + 2) * steps, checkpoints=(prefill,),
                      eval_every=prefill, agent=agent.model_copy(update={"learning_starts": prefill}))
    ts, rb = init_states(cfg)
    ts, rb = make_chunk_fn(cfg, 0, prefill)(ts, rb)  # uniform warm-up fills the buffer
    run = make_chunk_fn(cfg, prefill, steps)
    ts, rb = run(ts, rb)  # compile + one chunk
    jax.block_until_ready(ts)
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        ts, rb = run(ts, rb)
        jax.block_until_ready(ts)
        rates.append(seeds * steps / (time.perf_counter() - t))
    return float(np.median(rates))


def _device_put_replicated(x, devices):
    """jax.device_put_replicated as JAX <= 0.9 defined it, from public APIs: every leaf
    stacked along a new leading axis of len(devices), slice i on devices[i] (a
    NamedSharding over a one-axis mesh, the replacement the JAX pmap migration guide gives)."""
    mesh = jax.sharding.Mesh(np.array(devices), ("replica",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("replica"))
    return jax.tree.map(lambda leaf: jax.device_put(jnp.stack([jnp.asarray(leaf)] * len(devices)), sharding), x)


def brax_sac_rate(steps: int, prefill: int = 1000, repeats: int = 3) -> float:
    # Compatibility shim, benchmark only: brax.training (0.14) still calls
    # jax.device_put_replicated, which JAX 0.10 removed. On older JAX the original stays.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not hasattr(jax, "device_put_replicated"):
            jax.device_put_replicated = _device_put_replicated
        from brax.training.agents.sac import train as brax_sac
    rates = []

    def progress(step, metrics):
        if "training/sps" in metrics:
            rates.append(float(metrics["training/sps"]))

    # num_evals = repeats + 2: repeats + 1 training epochs of `steps` env steps; the
    # first includes compilation and is dropped.
    total = prefill + (repeats + 1) * steps
    brax_sac.train(environment=make_env(ENV, DEFAULT_BACKEND, variant="brax"), num_timesteps=total,
                   episode_length=1000, num_envs=1, batch_size=256, grad_updates_per_step=1,
                   min_replay_size=prefill, max_replay_size=total, learning_rate=3e-4,
                   discounting=0.99, num_evals=repeats + 2, num_eval_envs=1, progress_fn=progress, seed=0)
    return float(np.median(rates[1:]))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=2000, help="timed env steps per seed (1-seed runs)")
    ap.add_argument("--steps-20", type=int, default=500, help="timed env steps per seed, 20 seeds")
    args = ap.parse_args()
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}; env {ENV}/{DEFAULT_BACKEND}")
    td3_1 = retland_rate(TD3Config(), 1, args.steps)
    print(f"retland TD3   1 seed : {td3_1:8.0f} env-steps/s")
    brax = brax_sac_rate(args.steps)
    print(f"brax SAC      1 env  : {brax:8.0f} env-steps/s")
    td3_20 = retland_rate(TD3Config(), 20, args.steps_20)
    print(f"retland TD3  20 seeds: {td3_20:8.0f} env-steps/s (all seeds), {td3_20 / 20:.0f} per seed")
    sac_1 = retland_rate(SACConfig(), 1, args.steps)
    print(f"retland SAC   1 seed : {sac_1:8.0f} env-steps/s")
    print(f"ratio retland TD3 (1 seed) / brax SAC: {td3_1 / brax:.2f}")
    print(f"ratio retland SAC (1 seed) / brax SAC: {sac_1 / brax:.2f}")
    print(f"ratio retland TD3 (20 seeds, total) / brax SAC: {td3_20 / brax:.2f}")


if __name__ == "__main__":
    main()
