"""Vector / quaternion helpers (w, x, y, z), batched over leading axes.

Everything is float32, as in Brax 0.0.13 -- unless jax_enable_x64 is on when a
task is built, then float64 (used only to verify the math against 0.0.13 run in
float64, free of float32 round-off)."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def real():
    """The float dtype of the simulator: float32 (float64 only under jax_enable_x64)."""
    return jnp.float64 if jax.config.read("jax_enable_x64") else jnp.float32


def take(x, idx):
    """x[idx] for a static integer array idx (the task's body indices): slices of x
    joined along axis 0 (consecutive indices share one slice) instead of a gather, so
    XLA fuses it into its consumers; the values are exactly x[idx]."""
    idx = np.asarray(idx)
    if idx.ndim != 1 or idx.size == 0:
        return x[idx]
    runs, start = [], 0
    for k in range(1, idx.size + 1):
        if k == idx.size or idx[k] != idx[k - 1] + 1:
            runs.append(x[int(idx[start]):int(idx[k - 1]) + 1])
            start = k
    return runs[0] if len(runs) == 1 else jnp.concatenate(runs, axis=0)


def dot(a, b):
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def cross(a, b):
    return jnp.cross(a, b)


def safe_norm(x):
    """Euclidean norm over the last axis; exactly 0 (and gradient-safe) where every
    component is within 1e-8 of 0 (the tolerance Brax 0.0.13 uses)."""
    tiny = jnp.all(jnp.abs(x) <= 1e-8, axis=-1, keepdims=True)
    n = jnp.linalg.norm(jnp.where(tiny, 1.0, x), axis=-1)
    return jnp.where(tiny[..., 0], 0.0, n)


def rotate(v, q):
    """Rotate vectors v [...,3] by unit quaternions q [...,4]."""
    s, u = q[..., :1], q[..., 1:]
    r = 2 * (dot(u, v)[..., None] * u) + (s * s - dot(u, u)[..., None]) * v
    return r + 2 * s * cross(u, v)


def quat_mul(u, v):
    u0, u1, u2, u3 = (u[..., i] for i in range(4))
    v0, v1, v2, v3 = (v[..., i] for i in range(4))
    return jnp.stack([
        u0 * v0 - u1 * v1 - u2 * v2 - u3 * v3,
        u0 * v1 + u1 * v0 + u2 * v3 - u3 * v2,
        u0 * v2 - u1 * v3 + u2 * v0 + u3 * v1,
        u0 * v3 + u1 * v2 - u2 * v1 + u3 * v0,
    ], axis=-1)


def vec_quat_mul(u, v):
    """quat_mul((0, u), v) for a 3-vector u."""
    u0, u1, u2 = (u[..., i] for i in range(3))
    v0, v1, v2, v3 = (v[..., i] for i in range(4))
    return jnp.stack([
        -u0 * v1 - u1 * v2 - u2 * v3,
        u0 * v0 + u1 * v3 - u2 * v2,
        -u0 * v3 + u1 * v0 + u2 * v1,
        u0 * v2 - u1 * v1 + u2 * v0,
    ], axis=-1)


def quat_inv(q):
    return q * jnp.array([1.0, -1.0, -1.0, -1.0], q.dtype)


def quat_rot_axis(axis, angle):
    """Quaternion rotating by `angle` (radians) about unit `axis`."""
    half = angle / 2
    s = jnp.sin(half)[..., None]
    return jnp.concatenate([jnp.cos(half)[..., None], axis * s], axis=-1)


def signed_angle(axis, ref_p, ref_c):
    return jnp.arctan2(dot(cross(ref_p, ref_c), axis), dot(ref_p, ref_c))


# ---- float64 numpy versions, used only to build constants from the task description
def np_euler_to_quat(deg) -> np.ndarray:
    """Intrinsic x-y'-z'' euler angles in degrees -> quaternion (float64)."""
    v = np.asarray(deg, np.float64)
    c1, c2, c3 = np.cos(v * np.pi / 360)
    s1, s2, s3 = np.sin(v * np.pi / 360)
    return np.array([
        c1 * c2 * c3 - s1 * s2 * s3,
        s1 * c2 * c3 + c1 * s2 * s3,
        c1 * s2 * c3 - s1 * c2 * s3,
        c1 * c2 * s3 + s1 * s2 * c3,
    ])


def np_rotate(v, q) -> np.ndarray:
    v = np.asarray(v, np.float64)
    s, u = q[0], q[1:]
    r = 2 * (np.dot(u, v) * u) + (s * s - np.dot(u, u)) * v
    return r + 2 * s * np.cross(u, v)
