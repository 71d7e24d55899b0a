"""Compaction: merge the parts of each table folder into one sorted part.

Every `retland sample` chunk, import or analysis appends a part; after months of array
jobs a folder can hold thousands of small files, and a query then spends its time
reading footers (`union_by_name` binds every file). Compaction rewrites each folder
with more than one data part as a single part holding exactly what the view shows:

- the rows of the folder's parts deduplicated first-writer-wins (the view's rule), so a
  compacted warehouse answers every query as before;
- sorted by the table key, so the new part's footer box is tight and later parts rarely
  overlap it (the view then skips the dedupe window for it);
- written under a hidden name, fsynced and renamed like any part, named with the oldest
  merged part's timestamp so it keeps their place in write order; only then are the
  merged parts removed.

While both the new part and the merged ones exist, readers see duplicates that the view
resolves to the same rows. A query that globbed the folder before the merge and reads
a removed part afterwards would fail, and a writer racing a key that the merge also
holds could swap which copy wins; so callers hold the warehouse's exclusive lock
(`lock.exclusive`), which no other retland process allows while it has the warehouse
open.
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from .sqlgen import SCHEMA_PART, TABLES_DIR, _lit, duck_type, quote
from .tables import TABLES, TableSpec
from .log import committed_paths, read_log, temp_name, write_entry
from .writer import WarehouseError, _fsync_dir

_ROW_GROUP = 1 << 20


@dataclass(frozen=True)
class FolderPlan:
    table: str
    folder: Path
    parts: tuple[Path, ...]
    bytes: int


@dataclass(frozen=True)
class FolderResult:
    table: str
    folder: Path
    parts_before: int
    rows_before: int
    rows_after: int
    bytes_before: int
    bytes_after: int


def data_parts(folder: Path, root: Path | None = None) -> list[Path]:
    """The committed data parts of one folder, in write order (name order)."""
    folder = Path(folder)
    if root is None:
        root = next(p.parent for p in folder.parents if p.name == TABLES_DIR)
    state = read_log(root)
    table = folder.relative_to(root).parts[1]
    return [root / rel for rel in committed_paths(state, table)
            if (root / rel).parent == folder and (root / rel).name != SCHEMA_PART]


def plan(root: Path, tables: list[str] | None = None, min_parts: int = 2) -> list[FolderPlan]:
    """Folders (leaf partitions) of `tables` with at least `min_parts` data parts."""
    if min_parts < 2:
        raise WarehouseError(f"--min-parts must be at least 2, got {min_parts}")
    names = list(TABLES) if not tables else tables
    unknown = [t for t in names if t not in TABLES]
    if unknown:
        raise WarehouseError(f"unknown table(s) {', '.join(unknown)}; tables: {', '.join(TABLES)}")
    out = []
    state = read_log(root)
    for name in names:
        by_folder: dict[Path, list[Path]] = {}
        for rel in committed_paths(state, name):
            path = root / rel
            by_folder.setdefault(path.parent, []).append(path)
        for folder in sorted(by_folder):
            parts = [p for p in by_folder[folder] if p.is_file()]
            if len(parts) >= min_parts:
                out.append(FolderPlan(name, folder, tuple(parts), sum(p.stat().st_size for p in parts)))
    return out


def _file_schema(spec: TableSpec) -> pa.Schema:
    return pa.schema([f for f in spec.schema if f.name not in spec.partition_by])


def _merge_sql(spec: TableSpec, parts: tuple[Path, ...]) -> str:
    schema = _file_schema(spec)
    files = "[" + ", ".join(_lit(str(p)) for p in parts) + "]"
    cols = ", ".join(f"CAST({quote(f.name)} AS {duck_type(f.type)}) AS {quote(f.name)}" for f in schema)
    key = [c for c in spec.key if c not in spec.partition_by]
    order = ", ".join(quote(c) for c in key)
    # Partition columns are constant within a folder; the dedupe key is the rest.
    dedupe = f"QUALIFY row_number() OVER (PARTITION BY {order} ORDER BY filename) = 1" if key else (
        "QUALIFY filename = min(filename) OVER ()")
    return (f"SELECT {cols} FROM read_parquet({files}, union_by_name = true, filename = true, "
            f"hive_partitioning = false) {dedupe} ORDER BY {order or '1'}")


def compact_folder(item: FolderPlan) -> FolderResult:
    """Merge one folder's parts (see the module docstring); returns what changed."""
    spec = TABLES[item.table]
    schema = _file_schema(spec)
    first = item.parts[0].name  # part-<ts>-<uuid>.parquet
    ts = first.split("-")[1]
    name = f"part-{ts}-{uuid.uuid4().hex[:12]}.parquet"
    tmp = item.folder / temp_name(name)
    con = duckdb.connect(":memory:")
    rows_before = sum(pq.ParquetFile(p).metadata.num_rows for p in item.parts)
    rows_after = 0
    try:
        reader = con.sql(_merge_sql(spec, item.parts)).to_arrow_reader(_ROW_GROUP)
        with open(tmp, "wb") as fh:
            with pq.ParquetWriter(fh, schema, compression="zstd") as writer:
                for batch in reader:
                    table = pa.Table.from_batches([batch]).cast(schema)
                    rows_after += table.num_rows
                    writer.write_table(table, row_group_size=_ROW_GROUP)
            fh.flush()
            os.fsync(fh.fileno())
        os.rename(tmp, item.folder / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        con.close()
    _fsync_dir(item.folder)
    root = next(p.parent for p in item.folder.parents if p.name == TABLES_DIR)
    new = (item.folder / name).relative_to(root).as_posix()
    write_entry(root, [{"table": item.table, "path": new, "rows": rows_after,
                        "bytes": (item.folder / name).stat().st_size}],
                remove=[p.relative_to(root).as_posix() for p in item.parts], command="compact")
    for part in item.parts:
        part.unlink()
    _fsync_dir(item.folder)
    return FolderResult(item.table, item.folder, len(item.parts), rows_before, rows_after, item.bytes,
                        (item.folder / name).stat().st_size)


def checkpoint_log(root: Path) -> int:
    """Shrink the log: one entry listing the whole committed set supersedes every entry,
    which are then deleted. Only under the warehouse's exclusive lock (no reader may be
    between listing and reading the log). Returns how many entries it replaced."""
    from .log import log_dir

    state = read_log(root)
    if state.legacy or len(state.entries) + len(state.superseded) <= 1:
        return 0
    add = [item for table in state.parts.values() for item in table.values()]
    old = sorted(set(state.entries) | set(state.superseded))
    write_entry(root, add, supersedes=old, command="checkpoint")
    for entry_id in old:
        (log_dir(root) / f"{entry_id}.json").unlink(missing_ok=True)
    _fsync_dir(log_dir(root))
    return len(old)
