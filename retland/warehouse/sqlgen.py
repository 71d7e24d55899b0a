"""SQL text for the table views, generated from the table registry.

The same text serves `Warehouse.connect()` and the `init.sql` file that a stock DuckDB
client runs, so an analyst with only the `duckdb` CLI sees exactly what retland sees.
"""
from __future__ import annotations

import pyarrow as pa

from .tables import TABLES, TableSpec

TABLES_DIR = "tables"
SCHEMA_PART = "part-00000000000000000000-schema.parquet"


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def duck_type(t: pa.DataType) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "VARCHAR"
    if pa.types.is_int64(t):
        return "BIGINT"
    if pa.types.is_int32(t):
        return "INTEGER"
    if pa.types.is_float64(t):
        return "DOUBLE"
    if pa.types.is_float32(t):
        return "FLOAT"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    raise TypeError(f"no DuckDB type mapped for Arrow type {t}")


def table_glob(spec: TableSpec) -> str:
    depth = "/".join("*" for _ in spec.partition_by)
    return f"{TABLES_DIR}/{spec.name}/" + (depth + "/" if depth else "") + "*.parquet"


def view_sql(spec: TableSpec) -> str:
    """One deduplicated view per table.

    Parts are named part-<write time ns>-<uuid>, so ordering by file name is write order
    and the first writer of a key wins. Partition columns come from folder names.
    """
    opts = ["union_by_name = true", "filename = true"]
    if spec.partition_by:
        types = ", ".join(f"{quote(c)}: '{duck_type(spec.schema.field(c).type)}'" for c in spec.partition_by)
        opts += ["hive_partitioning = true", "hive_types = {" + types + "}"]
    else:
        opts.append("hive_partitioning = false")
    cols = ",\n    ".join(
        f"CAST({quote(f.name)} AS {duck_type(f.type)}) AS {quote(f.name)}" for f in spec.schema
    )
    key = ", ".join(quote(c) for c in spec.key)
    return (
        f"-- {spec.doc}\n"
        f"CREATE OR REPLACE VIEW {quote(spec.name)} AS\nSELECT\n    {cols}\n"
        f"FROM read_parquet('{table_glob(spec)}', {', '.join(opts)})\n"
        f"QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY filename) = 1;\n"
    )


def views_sql() -> str:
    return "\n".join(view_sql(spec) for spec in TABLES.values())
