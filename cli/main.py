"""Entry point: `retland …`. Imports the command modules, maps user errors to exit 2."""
from __future__ import annotations

import os
import signal
import sys
import threading

# XLA's C++ log lines (e.g. "Loading XLA:CPU AOT result" on every persistent-cache hit) are
# not for users; set before anything imports jaxlib. A user's own setting wins.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from rich.markup import escape

from retland.cli.app import CliError, app, err_console, unwrap_all_help
from retland.cli import warehouse_cmds  # noqa: F401  (registers commands)
from retland.cli import train  # noqa: F401
from retland.cli import sample  # noqa: F401
from retland.cli import report  # noqa: F401
from retland.cli import analyses  # noqa: F401
from retland.cli import stabilize  # noqa: F401
from retland.cli import examples  # noqa: F401
from retland.cli import explore  # noqa: F401
from retland.cli import study  # noqa: F401
from retland.cli import status  # noqa: F401
from retland.cli import import_policy  # noqa: F401
from retland.cli import compare  # noqa: F401
from retland.cli import clones  # noqa: F401
from retland.cli import start_states  # noqa: F401

unwrap_all_help(app)

# `retland --help`: the commands by workflow, one line each, in the order of the pipeline.
COMMANDS: dict[str, tuple[tuple[str, str], ...]] = {
    "Collect": (
        ("study", "Run a study file: train, sample, analyse and report in one command."),
        ("train", "Train TD3, SAC or PPO seeds on a task, keeping checkpoints."),
        ("sample", "Sample post-update return distributions of checkpoints."),
        ("add-example", "Add a shipped example checkpoint to the warehouse."),
        ("import-policy", "Add a policy trained elsewhere (brax, or your own parameters) as a run."),
        ("import-returns", "Import post-update returns computed elsewhere (CSV or Parquet)."),
    ),
    "Analyse": (
        ("stats", "Statistics of every distribution: mean, std, skewness, mode, LTP, CVaR."),
        ("compare", "Compare algorithms across tasks: IQM and P(A better than B), with CIs."),
        ("landscape", "Map the return landscape in 2-D around a checkpoint."),
        ("failures", "Re-roll failing and successful updates of a checkpoint, side by side."),
        ("render", "Draw stored samples as filmstrips and animations (MuJoCo, off screen)."),
        ("interpolate", "Returns along straight lines between checkpoints (same and different runs)."),
        ("stabilize", "Algorithm 1: reject updates whose post-update CVaR drops."),
        ("stabilize-effect", "What Algorithm 1 changed: reject − baseline, per env (Fig. 7)."),
        ("clone", "Appendix A.7: clone TD3 teachers (BC), sample clones and teachers."),
        ("clones", "Behaviour clones beside their TD3 teachers: r of means and LTPs (Fig. 22)."),
        ("start-states", "LTP from states collected in the replay buffer against s0 (A.4, Fig. 10)."),
        ("report", "Write the HTML report (or one PNG/SVG per chart)."),
    ),
    "Inspect": (
        ("runs", "Runs with their checkpoint steps and sampled distributions."),
        ("show", "One run: config, checkpoints, learning curve, distributions."),
        ("status", "Progress of sampling jobs: samples and complete chunks per distribution."),
        ("ls", "What the warehouse holds, table by table."),
        ("query", "Run one read-only SQL query over the warehouse's views."),
        ("sql", "Run read-only SQL statements from a file or standard input."),
        ("export", "Write tables or views as Parquet or CSV files."),
    ),
    "Maintain": (
        ("check", "Find damaged parts, dead writes' temp files and orphan runs."),
        ("compact", "Merge each table's many small parts into one."),
        ("sql-init", "Write init.sql, the views for a stock DuckDB client."),
    ),
}


def _group_commands() -> None:
    infos = {(c.name or c.callback.__name__.replace("_", "-")): c for c in app.registered_commands}
    order = []
    for panel, commands in COMMANDS.items():
        for name, line in commands:
            info = infos.pop(name)
            info.rich_help_panel, info.short_help = panel, line
            order.append(info)
    assert not infos, f"commands without a place in `retland --help`: {sorted(infos)}"
    app.registered_commands[:] = order


_group_commands()


def one_line(exc: BaseException) -> str:
    """The user-facing text of an error, on one line."""
    import errno

    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()))
            msg = err["msg"].removeprefix("Value error, ")
            parts.append(f"{where}: {msg}" if where else msg)
        text = f"{exc.title}: " + "; ".join(parts)
    elif isinstance(exc, OSError) and exc.filename is not None:
        what = {errno.EACCES: "permission denied", errno.EPERM: "permission denied",
                errno.EROFS: "read-only file system", errno.EISDIR: "is a folder, not a file",
                errno.ENOTDIR: "a parent is a file, not a folder", errno.EEXIST: "already exists",
                errno.ENOENT: "no such file or folder"}.get(exc.errno, exc.strerror or str(exc))
        text = f"{exc.filename}: {what}" if exc.filename2 is None else f"{exc.filename} -> {exc.filename2}: {what}"
    elif callable(getattr(exc, "format_message", None)):  # click's errors: "Missing option '--operator'."
        text = exc.format_message()
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


