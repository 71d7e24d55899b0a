"""The public API: what `from retland import *` and `from retland.stats import *` give,
that `import retland` stays free of jax, and that no two modules import each other
(directly or around a longer loop)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# The documented public names (retland/__init__.py's docstring, README "From Python").
RETLAND_API = {
    "CloneRequest",
    "ExampleRequest",
    "FailuresRequest",
    "InterpolationRequest",
    "LandscapeRequest",
    "ReportRequest",
    "SampleRequest",
    "StabilizeRequest",
    "StatsRequest",
    "TrainRequest",
    "Warehouse",
    "WarehouseError",
    "add_policy",
    "connect",
    "distribution_stats",
    "load_checkpoint",
    "query",
    "resolve_root",
    "run",
    "sample",
    "sample_update",
    "stats",
}
STATS_API = {
    "N_BINS",
    "STATISTICS",
    "Kernel",
    "Summary",
    "bootstrap_ci",
    "bootstrap_summary",
    "cvar",
    "iqm",
    "ltp",
    "mean",
    "mode",
    "skewness",
    "std",
    "stratified_bootstrap_ci",
    "summarize",
}


def _star(module: str) -> set[str]:
    namespace: dict = {}
    exec(f"from {module} import *", namespace)
    return set(namespace) - {"__builtins__"}


def test_star_import_of_retland_gives_the_documented_names():
    import retland

    assert _star("retland") == RETLAND_API
    assert set(retland.__all__) == RETLAND_API
    assert RETLAND_API <= set(dir(retland))


def test_star_import_of_stats_gives_its_functions_and_not_numpy():
    from retland import stats

    names = _star("retland.stats")
    assert names == STATS_API
    assert not names & {"np", "scipy", "Callable", "Mapping", "dataclass"}
    for name in names - {"N_BINS", "STATISTICS", "Kernel"}:
        assert callable(getattr(stats, name)), name


def test_lazy_names_are_the_implementations():
    import retland
    import retland.analyses.distributions
    import retland.stats
    import retland.train.checkpoints

    # the module __getattr__ itself, whether or not an earlier access cached the name
    assert retland.__getattr__("stats") is sys.modules["retland.stats"]
    assert retland.__getattr__("distribution_stats") is retland.analyses.distributions.distribution_stats
    assert retland.__getattr__("load_checkpoint") is retland.train.checkpoints.load_checkpoint
    assert retland.load_checkpoint is retland.train.checkpoints.load_checkpoint
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        getattr(retland, "nope")


def test_sample_is_the_library_path_the_command_takes():
    import retland
    import retland.purd.job

    assert retland.__getattr__("sample") is retland.purd.job.sample


def test_add_policy_and_sample_update_are_the_ingest_functions():
    import retland
    import retland.ingest.own

    assert retland.__getattr__("add_policy") is retland.ingest.own.add_policy
    assert retland.__getattr__("sample_update") is retland.ingest.own.sample_update


# Import paths that warehouses keep in added runs' config (their apply). Each must keep
# importing, to a function defined in the module it names: the program store keys
# traced programs on that module's source file (retland.core.programs).
STORED_PATHS = ("retland.policies:mlp_apply", "retland.brax_import:deterministic_apply")


@pytest.mark.parametrize("path", STORED_PATHS)
def test_stored_import_paths_name_the_module_that_defines_them(path):
    from retland.core.importpath import resolve

    fn = resolve(path)
    assert f"{fn.__module__}:{fn.__qualname__}" == path


def test_import_policy_brax_stores_a_kept_path():
    from retland.ingest import brax

    assert brax.APPLY in STORED_PATHS


def _fresh_modules(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running `code`."""
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print('\\n'.join(sys.modules))"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
    ).stdout
    return set(out.split())


def test_import_retland_does_not_import_jax():
    modules = _fresh_modules("import retland")
    assert "retland" in modules
    assert "jax" not in modules
    # the statistics and the distribution table are jax-free too
    modules = _fresh_modules("import retland; retland.stats; retland.distribution_stats")
    assert "retland.stats" in modules and "retland.analyses.distributions" in modules
    assert "jax" not in modules


# --- import cycles ---------------------------------------------------------------------

# source folder -> installed package name (pyproject.toml [tool.setuptools.package-dir])
PACKAGE_DIRS = {"retland": "retland", "cli": "retland.cli", "schema": "retland.schema"}


def module_sources(root: Path = ROOT) -> dict[str, tuple[str, bool]]:
    """{module name: (source, is_package)} of every .py file of the shipped packages."""
    modules = {}
    for folder, package in PACKAGE_DIRS.items():
        for path in sorted((root / folder).rglob("*.py")):
            parts = list(path.relative_to(root / folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            modules[".".join([package, *parts])] = (path.read_text(), is_package)
    return modules


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph(modules: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """Edges module -> the project modules it imports anywhere in its body, functions
    included. `from P import name` points at P.name when that is a module, else at P.
    Edges to the module's own ancestor packages are left out (they are loaded first)."""
    graph = {}
    for module, (source, is_package) in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(source, filename=module)):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(module, is_package, node)
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in modules else base)
        ancestors = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
        graph[module] = {t for t in targets if t in modules and t != module and t not in ancestors}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [m0, m1, …, m0], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted(graph[start]))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            elif not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted(graph[nxt])))
    return None


def test_import_graph_reads_function_level_and_relative_imports():
    modules = {
        "retland": ("from .warehouse import connect\n", True),
        "retland.warehouse": ("from retland.warehouse.tables import T\n", True),
        "retland.warehouse.tables": ("import retland\nfrom .. import stats\n", False),
        "retland.stats": ("def f():\n    from retland.warehouse import tables\n", False),
        "retland.cli.sample": ("import numpy\nfrom ..purd import sampling\n", False),
        "retland.purd.sampling": ("", False),
    }
    graph = import_graph(modules)
    assert graph == {
        "retland": {"retland.warehouse"},
        "retland.warehouse": {"retland.warehouse.tables"},
        "retland.warehouse.tables": {"retland.stats"},
        "retland.stats": {"retland.warehouse.tables"},
        "retland.cli.sample": {"retland.purd.sampling"},
        "retland.purd.sampling": set(),
    }
    assert find_cycle(graph) == ["retland.warehouse.tables", "retland.stats", "retland.warehouse.tables"]
    graph["retland.stats"].clear()
    assert find_cycle(graph) is None


def test_no_import_cycles():
    modules = module_sources()
    assert {"retland", "retland.cli.main", "retland.schema", "retland.stats"} <= set(modules)
    graph = import_graph(modules)
    assert sum(map(len, graph.values())) > len(graph)  # the graph was really read
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_run_takes_any_commands_request_and_does_what_the_command_does(tmp_path, capsys, monkeypatch):
    import retland
    from conftest import run_cli

    request = retland.ExampleRequest("td3-hopper")
    outcome = retland.run(request, tmp_path / "py")
    code, _, err = run_cli(capsys, monkeypatch, *request.argv(), "-w", tmp_path / "cli")
    assert code == 0, err
    tables = "SELECT run_id, step, eval_return FROM checkpoints ORDER BY ALL"
    by_python = retland.query(tables, tmp_path / "py")
    assert by_python.height == 1 and by_python.equals(retland.query(tables, tmp_path / "cli"))
    assert outcome is not None
    # a request of no command is refused by name
    with pytest.raises(TypeError, match="no runner for str"):
        retland.run("add-example td3-hopper", tmp_path / "py")
