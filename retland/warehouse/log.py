"""The commit log: which Parquet parts are the warehouse's rows.

A part becomes data only when an entry of `<root>/log/` names it. Before this log the views
globbed `tables/**/*.parquet`, so any file dropped there (a `COPY … TO`, an `-o` path, a
copy by hand) was read as rows, whatever its schema. Now:

- **Entries** are small JSON files `log/<write ns:020d>-<uuid12>.json`, never rewritten:
  `{"format": "retland-commit/1", "id", "command", "add": [{"table", "path", "rows",
  "bytes"}], "remove": [path, …], "supersedes": [id, …]}`. Paths are relative to the
  root. Each is written under a hidden temp name, fsynced and renamed into `log/` (atomic
  within one filesystem), then the folder is fsynced: the rename is the commit point.
  Names are unique per writer (time + random), so any number of processes and machines
  append entries without coordinating, as they appended parts before.
- **The committed set** of a table is every `add` path of the live entries minus every
  `remove` path of them; an entry is live unless a later one `supersedes` it. Readers
  list `log/`, parse only the entries they have not seen (entries never change, so each
  process caches them) and hand the set to the views as a DuckDB variable
  (`read_parquet(getvariable('retland_parts_<table>'))`); `init.sql` computes the same set
  with `read_json` for a stock client.
- **One command, one entry**: the writer writes every part of a command (several tables,
  several run folders) under its final name, then the one entry naming them all. A crash
  before the rename leaves parts that no entry names: never read. Before the parts, the
  writer leaves an intent file `log/.pending-<id>.<host>.<pid>` listing them; a later
  writer on the same host whose pid is dead (or any `check --quarantine` / `compact`,
  which hold the warehouse alone) deletes the listed parts and the intent, and the temp
  files named after a dead pid, so a rerun after a crash cleans up after its predecessor.
- **Compaction** writes the merged part, then one entry adding it and removing the merged
  ones, then deletes them; at the end a checkpoint entry lists the whole committed set and
  supersedes every older entry, which are then deleted (a crash in between leaves them
  superseded, i.e. ignored). **Quarantine** moves a damaged part aside and commits an
  entry removing it.
- **Migration**: a warehouse written before the log (tables/ but no log/) has its parts
  adopted once, by the first writer, into one entry: those named like the writer's parts
  whose Parquet schema is the declared one (`adoptable`). Until then readers compute the
  same set in memory. Parts that fail are left out and listed by `retland check`.

Schema parts (`part-00000000000000000000-schema.parquet`, zero rows) are not in the log:
the views read a table's schema part when its schema is exactly the declared one.
"""
from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

LOG_DIR = "log"
FORMAT = "retland-commit/1"
_ENTRY = re.compile(r"^(\d{20}-[0-9a-f]{12})\.json$")
PART_NAME = re.compile(r"^part-\d{20}-[0-9a-f]{12}\.parquet$")
HOST = socket.gethostname().replace(".", "_").replace("/", "_") or "host"

_cache: dict[tuple[str, str], dict | None] = {}  # (log dir, entry name) -> parsed entry (None: unreadable)
_cache_lock = threading.Lock()


def log_dir(root: Path) -> Path:
    return Path(root) / LOG_DIR


def has_log(root: Path) -> bool:
    return log_dir(root).is_dir()


def new_id() -> str:
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:12]}"


def temp_name(name: str) -> str:
    """A hidden temp name that says whose it is: `.NAME.<host>.<pid>.tmp`."""
    return f".{name}.{HOST}.{os.getpid()}.tmp"


_TEMP_OWNER = re.compile(r"^\..*\.([^.]+)\.(\d+)\.tmp$")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_points = 0


