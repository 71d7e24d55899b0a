"""The one write path: validate rows against a table's schema, then publish them as
whole Parquet files by atomic rename.

Safety argument: a part is written under a hidden temporary name in its final folder,
fsynced, then renamed (atomic within one filesystem), and the folder is fsynced. Readers
glob `*.parquet`, so they see either the whole part or nothing. Names carry the write
time in nanoseconds plus a random suffix, so concurrent writers on any number of
processes or machines never collide, and ordering by name is write order (the views keep
the first writer of a duplicated key).
"""
from __future__ import annotations

import errno
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .log import _fsync_dir as _log_fsync_dir
from .log import PARTITION_VALUE, _partition_ok, _safe_path, log_dir, new_id, part_schema_problem, write_atomic, write_entry, write_intent
from .sqlgen import SCHEMA_PART, TABLES_DIR, schema_part_path
from .tables import TABLES, TableSpec


class WarehouseError(ValueError):
    """Bad input or state; the message names what is wrong. Nothing was written."""


class RowError(WarehouseError):
    """Values that break a table's declared `Check`: `rows` are the positions (in the
    rows given) of every offending value of `column`, `values` their values."""

    def __init__(self, message: str, *, table: str, column: str, rows: list[int], values: list,
                 accepted: str, problem: str):
        super().__init__(message)
        self.table, self.column, self.rows, self.values = table, column, rows, values
        self.accepted, self.problem = accepted, problem


_PARTITION_VALUE = PARTITION_VALUE


def _spec(table: str) -> TableSpec:
    try:
        return TABLES[table]
    except KeyError:
        raise WarehouseError(f"unknown table {table!r}; tables: {', '.join(TABLES)}") from None


def to_arrow(rows) -> pa.Table:
    if isinstance(rows, pa.Table):
        return rows
    if isinstance(rows, pa.RecordBatch):
        return pa.Table.from_batches([rows])
    if hasattr(rows, "to_arrow") and not isinstance(rows, (list, dict)):
        return rows.to_arrow()
    if isinstance(rows, dict):
        return pa.table(rows)
    if isinstance(rows, list):
        if rows and not all(isinstance(r, dict) for r in rows):
            raise WarehouseError("rows must be dicts (column -> value)")
        # Columns are the union of every row's keys: from_pylist alone takes the first
        # row's keys and would silently drop a value given only in a later row.
        names = list(dict.fromkeys(k for r in rows for k in r))
        try:
            return pa.Table.from_pylist([{k: r.get(k) for k in names} for r in rows])
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise WarehouseError(f"rows do not form a table: {exc}") from None
    raise WarehouseError(f"cannot append rows of type {type(rows).__name__}")


def _first_row(mask: pa.ChunkedArray | pa.Array) -> int:
    idx = pc.index(mask, True).as_py()
    return int(idx)


