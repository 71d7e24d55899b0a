"""Checkpoints on disk: one orbax directory per (run, step) and one replay buffer per run.

Layout under the warehouse root (paths in `checkpoints.artifact_path` are relative to it):

    artifacts/runs/<run_id>/checkpoints/step_<step:010d>/    orbax checkpoint of the seed's
                                                             TrainState (networks, targets,
                                                             temperature, optimizer states,
                                                             update counter, env state(s),
                                                             PRNG key), as a nested dict
    artifacts/runs/<run_id>/replay/rows_<a:010d>_<b:010d>/   TD3/SAC replay rows [a, b):
                                                             obs.npy action.npy reward.npy
                                                             next_obs.npy mask.npy, and with
                                                             store_states the simulator state
                                                             of each row: state.<leaf path>.npy

The replay buffer only grows (no wrap-around), so it is stored once per run as
append-only segments: each checkpoint writes the rows added since the previous one into
a temporary folder renamed into place (atomic). A checkpoint at replay size n reads the
prefix [0, n) from the segments; nothing written later can invalidate it, so a run killed
at any moment leaves every recorded checkpoint usable.

A checkpoint is *published* by its `checkpoints` row, appended after every seed's files
are in place. A job killed before its first row leaves an *orphan*: `runs` rows with no
checkpoint, and maybe an orbax temporary folder (`step_<step>.orbax-checkpoint-tmp-…`),
a replay temporary folder (`.tmp-rows_…`) or finished but unpublished folders.
`orphan_runs` lists them; `retland train --resume JOB` restarts such a job from step 0
after `discard_orphan_artifacts`, which never touches a run that has a checkpoint row.

A run added with `retland.add_policy` (runs.source = 'added') has one checkpoint whose
orbax folder holds the user's policy params instead of a TrainState (same layout, no
replay); its config is a `retland.agents.policy.PolicyConfig`, which records the
params' tree structure to restore them onto.

The state is saved as a nested dict keyed by its pytree path (`agent/actor_params/...`),
readable without retland; restoring maps it back onto the structure that `init` of the
run's config builds, so a checkpoint that does not fit its config (another env's shapes)
is refused with the offending field named.

Loading is lazy where it can be. `load_checkpoint` restores the agent's part of the state
(networks, targets, optimizer states: `Checkpoint.agent_state`) onto the structure of the
algorithm's `init` for the env's observation and action sizes, which it takes from the
program store (`retland.core.envs.known_env_dims`) when that holds them, so sampling a
checkpoint builds no env. The whole TrainState (`Checkpoint.state`, whose env state has
brax's structure and so needs the env built) and the replay prefix (`Checkpoint.replay`)
are restored on first use; the replay's segments are checked at load.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jax
import numpy as np

from retland.agents.policy import PolicyConfig, is_policy_config
from retland.config.registry import REPLAY_ALGOS
from retland.core.replay import Transition
from retland.train.config import TrainConfig
from retland.agents import agent_module
from retland.train.program import abstract_seed_state, replay_capacity
from retland.warehouse import Warehouse

SEGMENT = re.compile(r"^rows_(\d{10})_(\d{10})$")
ORBAX_TMP = ".orbax-checkpoint-tmp"  # orbax writes <final name><ORBAX_TMP>-<timestamp>, then renames
REPLAY_TMP = ".tmp-"  # save_replay's temporary folders


@dataclass(frozen=True)
class Checkpoint:
    """One seed's checkpoint. `agent_state` is restored at load; `state` and `replay` on
    first use (see the module doc)."""

    run_id: str
    step: int
    algo: str
    env: str
    backend: str
    seed: int
    config: TrainConfig | PolicyConfig  # PolicyConfig for an added run
    agent_state: Any  # TrainState.agent of this seed (networks, targets, optimizers; numpy leaves); an added run's params
    replay_size: int
    artifact_path: str
    eval_return: float | None = None
    _stored: Any = field(default=None, repr=False, compare=False)  # the restored nested dict
    _warehouse: Any = field(default=None, repr=False, compare=False)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def variant(self) -> str:
        """The task rules the run was trained with (see retland.core.envs.VARIANTS)."""
        return self.config.variant

    @property
    def state(self):
        """retland.agents.base.TrainState of this seed (numpy leaves), its env state
        included; an added run's params. Restored on first use: it builds the env (brax's
        env state has the env's structure). Its `agent` leaves are `agent_state`'s."""
        if "state" not in self._cache:
            if isinstance(self.config, PolicyConfig):
                state = self.agent_state
            else:
                target, _ = abstract_seed_state(self.config)
                state = from_nested(self._stored, target, where=f"checkpoint {self.run_id}@{self.step}")
            self._cache["state"] = state
        return self._cache["state"]

    @property
    def replay(self) -> Transition | None:
        """[capacity, ...] arrays (rows >= replay_size are zero): TD3/SAC's buffer, BC's
        relabelled dataset; None for PPO and added runs. Read on first use."""
        if "replay" not in self._cache:
            cfg = self.config
            off_policy = not isinstance(cfg, PolicyConfig) and cfg.algo in REPLAY_ALGOS
            self._cache["replay"] = (load_replay(self._warehouse, self.run_id, self.replay_size, replay_capacity(cfg))
                                     if off_policy else None)
        return self._cache["replay"]

    @property
    def replay_states(self):
        """[capacity, ...] simulator states of the replay rows (rows >= replay_size are
        zero) of a store_states run, structured as the env's pipeline_state; else None."""
        if "replay_states" not in self._cache:
            cfg = self.config
            value = None
            if not isinstance(cfg, PolicyConfig) and getattr(cfg, "store_states", False):
                target, _ = abstract_seed_state(cfg)
                target = target.env_state.pipeline_state
                capacity = replay_capacity(cfg)
                rows = np.arange(self.replay_size)
                got = load_state_rows(self._warehouse, self.run_id, self.replay_size, rows, target)
                value = jax.tree.map(lambda x: np.concatenate(
                    [x, np.zeros((capacity - len(rows), *x.shape[1:]), x.dtype)]), got)
            self._cache["replay_states"] = value
        return self._cache["replay_states"]


