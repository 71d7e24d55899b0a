"""Build an example's files (retland/shipped/<name>.npz and .json) from a warehouse.

    python -m retland.shipped.build --warehouse W --run RUN_ID --step STEP [--name NAME]
        [--operator 'td3[h=1000,seed=0]'] [--out FOLDER]

Reads the checkpoint with `load_checkpoint` (its TrainState and the replay prefix),
the run's `runs`, `evaluations` and `checkpoints` rows, and the post-update return
distribution of (run, step, operator) the example was chosen for; the warehouse is only
read. The .npz is a zip written with fixed member order and timestamps, so building
twice from the same checkpoint gives the same bytes and the same sha256. Before
anything is written to --out, the arrays are added to a temporary warehouse with
`retland.shipped.add` and loaded back, and every state leaf and replay row must equal
the source checkpoint's bit for bit.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from retland.shipped import FOLDER, FORMAT, REPLAY_PREFIX, STATE_PREFIX, Example, add, file_sha256, metadata_text

DEFAULT_OPERATOR = "td3[h=1000,seed=0]"
ALPHA, BETA = 0.1, 0.5  # the paper's CVaR and LTP defaults (purd_stats defaults)


def flat_state(nested: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """'a/b/c' -> array for every leaf of a nested dict (the paths of `to_nested`)."""
    out = {}
    for key, value in nested.items():
        if "/" in key:
            raise ValueError(f"state field name {key!r} contains '/'")
        if isinstance(value, dict):
            out.update(flat_state(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = np.asarray(value)
    return out


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """What np.savez_compressed writes, with sorted members and a fixed timestamp so
    the bytes depend on the arrays alone; atomic (temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    os.replace(tmp, path)


def _git_commit() -> dict:
    repo = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip() != ""
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": head, "git_dirty": dirty}


def training_command(repro: dict, config: dict) -> str:
    """The `retland train` command the run came from: its recorded argv with the
    warehouse path and the progress switch left out; rebuilt from the config when the
    run recorded no argv."""
    argv = list(repro.get("argv") or [])
    if len(argv) > 1 and argv[1] == "train":
        out, skip = ["retland"], False
        for a in argv[1:]:
            if skip:
                skip = False
                continue
            if a in ("-w", "--warehouse"):
                skip = True
                continue
            if a.startswith("--warehouse=") or a in ("--no-progress", "--progress"):
                continue
            out.append(a)
        return shlex.join(out)
    agent = config["agent"]
    return shlex.join(["retland", "train", "--algo", agent["algo"], "--env", config["env"],
                       "--variant", config["variant"], "--backend", config["backend"],
                       "--seeds", str(config["seeds"]), "--seed", str(config["seed"]),
                       "--total-steps", str(config["total_steps"]),
                       "--checkpoints", ",".join(map(str, config["checkpoints"])),
                       "--eval-every", str(config["eval_every"])])


def _iso(value) -> str | None:
    return None if value is None else value.isoformat()


def purd_record(wh, run_id: str, step: int, operator_id: str) -> dict:
    """The distribution's statistics (purd_stats at the paper's α, β) and its returns."""
    stats = wh.query(f"SELECT * FROM purd_stats(alpha := {ALPHA}, beta := {BETA}) "
                     "WHERE run_id = ? AND step = ? AND operator_id = ?", [run_id, step, operator_id]).to_dicts()
    if not stats:
        have = wh.query("SELECT DISTINCT operator_id FROM post_update_returns WHERE run_id = ? AND step = ?",
                        [run_id, step])["operator_id"].to_list()
        raise ValueError(f"no post-update returns of {run_id}@{step} under operator {operator_id}; "
                         f"sampled operators there: {', '.join(have) or 'none'}")
    s = stats[0]
    rows = wh.query('SELECT update_index, "return", chunk_size FROM post_update_returns '
                    "WHERE run_id = ? AND step = ? AND operator_id = ? ORDER BY update_index",
                    [run_id, step, operator_id])
    return {"operator_id": operator_id, "alpha": ALPHA, "beta": BETA,
            **{k: s[k] for k in ("n", "mean", "std", "skewness", "mode", "ltp", "cvar")},
            "chunk_sizes": sorted(set(rows["chunk_size"].to_list())),
            "update_index": rows["update_index"].to_list(), "returns": rows["return"].to_list()}


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def verify(example: Example, source) -> None:
    """Add the example to a temporary warehouse, load it back and compare it with the
    source checkpoint leaf by leaf and row by row (bits, dtypes, shapes)."""
    import jax

    from retland.train.checkpoints import load_checkpoint

    # Everything is compared inside the with: the checkpoint reads its replay rows on
    # first use, from the temporary warehouse.
    with tempfile.TemporaryDirectory() as tmp:
        run_id, step = add(Path(tmp) / "wh", example)
        back = load_checkpoint(Path(tmp) / "wh", run_id, step)
        ref_leaves = jax.tree_util.tree_leaves_with_path(source.state)
        got_leaves = jax.tree_util.tree_leaves(back.state)
        for (path, ref), got in zip(ref_leaves, got_leaves, strict=True):
            if not _same_bits(ref, got):
                raise AssertionError(f"state leaf {jax.tree_util.keystr(path)} differs after the round trip")
        if source.replay is not None:
            for field, ref, got in zip(source.replay._fields, source.replay, back.replay):
                if not _same_bits(ref, got):
                    raise AssertionError(f"replay field {field} differs after the round trip")
        if back.replay_size != source.replay_size or back.eval_return != source.eval_return:
            raise AssertionError("replay_size or eval_return differs after the round trip")


def build(warehouse, run_id: str, step: int, *, name: str, operator_id: str = DEFAULT_OPERATOR,
          out: Path = FOLDER) -> Example:
    """Write <out>/<name>.npz and <out>/<name>.json for checkpoint run_id@step of `warehouse`."""
    from retland.train.checkpoints import load_checkpoint, run_record, to_nested
    from retland.warehouse import Warehouse

    wh = Warehouse.open(warehouse, create=False)
    record = run_record(wh, run_id)
    src = load_checkpoint(wh, run_id, step)
    point = wh.query("SELECT * FROM checkpoints WHERE run_id = ? AND step = ?", [run_id, step]).to_dicts()[0]
    evals = wh.query("SELECT step, eval_return, episode_length, wall_seconds FROM evaluations "
                     "WHERE run_id = ? AND step <= ? ORDER BY step", [run_id, step]).to_dicts()
    purd = purd_record(wh, run_id, step, operator_id)

    arrays = {STATE_PREFIX + k: v for k, v in flat_state(to_nested(src.state)).items()}
    if src.replay is not None:
        for field, arr in zip(src.replay._fields, src.replay):
            arrays[REPLAY_PREFIX + field] = np.asarray(arr[:src.replay_size])
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".build-{name}-", dir=out))
    try:
        data = staging / f"{name}.npz"
        write_npz(data, arrays)
        config = json.loads(record["config"])
        repro = json.loads(record["repro"] or "{}")
        from importlib import metadata

        from retland.core.envs import simulator

        meta = {
            "format": FORMAT,
            "name": name,
            "description": (f"{record['algo'].upper()} on {record['env']} ({record['variant']} task, "
                            f"{simulator(record['backend'], record['variant'])} physics), "
                            f"seed {record['seed']} at {step:,} env steps, trained by retland; its "
                            f"post-update returns under {operator_id} have a left tail "
                            f"(LTP {purd['ltp']:.2g} of {purd['n']} samples)."),
            "run": {k: (_iso(v) if k == "created_at" else v) for k, v in record.items()},
            "checkpoint": {"step": int(step), "eval_return": point["eval_return"],
                           "replay_size": point["replay_size"], "created_at": _iso(point["created_at"])},
            "evaluations": [{**e, "step": int(e["step"])} for e in evals],
            "training": {"command": training_command(repro, config), "job_id": config.get("job_id"),
                         "seed_index": config.get("seed_index"),
                         "note": "the job's seeds are trained together (vmapped); rerun the whole command "
                                 "to reproduce this seed's bits"},
            "built_from": {"retland": metadata.version("retland"), **_git_commit(),
                           "command": "python -m retland.shipped.build " + shlex.join(
                               ["--warehouse", "W", "--run", run_id, "--step", str(step), "--name", name,
                                "--operator", operator_id])},
            "data": {"file": data.name, "sha256": file_sha256(data), "bytes": data.stat().st_size,
                     "arrays": len(arrays)},
            "purd": purd,
        }
        (staging / f"{name}.json").write_text(metadata_text(meta))
        verify(Example(name, meta, data), src)
        os.replace(data, out / data.name)
        os.replace(staging / f"{name}.json", out / f"{name}.json")
    finally:
        for p in staging.iterdir():
            p.unlink()
        staging.rmdir()
    return Example(name, meta, out / data.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retland.shipped.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--warehouse", "-w", required=True, help="warehouse holding the run (only read)")
    parser.add_argument("--run", required=True, help="run id")
    parser.add_argument("--step", required=True, type=int, help="checkpoint env step")
    parser.add_argument("--name", default="td3-hopper", help="example name (default td3-hopper)")
    parser.add_argument("--operator", default=DEFAULT_OPERATOR,
                        help=f"operator id of the recorded distribution (default {DEFAULT_OPERATOR})")
    parser.add_argument("--out", type=Path, default=FOLDER, help="folder for the files (default: this package)")
    args = parser.parse_args(argv)
    try:
        ex = build(args.warehouse, args.run, args.step, name=args.name, operator_id=args.operator, out=args.out)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = ex.data_path.stat().st_size
    print(f"wrote {ex.data_path} ({size / 1e6:.2f} MB, sha256 {ex.meta['data']['sha256'][:12]}…) and "
          f"{ex.data_path.with_suffix('.json')}; verified bit-identical to {args.run}@{args.step}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
