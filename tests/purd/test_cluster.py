"""Sampling on clusters: submitit shard tasks, --shard auto, `retland status`, chunk leases.

Everything samples the shipped example checkpoint (no training) with gaussian(0.05) at
horizon 20 and B = 8, so one small chunk program is compiled once for the module (the
local executor's tasks find it in the persistent compile cache).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import run_cli, tree_digest
from retland import shipped
from retland.purd import sampling
from retland.purd.leases import Leases, lease_path, live_leases
from retland.purd.operators import parse_operator
from retland.purd.sampling import SamplingError, parse_shard
from retland.warehouse import Warehouse

OP, H, N, B = "gaussian:0.05", 20, 24, 8
COLS = ["update_index", "return", "discounted_return", "episode_length", "terminated", "chunk_size"]


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """(warehouse root holding the example checkpoint, run_id, step); tests copy it."""
    root = tmp_path_factory.mktemp("cluster") / "base"
    run_id, step = shipped.add(root, shipped.DEFAULT)
    return root, run_id, step


def copy_of(example, tmp_path, name="wh"):
    root = tmp_path / name
    shutil.copytree(example[0], root)
    return root


def sample_args(root, *extra, n=N):
    return ["sample", "-w", root, "--algo", "td3", "--env", "hopper", "--operator", OP, "--samples", n,
            "--horizon", H, "--batch-size", B, "--no-progress", *extra]


def rows(root):
    return Warehouse.open(root, create=False).query(
        f"SELECT {', '.join(COLS)} FROM post_update_returns ORDER BY update_index")


def raw_row_count(root) -> int:
    """Rows in the Parquet parts themselves: duplicates the views hide are counted."""
    return sum(pq.read_metadata(p).num_rows for p in (root / "tables" / "post_update_returns").rglob("*.parquet"))


@pytest.fixture(scope="module")
def one_job(example, tmp_path_factory):
    """The reference: all N samples in one in-process job, without leases."""
    root = tmp_path_factory.mktemp("one") / "wh"
    shutil.copytree(example[0], root)
    (res,) = run_job(root, example, None)
    assert res.rows_written == N
    return root


def test_local_executor_two_shards_give_the_rows_of_one_job(example, one_job, tmp_path, capsys, monkeypatch):
    root = copy_of(example, tmp_path)
    code, out, err = run_cli(capsys, monkeypatch, *sample_args(root, "--executor", "local", "--jobs", 2))
    assert code == 0, err
    assert "shard 0/2: 8 rows" in err and "shard 1/2: 16 rows" in err
    assert f"wrote {N} rows with 2 task(s)" in out
    got, want = rows(root), rows(one_job)
    assert got.height == N and raw_row_count(root) == N
    assert got.equals(want)  # bit-identical: same floats, lengths, flags
    assert list((root / "jobs").glob("*/*_log.err"))  # the tasks' logs are kept
    # a rerun submits nothing
    code, out, err = run_cli(capsys, monkeypatch, *sample_args(root, "--executor", "local", "--jobs", 2))
    assert code == 0 and "nothing submitted" in out
    # status: every index of N, all chunks complete, nothing being computed
    code, out, err = run_cli(capsys, monkeypatch, "status", "-w", root, "--samples", N, "-f", "json")
    assert code == 0, err
    import json

    (row,) = json.loads(out)
    assert row["rows"] == N and row["below_n"] == N and row["chunks"] == "3/3" and row["computing"] == 0
    assert row["chunk_size"] == str(B) and row["operator"].startswith("gaussian[sigma=0.05,h=20")


def test_retland_sample_writes_the_rows_of_the_command(example, one_job, tmp_path, capsys, monkeypatch):
    """The Python API and `retland sample` take one library path: the same rows, the same
    resumption, the command's refusals as library errors."""
    import retland

    _, run_id, step = example
    root = copy_of(example, tmp_path)
    done = retland.sample(root, run=run_id[:8], steps=[step], operator=OP, samples=N, horizon=H, batch_size=B)
    assert done.rows_written == N and len(done.distributions) == 1 and not done.busy and not done.adaptive
    assert rows(root).equals(rows(one_job))
    by_cli = copy_of(example, tmp_path, "cli")
    code, out, err = run_cli(capsys, monkeypatch, *sample_args(by_cli))
    assert code == 0 and f"wrote {N} rows (1 distribution(s) computed, 0 already complete" in out, err
    assert rows(by_cli).equals(rows(root))
    again = retland.sample(root, algo="td3", env="hopper", seeds="0..9", operator=OP, samples=N, horizon=H,
                           batch_size=B)
    assert again.rows_written == 0 and again.complete == 1
    with pytest.raises(SamplingError, match=r"^--samples 0: give a whole number in \[1, 1e9\]$"):
        retland.sample(root, run=run_id, operator=OP, samples=0)
    with pytest.raises(ValueError, match="no run id starts with it"):
        retland.sample(root, run="nobody", operator=OP)


