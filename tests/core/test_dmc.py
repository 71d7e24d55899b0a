"""DeepMind Control tasks through MuJoCo Playground (retland.core.dmc).

Every test but the missing-extra ones needs the `dmc` extra and is skipped without it.
MJX programs compile slowly on CPU (tens of seconds each), so the default tests trace
(eval_shape) or run reset eagerly; whatever compiles a step is marked slow.
"""
from __future__ import annotations

import csv
import io
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import run_cli
from retland.core import dmc

MISSING = "DeepMind Control tasks need the dmc extra: pip install 'retland[dmc]'"


@pytest.fixture
def playground():
    return pytest.importorskip("mujoco_playground")


# ------------------------------------------------------------------ without the extra

def test_missing_extra_is_one_line(monkeypatch, capsys, tmp_path):
    from pydantic import ValidationError

    from retland.core.envs import check_env
    from retland.train.config import load_train_config

    monkeypatch.setitem(sys.modules, "mujoco_playground", None)  # import fails, find_spec finds nothing
    assert dmc.MISSING_EXTRA == MISSING
    with pytest.raises(dmc.DMCExtraMissing, match=r"^DeepMind Control tasks need the dmc extra: pip install "):
        check_env("cheetah-run")
    with pytest.raises(ValidationError, match="need the dmc extra"):
        load_train_config(None, env="walker-walk")
    assert load_train_config(None, env="hopper").variant == "paper"  # brax tasks unaffected
    code, _, err = run_cli(capsys, monkeypatch, "train", "--env", "cheetah-run", "-w", tmp_path / "wh")
    assert code == 2 and err.strip() == f"error: --env: {MISSING}"
    assert not (tmp_path / "wh").exists()


