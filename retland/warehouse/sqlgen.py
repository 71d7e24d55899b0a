"""SQL text for the table views, generated from the table registry.

The same text serves `Warehouse.connect()` and the `init.sql` file that a stock DuckDB
client runs, so an analyst with only the `duckdb` CLI sees exactly what retland sees.
"""
from __future__ import annotations

import pyarrow as pa

from .tables import TABLES, TableSpec

TABLES_DIR = "tables"
SCHEMA_PART = "part-00000000000000000000-schema.parquet"
# Each view reads footers three times (union_by_name at bind, parquet_metadata for the key
# boxes, the scan); parts are never rewritten, so caching parsed footers is safe (DuckDB
# keys the cache on path and modification time). Halved a view scan over 10 000 parts.
METADATA_CACHE_SQL = "SET parquet_metadata_cache = true;"


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


def table_glob(spec: TableSpec, prefix: str = "") -> str:
    """The glob of every file a table's folders may hold (committed or not): relative to
    the warehouse root, or under `prefix`. The views do not read it (see `parts_var`)."""
    depth = "/".join("*" for _ in spec.partition_by)
    return f"{prefix}{TABLES_DIR}/{spec.name}/" + (depth + "/" if depth else "") + "*.parquet"


def parts_var(spec: TableSpec) -> str:
    """The DuckDB variable holding the list of a table's committed parts (its schema part
    first): set by `Warehouse` from the commit log, by init.sql with read_json."""
    return f"retland_parts_{spec.name}"


def parts_source(spec: TableSpec) -> str:
    return f"getvariable({_lit(parts_var(spec))})"


def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def in_list(column: str, values) -> tuple[str, list]:
    """An SQL `column IN (?, …)` and its parameters: the one way retland writes a
    parameterised list (never the values themselves into the text). DuckDB reads the
    `IN ()` of an empty `values` as keeping no row."""
    values = list(values)
    return f"{column} IN ({', '.join('?' for _ in values)})", values


# Key column types whose footer min/max DuckDB reports as text that casts back exactly
# (and that compare in the Parquet writer's order). A key column of another type makes
# every part of its folder "overlapping": still exact, only slower.
_BOX_TYPES = ("VARCHAR", "BIGINT", "INTEGER")


def _parts_sql(spec: TableSpec, prefix: str) -> str:
    """One row per part that has rows: its folder and, per key column stored in the
    file, the min/max over its row groups from the footer (NULL when unknown)."""
    cols = []
    for i, c in enumerate(c for c in spec.key if c not in spec.partition_by):
        t = duck_type(spec.schema.field(c).type)
        where = f"path_in_schema = {_lit(c)} AND row_group_num_rows > 0"
        if t in _BOX_TYPES:
            known = f"bool_and(stats_min_value IS NOT NULL AND stats_max_value IS NOT NULL) FILTER ({where})"
            cols.append(f"CASE WHEN {known} THEN min(TRY_CAST(stats_min_value AS {t})) FILTER ({where}) END AS lo{i}")
            cols.append(f"CASE WHEN {known} THEN max(TRY_CAST(stats_max_value AS {t})) FILTER ({where}) END AS hi{i}")
        else:
            cols += [f"NULL::{t} AS lo{i}", f"NULL::{t} AS hi{i}"]
    return (
        "SELECT file_name AS part, parse_dirpath(file_name) AS folder"
        + "".join(f",\n           {c}" for c in cols)
        + f"\n    FROM parquet_metadata({parts_source(spec)})\n"
        "    GROUP BY file_name\n"
        "    HAVING max(row_group_num_rows) > 0"
    )


def _box_count(spec: TableSpec) -> int:
    return sum(1 for c in spec.key if c not in spec.partition_by)


