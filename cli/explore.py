"""`retland show RUN`, `retland export`, `retland sql`: the warehouse for people who do not
want to learn its views first.

All three read through the same confined, read-only connection as `retland query`
(`Warehouse.connect`, `readonly.execute_readonly`): nothing here can write.
"""
from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from retland.cli.app import CliError, OutputFormat, WarehouseOpt, app, console, emit, err_console, renamed
from retland.cli.selection import SeedOpt, resolve_run

CONFIG_PREFIX = "config."


def flatten(value, prefix: str = "") -> dict:
    """{'agent': {'hidden': [256, 256]}} -> {'agent.hidden': [256, 256]}: nested objects
    become dotted keys; lists stay values."""
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict = {}
    for k, v in value.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def config_columns(con, run_ids: list[str]):
    """One row per run id: run_id and its config flattened into `config.<key>` columns.
    Lists and mixed-type keys become JSON text, so every column has one type and CSV
    holds it too."""
    import polars as pl

    from retland.warehouse.runs import run_configs

    rows = run_configs(con)
    wanted = set(run_ids)
    flat = {r: flatten(json.loads(c)) if c else {} for r, c in rows.iter_rows() if r in wanted}
    keys = sorted({k for d in flat.values() for k in d})
    ids = sorted(flat)
    cols = [pl.Series("run_id", ids, dtype=pl.String)]
    for k in keys:
        values = [flat[r].get(k) for r in ids]
        kinds = {type(v) for v in values if v is not None}
        if not kinds:
            series = pl.Series(CONFIG_PREFIX + k, values, dtype=pl.String)
        elif kinds <= {str} or kinds == {bool} or kinds <= {int, float}:
            series = pl.Series(CONFIG_PREFIX + k, values, strict=False)
        else:  # lists, objects or mixed types: their JSON text
            series = pl.Series(CONFIG_PREFIX + k, [None if v is None else json.dumps(v) for v in values],
                               dtype=pl.String)
        cols.append(series)
    return pl.DataFrame(cols)


# ----------------------------------------------------------------------------- show

