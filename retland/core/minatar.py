"""MinAtar games (Young & Tian 2019) as retland envs, on gymnax's pure-JAX implementation.

The paper's appendix A.6 measured post-update return distributions of PPO on four ALE
games (Qbert, MsPacman, Breakout, Seaquest). The ALE itself is C++ with ROMs, and the
JAX ports of those games on the package registry (jaxtari) build a sprite renderer in
every game's constructor, from sprite files that its installer downloads (and that
need the user to confirm owning the ROMs), so a game cannot even be constructed on a
machine that reaches only the package registry. gymnax (`pip install gymnax`) ships
MinAtar's miniature games written in JAX and needs nothing at run time: retland wraps
them here (`MinAtarEnv`). Breakout and Seaquest have a MinAtar version; Qbert and
MsPacman have none (Asterix, Freeway and Space Invaders are offered as well).

What retland takes from each game, and what it adds:

- Rules: gymnax's `step_env` / `reset_env` as they are. Actions are discrete, an int in
  [0, num_actions); rewards are the game's score increments (non-negative integers, as
  floats); observations are MinAtar's 10 x 10 x C binary channels, flattened to
  [100·C] float32. gymnax drops MinAtar's sticky actions (probability 0.1 in the
  original); so does retland.
- Episode end: a step is done when the game is over (the player lost). gymnax's own
  time limit is switched off (its `max_steps_in_episode` set to 2^31 - 1): the horizon
  is retland's, as for every task (`default_horizon`: gymnax's limit, 1000 steps, Freeway
  2500, where the game's clock ends it).
- Randomness: the games draw spawns, directions and enemy moves from a PRNG key. The
  env state carries that key (`MinAtarState.key`), split at every step, so a state
  determines the whole future given the actions: J(θ) from a state is deterministic,
  as for the physics tasks.
- Reset noise: a reset has no continuous noise to scale. Scale s = 0 resets from the
  fixed key PRNGKey(0), whatever key is given: that is the reference state s0 (start
  screen and the game's random stream both fixed). Any s > 0 resets from the given key
  (the standard reset training uses, s = 1).
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from retland.config.registry import (MINATAR_BACKEND, MINATAR_GAMES, MINATAR_TASKS, MINATAR_VARIANT,  # noqa: F401
                                     MinAtarExtraMissing, have_gymnax, is_minatar, require_gymnax)

# gymnax's time limit, switched off: retland's horizon ends an episode.
NO_TIME_LIMIT = 2**31 - 1
STANDARD_RESET_NOISE = 1.0


class TaskInfo(NamedTuple):
    """What a run records about its MinAtar game."""

    source: str  # "gymnax <version> Breakout-MinAtar"
    episode_length: int  # gymnax's time limit of the game (retland's default horizon)
    num_actions: int
    obs_shape: tuple[int, ...]  # (10, 10, C)


def gymnax_name(name: str) -> str:
    return MINATAR_GAMES[name][0]


def paper_game(name: str) -> str | None:
    """The ALE game of the paper's appendix A.6 that MinAtar game `name` stands in for."""
    return MINATAR_GAMES[name][1]


@functools.lru_cache(maxsize=None)
def _gymnax_env(name: str):
    require_gymnax()
    import gymnax

    with jax.ensure_compile_time_eval():
        env, params = gymnax.make(gymnax_name(name))
    return env, params


@functools.lru_cache(maxsize=None)
def task_info(name: str) -> TaskInfo:
    from importlib import metadata

    env, params = _gymnax_env(name)
    shape = tuple(int(s) for s in env.observation_space(params).shape)
    return TaskInfo(f"gymnax {metadata.version('gymnax')} {gymnax_name(name)}", int(params.max_steps_in_episode),
                    int(env.num_actions), shape)


class MinAtarState(struct.PyTreeNode):
    """A MinAtar env state as retland carries it (module docstring)."""

    obs: jax.Array  # [O] float32: the flattened 10 x 10 x C channels
    reward: jax.Array  # [] float32: the score increment of the last step
    done: jax.Array  # [] float32: 1 once the game is over
    game: Any  # gymnax's state of the game
    key: jax.Array  # the game's random stream (split at every step)


class MinAtarEnv:
    """A gymnax MinAtar game with retland's reset rule (module docstring). `action_size`
    is the number of actions (the policy's logits); `discrete` is True."""

    variant = MINATAR_VARIANT
    discrete = True

    def __init__(self, name: str, reset_noise_scale: float):
        s = float(reset_noise_scale)
        if not 0.0 <= s <= 1.0:
            raise ValueError(f"{name}: reset noise scale {s} is outside [0, 1] (a MinAtar game resets from the "
                             "key for any scale > 0, from the fixed reference key at 0)")
        self.name, self.reset_noise_scale = name, s
        self.game_env, params = _gymnax_env(name)
        self.params = params.replace(max_steps_in_episode=NO_TIME_LIMIT)
        self.info = task_info(name)

    @property
    def action_size(self) -> int:
        return self.info.num_actions

    @property
    def num_actions(self) -> int:
        return self.info.num_actions

    @property
    def observation_size(self) -> int:
        return int(np.prod(self.info.obs_shape))

    def reset(self, rng: jax.Array) -> MinAtarState:
        if self.reset_noise_scale == 0.0:
            rng = jax.random.PRNGKey(0)
        k_reset, k_game = jax.random.split(rng)
        obs, game = self.game_env.reset_env(k_reset, self.params)
        zero = jnp.zeros((), jnp.float32)
        return MinAtarState(self._flat(obs), zero, zero, _strong(game), k_game)

    def step(self, state: MinAtarState, action: jax.Array) -> MinAtarState:
        key, sub = jax.random.split(state.key)
        obs, game, reward, done, _ = self.game_env.step_env(sub, state.game, jnp.asarray(action, jnp.int32),
                                                            self.params)
        return MinAtarState(self._flat(obs), jnp.asarray(reward, jnp.float32), jnp.asarray(done, jnp.float32),
                            _strong(game), key)

    @staticmethod
    def _flat(obs) -> jax.Array:
        return jnp.asarray(obs, jnp.float32).reshape(-1)


def _strong(tree):
    """Every leaf a strongly typed array (gymnax's reset holds Python ints, whose weak
    types would differ from a step's and recompile or break a scan's carry)."""
    def strong(x):
        x = jnp.asarray(x)
        return jnp.asarray(x, dtype=x.dtype)
    return jax.tree.map(strong, tree)


@functools.lru_cache(maxsize=None)
def minatar_env(name: str, reset_noise_scale: float) -> MinAtarEnv:
    """The (cached) retland env of MinAtar game `name`."""
    with jax.ensure_compile_time_eval():
        return MinAtarEnv(name, reset_noise_scale)
