"""The command line as a researcher reads it (issue 16): the stats table layout, run
selection by source and by id prefix, piped progress lines, `show`, `export`, `sql`,
and the Python API's wording. No JAX: the warehouse holds imported returns plus a
trained-looking and a derived run written through the warehouse's one write path."""
from __future__ import annotations

import io
import json
import re
from datetime import datetime, timezone

import polars as pl
import pytest

from conftest import run_cli, tree_digest

CONFIG = {"env": "hopper", "seeds": 2, "agent": {"algo": "td3", "batch_size": 8, "hidden": [16, 16]}}
TRAINED = "td3-hopper-20260101-000000-abcd-s0"
DERIVED = "stab-hopper-20260101-000100-ef01-reject-r0"


@pytest.fixture
def mixed(filled):
    """`filled` plus a 'trained' run and a run derived from it (as stabilize writes one),
    both at step 100 with a copy of td3-hopper-imported-s0's 20 returns (LTP 0), and
    checkpoint rows that name a parameter folder. Same algo, env and seed as the imported
    s0 run: a selection by algo/env/seed alone cannot tell them apart."""
    from retland.warehouse import Warehouse

    wh = Warehouse.open(filled, create=False)
    now = datetime.now(timezone.utc)
    returns = wh.query("SELECT * FROM post_update_returns WHERE run_id = 'td3-hopper-imported-s0'")
    for rid, source, parent in ((TRAINED, "trained", None), (DERIVED, "derived", TRAINED)):
        wh.append("runs", [dict(run_id=rid, algo="td3", env="hopper", seed=0, backend="positional", variant="paper",
                                source=source, parent_run_id=parent, parent_step=100 if parent else None,
                                config=json.dumps(CONFIG), repro=None, created_at=now)])
        wh.append("checkpoints", [dict(run_id=rid, step=100, artifact_path=f"artifacts/{rid}/100", eval_return=1000.0,
                                       replay_size=100, created_at=now)])
        wh.append("post_update_returns", returns.with_columns(pl.lit(rid).alias("run_id")))
    return filled


# ------------------------------------------------------------------ stats table layout

def test_stats_bootstrap_table_shows_rounded_ci_cells_and_few_columns(filled, capsys, monkeypatch):
    code, out, err = run_cli(capsys, monkeypatch, "stats", "--bootstrap", "-w", filled)
    assert code == 0, err
    header = next(line for line in out.splitlines() if "mean" in line)
    assert "mean [95% CI]" in header and "ltp [95% CI]" in header and "cvar [95% CI]" in header
    assert "std" not in header and "skewness" not in header and "mean_lo" not in header
    assert "source" in header
    # seed 0: returns 1000..1190 -> mean 1095.0 with a CI, 1 decimal from 100 up
    assert re.search(r"1095\.0 \[\d{4}\.\d, \d{4}\.\d\]", out), out
    assert re.search(r"0\.000 \[0\.000, 0\.000\]", out), out  # LTP: 3 decimals
    # seed 1's returns are all negative: mode <= 0, its LTP computed (1.00) and flagged
    assert "mode≤0" in header
    assert re.search(r"1\.00 \[1\.00, 1\.00\] │ +yes │", out), out
    assert all(len(line) <= 160 for line in out.splitlines())


def test_stats_columns_option_and_full_precision_elsewhere(filled, tmp_path, capsys, monkeypatch):
    code, out, err = run_cli(capsys, monkeypatch, "stats", "--bootstrap", "--columns", "std,skewness", "-w", filled)
    assert code == 0, err
    header = next(line for line in out.splitlines() if "std" in line)
    assert "skewness [95% CI]" in header and "mean" not in header
    code, out, err = run_cli(capsys, monkeypatch, "stats", "--bootstrap", "--columns", "std", "-f", "csv", "-w", filled)
    assert code == 0, err
    df = pl.read_csv(io.StringIO(out))
    for s in ("mean", "std", "skewness", "mode", "ltp", "cvar"):
        assert {s, f"{s}_lo", f"{s}_hi"} <= set(df.columns)
    assert {"run_id", "source", "mode_nonpositive", "operator_id"} <= set(df.columns)  # the view's names
    assert "operator" not in df.columns
    std = df.filter(pl.col("seed") == 0)["std"][0]
    assert abs(std - 57.662812973353983) < 1e-9  # population std of 1000, 1010, …, 1190: not rounded
    code, _, err = run_cli(capsys, monkeypatch, "stats", "--columns", "median", "-w", filled)
    assert code == 2 and "--columns 'median'" in err


