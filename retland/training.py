"""Training: N seeds of one algorithm vmapped in one jitted program.

The loop is PureJaxRL-shaped: one compiled *chunk* function advances every seed by a
fixed number of env steps (a `lax.scan`, vmapped over seeds); Python only loops over
chunks, stopping at evaluation and checkpoint steps. Chunk length = gcd of those steps,
so each phase compiles once.

Off-policy (TD3/SAC): one env per seed with the standard reset noise, `learning_starts`
uniform random steps (no updates), then one env step + one update per step. Episodes
end at termination or at `horizon` steps (truncation: the transition's mask stays 1).
PPO: `num_envs` envs per seed with auto-reset, one PPO iteration per 16 x 2048 steps.

Each seed is one run (`runs` row); evaluation is the deterministic return from the
reference state (`retland.rollout.rollout`), appended to `evaluations`; checkpoints go
through retland.checkpoints and rows into `checkpoints`.
"""
from __future__ import annotations

import functools
import math
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from retland import jaxcache, replay
from retland.agents import get_agent
from retland.agents.base import TrainState
from retland.config import TrainConfig
from retland.envs import env_dims, make_env, reference_env, reference_state
from retland.rollout import rollout

OFF_POLICY = ("td3", "sac")


def algo_module(algo: str):
    if algo == "td3":
        from retland.agents import td3 as mod
    elif algo == "sac":
        from retland.agents import sac as mod
    elif algo == "ppo":
        from retland.agents import ppo as mod
    else:
        raise ValueError(f"unknown algo {algo!r}: choose one of td3, sac, ppo")
    return mod


# ---- state ----------------------------------------------------------------------------

def replay_capacity(cfg: TrainConfig) -> int:
    return min(cfg.agent.buffer_size, cfg.steps) if cfg.algo in OFF_POLICY else 0


def init_seed(cfg: TrainConfig, key) -> tuple[TrainState, replay.Replay | None]:
    """One seed's initial training state (and empty replay buffer for TD3/SAC)."""
    env = make_env(cfg.env, cfg.backend)
    obs_size, action_size = env_dims(cfg.env, cfg.backend)
    mod = algo_module(cfg.algo)
    k_agent, k_env, k_loop = jax.random.split(key, 3)
    agent = mod.init(cfg.agent, k_agent, obs_size, action_size)
    if cfg.algo in OFF_POLICY:
        env_state = env.reset(k_env)
        ts = TrainState(agent, env_state, jnp.zeros((), jnp.int32), k_loop, jnp.zeros((), jnp.int32))
        return ts, replay.empty(replay_capacity(cfg), obs_size, action_size)
    env_state = jax.vmap(env.reset)(jax.random.split(k_env, cfg.agent.num_envs))
    ts = TrainState(agent, env_state, jnp.zeros((cfg.agent.num_envs,), jnp.int32), k_loop,
                    jnp.zeros((), jnp.int32))
    return ts, None


def seed_keys(cfg: TrainConfig) -> jax.Array:
    """[S, 2]: seed i of the job starts from PRNGKey(cfg.seed + i)."""
    return jnp.stack([jax.random.PRNGKey(cfg.seed + i) for i in range(cfg.seeds)])


def init_states(cfg: TrainConfig):
    """(TrainState, Replay | None) with a leading [seeds] axis."""
    return _init_fn(cfg.model_copy(update={"seed": 0, "seeds": 1}))(seed_keys(cfg))


@functools.lru_cache(maxsize=32)
def _init_fn(cfg: TrainConfig):
    return jax.jit(jax.vmap(partial(init_seed, cfg)))


def abstract_seed_state(cfg: TrainConfig):
    """(ShapeDtypeStruct tree of one seed's TrainState, replay capacity): the structure
    a checkpoint of a run with this config restores into."""
    ts, _ = jax.eval_shape(partial(init_seed, cfg), jax.random.PRNGKey(0))
    return ts, replay_capacity(cfg)


# ---- one chunk of training ------------------------------------------------------------

