"""Operator specs: parsing, canonical ids, and the parameter operators against hand-written
versions."""
from __future__ import annotations

import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from retland.purd.operators import (
    AgentUpdate,
    Gaussian,
    Identity,
    OperatorSpec,
    check_operator,
    params_function,
    parse_operator,
    rollout_key,
    rollout_perturbation,
    sample_key,
)


@pytest.mark.parametrize("text, operator_id", [
    ("td3", "td3[h=1000,seed=0]"),
    ("ppo", "ppo[h=1000,seed=0]"),  # the id every ppo distribution stored so far has
    ("ppo:rows=random", "ppo[h=1000,seed=0]"),  # the default, so the same operator
    ("ppo:clip=0.1,rows=first", "ppo[clip=0.1,rows=first,h=1000,seed=0]"),
    (" ppo: rows=first , clip=1e-1 ", "ppo[clip=0.1,rows=first,h=1000,seed=0]"),
    ("ppo:clip=1", "ppo[clip=1.0,h=1000,seed=0]"),  # explicit: not the run's training clip
    ("ppo:rows=first", "ppo[rows=first,h=1000,seed=0]"),
    ("gaussian", "gaussian[sigma=0.0003,h=1000,seed=0]"),
    ("gaussian:3e-4", "gaussian[sigma=0.0003,h=1000,seed=0]"),
    ("gaussian:sigma=0.0003", "gaussian[sigma=0.0003,h=1000,seed=0]"),
    ("action:0.2", "action[sigma=0.2,h=1000,seed=0]"),
    ("action", "action[sigma=0.1,h=1000,seed=0]"),
    ("init_state:abs=0.01", "init_state[abs=0.01,h=1000,seed=0]"),
    ("init_state:scale=0.01", "init_state[scale=0.01,h=1000,seed=0]"),  # legacy: absolute
    ("init_state", "init_state[factor=1.0,abs=0.005,h=1000,seed=0]"),
    ("init_state:x0.5", "init_state[factor=0.5,abs=0.0025,h=1000,seed=0]"),
    ("init_state:factor=0.5", "init_state[factor=0.5,abs=0.0025,h=1000,seed=0]"),
    ("init_state:x3", "init_state[factor=3.0,abs=0.015,h=1000,seed=0]"),
])
def test_operator_id_is_canonical_and_round_trips(text, operator_id):
    spec = parse_operator(text, env="hopper")
    assert spec.operator_id == operator_id
    row = spec.operators_row()
    assert OperatorSpec.from_row(row["kind"], row["params"]) == spec  # the stored row rebuilds it
    assert OperatorSpec(spec.kind, tuple(reversed(spec.params)), spec.horizon, spec.seed) == spec  # any order


def test_init_state_factor_is_a_multiple_of_the_tasks_standard_reset_range():
    from retland.core.envs import standard_reset_noise

    for env in ("hopper", "ant"):
        spec = parse_operator("init_state:x0.5", env=env)
        assert rollout_perturbation(spec) == (0.0, 0.5 * standard_reset_noise(env))
    assert parse_operator("init_state:x2", env="ant").operator_id == "init_state[factor=2.0,abs=0.2,h=1000,seed=0]"
    # the absolute form and the legacy form do not depend on the env
    assert rollout_perturbation(parse_operator("init_state:abs=0.3")) == (0.0, 0.3)
    assert rollout_perturbation(OperatorSpec("init_state", (("scale", 0.005),))) == (0.0, 0.005)


def test_operator_id_holds_horizon_and_seed_and_params_json_everything():
    spec = parse_operator("gaussian:1e-5", horizon=300, seed=7)
    assert spec.operator_id == "gaussian[sigma=1e-05,h=300,seed=7]"
    row = spec.operators_row()
    assert row["kind"] == "gaussian"
    params = json.loads(row["params"])
    assert params["sigma"] == 1e-5 and params["horizon"] == 300 and params["seed"] == 7


def test_params_json_records_the_rollouts_discount(monkeypatch):
    """The γ an operators row records is the one rollouts discount with (rollout.GAMMA),
    not a copy of its value."""
    from retland.core import rollout

    spec = parse_operator("gaussian:1e-5", horizon=300, seed=7)
    assert json.loads(spec.params_json)["gamma"] == rollout.GAMMA
    monkeypatch.setattr(rollout, "GAMMA", 0.5)
    assert json.loads(spec.params_json)["gamma"] == 0.5


