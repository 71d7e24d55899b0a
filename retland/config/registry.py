"""The one list of what retland runs: algorithms, tasks, task rules (variants) and physics
backends, with the checks that pair them. Every other module reads these names from here,
so a new task or algorithm is added in one place. Imports nothing heavy (no JAX).

| variant | backends | what runs |
| --- | --- | --- |
| paper | brax0013 | the paper's tasks: Brax 0.0.13's robots, rules and position-based simulator, written in current JAX (retland.core.brax0013) |
| brax | positional, generalized, spring, mjx | brax 0.14's own tasks on one of its physics backends |
| dmc | mjx | a DeepMind Control task as MuJoCo Playground implements it (retland.core.dmc; the `dmc` extra) |
| minatar | gymnax | a MinAtar game (discrete actions) as gymnax implements it (retland.core.minatar; the `minatar` extra) |

Runs made before the paper variant had its own simulator recorded variant paper with a
brax 0.14 backend (Brax 0.0.13's task rules on brax 0.14's robots). They still load and
sample, labelled as such, but no new run is made that way (`check_new_task`).
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import warnings

# ---- algorithms -------------------------------------------------------------------------
ALGOS: tuple[str, ...] = ("td3", "sac", "ppo", "bc")
# Off-policy algorithms collect into a replay buffer (checkpointed with the run).
OFF_POLICY: tuple[str, ...] = ("td3", "sac")
# Behaviour cloning (the paper's Appendix A.7) trains on a teacher checkpoint's logged
# data, relabelled with the teacher's actions; it takes no env steps.
OFFLINE: tuple[str, ...] = ("bc",)
# Algorithms whose checkpoints carry a replay buffer (BC's: its relabelled dataset).
REPLAY_ALGOS: tuple[str, ...] = OFF_POLICY + OFFLINE
# The algorithms a BC run may take as its teacher.
TEACHER_ALGOS: tuple[str, ...] = ("td3",)
# The module that implements each algorithm's agent (retland.agents imports it on use).
AGENT_MODULES: dict[str, str] = {"td3": "retland.agents.td3", "sac": "retland.agents.sac",
                                 "ppo": "retland.agents.ppo", "bc": "retland.agents.bc"}

# ---- tasks ------------------------------------------------------------------------------
BRAX_ENVS: tuple[str, ...] = ("ant", "halfcheetah", "hopper", "walker2d")
# DeepMind Control tasks: retland name -> (MuJoCo Playground's DM Control Suite name,
# reset family: how retland.core.dmc perturbs its start state).
DMC_SUITE: dict[str, tuple[str, str]] = {
    "cheetah-run": ("CheetahRun", "cheetah"),
    "hopper-hop": ("HopperHop", "planar"),
    "hopper-stand": ("HopperStand", "planar"),
    "walker-stand": ("WalkerStand", "planar"),
    "walker-walk": ("WalkerWalk", "planar"),
    "walker-run": ("WalkerRun", "planar"),
    "humanoid-stand": ("HumanoidStand", "humanoid"),
    "humanoid-walk": ("HumanoidWalk", "humanoid"),
    "humanoid-run": ("HumanoidRun", "humanoid"),
}
DMC_TASKS: tuple[str, ...] = tuple(DMC_SUITE)
# MinAtar games (Young & Tian 2019), discrete actions, as gymnax implements them in JAX:
# retland name -> (gymnax's name, the ALE game of the paper's appendix A.6 it stands in
# for, or None). The paper ran Qbert, MsPacman, Breakout and Seaquest from the ALE; the
# ALE needs ROMs and JAX ports of those four (jaxtari) need sprite files downloaded at
# install time, so retland offers MinAtar's miniatures: Breakout and Seaquest have one,
# Qbert and MsPacman none (docs/method.md "Discrete control").
MINATAR_GAMES: dict[str, tuple[str, str | None]] = {
    "minatar-breakout": ("Breakout-MinAtar", "Breakout"),
    "minatar-seaquest": ("Seaquest-MinAtar", "Seaquest"),
    "minatar-asterix": ("Asterix-MinAtar", None),
    "minatar-freeway": ("Freeway-MinAtar", None),
    "minatar-space-invaders": ("SpaceInvaders-MinAtar", None),
}
MINATAR_TASKS: tuple[str, ...] = tuple(MINATAR_GAMES)
ENVS: tuple[str, ...] = BRAX_ENVS + DMC_TASKS + MINATAR_TASKS
MISSING_EXTRA = "DeepMind Control tasks need the dmc extra: pip install 'retland[dmc]'"
MISSING_MINATAR = "MinAtar games need the minatar extra: pip install 'retland[minatar]'"

# ---- task rules (variants) --------------------------------------------------------------
# "paper" is Brax 0.0.13's, which the paper used: its robots, simulator and rules; "brax"
# is brax 0.14's own robots and rules. Both are for the brax tasks; a DeepMind Control task
# has only its own rules, as MuJoCo Playground implements them, recorded as "dmc".
BRAX_VARIANTS: tuple[str, ...] = ("paper", "brax")
DMC_VARIANT = "dmc"
MINATAR_VARIANT = "minatar"
VARIANTS: tuple[str, ...] = BRAX_VARIANTS + (DMC_VARIANT, MINATAR_VARIANT)
DEFAULT_VARIANT = "paper"
# Runs recorded before variants existed were trained on brax's own rules.
LEGACY_VARIANT = "brax"

# ---- physics backends -------------------------------------------------------------------
# Brax 0.0.13's simulator, the paper variant's physics.
PAPER_BACKEND = "brax0013"
# MinAtar games run on gymnax's JAX implementation (no physics; the name is what runs record).
MINATAR_BACKEND = "gymnax"
BRAX_BACKENDS: tuple[str, ...] = ("positional", "generalized", "spring", "mjx")
BACKENDS: tuple[str, ...] = (PAPER_BACKEND,) + BRAX_BACKENDS + (MINATAR_BACKEND,)
# The brax variant's default: 2-3x faster than brax's default `generalized` on CPU for a
# vmapped 1000-step rollout (see BENCHMARKS.md), and unlike `spring` it keeps joint limits
# and contacts close to MuJoCo's behaviour.
DEFAULT_BACKEND = "positional"
# DeepMind Control tasks run on MuJoCo Playground's MJX physics.
DMC_BACKEND = "mjx"
# The paper's tasks are 1000-step episodes (a DeepMind Control task brings its own).
DEFAULT_HORIZON = 1000


class DMCExtraMissing(ValueError):
    """A DeepMind Control task was named but MuJoCo Playground is not installed."""


def is_dmc(name: str) -> bool:
    """Whether `name` is one of retland's DeepMind Control tasks (imports nothing)."""
    return name in DMC_SUITE


