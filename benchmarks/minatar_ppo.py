"""Learning curve of retland's categorical PPO on a MinAtar game: the stochastic policy's
returns next to the argmax return from s0 (FINDINGS.md A.6, issue 27).

`retland train` records only J(θ), the deterministic (argmax) return from the one start
state s0. A plateau of J(θ) can hide a stochastic policy that does better (or an s0 that
is unrepresentative), so this runs one seed of exactly what `retland train` runs, one
`retland.agents.ppo.train_iteration` per PPO iteration on the same env, horizon and
config, and logs every `--every` env steps:

- stoch_mean: the mean return of the episodes the stochastic training policy finished in
  that window (in the rollouts the iterations train on; an episode the horizon cuts
  counts as finished, with its score up to the cut), n_eps, how many finished, and
  stoch_total, the sum of their scores;
- greedy_s0: J(θ), the argmax policy's return from s0 (`make_evaluator`, as training
  evaluates it);
- entropy: the mean entropy of the policy over the window's last rollout, and top_p,
  the median probability of its most likely action there.

Run (needs the minatar extra):
    python benchmarks/minatar_ppo.py --env minatar-breakout --seed 0 --total-steps 2000000
Any PPOConfig field can be overridden, e.g. `--set learning_rate=2.5e-3 --set num_envs=64`.
"""
from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from retland.agents import ppo
from retland.core.envs import make_env
from retland.train.config import TrainConfig
from retland.train.program import init_seed, make_evaluator


def parse_overrides(pairs: list[str]) -> dict:
    """`field=value` pairs -> PPOConfig overrides, each value read as its field's type."""
    out = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or name not in ppo.PPOConfig.model_fields:
            raise SystemExit(f"--set {pair!r}: expected FIELD=VALUE with a PPOConfig field")
        default = ppo.PPOConfig.model_fields[name].default
        out[name] = type(default)(text) if isinstance(default, (int, float, str)) else text
    return out


def make_iteration(cfg: TrainConfig):
    """(train state, running episode returns [N]) -> (next state, returns, finished
    episode returns [T, N] (NaN where none finished), entropy, median top probability):
    retland's train_iteration, with the statistics of the rollout it trains on."""
    ac, env = cfg.agent, make_env(cfg.env, cfg.backend, variant=cfg.variant)
    scores_cfg = ac.model_copy(update={"gamma": 0.0})

    @jax.jit
    def iteration(ts, running):
        k_collect = jax.random.split(ts.key, 3)[1]  # the key train_iteration collects with
        # The same rollout (same key, so the same actions) with γ = 0: its rewards are the
        # scores, without the γ·V(s_T) that GAE's bootstrap adds at a time-limit cut.
        traj, *_ = ppo.collect(scores_cfg, env, cfg.horizon, ts.agent.params, ts.env_state, ts.episode_step, k_collect)
        score = traj.reward

        def accumulate(total, x):
            r, d = x
            total = total + r
            return total * (1.0 - d), jnp.where(d > 0, total, jnp.nan)

        running, finished = jax.lax.scan(accumulate, running, (score, traj.done))
        logits = ppo.distribution(ac, ts.agent.params["actor"], traj.obs)
        top = jnp.median(jnp.max(jax.nn.softmax(logits, axis=-1), axis=-1))
        return (ppo.train_iteration(ac, env, cfg.horizon, ts), running, finished,
                ppo.categorical_entropy(logits), top)

    return iteration


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="minatar-breakout", help="a MinAtar game (default minatar-breakout)")
    p.add_argument("--seed", type=int, default=0, help="the run's seed: PRNGKey(seed), as retland train's seed")
    p.add_argument("--total-steps", type=int, default=2_000_000, help="env steps (default 2,000,000)")
    p.add_argument("--every", type=int, default=51_200, help="env steps per logged line (default 51,200)")
    p.add_argument("--horizon", type=int, default=None,
                   help="episode length (time-limit cut) and evaluation horizon (default: the game's, as retland train)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a PPOConfig field (repeatable); unset fields take MINATAR_PPO's defaults")
    args = p.parse_args()
    horizon = {} if args.horizon is None else {"horizon": args.horizon}
    cfg = TrainConfig(env=args.env, seeds=1, total_steps=args.total_steps,
                      agent={"algo": "ppo", **parse_overrides(args.set)}, **horizon)
    ac = cfg.agent
    print(f"# {cfg.env} seed {args.seed}: {ac}", flush=True)
    ts, _ = init_seed(cfg, jax.random.PRNGKey(args.seed))
    iteration, evaluate = make_iteration(cfg), make_evaluator(cfg)
    running = jnp.zeros(ac.num_envs)
    n_iters, every = args.total_steps // ac.steps_per_update, max(1, args.every // ac.steps_per_update)
    window, t0 = [], time.time()
    for i in range(1, n_iters + 1):
        ts, running, finished, entropy, top = iteration(ts, running)
        f = np.asarray(finished)
        window.append(f[~np.isnan(f)])
        if i % every == 0 or i == n_iters:
            eps = np.concatenate(window)
            window = []
            greedy = float(np.asarray(evaluate(jax.tree.map(lambda x: x[None], ts.agent.params["actor"])).ret)[0])
            mean = f"{eps.mean():.2f}" if eps.size else "nan"
            print(f"steps={i * ac.steps_per_update} stoch_mean={mean} n_eps={eps.size} stoch_total={eps.sum():.4f} "
                  f"greedy_s0={greedy:g} "
                  f"entropy={float(entropy):.3f} top_p={float(top):.4f} t={time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
