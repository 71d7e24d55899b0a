"""The HTML report: sections from SQL, charts as Vega-Lite, one offline page.

The warehouse here is synthetic but shaped like the study: two algorithms on two
environments, two seeds, three checkpoints each, returns that grow with training and
a left tail of failures in some checkpoints (so LTP > 0), one checkpoint with negative
returns (mode ≤ 0: flagged mode_nonpositive), one gaussian-operator distribution beside the algorithms' own
updates, and learning curves in `evaluations`.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from conftest import run_cli

N_SAMPLES = 200
STEPS = (50_000, 450_000, 950_000)
BASE = {"hopper": 3000.0, "walker2d": 4200.0}


def synthetic_returns(seed: int = 0) -> pl.DataFrame:
    """Rows for `retland import-returns`: one PURD per (algo, env, seed, step[, operator])."""
    rng = np.random.default_rng(seed)
    rows = []
    for algo in ("td3", "sac"):
        for env, base in BASE.items():
            for s in (0, 1):
                for step in STEPS:
                    level = base * (0.25 + 0.75 * step / STEPS[-1]) * (1.0 if algo == "td3" else 0.9)
                    if (algo, env, s, step) == ("sac", "walker2d", 1, STEPS[0]):
                        r = rng.normal(-40.0, 15.0, N_SAMPLES)  # a policy that falls over: mode < 0
                    else:
                        p_fail = [0.0, 0.04, 0.15, 0.3][(s + STEPS.index(step) + (algo == "sac")) % 4]
                        fail = rng.random(N_SAMPLES) < p_fail
                        r = np.where(fail, level * rng.uniform(0.05, 0.45, N_SAMPLES),
                                     rng.normal(level, 0.03 * level, N_SAMPLES))
                    ops = [algo] + (["gaussian[sigma=0.0003]"] if (algo, env, s, step) == ("td3", "hopper", 0, STEPS[2]) else [])
                    for op in ops:
                        rows += [{"algo": algo, "env": env, "seed": s, "step": step, "operator": op,
                                  "update_index": i, "return": float(x)} for i, x in enumerate(r)]
    return pl.DataFrame(rows)


def build_warehouse(root: Path):
    """A warehouse with the synthetic returns imported and learning curves appended."""
    from retland.warehouse import Warehouse
    from retland.ingest.returns import import_returns

    wh = Warehouse.open(root)
    csv = root.parent / "returns.csv"
    synthetic_returns().write_csv(csv)
    import_returns(wh, csv, tag="synth")
    runs = wh.query("SELECT run_id, algo, env, seed FROM runs")
    evals = []
    for run_id, algo, env, seed in runs.iter_rows():
        for k, step in enumerate(range(0, 1_000_001, 50_000)):
            level = BASE[env] * (1 - np.exp(-step / 300_000)) * (1.0 if algo == "td3" else 0.9)
            evals.append({"run_id": run_id, "step": step, "eval_return": level + 80.0 * np.sin(k + seed),
                          "episode_length": 1000})
    wh.append("evaluations", evals)
    return wh


def add_analyses(wh) -> None:
    """Hand-made rows of every analysis over the synthetic runs, shaped as the commands
    write them: a 5×5 landscape grid with 3 samples a point, same-run and different-run
    interpolation pairs, one failure pair whose failing rollout terminates at t = 25,
    and an Algorithm 1 experiment (two arms, two seeds, three proposals) with its
    derived runs."""
    from datetime import datetime, timezone

    now = datetime.now(timezone.utc)
    rng = np.random.default_rng(1)
    runs = {(a, e, s): r for r, a, e, s in wh.query("SELECT run_id, algo, env, seed FROM runs").iter_rows()}
    source = runs[("td3", "hopper", 0)]
    grid = np.linspace(-2.0, 2.0, 5)
    wh.append("landscape_grids", [dict(
        grid_id="g5", run_id=source, step=STEPS[2], directions="update", operator_id="td3", directions_hash="h",
        directions_path="p.npz", lo=-2.0, hi=2.0, zoom=1.0, resolution=5, samples_per_point=3, sigma=0.0003,
        seed=0, horizon=1000, chunk_size=25, created_at=now)])
    wh.append("landscape_points", [dict(
        grid_id="g5", point=iy * 5 + ix, sample=k, ix=ix, iy=iy, a=float(grid[ix]), b=float(grid[iy]),
        **{"return": float(3000 - 300 * (grid[ix] ** 2 + grid[iy] ** 2) - (1500 if k == 2 and ix > 2 else 0))},
        episode_length=1000, terminated=False) for iy in range(5) for ix in range(5) for k in range(3)])
    lams = np.linspace(0, 1, 5)
    for i, (kind, a, b) in enumerate([("same-run", ("td3", "hopper", 0), ("td3", "hopper", 0)),
                                      ("same-run", ("td3", "hopper", 1), ("td3", "hopper", 1)),
                                      ("different-run", ("td3", "hopper", 0), ("td3", "hopper", 1)),
                                      ("different-run", ("sac", "hopper", 0), ("sac", "hopper", 1))]):
        pid = f"pair{i}"
        wh.append("interpolation_pairs", [dict(
            pair_id=pid, kind=kind, env="hopper", algo=a[0], run_a=runs[a], step_a=STEPS[1], run_b=runs[b],
            step_b=STEPS[2], points=5, samples=3, sigma=0.0003, seed=0, horizon=1000, chunk_size=8,
            created_at=now)])
        dip = 0.0 if kind == "same-run" else 2500.0
        wh.append("interpolation_points", [dict(
            pair_id=pid, point=p, sample=k, lam=float(lam),
            **{"return": float(3000 - dip * 4 * lam * (1 - lam) + rng.normal(0, 60))}, episode_length=1000,
            terminated=False) for p, lam in enumerate(lams) for k in range(3)])
    T, end = 40, 25
    rows = []
    for role in ("success", "failure"):
        rewards = np.where((role == "failure") & (np.arange(T) > end), 0.0, 3.0 - (role == "failure") * 0.04 * np.arange(T))
        g = np.cumsum(rewards)
        rows += [dict(pair_id=f"{source}@{STEPS[2]}/td3[h=1000,seed=0]/0-1", role=role, t=t,
                      run_id=source, step=STEPS[2], operator_id="td3", update_index=int(role == "failure"),
                      reward=float(rewards[t]), cumulative_return=float(g[t]), done=role == "failure" and t >= end,
                      torso_height=1.2, torso_pitch=0.0, stored_return=float(g[-1])) for t in range(T)]
    wh.append("trajectories", rows)
    steps, returns, derived = [], [], []
    for arm in ("reject", "baseline"):
        for seed in (0, 1):
            derived.append(dict(run_id=f"stab-{arm}-r{seed}", algo="td3", env="hopper", seed=0, source="derived",
                                parent_run_id=source, parent_step=STEPS[2], created_at=now))
            for p in range(4):
                accepted = arm == "baseline" or p % 2 == 0
                mean = 3000.0 - 150 * p * (arm == "baseline") + 40 * seed
                steps.append(dict(
                    experiment_id="e1", arm=arm, seed=seed, proposal=p, run_id=source, step=STEPS[2],
                    derived_run_id=f"stab-{arm}-r{seed}", criterion="cvar", alpha=0.1, beta=0.5, tolerance=0.0,
                    n_samples=8, accepted=accepted, last_accepted=0, mean=mean, mode=3000.0,
                    ltp=0.05 * p * (arm == "baseline") + 0.02 * seed, cvar=mean - 400, last_mean=3000.0,
                    last_ltp=0.02, last_cvar=2600.0, eval_return=mean, created_at=now))
                returns += [dict(experiment_id="e1", arm=arm, seed=seed, proposal=p, update_index=i,
                                 **{"return": float(mean + rng.normal(0, 200))}) for i in range(8)]
    wh.append("runs", derived)
    wh.append("stabilize_steps", steps)
    wh.append("stabilize_returns", returns)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return build_warehouse(tmp_path_factory.mktemp("report") / "study")


@pytest.fixture(scope="module")
def report_page(study, tmp_path_factory) -> Path:
    from retland.report import write_report

    return write_report(study, out=tmp_path_factory.mktemp("pages") / "study.html", n_resamples=100)


@pytest.fixture(scope="module")
def full_study(tmp_path_factory):
    """The synthetic study with a run of every analysis."""
    wh = build_warehouse(tmp_path_factory.mktemp("report-full") / "full")
    add_analyses(wh)
    return wh


@pytest.fixture(scope="module")
def full_page(full_study, tmp_path_factory) -> Path:
    from retland.report import write_report

    return write_report(full_study, out=tmp_path_factory.mktemp("pages") / "full.html", n_resamples=100)


def figure_specs(page: Path) -> dict[str, dict]:
    """The Vega-Lite spec of every figure in a report page, by figure name."""
    text = page.read_text()
    return {m.group(1): json.loads(m.group(2)) for m in
            re.finditer(r'<script type="application/json" data-figure="fig-([^"]+)">(.*?)</script>', text, re.S)}


def section_blocks(study, **kw):
    from retland.report import build_sections

    return {s.key: blocks for s, blocks in build_sections(study, n_resamples=0, **kw)}


# --- sections and their data -------------------------------------------------------------
def test_sections_with_data_draw_and_the_others_name_their_command(study):
    from retland.report import Figure, Note

    built = section_blocks(study)
    assert list(built) == ["contents", "learning-curves", "map", "landscape", "failures", "interpolation", "stabilize",
                           "compare"]
    figures = {k: [b.name for b in v if isinstance(b, Figure)] for k, v in built.items()}
    assert figures == {"contents": ["contents-coverage"], "learning-curves": ["learning-curves"], "map": ["map"],
                       "landscape": [], "failures": [], "interpolation": [], "stabilize": ["cvar-ranking"],
                       "compare": ["compare-iqm"]}
    notes = {k: " ".join(b.text for b in v if isinstance(b, Note)) for k, v in built.items()}
    for key, command in [("landscape", "retland landscape"), ("failures", "retland failures"),
                         ("interpolation", "retland interpolate"), ("stabilize", "retland stabilize")]:
        assert f"`{command}`" in notes[key]
    caption = next(b for b in built["map"] if isinstance(b, Figure)).caption
    assert "1 distribution with mode ≤ 0 is drawn as a triangle at its LTP" in caption


def test_an_empty_warehouse_gives_a_page_of_notes(tmp_path):
    from retland.report import build_charts, write_report
    from retland.warehouse import Warehouse

    wh = Warehouse.open(tmp_path / "empty")
    assert build_charts(wh) == {}
    page = write_report(wh, out=tmp_path / "empty.html")
    text = page.read_text()
    for command in ("retland import-returns", "retland train", "retland sample", "retland landscape"):
        assert command in text
    assert figure_specs(page) == {}


def test_histograms_are_the_statistics_own_100_bins(study):
    """The page carries binned counts, not samples, and they are numpy.histogram's."""
    from retland import stats
    from retland.report import ReportContext

    con = study.connect()
    ctx = ReportContext(con, n_resamples=0)
    dists, hist = ctx.distributions(), ctx.histograms()
    returns = study.query('SELECT run_id, step, operator_id AS operator, list("return" ORDER BY update_index) AS r '
                          "FROM post_update_returns GROUP BY ALL")
    assert hist.height <= 100 * dists.height
    for row in dists.join(returns, on=["run_id", "step", "operator"]).iter_rows(named=True):
        r = np.asarray(row["r"])
        counts, _ = np.histogram(r, bins=100)
        mine = hist.filter(pl.col("d") == row["d"])
        dense = np.zeros(100, dtype=np.int64)
        dense[mine["b"].to_numpy()] = mine["c"].to_numpy()
        np.testing.assert_array_equal(dense, counts, err_msg=row["label"])
        assert row["mode"] == pytest.approx(stats.mode(r), rel=1e-12)
        assert (row["lo"], row["hi"]) == (r.min(), r.max())
    con.close()


