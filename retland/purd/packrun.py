"""Running packed chunks (`retland.purd.packing` says what they are): load the slots'
checkpoints, lease their distribution chunks, compute each packed chunk whole and store
the rows of the chunks this job holds."""
from __future__ import annotations

import collections
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import jax
import numpy as np
import pyarrow as pa

from retland.purd.chunks import chunk_complete
from retland.purd.engine import (
    FLUSH_SECONDS,
    RESULT_COLUMNS,
    SamplingError,
    _chunk_rows,
    _timing_base,
    check_chunk,
    chunk_fits,
    chunk_indices,
    packed_chunk_function,
    reference_start,
    resolve_devices,
    store_chunks,
)
from retland.purd.packing import PackedChunk, layout
from retland.purd.sampling import SampleResult, checkpoint_program, operator_rows, stored_indices
from retland.warehouse.tables import TABLES


def run_packed(wh, plans: Sequence, *, load=None, leases=None, devices=None,
               progress: Callable[[int], None] | None = None, flush_seconds: float = FLUSH_SECONDS,
               in_flight: int = 2) -> dict[int, object]:
    """Compute the packed chunks of `plans` (a job's plans from `sampling.plan_job` with
    packing) that hold a chunk of some plan's todo, and append their new rows to
    post_update_returns. Returns {plan position: SampleResult} for every packed plan with
    work. load(wh, run_id, step) loads a checkpoint (default `load_checkpoint`); with
    `leases`, each distribution chunk is leased before its packed chunk runs and left to
    a live holder (its lanes are computed and discarded: the packed chunk's inputs stay
    fixed); the leases are released after the rows are flushed."""
    from retland.purd.leases import lease_path
    from retland.train.checkpoints import load_checkpoint

    load = load or load_checkpoint
    todo = {d: set(p.todo) for d, p in enumerate(plans) if p.slots > 1 and p.todo}
    results = {d: SampleResult(plans[d].run_id, plans[d].step, plans[d].spec.operator_id, plans[d].n,
                               plans[d].batch_size, plans[d].n_chunks) for d in todo}
    if not todo:
        return results
    chunks = [c for c in layout(plans) if isinstance(c, PackedChunk) and any(k in todo.get(d, ()) for d, k in c.units)]
    devs = resolve_devices(devices)
    present = {d: set(plans[d].present) for d in todo}
    specs = {plans[d].spec.operator_id: plans[d].spec for d in todo}
    tables = [t for spec in specs.values() if (t := operator_rows(wh, spec).get("operators")) is not None]
    first: dict = {"operators": pa.concat_tables(tables)} if tables else {}  # committed with the first rows
    wanted = [c for c in RESULT_COLUMNS if c in TABLES["post_update_returns"].schema.names]
    d0 = min(todo)
    p0 = plans[d0]
    timed = _timing_base("post_update_returns", {"run_id": p0.run_id, "step": int(p0.step),
                                                 "operator_id": p0.spec.operator_id},
                         p0.spec.horizon, p0.batch_size * p0.slots, devs)
    held: list = []
    swept: set[int] = set()
    busy: dict[int, list] = {d: [] for d in todo}
    cache: collections.OrderedDict = collections.OrderedDict()  # plan position -> (program, op_state, start)
    placed: dict = {}  # the last packed chunk's slot states, on its device

    def prepared(d):
        if d not in cache:
            p = plans[d]
            ckpt = load(wh, p.run_id, p.step)
            program, op_state = checkpoint_program(p.spec, ckpt)
            s0 = reference_start(program)
            start = s0
            if p.spec.start is not None:
                from retland.purd.starts import start_state

                start = start_state(wh, ckpt, s0, p.spec.start)
            cache[d] = (program, op_state, _real(start))
        cache.move_to_end(d)
        return cache[d]

    def claim(chunk: PackedChunk) -> list[tuple[int, int]]:
        """The units of this packed chunk this job computes now (leased, still missing)."""
        mine = [(d, k) for d, k in chunk.units if k in todo.get(d, ())]
        if leases is not None:
            got = []
            for d, k in mine:
                p = plans[d]
                if d not in swept:
                    leases.sweep(p.run_id, p.step, p.spec.operator_id)
                    swept.add(d)
                holder = leases.acquire(p.run_id, p.step, p.spec.operator_id, p.batch_size, k)
                if holder is None:
                    held.append(lease_path(leases.root, p.run_id, p.step, p.spec.operator_id, p.batch_size, k))
                    got.append((d, k))
                else:
                    busy[d].append(holder)
            for d in {d for d, _ in got}:  # rows another job flushed since the plan was made
                p = plans[d]
                present[d] = stored_indices(wh, p.run_id, p.step, p.spec.operator_id)
            mine = got
        return [(d, k) for d, k in mine if not chunk_complete(k, plans[d].batch_size, plans[d].n, present[d])]

    def launch(j: int, chunk: PackedChunk):
        units = list(chunk.units) + [chunk.units[0]] * (chunk.slots - len(chunk.units))
        needed = {d for d, _ in units}
        for d in [d for d in cache if d not in needed and len(cache) > len(needed)]:
            del cache[d]  # only the current chunk's checkpoints are held
        parts = [prepared(d) for d, _ in units]
        program = parts[0][0]
        if any(q[0] != program for q in parts):
            raise SamplingError(f"{chunk}: its distributions do not share one program (run configs differ in a "
                                "way their records do not show); rerun with --pack off")
        idx = np.stack([chunk_indices(k, plans[d].batch_size) for d, k in units])
        dev = devs[j % len(devs)]
        fn = packed_chunk_function(program)
        slots = (tuple(d for d, _ in units), j % len(devs))
        if placed.get("slots") != slots:  # consecutive packed chunks of the same distributions reuse them
            placed.clear()
            try:
                op_states = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *[q[1] for q in parts])
                starts = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *[q[2] for q in parts])
            except (ValueError, TypeError) as exc:
                raise SamplingError(f"{chunk}: its distributions' states differ in shape ({exc}); rerun with "
                                    "--pack off") from None
            placed.update(slots=slots, args=(jax.device_put(op_states, dev), jax.device_put(starts, dev),
                                             jax.device_put(plans[units[0][0]].spec.base_key, dev)))
        args = placed["args"]
        chunk_fits(fn, args, idx.size, dev, indices=idx, option="--pack")
        return fn(*args, jax.device_put(idx, dev)), idx, j % len(devs)

    def rows_of(chunk: PackedChunk, mine, out, idx, device) -> tuple[int, int, dict, int]:
        ret, disc, length, term = (np.asarray(x) for x in jax.device_get(tuple(out)))
        parts, new = [], 0
        for s, (d, k) in enumerate(chunk.units):
            if (d, k) not in mine:
                continue
            p = plans[d]
            res = _Result(k, idx[s], ret[s], disc[s], length[s], term[s], device)
            keep = p.keep(res.indices) & np.array([i not in present[d] for i in res.indices], bool)

            def columns(j, p=p):
                return {"run_id": [p.run_id] * len(j), "step": [p.step] * len(j),
                        "operator_id": [p.spec.operator_id] * len(j), "update_index": j,
                        "chunk_size": [p.batch_size] * len(j)}

            rows = _chunk_rows(res, keep, columns, wanted)
            check_chunk("post_update_returns", rows, res.indices[keep], k, p.batch_size, p.spec.horizon, p.label)
            parts.append(rows)
            new += int(keep.sum())
            results[d].chunks_computed += 1
            results[d].rows_written += int(keep.sum())
            results[d].chunk_devices = {**(results[d].chunk_devices or {}), k: device}
        rows = {name: (np.concatenate([r[name] for r in parts]) if isinstance(parts[0][name], np.ndarray)
                       else [v for r in parts for v in r[name]]) for name in parts[0]}
        return chunk.number, device, rows, new

    def computed() -> Iterator[tuple[int, int, dict, int]]:
        pending: collections.deque = collections.deque()
        j = 0
        for chunk in chunks:
            mine = claim(chunk)
            if not mine:
                continue
            out, idx, device = launch(j, chunk)
            j += 1
            pending.append((chunk, set(mine), out, idx, device))
            if len(pending) >= in_flight * len(devs):
                yield rows_of(*pending.popleft())
        while pending:
            yield rows_of(*pending.popleft())

    t0 = time.monotonic()
    ctx = leases.heartbeat() if leases is not None else _nothing()
    try:
        with ctx:
            store_chunks(wh, "post_update_returns", computed(), flush_seconds=flush_seconds, progress=progress,
                         with_first=first, timed=timed)
    finally:
        if leases is not None:
            leases.release(held)
    seconds = time.monotonic() - t0
    for d, r in results.items():
        r.seconds, r.devices, r.busy = seconds, len(devs), busy[d]
    return results


@dataclass
class _Result:
    chunk: int
    indices: np.ndarray
    ret: np.ndarray
    discounted_return: np.ndarray
    episode_length: np.ndarray
    terminated: np.ndarray
    device: int = 0


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _real(state):
    """A start state as a real pytree (a stored s0 is a `programs.StoredValue`)."""
    from retland.core.programs import StoredValue

    return state.tree() if isinstance(state, StoredValue) else state
