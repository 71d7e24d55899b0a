"""`retland compare` and the report's Comparisons section: rliable's IQM, stratified
bootstrap CIs and probability of improvement, checked against scipy and a bootstrap loop
written out here, on hand-made distributions whose scores are known by construction.

Every distribution has 10 returns: k failures at 100 and 10 − k successes at 1000
(k ≤ 4), so its mode is the top bin's midpoint (995.5; 1000 when k = 0), its LTP is
exactly k / 10 and its mean 1000 − 90k. A run has two checkpoints, so its score is the
mean of two of those.
"""
from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import scipy.stats

from conftest import run_cli, tree_digest
from retland import stats as purd_stats

STEPS = (100, 200)
# (algo, env) -> k failures at (step 100, step 200), one pair per seed
FAILURES = {
    ("td3", "hopper"): [(0, 0), (1, 0), (1, 1), (2, 1), (4, 4)],
    ("sac", "hopper"): [(1, 1), (2, 2), (3, 2), (0, 1)],
    ("td3", "walker2d"): [(0, 1), (0, 0), (2, 2), (3, 3), (1, 0)],
    ("sac", "walker2d"): [(2, 3), (4, 4), (3, 3), (1, 2)],
    ("td3", "ant"): [(1, 1), (2, 2)],  # only td3 has ant: not in the aggregate
}
# sac walker2d seed 4 falls at both checkpoints: every return negative, mode < 0; its LTP is
# the formula's value (flagged mode_nonpositive) and counts in the scores like any other
FALLEN = ("sac", "walker2d", 4)
# two other operators on one td3 run: neither is the run's own update
GAUSSIANS = {"gaussian[sigma=0.0003]": (("td3", "hopper", 0), 200, 3),
             "gaussian[sigma=0.001]": (("td3", "hopper", 0), 100, 2)}


def returns_of(k: int) -> list[float]:
    return [100.0] * k + [1000.0] * (10 - k)


def fallen_returns() -> list[float]:
    return [-10.0 - 4 * i for i in range(10)]


def expected_scores(metric: str) -> dict[tuple[str, str], np.ndarray]:
    """Run scores by (algo, env) in seed order, from the construction alone."""
    value = {"ltp": lambda k: k / 10, "mean": lambda k: (100 * k + 1000 * (10 - k)) / 10}[metric]
    out = {key: np.array([(value(a) + value(b)) / 2 for a, b in ks]) for key, ks in FAILURES.items()}
    fallen = np.mean(fallen_returns()) if metric == "mean" else purd_stats.ltp(fallen_returns())
    out[("sac", "walker2d")] = np.append(out[("sac", "walker2d")], fallen)
    return out


@pytest.fixture(scope="module")
def wh(tmp_path_factory):
    from retland.warehouse import Warehouse
    from retland.ingest.returns import import_returns

    base = tmp_path_factory.mktemp("compare")
    rows = []

    def add(algo, env, seed, step, operator, values):
        rows.extend({"algo": algo, "env": env, "seed": seed, "step": step, "operator": operator, "update_index": i,
                     "return": v} for i, v in enumerate(values))

    for (algo, env), ks in FAILURES.items():
        for seed, pair in enumerate(ks):
            for step, k in zip(STEPS, pair):
                add(algo, env, seed, step, algo, returns_of(k))
    for step in STEPS:
        add(*FALLEN, step, "sac", fallen_returns())
    for op, ((algo, env, seed), step, k) in GAUSSIANS.items():
        add(algo, env, seed, step, op, returns_of(k))
    csv = base / "returns.csv"
    pl.DataFrame(rows).write_csv(csv)
    wh = Warehouse.open(base / "wh")
    import_returns(wh, csv, tag="hand")
    return wh


def compare_cli(capsys, monkeypatch, wh, *args):
    return run_cli(capsys, monkeypatch, "compare", *args, "-w", wh.root)