def seed_map(fn, in_axes=0):
    """`jax.vmap(fn, in_axes)` over the leading seed axis, except that a single seed is
    squeezed instead: XLA:CPU runs a dot with a batch dimension of 1 as a batched dot,
    ~13% slower than the plain one for TD3's update (benchmarks/train_throughput.py)."""
    vmapped = jax.vmap(fn, in_axes=in_axes)

    def call(*args):
        axes = in_axes if isinstance(in_axes, (tuple, list)) else (in_axes,) * len(args)
        mapped = [a for a, ax in zip(args, axes) if ax is not None]
        if jax.tree.leaves(mapped)[0].shape[0] != 1:
            return vmapped(*args)
        squeezed = [jax.tree.map(lambda x: x[0], a) if ax is not None else a for a, ax in zip(args, axes)]
        return jax.tree.map(lambda x: jnp.asarray(x)[None], fn(*squeezed))

    return call


def _where(mask, new, old):
    """Per-leaf select along the leading axis of mask [N]."""
    def sel(n, o):
        m = mask.reshape(mask.shape + (1,) * (n.ndim - mask.ndim))
        return jnp.where(m, n, o)
    return jax.tree.map(sel, new, old)


def env_step_with_reset(env, horizon: int, env_state, episode_step, action, keys):
    """Step a batch [N] of envs; finished episodes (termination, or `horizon` steps)
    restart from a fresh reset with the env's standard noise.

    keys [N]: one reset key per env (each env's stream stays its own).
    Returns (next_state, next_episode_step, transition-pieces): reward [N], the true
    next obs [N, O] (before any reset), terminated [N], truncated [N]."""
    ns = seed_map(env.step)(env_state, action)
    # brax returns some fields (done, metrics) weakly typed; a carry whose types change
    # between calls would recompile the chunk function on its second call.
    ns = jax.tree.map(lambda x: jnp.asarray(x, dtype=x.dtype), ns)
    ep = episode_step + 1
    terminated = ns.done > 0.5
    truncated = (ep >= horizon) & ~terminated
    finished = terminated | truncated
    # Resets are rare once agents stand: compute them only when some env needs one.
    fresh = lambda s: _where(finished, seed_map(env.reset)(keys), s)  # noqa: E731
    next_state = jax.lax.cond(jnp.any(finished), fresh, lambda s: s, ns)
    return next_state, jnp.where(finished, 0, ep), ns.reward, ns.obs, terminated, truncated


def offpolicy_collect(cfg: TrainConfig, env, ts: TrainState, rb: replay.Replay, warmup):
    """The env half of one off-policy training step for seeds [S]: split each seed's
    key, act (uniform during warm-up, else `explore`), step the env (resets included)
    and append the transition. Returns (ts with the new env state, episode step, key
    and env-step counter — the agent untouched —, rb, update keys [S])."""
    mod = algo_module(cfg.algo)
    acfg = cfg.agent
    _, action_size = env_dims(cfg.env, cfg.backend)
    keys = jax.vmap(lambda k: jax.random.split(k, 4))(ts.key)
    key, k_act, k_reset, k_upd = (keys[:, i] for i in range(4))
    obs = ts.env_state.obs
    # `warmup` is one flag for all seeds (not batched), so both conds stay real
    # branches under vmap: no wasted updates during warm-up, one compiled program.
    action = jax.lax.cond(
        warmup,
        lambda: jax.vmap(lambda k: jax.random.uniform(k, (action_size,), minval=-1.0, maxval=1.0))(k_act),
        lambda: seed_map(partial(mod.explore, acfg))(ts.agent.actor_params, obs, k_act))
    env_state, ep, reward, next_obs, terminated, _ = env_step_with_reset(
        env, cfg.horizon, ts.env_state, ts.episode_step, action, k_reset)
    t = replay.Transition(obs, action, reward, next_obs, 1.0 - terminated.astype(jnp.float32))
    rb = seed_map(replay.add)(rb, t)
    return TrainState(ts.agent, env_state, ep, key, ts.env_steps + 1), rb, k_upd


def offpolicy_update(cfg: TrainConfig, agent, rb: replay.Replay, k_upd, flags: dict):
    """The update half: one `train_update` per seed [S] on a minibatch of its buffer;
    `flags` (mod.update_flags) are shared by all seeds, so branches stay real conds."""
    mod = algo_module(cfg.algo)

    def seed_update(agent, data, size, key, flags):
        kb, ku = jax.random.split(key)
        batch = replay.sample(data, size, kb, cfg.agent.batch_size)
        return mod.train_update(cfg.agent, agent, batch, ku, **flags)

    return seed_map(seed_update, in_axes=(0, 0, 0, 0, None))(agent, rb.data, rb.size, k_upd, flags)


