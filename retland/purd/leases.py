"""Chunk leases: two sampling jobs that were started on the same work by mistake do
not both compute it.

Shards (`--shard i/N`) split the work so that jobs never overlap; a lease guards against
the jobs that overlap anyway: the same array submitted twice, a shard rerun while its
first run is still alive, two people sampling the same checkpoints. Before a job
computes chunk k (chunk size B) of a distribution, it creates the file

    <warehouse>/leases/<distribution hash>/B<B>-chunk<k>.lease

with O_CREAT | O_EXCL (atomic on local filesystems and on NFS v3 and later), holding
JSON: the distribution, the chunk, host, pid, SLURM job id if any, start time and a
random token. A chunk whose lease exists and is live is left to its holder; the job
reports it as busy and moves on (a later rerun fills whatever the holder did not).

Liveness. A holder touches its lease files every `stale_after / 4` seconds from a
heartbeat thread. A lease is stale when its file has not been touched for
`stale_after` seconds (the holder died, hung without its threads, or lost the
filesystem), or at once when its holder ran on this host and its pid is gone. A stale
lease is taken over: renamed aside (one taker wins the rename) and created anew.

Release. The lease is removed after the chunk's rows were flushed: `claim` releases
every lease when the engine call it wraps has returned, and the engine flushes its
buffer on the way out, after an error or Ctrl-C too. A job killed with SIGKILL leaves
its leases behind; they turn stale, and the next job that claims chunks of the
distribution removes every stale lease of it (`Leases.sweep`), those of the chunks the
killed job had flushed too.

Exactness does not depend on leases. Rows are keyed by (run, step, operator, index), a
sample's row is a function of that key and B, and the warehouse views keep the first
stored row of a key, so even a doubly computed chunk (possible only when a lease was
judged stale wrongly, e.g. clocks or a filesystem more than `stale_after` apart) shows
each index once with the same value. Leases save the work; they do not define the result.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from retland.purd.chunks import chunk_complete

LEASE_DIR = "leases"
STALE_AFTER = 600.0  # seconds without a heartbeat after which a lease is taken over


def distribution_key(run_id: str, step: int, operator_id: str) -> str:
    """The folder name of a distribution's leases (operator ids hold [ ] = , characters)."""
    return hashlib.sha1(f"{run_id}\0{int(step)}\0{operator_id}".encode()).hexdigest()[:20]


def lease_path(root: Path, run_id: str, step: int, operator_id: str, batch_size: int, chunk: int) -> Path:
    return Path(root) / LEASE_DIR / distribution_key(run_id, step, operator_id) / f"B{int(batch_size)}-chunk{int(chunk)}.lease"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


@dataclass
class LeaseInfo:
    """What a lease file says about its holder, and how old its last heartbeat is."""

    path: Path
    run_id: str
    step: int
    operator_id: str
    batch_size: int
    chunk: int
    host: str
    pid: int
    job: str | None
    started: float
    token: str
    age: float  # seconds since the holder last touched the file

    @property
    def holder(self) -> str:
        return f"{self.host}:{self.pid}" + (f" (job {self.job})" if self.job else "")

    def stale(self, stale_after: float) -> bool:
        if self.age > stale_after:
            return True
        return self.host == socket.gethostname() and not _pid_alive(self.pid)


def read_lease(path: Path) -> LeaseInfo | None:
    """The lease at `path`, or None when it vanished (released) or is unreadable
    (being written: O_EXCL creates the file before its JSON is in it)."""
    try:
        text = path.read_text()
        st = path.stat()
        doc = json.loads(text)
        return LeaseInfo(path, doc["run_id"], int(doc["step"]), doc["operator_id"], int(doc["batch_size"]),
                         int(doc["chunk"]), doc["host"], int(doc["pid"]), doc.get("job"), float(doc["started"]),
                         doc["token"], max(0.0, time.time() - st.st_mtime))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def live_leases(root: Path, stale_after: float = STALE_AFTER) -> list[LeaseInfo]:
    """Every live lease under the warehouse (reads only)."""
    base = Path(root) / LEASE_DIR
    if not base.is_dir():
        return []
    out = []
    for path in sorted(base.glob("*/*.lease")):
        info = read_lease(path)
        if info is not None and not info.stale(stale_after):
            out.append(info)
    return out


def _job_id() -> str | None:
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env.get('SLURM_ARRAY_TASK_ID', '')}"
    return env.get("SLURM_JOB_ID") or None


