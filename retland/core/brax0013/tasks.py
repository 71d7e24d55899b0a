"""The four Brax 0.0.13 locomotion tasks (ant, halfcheetah, hopper, walker2d) on the
pbd physics of system.py: descriptions, reset, step, reward, termination, observation."""
from __future__ import annotations

import functools
from typing import Any, Dict

import jax
import jax.numpy as jnp
from flax import struct

from retland.core.brax0013.math import real
from retland.core.brax0013.system import QP, Body, Capsule, Hinge, Info, System, SystemSpec

# ----------------------------------------------------------------------------- descriptions
ANT = SystemSpec(  # numbers from Brax 0.0.13 envs/ant.py (pbd system config)
    bodies=(
        Body('$ Torso', 10.0, capsules=(
            Capsule(0.25, 0.5, end=1),
        )),
        Body('Aux 1', 1.0, capsules=(
            Capsule(0.08, 0.44284272, rot=(90.0, -45.0, 0.0)),
        )),
        Body('$ Body 4', 1.0, capsules=(
            Capsule(0.08, 0.7256854, rot=(90.0, -45.0, 0.0), end=-1),
        )),
        Body('Aux 2', 1.0, capsules=(
            Capsule(0.08, 0.44284272, rot=(90.0, 45.0, 0.0)),
        )),
        Body('$ Body 7', 1.0, capsules=(
            Capsule(0.08, 0.7256854, rot=(90.0, 45.0, 0.0), end=-1),
        )),
        Body('Aux 3', 1.0, capsules=(
            Capsule(0.08, 0.44284272, rot=(-90.0, 45.0, 0.0)),
        )),
        Body('$ Body 10', 1.0, capsules=(
            Capsule(0.08, 0.7256854, rot=(-90.0, 45.0, 0.0), end=-1),
        )),
        Body('Aux 4', 1.0, capsules=(
            Capsule(0.08, 0.44284272, rot=(-90.0, -45.0, 0.0)),
        )),
        Body('$ Body 13', 1.0, capsules=(
            Capsule(0.08, 0.7256854, rot=(-90.0, -45.0, 0.0), end=-1),
        )),
        Body('Ground', 1.0, plane=True, frozen=True),
    ),
    joints=(  # name, parent, child, parent offset, child offset, rotation, limit (deg), damping, strength
        Hinge('$ Torso_Aux 1', '$ Torso', 'Aux 1', (0.2, 0.2, 0.0), (-0.1, -0.1, 0.0),
              (0.0, -90.0, 0.0), (-30.0, 30.0), 20.0, 350.0),
        Hinge('Aux 1_$ Body 4', 'Aux 1', '$ Body 4', (0.1, 0.1, 0.0), (-0.2, -0.2, 0.0),
              (0.0, 0.0, 135.0), (30.0, 70.0), 20.0, 350.0),
        Hinge('$ Torso_Aux 2', '$ Torso', 'Aux 2', (-0.2, 0.2, 0.0), (0.1, -0.1, 0.0),
              (0.0, -90.0, 0.0), (-30.0, 30.0), 20.0, 350.0),
        Hinge('Aux 2_$ Body 7', 'Aux 2', '$ Body 7', (-0.1, 0.1, 0.0), (0.2, -0.2, 0.0),
              (0.0, 0.0, 45.0), (-70.0, -30.0), 20.0, 350.0),
        Hinge('$ Torso_Aux 3', '$ Torso', 'Aux 3', (-0.2, -0.2, 0.0), (0.1, 0.1, 0.0),
              (0.0, -90.0, 0.0), (-30.0, 30.0), 20.0, 350.0),
        Hinge('Aux 3_$ Body 10', 'Aux 3', '$ Body 10', (-0.1, -0.1, 0.0), (0.2, 0.2, 0.0),
              (0.0, 0.0, 135.0), (-70.0, -30.0), 20.0, 350.0),
        Hinge('$ Torso_Aux 4', '$ Torso', 'Aux 4', (0.2, -0.2, 0.0), (-0.1, 0.1, 0.0),
              (0.0, -90.0, 0.0), (-30.0, 30.0), 20.0, 350.0),
        Hinge('Aux 4_$ Body 13', 'Aux 4', '$ Body 13', (0.1, -0.1, 0.0), (-0.2, 0.2, 0.0),
              (0.0, 0.0, 45.0), (30.0, 70.0), 20.0, 350.0),
    ),
    dt=0.05, substeps=10, gravity=(0.0, 0.0, -9.8), friction=1.0,
    velocity_damping=0.0, angular_damping=-0.05,
    frozen_pos=(0.0, 0.0, 0.0), frozen_rot=(0.0, 0.0, 0.0),
    plane_contacts=('$ Torso', '$ Body 4', '$ Body 7', '$ Body 10', '$ Body 13'),
)