# Path problems a user can fix (permissions, a file where a folder should be, …); other
# OSErrors (disk full, I/O errors) keep their traceback.
_PATH_ERRORS = (PermissionError, FileNotFoundError, IsADirectoryError, NotADirectoryError, FileExistsError)


def _interrupted(text: str) -> None:
    """A query stopped by Ctrl-C: one line, exit 130, at once (only a query: a job's own
    Ctrl-C handling, e.g. a sampler flushing its chunks, has run before this). Tearing the interpreter down (DuckDB's thread
    pools, polars, pyarrow) took seconds on a loaded machine, so the process ends here:
    the OS releases the warehouse lock, and DuckDB's spill folders are removed first."""
    from retland.warehouse.readonly import remove_spill_dirs

    err_console.print(f"[bold red]interrupted:[/] {escape(text)}", highlight=False, soft_wrap=True)
    remove_spill_dirs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


class Terminated(BaseException):
    """SIGTERM (a scheduler ending a task at its time limit or on `scancel`, `kill`,
    `timeout`), raised in the main thread so that a job's own cleanup runs as after
    Ctrl-C: a sampler flushes the chunks it finished and frees their leases, so a task on
    another node can take them at once. A BaseException, so `except Exception` blocks
    do not swallow it."""


def _on_sigterm(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise Terminated()


def _fail(text: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)
    sys.exit(2)


# Options that take a count, and the count they mean when given alone (`stats --bootstrap`
# was a flag before it took a count). Typer has no optional option values.
OPTIONAL_COUNTS = {("stats", "--bootstrap"): "1000"}


def optional_counts(args: list[str]) -> list[str]:
    """`args` with the count filled in after an OPTIONAL_COUNTS option given alone (at the
    end, or followed by another option)."""
    command = next((a for a in args if not a.startswith("-")), None)
    out = []
    for i, a in enumerate(args):
        out.append(a)
        count = OPTIONAL_COUNTS.get((command, a))
        nxt = args[i + 1] if i + 1 < len(args) else None
        if count is not None and (nxt is None or (nxt.startswith("-") and not nxt.lstrip("-").isdigit())):
            out.append(count)
    return out


def main() -> None:
    """Run the app; every user error is one line on stderr and exit status 2."""
    import errno

    import typer
    # typer vendors click (0.29+); its usage errors come from here
    from typer._click import exceptions as click

    from retland.warehouse import WarehouseError
    from retland.warehouse.readonly import QueryInterrupted

    sys.argv[1:] = optional_counts(sys.argv[1:])
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if on_main else None
    try:
        code = app(standalone_mode=False)
    except click.NoArgsIsHelpError as exc:
        exc.show()  # `retland` or `retland CMD` alone: the help text
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        # click's usage errors (unknown option, not an integer, …) as one line, like ours
        hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
        _fail(one_line(exc) + hint)
    except click.ClickException as exc:
        _fail(one_line(exc))
    except typer.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):  # click turns Ctrl-C into Abort
            err_console.print("[bold red]interrupted:[/] stopped by Ctrl-C", highlight=False)
            sys.exit(130)
        err_console.print("Aborted.")
        sys.exit(1)
    except QueryInterrupted as exc:
        _interrupted(one_line(exc))
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted:[/] stopped by Ctrl-C", highlight=False)
        sys.exit(130)
    except Terminated:
        err_console.print("[bold red]terminated:[/] stopped by SIGTERM; what was finished is stored, and the same "
                          "command goes on from there", highlight=False, soft_wrap=True)
        sys.exit(143)
    except RuntimeError as exc:
        # DuckDB's own SIGINT check (a query run on the main thread, e.g. by stats or export)
        # ends the query with RuntimeError("Query interrupted").
        if "query interrupted" not in str(exc).lower():
            raise
        _interrupted("query stopped by Ctrl-C")
    except MemoryError:
        _fail("out of memory: the result or computation does not fit (a --where, a --limit or a smaller query "
              "needs less; $RETLAND_DUCKDB_MEMORY bounds what DuckDB holds before it spills)")
    except (CliError, WarehouseError, ValueError, *_PATH_ERRORS) as exc:
        _fail(one_line(exc))
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            where = f" writing {exc.filename}" if exc.filename else ""
            _fail(f"no space left on the device{where} ({exc.strerror}); free some space and rerun")
        if exc.errno != errno.EROFS:
            raise
        _fail(one_line(exc))
    finally:
        if on_main:  # None: a handler set outside Python, which cannot be put back; the default then
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
