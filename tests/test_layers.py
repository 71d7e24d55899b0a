"""retland's layers, declared once: a module imports only from its own layer or lower ones.

Read from the sources (every `import`, function-level ones included), so the rule holds
for imports a test run never reaches. The package's own `retland/__init__.py` is the
facade over every layer and is exempt; `retland.cli`, `retland.schema` and
`retland.studies` live in cli/, schema/ and studies/.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Lowest first. A name is the first component under `retland.` (a subpackage or a
# top-level module).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("config", "stats", "warehouse", "schema"),  # what can be asked, the numbers, the store: no JAX
    ("core",),  # envs, networks, rollouts, the simulators
    # each algorithm's pure functions and update operator; the apply functions of added
    # runs, kept at the import paths warehouses store (policies, brax_import)
    ("agents", "policies", "brax_import"),
    ("train",),  # training jobs and checkpoints
    ("purd",),  # post-update return distributions: operators, sampling engine
    ("analyses", "ingest", "cluster", "shipped"),  # what the paper does with them, what comes in
    ("report",),  # pages
    ("study",),  # whole studies: stages of the requests the layers below run
    ("cli", "studies"),  # the command line, the study presets
)
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] != "retland":
        parts.insert(0, "retland")  # cli/, schema/, studies/ are retland.cli, …
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> list[Path]:
    out = [p for p in (ROOT / "retland").rglob("*.py")]
    for folder in ("cli", "schema", "studies"):
        out += (ROOT / folder).rglob("*.py")
    return sorted(p for p in out if p != ROOT / "retland" / "__init__.py")


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported retland module) of every import in the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "retland"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "retland":
                continue
            if target == "retland":  # `from retland import stats`: the names are the modules
                out += [(node.lineno, f"retland.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, target))
    return out


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYER_OF.get(parts[1]) if len(parts) > 1 else None


def test_every_module_has_a_layer():
    missing = sorted({_module_name(p) for p in _sources() if _layer(_module_name(p)) is None})
    assert not missing, f"modules in no layer (add them to LAYERS): {missing}"


def test_no_module_imports_from_a_higher_layer():
    upward = []
    for path in _sources():
        module = _module_name(path)
        mine = _layer(module)
        for line, target in _imports(path, module):
            theirs = _layer(target)
            if theirs is not None and theirs > mine:
                upward.append(f"{path.relative_to(ROOT)}:{line} ({LAYERS[mine][0]}…) imports {target} "
                              f"({LAYERS[theirs][0]}…)")
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_the_config_layer_imports_no_jax():
    """The registry, agent configs and command settings load without JAX (the command
    line reads them at start-up)."""
    code = ("import sys\nimport retland.config.registry, retland.config.agents, retland.config.settings\n"
            "heavy = sorted(m for m in ('jax', 'jaxlib', 'flax', 'brax', 'optax', 'orbax') if m in sys.modules)\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == ""


def test_every_algorithm_has_its_module_and_config():
    import importlib

    from retland.config.agents import AGENT_CONFIGS
    from retland.config.registry import AGENT_MODULES, ALGOS

    assert tuple(AGENT_CONFIGS) == ALGOS == tuple(AGENT_MODULES)
    for algo in ALGOS:
        module = importlib.import_module(AGENT_MODULES[algo])
        assert callable(module.make_agent) and module.make_agent(AGENT_CONFIGS[algo]()).algo == algo


def test_the_paper_simulator_has_every_brax_task():
    from retland.config.registry import BRAX_ENVS
    from retland.core.brax0013 import TASKS

    assert tuple(TASKS) == BRAX_ENVS


def test_every_package_is_installed():
    """pyproject.toml lists the packages a wheel holds: every folder with an __init__.py."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {_module_name(p) for p in _sources() if p.name == "__init__.py"} | {"retland"}
    assert found <= listed, f"packages missing from pyproject.toml: {sorted(found - listed)}"
