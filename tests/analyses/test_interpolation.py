"""Interpolation θ(λ) = (1−λ)·θa + λ·θb and the below-threshold proportion (BTP).

The tiny TD3 job of `analysis_jobs` (2 seeds, 20-step episodes, checkpoints at 60 and
120) is trained once per process; every pair is evaluated with the same chunk size and an
8-step horizon, so one compiled chunk program serves the module.
"""
from __future__ import annotations

import itertools
import json
import time
from datetime import datetime, timezone

import jax
import jax.numpy as jnp
import numpy as np
import polars as pl
import pytest
from analysis_jobs import TINY_TD3, tiny_job

from conftest import run_cli, tree_digest
from retland import stats
from retland.analyses import interpolation as ip
from retland.purd.operators import Gaussian, sample_key
from retland.config.settings import InterpolationSettings

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
    # 2 checkpoints per run: one same-run pair per run, 2 × 2 different-run pairs
    same = ip.select_pairs(wh, "hopper", "td3", "same-run")
    assert same.pairs == [ip.Pair(s0, 60, s0, 120, "same-run"), ip.Pair(s1, 60, s1, 120, "same-run")]
    assert same.eligible == {"same-run": 2} and same.capped("same-run")
    diff = ip.select_pairs(wh, "hopper", "td3", "different-run")
    assert diff.pairs == [ip.Pair(s0, a, s1, b, "different-run") for a in (60, 120) for b in (60, 120)]
    assert len(ip.select_pairs(wh, "hopper", "td3", "both", pairs_per_kind=1).pairs) == 2
    with pytest.raises(ip.InterpolationError, match="no trained td3 checkpoints of walker2d"):
        ip.select_pairs(wh, "walker2d", "td3", "both")
    assert ip.explicit_pair(f"{s0}:60", f"{s1}:120").kind == "different-run"


PAIR_SEED = 5


@pytest.fixture(scope="module")
def evaluated(job):
    wh, res = job
    drawn = ip.select_pairs(wh, "hopper", "td3", "both", pairs_per_kind=1, seed=PAIR_SEED)
    plans = ip.plan(wh, drawn.pairs, SETTINGS, batch_size=B, pair_seed=drawn.seed)
    out = [ip.run(wh, p, SETTINGS, flush_seconds=0) for p in plans]
    return wh, res, plans, out


def test_the_pair_seed_is_stored_with_each_drawn_pair_and_is_not_part_of_its_id(evaluated):
    wh, _, plans, _ = evaluated
    stored = wh.query("SELECT pair_id, pair_seed FROM interpolation_pairs ORDER BY pair_id")
    assert stored.rows() == sorted((p.pair_id, PAIR_SEED) for p in plans)
    assert ip.btp_table(wh)["pair_seed"].to_list() == [PAIR_SEED, PAIR_SEED]
    # the same pair chosen by another draw, or given explicitly, is the same stored pair
    again = ip.plan(wh, [plans[0].pair], SETTINGS, batch_size=B, pair_seed=PAIR_SEED + 1)
    assert again[0].pair_id == plans[0].pair_id and again[0].exists


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
    n = len(values)
    wh.append("interpolation_pairs", [{
        "pair_id": pair_id, "kind": kind, "env": env, "algo": "td3", "run_a": "a", "step_a": 1, "run_b": "b",
        "step_b": 1, "points": points or n, "samples": samples, "sigma": 0.0, "seed": 0, "horizon": 10, "chunk_size": 8,
        "pair_seed": 0, "created_at": datetime.now(timezone.utc)}])
    rows = [{"pair_id": pair_id, "point": p, "sample": k, "lam": p / (n - 1), "return": v + (1 if k else -1),
             "episode_length": 10, "terminated": False} for p, v in enumerate(values) for k in range(samples)]
    wh.append("interpolation_points", rows)


