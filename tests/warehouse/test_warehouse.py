"""The warehouse's write path and views: validation, atomic parts, dedup, read-only SQL."""
from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from conftest import tree_digest
from retland.warehouse.writer import adopt_files
from retland.warehouse import Warehouse, WarehouseError


def returns_rows(run="r1", step=100, op="td3", idx=range(5), offset=0.0):
    return [
        {"run_id": run, "step": step, "operator_id": op, "update_index": i, "return": float(i) + offset}
        for i in idx
    ]


def test_append_then_read_back(warehouse):
    assert warehouse.append("post_update_returns", returns_rows()) == 5
    df = warehouse.query("SELECT update_index, \"return\" FROM post_update_returns ORDER BY update_index")
    assert df["return"].to_list() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_empty_tables_have_typed_views(warehouse):
    df = warehouse.query("DESCRIBE post_update_returns")
    types = dict(zip(df["column_name"], df["column_type"]))
    assert types["return"] == "DOUBLE" and types["update_index"] == "BIGINT" and types["run_id"] == "VARCHAR"
    assert warehouse.query("SELECT count(*) AS n FROM runs")["n"][0] == 0


def test_first_writer_wins_on_duplicate_keys(warehouse):
    warehouse.append("post_update_returns", returns_rows(idx=range(3)))
    warehouse.append("post_update_returns", returns_rows(idx=range(1, 5), offset=100.0))
    df = warehouse.query('SELECT update_index, "return" FROM post_update_returns ORDER BY update_index')
    assert df["return"].to_list() == [0.0, 1.0, 2.0, 103.0, 104.0]


def test_parts_are_hive_partitioned_by_run(warehouse):
    warehouse.append("post_update_returns", returns_rows(run="a") + returns_rows(run="b"))
    folders = sorted(p.name for p in warehouse.table_dir("post_update_returns").iterdir())
    assert folders == ["run_id=__schema__", "run_id=a", "run_id=b"]
    assert warehouse.query("SELECT count(DISTINCT run_id) AS n FROM post_update_returns")["n"][0] == 2


def test_accepts_arrow_and_polars(warehouse):
    import polars as pl

    warehouse.append("post_update_returns", pl.DataFrame(returns_rows(idx=range(2))))
    warehouse.append("post_update_returns", pa.Table.from_pylist(returns_rows(idx=range(2, 4))))
    assert warehouse.query("SELECT count(*) AS n FROM post_update_returns")["n"][0] == 4


