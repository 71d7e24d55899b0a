"""Rigid-body system of Brax 0.0.13's position-based ("pbd") dynamics, in current JAX.

A task is described by a `SystemSpec` of plain numbers (see tasks.py).  `System`
turns it into static float32 index/constant arrays once; every function here is
pure, works on one unbatched `QP` (vmap it for batches) and is jit friendly.
Only what the four locomotion tasks need is supported: hinge joints with torque
actuators, capsule colliders against a plane, and capsule-capsule pairs.
"""
from __future__ import annotations

import dataclasses
from typing import Tuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from retland.core.brax0013 import colliders
from retland.core.brax0013 import math as m

Vec3 = Tuple[float, float, float]


# ----------------------------------------------------------------------------- description
@dataclasses.dataclass(frozen=True)
class Capsule:
    radius: float
    length: float
    pos: Vec3 = (0.0, 0.0, 0.0)
    rot: Vec3 = (0.0, 0.0, 0.0)  # euler degrees, x-y'-z''
    end: int = 0  # 0: both ends touch the floor; +1 / -1: only that end does


@dataclasses.dataclass(frozen=True)
class Body:
    name: str
    mass: float
    inertia: Vec3 = (1.0, 1.0, 1.0)
    capsules: Tuple[Capsule, ...] = ()
    plane: bool = False  # the floor: an infinite plane with +z normal
    frozen: bool = False


@dataclasses.dataclass(frozen=True)
class Hinge:
    """Revolute joint about the child's local x axis after `rotation`, driven by a
    torque actuator of `strength` (one action dimension, in joint order)."""
    name: str
    parent: str
    child: str
    parent_offset: Vec3
    child_offset: Vec3
    rotation: Vec3  # euler degrees
    limit: Tuple[float, float]  # degrees
    damping: float
    strength: float


@dataclasses.dataclass(frozen=True)
class SystemSpec:
    bodies: Tuple[Body, ...]
    joints: Tuple[Hinge, ...]
    dt: float
    substeps: int
    gravity: Vec3
    friction: float  # every collider's material friction
    velocity_damping: float
    angular_damping: float
    frozen_pos: Vec3  # global frozen translation axes (1 = frozen)
    frozen_rot: Vec3
    plane_contacts: Tuple[str, ...] = ()  # bodies that collide with the floor
    capsule_pairs: Tuple[Tuple[str, str], ...] = ()  # body pairs that collide with each other
    default_pos: Tuple[Tuple[str, Vec3], ...] = ()
    default_angles: Tuple[Tuple[str, float], ...] = ()  # degrees
    elasticity: float = 0.0
    solver_scale_pos: float = 0.6
    solver_scale_ang: float = 0.2
    solver_scale_collide: float = 1.0


# ----------------------------------------------------------------------------- state
@struct.dataclass
class QP:
    pos: jax.Array  # [B,3]
    rot: jax.Array  # [B,4] w,x,y,z
    vel: jax.Array  # [B,3]
    ang: jax.Array  # [B,3]


@struct.dataclass
class P:
    vel: jax.Array
    ang: jax.Array


@struct.dataclass
class Info:
    contact: P  # summed velocity-level contact updates of the step, per body
    joint: P  # always zero in pbd (kept for parity with 0.0.13)
    actuator: P  # summed actuator updates of the step, per body


def _f32(x):
    return np.asarray(np.float32(x), np.float64)  # a config value as stored (float32)


def _c(x):
    return jnp.asarray(np.asarray(x), m.real())


