"""What a report section returns: figures, tables and notes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl


@dataclass(frozen=True)
class Figure:
    """One chart of a section; `name` is unique in the report (file names, element ids)."""

    name: str
    chart: Any  # an Altair top-level chart
    caption: str = ""


@dataclass(frozen=True)
class Table:
    """A small table shown as HTML (not exported as an image)."""

    name: str
    frame: pl.DataFrame
    caption: str = ""


@dataclass(frozen=True)
class Note:
    """One line instead of (or beside) a chart: what is missing, or what was left out."""

    text: str


Block = Figure | Table | Note
