"""The training algorithms behind one interface.

    agent = get_agent("td3")                 # or get_agent("sac", SACConfig(...))
    a = agent.policy(agent.actor_params(ckpt.state), obs)      # deterministic action
    op = agent.operator_state(ckpt)                            # arrays: pass to jit
    thetas = jax.jit(jax.vmap(agent.update, in_axes=(None, 0)))(op, keys)   # U(state, ξ_i)

Agent (one frozen dataclass per algorithm, in retland.agents.<algo>):
    algo: str
    policy(actor_params, obs [..., O]) -> action [..., A]   deterministic evaluation action
    actor_params(train_state) -> θ
    operator_state(checkpoint) -> pytree of arrays U needs
    update(op_state, key) -> θ'                              docs/method.md §5 Update operators

A run added with `retland.add_policy` (a user's own policy) has a `PolicyConfig` as its
config; `get_agent(ckpt.algo, ckpt.config)` returns its `PolicyAgent`
(retland.agents.policy), which evaluates the stored apply function and has no update.
"""
from __future__ import annotations

import importlib
from typing import Protocol

from retland.agents.policy import PolicyAgent, PolicyConfig
from retland.config.agents import agent_config
from retland.config.registry import AGENT_MODULES, check_algo


class Agent(Protocol):
    algo: str

    def policy(self, actor_params, obs): ...

    def actor_params(self, train_state): ...

    def operator_state(self, checkpoint): ...

    def update(self, op_state, key): ...


def get_agent(algo: str, config=None) -> Agent:
    """The agent for `algo` with `config` (its agent config, a TrainConfig, or None for
    the defaults of docs/method.md §4 Training). For PPO pass the TrainConfig (e.g.
    `checkpoint.config`): its update operator collects a rollout in the run's env.
    For an added run (config a PolicyConfig) `algo` is the name it was added under and
    the agent is its PolicyAgent."""
    if isinstance(config, PolicyConfig):
        return PolicyAgent.of(config, algo)
    module = agent_module(algo)
    train_cfg = config if hasattr(config, "agent") else None
    config = getattr(config, "agent", config)  # a TrainConfig carries the agent config
    if config is None:
        config = agent_config(algo)
    if config.algo != algo:
        raise ValueError(f"get_agent({algo!r}) was given a {config.algo} config")
    return module.make_agent(config, train_cfg)  # PPO's operator rolls out the run's env


def agent_module(algo: str):
    """The module of an algorithm's pure functions (init, explore, train_update, …, and
    make_agent), as the registry names it; ValueError on an unknown algo."""
    return importlib.import_module(AGENT_MODULES[check_algo(algo)])
