"""The paper's physics against brax 0.14's: rollout and TD3 training throughput on one machine.

    python benchmarks/physics.py [--envs hopper,walker2d,halfcheetah,ant] [--batch 64] [--train-steps 2000]

For each env, two simulators measured in the same process, interleaved so machine load
affects both alike:
- `paper`: the paper variant on Brax 0.0.13's simulator (backend brax0013);
- `brax 0.14 positional`: the same task rules on brax 0.14's positional backend (what the
  paper variant ran on before retland had Brax 0.0.13's simulator; hopper and walker2d
  take 10 physics steps of 2 ms per 20 ms control step there, Brax 0.0.13 takes 4 of 5 ms).
Measures:
- rollout: a vmapped 1000-step rollout of B distinct 256x256 TD3 actors from s0
  (`jax.jit(jax.vmap(rollout))`, what every post-update sample runs), env-steps/s;
- training: TD3, one seed, one update per env step, replay prefilled, env-steps/s.
Compile time is excluded (each program runs once first); the best of --repeats counts.
Prints both rates and their ratio (paper / positional).
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from retland.core.envs import env_dims, reference_env, reference_state  # noqa: E402
from retland.core.networks import DeterministicActor, init_params  # noqa: E402
from retland.core.rollout import rollout  # noqa: E402
from retland.train.config import TD3Config, TrainConfig  # noqa: E402
from retland.train.program import init_states, make_chunk_fn  # noqa: E402

SIMULATORS = {"paper": "brax0013", "brax 0.14 positional": "positional"}


def rollout_rate(env: str, backend: str, batch: int, horizon: int, repeats: int) -> tuple[float, float]:
    obs_size, action_size = env_dims(env, backend, variant="paper")
    actor = DeterministicActor(action_size)
    params = jax.vmap(lambda k: init_params(actor, k, jnp.zeros(obs_size)))(
        jax.random.split(jax.random.PRNGKey(0), batch))
    renv = reference_env(env, backend, variant="paper")
    s0 = reference_state(env, backend, variant="paper")
    policy = lambda p, o: actor.apply({"params": p}, o)  # noqa: E731
    run = jax.jit(jax.vmap(lambda p: rollout(renv, policy, p, s0, horizon)))
    t = time.perf_counter()
    jax.block_until_ready(run(params))
    compile_s = time.perf_counter() - t
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(run(params))
        best = min(best, time.perf_counter() - t)
    return batch * horizon / best, compile_s


def train_rate(env: str, backend: str, steps: int, repeats: int, prefill: int = 1000) -> float:
    cfg = TrainConfig.model_validate(
        dict(env=env, backend=backend, variant="paper", seeds=1, total_steps=prefill + (repeats + 2) * steps,
             checkpoints=(prefill,), eval_every=prefill, agent=TD3Config(learning_starts=prefill)),
        context={"stored": True})  # the old simulator is refused for new runs, not for a benchmark
    ts, rb = init_states(cfg)
    ts, rb = make_chunk_fn(cfg, 0, prefill)(ts, rb)
    run = make_chunk_fn(cfg, prefill, steps)
    ts, rb = run(ts, rb)
    jax.block_until_ready(ts)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        ts, rb = run(ts, rb)
        jax.block_until_ready(ts)
        best = min(best, time.perf_counter() - t)
    return steps / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--envs", default="hopper,walker2d,halfcheetah,ant")
    ap.add_argument("--batch", type=int, default=64, help="policies per vmapped rollout")
    ap.add_argument("--horizon", type=int, default=1000)
    ap.add_argument("--train-steps", type=int, default=2000, help="env steps per timed training chunk (0: skip)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform} x{jax.local_device_count()}, {os.cpu_count()} cores")
    head = f"{'env':12} {'measure':10} " + " ".join(f"{name:>22}" for name in SIMULATORS) + f" {'ratio':>7}"
    print(head)
    for env in args.envs.split(","):
        rates, compiles = {}, {}
        for name, backend in SIMULATORS.items():
            rates[name], compiles[name] = rollout_rate(env, backend, args.batch, args.horizon, args.repeats)
        paper, old = (rates[n] for n in SIMULATORS)
        print(f"{env:12} {'rollout':10} " + " ".join(f"{rates[n]:17,.0f} st/s" for n in SIMULATORS)
              + f" {paper / old:7.2f}   (compile {', '.join(f'{compiles[n]:.0f} s' for n in SIMULATORS)})",
              flush=True)
        if args.train_steps:
            rates = {name: train_rate(env, backend, args.train_steps, args.repeats)
                     for name, backend in SIMULATORS.items()}
            paper, old = (rates[n] for n in SIMULATORS)
            print(f"{env:12} {'td3 train':10} " + " ".join(f"{rates[n]:17,.0f} st/s" for n in SIMULATORS)
                  + f" {paper / old:7.2f}", flush=True)


if __name__ == "__main__":
    main()
