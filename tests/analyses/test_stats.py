"""The PURD statistics: NumPy (retland.stats) against hand results, scipy/numpy, exact
rational arithmetic, and the SQL twin in schema/10_stats.sql."""

import math
from fractions import Fraction

import duckdb
import numpy as np
import pytest
import scipy.stats
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO
from retland import stats

SCHEMA = REPO / "schema" / "10_stats.sql"
FIELDS = ("n", "mean", "std", "skewness", "mode", "ltp", "mode_nonpositive", "cvar")
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- samples -------------------------------------------------------------------------

def _edge_values(draw) -> np.ndarray:
    """Returns on numpy.histogram's bin edges and one ulp either side of them, where
    the scaled bin guess is most often off by one and numpy corrects it."""
    lo = draw(st.floats(-5000, 5000))
    hi = lo + draw(st.floats(1e-6, 1e4))
    edges = np.linspace(lo, hi, 101)
    near = np.concatenate([edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf)])
    picks = draw(st.lists(st.integers(0, near.size - 1), min_size=1, max_size=60))
    return np.clip(np.concatenate([[lo, hi], near[picks]]), lo, hi)


# Deviations below ~1e-100 would underflow when cubed; returns never get near that.
returns = st.floats(-5000, 5000).filter(lambda v: v == 0 or abs(v) >= 1e-100)


@st.composite
def samples(draw) -> np.ndarray:
    """Random and adversarial samples of returns, shape [N]."""
    kind = draw(st.sampled_from(
        ["random", "ties", "constant", "single", "left_tail", "huge", "tiny_spread", "edges"]
    ))
    size = st.integers(2, 120)
    if kind == "random":
        return np.array(draw(st.lists(returns, min_size=1, max_size=120)))
    if kind == "ties":
        values = draw(st.lists(returns, min_size=1, max_size=4))
        return np.array(draw(st.lists(st.sampled_from(values), min_size=2, max_size=120)))
    if kind == "constant":
        return np.full(draw(size), draw(returns))
    if kind == "single":
        return np.array([draw(returns)])
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(size)
    if kind == "left_tail":
        body = rng.uniform(2500, 3500, n)
        crashed = rng.random(n) < 0.1
        return np.where(crashed, -rng.pareto(1.5, n) * 1000, body)
    if kind == "huge":
        return rng.normal(draw(st.floats(-1e6, 1e6)), 1e5, n)
    if kind == "tiny_spread":
        base = draw(st.floats(1e3, 1e6))
        return base + rng.integers(0, 50, n) * np.spacing(base)
    return _edge_values(draw)


# --- the SQL twin --------------------------------------------------------------------

@pytest.fixture(scope="module")
def con():
    c = duckdb.connect()
    c.execute(
        """CREATE TABLE post_update_returns (run_id VARCHAR, step BIGINT, operator_id VARCHAR,
               update_index BIGINT, "return" DOUBLE, discounted_return DOUBLE,
               episode_length INTEGER, terminated BOOLEAN)"""
    )
    c.execute("CREATE TABLE runs (run_id VARCHAR, algo VARCHAR, env VARCHAR, seed INTEGER, variant VARCHAR, "
              "source VARCHAR)")
    c.execute((SCHEMA.parent / "00_common.sql").read_text())
    c.execute(SCHEMA.read_text())
    return c


def load(con, distributions: list[np.ndarray]) -> None:
    """Distribution i becomes run f'run{i}' at step i, registered in `runs` with seed i."""
    con.execute("DELETE FROM post_update_returns")
    con.execute("DELETE FROM runs")
    for i, r in enumerate(distributions):
        con.execute(
            """INSERT INTO post_update_returns
               SELECT $run, $i, 'td3-update', generate_subscripts($r, 1) - 1, unnest($r),
                      0.0, 1000, false""",
            {"run": f"run{i}", "i": i, "r": [float(v) for v in r]},
        )
        con.execute(
            "INSERT INTO runs VALUES ($run, 'td3', 'hopper', $i, 'paper', 'trained')", {"run": f"run{i}", "i": i}
        )


def sql_stats(con, alpha: float = 0.1, beta: float = 0.5) -> list[dict]:
    rows = con.execute(
        f"SELECT * FROM purd_stats(alpha := {alpha!r}, beta := {beta!r})"
    ).fetchall()
    columns = [d[0] for d in con.description]
    return [dict(zip(columns, row)) for row in rows]


