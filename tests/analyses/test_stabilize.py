"""Algorithm 1 (`retland stabilize`) on a tiny TD3 checkpoint.

One tiny TD3 run (6-step episodes, 16-unit nets, 60 steps, checkpoints at 45 and 60) is
trained once per module.
Compiles dominate the cost, so every test uses the same lane layout (2 arms x 2 seeds,
P proposals, N samples, the training env's reset noise): propose, PURD and commit are
each compiled once for the whole file (module-scoped fixtures + the functions' caches).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import run_cli
from retland import stats
from retland.analyses.stabilize import (
    StabilizeConfig,
    accepts,
    commit,
    fig7_table,
    initial_lanes,
    plan_sources,
    program_config,
    propose_fn,
    purd_fn,
    run_experiment,
    run_sources,
    top_ltp_sources,
)
from retland.train.checkpoints import load_checkpoint
from retland.train.config import TD3Config, TrainConfig
from retland.train.job import train
from retland.train.program import make_chunk_fn
from retland.warehouse.sqlgen import in_list

TINY = TrainConfig(
    env="hopper", seeds=1, total_steps=60, checkpoints=(45, 60), eval_every=60, horizon=6,
    agent=TD3Config(hidden=(16, 16), batch_size=8, learning_starts=30, buffer_size=60),
)
STEP = 60
EARLY = 45  # a second source, with a smaller replay buffer
P, N = 8, 8  # P > horizon: the proposals cross a time-limit reset


def leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def same(a, b) -> bool:
    la, lb = leaves(a), leaves(b)
    return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))


# Two different compiled programs (propose vs training's chunk, PURD in chunks of 3 vs 8)
# may round floats differently. Brax 0.0.13's position-based step turns a round-off of
# 1e-7 in a position into ~1e-5 in a velocity (it divides by the 5 ms substep; Brax 0.0.13
# moves as far against itself, docs/method.md §3), so env states, the replay rows made
# from them and what the critic then learns agree to ~1e-5 absolute; one Adam step moves
# every actor weight by ~lr = 3e-4, and another key changes minibatches, exploration and
# resets entirely.
CROSS_PROGRAM_RTOL, CROSS_PROGRAM_ATOL = 1e-5, 5e-5
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
    return propose_fn(program_config(source.config), 0.1, DEFAULTS["reset_noise_fraction"])


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


def test_ltp_criterion_prefers_fewer_failures_and_treats_a_non_positive_mode_as_worst():
    two_fail = summary([100.0] * 8 + [10.0, 20.0])  # mode 99.55: LTP = 2/10
    one_fail = summary([100.0] * 9 + [10.0])  # LTP = 1/10
    assert (two_fail.ltp, one_fail.ltp) == (0.2, 0.1)
    assert accepts("ltp", one_fail, two_fail, 0.0) and not accepts("ltp", two_fail, one_fail, 0.0)
    assert accepts("ltp", two_fail, one_fail, 0.1)  # 0.2 <= 0.1 + 0.1
    dead = summary([-5.0, -4.0, -1.0])  # mode -4.98 <= 0: its LTP is computed (2/3) but counts as 1
    assert dead.mode_nonpositive and dead.ltp == pytest.approx(2 / 3)
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
    cond, params = in_list("run_id", experiment.derived_run_ids)
    runs = wh.query(f"SELECT run_id, source, parent_run_id, parent_step FROM runs WHERE {cond} ORDER BY run_id",
                    params)
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
        (["--step", str(STEP), "--run", source.run_id], "--run and --step pair up"),
        (["--step", str(STEP), "--source", "no-step-here"], "RUN_ID:STEP"),
        (["--step", str(STEP), "--source", f"{source.run_id}:{STEP}"], "given twice"),
        (["--step", str(STEP), "--sources", "top-3"], "top-ltp:K"),
        (["--step", str(STEP), "--env", "hopper"], "--sources top-ltp:K"),
        (["--step", str(STEP), "--sources", "top-ltp:2", "--env", "walker2d"], "no td3-operator distribution"),
    ]:
        code, out, err = run_cli(capsys, monkeypatch, *base, *args)
        assert code == 2 and needle in " ".join((out + err).split()), (args, out, err)
    code, out, err = run_cli(capsys, monkeypatch, "stabilize", "--run", "nope", "--step", "1", "-w", wh.root)
    assert code == 2 and "'nope'" in out + err
    assert tree_digest(wh.root) == before
    code, out, err = run_cli(capsys, monkeypatch, "stabilize", "--help")
    assert code == 0 and "--criterion" in out + err and "Algorithm 1" in out + err


# ---- several sources ------------------------------------------------------------------------

@pytest.mark.slow
def test_several_sources_one_experiment_each_skipping_those_done(wh, source, experiment):
    """Two sources (replay sizes 45 and 60) in one plan: one buffer capacity, hence the
    programs the single-source fixture compiled; the source the fixture already ran with
    these settings is skipped (resume), the other becomes its own experiment."""
    base = scfg(source)
    plan = plan_sources(wh, base, [(source.run_id, EARLY), (source.run_id, STEP)])
    assert plan.done == [None, experiment.experiment_id] and plan.todo == [0]
    assert plan.capacity == [STEP + P, STEP + P]
    seen = []
    out = run_sources(wh, plan, on_result=seen.append)
    assert [(o.step, o.skipped) for o in out] == [(EARLY, False), (STEP, True)]
    assert out[1].experiment_id == experiment.experiment_id and [r.experiment_id for r in seen] == [out[0].experiment_id]
    rows = wh.query("SELECT * FROM stabilize_steps WHERE experiment_id = ? ORDER BY arm, seed, proposal",
                    [out[0].experiment_id])
    assert rows.height == 4 * (P + 1) and set(rows["run_id"]) == {source.run_id} and set(rows["step"]) == {EARLY}
    assert set(rows.filter(rows["proposal"] == 0)["replay_size"]) == {EARLY}  # its own buffer, not the padding
    assert set(rows.filter((rows["arm"] == "baseline") & (rows["proposal"] == P))["replay_size"]) == {EARLY + P}
    derived = wh.query("SELECT r.parent_step, c.replay_size FROM runs r JOIN checkpoints c USING (run_id) "
                       "WHERE r.run_id LIKE ? || '%'", [out[0].experiment_id])
    assert derived.height == 4 and set(derived["parent_step"]) == {EARLY}
    # run again: both are done now, nothing to do
    again = plan_sources(wh, base, [(source.run_id, EARLY), (source.run_id, STEP)])
    assert again.todo == [] and again.done == [out[0].experiment_id, experiment.experiment_id]
    # other settings (here the rejection seeds) are another experiment
    assert plan_sources(wh, scfg(source, seeds=(0, 2)), [(source.run_id, STEP)]).todo == [0]
    with pytest.raises(ValueError, match="given twice"):
        plan_sources(wh, base, [(source.run_id, STEP), (source.run_id, STEP)])


@pytest.mark.slow
def test_cli_runs_several_sources_resumes_and_prints_fig7(wh, source, capsys, monkeypatch):
    """`retland stabilize` with two sources (--run/--step and --source), tiny settings: one
    experiment per source, then the same command skips both and writes nothing;
    `retland stabilize-effect` reads the Fig. 7 table and the per-source rows."""
    import polars as pl
    from conftest import tree_digest

    rid = source.run_id
    args = ["stabilize", "--run", rid, "--step", EARLY, "--source", f"{rid}:{STEP}", "--proposals", 2,
            "--samples", 4, "--seeds", "0", "-w", wh.root, "--no-progress"]
    code, out, err = run_cli(capsys, monkeypatch, *args)
    assert code == 0, out + err
    text = " ".join((out + err).split())
    assert "stabilize 2 of 2 sources" in text and f"{rid}@{EARLY}: experiment" in text and "Fig. 7" in text
    ids = wh.query("SELECT DISTINCT experiment_id, step FROM stabilize_steps WHERE n_samples = 4 ORDER BY step")
    assert ids["step"].to_list() == [EARLY, STEP]
    before = tree_digest(wh.root)
    code, out, err = run_cli(capsys, monkeypatch, *args)
    text = out + err
    assert code == 0 and "stabilize 0 of 2 sources" in " ".join(text.split()) and text.count("skip") == 2, text
    assert tree_digest(wh.root) == before
    code, out, _ = run_cli(capsys, monkeypatch, "stabilize-effect", "-w", wh.root,
                                                  "--where", "n_samples = 4", "-f", "csv", "--per-source")
    per_source = pl.read_csv(out.encode())
    assert code == 0 and per_source.height == 2 and set(per_source["step"]) == {EARLY, STEP}
    code, out, _ = run_cli(capsys, monkeypatch, "stabilize-effect", "-w", wh.root,
                                                  "--where", "n_samples = 4", "-f", "csv")
    table = pl.read_csv(out.encode())
    assert code == 0 and table["env"].to_list() == ["hopper"] and table["sources"].to_list() == [2]
    # Returns here are ~6.9 > 0, so every held PURD's own-mode LTP is defined and both
    # sources count: the IQM is checked on every run, never skipped.
    assert per_source["ltp_change"].null_count() == 0 and table["ltp_sources"][0] == 2
    assert table["ltp_change"][0] == pytest.approx(stats.iqm(per_source["ltp_change"].to_numpy()), abs=1e-12)
    assert table["mean_change"][0] == pytest.approx(stats.iqm(per_source["mean_change"].to_numpy()), rel=1e-9)


def test_top_ltp_picks_the_highest_ltp_td3_distributions(wh, source):
    """Hand-made distributions on the tiny run's two checkpoints: LTP 0.3 at 45, 0.1 at
    60 (td3 operator), and a gaussian one with LTP 0.9 that must not count."""
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    rid = source.run_id

    def dist(step, op, k):  # 10 samples, k of them failures: LTP = k / 10
        r = [100.0] * (10 - k) + [10.0] * k
        return [dict(run_id=rid, step=step, operator_id=op, update_index=i, **{"return": x}) for i, x in enumerate(r)]

    wh.append("operators", [dict(operator_id="td3[test-a]", kind="td3", params="{}", created_at=now),
                            dict(operator_id="gaussian[test]", kind="gaussian", params="{}", created_at=now)])
    wh.append("post_update_returns", dist(EARLY, "td3[test-a]", 3) + dist(STEP, "td3[test-a]", 1)
              + dist(STEP, "gaussian[test]", 9))
    top = top_ltp_sources(wh, 1)
    assert list(zip(top["run_id"], top["step"], top["ltp"])) == [(rid, EARLY, 0.3)]
    assert top_ltp_sources(wh, 5)["step"].to_list() == [EARLY, STEP]  # fewer than asked: all there are
    assert top_ltp_sources(wh, 5, where="step > 50")["step"].to_list() == [STEP]
    with pytest.raises(ValueError, match="no td3-operator distribution"):
        top_ltp_sources(wh, 1, env="walker2d")
    wh.append("operators", [dict(operator_id="td3[test-b]", kind="td3", params="{}", created_at=now)])
    wh.append("post_update_returns", dist(STEP, "td3[test-b]", 4))
    with pytest.raises(ValueError, match="--operator"):
        top_ltp_sources(wh, 1)
    assert top_ltp_sources(wh, 1, operator="td3[test-b]")["step"].to_list() == [STEP]


# ---- the Fig. 7 table, from hand-made rows ----------------------------------------------------

def _dist(k: int | str) -> list[float]:
    """10 returns: k in 0..4 -> (10 - k) x 100 and k x 10: own-mode LTP k/10 (the mode is in
    the top bin), mean 100 - 9k, and against a source of that family (mode 99.55 or 100)
    the same k/10. 'down' -> 10 x 40: own LTP 0, mean 40, but all below half the source's mode."""
    return [40.0] * 10 if k == "down" else [100.0] * (10 - k) + [10.0] * k


