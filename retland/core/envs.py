"""Brax tasks studied by retland, and the fixed reference state s0.

Every consumer (training, sampling, analyses) builds its environment here so the
backend, reset noise and the reference state are decided in one place.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import io
import warnings

import jax

ENVS: tuple[str, ...] = ("ant", "halfcheetah", "hopper", "walker2d")
BACKENDS: tuple[str, ...] = ("positional", "generalized", "spring", "mjx")
# positional: 2-3x faster than brax's default `generalized` on CPU for a vmapped
# 1000-step rollout (see BENCHMARKS.md), and unlike `spring` it keeps joint limits
# and contacts close to MuJoCo's behaviour.
DEFAULT_BACKEND = "positional"
# The paper's tasks are 1000-step episodes.
DEFAULT_HORIZON = 1000


def _import_brax_envs():
    # mujoco's optional warp backend prints "Failed to import warp" to stdout on
    # import; brax warns that it is unmaintained. Neither is actionable for users.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from brax import envs as brax_envs
    return brax_envs


def check_env(name: str) -> str:
    if name not in ENVS:
        raise ValueError(f"unknown env {name!r}: choose one of {', '.join(ENVS)}")
    return name


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    return backend


@functools.lru_cache(maxsize=None)
def make_env(name: str, backend: str = DEFAULT_BACKEND, reset_noise_scale: float | None = None):
    """A raw brax env (no episode or auto-reset wrapper).

    reset_noise_scale=None keeps the task's standard reset noise (hopper/walker2d
    5e-3, ant/halfcheetah 0.1); 0.0 makes `reset` return the reference state s0.
    Cached: brax env construction parses MJCF and takes seconds.
    """
    check_env(name)
    check_backend(backend)
    brax_envs = _import_brax_envs()
    kwargs = {} if reset_noise_scale is None else {"reset_noise_scale": float(reset_noise_scale)}
    # Cached across calls, so it must hold concrete arrays even when first built
    # inside a jit trace.
    with warnings.catch_warnings(), jax.ensure_compile_time_eval():
        warnings.simplefilter("ignore")
        return brax_envs.get_environment(name, backend=backend, **kwargs)


def standard_reset_noise(name: str) -> float:
    """The task's default reset noise scale (what training uses)."""
    env_cls = type(make_env(name))
    return float(inspect.signature(env_cls.__init__).parameters["reset_noise_scale"].default)


def reference_env(name: str, backend: str = DEFAULT_BACKEND):
    """The env whose reset is deterministic: reset noise 0."""
    return make_env(name, backend, 0.0)


@functools.lru_cache(maxsize=None)
def reference_state(name: str, backend: str = DEFAULT_BACKEND):
    """s0: the fixed start state every return J(θ) is measured from.

    Computed once per process and held on the host (tracing brax's reset takes
    seconds); callers that need it on a device put it there, and must not mutate it.
    """
    env = reference_env(name, backend)
    return jax.device_get(jax.jit(env.reset)(jax.random.PRNGKey(0)))


def env_dims(name: str, backend: str = DEFAULT_BACKEND) -> tuple[int, int]:
    """(observation size, action size)."""
    env = make_env(name, backend)
    return int(env.observation_size), int(env.action_size)
