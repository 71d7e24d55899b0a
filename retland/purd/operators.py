"""Update operators and rollout perturbations: what defines a post-update distribution.

An `OperatorSpec` is parsed from the CLI text `td3|sac|ppo|gaussian[:sigma]|action[:sigma]|
init_state[:scale]` plus the horizon and key seed, and names itself with a canonical
`operator_id` that holds every parameter the distribution depends on, e.g.

    td3[h=1000,seed=0]
    gaussian[sigma=0.0003,h=1000,seed=0]
    action[sigma=0.1,h=1000,seed=0]
    init_state[scale=0.005,h=1000,seed=0]

Numbers are written with Python's shortest round-trip `repr`, so `gaussian:3e-4` and
`gaussian:0.0003` are the same operator. The env, backend and discount are properties of
the run (and γ = 0.99 is fixed), so they are not part of the id.

Kinds (docs/method.md §5 Update operators):
- td3 / sac / ppo: one update of the agent (`retland.agents`), θ' = U(state, key_i).
- gaussian(σ): θ' = θ + σ·ε, ε ~ N(0, I), one independent key per parameter tensor.
- action(σ): θ unchanged; every rollout action gets σ·N(0, I) noise, clipped to [-1, 1].
- init_state(scale): θ unchanged; the rollout starts from the env's noisy reset with
  that reset noise scale (uniform ±scale on qpos and qvel, as brax does) instead of s0.

Key use per sample i: key_i = fold_in(PRNGKey(seed), i). The parameter operator gets
key_i itself; a rollout perturbation draws from fold_in(key_i, 1).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jax

from retland.core.envs import standard_reset_noise
from retland.settings import ACTION_SIGMA, GAUSSIAN_SIGMA

AGENT_KINDS = ("td3", "sac", "ppo")
PARAM_KINDS = AGENT_KINDS + ("gaussian",)
ROLLOUT_KINDS = ("action", "init_state")
KINDS = PARAM_KINDS + ROLLOUT_KINDS

# init_state without a scale uses the task's standard reset noise (envs.standard_reset_noise).

_VALUE_NAME = {"gaussian": "sigma", "action": "sigma", "init_state": "scale"}

SYNTAX = "td3 | sac | ppo | gaussian[:sigma] | action[:sigma] | init_state[:scale]"


def _num(x: float) -> str:
    return repr(float(x))


@dataclass(frozen=True)
class OperatorSpec:
    """kind + its parameters + horizon + key seed = one distribution per checkpoint."""
    kind: str
    params: tuple[tuple[str, float], ...] = ()
    horizon: int = 1000
    seed: int = 0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown operator kind {self.kind!r}: {SYNTAX}")
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {self.horizon}")
        if self.seed < 0:
            raise ValueError(f"operator seed must be >= 0, got {self.seed}")
        for name, value in self.params:
            if not (value == value and abs(value) != float("inf")) or value < 0:
                raise ValueError(f"operator {self.kind}: {name}={value!r} must be a finite number >= 0")

    @property
    def operator_id(self) -> str:
        parts = [f"{k}={_num(v)}" for k, v in self.params]
        parts += [f"h={self.horizon}", f"seed={self.seed}"]
        return f"{self.kind}[{','.join(parts)}]"

    def param(self, name: str) -> float:
        return dict(self.params)[name]

    @property
    def params_json(self) -> str:
        """The `params` column of the `operators` table."""
        doc: dict[str, Any] = dict(self.params)
        doc.update(horizon=self.horizon, seed=self.seed, gamma=0.99,
                   key="key_i = fold_in(PRNGKey(seed), i)")
        return json.dumps(doc, sort_keys=True)

    def operators_row(self) -> dict:
        return {"operator_id": self.operator_id, "kind": self.kind, "params": self.params_json}

    @property
    def base_key(self) -> jax.Array:
        return jax.random.PRNGKey(self.seed)

    @property
    def changes_params(self) -> bool:
        return self.kind in PARAM_KINDS


def parse_operator(text: str, *, env: str | None = None, horizon: int = 1000, seed: int = 0) -> OperatorSpec:
    """'gaussian:3e-4' -> OperatorSpec('gaussian', (('sigma', 0.0003),), horizon, seed).

    `env` is needed only to resolve `init_state` without a scale (the task's standard
    reset noise).
    """
    kind, sep, value = text.strip().partition(":")
    kind = kind.strip()
    if kind not in KINDS:
        raise ValueError(f"unknown operator {text!r}: expected {SYNTAX}")
    if kind in AGENT_KINDS:
        if sep:
            raise ValueError(f"operator {kind} takes no parameter (got {text!r})")
        return OperatorSpec(kind, (), horizon, seed)
    name = _VALUE_NAME[kind]
    value = value.strip()
    if value.startswith(f"{name}="):
        value = value[len(name) + 1:]
    if sep and value:
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"operator {text!r}: {name} {value!r} is not a number") from None
    elif kind == "gaussian":
        number = GAUSSIAN_SIGMA
    elif kind == "action":
        number = ACTION_SIGMA
    else:
        if env is None:
            raise ValueError("init_state without a scale needs the env (its standard reset noise)")

        number = standard_reset_noise(env)
    return OperatorSpec(kind, ((name, number),), horizon, seed)


def sample_key(base_key: jax.Array, index) -> jax.Array:
    """key_i of sample i."""
    return jax.random.fold_in(base_key, index)


def rollout_key(key_i: jax.Array) -> jax.Array:
    """The key a rollout perturbation (action noise, reset noise) of sample i draws from."""
    return jax.random.fold_in(key_i, 1)


def gaussian_perturb(params, key: jax.Array, sigma: float):
    """θ + σ·ε with an independent key per tensor (leaf order of jax.tree)."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    noisy = [x + sigma * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    return jax.tree.unflatten(treedef, noisy)


# Parameter functions for the sampling engine: (op_state, key_i, i) -> actor params.
# Frozen dataclasses (not closures) so equal operators compare equal and share one
# compiled chunk program per process.


@dataclass(frozen=True)
class Identity:
    """θ unchanged (rollout perturbations): op_state is the actor params."""
    def __call__(self, op_state, key, index):
        return op_state


@dataclass(frozen=True)
class Gaussian:
    """gaussian(σ): op_state is the actor params θ."""
    sigma: float

    def __call__(self, op_state, key, index):
        return gaussian_perturb(op_state, key, self.sigma)


@dataclass(frozen=True)
class AgentUpdate:
    """td3/sac/ppo: op_state is `agent.operator_state(checkpoint)`; agent from
    `retland.agents.get_agent(algo, checkpoint.config)` (a frozen dataclass)."""
    agent: Any

    def __call__(self, op_state, key, index):
        return self.agent.update(op_state, key)


def params_function(spec: OperatorSpec, agent=None):
    """The engine's (op_state, key_i, i) -> θ_i for this operator."""
    if spec.kind in AGENT_KINDS:
        if agent is None or agent.algo != spec.kind:
            raise ValueError(f"operator {spec.kind} needs a {spec.kind} agent, got {getattr(agent, 'algo', None)!r}")
        return AgentUpdate(agent)
    if spec.kind == "gaussian":
        return Gaussian(spec.param("sigma"))
    return Identity()


def rollout_perturbation(spec: OperatorSpec) -> tuple[float, float]:
    """(action noise σ, reset noise scale) of the rollout; (0, 0) = deterministic from s0."""
    if spec.kind == "action":
        return spec.param("sigma"), 0.0
    if spec.kind == "init_state":
        return 0.0, spec.param("scale")
    return 0.0, 0.0
