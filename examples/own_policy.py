"""Study your own JAX policy with retland: train, add, sample, query.

    python examples/own_policy.py -w /tmp/own-policy-warehouse

1. Train a small MLP policy (1000 Adam steps) on hopper (brax 0.14's task rules) with plain JAX, Flax's
   initialiser and Optax: behaviour cloning toward a hand-made PD balance controller,
   on states visited by that controller (with action noise) from noisy resets.
2. `retland.add_policy` stores it as an added run. The policy is the generic
   `retland.policies:mlp_apply`, so any later process (`retland sample --run ...` in
   another shell) can import it.
3. Sample two post-update return distributions of it: gaussian(σ) parameter noise, and
   your own update operator, one more Adam step of the same behaviour-cloning
   objective on a minibatch drawn from the sample's key (`retland.sample_update`).
4. Print their statistics with `retland.query`.

The update function must be importable by path too. Running this file puts examples/
on sys.path, so it is importable as `own_policy`, and its update is passed as
"own_policy:adam_update" (a function of `__main__` would be refused: no other process
could import it). Everything below `main` is ordinary JAX a user would write anyway.
Takes about 1-2 minutes on a CPU, mostly compiling.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# XLA's C++ log lines (slow-compile alarms, cache notes) are not for this example's reader;
# set before jax loads, as the retland command does. Your own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax
import jax.numpy as jnp
import optax
from flax.linen.initializers import lecun_normal, zeros_init

ENV, BACKEND, VARIANT = "hopper", "positional", "brax"
HIDDEN = (32, 32)
LEARNING_RATE = 1e-3
BATCH = 256
OPTIMIZER = optax.adam(LEARNING_RATE)
# The teacher: joints held at 0 (PD), the thigh/leg/foot pushed with the torso's pitch.
KP, KD, K_TORSO = 0.5, 0.3, 1.0


def teacher(obs):
    """A hand-made balance controller; hopper's observation is [z, torso pitch, 3 joint
    angles, 6 velocities (x, z, torso, 3 joints)]."""
    joints, joint_vel, pitch = obs[..., 2:5], obs[..., 8:11], obs[..., 1:2]
    return jnp.clip(-KP * joints - KD * joint_vel + K_TORSO * pitch, -1.0, 1.0)


def policy(params, obs):
    from retland.policies import mlp_apply

    return mlp_apply(params, obs, activation="tanh")


def init_policy(key, obs_size: int, action_size: int):
    """[{"kernel", "bias"}, ...]: the layer list retland.policies:mlp_apply takes."""
    sizes = (obs_size, *HIDDEN, action_size)
    keys = jax.random.split(key, len(sizes) - 1)
    return [{"kernel": lecun_normal()(k, (a, b)), "bias": zeros_init()(k, (b,))}
            for k, a, b in zip(keys, sizes, sizes[1:])]


def bc_loss(params, obs, target):
    return jnp.mean(jnp.sum((policy(params, obs) - target) ** 2, axis=-1))


def adam_update(state, key):
    """The update operator: one Adam step of behaviour cloning on a random minibatch.
    state = (params, Adam state, observations, teacher actions); returns the new params."""
    params, opt_state, obs, target = state
    idx = jax.random.randint(key, (BATCH,), 0, obs.shape[0])
    grads = jax.grad(bc_loss)(params, obs[idx], target[idx])
    updates, _ = OPTIMIZER.update(grads, opt_state, params)
    return optax.apply_updates(params, updates)


def collect(key, n_envs: int = 32, steps: int = 200, noise: float = 0.3):
    """Observations the teacher visits, with action noise, from brax's noisy resets."""
    from brax import envs

    env = envs.get_environment(ENV, backend=BACKEND)

    def episode(k):
        k_reset, k_noise = jax.random.split(k)

        def step(state, kt):
            a = jnp.clip(teacher(state.obs) + noise * jax.random.normal(kt, (env.action_size,)), -1.0, 1.0)
            return env.step(state, a), state.obs

        _, obs = jax.lax.scan(step, env.reset(k_reset), jax.random.split(k_noise, steps))
        return obs

    obs = jax.jit(jax.vmap(episode))(jax.random.split(key, n_envs))
    return obs.reshape(-1, obs.shape[-1])


