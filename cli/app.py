"""The Typer app and the options every command shares."""
from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

app = typer.Typer(
    name="retland",
    help=(
        "Return landscapes of deep-RL policies: train agents, sample post-update return "
        "distributions into a DuckDB/Parquet warehouse, query and report them."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

def unwrap_help(text: str | None) -> str | None:
    """Join a docstring's hard-wrapped lines so `--help` rewraps them to the terminal.

    Typer's rich mode keeps single newlines of every paragraph after the first, which
    breaks 88-column source lines at 80 columns. Lines starting a list item ("- ",
    "1. ") or indented (examples) keep their line break."""
    import inspect
    import re

    if not text:
        return text
    out = []
    for para in inspect.cleandoc(text).split("\n\n"):
        lines = para.split("\n")
        merged = [lines[0]]
        for line in lines[1:]:
            if re.match(r"^(\s|[-*] |\d+\. )", line) or re.match(r"^\s", merged[-1]):
                merged.append(line)
            else:
                merged[-1] = merged[-1].rstrip() + " " + line.strip()
        out.append("\n".join(merged))
    return "\n\n".join(out)


def unwrap_all_help(typer_app: typer.Typer) -> None:
    """Apply `unwrap_help` to every registered command (call once all are registered)."""
    for info in typer_app.registered_commands:
        if info.help is not None:
            info.help = unwrap_help(info.help)
        elif info.callback is not None and info.callback.__doc__:
            info.callback.__doc__ = unwrap_help(info.callback.__doc__)


# Piped output keeps whole rows instead of wrapping at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)

WarehouseOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--warehouse",
        "-w",
        help="Warehouse folder. Default: $RETLAND_WAREHOUSE, else ./data/warehouse.",
        show_default=False,
    ),
]


