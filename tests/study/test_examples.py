"""The shipped example checkpoints: their files, `retland.shipped.add`, and
`retland add-example`. Everything runs against the files installed with the package."""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_cli, tree_digest
from retland import shipped
from retland.core.replay import Transition
from retland.train.checkpoints import load_checkpoint, to_nested

NAME = "td3-hopper"


@pytest.fixture(scope="module")
def added(tmp_path_factory):
    """The example added once to a fresh warehouse: (root, run_id, step, seconds of add)."""
    import time

    root = tmp_path_factory.mktemp("examples") / "wh"
    t0 = time.perf_counter()
    run_id, step = shipped.add(root, NAME)
    return root, run_id, step, time.perf_counter() - t0


def _flat(nested, prefix=""):
    for key, value in nested.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}", value


def test_shipped_files_are_small_and_intact():
    ex = shipped.EXAMPLES[NAME]
    # 120k replay rows of hopper: on Brax 0.0.13's physics TD3 first hops through the
    # episode after ~100k steps, and the td3 operator needs the whole replay prefix.
    assert ex.data_path.stat().st_size < 16_000_000
    assert shipped.file_sha256(ex.data_path) == ex.meta["data"]["sha256"]
    meta = ex.meta
    assert meta["run"]["source"] == "trained" and meta["run"]["parent_run_id"] is None
    assert meta["run"]["algo"] == "td3" and meta["run"]["env"] == "hopper"
    assert meta["training"]["command"].startswith("retland train --algo td3 --env hopper")
    # the recorded statistics are the ones of the recorded returns (retland.stats is purd_stats' twin)
    from retland.stats import cvar, ltp

    rets = np.asarray(meta["purd"]["returns"])
    assert len(rets) == meta["purd"]["n"]
    assert np.mean(rets) == pytest.approx(meta["purd"]["mean"], rel=1e-9)
    assert ltp(rets, beta=meta["purd"]["beta"]) == pytest.approx(meta["purd"]["ltp"])
    assert cvar(rets, alpha=meta["purd"]["alpha"]) == pytest.approx(meta["purd"]["cvar"], rel=1e-9)
    assert 0 < meta["purd"]["ltp"] < 0.2  # the visible left tail it was chosen for


def test_add_restores_the_shipped_bits(added):
    root, run_id, step, _ = added
    ex = shipped.EXAMPLES[NAME]
    assert (run_id, step) == (ex.run_id, ex.step)
    ck = load_checkpoint(root, run_id, step)
    with np.load(ex.data_path) as npz:
        stored = {k: npz[k] for k in npz.files}
    state = dict(_flat(to_nested(ck.state)))
    assert {f"state/{k}" for k in state} == {k for k in stored if k.startswith("state/")}
    for key, leaf in state.items():
        ref = stored[f"state/{key}"]
        assert leaf.dtype == ref.dtype and leaf.shape == ref.shape, key
        assert leaf.tobytes() == ref.tobytes(), key
    assert ck.replay_size == ex.meta["checkpoint"]["replay_size"] > 0
    for field, buf in zip(Transition._fields, ck.replay):
        ref = stored[f"replay/{field}"]
        assert ref.shape[0] == ck.replay_size
        assert buf[:ck.replay_size].tobytes() == ref.astype(buf.dtype).tobytes(), field
        assert not np.any(buf[ck.replay_size:]), field  # rows past the checkpoint are empty
    assert ck.eval_return == ex.meta["checkpoint"]["eval_return"]
    assert ck.config.agent.algo == "td3" and ck.variant == ex.meta["run"]["variant"]


def test_add_writes_the_rows_and_is_idempotent(added, capsys, monkeypatch):
    from retland.warehouse import Warehouse

    root, run_id, step, _ = added
    wh = Warehouse.open(root, create=False)
    run = wh.query("SELECT * FROM runs").to_dicts()
    assert len(run) == 1 and run[0]["run_id"] == run_id and run[0]["source"] == "trained"
    assert run[0]["parent_run_id"] is None and run[0]["seed"] == shipped.EXAMPLES[NAME].meta["run"]["seed"]
    assert json.loads(run[0]["config"]) == json.loads(shipped.EXAMPLES[NAME].meta["run"]["config"])
    evals = wh.query("SELECT step FROM evaluations ORDER BY step")["step"].to_list()
    assert evals and evals[-1] == step
    before = tree_digest(root)
    assert shipped.add(root, NAME) == (run_id, step)
    code, out, err = run_cli(capsys, monkeypatch, "add-example", NAME, "-w", root)
    assert code == 0, err
    assert "already in" in out
    assert tree_digest(root) == before  # nothing rewritten or appended
    code, out, err = run_cli(capsys, monkeypatch, "check", "-w", root)
    assert code == 0 and "no damaged parts" in out, out + err