def test_init_state_default_is_the_tasks_reset_noise():
    assert parse_operator("init_state", env="hopper").operator_id == "init_state[factor=1.0,abs=0.005,h=1000,seed=0]"
    for text in ("init_state", "init_state:x0.5"):
        with pytest.raises(ValueError, match="needs the env"):
            parse_operator(text)
        check_operator(text)  # the syntax is fine for every env


def test_legacy_init_state_ids_still_read_as_absolute():
    """Rows stored before the units were named: params {"scale": A} rebuild the same id,
    and A is the absolute half-width, whatever the task."""
    params = json.dumps({"gamma": 0.99, "horizon": 1000, "key": "key_i = fold_in(PRNGKey(seed), i)",
                         "scale": 0.005, "seed": 0}, sort_keys=True)
    spec = OperatorSpec.from_row("init_state", params)
    assert spec.operator_id == "init_state[scale=0.005,h=1000,seed=0]"
    assert spec.params_json == params
    assert rollout_perturbation(spec) == (0.0, 0.005)


@pytest.mark.parametrize("text, needle", [
    ("adam", "unknown operator"),
    ("td3:1", "td3 takes no parameters"),
    ("td3:clip=0.1", "td3 takes no parameters"),
    ("sac:rows=first", "sac takes no parameters"),
    ("gaussian:abc", "not a number"),
    ("gaussian:-1", ">= 0"),
    ("gaussian:nan", "finite"),
    ("gaussian:0.1,0.2", "one value"),
    ("action:mu=0.1", "unknown action parameter 'mu'"),
    ("ppo:lr=0.1", "unknown ppo parameter 'lr'"),
    ("ppo:0.1", "named parameters only"),
    ("ppo:clip=0", "must be > 0"),
    ("ppo:clip=-0.5", "must be > 0"),
    ("ppo:clip=inf", "finite"),
    ("ppo:clip=abc", "not a number"),
    ("ppo:rows=last", "rows='last' must be one of random, first"),
    ("ppo:clip=0.1,clip=0.2", "clip is given twice"),
    ("ppo:clip=0.1,,rows=first", "empty parameter"),
    ("init_state:0.01", "say which unit"),
    ("init_state:abs=-0.1", ">= 0"),
    ("init_state:x-1", ">= 0"),
    ("init_state:xabc", "not a number"),
    ("init_state:sigma=0.1", "unknown init_state parameter 'sigma'"),
    ("init_state:x0.5,abs=0.1", "one value"),
])
def test_bad_operators_are_refused_with_one_line(text, needle):
    for check in (lambda: parse_operator(text, env="hopper"), lambda: check_operator(text)):
        with pytest.raises(ValueError, match=re.escape(needle)) as exc:
            check()
        assert "\n" not in str(exc.value)


@pytest.mark.parametrize("kind, params, needle", [
    ("td3", (("clip", 0.1),), "td3 takes no parameters"),
    ("ppo", (("clip", 0.0),), "must be > 0"),
    ("ppo", (("rows", "last"),), "must be one of random, first"),
    ("ppo", (("rows", 1.0),), "must be one of random, first"),
    ("gaussian", (("sigma", "big"),), "finite number"),
    ("gaussian", (), "needs sigma"),
    ("init_state", (("factor", 0.5),), "needs factor and abs"),
    ("init_state", (("abs", 0.1), ("scale", 0.1)), "needs factor and abs"),
])
def test_bad_specs_are_refused(kind, params, needle):
    with pytest.raises(ValueError, match=re.escape(needle)):
        OperatorSpec(kind, params)


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
    for text, expect in [("action:0.2", (0.2, 0.0)), ("init_state:abs=0.01", (0.0, 0.01)), ("td3", (0.0, 0.0)),
                         ("ppo:clip=0.1,rows=first", (0.0, 0.0))]:
        spec = parse_operator(text)
        assert rollout_perturbation(spec) == expect
    assert params_function(parse_operator("action:0.2")) == Identity()
    assert Identity()(theta, None, 0) is theta
    assert params_function(parse_operator("gaussian:0.1")) == Gaussian(0.1)  # equal ops share programs