class OutputFormat(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


FormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", help="How to print or write the result.")]
OutputOpt = Annotated[
    Optional[Path],
    typer.Option("--output", "-o", help="Write the result to this file instead of the terminal (needed for parquet)."),
]


class CliError(Exception):
    """A user error: printed without a traceback, exit status 2."""


def check_output_file(output: Path, option: str = "--output") -> None:
    """Refuse an output path that cannot become a file, or that lies inside a warehouse,
    before any work is done."""
    from retland.warehouse import refuse_inside_warehouse

    refuse_inside_warehouse(output, option)
    if output.is_dir():
        raise CliError(f"{option} {output} is a folder; give a file path, e.g. {output / 'result.csv'}")
    parent = output.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise CliError(f"{option} {output}: {parent} is a file, not a folder")


def require_writable(root: Path | None) -> None:
    """Refuse, before any work starts, a warehouse this process may not write into: a
    command that computes for minutes must not fail at its first append.

    Checks the folder (or, if it does not exist yet, the nearest existing parent it
    would be created in) and its existing table and artifact folders with os.access."""
    import os

    from retland.warehouse import resolve_root

    root = resolve_root(root)
    probe = root
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise CliError(f"--warehouse {root}: {probe} is a file, not a folder")
    folders = [probe]
    if probe == root:
        for sub in ("tables", "artifacts"):
            base = root / sub
            if base.is_dir():
                folders.append(base)
                folders += [p for p in base.iterdir() if p.is_dir()]
    for folder in folders:
        if not os.access(folder, os.W_OK | os.X_OK):
            raise CliError(f"--warehouse {root}: no permission to write in {folder}; "
                           "fix its permissions or choose another --warehouse")
    if probe == root and (root / "log").is_dir():
        # A write command run again after a crash: what dead writers of this host left
        # (temp files, intents, uncommitted parts) goes, even if this run writes nothing.
        from retland.warehouse.log import clean_stale

        clean_stale(root)


def count_or_keyword(text: str, option: str, word: str) -> int | str:
    """A whole number >= 1, or the keyword (`auto` batch sizes, `all` devices)."""
    if text.strip().lower() == word:
        return word
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise CliError(f"{option} {text!r}: give a whole number >= 1 or {word}")
    return n


# Bootstrap resamples any command takes (--bootstrap N).
MAX_BOOTSTRAP = 1_000_000

# Seeds become PRNGKey(seed) (a signed 64-bit integer) and int64 warehouse columns.
MAX_SEED = 2**63 - 1


def check_seed(value: int, option: str, limit: int = MAX_SEED) -> None:
    if not 0 <= value <= limit:
        raise CliError(f"{option} {value}: give a whole number in [0, {limit}]")


def renamed(value, old_value, default, option: str, old: str):
    """The value of an option whose former spelling `old` is still accepted for a release
    (a hidden option): one of the two, with a note on stderr when the old one was used;
    both given is an error. docs/options.md lists every option and the old spellings."""
    if old_value is None:
        return value
    if value != default or _given(option):
        raise CliError(f"{option} and {old} are the same option ({old} is its former name): give one")
    err_console.print(f"note: {old} is now {option}; the old spelling works until the next release",
                      highlight=False, soft_wrap=True)
    return old_value


def _given(option: str) -> bool:
    """Whether the running command's option `option` (e.g. "--bootstrap", or a flag pair
    "--with-config/--without-config") was typed on the command line, even at its default."""
    from typer._click.core import ParameterSource
    from typer._click.globals import get_current_context

    ctx = get_current_context(silent=True)
    names = set(option.split("/"))
    for param in (ctx.command.params if ctx is not None else ()):
        if names & set(param.opts) | names & set(getattr(param, "secondary_opts", ())):
            return ctx.get_parameter_source(param.name) == ParameterSource.COMMANDLINE
    return False


def int_list(text: str | None, option: str, **bounds) -> tuple[int, ...] | None:
    """A --seeds/--steps/--checkpoints list ('0,2,5..7') in the syntax a study file's
    lists share (retland.config.intlist.parse_int_list; `bounds` are its minimum, maximum);
    None when the option was not given."""
    from retland.config.intlist import IntListError, parse_int_list

    if text is None:
        return None
    try:
        return parse_int_list(text, option, **bounds)
    except IntListError as exc:
        raise CliError(str(exc)) from None


def require_stored_checkpoint(wh, run_id: str, step: int, what: str) -> None:
    """Refuse a checkpoint row without parameters (a run whose returns were imported)
    before any work; unknown runs and steps are left to the command's own message."""
    from retland.warehouse.runs import RunSelectionError, require_checkpoint

    try:
        require_checkpoint(wh, run_id, step, what)
    except RunSelectionError as exc:
        raise CliError(str(exc)) from None


def emit(df, fmt: OutputFormat, output: Path | None, title: str | None = None, right=()) -> None:
    """Print or write a polars DataFrame in the requested format; `right` names text
    columns a terminal table right-aligns (numbers already are)."""
    import json as _json

    if fmt is OutputFormat.parquet and output is None:
        raise CliError("--format parquet needs --output FILE")
    if output is not None:
        check_output_file(output)
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            if fmt is OutputFormat.parquet:
                df.write_parquet(output)
            elif fmt is OutputFormat.csv:
                _flat_for_csv(df).write_csv(output)
            elif fmt is OutputFormat.json:
                output.write_text(_json.dumps(df.to_dicts(), default=str, indent=1) + "\n")
            else:
                with output.open("w") as fh:
                    print_frame(Console(file=fh), df, title, right, fit=False)
        except OSError as exc:
            raise CliError(f"--output {output}: cannot write it: {exc.strerror or exc}") from None
        err_console.print(f"wrote {df.height} rows to {output}")
        return
    if fmt is OutputFormat.csv:
        typer.echo(_flat_for_csv(df).write_csv(), nl=False)
    elif fmt is OutputFormat.json:
        typer.echo(_json.dumps(df.to_dicts(), default=str, indent=1))
    else:
        print_frame(console, df, title, right)


def _flat_for_csv(df):
    """CSV has no nested values: list and struct columns (e.g. a query's list(...))
    are written as their JSON text; parquet and json keep them nested."""
    import json

    import polars as pl

    nested = [c for c, t in df.schema.items() if isinstance(t, (pl.List, pl.Array, pl.Struct))]
    if not nested:
        return df
    return df.with_columns(
        pl.Series(c, [json.dumps(v, default=str) if v is not None else None for v in df[c].to_list()],
                  dtype=pl.String) for c in nested)


def _fmt_cell(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if value != value:
            return "nan"
        return f"{value:.6g}"
    return str(value)


def rounded(value, ref=None) -> str:
    """A statistic for a terminal table: decimals by the magnitude of `ref` (default the
    value itself), 1 from 100 up, 2 from 1 up, 3 below (LTP, small skewness)."""
    if value is None:
        return "—"
    value = float(value)
    if value != value:
        return "nan"
    ref = abs(value if ref is None or ref != ref else float(ref))
    return f"{value:.{1 if ref >= 100 else 2 if ref >= 1 else 3}f}"


def ci_cell(value, lo, hi) -> str:
    """`mean [lo, hi]`, all three rounded alike (by the value's magnitude)."""
    if value is None:
        return "—"
    if lo is None or hi is None:
        return rounded(value)
    return f"{rounded(value)} [{rounded(lo, value)}, {rounded(hi, value)}]"


def print_frame(out: Console, df, title: str | None = None, right=(), fit: bool = True) -> None:
    """A polars DataFrame as a terminal table (cli/tables.py: no value is ever broken
    across lines); `right` names text columns to right-align (numbers already are)."""
    from retland.cli.tables import Column, print_table

    columns = [Column(name, "right" if dtype.is_numeric() or name in right else "left")
               for name, dtype in zip(df.columns, df.dtypes)]
    rows = [[_fmt_cell(v) for v in row] for row in df.iter_rows()]
    print_table(out, columns, rows, title=title, caption="no rows" if df.height == 0 else None, fit=fit)
