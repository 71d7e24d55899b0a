"""Finding and setting aside what makes a warehouse unreadable.

A disk that filled up or a copy that was interrupted can leave a truncated Parquet part;
a writer or compaction killed mid-write leaves a hidden `.tmp` file. `scan` lists both
(and, with `deep`, parts whose footer reads but whose data pages do not, or whose schema
is not the declared one), and what the commit log (log.py) disagrees with: files under
tables/ that no entry commits ("foreign file": never read as rows), committed parts that
are gone ("missing part"), entries that do not parse, and the parts of writes that died
before their commit. `quarantine`
moves what was found into `<root>/quarantine/<UTC time>/`, keeping each file's path
relative to the root, so nothing is ever deleted and the views, which read only
`tables/`, work again. A quarantined part's rows are gone from every query; if they
mattered, re-run the job that wrote them (sampling is keyed by index, so it recomputes
exactly the missing samples).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .log import (LOG_DIR, _PENDING, _TEMP_OWNER, HOST, _pid_alive, committed_paths, log_dir, read_log,
                  stale_writes, write_entry)
from .sqlgen import SCHEMA_PART, TABLES_DIR
from .tables import TABLES

QUARANTINE_DIR = "quarantine"


@dataclass(frozen=True)
class Finding:
    kind: str  # "damaged part" | "missing part" | "foreign file" | "bad log entry" | "stray temp file"
    path: Path  # absolute
    detail: str
    table: str | None = None  # for committed parts: the table whose log names it


def _part_problem(path: Path, deep: bool, table: str | None = None) -> str | None:
    try:
        meta = pq.read_metadata(path)
        if deep:
            with open(path, "rb") as fh:
                pq.read_table(fh)
    except (OSError, pa.ArrowException) as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'}"
    if meta.num_columns == 0 and meta.num_rows:
        return "no columns"
    if deep and table is not None:
        from .log import part_schema_problem

        problem = part_schema_problem(path, table)
        if problem:
            return f"wrong schema: {problem}"
    return None


def damaged_parts(root: Path, tables: list[str] | None = None, deep: bool = False) -> list[Finding]:
    """Committed parts of `tables` (default all) that are missing, or whose footer (with
    `deep`: whole file and schema) does not read."""
    root = Path(root)
    state = read_log(root)
    out = []
    for name in tables or list(TABLES):
        for rel in committed_paths(state, name):
            path = root / rel
            if not path.is_file():
                out.append(Finding("missing part", path, "committed in log/ but not on disk", name))
            elif problem := _part_problem(path, deep, name):
                out.append(Finding("damaged part", path, problem, name))
    return out


def foreign_files(root: Path) -> list[Finding]:
    """Files under tables/ that no log entry commits, that are no schema part and no
    temp file: planted, copied in, or left by a tool other than the writer. Never read."""
    root = Path(root)
    state = read_log(root)
    committed = {p for t in state.parts.values() for p in t}
    in_flight = set()  # parts that a live writer's intent lists
    folder = log_dir(root)
    if folder.is_dir():
        import json

        for entry in os.scandir(folder):
            m = _PENDING.match(entry.name)
            if m and m.group(2) == HOST and _pid_alive(int(m.group(3))):
                try:
                    in_flight.update(json.loads(Path(entry.path).read_text()).get("paths", []))
                except (OSError, ValueError, AttributeError):
                    pass
    rejected = {str(p): why for p, why in state.rejected} if state.legacy else {}
    out = []
    base = root / TABLES_DIR
    if not base.is_dir():
        return out
    for path in sorted(base.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        rel = path.relative_to(root).as_posix()
        if rel in committed or rel in in_flight or path.name == SCHEMA_PART:
            continue
        why = rejected.get(str(path), "no log entry commits it")
        out.append(Finding("foreign file", path, f"{why}; never read as rows"))
    return out


def log_problems(root: Path) -> list[Finding]:
    state = read_log(Path(root))
    return [Finding("bad log entry", p, "does not parse as a retland commit; ignored") for p in state.bad]


def stray_temp_files(root: Path, exclusive: bool = False) -> list[Finding]:
    """Hidden temp files of writes that never finished (a part, a compaction, init.sql, a
    log entry), intents of writers that died and the parts only they list.

    A temp file named after a live process of this host is that writer's and not stray;
    callers that move these hold the warehouse's exclusive lock, which no running writer allows."""
    root = Path(root)
    candidates = list((root / TABLES_DIR).rglob(".*.tmp")) + list(root.glob(".init.sql.*.tmp"))
    if log_dir(root).is_dir():
        candidates += list(log_dir(root).glob(".*.tmp"))
    now = time.time()
    out = []
    for path in sorted(set(candidates)):
        m = _TEMP_OWNER.match(path.name)
        if not exclusive and m and m.group(1) == HOST and m.group(2).isdigit() and _pid_alive(int(m.group(2))):
            continue
        if path.is_file():
            age = now - path.stat().st_mtime
            out.append(Finding("stray temp file", path, f"unfinished write, {_age(age)} old"))
    seen = {f.path for f in out}
    for path in stale_writes(root, everything=exclusive):
        if path in seen or path.name.endswith(".tmp"):
            continue
        what = "intent of a write that died" if path.parent.name == LOG_DIR else "part of a write that died uncommitted"
        out.append(Finding("stray temp file", path, what))
    return out


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def scan(root: Path, deep: bool = False, exclusive: bool = False) -> list[Finding]:
    """Everything `retland check` reports; `exclusive`: the caller holds the warehouse
    alone, so every unfinished write is stray (not only those of dead local processes)."""
    strays = stray_temp_files(root, exclusive)
    seen = {s.path for s in strays}
    return damaged_parts(root, deep=deep) + log_problems(root) + strays + [
        f for f in foreign_files(root) if f.path not in seen]


def quarantine(root: Path, findings: list[Finding]) -> list[tuple[Path, Path]]:
    """Move each finding's file to <root>/quarantine/<UTC time>/<its path under root>;
    committed parts among them (damaged or missing) are removed from the committed set
    by one log entry first, so readers never look for a moved file.

    Returns (from, to) pairs. Moves are renames within the warehouse (same filesystem).
    """
    root = Path(root)
    committed = [f for f in findings if f.table is not None]
    if committed:
        write_entry(root, [], remove=[f.path.relative_to(root).as_posix() for f in committed], command="quarantine")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    target_root = root / QUARANTINE_DIR / stamp
    moved = []
    for finding in findings:
        if not finding.path.exists():
            continue
        target = target_root / finding.path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(finding.path, target)
        moved.append((finding.path, target))
    return moved