def test_map_starts_on_the_widest_left_tail_and_carries_bootstrap_cis(report_page):
    spec = figure_specs(report_page)["map"]
    pick = next(p for p in spec["params"] if p["name"] == "pick")
    data = {name: rows for name, rows in spec["datasets"].items()}
    dists = next(rows for rows in data.values() if rows and "ltp_text" in rows[0])
    top = max(dists, key=lambda r: -1 if r["ltp"] is None else r["ltp"])
    assert pick["value"] == [{"d": top["d"]}]
    assert top["ltp"] > 0.25
    assert re.fullmatch(r"[-0-9.]+ \[[-0-9.]+, [-0-9.]+\]", top["mean_text"])
    assert len(pick["views"]) == 3 * len({r["panel"] for r in dists})  # every scatter cell selects


def hand_made_dists(rows: list[tuple[str, float, float, float | None]]) -> pl.DataFrame:
    """Map rows (env, mean, mode, ltp) with the other columns the map reads filled in
    (mode_nonpositive from the mode)."""
    n = len(rows)
    return pl.DataFrame({
        "d": list(range(n)), "algo": ["td3"] * n, "env": [r[0] for r in rows], "seed": list(range(n)),
        "step": [100_000] * n, "operator": ["td3"] * n, "n": [100] * n, "mean": [r[1] for r in rows],
        "std": [10.0 + i for i in range(n)], "skewness": [-1.0] * n, "mode": [r[2] for r in rows],
        "ltp": [r[3] for r in rows], "mode_nonpositive": [not r[2] > 0 for r in rows], "cvar": [r[1] - 50 for r in rows], "lo": [r[1] - 100 for r in rows],
        "hi": [r[1] + 100 for r in rows], "label": [f"policy {i}" for i in range(n)]},
        schema_overrides={"ltp": pl.Float64})


