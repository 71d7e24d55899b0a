"""SAC's log-std head: the authors' separate layer (orthogonal gain 1.0) under the paper
variant, retland's former joint output layer (2A units at √2) otherwise, and runs
recorded before the field existed read as joint, so their checkpoints still load.

No training here: configs, the two networks' parameter trees and inits, the policy and
the operator's actor step on both layouts, and a checkpoint written the old way."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from retland.agents import sac
from retland.core import networks
from retland.train.config import SACConfig, TrainConfig, load_train_config

SMALL = dict(hidden=(16, 16), batch_size=8, learning_starts=40, buffer_size=120)


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(env="hopper", seeds=1, total_steps=120, checkpoints=(60,), eval_every=60, horizon=20, **kw)


def test_the_head_follows_the_variant_unless_given_and_old_configs_read_joint(tmp_path):
    assert _cfg(agent=SACConfig(**SMALL)).agent.log_std_head == "separate"  # paper, the default variant
    assert _cfg(variant="paper", agent={"algo": "sac", **SMALL}).agent.log_std_head == "separate"
    assert _cfg(variant="brax", agent=SACConfig(**SMALL)).agent.log_std_head == "joint"
    assert _cfg(variant="brax", agent={"algo": "sac", **SMALL}).agent.log_std_head == "joint"
    # given, it is kept under either variant
    assert _cfg(variant="paper", agent=SACConfig(log_std_head="joint", **SMALL)).agent.log_std_head == "joint"
    assert _cfg(variant="brax", agent={"algo": "sac", "log_std_head": "separate", **SMALL}).agent.log_std_head \
        == "separate"
    toml = tmp_path / "c.toml"
    toml.write_text('variant = "brax"\n[agent]\nalgo = "sac"\nlearning_starts = 40\nbuffer_size = 1000000\n')
    assert load_train_config(toml).agent.log_std_head == "joint"
    with pytest.raises(ValueError, match="log_std_head"):
        SACConfig(log_std_head="split")
    # a stored config keeps what it recorded; one recorded before the field reads joint
    new = _cfg(agent=SACConfig(**SMALL))
    assert TrainConfig.from_json(new.to_json()).agent.log_std_head == "separate"
    old = json.loads(new.to_json())
    del old["agent"]["log_std_head"]
    assert TrainConfig.from_stored(old).agent.log_std_head == "joint"
    # TD3/PPO configs are untouched
    assert "log_std_head" not in _cfg(agent={"algo": "td3", **SMALL}).agent.model_dump()


def _orthogonal_gain(kernel) -> float:
    k = np.asarray(kernel, np.float64)  # [in, out], in >= out: columns orthogonal, each of norm = gain
    gram = k.T @ k
    assert np.allclose(gram, gram[0, 0] * np.eye(k.shape[1]), atol=1e-5)
    return float(np.sqrt(gram[0, 0]))


def test_the_two_layouts_and_their_inits():
    obs, act = 14, 3
    sep = sac.init(SACConfig(log_std_head="separate", hidden=(16, 16)), jax.random.PRNGKey(0), obs, act).actor_params
    joint = sac.init(SACConfig(log_std_head="joint", hidden=(16, 16)), jax.random.PRNGKey(0), obs, act).actor_params
    assert sorted(sep) == ["hidden_0", "hidden_1", "log_std", "mean"]
    assert sep["mean"]["kernel"].shape == sep["log_std"]["kernel"].shape == (16, act)
    assert _orthogonal_gain(sep["log_std"]["kernel"]) == pytest.approx(1.0, rel=1e-5)  # the authors' log_std_scale
    assert _orthogonal_gain(sep["mean"]["kernel"]) == pytest.approx(2**0.5, rel=1e-5)
    assert sorted(joint) == ["MLP_0"] and joint["MLP_0"]["Dense_2"]["kernel"].shape == (16, 2 * act)
    assert networks.tanh_gaussian_layout(sep) == ((16, 16), act, "separate")
    assert networks.tanh_gaussian_layout(joint) == ((16, 16), act, "joint")


@pytest.mark.parametrize("head", ["separate", "joint"])
def test_policy_and_operator_step_work_on_either_layout(head):
    """The evaluation policy, the reparameterised sample and the operator's actor step
    read the layout off the parameters; a config of the other layout does not matter."""
    obs_size, act = 14, 3
    cfg = SACConfig(log_std_head=head, hidden=(16, 16))
    state = sac.init(cfg, jax.random.PRNGKey(1), obs_size, act)
    obs = jax.random.normal(jax.random.PRNGKey(2), (8, obs_size))
    other = SACConfig(log_std_head="joint" if head == "separate" else "separate", hidden=(16, 16))
    a = sac.policy(other, state.actor_params, obs)
    assert a.shape == (8, act) and bool(jnp.all(jnp.abs(a) <= 1))
    mean, log_std = sac.distribution(cfg, state.actor_params, obs)
    assert mean.shape == log_std.shape == (8, act) and bool(jnp.all((log_std >= -10) & (log_std <= 2)))
    params, _, logp = sac.actor_step(cfg, state.actor_params, state.actor_opt_state, state.critic_params,
                                     state.log_alpha, obs, jax.random.PRNGKey(3))
    assert jax.tree.structure(params) == jax.tree.structure(state.actor_params)
    moved = [float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(state.actor_params))]
    assert all(m > 0 for m in moved)  # every layer, both heads included, gets a step
    assert logp.shape == (8,) and bool(jnp.all(jnp.isfinite(logp)))


def test_a_checkpoint_recorded_before_the_field_still_loads(tmp_path):
    """A SAC run stored by an older retland: its config has no log_std_head and its
    parameters the joint layout. It loads bit for bit and acts; read with today's default
    (separate) its parameters would not fit."""
    from retland.train.checkpoints import load_checkpoint, save_state
    from retland.warehouse import Warehouse

    wh = Warehouse.open(tmp_path / "wh")
    cfg = _cfg(variant="paper", agent=SACConfig(log_std_head="joint", **SMALL))
    stored = json.loads(cfg.to_json())
    del stored["agent"]["log_std_head"]
    run_id = "sac-hopper-20250101-000000-abcd-s0"
    agent = sac.init(cfg.agent, jax.random.PRNGKey(0), 14, 3)
    now = datetime.now(timezone.utc)
    wh.append("runs", [dict(run_id=run_id, algo="sac", env="hopper", seed=0, backend="positional", variant="paper",
                            source="trained", parent_run_id=None, parent_step=None, config=json.dumps(stored),
                            repro=None, created_at=now)])
    path = save_state(wh, run_id, 60, {"agent": jax.device_get(agent)})
    wh.append("checkpoints", [dict(run_id=run_id, step=60, artifact_path=path, eval_return=1.0, replay_size=0,
                                   created_at=now)])
    ck = load_checkpoint(wh, run_id, 60)
    assert ck.config.agent.log_std_head == "joint"
    for x, y in zip(jax.tree.leaves(ck.agent_state), jax.tree.leaves(agent)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    obs = jnp.zeros((1, 14))
    np.testing.assert_array_equal(np.asarray(sac.policy(ck.config.agent, ck.agent_state.actor_params, obs)),
                                  np.asarray(sac.policy(cfg.agent, agent.actor_params, obs)))
    # what reading the old config with today's paper default would have built: another tree
    today = TrainConfig.model_validate(stored).agent
    assert today.log_std_head == "separate"
    assert jax.tree.structure(sac.init(today, jax.random.PRNGKey(0), 14, 3).actor_params) != \
        jax.tree.structure(agent.actor_params)


def test_landscape_directions_and_interpolation_act_on_the_separate_tree():
    """Landscapes and interpolation map over the actor's parameter tree: with the separate
    head the log-std layer is one more kernel/bias pair, normalised per output unit like
    the others, and θ(λ) applies through the same policy."""
    from retland.analyses.landscape import filter_normalize, gaussian_direction

    cfg = SACConfig(log_std_head="separate", hidden=(16, 16))
    a = sac.init(cfg, jax.random.PRNGKey(0), 14, 3).actor_params
    b = sac.init(cfg, jax.random.PRNGKey(1), 14, 3).actor_params
    d = filter_normalize(gaussian_direction(a, jax.random.PRNGKey(2)), a)
    assert jax.tree.structure(d) == jax.tree.structure(a)
    assert not np.any(np.asarray(d["log_std"]["bias"]))  # biases zeroed
    np.testing.assert_allclose(np.linalg.norm(np.asarray(d["log_std"]["kernel"]), axis=0),
                               np.linalg.norm(np.asarray(a["log_std"]["kernel"]), axis=0), rtol=1e-5)
    mid = jax.tree.map(lambda x, y: 0.5 * x + 0.5 * y, a, b)
    assert sac.policy(cfg, mid, jnp.zeros((2, 14))).shape == (2, 3)
