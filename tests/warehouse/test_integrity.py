"""A warehouse holds months of sampling: user SQL cannot change it or read outside it, a
damaged part does not take every command down, and compaction never runs under a user.

Every refused probe leaves the warehouse byte-identical and writes nothing elsewhere."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pytest

from conftest import GOOD_CSV, run_cli, tree_digest


def _a_returns_part(root: Path) -> Path:
    parts = sorted(p for p in (root / "tables" / "post_update_returns").rglob("part-*.parquet")
                   if "schema" not in p.name)
    return parts[0]


# ----- 1. user SQL: read-only and confined to the warehouse --------------------------------

def _probes(root: Path, outside: Path) -> list[tuple[list[str], str]]:
    """(CLI args, needle in the one-line error) of statements that must not run."""
    run_dir = _a_returns_part(root).parent
    planted = run_dir / "part-00000000000000000001-planted.parquet"
    return [
        (["query", f"EXPLAIN ANALYZE COPY (SELECT 42) TO '{outside / 'x.csv'}'"], "refused: EXPLAIN of COPY"),
        # A part named earlier than the real ones would win first-writer dedupe.
        (["query", f"EXPLAIN ANALYZE COPY (SELECT 'td3' AS operator_id, 100 AS step, 0 AS update_index, "
                   f"-999.0 AS \"return\") TO '{planted}' (FORMAT parquet)"], "refused: EXPLAIN of COPY"),
        (["query", f"EXPLAIN /* a comment */ ANALYSE (FORMAT json) COPY (SELECT 1) TO '{planted}'"], "refused"),
        (["query", f"COPY (SELECT 1) TO '{planted}'"], "refused: COPY"),
        (["query", f"SELECT * FROM query('COPY (SELECT 1) TO ''{planted}''')"], "single SELECT"),
        (["query", f"SELECT content FROM read_text('{outside / 'secret.txt'}')"], "Permission"),
        (["query", "SELECT * FROM glob('/etc/*')"], "Permission"),
        (["query", f"ATTACH '{outside / 'other.db'}'"], "refused: ATTACH"),
        (["query", "INSTALL httpfs"], "refused"),
        (["query", "LOAD json"], "refused"),
        (["query", "SET enable_external_access = true"], "refused: SET"),
        (["query", "PRAGMA version"], "refused"),
        (["query", "CALL pragma_version()"], "refused"),
        (["query", "SELECT 1; SELECT 2"], "one statement"),
        (["report", "--where", "1=1)) LIMIT 0; COPY (SELECT 'x') TO '" + str(outside / "y.csv")
          + "'; SELECT * FROM (SELECT 1 AS a) WHERE ((1=1", "-o", str(outside / "r.html")], "not one SQL condition"),
        (["stats", "--where", f"1=1) UNION ALL BY NAME SELECT content AS env FROM read_text('{outside / 'secret.txt'}') "
                              "WHERE (1=1"], "not one SQL condition"),
        (["stats", "--where", f"env IN (SELECT content FROM read_text('{outside / 'secret.txt'}'))"], "Permission"),
        (["report", "--where", "env ====", "-o", str(outside / "r.html")], "not one SQL condition"),
    ]


def test_user_sql_cannot_write_or_read_outside(filled, tmp_path, capsys, monkeypatch):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("root:password-hash\n")
    before, outside_before = tree_digest(filled), tree_digest(outside)
    for args, needle in _probes(filled, outside):
        code, out, err = run_cli(capsys, monkeypatch, *args, "-w", filled)
        assert code == 2, (args, out, err)
        assert needle in err, (args, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert "password-hash" not in out + err
        assert tree_digest(filled) == before, args
        assert tree_digest(outside) == outside_before, args


def test_reading_statements_still_run(filled, capsys, monkeypatch):
    for sql in ("EXPLAIN ANALYZE SELECT count(*) FROM post_update_returns", "DESCRIBE runs",
                "SUMMARIZE post_update_returns", "FROM runs", "WITH x AS (SELECT 1 AS a) SELECT * FROM x",
                "SELECT count(*) FROM read_parquet('tables/runs/*.parquet')"):
        code, _, err = run_cli(capsys, monkeypatch, "query", sql, "-w", filled)
        if sql.startswith("SELECT count(*) FROM read_parquet('tables"):
            # relative paths are resolved against the working directory, outside the fence
            assert code == 2 and "Permission" in err
        else:
            assert code == 0, (sql, err)
    code, out, err = run_cli(capsys, monkeypatch, "stats", "--where", "seed = 1 AND n > 3", "-f", "csv", "-w", filled)
    assert code == 0, err
    assert out.count("\n") == 2  # header + seed 1's distribution


def test_python_connections_are_confined_too(filled, tmp_path):
    import retland
    from retland.warehouse import WarehouseError

    with pytest.raises(WarehouseError, match="refused"):
        retland.query(f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'", warehouse=filled)
    con = retland.connect(filled)
    try:
        with pytest.raises(WarehouseError, match="refused: COPY"):
            con.execute(f"COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'")
        with pytest.raises(duckdb.PermissionException):  # the second fence, under the first
            con.duckdb.execute(f"COPY (SELECT 1) TO '{tmp_path / 'x.csv'}'")
        with pytest.raises(WarehouseError, match="refused: SET"):
            con.execute("SET enable_external_access = true")
        with pytest.raises(duckdb.InvalidInputException, match="locked"):
            con.duckdb.execute("SET enable_external_access = true")
        assert con.sql("SELECT count(*) FROM post_update_returns").fetchall()[0][0] == 25
    finally:
        con.close()
    assert not (tmp_path / "x.csv").exists()


def test_large_queries_can_still_spill(filled):
    """The fence keeps DuckDB's own spill folder usable (it sorts more than memory)."""
    import retland

    con = retland.connect(filled)
    try:
        with pytest.raises(duckdb.InvalidInputException):
            con.duckdb.execute("SET memory_limit = '30MB'")  # locked: spill is what makes this work
        n = con.sql("SELECT count(*) FROM (SELECT range % 7 AS a, random() AS b FROM range(3000000) ORDER BY b)")
        assert n.fetchall()[0][0] == 3_000_000
    finally:
        con.close()


