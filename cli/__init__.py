"""The `retland` command line: a thin Typer layer over the library.

Commands parse and check their options, call the library and print. They import the
library inside the command function, not at module level: JAX, brax and orbax take
seconds to import, and `--help`, `retland query` and a refused option must stay instant.
Defaults and help texts of sampling and the analyses come from `retland.settings`.
"""
