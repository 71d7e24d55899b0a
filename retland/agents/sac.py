"""SAC (Haarnoja et al. 2018), docs/method.md §4 Training and §5 Update operators.

Tanh-Gaussian actor (log-std squashed into [-10, 2]; its head a separate layer or half of
one joint output layer, `SACConfig.log_std_head`), twin critics with Polyak
targets, learned temperature α (initial 1, target entropy -|A|/2). Evaluation action:
tanh(mean). Training and the operator U call the same `actor_step`.
"""
from __future__ import annotations

import math
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
from retland.config.agents import SACConfig

Params = Any
LOG2 = math.log(2.0)


def actor_net(cfg: SACConfig, action_size: int) -> networks.TanhGaussianActor:
    return networks.TanhGaussianActor(action_size, tuple(cfg.hidden), cfg.log_std_min, cfg.log_std_max,
                                      cfg.log_std_head)


class SACState(NamedTuple):
    actor_params: Params
    critic_params: Params
    target_critic_params: Params
    log_alpha: jax.Array  # float32 []: log temperature
    actor_opt_state: Any
    critic_opt_state: Any
    alpha_opt_state: Any
    update_count: jax.Array  # int32 []


def init(cfg: SACConfig, key: jax.Array, obs_size: int, action_size: int) -> SACState:
    actor, critic = init_actor_critic(cfg, actor_net(cfg, action_size), key, obs_size, action_size)
    log_alpha = jnp.asarray(jnp.log(cfg.initial_temperature), jnp.float32)
    opt = optimizer(cfg)
    return SACState(actor, critic, critic, log_alpha, opt.init(actor), opt.init(critic), opt.init(log_alpha),
                    jnp.zeros((), jnp.int32))


def distribution(cfg: SACConfig, actor_params, obs):
    """(mean, log_std), each [..., A], of the pre-tanh Gaussian (network shape and
    log-std layout read from the parameters, so runs of either layout apply)."""
    hidden, action_size, head = networks.tanh_gaussian_layout(actor_params)
    net = networks.TanhGaussianActor(action_size, hidden, cfg.log_std_min, cfg.log_std_max, head)
    return net.apply({"params": actor_params}, obs)


def policy(cfg: SACConfig, actor_params, obs):
    """Deterministic evaluation action tanh(mean): obs [..., O] -> [..., A]."""
    return jnp.tanh(distribution(cfg, actor_params, obs)[0])


def sample_action(cfg: SACConfig, actor_params, obs, key):
    """Reparameterised a = tanh(mean + std·ε) and its log-probability [...]."""
    mean, log_std = distribution(cfg, actor_params, obs)
    eps = jax.random.normal(key, mean.shape)
    u = mean + jnp.exp(log_std) * eps
    log_normal = -0.5 * jnp.square(eps) - log_std - 0.5 * jnp.log(2.0 * jnp.pi)
    # log(1 - tanh(u)^2), written stably
    log_det = 2.0 * (LOG2 - u - jax.nn.softplus(-2.0 * u))
    return jnp.tanh(u), jnp.sum(log_normal - log_det, axis=-1)


def explore(cfg: SACConfig, actor_params, obs, key):
    return sample_action(cfg, actor_params, obs, key)[0]


def target_entropy(cfg: SACConfig, action_size: int) -> float:
    return -cfg.target_entropy_scale * action_size


# ---- losses ---------------------------------------------------------------------------

def actor_loss(cfg: SACConfig, actor_params, critic_params, log_alpha, obs, key):
    """mean(α·log π(a|s) - min(Q1, Q2)(s, a)), a ~ π(·|s) reparameterised; aux: log π."""
    a, logp = sample_action(cfg, actor_params, obs, key)
    q = jnp.min(q_values(cfg, critic_params, obs, a), axis=-1)
    return jnp.mean(jnp.exp(log_alpha) * logp - q), logp


