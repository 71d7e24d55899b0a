"""retland.core.brax0013: Brax 0.0.13's pbd simulator and its four tasks in current JAX.

Reference numbers below were produced by Brax 0.0.13 itself (jax 0.4.13, float32).
The full oracle comparison lives outside this fast suite; here: shapes, jit/vmap,
determinism, s0, and a few pinned 0.0.13 values.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from retland.core.brax0013 import QP, STANDARD_RESET_NOISE, TASKS, make_task

SIZES = {"ant": (87, 8, 0.05), "halfcheetah": (18, 6, 0.05), "hopper": (14, 3, 0.02), "walker2d": (20, 6, 0.02)}
# Brax 0.0.13 default_qp() torso position and first observations (float32)
S0_TORSO = {"hopper": [0.0, 0.0, 1.190000057220459], "walker2d": [0.0, 0.0, 1.190000057220459],
            "halfcheetah": [0.0, 0.0, 0.5835852026939392], "ant": [0.0, 0.0, 0.513340175151825]}
S0_OBS_HEAD = {
    "halfcheetah": [0.5835852026939392, 1.0, 0.0, 0.26499995589256287, -8.951444918636753e-09,
                    0.19249995052814484, -0.14999999105930328, -0.16500002145767212, 5.901416688658401e-09],
    "ant": [0.513340175151825, 1.0, 0.0, 0.0, 0.0, 0.0, 0.8726646304130554, 0.0, -0.8726645708084106,
            0.0, -0.8726646304130554, 0.0, 0.8726645708084106],
}
# Brax 0.0.13 hopper: obs and reward after one zero-action step from default_qp()
HOPPER_STEP1_OBS = [1.1877247095108032, 1.0, 0.0, -7.356763944699196e-07, 0.0, 7.68870158935897e-05,
                    0.00033841392723843455, -0.0009673291933722794, 0.00011778363113990054, 0.0,
                    -0.1597881317138672, -0.01503024622797966, -0.05860970914363861, -0.21511581540107727]
HOPPER_STEP1_REWARD = 1.0053195
HOPPER_STEP10_OBS_HEAD = [1.2026595, 0.99999774, 0.0, -0.00213003]


def _s0(task):
    return task.state_from_joints(task.default_angle(), jnp.zeros(task.action_size))


@pytest.fixture(scope="module")
def hopper():
    task = make_task("hopper")

    @jax.jit
    def rollout(state, actions):
        def f(s, a):
            s = task.step(s, a)
            return s, (s.obs, s.reward, s.done)
        return jax.lax.scan(f, state, actions)

    zero_run = rollout(_s0(task), jnp.zeros((100, 3)))
    return task, zero_run


def test_api_and_sizes():
    assert TASKS == ("ant", "halfcheetah", "hopper", "walker2d")
    assert STANDARD_RESET_NOISE == {"ant": 0.1, "halfcheetah": 0.1, "hopper": 0.005, "walker2d": 0.005}
    for name, (obs, act, dt) in SIZES.items():
        t = make_task(name)
        assert (t.observation_size, t.action_size) == (obs, act)
        assert t.dt == pytest.approx(dt)
        assert t.reset_noise_scale == STANDARD_RESET_NOISE[name]
    assert make_task("hopper", 0.0).reset_noise_scale == 0.0
    with pytest.raises(ValueError):
        make_task("humanoid")


@pytest.mark.parametrize("name", TASKS)
def test_s0_matches_brax_0013(name):
    t = make_task(name)
    s0 = jax.jit(lambda: _s0(t))()
    qp = s0.pipeline_state
    assert isinstance(qp, QP) and qp.pos.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(qp.pos[0]), S0_TORSO[name], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(qp.vel), 0.0)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(qp.rot), axis=-1), 1.0, atol=1e-6)
    if name in S0_OBS_HEAD:
        head = S0_OBS_HEAD[name]
        np.testing.assert_allclose(np.asarray(s0.obs[:len(head)]), head, rtol=0, atol=1e-6)
    # reset without noise is s0, whatever the key
    r0 = jax.jit(make_task(name, 0.0).reset)(jax.random.PRNGKey(7))
    np.testing.assert_allclose(np.asarray(r0.obs), np.asarray(s0.obs), rtol=0, atol=1e-7)
    for f in ("pos", "rot", "vel", "ang"):
        np.testing.assert_allclose(np.asarray(getattr(r0.pipeline_state, f)), np.asarray(getattr(qp, f)),
                                   rtol=0, atol=1e-7)


def test_hopper_zero_action_rollout_matches_brax_0013(hopper):
    _, (final, (obs, rew, done)) = hopper
    np.testing.assert_allclose(np.asarray(obs[0]), HOPPER_STEP1_OBS, rtol=0, atol=1e-4)
    assert float(rew[0]) == pytest.approx(HOPPER_STEP1_REWARD, abs=1e-5)
    np.testing.assert_allclose(np.asarray(obs[9, :4]), HOPPER_STEP10_OBS_HEAD, rtol=0, atol=1e-4)
    assert set(final.metrics) == {"reward_forward", "reward_ctrl", "reward_healthy"}
    # 100 steps at rest: finite, and (like 0.0.13's hopper) still standing
    assert np.isfinite(np.asarray(obs)).all() and np.isfinite(np.asarray(rew)).all()
    assert float(done.max()) == 0.0
    assert 0.9 < float(final.pipeline_state.pos[0, 2]) < 1.3


def test_hopper_reset_noise_jit_vmap_determinism(hopper):
    task, _ = hopper
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    states = jax.jit(jax.vmap(task.reset))(keys)
    assert states.obs.shape == (4, 14) and states.pipeline_state.pos.shape == (4, 5, 3)
    # joint angles (obs 5:8) lie within default +- noise bound; different keys differ
    ang = np.asarray(states.obs[:, 5:8])
    assert np.all(np.abs(ang) <= 0.005 + 1e-6) and not np.allclose(ang[0], ang[1])
    a = jax.random.uniform(jax.random.PRNGKey(1), (4, 3), minval=-1, maxval=1)
    vstep = jax.jit(jax.vmap(task.step))
    out1, out2 = vstep(states, a), vstep(states, a)
    np.testing.assert_array_equal(np.asarray(out1.obs), np.asarray(out2.obs))
    # the env reverses hopper's torques: step(a) == physics_step(-a)
    qp, info = jax.jit(jax.vmap(task.physics_step))(states.pipeline_state, -a)
    np.testing.assert_allclose(np.asarray(qp.pos), np.asarray(out1.pipeline_state.pos), rtol=0, atol=1e-6)
    assert info.contact.vel.shape == (4, 5, 3)


@pytest.mark.parametrize("name", ["ant", "halfcheetah", "walker2d"])
def test_other_tasks_step(name):
    t = make_task(name)

    @jax.jit
    def run(key):
        s = t.reset(key)
        def f(s, _):
            s = t.step(s, 0.5 * jnp.ones(t.action_size))
            return s, s.reward
        return jax.lax.scan(f, s, None, length=5)

    final, rew = run(jax.random.PRNGKey(0))
    assert final.obs.shape == (t.observation_size,)
    assert np.isfinite(np.asarray(final.obs)).all() and np.isfinite(np.asarray(rew)).all()
    assert final.done.dtype == jnp.float32
