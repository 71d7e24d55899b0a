"""Algorithm 1: post-update rejection of TD3 updates (paper §4.2, Fig. 7, A.9, A.10).

From a TD3 checkpoint, every *lane* (one rejection seed × one arm) repeats P times:

    propose   one env step of the collection env with exploration noise 0.1, the
              transition appended at index `size` of the replay buffer, one full TD3
              update (critic; actor and targets when the update counter says so) —
              computed by `retland.train.program`'s own step functions (`offpolicy_collect`,
              `offpolicy_update`), so the baseline arm is bit-identical to training;
    estimate  the PURD of the proposed state: N td3-operator samples
              J(U(proposed, key_i)), plus J(θ) of the proposed actor itself;
    decide    arm `reject`: accept iff the criterion holds against the last accepted
              state (cvar: CVaR_α(new) ≥ CVaR_α(last) − tol; ltp: LTP(new) ≤ LTP(last) +
              tol; mean: mean(new) ≥ mean(last) − tol); arm `baseline`: always accept.
              A rejected proposal is undone entirely: networks, targets, optimizer
              states, update counter, replay rows and size, collection env state.

Choices (docs/method.md §6.4 leaves them open):
- The collection env (reset noise 10% of the task's standard) starts a fresh episode
  from the checkpoint and continues along the *accepted* trajectory only: a rejected
  step's env transition is undone with the rest, so the buffer stays one consistent
  trajectory (s' of a row is s of the next, except at resets) as in training, and the
  next proposal retries from the same env state with new noise. Episodes reset on
  termination or at the run's horizon (truncation bootstraps, as in training).
- Keys. Rejection seed s: the lane's training stream starts at fold_in(PRNGKey(s), 0)
  and is split exactly as training splits it, every proposal, accepted or not (a
  rejected proposal is not retried with the same noise); the collection episode resets
  from fold_in(PRNGKey(s), 2). Both arms of a seed therefore use the same keys, and the
  baseline arm *is* plain TD3 training continued from the checkpoint. The PURD of every
  proposal of seed s uses base key fold_in(PRNGKey(s), 1), so sample i of two states
  shares its key (common random numbers between the proposal and the state it is
  compared with, as `retland sample` does across checkpoints).
- The decision is made on the host from `retland.stats` (float64, the same numbers
  the table records and `schema/10_stats.sql` recomputes), so a stored row replays its
  own decision exactly. An undefined LTP (mode ≤ 0) counts as 1 for the ltp criterion.

All lanes run in one vmapped program per phase (propose, estimate, commit); Python
loops only over the P proposals, each of which is N + 1 full rollouts per lane.
Memory: each lane holds its own replay buffer (checkpoint rows + P), so lanes × buffer
must fit on the device; run fewer seeds per call otherwise.

Output: one `stabilize_steps` row per lane and proposal (proposal 0 = the checkpoint),
the PURD samples in `stabilize_returns`, and the final state of each lane as a derived
run (runs.source = 'derived', parent_run_id, parent_step) with one checkpoint, which
`retland sample` and the report treat like any other.
"""
from __future__ import annotations

import functools
import json
import math
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from retland import stats
from retland.agents import get_agent, td3
from retland.agents.base import TrainState
from retland.core import jaxcache, replay
from retland.core.envs import make_env, reference_state, standard_reset_noise
from retland.core.repro import reproducibility_record
from retland.purd.engine import AgentPolicy, SampleProgram, sample_rollout
from retland.train import checkpoints as ck
from retland.train.checkpoints import load_checkpoint
from retland.train.config import TrainConfig
from retland.train.program import offpolicy_collect, offpolicy_update

ARMS = ("reject", "baseline")
# Default PURD chunk per lane. CPU, 6 lanes x 200 samples (BENCHMARKS.md "Stabilize"): all
# 201 in one chunk took 617 s at 5.5 GB peak, chunks of 64 took 745 s at 3.4 GB, so CPU
# keeps big chunks and is bounded only for large N. On a GPU, 20 lanes x 512 is about
# 40 GB of update temporaries (≈ 4 MB per sample for 256x256 critics, batch 256).
AUTO_CHUNK = {"cpu": 256}
AUTO_CHUNK_ACCELERATOR = 512
CRITERIA = ("cvar", "ltp", "mean")


