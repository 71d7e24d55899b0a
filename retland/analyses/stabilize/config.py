"""Algorithm 1's acceptance criterion; its settings (`StabilizeConfig`) are in retland.config.settings."""
from __future__ import annotations



from retland import stats
from retland.config.settings import ARMS, AUTO_CHUNK, AUTO_CHUNK_ACCELERATOR, CRITERIA, StabilizeConfig

__all__ = ["ARMS", "AUTO_CHUNK", "AUTO_CHUNK_ACCELERATOR", "CRITERIA", "StabilizeConfig", "criterion_value", "accepts"]

# ---- the criterion ----------------------------------------------------------------------

def criterion_value(criterion: str, summary: stats.Summary) -> float:
    """The number the criterion compares; for ltp, a PURD whose mode is <= 0 counts as
    LTP 1 (the worst): its LTP is computed against a non-positive threshold."""
    if criterion == "cvar":
        return summary.cvar
    if criterion == "mean":
        return summary.mean
    if criterion == "ltp":
        return 1.0 if summary.mode_nonpositive else summary.ltp
    raise ValueError(f"unknown criterion {criterion!r}: choose one of {', '.join(CRITERIA)}")


def accepts(criterion: str, new: stats.Summary, last: stats.Summary, tolerance: float) -> bool:
    """Algorithm 1's test of a proposal `new` against the last accepted state `last`."""
    a, b = criterion_value(criterion, new), criterion_value(criterion, last)
    if criterion == "ltp":
        return bool(a <= b + tolerance)  # lower is better
    return bool(a >= b - tolerance)  # higher is better
