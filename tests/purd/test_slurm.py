"""Sampling arrays on a real SLURM cluster: `make test-slurm` starts a one-node cluster on
this host (`.ci/slurm-up`, as root) and runs these tests; elsewhere they are skipped
(no `sinfo` answers) and `make test` deselects them (marker `slurm`).

The tasks are real `sbatch` arrays that submitit writes: each task runs this venv's
python on the node (here: this host) and imports retland from this checkout
(PYTHONPATH). Every warehouse is a copy of one tiny trained TD3 job (2 seeds,
checkpoints at 60 and 120 env steps: 4 distributions), and every array's rows are
compared with those of the same command run in this process, byte for byte: one
platform, one chunk size, so the same compiled program.

What a one-node cluster cannot exercise (GPUs, several partitions, other nodes) is
tested on the sbatch text in test_cluster.py.
"""
from __future__ import annotations

import json
import pickle
import re
import shutil
import subprocess
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import CLI_MAIN, REPO, TINY_AGENT, TINY_TRAIN, run_cli, tree_digest


def _default_minutes() -> int | None:
    """The default partition's DefaultTime in minutes when it is whole hours (as
    .ci/slurm-up's 60), else None."""
    res = subprocess.run(["sinfo", "-h", "-o", "%P %L"], capture_output=True, text=True, timeout=30)
    for line in res.stdout.splitlines():
        name, _, default = line.partition(" ")
        m = re.fullmatch(r"(\d+):00:00", default.strip())
        if name.endswith("*") and m:
            return 60 * int(m.group(1))
    return None


def _cluster_answers() -> str | None:
    """None when a SLURM controller answers and shows a usable node, else why not."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no SLURM client here (sinfo/sbatch not on PATH)"
    try:
        res = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 15 s"
    states = res.stdout.split()
    if res.returncode != 0 or not any(s.rstrip("*~#!%$@^-").lower() in ("idle", "mixed", "allocated", "completing")
                                      for s in states):
        return f"no usable SLURM node (sinfo: {(res.stderr or res.stdout).strip() or 'no nodes'})"
    return None


pytestmark = pytest.mark.slurm

OP = "gaussian:0.05"
COLS = ["run_id", "step", "operator_id", "update_index", "return", "discounted_return", "episode_length",
        "terminated", "chunk_size"]
TASK_TIMEOUT = 600  # seconds an array may take before a test gives up (and cancels it)

STUDY = """\
name = "tiny-slurm"
description = "two seeds, 120 steps, sampled by a SLURM array"

""" + TINY_TRAIN + """

