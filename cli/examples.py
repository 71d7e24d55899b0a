"""`retland add-example`: put a checkpoint shipped with retland into a warehouse, so
post-update returns can be sampled without training first."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from retland.cli.app import CliError, WarehouseOpt, app, console, require_writable


@app.command("add-example")
def add_example(
    name: Annotated[Optional[str], typer.Argument(
        help="Example to add (default td3-hopper); --list shows them.", show_default=False)] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the shipped examples and exit.")] = False,
    warehouse: WarehouseOpt = None,
) -> None:
    """Add an example checkpoint shipped with retland to the warehouse (created if missing):
    the run's checkpoint with its optimizer states and replay buffer, its `runs`,
    `evaluations` and `checkpoints` rows, under the run id it was trained with.

    Adding it again changes nothing. Then sample it like any trained run, e.g.
    `retland sample --run RUN --steps STEP --operator td3`.
    """
    from retland import shipped as examples

    if list_:
        if name is not None:
            raise CliError("--list takes no NAME")
        if not examples.EXAMPLES:
            console.print("no examples are installed with this retland")
        for ex in examples.EXAMPLES.values():
            console.print(escape(examples.summary_line(ex)), highlight=False, soft_wrap=True)
        return
    name = name or examples.DEFAULT
    if name not in examples.EXAMPLES:  # before the warehouse is opened: nothing is created or written
        raise CliError(f"unknown example {name!r}; examples: {', '.join(sorted(examples.EXAMPLES)) or 'none'} "
                       "(see `retland add-example --list`)")
    execute(examples.ExampleRequest(name), warehouse)


def execute(request, warehouse: Path | None, progress: bool = True) -> None:
    """Run an ExampleRequest (`retland.shipped.run_request`) and print what
    `retland add-example` prints; `retland study` calls this for its example stages."""
    from retland import shipped as examples
    from retland.warehouse import Warehouse

    require_writable(warehouse)
    wh = Warehouse.open(warehouse)
    done = examples.run_request(wh, request)
    name, run_id, step = done.name, done.run_id, done.step
    what = "already in" if done.present else "added to"
    console.print(escape(f"example {name}: run {run_id} step {step} {what} {wh.root}"), highlight=False,
                  soft_wrap=True)
    algo = examples.EXAMPLES[name].meta["run"]["algo"]  # the example's own update operator
    console.print(escape(f"sample it: retland sample --run {run_id} --steps {step} --operator {algo} -w {wh.root}"),
                  highlight=False, soft_wrap=True)
