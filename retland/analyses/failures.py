"""Failure trajectories (docs/method.md §6.2 Failures; §3.2, Fig. 3, A.8).

Which checkpoints: given (`plan(run, step)`), or chosen by a selector among the sampled
ones with LTP > 0 and a positive mode (`choose`): `top-ltp:K` or `random:K` (seeded, the
paper's §3.2 random choice), overall or per env.

For a checkpoint whose post-update return distribution has LTP > 0, pick by update index
a *successful* sample (return within 10% of the PURD mean) and a *failing* one (return
< 50% of the PURD mode), the lowest qualifying indices first, and re-roll both with the
per-step rollout record.

Re-rolling is exact, not approximate: θ_i is regenerated from the same operator and key
(key_i = fold_in(PRNGKey(seed), i)) by the sampler's own chunk program in its per-step
variant (`engine.chunk_function(program, per_step=True)`), inside a chunk of the
distribution's recorded size B holding the same indices as when it was sampled, since
XLA's arithmetic depends on the batch shape and returns are chaotic in θ. The re-rolled return must equal the stored
one bit for bit (as float32), otherwise nothing is written.

Torso height and pitch come from the observation the action of step t was computed from,
read in the run's task variant's layout (`body_state`): variant brax, hopper, walker2d and
halfcheetah: qpos[1], qpos[2]; variant paper, z and the rotation about y of the torso
quaternion; ant (both): z and the pitch of the torso quaternion.

Added runs (`retland.add_policy`) are re-rolled like any other, with their gaussian,
action or init_state distributions; a user update's (`retland.sample_update`) is refused:
its state lives in the user's process, not in the warehouse.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from retland.config.requests import Bar, bar, options
from retland.core.envs import reference_state
from retland.purd import engine, sampling
from retland.purd.operators import KINDS, OperatorSpec, has_start_row
from retland.train.checkpoints import load_checkpoint
from retland.warehouse.sqlgen import in_list

SUCCESS_TOLERANCE = 0.1  # |R − mean| <= 0.1·|mean|
FAILURE_BETA = 0.5  # R < 0.5·mode


class FailureError(ValueError):
    """A request that cannot be honoured; the message names what is wrong."""


# ----------------------------------------------------------------------- selection

def select(returns: np.ndarray, indices: np.ndarray, mean: float, mode: float, pairs: int = 1) -> list[tuple[int, int]]:
    """[(success index, failure index)] × up to `pairs`, lowest update indices first.

    success: |R − mean| <= 0.1·|mean|; failure: R < 0.5·mode (strict)."""
    order = np.argsort(indices, kind="stable")
    r, idx = np.asarray(returns, np.float64)[order], np.asarray(indices)[order]
    success = idx[np.abs(r - mean) <= SUCCESS_TOLERANCE * abs(mean)]
    failure = idx[r < FAILURE_BETA * mode]
    n = min(pairs, len(success), len(failure))
    return [(int(success[i]), int(failure[i])) for i in range(n)]


def spec_of(wh, operator_id: str) -> OperatorSpec:
    """The OperatorSpec behind a stored operator id (refused for imported operators)."""
    rows = wh.query("SELECT kind, params FROM operators WHERE operator_id = ?", [operator_id]).to_dicts()
    if not rows:
        raise FailureError(f"operator {operator_id!r} is not in the operators table")
    kind = rows[0]["kind"]
    if kind == "update":
        raise FailureError(f"operator {operator_id} is a user update sampled with retland.sample_update; its state "
                           "is not stored, so its samples cannot be re-rolled here")
    if kind not in KINDS:
        raise FailureError(f"operator {operator_id} ({kind}) cannot be re-rolled: it was not sampled by retland")
    spec = OperatorSpec.from_row(kind, rows[0]["params"])  # string parameters too (ppo rows=first)
    if spec.start is not None:
        raise FailureError(f"operator {operator_id}: its rollouts start at replay row {spec.start}, and failure "
                           "pairs are re-rolled from s0; choose the operator without start=row")
    if spec.operator_id != operator_id:
        raise FailureError(f"operator {operator_id}: its stored parameters rebuild {spec.operator_id}")
    return spec


@dataclass
class FailurePlan:
    run_id: str
    step: int
    operator_id: str
    n: int
    mean: float
    mode: float
    ltp: float
    chunk_size: int
    pairs: list[tuple[int, int]]
    stored: dict[int, float]  # update index -> stored return


def pair_id(run_id: str, step: int, operator_id: str, success: int, failure: int) -> str:
    return f"{run_id}@{step}/{operator_id}/{success}-{failure}"


def only_distribution(wh, run_id: str, step: int, operator: str | None, error: type = FailureError) -> str:
    """The operator id of the one stored distribution of (run, step) that `operator` (an
    id or a kind; None: any) names; `error` (one line) when there is none or several."""
    ops = wh.query("SELECT DISTINCT operator_id FROM post_update_returns WHERE run_id = ? AND step = ? "
                   "ORDER BY operator_id", [run_id, int(step)])["operator_id"].to_list()
    if not ops:
        raise error(f"no post-update returns of run {run_id} at step {step}; run `retland sample` first")
    if operator is not None:
        ops = [o for o in ops if o == operator or o.split("[", 1)[0] == operator]
        if not ops:
            raise error(f"run {run_id} step {step} has no {operator!r} distribution")
    if len(ops) > 1:
        raise error(f"run {run_id} step {step} has several distributions ({', '.join(ops)}); "
                    "pick one with --operator OPERATOR_ID")
    return ops[0]


def plan(wh, run_id: str, step: int, operator: str | None = None, pairs: int = 1) -> FailurePlan:
    """Find the distribution, check LTP > 0 and pick the pairs; nothing is computed."""
    if pairs < 1:
        raise FailureError(f"--pairs must be >= 1, got {pairs}")
    operator_id = only_distribution(wh, run_id, step, operator)
    st = wh.query("SELECT n, mean, mode, ltp, mode_nonpositive FROM distribution_stats WHERE run_id = ? AND step = ? "
                  "AND operator_id = ?", [run_id, int(step), operator_id]).to_dicts()[0]
    if st["mode_nonpositive"] or st["ltp"] <= 0:
        # mode <= 0: "below half the mode" is not a failure of a policy that usually does well
        why = "mode <= 0, so returns below half of it are not failures" if st["mode_nonpositive"] else \
            f"LTP = {st['ltp']}"
        raise FailureError(f"run {run_id} step {step} {operator_id}: no failures to explain ({why}; "
                           f"n = {st['n']}, mean = {st['mean']:.1f}, mode = {st['mode']:.1f}); "
                           "failure pairs need a checkpoint with LTP > 0")
    rows = wh.query("SELECT update_index, \"return\", chunk_size FROM post_update_returns WHERE run_id = ? "
                    "AND step = ? AND operator_id = ?", [run_id, int(step), operator_id])
    sizes = set(rows["chunk_size"].drop_nulls().to_list())
    if len(sizes) != 1:
        raise FailureError(f"run {run_id} step {step} {operator_id}: rows have chunk sizes {sorted(sizes)}; "
                           "the samples cannot be re-rolled exactly")
    chosen = select(rows["return"].to_numpy(), rows["update_index"].to_numpy(), st["mean"], st["mode"], pairs)
    if not chosen:
        raise FailureError(f"run {run_id} step {step} {operator_id}: no sample within 10% of the mean "
                           f"({st['mean']:.1f}) or none below half the mode ({st['mode']:.1f})")
    stored = dict(zip(rows["update_index"].to_list(), rows["return"].to_list()))
    return FailurePlan(run_id, int(step), operator_id, int(st["n"]), float(st["mean"]), float(st["mode"]),
                  float(st["ltp"]), int(sizes.pop()), chosen, stored)


# ------------------------------------------------------------- choosing checkpoints

SELECTOR_KINDS = ("top-ltp", "random")


@dataclass(frozen=True)
class Selector:
    """How to choose checkpoints with failures: `top-ltp:K`, the K with the highest LTP
    (ties by run id, step), or `random:K`, K drawn uniformly without replacement with a
    recorded seed (the paper's §3.2 takes random policies with LTP > 0)."""
    kind: str
    k: int

    @property
    def text(self) -> str:
        return f"{self.kind}:{self.k}"


def parse_selector(text: str) -> Selector:
    """'top-ltp:K' or 'random:K' (K >= 1); anything else is a one-line ValueError."""
    kind, sep, k = str(text).strip().partition(":")
    kind, k = kind.strip(), k.strip()
    if not sep or kind not in SELECTOR_KINDS or not k.isdigit() or int(k) < 1:
        raise ValueError(f"{text!r}: expected top-ltp:K or random:K with K >= 1, e.g. random:10")
    return Selector(kind, int(k))


@dataclass(frozen=True)
class Candidate:
    """A checkpoint whose distribution (under `operator_id`) has failures to explain."""
    env: str
    run_id: str
    step: int
    operator_id: str
    ltp: float


def _env_seed(seed: int, env: str) -> list[int]:
    import zlib

    return [int(seed), zlib.crc32(env.encode())]


def order_candidates(candidates: list[Candidate], selector: Selector, seed: int = 0,
                     per_env: bool = False) -> list[list[Candidate]]:
    """Every candidate in the order the selector prefers them, as one list (or one per
    env, in env order, with `per_env`). A caller takes the first K of each list that it
    can use (e.g. that has a success/failure pair), so skipping one never changes which
    others are chosen.

    top-ltp: highest LTP first, ties by run id, step. random: a uniformly random
    permutation of the candidates sorted canonically (env, run id, step, operator), drawn
    with numpy.random.default_rng(seed), or default_rng([seed, crc32(env)]) per env, so
    the seed and the stored distributions fix the draw, whatever order rows are read in."""
    canonical = sorted(candidates, key=lambda c: (c.env, c.run_id, c.step, c.operator_id))
    groups = ([[c for c in canonical if c.env == env] for env in sorted({c.env for c in canonical})]
              if per_env else [canonical])
    out = []
    for group in groups:
        if selector.kind == "top-ltp":
            out.append(sorted(group, key=lambda c: (-c.ltp, c.run_id, c.step, c.operator_id)))
        else:
            rng = np.random.default_rng(_env_seed(seed, group[0].env) if per_env and group else int(seed))
            out.append([group[i] for i in rng.permutation(len(group))])
    return out


def candidates(wh, *, env: str | None = None, algo: str | None = None, operator: str | None = None,
               where: str | None = None, sources: tuple[str, ...] = ("trained",)) -> list[Candidate]:
    """Stored checkpoints whose distribution has LTP > 0 and a positive mode (a mode <= 0
    has no "failures": every return is below half of a usual one), under `operator` (an
    operator id or kind; default each run's own update: id = algo or algo[...]), among
    runs of `sources`, `env`, `algo` and the SQL condition `where` (over the columns of
    `retland stats`). A checkpoint with several matching operator ids is refused: name one."""
    from retland.analyses.distributions import distribution_stats

    df = distribution_stats(wh, where=where, sources=sources)
    rows = []
    for r in df.iter_rows(named=True):
        if env is not None and r["env"] != env or algo is not None and r["algo"] != algo:
            continue
        if not r["ltp"] or r["ltp"] <= 0 or r["mode_nonpositive"]:
            continue
        op, want = r["operator"], operator if operator is not None else (r["algo"] or "")
        if not (op == want or op.startswith(want + "[")) or has_start_row(op):
            continue  # failure pairs are re-rolled from s0: not from replay rows
        rows.append(Candidate(r["env"] or "", r["run_id"], int(r["step"]), op, float(r["ltp"])))
    seen: dict[tuple[str, int], str] = {}
    for c in rows:
        other = seen.setdefault((c.run_id, c.step), c.operator_id)
        if other != c.operator_id:
            which = f"operator {operator!r}" if operator else "its own update"
            raise FailureError(f"run {c.run_id} step {c.step} has several distributions matching {which} "
                               f"({other}, {c.operator_id}); choose one with --operator OPERATOR_ID")
    return rows


def choose(wh, selector: Selector | str, *, seed: int = 0, per_env: bool = False, pairs: int = 1,
           **filters) -> tuple[list[FailurePlan], list[Candidate]]:
    """The plans of the checkpoints a selector chooses among `candidates(wh, **filters)`:
    the first K in the selector's order (per env with `per_env`) that have a
    success/failure pair; also returns the candidates passed over (no sample within 10%
    of the mean, e.g. a bimodal distribution). Nothing is computed."""
    selector = parse_selector(selector) if isinstance(selector, str) else selector
    found = candidates(wh, **filters)
    if not found:
        scope = ", ".join(f"{k} {v!r}" for k, v in filters.items() if v is not None and k != "sources") or "the warehouse"
        raise FailureError(f"{selector.text}: no sampled checkpoint with LTP > 0 (and a positive mode) in {scope}; "
                           "nothing to explain (retland stats --where \"ltp > 0 AND NOT mode_nonpositive\" "
                           "lists the candidates)")
    plans, passed = [], []
    for group in order_candidates(found, selector, seed, per_env):
        taken = 0
        for c in group:
            if taken == selector.k:
                break
            try:
                plans.append(plan(wh, c.run_id, c.step, c.operator_id, pairs))
                taken += 1
            except FailureError:
                passed.append(c)
    return plans, passed


# ------------------------------------------------------------------------- re-roll

def _planar_pitch(w: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The angle θ of a rotation about the y axis from its quaternion (cos θ/2, 0, sin θ/2, 0),
    in (−π, π] (q and −q are one rotation)."""
    return np.angle(np.exp(2j * np.arctan2(y, w)))


def body_state(env: str, obs: np.ndarray, variant: str | None = "brax") -> tuple[np.ndarray, np.ndarray]:
    """(torso height, torso pitch) [T] from observations [T, O] of the run's task variant.

    brax variant (and runs stored before variants, `None`): hopper, walker2d and
    halfcheetah observe q without x, so obs[:, 1] is the root's pitch angle. paper
    variant (Brax 0.0.13's observations, docs/method.md §3): hopper and walker2d observe
    [z, torso quaternion w, x, y, z, ...], halfcheetah [z, quaternion w, y, ...]; the
    pitch is the quaternion's rotation about y. ant (both variants): [z, quaternion, ...],
    pitch = asin(2(wy − zx))."""
    from retland.core import dmc

    if dmc.is_dmc(env):
        return dmc.body_state(env, obs)
    from retland.config.registry import is_minatar
    if is_minatar(env):  # a game's screen: no body, so no height or pitch
        nan = np.full(len(obs), np.nan)
        return nan, nan
    if env == "ant":
        w, x, y, z = obs[:, 1], obs[:, 2], obs[:, 3], obs[:, 4]
        return obs[:, 0], np.arcsin(np.clip(2 * (w * y - z * x), -1.0, 1.0))
    if variant == "paper":
        if env == "halfcheetah":
            return obs[:, 0], _planar_pitch(obs[:, 1], obs[:, 2])
        if env in ("hopper", "walker2d"):
            return obs[:, 0], _planar_pitch(obs[:, 1], obs[:, 3])
        raise ValueError(f"body_state: no paper observation layout known for env {env!r}")
    return obs[:, 0], obs[:, 1]


def reroll(wh, target: FailurePlan, checkpoint=None) -> dict[int, dict[str, np.ndarray]]:
    """Per-step records of every chosen index: {index: {reward, cumulative_return, done,
    torso_height, torso_pitch, pose, ret}}; FailureError if a return does not reproduce."""
    wanted = sorted({i for pair in target.pairs for i in pair})
    return reroll_indices(wh, target.run_id, target.step, target.operator_id, target.chunk_size, wanted,
                          target.stored, checkpoint)


def reroll_indices(wh, run_id: str, step: int, operator_id: str, chunk_size: int, wanted, stored: dict[int, float],
                   checkpoint=None) -> dict[int, dict[str, np.ndarray]]:
    """`reroll` of the samples `wanted` of one distribution (chunk size B, stored returns
    {index: return}). pose [T + 1, P]: the simulator's pose at s0 and after every step
    (`retland.core.rollout.pose`), what `retland render` draws."""
    from retland.core.rollout import pose

    spec = spec_of(wh, operator_id)
    ckpt = checkpoint or load_checkpoint(wh, run_id, step)
    program, op_state = sampling.checkpoint_program(spec, ckpt)
    b = int(chunk_size)
    wanted = sorted({int(i) for i in wanted})
    s0 = reference_state(ckpt.env, ckpt.backend, variant=ckpt.variant)
    pose0 = np.asarray(jax.device_get(pose(s0)), np.float64)
    out: dict[int, dict[str, np.ndarray]] = {}
    for k in sorted({i // b for i in wanted}):
        idx = engine.chunk_indices(k, b)
        fn = engine.chunk_function(program, per_step=True)
        summary, steps = jax.device_get(fn(op_state, s0, spec.base_key, jnp.asarray(idx)))
        for j, i in enumerate(idx):
            if int(i) not in wanted:
                continue
            got, want = float(np.float32(summary.ret[j])), stored[int(i)]
            if got != want:
                raise FailureError(
                    f"update index {i}: re-rolled return {got!r} != stored {want!r} (chunk {k}, B={b}); the "
                    "sample cannot be reproduced on this platform/XLA build, nothing was written")
            alive = np.asarray(steps.alive[j])
            reward = np.where(alive, np.asarray(steps.reward[j], np.float64), 0.0)
            ended = np.logical_or.accumulate(np.asarray(steps.done[j]) & alive)
            height, pitch = body_state(ckpt.env, np.asarray(steps.obs[j], np.float64), ckpt.variant)
            poses = np.concatenate([pose0[None], np.asarray(steps.pose[j], np.float64)])
            out[int(i)] = {"reward": reward, "cumulative_return": np.cumsum(reward), "done": ended,
                           "torso_height": height, "torso_pitch": pitch, "pose": poses,
                           "episode_length": int(alive.sum()), "ret": got}
    return out


def store(wh, target: FailurePlan, records: dict[int, dict[str, np.ndarray]]) -> int:
    """Append the pairs' trajectories not stored yet; returns rows written."""
    have = set(wh.query("SELECT DISTINCT pair_id FROM trajectories WHERE run_id = ? AND step = ? AND operator_id = ?",
                        [target.run_id, target.step, target.operator_id])["pair_id"].to_list())
    cols: dict[str, list] = {}
    for s, f in target.pairs:
        pid = pair_id(target.run_id, target.step, target.operator_id, s, f)
        if pid in have:
            continue
        for role, i in (("success", s), ("failure", f)):
            rec = records[i]
            T = len(rec["reward"])
            part = {"pair_id": [pid] * T, "role": [role] * T, "t": np.arange(T, dtype=np.int32),
                    "run_id": [target.run_id] * T, "step": np.full(T, target.step, np.int64),
                    "operator_id": [target.operator_id] * T, "update_index": np.full(T, i, np.int64),
                    "reward": rec["reward"], "cumulative_return": rec["cumulative_return"], "done": rec["done"],
                    "torso_height": rec["torso_height"], "torso_pitch": rec["torso_pitch"],
                    "stored_return": np.full(T, target.stored[i], np.float64)}
            for name, v in part.items():
                cols.setdefault(name, []).append(np.asarray(v))
    if not cols:
        return 0
    return wh.append("trajectories", {k: np.concatenate(v) for k, v in cols.items()})


def missing_pairs(wh, target: FailurePlan) -> list[tuple[int, int]]:
    have = set(wh.query("SELECT DISTINCT pair_id FROM trajectories WHERE run_id = ? AND step = ? AND operator_id = ?",
                        [target.run_id, target.step, target.operator_id])["pair_id"].to_list())
    return [p for p in target.pairs if pair_id(target.run_id, target.step, target.operator_id, *p) not in have]


def run(wh, plan: FailurePlan, checkpoint=None, keep: dict | None = None) -> int:
    """Re-roll and store the plan's pairs that are not stored yet; returns rows written.
    `keep`, a dict, receives the re-rolled records {index: record} (poses included)."""
    todo = missing_pairs(wh, plan)
    if not todo:
        return 0
    plan.pairs = todo
    records = reroll(wh, plan, checkpoint)
    if keep is not None:
        keep.update(records)
    return store(wh, plan, records)


def divergence(wh, pair_ids: list[str]):
    """Rows of the view `failure_divergence` (schema/40_failures.sql) for these pairs, in
    pair_id order."""
    cond, params = in_list("pair_id", pair_ids)
    return wh.query(f"SELECT * FROM failure_divergence WHERE {cond} ORDER BY pair_id", params)


# ----------------------------------------------------------------- the request

@dataclass(frozen=True)
class FailuresRequest:
    """`retland failures`: one checkpoint (`run`, a run id or unique prefix, with `seed`
    to pick one seed of a job, and `step`) or several chosen by `checkpoints` (top-ltp:K
    or random:K, narrowed by env, algo and where, K per env with per_env, random:K drawn
    with selection_seed); `operator` (id or kind) and `pairs` per checkpoint."""

    command: ClassVar[str] = "failures"

    run: str | None = None
    step: int | None = None
    seed: int | None = None
    checkpoints: str | None = None
    env: str | None = None
    algo: str | None = None
    where: str | None = None
    per_env: bool = False
    selection_seed: int = 0
    operator: str | None = None
    pairs: int = 1
    frames: bool = True  # also draw each pair (retland.analyses.render.run_failures_request)

    def check(self) -> "FailuresRequest":
        """Refuse (FailureError) what cannot be honoured before the warehouse is read."""
        if self.pairs < 1:
            raise FailureError(f"--pairs must be >= 1, got {self.pairs}")
        if self.checkpoints is not None and (self.run is not None or self.step is not None):
            raise FailureError("give either --run/--step or --checkpoints top-ltp:K|random:K, not both")
        if self.checkpoints is None:
            if self.run is None or self.step is None:
                raise FailureError("say which checkpoint: --run RUN --step STEP, or choose with --checkpoints "
                                   "top-ltp:K or random:K")
            given = [n for n, v in (("--env", self.env), ("--algo", self.algo), ("--where", self.where))
                     if v is not None]
            if given or self.per_env or self.selection_seed != 0:
                raise FailureError(f"{', '.join(given) or '--per-env/--selection-seed'} only narrow a "
                                   "--checkpoints selection")
        else:
            try:
                parse_selector(self.checkpoints)
            except ValueError as exc:
                raise FailureError(f"--checkpoints {exc}") from None
        return self

    def argv(self) -> list[str]:
        return ["failures"] + options([
            ("--run", self.run), ("--step", self.step), ("--seed", self.seed), ("--checkpoints", self.checkpoints),
            ("--env", self.env), ("--algo", self.algo), ("--where", self.where), ("--per-env", self.per_env),
            ("--selection-seed", self.selection_seed or None), ("--operator", self.operator),
            ("--pairs", self.pairs), ("--no-frames", not self.frames)])


@dataclass
class FailuresOutcome:
    targets: list[FailurePlan]  # the checkpoints' plans (their pairs: those re-rolled by this call)
    passed: list[Candidate]  # chosen candidates passed over (no sample near the mean)
    pair_ids: dict[int, list[str]]  # id(target) -> every pair id of the target, stored or computed
    records: dict[int, dict] = field(default_factory=dict)  # id(target) -> this call's re-rolls {index: record}


def run_request(wh, request: FailuresRequest, *, progress: Bar | None = None,
                on_select: Callable[[list[FailurePlan], list[Candidate]], None] | None = None,
                on_plan: Callable[[list[FailurePlan], dict[int, int]], None] | None = None) -> FailuresOutcome:
    """Choose the request's checkpoints, then re-roll the pairs not stored yet.
    `on_select(targets, passed)` sees a --checkpoints selection as soon as it is made;
    `on_plan(targets, todo)` (todo: id(target) -> pairs to re-roll) sees the work before
    anything is computed; `progress` gets one bar of pairs."""
    import shlex

    from retland.warehouse import WarehouseError
    from retland.warehouse.runs import require_checkpoint, resolve_run

    request.check()
    passed: list[Candidate] = []
    if request.checkpoints is None:
        run_id = resolve_run(wh, request.run, request.seed)
        step = int(request.step)
        require_checkpoint(wh, run_id, step, "re-rolling failures")
        try:
            targets = [plan(wh, run_id, step, request.operator, request.pairs)]
        except FailureError as exc:
            if "no failures to explain" in str(exc):
                raise FailureError(f"{exc}. Checkpoints with LTP > 0: retland stats --where "
                                   "\"ltp > 0 AND NOT mode_nonpositive\" "
                                   f"-w {shlex.quote(str(wh.root))}; or sample this one with a stronger "
                                   f"perturbation (larger σ fails more often), e.g. retland sample --run {run_id} "
                                   f"--steps {step} --operator gaussian:0.01, then failures --operator "
                                   "gaussian") from None
            raise
    else:
        try:
            targets, passed = choose(wh, parse_selector(request.checkpoints), seed=request.selection_seed,
                                     per_env=request.per_env, pairs=request.pairs, env=request.env,
                                     algo=request.algo, operator=request.operator, where=request.where)
        except FailureError:
            raise
        except WarehouseError as exc:  # a --where that does not parse
            raise FailureError(f"--where: {exc}") from None
        if on_select is not None:
            on_select(targets, passed)
        for t in targets:
            require_checkpoint(wh, t.run_id, t.step, "re-rolling failures")
    todo = {id(t): len(missing_pairs(wh, t)) for t in targets}
    shown = {id(t): [pair_id(t.run_id, t.step, t.operator_id, *p) for p in t.pairs] for t in targets}
    if on_plan is not None:
        on_plan(targets, todo)
    kept: dict[int, dict] = {}
    with bar(progress, sum(todo.values()), "failures", unit="pairs") as advance:
        for t in targets:
            kept[id(t)] = {}
            run(wh, t, keep=kept[id(t)])
            advance(todo[id(t)])
    return FailuresOutcome(targets, passed, shown, kept)