class MinAtarExtraMissing(ValueError):
    """A MinAtar game was named but gymnax is not installed."""


def is_minatar(name: str) -> bool:
    """Whether `name` is one of retland's MinAtar games (imports nothing)."""
    return name in MINATAR_GAMES


def is_discrete(name: str) -> bool:
    """Whether task `name` has a discrete action space (the MinAtar games)."""
    return is_minatar(name)


def have_gymnax() -> bool:
    return importlib.util.find_spec("gymnax") is not None


def require_gymnax() -> None:
    """MinAtarExtraMissing (one line) unless gymnax can be imported."""
    if not have_gymnax():
        raise MinAtarExtraMissing(MISSING_MINATAR)


def have_playground() -> bool:
    return importlib.util.find_spec("mujoco_playground") is not None


def require_playground() -> None:
    """DMCExtraMissing (one line) unless MuJoCo Playground can be imported."""
    if not have_playground():
        raise DMCExtraMissing(MISSING_EXTRA)


def playground_name(name: str) -> str:
    return DMC_SUITE[name][0]


def unknown_task_hint(name: str) -> str | None:
    """Why a Playground environment retland does not offer is refused, or None if
    `name` is no Playground environment (or Playground is not installed)."""
    # Playground's names are CamelCase; anything else is no Playground name, and is
    # refused without importing Playground.
    if not (name[:1].isupper() and have_playground()):
        return None
    suite = playground_suite()
    with quiet_mujoco():
        from mujoco_playground import locomotion, manipulation
    if name in tuple(locomotion.ALL_ENVS) + tuple(manipulation.ALL_ENVS):
        return (f"{name!r} is a MuJoCo Playground robot task whose model Playground downloads from MuJoCo "
                f"Menagerie (git); retland offers only the DeepMind Control tasks that ship with Playground: "
                f"{', '.join(DMC_TASKS)}")
    if name in suite.ALL_ENVS:
        here = [k for k, (v, _) in DMC_SUITE.items() if v == name]
        if here:
            return f"{name!r} is Playground's name; retland calls it {here[0]!r}"
        return (f"{name!r}: retland offers the DeepMind Control locomotion tasks only (their reset noise is "
                f"defined for them): {', '.join(DMC_TASKS)}")
    return None


def check_algo(algo: str) -> str:
    if algo not in ALGOS:
        raise ValueError(f"unknown algo {algo!r}: choose one of {', '.join(ALGOS)}")
    return algo


def check_env(name: str) -> str:
    """`name` if retland knows the task (and, for a DeepMind Control task, MuJoCo
    Playground is installed); else ValueError, one line."""
    if name in BRAX_ENVS:
        return name
    if is_dmc(name):
        require_playground()
        return name
    if is_minatar(name):
        require_gymnax()
        return name
    hint = unknown_task_hint(name) if isinstance(name, str) else None
    raise ValueError(hint or f"unknown env {name!r}: choose one of {', '.join(BRAX_ENVS)} (brax) or "
                             f"{', '.join(DMC_TASKS)} (DeepMind Control) or {', '.join(MINATAR_TASKS)} "
                             "(MinAtar)")


