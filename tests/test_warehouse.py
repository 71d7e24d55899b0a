"""The warehouse's write path and views: validation, atomic parts, dedup, read-only SQL."""
from __future__ import annotations

import multiprocessing as mp
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from retland.warehouse import Warehouse, WarehouseError
from conftest import tree_digest


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


def test_stock_duckdb_client_from_another_directory(warehouse, tmp_path):
    """init.sql makes the views in a plain duckdb session started anywhere."""
    warehouse.append("post_update_returns", returns_rows())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = (
        "import duckdb, sys; con = duckdb.connect(); "
        "con.execute(open(sys.argv[1]).read()); "
        "print(con.sql('SELECT count(*) FROM post_update_returns').fetchall()[0][0])"
    )
    out = subprocess.run([sys.executable, "-c", script, str(warehouse.root / "init.sql")],
                         cwd=elsewhere, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "5"


def test_connect_requires_existing_warehouse(tmp_path):
    import retland

    with pytest.raises(WarehouseError, match="no warehouse"):
        retland.connect(tmp_path / "missing")