class StabilizeConfig(BaseModel):
    """One Algorithm 1 experiment; defaults as in docs/method.md §6.4."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str
    step: int
    proposals: int = 40
    samples: int = 1000  # N td3-operator samples per PURD
    criterion: Literal["cvar", "ltp", "mean"] = "cvar"
    alpha: float = 0.1  # CVaR level
    beta: float = 0.5  # LTP threshold, as a fraction of the mode
    tolerance: float = 0.0
    arms: tuple[Literal["reject", "baseline"], ...] = ARMS
    seeds: tuple[int, ...] = tuple(range(10))  # rejection seeds
    exploration_noise: float = 0.1
    reset_noise_fraction: float = 0.1  # collection env reset noise, as a fraction of the task's standard
    # PURD samples per lane computed together (update + rollout); memory grows with
    # lanes x chunk, not lanes x samples. None: AUTO_CHUNK for the platform, resolved and
    # recorded when the experiment runs.
    chunk: int | None = None

    @field_validator("proposals", "samples", "chunk")
    @classmethod
    def _positive(cls, v, info):
        if v is not None and v < 1:
            raise ValueError(f"{info.field_name} must be >= 1, got {v}")
        return v

    @field_validator("alpha")
    @classmethod
    def _alpha(cls, v):
        if not 0.0 < v <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {v}")
        return v

    @field_validator("beta")
    @classmethod
    def _beta(cls, v):
        if not 0.0 < v <= 1.0:
            raise ValueError(f"beta must be in (0, 1], got {v}")
        return v

    @field_validator("tolerance", "exploration_noise", "reset_noise_fraction")
    @classmethod
    def _non_negative(cls, v, info):
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{info.field_name} must be a finite number >= 0, got {v}")
        return v

    @field_validator("arms")
    @classmethod
    def _arms(cls, v):
        if not v or len(set(v)) != len(v):
            raise ValueError(f"arms must be distinct and not empty: choose from {', '.join(ARMS)}; got {list(v)}")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v):
        if not v or len(set(v)) != len(v) or min(v) < 0:
            raise ValueError(f"seeds must be distinct integers >= 0, at least one; got {list(v)}")
        return v

    @model_validator(mode="after")
    def _samples_for_alpha(self):
        if self.samples < 2:
            raise ValueError(f"samples={self.samples}: a distribution needs at least 2 samples")
        return self

    @property
    def lanes(self) -> list[tuple[str, int]]:
        """(arm, seed) of each lane, arm-major: lane = arm_index * len(seeds) + seed_index."""
        return [(a, s) for a in self.arms for s in self.seeds]


# ---- the criterion ----------------------------------------------------------------------

def criterion_value(criterion: str, summary: stats.Summary) -> float:
    """The number the criterion compares; LTP undefined (mode <= 0) counts as 1."""
    if criterion == "cvar":
        return summary.cvar
    if criterion == "mean":
        return summary.mean
    if criterion == "ltp":
        return 1.0 if summary.ltp is None else summary.ltp
    raise ValueError(f"unknown criterion {criterion!r}: choose one of {', '.join(CRITERIA)}")


def accepts(criterion: str, new: stats.Summary, last: stats.Summary, tolerance: float) -> bool:
    """Algorithm 1's test of a proposal `new` against the last accepted state `last`."""
    a, b = criterion_value(criterion, new), criterion_value(criterion, last)
    if criterion == "ltp":
        return bool(a <= b + tolerance)  # lower is better
    return bool(a >= b - tolerance)  # higher is better


# ---- lanes --------------------------------------------------------------------------------

class Lane(NamedTuple):
    """One lane's training state and replay buffer; leading [L] axis when batched."""
    train: TrainState
    replay: replay.Replay


def collection_env(cfg: TrainConfig, fraction: float):
    return make_env(cfg.env, cfg.backend, fraction * standard_reset_noise(cfg.env))


def seed_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(training stream, PURD base key, collection reset key) of rejection seed `seed`."""
    k = jax.random.PRNGKey(seed)
    return jax.random.fold_in(k, 0), jax.random.fold_in(k, 1), jax.random.fold_in(k, 2)


def initial_lanes(ckpt, scfg: StabilizeConfig) -> tuple[Lane, jax.Array]:
    """(lanes [L], PURD base keys [L, 2]) from a loaded TD3 checkpoint. Each lane's
    buffer holds the checkpoint's rows [0, size) and room for P more."""
    size0 = int(ckpt.replay_size)
    data = jax.tree.map(lambda x: np.concatenate([np.asarray(x)[:size0],
                                                  np.zeros((scfg.proposals, *x.shape[1:]), x.dtype)]),
                        ckpt.replay)
    env = collection_env(ckpt.config, scfg.reset_noise_fraction)
    lanes, purd_keys = [], []
    for _, s in scfg.lanes:
        k_train, k_purd, k_env = seed_keys(s)
        ts = TrainState(ckpt.state.agent, env.reset(k_env), jnp.zeros((), jnp.int32), k_train,
                        jnp.asarray(ckpt.step, jnp.int32))
        lanes.append(Lane(ts, replay.Replay(data, jnp.asarray(size0, jnp.int32))))
        purd_keys.append(k_purd)
    stack = lambda *xs: jnp.stack([jnp.asarray(x) for x in xs])  # noqa: E731
    return jax.tree.map(stack, *lanes), jnp.stack(purd_keys)