# --------------------------------------------------------------------- source filtering

def test_stats_leave_derived_runs_out_unless_asked(mixed, capsys, monkeypatch):
    code, out, err = run_cli(capsys, monkeypatch, "stats", "-f", "csv", "-w", mixed)
    assert code == 0, err
    df = pl.read_csv(io.StringIO(out))
    assert set(df["source"]) == {"trained", "imported"} and DERIVED not in df["run_id"].to_list()
    code, out, err = run_cli(capsys, monkeypatch, "stats", "--source", "all", "-f", "csv", "-w", mixed)
    assert set(pl.read_csv(io.StringIO(out))["run_id"]) == {TRAINED, DERIVED, "td3-hopper-imported-s0",
                                                             "td3-hopper-imported-s1"}
    code, out, err = run_cli(capsys, monkeypatch, "stats", "--source", "derived", "-f", "csv", "-w", mixed)
    assert pl.read_csv(io.StringIO(out))["run_id"].to_list() == [DERIVED]


def test_stats_where_can_name_source(mixed, capsys, monkeypatch):
    code, out, err = run_cli(capsys, monkeypatch, "stats", "--source", "all", "--where", "source='trained'",
                             "-f", "csv", "-w", mixed)
    assert code == 0, err
    assert pl.read_csv(io.StringIO(out))["run_id"].to_list() == [TRAINED]


def test_stats_table_shows_run_id_only_where_rows_would_look_alike(mixed, capsys, monkeypatch):
    code, out, _ = run_cli(capsys, monkeypatch, "stats", "-w", mixed)
    assert code == 0 and "run_id" not in out and "imported" in out and "trained" in out
    # two derived runs of one seed, step and operator: identical keys, told apart by run_id
    from retland.warehouse import Warehouse

    wh = Warehouse.open(mixed, create=False)
    other = DERIVED.replace("reject", "baseline")
    for table in ("runs", "checkpoints", "post_update_returns"):
        wh.append(table, wh.query(f"SELECT * EXCLUDE (run_id), '{other}' AS run_id FROM {table} "
                                  f"WHERE run_id = '{DERIVED}'"))
    code, out, _ = run_cli(capsys, monkeypatch, "stats", "--source", "derived", "-w", mixed)
    assert code == 0 and "run_id" in out and DERIVED in out and other in out


def test_sample_selection_takes_trained_runs_by_default(mixed):
    from retland.purd.sampling import SamplingError
    from retland.purd.selection import select_checkpoints
    from retland.warehouse import Warehouse

    wh = Warehouse.open(mixed, create=False)
    assert select_checkpoints(wh, None, "td3", "hopper", None, None) == [(TRAINED, 100, "hopper")]
    both = select_checkpoints(wh, None, "td3", "hopper", None, None, ("trained", "derived"))
    assert [r for r, _, _ in both] == [DERIVED, TRAINED]
    with pytest.raises(SamplingError, match="source=derived"):
        select_checkpoints(wh, None, "td3", "walker2d", None, None, ("derived",))
    # a unique prefix of a long run id picks the run
    assert select_checkpoints(wh, ["td3-hopper-2026"], None, None, None, None) == [(TRAINED, 100, "hopper")]


def test_bad_source_is_refused(mixed, capsys, monkeypatch):
    before = tree_digest(mixed)
    code, _, err = run_cli(capsys, monkeypatch, "stats", "--source", "trained,bogus", "-w", mixed)
    assert code == 2 and "--source 'trained,bogus': choose from trained, imported, derived" in err
    assert tree_digest(mixed) == before


# ---------------------------------------------------------------- runs, prefixes, show