# --- the estimators, against scipy and a plain loop --------------------------------------
def plain_iqm_ci(strata: list[np.ndarray], reps: int, seed: int) -> tuple[float, float]:
    """The stratified bootstrap as rliable describes it, one resample at a time: runs
    redrawn with replacement within each task, pooled, IQM; percentile interval."""
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, s.size, size=(reps, s.size)) for s in strata]
    values = []
    for b in range(reps):
        pooled = np.concatenate([s[d[b]] for s, d in zip(strata, draws)])
        values.append(scipy.stats.trim_mean(pooled, 0.25))
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def mann_whitney_p(xs: list[np.ndarray], ys: list[np.ndarray]) -> float:
    """P(X > Y) as rliable computes it: U / (n·m) per task, averaged."""
    return float(np.mean([scipy.stats.mannwhitneyu(x, y).statistic / (x.size * y.size) for x, y in zip(xs, ys)]))


def plain_poi_ci(xs, ys, reps: int, seed: int) -> tuple[float, float]:
    """X's and Y's runs redrawn independently within each task, one resample at a time."""
    rng = np.random.default_rng(seed)
    draws = []
    for x, y in zip(xs, ys):
        draws.append((rng.integers(0, x.size, size=(reps, x.size)), rng.integers(0, y.size, size=(reps, y.size))))
    values = [mann_whitney_p([x[dx[b]] for x, (dx, _) in zip(xs, draws)],
                             [y[dy[b]] for y, (_, dy) in zip(ys, draws)]) for b in range(reps)]
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def test_estimators_match_scipy_and_a_bootstrap_loop():
    from retland.analyses.compare import (
        iqm,
        probability_of_improvement,
        probability_of_improvement_ci,
        stratified_bootstrap_ci,
    )

    rng = np.random.default_rng(3)
    # unequal run counts, and ties within and across the two samples
    xs = [rng.integers(0, 5, 7) / 4, rng.integers(1, 6, 5) / 4]
    ys = [rng.integers(0, 5, 6) / 4, rng.integers(0, 5, 8) / 4]
    assert all(np.isin(x, y).any() for x, y in zip(xs, ys))
    assert iqm(np.concatenate(xs)) == pytest.approx(scipy.stats.trim_mean(np.concatenate(xs), 0.25), rel=1e-15)
    assert stratified_bootstrap_ci(xs, n_resamples=300, seed=5) == pytest.approx(plain_iqm_ci(xs, 300, 5), rel=1e-12)
    assert probability_of_improvement(xs, ys) == pytest.approx(mann_whitney_p(xs, ys), rel=1e-12)
    assert probability_of_improvement_ci(xs, ys, n_resamples=300, seed=5) == pytest.approx(
        plain_poi_ci(xs, ys, 300, 5), rel=1e-12)
    # rliable's [runs, tasks] layout and {task: runs} mappings mean the same
    x2, y2 = rng.normal(0, 1, (6, 3)), rng.normal(0, 1, (4, 3))
    assert probability_of_improvement(x2, y2) == pytest.approx(mann_whitney_p(list(x2.T), list(y2.T)), rel=1e-12)
    assert probability_of_improvement({"a": xs[0], "b": xs[1]}, {"b": ys[1], "a": ys[0]}) == pytest.approx(
        mann_whitney_p(xs, ys), rel=1e-12)


def test_probability_of_improvement_closed_forms():
    from retland.analyses.compare import probability_of_improvement

    a, b = np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0])
    assert probability_of_improvement([b], [a]) == 1.0 and probability_of_improvement([a], [b]) == 0.0
    assert probability_of_improvement([a], [a]) == 0.5  # identical runs: rliable's ½
    # one task all above, one task all tied: (1 + ½) / 2
    assert probability_of_improvement([b, a], [a, a]) == 0.75
    # 1 beats 0 and ties 1; 2 beats both: (1 + ½ + 2) / 4
    assert probability_of_improvement([np.array([1.0, 2.0])], [np.array([0.0, 1.0])]) == 0.875
    x, y = np.array([0.1, 0.5, 0.5, 0.9]), np.array([0.5, 0.2, 0.7])
    assert probability_of_improvement([x], [y]) + probability_of_improvement([y], [x]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="tasks"):
        probability_of_improvement([a, b], [a])


