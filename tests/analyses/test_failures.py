"""Failure pairs: selection rules, exact re-rolls of stored samples, the divergence view.

A gaussian(σ = 0.3) distribution of 32 samples (B = 8, H = 40-step episodes) of the tiny
TD3 job of `analysis_jobs` is spread enough to have LTP > 0 (on Brax 0.0.13's hopper a
perturbed tiny policy falls after 20 steps at the earliest, so shorter episodes have none).

The distribution is sampled through the per-step variant of the sampler's chunk program,
the program `failures.reroll` runs: the summary program is another compiled program, and
returns are chaotic in θ, so whether the two agree bit for bit depends on the CPU and
the XLA build. Here the re-roll runs the program that computed the stored rows, with
the same shapes, so its exactness is guaranteed and checkable on every machine.
"""
from __future__ import annotations


import numpy as np
import pytest
from analysis_jobs import sampled_job

from conftest import run_cli, tree_digest
from retland.analyses import failures as fl

H = 40  # episode length of the sampled distribution


def test_selection_rules_pick_the_lowest_qualifying_indices():
    idx = np.array([5, 0, 1, 2, 3, 4, 6])
    ret = np.array([100.0, 89.0, 91.0, 49.0, 110.0, 10.0, 50.0])
    # mean 100: success needs |R − 100| <= 10 (91, 110, 100; 89 is out)
    # mode 100: failure needs R < 50 (49, 10; 50 is out: strict)
    assert fl.select(ret, idx, mean=100.0, mode=100.0, pairs=5) == [(1, 2), (3, 4)]
    assert fl.select(ret, idx, mean=100.0, mode=100.0, pairs=1) == [(1, 2)]
    assert fl.select(ret, idx, mean=100.0, mode=10.0) == []


@pytest.fixture(scope="module")
def sampled():
    return sampled_job(60, H)


def test_a_failure_pair_is_rerolled_exactly_and_stored(sampled):
    wh, res, spec = sampled
    run = res.run_ids[0]
    target = fl.plan(wh, run, 60, spec.operator_id, pairs=2)
    assert target.ltp > 0 and target.chunk_size == 8 and len(target.pairs) >= 1
    records = fl.reroll(wh, target)  # raises unless every return reproduces bit for bit
    assert fl.store(wh, target, records) == 2 * H * len(target.pairs)
    assert fl.store(wh, target, records) == 0 and fl.missing_pairs(wh, target) == []
    s, f = target.pairs[0]
    assert abs(target.stored[s] - target.mean) <= 0.1 * abs(target.mean)
    assert target.stored[f] < 0.5 * target.mode
    traj = wh.query("SELECT * FROM trajectories WHERE pair_id = ? ORDER BY role, t",
                    [fl.pair_id(run, 60, spec.operator_id, s, f)])
    assert traj.height == 2 * H  # the first pair: success and failure, H steps each
    for role, i in (("success", s), ("failure", f)):
        g = traj.filter(traj["role"] == role)
        assert g["cumulative_return"][-1] == pytest.approx(target.stored[i], rel=1e-5)
        assert np.isfinite(g["torso_height"].to_numpy()).all()
    div = wh.query("SELECT * FROM failure_divergence WHERE pair_id = ?", [fl.pair_id(run, 60, spec.operator_id, s, f)])
    row = div.row(0, named=True)
    gap = np.abs(traj.filter(traj["role"] == "success")["cumulative_return"].to_numpy()
                 - traj.filter(traj["role"] == "failure")["cumulative_return"].to_numpy())
    g_s = np.abs(traj.filter(traj["role"] == "success")["cumulative_return"].to_numpy())
    close = np.flatnonzero(gap <= 0.05 * np.maximum(g_s, 1.0))
    if close.size and close[-1] == len(gap) - 1:
        assert row["diverge_step"] is None
    else:
        assert row["diverge_step"] == (close[-1] + 1 if close.size else 0)
    ended = traj.filter((traj["role"] == "failure") & traj["done"])
    assert row["failure_kind"] == ("termination" if ended.height else "low-reward")