HALFCHEETAH = SystemSpec(  # numbers from Brax 0.0.13 envs/halfcheetah.py (pbd system config)
    bodies=(
        Body('torso', 9.457333, inertia=(0.944797, 0.944797, 0.944797), capsules=(
            Capsule(0.046, 1.092, rot=(0.0, 90.0, 0.0)),
            Capsule(0.046, 0.392, pos=(0.6, 0.0, 0.1), rot=(0.0, 49.84733, 0.0)),
        )),
        Body('bthigh', 2.335527, inertia=(0.02963628, 0.02963628, 0.02963628), capsules=(
            Capsule(0.046, 0.382, pos=(0.1, 0.0, -0.13), rot=(-180.0, 37.72396, -180.0)),
        )),
        Body('bshin', 2.402003, inertia=(0.032029107, 0.032029107, 0.032029107), capsules=(
            Capsule(0.046, 0.392, pos=(-0.14, 0.0, -0.07), rot=(180.0, -63.689568, 180.0)),
        )),
        Body('bfoot', 1.6574708, inertia=(0.011705612, 0.011705612, 0.011705612), capsules=(
            Capsule(0.046, 0.28, pos=(0.03, 0.0, -0.097), rot=(0.0, -15.46986, 0.0)),
        )),
        Body('fthigh', 2.1759844, inertia=(0.024391336, 0.024391336, 0.024391336), capsules=(
            Capsule(0.046, 0.358, pos=(-0.07, 0.0, -0.12), rot=(0.0, 29.793806, 0.0)),
        )),
        Body('fshin', 1.8170134, inertia=(0.014954625, 0.014954625, 0.014954625), capsules=(
            Capsule(0.046, 0.304, pos=(0.065, 0.0, -0.09), rot=(0.0, -34.37747, 0.0)),
        )),
        Body('ffoot', 1.3383855, inertia=(0.0067111105, 0.0067111105, 0.0067111105), capsules=(
            Capsule(0.046, 0.232, pos=(0.045, 0.0, -0.07), rot=(0.0, -34.37747, 0.0)),
        )),
        Body('floor', 0.0, plane=True, frozen=True),
    ),
    joints=(  # name, parent, child, parent offset, child offset, rotation, limit (deg), damping, strength
        Hinge('bthigh', 'torso', 'bthigh', (-0.5, 0.0, 0.0), (0.0, 0.0, 0.0),
              (0.0, 0.0, 90.0), (-29.793806, 60.16057), 0.0, 120.0),
        Hinge('bshin', 'bthigh', 'bshin', (0.16, 0.0, -0.25), (0.0, 0.0, 0.0),
              (0.0, 0.0, 90.0), (-44.97719, 44.97719), 0.0, 90.0),
        Hinge('bfoot', 'bshin', 'bfoot', (-0.28, 0.0, -0.14), (0.0, 0.0, 0.0),
              (0.0, 0.0, 90.0), (-22.918312, 44.97719), 0.0, 60.0),
        Hinge('fthigh', 'torso', 'fthigh', (0.5, 0.0, 0.0), (0.0, 0.0, 0.0),
              (0.0, 0.0, 90.0), (-57.29578, 40.107044), 0.0, 120.0),
        Hinge('fshin', 'fthigh', 'fshin', (-0.14, 0.0, -0.24), (0.0, 0.0, 0.0),
              (0.0, 0.0, 90.0), (-68.75494, 49.84733), 0.0, 60.0),
        Hinge('ffoot', 'fshin', 'ffoot', (0.13, 0.0, -0.18), (0.0, 0.0, 0.0),
              (0.0, 0.0, 90.0), (-28.64789, 28.64789), 0.0, 30.0),
    ),
    dt=0.05, substeps=16, gravity=(0.0, 0.0, -9.81), friction=0.7745967,
    velocity_damping=0.0, angular_damping=-0.01,
    frozen_pos=(0.0, 1.0, 0.0), frozen_rot=(1.0, 0.0, 1.0),
    plane_contacts=('torso', 'bfoot', 'ffoot', 'bthigh', 'fthigh', 'bshin', 'fshin'),
    capsule_pairs=(('bfoot', 'ffoot'),),
)

