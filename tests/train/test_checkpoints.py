"""Restoring a checkpoint without building its env (retland.train.checkpoints).

`load_checkpoint` restores the agent's part of the state onto `init`'s structure for the
env's dims, which the program store keeps (`retland.core.envs.known_env_dims`); the
whole TrainState (whose env state has brax's structure) and the replay are restored on
first use. On the shipped example checkpoint (TD3 hopper) both must give exactly what
restoring onto `abstract_seed_state` (which builds the env) gives."""
from __future__ import annotations

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from retland.core import envs, programs
from retland.train import checkpoints as ck
from retland.train import program as train_program
from retland.warehouse import Warehouse


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """(warehouse root, run id, step, program store) with the example checkpoint added
    and the env's dims and the agent state's shapes kept in the store."""
    from retland.shipped import add

    tmp = tmp_path_factory.mktemp("ckpt")
    store = tmp / "programs"
    with pytest.MonkeyPatch.context() as m:
        m.setenv(programs.ENV_VAR, str(store))
        run_id, step = add(Warehouse.open(tmp / "wh"), "td3-hopper")
        programs.reset_stats()
        ck.load_checkpoint(tmp / "wh", run_id, step)  # builds the env once for its dims: misses
        assert programs.stats()["value_misses"] == 2
    return tmp / "wh", run_id, step, store


@pytest.fixture
def stored(example, monkeypatch):
    monkeypatch.setenv(programs.ENV_VAR, str(example[3]))
    return example


def old_restore(root, run_id: str, step: int):
    """The state as load_checkpoint restored it before: onto abstract_seed_state."""
    wh = Warehouse.open(root, create=False)
    cfg = ck.run_config(ck.run_record(wh, run_id))
    row = wh.records("SELECT artifact_path, replay_size FROM checkpoints WHERE run_id = ? AND step = ?",
                     [run_id, step])[0]
    target, capacity = train_program.abstract_seed_state(cfg)
    state = ck.from_nested(ck._checkpointer().restore((wh.root / row["artifact_path"]).resolve()), target)
    return state, ck.load_replay(wh, run_id, row["replay_size"], capacity)


def assert_same_tree(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x, y, equal_nan=True)


def test_the_agent_state_is_restored_without_building_the_env(stored, monkeypatch):
    root, run_id, step, _ = stored

    def refuse(*args, **kwargs):
        raise AssertionError("load_checkpoint built the env")

    for module in (envs, train_program):
        for name in ("make_env", "env_dims", "reference_state", "reference_env"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(ck, "abstract_seed_state", refuse)
    programs.reset_stats()
    ckpt = ck.load_checkpoint(root, run_id, step)
    st = programs.stats()
    assert st["value_hits"] == 2 and st["value_misses"] == 0  # the dims and init's shapes came from the store
    monkeypatch.undo()

    state, replay = old_restore(root, run_id, step)
    assert_same_tree(ckpt.agent_state, state.agent)
    assert_same_tree(ckpt.state, state)  # restored on first use: leaf for leaf the old path's
    assert all(x is y for x, y in zip(jax.tree.leaves(ckpt.state.agent), jax.tree.leaves(ckpt.agent_state)))
    assert_same_tree(ckpt.replay, replay)
    assert ckpt.replay_size == step  # one TD3 transition per env step


def test_with_the_store_off_it_builds_the_env_and_restores_the_same(example, monkeypatch):
    root, run_id, step, _ = example
    monkeypatch.setenv(programs.ENV_VAR, "0")
    ckpt = ck.load_checkpoint(root, run_id, step)
    state, _ = old_restore(root, run_id, step)
    assert_same_tree(ckpt.agent_state, state.agent)
    assert_same_tree(ckpt.state, state)


def test_dims_that_do_not_fit_the_checkpoint_are_refused_naming_the_field(stored, monkeypatch):
    root, run_id, step, _ = stored
    obs_size, action_size = envs.known_env_dims("hopper", "brax0013", variant="paper")
    monkeypatch.setattr(envs, "known_env_dims", lambda *a, **k: (obs_size + 1, action_size))
    with pytest.raises(ValueError, match=rf"checkpoint .*@{step}: field agent/.*kernel has shape"):
        ck.load_checkpoint(root, run_id, step)


def test_a_missing_replay_prefix_is_refused_at_load(stored, tmp_path):
    import shutil

    root, run_id, step, _ = stored
    copy = tmp_path / "wh"
    shutil.copytree(root, copy)
    for seg in (copy / "artifacts" / "runs" / run_id / "replay").iterdir():
        shutil.rmtree(seg)
    with pytest.raises(ValueError, match=rf"replay of .*: only 0 rows stored, checkpoint needs {step}"):
        ck.load_checkpoint(copy, run_id, step)


def test_a_fresh_process_loads_it_without_importing_brax(stored):
    """What `retland sample` gains: with the dims stored, loading a checkpoint imports
    neither brax nor MuJoCo (seconds of imports) and builds no env."""
    root, run_id, step, store = stored
    code = ("import sys; from retland.train.checkpoints import load_checkpoint; "
            f"c = load_checkpoint({str(root)!r}, {run_id!r}, {step}); "
            "print(sorted(m for m in ('brax', 'mujoco') if m in sys.modules), c.agent_state.update_count)")
    env = dict(os.environ, **{programs.ENV_VAR: str(store)})
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[0] == "[]"