def _open(wh_or_root):
    if isinstance(wh_or_root, Warehouse):
        return wh_or_root
    return Warehouse.open(wh_or_root, create=False)


def run_dir(wh, run_id: str) -> Path:
    return wh.artifact_dir("runs", run_id)


# ---- pytree <-> nested dict -----------------------------------------------------------

def _key_name(k) -> str:
    for attr in ("name", "key", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    raise TypeError(f"unsupported pytree key {k!r}")


def _paths(tree) -> list[tuple[tuple[str, ...], Any]]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(tuple(_key_name(k) for k in path), leaf) for path, leaf in leaves]


def to_nested(tree) -> dict:
    out: dict = {}
    for path, leaf in _paths(tree):
        node = out
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = np.asarray(leaf)
    return out


def from_nested(nested: dict, target, where: str = "checkpoint"):
    """Rebuild `target`'s structure (arrays or ShapeDtypeStructs) from a nested dict,
    checking every leaf's shape and dtype."""
    leaves = []
    for path, ref in _paths(target):
        node = nested
        try:
            for k in path:
                node = node[k]
        except (KeyError, TypeError):
            raise ValueError(f"{where}: field {'/'.join(path)} is missing") from None
        arr = np.asarray(node)
        if arr.shape != tuple(ref.shape) or arr.dtype != ref.dtype:
            raise ValueError(
                f"{where}: field {'/'.join(path)} has shape {arr.shape} {arr.dtype}, but the "
                f"run's config (env, network sizes) implies {tuple(ref.shape)} {ref.dtype}")
        leaves.append(arr)
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(target), leaves)


# ---- saving ---------------------------------------------------------------------------

def _checkpointer():
    import orbax.checkpoint as ocp  # orbax (with tensorstore) takes seconds to import; only saves need it

    return ocp.PyTreeCheckpointer()


def save_state(wh, run_id: str, step: int, state) -> str:
    """Write one seed's TrainState (host arrays); returns the path relative to the root."""
    path = run_dir(wh, run_id) / "checkpoints" / f"step_{step:010d}"
    if path.exists():  # a resumed run re-reaching a step: same deterministic state
        shutil.rmtree(path)
    _checkpointer().save(path.resolve(), to_nested(state))
    return wh.relative(path)


def _segments(rdir: Path) -> list[tuple[int, int, Path]]:
    if not rdir.is_dir():
        return []
    out = []
    for p in rdir.iterdir():
        m = SEGMENT.match(p.name)
        if m:
            out.append((int(m.group(1)), int(m.group(2)), p))
    return sorted(out)


