"""Behaviour cloning (the paper's A.7): `retland train --algo bc --teacher RUN@STEP`, the bc
operator, the bc_pairs view, `retland clones` and the experiment's runner.

The teacher is the shared tiny TD3 job (tests/analysis_jobs.py), copied so the clones
written here never reach other modules' warehouses; one tiny clone is trained once per
module (16-unit actor, minibatch 8, 40 gradient steps)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import polars as pl
import pytest

from analysis_jobs import tiny_job
from conftest import run_cli, tree_digest

BC_TOML = '[agent]\nalgo = "bc"\nhidden = [16, 16]\nbatch_size = 8\n'
BC_ARGS = ("--total-steps", "40", "--checkpoints", "20,40", "--eval-every", "20", "--no-progress")


@pytest.fixture(scope="module")
def cloned(tmp_path_factory):
    """(warehouse, teacher run id, clone run id, config path): the tiny TD3 job's
    warehouse, copied, with one clone of seed 0's checkpoint at step 120, trained by the
    command line."""
    from retland.warehouse import Warehouse

    base = tmp_path_factory.mktemp("clones")
    src, result = tiny_job()
    shutil.copytree(src.root, base / "wh")
    wh = Warehouse.open(base / "wh", create=False)
    (base / "bc.toml").write_text(BC_TOML)
    teacher = result.run_ids[0]
    code, out, err = _cli("train", "--algo", "bc", "--teacher", f"{teacher}@120", "--config", base / "bc.toml",
                          *BC_ARGS, "-w", wh.root)
    assert code == 0, err
    assert f"cloning teacher {teacher}@120 (120 logged rows" in out
    clone = wh.records("SELECT run_id FROM runs WHERE algo = 'bc'")[0]["run_id"]
    return wh, teacher, clone, base / "bc.toml"


def _cli(*args) -> tuple[int, str, str]:
    """run_cli for a module-scoped fixture (no capsys there): output captured by redirection."""
    import contextlib
    import io
    import sys

    from retland.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["retland", *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


def test_the_clone_records_its_teacher_and_trains_on_its_relabelled_data(cloned):
    from retland.agents import get_agent
    from retland.train.checkpoints import list_checkpoints, load_checkpoint

    wh, teacher, clone, _ = cloned
    row = wh.records("SELECT * FROM runs WHERE run_id = ?", [clone])[0]
    assert (row["algo"], row["source"], row["parent_run_id"], row["parent_step"]) == ("bc", "trained", teacher, 120)
    agent_cfg = json.loads(row["config"])["agent"]
    assert (agent_cfg["teacher_run_id"], agent_cfg["teacher_step"]) == (teacher, 120)
    assert list_checkpoints(wh, clone) == [20, 40]
    t = load_checkpoint(wh, teacher, 120)
    c = load_checkpoint(wh, clone, 40)
    assert c.replay_size == t.replay_size == agent_cfg["dataset_size"] == 120
    assert c.env == t.env and c.config.horizon == t.config.horizon  # the teacher's task
    n = t.replay_size
    np.testing.assert_array_equal(c.replay.obs[:n], t.replay.obs[:n])  # the teacher's logged observations
    teacher_actions = np.asarray(get_agent("td3", t.config).policy(t.agent_state.actor_params, t.replay.obs[:n]))
    np.testing.assert_allclose(c.replay.action[:n], teacher_actions, atol=1e-6)  # relabelled by the teacher
    assert not np.allclose(t.replay.action[:n], teacher_actions, atol=1e-3)  # (logged actions were exploratory)
    # 40 gradient steps of BC moved the actor towards the teacher's actions
    start = load_checkpoint(wh, clone, 20)
    bc = get_agent("bc", c.config)

    def mse(ck):
        return float(np.mean((np.asarray(bc.policy(ck.agent_state.actor_params, c.replay.obs[:n])) - teacher_actions) ** 2))

    assert mse(c) < mse(start)


def test_the_bc_operator_is_one_adam_step_on_a_fresh_minibatch(cloned):
    import jax

    from retland.agents import get_agent
    from retland.agents.bc import bc_loss
    from retland.core import replay
    from retland.purd.operators import parse_operator
    from retland.train.checkpoints import load_checkpoint

    wh, _, clone, _ = cloned
    spec = parse_operator("bc", horizon=20)
    assert spec.operator_id == "bc[h=20,seed=0]"
    ck = load_checkpoint(wh, clone, 40)
    agent = get_agent("bc", ck.config)
    op = agent.operator_state(ck)
    k1, k2 = jax.random.PRNGKey(1), jax.random.PRNGKey(2)
    update = jax.jit(agent.update)
    a, b, c = update(op, k1), update(op, k1), update(op, k2)
    theta = ck.agent_state.actor_params
    assert jax.tree.structure(a) == jax.tree.structure(theta)
    assert all(x.shape == y.shape for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(theta)))
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))  # same key, same θ'
    assert not all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(c)))
    # the step lowers the BC loss on the minibatch it drew, and moves θ by about Adam's lr
    batch = replay.sample(op.replay, op.replay_size, k1, ck.config.agent.batch_size)
    before = float(bc_loss(ck.config.agent, theta, batch.obs, batch.action))
    after = float(bc_loss(ck.config.agent, a, batch.obs, batch.action))
    assert after < before
    moved = max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(theta)))
    assert 0 < moved < 10 * ck.config.agent.learning_rate


@pytest.mark.parametrize("args, says", [
    (["--algo", "bc"], "--algo bc clones a teacher: give --teacher RUN@STEP"),
    (["--teacher", "{teacher}@120"], "--teacher names the policy a behaviour-cloning run clones: use it with --algo bc"),
    (["--algo", "td3", "--teacher", "{teacher}@120"], "use it with --algo bc"),
    (["--algo", "bc", "--teacher", "nosuchrun@120"], "--teacher 'nosuchrun': no run id starts with it"),
    (["--algo", "bc", "--teacher", "{teacher}@100"], "has no stored checkpoint at step 100; it has 60, 120"),
    (["--algo", "bc", "--teacher", "{teacher}"], "expected RUN@STEP"),
    (["--algo", "bc", "--teacher", "{teacher}@1.5"], "is not a whole env step"),
    (["--algo", "bc", "--teacher", "{clone}@40"], "is a trained bc run; a teacher is a trained td3 run"),
    (["--algo", "bc", "--teacher", "{teacher}@120", "--env", "walker2d"], "--env walker2d: the teacher"),
])
def test_bad_teachers_are_one_line_exit_2_and_write_nothing(cloned, capsys, monkeypatch, args, says):
    wh, teacher, clone, _ = cloned
    args = [a.replace("{teacher}", teacher).replace("{clone}", clone) for a in args]
    before = tree_digest(wh.root)
    code, out, err = run_cli(capsys, monkeypatch, "train", *args, *BC_ARGS, "-w", wh.root)
    assert code == 2, out + err
    assert says in " ".join(err.split())
    assert len(err.strip().splitlines()) == 1
    assert tree_digest(wh.root) == before


@pytest.fixture(scope="module")
def sampled(cloned):
    """The clone's last checkpoint and its teacher sampled (4 samples each) by the runner."""
    from retland.analyses.clones import CloneRequest, run

    wh, teacher, clone, _ = cloned
    request = CloneRequest(teachers=(f"{teacher}@120",), total_steps=40, checkpoints=(20, 40), eval_every=20,
                           agent={"hidden": [16, 16], "batch_size": 8}, samples=4)
    first = run(wh, request)
    return wh, teacher, clone, request, first


