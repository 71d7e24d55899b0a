"""2-D landscapes J(θ + a·d1 + b·d2): grid arithmetic, directions, storage, reruns.

Uses the tiny TD3 job of `analysis_jobs`; one 3 × 3 grid program (B = 8) is compiled.
"""
from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from analysis_jobs import tiny_job

from conftest import tree_digest
from retland.analyses import landscape as ls
from retland.config.settings import LandscapeRequest


def test_grid_arithmetic():
    ix, iy, a, b = ls.grid_points(-2.0, 2.0, 5)
    assert len(a) == 25 and list(ls.axis(-2, 2, 5)) == [-2, -1, 0, 1, 2]
    p = 3 * 5 + 1  # iy = 3, ix = 1
    assert (ix[p], iy[p], a[p], b[p]) == (1, 3, -1.0, 1.0)
    assert (a[12], b[12]) == (0.0, 0.0)  # the centre is θ
    assert ls.parse_range("-2:2") == (-2.0, 2.0) and ls.parse_zoom("1,0.25") == (1.0, 0.25)
    for bad in ("2:-2", "x:1", "-2"):
        with pytest.raises(ls.LandscapeError, match="--range"):
            ls.parse_range(bad)
    with pytest.raises(ls.LandscapeError, match="--zoom"):
        ls.parse_zoom("1,0")


def test_filter_normalization_matches_each_units_norm_and_zeroes_biases():
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    theta = {"Dense_0": {"kernel": jax.random.normal(k[0], (7, 5)) * 0.3, "bias": jnp.ones(5)},
             "Dense_1": {"kernel": jax.random.normal(k[1], (5, 2)) * 2.0, "bias": jnp.ones(2)}}
    d = ls.filter_normalize(ls.gaussian_direction(theta, k[2]), theta)
    for layer in theta:
        np.testing.assert_allclose(np.linalg.norm(d[layer]["kernel"], axis=0),
                                   np.linalg.norm(theta[layer]["kernel"], axis=0), rtol=1e-5)
        assert not np.allclose(d[layer]["kernel"], theta[layer]["kernel"])  # a direction, not θ
        assert np.all(np.asarray(d[layer]["bias"]) == 0)


def test_grid_params_are_theta_plus_a_d1_plus_b_d2():
    theta = {"w": jnp.arange(6.0).reshape(2, 3)}
    d1, d2 = {"w": jnp.ones((2, 3))}, {"w": jnp.full((2, 3), 10.0)}
    a, b = jnp.asarray([0.0, 1.0, -0.5]), jnp.asarray([0.0, 0.0, 2.0])
    make = jax.jit(lambda op, i: ls.GridParams(1, 0.0)(op, None, i))
    op = (theta, d1, d2, a, b, jax.random.PRNGKey(0))
    assert np.array_equal(make(op, 0)["w"], theta["w"])  # origin: θ exactly
    np.testing.assert_allclose(make(op, 1)["w"], theta["w"] + 1)
    np.testing.assert_allclose(make(op, 2)["w"], theta["w"] - 0.5 + 20)
    noisy = jax.jit(lambda op, i: ls.GridParams(2, 0.1)(op, None, i))
    # K = 2: sample k's noise is the same draw at every point
    e0 = noisy(op, 0)["w"] - make(op, 0)["w"]
    e2 = noisy(op, 2 * 2 + 0)["w"] - make(op, 2)["w"]
    np.testing.assert_allclose(e0, e2, atol=1e-5)
    assert not np.allclose(e0, noisy(op, 1)["w"] - make(op, 0)["w"])


@pytest.fixture(scope="module")
def grid():
    wh, res = tiny_job()
    req = LandscapeRequest(res.run_ids[0], 120, resolution=3, lo=-1.0, hi=1.0, zoom=(1.0, 0.5), samples_per_point=2,
                     sigma=0.05, seed=3)
    p = ls.plan(wh, req, batch_size=8)
    return wh, res, req, p, ls.run(wh, p, flush_seconds=0)


