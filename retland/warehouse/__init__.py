"""The results warehouse: append-only Parquet parts under one root, read through DuckDB.

Layout under the root:
    tables/<table>/[<partition>=<value>/]part-<ns>-<uuid>.parquet   rows (never rewritten)
    artifacts/...                                                    checkpoints, buffers
    init.sql                                                         views for a stock duckdb client

`Warehouse.append` is the only write path. Readers use `Warehouse.connect()` (or
`retland.connect(path)`), which builds one deduplicated view per table plus the SQL in
`schema/` on a DuckDB connection that can read this folder and nothing else
(`readonly.lock_down`); user SQL also passes `readonly.check_readonly`. Every process
that connects or appends shares an advisory lock that compaction takes alone (`lock`).
`Warehouse.query`/`records` run on one such connection per `Warehouse` object, built at
the first query and kept (building one took ~0.3 s a query): its views glob the table
folders each time a query is bound, so every query sees the parts committed before it.
It gets the SQL of `schema/` (half of that time) at the first query naming one of its
views or macros.
A table with an unreadable part still gets a view, one that fails naming the part and
the fix, so commands that do not read that table keep working (`health`).
"""
from __future__ import annotations

import functools
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import duckdb

from .health import damaged_parts
from .lock import create_lock_file, hold_shared
from .readonly import GLOB_CHARS, GuardedConnection, check_readonly, run_cancellable, execute_readonly, lock_down, query_error
from .log import LOG_DIR, clean_stale, migrate, part_schema_problem, read_log
from .log import committed_paths as _committed_paths
from .sqlgen import (METADATA_CACHE_SQL, TABLES_DIR, _lit, empty_view_sql, parts_var, schema_part_path, table_view_sql,
                     unreadable_view_sql, views_sql)
from .tables import TABLES, TableSpec
from .writer import Commit, WarehouseError, append_rows, write_schema_part

DEFAULT_ROOT = Path("data") / "warehouse"
_CLEANED: set[tuple[str, int]] = set()
ENV_VAR = "RETLAND_WAREHOUSE"
# The values of runs.source: how a run came into the warehouse (see tables.py).
RUN_SOURCES = ("trained", "imported", "derived", "added")

__all__ = ["Warehouse", "WarehouseError", "TABLES", "TableSpec", "RUN_SOURCES", "resolve_root", "connect",
           "refuse_inside_warehouse", "warehouse_containing"]


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """--warehouse PATH, else $RETLAND_WAREHOUSE, else ./data/warehouse."""
    if root is None or str(root) == "":
        root = os.environ.get(ENV_VAR) or DEFAULT_ROOT
    return Path(root).expanduser().resolve()


def warehouse_containing(path: str | os.PathLike) -> Path | None:
    """The warehouse folder that `path` (a file or folder, existing or not) lies in, or None.

    A folder is a warehouse when it holds tables/ and one of log/, the lock file or
    init.sql: what every retland writer lays out."""
    from .lock import LOCK_FILE

    p = Path(path).expanduser().resolve()
    for folder in (p, *p.parents):
        if (folder / TABLES_DIR).is_dir() and any(
                (folder / name).exists() for name in (LOG_DIR, LOCK_FILE, "init.sql")):
            return folder
    return None


def refuse_inside_warehouse(path: str | os.PathLike, option: str = "--output") -> None:
    """Raise WarehouseError when an output path lies inside a warehouse: the warehouse
    holds only what its writer commits, so nothing else may write files there."""
    root = warehouse_containing(path)
    if root is not None:
        raise WarehouseError(f"{option} {path} is inside the warehouse {root}; write outputs outside it "
                             "(the warehouse holds only what retland's writer commits)")


def schema_sql_files() -> list[tuple[str, str]]:
    """(name, text) of every schema/*.sql file, in lexical order.

    Shipped as package data `retland.schema`; a plain checkout without an install
    falls back to the repo's schema/ folder.
    """
    from importlib import resources

    try:
        base = resources.files("retland.schema")
        files = [p for p in base.iterdir() if p.name.endswith(".sql")]
    except ModuleNotFoundError:
        base = Path(__file__).resolve().parents[2] / "schema"
        files = [p for p in base.iterdir() if p.name.endswith(".sql")]
    return [(p.name, p.read_text()) for p in sorted(files, key=lambda p: p.name)]


