"""What every request and runner shares: the progress-bar hook and command-line rendering.

Each kind of work retland does (train, add an example, sample, failures, landscape,
interpolation, stabilize, stats, report) is a frozen request object whose fields are
its command's options, parsed, and one library runner `run_request(wh, request, *,
progress=None, ...)`. The command parses its options into the request, calls the runner
and displays; a study builds the same requests and calls the same runners.

`progress` is a bar factory: `progress(total, description, *, unit, rate_scale=1,
rate_unit=None)` returns a context manager yielding `advance(n, **info)` (the command
line passes `retland.cli.progress.progress_bar`); None shows nothing. A request renders
itself as the equivalent command line (`argv()`), for `retland study --plan` and its
log; `retland.cli` parses that line back into an equal request.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, ContextManager, Iterator

Advance = Callable[..., None]
Bar = Callable[..., ContextManager[Advance]]


@contextmanager
def no_bar(total: int = 0, description: str = "", **options) -> Iterator[Advance]:
    """A bar that shows nothing."""
    yield lambda n=0, **info: None


def bar(progress: Bar | None, total: int, description: str, **options) -> ContextManager[Advance]:
    """`progress`'s bar for `total` units of work, or nothing when there is none or no work."""
    if progress is None or total <= 0:
        return no_bar()
    return progress(total, description, **options)


def number(x: float) -> str:
    """A float as an option's text that reads back to the same float."""
    return repr(float(x))


def short_number(x: float) -> str:
    """A float as short text that reads back to the same float: -2 for -2.0, 1.5, 3e-05."""
    text = f"{float(x):g}"
    return text if float(text) == float(x) else repr(float(x))


def int_list_text(values) -> str:
    """A list of ints as --steps/--seeds text: 1,2,3."""
    return ",".join(str(int(v)) for v in values)


def options(pairs) -> list[str]:
    """['--opt', 'value', ...] for the (option, value) pairs whose value is not None;
    a value True is a flag alone."""
    out: list[str] = []
    for opt, value in pairs:
        if value is None or value is False:
            continue
        out += [opt] if value is True else [opt, str(value)]
    return out


def parse_duration(text: str, option: str = "--time-limit") -> float:
    """A wall time as SLURM writes it, in seconds: MIN, MIN:SS, H:MM:SS, D-HH, D-HH:MM or
    D-HH:MM:SS (a bare number is minutes). ValueError names `option` and the forms."""
    import re

    m = re.fullmatch(r"\s*(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?\s*", str(text))
    if not m:
        raise ValueError(f"{option} {text!r}: expected minutes, H:MM:SS or D-HH:MM:SS")
    days, a, b, c = (int(x) if x else None for x in m.groups())
    if days is None and b is None:
        seconds = a * 60  # MIN
    elif days is None and c is None:
        seconds = a * 60 + b  # MIN:SS
    elif days is None:
        seconds = a * 3600 + b * 60 + c  # H:MM:SS
    else:
        seconds = days * 86400 + a * 3600 + (b or 0) * 60 + (c or 0)
    return float(seconds)


def duration_text(seconds: float) -> str:
    """Seconds as H:MM:SS (what `parse_duration` reads back, to the second)."""
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
