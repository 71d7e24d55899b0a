"""Terminal tables that never break a number or a name across lines.

A reader takes the first line of a wrapped cell and reads the wrong number (`1142` /
`.0`), so every command's table is printed here, by one rule:

- every column is at least as wide as its header and its widest value (in terminal
  cells: a CJK character counts two); prose (a description, a command) and lists may
  wrap, at spaces only, and share the room the other columns leave;
- a table wider than the terminal first moves the columns that hold one value in every
  row into a line above it (`in every row: algo td3 · env hopper`); if it is still too
  wide, it is printed as one block per row (`column  value` lines), with a line saying so
  (a key/value table of two columns stays a table);
- the title is a plain line above the table, never wrapped or read as markup;
- piped or redirected output is never capped: the table is as wide as it needs.

The terminal's width is $COLUMNS when set, else the terminal's own; piped output has none.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

# Borders and padding of rich's default box: "│ " before each column, " │" after the last.
_EDGE = 4
_BETWEEN = 3


@dataclass(frozen=True)
class Column:
    name: str
    justify: str = "left"  # "left" | "right"


def terminal_width(console: Console | None = None) -> int | None:
    """Columns available to a table: $COLUMNS when set (it wins, for piped output too:
    it is how a user or a test asks for a width), else the terminal's; None when the
    output is not a terminal (piped, redirected, captured) and nothing was set."""
    cols = os.environ.get("COLUMNS", "")
    if cols.isdigit() and int(cols) > 0:
        return int(cols)
    stream = console.file if console is not None else sys.stdout
    if getattr(stream, "isatty", lambda: False)():
        return shutil.get_terminal_size().columns
    return None


_WORD = re.compile(r"[^\W\d_]{3,}")  # three letters in a row: prose, not a number with its CI


def _is_text(cell: str) -> bool:
    """Whether a cell may wrap at its spaces: prose (a description, a command) or a list
    (`[80000, 100000, …]`); numbers, ids and `value [lo, hi]` intervals never wrap."""
    return " " in cell and (_WORD.search(cell) is not None or cell.lstrip().startswith(("[", "{")))


def _width(cell: str) -> int:
    """The narrowest a cell may be, in terminal cells: a value whole; prose, its longest word."""
    lines = cell.splitlines() or [""]
    if _is_text(cell):
        return max(cell_len(word) for line in lines for word in (line.split() or [""]))
    return max(cell_len(line) for line in lines)


def _joined(items: list[str], head: str, width: int) -> str:
    """`head` and the items joined by " · ", broken into lines of at most `width` between
    items only (an item longer than a line gets a line of its own)."""
    lines, line = [], head
    for k, item in enumerate(items):
        piece = item if k == 0 else " · " + item
        if k and cell_len(line) + cell_len(piece) > width:
            lines.append(line + " ·")
            line = " " * len(head) + item
        else:
            line += piece
    return "\n".join(lines + [line])


def _widths(columns: list[Column], rows: list[list[str]]) -> tuple[tuple[int, list[int], list[int]], int]:
    """((the narrowest the table may be, each column's narrowest, each column's natural
    width), the table's natural width), in terminal cells."""
    mins = [max([cell_len(c.name)] + [_width(r[i]) for r in rows]) for i, c in enumerate(columns)]
    natural = [max([cell_len(c.name)] + [max(cell_len(line) for line in (r[i].splitlines() or [""])) for r in rows])
               for i, c in enumerate(columns)]
    frame = _EDGE + _BETWEEN * max(len(columns) - 1, 0)
    return (sum(mins) + frame, mins, natural), sum(natural) + frame


def print_table(console: Console, columns: list[Column], rows: list[list[str | Text]], *, title: str | None = None,
                caption: str | None = None, width: int | None = None, fit: bool = True) -> None:
    """Print `rows` (cells as plain text, or rich Text for style) under `columns` on `console` by the module's rule.
    width: the columns to fit (default `terminal_width`); fit=False: as wide as needed
    (a file)."""
    width = (terminal_width(console) if width is None else width) if fit else None
    if title:  # a plain line, never rich markup (an operator id's [h=1000] is not a tag), never wrapped
        console.print(Text(title, style="bold"), soft_wrap=True)
    styled = rows
    rows = [[c.plain if isinstance(c, Text) else c for c in r] for r in rows]
    need, full = _widths(columns, rows)
    if width is not None and need[0] > width and len(rows) > 1:
        # Columns holding one value in every row (algo, env, operator, …) go into one line
        # above the table: nothing is lost, and most tables then fit.
        same = [i for i in range(len(columns)) if len({r[i] for r in rows}) == 1]
        if same and len(same) < len(columns):
            keep = [i for i in range(len(columns)) if i not in same]
            shared = _joined([f"{columns[i].name} {rows[0][i]}" for i in same], "in every row: ", width)
            console.print(Text(shared), soft_wrap=True)
            columns = [columns[i] for i in keep]
            rows = [[r[i] for i in keep] for r in rows]
            styled = [[r[i] for i in keep] for r in styled]
            need, full = _widths(columns, rows)
    need, mins, natural = need
    # a key/value table (show's config) stays a table: blocks of two lines say no more
    if width is not None and need > width and rows and len(columns) > 2:
        _print_records(console, columns, rows, caption, need, width)
        return
    # Every column gets an exact width: its narrowest, then the room left shared among the
    # columns that may wrap, up to their natural width (rich would shrink them all alike,
    # past their minimum, and then overflow the terminal).
    sizes = list(natural)
    if width is not None and full > width:
        sizes = list(mins)
        room = width - need
        wrap = [i for i in range(len(columns)) if any(_is_text(r[i]) for r in rows)]
        while room > 0 and wrap:
            grow = [i for i in wrap if sizes[i] < natural[i]]
            if not grow:
                break
            for i in grow:
                if room <= 0:
                    break
                sizes[i] += 1
                room -= 1
    table = Table(show_lines=False, header_style="bold", caption=caption)
    for i, (c, size) in enumerate(zip(columns, sizes)):
        prose = any(_is_text(r[i]) for r in rows)
        table.add_column(c.name, justify=c.justify, width=size, no_wrap=not prose, overflow="fold")
    for r in styled:
        table.add_row(*(cell if isinstance(cell, Text) else Text(cell) for cell in r))
    frame = _EDGE + _BETWEEN * max(len(columns) - 1, 0)
    _print_at(console, table, sum(sizes) + frame)


def _print_records(console: Console, columns: list[Column], rows: list[list[str]], caption: str | None,
                   need: int, width: int) -> None:
    """One block per row: `column  value`, the values unbroken."""
    console.print(Text(f"one block per row (the table needs {need} columns, the terminal has {width}; a wider "
                       "terminal, or -f csv where the command has --format, shows it as a table)"), soft_wrap=True)
    label = max(cell_len(c.name) for c in columns)
    for k, r in enumerate(rows, 1):
        console.print(Text(f"── {k} of {len(rows)} " + "─" * max(0, min(width, 40) - 8 - len(str(k)) - len(str(len(rows))))),
                      soft_wrap=True)
        for c, cell in zip(columns, r):
            lines = cell.splitlines() or [""]
            console.print(Text(c.name + " " * (label - cell_len(c.name)) + "  " + lines[0]), soft_wrap=True)
            for more in lines[1:]:
                console.print(Text(" " * (label + 2) + more), soft_wrap=True)
    if caption:
        console.print(Text(caption), soft_wrap=True)


def _print_at(console: Console, renderable, width: int) -> None:
    """Print at exactly `width` columns: rich caps a print's width at the console's, which
    for piped output is a guess (160), so the console is widened for the call."""
    saved = console.width
    console.width = max(width, saved)
    try:
        console.print(renderable, width=width, crop=False)
    finally:
        console.width = saved