def check_variant(variant: str, env: str | None = None) -> str:
    """`variant` if it names task rules, and (given `env`) rules that task has: paper or
    brax for a brax task, dmc for a DeepMind Control task."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown task variant {variant!r}: choose one of {', '.join(VARIANTS)} "
                         "(paper = the paper's Brax 0.0.13 task rules, brax = brax 0.14's, "
                         "dmc = a DeepMind Control task's own, minatar = a MinAtar game's own)")
    if env is not None and is_minatar(env) and variant != MINATAR_VARIANT:
        raise ValueError(f"the MinAtar game {env} runs its own rules (gymnax's): variant {MINATAR_VARIANT}, "
                         f"not {variant!r}")
    if env is not None and not is_minatar(env) and variant == MINATAR_VARIANT:
        raise ValueError(f"variant {MINATAR_VARIANT!r} is for the MinAtar games ({', '.join(MINATAR_TASKS)})")
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
    if env is not None and is_minatar(env) and backend != MINATAR_BACKEND:
        raise ValueError(f"the MinAtar game {env} runs on gymnax's JAX implementation: backend {MINATAR_BACKEND}, "
                         f"not {backend!r}")
    if env is not None and not is_minatar(env) and backend == MINATAR_BACKEND:
        raise ValueError(f"backend {MINATAR_BACKEND} runs the MinAtar games ({', '.join(MINATAR_TASKS)}), not {env}")
    if env is not None and is_dmc(env) and backend != DMC_BACKEND:
        raise ValueError(f"the DeepMind Control task {env} runs on MuJoCo Playground's MJX (JAX) physics: "
                         f"backend {DMC_BACKEND}, not {backend!r}")
    if backend == PAPER_BACKEND and variant is not None and variant != "paper":
        raise ValueError(f"backend {PAPER_BACKEND} (Brax 0.0.13's simulator) runs the paper's tasks: use it with "
                         f"variant paper, not {variant!r}")
    return backend


def check_new_task(env: str, backend: str, variant: str) -> None:
    """What a new run (training, an added policy) may use on top of `check_task`: the
    paper variant only on its own simulator. Runs recorded before it had one (variant
    paper on a brax 0.14 backend) still load and sample; none is made any more."""
    if variant == "paper" and backend != PAPER_BACKEND:
        raise ValueError(f"the paper variant runs on Brax 0.0.13's simulator: backend {PAPER_BACKEND}, not "
                         f"{backend!r} (for brax 0.14's robots use variant brax)")


def check_task(name: str, backend: str | None, variant: str) -> tuple[str, str, str]:
    """(env, backend, variant) checked together; backend None = the task's default."""
    name = check_env(name)
    variant = check_variant(variant, name)
    backend = default_backend(name, variant) if backend is None else backend
    return name, check_backend(backend, name, variant), variant


def default_backend(name: str, variant: str | None = None) -> str:
    """The backend a task runs on when none is named: brax0013 for the paper variant
    (and a brax task with no variant named, whose default is paper), positional for the
    brax variant, mjx for a DeepMind Control task."""
    if is_dmc(name):
        return DMC_BACKEND
    if is_minatar(name):
        return MINATAR_BACKEND
    return DEFAULT_BACKEND if (variant or DEFAULT_VARIANT) == "brax" else PAPER_BACKEND


def default_variant(name: str) -> str:
    """The task rules a new run of task `name` gets when none are named."""
    if is_minatar(name):
        return MINATAR_VARIANT
    return DMC_VARIANT if is_dmc(name) else DEFAULT_VARIANT


def simulator(backend: str, variant: str | None = None) -> str:
    """A person's name for the physics a run used (the SQL macro run_simulator's twin)."""
    if variant == DMC_VARIANT:
        return "MuJoCo MJX"
    if variant == MINATAR_VARIANT:
        return "gymnax MinAtar"
    if backend == PAPER_BACKEND:
        return "Brax 0.0.13"
    return f"brax 0.14 {backend}"


@contextlib.contextmanager
def quiet_mujoco():
    """Silence what importing or compiling MuJoCo models prints: mujoco's "Failed to import
    warp" on stdout when warp has no GPU, and its XML compiler's deprecation warnings
    (through mju_warning, on stderr); neither is actionable."""
    import mujoco

    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(lambda message: None)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        mujoco.set_mju_user_warning(previous)


def playground_suite():
    """MuJoCo Playground's dm_control_suite module (DMCExtraMissing without the extra)."""
    require_playground()
    os.environ.setdefault("MUJOCO_GL", "egl")  # never needed: retland does not render
    with quiet_mujoco():
        from mujoco_playground import dm_control_suite
    return dm_control_suite