def test_the_runner_reuses_the_clone_samples_both_and_resumes(sampled):
    from retland.analyses.clones import run

    wh, teacher, clone, request, first = sampled
    assert first.trained == []  # the clone `retland train` made has the request's config
    assert first.clones == {f"{teacher}@120": [clone]}
    assert first.rows_written == 8  # 4 bc samples of the clone, 4 td3 samples of the teacher
    again = run(wh, request)
    assert again.rows_written == 0 and again.trained == []
    pairs = wh.query("SELECT * FROM bc_pairs")
    assert pairs.height == 1
    p = pairs.row(0, named=True)
    assert (p["clone_run_id"], p["clone_step"], p["teacher_run_id"], p["teacher_step"]) == (clone, 40, teacher, 120)
    assert (p["operator"], p["teacher_operator"]) == ("bc[h=20,seed=0]", "td3[h=20,seed=0]")
    stats = wh.query("SELECT run_id, mean, ltp FROM distribution_stats")
    by_run = {r["run_id"]: r for r in stats.to_dicts()}
    assert p["clone_mean"] == by_run[clone]["mean"] and p["teacher_mean"] == by_run[teacher]["mean"]


def test_bad_requests_are_refused_before_anything_is_written(sampled):
    from pydantic import ValidationError

    from retland.analyses.clones import CloneError, CloneRequest, run

    wh, teacher, _, request, _ = sampled
    before = tree_digest(wh.root)
    with pytest.raises(CloneError, match="no stored checkpoint at step 7"):
        run(wh, request.model_copy(update={"teachers": (f"{teacher}@120", f"{teacher}@7")}))
    with pytest.raises(CloneError, match="batch_size"):
        run(wh, request.model_copy(update={"agent": {"batch_size": 0}}))
    with pytest.raises(ValidationError):
        CloneRequest(teachers=())
    assert tree_digest(wh.root) == before


