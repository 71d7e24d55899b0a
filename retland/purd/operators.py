"""Update operators and rollout perturbations: what defines a post-update distribution.

An `OperatorSpec` is parsed from the CLI text (`SYNTAX`)

    td3 | sac | ppo[:clip=C,rows=random|first] | bc | gaussian[:sigma] | action[:sigma]
        | init_state[:xF | :factor=F | :abs=A]

plus the horizon and key seed, and names itself with a canonical `operator_id` that
holds every parameter the distribution depends on, e.g.

    td3[h=1000,seed=0]
    ppo[clip=0.1,rows=first,h=1000,seed=0]
    gaussian[sigma=0.0003,h=1000,seed=0]
    action[sigma=0.1,h=1000,seed=0]
    init_state[factor=0.5,abs=0.0025,h=1000,seed=0]
    init_state[abs=0.0025,h=1000,seed=0]
    update[fn=mypkg.updates:adam_step,state=3f2a9c01d4e5b6a7,h=1000,seed=0]

Numbers are written with Python's shortest round-trip `repr`, so `gaussian:3e-4` and
`gaussian:0.0003` are the same operator. A parameter left at its default is left out
of the id, so `ppo` and `ppo:rows=random` are both `ppo[h=1000,seed=0]`. The env,
backend and discount are properties of the run (and γ is fixed, `rollout.GAMMA`), so they
are not part of the id.

Kinds (docs/method.md §5 Update operators):
- td3 / sac: one update of the agent (`retland.agents`), θ' = U(state, key_i).
- bc: a behaviour-cloning run's update (the paper's Appendix A.7): one more Adam step
  of the MSE BC objective on a fresh minibatch of the run's relabelled dataset.
- ppo: one update of the agent. Two parameters choose between retland's operator and
  the authors': `clip` = the global grad-norm clip of its one Adam step (default: the
  run's training clip, `max_grad_norm`, 1), `rows` = which B / num_minibatches rows of
  the fresh rollout it steps on: `random` (default, one random minibatch) or `first`
  (the first rows of the time-major batch: the first unroll_length / num_minibatches
  steps of every env). The authors' operator is `ppo:clip=0.1,rows=first`.
- gaussian(σ): θ' = θ + σ·ε, ε ~ N(0, I), one independent key per parameter tensor.
- action(σ): θ unchanged; every rollout action gets σ·N(0, I) noise, clipped to [-1, 1].
- init_state: θ unchanged; the rollout starts, instead of from s0, from the task's
  noisy reset with its noise scale set to A (the task's own reset law, docs/method.md
  §3: e.g. uniform within ±A on the joints). A is given either as a multiple F of the
  task's standard reset range (`envs.standard_reset_noise`: 5e-3 for hopper/walker2d,
  0.1 for ant/halfcheetah), `init_state:x0.5` or `init_state:factor=0.5`, the paper's
  unit (the authors' `init_state_noise_scale` multiplies the standard range); the id
  keeps F and the A it resolves to for the run's task. Or absolutely,
  `init_state:abs=0.0025`. Plain
  `init_state` is factor 1, the task's standard reset noise. A bare number
  (`init_state:0.01`) is refused: it does not say which unit it is in.
  Legacy: ids written before the units were explicit read `init_state[scale=A,...]`,
  with A absolute. They still parse and mean exactly that (`init_state:scale=A` names
  one again, so an old distribution can be extended); new distributions use
  `factor`/`abs`.
- update (Python only, `retland.sample_update`): a user's own pure update
  θ' = fn(state, key_i), with the state pytree they pass. The id records fn's import
  path and `state`, the first 16 hex digits of the sha256 of the state's structure and
  leaves (`state_digest`), so a call with another state is another distribution. The
  command line cannot rebuild the state, so `parse_operator` refuses the kind.

Start state: by default a rollout starts from the fixed reference state s0, and the id
says nothing about it. A distribution whose rollouts start at replay row r of the
checkpoint's buffer (`retland.core.startstates`, docs/method.md "Post-update returns
from other start states") has `start=row<r>` before h in its id, e.g.
`td3[start=row5000,h=1000,seed=0]`, and `start_row` in its params, so it is a
distribution of its own with the same keys (sample i of every start row applies the
same update θ_i). init_state draws its own start, so it takes no start row.

Key use per sample i: key_i = fold_in(PRNGKey(seed), i). The parameter operator gets
key_i itself; a rollout perturbation draws from fold_in(key_i, 1).
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Union

import jax
import numpy as np

from retland.core import rollout
from retland.core.envs import standard_reset_noise
from retland.core.importpath import PATH as IMPORT_PATH
from retland.core.importpath import resolve
from retland.config.registry import ALGOS, is_discrete
from retland.config.settings import ACTION_SIGMA, GAUSSIAN_SIGMA

AGENT_KINDS = ALGOS  # each algorithm's own training update
USER_KINDS = ("update",)  # sampled from Python with the user's state (retland.sample_update)
PARAM_KINDS = AGENT_KINDS + ("gaussian",) + USER_KINDS
ROLLOUT_KINDS = ("action", "init_state")
KINDS = PARAM_KINDS + ROLLOUT_KINDS

SYNTAX = ("td3 | sac | ppo[:clip=C,rows=random|first] | bc | gaussian[:sigma] | action[:sigma] | "
          "init_state[:xF | :factor=F | :abs=A]")

# Each kind's parameters in id order. init_state holds (factor, abs) or (abs,), or the
# legacy (scale,) of ids written before the units were explicit.
_PARAM_ORDER = {"ppo": ("clip", "rows"), "gaussian": ("sigma",), "action": ("sigma",),
                "init_state": ("factor", "abs", "scale"), "update": ("fn", "state")}
STATE_DIGEST = re.compile(r"^[0-9a-f]{16}$")
SAMPLE_UPDATE = ("operator update is your own update function with its own state, which the command line "
                 "cannot rebuild: sample it from Python with retland.sample_update(warehouse, run, step, "
                 "update=..., state=..., n=...)")
_INIT_STATE_FORMS = ({"factor", "abs"}, {"abs"}, {"scale"})
PPO_ROWS = ("random", "first")
# Left out of the id: the value means the same as leaving the parameter out.
_DEFAULTS = {("ppo", "rows"): "random"}

Value = Union[float, str]


def _num(x: float) -> str:
    return repr(float(x))


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class OperatorSpec:
    """kind + its parameters + horizon + key seed = one distribution per checkpoint.

    `params` may come in any order; they are kept in the kind's canonical order, with
    parameters at their default (ppo rows=random) dropped."""
    kind: str
    params: tuple[tuple[str, Value], ...] = ()
    horizon: int = 1000
    seed: int = 0
    start: int | None = None  # replay row the rollouts start at; None = s0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown operator kind {self.kind!r}: {SYNTAX}")
        if not 1 <= self.horizon <= 2**31 - 1:  # an int32 column (operators.horizon, episode lengths)
            raise ValueError(f"horizon must be in [1, {2**31 - 1}], got {self.horizon}")
        if self.seed < 0:
            raise ValueError(f"operator seed must be >= 0, got {self.seed}")
        if self.start is not None:
            if isinstance(self.start, bool) or not isinstance(self.start, (int, np.integer)) or self.start < 0:
                raise ValueError(f"start row must be a whole number >= 0, got {self.start!r}")
            if self.kind == "init_state":
                raise ValueError("operator init_state draws its own start state (a noisy reset); it takes no "
                                 "start row")
            object.__setattr__(self, "start", int(self.start))
        given = dict(self.params)
        if len(given) != len(self.params):
            raise ValueError(f"operator {self.kind}: a parameter is given twice in {self.params!r}")
        order = _PARAM_ORDER.get(self.kind, ())
        unknown = [name for name in given if name not in order]
        if unknown:
            takes = f"takes {', '.join(order)}" if order else "takes no parameters"
            raise ValueError(f"operator {self.kind} {takes}; got {', '.join(map(repr, unknown))}")
        for name, value in given.items():
            if self.kind == "update":
                if name == "fn" and not (isinstance(value, str) and IMPORT_PATH.match(value)):
                    raise ValueError(f"operator update: fn={value!r} must be an import path 'package.module:function'")
                if name == "state" and not (isinstance(value, str) and STATE_DIGEST.match(value)):
                    raise ValueError(f"operator update: state={value!r} must be 16 hex digits (state_digest)")
            elif self.kind == "ppo" and name == "rows":
                if value not in PPO_ROWS:
                    raise ValueError(f"operator ppo: rows={value!r} must be one of {', '.join(PPO_ROWS)}")
            elif not _finite(value):
                raise ValueError(f"operator {self.kind}: {name}={value!r} must be a finite number")
            elif self.kind == "ppo" and value <= 0:
                raise ValueError(f"operator ppo: {name}={value!r} must be > 0 (a grad-norm clip)")
            elif value < 0:
                raise ValueError(f"operator {self.kind}: {name}={value!r} must be >= 0")
        if self.kind == "update" and set(given) != {"fn", "state"}:
            raise ValueError(f"operator update needs fn and state; got {', '.join(given) or 'none'}")
        if self.kind in ("gaussian", "action") and not given:
            raise ValueError(f"operator {self.kind} needs sigma")
        if self.kind == "init_state" and set(given) not in _INIT_STATE_FORMS:
            raise ValueError(f"operator init_state needs factor and abs, abs alone, or the legacy scale; "
                             f"got {', '.join(given) or 'none'}")
        canonical = tuple((name, float(given[name]) if _finite(given[name]) else given[name])
                          for name in order if name in given and _DEFAULTS.get((self.kind, name)) != given[name])
        object.__setattr__(self, "params", canonical)

    @property
    def operator_id(self) -> str:
        parts = [f"{k}={_num(v) if isinstance(v, float) else v}" for k, v in self.params]
        if self.start is not None:
            parts.append(f"start=row{self.start}")
        parts += [f"h={self.horizon}", f"seed={self.seed}"]
        return f"{self.kind}[{','.join(parts)}]"

    def param(self, name: str) -> Value:
        return dict(self.params)[name]

    @property
    def params_json(self) -> str:
        """The `params` column of the `operators` table."""
        doc: dict[str, Any] = dict(self.params)
        doc.update(horizon=self.horizon, seed=self.seed, gamma=rollout.GAMMA,
                   key="key_i = fold_in(PRNGKey(seed), i)")
        if self.start is not None:
            doc["start_row"] = self.start
        return json.dumps(doc, sort_keys=True)

    @classmethod
    def from_row(cls, kind: str, params_json: str) -> OperatorSpec:
        """The spec behind a row of the `operators` table (inverse of `operators_row`)."""
        doc = json.loads(params_json)
        params = tuple((k, v if isinstance(v, str) else float(v)) for k, v in doc.items()
                       if k not in ("horizon", "seed", "gamma", "key", "start_row"))
        start = doc.get("start_row")
        return cls(kind, params, int(doc["horizon"]), int(doc["seed"]), None if start is None else int(start))

    def at_start(self, row: int | None) -> OperatorSpec:
        """The same operator with its rollouts starting at replay row `row` (None: s0)."""
        return OperatorSpec(self.kind, self.params, self.horizon, self.seed, row)

    def operators_row(self) -> dict:
        return {"operator_id": self.operator_id, "kind": self.kind, "params": self.params_json}

    @property
    def base_key(self) -> jax.Array:
        return jax.random.PRNGKey(self.seed)

    @property
    def changes_params(self) -> bool:
        return self.kind in PARAM_KINDS

    @property
    def reset_half_width(self) -> float:
        """init_state: the absolute half-width A of the reset noise (abs, or legacy scale)."""
        if self.kind != "init_state":
            raise ValueError(f"operator {self.kind} does not perturb the reset")
        params = dict(self.params)
        return float(params["abs"] if "abs" in params else params["scale"])


def _split_items(kind: str, body: str, text: str) -> tuple[list[str], dict[str, str]]:
    """'x0.5' -> (['x0.5'], {}); 'clip=0.1, rows=first' -> ([], {'clip': '0.1', 'rows': 'first'})."""
    bare: list[str] = []
    named: dict[str, str] = {}
    for item in (part.strip() for part in body.split(",")):
        if not item:
            raise ValueError(f"operator {text!r}: empty parameter (write {kind}:name=value,name=value)")
        name, eq, value = item.partition("=")
        if not eq:
            bare.append(item)
            continue
        name, value = name.strip(), value.strip()
        if name in named:
            raise ValueError(f"operator {text!r}: {name} is given twice")
        named[name] = value
    return bare, named


def _number(text: str, name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"operator {text!r}: {name} {value!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"operator {text!r}: {name} {value!r} must be a finite number")
    return number


def _build(text: str, horizon: int, seed: int, reset_range: Callable[[], float]) -> OperatorSpec:
    kind, sep, body = text.strip().partition(":")
    kind, body = kind.strip(), body.strip()
    if kind.split("[", 1)[0] in USER_KINDS:
        raise ValueError(SAMPLE_UPDATE)
    if kind not in KINDS:
        raise ValueError(f"unknown operator {text!r}: expected {SYNTAX}")
    bare, named = _split_items(kind, body, text) if sep and body else ([], {})
    if kind in ("td3", "sac", "bc"):
        if sep:
            raise ValueError(f"operator {kind} takes no parameters (got {text!r})")
        return OperatorSpec(kind, (), horizon, seed)
    if kind == "ppo":
        if bare:
            raise ValueError(f"operator {text!r}: ppo takes named parameters only: ppo:clip=C,rows=random|first")
        params: list[tuple[str, Value]] = []
        for name, value in named.items():
            if name == "clip":
                params.append((name, _number(text, name, value)))
            elif name == "rows":
                params.append((name, value))
            else:
                raise ValueError(f"operator {text!r}: unknown ppo parameter {name!r} (ppo takes clip and rows)")
        return OperatorSpec(kind, tuple(params), horizon, seed)
    if len(bare) + len(named) > 1:
        raise ValueError(f"operator {text!r}: {kind} takes one value; expected {SYNTAX}")
    if kind in ("gaussian", "action"):
        if named and "sigma" not in named:
            raise ValueError(f"operator {text!r}: unknown {kind} parameter {next(iter(named))!r} ({kind} takes sigma)")
        value = named.get("sigma", bare[0] if bare else None)
        if value is None:
            sigma = GAUSSIAN_SIGMA if kind == "gaussian" else ACTION_SIGMA
        else:
            sigma = _number(text, "sigma", value)
        return OperatorSpec(kind, (("sigma", sigma),), horizon, seed)
    # init_state
    if bare and not bare[0].startswith("x"):
        raise ValueError(f"operator {text!r}: say which unit {bare[0]!r} is in: init_state:x{bare[0]} (times the "
                         f"task's standard reset range, the paper's unit) or init_state:abs={bare[0]} (absolute)")
    if bare:
        named = {"factor": bare[0][1:]}
    name, value = next(iter(named.items())) if named else ("factor", "1")
    if name not in ("factor", "abs", "scale"):
        raise ValueError(f"operator {text!r}: unknown init_state parameter {name!r} "
                         "(init_state takes xF, factor=F or abs=A)")
    number = _number(text, "factor" if bare else name, value)
    if number < 0:
        raise ValueError(f"operator {text!r}: {name} {value!r} must be >= 0")
    if name != "factor":
        return OperatorSpec(kind, ((name, number),), horizon, seed)
    # F × the standard range, to 12 significant digits so 3 × 0.1 reads abs=0.3 in the id.
    half_width = float(f"{number * reset_range():.12g}")
    return OperatorSpec(kind, (("factor", number), ("abs", half_width)), horizon, seed)


def parse_operator(text: str, *, env: str | None = None, horizon: int = 1000, seed: int = 0) -> OperatorSpec:
    """'gaussian:3e-4' -> OperatorSpec('gaussian', (('sigma', 0.0003),), horizon, seed).

    `env` is needed only to resolve an `init_state` given as a factor of the task's
    standard reset range (plain `init_state`, `init_state:x0.5`, `init_state:factor=0.5`).
    """
    def reset_range() -> float:
        if env is None:
            raise ValueError(f"operator {text!r}: init_state as a factor of the standard reset range "
                             "needs the env (its standard reset noise)")
        standard = standard_reset_noise(env)
        if standard == 0:  # e.g. Playground starts humanoid at its default pose
            raise ValueError(f"operator {text!r}: {env}'s standard reset noise is 0 (it starts from a fixed pose), "
                             "so a factor of it is no noise; give init_state:abs=A, for DeepMind Control tasks a "
                             "fraction A in (0, 1] of the joint ranges")
        return standard

    spec = _build(text, horizon, seed, reset_range)
    if spec.kind == "action" and env is not None and is_discrete(env):
        raise ValueError(f"operator {text!r}: action noise perturbs continuous actions, and {env} has discrete "
                         "ones; perturb the parameters (gaussian) or the start state (init_state) instead")
    return spec


def check_operator(text: str, *, horizon: int = 1000, seed: int = 0) -> None:
    """Refuse bad operator text (ValueError, one line) without knowing the env: what
    `parse_operator` checks, for every env."""
    _build(text, horizon, seed, lambda: 1.0)


_START_ROW = re.compile(r"[\[,]start=row\d+,")


def has_start_row(operator_id: str) -> bool:
    """Whether an operator id's rollouts start at a replay row rather than at s0."""
    return bool(_START_ROW.search(operator_id or ""))


