"""The tasks studied by retland, and the fixed reference state s0.

Every consumer (training, sampling, analyses) builds its environment here so the
backend, the task rules (`variant`), reset noise and the reference state are decided in
one place. The variant is always the run's own: these functions have no default for it,
so no caller can silently roll out other rules.

| variant | backend | what runs |
| --- | --- | --- |
| paper | brax0013 | the paper's tasks: Brax 0.0.13's robots, rules and position-based simulator, written in current JAX (retland.core.brax0013) |
| brax | positional, generalized, spring, mjx | brax 0.14's own tasks on one of its physics backends |
| dmc | mjx | a DeepMind Control task as MuJoCo Playground implements it (retland.core.dmc; the `dmc` extra) |

The brax tasks are ant, halfcheetah, hopper and walker2d. Runs made before the paper
variant had its own simulator recorded variant paper with a brax 0.14 backend: Brax
0.0.13's task rules on brax 0.14's robots (retland.core.paper_tasks). They still load and
sample, labelled as such, but no new run is made that way (`check_new_task`).
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

from retland.core import dmc
from retland.core.dmc import DMC_BACKEND, DMC_TASKS, is_dmc  # noqa: F401  (re-exported)
from retland.settings import (BRAX_VARIANTS, DEFAULT_VARIANT, DMC_VARIANT, LEGACY_VARIANT,  # noqa: F401
                              VARIANTS)

BRAX_ENVS: tuple[str, ...] = ("ant", "halfcheetah", "hopper", "walker2d")
ENVS: tuple[str, ...] = BRAX_ENVS + DMC_TASKS
# Brax 0.0.13's simulator, the paper variant's physics.
PAPER_BACKEND = "brax0013"
BRAX_BACKENDS: tuple[str, ...] = ("positional", "generalized", "spring", "mjx")
BACKENDS: tuple[str, ...] = (PAPER_BACKEND,) + BRAX_BACKENDS
# The brax variant's default: 2-3x faster than brax's default `generalized` on CPU for a
# vmapped 1000-step rollout (see BENCHMARKS.md), and unlike `spring` it keeps joint limits
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


# brax 0.14's class of each task (the paper variant subclasses it).
_BRAX_CLASSES = {"ant": ("brax.envs.ant", "Ant"), "halfcheetah": ("brax.envs.half_cheetah", "Halfcheetah"),
                 "hopper": ("brax.envs.hopper", "Hopper"), "walker2d": ("brax.envs.walker2d", "Walker2d")}


def brax_task_class(name: str):
    """brax 0.14's environment class for task `name`."""
    if is_dmc(check_env(name)):
        raise ValueError(f"{name} is a DeepMind Control task, not a brax one")
    _import_brax_envs()
    module, cls = _BRAX_CLASSES[name]
    return getattr(importlib.import_module(module), cls)


def check_env(name: str) -> str:
    """`name` if retland knows the task (and, for a DeepMind Control task, MuJoCo
    Playground is installed); else ValueError, one line."""
    if name in BRAX_ENVS:
        return name
    if is_dmc(name):
        dmc.require_playground()
        return name
    hint = dmc.unknown_task_hint(name) if isinstance(name, str) else None
    raise ValueError(hint or f"unknown env {name!r}: choose one of {', '.join(BRAX_ENVS)} (brax) or "
                             f"{', '.join(DMC_TASKS)} (DeepMind Control)")


def check_variant(variant: str, env: str | None = None) -> str:
    """`variant` if it names task rules, and (given `env`) rules that task has: paper or
    brax for a brax task, dmc for a DeepMind Control task."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown task variant {variant!r}: choose one of {', '.join(VARIANTS)} "
                         "(paper = the paper's Brax 0.0.13 task rules, brax = brax 0.14's, "
                         "dmc = a DeepMind Control task's own)")
    if env is not None and is_dmc(env) and variant != DMC_VARIANT:
        raise ValueError(f"variant {variant!r} is a brax task's rules; the DeepMind Control task {env} runs "
                         f"its own (MuJoCo Playground's): variant {DMC_VARIANT}")
    if env is not None and not is_dmc(env) and variant == DMC_VARIANT:
        raise ValueError(f"variant {DMC_VARIANT!r} is for the DeepMind Control tasks ({', '.join(DMC_TASKS)}); "
                         f"{env} takes {' or '.join(BRAX_VARIANTS)}")
    return variant


def check_backend(backend: str, env: str | None = None, variant: str | None = None) -> str:
    """`backend` if it is a physics backend, and (given `env`, `variant`) one that task
    and those rules run on: brax0013 for the paper variant (older runs: a brax 0.14
    backend too, see `check_new_task`), a brax 0.14 backend for the brax variant, mjx
    for a DeepMind Control task."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if env is not None and is_dmc(env) and backend != DMC_BACKEND:
        raise ValueError(f"the DeepMind Control task {env} runs on MuJoCo Playground's MJX (JAX) physics: "
                         f"backend {DMC_BACKEND}, not {backend!r}")
    if backend == PAPER_BACKEND and variant is not None and variant != "paper":
        raise ValueError(f"backend {PAPER_BACKEND} (Brax 0.0.13's simulator) runs the paper's tasks: use it with "
                         f"variant paper, not {variant!r}")
    return backend


