"""A full disk (issue #25, part 3): a write that meets ENOSPC is reported in one line
naming the folder and the space needed, and leaves the warehouse byte-identical.

The disk is a small tmpfs the test mounts, so it needs root (CI runs as root) and
mount(8); elsewhere the tests skip."""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import GOOD_CSV, cli_process, tree_digest


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def _fill(disk: Path, leave: int) -> None:
    """Fill the filesystem, then free `leave` bytes."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for chunk in (1 << 16, 1 << 12, 1 << 9):
            try:
                while True:
                    os.write(fd, b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    size = filler.stat().st_size
    os.truncate(filler, max(size - leave, 0))


def _cli(*args):
    return cli_process(*args)


def _big_csv(path: Path, rows: int = 60_000) -> Path:
    import numpy as np

    rng = np.random.default_rng(0)
    lines = ["algo,env,seed,step,operator,update_index,return"]
    lines += [f"sac,walker,3,200,sac,{i},{v:.17g}" for i, v in enumerate(rng.normal(size=rows))]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("leave", [0, 16 << 10, 64 << 10], ids=["full", "16KiB-free", "64KiB-free"])
def test_import_on_a_full_disk_leaves_the_warehouse_byte_identical(small_disk, tmp_path, leave):
    root = small_disk / "wh"
    good = tmp_path / "good.csv"
    good.write_text(GOOD_CSV)
    assert _cli("import-returns", good, "-w", root).returncode == 0
    big = _big_csv(tmp_path / "big.csv")
    before = tree_digest(root)
    _fill(small_disk, leave)
    out = _cli("import-returns", big, "-w", root)
    assert out.returncode == 2, (out.stdout, out.stderr)
    err = out.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert "no space left" in err and str(root) in err and "needs up to about" in err, err
    assert tree_digest(root) == before
    (small_disk / "filler").unlink()
    again = _cli("import-returns", big, "-w", root)  # with room again, the same command completes
    assert again.returncode == 0, again.stderr
    assert _cli("check", "-w", root).returncode == 0


def test_creating_a_warehouse_on_a_full_disk_is_one_line_and_leaves_nothing(small_disk, tmp_path):
    good = tmp_path / "good.csv"
    good.write_text(GOOD_CSV)
    _fill(small_disk, 0)
    root = small_disk / "new" / "wh"
    out = _cli("import-returns", good, "-w", root)
    assert out.returncode == 2, (out.stdout, out.stderr)
    err = out.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "no space left" in err, err
    assert not (small_disk / "new").exists()