def test_cli_unknown_name_and_list(tmp_path, capsys, monkeypatch):
    root = tmp_path / "wh"
    code, out, err = run_cli(capsys, monkeypatch, "add-example", "no-such-example", "-w", root)
    assert code == 2
    assert "unknown example 'no-such-example'" in err and NAME in err
    assert not root.exists()  # refused before the warehouse was created
    shipped.add(root, NAME)
    before = tree_digest(root)
    code, out, err = run_cli(capsys, monkeypatch, "add-example", "no-such-example", "-w", root)
    assert code == 2 and tree_digest(root) == before
    code, out, err = run_cli(capsys, monkeypatch, "add-example", "--list")
    assert code == 0 and out.startswith(f"{NAME}: ") and "LTP" in out


def test_add_refuses_damaged_data(tmp_path):
    ex = shipped.EXAMPLES[NAME]
    bad = tmp_path / ex.data_path.name
    data = bytearray(ex.data_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    damaged = shipped.Example(NAME, ex.meta, bad)
    with pytest.raises(ValueError, match="damaged"):
        shipped.add(tmp_path / "wh", damaged)
    assert not (tmp_path / "wh" / "artifacts").exists()


def test_td3_operator_samples_the_example(added, capsys, monkeypatch):
    """A short-horizon td3 distribution of the added checkpoint, through the CLI."""
    from retland.warehouse import Warehouse

    root, run_id, step, _ = added
    code, out, err = run_cli(capsys, monkeypatch, "sample", "--run", run_id, "--steps", step, "--operator", "td3",
                             "--samples", 8, "--horizon", 50, "--batch-size", 8, "--no-progress", "-w", root)
    assert code == 0, err
    rows = Warehouse.open(root, create=False).query(
        'SELECT update_index, "return", operator_id FROM post_update_returns ORDER BY update_index')
    assert rows["update_index"].to_list() == list(range(8))
    assert set(rows["operator_id"]) == {"td3[h=50,seed=0]"}
    rets = np.asarray(rows["return"].to_list())
    assert np.all(np.isfinite(rets)) and np.ptp(rets) > 0  # distinct updates, distinct returns


def test_sigterm_stops_sample_with_its_finished_chunks_stored_and_no_lease_left(added, tmp_path, capsys, monkeypatch):
    """A scheduler's SIGTERM (a task's time limit, `scancel`) ends `retland sample` as
    Ctrl-C does: the chunks finished are flushed, their leases freed (a task on another
    node need not wait for them to go stale), exit 143; the same command then computes
    only the rest. (The td3 program of the test above: one compile per process.)"""
    import contextlib
    import os
    import shutil
    import signal

    from retland.cli import sample as sample_cli
    from retland.warehouse import Warehouse

    src, run_id, step, _ = added
    root = tmp_path / "wh"
    shutil.copytree(src, root)
    args = ["sample", "--run", run_id, "--steps", step, "--operator", "td3", "--samples", 32, "--horizon", 50,
            "--batch-size", 8, "--key-seed", 7, "-w", root]

    @contextlib.contextmanager
    def terminating_bar(total, description, **options):
        seen = []

        def advance(n=0, **info):
            seen.append(n)
            if len(seen) == 2:  # after the second chunk: SIGTERM, as SLURM sends it
                os.kill(os.getpid(), signal.SIGTERM)
        yield advance

    before = signal.getsignal(signal.SIGTERM)
    with monkeypatch.context() as m:
        m.setattr(sample_cli, "progress_bar", terminating_bar)
        code, out, err = run_cli(capsys, monkeypatch, *args)
    assert code == 143, (out, err)
    assert "stopped by SIGTERM" in err
    assert signal.getsignal(signal.SIGTERM) == before  # the command's handler is gone with it
    query = 'SELECT update_index, "return" FROM post_update_returns WHERE operator_id = ? ORDER BY update_index'
    stored = Warehouse.open(root, create=False).records(query, ["td3[h=50,seed=7]"])
    assert [r["update_index"] for r in stored] == list(range(16))  # the two whole chunks, flushed
    assert not list((root / "leases").rglob("*.lease"))
    code, out, err = run_cli(capsys, monkeypatch, *args, "--no-progress")
    assert code == 0, err
    assert "wrote 16 rows" in " ".join(out.split())
    again = Warehouse.open(root, create=False).records(query, ["td3[h=50,seed=7]"])
    assert [r["update_index"] for r in again] == list(range(32)) and again[:16] == stored
