"""Interpolation θ(λ) = (1−λ)·θa + λ·θb and the below-threshold proportion (BTP).

The tiny TD3 job of `analysis_jobs` (2 seeds, 20-step episodes, checkpoints at 60 and
120) is trained once per process; every pair is evaluated with the same chunk size and an
8-step horizon, so one compiled chunk program serves the module.
"""
from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import polars as pl
import pytest
from analysis_jobs import tiny_job

from conftest import tree_digest
from retland import stats
from retland.analyses import interpolation as ip
from retland.purd.operators import Gaussian, sample_key
from retland.settings import InterpolationSettings

# noise: see the unit tests. Horizon 8, not the runs' 20: returns are chaotic in θ and
# two compiled programs round differently, so the endpoint check below compares returns
# of two programs, which agree closely only over a short horizon (measured on the tiny
# job: a 1e-7 relative perturbation of θ moves J by <= 2e-5 over 10 steps, but by 0.14
# over 20 steps for the step-120 checkpoint, whose rollout passes a contact near step 12).
H = 8
SETTINGS = InterpolationSettings(points=5, samples=1, sigma=0.0, seed=7, horizon=H)
B = 8
# Measured over 8 steps: endpoints 5e-7 relative from the sampler's returns of the same
# θ, the two checkpoints 0.56% apart; 1e-4 leaves 200x for other CPUs and XLA builds.
ENDPOINT_RTOL = 1e-4


@pytest.fixture(scope="module")
def job():
    return tiny_job()


def actor(wh, run_id, step):
    return ip._actor(wh, run_id, step)[1]


def leaves_equal(a, b) -> bool:
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def test_lambda_grid_has_exact_endpoints():
    lam = ip.lambdas(100)
    assert lam[0] == 0.0 and lam[-1] == 1.0 and lam.shape == (100,)
    with pytest.raises(ip.InterpolationError, match="--points must be >= 2"):
        ip.lambdas(1)


def test_endpoints_are_the_endpoint_policies_exactly_and_noise_is_common_across_lambda(job):
    wh, res = job
    ta, tb = actor(wh, res.run_ids[0], 60), actor(wh, res.run_ids[1], 60)
    lams = jnp.asarray(ip.lambdas(5))
    make = jax.jit(lambda op, i: ip.LineParams(3, 0.0)(op, None, i))
    op = (ta, tb, lams, jax.random.PRNGKey(7))
    assert leaves_equal(make(op, 0 * 3 + 2), ta)  # λ = 0
    assert leaves_equal(make(op, 4 * 3 + 1), tb)  # λ = 1
    assert not leaves_equal(make(op, 2 * 3), ta)

    noisy = jax.jit(lambda op, i: ip.LineParams(3, 0.05)(op, None, i))
    # λ = 0, sample k is gaussian(σ) sample k of checkpoint a (the sampler's key). Equal
    # to float32 rounding, not bit for bit: XLA fuses the normal draw differently here.
    gaussian = jax.jit(Gaussian(0.05))
    for k in range(3):
        want = gaussian(ta, sample_key(jax.random.PRNGKey(7), k), k)
        for x, y in zip(jax.tree.leaves(noisy(op, k)), jax.tree.leaves(want)):
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    # common random numbers: θ(λ, k) − θ(λ) is the same draw at every λ, another per k
    eps = [[jax.tree.map(jnp.subtract, noisy(op, p * 3 + k), make(op, p * 3 + k)) for k in range(3)]
           for p in range(5)]
    for p in range(1, 5):
        for k in range(3):
            for x, y in zip(jax.tree.leaves(eps[p][k]), jax.tree.leaves(eps[0][k])):
                np.testing.assert_allclose(x, y, atol=1e-6)
    assert not np.allclose(jax.tree.leaves(eps[0][0])[0], jax.tree.leaves(eps[0][1])[0], atol=1e-3)


