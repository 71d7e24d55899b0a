"""Algorithm 1 (`retland stabilize`) on a tiny TD3 checkpoint.

One tiny TD3 run (6-step episodes, 16-unit nets, 60 steps) is trained once per module.
Compiles dominate the cost, so every test uses the same lane layout (2 arms x 2 seeds,
P proposals, N samples, the training env's reset noise): propose, PURD and commit are
each compiled once for the whole file (module-scoped fixtures + the functions' caches).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from retland import stats
from retland.analyses.stabilize import (
    StabilizeConfig,
    accepts,
    commit,
    initial_lanes,
    propose_fn,
    purd_fn,
    run_experiment,
)
from retland.train.checkpoints import load_checkpoint
from retland.train.config import TD3Config, TrainConfig
from retland.train.job import train
from retland.train.program import make_chunk_fn

TINY = TrainConfig(
    env="hopper", seeds=1, total_steps=60, checkpoints=(60,), eval_every=60, horizon=6,
    agent=TD3Config(hidden=(16, 16), batch_size=8, learning_starts=30, buffer_size=60),
)
STEP = 60
P, N = 8, 8  # P > horizon: the proposals cross a time-limit reset


def leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def same(a, b) -> bool:
    la, lb = leaves(a), leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))


# Two different compiled programs (propose vs training's chunk, PURD in chunks of 3 vs 8)
# may round floats differently; over these 6-step episodes that stays tiny (a 1e-7
# relative change of a tiny TD3 actor moves its 5-step return by <= 4e-6), while one
# Adam step moves every actor weight by ~lr = 3e-4 and another key changes minibatches,
# exploration and resets entirely.
CROSS_PROGRAM_RTOL, CROSS_PROGRAM_ATOL = 1e-5, 1e-6
# Returns (~6.9) of one update apart differ by ~3e-4 only, so returns get an absolute
# bound: 5x the 4e-6 that a 1e-7 perturbation of θ moves a 5-step return.
RETURN_ATOL = 2e-5


def close(a, b) -> bool:
    """Integer leaves (PRNG keys, counters, sizes, episode steps) equal, float leaves equal
    up to the rounding two compiled programs may differ by."""
    la, lb = leaves(a), leaves(b)
    if len(la) != len(lb):
        return False
    for x, y in zip(la, lb):
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        if np.issubdtype(x.dtype, np.floating):
            if not np.allclose(x, y, rtol=CROSS_PROGRAM_RTOL, atol=CROSS_PROGRAM_ATOL):
                return False
        elif not np.array_equal(x, y):
            return False
    return True


@pytest.fixture(scope="module")
def wh(tmp_path_factory):
    from retland.warehouse import Warehouse

    return Warehouse.open(tmp_path_factory.mktemp("stabilize") / "wh")


@pytest.fixture(scope="module")
def source(wh):
    job = train(TINY, wh)
    return load_checkpoint(wh, job.run_ids[0], STEP)


# Every test: 4 lanes (reject r0, reject r1, baseline r0, baseline r1), P proposals, N
# samples and the training env's reset noise (so the baseline arm can equal training).
DEFAULTS = dict(proposals=P, samples=N, seeds=(0, 1), reset_noise_fraction=1.0)


def scfg(ckpt, **kw) -> StabilizeConfig:
    return StabilizeConfig(run_id=ckpt.run_id, step=ckpt.step, **dict(DEFAULTS, **kw))


@pytest.fixture(scope="module")
def propose(source):
    return propose_fn(source.config, 0.1, DEFAULTS["reset_noise_fraction"])


# ---- the criterion, by hand ---------------------------------------------------------------

def summary(r):
    return stats.summarize(np.asarray(r, float), alpha=0.1, beta=0.5)


def test_cvar_criterion_compares_lower_tail_means():
    ten = summary(np.arange(10) * 10.0)  # lowest 10% = {0}: CVaR_0.1 = 0
    shifted = summary(np.arange(10) * 10.0 + 0.5)  # CVaR 0.5, same spread
    assert ten.cvar == pytest.approx(0.0, abs=1e-12) and shifted.cvar == pytest.approx(0.5)
    assert accepts("cvar", shifted, ten, 0.0) and accepts("cvar", ten, ten, 0.0)
    assert not accepts("cvar", ten, shifted, 0.0)
    assert accepts("cvar", ten, shifted, 0.5) and not accepts("cvar", ten, shifted, 0.49)


def test_ltp_criterion_prefers_fewer_failures_and_treats_undefined_as_worst():
    two_fail = summary([100.0] * 8 + [10.0, 20.0])  # mode 99.55: LTP = 2/10
    one_fail = summary([100.0] * 9 + [10.0])  # LTP = 1/10
    assert (two_fail.ltp, one_fail.ltp) == (0.2, 0.1)
    assert accepts("ltp", one_fail, two_fail, 0.0) and not accepts("ltp", two_fail, one_fail, 0.0)
    assert accepts("ltp", two_fail, one_fail, 0.1)  # 0.2 <= 0.1 + 0.1
    dead = summary([-5.0, -4.0, -1.0])  # mode <= 0: LTP undefined, counts as 1
    assert dead.ltp is None
    assert not accepts("ltp", dead, two_fail, 0.0) and accepts("ltp", two_fail, dead, 0.0)


def test_mean_criterion():
    lo, hi = summary([1.0, 2.0, 3.0]), summary([2.0, 3.0, 4.0])
    assert accepts("mean", hi, lo, 0.0) and not accepts("mean", lo, hi, 0.0) and accepts("mean", lo, hi, 1.0)


def test_config_refuses_bad_values_by_name():
    with pytest.raises(ValueError, match="alpha"):
        StabilizeConfig(run_id="r", step=1, alpha=0.0)
    with pytest.raises(ValueError, match="tolerance"):
        StabilizeConfig(run_id="r", step=1, tolerance=-1.0)
    with pytest.raises(ValueError, match="seeds"):
        StabilizeConfig(run_id="r", step=1, seeds=(0, 0))


# ---- proposals and restoration ------------------------------------------------------------

def test_a_rejected_proposal_leaves_every_array_bit_identical(source, propose):
    lanes, _ = initial_lanes(source, scfg(source))
    proposed = propose(lanes)
    # the proposal moved the critic, the buffer, the env and the counter ...
    for part in (lambda x: x.train.agent.critic_params, lambda x: x.replay.data, lambda x: x.replay.size,
                 lambda x: x.train.env_state, lambda x: x.train.agent.update_count):
        assert not same(part(proposed), part(lanes))
    # ... and rejecting it (lane 0) restores all of that, bit for bit; lane 1 keeps it
    kept = commit(jnp.array([False, True, False, True]), proposed, lanes)
    one = lambda t, i: jax.tree.map(lambda x: x[i], t)  # noqa: E731
    undone = one(kept, 0)
    assert same(undone._replace(train=undone.train._replace(key=0)),
                one(lanes, 0)._replace(train=one(lanes, 0).train._replace(key=0)))
    assert same(undone.train.key, one(proposed, 0).train.key)  # the key stream moves on
    assert same(one(kept, 1), one(proposed, 1))


@pytest.mark.slow
def test_all_rejections_end_where_they_started(source, monkeypatch):
    from retland.analyses.stabilize import experiment

    monkeypatch.setattr(experiment, "accepts", lambda *a: False)  # the loop's own reference
    cfg = scfg(source, arms=("reject",), seeds=(0, 1, 2, 3))  # 4 lanes: the compiled phases are shared
    res = run_experiment(cfg, checkpoint=source, write=False)
    start, _ = initial_lanes(source, cfg)
    strip = lambda t: t._replace(train=t.train._replace(key=0))  # noqa: E731
    assert same(strip(res.final), strip(start))
    assert [r["accepted"] for r in res.rows if r["proposal"] > 0] == [False] * (P * 4)
    assert {r["last_accepted"] for r in res.rows} == {0}


def test_baseline_arm_is_plain_td3_training(source, propose):
    """P proposals of a lane that accepts them all are P steps of retland.train.program's
    loop (make_chunk_fn, here 1-step chunks as the source run used) from the same state
    and keys — also while another lane rejects, so lanes' update counters (and thus
    their actor/target steps) disagree. The proposals cross a time-limit reset (6-step
    episodes). Keys, counters and sizes are equal bit for bit; floats up to the rounding
    of two different compiled programs (`close`)."""
    lanes, _ = initial_lanes(source, scfg(source))
    ours = lanes
    for k in range(P):
        # reject lane 0 rejects every other proposal; the other three accept all
        ours = commit(jnp.array([k % 2 == 1, True, True, True]), propose(ours), ours)
    assert len(set(np.asarray(ours.train.agent.update_count).tolist())) == 2  # counters diverged
    ts, rb = jax.tree.map(jnp.array, (lanes.train, lanes.replay))  # the training chunk donates its inputs
    step = make_chunk_fn(source.config, STEP, 1)
    for _ in range(P):
        ts, rb = step(ts, rb)
    assert int(ts.agent.update_count[0]) == int(lanes.train.agent.update_count[0]) + P
    one = lambda t, i: jax.tree.map(lambda x: x[i], t)  # noqa: E731
    for i in (1, 2, 3):
        assert close(one(ours.train, i), one(ts, i)) and close(one(ours.replay, i), one(rb, i)), i
    # ... and `close` tells a lane that skipped proposals from one that took them all
    assert not close(one(ours.train, 0), one(ts, 0)) and not close(one(ours.replay, 0), one(rb, 0))
    assert not close(one(ours.train, 1).agent.actor_params, one(lanes.train, 1).agent.actor_params)


def test_purd_in_chunks_matches_all_at_once(source):
    """Chunking the N samples (memory: lanes x chunk) computes the same samples: chunk 3
    of N = 8 (a remainder chunk included) against all 8 in one batch. Two batch shapes
    are two compiled programs, so: equal within RETURN_ATOL (here they are equal bit for
    bit); distinct samples of a lane differ far more, so a sample given another's key
    fails."""
    lanes, keys = initial_lanes(source, scfg(source))
    whole, own = jax.device_get(purd_fn(source.config, N, N)(lanes, keys))
    parts, own3 = jax.device_get(purd_fn(source.config, N, 3)(lanes, keys))
    assert whole.shape == parts.shape == (4, N)
    np.testing.assert_allclose(parts, whole, rtol=0, atol=RETURN_ATOL)
    np.testing.assert_allclose(own3, own, rtol=0, atol=RETURN_ATOL)
    gaps = np.abs(whole[:, :, None] - whole[:, None, :])[:, ~np.eye(N, dtype=bool)]
    assert np.median(gaps) > 5 * RETURN_ATOL, np.median(gaps)  # measured: 2.7e-4


# ---- the experiment, end to end -------------------------------------------------------------

@pytest.fixture(scope="module")
def experiment(wh, source):
    return run_experiment(scfg(source), wh, checkpoint=source)


@pytest.mark.slow
def test_every_proposal_is_a_row_and_sql_replays_the_decisions(wh, experiment):
    steps = wh.query("SELECT * FROM stabilize_steps WHERE experiment_id = ? ORDER BY arm, seed, proposal",
                     [experiment.experiment_id])
    assert steps.height == 4 * (P + 1)
    base = steps.filter(steps["arm"] == "baseline")
    assert base["accepted"].all() and base.filter(base["proposal"] > 0)["last_accepted"].to_list() == \
        [k - 1 for k in range(1, P + 1)] * 2
    n = wh.query("SELECT count(*) AS n FROM stabilize_returns WHERE experiment_id = ?", [experiment.experiment_id])
    assert n["n"][0] == 4 * (P + 1) * N
    replay = wh.query("SELECT * FROM stabilize_replay() WHERE experiment_id = ? AND arm = 'reject'",
                      [experiment.experiment_id])
    assert replay.height == 2 * P and (replay["would_accept"] == replay["accepted"]).all()
    rej = steps.filter(steps["arm"] == "reject")
    # the counter and the buffer grow by exactly the accepted proposals
    for seed in (0, 1):
        lane = rej.filter(rej["seed"] == seed)
        acc = np.cumsum(lane["accepted"].to_numpy() & (lane["proposal"].to_numpy() > 0))
        assert (lane["replay_size"].to_numpy() - lane["replay_size"][0] == acc).all()
        assert (lane["update_count"].to_numpy() - lane["update_count"][0] == acc).all()
    arms = wh.query("SELECT * FROM stabilize_arms WHERE experiment_id = ? ORDER BY arm, proposal",
                    [experiment.experiment_id])
    assert arms.height == 2 * (P + 1) and set(arms["seeds"]) == {2}

    # reject − baseline after the last proposal: paired by seed, from the held policies
    from retland.analyses.stabilize import arm_effect

    final = wh.query("SELECT * FROM stabilize_final")
    eff = {r["statistic"]: r for r in arm_effect(final).iter_rows(named=True)
           if r["experiment_id"] == experiment.experiment_id}
    held = {}
    for row in steps.filter(steps["proposal"] == P).iter_rows(named=True):
        held[(row["arm"], row["seed"])] = row["mean"] if row["accepted"] else row["last_mean"]
    want = np.mean([held[("reject", s)] - held[("baseline", s)] for s in (0, 1)])
    assert eff["mean"]["seeds"] == 2 and eff["mean"]["difference"] == pytest.approx(want, rel=1e-12, abs=1e-9)
    assert eff["mean"]["lo"] <= eff["mean"]["difference"] <= eff["mean"]["hi"]


@pytest.mark.slow
def test_final_states_are_derived_runs_that_load_like_any_other(wh, source, experiment):
    runs = wh.query("SELECT run_id, source, parent_run_id, parent_step FROM runs WHERE run_id IN "
                    f"({', '.join('?' for _ in experiment.derived_run_ids)}) ORDER BY run_id",
                    experiment.derived_run_ids)
    assert runs.height == 4 and set(runs["source"]) == {"derived"}
    assert set(runs["parent_run_id"]) == {source.run_id} and set(runs["parent_step"]) == {STEP}
    for i, rid in enumerate(experiment.derived_run_ids):
        rows = wh.query("SELECT step FROM checkpoints WHERE run_id = ?", [rid])
        ck = load_checkpoint(wh, rid, rows["step"][0])
        lane = jax.tree.map(lambda x: x[i], experiment.final)
        assert same(ck.state, lane.train)
        size = int(lane.replay.size)
        assert ck.replay_size == size
        assert same(jax.tree.map(lambda x: x[:size], ck.replay), jax.tree.map(lambda x: x[:size], lane.replay.data))


def run_cli(capsys, monkeypatch, *args) -> tuple[int, str]:
    from conftest import run_cli as run

    code, out, err = run(capsys, monkeypatch, *args)
    return code, out + err


def test_cli_refuses_bad_input_and_leaves_the_warehouse_untouched(wh, source, capsys, monkeypatch):
    from conftest import tree_digest

    before = tree_digest(wh.root)
    base = ["stabilize", "--run", source.run_id, "-w", wh.root, "--no-progress"]
    for args, needle in [
        (["--step", str(STEP), "--alpha", "0"], "alpha"),
        (["--step", str(STEP), "--arms", "reject,bogus"], "--arms"),
        (["--step", str(STEP), "--seeds", "3..1"], "--seeds"),
        (["--step", str(STEP), "--samples", "1"], "samples"),
        (["--step", "77"], "no checkpoint at step 77"),
    ]:
        code, text = run_cli(capsys, monkeypatch, *base, *args)
        assert code == 2 and needle in " ".join(text.split()), (args, text)
    code, text = run_cli(capsys, monkeypatch, "stabilize", "--run", "nope", "--step", "1", "-w", wh.root)
    assert code == 2 and "'nope'" in text
    assert tree_digest(wh.root) == before
    code, text = run_cli(capsys, monkeypatch, "stabilize", "--help")
    assert code == 0 and "--criterion" in text and "Algorithm 1" in text
