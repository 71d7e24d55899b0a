"""Shared fixtures. JAX-heavy fixtures live with their tests, module-scoped, so each
compiled function is built once per session."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"

# `retland.cli`, `retland.schema` and `retland.studies` live in cli/, schema/ and studies/
# (pyproject's package-dir), which only an install maps. When this checkout's `retland` is
# imported (PYTHONPATH) while another checkout is installed in editable mode, they would
# come from that other checkout: bind them to this one's folders first.
CLI_LAUNCH = f"""
import importlib.util, sys
from pathlib import Path
repo = Path({str(REPO)!r})
import retland
if Path(retland.__file__).resolve().parent == repo / "retland":
    for name, folder in (("retland.cli", "cli"), ("retland.schema", "schema"), ("retland.studies", "studies")):
        if (repo / folder / "__init__.py").is_file() and name not in sys.modules:
            spec = importlib.util.spec_from_file_location(name, repo / folder / "__init__.py",
                                                          submodule_search_locations=[str(repo / folder)])
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            spec.loader.exec_module(mod)
"""
exec(CLI_LAUNCH)
# A `retland` command line in a subprocess: [sys.executable, "-c", CLI_MAIN, *args].
CLI_MAIN = CLI_LAUNCH + "\nsys.argv[0] = 'retland'\nfrom retland.cli.main import main\nmain()\n"
# Tests never touch a user's default warehouse or cache.
os.environ.pop("RETLAND_WAREHOUSE", None)
# pytest-xdist's workers set COLUMNS=80; commands' tables fit $COLUMNS (cli/tables.py), so
# every test would see an 80-column terminal. Tests print as if piped unless they set it.
os.environ.pop("COLUMNS", None)
os.environ.setdefault("RETLAND_JAX_CACHE", str(REPO / ".venv" / "jax-cache-tests"))


def tree_digest(root: Path) -> dict[str, str]:
    """Path -> sha256 of every file under root: 'byte-identical' made checkable."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture
def warehouse(tmp_path):
    from retland.warehouse import Warehouse

    return Warehouse.open(tmp_path / "wh")


def cli_env(extra: dict | None = None) -> dict:
    """The environment of a `retland` subprocess: this checkout first on PYTHONPATH, and
    tests/ (so a child can import conftest and the test modules' helpers)."""
    path = os.pathsep.join([str(REPO), str(TESTS), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, **(extra or {})}


def start_cli(*args, env: dict | None = None, **popen) -> subprocess.Popen:
    """`retland ARGS` started in a fresh Python process (what a kill, a full disk or a
    Ctrl-C test needs); popen's keywords pass through."""
    return subprocess.Popen([sys.executable, "-c", CLI_MAIN, *map(str, args)], env=cli_env(env), **popen)


def cli_process(*args, env: dict | None = None, timeout: float = 120, **run) -> subprocess.CompletedProcess:
    """`retland ARGS` run to the end in a fresh Python process: returncode, stdout, stderr
    (text); subprocess.run's other keywords pass through."""
    return subprocess.run([sys.executable, "-c", CLI_MAIN, *map(str, args)], capture_output=True, text=True,
                          env=cli_env(env), timeout=timeout, **run)


def run_cli(capsys, monkeypatch, *args) -> tuple[int, str, str]:
    """Run `retland ARGS` in-process: (exit code, stdout, stderr)."""
    import sys

    from retland.cli.main import main

    monkeypatch.setattr(sys, "argv", ["retland", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out = capsys.readouterr()
    return code, out.out, out.err


# The tiny TD3 job of tests/analysis_jobs.py (same config, so the same compiled programs).
TINY_AGENT = """\
horizon = 20

[agent]
algo = "td3"
hidden = [16, 16]
batch_size = 8
learning_starts = 40
buffer_size = 120
"""

# A study's [[train]] entry for that job (a study file writes TINY_AGENT to tiny-agent.toml).
TINY_TRAIN = """\
[[train]]
algo = "td3"
env = "hopper"
seeds = 2
steps = 120
checkpoints = [60, 120]
eval_every = 60
config = "tiny-agent.toml"
"""

# A study's tiny [clones] stage over that job: one 40-step clone per run, 8 samples.
TINY_CLONES = """
[clones]
teachers_per_run = 1
steps = 40
samples = 8
horizon = 20
agent = { hidden = [16, 16], batch_size = 8 }
"""

GOOD_CSV = (
    "algo,env,seed,step,operator,update_index,return\n"
    + "".join(f"td3,hopper,0,100,td3,{i},{1000 + 10 * i}\n" for i in range(20))
    + "".join(f"td3,hopper,1,100,td3,{i},{-5 - i}\n" for i in range(5))
)


@pytest.fixture
def filled(tmp_path, capsys, monkeypatch):
    """A warehouse holding GOOD_CSV (two imported runs, 25 returns) at tmp_path/wh; the
    file itself is tmp_path/good.csv."""
    src = tmp_path / "good.csv"
    src.write_text(GOOD_CSV)
    root = tmp_path / "wh"
    code, out, err = run_cli(capsys, monkeypatch, "import-returns", src, "-w", root)
    assert code == 0, err
    assert "imported 25 new rows" in out
    return root


def parse_request(capsys, monkeypatch, argv: list[str], warehouse: Path):
    """The request `retland ARGV -w WAREHOUSE` builds from its options: the real command's
    option parsing and checks, stopped where it hands the request to its runner (nothing
    is read, computed or written)."""
    from importlib import import_module

    from retland.cli.study import EXECUTE  # request class -> (module of retland.cli, its execute function)

    got = []
    with monkeypatch.context() as m:
        for module, name in set(EXECUTE.values()):
            m.setattr(import_module(f"retland.cli.{module}"), name, lambda request, *a, **k: got.append(request))
        code, _, err = run_cli(capsys, monkeypatch, *argv, "-w", warehouse)
    assert code == 0, (argv, err)
    assert len(got) == 1, argv
    return got[0]
