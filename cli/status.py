"""`retland status`: how far sampling has got, per distribution, from any machine that
mounts the warehouse (reads only)."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from retland.cli.app import CliError, OutputFormat, WarehouseOpt, app, console, emit


def status_table(wh, samples: int | None = None, operator: str | None = None, run: str | None = None,
                 stale_after: float | None = None):
    """One row per distribution that has rows or live leases: rows stored, chunk size,
    complete chunks (of N when given), chunks being computed now and by whom."""
    import math

    import polars as pl

    from retland.purd.chunks import chunk_complete, stored_distributions
    from retland.purd.leases import STALE_AFTER, live_leases

    rows = stored_distributions(wh, operator, run)
    leases = [x for x in live_leases(wh.root, STALE_AFTER if stale_after is None else stale_after)
              if (not operator or x.operator_id.startswith(operator)) and (not run or x.run_id.startswith(run))]
    by_key: dict[tuple, dict] = {}
    for r in rows:
        by_key[(r["run_id"], int(r["step"]), r["operator_id"])] = r
    busy: dict[tuple, list] = {}
    for x in leases:
        busy.setdefault((x.run_id, x.step, x.operator_id), []).append(x)
        by_key.setdefault((x.run_id, x.step, x.operator_id), {"rows": 0, "chunk_sizes": [x.batch_size], "indices": []})
    out = []
    for key in sorted(by_key):
        r = by_key[key]
        sizes = sorted(int(b) for b in r["chunk_sizes"] if b is not None)
        b = sizes[0] if len(sizes) == 1 else None
        present = set(r["indices"])
        row = {"run_id": key[0], "step": key[1], "operator": key[2], "rows": int(r["rows"]),
               "chunk_size": b if b is not None else ",".join(map(str, sizes)) or None}
        if samples:
            below = sum(1 for i in present if i < samples)
            row["below_n"] = below
            row["done"] = f"{100 * below / samples:.0f}%"
            if b:
                chunks = math.ceil(samples / b)
                full = sum(1 for k in range(chunks) if chunk_complete(k, b, samples, present))
                row["chunks"] = f"{full}/{chunks}"
        held = busy.get(key, [])
        row["computing"] = len(held)
        row["by"] = ", ".join(sorted({x.holder for x in held})) or None
        out.append(row)
    for row in out:
        row["chunk_size"] = None if row["chunk_size"] is None else str(row["chunk_size"])
    return pl.DataFrame(out, infer_schema_length=None) if out else pl.DataFrame()


@app.command()
def status(
    samples: Annotated[Optional[int], typer.Option(
        help="N of the job: show each distribution's share of indices 0..N-1 and its complete chunks.",
        show_default=False)] = None,
    operator: Annotated[Optional[str], typer.Option(
        help="Only operator ids starting with this, e.g. td3 or 'td3[h=1000'.", show_default=False)] = None,
    run: Annotated[Optional[str], typer.Option(help="Only run ids starting with this.", show_default=False)] = None,
    format: Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")] = OutputFormat.table,
    warehouse: WarehouseOpt = None,
) -> None:
    """Sampling progress per distribution: rows stored, chunk size B, complete chunks of
    N (with --samples), and chunks being computed now with the host:pid (and SLURM job)
    holding their lease. Reads only; run it from any machine that mounts the warehouse
    while an array job fills it."""
    from retland.warehouse import Warehouse

    if samples is not None and samples < 1:
        raise CliError(f"--samples {samples}: give a whole number >= 1")
    wh = Warehouse.open(warehouse, create=False)
    df = status_table(wh, samples, operator, run)
    if df.height == 0:
        console.print("no sampled distributions" + (" match" if operator or run else " yet")
                      + f" in {wh.root}", highlight=False, soft_wrap=True)
        return
    emit(df, format, None, title=f"sampling status of {wh.root}")
    if format is OutputFormat.table:
        computing = int(df["computing"].sum())
        line = f"{df.height} distribution(s), {int(df['rows'].sum())} rows"
        if samples:
            below = int(df["below_n"].sum())
            line += f"; indices below N: {below} of {samples * df.height} ({100 * below / (samples * df.height):.0f}%)"
        console.print(line + f", {computing} chunk(s) being computed now", highlight=False, soft_wrap=True)