def view_sql(spec: TableSpec, prefix: str = "") -> str:
    """One deduplicated view per table: the first writer of a key wins, at the cost of a
    footer read when no two parts can share a key.

    Parts are named part-<write time ns>-<uuid>, so ordering by file name is write order.
    Partition columns come from folder names. Rows are unique within a part (the writer
    refuses duplicate keys in one append), so a key can only repeat across two parts of
    one folder whose key boxes (per-column min/max from the Parquet footers, read with
    `parquet_metadata`, no data pages) overlap on every key column:

    1. parts: one row per non-empty part with its box. Missing or uncastable statistics
       (a part written by another tool, a key type outside _BOX_TYPES) leave the box
       NULL: "may overlap anything in its folder".
    2. swept: the box lies inside the lexicographic interval [(lo0, lo1, ..), (hi0, hi1,
       ..)], so parts are sorted by interval start within their folder and cut into
       clusters where the running max of earlier ends falls below the next start
       (a window sort over parts, O(P log P), not a P x P join: 20 000 parts in one folder
       took 12 s as a pairwise join). Parts alone in their cluster share no key with
       anything.
    3. overlapping: inside a cluster, the exact box test pairwise; a folder holding a
       part with an unknown box has all its parts overlapping.
    4. The view is rows of non-overlapping parts as they are (`filename NOT IN` is a
       hash mark join with, normally, an empty build side), UNION ALL rows of
       overlapping parts through the window dedupe (a semi join on the same set: with an
       empty set DuckDB stops that scan after its first vector; DuckDB plans the
       row_number() = 1 as a hash aggregate with arg_min).

    Measured on 1e7 rows in 101 parts (benchmarks/warehouse.py, 2 shared cores):
    purd_stats() through the view costs about what it costs over a bare read_parquet,
    against ~25x that with the window over every row (BENCHMARKS.md "Warehouse").

    The same SQL runs in a stock client, with paths relative to its working directory
    (`prefix` empty; see `init.sql`); retland's own connections use absolute paths,
    because a locked-down DuckDB checks paths before resolving them. Either way
    `filename` of read_parquet and `file_name` of parquet_metadata are the same strings.
    Concurrency: both table functions glob when the query is bound; a part published
    between the two globs of one query is scanned as non-overlapping, so a query racing
    the very write that duplicates a key may show that key twice; the next query does
    not. (purd_stats() reads the view once, in one materialized step, so its statistics
    all come from the same read.)
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
    src = f"read_parquet({parts_source(spec)}, {', '.join(opts)})"
    n = _box_count(spec)
    if n == 0:
        # Keyed by partition columns only: every part of a folder holds the same key.
        lo = hi = "NULL"
        unknown = "true"
        box = "true"
    else:
        lo = "row(" + ", ".join(f"lo{i}" for i in range(n)) + ")"
        hi = "row(" + ", ".join(f"hi{i}" for i in range(n)) + ")"
        unknown = " OR ".join(f"lo{i} IS NULL OR hi{i} IS NULL" for i in range(n))
        box = " AND ".join(f"a.lo{i} <= b.hi{i} AND b.lo{i} <= a.hi{i}" for i in range(n))
    return (
        f"-- {spec.doc}\n"
        f"-- Deduplicated (first writer wins); see retland/warehouse/sqlgen.py view_sql.\n"
        f"CREATE OR REPLACE VIEW {quote(spec.name)} AS\n"
        f"WITH parts AS MATERIALIZED (\n"
        f"    {_parts_sql(spec, prefix)}\n"
        f"),\n"
        f"boxed AS MATERIALIZED (\n"
        f"    SELECT *, {lo} AS lo, {hi} AS hi, {unknown} AS unknown FROM parts\n"
        f"),\n"
        f"swept AS MATERIALIZED (\n"
        f"    SELECT *, sum(CASE WHEN prev_hi >= lo THEN 0 ELSE 1 END)\n"
        f"                  OVER (PARTITION BY folder ORDER BY lo, part ROWS UNBOUNDED PRECEDING) AS cluster\n"
        f"    FROM (SELECT *, max(hi) OVER (PARTITION BY folder ORDER BY lo, part\n"
        f"                                  ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_hi,\n"
        f"                 bool_or(unknown) OVER (PARTITION BY folder) AS folder_unknown\n"
        f"          FROM boxed)\n"
        f"),\n"
        f"overlapping AS MATERIALIZED (\n"
        f"    SELECT part FROM swept WHERE folder_unknown\n"
        f"    UNION\n"
        f"    SELECT a.part\n"
        f"    FROM (SELECT * FROM swept WHERE NOT folder_unknown\n"
        f"          QUALIFY count(*) OVER (PARTITION BY folder, cluster) > 1) AS a\n"
        f"    JOIN swept AS b\n"
        f"      ON a.folder = b.folder AND a.cluster = b.cluster AND a.part <> b.part AND {box}\n"
        f")\n"
        f"SELECT\n    {cols}\n"
        f"FROM {src}\n"
        f"WHERE filename NOT IN (SELECT part FROM overlapping)\n"
        f"UNION ALL\n"
        f"SELECT\n    {cols}\n"
        f"FROM {src}\n"
        f"WHERE filename IN (SELECT part FROM overlapping)\n"
        f"QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY filename) = 1;\n"
    )


def _typed_nulls(spec: TableSpec) -> str:
    return ", ".join(f"CAST(NULL AS {duck_type(f.type)}) AS {quote(f.name)}" for f in spec.schema)


def empty_view_sql(spec: TableSpec) -> str:
    """A typed view with no rows, for a table registered after this warehouse was
    written (its folder and schema part appear with the first write)."""
    return f"CREATE OR REPLACE VIEW {quote(spec.name)} AS SELECT {_typed_nulls(spec)} WHERE false;\n"


def unreadable_view_sql(spec: TableSpec, message: str) -> str:
    """A typed view that fails with `message` whenever its rows are read.

    Used for a table whose parts cannot be read (a truncated file): queries that do not
    touch the table, and views defined over it, still bind and run."""
    return (f"CREATE OR REPLACE VIEW {quote(spec.name)} AS SELECT {_typed_nulls(spec)} "
            f"FROM range(1) WHERE error({_lit(message)}) IS NOT NULL;\n")


def schema_part_path(spec: TableSpec) -> str:
    folders = "".join(f"{c}=__schema__/" for c in spec.partition_by)
    return f"{TABLES_DIR}/{spec.name}/{folders}{SCHEMA_PART}"


def table_view_sql(spec: TableSpec, root=None, prefix: str = "") -> str:
    """The view of one table; with `root`, an empty typed view when the table's schema
    part is missing there (a table registered after the warehouse was written)."""
    from pathlib import Path

    if root is not None and not (Path(root) / schema_part_path(spec)).exists():
        return empty_view_sql(spec)
    return view_sql(spec, prefix)


def views_sql(root=None, prefix: str = "") -> str:
    """All table views, as `table_view_sql`."""
    return "\n".join(table_view_sql(spec, root, prefix) for spec in TABLES.values())
