"""Policies trained with brax.training (PPO, SAC), read into retland.

brax.training saves a policy in two ways, and both are read here:

- a checkpoint folder (`save_checkpoint_path=` of ppo.train, `checkpoint_logdir=` of
  sac.train): one folder per step, named by the step in 12 digits, holding the orbax
  data of (normalizer_params, policy_params[, value_params]) and the network's
  settings as `ppo_network_config.json` or `sac_network_config.json`;
- a params file from `brax.io.model.save_params`: a pickle of the same tuple and
  nothing else, so the network's sizes come from the caller.

What retland keeps is brax's *deterministic* policy: observations normalised with
brax's running statistics (when the agent normalised them), the policy MLP, and the
mode of the action distribution (tanh of the mean for brax's default tanh-normal,
the mean itself for the plain normal one). `retland.brax_import.deterministic_apply`
computes it with brax's own modules, so its action equals `make_inference_fn(params,
deterministic=True)`'s bit for bit; an imported run stores that function's path
(`APPLY`). The perturbable parameters θ are the policy MLP's weights only: the
observation statistics are fixed preprocessing and travel in the apply keywords, so an
update operator never moves them.

This module imports jax and brax only inside its functions, so the command line can
read its constants at start-up.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retland.brax_import import KINDS, BraxImportError, policy_network, quiet_import

# The file brax.training writes next to each checkpoint's orbax data
# (brax/training/agents/{ppo,sac}/checkpoint.py, _CONFIG_FNAME).
CONFIG_FILES = {"ppo": "ppo_network_config.json", "sac": "sac_network_config.json"}
# brax 0.14's defaults for a params file's network: make_ppo_networks /
# make_sac_networks (hidden sizes, activation) and ppo.train / sac.train
# (normalize_observations). tests/ingest/test_import_brax.py checks them against brax's signatures.
DEFAULT_HIDDEN = {"ppo": (32, 32, 32, 32), "sac": (256, 256)}
DEFAULT_ACTIVATION = {"ppo": "swish", "sac": "relu"}
DEFAULT_NORMALIZE = {"ppo": False, "sac": False}
# The key of the policy's hidden sizes in each agent's network config.
_HIDDEN_KEY = {"ppo": "policy_hidden_layer_sizes", "sac": "hidden_layer_sizes"}
# What an imported run stores as its apply: the policy function stays at this path
# (retland/brax_import.py says why).
APPLY = "retland.brax_import:deterministic_apply"


@dataclass(frozen=True)
class BraxPolicy:
    """A brax.training policy, ready for `retland.add_policy`."""

    kind: str                 # "ppo" | "sac": the agent that wrote it
    params: Any               # brax's policy params ({'params': {'hidden_0': …}}), numpy arrays
    apply_kwargs: dict        # JSON-ready keywords of deterministic_apply besides params and obs
    obs_size: int
    action_size: int
    step: int | None          # a checkpoint's step (its folder name); None for a params file
    path: Path                # the folder or file that was read

    @property
    def what(self) -> str:
        """How the policy names itself in messages: 'brax ppo checkpoint …/000000001234'."""
        form = "checkpoint" if self.step is not None else "params file"
        return f"brax {self.kind} {form} {self.path}"


# ---------------------------------------------------------------- readers

def _numpy_tree(tree):
    import jax
    import numpy as np

    return jax.tree_util.tree_map(np.asarray, tree)


def _layer_shapes(tree) -> dict[str, tuple[int, ...]]:
    """'hidden_0/kernel' -> shape for every array of a policy params tree (below 'params')."""
    import jax

    inner = tree.get("params", tree) if isinstance(tree, dict) else tree
    flat, _ = jax.tree_util.tree_flatten_with_path(inner)
    return {"/".join(str(getattr(k, "key", k)) for k in path): tuple(int(d) for d in leaf.shape)
            for path, leaf in flat}


def _check_fit(policy_params, expected_tree, source: str, file_name: str) -> None:
    """Refuse params whose layers differ from what the network settings make, naming the
    first layer that differs and both shapes."""
    have, want = _layer_shapes(policy_params), _layer_shapes(expected_tree)
    for name in sorted(set(have) | set(want), key=_layer_order):
        layer = name.rsplit("/", 1)[0]
        if name not in want:
            raise BraxImportError(f"{source} does not fit the params: {file_name} has layer {layer} "
                                  f"{have[name]} that these sizes do not make (they make {_layers(want)})")
        if name not in have:
            raise BraxImportError(f"{source} does not fit the params: these sizes make layer {layer} "
                                  f"{want[name]}, which {file_name} lacks (it has {_layers(have)})")
        if have[name] != want[name]:
            raise BraxImportError(f"{source} does not fit the params: layer {name} is {have[name]} in "
                                  f"{file_name}, {want[name]} for these sizes")


def _layer_order(name: str):
    """Layers in index order (hidden_2 before hidden_10), a layer's kernel before its bias."""
    head = name.split("/", 1)[0]
    stem, _, num = head.rpartition("_")
    return (stem, int(num) if num.isdigit() else -1, not name.endswith("kernel"), name)