HOPPER = SystemSpec(  # numbers from Brax 0.0.13 envs/hopper.py (pbd system config)
    bodies=(
        Body('torso', 3.6651914, capsules=(
            Capsule(0.05, 0.5),
        )),
        Body('thigh', 4.0578904, capsules=(
            Capsule(0.05, 0.55, pos=(0.0, 0.0, -0.225)),
        )),
        Body('leg', 2.7813568, capsules=(
            Capsule(0.04, 0.58),
        )),
        Body('foot', 5.3155746, capsules=(
            Capsule(0.06, 0.51, pos=(-0.065, -0.13, -0.03), rot=(0.0, 90.0, 0.0)),
        )),
        Body('floor', 0.0, plane=True, frozen=True),
    ),
    joints=(  # name, parent, child, parent offset, child offset, rotation, limit (deg), damping, strength
        Hinge('thigh_joint', 'torso', 'thigh', (0.0, 0.0, -0.2), (0.0, 0.0, 0.0),
              (0.0, 0.0, -90.0), (-150.0, 0.0), 20.0, 200.0),
        Hinge('leg_joint', 'thigh', 'leg', (0.0, 0.0, -0.45), (0.0, 0.0, 0.25),
              (0.0, 0.0, -90.0), (-150.0, 0.0), 20.0, 200.0),
        Hinge('foot_joint', 'leg', 'foot', (0.0, 0.0, -0.25), (-0.13, -0.13, -0.03),
              (0.0, 0.0, -90.0), (-45.0, 45.0), 20.0, 200.0),
    ),
    dt=0.02, substeps=4, gravity=(0.0, 0.0, -9.81), friction=0.9486833,
    velocity_damping=1.0, angular_damping=-0.05,
    frozen_pos=(0.0, 1.0, 0.0), frozen_rot=(1.0, 0.0, 1.0),
    plane_contacts=('torso', 'thigh', 'leg', 'foot'),
    default_pos=(('torso', (0.0, 0.0, 1.19)),),
    default_angles=(('thigh_joint', 0.0), ('leg_joint', 0.0)),
)

WALKER2D = SystemSpec(  # numbers from Brax 0.0.13 envs/walker2d.py (pbd system config)
    bodies=(
        Body('torso', 3.6651914, capsules=(
            Capsule(0.05, 0.5),
        )),
        Body('thigh', 4.0578904, capsules=(
            Capsule(0.05, 0.55, pos=(0.0, 0.0, -0.225)),
        )),
        Body('leg', 2.7813568, capsules=(
            Capsule(0.04, 0.58),
        )),
        Body('foot', 3.1667254, capsules=(
            Capsule(0.06, 0.32, pos=(-0.1, -0.2, -0.1), rot=(0.0, 90.0, 0.0)),
        )),
        Body('thigh_left', 4.0578904, capsules=(
            Capsule(0.05, 0.55, pos=(0.0, 0.0, -0.225)),
        )),
        Body('leg_left', 2.7813568, capsules=(
            Capsule(0.04, 0.58),
        )),
        Body('foot_left', 3.1667254, capsules=(
            Capsule(0.06, 0.32, pos=(-0.1, -0.2, -0.1), rot=(0.0, 90.0, 0.0)),
        )),
        Body('floor', 0.0, plane=True, frozen=True),
    ),
    joints=(  # name, parent, child, parent offset, child offset, rotation, limit (deg), damping, strength
        Hinge('thigh_joint', 'torso', 'thigh', (0.0, 0.0, -0.2), (0.0, 0.0, 0.0),
              (0.0, 0.0, -90.0), (-150.0, 0.0), 20.0, 100.0),
        Hinge('leg_joint', 'thigh', 'leg', (0.0, 0.0, -0.45), (0.0, 0.0, 0.25),
              (0.0, 0.0, -90.0), (-150.0, 0.0), 20.0, 100.0),
        Hinge('foot_joint', 'leg', 'foot', (0.0, 0.0, -0.25), (-0.2, -0.2, -0.1),
              (0.0, 0.0, -90.0), (-45.0, 45.0), 20.0, 100.0),
        Hinge('thigh_left_joint', 'torso', 'thigh_left', (0.0, 0.0, -0.2), (0.0, 0.0, 0.0),
              (0.0, 0.0, -90.0), (-150.0, 0.0), 20.0, 100.0),
        Hinge('leg_left_joint', 'thigh_left', 'leg_left', (0.0, 0.0, -0.45), (0.0, 0.0, 0.25),
              (0.0, 0.0, -90.0), (-150.0, 0.0), 20.0, 100.0),
        Hinge('foot_left_joint', 'leg_left', 'foot_left', (0.0, 0.0, -0.25), (-0.2, -0.2, -0.1),
              (0.0, 0.0, -90.0), (-45.0, 45.0), 20.0, 100.0),
    ),
    dt=0.02, substeps=4, gravity=(0.0, 0.0, -9.81), friction=0.9486833,
    velocity_damping=1.0, angular_damping=-0.05,
    frozen_pos=(0.0, 1.0, 0.0), frozen_rot=(1.0, 0.0, 1.0),
    plane_contacts=('torso', 'thigh', 'leg', 'foot', 'thigh_left', 'leg_left', 'foot_left'),
    default_pos=(('torso', (0.0, 0.0, 1.19)),),
    default_angles=(('thigh_joint', 0.0), ('leg_joint', 0.0), ('thigh_left_joint', 0.0), ('leg_left_joint', 0.0)),
)