def assert_close(sql: dict, ref: stats.Summary, scale: float) -> None:
    """1e-9 relative, with an absolute floor of 1e-9 of the sample's magnitude for
    statistics in return units; bin-based statistics use identical arithmetic in both
    twins and must match exactly."""
    assert sql["n"] == ref.n
    assert sql["mode"] == ref.mode
    assert sql["ltp"] == ref.ltp
    assert sql["mode_nonpositive"] is ref.mode_nonpositive
    for name in ("mean", "std", "cvar"):
        assert sql[name] == pytest.approx(getattr(ref, name), rel=1e-9, abs=1e-9 * scale), name
    if math.isnan(ref.skewness):
        assert sql["skewness"] is None
    else:
        assert sql["skewness"] == pytest.approx(ref.skewness, rel=1e-9, abs=1e-9)


@SETTINGS
@given(
    st.lists(samples(), min_size=1, max_size=4),
    st.sampled_from([0.1, 0.05, 0.25, 1.0, 0.37]),
    st.sampled_from([0.5, 0.9, 0.0]),
)
def test_sql_purd_stats_matches_numpy(con, distributions, alpha, beta):
    load(con, distributions)
    rows = sql_stats(con, alpha, beta)
    assert [(r["run_id"], r["step"], r["seed"], r["algo"]) for r in rows] == [
        (f"run{i}", i, i, "td3") for i in range(len(distributions))
    ]
    for row, r in zip(rows, distributions):
        assert_close(row, stats.summarize(r, alpha=alpha, beta=beta), np.abs(r).max())


@SETTINGS
@given(samples(), st.sampled_from([0.1, 0.5]))
def test_sql_list_macros_match_numpy(con, r, alpha):
    row = con.execute(
        f"""SELECT purd_mean(l), purd_std(l), purd_skewness(l), purd_mode(l),
                   purd_ltp(l, beta := 0.5), purd_cvar(l, alpha := {alpha!r})
            FROM (SELECT $r::DOUBLE[] AS l)""",
        {"r": [float(v) for v in r]},
    ).fetchone()
    ref = stats.summarize(r, alpha=alpha)
    as_sql = dict(zip(("mean", "std", "skewness", "mode", "ltp", "cvar"), row))
    assert_close({**as_sql, "n": r.size, "mode_nonpositive": ref.mode_nonpositive}, ref, np.abs(r).max())


@SETTINGS
@given(samples())
def test_sql_bins_are_numpys_bins(con, r):
    lo, hi = float(r.min()), float(r.max())
    if lo == hi:
        return
    sql_bins = con.execute(
        "SELECT list(purd_bin(x, $lo, $hi) ORDER BY i) FROM (SELECT unnest($r) AS x, "
        "generate_subscripts($r, 1) AS i)",
        {"lo": lo, "hi": hi, "r": [float(v) for v in r]},
    ).fetchone()[0]
    np_bins, _ = stats._bins(r[None])
    assert sql_bins == np_bins[0].tolist()


@pytest.mark.parametrize(
    "lo, hi, x",
    [
        (1066.357757671799, 8361.323638015223, 2014.703322116444),  # guess one too high
        (1369.6168732145434, 4067.484741066533, 1396.5955518930632),  # guess one too low
    ],
)
def test_values_next_to_an_edge_land_in_numpys_bin(con, lo, hi, x):
    counts, _ = np.histogram([lo, x, hi], bins=100)
    expected = counts.nonzero()[0][1]
    bins, _ = stats._bins(np.array([[lo, x, hi]]))
    assert bins[0, 1] == expected
    sql_bin = con.execute("SELECT purd_bin($x, $lo, $hi)", {"x": x, "lo": lo, "hi": hi})
    assert sql_bin.fetchone()[0] == expected


@pytest.mark.parametrize("span", [5e-324, 1e-322, 1e-300, 1.0])
def test_sql_bin_edges_follow_linspace(con, span):
    edges = con.execute(
        "SELECT list(purd_bin_edge(k, 0.0, $hi) ORDER BY k) FROM range(101) t(k)", {"hi": span}
    ).fetchone()[0]
    assert edges == np.linspace(0.0, span, 101).tolist()


def test_sql_hand_examples(con):
    load(con, [np.array([1.0, 2.0, 2.0, 3.0]), np.array([0.0, 49.75, 100.0, 100.0, 100.0])])
    first, second = sql_stats(con, alpha=0.25)
    assert (first["mode"], first["ltp"], first["cvar"], first["skewness"]) == (2.01, 0.25, 1.0, 0.0)
    assert (second["mode"], second["ltp"]) == (99.5, 0.2)
    assert con.execute("SELECT purd_ltp([0.0, 49.75, 100.0, 100.0, 100.0])").fetchone()[0] == 0.2