# source -> (env, k at the last proposal for (reject s0, baseline s0, reject s1, baseline s1));
# every source's own PURD (proposal 0) has k = 2. None: the reject arm rejected proposal 1,
# so it holds the source (k = 2).
HAND = {
    "h1": ("hopper", (1, 3, None, 4)),      # LTP -0.2, -0.2 -> -0.2; mean +18, +18 -> 18
    "h2": ("hopper", (0, 2, 2, 2)),         # -0.2, 0 -> -0.1; mean +18, 0 -> 9
    "h3": ("hopper", (2, 1, 2, 1)),         # +0.1 -> 0.1; mean -9
    "h4": ("hopper", (1, "down", 1, 1)),    # own +0.1, 0 -> 0.05; vs source -0.9, 0 -> -0.45; mean +51, 0 -> 25.5
    "w1": ("walker2d", (1, 2, 1, 2)),       # -0.1; mean +9
    "w2": ("walker2d", (1, 2, 1, 2)),       # -0.1; mean +9
}


@pytest.fixture(scope="module")
def hand_wh(tmp_path_factory):
    from datetime import datetime, timezone

    from retland.warehouse import Warehouse

    wh = Warehouse.open(tmp_path_factory.mktemp("fig7") / "wh")
    now = datetime.now(timezone.utc)
    runs, steps, returns = [], [], []
    for src, (env, ks) in HAND.items():
        runs.append(dict(run_id=src, algo="td3", env=env, seed=0, source="trained", created_at=now))
        exp = f"stab-{src}"
        lanes = [("reject", 0, ks[0]), ("baseline", 0, ks[1]), ("reject", 1, ks[2]), ("baseline", 1, ks[3])]
        for arm, seed, k in lanes:
            s0 = stats.summarize(_dist(2))
            s1 = stats.summarize(_dist(2 if k is None else k))
            for proposal, new, accepted in ((0, s0, True), (1, s1, k is not None)):
                steps.append(dict(
                    experiment_id=exp, arm=arm, seed=seed, proposal=proposal, run_id=src, step=1000,
                    derived_run_id=f"{exp}-{arm}-r{seed}", criterion="cvar", alpha=0.1, beta=0.5, tolerance=0.0,
                    n_samples=10, accepted=accepted, last_accepted=0, update_count=0, replay_size=1000,
                    eval_return=0.0, mean=new.mean, std=new.std, mode=new.mode, ltp=new.ltp, cvar=new.cvar,
                    last_mean=s0.mean, last_std=s0.std, last_mode=s0.mode, last_ltp=s0.ltp, last_cvar=s0.cvar,
                    created_at=now))
                r = _dist(2) if proposal == 0 or k is None else _dist(k)
                returns += [dict(experiment_id=exp, arm=arm, seed=seed, proposal=proposal, update_index=i,
                                 **{"return": x}) for i, x in enumerate(r)]
    wh.append("runs", runs)
    wh.append("stabilize_steps", steps)
    wh.append("stabilize_returns", returns)
    return wh


