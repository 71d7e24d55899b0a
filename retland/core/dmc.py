"""DeepMind Control Suite tasks, run on MuJoCo Playground's pure-JAX MJX implementation.

The paper's appendix A.5 also measured post-update return distributions on DeepMind
Control Suite tasks (Tassa et al. 2018). brax points its users to MuJoCo Playground
(`pip install playground`, imported as `mujoco_playground`) for those tasks: it ships
the suite's MJCF models in its wheel and implements each task as an `MjxEnv` whose
`reset(key)` / `step(state, action)` return a state with `.obs`, `.reward` and `.done`,
which is all `retland.core.rollout` and the training loop read. This module wraps the
locomotion tasks of the suite as retland envs (`DMCEnv`), always with
`impl="jax"` (MJX's JAX implementation, which runs on CPU, GPU and TPU; Playground's
default, MuJoCo Warp, needs an NVIDIA GPU).

Names read as DM Control's own `domain-task`: cheetah-run, hopper-hop, walker-walk, …
(the brax tasks keep their names: halfcheetah is brax, cheetah-run is DM Control).

What retland takes from each task, and what it adds:

- Rules: Playground's task code as it is (reward, observation, control step). Every
  reward is in [0, 1]; an episode is `episode_length` = 1000 control steps; there is no
  early termination, except that Playground flags a step whose physics produced NaN as
  done. retland zeroes that step's reward and observation (the episode ends there in any
  case), so a blow-up cannot turn a return or the replay buffer into NaN. Recorded in a
  run's config as variant "dmc" and backend "mjx".
- Reset noise. Playground draws the start pose of cheetah, hopper and walker uniformly
  over every joint's range (hopper and walker: also the torso's rotation over ±π; cheetah
  then settles for 200 steps with zero action) and starts humanoid deterministically at
  the model's default pose. retland's reset-noise scale s in [0, 1] shrinks that draw
  towards a reference pose q_ref: every randomised coordinate is drawn uniformly from
  [q_ref + s·(lo − q_ref), q_ref + s·(hi − q_ref)], where q_ref is the model's default
  pose clipped into the joint's range (hopper's knee: 0.087 rad, every other 0).
  s = 1 is Playground's own reset, bit for bit (the task's standard noise for cheetah,
  hopper and walker); s = 0 is the reference state s0, deterministic for every key.
  Humanoid's standard noise is 0 (Playground's reset), and s > 0 draws its hinge
  joints the same way (its free root joint is not perturbed).
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from retland.config.registry import (DMC_BACKEND, DMC_SUITE, DMC_TASKS, DMC_VARIANT, MISSING_EXTRA,  # noqa: F401
                                     DMCExtraMissing, have_playground, is_dmc, playground_name,
                                     playground_suite, require_playground, unknown_task_hint)
from retland.config.registry import quiet_mujoco as _quiet

# DM Control rewards are products of `tolerance` terms, each in [0, 1].
REWARD_RANGE = (0.0, 1.0)
# cheetah's reset lets the robot settle this many steps with zero action (Playground's reset).
_CHEETAH_SETTLE_STEPS = 200


class TaskInfo(NamedTuple):
    """What a run records about its DeepMind Control task (TrainConfig.task)."""

    source: str  # "mujoco_playground <version> dm_control_suite.<Name>"
    episode_length: int  # control steps per episode
    ctrl_dt: float  # seconds per control step
    sim_dt: float  # seconds per physics step
    reward_min: float
    reward_max: float


@functools.lru_cache(maxsize=None)
def task_info(name: str) -> TaskInfo:
    """Horizon, time steps and reward range of task `name`, read from Playground's
    default config of the task (no model is compiled)."""
    from importlib import metadata

    cfg = playground_suite().get_default_config(playground_name(name))
    return TaskInfo(f"mujoco_playground {metadata.version('playground')} dm_control_suite.{playground_name(name)}",
                    int(cfg.episode_length), float(cfg.ctrl_dt), float(cfg.sim_dt), *REWARD_RANGE)


def standard_reset_noise(name: str) -> float:
    """The scale s of the reset training uses: 1 (Playground's draw over the joint
    ranges) for cheetah, hopper and walker; 0 for humanoid, which Playground starts
    at its default pose."""
    return 0.0 if DMC_SUITE[name][1] == "humanoid" else 1.0


# The mjx.Data fields a step starts from (MuJoCo's integration state, less the inputs
# these tasks never set: applied forces, mocap, equality activations). Everything else in
# mjx.Data is recomputed by the step from these.
PHYSICS_FIELDS = ("time", "qpos", "qvel", "act", "qacc_warmstart")


class DMCState(struct.PyTreeNode):
    """A DeepMind Control env state as retland carries it: what rollouts and training
    read (obs, reward, done) and the physics state the next step starts from."""

    obs: jax.Array  # [O] float32
    reward: jax.Array  # [] float32, in [0, 1]
    done: jax.Array  # [] float32: 1 after a step whose physics produced NaN
    physics: dict  # PHYSICS_FIELDS of mjx.Data (those of non-zero size)


@functools.lru_cache(maxsize=None)
def _playground_task(name: str):
    """Playground's env of task `name` on MJX's JAX implementation (cached per task)."""
    suite = playground_suite()
    with _quiet(), jax.ensure_compile_time_eval():
        return suite.load(playground_name(name), config_overrides={"impl": "jax"})


class DMCEnv:
    """A Playground DM Control task with retland's reset-noise scale (module docstring).

    reset(key) and step(state, action) are Playground's, on a `DMCState` that carries
    the physics state instead of the whole mjx.Data (a fraction of its size, so cheaper
    to carry through scans, auto-reset selects and checkpoints, and free of the zero-size
    arrays orbax cannot save). `observation_size`, `action_size` and `dt` as brax envs.
    """

    variant = DMC_VARIANT

    def __init__(self, name: str, reset_noise_scale: float):
        s = float(reset_noise_scale)
        if not 0.0 <= s <= 1.0:
            raise ValueError(f"{name}: reset noise scale {s} is outside [0, 1] (a DeepMind Control task's reset "
                             "noise is the fraction of its joint ranges the start pose is drawn from; 1 = "
                             "Playground's own reset)")
        self.task = _playground_task(name)
        self.name, self.family, self.reset_noise_scale = name, DMC_SUITE[name][1], s
        model = self.task.mj_model
        self.info = task_info(name)
        # The coordinates Playground's reset draws, their ranges, and the reference pose.
        if self.family == "humanoid":
            first = 7  # after the free root joint
            lo, hi = model.jnt_range[1:, 0], model.jnt_range[1:, 1]
        else:
            first = 3
            lo, hi = model.jnt_range[3:, 0], model.jnt_range[3:, 1]
        self._first = first
        self._lo, self._hi = self._shrunk(np.clip(model.qpos0[first:], lo, hi), lo, hi, s)
        self._qpos0 = np.asarray(model.qpos0)
        if self.family == "planar":
            self._rot_lo, self._rot_hi = self._shrunk(0.0, -np.pi, np.pi, s)
        self._obs_size: int | None = None

    @staticmethod
    def _shrunk(ref, lo, hi, s):
        """[ref + s·(lo − ref), ref + s·(hi − ref)], exactly (lo, hi) at s = 1."""
        if s == 1.0:
            return lo, hi
        return ref + s * (lo - ref), ref + s * (hi - ref)

    # -- brax-like interface ------------------------------------------------------------
    @property
    def action_size(self) -> int:
        return int(self.task.action_size)

    @property
    def observation_size(self) -> int:
        if self._obs_size is None:
            # The task's observation of a fresh mjx.Data: traced, not run, and far cheaper
            # to trace than a reset (no physics).
            data = self._data({})
            self._obs_size = int(jax.eval_shape(lambda d: self.task._get_obs(d, {}), data).shape[-1])
        return self._obs_size

    @property
    def dt(self) -> float:
        return float(self.task.dt)

    def reset(self, rng: jax.Array) -> DMCState:
        """Playground's reset of the task with the draw shrunk by the noise scale; the
        same key gives the same state as Playground's reset at scale 1 (humanoid: 0)."""
        return self.compact(self.playground_reset(rng))

    def step(self, state: DMCState, action: jax.Array) -> DMCState:
        """Playground's step from the state's physics; a NaN step (done) pays 0 and
        observes zeros."""
        from mujoco_playground._src import mjx_env

        # Playground's reward functions only write metrics (into the dict given).
        full = mjx_env.State(self._data(state.physics), state.obs, state.reward, state.done, {}, {})
        out = self.task.step(full, action)
        done = out.done > 0.5
        return DMCState(obs=jnp.where(done, 0.0, out.obs).astype(jnp.float32),
                        reward=jnp.where(done, 0.0, out.reward).astype(jnp.float32),
                        done=out.done.astype(jnp.float32), physics=self._physics(out.data))

    # -- Playground's own state ---------------------------------------------------------
    def playground_reset(self, rng: jax.Array):
        """Playground's `State` (whole mjx.Data) of `reset`: the task's reset code with
        the draw bounds of this env's noise scale."""
        from mujoco import mjx
        from mujoco_playground._src import mjx_env

        task, nq = self.task, self.task.mjx_model.nq
        if self.family == "cheetah":
            rng, rng1 = jax.random.split(rng, 2)
            qpos = jnp.zeros(nq).at[3:].set(
                jax.random.uniform(rng1, (nq - 3,), minval=self._lo, maxval=self._hi))
        elif self.family == "planar":
            rng, rng1, rng2 = jax.random.split(rng, 3)
            qpos = jnp.zeros(nq).at[2].set(jax.random.uniform(rng1, (), minval=self._rot_lo, maxval=self._rot_hi))
            qpos = qpos.at[3:].set(jax.random.uniform(rng2, (nq - 3,), minval=self._lo, maxval=self._hi))
        else:
            qpos = None  # Playground's humanoid: the default pose (model.qpos0), key unused
            if self.reset_noise_scale > 0:
                _, sub = jax.random.split(rng)
                qpos = jnp.asarray(self._qpos0, jnp.float32).at[self._first:].set(
                    jax.random.uniform(sub, (nq - self._first,), minval=self._lo, maxval=self._hi))
        data = mjx_env.make_data(task.mj_model, qpos=qpos, impl=task.mjx_model.impl.value,
                                 naconmax=task._config.naconmax, njmax=task._config.njmax)
        data = mjx.forward(task.mjx_model, data)
        if self.family == "cheetah":
            data = mjx_env.step(task.mjx_model, data, jnp.zeros(task.mjx_model.nu), _CHEETAH_SETTLE_STEPS)
            data = data.replace(time=0.0)
        info = {"rng": rng}
        zero = jnp.zeros(())
        # Playground's reset also starts the task's metrics at 0; retland reads none.
        return mjx_env.State(data, task._get_obs(data, info), zero, zero, {}, info)

    def compact(self, pg_state) -> DMCState:
        """The DMCState of a Playground `State`."""
        return DMCState(obs=jnp.asarray(pg_state.obs, jnp.float32), reward=jnp.asarray(pg_state.reward, jnp.float32),
                        done=jnp.asarray(pg_state.done, jnp.float32), physics=self._physics(pg_state.data))

    def _physics(self, data) -> dict:
        out = {}
        for name in PHYSICS_FIELDS:
            value = jnp.asarray(getattr(data, name))
            if value.size:
                out[name] = value.astype(jnp.float32)
        return out

    def _data(self, physics: dict):
        """A whole mjx.Data holding `physics` (every other field is recomputed by a step)."""
        from mujoco_playground._src import mjx_env

        task = self.task
        data = mjx_env.make_data(task.mj_model, impl=task.mjx_model.impl.value,
                                 naconmax=task._config.naconmax, njmax=task._config.njmax)
        return data.replace(**physics)


