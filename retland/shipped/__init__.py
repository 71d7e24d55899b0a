"""Example checkpoints shipped with retland, to sample from without training first.
(The package is `shipped`, not `examples`: the top-level examples/ folder holds the
example scripts.)

Each example is two files in this folder:

    <name>.npz    one trained seed's checkpoint: every leaf of its TrainState under
                  `state/<pytree path>` (the paths of `retland.train.checkpoints.to_nested`,
                  dtypes and bits as stored), and for TD3/SAC the replay rows
                  [0, replay_size) under `replay/<field>`; a zip of .npy files, readable
                  with `numpy.load` and nothing else
    <name>.json   where it came from: the run's `runs` row (run id, algo, env, variant,
                  backend, seed, config and repro JSON), the checkpoint's step,
                  eval_return and replay_size, the run's learning curve up to that step,
                  the `retland train` command that trained it, the retland version and git
                  commit the files were built from, the sha256 of the .npz, and the
                  post-update return distribution measured when the example was chosen
                  (operator id, n, mean, std, skewness, mode, LTP, CVaR and the returns)

`add(warehouse, name)` puts an example into a warehouse as if retland had trained it
there: the orbax checkpoint and replay segments under artifacts/ (written by the same
functions training uses), then the `runs`, `evaluations` and `checkpoints` rows through
`Warehouse.append`, the checkpoints row last because it publishes the checkpoint. The
run keeps its original id, so rows stay traceable to the job that trained it.
`retland add-example` is the command-line form.

td3-hopper: seed 0 of the job td3-hopper-20261207-123005-f135, trained by

    retland train --algo td3 --env hopper --seeds 2 --total-steps 200000 \\
        --checkpoints 80000,100000,120000,140000,160000,180000,200000 --eval-every 10000

(the paper's task on Brax 0.0.13's simulator, the paper's Table 1 TD3 settings; the two
seeds are vmapped together, so rerun the command with --seeds 2 to get the same bits for
seed index 0), at 120,000 env steps. It was chosen for its post-update return
distribution under the td3 operator: most updates (221 of 256) keep the hopper up for
the whole 1000-step episode, at a return near 1,000 (mostly its alive bonus: this early
policy balances more than it hops); about one in nine falls and scores below half of
that (LTP 0.11 of 256 samples, skewness −2.4), a visible left tail. Rebuild the files from a
warehouse that holds that run with

    python -m retland.shipped.build --warehouse W --run td3-hopper-20261207-123005-f135-s0 --step 120000

which also checks that the shipped arrays restore bit for bit to the source checkpoint.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

FOLDER = Path(__file__).resolve().parent
FORMAT = 1  # layout version of the .npz/.json pair
STATE_PREFIX = "state/"
REPLAY_PREFIX = "replay/"

__all__ = ["EXAMPLES", "DEFAULT", "Example", "ExampleRequest", "ExampleOutcome", "add", "get", "load_arrays",
           "file_sha256", "run_request"]

DEFAULT = "td3-hopper"


@dataclass(frozen=True)
class Example:
    """One shipped example: its name, its metadata (the .json) and its data file."""

    name: str
    meta: dict
    data_path: Path

    @property
    def run_id(self) -> str:
        return self.meta["run"]["run_id"]

    @property
    def step(self) -> int:
        return int(self.meta["checkpoint"]["step"])

    @property
    def description(self) -> str:
        return self.meta["description"]

    @property
    def purd(self) -> dict:
        """The post-update return statistics recorded when the example was chosen."""
        return self.meta["purd"]


def _discover(folder: Path = FOLDER) -> dict[str, Example]:
    out = {}
    for meta_path in sorted(folder.glob("*.json")):
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            continue
        data = folder / meta["data"]["file"]
        if data.is_file():
            out[meta["name"]] = Example(meta["name"], meta, data)
    return out


EXAMPLES: dict[str, Example] = _discover()


def get(name: str) -> Example:
    """The example called `name`; ValueError naming the known ones otherwise."""
    try:
        return EXAMPLES[name]
    except KeyError:
        known = ", ".join(sorted(EXAMPLES)) or "none"
        raise ValueError(f"unknown example {name!r}; examples: {known}") from None


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_arrays(example: Example, *, verify: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
    """(nested state dict, replay field -> rows [0, replay_size)) of an example, read from
    its .npz after checking the file's sha256 against the metadata."""
    if verify:
        digest = file_sha256(example.data_path)
        if digest != example.meta["data"]["sha256"]:
            raise ValueError(f"example {example.name}: {example.data_path} has sha256 {digest}, its metadata "
                             f"says {example.meta['data']['sha256']}; the file is damaged, reinstall retland")
    nested: dict = {}
    replay: dict[str, np.ndarray] = {}
    with np.load(example.data_path, allow_pickle=False) as npz:
        for key in npz.files:
            if key.startswith(STATE_PREFIX):
                *parents, leaf = key[len(STATE_PREFIX):].split("/")
                node = nested
                for k in parents:
                    node = node.setdefault(k, {})
                node[leaf] = npz[key]
            elif key.startswith(REPLAY_PREFIX):
                replay[key[len(REPLAY_PREFIX):]] = npz[key]
    return nested, replay


