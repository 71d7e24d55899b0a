"""Terminal tables never break a number or a name across lines (cli/tables.py), at any
terminal width and piped."""
from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from conftest import run_cli

WIDTHS = [80, 100, 120, None]  # None: piped (no terminal, no $COLUMNS)


def _cells(text: str) -> set[str]:
    """Every cell value of the box tables in `text` (one line each: read at a width where
    nothing wraps)."""
    out = set()
    for line in text.splitlines():
        if line.startswith("│"):
            out |= {c.strip() for c in line.strip("│").split("│") if c.strip()}
    return out


def _whole(value: str, text: str) -> bool:
    """`value` appears in `text` on one line, not as part of a longer token."""
    return re.search(rf"(?<![\w.\-]){re.escape(value)}(?![\w.\-])", text) is not None


def _broken(values: set[str], text: str) -> list[str]:
    """The values (those without spaces: numbers, ids; and each word of the others) that
    do not appear whole in `text`."""
    words = {w for v in values for w in v.split()}
    return sorted(w for w in words if not _whole(w, text))


@pytest.mark.parametrize("width", WIDTHS)
def test_print_table_keeps_every_value_whole(width):
    from retland.cli.tables import Column, print_table

    columns = [Column("run_id"), Column("operator"), Column("failure_reward_after", "right"),
               Column("mean [95% CI]", "right"), Column("variant"), Column("what")]
    rows = [[f"td3-hopper-20261207-123005-f135-s{i}", "td3[h=1000,seed=0]", f"{1142.0 + i:.1f}",
             f"{0.0859375 * i:.6g} [0.0001, 0.3125]", "paper", "one update, then a 1000-step rollout from s0"]
            for i in range(3)]
    buf = io.StringIO()
    print_table(Console(file=buf, width=width or 80), columns, rows, title="distributions", width=width,
                fit=width is not None)
    text = buf.getvalue()
    values = {c for r in rows for c in r} | {c.name for c in columns}
    assert not _broken(values, text), text
    if width is not None:
        assert max(len(line) for line in text.splitlines()) <= width or "one block per row" in text


COMMANDS = {
    "stats": ["stats"],
    "stats-bootstrap": ["stats", "--bootstrap"],
    "runs": ["runs"],
    "query": ["query", "SELECT * FROM distribution_stats ORDER BY run_id"],
    "query-runs": ["query", "SELECT * FROM run_summary ORDER BY run_id"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_commands_never_split_a_value_at_any_width_or_piped(filled, capsys, monkeypatch, command):
    args = [*COMMANDS[command], "-w", filled]
    monkeypatch.setenv("COLUMNS", "2000")
    code, wide, err = run_cli(capsys, monkeypatch, *args)
    assert code == 0, err
    values = _cells(wide)
    assert values, wide
    for width in WIDTHS:
        if width is None:
            monkeypatch.delenv("COLUMNS")
        else:
            monkeypatch.setenv("COLUMNS", str(width))
        code, text, err = run_cli(capsys, monkeypatch, *args)
        assert code == 0, err
        assert not _broken(values, text), f"at {width or 'piped'} columns:\n{text}"
        if width is None:
            assert text == wide  # piped output is never capped