def test_sql_empty_warehouse_and_view(con):
    load(con, [])
    assert sql_stats(con) == []
    load(con, [np.array([1.0, 2.0, 2.0, 3.0])])
    view = con.execute("SELECT * FROM distribution_stats").fetchall()
    assert view == con.execute("SELECT * FROM purd_stats()").fetchall()
    assert [d[0] for d in con.description] == [
        "run_id", "algo", "env", "variant", "seed", "step", "operator_id", *FIELDS
    ]


def test_sql_distribution_without_registered_run_still_appears(con):
    load(con, [np.array([1.0, 2.0])])
    con.execute("DELETE FROM runs")
    (row,) = sql_stats(con)
    assert row["algo"] is None and row["n"] == 2


@pytest.mark.parametrize("alpha", [0.0, 1.5, -0.1])
def test_sql_rejects_alpha_outside_unit_interval(con, alpha):
    load(con, [np.array([1.0, 2.0])])
    with pytest.raises(duckdb.Error, match="alpha|quantile"):
        sql_stats(con, alpha=alpha)


def test_sql_many_distributions_one_row_each(con):
    load(con, [])
    con.execute(
        """INSERT INTO post_update_returns
           SELECT 'run' || (i % 10), i // 10 % 100, 'op', i // 1000, 3000 * random() - 500,
                  0.0, 1000, false
           FROM range(100000) t(i)"""
    )
    rows = sql_stats(con)
    assert len(rows) == 1000 and sum(r["n"] for r in rows) == 100000


# --- the NumPy reference -------------------------------------------------------------

def test_hand_example():
    # Bins over [1, 3] are 0.02 wide; both 2s fall in bin 50 = [2.00, 2.02).
    s = stats.summarize([1.0, 2.0, 2.0, 3.0], alpha=0.25, beta=0.5)
    assert (s.n, s.mean, s.mode, s.ltp, s.mode_nonpositive) == (4, 2.0, 2.01, 0.25, False)
    assert s.std == pytest.approx(math.sqrt(0.5))
    assert s.skewness == 0.0
    # q = 1.75, and the lower 25% of four returns is exactly the 1.0: 1.75 - 0.75 / 4 / 0.25.
    assert s.cvar == pytest.approx(1.0)


def test_cvar_is_the_lower_tail_mean():
    r = np.arange(1.0, 11.0)
    assert stats.cvar(r, alpha=0.2) == pytest.approx(1.5)
    assert stats.cvar(r, alpha=1.0) == pytest.approx(r.mean())


def test_mode_ties_go_to_the_lowest_bin_and_constant_sample_is_its_value():
    assert stats.mode([0.0, 10.0]) == 0.05
    assert stats.mode([0.0, 0.0, 10.0, 10.0, 10.0]) == pytest.approx(9.95)
    assert stats.mode([7.0, 7.0]) == 7.0


def test_ltp_is_strict_and_computed_and_flagged_for_non_positive_mode():
    # Bins over [0, 100] are [k, k + 1); the fullest is [99, 100], so mode = 99.5 and the
    # threshold 0.5 * 99.5 = 49.75 is itself a return, which does not count as below.
    r = [0.0, 49.75, 100.0, 100.0, 100.0]
    assert stats.mode(r) == 99.5
    assert stats.ltp(r, beta=0.5) == 0.2
    assert stats.ltp(r, beta=0.51) == 0.4
    # mode <= 0: the definition still gives a value (the authors compute it; paper Fig. 2
    # puts these policies on the right border), flagged by mode_nonpositive.
    # Bins over [-3, -1] are 0.02 wide; both -1s fall in the last bin, mode = -1.01, and
    # the threshold 0.5 * -1.01 = -0.505 has all three returns below it.
    s = stats.summarize([-3.0, -1.0, -1.0])
    assert s.mode == pytest.approx(-1.01) and s.ltp == 1.0 and s.mode_nonpositive is True
    assert stats.ltp([0.0, 0.0]) == 0.0 and stats.summarize([0.0, 0.0]).mode_nonpositive is True
    # a negative mode with returns above its half: -10 is the mode, -5 the threshold
    r = [-10.0] * 8 + [-4.0, 20.0]
    assert stats.mode(r) < 0 and stats.ltp(r) == 0.8
    assert stats.summarize([0.0, 1.0, 1.0]).mode_nonpositive is False