# ---- the three compiled phases ------------------------------------------------------------

@functools.lru_cache(maxsize=16)
def propose_fn(cfg: TrainConfig, exploration_noise: float, reset_noise_fraction: float):
    """jit(lanes [L] -> proposed lanes [L]): one env step + one full TD3 update per lane,
    computed by `retland.train.program`'s own off-policy step (`offpolicy_collect`, then
    `offpolicy_update`), so a lane that accepts everything is plain training.

    Training decides the actor/target step once for all seeds (a real `lax.cond`);
    lanes' update counters differ once one rejects. A per-lane flag would turn the cond
    into a select, which XLA fuses differently: the Polyak step then differs from
    training's in the last bits. So the update runs twice with a shared flag each — once
    as if any lane took the actor step, once as if all did — and each lane keeps the
    result its own counter asks for (the second update is negligible next to a PURD)."""
    tcfg = cfg.model_copy(update=dict(agent=cfg.agent.model_copy(update=dict(exploration_noise=exploration_noise))))
    env = collection_env(cfg, reset_noise_fraction)

    def propose(lanes: Lane, warmup) -> Lane:
        # warmup (always False) is an argument, as in training's chunk: a constant would
        # let XLA inline the action cond and fuse `explore` differently (last-bit changes).
        ts, rb, k_upd = offpolicy_collect(tcfg, env, lanes.train, lanes.replay, warmup)
        do_actor = (ts.agent.update_count + 1) % tcfg.agent.policy_delay == 0  # [L]
        with_actor = offpolicy_update(tcfg, ts.agent, rb, k_upd, {"do_actor": jnp.any(do_actor)})
        critic_only = offpolicy_update(tcfg, ts.agent, rb, k_upd, {"do_actor": jnp.all(do_actor)})
        return Lane(ts._replace(agent=_select(do_actor, with_actor, critic_only)), rb)

    f = jax.jit(propose)
    return lambda lanes: f(lanes, jnp.asarray(False))


@dataclass(frozen=True)
class OwnOrUpdate:
    """make_params of Algorithm 1's PURD estimates, op_state = (own θ, td3 operator state):
    index i >= 0 is the td3 operator's sample i; index -1 is the lane's own actor θ (its
    update is computed and discarded, so every element runs the same program)."""

    agent: Any

    def __call__(self, op_state, key, i):
        own, op = op_state
        theta_i = self.agent.update(op, key)
        return jax.tree.map(lambda own_p, p: jnp.where(i < 0, own_p, p), own, theta_i)


@functools.lru_cache(maxsize=16)
def purd_fn(cfg: TrainConfig, n_samples: int, chunk: int):
    """jit((lanes [L], base keys [L]) -> (returns [L, N], own return [L])).

    Sample i of a lane is J(U(state, fold_in(base, i))) with U the td3 update operator
    (`agent.update`, as `retland sample` applies it) and J the engine's `sample_rollout`
    from the reference state; `own` is J(θ) of the lane's actor itself. Samples run in
    sequential chunks of `chunk` per lane (`lax.map`), so the memory of the vmapped
    updates and rollouts is lanes × chunk, not lanes × N: all of N = 1000 for 20 lanes
    at once would not fit an 80 GB GPU. The state is an argument, so one executable
    serves every proposal."""
    agent = get_agent("td3", cfg)
    program = SampleProgram(cfg.env, cfg.backend, cfg.horizon, AgentPolicy(agent), OwnOrUpdate(agent))
    s0 = reference_state(cfg.env, cfg.backend)

    def lane_purd(ts: TrainState, rb: replay.Replay, base_key, start):
        a = ts.agent
        op = (a.actor_params, td3.OperatorState(a.actor_params, a.actor_opt_state, a.critic_params, rb.data, rb.size))

        def one(i):
            return sample_rollout(program, op, start, base_key, i).ret

        ret = jax.lax.map(one, jnp.arange(-1, n_samples, dtype=jnp.int32), batch_size=min(chunk, n_samples + 1))
        own, ret = ret[0], ret[1:]
        return ret, own

    f = jax.jit(jax.vmap(lane_purd, in_axes=(0, 0, 0, None)))
    return lambda lanes, base_keys: f(lanes.train, lanes.replay, base_keys, s0)


