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


@dataclass(frozen=True)
class Frames:
    """Drawn frames of one failure pair (or sample): per rollout a caption, a filmstrip
    PNG and an optional animated WebP, embedded in the page as data: URLs."""

    name: str
    title: str
    strips: tuple[tuple[str, bytes, bytes | None], ...]  # (caption, filmstrip png, animation webp)
    caption: str = ""


Block = Figure | Table | Note | Frames
