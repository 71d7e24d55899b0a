"""Frames of re-rolled samples (retland render, failures --frames): scenes of every brax
task in both variants, exact re-rolls drawn into a filmstrip and an animation, table
`renders`, bad input (one line, exit 2, warehouse untouched).

The distribution is sampled through the per-step chunk program, the one the re-roll runs
(as tests/analyses/test_failures.py does), so the re-roll is exact on every machine. Drawing needs
an OpenGL backend for MuJoCo (EGL/OSMesa on software Mesa: .ci/run installs it); where
none works the drawing tests say so and skip, and the note the report prints is tested."""
from __future__ import annotations


import numpy as np
import pytest
from analysis_jobs import sampled_job

from conftest import run_cli, tree_digest
from retland.core import render as core_render

H = 40


def _need_renderer():
    if core_render.available() is None:
        pytest.skip(core_render.unavailable_reason())


# make test draws the paper hopper (the sampled job's task); the other three reference
# poses are slow-marked: building and resetting each env takes 10-40 s on a loaded 2-core machine
@pytest.mark.parametrize("env, variant", [
    ("hopper", "paper"),
    pytest.param("walker2d", "paper", marks=pytest.mark.slow),
    pytest.param("hopper", "brax", marks=pytest.mark.slow),
    pytest.param("walker2d", "brax", marks=pytest.mark.slow),
])
def test_reference_pose_of_every_variant_is_drawn(env, variant):
    from retland.core import envs
    from retland.core.rollout import pose

    _need_renderer()
    s0 = envs.reference_state(env, variant=variant)
    sc = core_render.scene(env, envs.default_backend(env, variant), variant)
    frames = core_render.draw(sc, np.asarray(pose(s0))[None], 64, 48)
    assert frames.shape == (1, 48, 64, 3) and frames.dtype == np.uint8
    assert frames.std() > 5  # not blank: floor, sky and the robot


@pytest.mark.parametrize("env", ["ant", "halfcheetah", "hopper", "walker2d"])
def test_paper_scene_puts_each_body_at_its_pose(env):
    """The qpos of Brax 0.0.13's scene: [pos, quat] of every body but the floor, in order
    (the default pose, computed without tracing a reset)."""
    from types import SimpleNamespace

    from retland.core.brax0013.tasks import _system
    from retland.core.rollout import pose

    sc = core_render.scene(env, "brax0013", "paper")
    qp = _system(env).default_qp()
    q = sc.qpos(np.asarray(pose(SimpleNamespace(pipeline_state=qp)))[None])[0]
    nb = len(sc.bodies)
    assert q.shape == (7 * nb,) and sc.nq == 7 * nb and nb == sc.nb - 1  # the floor is not a body
    for j, i in enumerate(sc.bodies):
        np.testing.assert_allclose(q[7 * j: 7 * j + 3], np.asarray(qp.pos[i]))
        np.testing.assert_allclose(q[7 * j + 3: 7 * j + 7], np.asarray(qp.rot[i]))
    with pytest.raises(ValueError, match="expected 7"):
        sc.qpos(np.zeros((1, 5)))


def test_filmstrip_steps_end_at_termination_and_hold_the_divergence():
    from retland.analyses.render import frame_steps

    assert frame_steps(1000, 50, False) == list(range(0, 1001, 50))
    assert frame_steps(123, 50, True, (77,)) == [0, 50, 77, 100, 123]
    assert frame_steps(123, 50, True, (500,)) == [0, 50, 100, 123]


@pytest.fixture(scope="module")
def sampled():
    return sampled_job(120, H)


def test_render_draws_the_failure_pair(sampled):
    from PIL import Image

    from retland.analyses import render as rd

    _need_renderer()
    wh, res, spec = sampled
    run = res.run_ids[0]
    req = rd.RenderRequest(run, 120, spec.operator_id, every=10, width=64, height=48)
    rows = rd.render(wh, req)
    assert [r["role"] for r in rows] == ["success", "failure"]
    assert rd.render(wh, req) == []  # stored: not drawn again
    success, failure = rows
    assert failure["terminated"] and failure["episode_length"] <= H
    assert success["stored_return"] > failure["stored_return"]
    assert failure["frame_steps"].split(",")[-1] == str(failure["episode_length"])  # ends at its termination
    div = wh.query("SELECT diverge_step FROM failure_divergence WHERE pair_id = ?", [failure["pair_id"]]).item()
    assert failure["diverge_step"] == success["diverge_step"] == div
    if div is not None and div <= failure["episode_length"]:
        assert str(div) in failure["frame_steps"].split(",")
    for r in rows:
        strip = np.asarray(Image.open(wh.root / r["filmstrip_path"]).convert("RGB"))
        n = len(r["frame_steps"].split(","))
        assert strip.shape[1] == n * 64 + (n - 1) * 4 and strip.std() > 5
        anim = Image.open(wh.root / r["animation_path"])
        assert anim.format == "WEBP" and anim.n_frames > 1
        poses = np.load(wh.root / r["poses_path"])["pose"]
        assert poses.shape[0] == H + 1 and np.isfinite(poses).all()
    # the frames move: the first and last frame of the failing strip differ
    view = wh.query("SELECT role, settings FROM failure_renders WHERE pair_id = ?", [failure["pair_id"]])
    assert sorted(view["role"].to_list()) == ["failure", "success"]


