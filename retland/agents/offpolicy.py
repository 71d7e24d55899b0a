"""What TD3 and SAC share: twin critics on (s, a) trained against a TD target, Adam
(lr from the config) on every network, Polyak targets, and an update operator U that
reads the checkpoint's replay buffer.

The helpers are the algorithms' own arithmetic moved here unchanged, so `td3` and `sac`
trace to the same JAX operations in the same order as when each spelled them out.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from retland.core import networks
from retland.core.replay import Transition

Params = Any


def critic_net(cfg) -> networks.TwinCritic:
    return networks.TwinCritic(tuple(cfg.hidden))


def optimizer(cfg) -> optax.GradientTransformation:
    return optax.adam(cfg.learning_rate, eps=cfg.adam_eps)


def init_actor_critic(cfg, actor: nn.Module, key: jax.Array, obs_size: int, action_size: int):
    """(actor params, critic params), initialised from the two halves of `key`."""
    ka, kc = jax.random.split(key)
    obs, act = jnp.zeros((1, obs_size)), jnp.zeros((1, action_size))
    return networks.init_params(actor, ka, obs), networks.init_params(critic_net(cfg), kc, obs, act)


def q_values(cfg, critic_params, obs, action):
    """[..., 2]: Q1 and Q2."""
    return critic_net(cfg).apply({"params": critic_params}, obs, action)


def twin_critic_loss(cfg, critic_params, batch: Transition, next_v):
    """Sum over both critics of the mean squared TD error against
    y = r + γ·mask·next_v, with no gradient through y; next_v [B] values s'."""
    y = jax.lax.stop_gradient(batch.reward + cfg.gamma * batch.mask * next_v)
    q = q_values(cfg, critic_params, batch.obs, batch.action)
    return jnp.sum(jnp.mean(jnp.square(q - y[:, None]), axis=0))


def adam_step(opt: optax.GradientTransformation, grads, opt_state, params):
    """One optimizer step from `opt_state` (restored or carried): (new params, new state)."""
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def polyak(tau: float, target, online):
    """The target network moved a fraction tau towards the online one, leaf by leaf."""
    return jax.tree.map(lambda t, o: (1.0 - tau) * t + tau * o, target, online)


class ReplayAgent:
    """The Agent protocol (`retland.agents.Agent`) of TD3 and SAC. A subclass is a frozen
    dataclass with fields `config` and `algo`, and names its algorithm's module in
    `algorithm`: that module's `policy(cfg, θ, obs)` and `update(cfg, op_state, key)`,
    and its `OperatorState`, whose fields are agent-state fields followed by the replay
    rows and their count."""

    algorithm: ClassVar[ModuleType]

    def policy(self, actor_params, obs):
        return self.algorithm.policy(self.config, actor_params, obs)

    def actor_params(self, train_state):
        return getattr(train_state, "agent", train_state).actor_params

    def operator_state(self, checkpoint):
        operator_state = self.algorithm.OperatorState
        s = checkpoint.agent_state
        agent_fields = operator_state._fields[:-2]
        return operator_state(*(getattr(s, f) for f in agent_fields),
                              checkpoint.replay, jnp.asarray(checkpoint.replay_size, jnp.int32))

    def update(self, op_state, key) -> Params:
        return self.algorithm.update(self.config, op_state, key)