def test_init_state_start_is_the_noisy_reset_from_the_rollout_key():
    from retland.core.envs import DEFAULT_VARIANT, make_env, reference_state

    spec = parse_operator("init_state:abs=0.01", seed=2)
    key_i = sample_key(spec.base_key, 4)
    env = make_env("hopper", "positional", 0.01, variant=DEFAULT_VARIANT)
    s = env.reset(rollout_key(key_i))
    s0 = reference_state("hopper", "positional", variant=DEFAULT_VARIANT)
    dq = np.asarray(s.pipeline_state.q - s0.pipeline_state.q)
    assert 0 < np.abs(dq).max() <= 0.01
    assert np.abs(np.asarray(s.pipeline_state.qd)).max() <= 0.01


def test_agent_operators_need_their_agent():
    with pytest.raises(ValueError, match="td3 agent"):
        params_function(parse_operator("td3"))
    assert OperatorSpec("td3").operator_id == "td3[h=1000,seed=0]"


# ---- the PPO operator's parameters -----------------------------------------------------

def _adam_state_with_moments(cfg, params, opt_state, batch):
    """Two training-like steps: a restored Adam state that is not the initial one, so a
    grad-norm clip shows through Adam's normalisation."""
    from retland.agents import ppo

    for _ in range(2):
        params, opt_state = ppo.grad_step(cfg, params, opt_state, jax.tree.map(lambda x: x[:8], batch))
    return params, opt_state


def _synthetic_batch(cfg, actor, key, rows: int, obs_size: int = 11):
    from retland.agents import ppo

    k = jax.random.split(key, 4)
    obs = jax.random.normal(k[0], (rows, obs_size))
    mean, log_std = ppo.distribution(cfg, actor, obs)
    action = mean + jax.random.normal(k[1], mean.shape)
    return ppo.Batch(obs, action, ppo.log_prob(mean, log_std, action), jax.random.normal(k[2], (rows,)),
                     3.0 * jax.random.normal(k[3], (rows,)))


def _hand_step(cfg, params, opt_state, batch, key, clip, first):
    """Adam (restored state) after clip_by_global_norm(clip) on rows [0, B/2) (first) or
    rows perm[:B/2] of a permutation from key; (new actor, global grad norm)."""
    import optax

    from retland.agents import ppo

    b = batch.obs.shape[0]
    idx = jnp.arange(b // 2) if first else jax.random.permutation(key, b)[: b // 2]
    mb = jax.tree.map(lambda x: x[idx], batch)
    grads = jax.grad(ppo.loss, argnums=1)(cfg, params, mb)
    tx = optax.chain(optax.clip_by_global_norm(clip), optax.adam(cfg.learning_rate, eps=cfg.adam_eps))
    updates, _ = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates)["actor"], optax.tree.norm(grads)


PPO_VARIANTS = (("ppo", None, "random"), ("ppo:clip=0.1", 0.1, "random"), ("ppo:rows=first", None, "first"),
                ("ppo:clip=0.1,rows=first", 0.1, "first"))


def test_ppo_clip_and_rows_change_the_step_and_match_hand_written_steps():
    """The operator's step on a collected batch (4 envs x 4 steps = 16 time-major rows,
    2 minibatches) for each spec's parameters: Adam after a grad-norm clip (the run's
    training clip 1 by default, 0.1 the authors') on a random minibatch (retland's) or
    rows [0, 8) = the first 2 of the 4 steps of every env (the authors')."""
    from retland.agents import ppo
    from retland.train.config import PPOConfig

    cfg = PPOConfig(num_envs=4, unroll_length=4, hidden=(8,))
    options = [parse_operator(text).params for text, _, _ in PPO_VARIANTS]
    assert [(dict(o).get("clip"), dict(o).get("rows", "random")) for o in options] == [v[1:] for v in PPO_VARIANTS]

    def everything(key):
        state = ppo.init(cfg, jax.random.PRNGKey(0), 11, 3)
        batch = _synthetic_batch(cfg, state.params["actor"], jax.random.PRNGKey(1), 16)
        params, opt_state = _adam_state_with_moments(cfg, state.params, state.opt_state, batch)
        got = [ppo.operator_step(cfg, params, opt_state, batch, key, **dict(o)) for o in options]
        want = [_hand_step(cfg, params, opt_state, batch, key, clip or cfg.max_grad_norm, rows == "first")
                for _, clip, rows in PPO_VARIANTS]
        return got, want

    got, want = jax.jit(everything)(jax.random.PRNGKey(2))
    flat = []
    for (text, _, _), g, (w, grad_norm) in zip(PPO_VARIANTS, got, want):
        assert float(grad_norm) > 1.0, text  # both clips bind here, so each shows
        for x, y in zip(jax.tree.leaves(g), jax.tree.leaves(w)):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7, err_msg=text)
        flat.append(np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(g)]))
    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.allclose(flat[i], flat[j]), (PPO_VARIANTS[i][0], PPO_VARIANTS[j][0])


