"""Your own JAX policy, and your own update, in retland.

    run_id = retland.add_policy("data/warehouse", env="hopper", apply="retland.policies:mlp_apply",
                                params=params, name="bc")              # a run with one checkpoint
    # now every command works on it: retland sample --run RUN_ID --operator gaussian, landscape, …
    retland.sample_update("data/warehouse", run_id, 0, update="mypkg.updates:adam_step",
                          state=state, n=256)                          # your update's PURD

`add_policy` stores a deterministic policy `apply(params, obs [O], **apply_kwargs) ->
action [A]` (actions in [-1, 1]; the tasks' actuators clip outside it) as an *added* run
(runs.source = 'added', runs.algo = its name) with one checkpoint at `step`: the params
written with orbax under artifacts/runs/<run_id>/checkpoints/ like a trained
checkpoint, published by its `checkpoints` row after the files are in place. The run's
config (`retland.agents.policy.PolicyConfig`) records apply's import path and JSON
keywords, the task, and the params' tree structure with shapes and dtypes. apply is
stored by import path, so every later process (the command line, a resumed job) imports
the same function: a lambda, a nested function or a function of the script being run
(`__main__`) is refused. Everything is checked before anything is written: the path
imports to a function, the keywords are JSON, the params are a tree of float arrays,
and apply (jitted) maps a zero observation of the env's size to a finite action of the
env's action size.

Default task rules for an added policy: variant "brax" (brax 0.14's own tasks, what a
policy trained on `brax.envs` saw), unlike trained runs, whose default is the paper's.

`sample_update` samples the post-update return distribution of any stored checkpoint
under a user's pure update `update(state, key) -> params`: sample i is
θ_i = update(state, fold_in(PRNGKey(seed), i)), rolled out deterministically from the
run's reference state with the run's policy. It runs on the sampling engine
(`retland.purd.sampling.sample_distribution`), so it is chunked, resumable and its rows
go to post_update_returns under the operator id
`update[fn=PATH,state=DIGEST,h=H,seed=S]`, where DIGEST hashes the state: a call with
another state is another distribution, never an extension of this one.

A ready-made apply for policies that are plain MLPs is `retland.policies:mlp_apply`.
"""
from __future__ import annotations

import json
import re
import secrets
from datetime import datetime, timezone
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from retland.agents import get_agent
from retland.agents.policy import PolicyAgent, PolicyConfig, describe_mismatch, host_tree, tree_spec
from retland.core.envs import (check_backend, check_env, check_new_task, check_variant, default_backend, default_horizon,
                               default_variant, env_dims, is_dmc)
from retland.core.importpath import function_path
from retland.core.repro import reproducibility_record
from retland.purd.engine import AgentPolicy, SampleProgram
from retland.purd.operators import OperatorSpec, UserUpdate, sample_key, state_digest
from retland.purd.sampling import SampleResult, sample_distribution
from retland.train import checkpoints as ck
from retland.warehouse import Warehouse, WarehouseError

__all__ = ["add_policy", "sample_update", "ADDED_VARIANT"]

# External policies' default task rules: brax 0.14's own (what brax.envs trains on).
ADDED_VARIANT = "brax"
NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.]{0,39}$")
RESERVED = ("td3", "sac", "ppo")  # retland's trained algorithms and update operators


# ------------------------------------------------------------------------- add_policy

def _open(warehouse, create: bool) -> Warehouse:
    if isinstance(warehouse, Warehouse):
        return warehouse
    return Warehouse.open(warehouse, create=create, _how="pass warehouse=PATH")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _check_kwargs(apply_kwargs) -> dict:
    """The keywords as they will be stored and passed (JSON round trip)."""
    if apply_kwargs is None:
        return {}
    if not isinstance(apply_kwargs, dict):
        raise ValueError(f"apply_kwargs must be a dict of keyword arguments, got {type(apply_kwargs).__name__}")
    for key, value in apply_kwargs.items():
        if not isinstance(key, str):
            raise ValueError(f"apply_kwargs: key {key!r} is not a string")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"apply_kwargs[{key!r}] is not JSON-serialisable ({exc}): pass numbers, strings, "
                             "lists and dicts (arrays as lists)") from None
    return json.loads(json.dumps(apply_kwargs))


