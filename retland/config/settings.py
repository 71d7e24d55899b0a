"""What each sampling and analysis command is asked to do: one typed model per command.

These models are the single source of every default and help text: the library's
functions take them, and the command line builds its options from their fields
(`default_of`, `help_of`), so a default is written once. Training's models are in
`retland.config.agents` and `retland.train.config`. This module imports nothing heavy (no JAX), so the command line
can read it at start-up.

Each `check()` refuses values that cannot be honoured with one message naming the
command-line option; the defaults and their sources are listed in docs/method.md.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["GAUSSIAN_SIGMA", "ACTION_SIGMA", "DIRECTIONS", "SampleSettings", "LandscapeRequest",
           "InterpolationSettings", "StabilizeConfig", "LandscapeError", "InterpolationError", "default_of",
           "help_of"]

# gaussian(σ): σ = 3e-4 (docs/method.md §5 Update operators)
GAUSSIAN_SIGMA = 3e-4
# action(σ): retland's choice (no published default): TD3's exploration noise.
ACTION_SIGMA = 0.1
DIRECTIONS = ("update", "gaussian", "filter-normalized")


def _opt(default, help: str):
    return field(default=default, metadata={"help": help})


def default_of(model, name: str):
    """The default of field `name` of a settings dataclass or pydantic model."""
    if hasattr(model, "model_fields"):
        return model.model_fields[name].default
    return {f.name: f for f in dataclasses.fields(model)}[name].default


def help_of(model, name: str) -> str:
    """The help text of field `name` of a settings dataclass or pydantic model."""
    if hasattr(model, "model_fields"):
        return model.model_fields[name].description
    return {f.name: f for f in dataclasses.fields(model)}[name].metadata["help"]


# Horizons and episode lengths are int32 columns of the warehouse.
MAX_HORIZON = 2**31 - 1
# Seeds become PRNGKey(seed) (a signed 64-bit integer) and int64 warehouse columns
# (the command line's own bound is cli/app.py's MAX_SEED, the same number).
MAX_SEED = 2**63 - 1


def _check_noise_seed_horizon(settings, error: type[ValueError]) -> None:
    """The checks every rollout command shares: σ, seed and horizon."""
    if not (math.isfinite(settings.sigma) and settings.sigma >= 0):
        raise error(f"--sigma must be a finite number >= 0, got {settings.sigma}")
    if settings.seed < 0:
        raise error(f"--noise-seed must be >= 0, got {settings.seed}")
    if settings.horizon is not None and not 1 <= settings.horizon <= MAX_HORIZON:
        raise error(f"--horizon must be in [1, {MAX_HORIZON}], got {settings.horizon}")


class LandscapeError(ValueError):
    """A landscape request that cannot be honoured; the message names what is wrong."""


class InterpolationError(ValueError):
    """An interpolation request that cannot be honoured; the message names what is wrong."""


@dataclass(frozen=True)
class SampleSettings:
    """`retland sample`: N samples of each chosen checkpoint's post-update distribution."""

    samples: int = _opt(1000, "N: update indices 0..N-1 of each distribution.")
    horizon: int = _opt(1000, "Rollout horizon H (part of the operator id).")
    key_seed: int = _opt(0, "Operator seed: key_i = fold_in(PRNGKey(seed), i) (part of the operator id).")
    batch_size: str = _opt("auto", "Chunk size B (samples per compiled batch), or auto: 64 on CPU, 4096 on a GPU "
                                   "(shrunk to N). On a GPU a B whose compiled program would not fit the device's "
                                   "memory is refused, naming the B that fits. Fixed per distribution: "
                                   "a resumed distribution keeps its recorded B.")
    shard: str = _opt("0/1", "i/N: this job's share of the work, for N independent jobs.")
    devices: str = _opt("all", "Local devices to use: all, or a count.")
    pack: str = _opt("auto", "Packed chunks: W lanes per compiled program, filled with W // B chunks of several "
                             "distributions that share a program (checkpoints of one job), so an accelerator's "
                             "program is full when N < W. auto: 4096 on an accelerator, off on CPU; off; or W.")