@app.command()
def show(
    run: Annotated[str, typer.Argument(help="Run id, or a unique prefix of one (with --seed to pick a seed).")],
    seed: SeedOpt = None,
    alpha: Annotated[float, typer.Option(help="CVaR level α of the distributions' statistics.")] = 0.1,
    beta: Annotated[float, typer.Option(help="LTP threshold β of the distributions' statistics.")] = 0.5,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="table, or json (one object with every "
                                                                     "section); csv/parquet: use `retland export`.")]
    = OutputFormat.table,
    warehouse: WarehouseOpt = None,
) -> None:
    """One run: what it is, its training config, its checkpoints (the steps --step
    takes), its evaluations during training, and the post-update return distributions
    sampled from it with their headline statistics."""
    from retland.analyses.distributions import distribution_stats
    from retland.warehouse import Warehouse
    from retland.warehouse.runs import run_checkpoints, run_evaluations, run_info

    if fmt not in (OutputFormat.table, OutputFormat.json):
        raise CliError(f"--format {fmt.value}: show prints table or json; `retland export` writes csv and parquet")
    wh = Warehouse.open(warehouse, create=False)
    rid = resolve_run(wh, run, seed, option="run")  # the positional RUN argument
    info = run_info(wh, rid)
    config = flatten(json.loads(info["config"][0])) if info["config"][0] else {}
    ckpts, evals = run_checkpoints(wh, rid), run_evaluations(wh, rid)
    lit = rid.replace("'", "''")
    dists = distribution_stats(wh, alpha=alpha, beta=beta, where=f"run_id = '{lit}'").select(
        "step", "operator", "n", "mean", "std", "skewness", "mode", "ltp", "mode_nonpositive", "cvar")
    if fmt is OutputFormat.json:
        typer.echo(json.dumps({
            "run": info.drop("config").to_dicts()[0], "config": config, "checkpoints": ckpts.to_dicts(),
            "evaluations": evals.to_dicts(), "distributions": dists.to_dicts()}, default=str, indent=1))
        return
    import polars as pl

    from retland.cli.app import rounded

    row = info.drop("config").to_dicts()[0]
    console.print(f"[bold]{escape(rid)}[/]: " + escape(", ".join(
        f"{k} {v}" for k, v in row.items() if k != "run_id" and v is not None)), highlight=False, soft_wrap=True)
    emit(pl.DataFrame({"key": list(config), "value": [json.dumps(v) if isinstance(v, (list, dict)) else str(v)
                                                      for v in config.values()]},
                      schema={"key": pl.String, "value": pl.String}), OutputFormat.table, None, "config")
    emit(ckpts.with_columns(pl.col("eval_return").round(1)), OutputFormat.table, None,
         f"checkpoints ({ckpts.height})")
    if evals.height:
        emit(evals.with_columns(pl.col("eval_return").round(1), pl.col("wall_seconds").round(1)),
             OutputFormat.table, None, f"evaluations during training ({evals.height})")
    else:
        console.print("no evaluations during training (imported or derived run)", highlight=False)
    if dists.height:
        shown = dists.with_columns(
            pl.Series(c, [rounded(v) for v in dists[c].to_list()], dtype=pl.String)
            for c in ("mean", "std", "skewness", "mode", "ltp", "cvar"))
        emit(shown, OutputFormat.table, None, f"post-update return distributions (α={alpha}, β={beta})",
             right=("mean", "std", "skewness", "mode", "ltp", "cvar"))
    else:
        console.print(f"no distributions sampled yet: retland sample --run {rid} --operator OPERATOR",
                      highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------- export

class ExportFormat(str, Enum):
    parquet = "parquet"
    csv = "csv"


@app.command()
def export(
    names: Annotated[list[str], typer.Argument(
        help="Tables or views to export (e.g. distribution_stats post_update_returns runs), or all.",
        show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder to write <name>.parquet|csv into.",
                                         show_default=False)],
    fmt: Annotated[ExportFormat, typer.Option("--format", "-f", help="File format.")] = ExportFormat.parquet,
    where: Annotated[Optional[str], typer.Option(
        help="SQL condition on the exported columns, e.g. \"env = 'hopper'\" (applied to every name).")] = None,
    config: Annotated[bool, typer.Option(
        "--with-config/--without-config",
        help="For tables and views with a run_id column, add the run's training config flattened into "
             "config.<key> columns (nested keys dotted, e.g. config.agent.batch_size).")] = True,
    old_config: Annotated[Optional[bool], typer.Option("--config/--no-config", hidden=True)] = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Write tables or views as Parquet or CSV files, for pandas or polars users who
    would rather not learn the views. Rows keyed by run_id get the run's config as
    columns, so a file can be grouped by any hyperparameter. Reads only; CSV writes
    list and struct values as JSON text."""
    import duckdb

    from retland.cli.app import _flat_for_csv, check_output_file
    from retland.warehouse import Warehouse
    from retland.warehouse.catalog import relation_rows, relations
    from retland.warehouse.readonly import query_error

    config = renamed(config, old_config, True, "--with-config/--without-config", "--config/--no-config")
    if output.exists() and not output.is_dir():
        raise CliError(f"--output {output} is a file; give a folder to write the files into")
    from retland.warehouse import refuse_inside_warehouse

    refuse_inside_warehouse(output)
    wh = Warehouse.open(warehouse, create=False)
    con = wh.connect()
    try:
        known = relations(con)
        wanted = known if [n.lower() for n in names] == ["all"] else list(dict.fromkeys(names))
        bad = [n for n in wanted if n not in known]
        if bad:
            raise CliError(f"no table or view {', '.join(map(repr, bad))}; choose from {', '.join(known)} or all")
        frames = {}
        for name in wanted:
            try:
                df = relation_rows(con, name, where).pl()
            except duckdb.Error as exc:
                raise query_error(exc) from None
            if config and "run_id" in df.columns and df.height:
                cfg = config_columns(con, df["run_id"].drop_nulls().unique().to_list())
                clash = [c for c in cfg.columns if c != "run_id" and c in df.columns]
                df = df.join(cfg.drop(clash), on="run_id", how="left")
            frames[name] = df
    finally:
        con.close()
    for name, df in frames.items():
        path = output / f"{name}.{fmt.value}"
        check_output_file(path)
        try:
            output.mkdir(parents=True, exist_ok=True)
            if fmt is ExportFormat.parquet:
                df.write_parquet(path)
            else:
                _flat_for_csv(df).write_csv(path)
        except OSError as exc:
            raise CliError(f"--output {output}: cannot write {path.name}: {exc.strerror or exc}") from None
        console.print(escape(f"wrote {df.height} rows, {df.width} columns to {path.resolve()}"), highlight=False,
                      soft_wrap=True)


# ------------------------------------------------------------------------------ sql

SQL_HELP = """Read-only SQL on the warehouse views; end a statement with ; (it may span lines).
  .tables        the tables and views      .schema NAME   a view's columns
  .help          this text                 .quit / .exit  leave (or Ctrl-D)
Statements that could write are refused; the warehouse is never changed."""


@app.command()
def sql(
    limit: Annotated[Optional[int], typer.Option(
        "--limit", help="Rows shown per statement at most (0: all). Default 10000.", show_default=False)] = None,
    timeout: Annotated[Optional[float], typer.Option(
        "--timeout", help="Stop a statement that runs longer than this many seconds (0 or unset: no limit).",
        show_default=False)] = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """An interactive read-only SQL shell on the warehouse: the views and macros of
    `retland query` (runs, checkpoints, post_update_returns, distribution_stats, …), one
    statement per `;`, results as tables. Needs no duckdb CLI. Reads statements from
    stdin too, e.g. `retland sql < queries.sql`. Exits on Ctrl-D, .quit or .exit.

    Ctrl-C stops a running statement at once: the shell goes on; reading from stdin, it
    exits 130."""
    import duckdb

    from retland.cli.warehouse_cmds import TERMINAL_ROWS, check_limits
    from retland.warehouse import Warehouse, WarehouseError
    from retland.warehouse.catalog import columns, relations
    from retland.warehouse.readonly import QueryInterrupted, execute_readonly, query_error, run_cancellable

    check_limits(limit, timeout)
    limit = TERMINAL_ROWS if limit is None else limit
    wh = Warehouse.open(warehouse, create=False)
    interactive = sys.stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
        console.print(f"retland sql on {escape(str(wh.root))} (read-only). .help for help, .quit to leave.",
                      highlight=False, soft_wrap=True)
    con = wh.connect()
    failed = False
    buffer: list[str] = []
    try:
        def run(statement: str) -> bool:
            """Run one statement and print its rows; False (after one line on stderr) if it failed."""
            try:
                rel = execute_readonly(con, statement)
                df = run_cancellable(con, lambda: (rel.limit(limit + 1) if limit else rel).pl(), timeout)
            except QueryInterrupted as exc:
                if not interactive:
                    raise
                err_console.print(f"[bold red]interrupted:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
                return False
            except WarehouseError as exc:
                err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
                return False
            except duckdb.Error as exc:  # raised while the rows are fetched
                err_console.print(f"[bold red]error:[/] {escape(str(query_error(exc)))}", highlight=False,
                                  soft_wrap=True)
                return False
            cut = bool(limit) and df.height > limit
            emit(df.head(limit) if cut else df, OutputFormat.table, None)
            if cut:
                err_console.print(f"[yellow]note:[/] showing the first {limit} rows; `retland sql --limit 0` "
                                  "shows all", highlight=False, soft_wrap=True)
            return True

        while True:
            try:
                line = input("retland> " if not buffer else "      ...> ") if interactive else sys.stdin.readline()
            except EOFError:
                line = None
            except KeyboardInterrupt:
                buffer = []
                typer.echo("")
                continue
            if line is None or (not interactive and line == ""):
                break
            text = line.strip()
            if not buffer and text.startswith("."):
                word, _, arg = text.partition(" ")
                if word in (".quit", ".exit", ".q"):
                    break
                if word == ".help":
                    typer.echo(SQL_HELP)
                elif word == ".tables":
                    typer.echo("  ".join(relations(con)))
                elif word == ".schema" and arg.strip():
                    if arg.strip() not in relations(con):
                        err_console.print(f"[bold red]error:[/] no table or view {escape(arg.strip())!r}")
                        failed = True
                    else:
                        emit(columns(con, arg.strip()), OutputFormat.table, None)
                else:
                    err_console.print(f"[bold red]error:[/] unknown command {escape(text)}; .help lists them")
                    failed = True
                continue
            if not text:
                continue
            buffer.append(line.rstrip("\n"))
            if not text.endswith(";"):
                continue
            statement, buffer = "\n".join(buffer), []
            failed = not run(statement) or failed
        # the last statement needs no closing ';' (a trailing comment is no statement)
        if buffer and not _only_comments("\n".join(buffer)):
            failed = not run("\n".join(buffer)) or failed
    finally:
        con.close()
    if interactive:
        typer.echo("")
    elif failed:  # a script with an error ends with a failing status, like duckdb -bail would
        raise typer.Exit(1)


def _only_comments(text: str) -> bool:
    """Whether SQL text holds nothing but comments (-- to the end of a line, /* … */) and blanks."""
    import re

    return not re.sub(r"/\*.*?\*/|--[^\n]*", "", text, flags=re.S).strip()
