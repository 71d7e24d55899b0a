"""The pure training program: N seeds of one algorithm vmapped in one jitted chunk.

The loop is PureJaxRL-shaped: one compiled *chunk* function advances every seed by a
fixed number of env steps (a `lax.scan`, vmapped over seeds); the job (`train.job`)
only loops over chunks in Python, stopping at evaluation and checkpoint steps.

Off-policy (TD3/SAC): one env per seed with the standard reset noise, `learning_starts`
uniform random steps (no updates), then one env step + one update per step. Episodes
end at termination or at `horizon` steps (truncation: the transition's mask stays 1).
PPO: `num_envs` envs per seed with auto-reset, one PPO iteration per 16 x 2048 steps.
Evaluation is the deterministic return from the reference state (`core.rollout`).
"""
from __future__ import annotations

import functools
import os
from functools import partial

import jax
import jax.numpy as jnp

from retland.agents import agent_module, get_agent
from retland.agents.base import TrainState
from retland.core import replay
from retland.core.envs import env_dims, make_env, reference_env, reference_state
from retland.core.rollout import rollout
from retland.core.vec import env_step_with_reset, seed_map
from retland.train.config import TrainConfig

from retland.config.registry import OFF_POLICY, OFFLINE



# ---- state ----------------------------------------------------------------------------

def replay_capacity(cfg: TrainConfig) -> int:
    """Rows of a seed's buffer: TD3/SAC's whole run; BC's dataset (the teacher's logged rows)."""
    if cfg.algo in OFFLINE:
        return cfg.agent.dataset_size
    return min(cfg.agent.buffer_size, cfg.steps) if cfg.algo in OFF_POLICY else 0


def init_seed(cfg: TrainConfig, key) -> tuple[TrainState, replay.Replay | None]:
    """One seed's initial training state (and empty replay buffer for TD3/SAC)."""
    env = make_env(cfg.env, cfg.backend, variant=cfg.variant)
    obs_size, action_size = env_dims(cfg.env, cfg.backend, variant=cfg.variant)
    mod = agent_module(cfg.algo)
    k_agent, k_env, k_loop = jax.random.split(key, 3)
    agent = mod.init(cfg.agent, k_agent, obs_size, action_size)
    if cfg.algo in OFFLINE:  # no env: the dataset (filled by the job from the teacher) is the replay
        ts = TrainState(agent, None, jnp.zeros((), jnp.int32), k_loop, jnp.zeros((), jnp.int32))
        return ts, replay.empty(replay_capacity(cfg), obs_size, action_size)
    if cfg.algo in OFF_POLICY:
        env_state = env.reset(k_env)
        ts = TrainState(agent, env_state, jnp.zeros((), jnp.int32), k_loop, jnp.zeros((), jnp.int32))
        state_like = env_state.pipeline_state if cfg.store_states else None
        return ts, replay.empty(replay_capacity(cfg), obs_size, action_size, state_like)
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

def offpolicy_collect(cfg: TrainConfig, env, ts: TrainState, rb: replay.Replay, warmup, branch: bool = True):
    """The env half of one off-policy training step for seeds [S]: split each seed's
    key, act (uniform during warm-up, else `explore`), step the env (resets included)
    and append the transition. Returns (ts with the new env state, episode step, key
    and env-step counter — the agent untouched —, rb, update keys [S]). `warmup` a
    Python bool fixes the action's branch when the program is built; `branch`: how
    resets are computed (`retland.core.vec.env_step_with_reset`)."""
    mod = agent_module(cfg.algo)
    acfg = cfg.agent
    _, action_size = env_dims(cfg.env, cfg.backend, variant=cfg.variant)
    keys = jax.vmap(lambda k: jax.random.split(k, 4))(ts.key)
    key, k_act, k_reset, k_upd = (keys[:, i] for i in range(4))
    obs = ts.env_state.obs
    # `warmup` is one flag for all seeds (not batched), so both conds stay real
    # branches under vmap: no wasted updates during warm-up, one compiled program.
    uniform = lambda: jax.vmap(lambda k: jax.random.uniform(k, (action_size,), minval=-1.0, maxval=1.0))(k_act)  # noqa: E731
    explore = lambda: seed_map(partial(mod.explore, acfg))(ts.agent.actor_params, obs, k_act)  # noqa: E731
    if isinstance(warmup, bool):  # fixed when the program is built (`_offpolicy_fixed_chunk_fn`)
        action = uniform() if warmup else explore()
    else:
        action = jax.lax.cond(warmup, uniform, explore)
    env_state, ep, reward, next_obs, terminated, _ = env_step_with_reset(
        env, cfg.horizon, ts.env_state, ts.episode_step, action, k_reset, branch)
    t = replay.Transition(obs, action, reward, next_obs, 1.0 - terminated.astype(jnp.float32))
    if rb.states is None:
        rb = seed_map(replay.add)(rb, t)
    else:  # the state `obs` was observed in (store_states): what a rollout restores to start there
        rb = seed_map(replay.add)(rb, t, ts.env_state.pipeline_state)
    return TrainState(ts.agent, env_state, ep, key, ts.env_steps + 1), rb, k_upd