# --- scores from the warehouse ----------------------------------------------------------
def test_scores_are_each_runs_own_update_averaged_over_checkpoints(wh):
    from retland.analyses.compare import read_stats, run_scores

    con = wh.connect()
    try:
        stats = read_stats(con)
    finally:
        con.close()
    scores = run_scores(stats, "ltp")
    assert scores.groups == ["sac", "td3"] and scores.envs == ["ant", "hopper", "walker2d"]
    assert scores.undefined == 0 and scores.mode_nonpositive == 2  # the fallen run's two distributions, included
    assert purd_stats.ltp(fallen_returns()) == 0.6  # mode -45.82: 6 of 10 returns below -22.91
    for (algo, env), want in expected_scores("ltp").items():
        np.testing.assert_allclose(scores.runs(algo, env), want, rtol=1e-12)
    assert scores.common_envs() == ["hopper", "walker2d"]
    assert set(scores.frame["checkpoints"].to_list()) == {2}
    # the last checkpoint alone, or one step
    last = run_scores(stats, "ltp", step="last")
    np.testing.assert_allclose(last.runs("td3", "hopper"), [b / 10 for _, b in FAILURES[("td3", "hopper")]])
    first = run_scores(stats, "mean", step=100)
    np.testing.assert_allclose(first.runs("sac", "walker2d"),
                               [1000 - 90 * a for a, _ in FAILURES[("sac", "walker2d")]] + [np.mean(fallen_returns())])
    # one operator id picks its one distribution
    gauss = run_scores(stats, "ltp", operator="gaussian[sigma=0.0003]")
    assert gauss.frame.select("group", "env", "score").rows() == [("td3", "hopper", 0.3)]


# --- the command --------------------------------------------------------------------------
@pytest.mark.parametrize("metric", ["ltp", "mean"])
def test_json_matches_an_independent_computation(wh, capsys, monkeypatch, metric):
    code, out, err = compare_cli(capsys, monkeypatch, wh, "--metric", metric, "-f", "json", "--bootstrap", "200",
                                 "--bootstrap-seed", "7")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["better"] == ("lower" if metric == "ltp" else "higher")
    assert doc["groups"] == ["sac", "td3"] and doc["aggregate_envs"] == ["hopper", "walker2d"]
    assert doc["undefined_distributions"] == 0
    assert doc["mode_nonpositive_distributions"] == (2 if metric == "ltp" else 0)
    want = expected_scores(metric)
    est = {(r["env"], r["group"]): r for r in doc["estimates"]}
    assert set(est) == {("ant", "td3"), ("hopper", "sac"), ("hopper", "td3"), ("walker2d", "sac"),
                        ("walker2d", "td3"), ("all", "sac"), ("all", "td3")}
    for (env, group), row in est.items():
        strata = [want[(group, e)] for e in (["hopper", "walker2d"] if env == "all" else [env])]
        pooled = np.concatenate(strata)
        assert row["runs"] == pooled.size
        assert row["iqm"] == pytest.approx(scipy.stats.trim_mean(pooled, 0.25), rel=1e-12)
        assert (row["lo"], row["hi"]) == pytest.approx(plain_iqm_ci(strata, 200, 7), rel=1e-12)
    # P(sac better than td3): for LTP lower is better, so sac's runs are 'better' when lower
    sign = -1.0 if metric == "ltp" else 1.0
    imp = {r["env"]: r for r in doc["improvements"]}
    assert set(imp) == {"hopper", "walker2d", "all"}
    for env, row in imp.items():
        envs = ["hopper", "walker2d"] if env == "all" else [env]
        xs = [sign * want[("sac", e)] for e in envs]
        ys = [sign * want[("td3", e)] for e in envs]
        assert (row["a"], row["b"]) == ("sac", "td3")
        assert row["p"] == pytest.approx(mann_whitney_p(xs, ys), rel=1e-12)
        assert (row["lo"], row["hi"]) == pytest.approx(plain_poi_ci(xs, ys, 200, 7), rel=1e-12)
    if metric == "ltp":  # by hand: hopper sac {.1,.2,.25,.05} vs td3 {0,.05,.1,.15,.4}, lower wins
        wins = sum((s < t) + 0.5 * (s == t) for s in want[("sac", "hopper")] for t in want[("td3", "hopper")])
        assert imp["hopper"]["p"] == pytest.approx(wins / 20)


