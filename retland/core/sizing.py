"""How many samples (or seeds) one compiled program may hold: XLA's own memory figures
against the device's allocator.

The rule, used by `retland sample --batch-size auto`, `retland stabilize --chunk auto` and
training's seed groups:

* the **budget** is `HEADROOM` (0.8) of what the device's allocator can still hand out:
  `memory_stats()["bytes_limit"] - memory_stats()["bytes_in_use"]`. CPUs report no
  limit, so on a CPU nothing is sized by memory (host RAM is the operating system's);
* a program's **need** at size B is what XLA's compiler says the executable allocates:
  `compiled.memory_analysis()` outputs + temporaries - aliased (donated) bytes, plus the
  arguments when they are not on the device yet (the checkpoint, the replay buffer and
  the start state usually are: they are then in `bytes_in_use` already). It is read from
  the compiled program before anything runs, so a size that would not fit is never run;
* the need is close to linear in B (every sample carries its own updated weights,
  optimiser state, minibatch and rollout carry), so from one compile at B the size that
  fits is `(budget - fixed) / per_unit` with `per_unit` = (outputs + temporaries) / B.
  That size is rounded down to a multiple of 8, compiled and checked again (halving
  while it still does not fit).

`fit` does this for any `bytes_at(size)` callable; `footprint` turns a jitted function and
its arguments into bytes without running it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import jax

__all__ = ["HEADROOM", "Fit", "budget", "footprint", "fit", "gib"]

# Share of the allocator's free bytes a sized program may plan for: the rest is left to
# XLA's fragmentation, the next chunk's inputs placed while one runs, and other programs.
HEADROOM = 0.8


def gib(n: float | None) -> str:
    return "?" if n is None else f"{n / 2**30:.2f} GiB"


def budget(device=None, headroom: float = HEADROOM) -> int | None:
    """Bytes a program may use on `device` (default: the first local device), or None
    where the platform reports no allocator limit (CPU)."""
    device = device or jax.local_devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - some platforms raise instead of returning None
        stats = None
    if not stats or not stats.get("bytes_limit"):
        return None
    free = int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
    return max(0, int(free * headroom))


@dataclass(frozen=True)
class Footprint:
    """XLA's memory figures of one compiled program, in bytes."""

    arguments: int
    outputs: int
    temporaries: int
    aliased: int

    @property
    def total(self) -> int:
        return self.arguments + self.outputs + self.temporaries - self.aliased

    @property
    def scaling(self) -> int:
        """The bytes that grow with the batch: outputs and temporaries."""
        return self.outputs + self.temporaries

    def need(self, resident: bool = True) -> int:
        """The bytes the program allocates when it runs: outputs and temporaries less the
        donated bytes, plus the arguments unless they are already on the device."""
        return self.scaling - self.aliased + (0 if resident else self.arguments)

    def largest_fitting(self, size: int, budget_bytes: int, *, resident: bool = True, multiple: int = 8) -> int:
        """The size whose need the linear rule puts at `budget_bytes`, from this footprint
        at `size`: the bytes that do not grow with the size stay, the rest scales; rounded
        down to a multiple of `multiple` (when at least that)."""
        fixed = self.need(resident) - self.scaling
        guess = int((budget_bytes - fixed) / max(self.scaling / size, 1.0))
        return (guess // multiple) * multiple if guess >= multiple else guess


def footprint(jitted, *args) -> Footprint | None:
    """The memory of `jitted` (a `jax.jit` function, or anything with `.lower`) compiled
    for these arguments (arrays or ShapeDtypeStructs); nothing runs. None where the
    backend gives no memory analysis."""
    compiled = jitted.lower(*args).compile()
    m = compiled.memory_analysis()
    if m is None:
        return None
    return Footprint(int(m.argument_size_in_bytes), int(m.output_size_in_bytes),
                     int(m.temp_size_in_bytes), int(m.alias_size_in_bytes))


@dataclass(frozen=True)
class Fit:
    """The chosen size, and why."""

    size: int
    preferred: int
    budget: int | None
    bytes: int | None  # footprint at `size` (None: not measured, no budget to meet)
    per_unit: float | None
    tried: tuple[tuple[int, int], ...] = ()  # (size, bytes) compiled on the way

    @property
    def reason(self) -> str:
        if self.budget is None:
            return f"{self.size} (no device memory limit to size against)"
        head = f"{self.size}: {gib(self.bytes)} of a {gib(self.budget)} budget"
        if self.size < self.preferred:
            return f"{head} ({self.preferred} would need {gib(self.tried[0][1])})"
        return head


def fit(bytes_at: Callable[[int], Footprint | None], preferred: int, budget_bytes: int | None, *,
        resident: bool = True, multiple: int = 8, minimum: int = 1) -> Fit:
    """The largest size <= `preferred` whose footprint fits `budget_bytes` (see the module
    docstring). `bytes_at(size)` compiles at that size; it is called once when the
    preferred size fits. resident: the program's arguments are already on the device
    (counted in the budget's bytes in use), so only outputs and temporaries must fit.
    Raises MemoryError naming the figures when even `minimum` does not fit."""
    if budget_bytes is None:
        return Fit(preferred, preferred, None, None, None)
    tried: list[tuple[int, int]] = []
    size = preferred
    fp = bytes_at(size)
    if fp is None:
        return Fit(preferred, preferred, budget_bytes, None, None)
    tried.append((size, fp.need(resident)))
    while fp.need(resident) > budget_bytes:
        if size <= minimum:
            raise MemoryError(
                f"even {size} does not fit: XLA needs {gib(fp.need(resident))} ({gib(fp.arguments)} of inputs"
                f"{' already placed' if resident else ''}, {gib(fp.scaling)} of outputs and temporaries); "
                f"the device's budget is {gib(budget_bytes)}")
        guess = fp.largest_fitting(size, budget_bytes, resident=resident, multiple=multiple)
        # the linear model said `size` fits, and it did not: halve instead
        size = max(minimum, guess if guess < size else size // 2)
        fp = bytes_at(size)
        tried.append((size, fp.need(resident)))
    return Fit(size, preferred, budget_bytes, fp.need(resident), fp.scaling / size, tuple(tried))