STATE_FILE = "state.{}.npy"  # one file per leaf of the rows' pipeline_state, named by its path


def state_file(path: tuple[str, ...]) -> str:
    return STATE_FILE.format(".".join(path))


def save_replay(wh, run_id: str, data: Transition, size: int, states=None) -> None:
    """Make rows [0, size) of this seed's buffer durable (append-only, atomic); `states`
    (a pipeline_state pytree of [capacity, ...] leaves, store_states runs) goes into
    the same segments, one file per leaf."""
    rdir = run_dir(wh, run_id) / "replay"
    rdir.mkdir(parents=True, exist_ok=True)
    have = max((b for _, b, _ in _segments(rdir)), default=0)
    if size <= have:  # already stored (rows are deterministic functions of the run)
        return
    final = rdir / f"rows_{have:010d}_{size:010d}"
    tmp = rdir / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for name, arr in zip(Transition._fields, data):
        np.save(tmp / f"{name}.npy", np.asarray(arr[have:size]))
    if states is not None:
        for path, arr in _paths(states):
            np.save(tmp / state_file(path), np.asarray(arr[have:size]))
    os.replace(tmp, final)


def replay_segments(wh, run_id: str, size: int) -> list[tuple[int, int, Path]]:
    """The segments (first row, end row, folder) holding rows [0, size) of the run's
    buffer; ValueError if they do not cover them. Lists folders, reads no rows."""
    out = []
    end = 0
    for a, b, p in _segments(_run_artifacts(wh, run_id) / "replay"):
        if end >= size:
            break
        if a != end:
            raise ValueError(f"replay of {run_id}: segments are not contiguous at row {end}")
        out.append((a, min(b, size), p))
        end = min(b, size)
    if end < size:
        raise ValueError(f"replay of {run_id}: only {end} rows stored, checkpoint needs {size}")
    return out


def load_replay(wh, run_id: str, size: int, capacity: int) -> Transition:
    """Rows [0, size) from the run's segments, zero-padded to [capacity, ...]."""
    parts: dict[str, list[np.ndarray]] = {f: [] for f in Transition._fields}
    for a, end, p in replay_segments(wh, run_id, size):
        for f in Transition._fields:
            parts[f].append(np.load(p / f"{f}.npy", mmap_mode="r")[:end - a])
    out = []
    for f in Transition._fields:
        rows = np.concatenate(parts[f]) if parts[f] else None
        shape = rows.shape[1:] if rows is not None else ()
        buf = np.zeros((capacity, *shape), np.float32)
        if rows is not None:
            buf[:size] = rows
        out.append(buf)
    return Transition(*out)


def load_replay_rows(wh, run_id: str, size: int, rows, field: str) -> np.ndarray:
    """Rows `rows` (each < size) of one replay field (obs, action, …), [len(rows), ...],
    read memory-mapped: only those rows."""
    rows = np.asarray(rows, np.int64)
    out = None
    for a, end, p in replay_segments(wh, run_id, size):
        arr = np.load(p / f"{field}.npy", mmap_mode="r")
        if out is None:
            out = np.zeros((len(rows), *arr.shape[1:]), arr.dtype)
        inside = (rows >= a) & (rows < end)
        if inside.any():
            out[inside] = arr[rows[inside] - a]
    return out


def stored_states(wh, run_id: str, size: int) -> bool:
    """Whether every replay segment holding rows [0, size) also holds their simulator
    states (a store_states run); False for runs trained without them."""
    segments = replay_segments(wh, run_id, size)
    return bool(segments) and all(any(f.name.startswith("state.") for f in p.iterdir()) for _, _, p in segments)


def load_state_rows(wh, run_id: str, size: int, rows, target):
    """The simulator states of replay rows `rows` (each < size), as `target`'s structure
    (a pipeline_state's ShapeDtypeStructs) with a leading [len(rows)] axis. Reads only
    those rows (memory-mapped)."""
    rows = np.asarray(rows, np.int64)
    leaves = []
    segments = replay_segments(wh, run_id, size)
    for path, ref in _paths(target):
        out = np.zeros((len(rows), *ref.shape), ref.dtype)
        for a, end, p in segments:
            inside = (rows >= a) & (rows < end)
            if inside.any():
                f = p / state_file(path)
                if not f.is_file():
                    raise ValueError(f"replay of {run_id}: rows [{a}, {end}) hold no simulator state {'.'.join(path)}")
                arr = np.load(f, mmap_mode="r")
                if arr.shape[1:] != tuple(ref.shape) or arr.dtype != ref.dtype:
                    raise ValueError(f"replay of {run_id}: state {'.'.join(path)} has shape {arr.shape[1:]} "
                                     f"{arr.dtype}, the task's is {tuple(ref.shape)} {ref.dtype}")
                out[inside] = arr[rows[inside] - a]
        leaves.append(out)
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(target), leaves)


