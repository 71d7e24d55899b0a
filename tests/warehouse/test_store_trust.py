"""The warehouse reads only what its writer committed (issue #25).

1. Foreign files under tables/ (planted parts of any schema, outputs of commands, files
   copied in) are never read as rows and are listed by `retland check`.
2. Outputs into the warehouse are refused; Python connections cannot write files.
3. A command's rows become visible together or not at all: a kill -9 at any write point
   leaves all of them or none, and the rerun cleans up after the dead writer.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import GOOD_CSV, TINY_AGENT, cli_process, run_cli, tree_digest

COUNTS = "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM post_update_returns), " \
         "(SELECT count(*) FROM checkpoints), (SELECT count(*) FROM operators)"


def _counts(root: Path, sql: str = COUNTS) -> tuple:
    import retland

    con = retland.connect(root)
    try:
        return con.sql(sql).fetchall()[0]
    finally:
        con.close()


def _plant(root: Path) -> list[Path]:
    """Files a user, a tool or an attack could leave under tables/: every one of them a
    valid Parquet file, named like the writer's parts."""
    runs = root / "tables" / "runs"
    returns = next(p for p in (root / "tables" / "post_update_returns").iterdir() if "__schema__" not in p.name)
    planted = {
        # wrong schema
        runs / "part-00000000000000000001-aaaaaaaaaaaa.parquet": pa.table({"x": [1, 2]}),
        # wrong types (run_id as an integer)
        runs / "part-00000000000000000002-bbbbbbbbbbbb.parquet": pa.table({"run_id": [7], "algo": ["td3"]}),
        # the declared schema: a run no writer made
        runs / "part-00000000000000000003-cccccccccccc.parquet": pa.Table.from_pylist([{
            "run_id": "fake-run", "algo": "td3", "env": "hopper", "seed": 9, "source": "trained"}]),
        # an earlier-named returns part, which first-writer-wins would have preferred
        returns / "part-00000000000000000004-dddddddddddd.parquet": pa.Table.from_pylist([{
            "step": 100, "operator_id": "td3", "update_index": 0, "return": -999.0}]),
    }
    for path, table in planted.items():
        pq.write_table(table, path)
    return list(planted)


def test_planted_parts_are_never_read_and_check_reports_them(filled, capsys, monkeypatch):
    before = _counts(filled)
    planted = _plant(filled)
    assert _counts(filled) == before
    import retland

    df = retland.query("SELECT run_id, source FROM runs WHERE run_id IS NULL OR source IS NULL OR run_id = 'fake-run'",
                       warehouse=filled)
    assert df.height == 0
    worst = retland.query("SELECT min(\"return\") AS m FROM post_update_returns", warehouse=filled)["m"][0]
    assert worst > -999
    for deep in ([], ["--deep"]):
        code, out, err = run_cli(capsys, monkeypatch, "check", *deep, "-w", filled)
        assert code == 1, out + err
        for path in planted:
            assert f"foreign file: {path.relative_to(filled)}" in out
    code, out, _ = run_cli(capsys, monkeypatch, "check", "--quarantine", "-w", filled)
    assert code == 0 and all(not p.exists() for p in planted)
    code, out, _ = run_cli(capsys, monkeypatch, "check", "-w", filled)
    assert code == 0, out
    assert _counts(filled) == before


