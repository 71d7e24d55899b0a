"""Bad input as a user types it: exit status 2, one line on stderr that names the
option, column, row or field, and the warehouse byte-identical afterwards.

One catalogue, `CASES`: (id, args, expected substring[, setup]). Adding a command's bad
inputs means adding tuples. In args, {wh} is the warehouse (appended as `-w {wh}` when
a case gives no -w), {files} a folder of small input files (`FILES`), {run} an imported
run, {fresh} a folder that must still not exist afterwards. `setup` names a function in
`SETUPS` run before the command (e.g. an unwritable warehouse).

Every case must be refused before any work: the functions that train, sample, roll out
or run an experiment are replaced by one that fails the test if reached, and a JAX
compile during a case fails it too.
"""
from __future__ import annotations

import errno
import os

import jax
import pytest

from conftest import run_cli, tree_digest

RUN = "td3-hopper-imported-s0"
HEADER = "algo,env,seed,step,operator,update_index,return,discounted_return,episode_length,terminated\n"
GOOD = HEADER + "".join(
    f"td3,hopper,{s},100,td3,{i},{1000.0 + i - 500 * (i == 7)},{90.0 + i},1000,false\n" for s in (0, 1) for i in range(10))


def _one_row(**values) -> str:
    row = dict(algo="td3", env="hopper", seed="0", step="100", operator="td3", update_index="50", ret="5.0",
               discounted_return="4.0", episode_length="10", terminated="false")
    row.update({("ret" if k == "return_" else k): v for k, v in values.items()})
    return HEADER + ",".join(row.values()) + "\n"


FILES = {
    "good.csv": GOOD,
    "disc_inf.csv": _one_row(discounted_return="inf"),
    "len_neg.csv": _one_row(episode_length="-7"),
    "index_neg.csv": _one_row(update_index="-3"),
    "seed_neg.csv": _one_row(seed="-1"),
    "return_nan.csv": _one_row(return_="NaN"),
    "return_minus_inf.csv": _one_row(return_="-inf"),
    "step_neg.csv": _one_row(step="-100"),
    "terminated.csv": _one_row(terminated="maybe"),
    "seed_big.csv": _one_row(seed="99999999999"),
    "colour.csv": HEADER.replace("\n", ",colour\n") + "td3,hopper,0,100,td3,50,5,4,10,false,red\n",
    "batch_neg.toml": "[agent]\nbatch_size = -4\n",
    "lr_nan.toml": "[agent]\nlearning_rate = nan\n",
    "gamma.toml": "[agent]\ngamma = 1.5\n",
    "tau.toml": "[agent]\ntau = 0.0\n",
    "hidden.toml": "[agent]\nhidden = [0, 5]\n",
    "bool.toml": "[agent]\nbatch_size = true\n",
    "typo.toml": "[agent]\nbatchsize = 64\n",
    "log_std.toml": '[agent]\nalgo = "sac"\nlog_std_min = 3.0\n',
    "lambda.toml": '[agent]\nalgo = "ppo"\ngae_lambda = 1.1\n',
    "minibatches.toml": '[agent]\nalgo = "ppo"\nnum_minibatches = 3\n',
    "horizon.toml": "horizon = 0\n",
    "broken.toml": "seeds = [\n",
    "study_big.toml": 'name = "big"\nexamples = ["td3-hopper"]\n[sample]\noperators = ["td3"]\nsamples = '
                      + str(10**30) + "\n",
}


