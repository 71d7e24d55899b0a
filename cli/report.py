"""`retland report`: the warehouse as one offline HTML page, or its charts as PNG/SVG."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from retland.cli.app import WarehouseOpt, app, console, renamed


class ReportFormat(str, Enum):
    html = "html"
    png = "png"
    svg = "svg"


@app.command()
def report(
    where: Annotated[Optional[str], typer.Option(
        help="SQL condition on algo, env, seed, step, operator, run_id, n or a statistic, as in "
             "`retland stats`, e.g. \"env = 'hopper' AND step >= 500000\".")] = None,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="HTML file, or folder for png/svg. Default: reports/<what it covers>[.html].",
        show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option("--out", hidden=True)] = None,
    fmt: Annotated[ReportFormat, typer.Option(
        "--format", "-f", help="html: one self-contained page; png/svg: one file per chart, for papers.")] = ReportFormat.html,
    alpha: Annotated[float, typer.Option(help="CVaR level α in (0, 1].")] = 0.1,
    beta: Annotated[float, typer.Option(help="LTP threshold β: share of returns below β × mode.")] = 0.5,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the 95% CIs in tooltips (0: none).")] = 1000,
    warehouse: WarehouseOpt = None,
) -> None:
    """Write a report of the warehouse: contents, learning curves, the landscape map
    linked to each checkpoint's post-update return histogram, α-CVaR rankings, and the
    later analyses (landscape, failures, interpolate, stabilize) once their data exist.
    Prints the absolute path written and, for the HTML page, its file:// URL."""
    from retland.report import ReportRequest

    output = renamed(output, out, None, "--output", "--out")
    execute(ReportRequest(where=where, output=output, fmt=fmt.value, alpha=alpha, beta=beta, bootstrap=bootstrap),
            warehouse)


def execute(request, warehouse: Path | None, progress: bool = True) -> None:
    """Write a ReportRequest's report (`retland.report.run_request`) and print what
    `retland report` prints; `retland study` calls this for its report stage."""
    from retland.report import run_request
    from retland.warehouse import Warehouse

    wh = Warehouse.open(warehouse, create=False)
    path = Path(run_request(wh, request)).resolve()
    console.print(str(path), highlight=False, soft_wrap=True)
    if path.is_file():
        console.print(f"open it: {path.as_uri()}", highlight=False, soft_wrap=True)