def test_pairs_from_the_warehouse(job):
    wh, res = job
    s0, s1 = res.run_ids
    same = ip.select_pairs(wh, "hopper", "td3", "same-run")
    assert same == [ip.Pair(s0, 60, s0, 120, "same-run"), ip.Pair(s1, 60, s1, 120, "same-run")]
    diff = ip.select_pairs(wh, "hopper", "td3", "different-run")
    assert diff == [ip.Pair(s0, 60, s1, 60, "different-run"), ip.Pair(s0, 120, s1, 120, "different-run")]
    assert len(ip.select_pairs(wh, "hopper", "td3", "both", max_pairs=1)) == 2
    with pytest.raises(ip.InterpolationError, match="no td3 checkpoints of walker2d"):
        ip.select_pairs(wh, "walker2d", "td3", "both")
    assert ip.explicit_pair(f"{s0}:60", f"{s1}:120").kind == "different-run"


@pytest.fixture(scope="module")
def evaluated(job):
    wh, res = job
    pairs = ip.select_pairs(wh, "hopper", "td3", "both", max_pairs=1)
    plans = ip.plan(wh, pairs, SETTINGS, batch_size=B)
    out = [ip.run(wh, p, SETTINGS, flush_seconds=0) for p in plans]
    return wh, res, plans, out


def test_a_pair_stores_every_point_and_its_endpoints_are_the_checkpoints_policies(evaluated):
    from retland.purd.operators import parse_operator
    from retland.purd.sampling import plan_distribution, sample_checkpoint

    wh, res, plans, out = evaluated
    assert [r.rows_written for r in out] == [5, 5]
    pair = plans[0].pair
    assert pair.kind == "same-run" and (pair.step_a, pair.step_b) == (60, 120)
    rows = wh.query("SELECT * FROM interpolation_points WHERE pair_id = ? ORDER BY point, sample", [plans[0].pair_id])
    assert rows["lam"].to_list() == pytest.approx([0, .25, .5, .75, 1])
    assert rows["return"].n_unique() > 1
    assert (rows["episode_length"] <= H).all()
    # J(θ(0)) and J(θ(1)) are the checkpoints' own returns (`action:0` rolls out θ itself,
    # in chunks of the same B). θ(0) = θa bit for bit (unit test above), but the sampler's
    # program is another compiled program and may round the rollout differently (over 20
    # steps: 20.33 here against 20.47 there for the step-120 checkpoint), so: equal within
    # ENDPOINT_RTOL over H steps, and each endpoint is told from the other checkpoint.
    spec = parse_operator("action:0", horizon=H)
    own = []
    for step in (60, 120):
        sample_checkpoint(wh, plan_distribution(wh, pair.run_a, step, spec, 1, batch_size=B), flush_seconds=0)
        own.append(wh.query("SELECT \"return\" FROM post_update_returns WHERE run_id = ? AND step = ? "
                            "AND operator_id = ?", [pair.run_a, step, spec.operator_id])["return"][0])
    assert abs(own[0] - own[1]) > 10 * ENDPOINT_RTOL * max(map(abs, own))  # the check can tell them apart
    for point, mine, other in ((0, own[0], own[1]), (4, own[1], own[0])):
        assert rows["return"][point] == pytest.approx(mine, rel=ENDPOINT_RTOL)
        assert abs(rows["return"][point] - mine) < abs(rows["return"][point] - other)


def test_a_complete_pair_is_not_recomputed(evaluated):
    wh, _, plans, _ = evaluated
    before = tree_digest(wh.root / "tables")
    again = ip.plan(wh, [p.pair for p in plans], SETTINGS, batch_size="auto")
    assert [p.batch_size for p in again] == [B, B]  # the recorded chunk size is reused
    assert [ip.run(wh, p, SETTINGS).rows_written for p in again] == [0, 0]
    assert tree_digest(wh.root / "tables") == before
    with pytest.raises(ip.InterpolationError, match="--batch-size 8"):
        ip.plan(wh, [plans[0].pair], SETTINGS, batch_size=16)


def test_btp_view_on_the_evaluated_pairs(evaluated):
    wh, _, plans, _ = evaluated
    btp = ip.btp_table(wh)
    assert btp.height == 2 and btp["complete"].all()
    curve = wh.query("SELECT value FROM interpolation_curves WHERE pair_id = ? ORDER BY point", [plans[0].pair_id])
    v = curve["value"].to_numpy()
    row = btp.filter(pl.col("pair_id") == plans[0].pair_id)
    assert row["btp"][0] == pytest.approx(np.mean(v < 0.1 * min(v[0], v[-1])))


