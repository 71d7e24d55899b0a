"""The tasks studied by retland, built, and the fixed reference state s0.

Every consumer (training, sampling, analyses) builds its environment here so the
backend, the task rules (`variant`), reset noise and the reference state are decided in
one place. The variant is always the run's own: these functions have no default for it,
so no caller can silently roll out other rules. Which tasks, variants and backends exist,
and which go together, is `retland.config.registry` (its names are re-exported here).

Runs made before the paper variant had its own simulator recorded variant paper with a
brax 0.14 backend: Brax 0.0.13's task rules on brax 0.14's robots (retland.core.paper_tasks).
They still load and sample, labelled as such, but no new run is made that way.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import inspect
import io
import warnings

import jax
import numpy as np

from retland.config.registry import (BACKENDS, BRAX_BACKENDS, BRAX_ENVS, BRAX_VARIANTS,  # noqa: F401  (re-exported)
                                     DEFAULT_BACKEND, DEFAULT_HORIZON, DEFAULT_VARIANT, DMC_BACKEND, DMC_TASKS,
                                     DMC_VARIANT, ENVS, LEGACY_VARIANT, PAPER_BACKEND, VARIANTS, check_backend,
                                     check_env, check_new_task, check_task, check_variant, default_backend,
                                     default_variant, is_dmc, is_minatar, simulator)
from retland.core import dmc, minatar


def _import_brax_envs():
    # mujoco's optional warp backend prints "Failed to import warp" to stdout on
    # import; brax warns that it is unmaintained. Neither is actionable for users.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from brax import envs as brax_envs
    return brax_envs


# brax 0.14's class of each task (the paper variant subclasses it).
_BRAX_CLASSES = {"ant": ("brax.envs.ant", "Ant"), "halfcheetah": ("brax.envs.half_cheetah", "Halfcheetah"),
                 "hopper": ("brax.envs.hopper", "Hopper"), "walker2d": ("brax.envs.walker2d", "Walker2d")}


def brax_task_class(name: str):
    """brax 0.14's environment class for task `name`."""
    if is_dmc(check_env(name)) or is_minatar(name):
        raise ValueError(f"{name} is a {'DeepMind Control task' if is_dmc(name) else 'MinAtar game'}, not a brax one")
    _import_brax_envs()
    module, cls = _BRAX_CLASSES[name]
    return getattr(importlib.import_module(module), cls)


def default_horizon(name: str) -> int:
    """Episode length in env steps: 1000 for the brax tasks (the paper's); a DeepMind
    Control task's own `episode_length` (1000 control steps); a MinAtar game's gymnax
    time limit (1000 steps, Freeway 2500)."""
    if is_minatar(check_env(name)):
        return minatar.task_info(name).episode_length
    return dmc.task_info(check_env(name)).episode_length if is_dmc(name) else DEFAULT_HORIZON


def make_env(name: str, backend: str | None = None, reset_noise_scale: float | None = None, *,
             variant: str):
    """A raw env (no episode or auto-reset wrapper) with the given task rules.

    backend=None: the default of the task and variant (`default_backend`).
    reset_noise_scale=None keeps the task's standard reset noise (hopper/walker2d
    5e-3, ant/halfcheetah 0.1; DeepMind Control: `dmc.standard_reset_noise`); 0.0 makes
    `reset` return the reference state s0. Cached: construction of a brax 0.14 task
    parses MJCF and takes seconds.
    """
    name, backend, variant = check_task(name, backend, variant)
    return _make_env(name, backend, None if reset_noise_scale is None else float(reset_noise_scale), variant)


@functools.lru_cache(maxsize=None)
def _make_env(name: str, backend: str, reset_noise_scale: float | None, variant: str):
    if is_dmc(name):
        return dmc.dmc_env(name, standard_reset_noise(name) if reset_noise_scale is None else reset_noise_scale)
    if is_minatar(name):
        return minatar.minatar_env(name, minatar.STANDARD_RESET_NOISE if reset_noise_scale is None
                                   else reset_noise_scale)
    if backend == PAPER_BACKEND:
        from retland.core import brax0013
        with jax.ensure_compile_time_eval():  # cached: concrete arrays even when first built inside a trace
            return brax0013.make_task(name, reset_noise_scale)
    brax_envs = _import_brax_envs()
    # Cached across calls, so it must hold concrete arrays even when first built
    # inside a jit trace.
    with warnings.catch_warnings(), jax.ensure_compile_time_eval():
        warnings.simplefilter("ignore")
        if variant == "paper":
            from retland.core.paper_tasks import paper_env
            noise = standard_reset_noise(name) if reset_noise_scale is None else reset_noise_scale
            return paper_env(name, brax_task_class(name), backend, noise)
        kwargs = {} if reset_noise_scale is None else {"reset_noise_scale": reset_noise_scale}
        return brax_envs.get_environment(name, backend=backend, **kwargs)


@functools.lru_cache(maxsize=None)
def standard_reset_noise(name: str) -> float:
    """The task's standard reset noise scale (what training uses); the same in both
    brax variants: hopper/walker2d 5e-3, ant/halfcheetah 0.1. DeepMind Control tasks:
    1 (Playground's own draw over the joint ranges), humanoid 0 (`dmc.standard_reset_noise`)."""
    if is_dmc(check_env(name)):
        return dmc.standard_reset_noise(name)
    if is_minatar(name):
        return minatar.STANDARD_RESET_NOISE
    from retland.core import brax0013
    if name in brax0013.STANDARD_RESET_NOISE:  # the same bounds as brax 0.14's, without importing brax
        return float(brax0013.STANDARD_RESET_NOISE[name])
    env_cls = brax_task_class(name)
    return float(inspect.signature(env_cls.__init__).parameters["reset_noise_scale"].default)


def reference_env(name: str, backend: str | None = None, *, variant: str):
    """The env whose reset is deterministic: reset noise 0."""
    return make_env(name, backend, 0.0, variant=variant)


def reference_state(name: str, backend: str | None = None, *, variant: str):
    """s0: the fixed start state every return J(θ) is measured from: the reset with
    noise 0 (brax: the model's initial pose at rest; DeepMind Control: the reference
    pose of `retland.core.dmc`, which no key changes; cheetah settled for 200 steps).

    Computed once per process and held on the host (tracing brax's reset takes
    seconds); callers that need it on a device put it there, and must not mutate it.
    """
    return _reference_state(*check_task(name, backend, variant))


@functools.lru_cache(maxsize=None)
def _reference_state(name: str, backend: str, variant: str):
    env = reference_env(name, backend, variant=variant)
    return jax.device_get(jax.jit(env.reset)(jax.random.PRNGKey(0)))


def env_dims(name: str, backend: str | None = None, *, variant: str) -> tuple[int, int]:
    """(observation size, action size)."""
    env = make_env(name, backend, variant=variant)
    return int(env.observation_size), int(env.action_size)


def known_env_dims(name: str, backend: str | None = None, *, variant: str) -> tuple[int, int]:
    """`env_dims`, kept in the program store (`retland.core.programs.stored_value`, keyed
    like the reference state): when the store holds them no env is built, and brax is
    not even imported. With the store off they are computed, as `env_dims`."""
    from retland.core import programs

    name, backend, variant = check_task(name, backend, variant)
    value = programs.stored_value(("retland.core.envs.env_dims", name, backend, variant),
                                  lambda: np.asarray(env_dims(name, backend, variant=variant), np.int64))
    dims = value.leaves[0] if isinstance(value, programs.StoredValue) else value
    obs_size, action_size = (int(x) for x in np.asarray(dims).reshape(-1))
    return obs_size, action_size
