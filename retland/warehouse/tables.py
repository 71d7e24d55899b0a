"""The warehouse's tables: one declared Arrow schema and key per table.

This registry is the single authority on what a row looks like: column types, keys, and
the value rules (`Check`) every row must meet. The writer validates against it, so every
write path (import, sampling, analyses) refuses the same bad rows; the reader builds one
DuckDB view per entry, and adding a table means adding one `TableSpec` here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

TS = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Check:
    """A rule on one numeric column's values. NULL passes (nullability is the schema's
    business); NaN and ±inf fail whenever any bound is given or `finite` is set."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    finite: bool = False

    def describe(self, integer: bool = False) -> str:
        """What is accepted, e.g. 'an integer >= 0' or 'a finite number in (0, 1]'."""
        what = "an integer" if integer else "a finite number"
        lo = f"[{self.ge:g}" if self.ge is not None else (f"({self.gt:g}" if self.gt is not None else None)
        if lo is not None and self.le is not None:
            return f"{what} in {lo}, {self.le:g}]"
        if self.ge is not None:
            return f"{what} >= {self.ge:g}"
        if self.gt is not None:
            return f"{what} > {self.gt:g}"
        if self.le is not None:
            return f"{what} <= {self.le:g}"
        return what

    def bad(self, col: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
        """Boolean mask of the values that break the rule (NULL -> False)."""
        bounded = self.finite or self.ge is not None or self.gt is not None or self.le is not None
        mask = pc.invert(pc.is_finite(col)) if bounded and pa.types.is_floating(col.type) else None
        for op, bound in ((pc.less, self.ge), (pc.less_equal, self.gt), (pc.greater, self.le)):
            if bound is not None:
                m = op(col, bound)
                mask = m if mask is None else pc.or_(mask, m)
        if mask is None:
            return pa.array([False] * len(col))
        return pc.fill_null(mask, False)

    def problem(self, value) -> str:
        """Why one value fails: 'non-finite value inf' or 'value -7 out of range'."""
        if isinstance(value, float) and not math.isfinite(value):
            return f"non-finite value {value!r}"
        return f"value {value!r} out of range"


# Rules shared by many tables.
NON_NEGATIVE = Check(ge=0)  # indices, steps, seeds, counts, lengths
AT_LEAST_ONE = Check(ge=1)  # sizes: chunk sizes, horizons, sample counts
FINITE = Check(finite=True)
FINITE_NON_NEGATIVE = Check(ge=0, finite=True)
POSITIVE = Check(gt=0)
UNIT = Check(gt=0, le=1)  # α, β: (0, 1]


@dataclass(frozen=True)
class TableSpec:
    name: str
    schema: pa.Schema
    key: tuple[str, ...]
    # Hive partition columns: written as folder names (col=value), not inside files.
    partition_by: tuple[str, ...] = ()
    doc: str = ""
    # Value rules per column, checked on every append (after the cast to the schema).
    checks: dict[str, Check] = field(default_factory=dict, hash=False)

    def __post_init__(self):
        names = set(self.schema.names)
        for col in self.key + self.partition_by:
            if col not in names:
                raise ValueError(f"table {self.name}: key/partition column {col!r} not in schema")
        for col in self.key:
            if self.schema.field(col).nullable:
                raise ValueError(f"table {self.name}: key column {col!r} must be non-nullable")
        for col in self.checks:
            if col not in names:
                raise ValueError(f"table {self.name}: checked column {col!r} not in schema")
            typ = self.schema.field(col).type
            if not (pa.types.is_integer(typ) or pa.types.is_floating(typ)):
                raise ValueError(f"table {self.name}: checked column {col!r} is not numeric ({typ})")


def _f(name: str, typ: pa.DataType, nullable: bool = True, doc: str = "") -> pa.Field:
    meta = {"doc": doc} if doc else None
    return pa.field(name, typ, nullable=nullable, metadata=meta)


TABLES: dict[str, TableSpec] = {}


def register(spec: TableSpec) -> TableSpec:
    TABLES[spec.name] = spec
    return spec


register(TableSpec(
    name="runs",
    checks={"seed": NON_NEGATIVE, "parent_step": NON_NEGATIVE},
    doc="One row per training run (one seed of one algo on one env), trained, imported or derived.",
    key=("run_id",),
    schema=pa.schema([
        _f("run_id", pa.string(), False),
        _f("algo", pa.string(), False, "td3 | sac | ppo | bc (or the name given on import)"),
        _f("env", pa.string(), False),
        _f("seed", pa.int32(), False),
        _f("backend", pa.string(), doc="brax physics backend; NULL when imported"),
        _f("variant", pa.string(), doc="task rules: paper (Brax 0.0.13's, as the paper) | brax (brax 0.14's) | dmc (DeepMind Control, "
           "MuJoCo Playground); "
           "NULL for runs recorded before variants existed (brax) and for imported runs"),
        _f("source", pa.string(), False, "trained | imported | derived | added"),
        _f("parent_run_id", pa.string(), doc="derived runs (e.g. stabilize): the source run; bc runs: the teacher run"),
        _f("parent_step", pa.int64(), doc="the source (teacher) checkpoint's step"),
        _f("config", pa.string(), doc="JSON of the run's config model"),
        _f("repro", pa.string(), doc="JSON: package versions, platform, devices, command"),
        _f("created_at", TS, False),
    ]),
))

register(TableSpec(
    name="checkpoints",
    checks={"step": NON_NEGATIVE, "replay_size": NON_NEGATIVE},
    doc="Checkpoints of a run, keyed by env step.",
    key=("run_id", "step"),
    schema=pa.schema([
        _f("run_id", pa.string(), False),
        _f("step", pa.int64(), False, "env steps taken when the checkpoint was saved (bc runs: gradient steps)"),
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
        _f("kind", pa.string(), False, "td3 | sac | ppo | bc | gaussian | action | init_state | imported"),
        _f("params", pa.string(), False, "JSON of the operator's parameters"),
        _f("created_at", TS, False),
    ]),
))

register(TableSpec(
    name="post_update_returns",
    checks={"step": NON_NEGATIVE, "update_index": NON_NEGATIVE, "return": FINITE,
            "discounted_return": FINITE, "episode_length": NON_NEGATIVE, "chunk_size": AT_LEAST_ONE},
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
    checks={"step": NON_NEGATIVE, "episode_length": NON_NEGATIVE, "wall_seconds": FINITE_NON_NEGATIVE},
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

# ---- landscape analyses (retland.analyses.landscape, retland.analyses.failures, retland.analyses.interpolation) --

register(TableSpec(
    name="landscape_grids",
    checks={"step": NON_NEGATIVE, "lo": FINITE, "hi": FINITE, "zoom": Check(gt=0, finite=True),
            "resolution": AT_LEAST_ONE, "samples_per_point": AT_LEAST_ONE, "sigma": FINITE_NON_NEGATIVE,
            "seed": NON_NEGATIVE, "horizon": AT_LEAST_ONE, "chunk_size": AT_LEAST_ONE},
    doc="One row per 2-D landscape grid: J(θ + a·d1 + b·d2) over a window of (a, b).",
    key=("grid_id",),
    schema=pa.schema([
        _f("grid_id", pa.string(), False, "hash of everything the grid's returns depend on"),
        _f("run_id", pa.string(), False),
        _f("step", pa.int64(), False),
        _f("directions", pa.string(), False, "update | gaussian | filter-normalized"),
        _f("operator_id", pa.string(), doc="update directions: the operator whose samples 0 and 1 give θ1, θ2"),
        _f("directions_hash", pa.string(), False, "sha256 of d1 and d2 (float32 bytes, leaf order)"),
        _f("directions_path", pa.string(), False, "npz with theta, d1, d2 leaves, relative to the root"),
        _f("lo", pa.float64(), False, "window [lo, hi] on both axes (range × zoom)"),
        _f("hi", pa.float64(), False),
        _f("zoom", pa.float64(), False),
        _f("resolution", pa.int32(), False, "points per axis"),
        _f("samples_per_point", pa.int32(), False),
        _f("sigma", pa.float64(), doc="gaussian noise per sample when samples_per_point > 1"),
        _f("seed", pa.int64(), False, "directions / noise key seed"),
        _f("horizon", pa.int32(), False),
        _f("chunk_size", pa.int32(), False),
        _f("created_at", TS, False),
    ]),
))

register(TableSpec(
    name="landscape_points",
    checks={"point": NON_NEGATIVE, "sample": NON_NEGATIVE, "ix": NON_NEGATIVE, "iy": NON_NEGATIVE,
            "a": FINITE, "b": FINITE, "return": FINITE, "episode_length": NON_NEGATIVE},
    doc="One row per rollout of a landscape grid: point (ix, iy), sample k.",
    key=("grid_id", "point", "sample"),
    schema=pa.schema([
        _f("grid_id", pa.string(), False),
        _f("point", pa.int32(), False, "iy * resolution + ix"),
        _f("sample", pa.int32(), False, "0..samples_per_point-1; the same noise draw at every point"),
        _f("ix", pa.int32(), False),
        _f("iy", pa.int32(), False),
        _f("a", pa.float64(), False, "coefficient of d1 (1.0 = one update)"),
        _f("b", pa.float64(), False, "coefficient of d2"),
        _f("return", pa.float64(), False),
        _f("episode_length", pa.int32()),
        _f("terminated", pa.bool_()),
    ]),
))

register(TableSpec(
    name="trajectories",
    checks={"t": NON_NEGATIVE, "step": NON_NEGATIVE, "update_index": NON_NEGATIVE},
    doc="Per-step re-rolls of a successful and a failing post-update sample of one checkpoint.",
    key=("pair_id", "role", "t"),
    schema=pa.schema([
        _f("pair_id", pa.string(), False, "run@step/operator/success-failure update indices"),
        _f("role", pa.string(), False, "success | failure"),
        _f("t", pa.int32(), False, "env step, 0-based"),
        _f("run_id", pa.string(), False),
        _f("step", pa.int64(), False),
        _f("operator_id", pa.string(), False),
        _f("update_index", pa.int64(), False, "the sample re-rolled (same key, same θ_i)"),
        _f("reward", pa.float64(), False, "reward of step t (0 after the episode ended)"),
        _f("cumulative_return", pa.float64(), False, "G_t: sum of rewards of steps 0..t"),
        _f("done", pa.bool_(), False, "the episode has ended by step t (terminating step included)"),
        _f("torso_height", pa.float64(), doc="torso z before step t's action"),
        _f("torso_pitch", pa.float64(), doc="torso pitch (rad) before step t's action"),
        _f("stored_return", pa.float64(), False, "the sample's return in post_update_returns"),
    ]),
))

register(TableSpec(
    name="renders",
    checks={"step": NON_NEGATIVE, "update_index": NON_NEGATIVE, "episode_length": NON_NEGATIVE,
            "frame_every": AT_LEAST_ONE, "animation_every": AT_LEAST_ONE, "width": AT_LEAST_ONE,
            "height": AT_LEAST_ONE},
    doc="Drawn frames of one re-rolled post-update sample (retland render / failures): files under artifacts/renders.",
    key=("render_id",),
    schema=pa.schema([
        _f("render_id", pa.string(), False, "run@step/operator/index/every/size: what the frames depend on"),
        _f("run_id", pa.string(), False),
        _f("step", pa.int64(), False),
        _f("operator_id", pa.string(), False),
        _f("update_index", pa.int64(), False, "the sample re-rolled (same key, same θ_i)"),
        _f("pair_id", pa.string(), doc="the failure pair it belongs to (trajectories.pair_id), if any"),
        _f("role", pa.string(), doc="success | failure within the pair"),
        _f("env", pa.string(), False),
        _f("variant", pa.string(), False),
        _f("backend", pa.string(), False),
        _f("stored_return", pa.float64(), False, "the sample's return in post_update_returns"),
        _f("episode_length", pa.int32(), False, "steps up to and including the terminating one"),
        _f("terminated", pa.bool_(), False),
        _f("diverge_step", pa.int32(), doc="pairs: failure_divergence.diverge_step, marked in the filmstrip"),
        _f("frame_steps", pa.string(), False, "comma-separated steps k of the filmstrip (state after k steps)"),
        _f("frame_every", pa.int32(), False, "filmstrip spacing in env steps"),
        _f("animation_every", pa.int32(), False, "env steps between animation frames"),
        _f("width", pa.int32(), False, "pixels of one frame"),
        _f("height", pa.int32(), False),
        _f("renderer", pa.string(), False, "e.g. mujoco 3.3.0 egl"),
        _f("poses_path", pa.string(), False, "npz: pose [T + 1, P] of every step, relative to the root"),
        _f("filmstrip_path", pa.string(), False, "PNG: the frames side by side, relative to the root"),
        _f("animation_path", pa.string(), doc="animated WebP of the whole episode, relative to the root"),
    ]),
))

register(TableSpec(
    name="interpolation_pairs",
    checks={"step_a": NON_NEGATIVE, "step_b": NON_NEGATIVE, "points": AT_LEAST_ONE, "samples": AT_LEAST_ONE,
            "sigma": FINITE_NON_NEGATIVE, "seed": NON_NEGATIVE, "horizon": AT_LEAST_ONE, "chunk_size": AT_LEAST_ONE,
            "pair_seed": NON_NEGATIVE},
    doc="One row per interpolated pair of checkpoints: θ(λ) = (1−λ)·θa + λ·θb, actor only.",
    key=("pair_id",),
    schema=pa.schema([
        _f("pair_id", pa.string(), False, "hash of everything the pair's returns depend on"),
        _f("kind", pa.string(), False, "same-run | different-run"),
        _f("env", pa.string(), False),
        _f("algo", pa.string(), False),
        _f("run_a", pa.string(), False),
        _f("step_a", pa.int64(), False),
        _f("run_b", pa.string(), False),
        _f("step_b", pa.int64(), False),
        _f("points", pa.int32(), False, "λ = linspace(0, 1, points)"),
        _f("samples", pa.int32(), False, "K gaussian samples per point, the same K draws at every λ"),
        _f("sigma", pa.float64(), False),
        _f("seed", pa.int64(), False, "noise k uses fold_in(PRNGKey(seed), k), as gaussian sample k"),
        _f("horizon", pa.int32(), False),
        _f("chunk_size", pa.int32(), False),
        _f("created_at", TS, False),
        _f("pair_seed", pa.int64(), doc="seed of the random pair draw (--pair-seed) that first chose the pair; "
                                        "not part of pair_id. NULL: given as --a/--b, or stored before pairs "
                                        "were drawn at random"),
    ]),
))

register(TableSpec(
    name="interpolation_points",
    checks={"point": NON_NEGATIVE, "sample": NON_NEGATIVE, "lam": Check(ge=0, le=1), "return": FINITE,
            "episode_length": NON_NEGATIVE},
    doc="One row per rollout along an interpolation: point p (λ_p), sample k.",
    key=("pair_id", "point", "sample"),
    schema=pa.schema([
        _f("pair_id", pa.string(), False),
        _f("point", pa.int32(), False),
        _f("sample", pa.int32(), False),
        _f("lam", pa.float64(), False, "λ of the point (lambda is a DuckDB keyword)"),
        _f("return", pa.float64(), False),
        _f("episode_length", pa.int32()),
        _f("terminated", pa.bool_()),
    ]),
))

register(TableSpec(
    name="stabilize_steps",
    checks={"seed": NON_NEGATIVE, "proposal": NON_NEGATIVE, "step": NON_NEGATIVE, "alpha": UNIT, "beta": UNIT,
            "tolerance": FINITE_NON_NEGATIVE, "n_samples": AT_LEAST_ONE, "last_accepted": NON_NEGATIVE,
            "update_count": NON_NEGATIVE, "replay_size": NON_NEGATIVE},
    doc="Algorithm 1 (retland stabilize): one row per proposal of each lane (arm x rejection seed); "
        "proposal 0 is the source checkpoint. Statistics are of the proposal's PURD and of the last "
        "accepted state it was compared with (before the decision).",
    key=("experiment_id", "arm", "seed", "proposal"),
    schema=pa.schema([
        _f("experiment_id", pa.string(), False),
        _f("arm", pa.string(), False, "reject (Algorithm 1) | baseline (never rejects, same keys)"),
        _f("seed", pa.int32(), False, "rejection seed: keys of the collection stream and the PURDs"),
        _f("proposal", pa.int32(), False, "0 = the source checkpoint, then 1..P"),
        _f("run_id", pa.string(), False, "source run"),
        _f("step", pa.int64(), False, "source checkpoint's env step"),
        _f("derived_run_id", pa.string(), False, "the run holding this lane's final state"),
        _f("criterion", pa.string(), False, "cvar | ltp | mean"),
        _f("alpha", pa.float64(), False),
        _f("beta", pa.float64(), False),
        _f("tolerance", pa.float64(), False),
        _f("n_samples", pa.int32(), False, "N td3-operator samples per PURD"),
        _f("accepted", pa.bool_(), False),
        _f("last_accepted", pa.int32(), False, "proposal whose state this one was compared with"),
        _f("update_count", pa.int32(), doc="TD3 update counter after the decision"),
        _f("replay_size", pa.int64(), doc="replay rows after the decision"),
        _f("eval_return", pa.float64(), doc="J(θ) of the proposal's own actor, from s0"),
        _f("mean", pa.float64()), _f("std", pa.float64()), _f("mode", pa.float64()),
        _f("ltp", pa.float64(), doc="NULL when mode <= 0"), _f("cvar", pa.float64()),
        _f("last_mean", pa.float64()), _f("last_std", pa.float64()), _f("last_mode", pa.float64()),
        _f("last_ltp", pa.float64()), _f("last_cvar", pa.float64()),
        _f("created_at", TS, False),
    ]),
))

register(TableSpec(
    name="stabilize_returns",
    checks={"seed": NON_NEGATIVE, "proposal": NON_NEGATIVE, "update_index": NON_NEGATIVE, "return": FINITE},
    doc="The PURD samples behind stabilize_steps: J(U(state, key_i)) of each proposal's state.",
    key=("experiment_id", "arm", "seed", "proposal", "update_index"),
    schema=pa.schema([
        _f("experiment_id", pa.string(), False),
        _f("arm", pa.string(), False),
        _f("seed", pa.int32(), False),
        _f("proposal", pa.int32(), False),
        _f("update_index", pa.int64(), False, "i in key_i = fold_in(base_key, i)"),
        _f("return", pa.float64(), False),
    ]),
))

# ---- throughput (retland.purd.engine; read by retland.analyses.estimates) ---------------

register(TableSpec(
    name="chunk_timings",
    checks={"step": NON_NEGATIVE, "device_count": AT_LEAST_ONE, "batch_size": AT_LEAST_ONE,
            "horizon": AT_LEAST_ONE, "chunks": AT_LEAST_ONE, "env_steps": NON_NEGATIVE,
            "seconds": FINITE_NON_NEGATIVE},
    doc="How long the chunks of each flush took: one row per flush of a sampling, landscape or "
        "interpolation job, committed with the rows it wrote (what study --plan estimates wall time from).",
    key=("timing_id",),
    schema=pa.schema([
        _f("timing_id", pa.string(), False, "unique per flush"),
        _f("table_name", pa.string(), False, "the table the chunks' rows went to: post_update_returns, "
                                             "landscape_points or interpolation_points"),
        _f("run_id", pa.string(), False, "the checkpoint's run (an interpolation pair's first endpoint)"),
        _f("step", pa.int64(), False),
        _f("operator_id", pa.string(), False, "the distribution's operator id; a landscape's grid_id, an "
                                              "interpolation's pair_id"),
        _f("device", pa.string(), False, "platform:device kind of the first device, e.g. cpu:cpu, "
                                         "gpu:NVIDIA H100 80GB HBM3"),
        _f("device_count", pa.int32(), False, "devices the chunks were spread over"),
        _f("batch_size", pa.int32(), False, "chunk size B (of a packed chunk: its lanes m·B, retland.purd.packing)"),
        _f("horizon", pa.int32(), False),
        _f("chunks", pa.int32(), False, "chunks computed since the previous flush"),
        _f("env_steps", pa.int64(), False, "simulated steps: chunks x B x horizon (padding included)"),
        _f("seconds", pa.float64(), False, "wall time from the previous flush (or the job's start) to this one"),
        _f("includes_compile", pa.bool_(), False, "the job's first flush: its time holds the program's compile"),
        _f("recorded_at", TS, False),
    ]),
))

register(TableSpec(
    name="training_timings",
    checks={"seeds": AT_LEAST_ONE, "device_count": AT_LEAST_ONE, "from_step": NON_NEGATIVE,
            "to_step": NON_NEGATIVE, "env_steps": NON_NEGATIVE, "seconds": FINITE_NON_NEGATIVE},
    doc="How long training took: one row per stretch of a training job between two stops (evaluations, "
        "checkpoints, the end of warm-up), committed with the next evaluation's rows, or one row of a short "
        "calibration run (`retland study --plan --calibrate`). Self-describing (algo, task, seeds), so a "
        "calibration needs no runs row. What study --plan estimates training time from.",
    key=("timing_id",),
    schema=pa.schema([
        _f("timing_id", pa.string(), False, "unique per row"),
        _f("job_id", pa.string(), False, "the training job (its run ids are job_id-s<seed>); calibration-<hex> "
                                         "for a calibration run"),
        _f("source", pa.string(), False, "job (a training job's own stretch) or calibration"),
        _f("algo", pa.string(), False, "td3, sac, ppo or bc (bc steps are gradient steps)"),
        _f("env", pa.string(), False),
        _f("variant", pa.string(), False),
        _f("backend", pa.string(), False),
        _f("seeds", pa.int32(), False, "seeds vmapped together in this stretch (a seed group's size)"),
        _f("device", pa.string(), False, "platform:device kind of the first device, as chunk_timings"),
        _f("device_count", pa.int32(), False),
        _f("from_step", pa.int64(), False, "env steps per seed at the stretch's start"),
        _f("to_step", pa.int64(), False, "env steps per seed at its end"),
        _f("env_steps", pa.int64(), False, "seeds x (to_step - from_step)"),
        _f("seconds", pa.float64(), False, "wall time of the stretch: its chunks, and its evaluation and "
                                           "checkpoint writing (from the previous commit to this one)"),
        _f("includes_compile", pa.bool_(), False, "the first stretch of a process's seed group: its time holds "
                                                  "the training program's compile (and the first evaluation)"),
        _f("warmup", pa.bool_(), False, "TD3/SAC's learning_starts steps of random actions and no update: "
                                        "cheaper than the steps after"),
        _f("recorded_at", TS, False),
    ]),
))

register(TableSpec(
    name="sampling_calibrations",
    checks={"device_count": AT_LEAST_ONE, "batch_size": AT_LEAST_ONE, "horizon": AT_LEAST_ONE,
            "chunks": AT_LEAST_ONE, "env_steps": NON_NEGATIVE, "seconds": FINITE_NON_NEGATIVE},
    doc="Short sampling measurements of `retland study --plan --calibrate`: chunks of a task's sampling "
        "program (its operator, horizon and chunk size) from a calibration run's state, timed as chunk_timings "
        "times a job's flushes, where no job of the task has sampled on the device yet. No rows are stored.",
    key=("timing_id",),
    schema=pa.schema([
        _f("timing_id", pa.string(), False, "unique per row"),
        _f("algo", pa.string(), False),
        _f("env", pa.string(), False),
        _f("variant", pa.string(), False),
        _f("backend", pa.string(), False),
        _f("operator_kind", pa.string(), False, "the operator's kind (td3, sac, ppo, bc, gaussian, ...)"),
        _f("operator_id", pa.string(), False, "the operator that was timed"),
        _f("device", pa.string(), False, "platform:device kind of the first device, as chunk_timings"),
        _f("device_count", pa.int32(), False),
        _f("batch_size", pa.int32(), False, "chunk size B"),
        _f("horizon", pa.int32(), False),
        _f("chunks", pa.int32(), False),
        _f("env_steps", pa.int64(), False, "chunks x B x horizon"),
        _f("seconds", pa.float64(), False),
        _f("includes_compile", pa.bool_(), False, "the first chunk: its time holds the program's compile"),
        _f("recorded_at", TS, False),
    ]),
))
