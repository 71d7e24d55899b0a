"""PPO's GAE and loss against hand computations (FINDINGS.md A.6, issue 27: the suspects of
a categorical PPO that plateaus). No env and no gymnax: tiny networks, numbers on the host."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from retland.agents import ppo
from retland.config.agents import PPOConfig


def gae_by_definition(r, d, v, last_v, gamma, lam):
    """A_t = sum_k (γλ)^k δ_{t+k}, summed only while the episode lasts (no done in
    t..t+k-1), δ_t = r_t + γ(1 - d_t) V_{t+1} - V_t, V_T = last_v; one env, numpy."""
    T = len(r)
    nv = np.append(v[1:], last_v)
    delta = r + gamma * (1.0 - d) * nv - v
    adv = np.zeros(T)
    for t in range(T):
        w = 1.0
        for k in range(t, T):
            adv[t] += w * delta[k]
            if d[k]:
                break
            w *= gamma * lam
    return adv


@pytest.mark.parametrize("done", [[0, 0, 0, 0, 0], [0, 1, 0, 0, 1], [1, 0, 1, 0, 0]])
def test_gae_matches_its_definition_across_episode_ends(done):
    cfg = PPOConfig(gamma=0.9, gae_lambda=0.8)
    rng = np.random.default_rng(0)
    r, v = rng.normal(size=(5, 2)), rng.normal(size=(5, 2))
    d = np.array(done, float)[:, None].repeat(2, 1)
    last_v = rng.normal(size=2)
    traj = ppo.Trajectory(obs=None, action=None, log_prob=None, value=jnp.asarray(v, jnp.float32),
                          reward=jnp.asarray(r, jnp.float32), done=jnp.asarray(d, jnp.float32))
    adv, ret = ppo.advantages(cfg, traj, jnp.asarray(last_v, jnp.float32))
    for n in range(2):
        want = gae_by_definition(r[:, n], d[:, n], v[:, n], last_v[n], 0.9, 0.8)
        np.testing.assert_allclose(np.asarray(adv)[:, n], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(ret), np.asarray(adv) + v, rtol=1e-6, atol=1e-6)


@pytest.fixture(scope="module")
def discrete():
    cfg = PPOConfig(action_space="discrete", hidden=(8,), entropy_coef=0.01, actor_head_scale=1.0,
                    num_envs=2, unroll_length=2, num_minibatches=1)
    params = ppo.init(cfg, jax.random.PRNGKey(0), 6, 3).params
    obs = jnp.tile(jax.random.normal(jax.random.PRNGKey(1), (1, 6)), (4, 1))  # one state, four rows
    return cfg, params, obs


def _batch(cfg, params, obs, action, advantage):
    action = jnp.asarray(action, jnp.int32)
    logits = ppo.distribution(cfg, params["actor"], obs)
    return ppo.Batch(obs, action, ppo.categorical_log_prob(logits, action), jnp.asarray(advantage, jnp.float32),
                     jnp.zeros(obs.shape[0]))


def _sgd(cfg, params, mb, lr=0.1):
    grads = jax.grad(ppo.loss, argnums=1)(cfg, params, mb)
    return jax.tree.map(lambda p, g: p - lr * g, params, grads)


def test_policy_gradient_raises_the_actions_with_positive_advantage(discrete):
    cfg, params, obs = discrete
    mb = _batch(cfg, params, obs, [1, 1, 2, 2], [1.0, 1.0, -1.0, -1.0])
    before = jax.nn.softmax(ppo.distribution(cfg, params["actor"], obs[:1]))[0]
    after = jax.nn.softmax(ppo.distribution(cfg, _sgd(cfg, params, mb)["actor"], obs[:1]))[0]
    assert after[1] > before[1] and after[2] < before[2]


def test_entropy_term_raises_the_entropy(discrete):
    """Zero advantages: the surrogate has no gradient, the entropy bonus (subtracted from
    the loss) makes the policy less certain."""
    cfg, params, obs = discrete
    mb = _batch(cfg, params, obs, [0, 1, 2, 0], [0.0, 0.0, 0.0, 0.0])
    ent = lambda p: float(ppo.categorical_entropy(ppo.distribution(cfg, p["actor"], obs[:1])))  # noqa: E731
    assert ent(_sgd(cfg, params, mb, lr=1.0)) > ent(params)


def test_advantages_are_normalised_per_minibatch(discrete):
    """The surrogate sees (A - mean) / std of the minibatch: an affine change of the
    advantages with a positive scale leaves the loss and its gradient unchanged."""
    cfg, params, obs = discrete
    adv = np.array([0.3, -1.2, 2.0, 0.1])
    new = jax.tree.map(lambda x: x + 0.05, params)  # ratios away from 1, so the clip is active somewhere
    a = _batch(cfg, params, obs, [0, 1, 2, 1], adv)
    b = a._replace(advantage=jnp.asarray(7.0 * adv + 3.0, jnp.float32))
    np.testing.assert_allclose(float(ppo.loss(cfg, new, a)), float(ppo.loss(cfg, new, b)), rtol=1e-5)
    ga, gb = (jax.grad(ppo.loss, argnums=1)(cfg, new, mb) for mb in (a, b))
    for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-4, atol=1e-6)


def test_categorical_log_prob_picks_each_rows_action():
    logits = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 5))  # [T, N, A]
    action = jax.random.randint(jax.random.PRNGKey(1), (3, 4), 0, 5)
    want = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), np.asarray(action)[..., None], -1)[..., 0]
    np.testing.assert_allclose(np.asarray(ppo.categorical_log_prob(logits, action)), want, rtol=1e-6)
