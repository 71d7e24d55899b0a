"""The command line's one progress display, fed by the library's progress callbacks.

Library functions that take long (training, sampling, landscapes, interpolation,
Algorithm 1) accept `progress(advance, **info)`: called with how many units of work
just finished (env steps, samples, proposals) and optional text fields. `progress_bar`
turns that into:

- on a terminal, a live rich bar: description, bar, done/total, rate, info, elapsed, ETA;
- when piped (a log file, a SLURM job), one plain line when the work starts, then at most
  one every `every` seconds as results are flushed, and one at the end; never a bar, never
  wrapped, so logs stay readable and grep-able;
- nothing, with --no-progress.

Until the first unit finishes, the bar says the program is being compiled (or loaded
from the compile cache); the time that took is shown once work starts.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.markup import escape

from retland.cli.app import err_console

Advance = Callable[..., None]
COMPILING = "compiling or loading the program…"


def _rate(done: float, seconds: float, scale: float, unit: str) -> str:
    if done <= 0 or seconds <= 0:
        return f"– {unit}/s"
    return f"{done * scale / seconds:,.0f} {unit}/s"


def _eta(done: float, total: float, seconds: float) -> str:
    if done <= 0 or total <= done:
        return "–"
    left = seconds * (total - done) / done
    return time.strftime("%H:%M:%S", time.gmtime(left))


@contextmanager
def progress_bar(total: int, description: str, *, unit: str = "samples", rate_scale: float = 1.0,
                 rate_unit: str | None = None, enabled: bool = True, every: float = 10.0,
                 start: int = 0) -> Iterator[Advance]:
    """Yield `advance(n, **info)`; `rate_scale` converts units to the rate shown (e.g.
    samples × horizon = env steps, with rate_unit "env-steps")."""
    if not enabled:
        yield lambda n=0, **info: None
        return
    rate_unit = rate_unit or unit
    if not sys.stderr.isatty():
        with _lines(total, description, unit, rate_scale, rate_unit, every, start) as advance:
            yield advance
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[info]}"),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err_console)
    t0 = time.monotonic()
    first: list[float] = []  # [seconds to the first result, units done with it]
    with bar:
        task = bar.add_task(escape(description), total=total, completed=start, rate="", info=COMPILING)

        def advance(n: int = 0, **info) -> None:
            now = time.monotonic()
            done = bar.tasks[0].completed + n
            if n and not first:
                first.extend([now - t0, done])
            text = " · ".join(str(v) for v in info.values()) or (f"first result after {first[0]:.0f} s" if first else COMPILING)
            # as the piped lines: the rate counts what came after the first result, over the
            # time since it (the compile is not in it); none until there is such a unit
            since = done - first[1] if first else 0
            rate = _rate(since, now - t0 - first[0], rate_scale, rate_unit) if since > 0 else ""
            bar.update(task, advance=n, rate=rate, info=escape(text))

        yield advance


@contextmanager
def _lines(total, description, unit, rate_scale, rate_unit, every, start) -> Iterator[Advance]:
    t0 = time.monotonic()
    # Rate and ETA count from the first finished unit, so compile time does not skew them.
    state = {"done": start, "printed": t0, "info": "", "first": None, "first_done": start}

    def line(final: bool = False) -> None:
        now = time.monotonic()
        done, first = state["done"], state["first"]
        pct = f" ({100 * done / total:.0f}%)" if total else ""
        info = f" · {state['info']}" if state["info"] else ""
        if first is None:
            timing = f"{now - t0:.0f} s, {COMPILING}"
        else:
            ran = now - first
            since_first = done - state["first_done"]
            if since_first > 0:
                rate = _rate(since_first, ran, rate_scale, rate_unit) + ", "
            elif final:  # everything came in the first result: the rate over the whole run
                rate = _rate(done - start, now - t0, rate_scale, rate_unit) + " overall, "
            else:  # no rate yet: one result so far
                rate = ""
            timing = f"{rate}{now - t0:.0f} s (first result after {first - t0:.0f} s)"
            if not final and since_first > 0:
                timing += f", ETA {_eta(since_first, total - state['first_done'], ran)}"
        err_console.print(escape(f"{description}: {done}/{total} {unit}{pct}, {timing}{info}"),
                          highlight=False, soft_wrap=True)

    def advance(n: int = 0, **info) -> None:
        now = time.monotonic()
        if n and state["first"] is None:
            state["first"], state["first_done"] = now, state["done"] + n
        state["done"] += n
        if info:
            state["info"] = " · ".join(str(v) for v in info.values())
        if now - state["printed"] >= every and state["done"] < total:  # the final line reports the end
            line()
            state["printed"] = now

    line()  # at once: the log shows the work started (and is compiling) before the first flush
    try:
        yield advance
    finally:
        line(final=True)
