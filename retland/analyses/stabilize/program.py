"""Algorithm 1's compiled phases over vmapped lanes: propose, estimate (the PURD
through the chunk engine's `sample_rollout`), commit."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from retland.agents import get_agent, td3
from retland.agents.base import TrainState
from retland.analyses.stabilize.config import StabilizeConfig
from retland.core import replay
from retland.core.envs import make_env, reference_state, standard_reset_noise
from retland.core.vec import select
from retland.purd.engine import AgentPolicy, SampleProgram, sample_rollout
from retland.train.config import TrainConfig
from retland.train.program import offpolicy_collect, offpolicy_update

# ---- lanes --------------------------------------------------------------------------------

class Lane(NamedTuple):
    """One lane's training state and replay buffer; leading [L] axis when batched."""
    train: TrainState
    replay: replay.Replay


def collection_env(cfg: TrainConfig, fraction: float):
    return make_env(cfg.env, cfg.backend, fraction * standard_reset_noise(cfg.env), variant=cfg.variant)


def seed_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(training stream, PURD base key, collection reset key) of rejection seed `seed`."""
    k = jax.random.PRNGKey(seed)
    return jax.random.fold_in(k, 0), jax.random.fold_in(k, 1), jax.random.fold_in(k, 2)


def program_config(cfg: TrainConfig) -> TrainConfig:
    """`cfg` without the fields that name a run rather than its programs (seed, seeds,
    lengths, checkpoint and eval steps): sources of one training job, or of jobs that
    differ only in those, then share one compiled propose and PURD program."""
    return cfg.model_copy(update=dict(seed=0, seeds=1, total_steps=None, checkpoints=None, eval_every=None))


def initial_lanes(ckpt, scfg: StabilizeConfig, capacity: int | None = None) -> tuple[Lane, jax.Array]:
    """(lanes [L], PURD base keys [L, 2]) from a loaded TD3 checkpoint. Each lane's
    buffer holds the checkpoint's rows [0, size) and zeros up to `capacity` rows
    (default size + P, the least the P proposals need). Rows are drawn from [0, size)
    only, so the padding changes no number; a common capacity gives checkpoints of
    different sizes one buffer shape, hence one compiled program."""
    size0 = int(ckpt.replay_size)
    capacity = size0 + scfg.proposals if capacity is None else int(capacity)
    if capacity < size0 + scfg.proposals:
        raise ValueError(f"capacity {capacity} < replay size {size0} + {scfg.proposals} proposals")
    data = jax.tree.map(lambda x: np.concatenate([np.asarray(x)[:size0],
                                                  np.zeros((capacity - size0, *x.shape[1:]), x.dtype)]),
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
        return Lane(ts._replace(agent=select(do_actor, with_actor, critic_only)), rb)

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
    program = SampleProgram(cfg.env, cfg.backend, cfg.horizon, AgentPolicy(agent), OwnOrUpdate(agent),
                            variant=cfg.variant)
    s0 = reference_state(cfg.env, cfg.backend, variant=cfg.variant)

    def lane_purd(ts: TrainState, rb: replay.Replay, base_key, start):
        a = ts.agent
        op = (a.actor_params, td3.OperatorState(a.actor_params, a.actor_opt_state, a.critic_params, rb.data, rb.size))

        def one(i):
            return sample_rollout(program, op, start, base_key, i).ret

        ret = jax.lax.map(one, jnp.arange(-1, n_samples, dtype=jnp.int32), batch_size=min(chunk, n_samples + 1))
        own, ret = ret[0], ret[1:]
        return ret, own

    f = jax.jit(jax.vmap(lane_purd, in_axes=(0, 0, 0, None)))

    def estimate(lanes, base_keys):
        return f(lanes.train, lanes.replay, base_keys, s0)

    # the compiled program without running it (`retland.core.sizing.footprint`)
    estimate.lower = lambda lanes, base_keys: f.lower(lanes.train, lanes.replay, base_keys, s0)
    return estimate


@jax.jit
def commit(accept: jax.Array, proposed: Lane, old: Lane) -> Lane:
    """accept [L] bool: keep the proposal, or restore every array of the old lane —
    except the training key, which moves on either way."""
    lanes = select(accept, proposed, old)
    return lanes._replace(train=lanes.train._replace(key=proposed.train.key))