def test_update_directions_are_two_operator_samples(grid):
    from retland.purd.operators import parse_operator, sample_key
    from retland.purd.sampling import checkpoint_program
    from retland.train.checkpoints import load_checkpoint

    wh, res, req, p, _ = grid
    ck = load_checkpoint(wh, res.run_ids[0], 120)
    _, theta, d1, d2 = ls.compute_directions(req, ck, p.operator_id)
    program, op = checkpoint_program(parse_operator("td3", seed=3), ck)
    theta1 = jax.jit(program.make_params)(op, sample_key(jax.random.PRNGKey(3), 0), 0)
    for t, d, want in zip(jax.tree.leaves(theta), jax.tree.leaves(d1), jax.tree.leaves(theta1)):
        np.testing.assert_allclose(t + d, want, atol=1e-6)  # a = 1 is one update
    assert not np.allclose(jax.tree.leaves(d1)[0], jax.tree.leaves(d2)[0])
    # the saved npz gives the same directions back
    row = wh.query("SELECT directions_path, directions_hash FROM landscape_grids LIMIT 1").row(0)
    back = ls.load_directions(wh, row[0], theta)
    assert ls.directions_hash(*back) == row[1] == ls.directions_hash(theta, d1, d2)


def test_a_grid_stores_every_point_and_sample(grid):
    wh, _, req, p, results = grid
    assert [r.rows_written for r in results] == [18, 18]
    pts = wh.query("SELECT g.zoom, x.* FROM landscape_points x JOIN landscape_grids g USING (grid_id) "
                   "ORDER BY zoom, point, sample")
    assert sorted(set(pts.filter(pts["zoom"] == 0.5)["a"].to_list())) == [-0.5, 0.0, 0.5]
    vals = wh.query("SELECT * FROM landscape_values ORDER BY zoom, point")
    assert vals.height == 18 and set(vals["n"].to_list()) == {2}
    assert vals["mean"].std() > 0
    # the two zoom levels share the centre point's samples exactly (same θ, same noise, same B)
    centre = vals.filter((vals["a"] == 0) & (vals["b"] == 0))
    assert centre.height == 2 and centre["mean"][0] == centre["mean"][1]
    # each flush (every chunk: flush_seconds=0) is timed with its rows, under the grid's id
    t = wh.query("SELECT c.* FROM chunk_timings c JOIN landscape_grids g ON c.operator_id = g.grid_id "
                 "ORDER BY recorded_at")
    assert t["chunks"].sum() == 2 * 3 and set(t["table_name"].to_list()) == {"landscape_points"}
    assert set(t["env_steps"].to_list()) == {8 * p.horizon}
    rates = wh.query("SELECT operator_kind FROM sampling_throughput WHERE operator_kind = 'landscape'")
    assert rates.height == 1


def test_a_complete_grid_is_not_recomputed(grid):
    wh, _, req, p, _ = grid
    before = tree_digest(wh.root / "tables")
    again = ls.plan(wh, req)
    assert again.todo == 0 and [g.batch_size for g in again.grids] == [8, 8]
    assert [r.rows_written for r in ls.run(wh, again)] == [0, 0]
    assert tree_digest(wh.root / "tables") == before


def test_cli_refuses_bad_input_and_leaves_the_warehouse_untouched(capsys, monkeypatch):
    from retland.cli.main import main

    wh, res = tiny_job()
    before = tree_digest(wh.root)
    run = res.run_ids[0]
    for args, msg in [
        (["--run", run, "--step", "999"], "no checkpoint at step 999"),
        (["--run", "nope", "--step", "60"], "--run 'nope': no run id starts with it"),
        (["--run", run, "--step", "60", "--range=2:-2"], "--range"),
        (["--run", run, "--step", "60", "--grid", "1"], "--grid must be >= 2"),
        (["--run", run, "--step", "60", "--operator", "sac"], "needs a sac run"),
    ]:
        monkeypatch.setattr(sys, "argv", ["retland", "landscape", *args, "-w", str(wh.root)])
        with pytest.raises(SystemExit) as exc:
            main()
        err = capsys.readouterr().err
        assert exc.value.code == 2 and msg in err, (args, err)
    assert tree_digest(wh.root) == before
