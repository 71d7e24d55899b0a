"""`retland study`: a study file validated before anything runs, `--plan`, and a study
that is killed after its first stage and completes on rerun without redoing it."""
from __future__ import annotations

import textwrap

import pytest

from conftest import run_cli

# The tiny TD3 job of tests/analysis_jobs.py (same config, so the same compiled programs).
TINY_AGENT = """\
horizon = 20

[agent]
algo = "td3"
hidden = [16, 16]
batch_size = 8
learning_starts = 40
buffer_size = 120
"""

TINY_STUDY = """\
name = "tiny"
description = "two seeds, 120 steps"

[[train]]
algo = "td3"
env = "hopper"
seeds = 2
steps = 120
checkpoints = [60, 120]
eval_every = 60
config = "tiny-agent.toml"

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
    assert code == 2 and "presets: cpu-small, demo, paper" in err


@pytest.mark.parametrize("preset", ["demo", "cpu-small", "paper"])
def test_presets_are_valid_and_plan_on_an_empty_warehouse(tmp_path, capsys, monkeypatch, preset):
    wh = tmp_path / "wh"
    code, out, err = run_cli(capsys, monkeypatch, "study", preset, "--plan", "-w", wh)
    assert code == 0, err
    text = " ".join(out.split())
    assert f"study {preset}" in text
    assert not wh.exists()  # --plan changes nothing
    if preset == "demo":
        assert "retland add-example td3-hopper" in text
        assert "256k" in text  # 256 samples x 1000 steps, estimated before the example is added
    if preset == "cpu-small":
        assert "--seeds 4 --seed 0 --steps 100000" in text and "400k" in text  # 4 x 100k training steps
    if preset == "paper":
        assert text.count("│ train ") == 12


def test_plan_sees_the_example_once_added(tmp_path, capsys, monkeypatch):
    wh = tmp_path / "wh"
    code, _, err = run_cli(capsys, monkeypatch, "add-example", "td3-hopper", "-w", wh)
    assert code == 0, err
    code, out, err = run_cli(capsys, monkeypatch, "study", "demo", "--plan", "-w", wh)
    assert code == 0, err
    rows = {line.split("│")[2].strip(): line for line in out.splitlines() if line.count("│") > 4}
    assert "done" in rows["example td3-hopper"]
    assert "to do" in rows["sample"] and "256 of 256 samples missing" in rows["sample"]
    assert "--operator td3 --samples 256 --horizon 1000 --key-seed 0" in " ".join(out.split())


def test_a_killed_study_resumes_without_redoing_finished_stages(tmp_path, capsys, monkeypatch):
    import retland.cli.study as study_cli
    from retland.warehouse import Warehouse

    _write(tmp_path, TINY_AGENT, "tiny-agent.toml")
    report = tmp_path / "reports" / "tiny.html"
    path = _write(tmp_path, TINY_STUDY.format(out=report))
    wh_root = tmp_path / "wh"
    ran: list[list[str]] = []
    real = study_cli.run_command

    def killed_at_sampling(argv):
        if argv[0] == "sample":
            raise KeyboardInterrupt  # the process dies as the second stage starts
        ran.append(argv)
        real(argv)

    monkeypatch.setattr(study_cli, "run_command", killed_at_sampling)
    code, _, err = run_cli(capsys, monkeypatch, "study", path, "-w", wh_root, "--no-progress")
    assert code == 130  # what Ctrl-C gives
    assert [a[0] for a in ran] == ["train"]
    wh = Warehouse.open(wh_root, create=False)
    (job,) = set(wh.query("SELECT json_extract_string(config, '$.job_id') AS j FROM runs")["j"])

    code, out, err = run_cli(capsys, monkeypatch, "study", path, "--plan", "-w", wh_root)
    assert code == 0, err
    assert "done" in out and "64 of 64 samples missing" in " ".join(out.split())

    # one shard of the sampling (as an array job would), then the whole study
    monkeypatch.setattr(study_cli, "run_command", lambda argv: (ran.append(argv), real(argv)))
    ran.clear()
    code, out, err = run_cli(capsys, monkeypatch, "study", path, "--shard", "0/2", "-w", wh_root, "--no-progress")
    assert code == 0, err
    assert [a[0] for a in ran] == ["sample"] and "--shard 0/2" in " ".join(ran[0])
    assert 0 < wh.query("SELECT count(*) AS n FROM post_update_returns")["n"][0] < 64

    ran.clear()
    code, out, err = run_cli(capsys, monkeypatch, "study", path, "-w", wh_root, "--no-progress")
    assert code == 0, err
    text = " ".join(out.split())
    assert "train td3 hopper: done, skipped" in text
    assert [a[0] for a in ran][:1] == ["sample"] and "train" not in [a[0] for a in ran]
    assert set(wh.query("SELECT json_extract_string(config, '$.job_id') AS j FROM runs")["j"]) == {job}
    assert wh.query("SELECT count(*) AS n FROM post_update_returns")["n"][0] == 2 * 2 * 16
    assert report.is_file() and f"report {report}" in text

    # a third run finds every stage done but the report, and computes nothing
    ran.clear()
    parts = sorted(p.name for p in (wh_root / "tables").rglob("*.parquet"))
    code, out, err = run_cli(capsys, monkeypatch, "study", path, "-w", wh_root, "--no-progress")
    assert code == 0, err
    assert [a[0] for a in ran] == ["stats", "report"]
    assert sorted(p.name for p in (wh_root / "tables").rglob("*.parquet")) == parts


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