def test_a_stock_duckdb_client_reads_the_committed_set_only(filled):
    cli = Path(sys.executable).parent / "duckdb"
    if not cli.exists():
        pytest.skip("no duckdb CLI in this environment")
    _plant(filled)
    (filled / "log" / "00000000000000000001-ffffffffffff.json").write_text('{"format": "retland-commit/1", "add": [')
    count = "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM post_update_returns);"
    out = subprocess.run([str(cli), "-csv", "-noheader", "-init", "init.sql", "-c", count], cwd=filled,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "2,25"
    # a fresh warehouse (no rows yet) opens too: its log holds one empty entry
    from retland.warehouse import Warehouse

    empty = Warehouse.open(filled.parent / "empty").root
    out = subprocess.run([str(cli), "-csv", "-noheader", "-init", "init.sql", "-c", count], cwd=empty,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == "0,0", out.stderr


def test_outputs_into_the_warehouse_are_refused(filled, tmp_path, capsys, monkeypatch):
    before = tree_digest(filled)
    cases = [
        ["query", "SELECT * FROM runs", "-f", "parquet", "-o", filled / "tables" / "runs" / "a.parquet"],
        ["query", "SELECT * FROM runs", "-f", "csv", "-o", filled / "notes.csv"],
        ["stats", "-f", "csv", "-o", filled / "tables" / "x.csv"],
        ["export", "runs", "-o", filled / "tables" / "runs"],
        ["export", "all", "-o", filled],
        ["report", "-o", filled / "tables" / "r.html"],
    ]
    for args in cases:
        code, out, err = run_cli(capsys, monkeypatch, *args, "-w", filled)
        assert code == 2, (args, out, err)
        assert "inside the warehouse" in err and len(err.strip().splitlines()) == 1, err
    assert tree_digest(filled) == before


def test_python_connections_cannot_write_into_the_warehouse(filled):
    import retland
    from retland.warehouse import WarehouseError

    before = tree_digest(filled)
    target = filled / "tables" / "runs" / "part-00000000000000000009-eeeeeeeeeeee.parquet"
    con = retland.connect(filled)
    try:
        for sql in (f"COPY (SELECT * FROM runs) TO '{target}' (FORMAT parquet)",
                    f"ATTACH '{filled / 'tables' / 'x.db'}' AS x",
                    f"EXPORT DATABASE '{filled / 'tables'}'",
                    f"SELECT 1; COPY (SELECT 1) TO '{target}'",
                    f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{target}'",
                    "INSTALL httpfs", "LOAD json", "SET memory_limit = '1GB'"):
            with pytest.raises(WarehouseError, match="refused"):
                con.execute(sql)
            with pytest.raises(WarehouseError, match="refused"):
                con.sql(sql)
        rel = con.sql("SELECT * FROM runs")
        for write in ("to_parquet", "write_parquet", "to_csv", "write_csv"):
            with pytest.raises(WarehouseError, match="refused"):
                getattr(rel, write)(str(target))
        with pytest.raises(WarehouseError, match="refused"):
            rel.query("r", f"COPY r TO '{target}'")
        # reading, and the in-memory catalog, still work
        con.execute("CREATE TEMP TABLE mine AS SELECT * FROM runs")
        assert con.sql("SELECT count(*) FROM mine").fetchall() == [(2,)]
        assert con.sql("SELECT count(*) FROM post_update_returns").pl().item() == 25
    finally:
        con.close()
    assert tree_digest(filled) == before


def test_a_warehouse_without_a_log_adopts_its_valid_parts_once(filled, capsys, monkeypatch):
    from retland.warehouse import Warehouse

    before = _counts(filled)
    shutil.rmtree(filled / "log")
    # A log-less warehouse has no record of who wrote what: migration adopts the parts that
    # pass the writer's own checks (name, folder, declared schema); here the three runs files.
    planted = [p for p in _plant(filled) if "dddd" not in p.name]
    next((filled / "tables" / "post_update_returns").rglob("part-*-dddddddddddd.parquet")).unlink()
    assert _counts(filled) == before  # read as the migration would commit it
    code, out, _ = run_cli(capsys, monkeypatch, "check", "-w", filled)
    assert code == 1 and all(f"foreign file: {p.relative_to(filled)}" in out for p in planted)
    Warehouse.open(filled)  # a writer migrates
    err = capsys.readouterr().err
    assert "adopted 5 existing part(s)" in err and "left out 3" in err, err
    entries = list((filled / "log").glob("*.json"))
    assert len(entries) == 1 and json.loads(entries[0].read_text())["command"] == "migrate"
    assert _counts(filled) == before
    Warehouse.open(filled)
    assert "adopted" not in capsys.readouterr().err  # once


def test_compaction_commits_its_merge_and_checkpoints_the_log(filled, tmp_path, capsys, monkeypatch):
    more = tmp_path / "more.csv"
    more.write_text(GOOD_CSV.replace("td3,hopper,1,", "td3,hopper,2,"))
    assert run_cli(capsys, monkeypatch, "import-returns", more, "-w", filled)[0] == 0
    planted = _plant(filled)
    before = _counts(filled)
    assert len(list((filled / "log").glob("*.json"))) >= 2
    code, out, err = run_cli(capsys, monkeypatch, "compact", "-w", filled)
    assert code == 0, err
    assert _counts(filled) == before
    (entry,) = (filled / "log").glob("*.json")
    body = json.loads(entry.read_text())
    assert body["command"] == "checkpoint" and body["supersedes"]
    assert all(p.exists() for p in planted)  # foreign files are not merged in, only reported
    assert not any(str(p.relative_to(filled)) in entry.read_text() for p in planted)


def test_a_committed_part_that_disappears_is_reported_and_quarantine_drops_it(filled, capsys, monkeypatch):
    from retland.warehouse import Warehouse, WarehouseError

    state = Warehouse(filled).committed()
    rel = sorted(state.parts["post_update_returns"])[0]
    (filled / rel).unlink()
    with pytest.raises(WarehouseError):
        Warehouse.open(filled, create=False).query("SELECT count(*) FROM post_update_returns")
    code, out, _ = run_cli(capsys, monkeypatch, "check", "-w", filled)
    assert code == 1 and f"missing part: {rel}" in out
    code, out, _ = run_cli(capsys, monkeypatch, "check", "--quarantine", "-w", filled)
    assert code == 0
    n = Warehouse.open(filled, create=False).query("SELECT count(*) AS n FROM post_update_returns")["n"][0]
    assert n in (20, 5)


def test_a_log_entry_that_does_not_parse_is_ignored_and_reported(filled, capsys, monkeypatch):
    before = _counts(filled)
    (filled / "log" / "00000000000000000001-ffffffffffff.json").write_text('{"format": "retland-commit/1", "add": [')
    assert _counts(filled) == before
    code, out, _ = run_cli(capsys, monkeypatch, "check", "-w", filled)
    assert code == 1 and "bad log entry: log/00000000000000000001-ffffffffffff.json" in out


# ----- 3. all or nothing ---------------------------------------------------------------------

def _cli(args, env_extra=None, timeout=120):
    return cli_process(*args, env=env_extra, timeout=timeout)


def _write_points_of(args, root, timeout=300) -> int:
    """How many write points a clean run of `args` passes (RETLAND_CRASH_AT=count: the
    run kills nothing and prints the number at exit)."""
    trial = root.parent / "probe"
    shutil.copytree(root, trial)
    out = _cli([*args, "-w", trial], {"RETLAND_CRASH_AT": "count"}, timeout=timeout)
    shutil.rmtree(trial)
    assert out.returncode == 0, out.stderr[-2000:]
    counted = [line for line in out.stderr.splitlines() if line.startswith("write points: ")]
    assert len(counted) == 1, out.stderr[-2000:]
    return int(counted[0].split(": ")[1])


@pytest.mark.slow  # a killed process per write point (make test-crash)
@pytest.mark.parametrize("fresh", [False, True], ids=["into-existing", "new-warehouse"])
def test_kill_9_at_every_write_point_of_import_returns_leaves_all_or_nothing(tmp_path, fresh, capsys, monkeypatch):
    src = tmp_path / "good.csv"
    src.write_text(GOOD_CSV)
    base = tmp_path / "wh"
    if not fresh:
        other = tmp_path / "other.csv"
        other.write_text(GOOD_CSV.replace("td3,hopper,", "sac,walker,"))
        assert _cli(["import-returns", other, "-w", base]).returncode == 0
    else:
        from retland.warehouse import Warehouse

        Warehouse.open(base)
    start = _counts(base)
    points = _write_points_of(["import-returns", src], base)
    assert points >= 5  # intent, 4 parts (runs, operators, checkpoints, returns), entry
    full = None
    for k in range(1, points + 1):
        root = tmp_path / f"crash-{k}"
        shutil.copytree(base, root)
        out = _cli(["import-returns", src, "-w", root], {"RETLAND_CRASH_AT": str(k)})
        assert out.returncode == -9, (k, out.stderr)
        got = _counts(root)
        # the rerun completes and cleans up (in this process: only the killed run needs its own)
        code, _, err = run_cli(capsys, monkeypatch, "import-returns", src, "-w", root)
        assert code == 0, (k, err)
        full = _counts(root)
        assert got in (start, full), (k, got, start, full)
        code, out_text, err = run_cli(capsys, monkeypatch, "check", "-w", root)
        assert code == 0, (k, out_text, err)
        assert not [p for p in root.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".pending-")], k
    assert full[1] == start[1] + 25


def test_a_failed_commit_deletes_its_parts(tmp_path, monkeypatch):
    """An error between the parts and the log entry (here: the entry's write fails)
    leaves the folder as it was."""
    from retland.warehouse import Warehouse
    from retland.warehouse import writer

    wh = Warehouse.open(tmp_path / "wh")
    before = tree_digest(wh.root)

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer, "write_entry", boom)
    from retland.warehouse import WarehouseError

    with pytest.raises(WarehouseError, match="no space left to write into .*needs up to about"):
        wh.append_many({"runs": [{"run_id": "r", "algo": "a", "env": "e", "seed": 0, "source": "trained"}],
                        "post_update_returns": [{"run_id": "r", "step": 0, "operator_id": "o", "update_index": 0,
                                                 "return": 1.0}]})
    assert tree_digest(wh.root) == before