def _when(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _open_warehouse(wh_or_root):
    from retland.warehouse import Warehouse

    return wh_or_root if isinstance(wh_or_root, Warehouse) else Warehouse.open(wh_or_root)


def add(wh_or_root, name: str | Example = DEFAULT) -> tuple[str, int]:
    """Put example `name` (a name of EXAMPLES, or an Example) into a warehouse (created
    if missing); returns (run_id, step).

    Idempotent: when the warehouse already has the checkpoint row, nothing is written.
    Otherwise the artifacts are written first and the `checkpoints` row last, so a
    killed call leaves at most an unpublished run that the next call completes. Refuses
    (ValueError, nothing written) an unknown name, a damaged data file, a data file
    that does not fit the run's config, or a warehouse holding a different run under
    the same id."""
    from retland.core.replay import Transition
    from retland.train import checkpoints as ck
    from retland.train.program import abstract_seed_state

    example = name if isinstance(name, Example) else get(name)
    name, meta = example.name, example.meta
    run_row, point = meta["run"], meta["checkpoint"]
    run_id, step = run_row["run_id"], int(point["step"])
    wh = _open_warehouse(wh_or_root)

    # records(), not query(): adding an example is on the compute path (no polars needed)
    have = wh.records("SELECT config FROM runs WHERE run_id = ?", [run_id])
    if have and json.loads(have[0]["config"]) != json.loads(run_row["config"]):
        raise ValueError(f"example {name}: the warehouse at {wh.root} already has a run {run_id} "
                         "with another config; add the example to another warehouse")
    if wh.records("SELECT 1 FROM checkpoints WHERE run_id = ? AND step = ?", [run_id, step]):
        return run_id, step

    # Check everything before the first write: the bytes, then the shapes against the config.
    nested, replay_rows = load_arrays(example)
    cfg = ck.run_config(run_row)
    target, _capacity = abstract_seed_state(cfg)
    state = ck.from_nested(nested, target, where=f"example {name}")
    size = int(point["replay_size"] or 0)
    data = None
    if cfg.algo in ("td3", "sac"):
        missing = [f for f in Transition._fields if f not in replay_rows]
        if missing:
            raise ValueError(f"example {name}: replay field(s) {', '.join(missing)} missing from {example.data_path}")
        bad = [f for f in Transition._fields if replay_rows[f].shape[0] != size]
        if bad:
            raise ValueError(f"example {name}: replay field {bad[0]} has {replay_rows[bad[0]].shape[0]} rows, "
                             f"the checkpoint needs {size}")
        data = Transition(*(replay_rows[f] for f in Transition._fields))

    if data is not None:
        ck.save_replay(wh, run_id, data, size)
    path = ck.save_state(wh, run_id, step, state)
    if not have:
        wh.append("runs", [dict(run_row, created_at=_when(run_row["created_at"]))])
    evals = meta.get("evaluations") or []
    if evals:
        stored = {r["step"] for r in wh.records("SELECT step FROM evaluations WHERE run_id = ?", [run_id])}
        new = [dict(e, run_id=run_id) for e in evals if int(e["step"]) not in stored]
        if new:
            wh.append("evaluations", new)
    wh.append("checkpoints", [dict(run_id=run_id, step=step, artifact_path=path, eval_return=point["eval_return"],
                                   replay_size=point["replay_size"], created_at=_when(point["created_at"]))])
    return run_id, step


def summary_line(example: Example) -> str:
    """One line of what an example is, for listings."""
    p = example.purd
    return (f"{example.name}: {example.description} Run {example.run_id} step {example.step:,}; "
            f"{p['operator_id']} n={p['n']} mean {p['mean']:.1f} std {p['std']:.1f} "
            f"LTP {p['ltp']:.3g} CVaR(α={p['alpha']:g}) {p['cvar']:.1f}; "
            f"{os.path.getsize(example.data_path) / 1e6:.1f} MB.")


def metadata_text(meta: dict[str, Any]) -> str:
    """The .json text of a metadata dict (stable key order, one trailing newline)."""
    return json.dumps(meta, indent=1, sort_keys=True) + "\n"


@dataclass(frozen=True)
class ExampleRequest:
    """`retland add-example NAME`: put a shipped example checkpoint into a warehouse."""

    command: ClassVar[str] = "add-example"

    name: str = DEFAULT

    def argv(self) -> list[str]:
        return ["add-example", self.name]


@dataclass(frozen=True)
class ExampleOutcome:
    name: str
    run_id: str
    step: int
    present: bool  # the warehouse held it already (nothing was written)


def run_request(wh, request: ExampleRequest, *, progress=None) -> ExampleOutcome:
    """Add the request's example to `wh` (`add`; idempotent). ValueError names an unknown
    example before anything is written."""
    from retland.warehouse.runs import checkpoint_stored

    if request.name not in EXAMPLES:
        raise ValueError(f"unknown example {request.name!r}; examples: {', '.join(sorted(EXAMPLES)) or 'none'} "
                         "(see `retland add-example --list`)")
    ex = EXAMPLES[request.name]
    present = checkpoint_stored(wh, ex.run_id, ex.step) is not None
    run_id, step = add(wh, request.name)
    return ExampleOutcome(request.name, run_id, int(step), present)