def _layers(shapes: dict[str, tuple[int, ...]]) -> str:
    """'hidden_0 11x32, hidden_1 32x6' from the kernels of a shape map."""
    out = [f"{k.rsplit('/', 1)[0]} {'x'.join(map(str, s))}" for k, s in sorted(shapes.items(), key=lambda kv:
           _layer_order(kv[0])) if k.endswith("kernel")]
    return ", ".join(out) or "no layers"


def _expected_params(kw: dict, obs_size: int):
    """The shapes brax's init makes for these settings (no arrays are computed)."""
    import jax

    net, _ = policy_network(obs_size, kw["action_size"], tuple(kw["hidden_sizes"]), kw["activation"],
                            kw["normalize_observations"], kw["distribution_type"], kw["layer_norm"],
                            kw["noise_std_type"], kw["init_noise_std"], kw["state_dependent_std"],
                            kw["mean_clip_scale"])
    return jax.eval_shape(net.init, jax.random.PRNGKey(0))


def _policy_from_tuple(params, kind: str, kw: dict, path: Path, step: int | None, source: str) -> BraxPolicy:
    """Check brax's (normalizer_params, policy_params[, value_params]) against the network
    settings `kw` and package it."""
    import numpy as np

    normalizer, policy = params[0], _numpy_tree(params[1])
    mean, std = np.asarray(normalizer.mean), np.asarray(normalizer.std)
    if mean.ndim != 1 or std.shape != mean.shape:
        raise BraxImportError(f"{path}: brax's observation statistics have shape {mean.shape}; retland's tasks "
                              "observe one vector (a policy of dict or pixel observations cannot be imported)")
    obs_size = int(mean.shape[0])
    if kw.get("obs_size", obs_size) != obs_size:
        raise BraxImportError(f"{path}: the network config says {kw['obs_size']} observations, the saved "
                              f"observation statistics have {obs_size}")
    kw = {k: v for k, v in kw.items() if k != "obs_size"}
    _check_fit(policy, _expected_params(kw, obs_size), source, path.name)
    for name, arr in [*_layer_shapes_arrays(policy), ("observation mean", mean), ("observation std", std)]:
        if not np.all(np.isfinite(arr)):
            raise BraxImportError(f"{path}: {name} holds non-finite values (NaN or inf); this policy cannot be run")
    if kw["normalize_observations"]:
        if not np.all(std > 0):
            raise BraxImportError(f"{path}: brax's observation std has entries <= 0; normalising by it is undefined")
        # float32 -> Python float is exact, and JSON keeps a double's every bit
        kw = {**kw, "obs_mean": [float(x) for x in mean.astype(np.float32)],
              "obs_std": [float(x) for x in std.astype(np.float32)]}
    return BraxPolicy(kind=kind, params=policy, apply_kwargs={"kind": kind, **kw}, obs_size=obs_size,
                      action_size=int(kw["action_size"]), step=step, path=path)


