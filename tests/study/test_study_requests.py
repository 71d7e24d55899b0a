"""A study's stages hold the library's requests, and each renders itself faithfully: the
command line it prints (`argv()`, what `--plan` shows) parses, through the real command's
option parsing and checks, into an equal request, for every stage kind."""
from __future__ import annotations

import textwrap
import types

import pytest

from conftest import TINY_AGENT, parse_request, run_cli


@pytest.fixture(scope="module")
def example_wh(tmp_path_factory):
    """A warehouse holding the shipped TD3 hopper example (no JAX compile), added by a
    study's example stage run through the library runners (`retland.study.run`)."""
    from retland.study import load_study, stages
    from retland.study.run import run_stage
    from retland.warehouse import Warehouse

    folder = tmp_path_factory.mktemp("requests")
    wh = Warehouse.open(folder / "wh")
    (folder / "ex.toml").write_text('name = "ex"\nexamples = ["td3-hopper"]\n')
    study, base = load_study(folder / "ex.toml")
    plan = dict((name, fn) for name, fn in stages(study, base))["example td3-hopper"]
    stage = plan(wh)
    assert stage.status == "todo" and [r.argv() for r in stage.requests] == [["add-example", "td3-hopper"]]
    (done,) = run_stage(wh, stage)
    assert not done.present and plan(wh).status == "done"  # the stage sees what its runner wrote
    return wh


def _stages(tmp_path, wh, text: str, name: str = "study.toml", only=None) -> dict:
    """name -> Stage of a study file, each planned against `wh` as it stands."""
    from retland.study import load_study, stages

    (tmp_path / "tiny-agent.toml").write_text(TINY_AGENT)
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    study, base = load_study(path)
    return {name: fn(wh) for name, fn in stages(study, base) if only is None or name in only}


def _round_trip(capsys, monkeypatch, tmp_path, request) -> None:
    argv = request.argv()
    assert argv[0] == request.command
    nowhere = tmp_path / "not-opened"
    assert parse_request(capsys, monkeypatch, argv, nowhere) == request, argv
    assert not nowhere.exists()  # the command stopped before its runner: nothing read or written


def _every_clone_option():
    """A CloneRequest ([clones]'s request, `retland clone`) with every field off its default."""
    from retland.analyses.clones import CloneRequest

    return CloneRequest(teachers=("td3-hopper-x-s0@60", "td3-hopper-x-s1@120"), total_steps=300,
                        checkpoints=(100, 300), eval_every=50, seeds=2, seed=3,
                        agent={"hidden": [16, 16], "batch_size": 8, "learning_rate": 0.001}, samples=8, horizon=20,
                        key_seed=4, clone_steps="all", sample_teachers=False, batch_size=4)


