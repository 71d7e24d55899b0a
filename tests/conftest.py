"""Shared fixtures. JAX-heavy fixtures live with their tests, module-scoped, so each
compiled function is built once per session."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Tests never touch a user's default warehouse or cache.
os.environ.pop("RETLAND_WAREHOUSE", None)
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