def spec_nodes(node):
    """Every dict in a Vega-Lite spec, depth first."""
    if isinstance(node, dict):
        yield node
        node = list(node.values())
    if isinstance(node, list):
        for child in node:
            yield from spec_nodes(child)


def test_map_draws_distributions_with_a_non_positive_mode_at_their_ltp_with_their_own_marker():
    """Paper Fig. 2, footnote 1: policies with mode ≤ 0 sit on the right border, where the
    authors' computed LTP puts them. The map draws them at their LTP (the value every
    aggregate counts), with their own marker, counted in the caption."""
    from retland.report import charts
    from retland.report.sections import map_caption

    dists = hand_made_dists([("hopper", 3000.0, 3050.0, 0.12), ("hopper", 2900.0, 2950.0, 0.31),
                             ("hopper", -40.0, -35.0, 0.9), ("walker2d", -10.0, -12.0, 0.7),
                             ("walker2d", -20.0, 0.0, 1.0)])
    hist = pl.DataFrame({"d": [0], "b": [0], "c": [100]})
    spec = charts.landscape_map(dists, hist).to_dict()
    rows = next(v for v in spec["datasets"].values() if v and "ltp_status" in v[0])
    # each LTP axis ends at the first multiple of 0.05 above its panel's largest LTP, at most 1
    assert [(r["ltp"], r["ltp_x"], r["ltp_status"]) for r in rows] == [
        (0.12, 0.12, charts.LTP_DEFINED), (0.31, 0.31, charts.LTP_DEFINED), (0.9, 0.9, charts.LTP_BORDER),
        (0.7, 0.7, charts.LTP_BORDER), (1.0, 1.0, charts.LTP_BORDER)]
    assert rows[2]["ltp_text"] == "0.900 (mode ≤ 0)" and rows[0]["ltp_text"] == "0.120"
    ltp_cells = {}
    for node in spec_nodes(spec):
        x = node.get("encoding", {}).get("x", {})
        if x.get("field") == "ltp_x":
            panel = re.search(r"datum\.panel === '([^']+)'", json.dumps(node["transform"], ensure_ascii=False)).group(1)
            ltp_cells[panel] = x["scale"]
    # a panel's title names its operator (here each algorithm's own update, td3)
    assert ltp_cells == {"hopper · td3": {"domain": [0, 0.95], "nice": False},
                         "walker2d · td3": {"domain": [0, 1.0], "nice": False}}
    shapes = [n["shape"] for n in spec_nodes(spec) if isinstance(n.get("shape"), dict) and "field" in n["shape"]]
    assert shapes and all(s["field"] == "ltp_status" and s["scale"] == {
        "domain": [charts.LTP_DEFINED, charts.LTP_BORDER], "range": ["circle", "triangle-right"]} for s in shapes)
    caption = map_caption(dists, 0.5, 0.1, 0)
    assert "3 distributions with mode ≤ 0 are drawn as triangles at their LTP" in caption

    # every mode positive: plain points, nothing said about mode ≤ 0
    defined = dists.head(2)
    spec = charts.landscape_map(defined, hist).to_dict()
    assert not [n for n in spec_nodes(spec) if isinstance(n.get("shape"), dict)]
    assert "mode ≤ 0" not in map_caption(defined, 0.5, 0.1, 0)