def test_stabilize_sources_pairs_arms_per_source(hand_wh):
    src = {r["run_id"]: r for r in hand_wh.query("SELECT * FROM stabilize_sources").iter_rows(named=True)}
    assert sorted(src) == sorted(HAND)
    want = {"h1": (-0.2, 18.0, -0.2), "h2": (-0.1, 9.0, -0.1), "h3": (0.1, -9.0, 0.1), "h4": (0.05, 25.5, -0.45),
            "w1": (-0.1, 9.0, -0.1), "w2": (-0.1, 9.0, -0.1)}
    for name, (ltp, mean, ltp_source) in want.items():
        row = src[name]
        assert (row["pairs"], row["ltp_pairs"], row["experiments"], row["proposals"]) == (2, 2, 1, 1)
        assert row["ltp_before"] == pytest.approx(0.2) and row["mean_before"] == pytest.approx(82.0)
        assert row["ltp_change"] == pytest.approx(ltp, abs=1e-12), name
        assert row["mean_change"] == pytest.approx(mean, abs=1e-9), name
        assert row["ltp_source_change"] == pytest.approx(ltp_source, abs=1e-12), name
    assert src["h1"]["ltp_reject"] == pytest.approx(0.15) and src["h1"]["ltp_baseline"] == pytest.approx(0.35)