# ----- 2. a damaged warehouse ----------------------------------------------------------------

def test_a_truncated_part_breaks_only_its_table_and_check_quarantines_it(filled, capsys, monkeypatch):
    part = _a_returns_part(filled)
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])
    rel = part.relative_to(filled).as_posix()

    code, out, err = run_cli(capsys, monkeypatch, "runs", "-f", "csv", "-w", filled)
    assert code == 0, err
    assert "td3-hopper-imported-s0" in out and rel in err
    code, out, err = run_cli(capsys, monkeypatch, "query", "SELECT count(*) AS n FROM runs", "-f", "csv", "-w", filled)
    assert code == 0 and out.splitlines()[1] == "2", err
    code, out, err = run_cli(capsys, monkeypatch, "stats", "-w", filled)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and rel in err and "retland check --quarantine" in err, err

    code, out, err = run_cli(capsys, monkeypatch, "check", "-w", filled)
    assert code == 1 and "damaged part" in out and Path(rel).name in out, out
    code, out, err = run_cli(capsys, monkeypatch, "check", "--quarantine", "-w", filled)
    assert code == 0, err
    assert not part.exists()
    moved = list((filled / "quarantine").rglob(part.name))
    assert len(moved) == 1 and moved[0].read_bytes() == data[: len(data) // 2]  # set aside, not deleted

    code, out, err = run_cli(capsys, monkeypatch, "stats", "-f", "csv", "-w", filled)
    assert code == 0, err
    code, out, _ = run_cli(capsys, monkeypatch, "check", "-w", filled)
    assert code == 0 and "no damaged parts" in out


def test_stray_temp_files_are_listed_and_compaction_sets_them_aside(filled, capsys, monkeypatch):
    folder = _a_returns_part(filled).parent
    stray = folder / ".part-00000000000000000042-dead.parquet.abcd1234.tmp"
    stray.write_bytes(b"PAR1 half a part")
    code, out, _ = run_cli(capsys, monkeypatch, "check", "-w", filled)
    assert code == 1 and "stray temp file" in out
    code, out, err = run_cli(capsys, monkeypatch, "compact", "-w", filled)
    assert code == 0, err
    assert not stray.exists() and list((filled / "quarantine").rglob(stray.name))


# ----- the lock: compaction needs the warehouse to itself --------------------------------------

_HOLDER = textwrap.dedent("""
    import sys
    from pathlib import Path
    root = Path(sys.argv[1])
    if sys.argv[2] == "user":
        import retland
        retland.connect(root).sql("SELECT count(*) FROM runs").fetchall()
        print("holding", flush=True)
        sys.stdin.readline()
    else:
        from retland.warehouse.lock import exclusive
        with exclusive(root, "test"):
            print("holding", flush=True)
            sys.stdin.readline()
""")


def _holder(root: Path, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(root), mode], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_compaction_refuses_while_another_process_uses_the_warehouse(filled, tmp_path, capsys, monkeypatch):
    # a second part per folder, so there is something to compact
    more = tmp_path / "more.csv"
    more.write_text(GOOD_CSV.replace(",100,", ",200,"))
    assert run_cli(capsys, monkeypatch, "import-returns", more, "-w", filled)[0] == 0
    user = _holder(filled, "user")
    try:
        before = tree_digest(filled)
        code, _, err = run_cli(capsys, monkeypatch, "compact", "-w", filled)
        assert code == 2
        assert f"pid {user.pid}" in err and "needs the warehouse to itself" in err, err
        assert tree_digest(filled) == before
    finally:
        user.communicate("\n")
    code, out, err = run_cli(capsys, monkeypatch, "compact", "-w", filled)
    assert code == 0 and "compacted" in out, err


def test_users_wait_out_a_compaction_with_a_clear_message(filled, capsys, monkeypatch):
    from retland.warehouse.lock import release

    release(filled)  # this test process opened it while building the fixture
    holder = _holder(filled, "exclusive")
    try:
        code, _, err = run_cli(capsys, monkeypatch, "query", "SELECT 1", "-w", filled)
        assert code == 2 and "being compacted or repaired" in err and f"pid {holder.pid}" in err, err
    finally:
        holder.communicate("\n")
    assert run_cli(capsys, monkeypatch, "query", "SELECT 1", "-w", filled)[0] == 0