def test_ltp_border_is_the_next_multiple_of_0_05_above_the_largest_ltp():
    from retland.report.charts import ltp_border

    for ltp, border in [([0.3], 0.35), ([0.12, 0.299], 0.3), ([0.0], 0.05), ([0.97], 1.0), ([None], 1.0), ([], 1.0)]:
        assert ltp_border(pl.Series(ltp, dtype=pl.Float64)) == pytest.approx(border), ltp


def test_cvar_ranking_at_alpha_1_is_the_ranking_by_mean(study):
    from retland.report.context import ReportContext
    from retland.report.sections import _cvar_rankings

    con = study.connect()
    ctx = ReportContext(con, n_resamples=0)
    ranked = _cvar_rankings(ctx, ctx.distributions())
    con.close()
    by_mean = ranked.filter(pl.col("alpha") == 1.0).with_columns(
        expected=pl.col("mean").rank("min", descending=True).over("env", "operator").cast(pl.Int32))
    assert (by_mean["rank"] == by_mean["expected"]).all()
    assert ranked.filter(pl.col("alpha") == 0.01)["rank"].to_list() != by_mean["rank"].to_list()


def test_where_narrows_every_section_and_names_the_file(study, tmp_path, monkeypatch):
    from retland.report import write_report

    monkeypatch.chdir(tmp_path)
    page = write_report(study, where="env = 'hopper'", n_resamples=0)
    assert page == Path("reports/study_sac-td3_hopper_where-env-eq-hopper.html")
    specs = figure_specs(page)
    for name in ("map", "learning-curves"):
        rows = [r for rows in specs[name]["datasets"].values() for r in rows if "env" in r]
        assert rows and {r["env"] for r in rows} == {"hopper"}
    # a condition on a statistic keeps the runs that have such a distribution
    built = section_blocks(study, where="ltp > 0.25")
    curves = next(b for b in built["learning-curves"] if hasattr(b, "chart")).chart.to_dict()
    # each seed's line: curve is the algorithm (one task variant here)
    runs = {(r["curve"], r["env"], r["seed"]) for rows in curves["datasets"].values() for r in rows if "seed" in r}
    wide = study.query("SELECT DISTINCT algo, env, seed FROM distribution_stats WHERE ltp > 0.25")
    assert runs == set(wide.iter_rows())
    # a condition on steps keeps those checkpoints in the contents
    built = section_blocks(study, where="step >= 450000")
    coverage = next(b for b in built["contents"] if hasattr(b, "chart")).chart.to_dict()
    steps = {r["step"] for rows in coverage["datasets"].values() for r in rows}
    assert steps == {450_000, 950_000}


# --- the page ---------------------------------------------------------------------------
def test_page_is_one_offline_file_with_the_libraries_once(report_page):
    from retland.report.html import vega_bundle

    text = report_page.read_text()
    assert text.count("window.vegaEmbed=") == 1
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert "<script src" not in text and "cdn.jsdelivr" not in text
    assert len(text) - len(vega_bundle()) < 400_000  # data are aggregated: no raw samples
    assert "tasks: 8 runs: variant <code>NULL</code>, task rules unknown (imported)" in text


