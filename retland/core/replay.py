"""The replay buffer of TD3/SAC: a preallocated array pytree that only grows.

Rows are written at index `size` and never wrap (the config refuses a buffer smaller
than the training run), so a checkpoint taken at `size = n` can be recovered from the
buffer of any later moment as its prefix [0, n). That is what lets the buffer be
stored once per run (see retland.train.checkpoints).

A buffer may also hold, per row, the simulator state the row's observation was taken
in (`states`: the env state's `pipeline_state` pytree, each leaf [capacity, ...]), so
that a rollout can later start from a collected state (`retland.core.startstates`,
docs/method.md "Post-update returns from other start states"). Observations alone
cannot restore one: they drop the root's x and the paper port's maximal coordinates,
and brax 0.14's clip velocities. Runs store them only when their config says
`store_states = true`; the updates never read them.
"""
from __future__ import annotations

from typing import Any, NamedTuple

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
    states: Any = None  # None, or the pipeline_state pytree of each row, leaves [capacity, ...]


def empty(capacity: int, obs_size: int, action_size: int, state_like=None) -> Replay:
    """An empty buffer; with `state_like` (one env state's pipeline_state, or its shapes)
    it also has room for each row's simulator state."""
    z = lambda *shape: jnp.zeros((capacity, *shape), jnp.float32)  # noqa: E731
    data = Transition(z(obs_size), z(action_size), z(), z(obs_size), z())
    states = None if state_like is None else jax.tree.map(
        lambda x: jnp.zeros((capacity, *x.shape), x.dtype), state_like)
    return Replay(data, jnp.zeros((), jnp.int32), states)


def _put(buf, x, index):
    return jax.tree.map(lambda b, v: jax.lax.dynamic_update_index_in_dim(b, v, index, 0), buf, x)


def add(replay: Replay, t: Transition, state=None) -> Replay:
    """Write one transition (fields without the capacity dim) at index `size`, and the
    simulator state its observation was taken in when the buffer keeps states."""
    data = _put(replay.data, t, replay.size)
    states = replay.states if replay.states is None else _put(replay.states, state, replay.size)
    return Replay(data, replay.size + 1, states)


def sample(data: Transition, size: jax.Array, key: jax.Array, batch_size: int) -> Transition:
    """`batch_size` rows drawn uniformly with replacement from [0, size)."""
    idx = jax.random.randint(key, (batch_size,), 0, size)
    return jax.tree.map(lambda x: jnp.take(x, idx, axis=0), data)