def test_pairs_stored_before_the_pair_seed_existed_still_read(warehouse):
    """A part written with the table's old schema (no pair_seed) reads with pair_seed NULL."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from retland.warehouse.tables import TABLES
    from retland.warehouse.writer import adopt_files

    hand_made(warehouse, "new", "same-run", "hopper", [10, 20])
    old_schema = pa.schema([f for f in TABLES["interpolation_pairs"].schema if f.name != "pair_seed"])
    new_row = warehouse.query("SELECT * FROM interpolation_pairs").drop("pair_seed").to_dicts()[0]
    folder = warehouse.root / "tables" / "interpolation_pairs"
    old_part = folder / "part-00000000000000000001-old.parquet"
    pq.write_table(pa.Table.from_pylist([dict(new_row, pair_id="old")], schema=old_schema), old_part)
    adopt_files(warehouse.root, [old_part])  # as the commit log's migration adopts an old warehouse's parts
    warehouse.append("interpolation_points", [
        {"pair_id": "old", "point": p, "sample": k, "lam": float(p), "return": 5.0, "episode_length": 10,
         "terminated": False} for p in range(2) for k in range(2)])
    got = warehouse.query("SELECT pair_id, pair_seed, complete FROM interpolation_btp ORDER BY pair_id")
    assert got.rows() == [("new", 0, True), ("old", None, True)]


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


def test_cli_refuses_bad_input_and_leaves_the_warehouse_untouched(job, capsys, monkeypatch):
    wh, res = job
    before = tree_digest(wh.root)
    s0 = res.run_ids[0]
    for args, msg in [
        (["--a", f"{s0}:60"], "needs both --a"),
        (["--a", f"{s0}:60", "--b", f"{s0}:999"], "has no checkpoint at step 999"),
        (["--a", f"{s0}:60", "--b", "nope:60"], "--b 'nope': no run id starts with it"),
        (["--a", f"{s0}:60", "--b", f"{s0}:120", "--points", "1"], "--points must be >= 2"),
        (["--env", "hopper", "--pair-kind", "both", "--samples", "0"], "--samples must be >= 1"),
        (["--env", "hopper"], "say which pairs"),
    ]:
        code, _, err = run_cli(capsys, monkeypatch, "interpolate", *args, "-w", wh.root)
        assert code == 2 and msg in err, (args, err)
    assert tree_digest(wh.root) == before


# ------------------------------------------------------------- pair draws (no rollouts)
#
# Runs and checkpoint rows written by hand, as training writes them (the recorded config
# carries job_id and seed_index), without parameters: drawing pairs reads only these.

STEPS = [10, 20, 30, 40]


def fake_job(wh, job_id, seeds, steps=STEPS, cfg=TINY_TD3, source="trained", env="hopper"):
    now = datetime.now(timezone.utc)
    ids = [f"{job_id}-s{s}" for s in seeds]
    wh.append("runs", [dict(run_id=rid, algo="td3", env=env, seed=s, backend=cfg.backend, source=source,
                            config=json.dumps(dict(cfg.model_dump(mode="json"), job_id=job_id, seed_index=i)),
                            created_at=now) for i, (rid, s) in enumerate(zip(ids, seeds))])
    wh.append("checkpoints", [dict(run_id=rid, step=st, created_at=now) for rid in ids for st in steps])
    return ids


@pytest.fixture
def runs(warehouse):
    """Config T (TINY_TD3): job A seeds 0-2, job B seeds 3-4, job D seed 0 (A's seed again).
    Config H (horizon 30): job C seeds 0-1. A derived run and a walker2d job besides."""
    ids = {
        "A": fake_job(warehouse, "A", [0, 1, 2]),
        "B": fake_job(warehouse, "B", [3, 4]),
        "D": fake_job(warehouse, "D", [0]),
        "C": fake_job(warehouse, "C", [0, 1], cfg=TINY_TD3.model_copy(update={"horizon": 30})),
    }
    fake_job(warehouse, "stab", [1], source="derived")
    fake_job(warehouse, "W", [0, 1], cfg=TINY_TD3.model_copy(update={"env": "walker2d"}), env="walker2d")
    return warehouse, ids


def checkpoints_of(rids, steps=STEPS):
    return [(r, s) for r in rids for s in steps]


def test_every_eligible_pair_can_be_drawn_and_no_other(runs):
    wh, ids = runs
    drawn = ip.select_pairs(wh, "hopper", "td3", "both", pairs_per_kind=10**6)
    got = {kind: [(p.run_a, p.step_a, p.run_b, p.step_b) for p in drawn.pairs if p.kind == kind]
           for kind in ip.KINDS}
    trained = ids["A"] + ids["B"] + ids["D"] + ids["C"]
    same = {(r, a, r, b) for r in trained for a, b in itertools.combinations(STEPS, 2)}
    config_t = sorted(ids["A"] + ids["B"] + ids["D"])
    run_pairs = [(x, y) for x, y in itertools.combinations(config_t, 2) if {x, y} != {ids["A"][0], ids["D"][0]}]
    run_pairs.append(tuple(ids["C"]))
    diff = {(x, a, y, b) for x, y in run_pairs for a in STEPS for b in STEPS}
    assert set(got["same-run"]) == same and len(got["same-run"]) == len(same) == 8 * 6
    assert set(got["different-run"]) == diff and len(got["different-run"]) == len(diff) == (14 + 1) * 16
    assert drawn.eligible == {"same-run": 48, "different-run": 240}
    assert drawn.capped("same-run") and drawn.capped("different-run")
    # what the paper's design needs: same-run pairs far apart, different-run pairs at different steps
    assert (ids["A"][0], 10, ids["A"][0], 40) in got["same-run"]
    assert (ids["A"][0], 10, ids["B"][1], 40) in got["different-run"]


def test_a_draw_is_a_uniform_sample_fixed_by_its_seed(runs):
    wh, _ = runs
    a = ip.select_pairs(wh, "hopper", "td3", "both", pairs_per_kind=20, seed=3)
    assert [a.drawn(k) for k in ip.KINDS] == [20, 20] and not a.capped("same-run")
    assert len(set(a.pairs)) == 40  # without replacement
    assert ip.select_pairs(wh, "hopper", "td3", "both", pairs_per_kind=20, seed=3).pairs == a.pairs
    b = ip.select_pairs(wh, "hopper", "td3", "both", pairs_per_kind=20, seed=4)
    for kind in ip.KINDS:
        assert {p for p in a.pairs if p.kind == kind} != {p for p in b.pairs if p.kind == kind}
    # one kind alone is the same draw as within both
    assert ip.select_pairs(wh, "hopper", "td3", "different-run", 20, 3).pairs == a.pairs[20:]


def test_a_draw_does_not_depend_on_the_order_of_the_rows(runs):
    wh, _ = runs
    df = ip._checkpoints(wh, "hopper", "td3")
    for kind in ip.KINDS:
        want = ip.draw_pairs(df, kind, 7, seed=11)
        for shuffle_seed in range(3):
            assert ip.draw_pairs(df.sample(fraction=1.0, shuffle=True, seed=shuffle_seed), kind, 7, 11) == want


def test_every_eligible_pair_is_equally_likely():
    """A run with 2 checkpoints (1 pair) next to one with 5 (10 pairs): a uniform draw over
    all 11 pairs picks the first run's pair 1/11 of the time (a draw that picked a run
    first would pick it 1/2 of the time)."""
    df = pl.DataFrame({"run_id": ["x"] * 2 + ["y"] * 5, "seed": [0] * 2 + [1] * 5, "recipe": ["r"] * 7,
                       "step": [1, 2, 1, 2, 3, 4, 5]})
    hits = sum(ip.draw_pairs(df, "same-run", 1, seed)[0][0].run_a == "x" for seed in range(2200))
    assert abs(hits - 200) < 60  # binomial sd ≈ 13.5


def test_a_huge_pool_is_sampled_without_enumerating_it():
    # 40 runs × 300 checkpoints: C(40, 2) · 300² ≈ 7e7 different-run pairs
    df = pl.DataFrame({"run_id": [f"j-s{i}" for i in range(40) for _ in range(300)],
                       "seed": [i for i in range(40) for _ in range(300)], "recipe": "r",
                       "step": [s for _ in range(40) for s in range(300)]})
    t0 = time.monotonic()
    pairs, eligible = ip.draw_pairs(df, "different-run", 500, seed=0)
    assert eligible == 780 * 300 ** 2 and len(set(pairs)) == 500
    assert all(p.run_a < p.run_b for p in pairs)
    assert time.monotonic() - t0 < 30


def test_nothing_to_pair_is_refused_with_the_reason(warehouse):
    fake_job(warehouse, "solo", [0], steps=[10])
    with pytest.raises(ip.InterpolationError, match="no same-run or different-run pairs .* two runs of one training config"):
        ip.select_pairs(warehouse, "hopper", "td3", "both")
    with pytest.raises(ip.InterpolationError, match="--pairs-per-kind \\(--max-pairs\\) must be >= 1"):
        ip.select_pairs(warehouse, "hopper", "td3", "both", pairs_per_kind=0)


def test_cli_says_how_many_pairs_it_drew_and_when_fewer_exist(runs, capsys, monkeypatch):
    wh, _ = runs
    # checkpoints without parameters: the command stops at them, after drawing (exit 2)
    code, _, err = run_cli(capsys, monkeypatch, "interpolate", "--env", "hopper", "--pair-kind", "both",
                           "--max-pairs", "100", "--pair-seed", "2", "-w", wh.root)
    assert code == 2 and "no stored checkpoint" in err
    assert "same-run pairs of hopper: all 48 eligible (fewer than --pairs-per-kind 100), --pair-seed 2" in err
    assert "different-run pairs of hopper: 100 of 240 eligible, --pair-seed 2" in err
    assert wh.query("SELECT count(*) AS n FROM interpolation_pairs")["n"][0] == 0