def check_new_task(env: str, backend: str, variant: str) -> None:
    """What a new run (training, an added policy) may use on top of `_check_task`: the
    paper variant only on its own simulator. Runs recorded before it had one (variant
    paper on a brax 0.14 backend) still load and sample; none is made any more."""
    if variant == "paper" and backend != PAPER_BACKEND:
        raise ValueError(f"the paper variant runs on Brax 0.0.13's simulator: backend {PAPER_BACKEND}, not "
                         f"{backend!r} (for brax 0.14's robots use variant brax)")


def default_backend(name: str, variant: str | None = None) -> str:
    """The backend a task runs on when none is named: brax0013 for the paper variant
    (and a brax task with no variant named, whose default is paper), positional for the
    brax variant, mjx for a DeepMind Control task."""
    if is_dmc(name):
        return DMC_BACKEND
    return DEFAULT_BACKEND if (variant or DEFAULT_VARIANT) == "brax" else PAPER_BACKEND


def simulator(backend: str, variant: str | None = None) -> str:
    """A person's name for the physics a run used (the SQL macro run_simulator's twin)."""
    if variant == DMC_VARIANT:
        return "MuJoCo MJX"
    if backend == PAPER_BACKEND:
        return "Brax 0.0.13"
    return f"brax 0.14 {backend}"


def default_variant(name: str) -> str:
    """The task rules a new run of task `name` gets when none are named."""
    return DMC_VARIANT if is_dmc(name) else DEFAULT_VARIANT


def default_horizon(name: str) -> int:
    """Episode length in env steps: 1000 for the brax tasks (the paper's); a DeepMind
    Control task's own `episode_length` (1000 control steps)."""
    return dmc.task_info(check_env(name)).episode_length if is_dmc(name) else DEFAULT_HORIZON


def _check_task(name: str, backend: str | None, variant: str) -> tuple[str, str, str]:
    name = check_env(name)
    variant = check_variant(variant, name)
    backend = default_backend(name, variant) if backend is None else backend
    return name, check_backend(backend, name, variant), variant


def make_env(name: str, backend: str | None = None, reset_noise_scale: float | None = None, *,
             variant: str):
    """A raw env (no episode or auto-reset wrapper) with the given task rules.

    backend=None: the default of the task and variant (`default_backend`).
    reset_noise_scale=None keeps the task's standard reset noise (hopper/walker2d
    5e-3, ant/halfcheetah 0.1; DeepMind Control: `dmc.standard_reset_noise`); 0.0 makes
    `reset` return the reference state s0. Cached: construction of a brax 0.14 task
    parses MJCF and takes seconds.
    """
    name, backend, variant = _check_task(name, backend, variant)
    return _make_env(name, backend, None if reset_noise_scale is None else float(reset_noise_scale), variant)


@functools.lru_cache(maxsize=None)
def _make_env(name: str, backend: str, reset_noise_scale: float | None, variant: str):
    if is_dmc(name):
        return dmc.dmc_env(name, standard_reset_noise(name) if reset_noise_scale is None else reset_noise_scale)
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
    return _reference_state(*_check_task(name, backend, variant))


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

    name, backend, variant = _check_task(name, backend, variant)
    value = programs.stored_value(("retland.core.envs.env_dims", name, backend, variant),
                                  lambda: np.asarray(env_dims(name, backend, variant=variant), np.int64))
    dims = value.leaves[0] if isinstance(value, programs.StoredValue) else value
    obs_size, action_size = (int(x) for x in np.asarray(dims).reshape(-1))
    return obs_size, action_size