def crash_point() -> None:
    """Fault injection for the crash tests: with RETLAND_CRASH_AT=N in the environment,
    the process kills itself (SIGKILL: no cleanup runs) at the N-th write point it passes
    (before and after each rename of a part, an intent or a log entry). With
    RETLAND_CRASH_AT=count it kills nothing and prints `write points: N` to stderr at exit,
    so a test learns a command's write points from one run."""
    global _points
    at = os.environ.get("RETLAND_CRASH_AT")
    if not at:
        return
    _points += 1
    if at == "count":
        if _points == 1:
            import atexit
            import sys

            atexit.register(lambda: print(f"write points: {_points}", file=sys.stderr))
        return
    if _points == int(at):
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def write_atomic(folder: Path, name: str, write, mode: str = "w") -> Path:
    """folder/name written by write(file) under a temporary name, fsynced, then renamed into
    place: readers see the whole file or none (the temporary is removed on any failure)."""
    tmp = folder / temp_name(name)
    try:
        with open(tmp, mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        crash_point()
        os.rename(tmp, folder / name)
        crash_point()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(folder)
    return folder / name


def write_entry(root: Path, add: list[dict], remove=(), supersedes=(), command: str | None = None,
                entry_id: str | None = None) -> str:
    """Commit: one entry made visible by one rename. Returns its id."""
    entry_id = entry_id or new_id()
    body = {"format": FORMAT, "id": entry_id, "command": command, "add": list(add),
            "remove": sorted(remove), "supersedes": sorted(supersedes)}
    folder = log_dir(root)
    if not folder.is_dir():
        migrate(root)  # a warehouse from before the log adopts its parts before the first entry
    text = json.dumps(body, separators=(",", ":")) + "\n"
    write_atomic(folder, f"{entry_id}.json", lambda fh: fh.write(text))
    return entry_id


def _parse(path: Path) -> dict | None:
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        return None
    add, remove, sup = body.get("add"), body.get("remove"), body.get("supersedes")
    if not (isinstance(add, list) and isinstance(remove, list) and isinstance(sup, list)):
        return None
    for item in add:
        if not (isinstance(item, dict) and isinstance(item.get("table"), str) and isinstance(item.get("path"), str)
                and _safe_path(item["path"]) and item["path"].split("/")[1] == item["table"]):
            return None
    if not all(isinstance(p, str) for p in remove) or not all(isinstance(s, str) for s in sup):
        return None
    return body


def _safe_path(rel: str) -> bool:
    """A part path as the writer records it: tables/<table>/…/part-….parquet, no `..`."""
    parts = rel.split("/")
    return (len(parts) >= 3 and parts[0] == "tables" and ".." not in parts and not rel.startswith("/")
            and rel.endswith(".parquet"))


@dataclass
class LogState:
    """What `read_log` found."""
    entries: dict[str, dict] = field(default_factory=dict)  # live entries by id
    superseded: list[str] = field(default_factory=list)  # ids on disk that a later entry supersedes
    bad: list[Path] = field(default_factory=list)  # entry files that do not parse
    parts: dict[str, dict[str, dict]] = field(default_factory=dict)  # table -> rel path -> add item
    legacy: bool = False  # no log/ yet: the set was computed by `adoptable`
    rejected: list[tuple[Path, str]] = field(default_factory=list)  # legacy parts left out, and why


def read_log(root: Path) -> LogState:
    """The committed set of every table (see the module docstring)."""
    root = Path(root)
    folder = log_dir(root)
    if not folder.is_dir():
        return adoptable(root)
    state = LogState()
    key_dir = str(folder)
    try:
        names = sorted(e.name for e in os.scandir(folder) if _ENTRY.match(e.name))
    except FileNotFoundError:
        names = []
    bodies = {}
    for name in names:
        key = (key_dir, name)
        with _cache_lock:
            hit = key in _cache
            body = _cache.get(key)
        if not hit:
            body = _parse(folder / name)
            if body is not None:  # a bad entry may be a half-copied file: parse again next time
                with _cache_lock:
                    _cache[key] = body
        if body is None or body.get("id") != name[:-5]:
            state.bad.append(folder / name)
            continue
        bodies[body["id"]] = body
    dead = {s for b in bodies.values() for s in b["supersedes"]}
    removed = set()
    for entry_id, body in bodies.items():
        if entry_id in dead:
            state.superseded.append(entry_id)
            continue
        state.entries[entry_id] = body
        removed.update(body["remove"])
    for body in state.entries.values():
        for item in body["add"]:
            if item["path"] not in removed:
                state.parts.setdefault(item["table"], {})[item["path"]] = item
    return state


def committed_paths(state: LogState, table: str) -> list[str]:
    """Relative paths of a table's committed parts, in write (name) order."""
    return sorted(state.parts.get(table, {}), key=lambda p: (p.rsplit("/", 1)[-1], p))


# ----- migration of a warehouse written before the log ---------------------------------------

_schema_cache: dict[tuple[str, int, int], str | None] = {}


def part_schema_problem(path: Path, table: str) -> str | None:
    """None when the Parquet file's columns are the table's declared columns (less the
    partition columns; a subset, for parts written before a nullable column was added)
    with the declared types; else why not."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .tables import TABLES

    try:
        st = path.stat()
    except OSError as exc:
        return f"cannot stat: {exc.strerror}"
    key = (str(path), st.st_mtime_ns, st.st_size)
    if key in _schema_cache:
        return _schema_cache[key]
    spec = TABLES[table]
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        problem = f"unreadable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    else:
        declared = {f.name: f for f in spec.schema if f.name not in spec.partition_by}
        problem = None
        for f in schema:
            want = declared.get(f.name)
            if want is None:
                problem = f"column {f.name!r} is not a column of {table}"
                break
            if not f.type.equals(want.type):
                problem = f"column {f.name!r} has type {f.type}, {table} declares {want.type}"
                break
        else:
            missing = [n for n, f in declared.items() if not f.nullable and n not in schema.names]
            if missing:
                problem = f"required column(s) {', '.join(missing)} missing"
    _schema_cache[key] = problem
    return problem


# Values that become folder names must be safe on every filesystem and in globs.
PARTITION_VALUE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$")


def _partition_ok(rel_parts: list[str], spec) -> bool:
    folders = rel_parts[2:-1]
    if len(folders) != len(spec.partition_by):
        return False
    for folder, col in zip(folders, spec.partition_by):
        name, _, value = folder.partition("=")
        if name != col or not PARTITION_VALUE.match(value):
            return False
    return True


def adoptable(root: Path) -> LogState:
    """The set a warehouse without log/ would commit: every file under tables/ named like
    a writer's part, in a folder of its table's layout, with the declared schema."""
    from .sqlgen import SCHEMA_PART, TABLES_DIR
    from .tables import TABLES

    root = Path(root)
    state = LogState(legacy=True)
    for name, spec in TABLES.items():
        base = root / TABLES_DIR / name
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            if not path.is_file() or path.name == SCHEMA_PART or path.name.startswith("."):
                continue
            rel = path.relative_to(root).as_posix()
            if not PART_NAME.match(path.name) or not _partition_ok(rel.split("/"), spec):
                state.rejected.append((path, "not a part the writer names or places this way"))
                continue
            problem = part_schema_problem(path, name)
            if problem:
                state.rejected.append((path, problem))
                continue
            state.parts.setdefault(name, {})[rel] = {"table": name, "path": rel, "rows": None,
                                                      "bytes": path.stat().st_size}
    return state


def migrate(root: Path) -> tuple[int, int] | None:
    """Give a warehouse without log/ its log: one entry adopting `adoptable` parts.
    Returns (adopted, left out), or None when the warehouse already has a log."""
    root = Path(root)
    if has_log(root):
        return None
    state = adoptable(root)
    add = [item for table in state.parts.values() for item in table.values()]
    folder = log_dir(root)
    tmp = root / temp_name(LOG_DIR)
    tmp.mkdir(exist_ok=True)
    write_entry_into = tmp
    entry_id = new_id()
    body = {"format": FORMAT, "id": entry_id, "command": "migrate", "add": add, "remove": [], "supersedes": []}
    (write_entry_into / f"{entry_id}.json").write_text(json.dumps(body, separators=(",", ":")) + "\n")
    try:
        os.rename(tmp, folder)  # the whole log appears at once
    except OSError:
        if not folder.is_dir():
            raise
        # another writer migrated first: keep theirs
        for p in tmp.iterdir():
            p.unlink()
        tmp.rmdir()
        return None
    _fsync_dir(root)
    return len(add), len(state.rejected)


# ----- a command's commit --------------------------------------------------------------------

def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_PENDING = re.compile(r"^\.pending-(\d{20}-[0-9a-f]{12})\.([^.]+)\.(\d+)$")


def write_intent(root: Path, entry_id: str, paths: list[str]) -> Path:
    folder = log_dir(root)
    if not folder.is_dir():
        migrate(root)
    name = f".pending-{entry_id}.{HOST}.{os.getpid()}"
    text = json.dumps({"paths": paths}) + "\n"
    return write_atomic(folder, name, lambda fh: fh.write(text))


def _stale(host: str, pid: int, everything: bool) -> bool:
    if everything:
        return True
    return host == HOST and pid != os.getpid() and not _pid_alive(pid)


def stale_writes(root: Path, everything: bool = False) -> list[Path]:
    """Files left by writers that died: their intents, the parts those intents list that
    no entry commits, and temp files named after a dead pid. `everything` (the caller holds
    the warehouse alone) counts every writer's as stale."""
    from .sqlgen import TABLES_DIR

    root = Path(root)
    out: list[Path] = []
    folder = log_dir(root)
    committed = None
    if folder.is_dir():
        for entry in os.scandir(folder):
            m = _PENDING.match(entry.name)
            if not m or not _stale(m.group(2), int(m.group(3)), everything):
                continue
            path = Path(entry.path)
            try:
                listed = json.loads(path.read_text()).get("paths", [])
            except (OSError, ValueError, AttributeError):
                listed = []
            if committed is None:
                state = read_log(root)
                committed = {p for t in state.parts.values() for p in t}
            for rel in listed:
                if isinstance(rel, str) and _safe_path(rel) and rel not in committed and (root / rel).is_file():
                    out.append(root / rel)
            out.append(path)
    candidates = []
    if (root / TABLES_DIR).is_dir():
        candidates += list((root / TABLES_DIR).rglob(".*.tmp"))
    if folder.is_dir():
        candidates += list(folder.glob(".*.tmp"))
    candidates += list(root.glob(".*.tmp"))
    for path in candidates:
        m = _TEMP_OWNER.match(path.name)
        if m and _stale(m.group(1), int(m.group(2)), everything) and path.is_file():
            out.append(path)
    return out


def clean_stale(root: Path) -> int:
    """Delete what `stale_writes` finds for dead writers on this host; returns how many."""
    n = 0
    for path in stale_writes(root):
        try:
            path.unlink()
            n += 1
        except OSError:
            pass
    return n

