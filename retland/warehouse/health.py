"""Finding and setting aside what makes a warehouse unreadable.

A disk that filled up or a copy that was interrupted can leave a truncated Parquet part;
a writer or compaction killed mid-write leaves a hidden `.tmp` file. `scan` lists both
(and, with `deep`, parts whose footer reads but whose data pages do not). `quarantine`
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

from .sqlgen import TABLES_DIR
from .tables import TABLES

QUARANTINE_DIR = "quarantine"


@dataclass(frozen=True)
class Finding:
    kind: str  # "damaged part" | "stray temp file"
    path: Path  # absolute
    detail: str


def _part_problem(path: Path, deep: bool) -> str | None:
    try:
        meta = pq.read_metadata(path)
        if deep:
            with open(path, "rb") as fh:
                pq.read_table(fh)
    except (OSError, pa.ArrowException) as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'unreadable'}"
    if meta.num_columns == 0 and meta.num_rows:
        return "no columns"
    return None


def damaged_parts(root: Path, tables: list[str] | None = None, deep: bool = False) -> list[Finding]:
    """Parts of `tables` (default all) whose footer (with `deep`: whole file) does not read."""
    out = []
    for name in tables or list(TABLES):
        base = Path(root) / TABLES_DIR / name
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.parquet")):
            if path.is_file() and (problem := _part_problem(path, deep)):
                out.append(Finding("damaged part", path, problem))
    return out


def stray_temp_files(root: Path) -> list[Finding]:
    """Hidden temp files of writes that never finished (a part, a compaction, init.sql).

    While a writer is running, its own temp file is not stray; callers that move these
    hold the warehouse's exclusive lock, which no running writer allows."""
    root = Path(root)
    candidates = list((root / TABLES_DIR).rglob(".*.tmp")) + list(root.glob(".init.sql.*.tmp"))
    now = time.time()
    out = []
    for path in sorted(candidates):
        if path.is_file():
            age = now - path.stat().st_mtime
            out.append(Finding("stray temp file", path, f"unfinished write, {_age(age)} old"))
    return out


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def scan(root: Path, deep: bool = False) -> list[Finding]:
    return damaged_parts(root, deep=deep) + stray_temp_files(root)


def quarantine(root: Path, findings: list[Finding]) -> list[tuple[Path, Path]]:
    """Move each finding's file to <root>/quarantine/<UTC time>/<its path under root>.

    Returns (from, to) pairs. Moves are renames within the warehouse (same filesystem).
    """
    root = Path(root)
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
