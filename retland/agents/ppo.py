"""PPO (Schulman et al. 2017) at Brax scale, docs/method.md §4 Training and §5 Update operators.

64-64 tanh actor (state-independent log-std) and critic, 2048 envs x 16 steps per
iteration, GAE(0.99, 0.95), 4 epochs x 2 minibatches, clip 0.2, value coefficient 1,
entropy 0, global grad-norm clip 1, Adam(0.0026, eps 1e-5) over actor and critic
together, per-minibatch advantage normalisation. Evaluation action: the mean.

Training (`train_iteration`) and the operator U (`update`) share `collect`,
`advantages` and `grad_step`. The operator's parameters (grad-norm clip, which rows it
steps on) select retland's operator or the authors' (`update`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from retland.core import networks
from retland.core.envs import DEFAULT_VARIANT, make_env
from retland.core.vec import env_step_with_reset
from retland.config.agents import PPOConfig

Params = Any


def actor_net(cfg: PPOConfig, action_size: int) -> networks.GaussianActor:
    return networks.GaussianActor(action_size, tuple(cfg.hidden), cfg.actor_head_scale)


def critic_net(cfg: PPOConfig) -> networks.ValueCritic:
    return networks.ValueCritic(tuple(cfg.hidden), cfg.critic_head_scale)


def optimizer(cfg: PPOConfig) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(cfg.max_grad_norm),
                       optax.adam(cfg.learning_rate, eps=cfg.adam_eps))


class PPOState(NamedTuple):
    params: Params  # {"actor": ..., "critic": ...}
    opt_state: Any
    update_count: jax.Array  # int32 []: gradient steps taken


def init(cfg: PPOConfig, key: jax.Array, obs_size: int, action_size: int) -> PPOState:
    ka, kc = jax.random.split(key)
    obs = jnp.zeros((1, obs_size))
    params = {"actor": networks.init_params(actor_net(cfg, action_size), ka, obs),
              "critic": networks.init_params(critic_net(cfg), kc, obs)}
    return PPOState(params, optimizer(cfg).init(params), jnp.zeros((), jnp.int32))


def distribution(cfg: PPOConfig, actor_params, obs):
    """(mean [..., A], log_std [A]) (network shape read from the parameters)."""
    hidden, action_size = networks.mlp_sizes(actor_params["MLP_0"])
    return networks.GaussianActor(action_size, hidden).apply({"params": actor_params}, obs)


def policy(cfg: PPOConfig, actor_params, obs):
    """Deterministic evaluation action: the mean, clipped to the action box (the env
    clips too; clipping here keeps actions in [-1, 1] for every consumer)."""
    return jnp.clip(distribution(cfg, actor_params, obs)[0], -1.0, 1.0)


def log_prob(mean, log_std, action):
    z = (action - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * jnp.square(z) - log_std - 0.5 * jnp.log(2.0 * jnp.pi), axis=-1)


def value(cfg: PPOConfig, critic_params, obs):
    return critic_net(cfg).apply({"params": critic_params}, obs)


class Trajectory(NamedTuple):
    """One rollout; every field [T, N] (obs [T, N, O], action [T, N, A])."""
    obs: jax.Array
    action: jax.Array  # the Gaussian sample (unclipped); the env receives clip(action)
    log_prob: jax.Array
    value: jax.Array
    reward: jax.Array  # with γ·V(s_T) added at time-limit truncation (bootstrap)
    done: jax.Array  # episode ended after this step (termination or truncation)


def collect(cfg: PPOConfig, env, horizon: int, params, env_state, episode_step, key):
    """unroll_length steps of every env with the stochastic policy, auto-reset with
    the standard reset noise. Returns (Trajectory, env_state, episode_step, V(last obs) [N])."""
    n = episode_step.shape[0]

    def step(carry, key):
        env_state, ep = carry
        k_act, k_reset = jax.random.split(key)
        obs = env_state.obs
        mean, log_std = distribution(cfg, params["actor"], obs)
        action = mean + jnp.exp(log_std) * jax.random.normal(k_act, mean.shape)
        v = value(cfg, params["critic"], obs)
        env_state, ep, reward, next_obs, terminated, truncated = env_step_with_reset(
            env, horizon, env_state, ep, jnp.clip(action, -1.0, 1.0), jax.random.split(k_reset, n))
        reward = reward + cfg.gamma * truncated * value(cfg, params["critic"], next_obs)
        done = (terminated | truncated).astype(jnp.float32)
        return (env_state, ep), Trajectory(obs, action, log_prob(mean, log_std, action), v, reward, done)

    (env_state, episode_step), traj = jax.lax.scan(step, (env_state, episode_step),
                                                   jax.random.split(key, cfg.unroll_length))
    return traj, env_state, episode_step, value(cfg, params["critic"], env_state.obs)


def advantages(cfg: PPOConfig, traj: Trajectory, last_value):
    """GAE(γ, λ): (advantages [T, N], returns [T, N])."""
    def back(carry, x):
        gae, next_v = carry
        r, d, v = x
        delta = r + cfg.gamma * next_v * (1.0 - d) - v
        gae = delta + cfg.gamma * cfg.gae_lambda * (1.0 - d) * gae
        return (gae, v), gae

    _, adv = jax.lax.scan(back, (jnp.zeros_like(last_value), last_value),
                          (traj.reward, traj.done, traj.value), reverse=True)
    return adv, adv + traj.value


class Batch(NamedTuple):
    """Flattened samples [B, ...]."""
    obs: jax.Array
    action: jax.Array
    log_prob: jax.Array
    advantage: jax.Array
    ret: jax.Array


def loss(cfg: PPOConfig, params, mb: Batch):
    """Clipped surrogate + value_coef·MSE(V, return) - entropy_coef·entropy, with the
    minibatch's advantages normalised."""
    mean, log_std = distribution(cfg, params["actor"], mb.obs)
    ratio = jnp.exp(log_prob(mean, log_std, mb.action) - mb.log_prob)
    adv = (mb.advantage - mb.advantage.mean()) / (mb.advantage.std() + 1e-8)
    pg = -jnp.mean(jnp.minimum(ratio * adv, jnp.clip(ratio, 1.0 - cfg.clip_eps, 1.0 + cfg.clip_eps) * adv))
    v_loss = jnp.mean(jnp.square(value(cfg, params["critic"], mb.obs) - mb.ret))
    entropy = jnp.sum(log_std + 0.5 * jnp.log(2.0 * jnp.pi * jnp.e))
    return pg + cfg.value_coef * v_loss - cfg.entropy_coef * entropy