def test_fig7_table_from_hand_made_rows(hand_wh):
    table = fig7_table(hand_wh.query("SELECT * FROM stabilize_sources"), n_resamples=2000, seed=3)
    rows = {r["env"]: r for r in table.iter_rows(named=True)}
    assert list(rows) == ["hopper", "walker2d", "all"]
    hop, walk, both = rows["hopper"], rows["walker2d"], rows["all"]
    assert (hop["sources"], walk["sources"], both["sources"]) == (4, 2, 6)
    # IQM of 4 sources = mean of the middle two of the sorted changes
    assert hop["ltp_change"] == pytest.approx((-0.1 + 0.05) / 2, abs=1e-12)  # of -0.2, -0.1, 0.05, 0.1
    assert hop["mean_change"] == pytest.approx((9.0 + 18.0) / 2)  # of -9, 9, 18, 25.5
    assert hop["retland_ltp_source_change"] == pytest.approx((-0.2 - 0.1) / 2, abs=1e-12)  # of -0.45, -0.2, -0.1, 0.1
    assert hop["ltp_reject"] == pytest.approx((0.15 + 0.1 + 0.2 + 0.1) / 4)
    assert hop["mean_baseline"] == pytest.approx((68.5 + 82 + 91 + 65.5) / 4)  # (73+64)/2, 82, 91, (40+91)/2
    # 2 sources: no trimming; equal changes: the CI is that value
    assert (walk["ltp_change"], walk["ltp_lo"], walk["ltp_hi"]) == pytest.approx((-0.1, -0.1, -0.1), abs=1e-12)
    assert (walk["mean_change"], walk["mean_lo"], walk["mean_hi"]) == pytest.approx((9.0, 9.0, 9.0))
    # all envs: IQM of 6 (trim 1 each end) of -0.2, -0.1, -0.1, -0.1, 0.05, 0.1
    assert both["ltp_change"] == pytest.approx((-0.1 * 3 + 0.05) / 4, abs=1e-12)
    # the CI resamples sources within each env (rliable's stratified bootstrap)
    hop_changes, walk_changes = np.array([-0.2, -0.1, 0.1, 0.05]), np.array([-0.1, -0.1])
    rng = np.random.default_rng(3)
    draws = np.concatenate([hop_changes[rng.integers(0, 4, size=(2000, 4))],
                            walk_changes[rng.integers(0, 2, size=(2000, 2))]], axis=1)
    import scipy.stats

    lo, hi = np.percentile(scipy.stats.trim_mean(draws, 0.25, axis=1), [2.5, 97.5])
    assert (both["ltp_lo"], both["ltp_hi"]) == pytest.approx((lo, hi), abs=1e-12)
    assert hop["ltp_lo"] < hop["ltp_change"] < hop["ltp_hi"]
    # the CI does not depend on the order the source rows come in
    shuffled = hand_wh.query("SELECT * FROM stabilize_sources").sample(fraction=1.0, shuffle=True, seed=11)
    assert fig7_table(shuffled, n_resamples=2000, seed=3).equals(table)
    # no resamples (report --bootstrap 0): the same IQMs, no intervals
    bare = fig7_table(hand_wh.query("SELECT * FROM stabilize_sources"), n_resamples=0)
    assert bare["ltp_change"].to_list() == table["ltp_change"].to_list()
    assert bare["ltp_lo"].null_count() == bare.height and bare["ltp_hi"].null_count() == bare.height