# ---- loading --------------------------------------------------------------------------

def run_record(wh_or_root, run_id: str) -> dict:
    wh = _open(wh_or_root)
    rows = wh.records("SELECT * FROM runs WHERE run_id = ?", [run_id])
    if not rows:
        raise ValueError(f"no run {run_id!r} in the warehouse at {wh.root}")
    return rows[0]


def run_config(record: dict) -> TrainConfig | PolicyConfig:
    """The config model of a `runs` row: a TrainConfig, or an added run's PolicyConfig."""
    data = json.loads(record["config"])
    if is_policy_config(data):
        return PolicyConfig.from_stored(data)
    data.pop("job_id", None)
    data.pop("seed_index", None)
    return TrainConfig.from_stored(data)


def list_checkpoints(wh_or_root, run_id: str) -> list[int]:
    """Env steps of the run's recorded checkpoints, ascending."""
    wh = _open(wh_or_root)
    rows = wh.records("SELECT step FROM checkpoints WHERE run_id = ? ORDER BY step", [run_id])
    return [int(r["step"]) for r in rows]


def abstract_agent_state(cfg: TrainConfig, dims: tuple[int, int] | None = None):
    """ShapeDtypeStruct tree of a TrainState's `agent` for a run with this config: the
    algorithm's `init` for the env's (observation size, action size), shaped without
    running it (and kept in the program store: `programs.stored_shapes`). dims default
    to `known_env_dims` (no env built when the program store holds them)."""
    from retland.core.envs import known_env_dims

    from retland.core.programs import stored_shapes

    obs_size, action_size = dims if dims is not None else known_env_dims(cfg.env, cfg.backend, variant=cfg.variant)
    init = agent_module(cfg.algo).init
    return stored_shapes(  # tracing init takes ~0.15 s; the store keeps its shapes
        ("retland.train.checkpoints.abstract_agent_state", cfg.algo, cfg.agent, obs_size, action_size),
        lambda: jax.eval_shape(lambda key: init(cfg.agent, key, obs_size, action_size), jax.random.PRNGKey(0)))


def load_checkpoint(wh_or_root, run_id: str, step: int, *, env: str | None = None) -> Checkpoint:
    """The checkpoint of `run_id` at env step `step`: its agent state restored, its whole
    TrainState and replay prefix on first use (see the module doc).

    env: if given, refuse (ValueError) a checkpoint trained on another env."""
    wh = _open(wh_or_root)
    record = run_record(wh, run_id)
    if env is not None and record["env"] != env:
        raise ValueError(f"run {run_id!r} was trained on {record['env']!r}, not {env!r}")
    rows = wh.records("SELECT * FROM checkpoints WHERE run_id = ? AND step = ?", [run_id, int(step)])
    if not rows:
        steps = list_checkpoints(wh, run_id)
        raise ValueError(f"run {run_id!r} has no checkpoint at step {step}; it has "
                         f"{', '.join(map(str, steps)) if steps else 'none'}")
    row = rows[0]
    if row["artifact_path"] is None:
        raise ValueError(f"checkpoint {run_id}@{step} has no stored parameters (its returns were imported)")
    cfg = run_config(record)
    path = wh.root / row["artifact_path"]
    if not path.is_dir():
        raise ValueError(f"checkpoint {run_id}@{step}: artifact {path} is missing")
    nested = _checkpointer().restore(path.resolve())
    where = f"checkpoint {run_id}@{step}"
    if isinstance(cfg, PolicyConfig):
        agent_state = from_nested(nested, cfg.params_target(), where=where)
    else:
        agent_state = from_nested(nested, {"agent": abstract_agent_state(cfg)}, where=where)["agent"]
    size = int(row["replay_size"] or 0)
    if not isinstance(cfg, PolicyConfig) and cfg.algo in REPLAY_ALGOS:
        replay_segments(wh, run_id, size)  # refuse a missing prefix now; rows are read on first use
    return Checkpoint(
        run_id=run_id, step=int(step), algo=record["algo"], env=record["env"],
        backend=record["backend"], seed=int(record["seed"]), config=cfg, agent_state=agent_state,
        replay_size=size, artifact_path=row["artifact_path"], eval_return=row.get("eval_return"),
        _stored=nested, _warehouse=wh)