def test_planned_requests_render_as_commands_that_parse_back(example_wh, tmp_path, capsys, monkeypatch):
    """train, example, sample (and a shard of it), landscape, stabilize, stats and report
    as the planners make them, non-default options included."""
    from retland.study.run import sharded

    ex = example_wh.query("SELECT run_id, step FROM checkpoints").to_dicts()[0]
    ref = f"{ex['run_id']}:{ex['step']}"
    text = f"""\
        name = "rt"
        examples = ["td3-hopper"]

        [[train]]
        algo = "td3"
        env = "hopper"
        seeds = 2
        seed = 3
        steps = 120
        checkpoints = [120, 60]
        eval_every = 60
        config = "tiny-agent.toml"

        [sample]
        operators = ["own", "gaussian:0.01"]
        samples = 8
        horizon = 20
        key_seed = 4

        [landscape]
        checkpoints = ["{ref}"]
        grid = 3
        range = "-1:1.5"
        zoom = [1.0, 0.25]
        directions = "gaussian"
        operator = "gaussian:0.01"
        samples_per_point = 2
        sigma = 0.02
        seed = 5
        horizon = 7

        [stabilize]
        sources = ["{ref}"]
        proposals = 2
        samples = 8
        seeds = "0,2..3"
        criterion = "ltp"
        alpha = 0.2
        tolerance = 0.5

        [report]
        out = "out/rt.html"
        bootstrap = 7
        """
    st = _stages(tmp_path, example_wh, text)
    kinds = {}
    for stage in st.values():
        for r in stage.requests:
            kinds.setdefault(r.command, []).append(r)
    assert st["example td3-hopper"].done
    assert set(kinds) == {"train", "sample", "landscape", "stabilize", "stats", "report"}, kinds
    from retland.warehouse import Warehouse

    empty = _stages(tmp_path, Warehouse.open(tmp_path / "empty"), 'name = "e"\nexamples = ["td3-hopper"]\n',
                    "examples.toml")
    kinds["add-example"] = empty["example td3-hopper"].requests  # done in example_wh
    (train,) = kinds["train"]
    assert train.checkpoints == (60, 120) and train.config == tmp_path / "tiny-agent.toml"
    (land,) = kinds["landscape"]
    assert (land.run_id, land.step, land.zoom, land.lo, land.hi) == (ex["run_id"], ex["step"], (1.0, 0.25), -1.0, 1.5)
    (stab,) = kinds["stabilize"]
    assert stab.source == ((ex["run_id"], ex["step"]),) and stab.config.seeds == (0, 2, 3)
    assert len(kinds["sample"]) == 2  # own (td3) and gaussian, each over the example's checkpoint
    requests = [r for rs in kinds.values() for r in rs]
    requests += sharded(st["sample"], "1/3").requests
    for request in [*requests, _every_clone_option()]:
        _round_trip(capsys, monkeypatch, tmp_path, request)
    # the plan prints the same lines
    code, out, err = run_cli(capsys, monkeypatch, "study", tmp_path / "study.toml", "--plan", "-w", example_wh.root)
    assert code == 0, err
    text = " ".join(out.split())
    from retland.cli.study import shell_join

    for request in requests[:-2]:
        if request.command == "add-example":
            continue
        assert "retland " + shell_join(request.argv()) in text


def test_failures_and_interpolation_stages_render_faithfully(tmp_path, capsys, monkeypatch):
    """The two planners that need sampled or trained checkpoints, on stubbed warehouse
    reads (test_study runs them for real): their requests parse back."""
    from retland.analyses import failures, interpolation
    from retland.study import planners

    text = ('name = "x"\n[[train]]\nseeds = 2\nsteps = 120\ncheckpoints = [60, 120]\nconfig = "tiny-agent.toml"\n'
            '[sample]\n[failures]\ncheckpoints = "top-ltp:1"\npairs = 2\n'
            '[interpolation]\npairs = "same-run"\npairs_per_kind = 3\npair_seed = 2\npoints = 5\nsamples = 2\n'
            'sigma = 0.003\nseed = 1\nhorizon = 9\n')
    cand = failures.Candidate("hopper", "td3-hopper-x-s0", 60, "td3[h=1000,seed=0]", 0.3)
    monkeypatch.setattr(planners, "_sampled", lambda *a: True)
    monkeypatch.setattr(planners, "_candidates", lambda *a, **k: [cand])
    monkeypatch.setattr(planners, "_run_info", lambda wh, scope, run: ("td3", "hopper"))
    monkeypatch.setattr(failures, "plan", lambda *a: types.SimpleNamespace(pairs=[(0, 1), (2, 3)]))
    monkeypatch.setattr(failures, "missing_pairs", lambda wh, p: p.pairs)
    scope = planners.Scope(jobs={0: ("job", ["td3-hopper-x-s0", "td3-hopper-x-s1"], True)})
    monkeypatch.setattr(planners, "study_scope", lambda *a: scope)
    monkeypatch.setattr(interpolation, "select_pairs", lambda *a: types.SimpleNamespace(pairs=["p"]))
    monkeypatch.setattr(interpolation, "plan", lambda *a, **k: [types.SimpleNamespace(present=(), horizon=9)])
    st = _stages(tmp_path, None, text, only=("failures", "interpolation"))
    (fail,) = st["failures"].requests
    assert (fail.run, fail.step, fail.operator, fail.pairs) == ("td3-hopper-x-s0", 60, "td3[h=1000,seed=0]", 2)
    (interp,) = st["interpolation"].requests
    assert (interp.env, interp.pair_kind, interp.settings.points, interp.settings.horizon) == ("hopper", "same-run", 5, 9)
    for request in (fail, interp):
        _round_trip(capsys, monkeypatch, tmp_path, request)


