"""The experiment loop of Algorithm 1: proposals, decisions, rows and derived runs."""
from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from retland import stats
from retland.analyses.stabilize.config import AUTO_CHUNK, AUTO_CHUNK_ACCELERATOR, StabilizeConfig, accepts
from retland.analyses.stabilize.program import Lane, commit, initial_lanes, program_config, propose_fn, purd_fn
from retland.core import jaxcache, sizing
from retland.core.repro import reproducibility_record
from retland.train import checkpoints as ck
from retland.train.checkpoints import load_checkpoint
from retland.train.config import TrainConfig

# ---- the experiment ----------------------------------------------------------------------

@dataclass
class StabilizeResult:
    experiment_id: str
    config: StabilizeConfig
    rows: list[dict]  # stabilize_steps rows, (lane, proposal) order
    returns: np.ndarray  # [L, P + 1, N]: PURD samples, proposal 0 = the checkpoint
    derived_run_ids: list[str]  # one per lane (config.lanes order)
    final: Lane | None = None  # [L] lanes after the last proposal
    wall_seconds: float = 0.0
    proposal_seconds: list[float] = field(default_factory=list)


def new_experiment_id(env: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"stab-{env}-{stamp}-{secrets.token_hex(2)}"


def derived_run_id(experiment_id: str, arm: str, seed: int) -> str:
    return f"{experiment_id}-{arm}-r{seed}"


def load_source(wh, scfg: StabilizeConfig):
    """The checkpoint, refused with a clear message unless it is a TD3 one with a buffer."""
    ckpt = load_checkpoint(wh, scfg.run_id, scfg.step)
    if ckpt.algo != "td3":
        raise ValueError(f"stabilize needs a td3 checkpoint; run {scfg.run_id!r} is {ckpt.algo}")
    if ckpt.replay_size < 1:
        raise ValueError(f"checkpoint {scfg.run_id}@{scfg.step} has an empty replay buffer")
    return ckpt


def _summary(r: np.ndarray, scfg: StabilizeConfig) -> stats.Summary:
    if not np.all(np.isfinite(r)):
        raise ValueError("a post-update return is not finite (NaN/inf): refusing to decide on it")
    return stats.summarize(r, alpha=scfg.alpha, beta=scfg.beta)


def run_experiment(scfg: StabilizeConfig, wh=None, *, checkpoint=None, progress: Callable[..., None] | None = None,
                   write: bool = True, experiment_id: str | None = None,
                   capacity: int | None = None) -> StabilizeResult:
    """Run Algorithm 1 for every lane; with `write`, append the rows and the derived runs
    to the warehouse `wh` (only once everything is computed: a killed job writes nothing).
    progress(n, info=…): called with n = 1 after each of the P + 1 PURD estimates (the
    checkpoint's own, then one per proposal), with the lanes' current mean and LTP.
    capacity: replay rows per lane (see `initial_lanes`); several sources given one
    capacity share one compiled program (`run_sources`)."""
    jaxcache.enable()
    ckpt = checkpoint if checkpoint is not None else load_source(wh, scfg)
    cfg: TrainConfig = ckpt.config
    experiment_id = experiment_id or new_experiment_id(cfg.env)
    lanes_meta = scfg.lanes
    L, P, N = len(lanes_meta), scfg.proposals, scfg.samples
    baseline = np.array([a == "baseline" for a, _ in lanes_meta])

    t0 = time.perf_counter()
    lanes, purd_keys = initial_lanes(ckpt, scfg, capacity)
    pcfg = program_config(cfg)
    if scfg.chunk is None:
        scfg = scfg.model_copy(update={"chunk": auto_chunk(pcfg, scfg, lanes, purd_keys).size})
    propose = propose_fn(pcfg, scfg.exploration_noise, scfg.reset_noise_fraction)
    estimate = purd_fn(pcfg, N, scfg.chunk)

    report = progress or (lambda n=0, **info: None)
    returns = np.zeros((L, P + 1, N), np.float64)
    rows: list[list[dict]] = [[] for _ in range(L)]
    proposal_seconds = []
    r, own = jax.device_get(estimate(lanes, purd_keys))
    returns[:, 0] = r
    last = [_summary(r[i], scfg) for i in range(L)]
    last_idx = [0] * L
    for i in range(L):
        rows[i].append(_row(scfg, lanes_meta[i], 0, True, 0, last[i], last[i], float(own[i]),
                            _counters(lanes, i)))
    report(1, info=_lanes_info(last))
    for k in range(1, P + 1):
        tk = time.perf_counter()
        proposed = propose(lanes)
        r, own = jax.device_get(estimate(proposed, purd_keys))
        returns[:, k] = r
        new = [_summary(r[i], scfg) for i in range(L)]
        accept = np.array([baseline[i] or accepts(scfg.criterion, new[i], last[i], scfg.tolerance)
                           for i in range(L)])
        lanes = commit(jnp.asarray(accept), proposed, lanes)
        counters = jax.device_get((lanes.train.agent.update_count, lanes.replay.size))
        for i in range(L):
            rows[i].append(_row(scfg, lanes_meta[i], k, bool(accept[i]), last_idx[i], new[i], last[i],
                                float(own[i]), (int(counters[0][i]), int(counters[1][i]))))
            if accept[i]:
                last[i], last_idx[i] = new[i], k
        jax.block_until_ready(lanes)
        proposal_seconds.append(time.perf_counter() - tk)
        report(1, info=_lanes_info(last))

    ids = [derived_run_id(experiment_id, a, s) for a, s in lanes_meta]
    flat = []
    for i in range(L):
        for row in rows[i]:
            flat.append(dict(row, experiment_id=experiment_id, derived_run_id=ids[i]))
    result = StabilizeResult(experiment_id, scfg, flat, returns, ids, lanes,
                             time.perf_counter() - t0, proposal_seconds)
    if write:
        write_result(wh, result, ckpt)
    return result


def auto_chunk(pcfg: TrainConfig, scfg: StabilizeConfig, lanes: Lane, purd_keys,
               room: int | None = None) -> sizing.Fit:
    """`--chunk auto`: the platform's preferred chunk (AUTO_CHUNK), capped by N + 1, and on
    a device with a memory limit the largest chunk whose PURD program fits its budget
    (`retland.core.sizing`: XLA's memory analysis of the compiled program; the lanes and
    their buffers are already on the device). room: the budget in bytes (default
    `sizing.budget()`; None on CPU)."""
    preferred = min(AUTO_CHUNK.get(jax.default_backend(), AUTO_CHUNK_ACCELERATOR), scfg.samples + 1)
    room = sizing.budget() if room is None else room
    try:
        return sizing.fit(lambda c: sizing.footprint(purd_fn(pcfg, scfg.samples, c), lanes, purd_keys),
                          preferred, room)
    except MemoryError as exc:
        raise ValueError(f"stabilize: {len(scfg.lanes)} lanes do not fit this device with any chunk ({exc}); "
                         "run fewer --seeds or one --arm per job") from None


def _lanes_info(last: list[stats.Summary]) -> str:
    """The lanes' current mean return and LTP, for progress displays."""
    ltps = [s.ltp for s in last]
    return f"mean {np.mean([s.mean for s in last]):,.1f}" + (f" · LTP {np.mean(ltps):.3f}" if ltps else "")


def _counters(lanes: Lane, i: int) -> tuple[int, int]:
    return int(lanes.train.agent.update_count[i]), int(lanes.replay.size[i])


def _row(scfg, lane_meta, proposal, accepted, last_idx, new, last, own_return, counters) -> dict:
    """The stabilize_steps row of one lane's proposal; `counters` = (update count, replay
    size) of the lane after the decision."""
    arm, seed = lane_meta
    return dict(
        arm=arm, seed=int(seed), proposal=int(proposal), run_id=scfg.run_id, step=int(scfg.step),
        criterion=scfg.criterion, alpha=scfg.alpha, beta=scfg.beta, tolerance=scfg.tolerance,
        n_samples=int(new.n), accepted=accepted, last_accepted=int(last_idx),
        update_count=counters[0], replay_size=counters[1],
        eval_return=own_return,
        mean=new.mean, std=new.std, mode=new.mode, ltp=new.ltp, cvar=new.cvar,
        last_mean=last.mean, last_std=last.std, last_mode=last.mode, last_ltp=last.ltp, last_cvar=last.cvar,
    )


def write_result(wh, result: StabilizeResult, ckpt) -> None:
    """Derived runs (state + replay + checkpoint row), then the step rows and samples."""
    scfg, cfg = result.config, ckpt.config
    host = jax.device_get(result.final)
    now = datetime.now(timezone.utc)
    runs, cks = [], []
    last_rows = {(r["arm"], r["seed"]): r for r in result.rows if r["proposal"] == scfg.proposals}
    for i, ((arm, seed), rid) in enumerate(zip(scfg.lanes, result.derived_run_ids)):
        ts = jax.tree.map(lambda x: x[i], host.train)
        size = int(host.replay.size[i])
        step = int(ts.env_steps)  # parent step + accepted env steps
        dcfg = cfg.model_copy(update=dict(
            seeds=1, seed=ckpt.seed, total_steps=step, checkpoints=(step,), eval_every=step,
            agent=cfg.agent.model_copy(update=dict(buffer_size=max(cfg.agent.buffer_size, step)))))
        TrainConfig.from_stored(dcfg.model_dump())  # the derived run must load like any other
        ck.save_replay(wh, rid, jax.tree.map(lambda x: x[i], host.replay.data), size)
        path = ck.save_state(wh, rid, step, ts)
        provenance = dict(stabilize=scfg.model_dump(mode="json"), experiment_id=result.experiment_id,
                          arm=arm, rejection_seed=seed, parent_run_id=ckpt.run_id, parent_step=ckpt.step)
        runs.append(dict(run_id=rid, algo="td3", env=cfg.env, seed=ckpt.seed, backend=cfg.backend, variant=cfg.variant,
                         source="derived", parent_run_id=ckpt.run_id, parent_step=ckpt.step,
                         config=json.dumps(dict(dcfg.model_dump(mode="json"), job_id=result.experiment_id,
                                                seed_index=i)),
                         repro=reproducibility_record(provenance), created_at=now))
        cks.append(dict(run_id=rid, step=step, artifact_path=path,
                        eval_return=last_rows[(arm, seed)]["eval_return"], replay_size=size, created_at=now))
    wh.append("runs", runs)
    wh.append("checkpoints", cks)
    wh.append("stabilize_steps", [dict(r, created_at=now) for r in result.rows])
    L, P1, N = result.returns.shape
    lane_arm = np.repeat(np.array([a for a, _ in scfg.lanes]), P1 * N)
    lane_seed = np.repeat(np.array([s for _, s in scfg.lanes], np.int32), P1 * N)
    wh.append("stabilize_returns", {
        "experiment_id": [result.experiment_id] * (L * P1 * N),
        "arm": lane_arm.tolist(), "seed": lane_seed,
        "proposal": np.tile(np.repeat(np.arange(P1, dtype=np.int32), N), L),
        "update_index": np.tile(np.arange(N, dtype=np.int64), L * P1),
        "return": result.returns.reshape(-1),
    })
