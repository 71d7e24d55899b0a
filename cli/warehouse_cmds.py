"""Commands that read the warehouse or bring rows into it without JAX."""
from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from retland.cli.app import (MAX_BOOTSTRAP, CliError, FormatOpt, OutputFormat, OutputOpt, WarehouseOpt, app, console, emit,
                             err_console)
from retland.cli.selection import parse_sources, source_option


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
    from retland.warehouse import Warehouse, resolve_root
    from retland.ingest.returns import import_returns as run_import

    wh = Warehouse(resolve_root(warehouse))  # created by the import once the file has passed every check
    summary = run_import(wh, file, tag=tag)
    console.print(
        f"imported {summary.rows_written} new rows of {summary.rows_in_file} "
        f"({summary.distributions} distributions, {summary.runs} runs) into {wh.root}"
    )


STATISTICS = ("mean", "std", "skewness", "mode", "ltp", "cvar")
# What a terminal table shows of a bootstrap by default: the paper's headline statistics.
BOOTSTRAP_COLUMNS = ("mean", "ltp", "cvar")


def _columns(text: str | None, bootstrap: bool) -> tuple[str, ...]:
    if text is None:
        return BOOTSTRAP_COLUMNS if bootstrap else STATISTICS
    if text.strip().lower() == "all":
        return STATISTICS
    cols = tuple(dict.fromkeys(c.strip().lower() for c in text.split(",") if c.strip()))
    bad = [c for c in cols if c not in STATISTICS]
    if bad or not cols:
        from retland.cli.app import CliError

        raise CliError(f"--columns {text!r}: choose from {', '.join(STATISTICS)} (comma-separated) or all")
    return cols


def stats_display(df, columns, bootstrap: bool):
    """The terminal table of `stats`: keys, n, each chosen statistic rounded (as
    `value [lo, hi]` with a bootstrap), `mode≤0` (yes where mode_nonpositive; shown when
    any row has it) next to the LTP, and the run's source. run_id is shown only where two rows would otherwise
    look the same (e.g. derived runs of one seed)."""
    import polars as pl

    from retland.cli.app import ci_cell, rounded

    keys = ["algo", "env", "variant", "seed", "step", "operator", "source"]
    dup = df.height > 0 and df.select(keys).is_duplicated().any()
    cells = []
    for c in columns:
        if bootstrap and f"{c}_lo" in df.columns:
            values = [ci_cell(v, lo, hi) for v, lo, hi in df.select(c, f"{c}_lo", f"{c}_hi").iter_rows()]
        else:
            values = [rounded(v) for v in df[c].to_list()]
        cells.append(pl.Series(f"{c} [95% CI]" if bootstrap else c, values, dtype=pl.String))
        if c == "ltp" and "mode_nonpositive" in df.columns and df["mode_nonpositive"].any():
            # the column mode_nonpositive: the LTP's threshold is <= 0 there
            cells.append(pl.Series("mode≤0", ["yes" if v else "" for v in df["mode_nonpositive"].to_list()],
                                   dtype=pl.String))
    out = df.select(*keys[:-1], "n").with_columns(cells).with_columns(df["source"])
    if dup:
        out = out.with_columns(df["run_id"])
    return out, [s.name for s in cells]