def test_sql_flags_non_positive_modes_and_keeps_their_ltp(con):
    """What every aggregate over purd_stats sees: a mode <= 0 distribution has its LTP
    (not NULL) and mode_nonpositive = true, the same numbers as the NumPy twin."""
    dists = [np.array([-3.0, -1.0, -1.0]), np.array([0.0, 49.75, 100.0, 100.0, 100.0]), np.array([0.0, 0.0])]
    load(con, dists)
    rows = sql_stats(con)
    assert [(r["ltp"], r["mode_nonpositive"]) for r in rows] == [(1.0, True), (0.2, False), (0.0, True)]
    for row, r in zip(rows, dists):
        assert_close(row, stats.summarize(r), np.abs(r).max() or 1.0)
    assert con.execute("SELECT count(ltp), avg(ltp) FROM purd_stats()").fetchone() == (3, pytest.approx(1.2 / 3))


def test_constant_and_single_samples():
    for r in ([5.0], [5.0] * 7):
        s = stats.summarize(r)
        assert (s.mean, s.std, s.mode, s.cvar) == (5.0, 0.0, 5.0, 5.0)
        assert math.isnan(s.skewness)


@SETTINGS
@given(samples())
def test_histogram_counts_are_numpys(r):
    lo, hi = r.min(), r.max()
    try:
        counts, edges = np.histogram(r, bins=100)
    except ValueError:  # numpy refuses ranges too narrow for 101 distinct edges
        return
    bins, our_edges = stats._bins(r[None])
    if lo < hi:
        assert np.array_equal(np.bincount(bins[0], minlength=100), counts)
        assert np.array_equal(our_edges[0], edges)
        top = counts.argmax()
        assert stats.mode(r) == (edges[top] + edges[top + 1]) / 2


@pytest.mark.parametrize("span", [5e-324, 1e-322, 1e-300])
def test_bin_edges_follow_linspace_when_the_step_underflows(span):
    lo = np.array([0.0])
    assert np.array_equal(stats._bin_edges(lo, lo + span)[0], np.linspace(0.0, span, 101))


@st.composite
def well_conditioned(draw) -> np.ndarray:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(3, 300))
    r = rng.normal(draw(st.floats(-3000, 3000)), draw(st.floats(1, 1000)), n)
    return np.where(rng.random(n) < 0.05, r - 5000, r)


@SETTINGS
@given(well_conditioned(), st.floats(0.01, 1.0))
def test_numpy_twin_matches_scipy_and_numpy(r, alpha):
    s = stats.summarize(r, alpha=alpha)
    scale = np.abs(r).max()
    assert s.mean == pytest.approx(np.mean(r), rel=1e-12, abs=1e-12 * scale)
    assert s.std == pytest.approx(np.std(r), rel=1e-10)
    assert s.skewness == pytest.approx(scipy.stats.skew(r), rel=1e-9, abs=1e-12)
    q = np.quantile(r, alpha)
    expected_cvar = q + np.mean(np.minimum(r - q, 0)) / alpha
    assert s.cvar == pytest.approx(expected_cvar, rel=1e-12, abs=1e-12 * scale)


def exact_moments(r) -> tuple[Fraction, Fraction, Fraction]:
    x = [Fraction(v) for v in r]
    m = sum(x) / len(x)
    return m, sum((v - m) ** 2 for v in x) / len(x), sum((v - m) ** 3 for v in x) / len(x)


