"""Reports over the warehouse: Altair charts from SQL, one offline HTML page, PNG/SVG.

    from retland.report import build_charts, write_report
    charts = build_charts(wh, where="env = 'hopper'")   # {figure name: alt.Chart}
    path = write_report(wh)                             # reports/<what it covers>.html

Sections live in `retland.report.sections` (`SECTIONS`, `@section`); each one shows
its charts when its data exists, else one line naming the command that makes it.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..config.registry import ALGOS
from ..config.requests import number, options
from ..warehouse import Warehouse, WarehouseError
from . import html as page
from .blocks import Block, Figure, Note, Table
from .context import ReportContext
from .sections import SECTIONS, Section, section

__all__ = ["SECTIONS", "Section", "section", "Figure", "Table", "Note", "ReportContext", "build_sections",
           "build_charts", "write_report", "export_chart", "FORMATS", "ReportRequest", "run_request"]

FORMATS = ("html", "png", "svg")
REPORTS_DIR = Path("reports")


def _build(wh: Warehouse, where: str | None, alpha: float, beta: float, n_resamples: int,
           seed: int) -> tuple[list[tuple[Section, list[Block]]], str, str, str]:
    if not (0 < alpha <= 1):
        raise WarehouseError(f"--alpha must be in (0, 1], got {alpha}")
    if not (0 < beta <= 1):
        raise WarehouseError(f"--beta must be in (0, 1], got {beta}")
    if not 0 <= n_resamples <= 1_000_000:
        raise WarehouseError(f"--bootstrap must be in [0, 1000000], got {n_resamples}")
    con = wh.connect()
    try:
        ctx = ReportContext(con, where=where or None, alpha=alpha, beta=beta, n_resamples=n_resamples, seed=seed,
                            root=wh.root)
        built = [(s, blocks) for s in SECTIONS if (blocks := s.build(ctx)) is not None]
        return built, _report_name(wh, ctx), tasks_line(ctx), report_title(ctx)
    finally:
        con.close()


_VARIANT_TEXT = {"paper": "the paper's tasks (Brax 0.0.13's robots, terminations, rewards and observations)",
                 "brax": "brax 0.14's own rules (hopper and walker2d also end on torso angle; ant without contacts)",
                 "dmc": "the DeepMind Control task's own rules as MuJoCo Playground implements them (rewards in [0, 1], "
                        "1000 steps, no termination)"}


def tasks_line(ctx: ReportContext) -> str:
    """The header line saying which task rules and physics the report's runs used, and
    what still differs from the paper's tasks."""
    if not ctx.row_count("runs"):
        return "tasks: no runs"
    ids = sorted(set(ctx.checkpoints()["run_id"].to_list()))
    if not ids:
        return "tasks: no runs selected"
    rows = ctx.con.execute(
        "SELECT run_variant(variant, source) AS variant, backend, count(*) AS n FROM runs "
        "WHERE run_id IN (SELECT unnest(?::VARCHAR[])) GROUP BY ALL ORDER BY ALL", [ids]).fetchall()
    from retland.core.envs import PAPER_BACKEND, simulator

    parts, legacy = [], False
    for variant, backend, n in rows:
        rules = _VARIANT_TEXT.get(variant, "task rules unknown (imported)")
        physics = ("MuJoCo MJX (JAX) physics" if variant == "dmc" else
                   f"{simulator(backend, variant)} physics" if backend else "physics unknown")
        if variant == "paper" and backend and backend != PAPER_BACKEND:
            legacy = True
            rules = "the paper's task rules on brax 0.14's robots (a run from before retland had Brax 0.0.13's simulator)"
        parts.append(f"{n} run{'s' if n != 1 else ''}: variant `{variant or 'NULL'}`, {rules}, on {physics}")
    note = (" Runs on brax 0.14's physics are not comparable with the paper's number for number (docs/method.md §3)."
            if legacy or any(v == "brax" for v, _, _ in rows) else "")
    return "tasks: " + "; ".join(parts) + "." + note


def build_sections(wh: Warehouse, where: str | None = None, alpha: float = 0.1, beta: float = 0.5,
                   n_resamples: int = 1000, seed: int = 0) -> list[tuple[Section, list[Block]]]:
    """Every registered section, built: [(section, blocks)] in report order.

    where: SQL condition as in `retland stats --where` (see `retland.report.sections`).
    alpha, beta: CVaR level and LTP fraction. n_resamples: bootstrap resamples for the
    CIs in tooltips (0: no CIs).
    """
    return _build(wh, where, alpha, beta, n_resamples, seed)[0]


def build_charts(wh: Warehouse, where: str | None = None, **options) -> dict:
    """The report's charts for a notebook: {figure name: Altair chart}, in report order.
    Sections without data contribute nothing. Options as `build_sections`."""
    return {b.name: b.chart for _, blocks in build_sections(wh, where, **options)
            for b in blocks if isinstance(b, Figure)}


_OPERATORS = {">=": " ge ", "<=": " le ", "<>": " ne ", "!=": " ne ", ">": " gt ", "<": " lt ", "=": " eq "}


def _slug(text: str, limit: int = 48) -> str:
    text = re.sub("|".join(re.escape(op) for op in _OPERATORS), lambda m: _OPERATORS[m.group(0)], text)
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower()
    return slug[:limit].rstrip("-")


