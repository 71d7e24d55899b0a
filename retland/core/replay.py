"""The replay buffer of TD3/SAC: a preallocated array pytree that only grows.

Rows are written at index `size` and never wrap (the config refuses a buffer smaller
than the training run), so a checkpoint taken at `size = n` can be recovered from the
buffer of any later moment as its prefix [0, n). That is what lets the buffer be
stored once per run (see retland.train.checkpoints).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Transition(NamedTuple):
    """(s, a, r, s', mask); leading dims [...] shared by all fields."""

    obs: jax.Array  # [..., O]
    action: jax.Array  # [..., A]
    reward: jax.Array  # [...]
    next_obs: jax.Array  # [..., O]
    mask: jax.Array  # [...]: 0 at termination, 1 otherwise (time-limit truncation bootstraps)


class Replay(NamedTuple):
    data: Transition  # arrays [capacity, ...]
    size: jax.Array  # int32 []: rows [0, size) are valid


def empty(capacity: int, obs_size: int, action_size: int) -> Replay:
    z = lambda *shape: jnp.zeros((capacity, *shape), jnp.float32)  # noqa: E731
    data = Transition(z(obs_size), z(action_size), z(), z(obs_size), z())
    return Replay(data, jnp.zeros((), jnp.int32))


def add(replay: Replay, t: Transition) -> Replay:
    """Write one transition (fields without the capacity dim) at index `size`."""
    data = jax.tree.map(lambda buf, x: jax.lax.dynamic_update_index_in_dim(buf, x, replay.size, 0),
                        replay.data, t)
    return Replay(data, replay.size + 1)


def sample(data: Transition, size: jax.Array, key: jax.Array, batch_size: int) -> Transition:
    """`batch_size` rows drawn uniformly with replacement from [0, size)."""
    idx = jax.random.randint(key, (batch_size,), 0, size)
    return jax.tree.map(lambda x: jnp.take(x, idx, axis=0), data)
