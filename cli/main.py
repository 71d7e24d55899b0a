"""Entry point: `retland …`. Imports the command modules, maps user errors to exit 2."""
from __future__ import annotations

import os
import sys

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

unwrap_all_help(app)


def main() -> None:
    from retland.warehouse import WarehouseError

    try:
        app(standalone_mode=True)
    except (CliError, WarehouseError, ValueError, FileNotFoundError) as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