def report_title(ctx: ReportContext) -> str:
    """The page's title, as a person would write it: algorithms · tasks · runs (and the
    --where condition), e.g. "TD3 · hopper · 1 run"."""
    if not ctx.row_count("runs"):
        return "retland report · an empty warehouse"
    scope = ctx.checkpoints()
    if not scope.height:
        return "retland report · no runs selected" + (f" (where {ctx.where})" if ctx.where else "")
    algos = " & ".join(a.upper() if a in ALGOS else a for a in sorted(scope["algo"].unique()))
    envs = ", ".join(sorted(scope["env"].unique()))
    runs = scope["run_id"].n_unique()
    title = f"{algos} · {envs} · {runs} run{'s' if runs != 1 else ''}"
    return title + (f" · where {ctx.where}" if ctx.where else "")


def _report_name(wh: Warehouse, ctx: ReportContext) -> str:
    """What the report covers, as a file stem: <warehouse>_<algos>_<envs>[_where-<condition>],
    the algorithms and environments being those --where keeps."""
    parts = [_slug(wh.root.name) or "warehouse"]
    if ctx.row_count("runs"):
        scope = ctx.checkpoints()
        parts += ["-".join(_slug(a, 16) for a in sorted(scope["algo"].unique())) or "none",
                  "-".join(_slug(e, 16) for e in sorted(scope["env"].unique())) or "none"]
    else:
        parts.append("empty")
    if ctx.where:
        parts.append("where-" + _slug(ctx.where))
    return "_".join(parts)


def write_report(wh: Warehouse, out: str | os.PathLike | None = None, where: str | None = None,
                 fmt: str = "html", alpha: float = 0.1, beta: float = 0.5, n_resamples: int = 1000,
                 seed: int = 0, scale: float = 2.0) -> Path:
    """Write the report and return its path.

    fmt 'html': one self-contained file (default reports/<default_report_name>.html).
    fmt 'png' / 'svg': one file per figure, <NN>-<figure>.<fmt>, in a folder (default
    reports/<default_report_name>/); scale is the PNG pixel ratio.
    """
    if fmt not in FORMATS:
        raise WarehouseError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    page.check_renderer_room()  # before minutes of work
    if out is not None:  # before any work: a report takes minutes to build
        from retland.warehouse import refuse_inside_warehouse

        refuse_inside_warehouse(out, "--output")
        if fmt == "html" and Path(out).is_dir():
            raise WarehouseError(f"--output {out} is a folder; give the HTML file's path")
        if fmt != "html" and Path(out).exists() and not Path(out).is_dir():
            raise WarehouseError(f"--output {out} is a file; --format {fmt} writes one file per figure into a folder")
    built, name, tasks, title = _build(wh, where, alpha, beta, n_resamples, seed)
    if fmt == "html":
        path = Path(out) if out else REPORTS_DIR / f"{name}.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = [f"warehouse `{wh.root}`", f"--where `{where}`" if where else "all distributions (no --where)",
                f"LTP β = {beta:g} · CVaR α = {alpha:g} · bootstrap {n_resamples} resamples", tasks]
        text = page.render_page(title, meta, built)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path
    folder = Path(out) if out else REPORTS_DIR / name
    folder.mkdir(parents=True, exist_ok=True)
    figures = [b for _, blocks in built for b in blocks if isinstance(b, Figure)]
    for i, fig in enumerate(figures, start=1):
        export_chart(fig.chart, folder / f"{i:02d}-{fig.name}.{fmt}", scale=scale)
    return folder


def export_chart(chart, path: str | os.PathLike, scale: float = 2.0) -> Path:
    """One chart as PNG or SVG (by the file's suffix), rendered offline by vl-convert."""
    page.check_renderer_room()
    import vl_convert as vlc  # only PNG/SVG export needs the renderer (an 84 MB native library)

    version = page.VL_VERSION

    path = Path(path)
    spec = chart.to_dict()
    if path.suffix == ".png":
        path.write_bytes(vlc.vegalite_to_png(spec, vl_version=version, scale=scale))
    elif path.suffix == ".svg":
        path.write_text(vlc.vegalite_to_svg(spec, vl_version=version), encoding="utf-8")
    else:
        raise WarehouseError(f"cannot export a chart as {path.suffix or 'a file without suffix'}: use .png or .svg")
    return path


@dataclass(frozen=True)
class ReportRequest:
    """`retland report`: the page (fmt html) or its charts (png, svg) of the distributions
    `where` keeps, written to `output` (default under reports/), at α and β, with
    `bootstrap` resamples for the tooltips' CIs."""

    command: ClassVar[str] = "report"

    where: str | None = None
    output: Path | None = None
    fmt: str = "html"
    alpha: float = 0.1
    beta: float = 0.5
    bootstrap: int = 1000

    def argv(self) -> list[str]:
        d = ReportRequest()
        return ["report"] + options([
            ("--where", self.where), ("--output", str(self.output) if self.output is not None else None),
            ("--format", self.fmt if self.fmt != d.fmt else None),
            ("--alpha", number(self.alpha) if self.alpha != d.alpha else None),
            ("--beta", number(self.beta) if self.beta != d.beta else None), ("--bootstrap", self.bootstrap)])


def run_request(wh: Warehouse, request: ReportRequest, *, progress=None) -> Path:
    """Write the request's report (`write_report`); returns the path written."""
    return write_report(wh, out=request.output, where=request.where, fmt=request.fmt, alpha=request.alpha,
                        beta=request.beta, n_resamples=request.bootstrap)