def _offpolicy_chunk_fn(cfg: TrainConfig, n_steps: int):
    env = make_env(cfg.env, cfg.backend)
    mod = algo_module(cfg.algo)

    def body(carry, _, warmup):
        ts, rb = carry  # leading [S]
        ts, rb, k_upd = offpolicy_collect(cfg, env, ts, rb, warmup)
        flags = mod.update_flags(cfg.agent, ts.agent)  # seed-independent, so outside vmap
        agent = jax.lax.cond(warmup, lambda: ts.agent, lambda: offpolicy_update(cfg, ts.agent, rb, k_upd, flags))
        return (ts._replace(agent=agent), rb), None

    def chunk(ts, rb, warmup):
        (ts, rb), _ = jax.lax.scan(partial(body, warmup=warmup), (ts, rb), None, length=n_steps)
        return ts, rb

    return jax.jit(chunk, donate_argnums=(0, 1))


def _ppo_chunk_fn(cfg: TrainConfig, n_iters: int):
    env = make_env(cfg.env, cfg.backend)
    mod = algo_module("ppo")

    def chunk(ts, rb, warmup):
        def body(ts, _):
            return jax.vmap(partial(mod.train_iteration, cfg.agent, env, cfg.horizon))(ts), None
        ts, _ = jax.lax.scan(body, ts, None, length=n_iters)
        return ts, rb

    return jax.jit(chunk, donate_argnums=(0,))


def _program_key(cfg: TrainConfig) -> TrainConfig:
    """The part of a config the compiled programs depend on (not seeds, steps, schedule)."""
    return TrainConfig(env=cfg.env, backend=cfg.backend, horizon=cfg.horizon, agent=cfg.agent,
                       seeds=1, total_steps=cfg.granularity * 2, checkpoints=(cfg.granularity,),
                       eval_every=cfg.granularity) if cfg.algo == "ppo" else \
        TrainConfig(env=cfg.env, backend=cfg.backend, horizon=cfg.horizon,
                    agent=cfg.agent.model_copy(update=dict(learning_starts=0)),
                    seeds=1, total_steps=cfg.agent.buffer_size, checkpoints=(1,), eval_every=1)


@functools.lru_cache(maxsize=32)
def _chunk_fn(key_cfg: TrainConfig, n_steps: int):
    if key_cfg.algo == "ppo":
        return _ppo_chunk_fn(key_cfg, n_steps // key_cfg.granularity)
    return _offpolicy_chunk_fn(key_cfg, n_steps)


def make_chunk_fn(cfg: TrainConfig, step: int, n_steps: int):
    """The compiled function (ts, rb) -> (ts, rb) advancing all seeds (leading axis of
    ts and rb) from env step `step` by n_steps. Cached: jobs that differ only in seeds
    or schedule share one compiled program."""
    warmup = jnp.asarray(cfg.algo in OFF_POLICY and step < cfg.agent.learning_starts)
    return partial(_chunk_fn(_program_key(cfg), n_steps), warmup=warmup)


def make_evaluator(cfg: TrainConfig):
    """actor params [S, ...] -> Rollout with [S] fields: deterministic episode of each
    seed's policy from the reference state (reset noise 0)."""
    return _evaluator(_program_key(cfg))


@functools.lru_cache(maxsize=32)
def _evaluator(cfg: TrainConfig):
    env = reference_env(cfg.env, cfg.backend)
    s0 = reference_state(cfg.env, cfg.backend)
    agent = get_agent(cfg.algo, cfg.agent)
    f = jax.jit(jax.vmap(lambda p, s: rollout(env, agent.policy, p, s, cfg.horizon), in_axes=(0, None)))
    return lambda actor_params: f(actor_params, s0)


# ---- the job --------------------------------------------------------------------------

def boundaries(cfg: TrainConfig, start: int = 0) -> tuple[list[int], set[int], int]:
    """(stop steps after `start`, eval steps, chunk length in env steps)."""
    total = cfg.steps
    evals = set(range(cfg.eval_interval, total + 1, cfg.eval_interval)) | set(cfg.checkpoint_steps) | {total}
    stops = set(evals)
    if cfg.algo in OFF_POLICY:
        stops.add(cfg.agent.learning_starts)
    stops.discard(0)
    chunk = math.gcd(*sorted(stops), cfg.granularity)
    return sorted(s for s in stops if s > start), evals, chunk


def new_job_id(cfg: TrainConfig) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{cfg.algo}-{cfg.env}-{stamp}-{secrets.token_hex(2)}"


def run_ids(job_id: str, cfg: TrainConfig) -> list[str]:
    return [f"{job_id}-s{cfg.seed + i}" for i in range(cfg.seeds)]


@dataclass
class TrainResult:
    job_id: str
    run_ids: list[str]
    steps: int
    # learning curve: step -> [S] deterministic returns
    curve: dict[int, np.ndarray] = field(default_factory=dict)
    checkpoints: list[int] = field(default_factory=list)
    env_steps_per_s: float = 0.0
    state: TrainState | None = None  # final training state, leading [seeds] axis
    replay: replay.Replay | None = None
    resumed_from: int | None = None  # with resume: the checkpoint step (0: restarted, it had none)


def _now():
    return datetime.now(timezone.utc)


class _Progress:
    """A rich progress bar with env-steps/s (all seeds) and ETA; silent when disabled."""

    def __init__(self, enabled: bool, total: int, start: int, seeds: int, label: str):
        self.enabled, self.seeds, self.start_step = enabled, seeds, start
        self.t0 = time.perf_counter()
        if not enabled:
            return
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        self.bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[rate]} env-steps/s"), TextColumn("{task.fields[ret]}"),
                            TimeElapsedColumn(), TimeRemainingColumn())
        self.bar.start()
        self.task = self.bar.add_task(label, total=total, completed=start, rate="-", ret="")

    def update(self, step: int, ret: float | None = None):
        if not self.enabled:
            return
        rate = (step - self.start_step) * self.seeds / max(time.perf_counter() - self.t0, 1e-9)
        fields = {"rate": f"{rate:,.0f}"}
        if ret is not None:
            fields["ret"] = f"eval {ret:,.1f}"
        self.bar.update(self.task, completed=step, **fields)

    def close(self):
        if self.enabled:
            self.bar.stop()