def test_an_interrupt_after_the_entry_is_renamed_keeps_the_commit(tmp_path, monkeypatch, capsys):
    """Ctrl-C or SIGTERM (each an exception raised between two bytecodes) after the entry's
    rename, here in the log folder's fsync: the commit has happened, so its parts stay
    (deleting them would leave an entry naming missing files)."""
    from retland.warehouse import Warehouse
    from retland.warehouse import log

    wh = Warehouse.open(tmp_path / "wh")
    real, calls = log._fsync_dir, []

    def fsync(folder):
        real(folder)
        if folder == log.log_dir(wh.root):
            calls.append(folder)
            if len(calls) == 2:  # the intent's, then the entry's
                raise KeyboardInterrupt

    monkeypatch.setattr(log, "_fsync_dir", fsync)
    with pytest.raises(KeyboardInterrupt):
        wh.append_many({"runs": [{"run_id": "r", "algo": "a", "env": "e", "seed": 0, "source": "imported"}],
                        "post_update_returns": [{"run_id": "r", "step": 0, "operator_id": "o", "update_index": 0,
                                                 "return": 1.0}]})
    monkeypatch.setattr(log, "_fsync_dir", real)
    assert _counts(wh.root)[:2] == (1, 1)
    code, out, _ = run_cli(capsys, monkeypatch, "check", "-w", wh.root)
    assert code == 0 and "no damaged parts" in out, out
    assert not list((wh.root / "log").glob(".pending-*"))


