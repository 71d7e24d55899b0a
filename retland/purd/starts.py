"""Which replay rows a sampling job starts its rollouts at, and the start state of a row.

A start other than s0 (`retland.core.startstates`) turns each chosen checkpoint into one
distribution per row. `replay:K` takes K rows spread evenly over [0, n) with n the
smallest buffer among the run's chosen checkpoints, seeded by the operator's key seed:
every checkpoint of a run gets the same K rows, so LTP per row can be averaged over
checkpoints (the paper's Fig. 10). `rows:R1,R2` takes the rows listed, at every chosen
checkpoint; a row beyond a checkpoint's buffer is refused.

Only runs that stored each row's simulator state (trained with `store_states = true`)
can start there; the others are refused by name, saying why.
"""
from __future__ import annotations

import json
from typing import Sequence

import numpy as np

from retland.core.startstates import StartChoice, restore, spread_rows
from retland.purd.engine import SamplingError
from retland.warehouse.sqlgen import in_list

NO_STATES = ("its replay rows hold observations only, which do not determine the simulator state (the root's x, "
             "brax 0.14's clipped velocities, the paper simulator's body coordinates); train with "
             "store_states = true (`retland train --store-states`) to start rollouts from replay rows")


def start_rows(wh, distributions: Sequence[tuple], choice: StartChoice, seed: int) -> dict[tuple[str, int], list[int]]:
    """{(run_id, step): rows} for the (run_id, step, env) of a job; SamplingError (one
    line) for a run that cannot start from replay rows or a row beyond a buffer."""
    from retland.train.checkpoints import stored_states

    runs = sorted({d[0] for d in distributions})
    cond, params = in_list("run_id", runs)
    info = {r["run_id"]: r for r in wh.records(f"SELECT run_id, algo, env, source, config FROM runs WHERE {cond}",
                                                params)}
    cond, params = in_list("run_id", runs)
    sizes = {(r["run_id"], int(r["step"])): int(r["replay_size"] or 0) for r in wh.records(
        f"SELECT run_id, step, replay_size FROM checkpoints WHERE {cond}", params)}
    for run_id in runs:
        r = info[run_id]
        if r["algo"] not in ("td3", "sac") or r["source"] != "trained":
            raise SamplingError(f"--start {choice.text}: run {run_id} ({r['source']} {r['algo']}) has no replay "
                                "buffer to start from; replay starts need TD3 or SAC runs trained by retland")
        config = json.loads(r["config"] or "{}")
        if not config.get("store_states"):
            from retland.config.registry import is_dmc

            if is_dmc(r["env"]):
                raise SamplingError(f"--start {choice.text}: run {run_id} is on {r['env']}, a DeepMind Control task "
                                    "whose simulator states retland does not store; replay starts are offered for "
                                    "the brax tasks")
            raise SamplingError(f"--start {choice.text}: run {run_id} was trained without stored states: {NO_STATES}")
    out: dict[tuple[str, int], list[int]] = {}
    by_run: dict[str, list[int]] = {}
    for d in distributions:
        by_run.setdefault(d[0], []).append(int(d[1]))
    for run_id, steps in by_run.items():
        smallest = min(sizes[(run_id, s)] for s in steps)
        if smallest < 1:
            raise SamplingError(f"--start {choice.text}: run {run_id} has an empty replay buffer at step "
                                f"{min(steps, key=lambda s: sizes[(run_id, s)])}")
        if choice.kind == "replay":
            rows = spread_rows(choice.count, smallest, seed)
        else:
            rows = list(choice.rows)
        for s in steps:
            n = sizes[(run_id, s)]
            beyond = [row for row in rows if row >= n]
            if beyond:
                raise SamplingError(f"--start {choice.text}: row {beyond[0]} is beyond the replay buffer of run "
                                    f"{run_id} at step {s}, which holds rows 0..{n - 1}")
            try:
                stored = stored_states(wh, run_id, n)
            except ValueError as exc:  # segments missing or not contiguous
                raise SamplingError(f"--start {choice.text}: {exc}") from None
            if not stored:
                raise SamplingError(f"--start {choice.text}: run {run_id} has no stored states for rows 0..{n - 1}: "
                                    f"{NO_STATES}")
            out[(run_id, s)] = rows
    return out


def start_state(wh, checkpoint, s0, row: int):
    """The env state at replay row `row` of a loaded checkpoint (restored onto s0, as the
    chunk program takes it)."""
    return start_states(wh, checkpoint, s0, [row])[0]


def start_states(wh, checkpoint, s0, rows) -> list:
    """`start_state` of several rows, reading the stored states once."""
    from retland.train.checkpoints import load_replay_rows, load_state_rows
    from retland.train.program import abstract_seed_state

    cfg = checkpoint.config
    if not getattr(cfg, "store_states", False):
        raise SamplingError(f"run {checkpoint.run_id} was trained without stored states: {NO_STATES}")
    rows = [int(r) for r in rows]
    for row in rows:
        if not 0 <= row < checkpoint.replay_size:
            raise SamplingError(f"row {row} is beyond the replay buffer of run {checkpoint.run_id} at step "
                                f"{checkpoint.step}, which holds rows 0..{checkpoint.replay_size - 1}")
    target = abstract_seed_state(cfg)[0].env_state.pipeline_state
    leaves = _leaves(load_state_rows(wh, checkpoint.run_id, checkpoint.replay_size, rows, target))
    obs = load_replay_rows(wh, checkpoint.run_id, checkpoint.replay_size, rows, "obs")
    return [restore(s0, [np.asarray(x)[i] for x in leaves], obs[i]) for i in range(len(rows))]


def _leaves(tree):
    import jax

    return jax.tree.leaves(tree)