def test_a_failing_task_is_one_line_with_its_log(tmp_path):
    from retland.cluster import Resources, submit, wait
    from retland.purd.job import SampleJob

    job = SampleJob(str(tmp_path / "nowhere"), (("r", 1, "hopper"),), OP, H, 0, B, samples=N)
    sub = submit(job, 1, "local", Resources(), tmp_path / "jobs")
    done, failed = wait(sub)
    assert done == [] and len(failed) == 1
    line = failed[0]
    assert "\n" not in line and "no warehouse at" in line and "log: " in line
    assert os.path.exists(line.split("log: ")[1])


def test_executor_options_are_checked_before_anything_runs(example, tmp_path, capsys, monkeypatch):
    root = copy_of(example, tmp_path)
    before = tree_digest(root)
    for extra, text in [(["--executor", "local"], "needs --jobs N"),
                        (["--executor", "slurm", "--jobs", "2", "--shard", "0/2"], "leave --shard out"),
                        (["--jobs", "2"], "--jobs is for --executor slurm or local"),
                        (["--executor", "cloud", "--jobs", "2"], "choose from none, local, slurm"),
                        (["--executor", "slurm", "--jobs", "2", "--time", "soon"], "--time 'soon'"),
                        (["--executor", "slurm", "--jobs", "2", "--mem", "lots"], "--mem 'lots'")]:
        code, out, err = run_cli(capsys, monkeypatch, *sample_args(root, *extra))
        assert code == 2 and text in err, (extra, err)
        assert len(err.strip().splitlines()) == 1
    # a machine without SLURM's commands (here: on no PATH at all), whether this one has them or not
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    code, out, err = run_cli(capsys, monkeypatch, *sample_args(root, "--executor", "slurm", "--jobs", "2"))
    assert code == 2 and "no SLURM here (sbatch not found on PATH)" in err
    assert len(err.strip().splitlines()) == 1
    assert tree_digest(root) == before


def test_slurm_array_parameters():
    from retland.cluster import Resources, import_submitit, parse_time

    import_submitit()
    from submitit.slurm.slurm import _make_sbatch_string

    assert [parse_time(t) for t in ("90", "1:30:00", "2-00:00:00", "2-3", "05:30")] == [90, 90, 2880, 3060, 6]
    params = Resources("gpu", 1, 8, "4:00:00", "32G").slurm_parameters(16)
    text = _make_sbatch_string(command="python -m x", folder="/shared/jobs/%j", **params, map_count=16)
    for flag in ("--array=0-15%16", "--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--time=240",
                 "--mem=32G", "--job-name=retland-sample"):
        assert f"#SBATCH {flag}" in text, flag