def _check_int(value, what: str, lo: int = 0, hi: int = 2**63 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= int(value) <= hi:
        raise ValueError(f"{what} must be a whole number in [{lo}, {hi}], got {value!r}")
    return int(value)


def check_policy(agent: PolicyAgent, params, obs_size: int, action_size: int, env: str) -> None:
    """Refuse params that do not fit apply: apply (jitted) on a zero observation of the
    env's size must return a finite action of the env's action size."""
    try:
        out = jax.jit(agent.policy)(params, jnp.zeros((obs_size,), jnp.float32))
        out = np.asarray(jax.device_get(out))
    except Exception as exc:  # the user's code: any failure is reported, in one line
        raise ValueError(f"apply {agent.apply} fails on these params and a zero observation of {env}'s size "
                         f"{obs_size}: {_first_line(exc)}") from None
    if out.shape != (action_size,):
        raise ValueError(f"apply {agent.apply} returns shape {out.shape} for one observation of {env}; "
                         f"the env takes actions of shape ({action_size},)")
    if not np.all(np.isfinite(out)):
        raise ValueError(f"apply {agent.apply} returns a non-finite action on a zero observation of {env}: {out}")


def _check_finite(tree, path: tuple = ()) -> None:
    """Refuse a parameter leaf holding inf or NaN, naming the leaf, before anything is stored."""
    from retland.agents.policy import _where

    if isinstance(tree, dict):
        for k, v in tree.items():
            _check_finite(v, path + (k,))
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            _check_finite(v, path + (i,))
    else:
        arr = np.asarray(tree, dtype=np.float64)
        bad = ~np.isfinite(arr)
        if bad.any():
            first = np.argwhere(bad)[0] if arr.ndim else ()
            raise ValueError(f"params at {_where(path)} hold {int(bad.sum())} non-finite value(s) "
                             f"(first {float(arr[tuple(first)])!r} at index {tuple(int(i) for i in first)}); "
                             "parameters must be finite")


def new_run_id(name: str, env: str, seed: int) -> str:
    """<name>-<env>-<UTC time>-<4 hex>-s<seed>, like a trained run's id."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{name}-{env}-{stamp}-{secrets.token_hex(2)}-s{seed}"


def add_policy(warehouse, *, env: str, apply: str | Callable, params, name: str, step: int = 0,
               apply_kwargs: dict | None = None, variant: str | None = None, backend: str | None = None,
               seed: int = 0, horizon: int | None = None) -> str:
    """Store a deterministic JAX policy as an added run with one checkpoint; returns its run id.

    env, backend, variant: the task the policy acts in (variant default "brax", brax
    0.14's tasks, backend default positional; "paper" for the paper's tasks, on Brax
    0.0.13's simulator, backend brax0013; a DeepMind Control task defaults to its own:
    variant dmc, backend mjx). apply: "package.module:function" or an
    importable function, called as apply(params, obs [O], **apply_kwargs) -> action [A].
    params: nested dicts/lists/tuples of float arrays. name: the run's algo label (a
    letter, then letters, digits, '_' or '.'; not td3/sac/ppo). step: the checkpoint's
    env step (e.g. how long the policy trained). seed: the policy's training seed, as
    recorded. horizon: rollout length of its distributions by default (the task's episode
    length: 1000).

    Every check runs before anything is written (ValueError/WarehouseError, one line)."""
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(f"name {name!r}: give a letter, then up to 39 letters, digits, '_' or '.' "
                         "(it is the run's algo and starts its id)")
    if name.lower() in RESERVED:
        raise ValueError(f"name {name!r} is one of retland's trained algorithms ({', '.join(RESERVED)}); "
                         "give your policy another name")
    check_env(env)
    variant = variant if variant is not None else (default_variant(env) if is_dmc(env) else ADDED_VARIANT)
    check_variant(variant, env)
    backend = backend if backend is not None else default_backend(env, variant)
    horizon = horizon if horizon is not None else default_horizon(env)
    check_backend(backend, env, variant), check_new_task(env, backend, variant)
    step = _check_int(step, "step")
    seed = _check_int(seed, "seed", 0, 2**31 - 1)
    horizon = _check_int(horizon, "horizon", 1)
    path = function_path(apply, "apply")
    kwargs = _check_kwargs(apply_kwargs)
    spec = tree_spec(params)
    if not jax.tree.leaves(params):
        raise ValueError("params hold no arrays")
    host = host_tree(params)
    _check_finite(host)
    obs_size, action_size = env_dims(env, backend, variant=variant)
    config = PolicyConfig(apply=path, apply_kwargs=kwargs, env=env, backend=backend, variant=variant,
                          horizon=horizon, obs_size=obs_size, action_size=action_size, params=spec)
    check_policy(PolicyAgent.of(config, name), host, obs_size, action_size, env)

    wh = _open(warehouse, create=True)
    run_id = new_run_id(name, env, seed)
    while wh.records("SELECT 1 FROM runs WHERE run_id = ?", [run_id]):  # same second, same 4 hex digits
        run_id = new_run_id(name, env, seed)
    stored = config.model_dump(mode="json")
    now = datetime.now(timezone.utc)
    # Files first, then the rows: the checkpoints row publishes them (a kill in between
    # leaves an orphan run, listed by `retland check`, never a row without its files).
    artifact = ck.save_state(wh, run_id, step, host)
    wh.append_many({  # one commit: the run and its checkpoint appear together or not at all
        "runs": [dict(run_id=run_id, algo=name, env=env, seed=seed, backend=backend, variant=variant,
                      source="added", parent_run_id=None, parent_step=None, config=json.dumps(stored),
                      repro=reproducibility_record(stored), created_at=now)],
        "checkpoints": [dict(run_id=run_id, step=step, artifact_path=artifact, eval_return=None,
                             replay_size=None, created_at=now)]}, command="add_policy")
    return run_id


# ---------------------------------------------------------------------- sample_update

def update_spec(update, state, horizon: int, seed: int) -> OperatorSpec:
    """The operator of a user update: its import path and the digest of its state."""
    path = function_path(update, "update")
    return OperatorSpec("update", (("fn", path), ("state", state_digest(state))), horizon, seed)


def sample_update(warehouse, run: str, step: int, *, update: str | Callable, state: Any, n: int, seed: int = 0,
                  horizon: int | None = None, batch_size: int | str = "auto", devices=None,
                  progress: Callable[[int], None] | None = None) -> SampleResult:
    """Sample the post-update return distribution of checkpoint (run, step) under your
    own update: θ_i = update(state, key_i), key_i = fold_in(PRNGKey(seed), i), for
    i < n, each rolled out from the run's reference state with the run's policy.

    update: "package.module:function" or an importable function, pure, jit-able,
    (state, key) -> params with the run's params structure (checked first). state: a
    pytree of arrays (optimizer state, data to draw a minibatch from, …); its digest is
    part of the operator id. horizon: default the run's. Resumable: a later call with
    the same update, state and seed computes only missing indices (batch_size must stay
    as recorded; "auto" reuses it). progress(n) is called after each chunk with the rows
    it added. Works on any run with stored parameters (added or trained).
    Returns the engine's SampleResult (operator_id, rows_written, …)."""
    wh = _open(warehouse, create=False)
    n = _check_int(n, "n", 1)
    seed = _check_int(seed, "seed", 0, 2**31 - 1)
    try:
        record = ck.run_record(wh, run)
    except ValueError as exc:
        raise WarehouseError(str(exc)) from None
    cfg = ck.run_config(record)
    horizon = _check_int(cfg.horizon if horizon is None else horizon, "horizon", 1)
    spec = update_spec(update, state, horizon, seed)
    ckpt = ck.load_checkpoint(wh, record["run_id"], step)
    agent = get_agent(ckpt.algo, ckpt.config)
    theta = agent.actor_params(ckpt.agent_state)
    make_params = UserUpdate(spec.param("fn"))
    try:
        out = jax.eval_shape(make_params, state, sample_key(spec.base_key, 0), jnp.int32(0))
    except Exception as exc:  # the user's code
        raise ValueError(f"update {spec.param('fn')} fails on this state: {_first_line(exc)}") from None
    wrong = describe_mismatch(out, jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype),
                                                theta), what="update's output")
    if wrong:
        raise ValueError(f"update {spec.param('fn')}: {wrong}")
    program = SampleProgram(ckpt.env, ckpt.backend, horizon, AgentPolicy(agent), make_params,
                            variant=ckpt.variant)
    return sample_distribution(wh, run_id=ckpt.run_id, step=ckpt.step, spec=spec, program=program, op_state=state,
                               n_samples=n, batch_size=batch_size, devices=devices, progress=progress)