def hand_made(wh, pair_id, kind, env, values, samples=2, points=None):
    """A pair whose point values are `values` (each the mean of `samples` returns)."""
    from datetime import datetime, timezone

    n = len(values)
    wh.append("interpolation_pairs", [{
        "pair_id": pair_id, "kind": kind, "env": env, "algo": "td3", "run_a": "a", "step_a": 1, "run_b": "b",
        "step_b": 1, "points": points or n, "samples": samples, "sigma": 0.0, "seed": 0, "horizon": 10, "chunk_size": 8,
        "created_at": datetime.now(timezone.utc)}])
    rows = [{"pair_id": pair_id, "point": p, "sample": k, "lam": p / (n - 1), "return": v + (1 if k else -1),
             "episode_length": 10, "terminated": False} for p, v in enumerate(values) for k in range(samples)]
    wh.append("interpolation_points", rows)


def test_btp_on_a_hand_made_curve(warehouse):
    # ends 100 and 80: cutoff 8; values 5 and 7.9 are below, 8 is not (strict)
    hand_made(warehouse, "p1", "different-run", "hopper", [100, 50, 5, 8, 7.9, 80])
    hand_made(warehouse, "p2", "same-run", "hopper", [100, 90, 95, 80])
    hand_made(warehouse, "p3", "same-run", "hopper", [10, 20], points=3)  # one point missing
    btp = warehouse.query("SELECT pair_id, cutoff, btp, n_points, complete FROM interpolation_btp ORDER BY pair_id")
    assert btp.rows() == [("p1", 8.0, 2 / 6, 6, True), ("p2", 8.0, 0.0, 4, True), ("p3", pytest.approx(1.0), 0.0, 2, False)]


def test_btp_summary_is_the_iqm_with_a_stratified_ci():
    btp = pl.DataFrame({"kind": ["different-run"] * 6 + ["same-run"] * 4,
                        "env": ["hopper"] * 3 + ["walker2d"] * 3 + ["hopper"] * 4,
                        "btp": [0.9, 0.5, 0.6, 0.8, 0.0, 0.7, 0.0, 0.0, 0.01, 0.0]})
    s = ip.btp_summary(btp, n_resamples=200, seed=1)
    assert s["kind"].to_list() == ["same-run", "different-run"]
    d = s.row(1, named=True)
    assert d["pairs"] == 6 and d["envs"] == 2
    assert d["btp_iqm"] == pytest.approx(stats.iqm([0.9, 0.5, 0.6, 0.8, 0.0, 0.7]))
    assert d["ci_lo"] <= d["btp_iqm"] <= d["ci_hi"] and d["ci_lo"] < d["ci_hi"]
    assert s.row(0, named=True)["ci_hi"] <= 0.01


def run_cli(capsys, monkeypatch, *args):
    from retland.cli.main import main

    monkeypatch.setattr(sys, "argv", ["retland", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_refuses_bad_input_and_leaves_the_warehouse_untouched(job, capsys, monkeypatch):
    wh, res = job
    before = tree_digest(wh.root)
    s0 = res.run_ids[0]
    for args, msg in [
        (["--a", f"{s0}:60"], "needs both --a"),
        (["--a", f"{s0}:60", "--b", f"{s0}:999"], "has no checkpoint at step 999"),
        (["--a", f"{s0}:60", "--b", "nope:60"], "no run 'nope'"),
        (["--a", f"{s0}:60", "--b", f"{s0}:120", "--points", "1"], "--points must be >= 2"),
        (["--env", "hopper", "--pairs", "both", "--samples", "0"], "--samples must be >= 1"),
        (["--env", "hopper"], "say which pairs"),
    ]:
        code, _, err = run_cli(capsys, monkeypatch, "interpolate", *args, "-w", wh.root)
        assert code == 2 and msg in err, (args, err)
    assert tree_digest(wh.root) == before
