"""An advisory lock per warehouse: every user shares it, compaction takes it alone.

Readers and writers take a *shared* lock on `<root>/.retland.lock` the first time a
process connects to or appends to a warehouse, and keep it until the process exits (or
`release(root)`): a sampling job holds it for its whole run, a notebook for its life.
Compaction and `retland check --quarantine` delete or move parts, so they need the
*exclusive* lock and refuse to start, naming the holders, while anyone else has the
warehouse open. Taking a shared lock while a compaction holds the exclusive one fails
the same way, so a job never reads a folder halfway through a merge.

The lock is `flock(2)`. On a local disk it is exact. On NFS, Linux clients turn flock
into NFS byte-range locks, so it holds across machines when the server supports locking
(NFSv4, or NFSv3 with lockd); holders are then named only for this machine, since
`/proc/locks` lists only local processes. On a filesystem without locking, flock fails
and retland says so instead of proceeding unlocked.

Readers never create the lock file (a warehouse on a read-only mount stays untouched);
it is created with the warehouse layout by the first writer. A warehouse written before
the lock existed gets the file from its next writer or compaction.
"""
from __future__ import annotations

import errno
import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

from .writer import WarehouseError

LOCK_FILE = ".retland.lock"

_shared: dict[Path, int] = {}  # root -> fd holding this process's shared lock


class WarehouseBusy(WarehouseError):
    """Another process holds the lock that this operation needs."""


def lock_path(root: Path) -> Path:
    return Path(root) / LOCK_FILE


def create_lock_file(root: Path) -> None:
    path = lock_path(root)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)
        os.close(fd)


def holders(root: Path) -> list[str]:
    """'pid N (command line)' of the other local processes holding the lock."""
    try:
        inode = lock_path(root).stat().st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return []
    pids = set()
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  READ  1234 08:01:5678 0 EOF" (a "->" marks a waiter)
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK":
            continue
        try:
            pid, ino = int(fields[4]), int(fields[5].rsplit(":", 1)[1])
        except (ValueError, IndexError):
            continue
        if ino == inode and pid != os.getpid():
            pids.add(pid)
    out = []
    for pid in sorted(pids):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            cmd = "?"
        out.append(f"pid {pid} ({cmd[:120]})")
    return out


def _busy(root: Path, message: str) -> WarehouseBusy:
    who = holders(root)
    named = "; ".join(who) if who else "a process on another machine (or one this machine cannot name)"
    return WarehouseBusy(f"warehouse {root}: " + message.format(who=named))


def _flock(fd: int, flags: int, root: Path, message: str) -> None:
    try:
        fcntl.flock(fd, flags | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise _busy(root, message) from None
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            raise WarehouseError(f"{root}: the filesystem does not support locks ({exc.strerror}); "
                                 "retland cannot keep compaction away from running jobs there") from None
        raise


def hold_shared(root: Path) -> None:
    """Take this process's shared lock on `root` (once; kept until exit or `release`).

    Raises WarehouseBusy while a compaction or quarantine holds the exclusive lock. Does
    nothing when the warehouse has no lock file and this process cannot create one."""
    root = Path(root)
    if root in _shared:
        return
    path = lock_path(root)
    try:
        fd = os.open(path, os.O_RDWR)
    except PermissionError:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return
    except FileNotFoundError:
        return
    _flock(fd, fcntl.LOCK_SH, root, "being compacted or repaired by {who}; try again when that ends")
    _shared[root] = fd


def release(root: Path) -> None:
    """Drop this process's shared lock on `root`, if it holds one."""
    fd = _shared.pop(Path(root), None)
    if fd is not None:
        os.close(fd)


@contextmanager
def exclusive(root: Path, what: str):
    """Hold the exclusive lock for the block, or raise WarehouseBusy naming the holders.

    This process's own shared lock is dropped first (flock locks on two descriptors of
    one file conflict even within a process); the next connect takes it again."""
    root = Path(root)
    release(root)
    create_lock_file(root)
    fd = os.open(lock_path(root), os.O_RDWR)
    _flock(fd, fcntl.LOCK_EX, root, what + " needs the warehouse to itself, but it is in use by {who}; "
           "run it when they have finished")
    try:
        yield
    finally:
        os.close(fd)
