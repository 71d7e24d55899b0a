"""`rollout` on a scripted toy env: what counts towards a return, exactly."""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from retland.core.rollout import GAMMA, rollout


class ToyState(NamedTuple):
    obs: jax.Array  # [1]: the step counter
    reward: jax.Array
    done: jax.Array


class ToyEnv:
    """Step t (0-based) pays rewards[t] + action[0] and is done from step `done_at` on."""

    def __init__(self, rewards, done_at=None):
        self.rewards = jnp.asarray(rewards, jnp.float32)
        self.done_at = len(rewards) + 1 if done_at is None else done_at

    def reset(self):
        return ToyState(jnp.zeros(1), jnp.zeros(()), jnp.zeros(()))

    def step(self, state, action):
        t = state.obs[0].astype(jnp.int32)
        reward = self.rewards[t] + action[0]
        done = (t >= self.done_at).astype(jnp.float32)
        return ToyState(state.obs + 1, reward, done)


def zero_policy(params, obs):
    return jnp.zeros(1) * params


def test_rewards_after_the_first_done_do_not_count_and_nan_does_not_leak():
    rewards = [1.0, 2.0, 4.0, np.nan, 100.0, np.inf]
    env = ToyEnv(rewards, done_at=2)  # the step paying 4.0 terminates
    out, steps = rollout(env, zero_policy, 1.0, env.reset(), len(rewards), per_step=True)
    assert float(out.ret) == 7.0
    assert float(out.discounted_return) == pytest.approx(1.0 + GAMMA * 2.0 + GAMMA**2 * 4.0)
    assert int(out.episode_length) == 3
    assert bool(out.terminated)
    np.testing.assert_array_equal(np.asarray(steps.alive), [1, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(np.asarray(steps.done), [0, 0, 1, 1, 1, 1])
    assert steps.obs.shape == (len(rewards), 1)


def test_no_done_runs_the_whole_horizon():
    env = ToyEnv([1.0] * 10)
    out = jax.jit(lambda s: rollout(env, zero_policy, 1.0, s, 7))(env.reset())
    assert float(out.ret) == 7.0
    assert float(out.discounted_return) == pytest.approx(sum(GAMMA**t for t in range(7)), rel=1e-6)
    assert int(out.episode_length) == 7
    assert not bool(out.terminated)


def test_done_on_the_last_step_counts_as_terminated():
    env = ToyEnv([1.0] * 5, done_at=4)
    out = rollout(env, zero_policy, 1.0, env.reset(), 5)
    assert (float(out.ret), int(out.episode_length), bool(out.terminated)) == (5.0, 5, True)


def test_action_noise_is_keyed_clipped_and_off_by_default():
    env = ToyEnv([0.0] * 50)
    key = jax.random.PRNGKey(3)
    a = rollout(env, zero_policy, 1.0, env.reset(), 50, action_noise=5.0, key=key, per_step=True)[1]
    b = rollout(env, zero_policy, 1.0, env.reset(), 50, action_noise=5.0, key=key, per_step=True)[1]
    np.testing.assert_array_equal(np.asarray(a.reward), np.asarray(b.reward))
    rewards = np.asarray(a.reward)  # = the noisy action[0]
    assert rewards.min() == -1.0 and rewards.max() == 1.0  # σ = 5 saturates the clip
    assert len(np.unique(rewards)) > 2
    quiet = rollout(env, zero_policy, 1.0, env.reset(), 50, key=key, per_step=True)[1]
    assert not np.asarray(quiet.reward).any()
    with pytest.raises(ValueError, match="needs a key"):
        rollout(env, zero_policy, 1.0, env.reset(), 5, action_noise=0.1)