def test_no_partial_files_visible(warehouse):
    warehouse.append("post_update_returns", returns_rows())
    leftovers = [p for p in warehouse.root.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


BAD_ROWS = [
    ("unknown column", [{**returns_rows()[0], "colour": "red"}], "unknown column"),
    ("missing key", [{"run_id": "r", "step": 1, "operator_id": "o", "return": 1.0}], "update_index"),
    ("null key", [{**returns_rows()[0], "run_id": None}], "run_id"),
    ("NaN in integer key", [{**returns_rows()[0], "step": float("nan")}], "step"),
    ("wrong type", [{**returns_rows()[0], "step": "hundred"}], "step"),
    ("NaN return", [{**returns_rows()[0], "return": float("nan")}], "non-finite"),
    ("inf return", [{**returns_rows()[0], "return": float("inf")}], "non-finite"),
    ("duplicate key in batch", returns_rows(idx=[1, 1]), "duplicate key"),
    ("unsafe partition value", returns_rows(run="../escape"), "folder name"),
    ("fractional integer", [{**returns_rows()[0], "update_index": 1.5}], "update_index"),
]


@pytest.mark.parametrize("rows,needle", [(r, n) for _, r, n in BAD_ROWS], ids=[c for c, _, _ in BAD_ROWS])
def test_bad_rows_are_refused_and_nothing_is_written(warehouse, rows, needle):
    warehouse.append("post_update_returns", returns_rows(run="keep"))
    before = tree_digest(warehouse.root)
    with pytest.raises(WarehouseError, match=needle):
        warehouse.append("post_update_returns", rows)
    assert tree_digest(warehouse.root) == before


def test_unknown_table_is_named(warehouse):
    with pytest.raises(WarehouseError, match="unknown table 'nope'"):
        warehouse.append("nope", [])


def _append_worker(args):
    root, worker = args
    wh = Warehouse(Path(root))
    for k in range(10):
        wh.append("post_update_returns", returns_rows(run=f"w{worker}", idx=range(k * 10, k * 10 + 10)))


def test_concurrent_appenders_from_processes(tmp_path):
    wh = Warehouse.open(tmp_path / "wh")
    with mp.get_context("spawn").Pool(4) as pool:
        pool.map(_append_worker, [(str(wh.root), w) for w in range(4)])
    df = wh.query("SELECT run_id, count(*) AS n, count(DISTINCT update_index) AS d FROM post_update_returns GROUP BY run_id")
    assert sorted(df["n"].to_list()) == [100] * 4 and sorted(df["d"].to_list()) == [100] * 4


@pytest.mark.parametrize(
    "sql",
    ["DELETE FROM runs", "DROP VIEW runs", "COPY runs TO 'x.csv'", "CREATE TABLE t AS SELECT 1",
     "ATTACH 'x.db'", "SELECT 1; SELECT 2", "INSERT INTO runs SELECT * FROM runs", "SET threads = 1"],
)
def test_query_refuses_writes(warehouse, sql):
    before = tree_digest(warehouse.root)
    with pytest.raises(WarehouseError):
        warehouse.query(sql)
    assert tree_digest(warehouse.root) == before


def test_read_queries_allowed(warehouse):
    warehouse.append("post_update_returns", returns_rows())
    assert warehouse.query("SUMMARIZE post_update_returns").height > 0
    assert warehouse.query("SHOW TABLES").height > 0
    assert warehouse.query("WITH x AS (SELECT 1 AS a) SELECT * FROM x")["a"][0] == 1


def _stock_client(init_sql: Path, cwd: Path, query: str, setup: str = "") -> subprocess.CompletedProcess:
    """A plain duckdb session (no retland import) that runs `setup`, then init.sql, then
    prints the first value of `query`."""
    script = (
        "import duckdb, sys; con = duckdb.connect(); "
        f"con.execute({setup!r}) if {bool(setup)!r} else None; "
        "con.execute(open(sys.argv[1]).read()); "
        f"print(con.sql({query!r}).fetchall()[0][0])"
    )
    return subprocess.run([sys.executable, "-c", script, str(init_sql)], cwd=cwd, capture_output=True, text=True)


def test_stock_duckdb_client_inside_the_folder_and_from_anywhere_with_a_search_path(warehouse, tmp_path):
    """init.sql makes the views in a plain duckdb session started inside the warehouse,
    or anywhere once file_search_path names the folder."""
    warehouse.append("post_update_returns", returns_rows())
    count = "SELECT count(*) FROM post_update_returns"
    inside = _stock_client(warehouse.root / "init.sql", warehouse.root, count)
    assert inside.stdout.strip() == "5", inside.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    anywhere = _stock_client(warehouse.root / "init.sql", elsewhere, count,
                             setup=f"SET file_search_path = '{warehouse.root}'")
    assert anywhere.stdout.strip() == "5", anywhere.stderr


def test_stock_duckdb_client_reads_the_schema_views_inside_the_folder(warehouse):
    """The views of schema/*.sql that the CLI and the report select from work from
    init.sql alone: run_summary counts a run's checkpoints, distributions and samples
    the way `retland runs` lists them."""
    run = {"run_id": "r1", "algo": "td3", "env": "hopper", "seed": 0, "source": "trained"}
    warehouse.append("runs", [run, {**run, "run_id": "r2", "seed": 1}])
    warehouse.append("checkpoints", [{"run_id": "r1", "step": s, "eval_return": float(s)} for s in (100, 200)])
    warehouse.append("post_update_returns", returns_rows() + returns_rows(step=200, idx=range(3)))
    summary = ("SELECT list((run_id, checkpoints, best_eval_return, distributions, samples) ORDER BY run_id)::VARCHAR "
               "FROM run_summary")
    want = "[(r1, 2, 200.0, 2, 8), (r2, 0, NULL, 0, 0)]"
    inside = _stock_client(warehouse.root / "init.sql", warehouse.root, summary)
    assert inside.stdout.strip() == want, inside.stderr
    assert warehouse.query(summary).item() == want
    final = _stock_client(warehouse.root / "init.sql", warehouse.root, "SELECT count(*) FROM stabilize_final")
    assert final.stdout.strip() == "0", final.stderr


def test_stock_duckdb_client_started_elsewhere_fails_loudly(warehouse, tmp_path):
    warehouse.append("post_update_returns", returns_rows())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = _stock_client(warehouse.root / "init.sql", elsewhere, "SELECT count(*) FROM post_update_returns")
    assert out.returncode != 0
    assert "no warehouse here" in out.stderr


def test_a_copied_warehouse_reads_its_own_rows_in_a_stock_client(warehouse, tmp_path):
    """cp -r, then more rows into the original: the copy's init.sql, run from inside the
    copy with plain duckdb, sees the copy's rows, not the original's."""
    import shutil

    warehouse.append("post_update_returns", returns_rows())
    copy = tmp_path / "copy"
    shutil.copytree(warehouse.root, copy)
    warehouse.append("post_update_returns", returns_rows(run="more"))
    count = "SELECT count(*) FROM post_update_returns"
    assert _stock_client(warehouse.root / "init.sql", warehouse.root, count).stdout.strip() == "10"
    out = _stock_client(copy / "init.sql", copy, count)
    assert out.stdout.strip() == "5", out.stderr
    assert Warehouse.open(copy, create=False).query(count).item() == 5
    # the duckdb command line itself (the duckdb-cli package), as an analyst starts it
    cli = Path(sys.executable).with_name("duckdb")
    for folder, rows in ((copy, "5"), (warehouse.root, "10")):
        out = subprocess.run([str(cli), "-init", "init.sql", "-csv", "-noheader", "-c", count],
                             cwd=folder, capture_output=True, text=True)
        assert out.returncode == 0 and out.stdout.strip().splitlines()[-1] == rows, out.stderr
    out = subprocess.run([str(cli), "-init", str(copy / "init.sql"), "-c", count], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode != 0 and "no warehouse here" in out.stdout + out.stderr


def test_connect_requires_existing_warehouse(tmp_path):
    import retland

    with pytest.raises(WarehouseError, match="no warehouse"):
        retland.connect(tmp_path / "missing")


# ----- deduplicating views: footer key boxes decide which parts go through the window -----


def _returns(wh, where=""):
    df = wh.query(
        f'SELECT run_id, step, update_index, "return" FROM post_update_returns {where} '
        "ORDER BY run_id, step, update_index"
    )
    return [tuple(r) for r in df.iter_rows()]


def _overlapping_parts(wh, table):
    """Parts the view routes through the window dedupe (the view's own CTEs)."""
    from retland.warehouse.sqlgen import view_sql
    from retland.warehouse.tables import TABLES

    sql = view_sql(TABLES[table], prefix=f"{wh.root}/")
    ctes = sql[sql.index("WITH parts"):sql.index("\nSELECT\n")]
    con = wh.connect()
    try:
        rows = con.sql(ctes + "\nSELECT part FROM overlapping").fetchall()
    finally:
        con.close()
    return sorted(Path(p).name for (p,) in rows)


def test_only_colliding_keys_are_deduplicated(warehouse):
    # Part 1: steps 100 and 200; part 2 collides on step 200 indices 3..4 only and adds
    # step 200 indices 5..6; a third part in another step range passes straight through.
    warehouse.append("post_update_returns", returns_rows(step=100) + returns_rows(step=200))
    warehouse.append("post_update_returns", returns_rows(step=200, idx=range(3, 7), offset=100.0))
    warehouse.append("post_update_returns", returns_rows(step=900, idx=range(2), offset=50.0))
    got = _returns(warehouse)
    want = (
        [("r1", 100, i, float(i)) for i in range(5)]
        + [("r1", 200, i, float(i)) for i in range(5)]
        + [("r1", 200, i, i + 100.0) for i in (5, 6)]
        + [("r1", 900, i, i + 50.0) for i in range(2)]
    )
    assert got == want
    assert len(_overlapping_parts(warehouse, "post_update_returns")) == 2


def test_three_writers_of_one_key_first_wins(warehouse):
    for offset in (0.0, 10.0, 20.0):
        warehouse.append("post_update_returns", returns_rows(idx=[7], offset=offset))
    assert _returns(warehouse) == [("r1", 100, 7, 7.0)]
    # the middle writer also wins over the last one for keys the first never wrote
    warehouse.append("post_update_returns", returns_rows(idx=[7, 8], offset=30.0))
    warehouse.append("post_update_returns", returns_rows(idx=[8], offset=40.0))
    assert _returns(warehouse) == [("r1", 100, 7, 7.0), ("r1", 100, 8, 38.0)]


def test_overlapping_boxes_without_a_shared_key_keep_every_row(warehouse):
    warehouse.append("post_update_returns", returns_rows(idx=[0, 2, 4, 6]))
    warehouse.append("post_update_returns", returns_rows(idx=[1, 3, 5], offset=100.0))
    assert len(_overlapping_parts(warehouse, "post_update_returns")) == 2
    got = _returns(warehouse)
    assert [r[2] for r in got] == list(range(7))
    assert [r[3] for r in got] == [0.0, 101.0, 2.0, 103.0, 4.0, 105.0, 6.0]


def test_disjoint_parts_and_other_runs_pass_through(warehouse):
    # Same keys in another run's folder are not duplicates; adjacent index ranges and
    # empty parts route nothing through the window.
    warehouse.append("post_update_returns", returns_rows(run="a", idx=range(0, 5)))
    warehouse.append("post_update_returns", returns_rows(run="a", idx=range(5, 10), offset=1.0))
    warehouse.append("post_update_returns", returns_rows(run="b", idx=range(0, 5), offset=2.0))
    assert _overlapping_parts(warehouse, "post_update_returns") == []
    got = _returns(warehouse)
    assert len(got) == 15 and len({r[:3] for r in got}) == 15


def test_part_without_footer_statistics_is_still_deduplicated(warehouse):
    """A part written by another tool without statistics may overlap anything."""
    import pyarrow.parquet as pq

    warehouse.append("post_update_returns", returns_rows(idx=range(3)))
    table = pa.Table.from_pylist(returns_rows(idx=range(2, 5), offset=100.0)).drop_columns(["run_id"])
    folder = warehouse.table_dir("post_update_returns") / "run_id=r1"
    pq.write_table(table, folder / "part-99999999999999999999-nostats.parquet", write_statistics=False)
    assert len(_returns(warehouse)) == 3  # not committed: never read
    adopt_files(warehouse.root, [folder / "part-99999999999999999999-nostats.parquet"])
    assert [r[3] for r in _returns(warehouse)] == [0.0, 1.0, 2.0, 103.0, 104.0]


def test_duplicates_in_tables_without_partitions(warehouse):
    run = {"run_id": "r1", "algo": "td3", "env": "hopper", "seed": 0, "source": "trained"}
    warehouse.append("runs", [run, {**run, "run_id": "r2"}])
    warehouse.append("runs", [{**run, "algo": "late"}, {**run, "run_id": "r3", "algo": "sac"}])
    warehouse.append("runs", [{**run, "run_id": "r2", "algo": "later"}])
    df = warehouse.query("SELECT run_id, algo FROM runs ORDER BY run_id")
    assert list(df.iter_rows()) == [("r1", "td3"), ("r2", "td3"), ("r3", "sac")]

    ck = [{"run_id": "r1", "step": s, "eval_return": float(s)} for s in (10, 20, 30)]
    warehouse.append("checkpoints", ck)
    warehouse.append("checkpoints", [{**ck[1], "eval_return": -1.0}, {"run_id": "r1", "step": 40, "eval_return": 40.0}])
    warehouse.append("checkpoints", [{"run_id": "r2", "step": 20, "eval_return": 2.0}])
    df = warehouse.query("SELECT run_id, step, eval_return FROM checkpoints ORDER BY run_id, step")
    assert list(df.iter_rows()) == [("r1", 10, 10.0), ("r1", 20, 20.0), ("r1", 30, 30.0),
                                    ("r1", 40, 40.0), ("r2", 20, 2.0)]


def test_stock_duckdb_client_deduplicates(warehouse, tmp_path):
    """init.sql alone (globs relative to the folder) gives the same dedupe."""
    warehouse.append("post_update_returns", returns_rows(idx=range(3)))
    warehouse.append("post_update_returns", returns_rows(idx=range(1, 5), offset=100.0))
    warehouse.append("post_update_returns", returns_rows(run="other"))
    script = (
        "import duckdb, sys; con = duckdb.connect(); "
        "con.execute(open(sys.argv[1]).read()); con.complete(); "
        "print(con.sql(\"SELECT list(\\\"return\\\" ORDER BY update_index) FROM post_update_returns "
        "WHERE run_id = 'r1'\").fetchall()[0][0]); "
        "print(con.sql('SELECT count(*) FROM post_update_returns').fetchall()[0][0]); "
        "print(con.sql('SELECT count(*) FROM distribution_stats').fetchall()[0][0])"
    )
    out = subprocess.run([sys.executable, "-c", script, str(warehouse.root / "init.sql")],
                         cwd=warehouse.root, capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:3] == ["[0.0, 1.0, 2.0, 103.0, 104.0]", "10", "2"]


def test_table_added_after_the_warehouse_was_written_reads_as_empty(warehouse):
    """A warehouse from an older retland lacks newer tables' folders: reads still work,
    and read-only opening writes nothing."""
    import shutil

    from retland.warehouse.sqlgen import SCHEMA_PART

    warehouse.append("post_update_returns", returns_rows())
    shutil.rmtree(warehouse.table_dir("evaluations"))
    before = tree_digest(warehouse.root)
    ro = Warehouse.open(warehouse.root, create=False)
    assert ro.query("SELECT count(*) AS n FROM evaluations")["n"][0] == 0
    assert ro.query("SELECT count(*) AS n FROM post_update_returns")["n"][0] == 5
    assert tree_digest(warehouse.root) == before
    Warehouse.open(warehouse.root).append("evaluations", [{"run_id": "r", "step": 1, "eval_return": 2.0}])
    assert (warehouse.table_dir("evaluations") / SCHEMA_PART).exists()
    assert ro.query("SELECT eval_return FROM evaluations")["eval_return"].to_list() == [2.0]


# ----------------------------------------------------------------------------- compact

def _all_tables(wh):
    from retland.warehouse.tables import TABLES

    out = {}
    for name, spec in TABLES.items():
        cols = ", ".join(f'"{f.name}"' for f in spec.schema if f.name != "created_at")
        out[name] = [tuple(r) for r in wh.query(f'SELECT {cols} FROM "{name}" ORDER BY ALL').iter_rows()]
    return out


def test_compact_keeps_what_the_views_show(warehouse):
    """Duplicates across parts (first writer wins), a part without statistics, an old part
    missing a nullable column, and two run folders: the views read the same before and
    after, each folder ends with one part sorted by key, and the next append still loses
    to the compacted rows it duplicates."""
    import pyarrow.parquet as pq

    from retland.warehouse.compact import compact_folder, data_parts, plan

    warehouse.append("post_update_returns", returns_rows(idx=[5, 1, 3]))
    warehouse.append("post_update_returns", returns_rows(idx=range(6), offset=100.0))
    warehouse.append("post_update_returns", returns_rows(run="b", idx=range(2)))
    warehouse.append("post_update_returns", returns_rows(run="b", idx=range(2, 4)))
    folder = warehouse.table_dir("post_update_returns") / "run_id=r1"
    old = pa.Table.from_pylist(returns_rows(idx=[9], offset=7.0)).drop_columns(["run_id"])
    pq.write_table(old, folder / "part-99999999999999999998-old.parquet", write_statistics=False)
    adopt_files(warehouse.root, [folder / "part-99999999999999999998-old.parquet"])
    run = {"run_id": "r1", "algo": "td3", "env": "hopper", "seed": 0, "source": "trained"}
    warehouse.append("runs", [run])
    warehouse.append("runs", [{**run, "algo": "late"}, {**run, "run_id": "r2"}])
    before = _all_tables(warehouse)

    items = plan(warehouse.root)
    assert sorted((i.table, i.folder.name, len(i.parts)) for i in items) == [
        ("post_update_returns", "run_id=b", 2), ("post_update_returns", "run_id=r1", 3), ("runs", "runs", 2)]
    results = [compact_folder(i) for i in items]
    assert sum(r.rows_before - r.rows_after for r in results) == 3 + 1  # r1: idx 1, 3, 5; runs: r1
    assert _all_tables(warehouse) == before
    for item in items:
        (part,) = data_parts(item.folder)
        index = pq.read_table(part).column("update_index" if item.table != "runs" else "run_id").to_pylist()
        assert index == sorted(index)
    assert plan(warehouse.root) == []

    warehouse.append("post_update_returns", returns_rows(idx=[0, 42], offset=1000.0))
    got = dict((r[2], r[3]) for r in _returns(warehouse, "WHERE run_id = 'r1'"))
    assert got[0] == 100.0 and got[1] == 1.0 and got[4] == 104.0 and got[9] == 16.0 and got[42] == 1042.0


def test_compact_cli_dry_run_changes_nothing_then_compacts(warehouse, capsys, monkeypatch):
    from conftest import run_cli

    for i in range(3):
        warehouse.append("post_update_returns", returns_rows(idx=[i]))
    digest = tree_digest(warehouse.root)
    code, out, _ = run_cli(capsys, monkeypatch, "compact", "--dry-run", "--warehouse", str(warehouse.root))
    assert code == 0 and "run_id=r1" in out and tree_digest(warehouse.root) == digest
    code, out, _ = run_cli(capsys, monkeypatch, "compact", "--warehouse", str(warehouse.root))
    assert code == 0 and "3 parts -> 1" in out
    assert [r[2] for r in _returns(warehouse)] == [0, 1, 2]
    code, _, err = run_cli(capsys, monkeypatch, "compact", "--table", "nope", "--warehouse", str(warehouse.root))
    assert code == 2 and "unknown table" in err


# ----- the connection `query`/`records` keep -------------------------------------------------

def test_queries_reuse_one_connection_and_see_parts_committed_since(warehouse):
    """One DuckDB connection serves every query of a Warehouse object; its views glob the
    folders at each query, so parts written since (here by another Warehouse object, as
    another process would) are read."""
    warehouse.append("post_update_returns", returns_rows(idx=range(3)))
    assert warehouse.records("SELECT count(*) AS n FROM post_update_returns") == [{"n": 3}]
    kept = warehouse._reader_state.con
    other = Warehouse.open(warehouse.root, create=False)
    other.append("post_update_returns", returns_rows(idx=range(3, 7)))
    other.append("post_update_returns", returns_rows(run="r2", idx=range(2)))
    assert warehouse.records("SELECT count(*) AS n FROM post_update_returns") == [{"n": 9}]
    assert warehouse.query("SELECT count(DISTINCT run_id) AS n FROM post_update_returns")["n"][0] == 2
    assert warehouse._reader_state.con is kept
    warehouse.close()
    assert warehouse._reader_state is None
    assert warehouse.records("SELECT count(*) AS n FROM post_update_returns") == [{"n": 9}]


def test_the_kept_connection_gets_the_schema_sql_when_a_query_names_it(warehouse):
    warehouse.append("post_update_returns", returns_rows(idx=range(4)))
    warehouse.records("SELECT count(*) AS n FROM post_update_returns")
    assert not warehouse._reader_state.schema  # a query of tables only builds no macros
    rows = warehouse.records("SELECT n, mean FROM distribution_stats")
    assert rows == [{"n": 4, "mean": 1.5}] and warehouse._reader_state.schema
    # user SQL stays read-only on the kept connection
    with pytest.raises(WarehouseError, match="refused"):
        warehouse.records(f"COPY (SELECT 1) TO '{warehouse.root / 'x.csv'}'")
    assert not (warehouse.root / "x.csv").exists()


def test_a_table_whose_schema_part_appears_later_is_read(warehouse):
    """A warehouse written before a table existed has no schema part for it (an empty
    view); once a writer creates the table, the kept connection is rebuilt and reads it."""
    from retland.warehouse.sqlgen import schema_part_path
    from retland.warehouse.tables import TABLES

    (warehouse.root / schema_part_path(TABLES["operators"])).unlink()
    assert warehouse.records("SELECT count(*) AS n FROM operators") == [{"n": 0}]
    Warehouse.open(warehouse.root)  # a newer writer lays out every table
    assert (warehouse.root / schema_part_path(TABLES["operators"])).exists()
    warehouse.append("post_update_returns", returns_rows(idx=range(1)))
    assert warehouse.records("SELECT count(*) AS n FROM post_update_returns") == [{"n": 1}]


def test_a_part_damaged_after_the_connection_was_kept_is_named(warehouse):
    warehouse.append("post_update_returns", returns_rows(idx=range(3)))
    assert warehouse.records("SELECT count(*) AS n FROM post_update_returns") == [{"n": 3}]
    part = next(p for p in (warehouse.root / "tables" / "post_update_returns").rglob("part-*.parquet")
                if "schema" not in p.name)
    part.write_bytes(part.read_bytes()[:40])  # truncated
    # named as a fresh connection names it: the part and the fix
    with pytest.raises(WarehouseError, match=r"table post_update_returns has 1 damaged part\(s\): tables/.*retland check --quarantine"):
        warehouse.records("SELECT count(*) AS n FROM post_update_returns")
    assert warehouse._reader_state is None  # not kept while a table is unreadable
    assert warehouse.records("SELECT count(*) AS n FROM runs") == [{"n": 0}]


def test_run_sources_are_the_ones_the_distributions_module_reads():
    """cli.selection takes the runs.source values from the warehouse (importing them from
    retland.analyses.distributions would import scipy and polars into every command)."""
    from retland.analyses.distributions import SOURCES
    from retland.warehouse import RUN_SOURCES

    assert SOURCES == RUN_SOURCES
