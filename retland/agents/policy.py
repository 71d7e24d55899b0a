"""A policy someone else trained, as an agent: what `retland.add_policy` stores.

An *added* run (runs.source = 'added') holds a user's deterministic JAX policy

    apply(params, obs [O], **apply_kwargs) -> action [A]

named by its import path ("package.module:function", never pickled) with JSON keyword
arguments, and one checkpoint of its `params`. Its `PolicyConfig` (the runs.config JSON)
records the path, the keywords, the task (env, backend, variant, horizon), the
observation and action sizes, and the parameter tree's structure with every leaf's
shape and dtype, so a checkpoint can be read back and checked without the user's code.

`PolicyAgent` makes such a run look like a trained one to every consumer that calls
`retland.agents.get_agent(ckpt.algo, ckpt.config)`: `policy` imports and calls `apply`,
`actor_params` is the stored params. It has no training update: operators that need one
(td3, sac, ppo) are refused, and a user's own update is sampled with
`retland.sample_update`.

Parameter trees are nested dicts (string keys), lists and tuples of floating-point
arrays: what Flax params, a list of layers or brax's policy params are. The stored
structure ("tree spec") is JSON:

    {"dict": {"key": SPEC, ...}} | {"list": [SPEC, ...]} | {"tuple": [SPEC, ...]}
    | {"array": {"shape": [..], "dtype": "float32"}}
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import jax
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from retland.core.envs import check_backend, check_env, check_variant
from retland.core.importpath import check_path, resolve

KIND = "added-policy"  # PolicyConfig.kind: how runs.config tells an added policy from a TrainConfig
NO_UPDATE = ("added runs have no training update (retland stores only their policy): sample a parameter "
             "perturbation (gaussian) or a rollout perturbation (action, init_state), or your own update "
             "with retland.sample_update")


# ---------------------------------------------------------------------- tree specs

def _where(path: tuple) -> str:
    return "/".join(map(str, path)) or "(root)"


def tree_spec(params, path: tuple = ()) -> dict:
    """The JSON structure of a parameter tree (module docstring); ValueError, naming the
    place, for anything else (None, other containers, non-float or object leaves)."""
    if isinstance(params, Mapping):
        bad = [k for k in params if not isinstance(k, str)]
        if bad:
            raise ValueError(f"params at {_where(path)}: dict keys must be strings, got {bad[0]!r}")
        return {"dict": {k: tree_spec(v, path + (k,)) for k, v in params.items()}}
    if isinstance(params, (list, tuple)) and not hasattr(params, "_fields"):
        kind = "list" if isinstance(params, list) else "tuple"
        return {kind: [tree_spec(v, path + (i,)) for i, v in enumerate(params)]}
    if params is None or not hasattr(params, "dtype") and not isinstance(params, (int, float)):
        raise ValueError(f"params at {_where(path)}: a {type(params).__name__} is neither an array nor a dict, "
                         "list or tuple of them")
    arr = np.asarray(params)
    if not np.issubdtype(arr.dtype, np.floating) and arr.dtype.name != "bfloat16":
        raise ValueError(f"params at {_where(path)} have dtype {arr.dtype}: parameters must be floating-point "
                         "arrays (perturbations and interpolation move every leaf)")
    return {"array": {"shape": list(arr.shape), "dtype": arr.dtype.name}}


def host_tree(params):
    """The params as numpy arrays in plain dicts/lists/tuples (what a checkpoint loads as)."""
    if isinstance(params, Mapping):
        return {k: host_tree(v) for k, v in params.items()}
    if isinstance(params, (list, tuple)) and not hasattr(params, "_fields"):
        return type(params)(host_tree(v) for v in params)
    return np.asarray(params)


def spec_target(spec: dict):
    """The tree of jax.ShapeDtypeStruct a spec describes."""
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ValueError(f"tree spec: expected one of dict, list, tuple, array; got {spec!r:.80}")
    (kind, body), = spec.items()
    if kind == "dict" and isinstance(body, dict):
        return {k: spec_target(v) for k, v in body.items()}
    if kind in ("list", "tuple") and isinstance(body, list):
        items = [spec_target(v) for v in body]
        return items if kind == "list" else tuple(items)
    if kind == "array" and isinstance(body, dict):
        return jax.ShapeDtypeStruct(tuple(int(s) for s in body["shape"]), np.dtype(jax.numpy.dtype(body["dtype"])))
    raise ValueError(f"tree spec: unknown node {kind!r}")


def describe_mismatch(got, want, what: str = "tree") -> str | None:
    """None when two trees (arrays or ShapeDtypeStructs) have the same structure, shapes
    and dtypes; else one line naming the first difference."""
    got_leaves, got_def = jax.tree_util.tree_flatten_with_path(got)
    want_leaves, want_def = jax.tree_util.tree_flatten_with_path(want)
    if got_def != want_def:
        got_paths = [jax.tree_util.keystr(p) for p, _ in got_leaves]
        want_paths = [jax.tree_util.keystr(p) for p, _ in want_leaves]
        extra = [p for p in got_paths if p not in want_paths]
        missing = [p for p in want_paths if p not in got_paths]
        detail = (f"missing {missing[0]}" if missing else f"unexpected {extra[0]}" if extra
                  else f"{got_def} vs {want_def}")
        return f"{what} has another structure than the run's params ({len(got_leaves)} vs {len(want_leaves)} " \
               f"leaves; {detail})"
    for (path, g), (_, w) in zip(got_leaves, want_leaves):
        if tuple(g.shape) != tuple(w.shape) or np.dtype(g.dtype) != np.dtype(w.dtype):
            return (f"{what}{jax.tree_util.keystr(path)} is {tuple(g.shape)} {np.dtype(g.dtype)}, the run's params "
                    f"are {tuple(w.shape)} {np.dtype(w.dtype)}")
    return None


# ------------------------------------------------------------------------- config

class PolicyConfig(BaseModel):
    """runs.config of an added run (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["added-policy"] = KIND
    apply: str = Field(description="import path 'package.module:function' of apply(params, obs, **apply_kwargs)")
    apply_kwargs: dict[str, Any] = Field(default_factory=dict, description="JSON keyword arguments of apply")
    env: str
    backend: str
    variant: str
    horizon: int = Field(ge=1)
    obs_size: int = Field(ge=1)
    action_size: int = Field(ge=1)
    params: dict = Field(description="the params' tree structure with each leaf's shape and dtype")

    @field_validator("env", "backend", "variant")
    @classmethod
    def _task(cls, v, info):
        checks = {"env": check_env, "backend": check_backend, "variant": check_variant}
        return checks[info.field_name](v)

    @field_validator("apply")
    @classmethod
    def _apply(cls, v):
        return check_path(v, "apply")

    @model_validator(mode="after")
    def _tree(self):
        spec_target(self.params)  # refuses a malformed spec
        json.dumps(self.apply_kwargs, allow_nan=False)
        return self

    def params_target(self):
        """The params' structure as ShapeDtypeStructs (what a checkpoint must hold)."""
        return spec_target(self.params)

    @property
    def kwargs_json(self) -> str:
        return json.dumps(self.apply_kwargs, sort_keys=True, allow_nan=False)

    @classmethod
    def from_stored(cls, data: dict) -> "PolicyConfig":
        return cls.model_validate(data)


def is_policy_config(data: dict) -> bool:
    """Whether a stored runs.config document is a PolicyConfig."""
    return isinstance(data, dict) and data.get("kind") == KIND


# -------------------------------------------------------------------------- agent

@dataclass(frozen=True)
class PolicyAgent:
    """The agent of an added run. Equal (and hashable) by apply path and keywords, so
    every run of one policy function shares one compiled program; `algo` (the name the
    policy was added under) is a label, not part of the identity."""

    apply: str
    kwargs_json: str = "{}"
    algo: str = field(default="added", compare=False)

    @classmethod
    def of(cls, config: PolicyConfig, algo: str = "added") -> "PolicyAgent":
        return cls(config.apply, config.kwargs_json, algo)

    def policy(self, params, obs):
        """apply(params, obs, **apply_kwargs): the deterministic action."""
        return resolve(self.apply, "apply")(params, obs, **json.loads(self.kwargs_json))

    def actor_params(self, train_state):
        """An added checkpoint's state is the params themselves."""
        return train_state

    def operator_state(self, checkpoint):
        raise ValueError(f"run {getattr(checkpoint, 'run_id', '?')} ({self.algo}): {NO_UPDATE}")

    def update(self, op_state, key, **options):
        raise ValueError(f"{self.algo}: {NO_UPDATE}")
