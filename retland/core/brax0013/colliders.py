"""Contacts of Brax 0.0.13's pbd dynamics: capsule ends against the floor plane
(one-way: the floor is static) and capsule-capsule pairs (two-way).

Each collider works on all its contacts at once with static index arrays; per-body
updates are averaged over that body's active contacts, as 0.0.13 does.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from retland.core.brax0013 import math as m


@dataclasses.dataclass(frozen=True)
class Colliders:
    friction: jax.Array  # product of the two materials' friction
    elasticity: jax.Array
    scale: jax.Array  # solver_scale_collide
    # capsule ends vs floor plane, C contacts
    pl_body: np.ndarray
    pl_end: jax.Array  # [C,3] sphere centre in body frame
    pl_radius: jax.Array  # [C]
    # capsule vs capsule, K pairs
    cc_a: np.ndarray
    cc_b: np.ndarray
    cc_off_a: jax.Array  # [K,3] capsule centre in body frame
    cc_end_a: jax.Array  # [K,3] half segment in body frame
    cc_rad_a: jax.Array
    cc_off_b: jax.Array
    cc_end_b: jax.Array
    cc_rad_b: jax.Array


def _f(x):
    return float(np.float32(x))


def _axis(cap):
    return m.np_rotate([0.0, 0.0, 1.0], m.np_euler_to_quat([_f(x) for x in cap.rot]))


def build(system, spec) -> Colliders:
    f32 = lambda x: jnp.asarray(np.asarray(x, np.float64).reshape(np.shape(x)), m.real())  # noqa: E731
    pl_body, pl_end, pl_rad = [], [], []
    wanted = set(spec.plane_contacts)
    for bi, b in enumerate(spec.bodies):
        if b.name not in wanted:
            continue
        for cap in b.capsules:
            half = _f(cap.length) / 2.0 - _f(cap.radius)
            for end in ([cap.end] if cap.end else [-1, 1]):
                pl_body.append(bi)
                pl_end.append(np.array([_f(x) for x in cap.pos]) + end * _axis(cap) * half)
                pl_rad.append(_f(cap.radius))
    cc = {k: [] for k in ("a", "b", "oa", "ea", "ra", "ob", "eb", "rb")}
    for na, nb in spec.capsule_pairs:
        ia, ib = sorted((system.index[na], system.index[nb]))
        for ca in spec.bodies[ia].capsules:
            for cb in spec.bodies[ib].capsules:
                cc["a"].append(ia)
                cc["b"].append(ib)
                for key, i, cap in (("a", ia, ca), ("b", ib, cb)):
                    cc["o" + key].append([_f(x) for x in cap.pos])
                    cc["e" + key].append(_axis(cap) * (_f(cap.length) / 2.0 - _f(cap.radius)))
                    cc["r" + key].append(_f(cap.radius))
    fr = np.asarray(np.float32(spec.friction), m.real())  # per-material value, as stored
    el = np.asarray(np.float32(spec.elasticity), m.real())
    z3 = np.zeros((0, 3))
    return Colliders(
        friction=jnp.asarray(fr * fr, m.real()), elasticity=jnp.asarray(el * el, m.real()),
        scale=jnp.asarray(np.float32(spec.solver_scale_collide), m.real()),
        pl_body=np.array(pl_body, np.int32), pl_end=f32(pl_end if pl_end else z3),
        pl_radius=f32(pl_rad),
        cc_a=np.array(cc["a"], np.int32), cc_b=np.array(cc["b"], np.int32),
        cc_off_a=f32(cc["oa"] or z3), cc_end_a=f32(cc["ea"] or z3), cc_rad_a=f32(cc["ra"]),
        cc_off_b=f32(cc["ob"] or z3), cc_end_b=f32(cc["eb"] or z3), cc_rad_b=f32(cc["rb"]))


# ----------------------------------------------------------------------------- geometry
def plane_contacts(sys, qp):
    """Contact point, point velocity, normal and penetration of each capsule end."""
    col = sys.colliders
    b = col.pl_body
    pa, ra = m.take(qp.pos, b), m.take(qp.rot, b)
    fl_pos, fl_rot = qp.pos[sys.floor], qp.rot[sys.floor]
    normal = m.rotate(jnp.array([0.0, 0.0, 1.0], m.real()), fl_rot)
    normal = jnp.broadcast_to(normal, pa.shape)
    end_world = pa + m.rotate(col.pl_end, ra)
    pos = end_world - normal * col.pl_radius[:, None]
    vel = m.take(qp.vel, b) + m.cross(m.take(qp.ang, b), pos - pa)
    pen = m.dot(fl_pos - pos, normal)
    return pos, vel, normal, pen


def _closest(a, b, pt):
    ab = b - a
    t = m.dot(pt - a, ab) / (m.dot(ab, ab) + 1e-6)
    return a + jnp.clip(t, 0.0, 1.0)[..., None] * ab


def capsule_contacts(sys, qp):
    col = sys.colliders
    ia, ib = col.cc_a, col.cc_b
    pa, ra, pb, rb = m.take(qp.pos, ia), m.take(qp.rot, ia), m.take(qp.pos, ib), m.take(qp.rot, ib)
    ca = pa + m.rotate(col.cc_off_a, ra)
    ea = m.rotate(col.cc_end_a, ra)
    cb = pb + m.rotate(col.cc_off_b, rb)
    eb = m.rotate(col.cc_end_b, rb)
    a0, a1, b0, b1 = ca + ea, ca - ea, cb + eb, cb - eb
    v0, v1, v2, v3 = b0 - a0, b1 - a0, b0 - a1, b1 - a1
    d0, d1, d2, d3 = m.dot(v0, v0), m.dot(v1, v1), m.dot(v2, v2), m.dot(v3, v3)
    use1 = (d2 < d0) | (d2 < d1) | (d3 < d0) | (d3 < d1)
    a_best = jnp.where(use1[:, None], a1, a0)
    b_best = _closest(b0, b1, a_best)
    a_best = _closest(a0, a1, b_best)
    d = a_best - b_best
    dist = m.safe_norm(d)
    normal = d / (1e-6 + dist)[:, None]
    pen = col.cc_rad_a + col.cc_rad_b - dist
    pos = (a_best + b_best) / 2
    vel = (m.take(qp.vel, ia) + m.cross(m.take(qp.ang, ia), pos - pa)) - (m.take(qp.vel, ib) + m.cross(m.take(qp.ang, ib), pos - pb))
    return pos, vel, normal, pen


def _average(sys, idx, a, b, eps):
    """Sum per-contact updates onto bodies, divided by the body's number of contacts
    whose first quantity is non-zero."""
    active = jnp.any(a != 0, axis=-1).astype(m.real())
    count = jax.ops.segment_sum(active, idx, sys.num_bodies)
    a = jax.ops.segment_sum(a, idx, sys.num_bodies)
    b = jax.ops.segment_sum(b, idx, sys.num_bodies)
    denom = (eps + count)[:, None]
    return a / denom, b / denom


# ----------------------------------------------------------------------------- position pass
def _plane_position(sys, qp, prev, contact):
    col = sys.colliders
    b = col.pl_body
    pos, _, n, pen = contact
    pa, ra, pa_old, ra_old = m.take(qp.pos, b), m.take(qp.rot, b), m.take(prev.pos, b), m.take(prev.rot, b)
    ma = sys.mass[b][:, None]
    ia = sys.inv_inertia[b]
    s = col.scale

    dx = pos - (pos + n * pen[:, None])
    arm = pos - pa
    c = m.dot(dx, n)
    cr = m.cross(arm, n)
    w = 1.0 / ma[:, 0] + m.dot(cr, ia * cr)
    dlam = -c / (w + 1e-6)
    hit = jnp.where(c < 0, 1.0, 0.0)
    p = dlam[:, None] * n * hit[:, None]
    dpos = s * (p / ma)
    drot = s * (0.5 * m.vec_quat_mul(ia * m.cross(arm, p), ra))

    # static friction: undo tangential slip of the contact point since `prev`
    r1 = m.rotate(pos - pa, m.quat_inv(ra))
    p1bar = pa_old + m.rotate(r1, ra_old)
    dp = pos - p1bar
    dp_t = dp - m.dot(dp, n)[:, None] * n
    ct = m.safe_norm(dp_t)
    nt = dp_t / (ct + 1e-6)[:, None]
    cr = m.cross(arm, nt)
    w = 1.0 / ma[:, 0] + m.dot(cr, ia * cr)
    dlamt = -ct / (w + 0.0)
    stick = jnp.where(jnp.abs(dlamt) < jnp.abs(col.friction * dlam), 1.0, 0.0)
    p = dlamt[:, None] * nt * stick[:, None] * hit[:, None]
    dpos = dpos + s * (p / ma)
    drot = drot + s * (0.5 * m.vec_quat_mul(ia * m.cross(arm, p), ra))
    return dpos, drot, dlam * hit


def _pair_position(sys, qp, prev, contact):
    col = sys.colliders
    ia_, ib_ = col.cc_a, col.cc_b
    pos, _, n, pen = contact
    pa, ra, pb, rb = m.take(qp.pos, ia_), m.take(qp.rot, ia_), m.take(qp.pos, ib_), m.take(qp.rot, ib_)
    ma, mb = sys.mass[ia_][:, None], sys.mass[ib_][:, None]
    ia, ib = sys.inv_inertia[ia_], sys.inv_inertia[ib_]
    s = col.scale

    half = n * pen[:, None] / 2.0
    arm_a = (pos - half) - pa
    arm_b = (pos + half) - pb
    c = -pen
    cr1, cr2 = m.cross(arm_a, n), m.cross(arm_b, n)
    w1 = 1.0 / ma[:, 0] + m.dot(cr1, ia * cr1)
    w2 = 1.0 / mb[:, 0] + m.dot(cr2, ib * cr2)
    dlam = -c / (w1 + w2 + 1e-6)
    hit = jnp.where(c < 0, 1.0, 0.0)
    p = dlam[:, None] * n * hit[:, None]
    dpos_a = s * (p / ma)
    drot_a = s * (0.5 * m.vec_quat_mul(ia * m.cross(arm_a, p), ra))
    dpos_b = s * (-p / mb)
    drot_b = s * (-0.5 * m.vec_quat_mul(ib * m.cross(arm_b, p), rb))

    r1 = m.rotate(pos - pa, m.quat_inv(ra))
    r2 = m.rotate(pos - pb, m.quat_inv(rb))
    p1bar = m.take(prev.pos, ia_) + m.rotate(r1, m.take(prev.rot, ia_))
    p2bar = m.take(prev.pos, ib_) + m.rotate(r2, m.take(prev.rot, ib_))
    dp = (pos - p1bar) - (pos - p2bar)
    dp_t = dp - m.dot(dp, n)[:, None] * n
    arm_a, arm_b = pos - pa, pos - pb
    ct = m.safe_norm(dp_t)
    nt = dp_t / (ct + 1e-6)[:, None]
    cr1, cr2 = m.cross(arm_a, nt), m.cross(arm_b, nt)
    w1 = 1.0 / ma[:, 0] + m.dot(cr1, ia * cr1)
    w2 = 1.0 / mb[:, 0] + m.dot(cr2, ib * cr2)
    dlamt = -ct / (w1 + w2)
    stick = jnp.where(jnp.abs(dlamt) < jnp.abs(dlam), 1.0, 0.0)
    p = dlamt[:, None] * nt * stick[:, None] * hit[:, None]
    dpos_a = dpos_a + s * (p / ma)
    drot_a = drot_a + s * (0.5 * m.vec_quat_mul(ia * m.cross(arm_a, p), ra))
    dpos_b = dpos_b + s * (-p / mb)
    drot_b = drot_b + s * (0.5 * m.vec_quat_mul(ib * m.cross(arm_b, -p), rb))
    return (dpos_a, drot_a), (dpos_b, drot_b), dlam


def position_pass(sys, qp, prev):
    """Position corrections of all colliders, and what the velocity pass needs."""
    col = sys.colliders
    dpos = jnp.zeros((sys.num_bodies, 3), m.real())
    drot = jnp.zeros((sys.num_bodies, 4), m.real())
    cache = {}
    if len(col.cc_a):  # capsule pairs come first in 0.0.13's collider list
        contact = capsule_contacts(sys, qp)
        (pa, ra), (pb, rb), dlam = _pair_position(sys, qp, prev, contact)
        idx = np.concatenate([col.cc_a, col.cc_b])
        a, b = _average(sys, idx, jnp.concatenate([pa, pb]), jnp.concatenate([ra, rb]), 1e-6)
        dpos, drot = dpos + a, drot + b
        cache["pair"] = (contact, dlam)
    if len(col.pl_body):
        contact = plane_contacts(sys, qp)
        p, r, dlam = _plane_position(sys, qp, prev, contact)
        a, b = _average(sys, col.pl_body, p, r, 1e-6)
        dpos, drot = dpos + a, drot + b
        cache["plane"] = (contact, dlam)
    return dpos, drot, cache


# ----------------------------------------------------------------------------- velocity pass
def _plane_velocity(sys, qp, old, contact, dlam):
    col = sys.colliders
    b = col.pl_body
    pos, _, n, pen = contact
    pa, va, wa = m.take(qp.pos, b), m.take(qp.vel, b), m.take(qp.ang, b)
    ma = sys.mass[b][:, None]
    ia = sys.inv_inertia[b]
    arm = pos - pa

    # dynamic friction
    rel = va + m.cross(wa, arm)
    v_n = m.dot(rel, n)
    v_t = rel - n * v_n[:, None]
    v_t_norm = m.safe_norm(v_t)
    v_t_dir = v_t / (1e-6 + v_t_norm)[:, None]
    dvel = -v_t_dir * jnp.minimum(col.friction * jnp.abs(dlam) / sys.two_h, v_t_norm)[:, None]
    angw = m.cross(arm, v_t_dir)
    w = 1.0 / ma[:, 0] + m.dot(angw, angw)
    p_dyn = dvel / (w + 1e-6)[:, None]

    # restitution
    rel_old = m.take(old.vel, b) + m.cross(m.take(old.ang, b), pos - m.take(old.pos, b))
    v_n_old = m.dot(rel_old, n)
    dv = n * (-v_n - jnp.minimum(col.elasticity * v_n_old, 0.0))[:, None]
    c = m.safe_norm(dv)
    nr = dv / (c + 1e-6)[:, None]
    cr = m.cross(arm, nr)
    w1 = 1.0 / ma[:, 0] + m.dot(cr, ia * cr)
    dlam_rest = c / (w1 + 1e-6)
    touching = jnp.where(pen > 0, 1.0, 0.0)
    sinking = jnp.where(v_n_old <= 0.0, 1.0, 0.0)
    p = (dlam_rest[:, None] * nr * sinking[:, None] + p_dyn) * touching[:, None]
    return p / ma, m.cross(ia * arm, p)


def _pair_velocity(sys, qp, old, contact, dlam):
    col = sys.colliders
    ia_, ib_ = col.cc_a, col.cc_b
    pos, _, n, pen = contact
    pa, pb = m.take(qp.pos, ia_), m.take(qp.pos, ib_)
    ma, mb = sys.mass[ia_][:, None], sys.mass[ib_][:, None]
    ia, ib = sys.inv_inertia[ia_], sys.inv_inertia[ib_]

    rel = (m.take(qp.vel, ia_) + m.cross(m.take(qp.ang, ia_), pos - pa)) - (m.take(qp.vel, ib_) + m.cross(m.take(qp.ang, ib_), pos - pb))
    v_n = m.dot(rel, n)
    v_t = rel - n * v_n[:, None]
    v_t_norm = m.safe_norm(v_t)
    v_t_dir = v_t / (1e-6 + v_t_norm)[:, None]
    dvel = -v_t_dir * jnp.minimum(col.friction * jnp.abs(dlam) / sys.two_h, v_t_norm)[:, None]
    aw1, aw2 = m.cross(pos - pa, v_t_dir), m.cross(pos - pb, v_t_dir)
    w1 = 1.0 / ma[:, 0] + m.dot(aw1, ia * aw1)
    w2 = 1.0 / mb[:, 0] + m.dot(aw2, ib * aw2)
    p_dyn = dvel / (w1 + w2 + 1e-6)[:, None]

    pa_o, pb_o = m.take(old.pos, ia_), m.take(old.pos, ib_)
    rel_old = (m.take(old.vel, ia_) + m.cross(m.take(old.ang, ia_), pos - pa_o)) - (
        m.take(old.vel, ib_) + m.cross(m.take(old.ang, ib_), pos - pb_o))
    v_n_old = m.dot(rel_old, n)
    dv = n * (-v_n - jnp.minimum(col.elasticity * v_n_old, 0.0))[:, None]
    arm_a = pos - pa
    arm_b = (pos + n * pen[:, None]) - pb
    c = m.safe_norm(dv)
    nr = dv / (c + 1e-6)[:, None]
    cr1, cr2 = m.cross(arm_a, nr), m.cross(arm_b, nr)
    w1 = 1.0 / ma[:, 0] + m.dot(cr1, ia * cr1)
    w2 = 1.0 / mb[:, 0] + m.dot(cr2, ib * cr2)
    dlam_rest = c / (w1 + w2 + 1e-6)
    touching = jnp.where(pen > 0, 1.0, 0.0)
    sinking = jnp.where(v_n_old <= 0.0, 1.0, 0.0)
    p = (dlam_rest[:, None] * nr * sinking[:, None] + p_dyn) * touching[:, None]
    # (0.0.13 divides b's velocity change by a's mass too)
    return (p / ma, m.cross(ia * (pos - pa), p)), (-p / ma, m.cross(ib * (pos - pb), -p))


def velocity_pass(sys, qp, old, cache):
    """Friction and restitution velocity updates; `old` is the state before projection."""
    col = sys.colliders
    dvel = jnp.zeros((sys.num_bodies, 3), m.real())
    dang = jnp.zeros((sys.num_bodies, 3), m.real())
    if "pair" in cache:
        (va, wa), (vb, wb) = _pair_velocity(sys, qp, old, *cache["pair"])
        idx = np.concatenate([col.cc_a, col.cc_b])
        a, b = _average(sys, idx, jnp.concatenate([va, vb]), jnp.concatenate([wa, wb]), 1e-6)
        dvel, dang = dvel + a, dang + b
    if "plane" in cache:
        v, w = _plane_velocity(sys, qp, old, *cache["plane"])
        a, b = _average(sys, col.pl_body, v, w, 1e-6)
        dvel, dang = dvel + a, dang + b
    return dvel, dang


# ----------------------------------------------------------------------------- legacy impulses
def impulse_pass(sys, qp):
    """0.0.13's velocity-level contact impulses against the floor (its `sys.info` at
    reset; ant observes them).  Capsule pairs are left out: no task observes them."""
    col = sys.colliders
    if not len(col.pl_body):
        z = jnp.zeros((sys.num_bodies, 3), m.real())
        return z, z
    b = col.pl_body
    pos, vel, n, pen = plane_contacts(sys, qp)
    pa = m.take(qp.pos, b)
    ma = sys.mass[b][:, None]
    ia = sys.inv_inertia[b]
    arm = pos - pa
    normal_vel = m.dot(n, vel)
    t1 = ia * m.cross(arm, n)
    ang = m.dot(n, m.cross(t1, arm))
    denom = 1.0 / ma[:, 0] + ang
    impulse = (-1.0 * (1.0 + col.elasticity) * normal_vel + 0.0 * pen) / denom
    jn = impulse[:, None] * n
    dv_n, dw_n = jn / ma, ia * m.cross(arm, jn)
    vel_d = vel - normal_vel[:, None] * n
    speed_d = m.safe_norm(vel_d)
    impulse_d = jnp.minimum(speed_d / denom, col.friction * impulse)
    dir_d = vel_d / (1e-6 + speed_d)[:, None]
    jd = -impulse_d[:, None] * dir_d
    dv_d, dw_d = jd / ma, ia * m.cross(arm, jd)
    apply_n = jnp.where((pen > 0.0) & (normal_vel < 0) & (impulse > 0.0), 1.0, 0.0)[:, None]
    apply_d = apply_n * jnp.where(speed_d > 0.01, 1.0, 0.0)[:, None]
    dv = dv_n * apply_n + dv_d * apply_d
    dw = dw_n * apply_n + dw_d * apply_d
    return _average(sys, b, dv, dw, 1e-8)