class System:
    """Static arrays built from a SystemSpec (numbers computed in float64, stored float32)."""

    def __init__(self, spec: SystemSpec):
        self.spec = spec
        bodies = spec.bodies
        self.index = {b.name: i for i, b in enumerate(bodies)}
        self.num_bodies = nb = len(bodies)
        floors = [i for i, b in enumerate(bodies) if b.plane]
        assert len(floors) == 1
        self.floor = floors[0]
        self.num_joints = nj = len(spec.joints)
        self.dt = float(np.float32(spec.dt))

        mass = np.array([_f32(b.mass) for b in bodies])
        self.mass = _c(mass)
        self.inv_inertia = _c(1.0 / np.array([[_f32(x) for x in b.inertia] for b in bodies]))
        fp = np.array([[1.0] * 3 if b.frozen else [float(bool(x)) for x in spec.frozen_pos] for b in bodies])
        fr = np.array([[1.0] * 3 if b.frozen else [float(bool(x)) for x in spec.frozen_rot] for b in bodies])
        self.pos_mask = _c(1.0 - fp)
        self.rot_mask = _c(1.0 - fr)
        self.quat_mask = _c(np.concatenate([np.ones((nb, 1)), 1.0 - fr], axis=1))

        h = _f32(spec.dt) / spec.substeps  # substep length, as 0.0.13 computes it in double
        self.h = _c(h)
        self.two_h = _c(2.0 * h)
        self.gravity = _c([_f32(g) for g in spec.gravity])
        self.vel_decay = _c(np.exp(_f32(spec.velocity_damping) * h))
        self.ang_decay = _c(np.exp(_f32(spec.angular_damping) * h))
        self.half_steps = spec.substeps // 2

        # hinges
        J = spec.joints
        self.j_p = np.array([self.index[j.parent] for j in J], np.int32)
        self.j_c = np.array([self.index[j.child] for j in J], np.int32)
        self.off_p = _c([[_f32(x) for x in j.parent_offset] for j in J])
        self.off_c = _c([[_f32(x) for x in j.child_offset] for j in J])
        axes = np.array([[m.np_rotate(e, m.np_euler_to_quat([_f32(x) for x in j.rotation]))
                          for e in np.eye(3)] for j in J])  # [J,3,3]; no reference rotation
        self.axis0 = _c(axes[:, 0])  # hinge axis (parent and child frames coincide)
        self.axis2 = _c(axes[:, 2])  # zero-angle reference direction
        self.limit = _c(np.array([[_f32(j.limit[0]), _f32(j.limit[1])] for j in J]) / 180.0 * np.pi)
        self.j_damping = _c([_f32(j.damping) for j in J])
        self.strength = _c([_f32(j.strength) for j in J])
        self.scale_pos = _c(spec.solver_scale_pos)  # 0.0.13 default literals, not float32 config values
        self.scale_ang = _c(spec.solver_scale_ang)

        # default joint angles (radians), in joint order
        over = dict(spec.default_angles)
        self._default_angle = _c([
            _f32(over[j.name]) * np.pi / 180 if j.name in over
            else (_f32(j.limit[0]) + _f32(j.limit[1])) * np.pi / 360 for j in J])

        # joints in the order default_qp places them (by depth of the parent)
        lineage = {j.child: j.parent for j in J}

        def depth(name):
            d = 0
            while name in lineage:
                name = lineage[name]
                d += 1
            return d

        self.place_order = sorted(range(nj), key=lambda i: depth(J[i].parent))
        fixed = {j.child for j in J} | {n for n, _ in spec.default_pos}
        roots = {b.name: [i] for i, b in enumerate(bodies) if b.name not in fixed}
        for i in self.place_order:
            root = J[i].parent
            while root in lineage:
                root = lineage[root]
            if root in roots:
                roots[root].append(self.index[J[i].child])
        # (body idx, local sphere centre [3], radius) of each capsule end, per tree to lower
        self.lower_trees = []
        for members in roots.values():
            spheres = []
            for bi in members:
                for cap in bodies[bi].capsules:
                    axis = m.np_rotate([0.0, 0.0, 1.0], m.np_euler_to_quat([_f32(x) for x in cap.rot]))
                    half = _f32(cap.length) / 2 - _f32(cap.radius)
                    for end in (-1, 1):
                        sp = np.array([_f32(x) for x in cap.pos]) + end * axis * half
                        spheres.append((bi, sp, _f32(cap.radius)))
            if spheres:
                self.lower_trees.append((
                    np.array(members, np.int32), np.array([s[0] for s in spheres], np.int32),
                    _c([s[1] for s in spheres]), _c([s[2] for s in spheres])))
        self.default_pos = [(self.index[n], _c([_f32(x) for x in p])) for n, p in spec.default_pos]

        self.colliders = colliders.build(self, spec)

    # ------------------------------------------------------------------ joints & actuators
    def default_angle(self):
        return self._default_angle

    def _hinge_frames(self, qp: QP):
        rp, rc = m.take(qp.rot, self.j_p), m.take(qp.rot, self.j_c)
        axis = m.rotate(self.axis0, rp)
        ref_p = m.rotate(self.axis2, rp)
        ref_c = m.rotate(self.axis2, rc)
        return axis, ref_p, ref_c, m.signed_angle(axis, ref_p, ref_c)

    def angle_vel(self, qp: QP):
        axis, _, _, angle = self._hinge_frames(qp)
        vel = m.dot(m.take(qp.ang, self.j_p) - m.take(qp.ang, self.j_c), axis)
        return angle, vel

    def _scatter(self, a_p, a_c):
        idx = np.concatenate([self.j_p, self.j_c])
        return jax.ops.segment_sum(jnp.concatenate([a_p, a_c]), idx, self.num_bodies)

    def actuator(self, qp: QP, act):
        """Torque actuators: angular velocity change rate per body."""
        axis, _, _, angle = self._hinge_frames(qp)
        torque = act * self.strength * -1.0
        torque = jnp.where(angle < self.limit[:, 0], 0.0, torque)
        torque = jnp.where(angle > self.limit[:, 1], 0.0, torque)
        torque = axis * torque[:, None]
        ii = self.inv_inertia
        return self._scatter(ii[self.j_p] * torque, -ii[self.j_c] * torque)

    def damp(self, qp: QP):
        torque = -1.0 * self.j_damping[:, None] * (m.take(qp.ang, self.j_p) - m.take(qp.ang, self.j_c))
        ii = self.inv_inertia
        return self._scatter(ii[self.j_p] * torque, -ii[self.j_c] * torque)

    def joint_apply(self, qp: QP):
        """Position-level hinge constraint corrections (dpos [B,3], drot [B,4])."""
        jp_, jc_ = self.j_p, self.j_c
        pp, pc, rp, rc = m.take(qp.pos, jp_), m.take(qp.pos, jc_), m.take(qp.rot, jp_), m.take(qp.rot, jc_)
        mp, mc = self.mass[jp_][:, None], self.mass[jc_][:, None]
        ip, ic = self.inv_inertia[jp_], self.inv_inertia[jc_]

        # anchor points must coincide
        wp = pp + m.rotate(self.off_p, rp)
        wc = pc + m.rotate(self.off_c, rc)
        dx = wp - wc
        ap, ac = wp - pp, wc - pc
        c = m.safe_norm(dx)[:, None]
        n = dx / (c + 1e-6)
        cr1 = m.cross(ap, n)
        w1 = 1.0 / mp[:, 0] + m.dot(cr1, ip * cr1)
        cr2 = m.cross(ac, n)
        w2 = 1.0 / mc[:, 0] + m.dot(cr2, ic * cr2)
        dlam = -c[:, 0] / (w1 + w2 + 1e-6)
        p = dlam[:, None] * n
        s = self.scale_pos
        dpos_p = s * (p / mp)
        drot_p = s * (0.5 * m.vec_quat_mul(ip * m.cross(ap, p), rp))
        dpos_c = s * (-p / mc)
        drot_c = s * (-0.5 * m.vec_quat_mul(ic * m.cross(ac, p), rc))

        # axes must align, and the angle must respect its limits
        axis, ref_p, ref_c, psi = self._hinge_frames(qp)
        axis_c = m.rotate(self.axis0, rc)
        dq1 = m.cross(axis, axis_c)
        ph = jnp.clip(psi, self.limit[:, 0], self.limit[:, 1])
        n1 = m.rotate(ref_p, m.quat_rot_axis(axis, ph))
        dq2 = m.cross(n1, ref_c)
        dq = jnp.stack([dq1, dq2])  # [2,J,3]
        th = m.safe_norm(dq)[..., None]
        nn = dq / (th + 1e-6)
        wa = m.dot(nn, ip * nn) + m.dot(nn, ic * nn)
        pa = (th[..., 0] / (wa + 1e-6))[..., None] * nn  # = -dlambda * n
        sa = self.scale_ang
        rot_p_ang = sa * (0.5 * m.vec_quat_mul(ip * pa, rp))
        rot_c_ang = sa * (-0.5 * m.vec_quat_mul(ic * pa, rc))
        drot_p = drot_p + (rot_p_ang[0] + rot_p_ang[1])
        drot_c = drot_c + (rot_c_ang[0] + rot_c_ang[1])
        return self._scatter(dpos_p, dpos_c), self._scatter(drot_p, drot_c)

    # ------------------------------------------------------------------ integrator
    def kinetic(self, qp: QP) -> QP:
        pos = qp.pos + qp.vel * self.h * self.pos_mask
        a = qp.ang * self.rot_mask
        aq = jnp.concatenate([jnp.zeros_like(a[:, :1]), a], axis=1) * 0.5 * self.h
        rot = qp.rot + m.quat_mul(aq, qp.rot)
        rot = rot / jnp.linalg.norm(rot, axis=-1, keepdims=True)
        return qp.replace(pos=pos, rot=rot)

    def acc_update(self, qp: QP, dang) -> QP:
        vel = self.vel_decay * qp.vel
        vel = vel + self.gravity * self.h
        vel = vel * self.pos_mask
        ang = self.ang_decay * qp.ang
        ang = ang + dang * self.h
        ang = ang * self.rot_mask
        return qp.replace(vel=vel, ang=ang)

    def pos_update(self, qp: QP, dpos, drot) -> QP:
        return qp.replace(pos=qp.pos + dpos * self.pos_mask, rot=qp.rot + drot * self.quat_mask)

    def vel_update(self, qp: QP, dvel, dang) -> QP:
        return qp.replace(vel=(qp.vel + dvel) * self.pos_mask, ang=(qp.ang + dang) * self.rot_mask)

    def project(self, qp: QP, prev: QP) -> QP:
        rot = qp.rot / jnp.linalg.norm(qp.rot, axis=-1, keepdims=True)
        vel = ((qp.pos - prev.pos) / self.h) * self.pos_mask
        dq = m.quat_mul(rot, m.quat_inv(prev.rot))
        ang = 2.0 * dq[:, 1:] / self.h
        sign = jnp.where(dq[:, :1] >= 0.0, 1.0, -1.0) * self.rot_mask
        ang = sign * ang * self.rot_mask
        return QP(pos=qp.pos, rot=rot, vel=vel, ang=ang)

    # ------------------------------------------------------------------ stepping
    def step(self, qp: QP, act) -> Tuple[QP, Info]:
        """One control step (config dt): substeps/2 pairs of pbd half-steps, the
        second of each pair resolving contacts."""
        act = jnp.asarray(act, m.real())
        zeros = jnp.zeros((self.num_bodies, 3), m.real())

        def dynamics(qp):
            dang_a = self.actuator(qp, act)
            qp = self.acc_update(qp, dang_a + self.damp(qp))
            qp = self.kinetic(qp)
            qp = self.pos_update(qp, *self.joint_apply(qp))
            return qp, dang_a

        def substep(carry, _):
            qp, c_vel, c_ang, a_ang = carry
            prev = qp
            qp, _ = dynamics(qp)
            qp = self.project(qp, prev)

            prev = qp
            qp, dang_a = dynamics(qp)
            dpos, drot, cache = colliders.position_pass(self, qp, prev)
            qp = self.pos_update(qp, dpos, drot)
            before = qp
            qp = self.project(qp, prev)
            dvel, dang = colliders.velocity_pass(self, qp, before, cache)
            qp = self.vel_update(qp, dvel, dang)
            return (qp, c_vel + dvel, c_ang + dang, a_ang + dang_a), None

        (qp, c_vel, c_ang, a_ang), _ = jax.lax.scan(
            substep, (qp, zeros, zeros, zeros), None, length=self.half_steps)
        info = Info(contact=P(c_vel, c_ang), joint=P(zeros, zeros), actuator=P(zeros, a_ang))
        return qp, info

    def info(self, qp: QP) -> Info:
        """0.0.13's `sys.info`: contact impulses of the legacy (velocity) contact model."""
        zeros = jnp.zeros((self.num_bodies, 3), m.real())
        dvel, dang = colliders.impulse_pass(self, qp)
        return Info(contact=P(dvel, dang), joint=P(zeros, zeros), actuator=P(zeros, zeros))

    # ------------------------------------------------------------------ default pose
    def default_qp(self, joint_angle=None, joint_velocity=None) -> QP:
        nb = self.num_bodies
        if joint_angle is None:
            joint_angle = self.default_angle()
        joint_angle = jnp.asarray(joint_angle, m.real())
        if joint_velocity is None:
            joint_velocity = jnp.zeros_like(joint_angle)
        joint_velocity = jnp.asarray(joint_velocity, m.real())
        pos = jnp.zeros((nb, 3), m.real())
        rot = jnp.tile(jnp.array([1.0, 0.0, 0.0, 0.0], m.real()), (nb, 1))
        ang = jnp.zeros((nb, 3), m.real())
        for bi, p in self.default_pos:
            pos = pos.at[bi].set(p)

        local_rot = m.quat_rot_axis(self.axis0, joint_angle)  # [J,4]
        local_ang = self.axis0 * joint_velocity[:, None]
        for i in self.place_order:  # static, parents before children
            bp, bc = self.j_p[i], self.j_c[i]
            lr = local_rot[i]
            local_pos = self.off_p[i] - m.rotate(self.off_c[i], lr)
            pos = pos.at[bc].set(pos[bp] + m.rotate(local_pos, rot[bp]))
            ang = ang.at[bc].set(m.rotate(local_ang[i], rot[bp]))
            rot = rot.at[bc].set(m.quat_mul(rot[bp], lr))

        for members, sb, sp, rad in self.lower_trees:  # lift/lower free trees onto the floor
            z = pos[sb, 2] + m.rotate(sp, rot[sb])[:, 2] - rad
            min_z = jnp.min(z)
            pos = pos.at[members, 2].add(-min_z)
        return QP(pos=pos, rot=rot, vel=jnp.zeros((nb, 3), m.real()), ang=ang)
