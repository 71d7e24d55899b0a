"""Packed chunks: several distributions' chunks in one compiled chunk program.

A chunk of a distribution holds B samples (`retland.purd.engine`); an accelerator wants
wider programs than one distribution of N = 1000 fills (4096 lanes, BENCHMARKS.md
"Scale"). A packed chunk is m = W // B chunks (slots) of distributions that share one
program, computed by `engine.packed_chunk_function` as one vmapped program of m·B lanes:
slot s carries its own distribution's operator state and start state, and its lanes the
update indices of that distribution's chunk, so a sample's key stays
fold_in(operator key, index) and its row stays one row per (distribution, index) with the
distribution's chunk size B. Nothing about a distribution's chunking changes: status,
leases and resumption count its chunks as before.

Which distributions share a program (`program_keys`): the chunk program built from the run's
stored config (algorithm, agent config, env, backend, variant) and the operator without its
start row, and the chunk size B. Distributions that differ in any of these are packed in
separate groups (split, never refused); a group whose B leaves room for one slot only
(m = 1) is not packed and runs today's unpacked program.

The layout (`layout`) is a function of the job alone: per group in order of first
appearance, the chunks of its distributions (done or not) in job order, cut into packed
chunks of m consecutive chunks; the last may have fewer, its free slots repeat its first
chunk (computed, discarded). Shards take contiguous ranges of the layout's items, and a
packed chunk is always computed whole with the same inputs in the same slots, whichever
of its rows are still missing, so a job killed and resumed (or split into shards) writes
rows bit-identical to an uninterrupted one, on one platform. A different packing (another
--pack, another selection of distributions) computes a distribution's missing rows in other
lanes of another program: the same samples, statistically identical, not bit for bit.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Sequence

import jax

from retland.purd.engine import SamplingError

# --pack auto: the lanes of a packed chunk on an accelerator (the auto chunk size there,
# `sampling.AUTO_BATCH_ACCELERATOR`); off on CPU, where throughput is flat in B
# (BENCHMARKS.md "Packed chunks": packed vs unpacked on CPU). Running them: `purd.packrun`.
PACK_WIDTH_ACCELERATOR = 4096


def resolve_pack(pack: int | str | None, platform: str | None = None) -> int:
    """Lanes per packed chunk W (0: packing off): 'auto' is 4096 on an accelerator and off
    on CPU; 'off' or 0 is off; a whole number W packs W // B chunks of B."""
    if pack in (None, "auto"):
        platform = platform or jax.default_backend()
        return 0 if platform == "cpu" else PACK_WIDTH_ACCELERATOR
    if pack == "off":
        return 0
    try:
        width = int(pack)
    except (TypeError, ValueError):
        raise SamplingError(f"--pack {pack!r}: give auto, off, or the lanes per packed chunk (a whole number >= 1)") from None
    if width < 0 or isinstance(pack, bool):
        raise SamplingError(f"--pack {pack!r}: give auto, off, or the lanes per packed chunk (a whole number >= 1)")
    return width


def program_keys(wh, distributions: Sequence[tuple], sizes: Sequence[int]) -> list:
    """Per distribution (run_id, step, spec), the key of the program its chunks run: equal
    keys may share a packed chunk. From the runs table (no checkpoint is loaded). A run
    whose program cannot be built from its record gets a key of its own (not packed)."""
    from retland.agents import get_agent
    from retland.purd.engine import AgentPolicy, program_for
    from retland.train.checkpoints import run_config
    from retland.warehouse.sqlgen import in_list

    ids = sorted({d[0] for d in distributions})
    records = {}
    if ids:
        cond, params = in_list("run_id", ids)
        records = {r["run_id"]: r for r in wh.records(f"SELECT * FROM runs WHERE {cond}", params)}
    programs: dict = {}
    keys = []
    for i, ((run_id, _step, spec), b) in enumerate(zip(distributions, sizes)):
        record = records.get(run_id)
        try:
            if run_id not in programs:
                cfg = run_config(record)
                agent = get_agent(record["algo"], cfg)
                programs[run_id] = (agent, record["env"], record["backend"], cfg.variant, _shapes_key(cfg))
            agent, env, backend, variant, shapes = programs[run_id]
            bare = spec.at_start(None)
            program = program_for(bare, env, backend, AgentPolicy(agent), agent, variant=variant)
            keys.append((program, shapes, bare.operator_id, int(b)))
        except Exception:  # noqa: BLE001 - unbuildable here: the run is sampled unpacked
            keys.append(("alone", i))
    return keys


def _shapes_key(cfg) -> str:
    """What besides the program may fix the operator state's shapes (a replay buffer's
    capacity, stored states): the run's whole config but its seed, which runs of one
    training job differ in."""
    try:
        data = json.loads(cfg.model_dump_json())
    except Exception:  # noqa: BLE001 - not a pydantic model: its repr
        return repr(cfg)
    data.pop("seed", None)
    return json.dumps(data, sort_keys=True, default=str)


@dataclass(frozen=True)
class PackedChunk:
    """Chunk `number` of packing group `group`: m slots; `units` the (plan position,
    chunk) of each filled slot, in slot order (the last packed chunk of a group may fill
    fewer)."""

    group: int
    number: int
    slots: int
    units: tuple[tuple[int, int], ...]

    def __str__(self) -> str:
        return f"packed chunk {self.number} of group {self.group}"


def layout(plans: Sequence) -> list:
    """The job's work items in order: (plan position, chunk) for a distribution that is
    not packed (plan.slots == 1), a `PackedChunk` for the others (see the module doc).
    Each plan gives group, slots, batch_size, n_chunks and first_chunk; every chunk of
    [first_chunk, n_chunks) is an item's, done or not. With no packed plan this is the
    unpacked job's list of (distribution, chunk)."""
    items: list = []
    seen: set[int] = set()
    for d, p in enumerate(plans):
        if p.slots <= 1:
            items += [(d, k) for k in range(p.first_chunk, p.n_chunks)]
            continue
        if p.group in seen:
            continue
        seen.add(p.group)
        units = [(e, k) for e, q in enumerate(plans) if q.slots > 1 and q.group == p.group
                 for k in range(q.first_chunk, q.n_chunks)]
        items += [PackedChunk(p.group, c, p.slots, tuple(units[i:i + p.slots]))
                  for c, i in enumerate(range(0, len(units), p.slots))]
    return items


def item_units(item) -> tuple[tuple[int, int], ...]:
    return item.units if isinstance(item, PackedChunk) else (item,)
