"""The command line as a user meets it: clear errors, exit status 2, warehouse untouched."""
from __future__ import annotations

import json

import pytest

from conftest import GOOD_CSV, run_cli, tree_digest


def test_reimport_adds_nothing(filled, tmp_path, capsys, monkeypatch):
    before = tree_digest(filled)
    code, out, _ = run_cli(capsys, monkeypatch, "import-returns", tmp_path / "good.csv", "-w", filled)
    assert code == 0 and "imported 0 new rows" in out
    assert tree_digest(filled) == before


def test_query_json(filled, capsys, monkeypatch):
    code, out, _ = run_cli(capsys, monkeypatch, "query", "SELECT count(*) AS n FROM post_update_returns",
                           "-f", "json", "-w", filled)
    assert code == 0 and json.loads(out) == [{"n": 25}]


def test_runs_lists_imported_runs(filled, capsys, monkeypatch):
    code, out, _ = run_cli(capsys, monkeypatch, "runs", "-f", "csv", "-w", filled)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].startswith("run_id,algo,env,variant,simulator,seed,source")
    assert {l.split(",")[0] for l in lines[1:]} == {"td3-hopper-imported-s0", "td3-hopper-imported-s1"}


BAD_FILES = {
    "missing column": ("algo,env,seed,step,operator,return\ntd3,hopper,0,1,td3,5\n", "missing column"),
    "unknown column": (GOOD_CSV.replace("return\n", "return,colour\n", 1).replace("\n", ",x\n").replace("return,colour,x", "return,colour"), "unknown column"),
    "text seed": ("algo,env,seed,step,operator,update_index,return\ntd3,hopper,zero,1,td3,0,5\n", "'seed'"),
    "fractional index": ("algo,env,seed,step,operator,update_index,return\ntd3,hopper,0,1,td3,0.5,5\n", "'update_index'"),
    "nan return": ("algo,env,seed,step,operator,update_index,return\ntd3,hopper,0,1,td3,0,NaN\n", "'return' has non-finite value nan"),
    "empty return": ("algo,env,seed,step,operator,update_index,return\ntd3,hopper,0,1,td3,0,\n", "'return' is empty"),
    "negative step": ("algo,env,seed,step,operator,update_index,return\ntd3,hopper,0,-1,td3,0,5\n", "'step' has value -1 out of range"),
    "duplicate key": ("algo,env,seed,step,operator,update_index,return\ntd3,hopper,0,1,td3,0,5\ntd3,hopper,0,1,td3,0,6\n", "duplicate key"),
    "bad env name": ("algo,env,seed,step,operator,update_index,return\ntd3,hop per,0,1,td3,0,5\n", "env 'hop per'"),
    "no rows": ("algo,env,seed,step,operator,update_index,return\n", "no rows"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_import_files(filled, tmp_path, capsys, monkeypatch, name):
    text, needle = BAD_FILES[name]
    bad = tmp_path / "bad.csv"
    bad.write_text(text)
    before = tree_digest(filled)
    code, out, err = run_cli(capsys, monkeypatch, "import-returns", bad, "-w", filled)
    assert code == 2
    assert needle in err, err
    assert tree_digest(filled) == before


@pytest.mark.parametrize(
    "args,needle",
    [
        (["import-returns", "does-not-exist.csv"], "no such file"),
        (["import-returns", "data.xlsx"], "unsupported file type"),
        (["query", "DELETE FROM runs"], "refused"),
        (["query", "SELECT * FROM nope"], "query failed"),
        (["query", "SELECT 1; DROP VIEW runs"], "one statement"),
        (["stats", "--alpha", "0"], "--alpha must be in (0, 1]"),
        (["stats", "--alpha", "1.5"], "--alpha must be in (0, 1]"),
        (["stats", "--where", "no_such_column > 1"], '--where \'no_such_column > 1\': Binder Error'),
        (["stats", "--where", "1=1) ; DROP VIEW runs; SELECT (1"], "is not one SQL condition"),
        (["stats", "--format", "parquet"], "needs --output"),
        (["import-returns", "x.csv", "--tag", "a/b"], "tag"),
    ],
)
def test_bad_arguments(filled, tmp_path, capsys, monkeypatch, args, needle):
    if args[0] == "import-returns" and args[1] == "data.xlsx":
        (tmp_path / "data.xlsx").write_text("x")
        args = [args[0], tmp_path / "data.xlsx"]
    if "--tag" in args:
        (tmp_path / "x.csv").write_text(GOOD_CSV)
        args = [args[0], tmp_path / "x.csv", *args[2:]]
    before = tree_digest(filled)
    code, out, err = run_cli(capsys, monkeypatch, *args, "-w", filled)
    assert code == 2
    assert needle in err, err
    assert tree_digest(filled) == before


def test_missing_warehouse_is_an_error_not_a_new_folder(tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(capsys, monkeypatch, "stats", "-w", tmp_path / "nowhere")
    assert code == 2 and "no warehouse" in err
    assert not (tmp_path / "nowhere").exists()


def test_help_explains_commands(capsys, monkeypatch):
    code, out, _ = run_cli(capsys, monkeypatch, "--help")
    assert code == 0
    for cmd in ("import-returns", "stats", "query", "runs", "ls"):
        assert cmd in out


def test_help_rewraps_docstrings_but_keeps_lists_and_examples():
    from retland.cli.app import unwrap_help

    doc = """First line
    goes on.

    A paragraph wrapped
    at 88 columns.
    - item one
      continued
    - item two

        retland sample --run r
        --steps 1
    """
    assert unwrap_help(doc) == (
        "First line goes on.\n\nA paragraph wrapped at 88 columns.\n- item one\n  continued\n- item two\n\n"
        "    retland sample --run r\n    --steps 1")


def test_query_csv_writes_nested_values_as_json_text(filled, capsys, monkeypatch):
    code, out, err = run_cli(capsys, monkeypatch, "query", "SELECT 1 AS a, [1.5::DOUBLE, 2] AS l, {'k': 'v'} AS s",
                             "-f", "csv", "-w", filled)
    assert code == 0, err
    assert out.splitlines() == ["a,l,s", '1,"[1.5, 2.0]","{""k"": ""v""}"']