def test_cli_stabilize_effect_reads_the_table_and_refuses_bad_where(hand_wh, capsys, monkeypatch):
    import polars as pl

    code, out, err = run_cli(capsys, monkeypatch, "stabilize-effect", "-w", hand_wh.root, "-f", "csv",
                         "--where", "env = 'walker2d'")
    assert code == 0, err
    table = pl.read_csv(out.encode())
    assert table["env"].to_list() == ["walker2d"] and table["ltp_change"][0] == pytest.approx(-0.1)
    code, out, err = run_cli(capsys, monkeypatch, "stabilize-effect", "-w", hand_wh.root, "--where", "nonsense >")
    assert code == 2 and "--where" in err


def test_report_shows_fig7_a10_and_the_trajectories(hand_wh):
    from retland.report.blocks import Figure, Table
    from retland.report.context import ReportContext
    from retland.report.stabilize_charts import stabilize_blocks

    blocks = stabilize_blocks(ReportContext(hand_wh.connect(), n_resamples=50))
    assert [(type(b), b.name) for b in blocks] == [(Figure, "stabilize-fig7"), (Table, "stabilize-fig7-table"),
                                                   (Figure, "stabilize-a10"), (Figure, "stabilize-arms")]
    table = {r["env"]: r for r in blocks[1].frame.iter_rows(named=True)}
    assert table["walker2d"]["ltp_change"] == pytest.approx(-0.1) and table["hopper"]["sources"] == 4
    for fig in (blocks[0], blocks[2], blocks[3]):
        fig.chart.to_dict()  # a valid Vega-Lite spec