def _select(mask, new, old):
    def sel(n, o):
        m = mask.reshape(mask.shape + (1,) * (n.ndim - mask.ndim))
        return jnp.where(m, n, o)
    return jax.tree.map(sel, new, old)


@jax.jit
def commit(accept: jax.Array, proposed: Lane, old: Lane) -> Lane:
    """accept [L] bool: keep the proposal, or restore every array of the old lane —
    except the training key, which moves on either way."""
    lanes = _select(accept, proposed, old)
    return lanes._replace(train=lanes.train._replace(key=proposed.train.key))


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
                   write: bool = True, experiment_id: str | None = None) -> StabilizeResult:
    """Run Algorithm 1 for every lane; with `write`, append the rows and the derived runs
    to the warehouse `wh` (only once everything is computed: a killed job writes nothing).
    progress(proposals, info=…): called after the checkpoint's own PURD (0) and after
    each proposal (1), with the lanes' current mean and LTP."""
    jaxcache.enable()
    if scfg.chunk is None:
        auto = AUTO_CHUNK.get(jax.default_backend(), AUTO_CHUNK_ACCELERATOR)
        scfg = scfg.model_copy(update={"chunk": min(auto, scfg.samples + 1)})
    ckpt = checkpoint if checkpoint is not None else load_source(wh, scfg)
    cfg: TrainConfig = ckpt.config
    experiment_id = experiment_id or new_experiment_id(cfg.env)
    lanes_meta = scfg.lanes
    L, P, N = len(lanes_meta), scfg.proposals, scfg.samples
    baseline = np.array([a == "baseline" for a, _ in lanes_meta])

    t0 = time.perf_counter()
    lanes, purd_keys = initial_lanes(ckpt, scfg)
    propose = propose_fn(cfg, scfg.exploration_noise, scfg.reset_noise_fraction)
    estimate = purd_fn(cfg, N, scfg.chunk)

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
    report(0, info=_lanes_info(last))
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


def _lanes_info(last: list[stats.Summary]) -> str:
    """The lanes' current mean return and LTP, for progress displays."""
    ltps = [s.ltp for s in last if s.ltp is not None]
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
        TrainConfig.model_validate(dcfg.model_dump())  # the derived run must load like any other
        ck.save_replay(wh, rid, jax.tree.map(lambda x: x[i], host.replay.data), size)
        path = ck.save_state(wh, rid, step, ts)
        provenance = dict(stabilize=scfg.model_dump(mode="json"), experiment_id=result.experiment_id,
                          arm=arm, rejection_seed=seed, parent_run_id=ckpt.run_id, parent_step=ckpt.step)
        runs.append(dict(run_id=rid, algo="td3", env=cfg.env, seed=ckpt.seed, backend=cfg.backend,
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


def arm_effect(final, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0):
    """Reject minus baseline after the last proposal, per experiment and statistic of
    the held policy's PURD (ltp; ltp_source, against the source checkpoint's mode; mean;
    cvar): the mean over rejection seeds of the paired difference (both arms of a seed
    share every key) and its percentile bootstrap CI over seeds.

    final: rows of the view stabilize_final (experiment_id, arm, seed, ltp, ltp_source, mean, cvar).
    Returns a polars DataFrame: experiment_id, statistic, seeds, reject, baseline,
    difference, lo, hi; experiments without both arms are left out. With a few seeds
    the CI says how much the seeds disagree; it is not a test."""
    import polars as pl  # the experiment itself runs where polars is not installed (GPU nodes)

    rows = []
    for (exp,), df in final.sort("experiment_id").group_by(["experiment_id"], maintain_order=True):
        wide = df.filter(pl.col("arm") == "reject").join(df.filter(pl.col("arm") == "baseline"), on="seed",
                                                         suffix="_baseline").sort("seed")
        for name in ("ltp", "ltp_source", "mean", "cvar"):
            pair = wide.select(name, f"{name}_baseline").drop_nulls()
            r, b = pair[name].to_numpy(), pair[f"{name}_baseline"].to_numpy()
            if not r.size:
                continue
            d = r - b
            lo, hi = stats.bootstrap_ci(d, lambda x: x.mean(axis=1), n_resamples, confidence, seed)
            rows.append(dict(experiment_id=exp, statistic=name, seeds=int(d.size), reject=float(r.mean()),
                             baseline=float(b.mean()), difference=float(d.mean()), lo=lo, hi=hi))
    schema = dict(experiment_id=pl.String, statistic=pl.String, seeds=pl.Int64, reject=pl.Float64,
                  baseline=pl.Float64, difference=pl.Float64, lo=pl.Float64, hi=pl.Float64)
    return pl.DataFrame(rows, schema=schema)
