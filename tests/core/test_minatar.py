"""MinAtar games through gymnax (retland.core.minatar) and PPO's categorical policy.

Every test but the missing-extra ones needs the `minatar` extra (gymnax) and is skipped
without it; `make test-minatar` (CI) installs it and runs them all. MinAtar programs are
small (no physics), so the compiled ones stay in seconds: tiny nets, short horizons.
"""
from __future__ import annotations

import csv
import io
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import run_cli
from retland.core import minatar

MISSING = "MinAtar games need the minatar extra: pip install 'retland[minatar]'"
GAME = "minatar-breakout"


@pytest.fixture(scope="module")
def gymnax():
    return pytest.importorskip("gymnax")


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


# ------------------------------------------------------------------ without the extra

def test_missing_extra_is_one_line(monkeypatch, capsys, tmp_path):
    from pydantic import ValidationError

    from retland.core.envs import check_env
    from retland.train.config import load_train_config

    monkeypatch.setitem(sys.modules, "gymnax", None)  # import fails, find_spec finds nothing
    from retland.config.registry import MISSING_MINATAR
    assert MISSING_MINATAR == MISSING
    with pytest.raises(minatar.MinAtarExtraMissing, match=r"^MinAtar games need the minatar extra: pip install "):
        check_env(GAME)
    with pytest.raises(ValidationError, match="need the minatar extra"):
        load_train_config(None, env=GAME, algo="ppo")
    code, _, err = run_cli(capsys, monkeypatch, "train", "--env", GAME, "--algo", "ppo", "-w", tmp_path / "wh")
    assert code == 2 and err.strip() == f"error: --env: {MISSING}"
    assert not (tmp_path / "wh").exists()