def test_table_states_the_direction_and_what_was_left_out(wh, capsys, monkeypatch):
    before = tree_digest(wh.root)
    code, out, err = compare_cli(capsys, monkeypatch, wh, "--bootstrap", "50")
    assert code == 0, err
    text = " ".join(out.split())
    assert "ltp (left-tail probability" in text and "lower is better" in text
    assert "IQM of ltp over runs (lower is better)" in text
    assert "P(sac better than td3)" in text
    assert "all (hopper, walker2d)" in text
    assert "2 distributions with mode ≤ 0 included" in text
    assert "Not in 'all' (not every algo has scores there): ant." in text
    # hopper's IQMs with their run counts: sac (.05, .1, .2, .25) -> .15; td3 (0, .05, .1, .15, .4) -> .1
    hopper = next(line for line in out.splitlines() if line.strip("│ ").startswith("hopper"))
    assert "0.150 [" in hopper and "(4)" in hopper and "0.100 [" in hopper and "(5)" in hopper
    code, out, _ = compare_cli(capsys, monkeypatch, wh, "--metric", "cvar", "--bootstrap", "0")
    assert code == 0 and "higher is better" in out and "no CIs (--bootstrap 0)" in " ".join(out.split())
    assert tree_digest(wh.root) == before  # read only


def test_csv_holds_both_tables(wh, capsys, monkeypatch, tmp_path):
    code, _, err = compare_cli(capsys, monkeypatch, wh, "--metric", "mean", "-f", "csv", "--bootstrap", "20",
                               "-o", tmp_path / "c.csv")
    assert code == 0 and "wrote" in err
    df = pl.read_csv(tmp_path / "c.csv")
    assert df.columns[:9] == ["statistic", "env", "group", "versus", "runs", "runs_versus", "estimate", "lo", "hi"]
    assert df.filter(pl.col("statistic") == "iqm").height == 7
    assert df.filter(pl.col("statistic") == "p_improvement")["versus"].to_list() == ["td3"] * 3
    assert set(df["better"]) == {"higher"}


def test_rliable_json_is_a_score_matrix_per_algo_with_the_env_order(wh, capsys, monkeypatch, tmp_path):
    path = tmp_path / "scores.json"
    code, _, err = compare_cli(capsys, monkeypatch, wh, "--metric", "ltp", "-f", "rliable-json", "-o", path)
    assert code == 0, err
    doc = json.loads(path.read_text())
    assert doc["format"] == "retland-compare-scores/1" and doc["better"] == "lower"
    assert doc["envs"] == ["ant", "hopper", "walker2d"]
    assert set(doc["scores"]) == {"sac", "td3"} and doc["complete"] is False
    want = expected_scores("ltp")
    for algo, matrix in doc["scores"].items():
        depth = max(len(want.get((algo, e), [])) for e in doc["envs"])
        assert len(matrix) == depth and all(len(row) == 3 for row in matrix)
        for j, env in enumerate(doc["envs"]):
            column = [row[j] for row in matrix]
            have = want.get((algo, env), np.array([]))
            assert column[:have.size] == pytest.approx(list(have), rel=1e-12)
            assert column[have.size:] == [None] * (depth - have.size)
            seeds = [row[j] for row in doc["seeds"][algo]]
            assert seeds[:have.size] == list(range(have.size))
            runs = [row[j] for row in doc["runs"][algo]]
            assert runs[:have.size] == [f"{algo}-{env}-hand-s{s}" for s in range(have.size)]
    # the complete columns, fed to an IQM as rliable would, give the aggregate
    td3 = np.array(doc["scores"]["td3"], dtype=float)[:, 1:]
    assert scipy.stats.trim_mean(td3, 0.25, axis=None) == pytest.approx(
        scipy.stats.trim_mean(np.concatenate([want[("td3", "hopper")], want[("td3", "walker2d")]]), 0.25))