def test_a_reroll_that_does_not_reproduce_writes_nothing(sampled):
    wh, res, spec = sampled
    target = fl.plan(wh, res.run_ids[0], 60, spec.operator_id, pairs=1)
    s = target.pairs[0][0]
    target.stored[s] += 1e-3
    before = tree_digest(wh.root / "tables")
    with pytest.raises(fl.FailureError, match=f"update index {s}: re-rolled return"):
        fl.reroll(wh, target)
    assert tree_digest(wh.root / "tables") == before


def test_a_checkpoint_without_failures_is_refused_with_the_reason(sampled, tmp_path, capsys, monkeypatch):
    import shutil

    from retland.warehouse import Warehouse

    shared, res, _ = sampled
    # A copy of the shared job's warehouse (other test files add distributions to it, in an
    # order that depends on how tests are spread over workers) without run 1's samples.
    from retland.warehouse import log

    shutil.copytree(shared.root, tmp_path / "wh")
    root = tmp_path / "wh"
    # remove run 1's samples and commit the removal (the commit log names every part read)
    gone = [p for p in log.committed_paths(log.read_log(root), "post_update_returns")
            if f"/run_id={res.run_ids[1]}/" in p]
    if gone:
        log.write_entry(root, add=[], remove=gone, command="test: drop run 1's samples")
    shutil.rmtree(root / "tables" / "post_update_returns" / f"run_id={res.run_ids[1]}", ignore_errors=True)
    wh = Warehouse.open(root, create=False)
    # a constant distribution: mode = its value, LTP = 0
    wh.append("post_update_returns", {"run_id": [res.run_ids[1]] * 4, "step": [60] * 4,
                                      "operator_id": [f"gaussian[sigma=0.3,h={H},seed=0]"] * 4,
                                      "update_index": [0, 1, 2, 3], "return": [5.0] * 4, "chunk_size": [8] * 4})
    before = tree_digest(wh.root)
    for args, msg in [
        (["--run", res.run_ids[1], "--step", "60"], "failure pairs need a checkpoint with LTP > 0"),
        (["--run", res.run_ids[1], "--step", "120"], "no post-update returns"),
        (["--run", res.run_ids[0], "--step", "60", "--operator", "sac"], "has no 'sac' distribution"),
        (["--run", res.run_ids[0], "--step", "60", "--pairs", "0"], "--pairs must be >= 1"),
    ]:
        code, _, err = run_cli(capsys, monkeypatch, "failures", *args, "-w", wh.root)
        assert code == 2 and msg in " ".join(err.split()), (args, err)
    assert tree_digest(wh.root) == before


def test_body_state_reads_the_pitch_in_the_variants_observation_layout():
    """brax: obs = q without x, obs[:, 1] is the pitch; paper: obs = [z, quaternion, ...]
    (hopper, walker2d) or [z, w, y, ...] (halfcheetah): the pitch is the quaternion's
    rotation about y, not its w."""
    theta = np.array([0.0, 0.3, -1.2, 2.5, -3.0])
    w, y = np.cos(theta / 2), np.sin(theta / 2)
    zeros = np.zeros_like(theta)
    z = np.full_like(theta, 1.25)
    joints = np.ones((len(theta), 3))
    planar = np.column_stack([z, w, zeros, y, zeros, joints])
    for env in ("hopper", "walker2d"):
        height, pitch = fl.body_state(env, planar, "paper")
        np.testing.assert_allclose(height, 1.25)
        np.testing.assert_allclose(pitch, theta, atol=1e-12)
        # -q is the same rotation
        np.testing.assert_allclose(fl.body_state(env, np.column_stack([z, -w, zeros, -y, zeros, joints]), "paper")[1],
                                   theta, atol=1e-12)
    np.testing.assert_allclose(fl.body_state("halfcheetah", np.column_stack([z, w, y, joints]), "paper")[1], theta,
                               atol=1e-12)
    brax_obs = np.column_stack([z, theta, joints])  # q without x: z, rooty angle, joints
    for variant in ("brax", None):  # None: runs stored before variants were brax's
        np.testing.assert_allclose(fl.body_state("hopper", brax_obs, variant)[1], theta)