def _run_rows(cfg: TrainConfig, job_id: str, ids: list[str]) -> list[dict]:
    from retland.repro import reproducibility_record

    base = cfg.model_dump(mode="json")
    rows = []
    for i, rid in enumerate(ids):
        config = dict(base, job_id=job_id, seed_index=i)
        rows.append(dict(run_id=rid, algo=cfg.algo, env=cfg.env, seed=cfg.seed + i, backend=cfg.backend,
                         source="trained", parent_run_id=None, parent_step=None,
                         config=__import__("json").dumps(config), repro=reproducibility_record(config),
                         created_at=_now()))
    return rows


def train(cfg: TrainConfig, warehouse=None, *, progress: bool = True, resume: str | None = None,
          stop_at: int | None = None) -> TrainResult:
    """Train `cfg.seeds` seeds; write runs, evaluations, checkpoints to the warehouse.

    resume: a job id (the run ids without "-s<seed>") to continue from its last
    checkpoint common to all seeds; `cfg` must then be the job's config (see
    `resume_config`). A job killed before its first checkpoint was published restarts
    from step 0 under the same run ids. stop_at: stop after this env step (for tests
    and time-boxed runs; the run can be resumed later)."""
    from retland.warehouse import Warehouse

    jaxcache.enable()  # compiles of the chunk take tens of seconds
    wh = warehouse if isinstance(warehouse, Warehouse) else Warehouse.open(warehouse)
    if resume is None:
        job_id = new_job_id(cfg)
        ids = run_ids(job_id, cfg)
        wh.append("runs", _run_rows(cfg, job_id, ids))
        ts, rb = init_states(cfg)
        step = 0
    else:
        job_id, ids = resume, run_ids(resume, cfg)
        ts, rb, step = _resume_state(wh, cfg, ids)

    stops, evals, chunk = boundaries(cfg, step)
    if stop_at is not None:
        stops = [s for s in stops if s <= stop_at]
    evaluate = make_evaluator(cfg)
    agent = get_agent(cfg.algo, cfg.agent)
    result = TrainResult(job_id, ids, step, resumed_from=None if resume is None else step)
    t_start = time.perf_counter()

    def do_eval(step):
        r = evaluate(agent.actor_params(ts))
        rets, lens = np.asarray(r.ret, np.float64), np.asarray(r.episode_length)
        result.curve[step] = rets
        wall = time.perf_counter() - t_start
        wh.append("evaluations", [dict(run_id=rid, step=step, eval_return=float(rets[i]),
                                       episode_length=int(lens[i]), wall_seconds=wall)
                                  for i, rid in enumerate(ids)])
        return rets

    if step == 0:
        do_eval(0)
    bar = _Progress(progress, cfg.steps, step, cfg.seeds, f"{cfg.algo} {cfg.env} x{cfg.seeds}")
    t_loop = time.perf_counter()
    try:
        for stop in stops:
            while step < stop:
                ts, rb = make_chunk_fn(cfg, step, chunk)(ts, rb)
                step += chunk
                bar.update(step)
            jax.block_until_ready(ts)
            rets = do_eval(step) if step in evals else None
            if rets is not None:
                bar.update(step, float(np.mean(rets)))
            if step in cfg.checkpoint_steps:
                _save_checkpoints(wh, ids, step, ts, rb, rets)
                result.checkpoints.append(step)
    finally:
        bar.close()
    result.env_steps_per_s = (step - result.steps) * cfg.seeds / max(time.perf_counter() - t_loop, 1e-9)
    result.steps = step
    result.state, result.replay = ts, rb
    return result


