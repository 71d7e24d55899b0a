"""Commands that read the warehouse or bring rows into it without JAX."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from retland.cli.app import FormatOpt, OutputFormat, OutputOpt, WarehouseOpt, app, console, emit


@app.command("import-returns")
def import_returns(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet with columns algo, env, seed, step, operator, "
                                              "update_index, return [, discounted_return, episode_length, terminated].")],
    tag: Annotated[str, typer.Option(help="Part of the run ids created: <algo>-<env>-<tag>-s<seed>.")] = "imported",
    warehouse: WarehouseOpt = None,
) -> None:
    """Import post-update returns computed elsewhere.

    Creates the runs, checkpoints and operators the rows need, marked as imported. The
    whole file is validated before anything is written; rows already stored are skipped,
    so importing the same file twice adds nothing.
    """
    from retland.importing import import_returns as run_import
    from retland.warehouse import Warehouse

    wh = Warehouse.open(warehouse)
    summary = run_import(wh, file, tag=tag)
    console.print(
        f"imported {summary.rows_written} new rows of {summary.rows_in_file} "
        f"({summary.distributions} distributions, {summary.runs} runs) into {wh.root}"
    )


@app.command()
def stats(
    alpha: Annotated[float, typer.Option(help="CVaR level α in (0, 1]: mean of the worst α share of returns.")] = 0.1,
    beta: Annotated[float, typer.Option(help="LTP threshold β: share of returns below β × mode.")] = 0.5,
    where: Annotated[Optional[str], typer.Option(
        help="SQL condition on algo, env, seed, step, operator, run_id, n or a statistic, "
             "e.g. \"env = 'hopper' AND step >= 500000\".")] = None,
    bootstrap: Annotated[bool, typer.Option(help="Add 95% bootstrap CIs (1000 resamples) as <stat>_lo/<stat>_hi.")] = False,
    fmt: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Statistics of every post-update return distribution: n, mean, std, skewness,
    mode, LTP and CVaR, one row per (algo, env, seed, step, operator)."""
    from retland.distributions import distribution_stats
    from retland.warehouse import Warehouse

    wh = Warehouse.open(warehouse, create=False)
    df = distribution_stats(wh, alpha=alpha, beta=beta, where=where, bootstrap=bootstrap)
    if fmt is OutputFormat.table and output is None:
        df = df.drop("run_id", "ltp_note")
    emit(df, fmt, output, title=f"post-update return distributions (α={alpha}, β={beta})")


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="One read-only SQL statement (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN).")],
    fmt: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Run SQL over the warehouse views (runs, checkpoints, operators,
    post_update_returns, evaluations, distribution_stats, …). Statements that could
    write are refused and nothing is touched."""
    from retland.warehouse import Warehouse

    df = Warehouse.open(warehouse, create=False).query(sql)
    emit(df, fmt, output)


@app.command()
def runs(
    fmt: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Runs in the warehouse with their checkpoints and sampled distributions."""
    from retland.warehouse import Warehouse

    df = Warehouse.open(warehouse, create=False).query(
        """
        SELECT r.run_id, r.algo, r.env, r.seed, r.source,
               count(DISTINCT c.step) AS checkpoints,
               max(c.eval_return) AS best_eval_return,
               coalesce(any_value(d.distributions), 0) AS distributions,
               coalesce(any_value(d.samples), 0) AS samples
        FROM runs r
        LEFT JOIN checkpoints c USING (run_id)
        LEFT JOIN (SELECT run_id, count(DISTINCT (step, operator_id)) AS distributions, count(*) AS samples
                   FROM post_update_returns GROUP BY run_id) d USING (run_id)
        GROUP BY ALL ORDER BY r.algo, r.env, r.seed, r.run_id
        """
    )
    emit(df, fmt, output, title="runs")


@app.command("ls")
def ls(warehouse: WarehouseOpt = None) -> None:
    """What the warehouse holds, table by table: rows, parts and bytes on disk."""
    import polars as pl

    from retland.warehouse import TABLES, Warehouse

    wh = Warehouse.open(warehouse, create=False)
    con = wh.connect()
    rows = []
    try:
        for name, spec in TABLES.items():
            files = [p for p in wh.table_dir(name).rglob("*.parquet") if not p.name.startswith("part-00000000000000000000")]
            n = con.sql(f'SELECT count(*) FROM "{name}"').fetchall()[0][0]
            rows.append({"table": name, "rows": n, "parts": len(files),
                         "MiB": round(sum(p.stat().st_size for p in files) / 2**20, 3), "about": spec.doc})
    finally:
        con.close()
    console.print(f"warehouse: {wh.root}")
    emit(pl.DataFrame(rows), OutputFormat.table, None)


@app.command("sql-init")
def sql_init(warehouse: WarehouseOpt = None) -> None:
    """(Re)write <warehouse>/init.sql, the views for a stock DuckDB client, and print how
    to use it. Run it after moving a warehouse folder."""
    from retland.warehouse import Warehouse

    wh = Warehouse.open(warehouse, create=False)
    path = wh.write_init_sql()
    console.print(f"wrote {path}\nopen it with:  duckdb -init {path}")


@app.command()
def compact(
    table: Annotated[Optional[list[str]], typer.Option(
        "--table", help="Only this table (repeatable); default: every table.")] = None,
    min_parts: Annotated[int, typer.Option(help="Compact a folder only when it holds at least this many parts.")] = 2,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show what would be merged; change nothing.")] = False,
    warehouse: WarehouseOpt = None,
) -> None:
    """Merge each table folder's many small parts into one part sorted by key.

    Queries then read one footer per folder instead of thousands. The merged part holds
    exactly the rows the views show (first writer of a key wins), so every query answers
    as before. Run it while no other retland process (sampling job, query, report) uses
    the warehouse: a reader that listed the old parts fails when they disappear.
    """
    import polars as pl
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from retland.warehouse import Warehouse
    from retland.warehouse.compact import compact_folder, plan

    wh = Warehouse.open(warehouse, create=False)
    items = plan(wh.root, table, min_parts)
    if not items:
        console.print(f"nothing to compact in {wh.root} (no folder holds {min_parts} or more parts)")
        return
    if dry_run:
        emit(pl.DataFrame([{"table": i.table, "folder": wh.relative(i.folder), "parts": len(i.parts),
                            "MiB": round(i.bytes / 2**20, 3)} for i in items]), OutputFormat.table, None)
        console.print(f"dry run: {len(items)} folders, {sum(len(i.parts) for i in items)} parts; nothing changed")
        return
    results = []
    with Progress(TextColumn("compacting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("compact", total=len(items))
        for item in items:
            results.append(compact_folder(item))
            bar.advance(task)
    before = sum(r.parts_before for r in results)
    dropped = sum(r.rows_before - r.rows_after for r in results)
    mib = (sum(r.bytes_before for r in results) - sum(r.bytes_after for r in results)) / 2**20
    console.print(f"compacted {len(results)} folders: {before} parts -> {len(results)}, "
                  f"{dropped} duplicate rows dropped, {mib:.2f} MiB saved")