def test_body_state_of_the_paper_hoppers_reference_state_is_upright():
    from retland.core.envs import reference_state

    for env in ("hopper", "walker2d"):
        obs = np.asarray(reference_state(env, "positional", variant="paper").obs, np.float64)[None]
        assert obs[0, 1] == pytest.approx(1.0)  # quaternion w: what obs[:, 1] read as a pitch before
        height, pitch = fl.body_state(env, obs, "paper")
        assert pitch[0] == pytest.approx(0.0, abs=1e-6) and height[0] > 1.0


# --- choosing checkpoints: top-ltp:K and random:K ------------------------------------------

def _cands(n: int) -> list:
    return [fl.Candidate("hopper" if i % 2 else "walker2d", f"run{i:02d}", 100 * (i + 1), "td3[h=1000,seed=0]",
                         0.01 * (i + 1)) for i in range(n)]


def test_selectors_parse_and_refuse_in_one_line():
    assert fl.parse_selector("random:10") == fl.Selector("random", 10)
    assert fl.parse_selector(" top-ltp:3 ").text == "top-ltp:3"
    for bad in ("best:3", "random:0", "random", "random:-1", "top-ltp:x", ""):
        with pytest.raises(ValueError, match="expected top-ltp:K or random:K with K >= 1"):
            fl.parse_selector(bad)


def test_random_order_is_seeded_uniform_and_independent_of_row_order():
    cands = _cands(12)
    rand = fl.parse_selector("random:3")
    (a,) = fl.order_candidates(cands, rand, seed=0)
    (b,) = fl.order_candidates(list(reversed(cands)), rand, seed=0)
    assert a == b and sorted(a, key=lambda c: c.run_id) == sorted(cands, key=lambda c: c.run_id)
    assert fl.order_candidates(cands, rand, seed=1)[0] != a
    # every candidate is drawn into the first 3 about 3/12 of the time: not biased to high LTP
    firsts = [c.run_id for s in range(400) for c in fl.order_candidates(cands, rand, seed=s)[0][:3]]
    counts = np.array([firsts.count(c.run_id) for c in cands])
    assert counts.min() > 60 and counts.max() < 140  # expected 100 each
    (top,) = fl.order_candidates(cands, fl.parse_selector("top-ltp:3"), seed=0)
    assert [c.run_id for c in top[:3]] == ["run11", "run10", "run09"]
    per_env = fl.order_candidates(cands, rand, seed=0, per_env=True)
    assert [{c.env for c in g} for g in per_env] == [{"hopper"}, {"walker2d"}]
    assert per_env == fl.order_candidates(list(reversed(cands)), rand, seed=0, per_env=True)


@pytest.fixture()
def several(sampled, tmp_path):
    """A copy of the shared warehouse with three more gaussian distributions with LTP > 0
    (one bimodal, without a sample near its mean) and one with mode <= 0."""
    import shutil

    from retland.warehouse import Warehouse

    shared, res, spec = sampled
    shutil.copytree(shared.root, tmp_path / "wh")
    wh = Warehouse.open(tmp_path / "wh", create=False)
    rows = {(res.run_ids[0], 120): [100.0] * 7 + [80.0, 80.0, 10.0],  # mean 87, mode 99.55: a pair, LTP 0.1
            (res.run_ids[1], 60): [100.0] * 6 + [80.0, 80.0, 10.0, 10.0],  # LTP 0.2
            (res.run_ids[1], 120): [100.0] * 6 + [10.0] * 4,  # mean 64: nothing within 10%, passed over
            (res.run_ids[0], 30): [-10.0] * 8 + [-40.0, -40.0]}  # mode <= 0: never a candidate
    for (run, step), r in rows.items():
        wh.append("post_update_returns", {"run_id": [run] * 10, "step": [step] * 10,
                                          "operator_id": [spec.operator_id] * 10, "update_index": list(range(10)),
                                          "return": r, "chunk_size": [8] * 10})
    return wh, res, spec


