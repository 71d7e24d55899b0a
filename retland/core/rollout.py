"""The one rollout: J(θ) of a deterministic policy from a given start state.

Every return in retland (post-update samples, evaluation during training, landscapes,
interpolation, failure re-rolls) comes from `rollout`, so "return" means one thing:
the undiscounted sum of rewards over at most `horizon` steps, rewards after the first
`done` not counted (the terminating step's reward is), docs/method.md §1 Terms.

Time is a `lax.scan` over the full horizon: a vmapped batch cannot stop early, so
steps after the first done are computed and masked with `jnp.where` (not a multiply,
so a physics blow-up after termination cannot leak NaN into the return).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

GAMMA = 0.99

Params = Any
# policy(params, obs [O]) -> action [A] in [-1, 1]
Policy = Callable[[Params, jax.Array], jax.Array]


class Rollout(NamedTuple):
    """Summary of one episode; scalars (or [B] under vmap)."""

    ret: jax.Array  # float32 []: undiscounted return
    discounted_return: jax.Array  # float32 []: sum_t GAMMA^t r_t, t from 0
    episode_length: jax.Array  # int32 []: steps up to and including the first done, else horizon
    terminated: jax.Array  # bool []: a done occurred within the horizon


class Steps(NamedTuple):
    """Per-step record for trajectory analyses; each field [T] (or [T, O] for obs)."""

    reward: jax.Array  # [T] raw reward of step t (not masked)
    done: jax.Array  # [T] bool: the env's done flag after step t
    alive: jax.Array  # [T] bool: step t counts towards the return (no done before it)
    obs: jax.Array  # [T, O] observation the action of step t was computed from
    pose: jax.Array  # [T, P] the simulator's pose after step t (`pose`), for rendering


def pose(state) -> jax.Array:
    """The flat pose of an env state that a renderer needs to draw it (retland.core.render):
    brax 0.14 pipelines: the generalized coordinates q (the task's MJCF qpos); Brax
    0.0.13's simulator: every body's position and quaternion, [pos (nb × 3), rot (nb × 4)];
    DeepMind Control: MuJoCo's qpos. An env with no simulator state (a toy env of the
    tests, a user's own) has an empty pose: nothing to draw."""
    ps = getattr(state, "pipeline_state", None)
    if ps is None:
        physics = getattr(state, "physics", None)
        return physics["qpos"] if physics is not None else jnp.zeros((0,), jnp.float32)
    if hasattr(ps, "q"):
        return ps.q
    return jnp.concatenate([ps.pos.reshape(-1), ps.rot.reshape(-1)])


def rollout(
    env,
    policy: Policy,
    params: Params,
    state0,
    horizon: int,
    *,
    action_noise: float = 0.0,
    key: jax.Array | None = None,
    per_step: bool = False,
) -> Rollout | tuple[Rollout, Steps]:
    """Run π_params from `state0` for `horizon` steps of `env` (a raw brax env).

    action_noise σ > 0 adds σ·N(0, I) to every action (drawn from `key`, one draw per
    step) and clips to [-1, 1]: the `action` rollout perturbation of docs/method.md §5. With
    σ = 0 the rollout is deterministic and `key` is unused.

    Returns a `Rollout`; with per_step=True also the `Steps` record.
    """
    if action_noise > 0.0 and key is None:
        raise ValueError("rollout: action_noise > 0 needs a key")
    if key is None:
        key = jax.random.PRNGKey(0)

    def step(carry, t):
        state, alive, ret, disc, length, key = carry
        action = policy(params, state.obs)
        if action_noise > 0.0:
            key, sub = jax.random.split(key)
            noise = action_noise * jax.random.normal(sub, action.shape, action.dtype)
            action = jnp.clip(action + noise, -1.0, 1.0)
        nstate = env.step(state, action)
        reward = jnp.where(alive, nstate.reward, 0.0)
        ret = ret + reward
        disc = disc + jnp.where(alive, (GAMMA ** t.astype(jnp.float32)) * nstate.reward, 0.0)
        length = length + alive.astype(jnp.int32)
        done = nstate.done > 0.5
        out = Steps(nstate.reward, done, alive, state.obs, pose(nstate)) if per_step else None
        return (nstate, alive & ~done, ret, disc, length, key), out

    zero = jnp.zeros((), jnp.float32)
    carry0 = (state0, jnp.ones((), bool), zero, zero, jnp.zeros((), jnp.int32), key)
    (_, alive, ret, disc, length, _), steps = jax.lax.scan(
        step, carry0, jnp.arange(horizon, dtype=jnp.int32)
    )
    summary = Rollout(ret, disc, length, ~alive)
    return (summary, steps) if per_step else summary