def test_add_policy_refuses_non_finite_params_naming_the_leaf(tmp_path):
    import numpy as np

    import retland

    kernel = np.full((11, 3), 0.1, np.float32)
    kernel[4, 2] = np.inf
    params = [{"kernel": kernel, "bias": np.zeros(3, np.float32)}]
    with pytest.raises(ValueError, match=r"params at 0/kernel hold 1 non-finite value\(s\) \(first inf at index \(4, 2\)\)"):
        retland.add_policy(tmp_path / "wh", env="hopper", apply="retland.policies:mlp_apply", params=params,
                           name="mine")
    assert not (tmp_path / "wh").exists()


@pytest.mark.slow
def test_kill_9_at_every_write_point_of_sample_leaves_all_or_nothing(tmp_path, capsys, monkeypatch):
    """`retland sample` commits its operator row with its rows (one entry per flush): a
    kill at any write point leaves the distribution's rows and operator, or neither.
    Slow: every try is a process that compiles the sampler (~10-40 s on 2 cores); the
    reruns and checks run in this process, which compiles once."""
    base = tmp_path / "wh"
    assert _cli(["add-example", "-w", base]).returncode == 0
    import retland

    run = retland.query("SELECT run_id FROM runs", warehouse=base)["run_id"][0]
    args = ["sample", "--run", run, "--operator", "gaussian:0.001", "--samples", "8", "--horizon", "20",
            "--batch-size", "8"]
    start = _counts(base)
    points = _write_points_of(args, base)
    assert points >= 5  # intent, operators part, returns part, entry
    full = None
    for k in range(1, points + 1):
        root = tmp_path / f"crash-{k}"
        shutil.copytree(base, root)
        out = _cli([*args, "-w", root], {"RETLAND_CRASH_AT": str(k)}, timeout=300)
        assert out.returncode == -9, (k, out.stderr[-2000:])
        got = _counts(root)
        code, _, err = run_cli(capsys, monkeypatch, *args, "-w", root, "--no-progress")
        assert code == 0, (k, err[-2000:])
        full = _counts(root)
        assert got in (start, full), (k, got, start, full)
        code, report, _ = run_cli(capsys, monkeypatch, "check", "-w", root)
        assert code == 0, (k, report)
        shutil.rmtree(root)
    assert full[1] == start[1] + 8 and full[3] == start[3] + 1


