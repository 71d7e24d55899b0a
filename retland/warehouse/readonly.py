"""Refuse statements that could write, before DuckDB runs anything."""
from __future__ import annotations

import duckdb

from .writer import WarehouseError

_ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


def check_readonly(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise WarehouseError(f"SQL does not parse: {exc}") from None
    if not statements:
        raise WarehouseError("empty query: give one SELECT statement")
    if len(statements) > 1:
        raise WarehouseError(f"give one statement, got {len(statements)}")
    kind = statements[0].type
    if kind not in _ALLOWED:
        name = getattr(kind, "name", str(kind))
        raise WarehouseError(
            f"refused: {name} statements could write; the warehouse is read-only here "
            "(only SELECT, WITH … SELECT, DESCRIBE/SHOW/SUMMARIZE and EXPLAIN run)"
        )


def execute_readonly(con: duckdb.DuckDBPyConnection, sql: str, params=None) -> duckdb.DuckDBPyRelation:
    check_readonly(con, sql)
    try:
        return con.sql(sql, params=params)
    except duckdb.Error as exc:
        raise WarehouseError(f"query failed: {exc}") from None
