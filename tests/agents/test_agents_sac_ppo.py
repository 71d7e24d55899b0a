"""SAC and PPO end to end on tiny configs: train, checkpoint, load, update operator.

TD3 (tests/agents/test_agents.py) carries the detailed checks of the shared machinery
(resume, seed independence, bad input); here each algorithm shows its own pieces work.
"""
from __future__ import annotations

import jax
import numpy as np
import pytest

from retland.agents import get_agent
from retland.train.checkpoints import load_checkpoint
from retland.train.config import PPOConfig, SACConfig, TrainConfig
from retland.train.job import train

TINY = {
    "sac": TrainConfig(env="hopper", seeds=2, total_steps=120, checkpoints=(60, 120), eval_every=60, horizon=20,
                       agent=SACConfig(hidden=(16, 16), batch_size=8, learning_starts=40, buffer_size=120)),
    # 8 envs x 8 steps per iteration, 2 minibatches of 32
    "ppo": TrainConfig(env="hopper", seeds=2, total_steps=256, checkpoints=(128, 256), eval_every=128, horizon=20,
                       agent=PPOConfig(num_envs=8, unroll_length=8, hidden=(16, 16))),
}


def leaves_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


@pytest.fixture(scope="module")
def wh(tmp_path_factory):
    from retland.warehouse import Warehouse

    return Warehouse.open(tmp_path_factory.mktemp("sacppo") / "wh")


@pytest.fixture(scope="module", params=["sac", "ppo"])
def job(request, wh):
    return request.param, train(TINY[request.param], wh)


def test_final_checkpoint_round_trip_is_bit_exact(wh, job):
    algo, result = job
    final = TINY[algo].checkpoint_steps[-1]
    for i, rid in enumerate(result.run_ids):
        ck = load_checkpoint(wh, rid, final)
        assert ck.algo == algo and ck.step == final
        assert leaves_equal(ck.state, jax.tree.map(lambda x: x[i], result.state))
        if algo == "sac":
            assert ck.replay_size == final
            assert leaves_equal(ck.replay, jax.tree.map(lambda x: x[i], result.replay.data))
        else:
            assert ck.replay is None
            assert ck.state.env_state.obs.shape == (8, 14)  # PPO keeps its envs' states (paper hopper: 14 values)


def test_operator_vmaps_over_keys_and_each_key_is_its_own_sample(wh, job):
    algo, result = job
    ck = load_checkpoint(wh, result.run_ids[0], TINY[algo].checkpoint_steps[0])
    agent = get_agent(algo, ck.config)
    op = agent.operator_state(ck)
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    thetas = jax.jit(jax.vmap(agent.update, in_axes=(None, 0)))(op, keys)
    before = agent.actor_params(ck.state)
    assert jax.tree.structure(thetas) == jax.tree.structure(before)
    moved = [np.abs(np.asarray(t) - np.asarray(b)[None]).max(axis=tuple(range(1, t.ndim)))
             for t, b in zip(jax.tree.leaves(thetas), jax.tree.leaves(before))]
    assert np.all(np.max(moved, axis=0) > 0)  # every sample moved θ
    first = np.asarray(jax.tree.leaves(thetas)[0])
    assert not np.allclose(first[0], first[1])  # different ξ, different θ'
    again = jax.jit(agent.update)(op, keys[2])
    assert jax.tree.all(jax.tree.map(lambda x, y: np.allclose(x[2], y, rtol=1e-5, atol=1e-6), thetas, again))


def test_evaluation_action_is_deterministic_and_bounded(wh, job):
    algo, result = job
    ck = load_checkpoint(wh, result.run_ids[1], TINY[algo].checkpoint_steps[-1])
    agent = get_agent(algo, ck.config)
    obs = np.asarray(ck.state.env_state.obs)
    obs = obs.reshape(-1, obs.shape[-1])
    a1 = agent.policy(agent.actor_params(ck.state), obs)
    assert a1.shape == (obs.shape[0], 3) and np.all(np.abs(a1) <= 1.0)
    assert np.array_equal(a1, agent.policy(agent.actor_params(ck.state), obs))


def test_ppo_operator_refuses_a_checkpoint_of_another_env(wh, job):
    algo, result = job
    if algo != "ppo":
        pytest.skip("env-bound operator: PPO only")
    ck = load_checkpoint(wh, result.run_ids[0], 128)
    with pytest.raises(ValueError, match="is for hopper/brax0013/paper, but this PPO agent rolls out ant"):
        get_agent("ppo", ck.config.model_copy(update={"env": "ant"})).operator_state(ck)
