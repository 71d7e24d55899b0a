"""The tables and views a connection from `Warehouse.connect` holds: their names, columns,
row counts and rows (what `retland export`, `retland sql`'s dot commands and `retland ls`
read)."""
from __future__ import annotations

from .sqlgen import quote


def relations(con) -> list[str]:
    """Every table and view a user can read (the warehouse's tables and schema/ views)."""
    return sorted(con.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal UNION "
                          "SELECT table_name FROM duckdb_tables() WHERE NOT internal").pl().to_series().to_list())


def relation_rows(con, name: str, where: str | None = None):
    """The rows of table or view `name` that `where` (one SQL condition, parsed as an
    expression) keeps, as a DuckDB relation."""
    from .readonly import filtered

    return filtered(con, f"SELECT * FROM {quote(name)}", where)


def columns(con, name: str):
    """column_name and column_type of each column of table or view `name` (a DataFrame)."""
    return con.sql(f"DESCRIBE {quote(name)}").pl().select("column_name", "column_type")


def row_count(con, name: str) -> int:
    """The rows of table or view `name`."""
    return con.sql(f"SELECT count(*) FROM {quote(name)}").fetchall()[0][0]