def test_header_names_each_runs_task_rules_and_physics(tmp_path):
    """Trained runs say which rules and simulator they used (a row stored before variants
    existed reads as brax; a paper-variant run on a brax 0.14 backend predates retland's
    Brax 0.0.13 simulator), and that brax 0.14 physics is not the paper's."""
    from datetime import datetime, timezone

    from retland.report import tasks_line
    from retland.report.context import ReportContext
    from retland.warehouse import Warehouse

    wh = Warehouse.open(tmp_path / "wh")
    now = datetime.now(timezone.utc)
    rows = [("paper", "positional"), ("paper", "positional"), (None, "positional"), ("paper", "brax0013")]
    wh.append("runs", [dict(run_id=f"r{i}", algo="td3", env="hopper", seed=i, backend=b, variant=v,
                            source="trained", created_at=now) for i, (v, b) in enumerate(rows)])
    wh.append("checkpoints", [dict(run_id=f"r{i}", step=10, created_at=now) for i in range(len(rows))])
    con = wh.connect()
    try:
        line = tasks_line(ReportContext(con))
        assert line.startswith("tasks: 1 run: variant `brax`, brax 0.14's own rules")
        assert "2 runs: variant `paper`, the paper's task rules on brax 0.14's robots (a run from before retland " \
               "had Brax 0.0.13's simulator), on brax 0.14 positional physics" in line
        assert "1 run: variant `paper`, the paper's tasks (Brax 0.0.13's robots, terminations, rewards and " \
               "observations), on Brax 0.0.13 physics" in line
        assert "not comparable with the paper's number for number" in line
        assert wh.query("SELECT simulator FROM run_summary ORDER BY run_id")["simulator"].to_list() == \
            ["brax 0.14 positional"] * 3 + ["Brax 0.0.13"]
        only_paper = tasks_line(ReportContext(con, where="run_id = 'r3'"))
        assert "comparable" not in only_paper
        assert tasks_line(ReportContext(con, where="env = 'ant'")) == "tasks: no runs selected"
    finally:
        con.close()


# --- the command ------------------------------------------------------------------------
def test_cli_writes_html_and_one_svg_per_chart(study, tmp_path, capsys, monkeypatch):
    code, out, err = run_cli(capsys, monkeypatch, "report", "-w", study.root, "--bootstrap", "0",
                             "--output", tmp_path / "r.html")
    assert code == 0 and out.splitlines()[0] == str(tmp_path / "r.html"), err
    code, out, err = run_cli(capsys, monkeypatch, "report", "-w", study.root, "--bootstrap", "0",
                             "--format", "svg", "--output", tmp_path / "figs", "--where", "env = 'walker2d'")
    assert code == 0, err
    files = sorted(p.name for p in (tmp_path / "figs").iterdir())
    # td3 and sac share walker2d in the fixture, so the comparison chart is drawn too
    assert files == ["01-contents-coverage.svg", "02-learning-curves.svg", "03-map.svg", "04-cvar-ranking.svg",
                     "05-compare-iqm.svg"]
    svg = (tmp_path / "figs" / "03-map.svg").read_text()
    assert svg.startswith("<svg") and "return (sum of rewards over 1000 steps)" in svg and "LTP threshold" in svg


def test_cli_refuses_a_bad_where_with_a_message(study, capsys, monkeypatch, tmp_path):
    code, out, err = run_cli(capsys, monkeypatch, "report", "-w", study.root, "--where", "no_such_column > 1",
                             "--out", tmp_path / "x.html")
    assert code == 2 and "no_such_column" in err and not (tmp_path / "x.html").exists()


def test_png_export(study, tmp_path):
    from retland.report import build_charts, export_chart

    chart = build_charts(study, n_resamples=0, where="env = 'hopper' AND seed = 0")["map"]
    png = export_chart(chart, tmp_path / "map.png", scale=1).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


# --- in a browser -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def chromium():
    from browser import Chromium, find_chromium

    if not find_chromium():
        message = "chromium is not installed (apt-get install -y chromium)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + ": the browser test must run in CI")
        pytest.skip(message)
    with Chromium() as browser:
        yield browser


COUNT_MARKS = """JSON.stringify(Array.from(document.querySelectorAll('section[data-section]')).map(s => ({
  section: s.dataset.section,
  notes: s.querySelectorAll('.note').length,
  figures: Array.from(s.querySelectorAll('.figure')).map(f => ({
    name: f.dataset.figureName,
    marks: f.querySelectorAll('svg g.role-mark > *, canvas').length,
  })),
})))"""


def test_report_renders_in_chromium_offline_without_errors(chromium, report_page):
    page = chromium.open(report_page, ready="window.__retland && window.__retland.done")
    assert page.console_errors == []
    assert page.evaluate("window.__retland.errors") == []
    assert page.requests == [page.url]  # the page itself, nothing else
    sections = {s["section"]: s for s in json.loads(page.evaluate(COUNT_MARKS))}
    drawn = {k: [f["name"] for f in s["figures"] if f["marks"] > 0] for k, s in sections.items()}
    assert drawn == {"contents": ["contents-coverage"], "learning-curves": ["learning-curves"], "map": ["map"],
                     "landscape": [], "failures": [], "interpolation": [], "stabilize": ["cvar-ranking"],
                     "compare": ["compare-iqm"]}
    assert all(s["notes"] for k, s in sections.items() if k in ("landscape", "failures", "interpolation"))


