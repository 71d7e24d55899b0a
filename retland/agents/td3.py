"""TD3 (Fujimoto et al. 2018), docs/method.md §4 Training and §5 Update operators.

Read top to bottom: networks, state, losses (plain functions of params and a batch),
the two optimizer steps, the full training update, and the update operator U that
`retland sample` vmaps over keys. Training and the operator call the same `actor_step`.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from retland.agents.offpolicy import (
    ReplayAgent,
    adam_step,
    critic_net,  # noqa: F401  (the module's networks: actor_net, critic_net)
    init_actor_critic,
    optimizer,
    polyak,
    q_values,
    twin_critic_loss,
)
from retland.core import networks, replay
from retland.core.replay import Transition
from retland.config.agents import TD3Config

Params = Any


def actor_net(cfg: TD3Config, action_size: int) -> networks.DeterministicActor:
    return networks.DeterministicActor(action_size, tuple(cfg.hidden))


class TD3State(NamedTuple):
    actor_params: Params
    critic_params: Params
    target_actor_params: Params
    target_critic_params: Params
    actor_opt_state: Any
    critic_opt_state: Any
    update_count: jax.Array  # int32 []: critic updates done; the actor moves when it hits a multiple of policy_delay


def init(cfg: TD3Config, key: jax.Array, obs_size: int, action_size: int) -> TD3State:
    actor, critic = init_actor_critic(cfg, actor_net(cfg, action_size), key, obs_size, action_size)
    opt = optimizer(cfg)
    return TD3State(actor, critic, actor, critic, opt.init(actor), opt.init(critic),
                    jnp.zeros((), jnp.int32))


def policy(cfg: TD3Config, actor_params, obs):
    """Deterministic action π_θ(obs): obs [..., O] -> [..., A] in [-1, 1]. The network
    shape is read from the parameters."""
    hidden, action_size = networks.mlp_sizes(actor_params["MLP_0"])
    return networks.DeterministicActor(action_size, hidden).apply({"params": actor_params}, obs)


# ---- losses ---------------------------------------------------------------------------

def actor_loss(cfg: TD3Config, actor_params, critic_params, obs):
    """-mean(min(Q1, Q2)(s, π(s))) over obs [B, O] (docs/method.md §4 Training: min of both critics)."""
    q = q_values(cfg, critic_params, obs, policy(cfg, actor_params, obs))
    return -jnp.mean(jnp.min(q, axis=-1))


def critic_loss(cfg: TD3Config, critic_params, target_actor_params, target_critic_params,
                batch: Transition, key):
    """Sum over both critics of the mean squared TD error against
    y = r + γ·mask·min(Q1', Q2')(s', clip(π'(s') + clip(ε, ±noise_clip), ±1))."""
    next_a = policy(cfg, target_actor_params, batch.next_obs)
    noise = jnp.clip(cfg.policy_noise * jax.random.normal(key, next_a.shape), -cfg.noise_clip, cfg.noise_clip)
    next_a = jnp.clip(next_a + noise, -1.0, 1.0)
    next_q = jnp.min(q_values(cfg, target_critic_params, batch.next_obs, next_a), axis=-1)
    return twin_critic_loss(cfg, critic_params, batch, next_q)


# ---- optimizer steps ------------------------------------------------------------------

def actor_step(cfg: TD3Config, actor_params, actor_opt_state, critic_params, obs):
    """One Adam step of the actor on obs [B, O] with the critic frozen."""
    grads = jax.grad(actor_loss, argnums=1)(cfg, actor_params, critic_params, obs)
    return adam_step(optimizer(cfg), grads, actor_opt_state, actor_params)


def critic_step(cfg: TD3Config, s: TD3State, batch: Transition, key):
    grads = jax.grad(critic_loss, argnums=1)(cfg, s.critic_params, s.target_actor_params,
                                             s.target_critic_params, batch, key)
    return adam_step(optimizer(cfg), grads, s.critic_opt_state, s.critic_params)


def train_update(cfg: TD3Config, s: TD3State, batch: Transition, key, do_actor=None) -> TD3State:
    """The full TD3 update of training: critic step; every `policy_delay`-th one also
    an actor step (on the updated critic) and a Polyak step of both targets.

    do_actor: leave None; the training loop passes the (seed-independent) flag from
    outside vmap so that the branch stays a real `lax.cond` instead of a select, or a
    Python bool (`static_update_flags`) so that the program holds no branch at all."""
    critic_params, critic_opt_state = critic_step(cfg, s, batch, key)
    count = s.update_count + 1
    if do_actor is None:
        do_actor = count % cfg.policy_delay == 0
    s = s._replace(critic_params=critic_params, critic_opt_state=critic_opt_state, update_count=count)

    def delayed(s: TD3State) -> TD3State:
        actor_params, actor_opt_state = actor_step(cfg, s.actor_params, s.actor_opt_state,
                                                   s.critic_params, batch.obs)
        return s._replace(
            actor_params=actor_params, actor_opt_state=actor_opt_state,
            target_actor_params=polyak(cfg.tau, s.target_actor_params, actor_params),
            target_critic_params=polyak(cfg.tau, s.target_critic_params, s.critic_params))

    if isinstance(do_actor, bool):  # known when the program is built: no branch in it
        return delayed(s) if do_actor else s
    return jax.lax.cond(do_actor, delayed, lambda s: s, s)


def explore(cfg: TD3Config, actor_params, obs, key):
    """Behaviour action: clip(π(obs) + 0.1·N(0, I), ±1)."""
    a = policy(cfg, actor_params, obs)
    return jnp.clip(a + cfg.exploration_noise * jax.random.normal(key, a.shape), -1.0, 1.0)


# ---- the update operator --------------------------------------------------------------

class OperatorState(NamedTuple):
    """What U needs, all arrays (pass it to jit as an argument, never close over it)."""

    actor_params: Params
    actor_opt_state: Any
    critic_params: Params
    replay: Transition  # arrays [capacity, ...]
    replay_size: jax.Array  # int32 []


def update(cfg: TD3Config, op: OperatorState, key) -> Params:
    """U(state, ξ): one actor-only Adam step (restored state, critics frozen) on a
    minibatch drawn uniformly with replacement from rows [0, replay_size)."""
    batch = replay.sample(op.replay, op.replay_size, key, cfg.batch_size)
    return actor_step(cfg, op.actor_params, op.actor_opt_state, op.critic_params, batch.obs)[0]


@dataclass(frozen=True)
class TD3Agent(ReplayAgent):
    config: TD3Config = TD3Config()
    algo: str = "td3"
    algorithm = sys.modules[__name__]


def update_flags(cfg: TD3Config, agent_batched: TD3State) -> dict:
    """Branch flags of the next `train_update`, from a [seeds]-batched state (all seeds
    share the update counter), so the training loop can keep the branch a real cond."""
    return {"do_actor": (agent_batched.update_count[0] + 1) % cfg.policy_delay == 0}


def static_update_flags(cfg: TD3Config, updates_done: int) -> dict:
    """`update_flags` of the update after `updates_done` updates, as Python values: for a
    training program that lays out `update_period` consecutive updates with their flags
    fixed (no `lax.cond` per step, each of which is a device-to-host sync on a GPU)."""
    return {"do_actor": (updates_done + 1) % cfg.policy_delay == 0}


def update_period(cfg: TD3Config) -> int:
    """Updates after which `static_update_flags` repeats: the actor/target period."""
    return cfg.policy_delay


def make_agent(config, train_cfg=None) -> TD3Agent:
    """The agent of `config` (retland.agents.get_agent's constructor for this algorithm)."""
    return TD3Agent(config)