@dataclass
class Leases:
    """The leases one job holds, with the heartbeat that keeps them live."""

    root: Path
    stale_after: float = STALE_AFTER
    held: dict[Path, str] = field(default_factory=dict)  # path -> our token
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _body(self, run_id, step, operator_id, batch_size, chunk) -> tuple[str, str]:
        token = uuid.uuid4().hex
        doc = {"run_id": run_id, "step": int(step), "operator_id": operator_id, "batch_size": int(batch_size),
               "chunk": int(chunk), "host": socket.gethostname(), "pid": os.getpid(), "job": _job_id(),
               "started": time.time(), "token": token}
        return json.dumps(doc), token

    def _create(self, path: Path, body: str) -> bool:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        return True

    def acquire(self, run_id: str, step: int, operator_id: str, batch_size: int, chunk: int) -> LeaseInfo | None:
        """Take the lease of one chunk: None when taken (now ours), else the live
        lease of its holder."""
        path = lease_path(self.root, run_id, step, operator_id, batch_size, chunk)
        path.parent.mkdir(parents=True, exist_ok=True)
        body, token = self._body(run_id, step, operator_id, batch_size, chunk)
        for _ in range(3):
            if self._create(path, body):
                with self._lock:
                    self.held[path] = token
                return None
            info = read_lease(path)
            if info is None:
                # Released meanwhile, or its holder is between create and write: a
                # file younger than a second is a holder still writing.
                try:
                    if time.time() - path.stat().st_mtime < 1.0:
                        time.sleep(0.2)
                except FileNotFoundError:
                    pass
                info = read_lease(path)
                if info is None and path.exists():
                    try:  # an empty or broken lease older than a second: its writer died
                        if time.time() - path.stat().st_mtime >= 1.0:
                            self._break(path, None)
                    except FileNotFoundError:
                        pass
                continue
            if info.token in self.held.values():
                return None
            if not info.stale(self.stale_after):
                return info
            self._break(path, info.token)
        info = read_lease(path)
        return info if info is not None else read_lease(path)

    def _break(self, path: Path, token: str | None) -> None:
        """Move a stale lease aside; of several takers only one rename succeeds. If the
        file renamed was not the stale one (renewed meanwhile), it is put back."""
        aside = path.with_name(f".{path.name}.stale-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return
        moved = read_lease(aside)
        if token is not None and moved is not None and moved.token != token:
            with contextlib.suppress(OSError):
                os.link(aside, path)  # fails if someone created a new lease meanwhile
        with contextlib.suppress(OSError):
            aside.unlink()

    def release(self, paths=None) -> None:
        """Remove our leases (those still ours: a lease taken over as stale is the new
        holder's)."""
        with self._lock:
            items = [(p, t) for p, t in self.held.items() if paths is None or p in paths]
            for p, _ in items:
                self.held.pop(p, None)
        for path, token in items:
            info = read_lease(path)
            if info is not None and info.token == token:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # the distribution's folder, once empty

    def sweep(self, run_id: str, step: int, operator_id: str) -> int:
        """Remove the stale leases of one distribution (any chunk, any chunk size); how
        many. A job killed (SIGKILL, scancel) after it flushed some chunks leaves their
        leases behind, and no later job plans those complete chunks again: they would
        stay forever. Breaking a stale lease is what taking it over does anyway."""
        folder = lease_path(self.root, run_id, step, operator_id, 0, 0).parent
        if not folder.is_dir():
            return 0
        swept = 0
        for path in sorted(folder.glob("*.lease")):
            info = read_lease(path)
            if info is not None and info.token not in self.held.values() and info.stale(self.stale_after):
                self._break(path, info.token)
                swept += 1
        return swept  # the folder stays: this job is about to lease chunks in it

    def touch(self) -> None:
        with self._lock:
            paths = list(self.held)
        for path in paths:
            with contextlib.suppress(OSError):
                os.utime(path)

    @contextlib.contextmanager
    def heartbeat(self) -> Iterator[None]:
        """Touch the held leases every stale_after / 4 seconds while the block runs."""
        stop = threading.Event()

        def beat():
            while not stop.wait(max(0.05, self.stale_after / 4)):
                self.touch()

        thread = threading.Thread(target=beat, name="retland-lease-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


@contextlib.contextmanager
def claim(wh, plan, leases: Leases | None, refresh) -> Iterator[tuple[object, list[LeaseInfo]]]:
    """Yield (the plan restricted to the chunks this job now leases, the live leases of
    the chunks left to other jobs); release every lease on the way out.

    refresh(plan) -> indices of the distribution stored now: read after the leases are
    taken, so a chunk another job flushed since the plan was made is not computed again
    (its holder flushed before it released). Without `leases` the plan is unchanged."""
    if leases is None or not plan.todo:
        yield plan, []
        return
    oid = plan.spec.operator_id

    def path(k):
        return lease_path(leases.root, plan.run_id, plan.step, oid, plan.batch_size, k)

    mine, busy = [], []
    try:
        leases.sweep(plan.run_id, plan.step, oid)  # a killed job's leases, of chunks it flushed or not
        for k in plan.todo:
            holder = leases.acquire(plan.run_id, plan.step, oid, plan.batch_size, k)
            (busy.append(holder) if holder is not None else mine.append(k))
        present = set(refresh(plan)) if mine else set(plan.present)
        todo = [k for k in mine if not chunk_complete(k, plan.batch_size, plan.n, present)]
        leases.release([path(k) for k in mine if k not in todo])  # flushed by another job meanwhile
        with leases.heartbeat():
            yield dataclasses.replace(plan, todo=todo, present=present), busy
    finally:
        leases.release([path(k) for k in mine])
