"""What user SQL may do: read the warehouse, nothing else.

Two independent fences, so that a hole in one is not a hole:

1. `lock_down(con, root)`: DuckDB itself refuses file access outside the warehouse folder
   (and a private spill folder), refuses extension installs and loads, and then locks
   its configuration so no later statement can undo this. Every connection that
   `Warehouse.connect` hands out, to retland's own code or to a user, is locked down.
2. `check_readonly(sql)`: one statement, and only a SELECT (including WITH, DESCRIBE,
   SHOW, SUMMARIZE, FROM-first, VALUES) or an EXPLAIN [ANALYZE] of one. DuckDB runs the
   statement under EXPLAIN ANALYZE, so `EXPLAIN ANALYZE COPY …` would write; the inner
   statement is checked too. This matters because fence 1 must allow the warehouse
   folder itself, where a COPY could plant a part.

A `--where` option is never pasted into SQL text: `parse_where` parses it as exactly one
expression (a second statement or a stray parenthesis is a parse error) and the callers
apply it through DuckDB's relation API (`filtered`).
"""
from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import duckdb

from .writer import WarehouseError

_ALLOWED = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
_WHAT_RUNS = "only SELECT, WITH … SELECT, DESCRIBE/SHOW/SUMMARIZE and EXPLAIN [ANALYZE] of those run"
# Characters DuckDB would read as a glob pattern in the warehouse path.
GLOB_CHARS = set("*?[]{}")


# Spill folders of this process's connections (DuckDB removes each when its connection
# closes; `remove_spill_dirs` does it for a process that exits without closing them).
SPILL_DIRS: list[Path] = []


def remove_spill_dirs() -> None:
    import shutil

    for path in SPILL_DIRS:
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)


def lock_down(con: duckdb.DuckDBPyConnection, root: Path) -> None:
    """Confine `con` to reading `root`: no other files, no extensions, locked settings.

    Spilling large sorts and joins to disk needs a writable folder, so DuckDB's temp
    folder is a fresh one under the system temp directory (DuckDB creates it on demand and
    removes it when the connection closes); it is the only other path DuckDB may touch.
    """
    spill = Path(tempfile.gettempdir()) / f"retland-duckdb-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    SPILL_DIRS.append(spill)
    dirs = [str(root).rstrip("/") + "/", str(spill) + "/"]
    con.execute("SET temp_directory = ?", [str(spill)])
    try:
        con.execute("SET enable_progress_bar = false")  # it writes to stdout, into a command's output
    except duckdb.InvalidInputException:
        # Inside Jupyter without ipywidgets DuckDB refuses to touch the setting at all (its
        # bar would need the widgets): there is no bar to turn off.
        pass
    # Bounded memory: past this, sorts, joins and aggregates spill to `spill` instead of
    # growing until the process is killed (under `ulimit -v` DuckDB's default would).
    limit = os.environ.get("RETLAND_DUCKDB_MEMORY", "").strip() or memory_limit_bytes()
    if limit:
        try:
            con.execute("SET memory_limit = ?", [f"{limit}B" if isinstance(limit, int) else limit])
        except duckdb.Error as exc:
            raise WarehouseError(f"$RETLAND_DUCKDB_MEMORY={limit!r}: {_first_line(exc)}") from None
    con.execute("SET allowed_directories = ?", [dirs])
    con.execute("SET enable_external_access = false")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute("SET lock_configuration = true")


def _explained(sql: str) -> str:
    """The statement under `EXPLAIN [ANALYZE] [(options)]`, found with DuckDB's own
    tokenizer (so comments between the keywords do not hide anything)."""
    tokens = duckdb.tokenize(sql)
    words = [(pos, sql[pos:tokens[i + 1][0] if i + 1 < len(tokens) else len(sql)].strip(), kind)
             for i, (pos, kind) in enumerate(tokens)]
    words = [w for w in words if w[2] != duckdb.token_type.comment]
    i = 1  # words[0] is EXPLAIN
    if i < len(words) and words[i][1].upper() in ("ANALYZE", "ANALYSE"):
        i += 1
    if i < len(words) and words[i][1] == "(":
        depth = 0
        for j in range(i, len(words)):
            depth += words[j][1].count("(") - words[j][1].count(")")
            if depth == 0:
                i = j + 1
                break
        else:
            return ""
    return sql[words[i][0]:] if i < len(words) else ""