def _layer_shapes_arrays(tree):
    import jax

    inner = tree.get("params", tree) if isinstance(tree, dict) else tree
    flat, _ = jax.tree_util.tree_flatten_with_path(inner)
    return [("/".join(str(getattr(k, "key", k)) for k in p), leaf) for p, leaf in flat]


def _detect_structure(policy) -> dict:
    """Distribution and layer-norm settings read off a policy params tree: brax's
    normal distribution wraps its MLP (MLP_0, Dense_0, std_param or std_logparam, and
    Dense_1 when the std depends on the state); layer norm adds LayerNorm_i modules."""
    inner = policy.get("params", {}) if isinstance(policy, dict) else {}
    if "MLP_0" in inner:
        names = set(inner["MLP_0"])
        return {"distribution_type": "normal", "layer_norm": any(n.startswith("LayerNorm") for n in names),
                "noise_std_type": "log" if "std_logparam" in inner else "scalar",
                "state_dependent_std": "Dense_1" in inner}
    return {"distribution_type": "tanh_normal", "layer_norm": any(n.startswith("LayerNorm") for n in inner),
            "noise_std_type": "scalar", "state_dependent_std": False}


def _looks_like_brax(obj) -> bool:
    if not isinstance(obj, (tuple, list)) or len(obj) not in (2, 3):
        return False
    norm, policy = obj[0], obj[1]
    inner = policy.get("params") if isinstance(policy, dict) else None
    return (hasattr(norm, "mean") and hasattr(norm, "std") and isinstance(inner, dict)
            and any(k.startswith(("hidden_", "MLP_")) for k in inner))


def read_params(path, *, kind: str, hidden_sizes=None, activation: str | None = None,
                normalize: bool | None = None) -> BraxPolicy:
    """A policy from `brax.io.model.save_params`'s file, with the network's settings
    given (None: brax's default for `kind`). The distribution type and layer norm are
    read off the params; PPO's mean_clip_scale, which leaves no trace in them, is taken
    as brax's default (none). Unpickling runs code: read only files you trust."""
    path = Path(path)
    if kind not in KINDS:
        raise BraxImportError(f"unknown brax agent {kind!r}: choose one of {', '.join(KINDS)}")
    if path.is_dir():
        raise BraxImportError(f"{path} is a folder; a brax params file is the one file brax.io.model.save_params "
                              "writes (a checkpoint folder holds a ppo/sac_network_config.json)")
    hidden = tuple(DEFAULT_HIDDEN[kind] if hidden_sizes is None else (int(h) for h in hidden_sizes))
    if not hidden or any(h < 1 for h in hidden):
        raise BraxImportError(f"hidden sizes {','.join(map(str, hidden))}: give one or more sizes >= 1")
    activation = DEFAULT_ACTIVATION[kind] if activation is None else activation
    normalize = DEFAULT_NORMALIZE[kind] if normalize is None else bool(normalize)
    _, networks, _ = quiet_import()  # the pickle refers to brax's classes
    if activation not in networks.ACTIVATION:
        raise BraxImportError(f"unknown activation {activation!r}: brax knows {', '.join(sorted(networks.ACTIVATION))}")
    not_brax = (f"{path} is not brax params: expected the pickle of (normalizer_params, policy_params"
                "[, value_params]) that brax.io.model.save_params writes")
    try:
        with open(path, "rb") as fh:
            obj = pickle.load(fh)
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, TypeError, ValueError,
            UnicodeDecodeError):
        raise BraxImportError(not_brax) from None
    if not _looks_like_brax(obj):
        raise BraxImportError(not_brax)
    policy = _numpy_tree(obj[1])
    structure = _detect_structure(policy)
    shapes = _layer_shapes(policy)
    # the action size is the last layer's: half its width for tanh_normal (mean and scale)
    last = max((k for k in shapes if k.endswith("bias") and k.startswith(("hidden_", "MLP_0/hidden_"))),
               key=_layer_order, default=None)
    if structure["distribution_type"] == "normal":
        last = "Dense_0/bias" if "Dense_0/bias" in shapes else None
    if last is None:
        raise BraxImportError(not_brax)
    width = shapes[last][0]
    if structure["distribution_type"] == "tanh_normal" and width % 2:
        raise BraxImportError(f"{path}: the last layer has {width} outputs; brax's tanh-normal policy has two per "
                              "action (mean and scale)")
    action_size = width // 2 if structure["distribution_type"] == "tanh_normal" else width
    kw = {"hidden_sizes": list(hidden), "activation": activation, "normalize_observations": normalize,
          "action_size": action_size, **structure, "init_noise_std": 1.0, "mean_clip_scale": None}
    source = (f"--kind {kind} --hidden {','.join(map(str, hidden))}")
    return _policy_from_tuple(obj, kind, kw, path, None, source)


