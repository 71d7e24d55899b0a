"""Behaviour cloning (the paper's Appendix A.7; docs/method.md, "Behaviour cloning").

A clone is TD3's deterministic actor trained by Adam on the mean squared error between
its action and the teacher's, over the teacher's logged observations (its replay rows up
to the teacher checkpoint, `retland.train.bc`). The dataset is the run's "replay"
(Transition rows whose `action` is the teacher's deterministic action), stored and
restored like a TD3 buffer, so the update operator reads it from the checkpoint.

Read top to bottom: state, loss, the optimizer step, the training update, and the update
operator U = one more Adam step of the same objective on a fresh minibatch. Training and
the operator call the same `actor_step`.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from retland.agents.offpolicy import ReplayAgent, adam_step, optimizer
from retland.agents.td3 import policy as td3_policy
from retland.config.agents import BCConfig
from retland.core import networks, replay
from retland.core.replay import Transition

Params = Any


def actor_net(cfg: BCConfig, action_size: int) -> networks.DeterministicActor:
    return networks.DeterministicActor(action_size, tuple(cfg.hidden))


class BCState(NamedTuple):
    actor_params: Params
    actor_opt_state: Any
    update_count: jax.Array  # int32 []: gradient steps done


def init(cfg: BCConfig, key: jax.Array, obs_size: int, action_size: int) -> BCState:
    """The actor initialised as TD3's is (the first half of the agent key), Adam's state."""
    ka, _ = jax.random.split(key)  # TD3 draws its actor from the first half too
    actor = networks.init_params(actor_net(cfg, action_size), ka, jnp.zeros((1, obs_size)))
    return BCState(actor, optimizer(cfg).init(actor), jnp.zeros((), jnp.int32))


def policy(cfg: BCConfig, actor_params, obs):
    """Deterministic action, TD3's actor: obs [..., O] -> [..., A] in [-1, 1]."""
    return td3_policy(cfg, actor_params, obs)


def bc_loss(cfg: BCConfig, actor_params, obs, target):
    """mean over the batch and action dims of (π(s) - a_teacher)²."""
    return jnp.mean(jnp.square(policy(cfg, actor_params, obs) - target))


def actor_step(cfg: BCConfig, actor_params, actor_opt_state, batch: Transition):
    """One Adam step of the BC objective on a minibatch (obs, teacher action)."""
    grads = jax.grad(bc_loss, argnums=1)(cfg, actor_params, batch.obs, batch.action)
    return adam_step(optimizer(cfg), grads, actor_opt_state, actor_params)


def train_update(cfg: BCConfig, s: BCState, batch: Transition, key=None) -> BCState:
    actor_params, actor_opt_state = actor_step(cfg, s.actor_params, s.actor_opt_state, batch)
    return BCState(actor_params, actor_opt_state, s.update_count + 1)


def update_flags(cfg: BCConfig, agent_batched: BCState) -> dict:
    return {}


def relabel(teacher_actor_params, obs, batch: int = 65536):
    """The TD3 teacher's deterministic actions for obs [N, O], in batches of `batch` rows
    (one compiled program; the last batch is padded). The network's shape is read from
    the parameters."""
    n = obs.shape[0]
    if n == 0:
        return jnp.zeros((0, networks.mlp_sizes(teacher_actor_params["MLP_0"])[1]), jnp.float32)
    size = min(batch, n)
    f = jax.jit(lambda p, o: td3_policy(None, p, o))
    out = []
    for a in range(0, n, size):
        chunk = obs[a:a + size]
        pad = size - chunk.shape[0]
        if pad:
            chunk = jnp.concatenate([chunk, jnp.zeros((pad, obs.shape[1]), obs.dtype)])
        out.append(f(teacher_actor_params, chunk)[:size - pad])
    return jnp.concatenate(out)


# ---- the update operator --------------------------------------------------------------

class OperatorState(NamedTuple):
    """What U needs, all arrays."""

    actor_params: Params
    actor_opt_state: Any
    replay: Transition  # the relabelled dataset [capacity, ...]
    replay_size: jax.Array  # int32 []


def update(cfg: BCConfig, op: OperatorState, key) -> Params:
    """U(state, ξ): one more Adam step of the BC objective (restored optimizer state) on a
    minibatch drawn uniformly with replacement from the dataset's rows [0, replay_size)."""
    batch = replay.sample(op.replay, op.replay_size, key, cfg.batch_size)
    return actor_step(cfg, op.actor_params, op.actor_opt_state, batch)[0]


@dataclass(frozen=True)
class BCAgent(ReplayAgent):
    config: BCConfig = BCConfig()
    algo: str = "bc"
    algorithm = sys.modules[__name__]


def make_agent(config, train_cfg=None) -> BCAgent:
    return BCAgent(config)