def sample_key(base_key: jax.Array, index) -> jax.Array:
    """key_i of sample i."""
    return jax.random.fold_in(base_key, index)


def rollout_key(key_i: jax.Array) -> jax.Array:
    """The key a rollout perturbation (action noise, reset noise) of sample i draws from."""
    return jax.random.fold_in(key_i, 1)


def gaussian_perturb(params, key: jax.Array, sigma: float):
    """θ + σ·ε with an independent key per tensor (leaf order of jax.tree)."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    noisy = [x + sigma * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys)]
    return jax.tree.unflatten(treedef, noisy)


def state_digest(state) -> str:
    """16 hex digits of the sha256 of a pytree's structure and of every leaf's dtype,
    shape and bytes: what tells two states of a user update apart in its operator id."""
    leaves, treedef = jax.tree.flatten(state)
    h = hashlib.sha256(str(treedef).encode())
    for leaf in leaves:
        if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        arr = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:16]


# Parameter functions for the sampling engine: (op_state, key_i, i) -> actor params.
# Frozen dataclasses (not closures) so equal operators compare equal and share one
# compiled chunk program per process.


@dataclass(frozen=True)
class Identity:
    """θ unchanged (rollout perturbations): op_state is the actor params."""
    def __call__(self, op_state, key, index):
        return op_state


@dataclass(frozen=True)
class Gaussian:
    """gaussian(σ): op_state is the actor params θ."""
    sigma: float

    def __call__(self, op_state, key, index):
        return gaussian_perturb(op_state, key, self.sigma)


@dataclass(frozen=True)
class AgentUpdate:
    """td3/sac/ppo: op_state is `agent.operator_state(checkpoint)`; agent from
    `retland.agents.get_agent(algo, checkpoint.config)` (a frozen dataclass). `options`
    are the operator's static parameters, passed to `agent.update` as keywords (ppo:
    clip, rows); none for td3/sac."""
    agent: Any
    options: tuple[tuple[str, Value], ...] = ()

    def __call__(self, op_state, key, index):
        return self.agent.update(op_state, key, **dict(self.options))


@dataclass(frozen=True)
class UserUpdate:
    """update: op_state is the user's state; θ' = fn(state, key_i), fn imported by path."""
    fn: str

    def __call__(self, op_state, key, index):
        return resolve(self.fn, "update")(op_state, key)


def params_function(spec: OperatorSpec, agent=None):
    """The engine's (op_state, key_i, i) -> θ_i for this operator. A user update's
    program is built by `retland.sample_update`, which holds its state."""
    if spec.kind in USER_KINDS:
        raise ValueError(f"{spec.operator_id}: {SAMPLE_UPDATE}")
    if spec.kind in AGENT_KINDS:
        if agent is None or agent.algo != spec.kind:
            raise ValueError(f"operator {spec.kind} needs a {spec.kind} agent, got {getattr(agent, 'algo', None)!r}")
        return AgentUpdate(agent, spec.params)
    if spec.kind == "gaussian":
        return Gaussian(spec.param("sigma"))
    return Identity()


def rollout_perturbation(spec: OperatorSpec) -> tuple[float, float]:
    """(action noise σ, reset noise half-width) of the rollout; (0, 0) = deterministic from s0."""
    if spec.kind == "action":
        return spec.param("sigma"), 0.0
    if spec.kind == "init_state":
        return 0.0, spec.reset_half_width
    return 0.0, 0.0