@dataclass(frozen=True)
class LandscapeRequest:
    """`retland landscape`: J(θ + a·d1 + b·d2) on a grid around one checkpoint."""

    run_id: str
    step: int
    directions: str = _opt("update", "update: d = θ_i − θ of two operator samples; gaussian: N(0, I); "
                                     "filter-normalized: gaussian scaled per output unit to θ's norms, biases 0 "
                                     "(Li et al. 2018).")
    operator: str = _opt("td3", "Update directions: the operator whose samples 0 and 1 give θ1, θ2.")
    resolution: int = _opt(41, "Points per axis.")
    lo: float = _opt(-2.0, "Window LO:HI on both axes (1.0 = one update).")
    hi: float = _opt(2.0, "Window LO:HI on both axes (1.0 = one update).")
    zoom: tuple[float, ...] = _opt((1.0,), "Comma-separated zoom factors; each is one grid of the window × factor.")
    samples_per_point: int = _opt(1, "K > 1: K gaussian(σ) samples per point (LTP/CVaR maps).")
    sigma: float = _opt(GAUSSIAN_SIGMA, "σ of the per-point samples.")
    seed: int = _opt(0, "Seed of the directions and per-point noise.")
    horizon: int | None = _opt(None, "Rollout steps (default: the run's training horizon).")

    command: ClassVar[str] = "landscape"

    def argv(self) -> list[str]:
        """The `retland landscape` command line of this request."""
        from retland.config.requests import number, options, short_number

        return ["landscape"] + options([
            ("--run", self.run_id), ("--step", self.step), ("--operator", self.operator),
            ("--grid", self.resolution), ("--range", f"{short_number(self.lo)}:{short_number(self.hi)}"),
            ("--zoom", ",".join(number(z) for z in self.zoom)), ("--directions", self.directions),
            ("--samples-per-point", self.samples_per_point), ("--sigma", number(self.sigma)),
            ("--noise-seed", self.seed), ("--horizon", self.horizon)])

    def check(self) -> "LandscapeRequest":
        if self.directions not in DIRECTIONS:
            raise LandscapeError(f"--directions {self.directions!r}: choose {', '.join(DIRECTIONS)}")
        if self.resolution < 2:
            raise LandscapeError(f"--grid must be >= 2 points per axis, got {self.resolution}")
        if self.samples_per_point < 1:
            raise LandscapeError(f"--samples-per-point must be >= 1, got {self.samples_per_point}")
        _check_noise_seed_horizon(self, LandscapeError)
        if not self.lo < self.hi:
            raise LandscapeError(f"--range {self.lo}:{self.hi}: need LO < HI")
        return self

    @property
    def n(self) -> int:
        return self.resolution ** 2 * self.samples_per_point


@dataclass(frozen=True)
class InterpolationSettings:
    """`retland interpolate`: θ(λ) between two checkpoints, K noisy samples per point."""

    points: int = _opt(100, "λ = linspace(0, 1, POINTS), endpoints included.")
    samples: int = _opt(100, "K gaussian samples per point, the same K draws at every λ.")
    sigma: float = _opt(GAUSSIAN_SIGMA, "σ of the gaussian samples (0: K copies of θ(λ)).")
    seed: int = _opt(0, "Noise seed: sample k uses fold_in(PRNGKey(seed), k).")
    horizon: int | None = _opt(None, "Rollout steps (default: the runs' training horizon).")
    # Pair sampling (--env/--pairs): the paper's 500 random pairs of each kind per env
    # (§4.1, Fig. 6). Neither enters a pair's id: they choose pairs, not returns.
    pairs_per_kind: int = _opt(500, "Pairs of each kind drawn at random, without replacement, from every "
                                    "eligible pair (all of them when fewer exist).")
    pair_seed: int = _opt(0, "Seed of the random pair draw, recorded with each pair it chooses: the same "
                             "seed and checkpoints give the same pairs.")

    def check(self) -> "InterpolationSettings":
        if self.points < 2:
            raise InterpolationError(f"--points must be >= 2 (both endpoints), got {self.points}")
        if self.samples < 1:
            raise InterpolationError(f"--samples must be >= 1, got {self.samples}")
        _check_noise_seed_horizon(self, InterpolationError)
        if self.pairs_per_kind < 1:
            raise InterpolationError(f"--pairs-per-kind must be >= 1, got {self.pairs_per_kind}")
        if self.pair_seed < 0:
            raise InterpolationError(f"--pair-seed must be >= 0, got {self.pair_seed}")
        return self


