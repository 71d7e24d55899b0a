"""`retland study`: a study file validated before anything runs, `--plan`, and a study
that is killed after its first stage and completes on rerun without redoing it."""
from __future__ import annotations

import textwrap

import pytest

from conftest import TINY_AGENT, TINY_TRAIN, parse_request, run_cli

TINY_STUDY = """\
name = "tiny"
description = "two seeds, 120 steps"

""" + TINY_TRAIN + """

[sample]
operators = ["own"]
samples = 16
horizon = 20

[report]
out = "{out}"
bootstrap = 0
"""


def _write(tmp_path, text: str, name: str = "study.toml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


@pytest.mark.parametrize("body, message", [
    ('name = "x"\nexamples = ["td3-hopper"]\nsampel = 3\n', "sampel: unknown key"),
    ('name = "x"\nexamples = ["nope"]\n', "examples: unknown example 'nope': choose from td3-hopper"),
    ('name = "x"\n', "needs policies"),
    ('name = "x"\nexamples = ["td3-hopper"]\n[failures]\npairs = 2\n', "needs a [sample] section"),
    ('name = "x"\nexamples = ["td3-hopper"]\n[sample]\nsteps = [123]\n',
     "sample.steps: [123] are not checkpoints"),
    ('name = "x"\n[[train]]\nalgo = "sac"\nseeds = 2\nsteps = 1000\ncheckpoints = [500]\n'
     '[sample]\n[stabilize]\n', "no td3 policy"),
    ('name = "x"\n[[train]]\nalgo = "sac"\nseeds = 1\nsteps = 1000\ncheckpoints = [500, 2000]\n',
     "checkpoints must be env steps in 1..1,000"),
    ('name = "x"\n[[train]]\nseeds = 2\nsteps = 1000\ncheckpoints = [500]\n[sample]\noperators = ["sac"]\n',
     "is the sac update, but the study has td3 runs"),
    ('name = "x"\nexamples = ["td3-hopper"]\n[sample]\n[landscape]\ngrid = 1\n', "grid must be >= 2"),
    ('name = "x"\nexamples = ["td3-hopper"]\n[sample]\n[failures]\ncheckpoints = "best:3"\n', "top-ltp:K"),
    ('name = "x"\nexamples = ["td3-hopper"]\n[interpolation]\n', "no [[train]] entry"),
    ('name = "x"\nexamples = ["td3-hopper"\n', "not valid TOML"),
])
def test_bad_study_files_are_refused_in_one_line_and_touch_nothing(tmp_path, capsys, monkeypatch, body, message):
    wh = tmp_path / "wh"
    code, out, err = run_cli(capsys, monkeypatch, "study", _write(tmp_path, body), "-w", wh)
    assert code == 2
    assert message in " ".join(err.split()), err
    assert not wh.exists()


DMC_STUDY = 'name = "x"\n[[train]]\nenv = "cheetah-run"\nseeds = 1\nsteps = 20000\ncheckpoints = [20000]\n[sample]\n'


def test_a_study_takes_the_tasks_train_takes_or_names_the_extra_they_need(tmp_path, capsys, monkeypatch):
    """A DeepMind Control task in a study: without MuJoCo Playground, the one line names
    the dmc extra (as `retland train` says); with it, the study plans train --variant dmc.
    Unknown tasks and rules a task does not have are refused as train refuses them."""
    from retland.config import registry

    wh = tmp_path / "wh"
    with monkeypatch.context() as m:
        m.setattr(registry, "have_playground", lambda: False)
        code, _, err = run_cli(capsys, monkeypatch, "study", _write(tmp_path, DMC_STUDY), "--plan", "-w", wh)
        assert code == 2 and "need the dmc extra: pip install 'retland[dmc]'" in " ".join(err.split()), err
    for body, message in [(DMC_STUDY.replace("cheetah-run", "Hopper"), "unknown env 'Hopper'"),
                          (DMC_STUDY.replace('env = "cheetah-run"', 'env = "hopper"\nvariant = "dmc"'),
                           "variant 'dmc' is for the DeepMind Control tasks"),
                          (DMC_STUDY.replace('env = "cheetah-run"', 'env = "hopper"\nbackend = "mjx"'),
                           "the paper variant runs on Brax 0.0.13's simulator")]:
        code, _, err = run_cli(capsys, monkeypatch, "study", _write(tmp_path, body), "--plan", "-w", wh)
        assert code == 2 and message in " ".join(err.split()), (message, err)
    if registry.have_playground():
        code, out, err = run_cli(capsys, monkeypatch, "study", _write(tmp_path, DMC_STUDY), "--plan", "-w", wh)
        assert code == 0, err
        assert "retland train --algo td3 --env cheetah-run --variant dmc" in " ".join(out.split())
    assert not wh.exists()


def test_several_problems_are_one_line_each(tmp_path, capsys, monkeypatch):
    body = 'name = "x"\nexamples = ["td3-hopper"]\ncolour = 1\n[sample]\nsamples = 0\nhorizon = -1\n'
    code, _, err = run_cli(capsys, monkeypatch, "study", _write(tmp_path, body), "-w", tmp_path / "wh")
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert code == 2 and len(lines) == 3, err
    assert any("colour: unknown key" in x for x in lines)
    assert any("sample.samples: must be >= 1" in x for x in lines)
    assert any("sample.horizon: must be >= 1" in x for x in lines)


def test_unknown_preset_names_the_presets(tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(capsys, monkeypatch, "study", "nonesuch", "-w", tmp_path / "wh")
    assert code == 2 and "presets: cpu-small, demo, minatar, paper, paper-hopper-td3" in err


# (minatar needs the minatar extra to plan: tests/core/test_minatar.py plans it)
@pytest.mark.parametrize("preset", ["demo", "cpu-small", "paper", "paper-hopper-td3"])
def test_presets_are_valid_and_plan_on_an_empty_warehouse(tmp_path, capsys, monkeypatch, preset):
    wh = tmp_path / "wh"
    code, out, err = run_cli(capsys, monkeypatch, "study", preset, "--plan", "-w", wh)
    assert code == 0, err
    text = " ".join(out.split())
    assert f"study {preset}" in text
    assert not wh.exists()  # --plan changes nothing
    if preset == "demo":
        assert "retland add-example td3-hopper" in text
        assert "512k" in text  # 2 operators x 256 samples x 1000 steps, estimated before the example is added
    if preset == "cpu-small":
        assert "--seeds 4 --seed 0 --total-steps 100000" in text and "400k" in text  # 4 x 100k training steps
    if preset == "paper":
        # TD3 on ant and walker2d: seeds 0..2 (store_states, for [start_states]) and 3..19 apart
        assert text.count("│ train ") == 14
        # A.4: 3 runs x 2 envs x 10 checkpoints x (8 rows + s0) x 1000 samples x 1000 steps;
        # A.7: 10 runs x 4 envs x 5 teachers, one 1M-step BC job and 1000 x 1000 steps of clone each
        assert "│ start_states │ waits │ 540M" in text and "│ clones │ waits │ 200M" in text
        assert "200 teachers, 200 BC job(s) of 1,000,000 gradient steps" in text
    if preset == "cpu-small":
        assert "clones 1 checkpoint of each chosen TD3 run (4 teachers, 4 BC job(s) of 10,000 gradient steps)" in text
    if preset == "paper-hopper-td3":  # the goal of one accelerator window: 20 x 1M training, 200 x 1000 samples
        assert "20M" in text and "200M" in text and text.count("│ train ") == 1


def test_plan_sees_the_example_once_added(tmp_path, capsys, monkeypatch):
    wh = tmp_path / "wh"
    code, _, err = run_cli(capsys, monkeypatch, "add-example", "td3-hopper", "-w", wh)
    assert code == 0, err
    code, out, err = run_cli(capsys, monkeypatch, "study", "demo", "--plan", "-w", wh)
    assert code == 0, err
    rows = {line.split("│")[2].strip(): line for line in out.splitlines() if line.count("│") > 4}
    assert "done" in rows["example td3-hopper"]
    assert "to do" in rows["sample"] and "512 of 512 samples missing" in rows["sample"]  # td3 and gaussian
    assert "--operator td3 --samples 256 --horizon 1000 --key-seed 0" in " ".join(out.split())


def test_a_killed_study_resumes_without_redoing_finished_stages(tmp_path, capsys, monkeypatch):
    import retland.cli.study as study_cli
    from retland.warehouse import Warehouse

    _write(tmp_path, TINY_AGENT, "tiny-agent.toml")
    report = tmp_path / "reports" / "tiny.html"
    path = _write(tmp_path, TINY_STUDY.format(out=report))
    wh_root = tmp_path / "wh"
    ran: list = []  # the requests the study ran
    seen: list = []  # all of them, to check against their command lines at the end
    real = study_cli.execute

    def killed_at_sampling(request, root, progress):
        if request.command == "sample":
            raise KeyboardInterrupt  # the process dies as the second stage starts
        ran.append(request)
        seen.append(request)
        real(request, root, progress)

    monkeypatch.setattr(study_cli, "execute", killed_at_sampling)
    code, _, err = run_cli(capsys, monkeypatch, "study", path, "-w", wh_root, "--no-progress")
    assert code == 130  # what Ctrl-C gives
    assert [a.command for a in ran] == ["train"]
    wh = Warehouse.open(wh_root, create=False)
    (job,) = set(wh.query("SELECT json_extract_string(config, '$.job_id') AS j FROM runs")["j"])

    code, out, err = run_cli(capsys, monkeypatch, "study", path, "--plan", "-w", wh_root)
    assert code == 0, err
    assert "done" in out and "64 of 64 samples missing" in " ".join(out.split())

    # one shard of the sampling (as an array job would), then the whole study
    monkeypatch.setattr(study_cli, "execute", lambda request, root, progress: (
        ran.append(request), seen.append(request), real(request, root, progress)))
    ran.clear()
    code, out, err = run_cli(capsys, monkeypatch, "study", path, "--shard", "0/2", "-w", wh_root, "--no-progress")
    assert code == 0, err
    assert [a.command for a in ran] == ["sample"] and ran[0].shard == "0/2"
    assert "--shard 0/2" in " ".join(ran[0].argv())
    assert 0 < wh.query("SELECT count(*) AS n FROM post_update_returns")["n"][0] < 64

    ran.clear()
    code, out, err = run_cli(capsys, monkeypatch, "study", path, "-w", wh_root, "--no-progress")
    assert code == 0, err
    text = " ".join(out.split())
    assert "train td3 hopper: done, skipped" in text
    assert [a.command for a in ran][:1] == ["sample"] and "train" not in [a.command for a in ran]
    assert set(wh.query("SELECT json_extract_string(config, '$.job_id') AS j FROM runs")["j"]) == {job}
    assert wh.query("SELECT count(*) AS n FROM post_update_returns")["n"][0] == 2 * 2 * 16
    assert report.is_file() and f"report {report}" in text

    # a third run finds every stage done but the report, and computes nothing
    ran.clear()
    parts = sorted(p.name for p in (wh_root / "tables").rglob("*.parquet"))
    code, out, err = run_cli(capsys, monkeypatch, "study", path, "-w", wh_root, "--no-progress")
    assert code == 0, err
    assert [a.command for a in ran] == ["stats", "report"]
    assert sorted(p.name for p in (wh_root / "tables").rglob("*.parquet")) == parts

    # what ran is what the printed command lines say: each parses back into its request
    assert {r.command for r in seen} == {"train", "sample", "stats", "report"}
    for request in seen:
        assert parse_request(capsys, monkeypatch, request.argv(), tmp_path / "elsewhere") == request


@pytest.mark.parametrize("args, message", [
    (["--until", "bogus"], "--until 'bogus': choose one of train, example"),
    (["--until", "landscape"], "the study has no landscape stage (its stages: example, sample, failures, report)"),
    (["--shard", "3/2"], "--shard 3/2: need 0 <= i < N"),
    (["--shard", "0/2", "--until", "report"], "--shard runs the sample stage only"),
    (["--shard", "0/2"], "run `retland study demo --until train`"),
])
def test_until_and_shard_are_checked_before_anything_is_written(tmp_path, capsys, monkeypatch, args, message):
    wh = tmp_path / "wh"
    code, _, err = run_cli(capsys, monkeypatch, "study", "demo", *args, "-w", wh)
    assert code == 2 and message in " ".join(err.split()), err
    assert not wh.exists()


def test_a_shard_waits_for_the_policies(tmp_path, capsys, monkeypatch):
    wh = tmp_path / "wh"
    from retland.warehouse import Warehouse

    Warehouse.open(wh)  # an empty warehouse: the example is not added yet
    code, _, err = run_cli(capsys, monkeypatch, "study", "demo", "--shard", "1/4", "-w", wh)
    assert code == 2 and "stage example td3-hopper is not done" in " ".join(err.split()), err
    assert "--until example" in err
    code, out, err = run_cli(capsys, monkeypatch, "study", "demo", "--until", "example", "-w", wh)
    assert code == 0 and "stopped after example" in " ".join(out.split()), err
    code, out, err = run_cli(capsys, monkeypatch, "study", "demo", "--plan", "-w", wh)
    assert "--samples 256 --horizon 1000 --key-seed 0" in " ".join(out.split())


@pytest.mark.parametrize("body, message", [
    ('[sample]\nown = { sac = "sac" }\n', "sample.own.sac: the study has no sac policy"),
    ('[sample]\nown = { td3 = "ppo:clip=0.1" }\n', "own.td3 = 'ppo:clip=0.1': must be a td3 operator"),
    ('[sample]\nown = { ddpg = "td3" }\n', "own.ddpg: not an algorithm"),  # bc is one (A.7)
    ('[sample]\nown = { ppo = "ppo:clip=x" }\n', "clip"),
    ('[sample]\noperators = ["td3"]\nown = { td3 = "td3" }\n', "sample.operators has no \"own\""),
    ('[sample]\n[failures]\ncheckpoints = "random:0"\n', "expected top-ltp:K or random:K with K >= 1"),
    ('[sample]\n[landscape]\ncheckpoints = "random:2"\n', "random:K chooses [failures] checkpoints only"),
    ('[sample]\n[failures]\ncheckpoints = ["r:1"]\nseed = 3\n', "narrow a top-ltp:K or random:K selection"),
    ('[sample]\n[failures]\ncheckpoints = "random:2"\nalgo = "sac"\n', "failures.algo 'sac': the study has no sac"),
    ('[sample]\n[failures]\ncheckpoints = "random:2"\nseed = -1\n', "seed must be >= 0"),
])
def test_own_operators_and_failure_selectors_are_checked(tmp_path, capsys, monkeypatch, body, message):
    wh = tmp_path / "wh"
    text = 'name = "x"\nexamples = ["td3-hopper"]\n' + body
    code, _, err = run_cli(capsys, monkeypatch, "study", _write(tmp_path, text), "-w", wh)
    assert code == 2 and message in " ".join(err.split()), err
    assert not wh.exists()


def test_paper_preset_samples_the_authors_ppo_operator_and_random_failures():
    from retland.study import load_study, preset_path, study_operator_id

    study, _ = load_study(preset_path("paper"))
    assert study_operator_id(study, "own", "ppo", "hopper") == "ppo[clip=0.1,rows=first,h=1000,seed=0]"
    assert study_operator_id(study, "own", "td3", "hopper") == "td3[h=1000,seed=0]"
    assert study_operator_id(study, "own", "sac", "ant") == "sac[h=1000,seed=0]"
    f = study.failures
    assert (f.checkpoints, f.algo, f.per_env, f.seed, f.pairs) == ("random:10", "td3", True, 0, 1)


def test_failures_stage_takes_the_first_k_usable_of_a_seeded_random_order_per_env(tmp_path, monkeypatch):
    """The stage (no warehouse: candidates and plans stubbed) takes, per env, the first K
    checkpoints of failures.order_candidates's seeded order that have a pair; one without
    a pair is passed over, and the next one takes its place."""
    import types

    from retland.analyses import failures
    from retland.study import load_study
    from retland.study import planners as st

    text = ('name = "x"\nexamples = ["td3-hopper"]\n[sample]\n[failures]\ncheckpoints = "random:2"\n'
            'per_env = true\nseed = 5\n')
    study, _ = load_study(_write(tmp_path, text))
    cands = [failures.Candidate(env, f"{env}-{i}", 1000 * i, "td3[h=1000,seed=0]", 0.1 * (i + 1))
             for env in ("hopper", "walker2d") for i in range(5)]
    order = failures.order_candidates(cands, failures.parse_selector("random:2"), 5, per_env=True)
    no_pair = order[0][1]  # hopper's second: passed over, its third is taken instead

    def plan(wh, run, step, oid, pairs):
        if (run, step) == (no_pair.run_id, no_pair.step):
            raise failures.FailureError("no sample within 10% of the mean")
        return types.SimpleNamespace(pairs=[(0, 1)])

    monkeypatch.setattr(st, "_sampled", lambda *a: True)
    monkeypatch.setattr(st, "_candidates", lambda study, op, wh, scope, algo: cands)
    monkeypatch.setattr(st, "_run_info", lambda wh, scope, run: ("td3", run.split("-")[0]))
    monkeypatch.setattr(failures, "plan", plan)
    monkeypatch.setattr(failures, "missing_pairs", lambda wh, p: p.pairs)
    stage = st._failures_stage(study, None, None)
    chosen = [(r.run, r.step) for r in stage.requests]
    want = [order[0][0], order[0][2], order[1][0], order[1][1]]
    assert chosen == [(c.run_id, c.step) for c in want]
    assert f"passed over, no sample near the mean: {no_pair.run_id}@{no_pair.step:,}" in stage.detail
    # every candidate passed over: nothing to do, said as such (not "0 pair(s) stored for ")
    monkeypatch.setattr(failures, "plan", lambda *a: (_ for _ in ()).throw(failures.FailureError("no pair")))
    stage = st._failures_stage(study, None, None)
    assert stage.status == "nothing" and not stage.requests
    assert stage.detail.startswith("no chosen checkpoint has a sample within 10% of its mean") and "hopper-" in stage.detail


def test_top_ltp_means_over_the_study_unless_per_env(tmp_path, monkeypatch):
    """One meaning of top-ltp:K in every section: the K highest over the study, K per env
    with per_env = true ([failures] and [stabilize] alike)."""
    import retland.study as study_pkg
    from retland.analyses.failures import Candidate
    from retland.study import planners as st

    text = ('name = "x"\n[[train]]\nseeds = 2\nsteps = 1000\ncheckpoints = [500]\n'
            '[[train]]\nenv = "walker2d"\nseeds = 2\nsteps = 1000\ncheckpoints = [500]\n'
            '[sample]\n[stabilize]\nsources = "top-ltp:2"\n')
    with pytest.raises(study_pkg.StudyError, match="over 2 envs: say per_env = true .K per env. or per_env = false"):
        study_pkg.load_study(_write(tmp_path, text))  # it once meant K per env: a study of several envs says which
    study, _ = study_pkg.load_study(_write(tmp_path, text + "per_env = false\n"))
    cands = [Candidate(env=env, run_id=f"{env}-s{i}", step=500, operator_id="td3", ltp=ltp)
             for env, i, ltp in (("hopper", 0, 0.4), ("hopper", 1, 0.3), ("walker2d", 0, 0.2), ("walker2d", 1, 0.1))]
    monkeypatch.setattr(st, "_candidates", lambda *a, **k: cands)
    overall = st._chosen(study, "top-ltp:2", "own", None, None, td3_only=True, per_env=study.stabilize.per_env)
    assert overall == [("hopper-s0", 500), ("hopper-s1", 500)]
    per_env = st._chosen(study, "top-ltp:2", "own", None, None, td3_only=True, per_env=True)
    assert sorted(per_env) == [("hopper-s0", 500), ("hopper-s1", 500), ("walker2d-s0", 500), ("walker2d-s1", 500)]
    paper, _ = study_pkg.load_study(study_pkg.preset_path("paper"))
    assert paper.stabilize.per_env and paper.failures.per_env  # the paper's "per task"
    with pytest.raises(study_pkg.StudyError, match="per_env narrows a top-ltp:K selection"):
        study_pkg.load_study(_write(tmp_path, text.replace('sources = "top-ltp:2"', 'sources = ["a:1"]\nper_env = true')))


START_STATES_STUDY = """\
name = "starts"

""" + TINY_TRAIN + """store_states = true

[sample]
operators = ["own"]
samples = 8
horizon = 20

[start_states]
rows = 2
steps = [120]

[report]
out = "{out}"
bootstrap = 0
"""


def test_a_start_states_stage_samples_from_stored_replay_rows_and_is_then_done(tmp_path, capsys, monkeypatch):
    """[start_states] (A.4): the study's store_states runs, 2 replay rows and s0 at their
    checkpoint 120, through `retland start-states`'s runner; a second run has nothing left."""
    _write(tmp_path, TINY_AGENT, "tiny-agent.toml")
    path = _write(tmp_path, START_STATES_STUDY.format(out=tmp_path / "starts.html"))
    root = tmp_path / "wh"
    code, out, err = run_cli(capsys, monkeypatch, "study", path, "-w", root, "--no-progress")
    assert code == 0, err
    assert "$ retland start-states --run " in out and "--rows 2" in out
    from retland.warehouse import Warehouse

    wh = Warehouse.open(root, create=False)
    ltp = wh.query("SELECT * FROM start_state_ltp")
    assert ltp.height == 2 * 2  # 2 runs x 2 rows
    rows = wh.query("SELECT run_id, operator_id, count(*) AS n FROM post_update_returns WHERE step = 120 "
                    "GROUP BY ALL ORDER BY ALL")
    assert set(rows["n"].to_list()) == {8} and rows.height == 2 * 3  # per run: s0 and two start rows
    code, out, err = run_cli(capsys, monkeypatch, "study", path, "--plan", "-w", root)
    assert code == 0, err
    line = next(x for x in out.splitlines() if x.startswith(("│", "|")) and " start_states " in x)
    assert "done" in line


def test_a_start_states_stage_needs_stored_states(tmp_path, capsys, monkeypatch):
    path = _write(tmp_path, START_STATES_STUDY.replace("store_states = true\n", "").format(out="r.html"))
    code, _, err = run_cli(capsys, monkeypatch, "study", path, "--plan", "-w", tmp_path / "wh")
    assert code == 2 and "[start_states] starts rollouts from stored replay states" in err
    assert not (tmp_path / "wh").exists()


@pytest.mark.parametrize("args, message", [
    (["--executor", "local"], "--executor local needs --jobs N"),
    (["--jobs", "2"], "--jobs is for --executor slurm or local"),
    (["--executor", "local", "--jobs", "2", "--plan"], "--plan changes nothing"),
    (["--executor", "local", "--jobs", "2", "--shard", "0/2"], "leave --shard out"),
    (["--executor", "cloud", "--jobs", "2"], "choose from none, local, slurm"),
])
def test_a_studys_cluster_options_are_checked_before_anything_runs(tmp_path, capsys, monkeypatch, args, message):
    """(The arrays themselves run against a real SLURM: tests/purd/test_slurm.py.)"""
    _write(tmp_path, TINY_AGENT, "tiny-agent.toml")
    path = _write(tmp_path, TINY_STUDY.format(out=tmp_path / "r.html"))
    code, _, err = run_cli(capsys, monkeypatch, "study", path, "-w", tmp_path / "wh", *args)
    assert code == 2 and message in " ".join(err.split()), err
    assert not (tmp_path / "wh").exists()
