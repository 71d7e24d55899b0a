"""The one syntax for lists of seeds and steps, on the command line and in study files.

`parse_int_list("0,2,5..7", "--seeds")` -> (0, 2, 5, 6, 7): comma-separated whole
numbers and inclusive ranges LO..HI (LO-HI also works, as the numbers are >= 0). A
number may be written 5e4 or 1.5e5 when it is whole (env steps often are). Every
mistake is one line naming the option or field and the offending part: a reversed or
empty range, nothing given, a part that is not a whole number, a value outside the
allowed bounds, or a range that would expand to more than `max_values` values.
"""
from __future__ import annotations

from decimal import Decimal, InvalidOperation

__all__ = ["INT32_MAX", "INT64_MAX", "IntListError", "parse_int_list"]

INT32_MAX = 2**31 - 1  # seeds stored in int32 columns (runs.seed, stabilize_steps.seed)
INT64_MAX = 2**63 - 1
MAX_VALUES = 100_000
EXAMPLE = "e.g. 0,2,5..7"


class IntListError(ValueError):
    """A list that does not parse; its text is one line naming `what`."""


def _whole(token: str) -> int | None:
    """'12' -> 12, '5e4' -> 50000, '1.5e5' -> 150000; None when not a whole number."""
    token = token.strip()
    try:
        return int(token)
    except ValueError:
        pass
    if not token or not any(c.isdigit() for c in token):
        return None
    try:
        value = Decimal(token)
    except InvalidOperation:
        return None
    if not value.is_finite() or value != value.to_integral_value():
        return None
    bound = Decimal(10) ** 30  # beyond any allowed value: '1e400' is refused as out of range, not expanded
    return int(max(-bound, min(bound, value)))


def parse_int_list(text: str, what: str, *, minimum: int = 0, maximum: int = INT64_MAX,
                   max_values: int = MAX_VALUES) -> tuple[int, ...]:
    """Comma-separated whole numbers and inclusive ranges LO..HI (or LO-HI), in order,
    each in [minimum, maximum]; at most `max_values` in all. Raises IntListError."""
    head = f"{what} {text!r}"
    out: list[int] = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        if ".." in part:
            lo_text, hi_text = part.split("..", 1)
        elif "-" in part[1:]:  # a leading '-' is a sign: '-3' is a (refused) negative number
            cut = part.index("-", 1)
            lo_text, hi_text = part[:cut], part[cut + 1:]
        else:
            lo_text = hi_text = part
        lo, hi = _whole(lo_text), _whole(hi_text)
        if lo is None or hi is None:
            raise IntListError(f"{head}: {part!r} is not a whole number or a range LO..HI; {EXAMPLE}")
        for value in (lo, hi):
            if not minimum <= value <= maximum:
                raise IntListError(f"{head}: {part!r} is out of range; values must be in [{minimum}, {maximum}]")
        if hi < lo:
            raise IntListError(f"{head}: range {part!r} is reversed (LO..HI needs LO <= HI)")
        if len(out) + hi - lo + 1 > max_values:
            raise IntListError(f"{head}: {part!r} makes more than {max_values} values; give fewer")
        out.extend(range(lo, hi + 1))
    if not out:
        raise IntListError(f"{head}: no values given; {EXAMPLE}")
    return tuple(out)
