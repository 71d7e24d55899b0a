"""A study's estimates: `--plan --calibrate` times what nothing measured (training of the
study's TD3 job and of its [clones] BC jobs, sampling of its task) into the warehouse, and
then every kind of stage gets an estimate from those rates; bad input is one line.

The study is the shared tiny TD3 job's (tests/analysis_jobs.py, TINY_TRAIN's config: a
process that trained it has its training program compiled), with tiny [clones] and a
[sample] of 8 samples at horizon 20."""
from __future__ import annotations

import textwrap

import pytest

from conftest import TINY_AGENT, TINY_CLONES, TINY_TRAIN, run_cli, tree_digest

STUDY = 'name = "est"\n' + TINY_TRAIN + """
[sample]
operators = ["td3"]
samples = 8
horizon = 20
""" + TINY_CLONES


def _study(folder, text: str = STUDY):
    from retland.study import load_study

    (folder / "tiny-agent.toml").write_text(TINY_AGENT)
    path = folder / "study.toml"
    path.write_text(textwrap.dedent(text))
    return path, *load_study(path)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """An empty warehouse after `retland study FILE --plan --calibrate`: (folder, study
    file, study, base, exit code, output)."""
    import contextlib
    import io
    import sys

    from analysis_jobs import tiny_job
    from retland.cli.main import main

    tiny_job()  # the tiny job's training program, compiled in this process
    folder = tmp_path_factory.mktemp("estimates")
    path, study, base = _study(folder)
    out, err, code = io.StringIO(), io.StringIO(), 0
    with pytest.MonkeyPatch.context() as m, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        m.setattr(sys, "argv", ["retland", "study", str(path), "--plan", "--calibrate", "--no-progress",
                                "-w", str(folder / "wh")])
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return folder, path, study, base, code, out.getvalue() + err.getvalue()


def test_calibrate_times_what_the_plan_lacked_and_marks_its_estimates(calibrated):
    from retland.analyses.estimates import current_device, sampling_rate, training_rate
    from retland.warehouse import Warehouse

    folder, path, study, base, code, output = calibrated
    assert code == 0, output
    text = " ".join(output.split())
    assert "calibrated td3 hopper" in text and "calibrated bc hopper" in text and "calibrated td3 sampling" in text
    wh = Warehouse.open(folder / "wh", create=False)
    t = wh.records("SELECT algo, seeds, source, includes_compile, warmup, env_steps FROM training_timings "
                   "ORDER BY algo, includes_compile DESC")
    # td3: 2 seeds (the [[train]] entry), bc: 2 jobs of 1 seed ([clones], one teacher per run): 3 stretches each
    assert [(r["algo"], r["seeds"], r["includes_compile"]) for r in t] == [
        ("bc", 1, True), ("bc", 1, False), ("bc", 1, False), ("td3", 2, True), ("td3", 2, False), ("td3", 2, False)]
    assert all(r["source"] == "calibration" and not r["warmup"] for r in t)
    assert [r["env_steps"] for r in t if r["algo"] == "td3"] == [2 * 200] * 3  # 200 one-step chunks (the job's) x 2 seeds
    s = wh.records("SELECT operator_kind, batch_size, horizon, chunks FROM sampling_calibrations")
    assert [(r["operator_kind"], r["batch_size"], r["horizon"]) for r in s] == [("td3", 8, 20)] * 3
    backend = wh.records("SELECT backend FROM training_timings WHERE algo = 'td3' LIMIT 1")[0]["backend"]
    task = dict(env="hopper", variant=study.train[0].variant, backend=backend, device=current_device())
    rate = training_rate(wh, algo="td3", seeds=2, **task)
    assert rate.calibrated and "calibration" in rate.measured_on and rate.env_steps_per_second > 0
    assert sampling_rate(wh, algo="td3", **task).calibrated
    # the plan's train, sample and clones stages have estimates now, each marked as a calibration's
    assert "? =" not in text and "scaled (in part) from a calibration run" in text
    rows = [line for line in output.splitlines() if "│" in line]
    for stage in ("train td3 hopper", "sample", "clones"):
        (line,) = [r for r in rows if f"│ {stage} " in r]
        cells = [c.strip() for c in line.split("│")]
        assert cells[5].endswith("*"), line


def test_a_second_calibration_finds_nothing_to_do(calibrated, capsys, monkeypatch):
    folder, path, *_ = calibrated
    before = tree_digest(folder / "wh")
    code, out, err = run_cli(capsys, monkeypatch, "study", path, "--plan", "--calibrate", "--no-progress",
                             "-w", folder / "wh")
    assert code == 0, err
    assert "nothing to calibrate" in out and tree_digest(folder / "wh") == before


def _estimate(study, st, wh):
    from retland.analyses.estimates import current_device
    from retland.study.estimate import stage_estimate

    return stage_estimate(study, 0 if st.kind == "train" else len(study.train), st, wh, current_device())


