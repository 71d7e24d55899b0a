"""Which runs a command works on: by source (trained, imported, derived, added) and by run id,
a unique prefix of one, or a prefix plus --seed.

Derived runs (the final policies `retland stabilize` writes, runs.source = 'derived')
share algo, env and seed with the run they came from, so a selection by --algo/--env
that took every run would silently double the work and show rows that look like
duplicates. Selections therefore take only the sources a command means by default
(trained runs to sample, trained and imported returns to summarise), and `--source`
chooses others. Added runs are policies stored with `retland.add_policy` (a user's own
JAX policy): sampled with --run ID or --source added.
"""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from retland.cli.app import CliError
from retland.warehouse import RUN_SOURCES as SOURCES  # not analyses.distributions: it imports scipy and polars


def source_option(what: str):
    """The type of a `--source` option (comma-separated sources, or all); `what` says
    what the command does with them and its default."""
    return Annotated[str, typer.Option(
        "--source",
        help=f"Runs of these sources ({', '.join(SOURCES)}, comma-separated, or all) {what}. "
             "Derived runs are the final policies `retland stabilize` writes; added runs, policies stored "
             "with retland.add_policy.")]


def parse_sources(text: str | None, option: str = "--source") -> tuple[str, ...]:
    """'trained,derived' -> ('trained', 'derived'); 'all' -> every source."""
    if text is None:
        return SOURCES
    parts = tuple(dict.fromkeys(p.strip().lower() for p in text.split(",") if p.strip()))
    if parts == ("all",):
        return SOURCES
    bad = [p for p in parts if p not in SOURCES]
    if bad or not parts:
        raise CliError(f"{option} {text!r}: choose from {', '.join(SOURCES)} (comma-separated) or all")
    return parts


def resolve_run(wh, text: str, seed: int | None = None, option: str = "--run",
                seed_option: str | None = "--seed") -> str:
    """`retland.warehouse.runs.resolve_run`, its refusal as the command's one-line error."""
    from retland.warehouse.runs import RunSelectionError, resolve_run as resolve

    try:
        return resolve(wh, text, seed, option, seed_option)
    except RunSelectionError as exc:
        raise CliError(str(exc)) from None


SeedOpt = Annotated[Optional[int], typer.Option(
    "--seed", help="Training seed of the run, to pick one among the runs whose ids start with --run.",
    show_default=False)]