def test_clones_command_and_report_section(sampled, capsys, monkeypatch, tmp_path):
    from retland.report import Figure, build_sections

    wh = sampled[0]
    code, out, err = run_cli(capsys, monkeypatch, "clones", "--bootstrap", "50", "-f", "json", "-w", wh.root)
    assert code == 0, err
    rows = json.loads(out)
    assert {r["table"] for r in rows} == {"correlation", "mean_ltp"}
    assert [r["policies"] for r in rows if r["table"] == "mean_ltp"] == ["bc", "td3"]
    code, out, err = run_cli(capsys, monkeypatch, "clones", "--show-pairs", "-f", "csv", "-w", wh.root)
    assert code == 0 and out.count("\n") == 2
    code, out, err = run_cli(capsys, monkeypatch, "clones", "--clone", "first", "-w", wh.root)
    assert code == 2 and "--clone 'first'" in err
    built = {s.key: blocks for s, blocks in build_sections(wh, n_resamples=0)}
    assert [b.name for b in built["clones"] if isinstance(b, Figure)] == ["clones-scatter"]
    built["clones"][0].chart.to_dict()  # valid Vega-Lite


def test_no_bc_runs_no_section_and_clones_says_what_to_do(capsys, monkeypatch, filled):
    from retland.report import build_sections
    from retland.warehouse import Warehouse

    assert "clones" not in [s.key for s, _ in build_sections(Warehouse.open(filled, create=False), n_resamples=0)]
    code, _, err = run_cli(capsys, monkeypatch, "clones", "-w", filled)
    assert code == 2 and "retland train --algo bc --teacher" in " ".join(err.split())


# ---- the view and the statistics on known numbers (no JAX) ---------------------------------

def _known_warehouse(root):
    """Two hopper teachers and one walker2d teacher, each with one clone of two checkpoints;
    returns chosen so every distribution's mean and LTP are known."""
    from datetime import datetime, timezone

    from retland.warehouse import Warehouse

    wh = Warehouse.open(root)
    now = datetime.now(timezone.utc)
    runs, cks, ops, rets = [], [], [], []

    def run(rid, algo, env, parent=None, step=None):
        runs.append(dict(run_id=rid, algo=algo, env=env, seed=0, backend="brax0013", variant="paper",
                         source="trained", parent_run_id=parent, parent_step=step, config="{}", repro="{}",
                         created_at=now))

    def dist(rid, step, op, values):
        cks.append(dict(run_id=rid, step=step, artifact_path=None, eval_return=None, replay_size=None,
                        created_at=now))
        rets.extend(dict(run_id=rid, step=step, operator_id=op, update_index=i, **{"return": float(v)})
                    for i, v in enumerate(values))

    for name, kind in (("td3[h=5,seed=0]", "td3"), ("bc[h=5,seed=0]", "bc")):
        ops.append(dict(operator_id=name, kind=kind, params="{}", created_at=now))
    # a distribution of ten returns: `low` of them at 0 (below β·mode), the rest at `level`
    teachers = [("t1", "hopper", 100, 1), ("t2", "hopper", 200, 3), ("t3", "walker2d", 300, 2)]
    clones = {"t1": (110, 2), "t2": (190, 4), "t3": (310, 1)}
    for rid, env, level, low in teachers:
        run(rid, "td3", env)
        dist(rid, 50, "td3[h=5,seed=0]", [0] * low + [level] * (10 - low))
        crid = "c-" + rid
        run(crid, "bc", env, rid, 50)
        clevel, clow = clones[rid]
        dist(crid, 10, "bc[h=5,seed=0]", [0] * 10)  # an earlier clone checkpoint: not the last
        dist(crid, 20, "bc[h=5,seed=0]", [0] * clow + [clevel] * (10 - clow))
    wh.append_many({"runs": runs, "checkpoints": cks, "operators": ops, "post_update_returns": rets})
    return wh


def test_bc_pairs_pairs_each_last_clone_with_its_teacher(tmp_path):
    wh = _known_warehouse(tmp_path / "wh")
    pairs = wh.query("SELECT * FROM bc_pairs ORDER BY teacher_run_id")
    assert pairs["clone_step"].to_list() == [20, 20, 20]
    assert pairs["teacher_ltp"].to_list() == [0.1, 0.3, 0.2]
    assert pairs["clone_ltp"].to_list() == [0.2, 0.4, 0.1]
    assert pairs["teacher_mean"].to_list() == pytest.approx([90, 140, 240])
    assert pairs["clone_mean"].to_list() == pytest.approx([88, 114, 279])
    assert wh.query("SELECT count(*) AS n FROM bc_pairs_all")["n"][0] == 6