# ---- Algorithm 1 (retland stabilize) ------------------------------------------------

ARMS = ("reject", "baseline")
# Default PURD chunk per lane. CPU, 6 lanes x 200 samples (BENCHMARKS.md "Stabilize"): all
# 201 in one chunk took 617 s at 5.5 GB peak, chunks of 64 took 745 s at 3.4 GB, so CPU
# keeps big chunks and is bounded only for large N. On a GPU, 512 is the preferred chunk,
# shrunk to what fits the device (`stabilize.experiment.auto_chunk`): on an H200 limited to
# an 80 GB card's 59 GiB, the paper's 20 lanes x N = 1000 with 1M-row buffers needed
# 17.7 GiB at 512 (XLA's analysis; 20.2 GiB peak), one PURD estimate in 6.0 s.
AUTO_CHUNK = {"cpu": 256}
AUTO_CHUNK_ACCELERATOR = 512
CRITERIA = ("cvar", "ltp", "mean")


class StabilizeConfig(BaseModel):
    """One Algorithm 1 experiment; defaults as in docs/method.md §6.4."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    step: int
    proposals: int = Field(40, description="Proposals (env step + TD3 update) per lane.")
    samples: int = Field(1000, description="td3-operator samples N per PURD estimate.")
    criterion: Literal["cvar", "ltp", "mean"] = Field(
        "cvar", description="cvar: CVaR_α(new) ≥ CVaR_α(last) − tol; ltp: LTP(new) ≤ LTP(last) + tol; "
                            "mean: mean(new) ≥ mean(last) − tol.")
    alpha: float = Field(0.1, description="CVaR level α.")
    beta: float = Field(0.5, description="LTP threshold β, as a fraction of the mode.")
    tolerance: float = Field(0.0, description="Accept a proposal this much worse than the last accepted state.")
    arms: tuple[Literal["reject", "baseline"], ...] = ARMS
    seeds: tuple[int, ...] = tuple(range(10))  # rejection seeds
    exploration_noise: float = 0.1
    reset_noise_fraction: float = 0.1  # collection env reset noise, as a fraction of the task's standard
    # PURD samples per lane computed together (update + rollout); memory grows with
    # lanes x chunk, not lanes x samples. None: AUTO_CHUNK for the platform, resolved and
    # recorded when the experiment runs.
    chunk: int | None = None

    @field_validator("proposals", "samples", "chunk")
    @classmethod
    def _positive(cls, v, info):
        if v is not None and v < 1:
            raise ValueError(f"{info.field_name} must be >= 1, got {v}")
        return v

    @field_validator("alpha", "beta")
    @classmethod
    def _fraction(cls, v, info):
        if not 0.0 < v <= 1.0:
            raise ValueError(f"{info.field_name} must be in (0, 1], got {v}")
        return v

    @field_validator("tolerance", "exploration_noise", "reset_noise_fraction")
    @classmethod
    def _non_negative(cls, v, info):
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{info.field_name} must be a finite number >= 0, got {v}")
        return v

    @field_validator("arms")
    @classmethod
    def _arms(cls, v):
        if not v or len(set(v)) != len(v):
            raise ValueError(f"arms must be distinct and not empty: choose from {', '.join(ARMS)}; got {list(v)}")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v):
        if not v or len(set(v)) != len(v) or min(v) < 0:
            raise ValueError(f"seeds must be distinct integers >= 0, at least one; got {list(v)}")
        return v

    @model_validator(mode="after")
    def _samples_for_alpha(self):
        if self.samples < 2:
            raise ValueError(f"samples={self.samples}: a distribution needs at least 2 samples")
        return self

    @property
    def lanes(self) -> list[tuple[str, int]]:
        """(arm, seed) of each lane, arm-major: lane = arm_index * len(seeds) + seed_index."""
        return [(a, s) for a in self.arms for s in self.seeds]