def test_retland_and_cli_do_not_import_playground():
    code = ("import sys, retland, retland.cli.main\n"
            "from retland.train.config import load_train_config\n"
            "from retland.core.envs import check_env\n"
            "load_train_config(None, env='hopper'); check_env('hopper')\n"
            "print(sorted(m for m in sys.modules if m.startswith('mujoco_playground')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ names, variants, config

def test_names_variants_and_config(playground):
    from pydantic import ValidationError

    from retland.core.envs import ENVS, check_variant
    from retland.train.config import TrainConfig, load_train_config

    assert set(dmc.DMC_TASKS) <= set(ENVS) and {"ant", "halfcheetah", "hopper", "walker2d"} <= set(ENVS)
    assert check_variant("dmc", "cheetah-run") == "dmc"
    with pytest.raises(ValueError, match="variant 'paper' is a brax task's rules"):
        check_variant("paper", "cheetah-run")
    with pytest.raises(ValueError, match="variant 'dmc' is for the DeepMind Control tasks"):
        check_variant("dmc", "hopper")
    cfg = load_train_config(None, env="cheetah-run", algo="sac")
    assert (cfg.backend, cfg.variant, cfg.horizon) == ("mjx", "dmc", 1000)
    assert cfg.task.episode_length == 1000 and cfg.task.ctrl_dt == 0.01 and (cfg.task.reward_min,
                                                                              cfg.task.reward_max) == (0.0, 1.0)
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    assert load_train_config(None, env="hopper").task is None
    for bad, text in ((dict(env="cheetah-run", backend="positional"), "backend mjx, not 'positional'"),
                      (dict(env="walker2d", variant="dmc"), "walker2d takes paper or brax"),
                      (dict(env="Go1JoystickFlatTerrain"), "downloads from MuJoCo Menagerie"),
                      (dict(env="CheetahRun"), "retland calls it 'cheetah-run'")):
        with pytest.raises(ValidationError, match=text):
            load_train_config(None, **bad)


# ------------------------------------------------------------------ tasks load offline

def _check_tasks(playground, monkeypatch, traced):
    """Every task loads with the network blocked; its record is Playground's config;
    reset and step of the `traced` ones have env_dims' shapes (traced, not compiled)."""
    import jax
    import jax.numpy as jnp

    from retland.core.envs import env_dims, make_env, standard_reset_noise

    def no_network(*args, **kwargs):
        raise AssertionError("a DeepMind Control task tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(subprocess, "Popen", no_network)
    config = playground.dm_control_suite.get_default_config
    for name in dmc.DMC_TASKS:
        dmc._playground_task.__wrapped__(name)  # a fresh load, not the cached one
        env = make_env(name, variant="dmc")
        obs_size, action_size = env_dims(name, variant="dmc")
        assert action_size == env.task.mjx_model.nu
        info = dmc.task_info(name)
        assert info.episode_length == 1000 and info.ctrl_dt == config(dmc.playground_name(name)).ctrl_dt, name
        assert standard_reset_noise(name) == (0.0 if name.startswith("humanoid") else 1.0)
        if name in traced:
            state = jax.eval_shape(env.reset, jax.random.PRNGKey(0))
            nxt = jax.eval_shape(env.step, state, jnp.zeros(action_size))
            assert state.obs.shape == nxt.obs.shape == (obs_size,), name
            assert nxt.reward.shape == nxt.done.shape == (), name


def test_every_task_loads_offline(playground, monkeypatch):
    _check_tasks(playground, monkeypatch, traced=("cheetah-run", "walker-walk", "humanoid-run"))


@pytest.mark.slow
def test_every_task_steps_with_matching_shapes(playground, monkeypatch):
    _check_tasks(playground, monkeypatch, traced=dmc.DMC_TASKS)


@pytest.mark.slow  # eager MJX resets, ~80 s on 2 cores; `make test-dmc` (CI) runs it
def test_reset_noise_scale(playground):
    """Scale 1 is Playground's reset bit for bit; 0 is s0 for every key; 0.5 draws
    within half the ranges around the reference pose (hopper: knee reference 0.087)."""
    import jax

    from retland.core.envs import make_env

    name = "hopper-stand"
    env = make_env(name, variant="dmc")
    key = jax.random.PRNGKey(3)
    with jax.disable_jit():  # eager: no MJX compile
        ours = env.reset(key)
        theirs = env.task.reset(key)
        zero = make_env(name, reset_noise_scale=0.0, variant="dmc")
        s0, s0_other_key = zero.reset(jax.random.PRNGKey(11)), zero.reset(jax.random.PRNGKey(12))
        half = [make_env(name, reset_noise_scale=0.5, variant="dmc").reset(jax.random.PRNGKey(k)) for k in range(3)]
    assert np.array_equal(ours.obs, theirs.obs) and np.array_equal(ours.physics["qpos"], theirs.data.qpos)
    assert np.array_equal(s0.obs, s0_other_key.obs) and np.array_equal(s0.physics["qpos"], s0_other_key.physics["qpos"])
    ref = s0
    lo, hi = env.task.mj_model.jnt_range[3:].T
    knee_ref = np.clip(0.0, lo, hi)
    assert ref.physics["qpos"][3:] == pytest.approx(knee_ref) and knee_ref[2] == pytest.approx(np.deg2rad(5))
    q = np.stack([np.asarray(s.physics["qpos"]) for s in half])
    assert np.all(q[:, 3:] >= knee_ref + 0.5 * (lo - knee_ref) - 1e-6)
    assert np.all(q[:, 3:] <= knee_ref + 0.5 * (hi - knee_ref) + 1e-6)
    assert np.all(np.abs(q[:, 2]) <= np.pi / 2 + 1e-6) and np.ptp(q[:, 2]) > 0.1
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        make_env(name, reset_noise_scale=2.0, variant="dmc")


# ------------------------------------------------------------------ compiled (slow)

@pytest.mark.slow
def test_steps_match_playground(playground):
    """retland's compact state (physics fields only) steps exactly as Playground's full
    mjx.Data does."""
    import jax
    import jax.numpy as jnp

    from retland.core.envs import make_env

    env = make_env("hopper-hop", variant="dmc")
    actions = jax.random.uniform(jax.random.PRNGKey(1), (30, env.action_size), minval=-1, maxval=1)

    def run(reset, step):
        def f(key):
            def body(s, a):
                s = step(s, a)
                return s, (s.obs, s.reward)
            return jax.lax.scan(body, reset(key), actions)[1]
        return jax.jit(f)(jax.random.PRNGKey(5))

    ours, theirs = run(env.reset, env.step), run(env.task.reset, env.task.step)
    assert jnp.array_equal(ours[0], theirs[0]) and jnp.array_equal(ours[1], theirs[1])
    assert float(theirs[1].max()) <= 1.0 and float(theirs[1].min()) >= 0.0


@pytest.mark.slow
def test_train_sample_stats_cheetah(playground, tmp_path, capsys, monkeypatch):
    """End to end on cheetah-run: TD3 a few thousand steps (tiny nets, horizon 50), 16 td3
    and 16 gaussian post-update samples, statistics."""
    wh = tmp_path / "wh"
    (tmp_path / "cfg.toml").write_text('horizon = 50\neval_every = 1000\n[agent]\nhidden = [32, 32]\n'
                                       'batch_size = 32\nlearning_starts = 500\nbuffer_size = 2000\n')
    code, out, err = run_cli(capsys, monkeypatch, "train", "--algo", "td3", "--env", "cheetah-run", "--seeds", "1",
                             "--total-steps", "2000", "--checkpoints", "2000", "--config", tmp_path / "cfg.toml",
                             "--no-progress", "-w", wh)
    assert code == 0, err
    assert "dmc task rules" in out
    for op in ("td3", "gaussian"):
        code, out, err = run_cli(capsys, monkeypatch, "sample", "--operator", op, "--algo", "td3", "--env",
                                 "cheetah-run", "--samples", "16", "--horizon", "50", "--no-progress", "-w", wh)
        assert code == 0, err
    code, out, err = run_cli(capsys, monkeypatch, "stats", "--format", "csv", "-w", wh)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert sorted(r["operator_id"].split("[")[0] for r in rows) == ["gaussian", "td3"]
    for r in rows:
        assert (r["env"], r["variant"], r["n"]) == ("cheetah-run", "dmc", "16")
        assert 0.0 <= float(r["mean"]) <= 50.0  # 50 steps of rewards in [0, 1]