# Fails (and prints nothing otherwise) unless tables/ is under the working directory or
# under a file_search_path set beforehand; glob() itself ignores file_search_path.
INIT_SQL_GUARD = (
    "SET VARIABLE retland_warehouse_found = (SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM glob("
    "coalesce(nullif(current_setting('file_search_path'), '') || '/', '') || 'tables/runs/*')) "
    "THEN error('retland: no warehouse here. Start duckdb inside the warehouse folder "
    "(cd WAREHOUSE && duckdb -init init.sql), or SET file_search_path = ''WAREHOUSE'' before "
    "reading init.sql') ELSE true END);\n"
)


def _init_sql_text() -> str:
    """init.sql: the views with paths relative to the folder DuckDB is started in.

    It names no absolute path, so a copied or moved warehouse reads as itself; started
    anywhere else it fails with a message instead of reading another folder's rows."""
    header = (
        "-- retland warehouse views for a stock DuckDB client. From inside this folder:\n"
        "--   cd WAREHOUSE && duckdb -init init.sql\n"
        "-- or from anywhere:\n"
        "--   duckdb -cmd \"SET file_search_path = 'WAREHOUSE'\" -cmd \".read WAREHOUSE/init.sql\"\n"
        "-- Paths are relative, so a copy of the folder reads its own files.\n"
        f"{INIT_SQL_GUARD}{METADATA_CACHE_SQL}\n\n"
    )
    macros = "\n".join(f"-- ===== schema/{name} =====\n{text}" for name, text in schema_sql_files())
    return header + committed_set_sql() + "\n" + views_sql() + "\n" + macros


def committed_set_sql() -> str:
    """SQL that sets each table's parts variable from log/ (see log.py), for a stock client:
    the committed set when init.sql is read (re-read it to see later commits)."""
    lines = [
        "-- The committed parts: add paths of live log entries (not superseded) minus their removes.",
        "-- Files under tables/ that no entry names are never read.",
        f"CREATE OR REPLACE TEMP VIEW retland_log AS SELECT * FROM read_json('{LOG_DIR}/*.json', "
        "format = 'newline_delimited', ignore_errors = true, columns = {id: 'VARCHAR', \"add\": 'STRUCT(\"table\" VARCHAR, path VARCHAR)[]', "
        "remove: 'VARCHAR[]', supersedes: 'VARCHAR[]'});",
        "CREATE OR REPLACE TEMP VIEW retland_committed AS WITH live AS (SELECT * FROM retland_log WHERE id NOT IN "
        "(SELECT unnest(supersedes) FROM retland_log)) SELECT a.\"table\" AS tbl, a.path FROM "
        "(SELECT unnest(\"add\") AS a FROM live) WHERE a.path NOT IN (SELECT unnest(remove) FROM live);",
    ]
    for spec in TABLES.values():
        lines.append(
            f"SET VARIABLE {parts_var(spec)} = (SELECT list_concat([{_lit(schema_part_path(spec))}], "
            f"coalesce(list(path ORDER BY parse_filename(path), path), [])) FROM retland_committed "
            f"WHERE tbl = {_lit(spec.name)});")
    return "\n".join(lines) + "\n"


_CREATED = re.compile(r"\bCREATE\s+(?:OR\s+REPLACE\s+)?(?:TEMP(?:ORARY)?\s+)?(?:MACRO|VIEW|TABLE|FUNCTION)\s+"
                      r"(?:IF\s+NOT\s+EXISTS\s+)?\"?(\w+)", re.IGNORECASE)


@functools.lru_cache(maxsize=None)
def _schema_names() -> re.Pattern:
    """A pattern matching any name the SQL of `schema/` creates, as a whole word."""
    names = sorted({m.group(1).lower() for _, text in schema_sql_files() for m in _CREATED.finditer(text)})
    return re.compile(r"\b(?:" + "|".join(map(re.escape, names)) + r")\b", re.IGNORECASE)


def _names_schema_object(sql: str) -> bool:
    """Whether `sql` mentions a view or macro of `schema/` (a query that does not cannot use
    one: the table views do not refer to them)."""
    return _schema_names().search(sql) is not None


def _run(con, sql: str, params, convert):
    try:  # Ctrl-C stops the query at once (see readonly.run_cancellable)
        return run_cancellable(con, lambda: convert(execute_readonly(con, sql, params)))
    except duckdb.Error as exc:  # raised while the rows are fetched
        raise query_error(exc) from None


