"""Operator specs: parsing, canonical ids, and the parameter operators against hand-written
versions."""
from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from retland.purd.operators import (
    Gaussian,
    Identity,
    OperatorSpec,
    params_function,
    parse_operator,
    rollout_key,
    rollout_perturbation,
    sample_key,
)


@pytest.mark.parametrize("text, operator_id", [
    ("td3", "td3[h=1000,seed=0]"),
    ("gaussian", "gaussian[sigma=0.0003,h=1000,seed=0]"),
    ("gaussian:3e-4", "gaussian[sigma=0.0003,h=1000,seed=0]"),
    ("gaussian:sigma=0.0003", "gaussian[sigma=0.0003,h=1000,seed=0]"),
    ("action:0.2", "action[sigma=0.2,h=1000,seed=0]"),
    ("action", "action[sigma=0.1,h=1000,seed=0]"),
    ("init_state:0.01", "init_state[scale=0.01,h=1000,seed=0]"),
])
def test_operator_id_is_canonical(text, operator_id):
    assert parse_operator(text).operator_id == operator_id


def test_operator_id_holds_horizon_and_seed_and_params_json_everything():
    spec = parse_operator("gaussian:1e-5", horizon=300, seed=7)
    assert spec.operator_id == "gaussian[sigma=1e-05,h=300,seed=7]"
    row = spec.operators_row()
    assert row["kind"] == "gaussian"
    params = json.loads(row["params"])
    assert params["sigma"] == 1e-5 and params["horizon"] == 300 and params["seed"] == 7


def test_init_state_default_is_the_tasks_reset_noise():
    assert parse_operator("init_state", env="hopper").operator_id == "init_state[scale=0.005,h=1000,seed=0]"
    with pytest.raises(ValueError, match="needs the env"):
        parse_operator("init_state")


@pytest.mark.parametrize("text", ["adam", "td3:1", "gaussian:abc", "gaussian:-1", "gaussian:nan"])
def test_bad_operators_are_refused(text):
    with pytest.raises(ValueError):
        parse_operator(text)


def test_gaussian_matches_a_hand_written_perturbation():
    theta = {"a": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}, "b": jnp.arange(4.0)}
    spec = parse_operator("gaussian:0.01", seed=5)
    i = 17
    key_i = jax.random.fold_in(jax.random.PRNGKey(5), i)
    got = params_function(spec)(theta, sample_key(spec.base_key, i), i)
    leaves, treedef = jax.tree.flatten(theta)
    keys = jax.random.split(key_i, len(leaves))
    want = jax.tree.unflatten(treedef, [x + 0.01 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
    # each tensor has its own noise
    flat = [np.asarray(g - x).ravel() for g, x in zip(jax.tree.leaves(got), leaves)]
    assert not np.allclose(flat[0][:2], flat[1][:2])


def test_rollout_perturbations_leave_theta_alone():
    theta = {"w": jnp.ones(3)}
    for text, expect in [("action:0.2", (0.2, 0.0)), ("init_state:0.01", (0.0, 0.01)), ("td3", (0.0, 0.0))]:
        spec = parse_operator(text)
        assert rollout_perturbation(spec) == expect
    assert params_function(parse_operator("action:0.2")) == Identity()
    assert Identity()(theta, None, 0) is theta
    assert params_function(parse_operator("gaussian:0.1")) == Gaussian(0.1)  # equal ops share programs


def test_init_state_start_is_the_noisy_reset_from_the_rollout_key():
    from retland.core.envs import make_env, reference_state

    spec = parse_operator("init_state:0.01", seed=2)
    key_i = sample_key(spec.base_key, 4)
    env = make_env("hopper", "positional", 0.01)
    s = env.reset(rollout_key(key_i))
    s0 = reference_state("hopper")
    dq = np.asarray(s.pipeline_state.q - s0.pipeline_state.q)
    assert 0 < np.abs(dq).max() <= 0.01
    assert np.abs(np.asarray(s.pipeline_state.qd)).max() <= 0.01


def test_agent_operators_need_their_agent():
    with pytest.raises(ValueError, match="td3 agent"):
        params_function(parse_operator("td3"))
    assert OperatorSpec("td3").operator_id == "td3[h=1000,seed=0]"