@functools.lru_cache(maxsize=None)
def dmc_env(name: str, reset_noise_scale: float) -> DMCEnv:
    """The (cached) retland env of DeepMind Control task `name`."""
    with jax.ensure_compile_time_eval():
        return DMCEnv(name, reset_noise_scale)


def body_state(name: str, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(torso height, torso pitch) [T] from observations [T, O] of task `name`, for the
    failure plots, as far as its observation holds them: cheetah and hopper observe
    qpos[1:] first (root z, root pitch); walker observes each body's (xx, xz) orientation,
    torso first, and no height (Playground's walker "height" entry is the torso's zz,
    an uprightness), so its height is NaN; humanoid observes its head height after its
    21 joint angles, and the world's z axis in the torso frame after the extremities."""
    obs = np.asarray(obs, np.float64)
    domain = name.split("-")[0]
    if domain in ("cheetah", "hopper"):
        return obs[:, 0], obs[:, 1]
    if domain == "walker":
        return np.full(len(obs), np.nan), np.arctan2(obs[:, 1], obs[:, 0])
    # humanoid: 21 joint angles, head height, 4 extremities x 3, the world z axis in the
    # torso frame (zx, zy, zz): a pitch θ about y gives zx = −sin θ.
    return obs[:, 21], np.arcsin(np.clip(-obs[:, 34], -1.0, 1.0))