def test_ppo_update_refuses_bad_parameters_before_any_rollout():
    from retland.agents import get_agent

    agent = get_agent("ppo")
    with pytest.raises(ValueError, match="rows='last'"):
        agent.update(None, jax.random.PRNGKey(0), rows="last")
    with pytest.raises(ValueError, match="must be > 0"):
        agent.update(None, jax.random.PRNGKey(0), clip=0.0)


@pytest.mark.slow
def test_ppo_operator_end_to_end_is_the_step_on_its_own_rollout():
    """Through the engine's params_function, `ppo` and the authors' `ppo:clip=0.1,rows=first`
    are `operator_step` on the batch of the rollout from fold_in(key_i)'s first half,
    with the key's second half choosing the random minibatch."""
    from retland.agents import get_agent, ppo
    from retland.core.envs import make_env
    from retland.train.config import PPOConfig, TrainConfig
    from retland.train.program import init_states

    cfg = TrainConfig(env="hopper", seeds=1, total_steps=32, checkpoints=(32,), eval_every=32, horizon=20,
                      agent=PPOConfig(num_envs=4, unroll_length=4, hidden=(8,)))
    ts = jax.tree.map(lambda x: x[0], init_states(cfg)[0])
    agent = get_agent("ppo", cfg)
    acfg = agent.config
    batch = _synthetic_batch(acfg, ts.agent.params["actor"], jax.random.PRNGKey(1), 16, ts.env_state.obs.shape[-1])
    params, opt_state = _adam_state_with_moments(acfg, ts.agent.params, ts.agent.opt_state, batch)
    op = ppo.OperatorState(params, opt_state, ts.env_state, ts.episode_step)
    specs = [parse_operator(text) for text in ("ppo", "ppo:clip=0.1,rows=first")]
    fns = [params_function(spec, agent) for spec in specs]

    def everything(op, key):
        k_collect, k_mb = jax.random.split(key)
        env = make_env(agent.env, agent.backend, variant=agent.variant)
        rollout_batch, _, _ = ppo._batch(acfg, op.params, env, agent.horizon, op.env_state, op.episode_step,
                                         k_collect)
        want = [ppo.operator_step(acfg, op.params, op.opt_state, rollout_batch, k_mb, **dict(s.params))
                for s in specs]
        return [f(op, key, 5) for f in fns], want

    got, want = jax.jit(everything)(op, sample_key(jax.random.PRNGKey(0), 5))
    for g, w in zip(got, want):
        for x, y in zip(jax.tree.leaves(g), jax.tree.leaves(w)):
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-7)
    assert not np.allclose(np.asarray(jax.tree.leaves(got[0])[0]), np.asarray(jax.tree.leaves(got[1])[0]))


def test_ppo_parameters_reach_the_update_through_the_spec():
    """As static keywords of agent.update, held by a frozen (hashable) AgentUpdate: equal
    operators share one compiled program, different ones do not."""
    from retland.agents import get_agent

    agent, td3_agent = get_agent("ppo"), get_agent("td3")
    assert params_function(parse_operator("ppo"), agent) == AgentUpdate(agent)
    authors = params_function(parse_operator("ppo:rows=first,clip=0.1"), agent)
    assert authors == AgentUpdate(agent, (("clip", 0.1), ("rows", "first")))
    assert hash(authors) == hash(params_function(parse_operator("ppo:clip=0.1,rows=first"), agent))
    assert authors != params_function(parse_operator("ppo:clip=0.1"), agent)
    assert params_function(parse_operator("td3"), td3_agent) == AgentUpdate(td3_agent)
    with pytest.raises(ValueError, match="needs a ppo agent"):
        params_function(parse_operator("ppo:clip=0.1"), td3_agent)