# ---- interrupted saves and orphan runs ------------------------------------------------

def _run_artifacts(wh, run_id: str) -> Path:
    """artifacts/runs/<run_id> without creating it (listing must not write)."""
    return wh.root / "artifacts" / "runs" / run_id


def temp_folders(wh, run_id: str) -> list[Path]:
    """The run's folders left by interrupted saves: orbax temporaries under checkpoints/
    and save_replay's temporaries under replay/. No checkpoint row ever points at one."""
    root = _run_artifacts(wh, run_id)
    out = []
    for sub, is_tmp in (("checkpoints", lambda n: ORBAX_TMP in n), ("replay", lambda n: n.startswith(REPLAY_TMP))):
        d = root / sub
        if d.is_dir():
            out += sorted(p for p in d.iterdir() if is_tmp(p.name))
    return out


def clear_temp_folders(wh, run_id: str) -> list[str]:
    """Remove the run's interrupted-save folders (`temp_folders`); returns their paths
    relative to the root. Published checkpoints and replay segments are left alone."""
    removed = []
    for p in temp_folders(wh, run_id):
        removed.append(wh.relative(p))
        shutil.rmtree(p, ignore_errors=True)
    return removed


@dataclass(frozen=True)
class OrphanRun:
    """A trained (or added) run with a `runs` row but no `checkpoints` row: its job was
    killed before publishing its first checkpoint (or is still running towards it).

    temp_paths: interrupted saves (orbax and replay temporary folders); unpublished_paths:
    finished step or replay folders that no checkpoint row refers to. Both relative to
    the warehouse root."""
    run_id: str
    job_id: str
    created_at: datetime
    temp_paths: tuple[str, ...]
    unpublished_paths: tuple[str, ...]


def orphan_runs(wh_or_root, job_id: str | None = None) -> list[OrphanRun]:
    """Trained and added runs that have no checkpoint (of one job if `job_id`), by run id, with
    the folders they left under artifacts/. Reads only. A job still before its first
    checkpoint looks the same: compare `created_at` with the job's expected pace."""
    wh = _open(wh_or_root)
    sql = ("SELECT r.run_id, r.config, r.created_at FROM runs r WHERE r.source IN ('trained', 'added') AND NOT EXISTS "
           "(SELECT 1 FROM checkpoints c WHERE c.run_id = r.run_id)")
    params: list = []
    if job_id is not None:
        sql += " AND starts_with(r.run_id, ?)"
        params.append(job_id + "-s")
    out = []
    for row in wh.records(sql + " ORDER BY r.run_id", params):
        rid = row["run_id"]
        try:
            job = json.loads(row["config"] or "{}").get("job_id")
        except ValueError:
            job = None
        job = job or re.sub(r"-s\d+$", "", rid)
        if job_id is not None and job != job_id:
            continue
        temp = temp_folders(wh, rid)
        root = _run_artifacts(wh, rid)
        rest = [p for sub in ("checkpoints", "replay") if (root / sub).is_dir()
                for p in sorted((root / sub).iterdir()) if p not in temp]
        out.append(OrphanRun(rid, job, row["created_at"], tuple(wh.relative(p) for p in temp),
                             tuple(wh.relative(p) for p in rest)))
    return out


def discard_orphan_artifacts(wh, run_id: str) -> list[str]:
    """Remove artifacts/runs/<run_id> of a run that has no checkpoint row, so a restart
    from step 0 writes every file afresh (nothing of the killed attempt is reused).
    Refuses (ValueError) a run with a published checkpoint. Returns the removed paths
    relative to the root."""
    steps = list_checkpoints(wh, run_id)
    if steps:
        raise ValueError(f"run {run_id!r} has checkpoints at {', '.join(map(str, steps))}: "
                         "its artifacts are published, not orphaned")
    root = _run_artifacts(wh, run_id)
    if not root.is_dir():
        return []
    removed = [wh.relative(p) for sub in ("checkpoints", "replay") if (root / sub).is_dir()
               for p in sorted((root / sub).iterdir())]
    shutil.rmtree(root)
    return removed