SPECS = {"ant": ANT, "halfcheetah": HALFCHEETAH, "hopper": HOPPER, "walker2d": WALKER2D}

# Brax 0.0.13's reset noise bounds (uniform in [-b, b] on joint angles and velocities)
STANDARD_RESET_NOISE = {"ant": 0.1, "halfcheetah": 0.1, "hopper": 0.005, "walker2d": 0.005}


@struct.dataclass
class State:
    pipeline_state: QP
    obs: jax.Array
    reward: jax.Array
    done: jax.Array
    metrics: Dict[str, jax.Array] = struct.field(default_factory=dict)
    info: Dict[str, Any] = struct.field(default_factory=dict)


@functools.lru_cache(maxsize=None)
def _system(name: str) -> System:
    with jax.ensure_compile_time_eval():  # cached: concrete arrays even if first built inside a trace
        return System(SPECS[name])


class Task:
    """One Brax 0.0.13 task.  Methods are pure and jit/vmap friendly."""

    def __init__(self, name: str, reset_noise_scale: float | None = None):
        if name not in SPECS:
            raise ValueError(f"unknown brax 0.0.13 task {name!r}; known: {sorted(SPECS)}")
        self.name = name
        self.sys = _system(name)
        self.reset_noise_scale = float(STANDARD_RESET_NOISE[name] if reset_noise_scale is None
                                       else reset_noise_scale)
        self.dt = self.sys.dt
        self.action_size = self.sys.num_joints
        self.observation_size = int(jax.eval_shape(
            self.state_from_joints, self.sys.default_angle(), jnp.zeros(self.action_size)).obs.shape[-1])
        with jax.ensure_compile_time_eval():
            self._mass = self.sys.mass[: self.sys.num_bodies - 1]  # every body but the floor (last)

    # ------------------------------------------------------------------ physics
    def physics_step(self, qp: QP, action):
        return self.sys.step(qp, action)

    def default_angle(self):
        return self.sys.default_angle()

    # ------------------------------------------------------------------ observation
    def _obs(self, qp: QP, info: Info | None):
        angle, vel = self.sys.angle_vel(qp)
        if self.name in ("hopper", "walker2d"):
            parts = [qp.pos[0, 2:], qp.rot[0], angle, qp.vel[0], vel]
        elif self.name == "halfcheetah":
            parts = [qp.pos[0, 2:], qp.rot[0, jnp.array([0, 2])], angle,
                     qp.vel[0, jnp.array([0, 2])], qp.ang[0, 1:2], vel]
        else:  # ant
            parts = [qp.pos[0, 2:], qp.rot[0], angle, qp.vel[0], qp.ang[0], vel,
                     jnp.clip(info.contact.vel, -1, 1).reshape(-1),
                     jnp.clip(info.contact.ang, -1, 1).reshape(-1)]
        return jnp.concatenate(parts)

    def _zero_metrics(self):
        z = jnp.zeros((), real())
        if self.name in ("hopper", "walker2d"):
            keys = ("reward_forward", "reward_ctrl", "reward_healthy")
        elif self.name == "halfcheetah":
            keys = ("reward_ctrl_cost", "reward_forward")
        else:
            keys = ("reward_ctrl_cost", "reward_contact_cost", "reward_forward", "reward_survive")
        return {k: z for k in keys}

    # ------------------------------------------------------------------ env API
    def state_from_joints(self, joint_angle, joint_velocity) -> State:
        qp = self.sys.default_qp(joint_angle=joint_angle, joint_velocity=joint_velocity)
        info = self.sys.info(qp) if self.name == "ant" else None
        z = jnp.zeros((), real())
        return State(pipeline_state=qp, obs=self._obs(qp, info), reward=z, done=z,
                     metrics=self._zero_metrics())

    def reset(self, rng) -> State:
        _, rng1, rng2 = jax.random.split(rng, 3)
        b = self.reset_noise_scale
        n = self.action_size
        qpos = self.sys.default_angle() + jax.random.uniform(rng1, (n,), real(), -b, b)
        qvel = jax.random.uniform(rng2, (n,), real(), -b, b)
        return self.state_from_joints(qpos, qvel)

    def step(self, state: State, action) -> State:
        action = jnp.asarray(action, real())
        qp0 = state.pipeline_state
        dt = jnp.asarray(self.dt, real())
        if self.name in ("hopper", "walker2d"):
            qp, _ = self.sys.step(qp0, -action)  # 0.0.13 reverses these tasks' torques
            obs = self._obs(qp, None)
            msum = jnp.sum(self._mass)
            com0 = jnp.sum(qp0.pos[:-1] * self._mass[:, None], axis=0) / msum
            com1 = jnp.sum(qp.pos[:-1] * self._mass[:, None], axis=0) / msum
            forward = 1.0 * ((com1[0] - com0[0]) / dt)
            lo, hi = (0.7, jnp.inf) if self.name == "hopper" else (0.7, 2.0)
            z = qp.pos[0, 2]
            healthy = jnp.where(z < lo, 0.0, 1.0)
            healthy = jnp.where(z > hi, 0.0, healthy)
            ctrl = 1e-3 * jnp.sum(jnp.square(action))
            reward = (forward + 1.0) - ctrl
            done = 1.0 - healthy
            metrics = dict(reward_forward=forward, reward_ctrl=-ctrl,
                           reward_healthy=jnp.ones((), real()))
        elif self.name == "halfcheetah":
            qp, _ = self.sys.step(qp0, action)
            obs = self._obs(qp, None)
            forward = (qp.pos[0, 0] - qp0.pos[0, 0]) / dt
            ctrl = -0.1 * jnp.sum(jnp.square(action))
            reward = forward + ctrl
            done = state.done
            metrics = dict(reward_ctrl_cost=ctrl, reward_forward=forward)
        else:  # ant
            qp, info = self.sys.step(qp0, action)
            obs = self._obs(qp, info)
            forward = (qp.pos[0, 0] - qp0.pos[0, 0]) / dt
            ctrl = 0.5 * jnp.sum(jnp.square(action))
            contact = 0.5 * 1e-3 * jnp.sum(jnp.square(jnp.clip(info.contact.vel, -1, 1)))
            survive = jnp.ones((), real())
            reward = forward - ctrl - contact + survive
            z = qp.pos[0, 2]
            done = jnp.where(z < 0.2, 1.0, 0.0)
            done = jnp.where(z > 1.0, 1.0, done)
            metrics = dict(reward_ctrl_cost=ctrl, reward_contact_cost=contact,
                           reward_forward=forward, reward_survive=survive)
        metrics = {**state.metrics, **{k: jnp.asarray(v, real()) for k, v in metrics.items()}}
        return state.replace(pipeline_state=qp, obs=obs, reward=jnp.asarray(reward, real()),
                             done=jnp.asarray(done, real()), metrics=metrics)


def make_task(name: str, reset_noise_scale: float | None = None) -> Task:
    return Task(name, reset_noise_scale)