def test_retland_and_cli_do_not_import_gymnax():
    code = ("import sys, retland, retland.cli.main\n"
            "from retland.train.config import load_train_config\n"
            "load_train_config(None, env='hopper')\n"
            "print(sorted(m for m in sys.modules if m.startswith('gymnax')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ names, variants, config

def test_names_variants_and_config(gymnax):
    from pydantic import ValidationError

    from retland.config.agents import MINATAR_PPO
    from retland.core.envs import check_task, default_horizon, env_dims
    from retland.train.config import MINATAR_TOTAL_STEPS, load_train_config

    assert check_task(GAME, None, "minatar") == (GAME, "gymnax", "minatar")
    assert default_horizon(GAME) == 1000 and default_horizon("minatar-freeway") == 2500
    for game in minatar.MINATAR_TASKS:  # every game builds offline, with its own action count
        obs_size, actions = env_dims(game, variant="minatar")
        assert obs_size % 100 == 0 and 3 <= actions <= 6, game
    assert {minatar.paper_game(g) for g in minatar.MINATAR_TASKS} - {None} == {"Breakout", "Seaquest"}
    cfg = load_train_config(None, env=GAME, algo="ppo")
    assert (cfg.variant, cfg.backend, cfg.horizon, cfg.steps) == ("minatar", "gymnax", 1000, MINATAR_TOTAL_STEPS // 1024 * 1024)
    for key, value in MINATAR_PPO.items():
        assert getattr(cfg.agent, key) == value, key
    from retland.study.spec import TrainSpec  # a study's [[train]] entry plans the same 10M steps
    spec = TrainSpec(algo="ppo", env=GAME, seeds=5)
    assert spec.total == MINATAR_TOTAL_STEPS and spec.checkpoint_steps == cfg.checkpoint_steps
    # a given field wins over the MinAtar default; the config round-trips as stored
    cfg = load_train_config(None, env=GAME, algo="ppo", agent_fields={"num_envs": 4})
    assert cfg.agent.num_envs == 4 and cfg.agent.action_space == "discrete"
    assert type(cfg).from_json(cfg.to_json()) == cfg
    for kwargs, message in [({"algo": "td3"}, "only ppo trains on it"),
                            ({"algo": "ppo", "variant": "paper"}, "runs its own rules"),
                            ({"algo": "ppo", "backend": "mjx"}, "backend gymnax")]:
        with pytest.raises(ValidationError, match=message):
            load_train_config(None, env=GAME, **kwargs)
    with pytest.raises(ValidationError, match="does not fit hopper"):
        load_train_config(None, env="hopper", algo="ppo", agent_fields={"action_space": "discrete"})


def test_the_minatar_preset_plans_a6(gymnax, tmp_path, capsys, monkeypatch):
    code, out, err = run_cli(capsys, monkeypatch, "study", "minatar", "--plan", "-w", tmp_path / "wh")
    assert code == 0, err
    text = " ".join(out.split())
    # 2 games x 5 runs x 10M steps; 2 operators x 1000 samples x 1000 steps of 10 checkpoints per run
    assert text.count("│ train ppo minatar-") == 2 and "5 seeds x 10,000,000 steps" in text
    assert "200M" in text and not (tmp_path / "wh").exists()


def test_the_minatar_preset_without_the_extra_is_one_line_per_entry(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "gymnax", None)
    code, out, err = run_cli(capsys, monkeypatch, "study", "minatar", "--plan", "-w", tmp_path / "wh")
    assert code == 2 and "MinAtar games need the minatar extra" in err and "Traceback" not in err
    assert not (tmp_path / "wh").exists()


# ------------------------------------------------------------------ the env

def test_steps_are_gymnax_steps_and_s0_is_fixed(gymnax):
    import jax
    import jax.numpy as jnp

    from retland.core.envs import make_env, reference_state

    env = make_env(GAME, variant="minatar")
    genv, gparams = gymnax.make("Breakout-MinAtar")
    key = jax.random.PRNGKey(3)
    state = env.reset(key)
    k_reset, k_game = jax.random.split(key)
    gobs, gstate = genv.reset_env(k_reset, gparams)
    np.testing.assert_array_equal(np.asarray(state.obs), np.asarray(gobs, np.float32).reshape(-1))
    step, gstep = jax.jit(env.step), jax.jit(genv.step_env)
    k = k_game
    for t, action in enumerate([0, 1, 2, 2, 1, 0, 1, 1]):
        state = step(state, jnp.int32(action))
        k, sub = jax.random.split(k)
        gobs, gstate, greward, gdone, _ = gstep(sub, gstate, action, gparams)
        np.testing.assert_array_equal(np.asarray(state.obs), np.asarray(gobs, np.float32).reshape(-1))
        assert float(state.reward) == float(greward) and float(state.done) == float(gdone), t
    # s0: the reset with noise 0 ignores the key; the standard reset does not
    ref = make_env(GAME, reset_noise_scale=0.0, variant="minatar")
    a, b = ref.reset(jax.random.PRNGKey(1)), ref.reset(jax.random.PRNGKey(2))
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    s0 = reference_state(GAME, variant="minatar")
    np.testing.assert_array_equal(np.asarray(s0.key), np.asarray(a.key))
    keys = {tuple(np.asarray(env.reset(jax.random.PRNGKey(i)).key)) for i in range(4)}
    assert len(keys) == 4
    with pytest.raises(ValueError, match="outside"):
        minatar.MinAtarEnv(GAME, 1.5)


# ------------------------------------------------------------------ categorical PPO

def test_categorical_policy(gymnax):
    import jax
    import jax.numpy as jnp

    from retland.agents import ppo
    from retland.config.agents import PPOConfig

    cfg = PPOConfig(action_space="discrete", hidden=(8,), num_envs=2, unroll_length=4, num_minibatches=1)
    state = ppo.init(cfg, jax.random.PRNGKey(0), 12, 5)
    actor = state.params["actor"]
    assert "log_std" not in actor
    obs = jax.random.normal(jax.random.PRNGKey(1), (7, 12))
    logits = ppo.distribution(cfg, actor, obs)
    assert logits.shape == (7, 5)
    np.testing.assert_array_equal(np.asarray(ppo.policy(cfg, actor, obs)), np.argmax(np.asarray(logits), -1))
    assert ppo.policy(cfg, actor, obs).dtype == jnp.int32
    # log-probabilities of every action sum to one; sampled frequencies follow the softmax
    all_actions = jnp.arange(5)
    lp = jax.vmap(lambda a: ppo.categorical_log_prob(logits, jnp.full((7,), a)))(all_actions)
    np.testing.assert_allclose(np.exp(np.asarray(lp)).sum(0), 1.0, rtol=1e-5)
    sharp = jnp.array([[2.0, 0.0, -1.0, 0.5, 0.0]])
    draws = jax.random.categorical(jax.random.PRNGKey(2), sharp[0], shape=(20000,))
    freq = np.bincount(np.asarray(draws), minlength=5) / 20000
    np.testing.assert_allclose(freq, np.asarray(jax.nn.softmax(sharp[0])), atol=0.015)
    action, stored, logp = ppo.sample_action(cfg, actor, obs, jax.random.PRNGKey(3))
    np.testing.assert_array_equal(np.asarray(action), np.asarray(stored))
    np.testing.assert_allclose(np.asarray(logp), np.asarray(ppo.categorical_log_prob(logits, action)), rtol=1e-6)
    assert float(ppo.categorical_entropy(jnp.zeros((3, 5)))) == pytest.approx(np.log(5), rel=1e-6)


# ------------------------------------------------------------------ end to end (CLI)

@pytest.fixture(scope="module")
def trained(gymnax, tmp_path_factory):
    """Two PPO seeds on minatar-breakout, tiny (4 envs x 32 steps, 16-unit net), two
    checkpoints each."""
    from retland.train.job import train
    from retland.train.config import load_train_config
    from retland.warehouse import Warehouse

    wh = tmp_path_factory.mktemp("minatar") / "wh"
    cfg = load_train_config(None, env=GAME, algo="ppo", seeds=2, total_steps=512, checkpoints=(256, 512),
                            horizon=100, eval_every=256,
                            agent_fields={"num_envs": 4, "unroll_length": 32, "num_minibatches": 2,
                                          "update_epochs": 1, "hidden": (16,)})
    train(cfg, Warehouse(wh))
    return wh


def test_sample_stats_interpolate_report_and_bad_inputs(trained, tmp_path, capsys, monkeypatch):
    wh = trained
    code, out, err = run_cli(capsys, monkeypatch, "report", "--bootstrap", "0", "-o", tmp_path / "before.html",
                             "-w", wh)
    assert code == 0, err
    assert "Discrete control" not in (tmp_path / "before.html").read_text()  # no distributions yet: left out
    for op in ("ppo", "gaussian:3e-4"):
        code, out, err = run_cli(capsys, monkeypatch, "sample", "--operator", op, "--algo", "ppo", "--env", GAME,
                                 "--samples", "8", "--horizon", "100", "--no-progress", "-w", wh)
        assert code == 0, err
    code, out, err = run_cli(capsys, monkeypatch, "stats", "--format", "csv", "-w", wh)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert sorted({r["operator_id"].split("[")[0] for r in rows}) == ["gaussian", "ppo"]
    assert len(rows) == 8  # 2 seeds x 2 checkpoints x 2 operators
    for r in rows:
        assert (r["env"], r["variant"], r["n"]) == (GAME, "minatar", "8")
        mean = float(r["mean"])
        assert 0.0 <= mean <= 100.0 and mean == int(mean * 8) / 8  # integer scores, 100 steps
    # bad inputs: one line, exit 2, the warehouse untouched
    before = _files(wh)
    for args, message in [(("sample", "--operator", "action", "--algo", "ppo", "--env", GAME, "--samples", "4"),
                           "action noise perturbs continuous actions"),
                          (("train", "--env", GAME, "--algo", "sac", "--seeds", "1", "--total-steps", "1000"),
                           "only ppo trains on it"),
                          (("render", rows[0]["run_id"], "--step", rows[0]["step"], "--operator", "gaussian",
                            "--index", "0"), "no MuJoCo scene to draw")]:
        code, out, err = run_cli(capsys, monkeypatch, *args, "--no-progress", "-w", wh)
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert _files(wh) == before
    code, out, err = run_cli(capsys, monkeypatch, "interpolate", "--env", GAME, "--algo", "ppo",
                             "--pair-kind", "both", "--pairs-per-kind", "1", "--points", "3", "--samples", "2", "--horizon", "50",
                             "--format", "csv", "--no-progress", "-w", wh)
    assert code == 0, err
    assert "same-run" in out and "different-run" in out
    # the report's Discrete control section (Figs. 20-21) with the paper's LTP caveat beside the chart
    code, out, err = run_cli(capsys, monkeypatch, "report", "--bootstrap", "50", "-o", tmp_path / "r.html", "-w", wh)
    assert code == 0, err
    html = (tmp_path / "r.html").read_text()
    assert "Discrete control" in html and "discrete-std" in html and "discrete-distributions" in html
    assert "not a rich description" in html


def test_rollout_is_deterministic_and_ends_on_game_over(gymnax):
    import jax

    from retland.agents import get_agent, ppo
    from retland.core.envs import make_env, reference_state
    from retland.core.rollout import rollout
    env = make_env(GAME, reset_noise_scale=0.0, variant="minatar")
    s0 = reference_state(GAME, variant="minatar")
    agent = get_agent("ppo", _config())
    params = ppo.init(agent.config, jax.random.PRNGKey(0), env.observation_size, env.action_size).params["actor"]
    run = jax.jit(lambda p: rollout(env, agent.policy, p, s0, 400))
    a, b = run(params), run(params)
    assert float(a.ret) == float(b.ret)
    # an untrained Breakout paddle loses the ball: the episode ends on game over, before 400 steps
    assert bool(a.terminated) and int(a.episode_length) < 400


def _config():
    from retland.train.config import load_train_config

    return load_train_config(None, env=GAME, algo="ppo", agent_fields={"hidden": (16,)})


# ------------------------------------------------------------------ benchmarks/minatar_ppo.py

def test_minatar_ppo_benchmark_logs_stochastic_and_argmax_returns(gymnax):
    """The A.6 plateau check's tool, tiny: two logged windows of two PPO iterations. With a
    12-step horizon most episodes are cut, and the scores it sums are still the game's
    (whole bricks), not GAE's rewards (which add γ·V(s_T) at a cut)."""
    import pathlib

    script = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "minatar_ppo.py"
    run = lambda *a: subprocess.run([sys.executable, str(script), *a], capture_output=True, text=True,  # noqa: E731
                                    env=dict(os.environ, JAX_PLATFORMS="cpu"), timeout=600)
    proc = run("--total-steps", "4096", "--every", "2048", "--horizon", "12", "--set", "num_envs=4", "--set", "unroll_length=256",
               "--set", "num_minibatches=2", "--set", "update_epochs=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [dict(kv.split("=") for kv in line.split()) for line in proc.stdout.splitlines() if line.startswith("steps=")]
    assert [int(x["steps"]) for x in lines] == [2048, 4096]
    for x in lines:
        n, mean = int(x["n_eps"]), float(x["stoch_mean"])
        total = float(x["stoch_total"])
        assert n > 0 and total == round(total) >= 0 and abs(mean - total / n) < 0.006  # whole bricks
        assert float(x["greedy_s0"]) == int(float(x["greedy_s0"])) >= 0
        assert 0 < float(x["entropy"]) <= np.log(3) + 1e-3 and 1 / 3 <= float(x["top_p"]) <= 1
    bad = run("--set", "nonsense=1")
    assert bad.returncode != 0 and "PPOConfig field" in bad.stderr
