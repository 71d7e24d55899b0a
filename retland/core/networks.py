"""Actor and critic networks (docs/method.md §4 Training: 2×256 ReLU, orthogonal √2 init,
zero biases; PPO 64-64 tanh).

Networks are plain Flax modules; parameters are ordinary pytrees so update operators,
perturbations and interpolation act on them with `jax.tree.map`.
"""
from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

HIDDEN = (256, 256)
PPO_HIDDEN = (64, 64)
ORTHO_SCALE = 2.0**0.5


def dense(features: int, scale: float = ORTHO_SCALE, name: str | None = None) -> nn.Dense:
    return nn.Dense(
        features,
        kernel_init=nn.initializers.orthogonal(scale),
        bias_init=nn.initializers.zeros,
        name=name,
    )


class MLP(nn.Module):
    """x [..., D] -> [..., out]; activation after every hidden layer, none on the output."""

    hidden: Sequence[int]
    out: int
    activation: Callable = nn.relu
    out_scale: float = ORTHO_SCALE

    @nn.compact
    def __call__(self, x):
        for h in self.hidden:
            x = self.activation(dense(h)(x))
        return dense(self.out, self.out_scale)(x)


class DeterministicActor(nn.Module):
    """TD3 actor: obs [..., O] -> action in [-1, 1]^A."""

    action_size: int
    hidden: Sequence[int] = HIDDEN

    @nn.compact
    def __call__(self, obs):
        return jnp.tanh(MLP(self.hidden, self.action_size)(obs))


class TwinCritic(nn.Module):
    """Two independent Q networks: (obs, action) -> [..., 2]."""

    hidden: Sequence[int] = HIDDEN

    @nn.compact
    def __call__(self, obs, action):
        x = jnp.concatenate([obs, action], axis=-1)
        q1 = MLP(self.hidden, 1, name="q1")(x)
        q2 = MLP(self.hidden, 1, name="q2")(x)
        return jnp.concatenate([q1, q2], axis=-1)


def init_params(module: nn.Module, key: jax.Array, *example_inputs):
    return module.init(key, *example_inputs)["params"]


LOG_STD_HEADS = ("separate", "joint")
LOG_STD_SCALE = 1.0  # orthogonal gain of the separate log-std head (jaxrl's log_std_scale)


class TanhGaussianActor(nn.Module):
    """SAC actor: obs [..., O] -> (mean [..., A], log_std [..., A]) of a Gaussian whose
    samples are squashed by tanh. log_std is squashed smoothly into [log_std_min,
    log_std_max] (docs/method.md: [-10, 2]) rather than clipped, so it keeps a gradient.

    log_std_head "separate" (the authors' jaxrl NormalTanhPolicy): hidden layers
    `hidden_i`, then two heads on the last hidden layer, `mean` (orthogonal √2) and
    `log_std` (orthogonal 1.0). "joint" (retland before): one MLP (`MLP_0`) whose last
    layer has 2A outputs at √2, split into mean and log-std. Both give the same policy
    class; they differ in parameters, and so in θ, its init and every update of it."""

    action_size: int
    hidden: Sequence[int] = HIDDEN
    log_std_min: float = -10.0
    log_std_max: float = 2.0
    log_std_head: str = "joint"

    @nn.compact
    def __call__(self, obs):
        if self.log_std_head == "joint":
            out = MLP(self.hidden, 2 * self.action_size)(obs)
            mean, raw = jnp.split(out, 2, axis=-1)
        elif self.log_std_head == "separate":
            x = obs
            for i, h in enumerate(self.hidden):
                x = nn.relu(dense(h, name=f"hidden_{i}")(x))
            mean = dense(self.action_size, name="mean")(x)
            raw = dense(self.action_size, LOG_STD_SCALE, name="log_std")(x)
        else:
            raise ValueError(f"log_std_head {self.log_std_head!r}: choose one of {', '.join(LOG_STD_HEADS)}")
        log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (jnp.tanh(raw) + 1.0)
        return mean, log_std


def tanh_gaussian_layout(params) -> tuple[tuple[int, ...], int, str]:
    """(hidden sizes, action size, log_std_head) of a `TanhGaussianActor`'s parameters,
    so the policy applies to parameters of either layout without their config."""
    if "MLP_0" in params:
        hidden, out = mlp_sizes(params["MLP_0"])
        return hidden, out // 2, "joint"
    names = sorted((n for n in params if n.startswith("hidden_")), key=lambda n: int(n.split("_")[-1]))
    return (tuple(int(params[n]["bias"].shape[-1]) for n in names), int(params["mean"]["bias"].shape[-1]),
            "separate")


class GaussianActor(nn.Module):
    """PPO actor: obs [..., O] -> (mean [..., A], log_std [A]); the log-std is a free
    parameter, independent of the state, initialised at 0."""

    action_size: int
    hidden: Sequence[int] = PPO_HIDDEN
    out_scale: float = ORTHO_SCALE  # orthogonal gain of the mean's output layer

    @nn.compact
    def __call__(self, obs):
        mean = MLP(self.hidden, self.action_size, activation=nn.tanh, out_scale=self.out_scale)(obs)
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_size,))
        return mean, log_std


class CategoricalActor(nn.Module):
    """PPO actor of a discrete-action task: obs [..., O] -> logits [..., A]."""

    num_actions: int
    hidden: Sequence[int] = PPO_HIDDEN
    out_scale: float = ORTHO_SCALE  # orthogonal gain of the logits' output layer

    @nn.compact
    def __call__(self, obs):
        return MLP(self.hidden, self.num_actions, activation=nn.tanh, out_scale=self.out_scale)(obs)


class ValueCritic(nn.Module):
    """PPO critic: obs [..., O] -> V [...]."""

    hidden: Sequence[int] = PPO_HIDDEN
    out_scale: float = ORTHO_SCALE  # orthogonal gain of the output layer

    @nn.compact
    def __call__(self, obs):
        return MLP(self.hidden, 1, activation=nn.tanh, out_scale=self.out_scale)(obs)[..., 0]


def mlp_sizes(mlp_params) -> tuple[tuple[int, ...], int]:
    """(hidden sizes, output size) of an `MLP`'s parameters, so a policy can be applied
    to parameters without knowing the config that built them."""
    names = sorted(mlp_params, key=lambda n: int(n.split("_")[-1]))
    sizes = [int(mlp_params[n]["bias"].shape[-1]) for n in names]
    return tuple(sizes[:-1]), sizes[-1]