def critic_loss(cfg: SACConfig, critic_params, target_critic_params, actor_params, log_alpha,
                batch: Transition, key):
    next_a, next_logp = sample_action(cfg, actor_params, batch.next_obs, key)
    next_q = jnp.min(q_values(cfg, target_critic_params, batch.next_obs, next_a), axis=-1)
    next_v = next_q - jnp.exp(log_alpha) * next_logp
    return twin_critic_loss(cfg, critic_params, batch, next_v)


def alpha_loss(cfg: SACConfig, log_alpha, logp, action_size: int):
    return -jnp.exp(log_alpha) * jnp.mean(jax.lax.stop_gradient(logp) + target_entropy(cfg, action_size))


# ---- optimizer steps ------------------------------------------------------------------

def actor_step(cfg: SACConfig, actor_params, actor_opt_state, critic_params, log_alpha, obs, key):
    """One Adam step of the actor, critics and temperature frozen; returns
    (actor_params, actor_opt_state, log π of the sampled actions)."""
    grads, logp = jax.grad(actor_loss, argnums=1, has_aux=True)(cfg, actor_params, critic_params, log_alpha, obs, key)
    actor_params, actor_opt_state = adam_step(optimizer(cfg), grads, actor_opt_state, actor_params)
    return actor_params, actor_opt_state, logp


def train_update(cfg: SACConfig, s: SACState, batch: Transition, key) -> SACState:
    """Critic step, actor step (on the updated critic), temperature step, Polyak target."""
    k_critic, k_actor = jax.random.split(key)
    opt = optimizer(cfg)
    grads = jax.grad(critic_loss, argnums=1)(cfg, s.critic_params, s.target_critic_params, s.actor_params,
                                             s.log_alpha, batch, k_critic)
    critic_params, critic_opt_state = adam_step(opt, grads, s.critic_opt_state, s.critic_params)
    actor_params, actor_opt_state, logp = actor_step(cfg, s.actor_params, s.actor_opt_state, critic_params,
                                                     s.log_alpha, batch.obs, k_actor)
    a_grad = jax.grad(alpha_loss, argnums=1)(cfg, s.log_alpha, logp, batch.action.shape[-1])
    log_alpha, alpha_opt_state = adam_step(opt, a_grad, s.alpha_opt_state, s.log_alpha)
    target = polyak(cfg.tau, s.target_critic_params, critic_params)
    return SACState(actor_params, critic_params, target, log_alpha, actor_opt_state, critic_opt_state,
                    alpha_opt_state, s.update_count + 1)


def update_flags(cfg: SACConfig, agent_batched: SACState) -> dict:
    return {}


def static_update_flags(cfg: SACConfig, updates_done: int) -> dict:
    return {}


def update_period(cfg: SACConfig) -> int:
    return 1


# ---- the update operator --------------------------------------------------------------

class OperatorState(NamedTuple):
    actor_params: Params
    actor_opt_state: Any
    critic_params: Params
    log_alpha: jax.Array
    replay: Transition  # [capacity, ...]
    replay_size: jax.Array  # int32 []


def update(cfg: SACConfig, op: OperatorState, key) -> Params:
    """U(state, ξ): one actor-only Adam step, critics and α frozen, on a minibatch from
    rows [0, replay_size) with this sample's own reparameterisation noise."""
    k_batch, k_noise = jax.random.split(key)
    batch = replay.sample(op.replay, op.replay_size, k_batch, cfg.batch_size)
    return actor_step(cfg, op.actor_params, op.actor_opt_state, op.critic_params, op.log_alpha,
                      batch.obs, k_noise)[0]


@dataclass(frozen=True)
class SACAgent(ReplayAgent):
    config: SACConfig = SACConfig()
    algo: str = "sac"
    algorithm = sys.modules[__name__]


def make_agent(config, train_cfg=None) -> SACAgent:
    """The agent of `config` (retland.agents.get_agent's constructor for this algorithm)."""
    return SACAgent(config)
