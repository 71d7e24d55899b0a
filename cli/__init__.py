"""The `retland` command line: a thin Typer layer over the library.

Commands parse and check their options, call the library and print. They import the
library inside the command function, not at module level: JAX, brax and orbax take
seconds to import, and `--help`, `retland query` and a refused option must stay instant.
Defaults and help texts of sampling and the analyses come from `retland.config.settings`.
"""


def launch() -> None:
    """The `retland` console script. Loading the command line takes a moment; a Ctrl-C
    during it ends in one line and exit 130, as one during a command does."""
    import sys

    try:
        from retland.cli.main import main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted: stopped by Ctrl-C\n")
        raise SystemExit(130) from None
    main()