def test_runs_lists_checkpoint_steps_and_filters(mixed, capsys, monkeypatch):
    code, out, err = run_cli(capsys, monkeypatch, "runs", "-f", "json", "-w", mixed)
    assert code == 0, err
    rows = {r["run_id"]: r for r in json.loads(out)}
    assert rows[TRAINED]["steps"] == [100] and rows["td3-hopper-imported-s1"]["steps"] == [100]
    code, out, _ = run_cli(capsys, monkeypatch, "runs", "--run", "td3-hopper-imported", "--seed", "1", "-f", "csv",
                           "-w", mixed)
    assert [line.split(",")[0] for line in out.splitlines()[1:]] == ["td3-hopper-imported-s1"]
    code, out, _ = run_cli(capsys, monkeypatch, "runs", "--source", "derived", "-w", mixed)
    assert DERIVED in out and TRAINED not in out and "steps" in out


def test_steps_text_is_compact_for_even_grids():
    from retland.cli.warehouse_cmds import steps_text

    assert steps_text([30000, 40000, 50000, 60000]) == "30000 … 60000 every 10000 (4)"
    assert steps_text([60, 120]) == "60, 120"
    assert steps_text([]) == ""


def test_show_resolves_a_prefix_with_seed_and_refuses_ambiguity(mixed, capsys, monkeypatch):
    code, _, err = run_cli(capsys, monkeypatch, "show", "td3-hopper-imported", "-w", mixed)
    assert code == 2
    assert "matches 2 runs: td3-hopper-imported-s0 (seed 0, imported), td3-hopper-imported-s1" in err
    assert "--seed N" in err
    code, _, err = run_cli(capsys, monkeypatch, "show", "nope", "-w", mixed)
    assert code == 2 and "no run id starts with it" in err
    code, out, err = run_cli(capsys, monkeypatch, "show", "td3-hopper-2026", "-f", "json", "-w", mixed)
    assert code == 0, err
    shown = json.loads(out)
    assert shown["run"]["run_id"] == TRAINED and shown["run"]["source"] == "trained"
    assert shown["config"]["agent.batch_size"] == 8 and shown["config"]["agent.hidden"] == [16, 16]
    assert [c["step"] for c in shown["checkpoints"]] == [100]
    (dist,) = shown["distributions"]
    assert dist["n"] == 20 and abs(dist["mean"] - 1095.0) < 1e-9
    code, out, err = run_cli(capsys, monkeypatch, "show", "td3-hopper-imported", "--seed", "1", "-w", mixed)
    assert code == 0, err
    assert "td3-hopper-imported-s1" in out and "checkpoints (1)" in out and "post-update return" in out


# ------------------------------------------------------------------------------ export

def test_export_flattens_the_run_config_into_columns(mixed, tmp_path, capsys, monkeypatch):
    out_dir = tmp_path / "export"
    code, out, err = run_cli(capsys, monkeypatch, "export", "distribution_stats", "checkpoints", "-o", out_dir,
                             "-w", mixed)
    assert code == 0, err
    df = pl.read_parquet(out_dir / "distribution_stats.parquet")
    assert df.height == 4
    row = df.filter(pl.col("run_id") == TRAINED).row(0, named=True)
    assert row["config.agent.batch_size"] == 8 and row["config.env"] == "hopper"
    assert json.loads(row["config.agent.hidden"]) == [16, 16]
    assert (out_dir / "checkpoints.parquet").is_file()
    code, _, err = run_cli(capsys, monkeypatch, "export", "runs", "-f", "csv", "-o", out_dir,
                           "--where", "source = 'derived'", "--without-config", "-w", mixed)
    assert code == 0, err
    runs = pl.read_csv(out_dir / "runs.csv")
    assert runs["run_id"].to_list() == [DERIVED] and not [c for c in runs.columns if c.startswith("config.")]


def test_export_refuses_unknown_names_and_file_outputs(mixed, tmp_path, capsys, monkeypatch):
    before = tree_digest(mixed)
    code, _, err = run_cli(capsys, monkeypatch, "export", "nope", "-o", tmp_path / "x", "-w", mixed)
    assert code == 2 and "no table or view 'nope'; choose from" in err and "distribution_stats" in err
    (tmp_path / "f").write_text("")
    code, _, err = run_cli(capsys, monkeypatch, "export", "runs", "-o", tmp_path / "f", "-w", mixed)
    assert code == 2 and "is a file" in err
    assert tree_digest(mixed) == before and not (tmp_path / "x").exists()


