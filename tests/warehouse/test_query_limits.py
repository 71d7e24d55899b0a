"""Queries that can be stopped (issue #25, part 2): Ctrl-C cancels a running query at once
(DuckDB's interrupt, exit 130, one line), --timeout stops it, a terminal shows a bounded
number of rows, results for a file stream to it, and DuckDB's memory is bounded."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import cli_process, run_cli, start_cli

FOREVER = "SELECT sum(range) FROM range(1000000000000)"


def _start(args, stdin=None):
    proc = start_cli(*args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if stdin:
        proc.stdin.write(stdin)
        proc.stdin.flush()
    return proc


def _wait_until_running(proc, settle=3.0, limit=60.0):
    """Wait until the command has started DuckDB (its thread pool is up: a dozen threads),
    then `settle` seconds more for the query itself: imports take 1-5 s on a loaded
    machine, and a Ctrl-C during them is not what these tests measure."""
    t0 = time.monotonic()
    task = f"/proc/{proc.pid}/task"
    while time.monotonic() - t0 < limit and proc.poll() is None:
        if not os.path.isdir(task) or len(os.listdir(task)) >= 10:
            break
        time.sleep(0.1)
    time.sleep(settle)
    assert proc.poll() is None, proc.communicate()


@pytest.mark.parametrize("args, stdin", [
    (["query", FOREVER], None),
    (["query", FOREVER, "-f", "csv", "-o", "{tmp}/out.csv"], None),
    (["query", "SELECT range FROM range(1000000000000) WHERE hash(range) = 0", "--limit", "0"], None),
    (["sql"], FOREVER + ";\n"),
], ids=["query", "query-to-file", "query-no-limit", "sql-stdin"])
def test_ctrl_c_cancels_a_running_query_within_2_s(filled, tmp_path, args, stdin):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = _start([*args, "-w", filled], stdin)
    _wait_until_running(proc)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=15)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 130, (out, err)
    assert elapsed < 2.0, elapsed
    assert err.strip().startswith("interrupted:") and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.glob(".*.tmp")) and not (tmp_path / "out.csv").exists()


def test_timeout_stops_a_query_and_says_how_to_lift_it(filled, capsys, monkeypatch):
    t0 = time.monotonic()
    code, out, err = run_cli(capsys, monkeypatch, "query", FOREVER, "--timeout", "0.5", "-w", filled)
    assert code == 2 and time.monotonic() - t0 < 5
    assert "--timeout 0.5 s" in err and "--timeout 0" in err and len(err.strip().splitlines()) == 1


def test_terminal_output_is_limited_and_says_how_to_lift_it(filled, capsys, monkeypatch):
    t0 = time.monotonic()
    code, out, err = run_cli(capsys, monkeypatch, "query", "SELECT * FROM range(1000000000000)", "-f", "csv",
                             "-w", filled)
    assert code == 0 and time.monotonic() - t0 < 10
    assert len(out.strip().splitlines()) == 1 + 10_000
    assert "first 10000 rows" in err and "--limit 0" in err
    code, out, err = run_cli(capsys, monkeypatch, "query", "SELECT * FROM range(7)", "--limit", "3", "-f", "csv",
                             "-w", filled)
    assert code == 0 and out.split() == ["range", "0", "1", "2"]
    code, out, err = run_cli(capsys, monkeypatch, "query", "SELECT 1", "--limit", "-1", "-w", filled)
    assert code == 2 and "--limit -1" in err


def test_file_output_streams_every_row(filled, tmp_path, capsys, monkeypatch):
    import pyarrow.parquet as pq

    target = tmp_path / "all.parquet"
    code, out, err = run_cli(capsys, monkeypatch, "query", "SELECT range AS i FROM range(300000)", "-f", "parquet",
                             "-o", target, "-w", filled)
    assert code == 0, err
    assert pq.read_metadata(target).num_rows == 300_000 and "wrote 300000 rows" in err


def test_duckdb_memory_is_bounded_and_settable(filled, monkeypatch):
    import retland

    con = retland.connect(filled)
    try:
        limit = con.sql("SELECT current_setting('memory_limit')").fetchall()[0][0]
    finally:
        con.close()
    assert "GiB" in limit or "MiB" in limit
    monkeypatch.setenv("RETLAND_DUCKDB_MEMORY", "100MB")
    con = retland.connect(filled)
    try:
        assert con.sql("SELECT current_setting('memory_limit')").fetchall()[0][0] in ("95.3 MiB", "100.0 MB")
        n = con.sql("SELECT count(*) FROM (SELECT range % 7 AS a, random() AS b FROM range(5000000) ORDER BY b)")
        assert n.fetchall()[0][0] == 5_000_000  # spilled, not killed
    finally:
        con.close()


def _limited(gib: float):
    def preexec():
        import resource

        limit = int(gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return preexec


@pytest.mark.parametrize("args", [
    ["report", "-o", "{tmp}/r.html"],
    ["query", "SELECT count(*) FROM (SELECT range % 7 AS a, random() AS b FROM range(20000000) ORDER BY b)"],
], ids=["report", "big-sort"])
def test_under_an_address_space_limit_commands_end_in_one_line(filled, tmp_path, args):
    """`ulimit -v 3G`: a command either completes (DuckDB spills) or says why in one line,
    never dies with a signal (the report's V8 renderer would)."""
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    out = cli_process(*args, "-w", filled, timeout=300, preexec_fn=_limited(3))
    assert out.returncode in (0, 2), (out.returncode, out.stderr[-2000:])
    if out.returncode == 2:
        err = out.stderr.strip()
        assert len(err.splitlines()) == 1 and err.startswith("error:"), err
    if args[0] == "report":
        assert out.returncode == 2 and "ulimit -v" in out.stderr


def test_ctrl_c_stops_other_reading_commands_in_one_line(filled, tmp_path):
    """Commands that query on the main thread (here `stats --where` with a slow condition)
    stop on Ctrl-C too: DuckDB's own signal check, reported in one line, exit 130."""
    slow = "n > 0 AND (SELECT sum(range) FROM range(1000000000000)) > 0"
    proc = _start(["stats", "--where", slow, "-w", filled])
    _wait_until_running(proc, settle=6.0)  # stats imports more (polars, the analyses) before its query
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 130, (out, err)
    assert time.monotonic() - t0 < 2.0
    assert len(err.strip().splitlines()) == 1 and "interrupted" in err, err


def test_ctrl_c_while_the_command_line_loads_is_one_line(capsys, monkeypatch):
    """The console script (`retland.cli:launch`) imports the command line inside its own
    handler: a Ctrl-C in that first moment is one line and exit 130, not a traceback."""
    import importlib.abc

    from retland.cli import launch

    class Interrupting(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "retland.cli.main":
                raise KeyboardInterrupt
            return None

    monkeypatch.delitem(sys.modules, "retland.cli.main", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Interrupting(), *sys.meta_path])
    with pytest.raises(SystemExit) as exit_:
        launch()
    assert exit_.value.code == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["interrupted: stopped by Ctrl-C"]