# the tiny TD3 job of tests/analysis_jobs.py, as a `retland train --config` file
TINY_TRAIN_TOML = 'env = "hopper"\nseeds = 2\ntotal_steps = 120\ncheckpoints = [60, 120]\neval_every = 60\n' + TINY_AGENT


TRAIN_COUNTS = "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM evaluations), " \
               "(SELECT count(*) FROM checkpoints), " \
               "(SELECT count(*) FROM checkpoints c ANTI JOIN evaluations e USING (run_id, step))"


def _train_counts(root: Path) -> tuple:
    return _counts(root, TRAIN_COUNTS)


@pytest.mark.slow
def test_kill_9_at_every_write_point_of_train_leaves_whole_commits_and_resume_finishes(tmp_path, capsys,
                                                                                      monkeypatch):
    """`retland train` commits its runs rows, then each evaluation, and each checkpoint's
    rows with that step's evaluations as one entry (its state files written before).
    A kill -9 at any write point leaves a prefix of those commits, never a checkpoint
    without its evaluation; `check` finds the warehouse healthy; and `train --resume JOB`
    (or, when no runs row was committed, a new `train`) ends with the uninterrupted job's
    rows. Slow: every try is a process that compiles the tiny job (~10-15 s on 2 cores);
    resumes and checks run in this process, which compiles once."""
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_TRAIN_TOML)
    base = tmp_path / "wh"
    from retland.warehouse import Warehouse

    Warehouse.open(base)
    args = ["train", "--config", config, "--no-progress"]
    # the commits an uninterrupted job makes: runs; step 0's evaluations; 60's; 120's
    states = [(0, 0, 0, 0), (2, 0, 0, 0), (2, 2, 0, 0), (2, 4, 2, 0), (2, 6, 4, 0)]
    points = _write_points_of(args, base)
    assert points >= 4 * 3  # each commit: an intent, its parts and its entry, each renamed
    resumed = set()
    for k in range(1, points + 1):
        root = tmp_path / f"crash-{k}"
        shutil.copytree(base, root)
        out = _cli([*args, "-w", root], {"RETLAND_CRASH_AT": str(k)}, timeout=300)
        assert out.returncode == -9, (k, out.stderr[-2000:])
        got = _train_counts(root)
        assert got in states, (k, got)
        # nothing damaged: at most the dead writer's unfinished temporary files (the next
        # writer deletes them) and its job listed as an orphan run (resume restarts it)
        code, report, _ = run_cli(capsys, monkeypatch, "check", "-w", root)
        expected = ("stray temp file: ", "orphan run: ", "`retland check --quarantine`")
        problems = [line for line in report.splitlines() if line.strip() and not line.strip().startswith(expected)]
        assert code in (0, 1) and not problems, (k, report)
        if got not in resumed:  # each distinct state once: resuming is the slow part
            resumed.add(got)
            if got[0]:
                import retland

                job = retland.query("SELECT run_id FROM runs", warehouse=root)["run_id"][0].rsplit("-s", 1)[0]
                code, _, err = run_cli(capsys, monkeypatch, "train", "--resume", job, "--no-progress", "-w", root)
            else:
                code, _, err = run_cli(capsys, monkeypatch, *args, "-w", root)
            assert code == 0, (k, err[-2000:])
            assert _train_counts(root) == states[-1], k
            code, report, _ = run_cli(capsys, monkeypatch, "check", "-w", root)
            assert code == 0, (k, report)
            assert not [p for p in root.rglob("*") if p.name.endswith(".tmp") or "orbax-checkpoint-tmp" in p.name], k
        shutil.rmtree(root)
    assert len(resumed) >= 4