def test_correlations_and_mean_ltps_on_known_numbers(tmp_path):
    from retland.analyses.clones import compare_clones, pearson, pearson_ci, read_pairs

    wh = _known_warehouse(tmp_path / "wh")
    result = compare_clones(read_pairs(wh), reps=200, seed=3)
    corr = {r["env"]: r for r in result.correlations.to_dicts()}
    assert corr["hopper"]["pairs"] == 2
    assert corr["hopper"]["r_mean"] == pytest.approx(1.0)  # two points are always on a line
    assert corr["walker2d"]["r_mean"] is None  # one pair has no r
    ltp = {(r["env"], r["policies"]): r for r in result.ltp.to_dicts()}
    assert ltp[("hopper", "bc")]["mean_ltp"] == pytest.approx(0.3)
    assert ltp[("hopper", "td3")]["mean_ltp"] == pytest.approx(0.2)
    assert ltp[("all", "bc")]["mean_ltp"] == pytest.approx((0.2 + 0.4 + 0.1) / 3)
    assert ltp[("all", "td3")]["n"] == 3
    lo, hi = ltp[("hopper", "bc")]["lo"], ltp[("hopper", "bc")]["hi"]
    assert 0.2 <= lo <= 0.3 <= hi <= 0.4
    # Pearson r and its bootstrap CI against numpy on a larger sample
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    y = 0.6 * x + 0.8 * rng.normal(size=200)
    r = pearson(x, y)
    assert r == pytest.approx(np.corrcoef(x, y)[0, 1])
    lo, hi, dropped = pearson_ci(x, y, reps=500, seed=1)
    assert lo < r < hi and hi - lo < 0.3 and dropped == 0
    assert pearson_ci(x, y, reps=500, seed=1) == (lo, hi, dropped)  # seeded
    assert pearson([1, 1, 1], [1, 2, 3]) is None
    assert compare_clones(read_pairs(wh), reps=0).ltp["lo"].is_null().all()


def test_read_pairs_takes_a_where_and_refuses_bad_options(tmp_path):
    from retland.analyses.clones import CloneError, compare_clones, read_pairs
    from retland.warehouse import WarehouseError

    wh = _known_warehouse(tmp_path / "wh")
    assert read_pairs(wh, where="env = 'hopper'").height == 2
    assert read_pairs(wh, clone="all").height == 6
    with pytest.raises(CloneError):
        read_pairs(wh, clone="first")
    with pytest.raises(WarehouseError):
        read_pairs(wh, where="nosuchcolumn = 1")
    with pytest.raises(CloneError, match="no clone beside a sampled teacher"):
        compare_clones(pl.DataFrame(schema=read_pairs(wh).schema))


def test_a_killed_clone_resumes_to_the_same_parameters(cloned, tmp_path):
    """A BC job stopped at its first checkpoint and resumed ends where the uninterrupted
    clone of the fixture ended (same teacher, config and seed: the same program)."""
    import jax

    from retland.train.checkpoints import load_checkpoint, run_config
    from retland.train.job import train
    from retland.warehouse import Warehouse

    shutil.copytree(cloned[0].root, tmp_path / "wh")  # the other tests' warehouse keeps one clone
    wh, clone = Warehouse.open(tmp_path / "wh", create=False), cloned[2]
    cfg = run_config(wh.records("SELECT * FROM runs WHERE run_id = ?", [clone])[0])
    first = train(cfg, wh, stop_at=20)
    assert first.checkpoints == [20]
    resumed = train(cfg, wh, resume=first.job_id)
    assert resumed.resumed_from == 20
    a = load_checkpoint(wh, resumed.run_ids[0], 40).agent_state
    b = load_checkpoint(wh, clone, 40).agent_state
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    # A clone stopped before its first checkpoint (a --time-limit already spent) restarts
    # from step 0 on resume, from its teacher's data, not an empty buffer.
    from retland.train.job import Deadline

    late = train(cfg, wh, deadline=Deadline(0.0, clock=lambda: 1.0))
    assert late.time_limited and late.checkpoints == []
    again = train(cfg, wh, resume=late.job_id)
    assert again.resumed_from == 0
    c = load_checkpoint(wh, again.run_ids[0], 40).agent_state
    assert all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(c), jax.tree.leaves(b)))