def test_clicking_a_point_shows_its_histogram(chromium, report_page):
    page = chromium.open(report_page, ready="window.__retland && window.__retland.done")
    caption = ("Array.from(document.querySelectorAll('#fig-map g.mark-text.role-mark text'))"
               ".map(t => t.textContent).join('|')")
    before = page.evaluate(caption)
    # a point of another distribution than the one shown (drawn small, the shown one is
    # large), not covered by any other mark
    x, y = page.evaluate("""(() => {
      const view = window.__retland.views['map'], found = [];
      const walk = node => { for (const item of node.items || []) {
        if (item.mark && item.mark.marktype === 'symbol' && item.size < 100 && item._svg)
          found.push(item._svg);
        walk(item); } };
      walk(view.scenegraph().root);
      for (const el of found) {
        el.scrollIntoView({block: 'center', inline: 'center'});
        const r = el.getBoundingClientRect();
        const x = r.left + r.width / 2, y = r.top + r.height / 2;
        if (r.width > 0 && document.elementFromPoint(x, y) === el) return [x, y];
      }
      return [-1, -1];
    })()""")
    hit = page.evaluate(f"(document.elementFromPoint({x}, {y}) || {{}}).tagName")
    assert hit == "path", f"the point at ({x:.0f}, {y:.0f}) is covered by a <{hit}>"
    for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
        chromium.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
                      session=page.session)
    # a loaded machine (CI runs two test workers beside the browser) may take a while to redraw
    page.wait_until(f"({caption}) !== {json.dumps(before)}", timeout=15.0)
    after = page.evaluate(caption)
    assert "seed" in before and "seed" in after and after != before
    assert page.console_errors == []


# --- at a laptop's width, with every analysis --------------------------------------------
# Every scenegraph item that carries a tooltip, with its SVG element's box (the page uses
# the svg renderer): [{figure, i, tooltip: {key: value as text}, x, y}] after scrolling.
TOOLTIP_ITEMS = """(() => {
  const out = [];
  for (const [name, view] of Object.entries(window.__retland.views)) {
    const walk = node => {
      for (const item of node.items || []) {
        if (item.tooltip != null && typeof item.tooltip === 'object') out.push({figure: name, tooltip:
          Object.fromEntries(Object.entries(item.tooltip).map(([k, v]) => [k, v === undefined ? 'undefined' : String(v)]))});
        walk(item);
      }
    };
    walk(view.scenegraph().root);
  }
  return out;
})()"""
# Scroll a figure's first drawn point-like mark (symbol, rect, rule …) with a tooltip into
# view and return its centre on screen; lines (one path per series) only when a figure
# has nothing else, then at a point half-way along the path.
ITEM_CENTRE = """(name => {
  const found = [];
  const walk = node => { for (const item of node.items || []) {
    const el = item._svg;
    if (item.tooltip != null && el) { const r = el.getBoundingClientRect();
      if (r.width > 0 || r.height > 0) found.push([item, el]); }
    walk(item); } };
  walk(window.__retland.views[name].scenegraph().root);
  const lines = ['line', 'area', 'trail'];
  const [item, el] = found.find(([i]) => !lines.includes(i.mark.marktype)) || found[0];
  el.scrollIntoView({block: 'center', inline: 'center'});
  if (lines.includes(item.mark.marktype)) {
    const p = el.getPointAtLength(el.getTotalLength() / 2).matrixTransform(el.getScreenCTM());
    return [p.x, p.y];
  }
  const r = el.getBoundingClientRect();
  return [r.left + r.width / 2, r.top + r.height / 2];
})"""
SHOWN_TOOLTIP = """(() => {
  const t = document.getElementById('vg-tooltip-element');
  if (!t || !t.classList.contains('visible')) return null;
  return Array.from(t.querySelectorAll('tr')).map(tr => Array.from(tr.children).map(c => c.textContent));
})()"""
LEGENDS = """JSON.stringify(Object.fromEntries(Array.from(document.querySelectorAll('.figure')).map(f =>
  [f.dataset.figureName, f.querySelectorAll('g.role-legend').length])))"""


def coloured_fields(spec: dict) -> list[tuple[str, dict]]:
    """(channel, definition) of every colour channel in a Vega-Lite spec that encodes a field."""
    out = []
    for node in spec_nodes(spec):
        for channel in ("color", "fill", "stroke"):
            enc = node.get("encoding", {}).get(channel) if isinstance(node.get("encoding"), dict) else None
            if isinstance(enc, dict):
                for d in (enc, enc.get("condition")):
                    if isinstance(d, dict) and "field" in d:
                        out.append((channel, d))
    return out


