"""Sampling to a precision (`--target-ci`): rounds of whole chunks, stopping rule, rows.

Samples the shipped example checkpoint with gaussian(0.05), horizon 20, B = 8, rounds
of 16: the same small chunk program as tests/purd/test_cluster.py.
"""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import run_cli, tree_digest
from retland import shipped, stats
from retland.purd.adaptive import intervals, parse_targets, round_sizes
from retland.purd.sampling import SamplingError
from retland.warehouse import Warehouse

OP, H, B, R, MAX = "gaussian:0.05", 20, 8, 16, 48


@pytest.fixture(scope="module")
def fixed(tmp_path_factory):
    """(a copy-source warehouse with the example, a warehouse with a fixed N = MAX job)."""
    base = tmp_path_factory.mktemp("adaptive") / "base"
    shipped.add(base, shipped.DEFAULT)
    full = base.parent / "fixed"
    shutil.copytree(base, full)
    mp = pytest.MonkeyPatch()
    try:
        code, out, err = run_cli(_NoCapture(), mp, *args(full, "--samples", MAX))
    finally:
        mp.undo()
    assert code == 0, err
    return base, full


class _NoCapture:
    def readouterr(self):
        return type("Out", (), {"out": "", "err": ""})()


def args(root, *extra):
    return ["sample", "-w", root, "--algo", "td3", "--env", "hopper", "--operator", OP, "--horizon", H,
            "--batch-size", B, "--no-progress", *extra]


def returns(root):
    return Warehouse.open(root, create=False).query(
        'SELECT update_index, "return", discounted_return, episode_length, terminated, chunk_size '
        "FROM post_update_returns ORDER BY update_index")


def half_width(r, metric):
    lo, hi = stats.bootstrap_ci(r, metric, n_resamples=1000, seed=0)
    return (hi - lo) / 2


def test_stops_at_the_first_round_that_meets_the_target_with_the_fixed_jobs_rows(fixed, tmp_path, capsys,
                                                                                   monkeypatch):
    base, full = fixed
    want = returns(full)
    r = want["return"].to_numpy()
    hw = {n: half_width(r[:n], "mean") for n in (16, 32, 48)}
    target = hw[32] * 1.0001  # met at n = 32 unless n = 16 already is
    expected = next(n for n in (16, 32, 48) if hw[n] <= target)
    root = tmp_path / "wh"
    shutil.copytree(base, root)
    code, out, err = run_cli(capsys, monkeypatch, *args(root, "--target-ci", f"mean={target!r}",
                                                        "--max-samples", MAX, "--round-samples", R))
    assert code == 0, err
    assert f"n={expected} " in out and "target met" in out
    got = returns(root)
    assert got.height == expected and got.equals(want.head(expected))  # a prefix of the fixed-N rows
    # rerun: the same decision from the stored rows, nothing computed
    code, out2, err = run_cli(capsys, monkeypatch, *args(root, "--target-ci", f"mean={target!r}",
                                                         "--max-samples", MAX, "--round-samples", R))
    assert code == 0 and f"n={expected} " in out2 and "wrote 0 rows" in out2


def test_an_unreachable_target_stops_at_the_maximum(fixed, tmp_path, capsys, monkeypatch):
    base, full = fixed
    root = tmp_path / "wh"
    shutil.copytree(full, root)  # every row already stored: no compute, only the rule
    code, out, err = run_cli(capsys, monkeypatch, *args(root, "--target-ci", "mean=1e-12,ltp=0.5",
                                                        "--max-samples", 40, "--round-samples", R))
    assert code == 0, err
    assert "n=40 " in out and "target NOT met (max samples)" in out and "wrote 0 rows" in out


@pytest.mark.parametrize("text, message", [
    ("ltp", "is not METRIC=HALF_WIDTH"), ("skewness=1", "is not METRIC=HALF_WIDTH"),
    ("ltp=abc", "half-width 'abc' of ltp is not a number"), ("cvar=-5", "must be a number > 0"),
    ("ltp=0.1,ltp=0.2", "ltp is given twice"), (" , ", "give METRIC=HALF_WIDTH pairs")])
def test_bad_target_text_is_refused_in_one_line(fixed, text, message, capsys, monkeypatch):
    base, _ = fixed
    before = tree_digest(base)
    code, out, err = run_cli(capsys, monkeypatch, *args(base, "--target-ci", text))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert tree_digest(base) == before


def test_max_samples_needs_a_target(fixed, capsys, monkeypatch):
    code, out, err = run_cli(capsys, monkeypatch, *args(fixed[0], "--max-samples", 10))
    assert code == 2 and "--max-samples goes with --target-ci" in err


def test_rounds_are_whole_chunks_and_the_ltp_rule_of_three():
    assert round_sizes(100, 30, 8) == [32, 64, 96, 100]
    assert round_sizes(20, 250, 64) == [20]
    assert parse_targets("LTP=0.01, cvar=5") == {"ltp": 0.01, "cvar": 5.0}
    with pytest.raises(SamplingError):
        parse_targets("mode=1")
    # no failures among 200 equal-ish returns: the bootstrap says [0, 0]; the rule of three says 1.5/n
    r = np.linspace(990, 1000, 200)
    (iv,) = intervals(r, {"ltp": 0.01})
    assert iv.value == 0 and iv.lo == iv.hi == 0 and iv.half_width == pytest.approx(1.5 / 200) and iv.met
    (iv,) = intervals(r[:100], {"ltp": 0.01})
    assert not iv.met  # 1.5 / 100 > 0.01


def test_auto_chunks_of_a_new_distribution_are_at_most_a_round(fixed, tmp_path, capsys, monkeypatch):
    """--batch-size auto would take min(64, N) = 16 here (4096 on an accelerator): the
    first round would be the whole job. A new adaptive distribution takes chunks of at
    most a round instead."""
    base, _ = fixed
    root = tmp_path / "wh"
    shutil.copytree(base, root)
    cmd = [a for a in args(root, "--target-ci", "ltp=1e-9", "--max-samples", 16, "--round-samples", 8)]
    i = cmd.index("--batch-size")
    del cmd[i:i + 2]
    code, out, err = run_cli(capsys, monkeypatch, *cmd)
    assert code == 0, err
    got = returns(root)
    assert got.height == 16 and set(got["chunk_size"]) == {8}
