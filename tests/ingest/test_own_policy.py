"""Your own policy (`retland.add_policy`) and your own update (`retland.sample_update`).

Tiny MLPs (11 -> 8 -> 3, `retland.policies:mlp_apply`) on hopper with brax's task
rules and a 30-step horizon. The module's warehouse holds two added policies of one
shape (A, B) and is shared by every test; the programs compiled (gaussian, the user
update, one landscape grid, one interpolation line; action and init_state in the slow
suite) are each built once.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, run_cli, tree_digest
from retland.agents import get_agent
from retland.agents.policy import PolicyAgent, PolicyConfig
from retland.ingest.own import add_policy, sample_update, update_spec
from retland.train.checkpoints import load_checkpoint
from retland.warehouse import Warehouse, WarehouseError

ENV, H, N, B = "hopper", 30, 16, 8
OBS, ACT = 11, 3
APPLY = "retland.policies:mlp_apply"


def mlp(key, sizes=(OBS, 8, ACT), scale=0.5):
    keys = jax.random.split(key, len(sizes) - 1)
    return [{"kernel": scale * jax.random.normal(k, (a, b)), "bias": jnp.zeros((b,))}
            for k, a, b in zip(keys, sizes, sizes[1:])]


def noisy_update(state, key):
    """A user update: θ + σ·ε, state = {"params": θ, "sigma": σ}."""
    leaves, treedef = jax.tree.flatten(state["params"])
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [x + state["sigma"] * jax.random.normal(k, x.shape, x.dtype)
                                        for x, k in zip(leaves, keys)])


def first_layer_only(state, key):
    return state["params"][:1]


@pytest.fixture(scope="module")
def added(tmp_path_factory):
    """(warehouse, run A, run B, params A, params B)."""
    wh = Warehouse.open(tmp_path_factory.mktemp("own") / "wh")
    pa, pb = mlp(jax.random.PRNGKey(1)), mlp(jax.random.PRNGKey(2))
    ra = add_policy(wh, env=ENV, apply=APPLY, params=pa, name="mine", horizon=H, apply_kwargs={"activation": "tanh"})
    rb = add_policy(wh, env=ENV, apply=APPLY, params=pb, name="other", step=7, seed=3, horizon=H,
                    apply_kwargs={"activation": "tanh"})
    return wh, ra, rb, pa, pb


def test_added_policy_round_trip(added):
    wh, ra, rb, pa, pb = added
    run = wh.query("SELECT * FROM runs WHERE run_id = ?", [ra]).row(0, named=True)
    assert (run["source"], run["algo"], run["env"], run["variant"], run["seed"]) == ("added", "mine", ENV, "brax", 0)
    assert ra.startswith("mine-hopper-") and ra.endswith("-s0") and rb.endswith("-s3")
    cfg = json.loads(run["config"])
    assert cfg["apply"] == APPLY and cfg["apply_kwargs"] == {"activation": "tanh"}
    assert (cfg["obs_size"], cfg["action_size"], cfg["horizon"]) == (OBS, ACT, H)
    assert cfg["params"]["list"][0] == {"dict": {"bias": {"array": {"shape": [8], "dtype": "float32"}},
                                                 "kernel": {"array": {"shape": [OBS, 8], "dtype": "float32"}}}}
    ck = load_checkpoint(wh, rb, 7)
    assert isinstance(ck.config, PolicyConfig) and ck.algo == "other" and ck.replay is None
    assert ck.artifact_path == f"artifacts/runs/{rb}/checkpoints/step_{7:010d}"
    assert jax.tree.structure(ck.state) == jax.tree.structure(pb)
    for got, want in zip(jax.tree.leaves(ck.state), jax.tree.leaves(pb)):
        assert got.dtype == want.dtype and np.array_equal(got, np.asarray(want))  # bit-identical
    agent = get_agent(ck.algo, ck.config)
    assert isinstance(agent, PolicyAgent)
    # one program for every policy of one function: the name is not part of the identity
    assert agent == get_agent("mine", load_checkpoint(wh, ra, 0).config) and hash(agent) == hash(
        get_agent("mine", load_checkpoint(wh, ra, 0).config))
    with pytest.raises(ValueError, match="no training update.*retland.sample_update"):
        agent.operator_state(ck)


def _main_function(params, obs):
    return obs[:ACT]


_main_function.__module__ = "__main__"


def _closure():
    def inner(params, obs):
        return obs[:ACT]
    return inner


def bad_nan(params, obs):
    return jnp.full((ACT,), jnp.nan)


@pytest.mark.parametrize("change, message", [
    (dict(apply="retland.nowhere:f"), "module 'retland.nowhere' cannot be imported"),
    (dict(apply="retland.policies:nope"), "module 'retland.policies' has no attribute 'nope'"),
    (dict(apply="retland.policies:ACTIVATIONS"), "ACTIVATIONS is a tuple, not a function"),
    (dict(apply="not a path"), "expected an import path 'package.module:function'"),
    (dict(apply=lambda p, o: o[:ACT]), "lambda or a nested function"),
    (dict(apply=_closure()), "lambda or a nested function"),
    (dict(apply=_main_function), "defined in __main__"),
    (dict(apply_kwargs={"activation": np.zeros(2)}), "apply_kwargs['activation'] is not JSON-serialisable"),
    (dict(params=mlp(jax.random.PRNGKey(0), (OBS + 1, 8, ACT))), "fails on these params and a zero observation of "
                                                                 "hopper's size 11: TypeError: dot_general"),
    (dict(params=mlp(jax.random.PRNGKey(0), (OBS, 8, ACT + 1))), "returns shape (4,) for one observation of hopper; "
                                                                 "the env takes actions of shape (3,)"),
    (dict(apply=bad_nan), "returns a non-finite action"),
    (dict(params={"w": np.zeros(3, np.int32)}), "params at w have dtype int32"),
    (dict(name="two words"), "name 'two words'"),
    (dict(name="td3"), "one of retland's trained algorithms"),
    (dict(env="pong"), "unknown env 'pong'"),
    (dict(variant="old"), "unknown task variant 'old'"),
    (dict(step=-1), "step must be a whole number"),
])
def test_add_policy_refuses_bad_input_and_writes_nothing(added, tmp_path, change, message):
    wh = added[0]
    before = tree_digest(wh.root)
    kw = dict(env=ENV, apply=APPLY, params=added[3], name="mine", horizon=H)
    kw.update(change)
    with pytest.raises((ValueError, WarehouseError)) as err:
        add_policy(wh, **kw)
    assert message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises((ValueError, WarehouseError)):
        add_policy(tmp_path / "new", **kw)
    assert tree_digest(wh.root) == before and not (tmp_path / "new").exists()


def _returns(wh, run, operator_id):
    return wh.query('SELECT update_index, "return", chunk_size FROM post_update_returns WHERE run_id = ? AND '
                    "operator_id = ? ORDER BY update_index", [run, operator_id])


@pytest.mark.parametrize("operator, operator_id", [
    ("gaussian:0.05", f"gaussian[sigma=0.05,h={H},seed=0]"),
    # the rollout perturbations reach an added run by the same path as gaussian: slow only
    pytest.param("action:0.2", f"action[sigma=0.2,h={H},seed=0]", marks=pytest.mark.slow),
    pytest.param("init_state:x4", f"init_state[factor=4.0,abs=0.02,h={H},seed=0]", marks=pytest.mark.slow),
])
def test_cli_samples_an_added_run(added, capsys, monkeypatch, operator, operator_id):
    wh, ra = added[0], added[1]
    code, out, err = run_cli(capsys, monkeypatch, "sample", "--algo", "mine", "--env", ENV, "--source", "added",
                             "--operator", operator, "--samples", N, "--horizon", H, "--batch-size", B,
                             "--no-progress", "-w", wh.root)
    assert code == 0, err
    rows = _returns(wh, ra, operator_id)
    assert rows["update_index"].to_list() == list(range(N)) and set(rows["chunk_size"]) == {B}
    assert rows["return"].n_unique() > 1  # the perturbation reaches the rollout
    stats = wh.query("SELECT n, source FROM distribution_stats JOIN runs USING (run_id) WHERE run_id = ? "
                     "AND operator_id = ?", [ra, operator_id])
    assert stats.rows() == [(N, "added")]
    code, out, err = run_cli(capsys, monkeypatch, "runs", "--source", "added", "-f", "csv", "-w", wh.root)
    assert code == 0 and ra in out, err


def test_cli_refuses_the_update_operator(added, capsys, monkeypatch):
    wh, ra = added[0], added[1]
    before = tree_digest(wh.root)
    code, _, err = run_cli(capsys, monkeypatch, "sample", "--run", ra, "--operator", "update:fn=a:b",
                           "--samples", N, "-w", wh.root)
    assert code == 2 and "retland.sample_update" in " ".join(err.split())
    code, _, err = run_cli(capsys, monkeypatch, "sample", "--run", ra, "--operator", "td3", "--samples", N,
                           "--horizon", H, "-w", wh.root)
    assert code == 2 and "needs a td3 checkpoint" in " ".join(err.split())
    assert tree_digest(wh.root) == before


def test_an_added_policy_named_like_an_algorithm_has_no_training_update(tmp_path, capsys, monkeypatch):
    """The own-policy example adds a policy named bc; the bc operator (a BC run's update) is refused on it."""
    wh = Warehouse.open(tmp_path / "wh")
    run = add_policy(wh, env=ENV, apply=APPLY, params=mlp(jax.random.PRNGKey(1)), name="bc", horizon=H,
                     apply_kwargs={"activation": "tanh"})
    before = tree_digest(wh.root)
    code, _, err = run_cli(capsys, monkeypatch, "sample", "--run", run, "--operator", "bc", "--samples", N,
                           "--horizon", H, "-w", wh.root)
    assert code == 2 and "is an added policy named bc, which has no training update" in " ".join(err.split()), err
    assert tree_digest(wh.root) == before


def test_sample_update_is_resumable_and_keyed_by_its_state(added, tmp_path):
    wh, ra, _, pa, _ = added
    state = {"params": pa, "sigma": jnp.float32(0.05)}
    spec = update_spec(noisy_update, state, H, 0)
    assert spec.operator_id == (f"update[fn=test_own_policy:noisy_update,state={spec.param('state')},"
                                f"h={H},seed=0]")
    assert update_spec("test_own_policy:noisy_update", {"params": pa, "sigma": jnp.float32(0.05)}, H, 0) == spec
    assert update_spec(noisy_update, {"params": pa, "sigma": jnp.float32(0.06)}, H, 0).operator_id != spec.operator_id
    # a copy of the warehouse before any update rows: the one-call reference
    fresh = Warehouse(tmp_path / "fresh")
    shutil.copytree(wh.root, fresh.root)
    first = sample_update(wh, ra, 0, update=noisy_update, state=state, n=N // 2, batch_size=B)
    assert first.operator_id == spec.operator_id and first.rows_written == N // 2
    part = _returns(wh, ra, spec.operator_id)
    more = sample_update(wh, ra, 0, update=noisy_update, state=state, n=N)
    assert more.rows_written == N // 2
    rows = _returns(wh, ra, spec.operator_id)
    assert rows.head(N // 2).equals(part) and rows["update_index"].to_list() == list(range(N))
    again = sample_update(wh, ra, 0, update=noisy_update, state=state, n=N)
    assert again.rows_written == 0
    once = sample_update(fresh, ra, 0, update="test_own_policy:noisy_update", state=state, n=N, batch_size=B)
    assert once.rows_written == N and _returns(fresh, ra, spec.operator_id).equals(rows)
    assert rows["return"].n_unique() > 1
    stats = wh.query("SELECT n FROM distribution_stats WHERE run_id = ? AND operator_id = ?", [ra, spec.operator_id])
    assert stats["n"].to_list() == [N]


def test_sample_update_refuses_bad_updates(added):
    wh, ra, _, pa, _ = added
    before = tree_digest(wh.root)
    state = {"params": pa, "sigma": jnp.float32(0.05)}
    for kw, message in [
        (dict(update=first_layer_only), "update's output has another structure than the run's params"),
        (dict(update="test_own_policy:nope"), "has no attribute 'nope'"),
        (dict(update=lambda s, k: s), "lambda or a nested function"),
        (dict(state={"sigma": 1.0}), "fails on this state: KeyError"),
        (dict(n=0), "n must be a whole number"),
    ]:
        args = dict(update=noisy_update, state=state, n=N)
        args.update(kw)
        with pytest.raises(ValueError) as err:
            sample_update(wh, ra, 0, **args)
        assert message in str(err.value), (kw, str(err.value))
    with pytest.raises((ValueError, WarehouseError), match="no run 'nope'"):
        sample_update(wh, "nope", 0, update=noisy_update, state=state, n=N)
    assert tree_digest(wh.root) == before


@pytest.mark.slow  # ~70 s on 2 cores: its own compile of the line program
def test_interpolation_between_added_policies(added, capsys, monkeypatch):
    wh, ra, rb, _, _ = added
    code, out, err = run_cli(capsys, monkeypatch, "interpolate", "--a", f"{ra}:0", "--b", f"{rb}:7",
                             "--points", 3, "--samples", 2, "--sigma", 0.01, "--horizon", H, "--no-progress",
                             "-w", wh.root)
    assert code == 0, err
    pts = wh.query("SELECT p.point, p.sample, p.lam FROM interpolation_points p JOIN interpolation_pairs q "
                   "USING (pair_id) WHERE q.run_a = ? AND q.run_b = ? ORDER BY point, sample", [ra, rb])
    assert pts.height == 6 and pts["lam"].to_list() == [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]
    # another shape, or another function, is refused with one line and nothing written
    wide = add_policy(wh, env=ENV, apply=APPLY, params=mlp(jax.random.PRNGKey(3), (OBS, 6, ACT)), name="wide",
                      horizon=H, apply_kwargs={"activation": "tanh"})
    relu = add_policy(wh, env=ENV, apply=APPLY, params=mlp(jax.random.PRNGKey(4)), name="relu", horizon=H,
                      apply_kwargs={"activation": "relu"})
    before = tree_digest(wh.root)
    for other, message in [(wide, "params[0]['bias'] is (6,) float32"), (relu, "apply functions differ")]:
        code, _, err = run_cli(capsys, monkeypatch, "interpolate", "--a", f"{ra}:0", "--b", f"{other}:0",
                               "--points", 3, "--samples", 2, "--horizon", H, "-w", wh.root)
        assert code == 2 and message in " ".join(err.split()), err
    assert tree_digest(wh.root) == before


@pytest.mark.slow  # ~75 s on 2 cores: its own compile of the grid program
def test_landscape_of_an_added_policy(added, capsys, monkeypatch):
    wh, ra = added[0], added[1]
    for directions in ("gaussian", "filter-normalized"):
        code, out, err = run_cli(capsys, monkeypatch, "landscape", "--run", ra, "--step", 0, "--directions",
                                 directions, "--grid", 3, "--range", "-0.5:0.5", "--horizon", H, "--no-progress",
                                 "-w", wh.root)
        assert code == 0, err
    grids = wh.query("SELECT g.directions, count(*) AS n, count(DISTINCT p.\"return\") AS distinct_returns "
                     "FROM landscape_points p JOIN landscape_grids g USING (grid_id) WHERE g.run_id = ? "
                     "GROUP BY ALL ORDER BY 1", [ra])
    assert grids["directions"].to_list() == ["filter-normalized", "gaussian"] and grids["n"].to_list() == [9, 9]
    assert min(grids["distinct_returns"]) > 1
    # the default update directions need a training update, which an added run lacks
    code, _, err = run_cli(capsys, monkeypatch, "landscape", "--run", ra, "--step", 0, "--grid", 3,
                           "-w", wh.root)
    assert code == 2 and "has no training update" in " ".join(err.split())


def test_import_paths_resolve_in_this_module():
    # the update functions above are importable as test_own_policy:<name> (tests/ is on sys.path)
    assert sys.modules["test_own_policy"].noisy_update is noisy_update


@pytest.mark.slow
def test_the_example_runs(tmp_path):
    """examples/own_policy.py end to end, small: train, add, two distributions, stats."""
    script = REPO / "examples" / "own_policy.py"
    out = subprocess.run([sys.executable, str(script), "-w", str(tmp_path / "wh"), "--train-steps", "20",
                          "--samples", "8", "--horizon", "20"], capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "update[fn=own_policy:adam_update" in out.stdout and "gaussian[sigma=0.003,h=20" in out.stdout
    wh = Warehouse.open(tmp_path / "wh", create=False)
    assert wh.query("SELECT count(*) AS n FROM post_update_returns")["n"][0] == 16