def check_readonly(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Raise WarehouseError unless `sql` is one statement that only reads."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise WarehouseError(f"SQL does not parse: {_first_line(exc)}") from None
    if not statements:
        raise WarehouseError("empty query: give one SELECT statement")
    if len(statements) > 1:
        raise WarehouseError(f"give one statement, got {len(statements)}")
    kind = statements[0].type
    if kind not in _ALLOWED:
        name = getattr(kind, "name", str(kind))
        raise WarehouseError(f"refused: {name} statements could write; the warehouse is read-only here ({_WHAT_RUNS})")
    if kind == duckdb.StatementType.EXPLAIN:
        inner = _explained(statements[0].query)
        try:
            inner_statements = con.extract_statements(inner) if inner.strip() else []
        except duckdb.Error as exc:
            raise WarehouseError(f"SQL does not parse: {_first_line(exc)}") from None
        if len(inner_statements) != 1 or inner_statements[0].type != duckdb.StatementType.SELECT:
            what = getattr(inner_statements[0].type, "name", "?") if inner_statements else "nothing"
            raise WarehouseError(f"refused: EXPLAIN of {what}; DuckDB runs what EXPLAIN ANALYZE explains, "
                                 f"so only a SELECT may be explained ({_WHAT_RUNS})")


def execute_readonly(con: duckdb.DuckDBPyConnection, sql: str, params=None) -> duckdb.DuckDBPyRelation:
    """Check `sql` with `check_readonly`, then run it; DuckDB errors become one-line
    WarehouseErrors (naming a damaged part and the fix when a file is unreadable)."""
    check_readonly(con, sql)
    try:
        return con.sql(sql, params=params)
    except duckdb.Error as exc:
        raise query_error(exc) from None


def parse_where(where: str | None) -> duckdb.Expression | None:
    """A `--where` condition as one parsed SQL expression (None when empty)."""
    if where is None or not where.strip():
        return None
    try:
        return duckdb.SQLExpression(where)
    except duckdb.Error as exc:
        raise WarehouseError(f"--where {where!r} is not one SQL condition: {_first_line(exc)}") from None


def filtered(con: duckdb.DuckDBPyConnection, sql: str, where: str | None) -> duckdb.DuckDBPyRelation:
    """The rows of query `sql` (retland's own, trusted) that `where` keeps."""
    rel = con.sql(sql)
    condition = parse_where(where)
    if condition is None:
        return rel
    try:
        return rel.filter(condition)
    except duckdb.Error as exc:
        raise WarehouseError(f"--where {where!r}: {_first_line(exc)}") from None


def query_error(exc: duckdb.Error) -> WarehouseError:
    """One line for a failed query; an unreadable warehouse file gets the fix."""
    text = _first_line(exc)
    if (isinstance(exc, (duckdb.IOException, duckdb.InvalidInputException)) and ".parquet" in text
            and "retland check" not in text):
        return WarehouseError(f"query failed: {text} (a damaged part? `retland check` lists damaged parts and "
                              "`retland check --quarantine` moves them aside)")
    return WarehouseError(f"query failed: {text}")


def _first_line(exc: Exception) -> str:
    """DuckDB's message as one line, without the echo of the SQL ("LINE 1: …" and the
    caret line) that follows it."""
    kept = []
    for line in str(exc).splitlines():
        if line.startswith("LINE "):
            break
        if line.strip():
            kept.append(line.strip())
    return " ".join(kept) or type(exc).__name__


# ----- the connection handed to Python code --------------------------------------------------

# What a Python caller's statements may be: reads, and changes to the in-memory catalog
# (temp views, tables, macros: nothing reaches the disk). COPY, EXPORT, ATTACH, LOAD,
# INSTALL, PRAGMA and SET are refused: fence 1 must let DuckDB read the warehouse folder,
# which would also let a COPY … TO or an ATTACH create files in it.
_PYTHON_ALLOWED = _ALLOWED | {duckdb.StatementType.CREATE, duckdb.StatementType.DROP,
                              duckdb.StatementType.INSERT, duckdb.StatementType.UPDATE,
                              duckdb.StatementType.DELETE, duckdb.StatementType.CREATE_FUNC,
                              duckdb.StatementType.VARIABLE_SET, duckdb.StatementType.TRANSACTION,
                              duckdb.StatementType.ALTER}
# Relation methods that write a file or persist: refused (reading is everything else).
_RELATION_WRITES = frozenset({"to_parquet", "write_parquet", "to_csv", "write_csv"})


def check_python_sql(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Raise WarehouseError unless every statement of `sql` only reads or changes the
    in-memory catalog (see `_PYTHON_ALLOWED`); EXPLAIN is checked as `check_readonly` does."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise WarehouseError(f"SQL does not parse: {_first_line(exc)}") from None
    for st in statements:
        if st.type == duckdb.StatementType.EXPLAIN:
            check_readonly(con, st.query)
        elif st.type not in _PYTHON_ALLOWED:
            name = getattr(st.type, "name", str(st.type))
            raise WarehouseError(f"refused: {name} statements could write files; a retland connection only "
                                 "reads the warehouse (export results with polars/pyarrow outside it)")


# Methods that run a query and fetch its rows: on the main thread they run through
# `run_cancellable`, so Ctrl-C stops them at once (DuckDB's own signal check does not
# reach a query whose rows are being converted, e.g. by .pl()).
_RUNS_QUERY = frozenset({"pl", "df", "fetchdf", "to_df", "fetchall", "fetchone", "fetchmany", "fetchnumpy",
                         "arrow", "fetch_arrow_table", "to_arrow_table", "to_dicts", "tf", "torch"})


class _Guard:
    """Delegates to a DuckDB object; what it returns is guarded too."""

    __slots__ = ("_obj", "_raw")

    def __init__(self, obj, raw):
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_raw", raw)

    def __getattr__(self, name):
        value = getattr(self._obj, name)
        if not callable(value):
            return value
        if name in _RUNS_QUERY:
            def fetch(*args, **kwargs):
                return _wrap(run_cancellable(self._raw, lambda: value(*args, **kwargs)), self._raw)
            return fetch

        def call(*args, **kwargs):
            return _wrap(value(*args, **kwargs), self._raw)
        return call

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._obj.close()
        return False

    def __repr__(self):
        return f"<retland read-only {self._obj!r}>"


def _wrap(value, raw):
    if isinstance(value, duckdb.DuckDBPyRelation):
        return GuardedRelation(value, raw)
    if isinstance(value, duckdb.DuckDBPyConnection):
        return GuardedConnection(value)
    return value


class GuardedRelation(_Guard):
    """A relation of a `GuardedConnection`: its file writers are refused, its SQL checked."""

    __slots__ = ()

    def __getattr__(self, name):
        if name in _RELATION_WRITES:
            raise WarehouseError(f"refused: relation.{name} writes a file; a retland connection only reads the "
                                 "warehouse (fetch with .pl()/.arrow() and write the result outside it)")
        return super().__getattr__(name)

    def query(self, virtual_table_name: str, sql_query: str):
        check_python_sql(self._raw, sql_query)
        return _wrap(self._obj.query(virtual_table_name, sql_query), self._raw)

    def __len__(self):
        return len(self._obj)

    def __iter__(self):
        return iter(self._obj.fetchall())

    def __str__(self):
        return str(self._obj)


class GuardedConnection(_Guard):
    """What `retland.connect()` and `Warehouse.connect()` return: a DuckDB connection
    (every method of one) whose statements pass `check_python_sql` first, and whose
    relations cannot write files. The underlying connection is `.duckdb`."""

    __slots__ = ()

    def __init__(self, con):
        super().__init__(con, con)

    @property
    def duckdb(self) -> duckdb.DuckDBPyConnection:
        return self._obj

    def execute(self, query, parameters=None):
        if isinstance(query, str):
            check_python_sql(self._obj, query)
        run_cancellable(self._obj, lambda: self._obj.execute(query, parameters))
        return self

    def executemany(self, query, parameters=None):
        if isinstance(query, str):
            check_python_sql(self._obj, query)
        self._obj.executemany(query, parameters)
        return self

    def sql(self, query, *args, **kwargs):
        if isinstance(query, str):
            check_python_sql(self._obj, query)
        return _wrap(self._obj.sql(query, *args, **kwargs), self._obj)

    query = sql

    def cursor(self):
        return GuardedConnection(self._obj.cursor())

    def from_query(self, query, *args, **kwargs):
        check_python_sql(self._obj, query)
        return _wrap(self._obj.from_query(query, *args, **kwargs), self._obj)


# ----- queries that can be stopped -----------------------------------------------------------

class QueryInterrupted(WarehouseError):
    """Ctrl-C stopped a running query (DuckDB's interrupt); the CLI exits 130."""


class QueryTimeout(WarehouseError):
    """A query ran past its --timeout and was interrupted."""


def run_cancellable(con, fn, timeout: float | None = None, lift: str = "--timeout 0"):
    """Run fn() (which executes and fetches on `con`) in a worker thread; the calling
    (main) thread waits, so Ctrl-C reaches it at once and becomes `con.interrupt()`: DuckDB
    stops the query within milliseconds. A `timeout` (seconds, None or 0: none) interrupts
    it the same way. Returns fn()'s value; raises QueryInterrupted / QueryTimeout (one line),
    or fn()'s own error."""
    import threading
    import time

    raw = getattr(con, "duckdb", con)
    box: dict = {}

    def work():
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    import signal

    stopped: list[str] = []

    def on_sigint(signum, frame):  # runs in the main thread, between two joins
        stopped.append("Ctrl-C")
        raw.interrupt()

    worker = threading.Thread(target=work, name="retland-query", daemon=True)
    start = time.monotonic()
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if main else None
    try:
        worker.start()
        while worker.is_alive():
            worker.join(0.05)
            if timeout and not stopped and worker.is_alive() and time.monotonic() - start > timeout:
                stopped.append("timeout")
                raw.interrupt()
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
    if stopped and stopped[0] == "timeout":
        raise QueryTimeout(f"query stopped after --timeout {timeout:g} s; a longer --timeout, or {lift}, lets it run")
    if stopped:
        raise QueryInterrupted(f"query interrupted (Ctrl-C) after {time.monotonic() - start:.1f} s")
    if "error" in box:
        exc = box["error"]
        if isinstance(exc, duckdb.InterruptException):
            raise QueryInterrupted("query interrupted") from None
        if isinstance(exc, duckdb.Error):
            raise query_error(exc) from None
        raise exc
    return box.get("value")


def memory_limit_bytes() -> int | None:
    """What DuckDB may hold in memory before it spills: $RETLAND_DUCKDB_MEMORY (bytes, or
    e.g. '4GB') wins; else half of the physical memory, and at most half of the address
    space limit (`ulimit -v`), which DuckDB's own default (80% of RAM) ignores."""
    text = os.environ.get("RETLAND_DUCKDB_MEMORY", "").strip()
    if text:
        return None  # passed to DuckDB as given
    limits = []
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2)
    except (ValueError, OSError, AttributeError):
        pass
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft not in (resource.RLIM_INFINITY, -1) and soft > 0:
            limits.append(soft // 2)
    except (ImportError, OSError, ValueError):
        pass
    return max(min(limits), 64 * 2**20) if limits else None