def _unwritable(monkeypatch, wh):
    """Tests run as root, where chmod does not stop writes: the permission check the
    write commands make up front (os.access) is told what a non-root user would get."""
    real = os.access

    def access(path, mode, *args, **kwargs):
        if mode & os.W_OK and os.path.realpath(path).startswith(str(wh)):
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def _refuse_creating_files(monkeypatch, wh):
    """The OS refusing to create a part file in the warehouse (EACCES), at the one place
    the warehouse creates files (log.write_atomic); what import-returns meets in a
    read-only folder."""
    from retland.warehouse import log

    def denied(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(log, "open", denied, raising=False)


SETUPS = {"unwritable": _unwritable, "refuse_files": _refuse_creating_files}

CASES: list[tuple] = [
    # ---- import-returns: the warehouse's row rules, applied to the file's rows
    ("import discounted_return inf", ["import-returns", "{files}/disc_inf.csv"], "'discounted_return' has non-finite value inf"),
    ("import episode_length -7", ["import-returns", "{files}/len_neg.csv"], "row 0: column 'episode_length' has value -7"),
    ("import update_index -3", ["import-returns", "{files}/index_neg.csv"], "column 'update_index' has value -3"),
    ("import seed -1", ["import-returns", "{files}/seed_neg.csv"], "column 'seed' has value -1"),
    ("import step -100", ["import-returns", "{files}/step_neg.csv"], "column 'step' has value -100"),
    ("import return NaN", ["import-returns", "{files}/return_nan.csv"], "'return' has non-finite value nan"),
    ("import return -inf", ["import-returns", "{files}/return_minus_inf.csv"], "'return' has non-finite value -inf"),
    ("import terminated not a boolean", ["import-returns", "{files}/terminated.csv"], "'terminated'"),
    ("import seed beyond int32", ["import-returns", "{files}/seed_big.csv"], "'seed'"),
    ("import unknown column", ["import-returns", "{files}/colour.csv"], "unknown column(s) colour"),
    ("import folder as file", ["import-returns", "{files}"], "no such file"),
    ("import warehouse is a file", ["import-returns", "{files}/good.csv", "-w", "{files}/good.csv"], "is not a folder"),
    ("import warehouse under a file", ["import-returns", "{files}/good.csv", "-w", "{files}/good.csv/wh"],
     "good.csv/wh: a parent is a file"),
    ("import unwritable", ["import-returns", "{files}/good.csv", "--tag", "other"], "is not writable", "refuse_files"),
    ("import bad file into a new folder", ["import-returns", "{files}/len_neg.csv", "-w", "{fresh}"], "'episode_length'"),
    # ---- train: config models (TOML and options), before the warehouse is opened
    ("train batch_size -4", ["train", "--config", "{files}/batch_neg.toml", "-w", "{fresh}"], "agent.batch_size"),
    ("train learning_rate nan", ["train", "--config", "{files}/lr_nan.toml"], "agent.learning_rate: expected a finite number"),
    ("train gamma 1.5", ["train", "--config", "{files}/gamma.toml"], "agent.gamma"),
    ("train tau 0", ["train", "--config", "{files}/tau.toml"], "agent.tau"),
    ("train hidden width 0", ["train", "--config", "{files}/hidden.toml"], "agent.hidden"),
    ("train batch_size true", ["train", "--config", "{files}/bool.toml"], "agent.batch_size: expected a number"),
    ("train unknown field", ["train", "--config", "{files}/typo.toml"], "agent.batchsize"),
    ("train sac log_std range", ["train", "--config", "{files}/log_std.toml"], "log_std_min"),
    ("train ppo gae_lambda", ["train", "--config", "{files}/lambda.toml"], "agent.gae_lambda"),
    ("train ppo minibatches", ["train", "--config", "{files}/minibatches.toml"], "num_minibatches=3"),
    ("train horizon 0", ["train", "--config", "{files}/horizon.toml"], "horizon"),
    ("train TOML syntax", ["train", "--config", "{files}/broken.toml"], "--config"),
    ("train config missing", ["train", "--config", "{files}/nope.toml"], "--config"),
    ("train seeds 0", ["train", "--seeds", "0", "-w", "{fresh}"], "--seeds"),
    ("train seed -1", ["train", "--seed", "-1"], "--seed:"),
    ("train seeds past int32", ["train", "--seed", "2147483647", "--seeds", "2"], "seed=2147483647 with seeds=2"),
    ("train steps -5", ["train", "--total-steps", "-5"], "--total-steps"),
    ("train checkpoints a range", ["train", "--total-steps", "100000", "--checkpoints", "90000..100000"],
     "10,001 checkpoints: at most 1,000"),
    ("train eval-every 0", ["train", "--eval-every", "0"], "--eval-every"),
    ("train checkpoints abc", ["train", "--checkpoints", "abc"], "--checkpoints"),
    ("train checkpoints inf", ["train", "--checkpoints", "inf"], "--checkpoints"),
    ("train checkpoints past the end", ["train", "--total-steps", "100", "--checkpoints", "200"], "checkpoint steps [200]"),
    ("train env", ["train", "--env", "pong"], "--env"),
    ("train algo", ["train", "--algo", "ddpg"], "--algo"),
    ("train backend", ["train", "--backend", "bullet"], "--backend"),
    ("train seeds not a number", ["train", "--seeds", "abc"], "--seeds"),
    ("train resume unknown", ["train", "--resume", "nope"], "'nope'"),
    ("train resume with options", ["train", "--resume", "nope", "--seeds", "2"], "--resume"),
    ("train unknown variant", ["train", "--variant", "gym", "-w", "{fresh}"], "--variant: unknown task variant 'gym'"),
    ("train paper off its simulator", ["train", "--env", "ant", "--backend", "generalized", "-w", "{fresh}"],
     "the paper variant runs on Brax 0.0.13's simulator: backend brax0013, not 'generalized'"),
    ("train brax0013 with brax rules", ["train", "--variant", "brax", "--backend", "brax0013", "-w", "{fresh}"],
     "backend brax0013 (Brax 0.0.13's simulator) runs the paper's tasks"),
    ("train unwritable", ["train", "--seeds", "1"], "no permission to write", "unwritable"),
    ("train warehouse under a file", ["train", "-w", "{files}/good.csv/wh"], "good.csv is a file"),
    # ---- sample: options parsed before the warehouse is read
    ("sample batch-size abc", ["sample", "--operator", "td3", "--run", "{run}", "--batch-size", "abc"], "--batch-size"),
    ("sample batch-size 0", ["sample", "--operator", "td3", "--run", "{run}", "--batch-size", "0"], "--batch-size"),
    ("sample devices abc", ["sample", "--operator", "td3", "--run", "{run}", "--devices", "abc"], "--devices"),
    ("sample devices 0", ["sample", "--operator", "td3", "--run", "{run}", "--devices", "0"], "--devices"),
    ("sample samples -5", ["sample", "--operator", "td3", "--run", "{run}", "--samples", "-5"], "--samples"),
    ("sample horizon 0", ["sample", "--operator", "td3", "--run", "{run}", "--horizon", "0"], "--horizon"),
    ("sample key-seed -1", ["sample", "--operator", "td3", "--run", "{run}", "--key-seed", "-1"], "--key-seed"),
    ("sample key-seed past int64", ["sample", "--operator", "td3", "--run", "{run}", "--key-seed", str(2**63)],
     "--key-seed"),
    ("sample shard 3/2", ["sample", "--operator", "td3", "--run", "{run}", "--shard", "3/2"], "--shard"),
    ("sample shard 0/0", ["sample", "--operator", "td3", "--run", "{run}", "--shard", "0/0"], "--shard"),
    ("sample shard text", ["sample", "--operator", "td3", "--run", "{run}", "--shard", "half"], "--shard"),
    ("sample operator unknown", ["sample", "--operator", "adam", "--run", "{run}"], "--operator"),
    ("sample operator sigma nan", ["sample", "--operator", "gaussian:nan", "--run", "{run}"], "--operator"),
    ("sample operator ppo unknown key", ["sample", "--operator", "ppo:lr=0.1", "--run", "{run}"],
     "unknown ppo parameter 'lr'"),
    ("sample operator ppo clip 0", ["sample", "--operator", "ppo:clip=0", "--run", "{run}"], "must be > 0"),
    ("sample operator ppo clip negative", ["sample", "--operator", "ppo:clip=-1", "--run", "{run}"], "must be > 0"),
    ("sample operator ppo rows", ["sample", "--operator", "ppo:rows=last", "--run", "{run}"],
     "rows='last' must be one of random, first"),
    ("sample operator td3 with params", ["sample", "--operator", "td3:clip=0.1", "--run", "{run}"],
     "td3 takes no parameters"),
    ("sample operator init_state no unit", ["sample", "--operator", "init_state:0.01", "--run", "{run}"],
     "say which unit"),
    ("sample operator init_state factor text", ["sample", "--operator", "init_state:xhalf", "--run", "{run}"],
     "not a number"),
    ("sample operator init_state abs negative", ["sample", "--operator", "init_state:abs=-0.1", "--run", "{run}"],
     ">= 0"),
    ("sample seeds empty range", ["sample", "--operator", "td3", "--algo", "td3", "--env", "hopper", "--seeds", "5-2"],
     "--seeds"),
    ("sample steps text", ["sample", "--operator", "td3", "--run", "{run}", "--steps", "late"], "--steps"),
    ("sample step not stored", ["sample", "--operator", "td3", "--run", "{run}", "--steps", "999"], "steps=[999]"),
    ("sample unknown algo", ["sample", "--operator", "td3", "--algo", "ddpg", "--env", "hopper"], "algo=ddpg"),
    ("sample no selection", ["sample", "--operator", "td3"], "--run"),
    ("sample imported run", ["sample", "--operator", "td3", "--run", "{run}"], "no stored checkpoint"),
    ("sample missing operator", ["sample", "--run", "{run}"], "--operator"),
    ("sample unwritable", ["sample", "--operator", "td3", "--run", "{run}"], "no permission to write", "unwritable"),
    # ---- reading commands
    ("stats output is a folder", ["stats", "-o", "{files}"], "--output"),
    ("stats alpha 0", ["stats", "--alpha", "0"], "--alpha"),
    ("stats beta nan", ["stats", "--beta", "nan"], "--beta"),
    ("stats where", ["stats", "--where", "env ===="], "--where"),
    ("stats format", ["stats", "--format", "xml"], "--format"),
    ("report where", ["report", "--where", "env ===="], "--where"),
    ("report alpha 2", ["report", "--alpha", "2"], "--alpha"),
    ("report bootstrap -1", ["report", "--bootstrap", "-1"], "--bootstrap"),
    ("report bootstrap 1e20", ["report", "--bootstrap", "100000000000000000000"], "--bootstrap"),
    ("report out is a folder", ["report", "--output", "{files}"], "is a folder; give the HTML file's path"),
    ("report png out is a file", ["report", "--format", "png", "--output", "{files}/good.csv"], "is a file; --format png"),
    ("query output is a folder", ["query", "SELECT 1 AS x", "-o", "{files}"], "--output"),
    ("runs parquet without output", ["runs", "-f", "parquet"], "--output"),
    ("compact min-parts 0", ["compact", "--min-parts", "0"], "--min-parts"),
    ("compact unknown table", ["compact", "--table", "nope"], "nope"),
    ("unknown option", ["ls", "--colour"], "--colour"),
    # ---- analyses and stabilize
    ("landscape grid 1", ["landscape", "--run", "{run}", "--step", "100", "--grid", "1"], "--grid"),
    ("landscape range", ["landscape", "--run", "{run}", "--step", "100", "--range", "2:-2"], "--range"),
    ("landscape zoom 0", ["landscape", "--run", "{run}", "--step", "100", "--zoom", "0"], "--zoom"),
    ("landscape sigma nan", ["landscape", "--run", "{run}", "--step", "100", "--sigma", "nan"], "--sigma"),
    ("landscape seed past int64", ["landscape", "--run", "{run}", "--step", "100", "--noise-seed", str(2**64)],
     "--noise-seed"),
    ("landscape batch-size 0", ["landscape", "--run", "{run}", "--step", "100", "--batch-size", "0"], "--batch-size"),
    ("landscape imported run", ["landscape", "--run", "{run}", "--step", "100"], "no stored checkpoint"),
    ("landscape step not stored", ["landscape", "--run", "{run}", "--step", "999"], "step 999"),
    ("landscape unwritable", ["landscape", "--run", "{run}", "--step", "100"], "no permission to write", "unwritable"),
    ("interpolate points 1", ["interpolate", "--env", "hopper", "--pair-kind", "both", "--points", "1"], "--points"),
    ("interpolate bootstrap 0", ["interpolate", "--env", "hopper", "--pair-kind", "both", "--bootstrap", "0"], "--bootstrap"),
    ("interpolate bootstrap huge", ["interpolate", "--env", "hopper", "--pair-kind", "both", "--bootstrap", str(10**20)],
     "--bootstrap"),
    ("interpolate batch-size", ["interpolate", "--env", "hopper", "--pair-kind", "both", "--batch-size", "x"], "--batch-size"),
    ("interpolate max-pairs 0", ["interpolate", "--env", "hopper", "--pair-kind", "both", "--pairs-per-kind", "0"], "--pairs-per-kind"),
    ("interpolate half a pair", ["interpolate", "--a", "{run}:100"], "--b"),
    ("interpolate bad ref", ["interpolate", "--a", "{run}", "--b", "{run}:100"], "RUN_ID:STEP"),
    ("interpolate imported runs", ["interpolate", "--a", "{run}:100", "--b", "td3-hopper-imported-s1:100"],
     "no stored checkpoint"),
    ("failures pairs 0", ["failures", "--run", "{run}", "--step", "100", "--pairs", "0"], "--pairs"),
    ("failures imported run", ["failures", "--run", "{run}", "--step", "100"], "no stored checkpoint"),
    ("failures bad selector", ["failures", "--checkpoints", "best:3"], "expected top-ltp:K or random:K"),
    ("failures selector K 0", ["failures", "--checkpoints", "random:0"], "expected top-ltp:K or random:K"),
    ("failures selector and run", ["failures", "--checkpoints", "random:2", "--run", "{run}", "--step", "100"],
     "not both"),
    ("failures no checkpoint", ["failures"], "say which checkpoint"),
    ("failures env without selector", ["failures", "--run", "{run}", "--step", "100", "--env", "hopper"],
     "only narrow a --checkpoints"),
    ("failures selection seed", ["failures", "--checkpoints", "random:2", "--selection-seed", "-3"],
     "--selection-seed"),
    ("failures nothing to choose", ["failures", "--checkpoints", "random:2"], "no sampled checkpoint with LTP > 0"),
    ("failures bad where", ["failures", "--checkpoints", "random:2", "--where", "ltp >"], "--where"),
    ("stabilize alpha 0", ["stabilize", "--run", "{run}", "--step", "100", "--alpha", "0"], "--alpha"),
    ("stabilize tolerance inf", ["stabilize", "--run", "{run}", "--step", "100", "--tolerance", "inf"], "--tolerance"),
    ("stabilize seeds empty range", ["stabilize", "--run", "{run}", "--step", "100", "--seeds", "5..2"], "--seeds"),
    ("stabilize seeds past int32", ["stabilize", "--run", "{run}", "--step", "100", "--seeds", "3000000000"],
     "--seeds"),
    ("stabilize arms", ["stabilize", "--run", "{run}", "--step", "100", "--arms", "both"], "--arms"),
    ("stabilize chunk 0", ["stabilize", "--run", "{run}", "--step", "100", "--chunk", "0"], "--chunk"),
    ("stabilize imported run", ["stabilize", "--run", "{run}", "--step", "100"], "no stored checkpoint"),
    # ---- over-large numbers and what issue #25 found
    ("sample samples 1e30", ["sample", "--operator", "td3", "--run", "{run}", "--samples", str(10**30)], "--samples"),
    ("sample seeds 1e30", ["sample", "--operator", "td3", "--algo", "td3", "--env", "hopper", "--seeds", str(10**30)],
     "--seeds"),
    ("sample seeds range of 1e12", ["sample", "--operator", "td3", "--algo", "td3", "--env", "hopper", "--seeds",
                                    "0-1000000000000"], "--seeds"),
    ("sample horizon 1e12", ["sample", "--operator", "td3", "--run", "{run}", "--horizon", str(10**12)], "--horizon"),
    ("sample slurm without sbatch", ["sample", "--operator", "td3", "--run", "{run}", "--executor", "slurm",
                                     "--jobs", "2"], "sbatch not found"),
    ("study samples overflow", ["study", "{files}/study_big.toml", "--plan"], "sample.samples"),
    ("study samples overflow run", ["study", "{files}/study_big.toml", "-w", "{fresh}"], "sample.samples"),
    ("query output into the warehouse", ["query", "SELECT 1 AS x", "-f", "parquet", "-o", "{wh}/tables/runs/a.parquet"],
     "inside the warehouse"),
    ("export into the warehouse", ["export", "runs", "-o", "{wh}/tables/runs"], "inside the warehouse"),
    ("report into the warehouse", ["report", "-o", "{wh}/report.html"], "inside the warehouse"),
    ("query timeout nan", ["query", "SELECT 1", "--timeout", "nan"], "--timeout"),
    ("query limit negative", ["query", "SELECT 1", "--limit", "-1"], "--limit"),
]

# The work a refused command must never reach.
WORK = ["retland.train.job.train", "retland.analyses.stabilize.run_experiment", "retland.purd.sampling.sample_checkpoint",
        "retland.analyses.landscape.run", "retland.analyses.interpolation.run", "retland.analyses.failures.run"]

_compiles: list[str] = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kw: _compiles.append(event) if event.startswith("/jax/core/compile") else None)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A warehouse with two imported runs (20 rows), the input files, and its digest."""
    from retland.warehouse import Warehouse
    from retland.ingest.returns import import_returns

    base = tmp_path_factory.mktemp("bad-input")
    files = base / "files"
    files.mkdir()
    for name, text in FILES.items():
        (files / name).write_text(text)
    wh = Warehouse.open(base / "wh")
    summary = import_returns(wh, files / "good.csv")
    assert summary.rows_written == 20
    return {"wh": wh.root, "files": files, "run": RUN, "fresh": base / "fresh", "digest": tree_digest(wh.root)}


def test_the_catalogue_is_big_and_ids_are_unique():
    assert len(CASES) >= 40
    assert len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_in_one_line_and_changes_nothing(world, case, capsys, monkeypatch):
    name, args, needle, *setup = case
    args = [a.format(**world) for a in args]
    if "-w" not in args:
        args += ["-w", str(world["wh"])]
    for target in WORK:
        monkeypatch.setattr(target, lambda *a, **k: pytest.fail(f"{name}: the work started; input not refused first"))
    for fn in setup:
        SETUPS[fn](monkeypatch, world["wh"])
    _compiles.clear()
    # Refused commands leave no temp folders behind (`/tmp/tmp…`, `/tmp/retland-plan-…`).
    import tempfile

    private_tmp = world["files"].parent / f"tmp-{abs(hash(name))}"
    private_tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(private_tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)
    monkeypatch.setenv("PATH", os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                                                if not os.path.exists(os.path.join(p, "sbatch"))))

    code, out, err = run_cli(capsys, monkeypatch, *args)

    text = err.strip()
    assert code == 2, (code, out, err)
    assert text.startswith("error: ") and "\n" not in text and "Traceback" not in text, err
    assert needle in text, text
    assert not _compiles, f"JAX compiled {_compiles} before refusing"
    assert tree_digest(world["wh"]) == world["digest"]
    assert not world["fresh"].exists()
    assert not list(private_tmp.iterdir()), list(private_tmp.iterdir())


@pytest.mark.parametrize("sql", [123, None, b"SELECT 1", ["SELECT 1"]])
def test_python_query_of_a_non_string_is_one_error(world, sql):
    import retland
    from retland.warehouse import WarehouseError

    with pytest.raises(WarehouseError, match="SQL must be a string") as err:
        retland.query(sql, warehouse=world["wh"])
    assert "\n" not in str(err.value)


def test_the_warehouse_rules_hold_on_every_write_path(world):
    """The rules the import met above are the warehouse's own: a direct append and the
    sampler's per-chunk check refuse the same values."""
    import numpy as np

    from retland.purd import engine
    from retland.purd.operators import parse_operator
    from retland.warehouse import Warehouse, WarehouseError

    wh = Warehouse.open(world["wh"], create=False)
    row = {"run_id": RUN, "step": 100, "operator_id": "td3", "update_index": 99, "return": 1.0}
    for column, value in (("discounted_return", float("inf")), ("episode_length", -7), ("update_index", -1),
                          ("chunk_size", 0), ("return", float("nan"))):
        with pytest.raises(WarehouseError, match=f"column '{column}'"):
            wh.append("post_update_returns", [row, {**row, "update_index": 98, column: value}])
    assert tree_digest(world["wh"]) == world["digest"]

    label = f"run {RUN} step 100 operator {parse_operator('gaussian', horizon=10).operator_id}"
    chunk = {"update_index": np.arange(8, 16), "return": np.ones(8), "discounted_return": np.ones(8),
             "episode_length": np.full(8, 10, np.int32), "terminated": np.zeros(8, bool)}
    engine.check_chunk("post_update_returns", chunk, chunk["update_index"], 1, 8, 10, label)
    chunk["discounted_return"][[2, 5]] = [np.inf, np.nan]
    with pytest.raises(engine.NonFiniteReturnError, match=r"discounted_return at update_index \[10, 13\]"):
        engine.check_chunk("post_update_returns", chunk, chunk["update_index"], 1, 8, 10, label)
    chunk["discounted_return"][:] = 1.0
    chunk["episode_length"][0] = 11
    with pytest.raises(engine.SamplingError, match=r"above the horizon 10 at update_index \[8\]"):
        engine.check_chunk("post_update_returns", chunk, chunk["update_index"], 1, 8, 10, label)
    # landscapes and interpolations store through the same engine and check
    chunk["episode_length"][0] = 10
    chunk["return"][4] = np.nan
    for table in ("landscape_points", "interpolation_points"):
        with pytest.raises(engine.NonFiniteReturnError, match=r"return at update_index \[12\]"):
            engine.check_chunk(table, chunk, chunk["update_index"], 1, 8, 10, f"{table} test")