def test_render_cli_an_index_and_its_output_copy(sampled, capsys, monkeypatch, tmp_path):
    _need_renderer()
    wh, res, spec = sampled
    run = res.run_ids[0]
    code, out, err = run_cli(capsys, monkeypatch, "render", run, "--step", 120, "--index", 3, "--operator",
                             "gaussian", "--every", 20, "--width", 48, "--height", 36, "--no-animation",
                             "-o", tmp_path / "out", "--no-progress", "-w", wh.root)
    assert code == 0, err
    assert "sample 3:" in out and spec.operator_id in err  # brackets printed, not read as markup
    png = tmp_path / "out" / f"{run}-120-3.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    row = wh.query("SELECT * FROM renders WHERE update_index = 3 AND width = 48").to_dicts()
    assert len(row) == 1 and row[0]["animation_path"] is None and row[0]["pair_id"] is None


def test_failures_draws_each_pair_it_rerolls(sampled, capsys, monkeypatch):
    """`retland failures` draws its pairs (default settings), reusing its re-roll; pairs drawn
    before are not drawn again; --no-frames draws nothing."""
    _need_renderer()
    wh, res, spec = sampled
    run = res.run_ids[0]
    args = ["failures", "--run", run, "--step", 120, "--operator", spec.operator_id, "--pairs", 2, "--no-progress",
            "-w", wh.root]
    code, out, err = run_cli(capsys, monkeypatch, *args)
    assert code == 0, err
    pairs = wh.query("SELECT DISTINCT pair_id FROM trajectories WHERE run_id = ? AND step = 120", [run])["pair_id"]
    drawn = wh.query("SELECT pair_id, role, frame_every, width, filmstrip_path FROM failure_renders "
                     "WHERE run_id = ? AND step = 120 AND width = 240", [run])
    assert drawn.height == 2 * len(pairs) and set(drawn["pair_id"]) == set(pairs)
    assert set(drawn["frame_every"]) == {50}
    assert all((wh.root / p).stat().st_size > 0 for p in drawn["filmstrip_path"])
    before = tree_digest(wh.root)
    code, _, err = run_cli(capsys, monkeypatch, *args)
    assert code == 0 and tree_digest(wh.root).keys() == before.keys(), err  # nothing new


@pytest.mark.parametrize("args, says", [
    (["--step", 61], "step 61"),
    (["--step", 120, "--index", 999], "no sample 999"),
    (["--step", 120, "--index", -1], "--index must be >= 0"),
    (["--step", 120, "--every", 0], "--every must be >= 1"),
    (["--step", 120, "--width", 5000], "width must be in"),
    (["--step", 120, "--operator", "td3"], "no 'td3' distribution"),
])
def test_render_refuses_bad_input_in_one_line(sampled, capsys, monkeypatch, args, says):
    wh, res, spec = sampled
    before = tree_digest(wh.root)
    code, out, err = run_cli(capsys, monkeypatch, "render", res.run_ids[0], *args, "--no-progress", "-w", wh.root)
    assert code == 2 and says in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert tree_digest(wh.root) == before


def test_render_refuses_an_unknown_run(sampled, capsys, monkeypatch):
    wh, _, _ = sampled
    before = tree_digest(wh.root)
    code, _, err = run_cli(capsys, monkeypatch, "render", "no-such-run", "--step", 120, "-w", wh.root)
    assert code == 2 and len(err.strip().splitlines()) == 1 and tree_digest(wh.root) == before


def test_no_renderer_is_one_line_and_nothing_written(sampled, capsys, monkeypatch):
    """Where no OpenGL backend works, `render` refuses in one line and `failures` stores its
    trajectories with a one-line note instead of frames."""
    wh, res, spec = sampled
    monkeypatch.setattr(core_render, "_probe", lambda: (None, "egl: no display"))
    before = tree_digest(wh.root)
    code, _, err = run_cli(capsys, monkeypatch, "render", res.run_ids[0], "--step", 120, "--index", 5,
                           "--every", 7, "-w", wh.root)
    assert code == 2 and "no OpenGL renderer" in err and len(err.strip().splitlines()) == 1, err
    assert tree_digest(wh.root) == before
    # what `failures` does after storing its trajectories: one line instead of frames
    from retland.analyses import failures as fl
    from retland.analyses import render as rd

    fp = fl.plan(wh, res.run_ids[0], 120, spec.operator_id, pairs=1)
    rows, note = rd.draw_failure_pairs(wh, fp, every=7)
    assert rows == [] and note.startswith("no frames drawn: no OpenGL renderer") and "\n" not in note
    assert tree_digest(wh.root) == before


@pytest.mark.slow  # compiles a brax rollout (a minute on 2 cores)
@pytest.mark.parametrize("env", ["hopper", "walker2d"])
def test_brax_variant_rollout_poses_are_drawn_and_move(env):
    """The brax variant's per-step poses (pipeline q) drawn along a rollout: frames change."""
    import jax
    import jax.numpy as jnp

    from retland.core import envs
    from retland.core.rollout import rollout

    _need_renderer()
    e = envs.reference_env(env, variant="brax")
    s0 = envs.reference_state(env, variant="brax")
    w = 0.5 * jax.random.normal(jax.random.PRNGKey(1), (e.observation_size, e.action_size))
    _, steps = jax.jit(lambda w: rollout(e, lambda p, o: jnp.tanh(o @ p), w, s0, 30, per_step=True))(w)
    sc = core_render.scene(env, envs.default_backend(env, "brax"), "brax")
    poses = np.asarray(steps.pose)[[0, 14, 29]]
    frames = core_render.draw(sc, poses, 64, 48).astype(np.float64)
    assert all(f.std() > 5 for f in frames)
    assert np.abs(frames[0] - frames[-1]).mean() > 0.5  # the robot moved