@SETTINGS
@given(samples())
def test_moments_are_accurate_even_where_scipy_gives_up(r):
    m, m2, m3 = exact_moments(r)
    s = stats.summarize(r)
    assert s.mean == pytest.approx(float(m), rel=1e-14, abs=1e-14 * np.abs(r).max())
    assert s.std == pytest.approx(math.sqrt(m2), rel=1e-9, abs=1e-300)
    if m2 == 0:
        assert math.isnan(s.skewness)
    else:
        assert s.skewness == pytest.approx(float(m3) / float(m2) ** 1.5, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize(
    "bad, message",
    [
        ([], "empty"),
        ([1.0, float("nan")], "non-finite.*index 1"),
        ([float("inf")], "non-finite"),
        ([[1.0, 2.0]], r"1-D.*\(1, 2\)"),
        ([-1e308, 1e308], "overflows"),
    ],
)
def test_bad_samples_are_refused_with_the_reason(bad, message):
    with pytest.raises(ValueError, match=message):
        stats.summarize(bad)


@pytest.mark.parametrize("alpha", [0.0, -0.5, 1.01, float("nan")])
def test_cvar_rejects_alpha_outside_unit_interval(alpha):
    with pytest.raises(ValueError, match="alpha must be in"):
        stats.cvar([1.0, 2.0], alpha=alpha)


# --- bootstrap -----------------------------------------------------------------------

RETURNS = np.random.default_rng(7).normal(3000, 300, 400)


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    cis = stats.bootstrap_summary(RETURNS, seed=3)
    assert cis == stats.bootstrap_summary(RETURNS, seed=3)
    assert cis != stats.bootstrap_summary(RETURNS, seed=4)
    s = stats.summarize(RETURNS)
    for name in ("mean", "std", "skewness", "cvar"):
        lo, hi = cis[name]
        assert lo < getattr(s, name) < hi, name
    assert cis["mean"] == stats.bootstrap_ci(RETURNS, "mean", seed=3)


def test_bootstrap_kernels_equal_per_resample_statistics():
    r = RETURNS[:60]
    resampled = stats._resamples(r, 25, seed=1)
    for name, kernel in stats._kernels(alpha=0.1, beta=0.5).items():
        looped = [getattr(stats.summarize(x), name) for x in resampled]
        np.testing.assert_allclose(kernel(resampled), np.array(looped, dtype=float), rtol=1e-12)


def test_bootstrap_ci_of_a_custom_statistic_and_interval_width():
    lo, hi = stats.bootstrap_ci(RETURNS, lambda x: np.median(x, axis=1))
    assert lo < np.median(RETURNS) < hi
    narrow = stats.bootstrap_ci(RETURNS, "mean", confidence=0.5)
    wide = stats.bootstrap_ci(RETURNS, "mean", confidence=0.99)
    assert wide[0] < narrow[0] < narrow[1] < wide[1]
    # Standard error of the mean is 15; a 95% interval spans about 4 of them.
    assert 40 < stats.bootstrap_ci(RETURNS, "mean")[1] - stats.bootstrap_ci(RETURNS, "mean")[0] < 80


def test_bootstrap_ci_of_ltp_is_finite_when_some_resample_has_a_non_positive_mode():
    # resamples whose mode is <= 0 keep their LTP (before: NULL, and the interval NaN)
    r = np.array([-1.0, 1.0, 1.0, 1.0, -1.0, -1.0, -1.0, 2.0])
    lo, hi = stats.bootstrap_ci(r, "ltp")
    assert 0.0 <= lo <= stats.ltp(r) <= hi <= 1.0


def test_bootstrap_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown statistic"):
        stats.bootstrap_ci(RETURNS, "median")
    with pytest.raises(ValueError, match="confidence"):
        stats.bootstrap_ci(RETURNS, "mean", confidence=95)
    with pytest.raises(ValueError, match="n_resamples"):
        stats.bootstrap_summary(RETURNS, n_resamples=0)


# --- aggregates ----------------------------------------------------------------------

def test_iqm_is_the_middle_half_mean():
    assert stats.iqm(np.arange(1.0, 9.0)) == 4.5
    scores = np.random.default_rng(0).normal(size=(10, 4))
    assert stats.iqm(scores) == scipy.stats.trim_mean(scores.ravel(), 0.25)


def test_stratified_bootstrap_resamples_within_each_stratum():
    # Every stratified resample keeps five 0s and five 1s, so the IQM never moves;
    # pooling the strata before resampling would let it.
    strata = {"hopper": np.zeros(5), "ant": np.ones(5)}
    assert stats.stratified_bootstrap_ci(strata) == (0.5, 0.5)
    pooled = np.r_[np.zeros(5), np.ones(5)]
    assert stats.bootstrap_ci(pooled, lambda x: stats.iqm(x, axis=1)) != (0.5, 0.5)


def test_stratified_bootstrap_layouts_agree_and_bracket_the_iqm():
    scores = np.random.default_rng(1).normal(size=(20, 3))  # [runs, tasks]
    ci = stats.stratified_bootstrap_ci(scores, seed=5)
    assert ci == stats.stratified_bootstrap_ci(list(scores.T), seed=5)
    assert ci == stats.stratified_bootstrap_ci(dict(zip("abc", scores.T)), seed=5)
    assert ci[0] < stats.iqm(scores) < ci[1]
    lo, hi = stats.stratified_bootstrap_ci(scores, statistic=np.mean)
    assert lo < scores.mean() < hi


def test_stratified_bootstrap_names_the_bad_stratum():
    with pytest.raises(ValueError, match="'ant'"):
        stats.stratified_bootstrap_ci({"hopper": [1.0], "ant": [float("nan")]})
    with pytest.raises(ValueError, match="empty"):
        stats.stratified_bootstrap_ci([])