def test_page_fits_a_laptop_and_its_tooltips_and_legends_say_something(chromium, full_page):
    """At 1280 px: no sideways scrolling; every mark's tooltip, and the one a hover shows,
    has a value on each line (a field the encoding misreads shows 'undefined'); every
    chart whose colour encodes a field has a legend. Lists every defect found."""
    page = chromium.open(full_page, ready="window.__retland && window.__retland.done")
    assert page.evaluate("window.__retland.errors") == [] and page.console_errors == []
    assert page.evaluate("window.innerWidth") == 1280
    problems = []
    width = page.evaluate("document.documentElement.scrollWidth")
    if width > 1280:
        problems.append(f"the page is {width} px wide")
    # a figure wider than the page's column would scroll inside its box
    wide = json.loads(page.evaluate(
        "JSON.stringify(Array.from(document.querySelectorAll('.figure')).filter(f => f.scrollWidth > f.clientWidth)"
        ".map(f => [f.dataset.figureName, f.scrollWidth, f.clientWidth]))"))
    if wide:
        problems.append(f"figures wider than the page's column (name, width, column): {wide}")

    items = page.evaluate(TOOLTIP_ITEMS)
    specs = figure_specs(full_page)
    with_tooltips = {i["figure"] for i in items}
    expected = {name for name, spec in specs.items() if '"tooltip"' in json.dumps(spec)}
    assert with_tooltips == expected and len(expected) >= 10
    for name in sorted(with_tooltips):
        bad = [i["tooltip"] for i in items if i["figure"] == name and "undefined" in i["tooltip"].values()]
        if bad:
            problems.append(f"{name}: {len(bad)} tooltips with undefined values, e.g. {bad[0]}")
    # hover the first mark of every chart, as a person would: the rendered tooltip too
    for name in sorted(with_tooltips):
        x, y = page.evaluate(f"{ITEM_CENTRE}({json.dumps(name)})")
        chromium.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y}, session=page.session)
        chromium.pump(0.25)
        shown = page.evaluate(SHOWN_TOOLTIP)
        if not shown:
            problems.append(f"{name}: no tooltip on hovering ({x:.0f}, {y:.0f})")
        elif [row for row in shown if row[-1].strip() in ("undefined", "")]:
            problems.append(f"{name}: hover shows {shown}")
        chromium.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": 1, "y": 1}, session=page.session)

    legends = json.loads(page.evaluate(LEGENDS))
    for name, spec in specs.items():
        coloured = coloured_fields(spec)
        hidden = [d["field"] for _, d in coloured if "legend" in d and d["legend"] is None]
        if coloured and not legends[name]:
            problems.append(f"{name}: colour encodes {[d['field'] for _, d in coloured]} but there is no legend")
        elif hidden:
            problems.append(f"{name}: colour encodes {hidden} with its legend turned off")
    assert not problems, "\n".join(problems)


# Every axis of every figure: its tick labels (an axis drawn without labels has none).
AXIS_LABELS = """JSON.stringify(Array.from(document.querySelectorAll('.figure')).flatMap(f =>
  Array.from(f.querySelectorAll('g.role-axis')).map(a => ({
    figure: f.dataset.figureName,
    title: Array.from(a.querySelectorAll('g.role-axis-title text')).map(t => t.textContent).join(' '),
    labels: Array.from(a.querySelectorAll('g.role-axis-label text')).map(t => t.textContent),
  }))))"""
# Axis titles and legends of every figure, with their boxes on the page.
BOXES = """JSON.stringify(Array.from(document.querySelectorAll('.figure')).map(f => ({
  figure: f.dataset.figureName,
  boxes: Array.from(f.querySelectorAll('g.role-axis-title, g.role-legend')).map(e => {
    const r = e.getBoundingClientRect();
    return {kind: e.classList.contains('role-legend') ? 'legend' : 'axis title',
            text: e.textContent.slice(0, 40), l: r.left, r: r.right, t: r.top, b: r.bottom};
  }).filter(b => b.r > b.l && b.b > b.t),
})))"""


@pytest.mark.parametrize("which", ["report_page", "full_page"])
def test_charts_are_readable(chromium, request, which):
    """A title a person would write; the histogram's markers over its bars; every axis
    with labels has at least two; no axis title runs into a legend."""
    page = chromium.open(request.getfixturevalue(which), ready="window.__retland && window.__retland.done")
    title = page.evaluate("document.querySelector('h1').textContent")
    assert "_" not in title and " · " in title and "run" in title, title
    # SVG paints later elements on top: the marker rules come after the bars
    order = page.evaluate("""(() => {
      const bars = document.querySelector('#fig-map g.mark-rect.role-mark');
      const rules = document.querySelector('#fig-map g.mark-rule.role-mark');
      return bars && rules ? bars.compareDocumentPosition(rules) : null;
    })()""")
    assert order is not None and order & 4, "the histogram's marker lines are drawn under its bars"
    problems = []
    for axis in json.loads(page.evaluate(AXIS_LABELS)):
        if len(axis["labels"]) == 1 and re.fullmatch(r"[−\-+0-9.,e%kM]+", axis["labels"][0]):  # a number scale
            problems.append(f"{axis['figure']}: axis {axis['title']!r} has one tick ({axis['labels'][0]})")
    for fig in json.loads(page.evaluate(BOXES)):
        titles = [b for b in fig["boxes"] if b["kind"] == "axis title"]
        legends = [b for b in fig["boxes"] if b["kind"] == "legend"]
        for t in titles:
            for g in legends:
                if t["l"] < g["r"] - 1 and g["l"] < t["r"] - 1 and t["t"] < g["b"] - 1 and g["t"] < t["b"] - 1:
                    problems.append(f"{fig['figure']}: axis title {t['text']!r} overlaps legend {g['text']!r}")
    assert not problems, "\n".join(problems)


