"""The warehouse's tables: one declared Arrow schema and key per table.

This registry is the single authority on what a row looks like. The writer validates
against it, the reader builds one DuckDB view per entry, and adding a table means adding
one `TableSpec` here.
"""
from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class TableSpec:
    name: str
    schema: pa.Schema
    key: tuple[str, ...]
    # Hive partition columns: written as folder names (col=value), not inside files.
    partition_by: tuple[str, ...] = ()
    doc: str = ""

    def __post_init__(self):
        names = set(self.schema.names)
        for col in self.key + self.partition_by:
            if col not in names:
                raise ValueError(f"table {self.name}: key/partition column {col!r} not in schema")
        for col in self.key:
            if self.schema.field(col).nullable:
                raise ValueError(f"table {self.name}: key column {col!r} must be non-nullable")


def _f(name: str, typ: pa.DataType, nullable: bool = True, doc: str = "") -> pa.Field:
    meta = {"doc": doc} if doc else None
    return pa.field(name, typ, nullable=nullable, metadata=meta)


TABLES: dict[str, TableSpec] = {}


def register(spec: TableSpec) -> TableSpec:
    TABLES[spec.name] = spec
    return spec


register(TableSpec(
    name="runs",
    doc="One row per training run (one seed of one algo on one env), trained, imported or derived.",
    key=("run_id",),
    schema=pa.schema([
        _f("run_id", pa.string(), False),
        _f("algo", pa.string(), False, "td3 | sac | ppo (or the name given on import)"),
        _f("env", pa.string(), False),
        _f("seed", pa.int32(), False),
        _f("backend", pa.string(), doc="brax physics backend; NULL when imported"),
        _f("source", pa.string(), False, "trained | imported | derived"),
        _f("parent_run_id", pa.string(), doc="for derived runs (e.g. stabilize): the source run"),
        _f("parent_step", pa.int64()),
        _f("config", pa.string(), doc="JSON of the run's config model"),
        _f("repro", pa.string(), doc="JSON: package versions, platform, devices, command"),
        _f("created_at", TS, False),
    ]),
))

register(TableSpec(
    name="checkpoints",
    doc="Checkpoints of a run, keyed by env step.",
    key=("run_id", "step"),
    schema=pa.schema([
        _f("run_id", pa.string(), False),
        _f("step", pa.int64(), False, "env steps taken when the checkpoint was saved"),
        _f("artifact_path", pa.string(), doc="orbax directory, relative to the warehouse root"),
        _f("eval_return", pa.float64(), doc="deterministic return from the reference state"),
        _f("replay_size", pa.int64(), doc="replay buffer rows valid at this checkpoint"),
        _f("created_at", TS, False),
    ]),
))

register(TableSpec(
    name="operators",
    doc="Update operators (and rollout perturbations) that define a post-update distribution.",
    key=("operator_id",),
    schema=pa.schema([
        _f("operator_id", pa.string(), False, "canonical id, e.g. td3[h=1000,seed=0]"),
        _f("kind", pa.string(), False, "td3 | sac | ppo | gaussian | action | init_state | imported"),
        _f("params", pa.string(), False, "JSON of the operator's parameters"),
        _f("created_at", TS, False),
    ]),
))

register(TableSpec(
    name="post_update_returns",
    doc="One row per post-update sample: J(U(state, key_i)) for update index i.",
    key=("run_id", "step", "operator_id", "update_index"),
    partition_by=("run_id",),
    schema=pa.schema([
        _f("run_id", pa.string(), False),
        _f("step", pa.int64(), False),
        _f("operator_id", pa.string(), False),
        _f("update_index", pa.int64(), False, "i in key_i = fold_in(base_key, i)"),
        _f("return", pa.float64(), False, "undiscounted return over the horizon"),
        _f("discounted_return", pa.float64(), doc="sum_t 0.99^t r_t"),
        _f("episode_length", pa.int32(), doc="steps until the first done (or the horizon)"),
        _f("terminated", pa.bool_(), doc="true when the episode ended before the horizon"),
        _f("chunk_size", pa.int32(), doc="vmapped batch size B the sample was computed in"),
    ]),
))

register(TableSpec(
    name="evaluations",
    doc="Learning curves: deterministic return from the reference state during training.",
    key=("run_id", "step"),
    schema=pa.schema([
        _f("run_id", pa.string(), False),
        _f("step", pa.int64(), False),
        _f("eval_return", pa.float64(), False),
        _f("episode_length", pa.int32()),
        _f("wall_seconds", pa.float64(), doc="seconds since training started"),
    ]),
))