def _step_folder(path: Path, step: int | None) -> Path:
    """The step folder to read: PATH itself, or PATH's step folder `step` (default its
    latest) when PATH is the folder brax saved every step's checkpoint into."""
    if any((path / f).is_file() for f in CONFIG_FILES.values()):
        return path
    steps = {}
    for sub in path.iterdir():
        if sub.is_dir() and sub.name.isdigit() and any((sub / f).is_file() for f in CONFIG_FILES.values()):
            steps[int(sub.name)] = sub
    if not steps:
        raise BraxImportError(f"{path} is not a brax checkpoint: it holds no {' or '.join(CONFIG_FILES.values())} "
                              "(brax.training writes one into each step's checkpoint folder), nor step folders "
                              "that do")
    if step is None:
        return steps[max(steps)]
    if step not in steps:
        raise BraxImportError(f"{path} has no checkpoint of step {step}; its steps: "
                              f"{', '.join(map(str, sorted(steps)))}")
    return steps[step]


def _as_obs_size(value, path: Path) -> int:
    """A config's observation_size: an int (SAC), or PPO's {'shape': [O], 'dtype': …}."""
    if isinstance(value, int):
        return value
    if isinstance(value, dict) and isinstance(value.get("shape"), list) and len(value["shape"]) == 1:
        return int(value["shape"][0])
    raise BraxImportError(f"{path}: observation_size {json.dumps(value)[:80]} is not one vector; retland's tasks "
                          "observe one vector (a policy of dict or pixel observations cannot be imported)")