# --------------------------------------------------------------------------------- sql

def test_sql_shell_reads_statements_and_refuses_writes(mixed, capsys, monkeypatch):
    before = tree_digest(mixed)
    script = "SELECT count(*) AS n\n  FROM runs;\n.tables\nDELETE FROM runs;\nSELECT source FROM runs ORDER BY 1 LIMIT 1;\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(script))
    code, out, err = run_cli(capsys, monkeypatch, "sql", "-w", mixed)
    assert code == 1  # a script with a refused statement fails, after running the rest
    assert re.search(r"│\s+4\s+│", out) and "distribution_stats" in out and "derived" in out
    assert "refused: DELETE" in err
    assert tree_digest(mixed) == before
    monkeypatch.setattr("sys.stdin", io.StringIO("SELECT 42 AS answer;\n.quit\nSELECT 1;\n"))
    code, out, err = run_cli(capsys, monkeypatch, "sql", "-w", mixed)
    assert code == 0 and "42" in out and out.count("┏") == 1
    # the last statement of a script needs no closing ';'
    monkeypatch.setattr("sys.stdin", io.StringIO("SELECT 1 AS first;\nSELECT 2 AS last_one"))
    code, out, err = run_cli(capsys, monkeypatch, "sql", "-w", mixed)
    assert code == 0 and "first" in out and "last_one" in out, err
    monkeypatch.setattr("sys.stdin", io.StringIO("SELECT 1 AS only_one;\n-- the end\n/* done */\n"))
    code, out, err = run_cli(capsys, monkeypatch, "sql", "-w", mixed)
    assert code == 0 and "only_one" in out and not err.strip(), err


# ---------------------------------------------------------------------------- progress

def test_piped_progress_is_plain_lines_never_a_bar(capsys):
    from retland.cli.progress import COMPILING, progress_bar

    description = "sample " + "x" * 100  # longer than 80 columns: must stay one line
    with progress_bar(10, description, unit="samples", every=0.0) as advance:
        advance(4)
        advance(6, chunk="2/2")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3  # started, the first flush, done (a flush that finishes is the done line)
    assert all(line.startswith(description + ": ") for line in lines)
    assert COMPILING in lines[0] and "0/10 samples (0%)" in lines[0]
    assert "10/10 samples (100%)" in lines[-1] and "first result after" in lines[-1] and "· 2/2" in lines[-1]
    assert not any(ch in "".join(lines) for ch in "━╸█")


def test_progress_flags_exist_where_work_takes_long(capsys, monkeypatch):
    for cmd in ("sample", "landscape", "failures", "interpolate"):
        code, out, _ = run_cli(capsys, monkeypatch, cmd, "--help")
        assert code == 0 and "--no-progress" in out, cmd


# ---------------------------------------------------------- failures' refusal, report, API

def test_failures_refusal_at_ltp_zero_says_what_to_do(mixed, capsys, monkeypatch):
    before = tree_digest(mixed)
    code, _, err = run_cli(capsys, monkeypatch, "failures", "--run", "td3-hopper-2026", "--step", "100", "-w", mixed)
    assert code == 2
    assert "no failures to explain" in err and 'retland stats --where "ltp > 0 AND NOT mode_nonpositive"' in err
    assert "--operator gaussian" in err and TRAINED in err
    assert tree_digest(mixed) == before


def test_report_prints_absolute_path_and_file_url(filled, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, monkeypatch, "report", "-o", "r.html", "--bootstrap", "0", "-w", filled)
    assert code == 0, err
    path = (tmp_path / "r.html").resolve()
    assert str(path) in out.splitlines() and f"open it: {path.as_uri()}" in out


def test_python_api_names_the_keyword_not_the_option(tmp_path, monkeypatch):
    import retland
    from retland.warehouse import WarehouseError

    monkeypatch.chdir(tmp_path)
    for call in (lambda: retland.query("SELECT 1"), lambda: retland.connect()):
        with pytest.raises(WarehouseError) as info:
            call()
        assert "warehouse=" in str(info.value) and "--warehouse" not in str(info.value)
    assert not {"np", "scipy", "dataclass", "Callable", "Mapping"} & set(dir(retland.stats))
    assert set(retland.stats.__all__) <= set(dir(retland.stats))