def train(key, obs, target, steps: int):
    params = init_policy(key, obs.shape[-1], target.shape[-1])
    opt_state = OPTIMIZER.init(params)

    def one(carry, k):
        params, opt_state = carry
        idx = jax.random.randint(k, (BATCH,), 0, obs.shape[0])
        loss, grads = jax.value_and_grad(bc_loss)(params, obs[idx], target[idx])
        updates, opt_state = OPTIMIZER.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    (params, opt_state), losses = jax.jit(lambda p, s: jax.lax.scan(one, (p, s), jax.random.split(key, steps)))(
        params, opt_state)
    return params, opt_state, losses


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-w", "--warehouse", required=True, help="Warehouse folder (created if missing).")
    parser.add_argument("--train-steps", type=int, default=1000, help="Adam steps of behaviour cloning.")
    parser.add_argument("--samples", type=int, default=64, help="Samples per distribution.")
    parser.add_argument("--horizon", type=int, default=1000, help="Rollout steps of each sample.")
    parser.add_argument("--sigma", type=float, default=3e-3, help="σ of the gaussian distribution.")
    args = parser.parse_args(argv)
    # This file is importable as `own_policy` from a process that has examples/ on its path.
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)

    import retland
    from retland.cli.progress import progress_bar
    from retland.purd.operators import parse_operator
    from retland.purd.sampling import plan_distribution, sample_checkpoint

    key = jax.random.PRNGKey(0)
    obs = collect(jax.random.fold_in(key, 1))
    target = teacher(obs)
    params, opt_state, losses = train(jax.random.fold_in(key, 2), obs, target, args.train_steps)
    print(f"behaviour cloning: {obs.shape[0]} states, loss {float(losses[0]):.4f} -> {float(losses[-1]):.4f} "
          f"in {args.train_steps} Adam steps")

    step = int(obs.shape[0])  # the env steps of experience the policy learned from
    run_id = retland.add_policy(args.warehouse, env=ENV, backend=BACKEND, variant=VARIANT,
                                apply="retland.policies:mlp_apply", apply_kwargs={"activation": "tanh"},
                                params=params, name="bc", step=step, horizon=args.horizon)
    print(f"added run {run_id} (checkpoint at step {step})")
    wh = retland.Warehouse.open(args.warehouse, create=False)

    # gaussian(σ): the same engine `retland sample --run RUN --operator gaussian:σ` drives.
    spec = parse_operator(f"gaussian:{args.sigma}", env=ENV, horizon=args.horizon)
    plan = plan_distribution(wh, run_id, step, spec, args.samples)
    with progress_bar(plan.new_rows, "gaussian", rate_scale=args.horizon, rate_unit="env-steps") as advance:
        sample_checkpoint(wh, plan, progress=advance)

    # Your own update: one more Adam step of the objective the policy was trained on.
    state = (params, opt_state, obs, target)
    with progress_bar(args.samples, "adam step", rate_scale=args.horizon, rate_unit="env-steps") as advance:
        result = retland.sample_update(wh, run_id, step, update="own_policy:adam_update", state=state,
                                       n=args.samples, progress=advance)
    print(f"update operator: {result.operator_id}")

    stats = retland.query("SELECT operator_id, n, mean, std, ltp, cvar FROM distribution_stats "
                          "WHERE run_id = ? ORDER BY operator_id", args.warehouse, [run_id])
    for row in stats.iter_rows(named=True):
        ltp = "n/a" if row["ltp"] is None else f"{row['ltp']:.3f}"
        print(f"{row['operator_id']}\n    n={row['n']}  mean={row['mean']:.1f}  std={row['std']:.2f}  "
              f"LTP={ltp}  CVaR(0.1)={row['cvar']:.1f}")
    print(f"next: retland sample --run {run_id} --operator action:0.1 --samples {args.samples} "
          f"--horizon {args.horizon} -w {args.warehouse}")
    print(f"      retland landscape --run {run_id} --step {step} --directions filter-normalized --grid 9 "
          f"--range -0.5:0.5 -w {args.warehouse}")


if __name__ == "__main__":
    main()
