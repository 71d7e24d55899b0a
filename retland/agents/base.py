"""What every agent's training state looks like from the outside."""
from __future__ import annotations

from typing import Any, NamedTuple

import jax


class TrainState(NamedTuple):
    """Everything one seed needs to take its next training step, except the replay
    buffer (TD3/SAC keep that separately: it is stored once per run).

    For PPO `env_state` and `episode_step` carry a leading [num_envs] axis.
    """

    agent: Any  # the algorithm's state: networks, targets, optimizer states, update counter
    env_state: Any  # brax State of the collection env(s)
    episode_step: jax.Array  # int32 [] or [num_envs]: steps into the current episode
    key: jax.Array  # PRNG key of this seed's training stream
    env_steps: jax.Array  # int32 []: env steps taken by this seed (per env for PPO x num_envs)