def test_choose_takes_k_with_a_pair_and_passes_over_the_rest(several):
    wh, res, spec = several
    found = fl.candidates(wh, operator="gaussian")
    assert len(found) == 4 and all(c.operator_id == spec.operator_id for c in found)
    assert (res.run_ids[0], 30) not in {(c.run_id, c.step) for c in found}  # mode <= 0
    plans, passed = fl.choose(wh, "top-ltp:4", operator="gaussian")
    assert [(p.run_id, p.step) for p in plans] == [(c.run_id, c.step) for c in sorted(
        found, key=lambda c: (-c.ltp, c.run_id, c.step)) if (c.run_id, c.step) != (res.run_ids[1], 120)]
    assert [(c.run_id, c.step) for c in passed] == [(res.run_ids[1], 120)]
    picks = {tuple((p.run_id, p.step) for p in fl.choose(wh, "random:2", seed=s, operator="gaussian")[0])
             for s in range(12)}
    assert all(len(set(p)) == 2 for p in picks) and len(picks) > 1  # two distinct, and the seed matters
    first = fl.choose(wh, "random:2", seed=3, operator="gaussian")[0]
    assert [(p.run_id, p.step) for p in first] == [(p.run_id, p.step) for p in
                                                   fl.choose(wh, "random:2", seed=3, operator="gaussian")[0]]
    with pytest.raises(fl.FailureError, match="no sampled checkpoint with LTP > 0"):
        fl.choose(wh, "random:2", env="ant")


def test_cli_chooses_random_checkpoints_and_refuses_bad_selectors(several, capsys, monkeypatch):

    wh, res, spec = several
    before = tree_digest(wh.root)
    for args, msg in [
        (["--checkpoints", "best:3"], "--checkpoints 'best:3': expected top-ltp:K or random:K with K >= 1"),
        (["--checkpoints", "random:0"], "expected top-ltp:K or random:K with K >= 1"),
        (["--checkpoints", "random:2", "--run", res.run_ids[0], "--step", "60"], "not both"),
        ([], "say which checkpoint"),
        (["--run", res.run_ids[0], "--step", "60", "--env", "hopper"], "--env only narrow a --checkpoints"),
        (["--checkpoints", "random:2", "--env", "ant"], "no sampled checkpoint with LTP > 0"),
        (["--checkpoints", "random:2", "--where", "nonsense ((("], "--where"),
        (["--checkpoints", "random:2", "--selection-seed", "-1"], "--selection-seed"),
    ]:
        code, _, err = run_cli(capsys, monkeypatch, "failures", *args, "-w", wh.root)
        assert code == 2 and msg in " ".join(err.split()), (args, err)
    assert tree_digest(wh.root) == before
    # the real distribution only (the hand-made ones were not sampled, so cannot be re-rolled)
    code, out, err = run_cli(capsys, monkeypatch, "failures", "--checkpoints", "random:1", "--operator", "gaussian",
                             "--where", f"step = 60 AND run_id = '{res.run_ids[0]}'", "--selection-seed", "7",
                             "--no-progress", "-w", wh.root)
    assert code == 0, err
    assert f"random:1 (seed 7): {res.run_ids[0]}@60" in " ".join(err.split())
    assert "failure pairs of" in out and "failure_kind" in " ".join(out.split())
    assert wh.query("SELECT count(DISTINCT pair_id) AS n FROM trajectories")["n"][0] >= 1