BAD = {
    "unknown metric": (["--metric", "skewness"], "--metric 'skewness': choose from ltp, cvar, mean, std"),
    "by not a column": (["--by", "colour"], "--by 'colour' is not a column; choose from algo, variant, source"),
    "by a distribution column": (["--by", "step"], "--by 'step' is a column, but not one that compare groups runs by"),
    "one algo": (["--where", "algo = 'td3'"], "the selection has scores of 1 algo (td3); a comparison needs at "
                                              "least 2 values of --by algo"),
    "one algo, rliable-json": (["--where", "algo = 'td3'", "-f", "rliable-json"], "needs at least 2 values"),
    "no algo": (["--operator", "ppo"], "the selection has scores of no algo"),
    "two operators match": (["--operator", "gaussian"], "run td3-hopper-hand-s0 has distributions under 2 "
                                                        "operators matching 'gaussian'"),
    "bad step": (["--step", "first"], "--step 'first': give all, last or a checkpoint step"),
    "bad reps": (["--bootstrap", "-1"], "--bootstrap -1"),
    "nothing matches": (["--where", "env = 'humanoid'"], "no post-update return distributions match"),
    "where does not parse": (["--where", "algo = = 'x'"], "--where"),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_is_one_line_and_exit_2(wh, capsys, monkeypatch, name):
    args, needle = BAD[name]
    before = tree_digest(wh.root)
    code, out, err = compare_cli(capsys, monkeypatch, wh, *args)
    assert code == 2, (out, err)
    assert err.startswith("error:") and needle in " ".join(err.split()), err
    assert len(err.strip().splitlines()) == 1 and out == ""
    assert tree_digest(wh.root) == before


# --- the report ---------------------------------------------------------------------------
def test_report_section_draws_interval_estimates_or_says_why_not(wh):
    from retland.report import Figure, Note, Table
    from retland.report.compare_charts import compare_blocks
    from retland.report.context import ReportContext

    con = wh.connect()
    try:
        blocks = compare_blocks(ReportContext(con, n_resamples=50))
        alone = compare_blocks(ReportContext(con, where="algo = 'td3'", n_resamples=50))
    finally:
        con.close()
    figures = [b for b in blocks if isinstance(b, Figure)]
    assert [f.name for f in figures] == ["compare-iqm"]
    spec = figures[0].chart.to_dict()
    assert [p["title"] for p in spec["hconcat"]] == ["LTP", "CVaR", "mean return"]
    rows = [r for rows in spec["datasets"].values() for r in rows]
    assert all(None not in r.values() and r["iqm_text"] for r in rows)
    ltp = {(r["env"], r["algo"]): r for r in rows if r["metric"] == "ltp"}
    assert ltp[("hopper", "sac")]["iqm"] == pytest.approx(0.15) and ltp[("all envs", "td3")]["runs"] == 10
    table = next(b for b in blocks if isinstance(b, Table)).frame
    assert table.height == 9 and set(table["A"]) == {"sac"}
    assert any(isinstance(b, Note) and "2 distributions with mode ≤ 0" in b.text for b in blocks)
    assert len(alone) == 1 and isinstance(alone[0], Note) and "two algorithms" in alone[0].text