def test_every_kind_of_stage_gets_its_estimate(calibrated):
    """Each stage kind with work left: training at the training rate (BC's for [clones]),
    rollouts at the sampling rate; example and report stages have none; a done stage none."""
    from retland.analyses.estimates import current_device, sampling_rate, training_rate
    from retland.study import KINDS
    from retland.study.planners import Stage, Training
    from retland.warehouse import Warehouse

    folder, path, study, base, *_ = calibrated
    wh = Warehouse.open(folder / "wh", create=False)
    backend = wh.records("SELECT backend FROM training_timings LIMIT 1")[0]["backend"]
    variant = study.train[0].variant
    task = dict(env="hopper", variant=variant, backend=backend, device=current_device())
    td3 = training_rate(wh, algo="td3", seeds=2, **task)
    bc = training_rate(wh, algo="bc", seeds=1, **task)
    roll = sampling_rate(wh, algo="td3", **task)
    seen = set()
    for kind in KINDS:
        training = ()
        if kind == "train":
            training = (Training("td3", "hopper", variant, backend, 2, 1000),)
        elif kind == "clones":
            training = (Training("bc", "hopper", variant, backend, 1, 500, jobs=3),)
        st = Stage(kind, "todo", "", [], 10**6 if kind != "train" else 2000, training)
        est = _estimate(study, st, wh)
        if kind in ("example", "report"):
            assert est is None, kind
            continue
        want = {"train": td3.seconds(2000), "clones": roll.seconds(10**6) + 3 * bc.seconds(500)}.get(
            kind, roll.seconds(10**6))
        assert est.seconds == pytest.approx(want) and est.calibrated, kind
        assert _estimate(study, Stage(kind, "done", "", [], 10**6, training), wh) is None
        seen.add(kind)
    assert seen == set(KINDS) - {"example", "report"}
    # a task nothing measured on this device: no estimate, and what is missing named
    other = Training("sac", "hopper", variant, backend, 2, 1000)
    est = _estimate(study, Stage("train", "todo", "", [], 2000, (other,)), wh)
    assert est.seconds is None and "no sac hopper training measured" in est.basis


def test_waiting_stages_are_estimated_from_the_file(calibrated):
    """Before training: [clones] holds one BC job per chosen teacher and its clone's
    samples; [start_states] its runs' checkpoints x (rows + s0) x samples x horizon."""
    from retland.study import stages
    from retland.warehouse import Warehouse

    folder, *_ = calibrated
    body = STUDY.replace('seeds = 2\n', 'seeds = 2\nstore_states = true\n') + """
[start_states]
rows = 3
samples = 8
horizon = 20
seeds = "1"
"""
    sub = folder / "waiting"
    sub.mkdir()
    _, study, base = _study(sub, body)
    empty = Warehouse.open(sub / "wh")
    got = {name: fn(empty) for name, fn in stages(study, base)}
    clones, ss = got["clones"], got["start_states"]
    assert clones.status == "waiting" and clones.env_steps == 2 * 8 * 20
    (w,) = clones.training
    assert (w.algo, w.seeds, w.steps, w.jobs) == ("bc", 1, 40, 2)
    assert ss.status == "waiting" and ss.env_steps == 1 * 2 * (3 + 1) * 8 * 20  # seed 1 only, 2 checkpoints


@pytest.mark.parametrize("args, says", [
    (["--calibrate"], "--calibrate times the stages' programs for --plan's estimates: give --plan too"),
])
def test_bad_calibrate_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, monkeypatch, args, says):
    path, *_ = _study(tmp_path)
    code, out, err = run_cli(capsys, monkeypatch, "study", path, *args, "-w", tmp_path / "wh")
    assert code == 2 and says in " ".join(err.split()), err
    assert len([x for x in err.splitlines() if x.strip()]) == 1
    assert not (tmp_path / "wh").exists()


def test_sampling_is_calibrated_from_a_stored_checkpoint_when_there_is_one(tmp_path, monkeypatch):
    """A warehouse with the task's trained runs but no sampling timing: the study's
    calibration times sampling from its stored checkpoint and trains nothing."""
    from analysis_jobs import TINY_TD3
    from retland.analyses.estimates import current_device
    from retland.study import stages
    from retland.study.estimate import calibrate
    from retland.train import job
    from retland.warehouse import Warehouse

    # its own copy of the tiny job (the shared one gains sampling rows, and timings with
    # them, from whichever tests ran before in this process); the compiled programs are
    # shared, and the process's record of programs it has timed is left as it was
    monkeypatch.setattr(job, "_TIMED", set())
    wh = Warehouse.open(tmp_path / "wh")
    job.train(TINY_TD3, wh)
    _, study, base = _study(tmp_path, STUDY.split("\n[clones]")[0])
    rows = [fn(wh) for _, fn in stages(study, base)]
    said = []
    done = calibrate(study, base, rows, wh, current_device(), say=said.append)
    assert [c.what.split(",")[0] for c in done] == ["td3 sampling of td3 hopper (paper)"], said
    assert wh.records("SELECT count(*) AS n FROM training_timings WHERE source = 'calibration'")[0]["n"] == 0
    assert wh.records("SELECT count(*) AS n FROM sampling_calibrations")[0]["n"] == 3