def test_purd_keys_are_not_common_random_numbers_once_the_buffer_grows():
    """docs/method.md §6.4: the proposal and the state it is compared with use the same
    sample keys, but the td3 operator's minibatch is randint(key, 0, size) and the
    proposal's buffer holds one more row, which remaps (almost) every index, so the two
    PURD estimates are independent draws, not common random numbers."""
    from retland.core.replay import Transition, sample

    size = 1000
    rows = jnp.arange(size + 1, dtype=jnp.float32)
    data = Transition(rows[:, None], rows[:, None], rows, rows[:, None], rows)
    key = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(0), 1), 7)
    same_size = np.asarray(sample(data, jnp.int32(size), key, 256).reward)
    assert np.array_equal(same_size, np.asarray(sample(data, jnp.int32(size), key, 256).reward))  # same key, same rows
    grown = np.asarray(sample(data, jnp.int32(size + 1), key, 256).reward)
    assert np.mean(same_size == grown) < 0.05  # one more row: the same key draws other rows


def test_sql_replay_of_the_ltp_criterion_counts_a_non_positive_mode_as_worst(tmp_path):
    """stabilize_replay(at_criterion := 'ltp') decides as `accepts`: a proposal whose PURD
    mode is <= 0 has an LTP (here 0.3, better than the source's 0.4) but counts as 1."""
    from datetime import datetime, timezone

    from retland.warehouse import Warehouse

    wh = Warehouse.open(tmp_path / "wh")
    now = datetime.now(timezone.utc)
    # LTP 0.4; mode -9.92 with LTP 0.3; LTP 0.1
    dists = [[100.0] * 6 + [10.0] * 4, [-10.0] * 3 + [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [100.0] * 9 + [10.0]]
    sums = [summary(r) for r in dists]
    assert sums[1].mode_nonpositive and sums[1].ltp < sums[0].ltp
    last = [0, 0, 0]
    steps, returns = [], []
    for p, (s, r) in enumerate(zip(sums, dists)):
        accepted = p == 0 or accepts("ltp", s, sums[last[p]], 0.0)
        steps.append(dict(experiment_id="e", arm="reject", seed=0, proposal=p, run_id="src", step=1000,
                          derived_run_id="e-reject-r0", criterion="ltp", alpha=0.1, beta=0.5, tolerance=0.0,
                          n_samples=10, accepted=accepted, last_accepted=last[p], update_count=0, replay_size=1000,
                          eval_return=0.0, mean=s.mean, std=s.std, mode=s.mode, ltp=s.ltp, cvar=s.cvar,
                          last_mean=sums[0].mean, last_std=sums[0].std, last_mode=sums[0].mode,
                          last_ltp=sums[0].ltp, last_cvar=sums[0].cvar, created_at=now))
        returns += [dict(experiment_id="e", arm="reject", seed=0, proposal=p, update_index=i, **{"return": x})
                    for i, x in enumerate(r)]
    assert [row["accepted"] for row in steps] == [True, False, True]
    wh.append("runs", [dict(run_id="src", algo="td3", env="hopper", seed=0, source="trained", created_at=now)])
    wh.append("stabilize_steps", steps)
    wh.append("stabilize_returns", returns)
    replay = wh.query("SELECT * FROM stabilize_replay(at_criterion := 'ltp') ORDER BY proposal").to_dicts()
    assert [(r["proposal"], r["new_value"], r["would_accept"]) for r in replay] == [(1, 1.0, False), (2, 0.1, True)]
    assert all(r["would_accept"] == r["accepted"] for r in replay)
