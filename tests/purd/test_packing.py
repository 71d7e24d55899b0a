"""Packed chunks (`--pack`): several distributions' chunks in one chunk program.

The shipped example checkpoint is added twice (at its step and, as a second checkpoint of
the same run, at step 100000: the same parameters and buffer), so a job has two
distributions that share a program. gaussian(0.05), horizon 20, B = 8 as in
test_adaptive/test_cluster (the unpacked program is theirs); --pack 32 packs 4 chunks.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, tree_digest
from retland import shipped
from retland.warehouse import Warehouse

OP, H, B, N, W = "gaussian:0.05", 20, 8, 48, 32
TWIN = 100000


def add_twin(root, step=TWIN, config=None, run_id=None):
    example = shipped.get(shipped.DEFAULT)
    meta = json.loads(json.dumps(example.meta))
    meta["checkpoint"]["step"] = step
    meta["evaluations"] = []
    if config is not None:
        meta["run"]["config"] = config
    if run_id is not None:
        meta["run"]["run_id"] = run_id
    return shipped.add(root, dataclasses.replace(example, meta=meta))


def args(root, *extra):
    return ["sample", "-w", root, "--algo", "td3", "--env", "hopper", "--operator", OP, "--horizon", H,
            "--batch-size", B, "--samples", N, "--no-progress", *extra]


def rows(root):
    return Warehouse.open(root, create=False).query(
        'SELECT step, update_index, "return", discounted_return, episode_length, terminated, chunk_size '
        "FROM post_update_returns ORDER BY step, update_index")


def job(root, **kw):
    from retland.purd.job import SampleRequest, resolve

    wh = Warehouse.open(root, create=False)
    request = SampleRequest(OP, algo="td3", env="hopper", samples=N, horizon=H, batch_size=B, pack=W, **kw).check()
    return wh, resolve(wh, request)


class _NoCapture:
    def readouterr(self):
        return type("Out", (), {"out": "", "err": ""})()


@pytest.fixture(scope="module")
def sampled(tmp_path_factory):
    """(base warehouse with two checkpoints, its copy sampled unpacked, its copy sampled packed)."""
    base = tmp_path_factory.mktemp("packing") / "base"
    shipped.add(base, shipped.DEFAULT)
    add_twin(base)
    out = {}
    mp = pytest.MonkeyPatch()
    try:
        for name, pack in (("off", "off"), ("packed", str(W))):
            out[name] = base.parent / name
            shutil.copytree(base, out[name])
            code, _, err = run_cli(_NoCapture(), mp, *args(out[name], "--pack", pack))
            assert code == 0, err
    finally:
        mp.undo()
    return base, out["off"], out["packed"]


def test_packed_rows_are_the_same_samples_statistically(sampled):
    """Packed lanes run another program (m·B lanes, per-slot states), so single returns
    may differ in their last bits; the keys, rows and law may not."""
    from scipy.stats import ks_2samp

    _, off, packed = sampled
    a, b = rows(off), rows(packed)
    assert a.select("step", "update_index").equals(b.select("step", "update_index"))
    assert a.height == 2 * N and set(b["chunk_size"]) == {B}
    x, y = a["return"].to_numpy(), b["return"].to_numpy()
    assert np.isfinite(y).all() and y.std() > 0.1
    assert ks_2samp(x, y).pvalue > 0.001
    assert abs(x.mean() - y.mean()) < 4 * np.sqrt((x.var(ddof=1) + y.var(ddof=1)) / x.size)
    timings = Warehouse.open(packed, create=False).query("SELECT batch_size, chunks FROM chunk_timings")
    assert set(timings["batch_size"]) == {W} and timings["chunks"].sum() == 2 * N // W  # 12 chunks, 3 programs


def test_shards_and_a_killed_job_resume_to_the_rows_of_one_packed_job(sampled, tmp_path):
    from retland.purd.job import run_job

    base, _, packed = sampled
    want = rows(packed)
    sharded = tmp_path / "sharded"
    shutil.copytree(base, sharded)
    wh, j = job(sharded)
    first, second = run_job(wh, j, "0/2", leases=None), run_job(wh, j, "1/2", leases=None)
    assert first.rows_written + second.rows_written == 2 * N
    assert rows(sharded).equals(want)

    killed = tmp_path / "killed"
    shutil.copytree(base, killed)
    wh, j = job(killed)
    seen = []

    def interrupt(n):
        seen.append(n)
        if len(seen) == 2:
            raise KeyboardInterrupt  # after the second packed chunk: both are flushed

    with pytest.raises(KeyboardInterrupt):
        run_job(wh, j, progress=interrupt, flush_seconds=0)
    assert rows(killed).height == 2 * W  # whole packed chunks: 4 chunks of 8 each
    resumed = run_job(wh, j, flush_seconds=0)
    assert resumed.rows_written == 2 * N - 2 * W
    assert rows(killed).equals(want)  # bit for bit: the same packed chunks, the same lanes


def test_a_leased_chunk_is_left_to_its_holder_and_status_shows_it(sampled, tmp_path):
    from retland.cli.status import status_table
    from retland.purd.job import run_job
    from retland.purd.leases import Leases

    base, _, packed = sampled
    root = tmp_path / "wh"
    shutil.copytree(base, root)
    wh, j = job(root)
    run_id, step, spec = j.resolved()[0]
    other = Leases(root)  # another job holding chunk 1 of the first distribution
    assert other.acquire(run_id, step, spec.operator_id, B, 1) is None
    outcome = run_job(wh, j, flush_seconds=0)
    assert [(b.step, b.chunk) for b in outcome.busy] == [(step, 1)]
    assert outcome.rows_written == 2 * N - B
    status = {r["step"]: r for r in status_table(wh, samples=N).to_dicts()}
    assert status[step]["chunks"] == f"{N // B - 1}/{N // B}" and status[step]["computing"] == 1
    assert status[TWIN if step != TWIN else 120000]["chunks"] == f"{N // B}/{N // B}"
    other.release()
    assert run_job(wh, j, flush_seconds=0).rows_written == B
    assert rows(root).equals(rows(packed))


def test_adaptive_rounds_pack_the_open_distributions(sampled, tmp_path, capsys, monkeypatch):
    base, _, _ = sampled
    root = tmp_path / "wh"
    shutil.copytree(base, root)
    extra = ("--pack", W, "--target-ci", "mean=0.001", "--max-samples", 2 * B + 8, "--round-samples", 2 * B)
    code, out, err = run_cli(capsys, monkeypatch, *args(root, *extra))
    assert code == 0, err
    assert out.count("max samples") == 2
    got = rows(root)
    assert got.group_by("step").len().sort("step")["len"].to_list() == [3 * B, 3 * B]
    timings = Warehouse.open(root, create=False).query("SELECT batch_size, chunks FROM chunk_timings")
    # round 1: 2 distributions x 2 chunks = one packed chunk; round 2: 2 x 1 chunk = one
    assert set(timings["batch_size"]) == {W} and timings["chunks"].sum() == 2
    before = tree_digest(root / "tables" / "post_update_returns")
    code, out, err = run_cli(capsys, monkeypatch, *args(root, *extra))
    assert code == 0 and "wrote 0 rows" in out
    assert tree_digest(root / "tables" / "post_update_returns") == before


def test_distributions_that_cannot_share_a_program_are_split(sampled, tmp_path):
    from retland.purd.packing import PackedChunk, layout
    from retland.purd.sampling import plan_job

    base, _, _ = sampled
    root = tmp_path / "wh"
    shutil.copytree(base, root)
    example = shipped.get(shipped.DEFAULT)
    config = json.loads(example.meta["run"]["config"])
    config["agent"]["learning_rate"] *= 2  # another agent: another program
    add_twin(root, step=120000, config=json.dumps(config), run_id=example.run_id + "-lr2")
    wh, j = job(root, runs=())
    dists = j.resolved()
    assert len(dists) == 3
    plans = plan_job(wh, dists, N, batch_size=B, pack=W)
    groups = {p.run_id: p.group for p in plans}
    assert len(set(groups.values())) == 2 and all(p.slots == W // B for p in plans)
    for item in layout(plans):
        assert isinstance(item, PackedChunk)
        assert len({plans[d].group for d, _ in item.units}) == 1
    assert sorted(k for p in plans for k in p.todo) == sorted(list(range(N // B)) * 3)


def test_a_bad_pack_is_refused_before_anything_is_read(sampled, tmp_path, capsys, monkeypatch):
    base, _, _ = sampled
    root = tmp_path / "wh"
    shutil.copytree(base, root)
    before = tree_digest(root)
    code, out, err = run_cli(capsys, monkeypatch, *args(root, "--pack", "wide"))
    assert code == 2 and "--pack 'wide'" in err and len(err.strip().splitlines()) == 1
    assert tree_digest(root) == before


def test_pack_auto_is_off_on_cpu_and_4096_lanes_on_accelerators():
    from retland.purd.packing import resolve_pack
    from retland.purd.sampling import SamplingError

    assert resolve_pack("auto", "cpu") == 0 and resolve_pack("off") == 0
    assert resolve_pack("auto", "gpu") == resolve_pack("auto", "tpu") == 4096 and resolve_pack(64) == 64
    with pytest.raises(SamplingError, match="--pack"):
        resolve_pack("wide")


def test_the_layout_cuts_each_groups_chunks_into_runs_of_m_whatever_is_done():
    from retland.purd.packing import PackedChunk, layout
    from retland.purd.sampling import Plan, take_shard

    def plan(n, b, group, slots, first=0):
        return Plan(n, b, [], set(), group=group, slots=slots, first_chunk=first)

    # two distributions of group 0 (3 chunks each, m = 4), one unpacked, one of group 1 (m = 2)
    plans = [plan(24, 8, 0, 4), plan(20, 8, -1, 1), plan(24, 8, 0, 4), plan(16, 8, 1, 2)]
    items = layout(plans)
    assert items == [PackedChunk(0, 0, 4, ((0, 0), (0, 1), (0, 2), (2, 0))), PackedChunk(0, 1, 4, ((2, 1), (2, 2))),
                     (1, 0), (1, 1), (1, 2), PackedChunk(1, 0, 2, ((3, 0), (3, 1)))]
    assert [x for i in range(3) for x in take_shard(items, (i, 3))] == items
    # an adaptive round: only the chunks from index 16 on
    late = [plan(24, 8, 0, 4, first=2), plan(24, 8, 0, 4, first=2)]
    assert layout(late) == [PackedChunk(0, 0, 4, ((0, 2), (1, 2)))]


def test_a_packed_job_sigkilled_after_two_chunks_resumes_to_the_rows_of_one(sampled, tmp_path):
    """The same as the interrupted job above, with SIGKILL in another process (whole
    Parquet parts of whole packed chunks), resumed here. The second process loads the
    programs the fixture stored (about 7 s)."""
    import os
    import signal
    import subprocess
    import sys
    import textwrap

    import pyarrow.parquet as pq

    from conftest import cli_env
    from retland.purd.job import run_job

    base, _, packed = sampled
    root = tmp_path / "wh"
    shutil.copytree(base, root)
    env = cli_env({"TF_CPP_MIN_LOG_LEVEL": "3"})
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent), env["PYTHONPATH"]])
    code = textwrap.dedent(f"""
        import sys
        import test_packing as t
        from retland.purd.job import run_job
        wh, j = t.job({str(root)!r})
        def progress(n):
            print("chunk", flush=True)
            sys.stdin.readline()
        run_job(wh, j, progress=progress, flush_seconds=0)
        """)
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, text=True, stdout=subprocess.PIPE,
                            stdin=subprocess.PIPE)
    try:
        for k in range(2):
            assert proc.stdout.readline().strip() == "chunk"
            if k < 1:
                proc.stdin.write("\n")
                proc.stdin.flush()
        proc.send_signal(signal.SIGKILL)  # while it waits after its second packed chunk
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    parts = list((root / "tables" / "post_update_returns").rglob("*.parquet"))
    assert sum(pq.read_table(p).num_rows for p in parts) == 2 * W
    wh, j = job(root)
    assert run_job(wh, j, flush_seconds=0).rows_written == 2 * N - 2 * W
    assert rows(root).equals(rows(packed))