def offpolicy_update(cfg: TrainConfig, agent, rb: replay.Replay, k_upd, flags: dict):
    """The update half: one `train_update` per seed [S] on a minibatch of its buffer;
    `flags` (mod.update_flags) are shared by all seeds, so branches stay real conds."""
    mod = agent_module(cfg.algo)

    def seed_update(agent, data, size, key, flags):
        kb, ku = jax.random.split(key)
        batch = replay.sample(data, size, kb, cfg.agent.batch_size)
        return mod.train_update(cfg.agent, agent, batch, ku, **flags)

    return seed_map(seed_update, in_axes=(0, 0, 0, 0, None))(agent, rb.data, rb.size, k_upd, flags)


def _offpolicy_chunk_fn(cfg: TrainConfig, n_steps: int):
    env = make_env(cfg.env, cfg.backend, variant=cfg.variant)
    mod = agent_module(cfg.algo)

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


def _offpolicy_fixed_chunk_fn(cfg: TrainConfig, n_steps: int, warmup: bool, phase: int):
    """The same n_steps of training as `_offpolicy_chunk_fn`, with every branch decided
    when the program is built: `warmup` (a chunk never straddles learning_starts) and the
    update flags, which repeat every `mod.update_period` updates (TD3: the actor/target
    step every policy_delay-th update). The scan body lays out one period of env steps
    and updates with their flags fixed; `phase` = updates done at the chunk's start,
    modulo the period. Resets are computed every step and selected (`branch=False`).
    On a GPU every `lax.cond` copies its predicate to the host and waits for it,
    stalling the stream once per branch per step (4 per step in the branching program);
    this one has none, so its whole scan body can also be one CUDA graph. Same keys,
    same arithmetic: per step it computes what the branching program computes (within
    float rounding: XLA fuses it differently)."""
    env = make_env(cfg.env, cfg.backend, variant=cfg.variant)
    mod = agent_module(cfg.algo)
    period = 1 if warmup else mod.update_period(cfg.agent)

    def one(carry, j: int):
        ts, rb = carry
        ts, rb, k_upd = offpolicy_collect(cfg, env, ts, rb, warmup, branch=False)
        if not warmup:
            flags = mod.static_update_flags(cfg.agent, phase + j)
            ts = ts._replace(agent=offpolicy_update(cfg, ts.agent, rb, k_upd, flags))
        return ts, rb

    def group(carry, _):
        for j in range(period):
            carry = one(carry, j)
        return carry, None

    def chunk(ts, rb, warmup):  # `warmup` unused (fixed above): the signature of every chunk function
        carry, _ = jax.lax.scan(group, (ts, rb), None, length=n_steps // period)
        for j in range(n_steps % period):  # updates done here = phase (mod period)
            carry = one(carry, j)
        return carry

    return jax.jit(chunk, donate_argnums=(0, 1))


def _offline_chunk_fn(cfg: TrainConfig, n_steps: int):
    """BC: n_steps gradient steps per seed, each on a minibatch drawn uniformly with
    replacement from the seed's dataset with a key split from the seed's stream.
    `env_steps` counts gradient steps."""
    mod = agent_module(cfg.algo)

    def seed_step(ts: TrainState, data, size):
        key, kb = jax.random.split(ts.key)
        batch = replay.sample(data, size, kb, cfg.agent.batch_size)
        agent = mod.train_update(cfg.agent, ts.agent, batch)
        return ts._replace(agent=agent, key=key, env_steps=ts.env_steps + 1)

    def chunk(ts, rb, warmup):
        def body(ts, _):
            return seed_map(seed_step, in_axes=(0, 0, 0))(ts, rb.data, rb.size), None
        ts, _ = jax.lax.scan(body, ts, None, length=n_steps)
        return ts, rb

    return jax.jit(chunk, donate_argnums=(0,))


def _ppo_chunk_fn(cfg: TrainConfig, n_iters: int):
    """n_iters PPO iterations of every seed. Branch-free on every platform already: the
    reset `lax.cond` of `env_step_with_reset` is vmapped over seeds with a batched
    predicate, which JAX turns into a select."""
    env = make_env(cfg.env, cfg.backend, variant=cfg.variant)
    mod = agent_module("ppo")

    def chunk(ts, rb, warmup):
        def body(ts, _):
            return jax.vmap(partial(mod.train_iteration, cfg.agent, env, cfg.horizon))(ts), None
        ts, _ = jax.lax.scan(body, ts, None, length=n_iters)
        return ts, rb

    return jax.jit(chunk, donate_argnums=(0,))


def _program_key(cfg: TrainConfig) -> TrainConfig:
    """The part of a config the compiled programs depend on (not seeds, steps, schedule).
    Validated as stored: a run's own task is never refused here (older paper runs)."""
    task = dict(env=cfg.env, backend=cfg.backend, variant=cfg.variant, horizon=cfg.horizon,
                store_states=cfg.store_states)
    if cfg.algo in OFFLINE:  # the teacher's name does not shape the program, its dataset size does
        agent = cfg.agent.model_copy(update=dict(teacher_run_id=None, teacher_step=None))
        fields = dict(agent=agent, seeds=1, total_steps=1, checkpoints=(1,), eval_every=1)
    elif cfg.algo == "ppo":
        fields = dict(agent=cfg.agent, seeds=1, total_steps=cfg.granularity * 2, checkpoints=(cfg.granularity,),
                      eval_every=cfg.granularity)
    else:
        fields = dict(agent=cfg.agent.model_copy(update=dict(learning_starts=0)), seeds=1,
                      total_steps=cfg.agent.buffer_size, checkpoints=(1,), eval_every=1)
    return TrainConfig.model_validate({**task, **fields}, context={"stored": True})


@functools.lru_cache(maxsize=32)
def _chunk_fn(key_cfg: TrainConfig, n_steps: int):
    if key_cfg.algo == "ppo":
        return _ppo_chunk_fn(key_cfg, n_steps // key_cfg.granularity)
    if key_cfg.algo in OFFLINE:
        return _offline_chunk_fn(key_cfg, n_steps)
    return _offpolicy_chunk_fn(key_cfg, n_steps)


@functools.lru_cache(maxsize=32)
def _fixed_chunk_fn(key_cfg: TrainConfig, n_steps: int, warmup: bool, phase: int):
    return _offpolicy_fixed_chunk_fn(key_cfg, n_steps, warmup, phase)


def fixed_branches(platform: str | None = None) -> bool:
    """Whether TD3/SAC training runs the branch-free chunk (`_offpolicy_fixed_chunk_fn`)
    rather than the one whose warm-up and actor-step branches are `lax.cond`s: on an
    accelerator, where each cond is a host round trip per step. On a CPU a cond costs
    nothing and the branching program is kept, so CPU runs stay bit for bit what they
    were. RETLAND_FIXED_BRANCHES=1/0 forces either (benchmarks, tests)."""
    forced = os.environ.get("RETLAND_FIXED_BRANCHES")
    if forced in ("0", "1"):
        return forced == "1"
    return (platform or jax.default_backend()) != "cpu"


def make_chunk_fn(cfg: TrainConfig, step: int, n_steps: int):
    """The compiled function (ts, rb) -> (ts, rb) advancing all seeds (leading axis of
    ts and rb) from env step `step` by n_steps. Cached: jobs that differ only in seeds
    or schedule share one compiled program (on an accelerator, one per phase of the
    update schedule at the chunk's start: see `fixed_branches`)."""
    warmup = cfg.algo in OFF_POLICY and step < cfg.agent.learning_starts
    if cfg.algo in OFF_POLICY and fixed_branches():
        # one update per env step after the warm-up: updates done = step - learning_starts
        period = agent_module(cfg.algo).update_period(cfg.agent)
        phase = 0 if warmup else (step - cfg.agent.learning_starts) % period
        fn = _fixed_chunk_fn(_program_key(cfg), n_steps, warmup, phase)
    else:
        fn = _chunk_fn(_program_key(cfg), n_steps)
    return partial(fn, warmup=jnp.asarray(warmup))


def make_evaluator(cfg: TrainConfig):
    """actor params [S, ...] -> Rollout with [S] fields: deterministic episode of each
    seed's policy from the reference state (reset noise 0)."""
    key = _program_key(cfg)
    if cfg.algo in OFFLINE:  # the rollout does not depend on the dataset's size
        key = key.model_copy(update={"agent": key.agent.model_copy(update={"dataset_size": 1})})
    return _evaluator(key)


@functools.lru_cache(maxsize=32)
def _evaluator(cfg: TrainConfig):
    env = reference_env(cfg.env, cfg.backend, variant=cfg.variant)
    s0 = reference_state(cfg.env, cfg.backend, variant=cfg.variant)
    agent = get_agent(cfg.algo, cfg.agent)
    f = jax.jit(jax.vmap(lambda p, s: rollout(env, agent.policy, p, s, cfg.horizon), in_axes=(0, None)))
    return lambda actor_params: f(actor_params, s0)