[sample]
operators = ["gaussian"]
samples = 16
horizon = 20
"""


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """Skips the module unless a cluster answers (asked only when a test here is selected:
    sinfo without a controller takes seconds). The tasks import retland from this
    checkout, whatever the venv has installed."""
    import os

    why_not = _cluster_answers()
    if why_not is not None:
        pytest.skip(f"needs a running SLURM cluster: {why_not}; start one with .ci/slurm-up (as root), or run "
                    "`make test-slurm`")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
        yield


@pytest.fixture(scope="module")
def submitted():
    """Array ids the tests submitted; those still queued at the end are cancelled."""
    ids: list[str] = []
    yield ids
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(folder with study.toml, warehouse root) after `retland study study.toml --until train`."""
    import sys

    folder = tmp_path_factory.mktemp("slurm")
    (folder / "tiny-agent.toml").write_text(TINY_AGENT)
    (folder / "study.toml").write_text(STUDY)
    root = folder / "trained"
    res = subprocess.run([sys.executable, "-c", CLI_MAIN, "study", str(folder / "study.toml"), "--until", "train",
                          "-w", str(root), "--no-progress"], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    return folder, root


def copy_of(trained, tmp_path, name):
    root = tmp_path / name
    shutil.copytree(trained[1], root)
    return root


def sample_args(root, samples, horizon, batch, *extra):
    return ["sample", "-w", root, "--algo", "td3", "--env", "hopper", "--operator", OP, "--samples", samples,
            "--horizon", horizon, "--batch-size", batch, "--no-progress", *extra]


def rows(root):
    from retland.warehouse import Warehouse

    return Warehouse.open(root, create=False).query(
        f"SELECT {', '.join(COLS)} FROM post_update_returns ORDER BY run_id, step, update_index")


def assert_same_rows(root, reference):
    got, want = rows(root), rows(reference)
    assert got.height == want.height > 0
    assert got.select(COLS[:4]).equals(want.select(COLS[:4]))  # the same indices of the same distributions
    # the returns' bytes, index by index (float32 as computed), and every other result column
    assert np.asarray(got["return"]).tobytes() == np.asarray(want["return"]).tobytes()
    assert got.equals(want)


def raw_row_count(root) -> int:
    """Rows in the Parquet parts themselves: duplicates that the views hide count too."""
    return sum(pq.read_metadata(p).num_rows for p in (root / "tables" / "post_update_returns").rglob("*.parquet"))


def submit(capsys, monkeypatch, submitted, args) -> tuple[str, str]:
    """(array id, the command's output) of `retland sample ... --executor slurm --jobs 2`."""
    code, out, err = run_cli(capsys, monkeypatch, *args)
    assert code == 0, err
    out = " ".join(out.split())
    m = re.search(r"submitted SLURM array (\d+): 2 task\(s\)", out)
    assert m, out
    submitted.append(m.group(1))
    return m.group(1), out


def queued(array: str) -> list[str]:
    """`squeue` lines (task id, state) of the array's tasks still queued or running."""
    res = subprocess.run(["squeue", "-h", "-r", "-j", array, "-o", "%i %T"], capture_output=True, text=True,
                         timeout=30)
    return res.stdout.split("\n") if res.returncode == 0 and res.stdout.strip() else []


def wait_for(array: str, folder: Path, timeout: float = TASK_TIMEOUT) -> None:
    t0 = time.monotonic()
    while queued(array):
        if time.monotonic() - t0 > timeout:
            subprocess.run(["scancel", array], timeout=30)
            logs = "\n".join(p.read_text()[-1500:] for p in sorted(folder.glob(f"{array}_*/*_log.err")))
            pytest.fail(f"array {array} not finished after {timeout:.0f} s; cancelled. Logs:\n{logs}")
        time.sleep(0.5)


def outcome(folder: Path, array: str, task: int):
    """What submitit stored for task i: ("success", summary) or ("error", traceback);
    None when the task never finished (killed)."""
    path = folder / f"{array}_{task}" / f"{array}_{task}_0_result.pkl"
    if not path.exists():
        return None
    with path.open("rb") as f:
        return pickle.load(f)


def summaries(folder: Path, array: str) -> list[dict]:
    out = []
    for i in range(2):
        res = outcome(folder, array, i)
        assert res is not None and res[0] == "success", (i, res)
        out.append(res[1])
    return out


def test_an_array_stores_the_rows_of_a_local_run(trained, tmp_path, capsys, monkeypatch, submitted):
    local, remote = copy_of(trained, tmp_path, "local"), copy_of(trained, tmp_path, "remote")
    args = (24, 20, 8)  # 4 distributions x 3 chunks of 8: shard 0 and 1 take 6 chunks each
    code, out, err = run_cli(capsys, monkeypatch, *sample_args(local, *args))
    assert code == 0 and "wrote 96 rows" in out, err
    array, _ = submit(capsys, monkeypatch, submitted, sample_args(remote, *args, "--executor", "slurm", "--jobs", 2))
    wait_for(array, remote / "jobs")
    done = summaries(remote / "jobs", array)
    assert [d["shard"] for d in done] == ["0/2", "1/2"] and [d["rows_written"] for d in done] == [48, 48]
    assert_same_rows(remote, local)
    assert raw_row_count(remote) == 96
    # the tasks' logs, where the command said; without --time, the partition's default time
    # (.ci/slurm-up: 60 minutes), not submitit's 5
    assert all((remote / "jobs" / f"{array}_{i}" / f"{array}_{i}_0_log.out").is_file() for i in range(2))
    script = (remote / "jobs" / array / f"{array}_submission.sh").read_text()
    if _default_minutes() == 60:
        assert "#SBATCH --time=60\n" in script, script
    code, out, err = run_cli(capsys, monkeypatch, *sample_args(remote, *args, "--executor", "slurm", "--jobs", 2))
    assert code == 0 and "nothing submitted" in out, out + err


# Big enough that a task still computes for several seconds after its first rows are
# stored (rows are flushed every 10 s and at the end of each distribution), whatever the
# machine's speed: 4 distributions x 1024 samples x 1000 steps, shard 1 = distributions 2, 3.
BIG = (1024, 1000, 32)


def status(capsys, monkeypatch, root, samples) -> list[dict]:
    code, out, err = run_cli(capsys, monkeypatch, "status", "-w", root, "--samples", samples, "-f", "json")
    assert code == 0, err
    return json.loads(out) if out.strip().startswith("[") else []


def test_a_task_cancelled_mid_run_and_the_array_resubmitted_gives_exact_rows(trained, tmp_path, capsys,
                                                                               monkeypatch, submitted):
    n = BIG[0]
    local, remote = copy_of(trained, tmp_path, "local"), copy_of(trained, tmp_path, "remote")
    code, out, err = run_cli(capsys, monkeypatch, *sample_args(local, *BIG))
    assert code == 0 and f"wrote {4 * n} rows" in out, err
    # --time: submitit's default limit is 5 minutes, which a loaded machine could reach
    cmd = sample_args(remote, *BIG, "--executor", "slurm", "--jobs", 2, "--time", 30)
    array, _ = submit(capsys, monkeypatch, submitted, cmd)
    assert "#SBATCH --time=30\n" in (remote / "jobs" / array / f"{array}_submission.sh").read_text()
    # `retland status` shows which task computes which distribution; once task 1 has stored
    # rows of one of its distributions and still holds chunks, it is cancelled
    seen: set[str] = set()
    held_by_1: set[tuple] = set()
    t0 = time.monotonic()
    while True:
        assert time.monotonic() - t0 < TASK_TIMEOUT, f"task {array}_1 never stored rows; seen {seen}"
        table = status(capsys, monkeypatch, remote, n)
        for r in table:
            jobs = set(re.findall(r"\(job (\d+_\d+)\)", r["by"] or ""))
            seen |= jobs
            if f"{array}_1" in jobs:
                held_by_1.add((r["run_id"], r["step"]))
        stored_1 = sum(r["rows"] for r in table if (r["run_id"], r["step"]) in held_by_1)
        still = any(f"(job {array}_1)" in (r["by"] or "") for r in table)
        if stored_1 and still:
            break
        assert outcome(remote / "jobs", array, 1) is None, "task 1 ended before it could be cancelled"
        time.sleep(0.3)
    subprocess.run(["scancel", f"{array}_1"], check=True, timeout=30)
    assert {f"{array}_0", f"{array}_1"} <= seen  # both tasks appeared in `retland status`, with their job ids
    wait_for(array, remote / "jobs")
    assert outcome(remote / "jobs", array, 0)[0] == "success"
    assert outcome(remote / "jobs", array, 1) is None  # killed: submitit stored no result
    partial = rows(remote).height
    assert stored_1 <= partial < 4 * n, partial  # task 1's share is stored in part
    # the dead task's leases do not count as computing (its pid is gone on this host)
    assert sum(r["computing"] for r in status(capsys, monkeypatch, remote, n)) == 0
    code, out, err = run_cli(capsys, monkeypatch, "check", "-w", remote)
    assert code == 0, out + err

    again, out = submit(capsys, monkeypatch, submitted, cmd)  # the same command
    assert f"2 task(s) sampling {4 * n - partial} new samples" in out
    wait_for(again, remote / "jobs")
    done = summaries(remote / "jobs", again)
    assert sum(d["rows_written"] for d in done) == 4 * n - partial
    assert_same_rows(remote, local)
    assert raw_row_count(remote) == 4 * n  # no index stored twice
    code, out, err = run_cli(capsys, monkeypatch, "check", "-w", remote)
    assert code == 0, out + err
    assert not list((remote / "leases").rglob("*.lease"))  # the dead task's were taken over, then released
    table = status(capsys, monkeypatch, remote, n)
    assert [r["chunks"] for r in table] == [f"{n // BIG[2]}/{n // BIG[2]}"] * 4


def test_a_studys_sample_stage_as_one_array(trained, tmp_path, capsys, monkeypatch, submitted):
    """`retland study FILE --shard auto` in each task of an sbatch array (the study has no
    --executor of its own): the tasks split the sample stage, and the rows are those of
    the stage run in one process."""
    import sys

    folder, _ = trained
    study = folder / "study.toml"
    local, remote = copy_of(trained, tmp_path, "local"), copy_of(trained, tmp_path, "remote")
    code, out, err = run_cli(capsys, monkeypatch, "study", study, "--until", "sample", "-w", local, "--no-progress")
    assert code == 0, err
    launcher = tmp_path / "retland_cli.py"
    launcher.write_text(CLI_MAIN)
    logs = tmp_path / "logs"
    logs.mkdir()
    script = tmp_path / "study-array.sh"
    script.write_text(textwrap.dedent(f"""\
        #!/bin/bash
        #SBATCH --job-name=retland-study
        #SBATCH --array=0-1
        #SBATCH --output={logs}/%A_%a.out
        #SBATCH --error={logs}/%A_%a.err
        exec {sys.executable} {launcher} study {study} --shard auto -w {remote} --no-progress
        """))
    res = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    array = res.stdout.strip().split(";")[0]
    submitted.append(array)
    wait_for(array, logs)
    for i in range(2):
        out, err = (logs / f"{array}_{i}.out").read_text(), (logs / f"{array}_{i}.err").read_text()
        assert "shard auto of the samples done" in " ".join(out.split()), out + err
        assert f"shard {i}/2:" in err, err  # the sample command took task i's shard from SLURM's variables
    assert_same_rows(remote, local)
    assert raw_row_count(remote) == rows(local).height == 4 * 16
    code, out, err = run_cli(capsys, monkeypatch, "study", study, "--until", "sample", "-w", remote, "--no-progress")
    assert code == 0 and "sample: done, skipped" in " ".join(out.split()), out + err


@pytest.mark.parametrize("executor", ["slurm", "local"])
def test_a_study_submits_its_sample_stage_as_one_array(trained, tmp_path, capsys, monkeypatch, submitted, executor):
    """`retland study FILE --executor slurm --jobs 2`: the sample stage's requests go out as
    one array (task i samples shard i of each) and the study stops; run again, it finds the
    stage done. --executor local runs the same tasks, waits, and goes on. Rows as the stage
    run in one process."""
    folder, _ = trained
    study = folder / "study.toml"
    local, remote = copy_of(trained, tmp_path, "local"), copy_of(trained, tmp_path, "remote")
    code, out, err = run_cli(capsys, monkeypatch, "study", study, "--until", "sample", "-w", local, "--no-progress")
    assert code == 0, err
    code, out, err = run_cli(capsys, monkeypatch, "study", study, "--until", "sample", "-w", remote, "--no-progress",
                             "--executor", executor, "--jobs", 2)
    assert code == 0, err
    text = " ".join(out.split())
    assert "(as shards of one array)" in text, text
    if executor == "slurm":
        m = re.search(r"submitted SLURM array (\d+): 2 task\(s\)", text)
        assert m and "the study goes on once the array has finished" in text, text
        submitted.append(m.group(1))
        wait_for(m.group(1), remote / "jobs")
        assert sum(d["rows_written"] for d in summaries(remote / "jobs", m.group(1))) == 4 * 16
    else:
        assert "wrote 64 rows with 2 task(s)" in text, text + err
    assert_same_rows(remote, local)
    assert raw_row_count(remote) == 4 * 16
    code, out, err = run_cli(capsys, monkeypatch, "study", study, "--until", "sample", "-w", remote, "--no-progress")
    assert code == 0 and "sample: done, skipped" in " ".join(out.split()), out + err


@pytest.mark.parametrize("extra, message", [
    (["--partition", "nosuch"], "--partition 'nosuch': no such partition (sinfo lists "),  # asked before sbatch
    (["--partition", "nosuch", "--time", "10"], "sbatch refused the array: invalid partition specified: nosuch"),
    (["--gpus-per-job", "1"], "sbatch refused the array: Invalid generic resource (gres) specification"),
    (["--mem", "9000G"], "sbatch refused the array: Memory specification can not be satisfied"),
])
def test_an_array_the_cluster_cannot_run_is_one_line_and_leaves_nothing(trained, tmp_path, capsys, monkeypatch, extra,
                                                                  message):
    root = copy_of(trained, tmp_path, "wh")
    before = tree_digest(root)
    code, out, err = run_cli(capsys, monkeypatch, *sample_args(root, 24, 20, 8, "--executor", "slurm", "--jobs", 2,
                                                               *extra))
    assert code == 2 and message in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert tree_digest(root) == before and not (root / "jobs").exists()