@app.command()
def stats(
    alpha: Annotated[float, typer.Option(help="CVaR level α in (0, 1]: mean of the worst α share of returns.")] = 0.1,
    beta: Annotated[float, typer.Option(help="LTP threshold β: share of returns below β × mode.")] = 0.5,
    where: Annotated[Optional[str], typer.Option(
        help="SQL condition on algo, env, variant, seed, step, operator, run_id, source, n or a statistic, "
             "e.g. \"env = 'hopper' AND step >= 500000\" or \"ltp > 0\".")] = None,
    source: source_option("to summarise; default trained,imported,added") = "trained,imported,added",
    bootstrap: Annotated[int, typer.Option(
        "--bootstrap", metavar="[N]",
        help="Add 95% bootstrap CIs from N resamples (--bootstrap alone: 1000; 0: none) as <stat>_lo/<stat>_hi; "
             "a terminal table shows them as `value \\[lo, hi]`.")] = 0,
    columns: Annotated[Optional[str], typer.Option(
        help="Statistics in the terminal table (comma-separated from mean, std, skewness, mode, ltp, cvar, or "
             "all). Default: all six, or mean,ltp,cvar with --bootstrap. csv/json/parquet always hold every "
             "column at full precision.", show_default=False)] = None,
    fmt: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Statistics of every post-update return distribution: n, mean, std, skewness,
    mode, LTP and CVaR, one row per (run, step, operator), with the run's source.

    LTP is the share of returns below β × mode for every mode; where the mode is ≤ 0
    (a policy that mostly fails; the paper's Fig. 2 puts these on the right border) the
    threshold is ≤ 0, and the column mode_nonpositive is true (the terminal table's
    mode≤0 says yes; --where "NOT mode_nonpositive" leaves them out). The terminal table
    rounds (1 decimal from 100 up, 2 from 1, 3 below); csv, json and parquet keep full
    precision and every column, including run_id and mode_nonpositive, named as in the
    distribution_stats view (operator_id; --where names it operator)."""
    from retland.analyses.distributions import StatsRequest

    sources = parse_sources(source)
    if not 0 <= bootstrap <= MAX_BOOTSTRAP:
        raise CliError(f"--bootstrap {bootstrap}: give a whole number of resamples in [0, {MAX_BOOTSTRAP}]")
    request = StatsRequest(where=where, sources=sources, alpha=alpha, beta=beta, bootstrap=bootstrap)
    execute_stats(request, warehouse, fmt=fmt, output=output, columns=columns)


def execute_stats(request, warehouse, progress: bool = True, *, fmt: OutputFormat = OutputFormat.table,
                  output=None, columns: str | None = None) -> None:
    """Compute a StatsRequest (`retland.analyses.distributions.run_request`) and print
    or write what `retland stats` does; `retland study` calls this for its report stage."""
    from retland.analyses.distributions import run_request
    from retland.warehouse import Warehouse

    table = fmt is OutputFormat.table
    cols = _columns(columns, bool(request.bootstrap)) if table else STATISTICS
    wh = Warehouse.open(warehouse, create=False)
    df = run_request(wh, request)
    title = f"post-update return distributions (α={request.alpha}, β={request.beta}; sources {', '.join(request.sources)})"
    if table:
        df, right = stats_display(df, cols, request.bootstrap > 0)
        emit(df, fmt, output, title=title, right=right)
    else:  # files carry the view's column names: operator_id, as distribution_stats and purd_stats
        emit(df.rename({"operator": "operator_id"}), fmt, output, title=title)


# Rows a terminal shows by default: a query that returns millions stops here (--limit 0 lifts it).
TERMINAL_ROWS = 10_000

LimitOpt = Annotated[Optional[int], typer.Option(
    "--limit", help=f"Return at most this many rows (0: no limit). Default: {TERMINAL_ROWS} when printing to the "
                    "terminal, no limit with --output (written as it streams).", show_default=False)]
TimeoutOpt = Annotated[Optional[float], typer.Option(
    "--timeout", help="Stop a query that runs longer than this many seconds (0 or unset: no limit). "
                      "Ctrl-C always stops it.", show_default=False)]


def check_limits(limit: int | None, timeout: float | None) -> None:
    import math

    from retland.cli.app import CliError

    if limit is not None and not 0 <= limit <= 2**62:
        raise CliError(f"--limit {limit}: give a whole number >= 0 (0: no limit)")
    if timeout is not None and not (math.isfinite(timeout) and timeout >= 0):
        raise CliError(f"--timeout {timeout}: give a number of seconds >= 0 (0: no limit)")


def run_user_query(con, sql: str, fmt: OutputFormat, output: Path | None, limit: int | None,
                   timeout: float | None) -> None:
    """One read-only statement of a user, stoppable (Ctrl-C, --timeout), with the row limit
    of a terminal; results for a file stream to it (parquet/csv) in Arrow batches."""
    from retland.cli.app import CliError, check_output_file
    from retland.warehouse.readonly import execute_readonly, run_cancellable

    if fmt is OutputFormat.parquet and output is None:
        raise CliError("--format parquet needs --output FILE")
    if output is not None:
        check_output_file(output)
    if limit is None:
        limit = TERMINAL_ROWS if output is None else 0
    rel = execute_readonly(con, sql)  # checked and bound, not run yet
    if output is not None and fmt in (OutputFormat.parquet, OutputFormat.csv):
        src = rel.limit(limit) if limit else rel
        n = run_cancellable(con, lambda: _stream_to_file(src, fmt, output), timeout)
        err_console.print(f"wrote {n} rows to {output}")
        return
    df = run_cancellable(con, lambda: (rel.limit(limit + 1) if limit else rel).pl(), timeout)
    cut = bool(limit) and df.height > limit
    if cut:
        df = df.head(limit)
    emit(df, fmt, output)
    if cut:
        err_console.print(f"[yellow]note:[/] showing the first {limit} rows; --limit 0 shows all, "
                          "--output FILE -f parquet writes all as they stream", highlight=False, soft_wrap=True)


def _stream_to_file(rel, fmt: OutputFormat, output: Path) -> int:
    """Write a relation's rows batch by batch (memory stays at one batch) to a hidden temp
    file next to `output`, renamed into place when complete."""
    import os

    import pyarrow as pa

    from retland.cli.app import CliError

    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
    n = 0
    try:
        reader = rel.to_arrow_reader(1 << 16)
        schema = reader.schema
        if fmt is OutputFormat.parquet:
            import pyarrow.parquet as pq

            writer = pq.ParquetWriter(tmp, schema, compression="zstd")
        else:
            import pyarrow.csv as pcsv

            nested = [f.name for f in schema if pa.types.is_nested(f.type)]
            if nested:
                raise CliError(f"columns {', '.join(nested)} are lists or structs, which CSV cannot hold; "
                               "use -f parquet or -f json")
            writer = pcsv.CSVWriter(tmp, schema)
        with writer:
            for batch in reader:
                writer.write_batch(batch)
                n += batch.num_rows
        os.replace(tmp, output)
    except OSError as exc:
        raise CliError(f"--output {output}: cannot write it: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return n


@app.command()
def query(
    sql: Annotated[str, typer.Argument(help="One read-only SQL statement: a query (plain or WITH …), DESCRIBE, "
                                            "SHOW, SUMMARIZE or EXPLAIN.")],
    fmt: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    limit: LimitOpt = None,
    timeout: TimeoutOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Run SQL over the warehouse views (runs, checkpoints, operators,
    post_update_returns, evaluations, distribution_stats, …). Statements that could
    write are refused and nothing is touched.

    Ctrl-C stops a running query at once (exit 130). The terminal shows at most 10000
    rows unless --limit says otherwise; with --output every row is written as it streams."""
    from retland.warehouse import Warehouse

    check_limits(limit, timeout)
    wh = Warehouse.open(warehouse, create=False)
    con = wh.connect()
    try:
        run_user_query(con, sql, fmt, output, limit, timeout)
    finally:
        con.close()


def steps_text(steps: list[int]) -> str:
    """Checkpoint steps for a terminal cell: all of them, or `first … last every d (count)`
    for four or more evenly spaced ones (csv/json/parquet keep the list)."""
    d = steps[1] - steps[0] if len(steps) > 1 else 0
    if len(steps) >= 4 and all(b - a == d for a, b in zip(steps, steps[1:])):
        return f"{steps[0]} … {steps[-1]} every {d} ({len(steps)})"
    return ", ".join(map(str, steps))


@app.command()
def runs(
    run: Annotated[Optional[str], typer.Option(
        "--run", help="Only runs whose id starts with this (a unique prefix is enough).", show_default=False)] = None,
    seed: Annotated[Optional[int], typer.Option(help="Only runs of this training seed.", show_default=False)] = None,
    source: source_option("to list; default all") = "all",
    fmt: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Runs in the warehouse with their checkpoint steps (the values --step takes) and
    sampled distributions.

    When post_update_returns cannot be read (a damaged part), the runs are still listed,
    without their distribution counts, and a warning names the fix."""
    from retland.warehouse import Warehouse
    from retland.warehouse.runs import list_runs

    sources = parse_sources(source)
    wh = Warehouse.open(warehouse, create=False)
    # without readable post_update_returns, the runs and checkpoints alone
    df = list_runs(wh, sources, run, seed)
    if fmt is OutputFormat.table and output is None:
        import polars as pl

        df = df.with_columns(pl.Series("steps", [steps_text(v or []) for v in df["steps"].to_list()], dtype=pl.String),
                             pl.col("best_eval_return").round(1)).drop("checkpoints")
    emit(df, fmt, output, title="runs")
    for why in wh.unreadable.values():
        err_console.print(f"[yellow]warning:[/] {escape(why)}", highlight=False, soft_wrap=True)


@app.command("ls")
def ls(warehouse: WarehouseOpt = None) -> None:
    """What the warehouse holds, table by table: rows, parts and bytes on disk."""
    import polars as pl

    from retland.warehouse import TABLES, Warehouse
    from retland.warehouse.catalog import row_count
    from retland.warehouse.log import committed_paths

    wh = Warehouse.open(warehouse, create=False)
    con = wh.connect()
    state = wh.committed()
    rows = []
    try:
        for name, spec in TABLES.items():
            files = [wh.root / rel for rel in committed_paths(state, name) if (wh.root / rel).is_file()]
            n = None if name in wh.unreadable else row_count(con, name)
            rows.append({"table": name, "rows": n, "parts": len(files),
                         "MiB": round(sum(p.stat().st_size for p in files) / 2**20, 3), "about": spec.doc})
    finally:
        con.close()
    console.print(f"warehouse: {wh.root}")
    emit(pl.DataFrame(rows), OutputFormat.table, None)
    for why in wh.unreadable.values():
        err_console.print(f"[yellow]warning:[/] {escape(why)}", highlight=False, soft_wrap=True)


@app.command("sql-init")
def sql_init(warehouse: WarehouseOpt = None) -> None:
    """(Re)write <warehouse>/init.sql, the views for a stock DuckDB client, and print how
    to use it. Its paths are relative to the folder, so a copied or moved warehouse needs
    no rewrite; run it after upgrading retland, to get the current views."""
    from retland.warehouse import Warehouse

    wh = Warehouse.open(warehouse, create=False)
    path = wh.write_init_sql()
    console.print(f"wrote {path}\nopen it with:  cd {shlex.quote(str(wh.root))} && duckdb -init init.sql")


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
    as before. Compaction deletes the merged parts, so it takes the warehouse's lock
    alone: while another retland process (a sampling job, a query, a notebook) has the
    warehouse open it refuses, naming them, and exits 2; while it runs, others wait for
    it by refusing to start. Temp files of writes that died (a killed compaction or job)
    are moved to quarantine/ first.
    """
    import polars as pl
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from retland.warehouse import Warehouse
    from retland.warehouse.compact import checkpoint_log, compact_folder, plan
    from retland.warehouse.health import quarantine, stray_temp_files
    from retland.warehouse.lock import exclusive

    wh = Warehouse.open(warehouse, create=False)
    items = plan(wh.root, table, min_parts)
    if dry_run:
        if items:
            emit(pl.DataFrame([{"table": i.table, "folder": wh.relative(i.folder), "parts": len(i.parts),
                                "MiB": round(i.bytes / 2**20, 3)} for i in items]), OutputFormat.table, None)
        console.print(f"dry run: {len(items)} folders, {sum(len(i.parts) for i in items)} parts; nothing changed")
        return
    results = []
    with exclusive(wh.root, "compaction"):
        strays = stray_temp_files(wh.root, exclusive=True)
        for src, dst in quarantine(wh.root, strays):
            console.print(f"moved stray temp file {wh.relative(src)} -> {wh.relative(dst)}")
        items = plan(wh.root, table, min_parts)
        if not items:
            console.print(f"nothing to compact in {wh.root} (no folder holds {min_parts} or more parts)")
            return
        with Progress(TextColumn("compacting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as bar:
            task = bar.add_task("compact", total=len(items))
            for item in items:
                results.append(compact_folder(item))
                bar.advance(task)
        checkpoint_log(wh.root)
    before = sum(r.parts_before for r in results)
    dropped = sum(r.rows_before - r.rows_after for r in results)
    mib = (sum(r.bytes_before for r in results) - sum(r.bytes_after for r in results)) / 2**20
    console.print(f"compacted {len(results)} folders: {before} parts -> {len(results)}, "
                  f"{dropped} duplicate rows dropped, {mib:.2f} MiB saved")


@app.command()
def check(
    quarantine_found: Annotated[bool, typer.Option(
        "--quarantine", help="Move what was found into <warehouse>/quarantine/<time>/ (never deleted), "
                             "so the rest of the warehouse reads again. Needs the warehouse to itself.")] = False,
    deep: Annotated[bool, typer.Option(
        help="Read every part whole, not only its footer: finds damaged data pages too (slower).")] = False,
    warehouse: WarehouseOpt = None,
) -> None:
    """Find what makes the warehouse unreadable: damaged Parquet parts (a truncated file
    from a full disk or an interrupted copy), temp files of writes that died, and runs
    whose training died before their first checkpoint.

    Without --quarantine it only lists them (exit 1 when something is found, 0 when the
    warehouse is healthy). With --quarantine, damaged parts and stray temp files are moved
    aside; a quarantined part's rows are gone from every query, and re-running the job
    that wrote them recomputes exactly those rows. Orphan runs are listed (a job still
    before its first checkpoint looks the same); `retland train --resume` restarts a dead
    one. One line per problem: `<problem>: <path or run> (<detail>)`.
    """
    from retland.train.checkpoints import orphan_runs
    from retland.warehouse import Warehouse
    from retland.warehouse.health import quarantine, scan
    from retland.warehouse.lock import exclusive

    wh = Warehouse.open(warehouse, create=False)
    if quarantine_found:
        with exclusive(wh.root, "check --quarantine"):
            findings = scan(wh.root, deep=deep, exclusive=True)
            moved = quarantine(wh.root, findings)
        for src, dst in moved:
            console.print(f"moved {wh.relative(src)} -> {wh.relative(dst)}")
    else:
        findings = scan(wh.root, deep=deep)
    orphans = orphan_runs(wh)
    lines = [f"{f.kind}: {wh.relative(f.path)} ({f.detail})" for f in findings]
    lines += [f"orphan run: {o.run_id} (no checkpoint since {o.created_at:%Y-%m-%d %H:%M} UTC: its job died "
              "before the first one, or is still running; `retland train --resume` restarts a dead one)"
              for o in orphans]
    if not lines:
        console.print(f"{wh.root}: no damaged parts, stray temp files or orphan runs")
        return
    for line in lines:
        typer.echo(line)
    if not quarantine_found:
        if findings:
            console.print("`retland check --quarantine` moves the damaged parts and temp files aside")
        raise typer.Exit(1)