def test_shard_auto_reads_the_slurm_array_task():
    env = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0",
           "SLURM_ARRAY_TASK_MAX": "3"}
    assert parse_shard("auto", env) == (3, 4)
    # ids 1..8: task 1 is shard 0, task 8 shard 7
    one_based = dict(env, SLURM_ARRAY_TASK_MIN="1", SLURM_ARRAY_TASK_MAX="8", SLURM_ARRAY_TASK_COUNT="8")
    assert parse_shard("auto", dict(one_based, SLURM_ARRAY_TASK_ID="1")) == (0, 8)
    assert parse_shard("auto", dict(one_based, SLURM_ARRAY_TASK_ID="8")) == (7, 8)
    # --array=10-20:5 -> ids 10, 15, 20
    stepped = {"SLURM_ARRAY_TASK_ID": "15", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "10",
               "SLURM_ARRAY_TASK_MAX": "20", "SLURM_ARRAY_TASK_STEP": "5"}
    assert parse_shard("auto", stepped) == (1, 3)
    with pytest.raises(SamplingError, match="not inside a SLURM array task"):
        parse_shard("auto", {})
    with pytest.raises(SamplingError, match="not one of a regular range"):  # --array=1,4,9
        parse_shard("auto", {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "3",
                             "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "9"})


def test_shard_auto_on_the_command_line(example, one_job, tmp_path, capsys, monkeypatch):
    root = copy_of(example, tmp_path)
    for key in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX"):
        monkeypatch.delenv(key, raising=False)
    before = tree_digest(root)
    code, out, err = run_cli(capsys, monkeypatch, *sample_args(root, "--shard", "auto"))
    assert code == 2 and "not inside a SLURM array task" in err and tree_digest(root) == before
    for task in (1, 2):  # --array=1-2
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", str(task))
        monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
        monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
        monkeypatch.setenv("SLURM_ARRAY_TASK_MAX", "2")
        code, out, err = run_cli(capsys, monkeypatch, *sample_args(root, "--shard", "auto"))
        assert code == 0, err
        assert f"shard {task - 1}/2" in err
    assert rows(root).equals(rows(one_job))


# ---------------------------------------------------------------------------- leases

def distribution(example):
    _, run_id, step = example
    return run_id, step, parse_operator(OP, env="hopper", horizon=H)


def run_job(root, example, leases, **kw):
    """The SampleResult of each distribution `purd.job.run_job` computed."""
    from retland.purd.job import SampleJob, run_job as run

    _, run_id, step = example
    job = SampleJob(str(root), ((run_id, step, "hopper"),), OP, H, 0, B, samples=N)
    return run(Warehouse.open(root, create=False), job, leases=leases, flush_seconds=0, **kw).distributions


def write_lease(root, example, chunk, host, pid, age=0.0):
    run_id, step, spec = distribution(example)
    path = lease_path(root, run_id, step, spec.operator_id, B, chunk)
    path.parent.mkdir(parents=True, exist_ok=True)
    import json

    path.write_text(json.dumps({"run_id": run_id, "step": step, "operator_id": spec.operator_id, "batch_size": B,
                                "chunk": chunk, "host": host, "pid": pid, "job": None, "started": time.time() - age,
                                "token": f"other-{chunk}"}))
    os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_a_chunk_leased_by_a_live_job_is_left_to_it_and_taken_over_when_it_dies(example, one_job, tmp_path,
                                                                               capsys, monkeypatch):
    root = copy_of(example, tmp_path)
    holder = subprocess.Popen(["sleep", "300"])
    try:
        path = write_lease(root, example, 1, socket.gethostname(), holder.pid)
        code, out, err = run_cli(capsys, monkeypatch, *sample_args(root))
        assert code == 0, err
        assert f"1 chunk(s) left to other live jobs that lease them ({socket.gethostname()}:{holder.pid})" in err
        got = rows(root)
        assert sorted(got["update_index"]) == [*range(0, 8), *range(16, 24)]  # chunk 1 left to its holder
        code, out, err = run_cli(capsys, monkeypatch, "status", "-w", root, "--samples", N, "-f", "json")
        import json

        (row,) = json.loads(out)
        assert row["computing"] == 1 and row["chunks"] == "2/3" and str(holder.pid) in row["by"]
    finally:
        holder.kill()
        holder.wait()
    assert path.exists()  # the dead holder's lease is still there, and stale: taken over at once
    code, out, err = run_cli(capsys, monkeypatch, *sample_args(root))
    assert code == 0 and "wrote 8 rows" in out, out + err
    assert rows(root).equals(rows(one_job)) and raw_row_count(root) == N
    assert not path.exists() and live_leases(root) == []  # released after the rows were flushed


def test_a_killed_jobs_leases_of_chunks_it_flushed_are_swept(example, tmp_path):
    """A job killed (SIGKILL, scancel) after a flush leaves the leases of complete chunks,
    which no later job plans: the next job that claims chunks of the distribution removes
    the stale ones; a live holder's lease stays."""
    root = copy_of(example, tmp_path)
    wh = Warehouse.open(root, create=False)
    (early,) = sampling.plan_job(wh, [distribution(example)], 8, batch_size=B)
    sampling.sample_checkpoint(wh, early, flush_seconds=0)  # chunk 0 stored, as by the killed job
    dead = subprocess.Popen(["true"])
    dead.wait()
    flushed = write_lease(root, example, 0, socket.gethostname(), dead.pid)
    holder = subprocess.Popen(["sleep", "300"])
    try:
        live = write_lease(root, example, 2, socket.gethostname(), holder.pid)
        (res,) = run_job(root, example, Leases(root))
        assert not flushed.exists() and live.exists()
        assert [b.chunk for b in res.busy] == [2] and res.rows_written == 8  # chunk 1 only
    finally:
        holder.kill()
        holder.wait()


def test_a_lease_without_heartbeat_goes_stale_and_a_fresh_one_does_not(example, tmp_path):
    root = copy_of(example, tmp_path)
    fresh = write_lease(root, example, 0, "other-host", 1, age=0)
    old = write_lease(root, example, 2, "other-host", 1, age=120)
    (res,) = run_job(root, example, Leases(root, stale_after=60))
    assert [b.chunk for b in res.busy] == [0]  # the fresh lease of another host is respected
    assert sorted(rows(root)["update_index"]) == list(range(8, 24))  # chunk 2's old lease was taken over
    assert fresh.exists() and not old.exists()


def test_two_identical_jobs_at_once_do_not_double_the_rows(example, one_job, tmp_path):
    """Job A holds its leases (blocked after its first chunk) while job B, identical,
    runs: B leaves A's chunks alone; afterwards every index is stored once."""
    root = copy_of(example, tmp_path)
    first_chunk, go_on = threading.Event(), threading.Event()
    out: dict = {}

    def progress(n, **info):
        first_chunk.set()
        assert go_on.wait(120)

    def job_a():
        out["a"] = run_job(root, example, Leases(root), progress=progress)

    a = threading.Thread(target=job_a)
    a.start()
    try:
        assert first_chunk.wait(300)
        (res_b,) = run_job(root, example, Leases(root))
        # A flushed chunk 0 before its progress call, so B plans chunks 1 and 2: both A's
        assert res_b.rows_written == 0 and sorted(b.chunk for b in res_b.busy) == [1, 2]
    finally:
        go_on.set()
        a.join()
    (res_a,) = out["a"]
    assert res_a.rows_written == N
    assert raw_row_count(root) == N and rows(root).equals(rows(one_job))
    assert not any((root / "leases").rglob("*.lease"))


def test_rows_flushed_by_another_job_after_planning_are_not_computed_again(example, tmp_path):
    """A plan made before another job flushed chunk 0 computes only the rest: the
    stored rows are read again once the leases are taken."""
    root = copy_of(example, tmp_path)
    wh = Warehouse.open(root, create=False)
    (stale_plan,) = sampling.plan_job(wh, [distribution(example)], N, batch_size=B)
    assert stale_plan.todo == [0, 1, 2]
    (early,) = sampling.plan_job(wh, [distribution(example)], 8, batch_size=B)
    sampling.sample_checkpoint(wh, early, leases=Leases(root), flush_seconds=0)  # "another job" flushes chunk 0
    res = sampling.sample_checkpoint(wh, stale_plan, leases=Leases(root), flush_seconds=0)
    assert res.rows_written == 16 and raw_row_count(root) == N
    assert np.array_equal(np.sort(rows(root)["update_index"].to_numpy()), np.arange(N))


def test_the_status_hint_of_a_submitted_job_finds_each_of_its_distributions(tmp_path, capsys, monkeypatch):
    """A job whose distributions have different operator ids (here: two, as init_state's
    factor resolves to each env's own reset noise) is watched with commands `retland status` runs as printed:
    once the hint was one `--operator 'id1, id2'`, a prefix no id starts with."""
    import json
    import re
    import shlex
    from types import SimpleNamespace

    from retland.cli.sample import _submit
    from retland.cluster import Resources
    from retland.purd.job import SampleJob

    envs = ["hopper", "ant"]
    ids = [parse_operator("init_state:factor=0.5", env=e, horizon=H, seed=0).operator_id for e in envs]
    assert len(set(ids)) == 2
    csv = tmp_path / "returns.csv"
    csv.write_text("algo,env,seed,step,operator,update_index,return\n" + "".join(
        f'td3,{env},0,100,"{op}",{i},{10 + i}\n' for env, op in zip(envs, ids) for i in range(N)))
    root = tmp_path / "my wh"  # a space: the hint must quote it
    code, out, err = run_cli(capsys, monkeypatch, "import-returns", csv, "-w", root)
    assert code == 0, err
    # someone else's distributions under another operator, that the hints must not show
    csv.write_text("algo,env,seed,step,operator,update_index,return\n" + "".join(
        f"td3,hopper,1,100,other[h=20],{i},1\n" for i in range(N)))
    code, out, err = run_cli(capsys, monkeypatch, "import-returns", csv, "-w", root)
    assert code == 0, err

    wh = Warehouse.open(root, create=False)
    job = SampleJob(str(root), (("r0", 100, "hopper"), ("r1", 100, "ant")), "init_state:factor=0.5", H, 0, B,
                  samples=N)
    submitted = SimpleNamespace(array_id="4242", folder=tmp_path / "jobs")
    _submit(wh, job, [SimpleNamespace(new_rows=N)] * 2, "slurm", 2, Resources(), None, sorted(ids), print,
            lambda *a: submitted, None)
    printed = capsys.readouterr().out
    hints = [h.strip() for h in re.findall(r"retland status [^|\n]*", printed)]
    assert hints, printed
    found = set()
    for hint in hints:
        args = shlex.split(hint)
        assert args[:2] == ["retland", "status"], hint
        code, out, err = run_cli(capsys, monkeypatch, *args[1:], "-f", "json")
        assert code == 0, (hint, err)
        rows = json.loads(out) if out.strip().startswith("[") else []
        assert rows, f"{hint!r} finds nothing: {out}"
        assert all(r["below_n"] == N for r in rows)
        found |= {r["operator"] for r in rows}
    assert found == set(ids), (found, printed)
