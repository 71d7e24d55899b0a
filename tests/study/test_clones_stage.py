"""The [clones] stage (the paper's Appendix A.7 in a study) and `retland clone`: the
teachers a study picks, the stage waiting for training, planning one CloneRequest, running
it through `retland study` and then seeing it done; bad input refused in one line.

The TD3 job is the shared tiny one (tests/analysis_jobs.py, TINY_TRAIN's config), copied;
its clones are tiny (16-unit actor, minibatch 8, 40 gradient steps), 8 samples at horizon 20."""
from __future__ import annotations

import shutil
import textwrap

import pytest

from analysis_jobs import tiny_job
from conftest import TINY_AGENT, TINY_CLONES, TINY_TRAIN, parse_request, run_cli, tree_digest


def _study(folder, text: str = 'name = "cl"\n' + TINY_TRAIN + TINY_CLONES):
    from retland.study import load_study

    (folder / "tiny-agent.toml").write_text(TINY_AGENT)
    path = folder / "study.toml"
    path.write_text(textwrap.dedent(text))
    return path, *load_study(path)


def _stage(study, base, wh):
    from retland.study import stages

    return dict(stages(study, base))["clones"](wh)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tiny TD3 job's warehouse, copied (the clones written here reach no other module)."""
    from retland.warehouse import Warehouse

    folder = tmp_path_factory.mktemp("clones-stage")
    src, result = tiny_job()
    shutil.copytree(src.root, folder / "wh")
    return Warehouse.open(folder / "wh", create=False), result.run_ids, folder


def test_teachers_are_evenly_spaced_checkpoints_with_the_last():
    from retland.study import ClonesSpec

    steps = [50_000 + 100_000 * i for i in range(10)]
    assert ClonesSpec().teacher_steps(steps) == [150_000, 350_000, 550_000, 750_000, 950_000]  # the paper's 5
    assert ClonesSpec(teachers_per_run=3).teacher_steps(range(1, 11)) == [4, 7, 10]
    assert ClonesSpec(teachers_per_run=1).teacher_steps([60, 120]) == [120]
    assert ClonesSpec().teacher_steps([60, 120]) == [60, 120]  # fewer checkpoints than teachers: all


@pytest.mark.parametrize("body, message", [
    ('name = "x"\nexamples = ["td3-hopper"]\n[clones]\n', "[clones] clones TD3 checkpoints the study trains"),
    ('name = "x"\n[[train]]\nalgo = "sac"\nseeds = 1\nsteps = 1000\ncheckpoints = [500]\n[clones]\n',
     'it has no [[train]] entry with algo = "td3"'),
    ('name = "x"\n[[train]]\nseeds = 1\nsteps = 1000\ncheckpoints = [500]\n[clones]\nagent = { width = 3 }\n',
     "clones: agent.width: not a behaviour-cloning setting"),
    ('name = "x"\n[[train]]\nseeds = 1\nsteps = 1000\ncheckpoints = [500]\n[clones]\nagent = { batch_size = 0 }\n',
     "clones: agent.batch_size=0: Input should be greater than or equal to 1"),
    ('name = "x"\n[[train]]\nseeds = 1\nsteps = 1000\ncheckpoints = [500]\n[clones]\nteachers_per_run = 0\n',
     "clones.teachers_per_run: must be >= 1"),
])
def test_bad_clones_sections_are_refused_in_one_line(tmp_path, capsys, monkeypatch, body, message):
    (tmp_path / "s.toml").write_text(body)
    code, _, err = run_cli(capsys, monkeypatch, "study", tmp_path / "s.toml", "-w", tmp_path / "wh")
    assert code == 2 and message in " ".join(err.split()), err
    assert not (tmp_path / "wh").exists()


def test_the_stage_waits_for_training(tmp_path):
    from retland.warehouse import Warehouse

    _, study, base = _study(tmp_path)
    st = _stage(study, base, Warehouse.open(tmp_path / "empty"))
    assert st.status == "waiting" and not st.requests and "once training is done" in st.detail


def test_the_stage_clones_each_run_then_is_done(trained, capsys, monkeypatch):
    """One CloneRequest for the two runs' last checkpoints; its command line parses back to
    it; `retland study --until clones` runs it (through `retland clone`'s execute) and the
    stage is then done, with one teacher-clone pair per run in bc_pairs."""
    wh, runs, folder = trained
    path, study, base = _study(folder)
    st = _stage(study, base, wh)
    assert st.status == "todo", st.detail
    (request,) = st.requests
    assert request.teachers == tuple(f"{r}@120" for r in runs)
    assert (request.total_steps, request.samples, request.horizon) == (40, 8, 20)
    assert st.env_steps == 2 * 2 * 8 * 20  # 2 teachers x (clone + teacher) x 8 samples x horizon 20
    assert parse_request(capsys, monkeypatch, request.argv(), folder / "nowhere") == request
    code, out, err = run_cli(capsys, monkeypatch, "study", path, "--until", "clones", "--no-progress", "-w", wh.root)
    assert code == 0, err
    text = " ".join(out.split())
    assert "$ retland clone --teacher" in text and "32 sample rows written" in text, text
    done = _stage(study, base, wh)
    assert done.status == "done" and not done.requests, done.detail
    pairs = wh.query("SELECT teacher_run_id, teacher_step, clone_run_id, clone_step FROM bc_pairs "
                     "ORDER BY teacher_run_id")
    assert [(t, ts, cs) for t, ts, _, cs in pairs.rows()] == [(r, 120, 40) for r in sorted(runs)]
    from retland.study import stages

    stats, report = dict(stages(study, base))["report"](wh).requests  # the report covers the clones too
    assert all(f"'{c}'" in report.where and f"'{c}'" in stats.where for c in pairs["clone_run_id"])
    # the command itself reuses the clones and computes nothing
    before = tree_digest(wh.root)
    code, out, err = run_cli(capsys, monkeypatch, *request.argv(), "--no-progress", "-w", wh.root)
    assert code == 0 and "0 sample rows written" in out and "BC jobs trained now: none" in " ".join(out.split())
    assert tree_digest(wh.root) == before


@pytest.mark.parametrize("args, says", [
    (["--teacher", "{run}"], "expected RUN@STEP"),
    (["--teacher", "{run}@100"], "has no stored checkpoint at step 100; it has 60, 120"),
    (["--teacher", "nosuchrun@120"], "--teacher 'nosuchrun': no run id starts with it"),
    (["--teacher", "{run}@120", "--teacher", "{run}@7"], "no stored checkpoint at step 7"),
    (["--teacher", "{run}@120", "--agent", "hidden"], "--agent 'hidden': expected KEY=VALUE"),
    (["--teacher", "{run}@120", "--agent", "batch_size=0"], "batch_size"),
    (["--teacher", "{run}@120", "--samples", "0"], "--samples 0"),
    (["--teacher", "{run}@120", "--batch-size", "none"], "--batch-size 'none'"),
])
def test_bad_clone_commands_are_one_line_exit_2_and_write_nothing(trained, capsys, monkeypatch, args, says):
    wh, runs, _ = trained
    before = tree_digest(wh.root)
    args = [a.replace("{run}", runs[0]) for a in args]
    code, out, err = run_cli(capsys, monkeypatch, "clone", *args, "--total-steps", "40", "-w", wh.root)
    assert code == 2, out + err
    assert says in " ".join(err.split()) and len(err.strip().splitlines()) == 1, err
    assert tree_digest(wh.root) == before
