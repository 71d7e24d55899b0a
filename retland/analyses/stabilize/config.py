"""Algorithm 1's settings (`StabilizeConfig`) and its acceptance criterion."""
from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from retland import stats

ARMS = ("reject", "baseline")
# Default PURD chunk per lane. CPU, 6 lanes x 200 samples (BENCHMARKS.md "Stabilize"): all
# 201 in one chunk took 617 s at 5.5 GB peak, chunks of 64 took 745 s at 3.4 GB, so CPU
# keeps big chunks and is bounded only for large N. On a GPU, 20 lanes x 512 is about
# 40 GB of update temporaries (≈ 4 MB per sample for 256x256 critics, batch 256).
AUTO_CHUNK = {"cpu": 256}
AUTO_CHUNK_ACCELERATOR = 512
CRITERIA = ("cvar", "ltp", "mean")


class StabilizeConfig(BaseModel):
    """One Algorithm 1 experiment; defaults as in docs/method.md §6.4."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    step: int
    proposals: int = 40
    samples: int = 1000  # N td3-operator samples per PURD
    criterion: Literal["cvar", "ltp", "mean"] = "cvar"
    alpha: float = 0.1  # CVaR level
    beta: float = 0.5  # LTP threshold, as a fraction of the mode
    tolerance: float = 0.0
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

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v):
        if not 0.0 < v <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {v}")
        return v

    @field_validator("beta")
    @classmethod
    def _beta(cls, v):
        if not 0.0 < v <= 1.0:
            raise ValueError(f"beta must be in (0, 1], got {v}")
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


# ---- the criterion ----------------------------------------------------------------------

def criterion_value(criterion: str, summary: stats.Summary) -> float:
    """The number the criterion compares; LTP undefined (mode <= 0) counts as 1."""
    if criterion == "cvar":
        return summary.cvar
    if criterion == "mean":
        return summary.mean
    if criterion == "ltp":
        return 1.0 if summary.ltp is None else summary.ltp
    raise ValueError(f"unknown criterion {criterion!r}: choose one of {', '.join(CRITERIA)}")


def accepts(criterion: str, new: stats.Summary, last: stats.Summary, tolerance: float) -> bool:
    """Algorithm 1's test of a proposal `new` against the last accepted state `last`."""
    a, b = criterion_value(criterion, new), criterion_value(criterion, last)
    if criterion == "ltp":
        return bool(a <= b + tolerance)  # lower is better
    return bool(a >= b - tolerance)  # higher is better