def grad_step(cfg: PPOConfig, params, opt_state, mb: Batch):
    grads = jax.grad(loss, argnums=1)(cfg, params, mb)
    updates, opt_state = optimizer(cfg).update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


def _batch(cfg: PPOConfig, params, env, horizon, env_state, episode_step, key):
    traj, env_state, episode_step, last_v = collect(cfg, env, horizon, params, env_state, episode_step, key)
    adv, ret = advantages(cfg, traj, last_v)
    flat = lambda x: x.reshape((-1,) + x.shape[2:])  # noqa: E731
    return Batch(flat(traj.obs), flat(traj.action), flat(traj.log_prob), flat(adv), flat(ret)), env_state, episode_step


def _minibatches(cfg: PPOConfig, batch: Batch, key) -> Batch:
    """[num_minibatches, B / num_minibatches, ...] after a random permutation."""
    perm = jax.random.permutation(key, batch.obs.shape[0])
    return jax.tree.map(lambda x: x[perm].reshape((cfg.num_minibatches, -1) + x.shape[1:]), batch)


def train_iteration(cfg: PPOConfig, env, horizon: int, ts):
    """One PPO iteration of one seed: rollout, GAE, epochs x minibatches of steps.
    ts: retland.agents.base.TrainState with [num_envs] env states."""
    key, k_collect, k_epochs = jax.random.split(ts.key, 3)
    s: PPOState = ts.agent
    batch, env_state, episode_step = _batch(cfg, s.params, env, horizon, ts.env_state, ts.episode_step, k_collect)

    def epoch(carry, key):
        def mb_step(carry, mb):
            return grad_step(cfg, *carry, mb), None
        carry, _ = jax.lax.scan(mb_step, carry, _minibatches(cfg, batch, key))
        return carry, None

    (params, opt_state), _ = jax.lax.scan(epoch, (s.params, s.opt_state), jax.random.split(k_epochs, cfg.update_epochs))
    agent = PPOState(params, opt_state, s.update_count + cfg.update_epochs * cfg.num_minibatches)
    return ts._replace(agent=agent, env_state=env_state, episode_step=episode_step, key=key,
                       env_steps=ts.env_steps + cfg.steps_per_update)


def update_flags(cfg: PPOConfig, agent_batched) -> dict:
    return {}


# ---- the update operator --------------------------------------------------------------

class OperatorState(NamedTuple):
    params: Params
    opt_state: Any
    env_state: Any  # brax State [num_envs]: where the fresh rollout starts
    episode_step: jax.Array  # int32 [num_envs]