def test_every_option_of_every_request_renders_faithfully(tmp_path, capsys, monkeypatch):
    """Requests with every field away from its default (what a stage may hold, and what
    the lead's new stages will), each through its command's parsing."""
    from retland.analyses.distributions import StatsRequest
    from retland.analyses.failures import FailuresRequest
    from retland.analyses.interpolation import InterpolationRequest
    from retland.analyses.stabilize import StabilizeRequest
    from retland.analyses.start_states import StartStatesRequest
    from retland.config.settings import InterpolationSettings, LandscapeRequest, StabilizeConfig
    from retland.purd.job import SampleRequest
    from retland.report import ReportRequest
    from retland.shipped import ExampleRequest
    from retland.train.request import TrainRequest

    (tmp_path / "tiny-agent.toml").write_text(TINY_AGENT)
    where = "env = 'hopper' AND ltp > 0"
    requests = [
        TrainRequest(algo="td3", env="hopper", variant="paper", backend="brax0013", seeds=2, seed=1,
                     total_steps=120, checkpoints=(60, 120), eval_every=60, config=tmp_path / "tiny-agent.toml"),
        TrainRequest(resume="td3-hopper-0123"),
        ExampleRequest("td3-hopper"),
        SampleRequest("gaussian:0.01", runs=("a", "b"), algo="td3", env="hopper", seeds=(0, 2), steps=(5, 7),
                      sources=("trained", "derived"), samples=9, horizon=11, key_seed=3, batch_size=4, devices=1,
                      shard="1/2", targets=(("ltp", 0.01), ("cvar", 5.0)), max_samples=99, round_samples=30, pack=64),
        FailuresRequest(run="r", step=5, seed=1, operator="td3", pairs=2),
        FailuresRequest(checkpoints="random:3", env="hopper", algo="td3", where=where, per_env=True,
                        selection_seed=4, operator="td3", pairs=3),
        LandscapeRequest("r", 5, "filter-normalized", "sac", 5, -0.5, 3.0, (1.0, 0.5, 0.125), 3, 0.01, 2, 17),
        InterpolationRequest(env="walker2d", algo="sac", pair_kind="different-run", settings=InterpolationSettings(
            points=3, samples=2, sigma=0.0, seed=4, horizon=8, pairs_per_kind=7, pair_seed=9)),
        InterpolationRequest(a="r:1", b="q:2", settings=InterpolationSettings(points=4, samples=1)),
        StabilizeRequest(run=("r", "q"), step=(1, 2), source=(("p", 3),), sources="top-ltp:4", env="hopper",
                         where=where, operator="td3", skip_done=False,
                         config=StabilizeConfig(run_id="-", step=0, proposals=3, samples=5, criterion="mean",
                                                alpha=0.3, tolerance=1.5, arms=("reject",), seeds=(4, 6), chunk=16)),
        StatsRequest(where=where, sources=("trained", "derived"), alpha=0.2, beta=0.4, bootstrap=50),
        ReportRequest(where=where, output=tmp_path / "charts", fmt="svg", alpha=0.05, beta=0.25, bootstrap=0),
        StartStatesRequest(runs=("r", "q"), algo="td3", env="hopper", seeds=(0, 2), steps=(5, 7),
                           sources=("trained", "derived"), operator="td3", start="rows:3,9", samples=7, horizon=11,
                           key_seed=2, batch_size=4, s0=False, bootstrap=50, bootstrap_seed=3),
        StartStatesRequest(runs=("r",), rows=3),
    ]
    for request in requests:
        _round_trip(capsys, monkeypatch, tmp_path, request)


def test_a_request_the_study_does_not_know_has_no_runner():
    from retland.study.run import RUNNERS, runner_of

    with pytest.raises(TypeError, match="no runner for str"):
        runner_of("sample")
    from retland.cli.study import EXECUTE

    assert set(RUNNERS) == set(EXECUTE)  # the study's library runners and the commands' cover the same kinds