def validate(table: str, rows) -> pa.Table:
    """Return `rows` as an Arrow table with exactly the declared schema, or raise."""
    spec = _spec(table)
    data = to_arrow(rows)
    names = set(data.column_names)
    unknown = sorted(names - set(spec.schema.names))
    if unknown:
        raise WarehouseError(
            f"{table}: unknown column(s) {', '.join(unknown)}; columns are {', '.join(spec.schema.names)}"
        )
    n = data.num_rows
    columns = []
    for field in spec.schema:
        if field.name not in names:
            if field.name == "created_at":
                now = datetime.now(timezone.utc)
                columns.append(pa.array([now] * n, field.type))
                continue
            if not field.nullable:
                raise WarehouseError(f"{table}: missing required column {field.name!r}")
            columns.append(pa.nulls(n, field.type))
            continue
        col = data.column(field.name)
        if pa.types.is_floating(col.type) and (pa.types.is_integer(field.type) or field.name in spec.key):
            bad = pc.invert(pc.is_finite(col)) if n else None
            if bad is not None and pc.any(pc.fill_null(bad, False)).as_py():
                row = _first_row(pc.fill_null(bad, False))
                raise WarehouseError(
                    f"{table}: column {field.name!r} row {row}: non-finite value {col[row].as_py()!r} in an integer/key column"
                )
        try:
            col = col.cast(field.type, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            raise WarehouseError(
                f"{table}: column {field.name!r} has type {col.type}, expected {field.type}: {exc}"
            ) from None
        if not field.nullable and col.null_count:
            row = _first_row(col.is_null())
            raise WarehouseError(f"{table}: column {field.name!r} row {row}: missing value (NULL) in a required column")
        columns.append(col)
    out = pa.Table.from_arrays(columns, schema=spec.schema)
    check_rows(table, out)
    for name in spec.partition_by:
        for value in pc.unique(out.column(name)).to_pylist():
            if not _PARTITION_VALUE.match(str(value)):
                raise WarehouseError(
                    f"{table}: {name} {value!r} is not usable as a folder name "
                    "(letters, digits and . _ + - only, starting with a letter or digit)"
                )
    if n > 1:
        row = _first_duplicate(out, spec.key)
        if row is not None:
            key = {k: out.column(k)[row].as_py() for k in spec.key}
            raise WarehouseError(f"{table}: duplicate key {key} within one append")
    return out


def check_rows(table: str, data: pa.Table) -> None:
    """Apply the table's declared value rules (`TableSpec.checks`) to the columns of
    `data` that it has; raise RowError naming the first offending row. `validate` calls
    this on every append; a producer may call it early on part of a row (the sampler
    does, per chunk) to refuse a batch before buffering it."""
    spec = _spec(table)
    if data.num_rows == 0:
        return
    for name, check in spec.checks.items():
        if name not in data.column_names:
            continue
        col = data.column(name)
        bad = check.bad(col)
        if not pc.any(bad).as_py():
            continue
        rows = pc.indices_nonzero(bad).to_pylist()
        values = pc.take(col, pa.array(rows)).to_pylist()
        row, value = rows[0], values[0]
        key = {k: data.column(k)[row].as_py() for k in spec.key if k in data.column_names}
        accepted = check.describe(integer=pa.types.is_integer(spec.schema.field(name).type))
        problem = check.problem(value)
        raise RowError(
            f"{table}: column {name!r} row {row}{f' ({key})' if key else ''}: {problem} refused; "
            f"accepted: {accepted}",
            table=table, column=name, rows=rows, values=values, accepted=accepted, problem=problem)


def _first_duplicate(data: pa.Table, key: tuple[str, ...]) -> int | None:
    """Row index of a key seen earlier in `data`, or None.

    Each key column is dictionary-encoded and the codes are packed into one int64, so
    a million-row batch is checked with one NumPy sort (Arrow's hash group-by of the
    string columns took ~1 s).
    """
    packed = np.zeros(data.num_rows, dtype=np.int64)
    capacity = 1
    for name in key:
        encoded = pc.dictionary_encode(data.column(name)).combine_chunks()
        size = max(len(encoded.dictionary), 1)
        if capacity * size >= 2**62:  # too many distinct keys to pack: compare the tuples
            seen = set()
            for i, row in enumerate(zip(*(data.column(k).to_pylist() for k in key))):
                if row in seen:
                    return i
                seen.add(row)
            return None
        packed = packed * size + encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        capacity *= size
    order = np.argsort(packed, kind="stable")
    same = packed[order[1:]] == packed[order[:-1]]
    if not same.any():
        return None
    return int(order[1:][same].min())


def _fsync_dir(path: Path) -> None:
    _log_fsync_dir(path)


def _publish(table: pa.Table, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return write_atomic(folder, name, lambda fh: pq.write_table(table, fh, compression="zstd"), mode="wb")


def _part_name() -> str:
    return f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:12]}.parquet"


def no_space_error(exc: OSError, folder: Path, need: int) -> WarehouseError:
    """ENOSPC/EDQUOT as one line naming the folder, the space needed and what is free."""
    import shutil

    try:
        free = shutil.disk_usage(folder if folder.exists() else folder.parent).free
        free_text = f", {free / 2**20:.1f} MiB free"
    except OSError:
        free_text = ""
    return WarehouseError(f"no space left to write into {folder}: needs up to about {max(need, 1) / 2**20:.1f} MiB"
                          f"{free_text} ({exc.strerror or exc}); nothing was written, free some space and rerun")