@dataclass(frozen=True)
class PPOAgent:
    config: PPOConfig = PPOConfig()
    algo: str = "ppo"
    env: str = "hopper"
    backend: str = "positional"
    horizon: int = 1000
    variant: str = DEFAULT_VARIANT  # task rules of the env the operator's rollout runs in

    def policy(self, actor_params, obs):
        return policy(self.config, actor_params, obs)

    def actor_params(self, train_state):
        return getattr(train_state, "agent", train_state).params["actor"]

    def operator_state(self, checkpoint) -> OperatorState:
        theirs = (checkpoint.env, checkpoint.backend, checkpoint.variant)
        if theirs != (self.env, self.backend, self.variant):
            raise ValueError(f"checkpoint {checkpoint.run_id} is for {'/'.join(theirs)}, but this PPO agent rolls "
                             f"out {self.env}/{self.backend}/{self.variant}: use get_agent('ppo', checkpoint.config)")
        ts = checkpoint.state
        return OperatorState(ts.agent.params, ts.agent.opt_state, ts.env_state, ts.episode_step)

    def update(self, op_state: OperatorState, key, *, clip: float | None = None, rows: str = "random") -> Params:
        """U(state, key); clip and rows are the operator's parameters (`update`)."""
        return update(self.config, op_state, key, self.env, self.backend, self.horizon, clip=clip, rows=rows,
                      variant=self.variant)


OPERATOR_ROWS = ("random", "first")


def check_operator_params(clip: float | None, rows: str) -> None:
    if clip is not None and not clip > 0:
        raise ValueError(f"PPO operator clip={clip!r}: a grad-norm clip must be > 0")
    if rows not in OPERATOR_ROWS:
        raise ValueError(f"PPO operator rows={rows!r}: choose one of {', '.join(OPERATOR_ROWS)}")


def operator_minibatch(cfg: PPOConfig, batch: Batch, key, rows: str = "random") -> Batch:
    """The B / num_minibatches rows the operator steps on. rows="random": the first
    minibatch of a random permutation (key), as in a training epoch; rows="first": the
    first rows of the time-major batch, i.e. the first unroll_length / num_minibatches
    steps of every env (the authors' operator; key unused)."""
    check_operator_params(None, rows)
    if rows == "random":
        return jax.tree.map(lambda x: x[0], _minibatches(cfg, batch, key))
    return jax.tree.map(lambda x: x[: x.shape[0] // cfg.num_minibatches], batch)


def operator_step(cfg: PPOConfig, params, opt_state, batch: Batch, key, *, clip: float | None = None,
                  rows: str = "random") -> Params:
    """The operator's one gradient step on a collected batch: Adam (restored state)
    after a global grad-norm clip at `clip` (None: as in training, cfg.max_grad_norm),
    on the `operator_minibatch` chosen by `rows` and `key`; returns the new actor params."""
    check_operator_params(clip, rows)
    mb = operator_minibatch(cfg, batch, key, rows)
    step_cfg = cfg if clip is None else cfg.model_copy(update={"max_grad_norm": float(clip)})
    params, _ = grad_step(step_cfg, params, opt_state, mb)
    return params["actor"]


def update(cfg: PPOConfig, op: OperatorState, key, env_name: str, backend: str, horizon: int,
           *, clip: float | None = None, rows: str = "random", variant: str = DEFAULT_VARIANT) -> Params:
    """U(state, ξ): one fresh unroll_length x num_envs rollout with the stochastic
    policy (key), GAE, then `operator_step`: one gradient step (actor and critic,
    restored Adam state) on the minibatch chosen by `rows`, with the global grad-norm
    clipped at `clip` (None: as in training); returns the new actor params. retland's
    default is clip=None, rows="random"; the authors' operator is clip=0.1,
    rows="first" (docs/method.md §5 Update operators)."""
    check_operator_params(clip, rows)  # before the rollout is traced
    env = make_env(env_name, backend, variant=variant)
    k_collect, k_mb = jax.random.split(key)
    batch, _, _ = _batch(cfg, op.params, env, horizon, op.env_state, op.episode_step, k_collect)
    return operator_step(cfg, op.params, op.opt_state, batch, k_mb, clip=clip, rows=rows)


def make_agent(config: PPOConfig, train_cfg=None) -> PPOAgent:
    """The agent of `config` (retland.agents.get_agent's constructor for this algorithm).
    PPO's update operator rolls out the run's env: given the run's TrainConfig, the agent
    rolls out that env, backend, horizon and variant."""
    if train_cfg is None:
        return PPOAgent(config)
    return PPOAgent(config, env=train_cfg.env, backend=train_cfg.backend, horizon=train_cfg.horizon,
                    variant=train_cfg.variant)