def _save_checkpoints(wh, ids, step, ts, rb, rets):
    from retland import checkpoints as ck

    host_ts = jax.device_get(ts)
    host_rb = jax.device_get(rb) if rb is not None else None
    rows = []
    for i, rid in enumerate(ids):
        size = None
        if host_rb is not None:
            size = int(host_rb.size[i])
            ck.save_replay(wh, rid, jax.tree.map(lambda x: x[i], host_rb.data), size)
        path = ck.save_state(wh, rid, step, jax.tree.map(lambda x: x[i], host_ts))
        rows.append(dict(run_id=rid, step=step, artifact_path=path,
                         eval_return=None if rets is None else float(rets[i]),
                         replay_size=size, created_at=_now()))
    wh.append("checkpoints", rows)


def resume_config(warehouse, job_id: str) -> TrainConfig:
    """The config a job was started with (from its runs rows)."""
    from retland import checkpoints as ck
    from retland.warehouse import Warehouse

    wh = warehouse if isinstance(warehouse, Warehouse) else Warehouse.open(warehouse, create=False)
    df = wh.query("SELECT run_id FROM runs WHERE starts_with(run_id, ?) ORDER BY seed", [job_id + "-s"])
    if df.height == 0:
        raise ValueError(f"no training job {job_id!r} in the warehouse at {wh.root}")
    return ck.run_config(ck.run_record(wh, df["run_id"][0]))


def _resume_state(wh, cfg: TrainConfig, ids: list[str]):
    """(ts, rb, step) to resume the job's runs `ids` from. Interrupted saves are cleared
    first. A job with no checkpoint at all (killed during or before its first save)
    restarts from the initial state at step 0: its unpublished artifacts are removed, so
    every file is written afresh by this process."""
    from retland import checkpoints as ck

    if not any(ck.list_checkpoints(wh, rid) for rid in ids):
        for rid in ids:
            ck.discard_orphan_artifacts(wh, rid)
        ts, rb = init_states(cfg)
        return ts, rb, 0
    for rid in ids:
        ck.clear_temp_folders(wh, rid)
    return _load_job(wh, cfg, ids)


def _load_job(wh, cfg: TrainConfig, ids: list[str]):
    from retland import checkpoints as ck

    common = None
    for rid in ids:
        steps = set(ck.list_checkpoints(wh, rid))
        common = steps if common is None else common & steps
    if not common:
        raise ValueError(f"job {ids[0].rsplit('-s', 1)[0]!r} has no checkpoint common to all "
                         f"{len(ids)} seeds to resume from")
    step = max(common)
    cks = [ck.load_checkpoint(wh, rid, step) for rid in ids]
    if any(c.env != cfg.env or c.algo != cfg.algo for c in cks):
        raise ValueError("resume: the checkpoints do not match the job's env/algo")
    stack = lambda *xs: jnp.stack([jnp.asarray(x) for x in xs])  # noqa: E731
    ts = jax.tree.map(stack, *[c.state for c in cks])
    rb = None
    if cfg.algo in OFF_POLICY:
        rb = replay.Replay(jax.tree.map(stack, *[c.replay for c in cks]),
                           jnp.asarray([c.replay_size for c in cks], jnp.int32))
    return ts, rb, step