def _install_schema(con) -> None:
    for _name, text in schema_sql_files():
        con.execute(text)


@dataclass
class _Reader:
    con: duckdb.DuckDBPyConnection
    pid: int
    missing: tuple[str, ...]  # tables without a schema part when it was built (their views are empty)
    schema: bool  # whether the SQL of schema/ is installed
    parts: dict  # table -> the paths its parts variable holds (see Warehouse._part_lists)


class Warehouse:
    """A warehouse folder. Cheap to construct; `open` creates the layout if missing."""

    def __init__(self, root: Path):
        self.root = root
        # Tables whose view could not be built at the last connect: name -> why.
        self.unreadable: dict[str, str] = {}
        self._reader_state: _Reader | None = None  # the connection `query`/`records` keep
        self._reader_lock = threading.Lock()

    def __getstate__(self):
        return {"root": self.root, "unreadable": dict(self.unreadable)}

    def __setstate__(self, state):
        self.__init__(state["root"])
        self.unreadable = state["unreadable"]

    @classmethod
    def open(cls, root: str | os.PathLike | None = None, create: bool = True,
             _how: str = "pass --warehouse PATH") -> "Warehouse":
        """The warehouse at `root` (default: $RETLAND_WAREHOUSE, else ./data/warehouse).
        create=False refuses a folder without tables/ instead of creating one."""
        path = resolve_root(root)
        if path.exists() and not path.is_dir():
            raise WarehouseError(f"warehouse path {path} exists and is not a folder")
        if not create and not (path / TABLES_DIR).is_dir():
            raise WarehouseError(
                f"no warehouse at {path} (no {TABLES_DIR}/ folder); {_how}, "
                f"set ${ENV_VAR}, or create one by importing or sampling into it"
            )
        wh = cls(path)
        if create:
            wh._ensure_layout()
        return wh

    def _ensure_layout(self) -> None:
        existing = next((p for p in (self.root, *self.root.parents) if p.exists()), None)
        new = existing != self.root  # the folders this call creates are removed again if it fails
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            create_lock_file(self.root)
            hold_shared(self.root)
            for spec in TABLES.values():
                write_schema_part(self.root, spec)
            adopted = migrate(self.root)
            if adopted is not None and (adopted[0] or adopted[1]):
                import sys

                print(f"retland: {self.root} had no commit log; adopted {adopted[0]} existing part(s) into "
                      f"{LOG_DIR}/" + (f", left out {adopted[1]} file(s) that are not valid parts "
                                       "(`retland check` lists them)" if adopted[1] else ""), file=sys.stderr)
            clean_stale(self.root)
            self.write_init_sql()
        except PermissionError as exc:
            raise WarehouseError(f"warehouse {self.root} is not writable: {exc.strerror} ({exc.filename})") from None
        except OSError as exc:
            import errno

            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                from .writer import no_space_error

                if new:  # a warehouse that could not be laid out is not left half made
                    import shutil

                    top = self.root  # the first folder this call created
                    while top.parent != existing and top.parent != top:
                        top = top.parent
                    shutil.rmtree(top, ignore_errors=True)
                raise no_space_error(exc, self.root, 64 * 1024) from None
            raise

    def write_init_sql(self) -> Path:
        target = self.root / "init.sql"
        text = _init_sql_text()
        if target.exists() and target.read_text() == text:
            return target
        tmp = target.with_name(f".init.sql.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, target)
        return target

    @property
    def exists(self) -> bool:
        return (self.root / TABLES_DIR).is_dir()

    def table_dir(self, table: str) -> Path:
        return self.root / TABLES_DIR / table

    def artifact_dir(self, *parts: str) -> Path:
        path = self.root.joinpath("artifacts", *parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def relative(self, path: os.PathLike) -> str:
        """A path as stored in rows: relative to the root, so the folder can move."""
        return Path(path).resolve().relative_to(self.root).as_posix()

    def append(self, table: str, rows) -> int:
        """Validate `rows` against the table's schema and append them atomically.

        rows: list of dicts, dict of columns, pyarrow.Table or polars.DataFrame.
        Returns the number of rows written. Raises WarehouseError (nothing written) on
        bad rows.
        """
        if not self.exists:
            self._ensure_layout()
        hold_shared(self.root)
        self._clean_once()
        try:
            return append_rows(self.root, table, rows)
        except PermissionError as exc:
            raise WarehouseError(f"warehouse {self.root} is not writable: {exc.strerror} ({exc.filename})") from None

    def append_many(self, batches: dict, command: str | None = None) -> dict[str, int]:
        """Append rows to several tables as one commit: every batch is validated first,
        then all parts are written and made visible together by one log entry (or none is,
        on any failure). batches: table -> rows (as `append`). Returns table -> rows written."""
        if not self.exists:
            self._ensure_layout()
        hold_shared(self.root)
        self._clean_once()
        commit = Commit(self.root, command)
        for table, rows in batches.items():
            commit.add(table, rows)
        try:
            return commit.publish()
        except PermissionError as exc:
            raise WarehouseError(f"warehouse {self.root} is not writable: {exc.strerror} ({exc.filename})") from None

    def _clean_once(self) -> None:
        """Once per process and warehouse: a new writer deletes what dead writers on this
        host left (their temp files and uncommitted parts, see log.stale_writes), and a
        warehouse from before the commit log gets one."""
        key = (str(self.root), os.getpid())
        if key in _CLEANED:
            return
        _CLEANED.add(key)
        if migrate(self.root) is None:
            pass
        clean_stale(self.root)

    def committed(self):
        """The commit log's view of the warehouse (log.LogState): committed parts per table."""
        return read_log(self.root)

    def _part_lists(self) -> dict[str, list[str] | None]:
        """table -> absolute paths the view reads (schema part first, then the committed
        parts in write order); None for a table without a valid schema part."""
        state = read_log(self.root)
        prefix = str(self.root).rstrip("/") + "/"
        out: dict[str, list[str] | None] = {}
        for name, spec in TABLES.items():
            schema_part = self.root / schema_part_path(spec)
            if not schema_part.exists() or part_schema_problem(schema_part, name):
                out[name] = None
                continue
            out[name] = [prefix + schema_part_path(spec)] + [prefix + p for p in _committed_paths(state, name)]
        return out

    def _set_parts(self, con, lists: dict[str, list[str] | None]) -> None:
        for name, paths in lists.items():
            con.execute(f"SET VARIABLE {parts_var(TABLES[name])} = ?", [paths or []])

    def connect(self, threads: int | None = None):
        """An in-memory DuckDB connection with the views and statistics macros.

        The connection can read this warehouse folder and nothing else, and its
        settings are locked (see `readonly.lock_down`); nothing in it is persisted.
        `execute_readonly` (used by `query`) also refuses statements that could write.
        A table with an unreadable part gets a view that fails, naming the part, when
        read; `self.unreadable` lists such tables.

        It is a `readonly.GuardedConnection`: statements that could write files (COPY,
        EXPORT, ATTACH, …) and relation writers (to_parquet, …) are refused, since DuckDB
        itself must be allowed to read (and so could write) the warehouse folder. Its
        views read the parts committed when it was made (`refresh` picks up later ones).
        """
        return GuardedConnection(self._connect(threads))

    def refresh(self, con) -> None:
        """Point a connection from `connect` at the parts committed since it was made."""
        raw = getattr(con, "duckdb", con)
        self._set_parts(raw, {t: v for t, v in self._part_lists().items() if v is not None})

    def _connect(self, threads: int | None = None, schema: bool = True):
        """`connect`; schema=False leaves out the SQL of `schema/` (`_install_schema`)."""
        if not self.exists:
            raise WarehouseError(f"no warehouse at {self.root}")
        if GLOB_CHARS & set(str(self.root)):
            raise WarehouseError(f"warehouse path {self.root} contains one of {''.join(sorted(GLOB_CHARS))}, "
                                 "which DuckDB reads as a file pattern; move or link the folder to a plain path")
        hold_shared(self.root)
        con = duckdb.connect(":memory:")
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        con.execute(METADATA_CACHE_SQL)
        lock_down(con, self.root)
        prefix = str(self.root).rstrip("/") + "/"
        self.unreadable = {}
        lists = self._part_lists()
        self._set_parts(con, lists)
        self._last_lists = lists
        for spec in TABLES.values():
            if lists[spec.name] is None:
                con.execute(empty_view_sql(spec))
                continue
            try:
                con.execute(table_view_sql(spec, self.root, prefix))
            except duckdb.Error as exc:
                why = self._unreadable_message(spec.name, exc)
                self.unreadable[spec.name] = why
                con.execute(unreadable_view_sql(spec, why))
        if schema:
            _install_schema(con)
        return con

    def _unreadable_message(self, table: str, exc: Exception) -> str:
        bad = damaged_parts(self.root, [table])
        if not bad:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return f"table {table} cannot be read: {first}"
        names = ", ".join(self.relative(f.path) for f in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        return (f"table {table} has {len(bad)} damaged part(s): {names} ({bad[0].detail}); "
                f"`retland check --quarantine -w {self.root}` moves them aside")

    def query(self, sql: str, params=None):
        """Run one read-only query and return a polars DataFrame."""
        return self._fetch(sql, params, lambda rel: rel.pl())

    def records(self, sql: str, params=None) -> list[dict]:
        """Run one read-only query and return its rows as dicts (column name -> value).

        The compute path (training, sampling, checkpoints) reads the warehouse through
        this, not `query`, so it runs where polars is not installed (a GPU node with
        only a CUDA jax stack and a few extra wheels)."""
        def rows(rel):
            names = rel.columns
            return [dict(zip(names, r)) for r in rel.fetchall()]
        return self._fetch(sql, params, rows)

    def _fetch(self, sql: str, params, convert):
        if not isinstance(sql, str):
            raise WarehouseError(f"SQL must be a string (one SELECT statement), got {type(sql).__name__} {sql!r:.60}")
        with self._reader_lock:
            reader, reused = self._reader()
            check_readonly(reader.con, sql)  # refused on any connection: no second try
            if not reader.schema and _names_schema_object(sql):
                _install_schema(reader.con)
                reader.schema = True
            try:
                return _run(reader.con, sql, params, convert)
            except WarehouseError:
                self._drop_reader()
                if not reused and reader.schema:
                    raise
            # It failed on the kept connection (or one without the schema SQL): once more on a
            # fresh, complete one, whose views name any part damaged since the kept one was
            # built. A plain SQL error fails the same way again.
            reader, _ = self._reader(schema=True)
            try:
                return _run(reader.con, sql, params, convert)
            except WarehouseError:
                self._drop_reader()
                raise

    def _reader(self, schema: bool = False) -> tuple["_Reader", bool]:
        """(this object's read connection, whether it was kept from an earlier query).

        Built by `_connect` (without the SQL of `schema/` unless `schema`) and kept while
        it stays exact: not across a fork (a child builds its own), not while a table is
        unreadable (every query rebuilds, so a repaired table reads again), and not once
        a table that had no schema part when it was built (an empty view) has one."""
        reader = self._reader_state
        if reader is not None:
            if reader.pid == os.getpid() and not any(
                    (self.root / schema_part_path(TABLES[t])).exists() for t in reader.missing):
                lists = self._part_lists()
                if lists != reader.parts:
                    if any((lists[t] is None) != (reader.parts[t] is None) for t in lists):
                        self._drop_reader()
                        return self._reader(schema)
                    self._set_parts(reader.con, {t: v for t, v in lists.items() if v != reader.parts[t]})
                    reader.parts = lists
                return reader, True
            self._drop_reader()
        missing = tuple(t for t, spec in TABLES.items() if not (self.root / schema_part_path(spec)).exists())
        con = self._connect(schema=schema)
        reader = _Reader(con, os.getpid(), missing, schema, self._last_lists)
        if not self.unreadable:
            self._reader_state = reader
        return reader, False

    def _drop_reader(self) -> None:
        reader, self._reader_state = self._reader_state, None
        if reader is not None and reader.pid == os.getpid():  # a forked child leaves its parent's alone
            reader.con.close()

    def close(self) -> None:
        """Close the connection `query`/`records` keep (the next query builds a new one)."""
        with self._reader_lock:
            self._drop_reader()


def connect(root: str | os.PathLike | None = None):
    """`retland.connect(path)`: a DuckDB connection over an existing warehouse, with the
    views and macros, that can read the warehouse folder and nothing else."""
    return Warehouse.open(root, create=False, _how=PYTHON_HOW).connect()


# How a Python caller names the warehouse (the CLI's words are --warehouse PATH).
PYTHON_HOW = "pass the folder, e.g. retland.connect('data/warehouse') or retland.query(sql, warehouse='data/warehouse')"