# --- the failure pair's frames -------------------------------------------------------------
def add_renders(wh) -> None:
    """Frames of add_analyses' failure pair, drawn by MuJoCo from hopper poses (s0 and the
    torso tipping over: no JAX program is compiled) and stored as `retland render` stores them."""
    from retland.analyses import render as rd
    from retland.core import envs
    from retland.core import render as core_render
    from retland.core.rollout import pose

    if core_render.available() is None:
        message = core_render.unavailable_reason()
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + ": the frames test must run in CI")
        pytest.skip(message)
    sc = core_render.scene("hopper", "brax0013", "paper")
    p0 = np.asarray(pose(envs.reference_state("hopper", variant="paper")), np.float64)
    nb = sc.nb
    pid = wh.query("SELECT DISTINCT pair_id, run_id, step FROM trajectories").row(0, named=True)
    rows = []
    for role, index, length, fall in (("success", 0, 40, 0.0), ("failure", 1, 25, 1.0)):
        ks = rd.frame_steps(length, 10, role == "failure", (20,))
        poses = np.repeat(p0[None], len(ks), axis=0)
        for j, k in enumerate(ks):  # the whole body slides forward and, failing, sinks
            poses[j, 0: 3 * nb: 3] += 0.05 * k
            poses[j, 2: 3 * nb: 3] -= fall * 0.03 * k
        frames = core_render.draw(sc, poses, 96, 72)
        folder = wh.artifact_dir("renders", f"test-{role}")
        (folder / "filmstrip.png").write_bytes(rd.filmstrip(frames, ks, mark=20, end=length if fall else None))
        (folder / "animation.webp").write_bytes(rd.animation(frames, ks))
        np.savez(folder / "poses.npz", pose=poses)
        rows.append(dict(render_id=f"{pid['pair_id']}/{role}", run_id=pid["run_id"], step=pid["step"],
                         operator_id="td3", update_index=index, pair_id=pid["pair_id"], role=role, env="hopper",
                         variant="paper", backend="brax0013", stored_return=100.0, episode_length=length,
                         terminated=bool(fall), diverge_step=20, frame_steps=",".join(map(str, ks)), frame_every=10,
                         animation_every=10, width=96, height=72, renderer=rd.renderer_name(),
                         poses_path=wh.relative(folder / "poses.npz"),
                         filmstrip_path=wh.relative(folder / "filmstrip.png"),
                         animation_path=wh.relative(folder / "animation.webp")))
    wh.append("renders", rows)


@pytest.fixture(scope="module")
def frames_page(full_study, tmp_path_factory) -> Path:
    """full_study (a copy of its folder) with frames of its failure pair."""
    import shutil

    from retland.report import write_report
    from retland.warehouse import Warehouse

    root = tmp_path_factory.mktemp("report-frames") / "frames"
    shutil.copytree(full_study.root, root)
    wh = Warehouse.open(root, create=False)
    add_renders(wh)
    return write_report(wh, out=tmp_path_factory.mktemp("pages") / "frames.html", n_resamples=10)


PIXEL_VARIANCE = """(async () => Promise.all(Array.from(document.querySelectorAll(
    '.frames img.filmstrip, .frames img.animation')).map(async img => {
  await img.decode();
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let s = 0, s2 = 0; const n = d.length / 4;
  for (let i = 0; i < d.length; i += 4) { const v = (d[i] + d[i + 1] + d[i + 2]) / 3; s += v; s2 += v * v; }
  return {kind: img.className, w: img.naturalWidth, h: img.naturalHeight, variance: s2 / n - (s / n) ** 2};
})))()"""


def test_failure_frames_are_in_the_page_and_not_blank(chromium, frames_page):
    page = chromium.open(frames_page, ready="window.__retland && window.__retland.done")
    assert page.console_errors == []
    # the page itself and its inlined images (data: URLs), no other file, no network
    assert page.requests[0] == page.url and all(r.startswith("data:image/") for r in page.requests[1:])
    images = page.evaluate(PIXEL_VARIANCE)
    assert sorted(i["kind"] for i in images) == ["animation", "animation", "filmstrip", "filmstrip"]
    for img in images:
        assert img["w"] >= 96 and img["h"] >= 72
        assert img["variance"] > 100, img  # a blank (one-colour) frame has variance 0
    strips = [i for i in images if i["kind"] == "filmstrip"]
    # the failing strip ends at its termination (step 25): fewer frames than the success's 40 steps
    assert strips[0]["w"] > strips[1]["w"]
    caption = page.evaluate("document.querySelector('section#failures .frames').textContent")
    assert "falls at step 25" in caption and "part at step 20" in caption


def test_failure_pairs_without_frames_get_one_note(full_study):
    from retland.report import Note
    from retland.report.blocks import Frames

    from retland.report.analysis_charts import failure_blocks
    from retland.report.context import ReportContext

    con = full_study.connect()
    try:
        blocks = failure_blocks(ReportContext(con, n_resamples=10, root=full_study.root))
    finally:
        con.close()
    assert not any(isinstance(b, Frames) for b in blocks)
    notes = [b.text for b in blocks if isinstance(b, Note) and "frames" in b.text]
    assert len(notes) == 1 and ("retland render" in notes[0] or "no OpenGL renderer" in notes[0])