def read_checkpoint(path, *, step: int | None = None) -> BraxPolicy:
    """A policy from a brax.training checkpoint: a step folder, or the folder holding
    the step folders (then `step`, default the latest). The network's settings are read
    from the config JSON brax wrote beside the orbax data (brax's own load_config is not
    used: brax 0.14.2's fails on the `null` kernel-init entries its own save writes)."""
    path = Path(path)
    if not path.exists():
        raise BraxImportError(f"{path}: no such file or folder")
    if not path.is_dir():
        raise BraxImportError(f"{path} is a file, not a brax checkpoint folder (for brax.io.model.save_params's "
                              "file give --kind)")
    folder = _step_folder(path, step)
    kinds = [k for k, f in CONFIG_FILES.items() if (folder / f).is_file()]
    if len(kinds) > 1:
        raise BraxImportError(f"{folder} holds both {' and '.join(CONFIG_FILES.values())}; which agent wrote it "
                              "is ambiguous")
    kind = kinds[0]
    cfg_path = folder / CONFIG_FILES[kind]
    try:
        cfg = json.loads(cfg_path.read_text())
        nf = cfg["network_factory_kwargs"]
        hidden = nf[_HIDDEN_KEY[kind]]
        raw_obs_size, action_size = cfg["observation_size"], int(cfg["action_size"])
        normalize = bool(cfg["normalize_observations"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise BraxImportError(f"{cfg_path} is not the network config brax.training writes for make_{kind}_networks "
                              f"({type(exc).__name__}: {exc})") from None
    kw = {"hidden_sizes": [int(h) for h in hidden], "activation": str(nf.get("activation", DEFAULT_ACTIVATION[kind])),
          "normalize_observations": normalize, "action_size": action_size,
          "distribution_type": nf.get("distribution_type", "tanh_normal"),
          "layer_norm": bool(nf.get("policy_network_layer_norm", False)),
          "noise_std_type": nf.get("noise_std_type", "scalar"), "init_noise_std": float(nf.get("init_noise_std", 1.0)),
          "state_dependent_std": bool(nf.get("state_dependent_std", False)),
          "mean_clip_scale": None if nf.get("mean_clip_scale") is None else float(nf["mean_clip_scale"]),
          "obs_size": _as_obs_size(raw_obs_size, cfg_path)}
    params = _restore(folder)
    if not _looks_like_brax(params):
        raise BraxImportError(f"{folder}: the orbax data is not brax's (normalizer_params, policy_params"
                              "[, value_params])")
    return _policy_from_tuple(params, kind, kw, folder, int(folder.name) if folder.name.isdigit() else 0,
                              f"its {CONFIG_FILES[kind]}")


def _restore(folder: Path):
    """The orbax data of a brax checkpoint, read by brax's own checkpoint.load."""
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from brax.training import checkpoint
    absl = logging.getLogger("absl")  # orbax logs a missing file as a warning, then raises
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return checkpoint.load(folder.absolute())  # orbax refuses relative paths
    except Exception as exc:  # orbax raises many types for a folder it cannot read
        text = " ".join(str(exc).split())[:200]
        raise BraxImportError(f"{folder}: cannot read the orbax data brax saved there ({type(exc).__name__}: "
                              f"{text})") from None
    finally:
        absl.setLevel(level)


def read(path, *, kind: str | None = None, hidden_sizes=None, activation: str | None = None,
         normalize: bool | None = None, step: int | None = None) -> BraxPolicy:
    """A checkpoint folder or a params file, whichever `path` is. Network settings are
    for params files only (a checkpoint records its own); `kind` may name a
    checkpoint's agent, and must then match it."""
    path = Path(path)
    if not path.exists():
        raise BraxImportError(f"{path}: no such file or folder")
    if path.is_dir():
        given = [o for o, v in (("--hidden", hidden_sizes), ("--activation", activation),
                                ("--normalize/--no-normalize", normalize)) if v is not None]
        if given:
            raise BraxImportError(f"{', '.join(given)}: for params files only; a checkpoint's network is read from "
                                  f"its {' or '.join(CONFIG_FILES.values())}")
        policy = read_checkpoint(path, step=step)
        if kind is not None and kind != policy.kind:
            raise BraxImportError(f"--kind {kind}: {policy.path} is a {policy.kind} checkpoint "
                                  f"(it holds {CONFIG_FILES[policy.kind]})")
        return policy
    if kind is None:
        raise BraxImportError(f"{path} is a file: a brax params file needs --kind ppo or --kind sac (which agent "
                              "wrote it decides the default network sizes)")
    return read_params(path, kind=kind, hidden_sizes=hidden_sizes, activation=activation, normalize=normalize)


def check_env_fit(policy: BraxPolicy, env: str, backend: str, variant: str) -> None:
    """Refuse a policy whose observation or action size is not the env's."""
    from retland.core.envs import env_dims

    obs, act = env_dims(env, backend, variant=variant)
    if policy.obs_size != obs:
        raise BraxImportError(f"{policy.path}: the policy observes {policy.obs_size} values, {env} (variant "
                              f"{variant}) observes {obs}; was it trained on another env?")
    if policy.action_size != act:
        raise BraxImportError(f"{policy.path}: the policy outputs {policy.action_size} actions, {env} takes {act}; "
                              "was it trained on another env?")


def brax_default_backend(env: str) -> str:
    """The backend brax.envs.get_environment builds `env` with when none is given: the
    default of the env class's `backend` argument."""
    import inspect

    from retland.core.envs import brax_task_class

    return str(inspect.signature(brax_task_class(env).__init__).parameters["backend"].default)