class Commit:
    """The rows of one command, possibly for several tables, made visible together.

    `add` validates rows (nothing is written yet); `publish` writes every part under its
    final name, then one log entry naming them all (see log.py): readers see all of the
    command's rows or none. A failure on the way deletes what this commit wrote."""

    def __init__(self, root: Path, command: str | None = None):
        self.root = Path(root)
        self.command = command
        self.batches: list[tuple[str, pa.Table]] = []

    def add(self, table: str, rows) -> int:
        data = validate(table, rows)
        if data.num_rows:
            self.batches.append((table, data))
        return data.num_rows

    def _parts(self) -> list[tuple[str, Path, str, pa.Table]]:
        out = []
        for table, data in self.batches:
            spec = _spec(table)
            base = self.root / TABLES_DIR / table
            if not spec.partition_by:
                out.append((table, base, _part_name(), data))
                continue
            groups = data.select(list(spec.partition_by)).group_by(list(spec.partition_by)).aggregate([])
            for values in groups.to_pylist():
                mask = None
                for col, value in values.items():
                    m = pc.equal(data.column(col), value)
                    mask = m if mask is None else pc.and_(mask, m)
                part = data.filter(mask).drop_columns(list(spec.partition_by))
                folder = base.joinpath(*(f"{c}={v}" for c, v in values.items()))
                out.append((table, folder, _part_name(), part))
        return out

    def publish(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for table, data in self.batches:
            counts[table] = counts.get(table, 0) + data.num_rows
        if not self.batches:
            return counts
        parts = self._parts()
        entry_id = new_id()
        rels = [(folder / name).relative_to(self.root).as_posix() for _, folder, name, _ in parts]
        written: list[Path] = []
        intent = None
        try:
            intent = write_intent(self.root, entry_id, rels)
            add = []
            for (table, folder, name, data), rel in zip(parts, rels):
                path = _publish(data, folder, name)
                written.append(path)
                add.append({"table": table, "path": rel, "rows": data.num_rows, "bytes": path.stat().st_size})
            write_entry(self.root, add, command=self.command, entry_id=entry_id)
        except BaseException as exc:
            if intent is not None and (log_dir(self.root) / f"{entry_id}.json").exists():
                # The entry's rename happened: the commit stands, whatever came after it (an
                # fsync's error, Ctrl-C or SIGTERM raised between two bytecodes) must not
                # delete the parts it names.
                intent.unlink(missing_ok=True)
                raise
            for path in written:
                path.unlink(missing_ok=True)
            if intent is not None:
                intent.unlink(missing_ok=True)
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                need = sum(d.nbytes for *_, d in parts)
                raise no_space_error(exc, self.root, need) from None
            raise
        intent.unlink(missing_ok=True)
        return counts


def append_rows(root: Path, table: str, rows, command: str | None = None) -> int:
    commit = Commit(root, command)
    commit.add(table, rows)
    return commit.publish().get(table, 0)


def write_schema_part(root: Path, spec: TableSpec) -> None:
    """A zero-row part carrying the current schema, so every view exists and is typed
    before any row is written (and gains columns added to the registry later)."""
    target = root / schema_part_path(spec)
    folder = target.parent
    schema = pa.schema([f for f in spec.schema if f.name not in spec.partition_by])
    if target.exists():
        try:
            if pq.read_schema(target).equals(schema, check_metadata=False):
                return
        except (pa.ArrowInvalid, OSError):
            pass
    _publish(schema.empty_table(), folder, SCHEMA_PART)


def adopt_files(root: Path, files: list[Path], command: str = "adopt") -> str:
    """Commit Parquet files already placed in a table's folder (written by another tool,
    or by hand), after checking each against its table's declared schema. For repairs and
    tests; the writer never needs it. Raises WarehouseError naming a file that fails."""
    root = Path(root)
    add = []
    for path in files:
        rel = Path(path).resolve().relative_to(root.resolve()).as_posix()
        parts = rel.split("/")
        if len(parts) < 3 or parts[0] != TABLES_DIR or parts[1] not in TABLES or not _safe_path(rel):
            raise WarehouseError(f"{rel}: not a part path (tables/<table>/[<partition>/]<name>.parquet)")
        if not _partition_ok(parts, TABLES[parts[1]]):
            raise WarehouseError(f"{rel}: not in a partition folder of {parts[1]}")
        problem = part_schema_problem(root / rel, parts[1])
        if problem:
            raise WarehouseError(f"{rel}: {problem}")
        add.append({"table": parts[1], "path": rel, "rows": None, "bytes": (root / rel).stat().st_size})
    return write_entry(root, add, command=command)
