"""Linear interpolation between two checkpoints' actors (docs/method.md §6.3 Interpolation and BTP).

    θ(λ) = (1 − λ)·θa + λ·θb,   λ_p = linspace(0, 1, P)[p]   (actor parameters only)
    θ(λ_p, k) = θ(λ_p) + σ·ε_k,  ε_k drawn with key fold_in(PRNGKey(seed), k)

Sample k uses the same noise draw ε_k at every λ (common random numbers), and that draw
is exactly the one gaussian(σ) sample k of the sampler uses, so the λ = 0 row of sample
k is the policy of gaussian sample k of checkpoint a. The value of a point is the mean
of its K returns. Index j of the flat batch is p·K + k.

Pairs (`select_pairs`), as the paper samples them (§4.1, Fig. 6): `pairs_per_kind`
pairs of each kind drawn uniformly without replacement from every eligible pair of the
env's trained runs of one algorithm, with a recorded seed.
  *same-run*: any two distinct checkpoints of one run (earlier one at λ = 0);
  *different-run*: any checkpoint of one run with any checkpoint of another run of the
  same training configuration (the recorded config, seed bookkeeping aside; so the
  seeds of one job, or of several jobs of one config) and another seed: independent
  repetitions of one algorithm, as the paper's "different runs" are. Runs of other
  configs are not paired (their networks or dynamics may differ), nor derived
  (stabilize) runs, which share their parent's history.
Policies stored with `retland.add_policy` (added runs) are paired explicitly (--a/--b):
two added policies with the same apply function, keywords and parameter shapes, their
names (algo) free; an added run is never paired with a trained one.
The below-threshold proportion (BTP) is computed in SQL (schema/30_interpolation.sql);
`btp_summary` aggregates it with the IQM and stratified bootstrap CIs (strata = envs),
split by pair kind.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import polars as pl

from retland import stats
from retland.agents import get_agent
from retland.config.requests import Bar, bar, number, options
from retland.agents.policy import PolicyConfig, describe_mismatch
from retland.purd import sampling
from retland.purd.engine import FLUSH_SECONDS, AgentPolicy, SampleProgram, fill
from retland.purd.operators import gaussian_perturb, sample_key
from retland.config.settings import InterpolationError, InterpolationSettings, default_of
from retland.train.checkpoints import load_checkpoint, run_config, run_record
from retland.warehouse.sqlgen import in_list

KINDS = ("same-run", "different-run")
BTP_THRESHOLD = 0.1


@dataclass(frozen=True)
class LineParams:
    """make_params of the chunk program: op_state = (θa, θb, λ [P] float32, noise base key)."""
    samples: int
    sigma: float

    def __call__(self, op_state, key, index):
        theta_a, theta_b, lams, noise_base = op_state
        p = jnp.minimum(index // self.samples, lams.shape[0] - 1)
        k = index % self.samples
        lam = lams[p]
        theta = jax.tree.map(lambda a, b: (1.0 - lam) * a + lam * b, theta_a, theta_b)
        if self.sigma > 0:
            # Round θ(λ) before adding noise: otherwise XLA may reassociate
            # (1−λ)a + (λb + σε), and λ = 0 would no longer be exactly θa + σε.
            theta = jax.lax.optimization_barrier(theta)
            theta = gaussian_perturb(theta, sample_key(noise_base, k), self.sigma)
        return theta


def lambdas(points: int) -> np.ndarray:
    """[P] float32, both endpoints exact (0.0 and 1.0)."""
    if points < 2:
        raise InterpolationError(f"--points must be >= 2 (both endpoints), got {points}")
    return np.linspace(0.0, 1.0, points, dtype=np.float32)


@dataclass(frozen=True)
class Pair:
    run_a: str
    step_a: int
    run_b: str
    step_b: int
    kind: str  # same-run | different-run

    @property
    def label(self) -> str:
        return f"{self.run_a}:{self.step_a} → {self.run_b}:{self.step_b}"


def pair_id(pair: Pair, s: InterpolationSettings, horizon: int) -> str:
    doc = [pair.run_a, int(pair.step_a), pair.run_b, int(pair.step_b), s.points, s.samples,
           repr(float(s.sigma)), s.seed, int(horizon)]
    return "ip-" + hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- pairs

@dataclass(frozen=True)
class PairSelection:
    """What `select_pairs` drew: the pairs (same-run first, each kind in canonical
    order) and, per kind drawn, how many pairs were eligible."""
    pairs: list[Pair]
    eligible: dict[str, int]
    pairs_per_kind: int
    seed: int

    def drawn(self, kind: str) -> int:
        return sum(p.kind == kind for p in self.pairs)

    def capped(self, kind: str) -> bool:
        """Fewer pairs of `kind` exist than were asked for: all of them were taken."""
        return self.eligible[kind] < self.pairs_per_kind


def _recipe(run_id: str, config: str | None) -> str:
    """The run's training configuration without its seed bookkeeping (job id, seed
    index, base seed, seed count), as canonical JSON: runs with equal recipes are
    independent repetitions of one algorithm."""
    if config is None:
        raise InterpolationError(f"run {run_id} has no recorded training config, so it cannot be paired; "
                                 "use --a/--b to pair it explicitly")
    try:
        doc = run_config({"config": config}).model_dump(mode="json")
    except ValueError as exc:
        first = str(exc).splitlines()[0]
        raise InterpolationError(f"run {run_id}: its recorded training config does not load ({first})") from None
    for key in ("seed", "seeds"):
        doc.pop(key, None)
    return json.dumps(doc, sort_keys=True)


def _checkpoints(wh, env: str, algo: str) -> pl.DataFrame:
    """run_id, seed, recipe, step of every checkpoint of the trained (env, algo) runs."""
    df = wh.query(
        "SELECT r.run_id, r.seed, r.config, c.step FROM runs r JOIN checkpoints c USING (run_id) "
        "WHERE r.env = ? AND r.algo = ? AND r.source = 'trained'", [env, algo])
    recipes = {rid: _recipe(rid, cfg) for rid, cfg in df.select("run_id", "config").unique().iter_rows()}
    return df.with_columns(pl.col("run_id").replace_strict(recipes, return_dtype=pl.String).alias("recipe")).drop("config")


def _same_run_block(run_id: str, steps: list[int]):
    """C(n, 2) pairs (steps[i], steps[j]), i < j, ranked lexicographically."""
    n = len(steps)
    starts = np.array([i * (2 * n - i - 1) // 2 for i in range(n)], dtype=np.int64)

    def unrank(t: int) -> Pair:
        i = int(np.searchsorted(starts, t, side="right")) - 1
        j = i + 1 + int(t - starts[i])
        return Pair(run_id, steps[i], run_id, steps[j], "same-run")
    return n * (n - 1) // 2, unrank


def _different_run_block(run_a: str, steps_a: list[int], run_b: str, steps_b: list[int]):
    """n_a·n_b pairs (steps_a[i], steps_b[j]), ranked i-major."""
    def unrank(t: int) -> Pair:
        i, j = divmod(t, len(steps_b))
        return Pair(run_a, steps_a[i], run_b, steps_b[j], "different-run")
    return len(steps_a) * len(steps_b), unrank


def _blocks(df: pl.DataFrame, kind: str) -> list:
    """Every eligible pair of `kind`, as (size, unrank) blocks in canonical order (runs by
    id, steps ascending), whatever order the rows came in; no pair is materialised."""
    runs = {}
    for rid, seed, recipe, step in sorted(df.select("run_id", "seed", "recipe", "step").unique().iter_rows()):
        runs.setdefault(rid, (seed, recipe, []))[2].append(int(step))
    if kind == "same-run":
        return [_same_run_block(rid, steps) for rid, (_, _, steps) in runs.items() if len(steps) > 1]
    by_recipe: dict[str, list[str]] = {}
    for rid, (_, recipe, _) in runs.items():
        by_recipe.setdefault(recipe, []).append(rid)
    blocks = []
    for recipe in sorted(by_recipe):
        ids = by_recipe[recipe]
        for x, ra in enumerate(ids):
            for rb in ids[x + 1:]:
                if runs[ra][0] != runs[rb][0]:  # the same seed of one config repeats one history
                    blocks.append(_different_run_block(ra, runs[ra][2], rb, runs[rb][2]))
    return blocks


def draw_pairs(df: pl.DataFrame, kind: str, n: int, seed: int) -> tuple[list[Pair], int]:
    """(n pairs of `kind` drawn uniformly without replacement from the eligible ones of
    checkpoint rows `df` — all of them when fewer exist —, how many were eligible).

    The eligible pairs are ranked canonically, so the draw depends only on the set of
    checkpoints, the kind, n and seed: numpy Generator seeded with (seed, kind index),
    whose `choice` draws n of M indices in O(n) memory when M is large."""
    blocks = _blocks(df, kind)
    sizes = np.array([size for size, _ in blocks], dtype=np.int64)
    total = int(sizes.sum())
    if total == 0:
        return [], 0
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    idx = np.sort(rng.choice(total, size=min(n, total), replace=False))
    ends = np.cumsum(sizes)
    which = np.searchsorted(ends, idx, side="right")
    return [blocks[b][1](int(i - (ends[b] - sizes[b]))) for i, b in zip(idx, which)], total


def select_pairs(wh, env: str, algo: str, which: str = "both",
                 pairs_per_kind: int = default_of(InterpolationSettings, "pairs_per_kind"),
                 seed: int = default_of(InterpolationSettings, "pair_seed")) -> PairSelection:
    """Random pairs of the warehouse's checkpoints of (env, algo) (module docstring):
    `pairs_per_kind` of each kind in `which`, drawn with `seed`."""
    if which not in KINDS + ("both",):
        raise InterpolationError(f"--pairs {which!r}: choose same-run, different-run or both")
    if pairs_per_kind < 1:
        raise InterpolationError(f"--pairs-per-kind (--max-pairs) must be >= 1, got {pairs_per_kind}")
    if seed < 0:
        raise InterpolationError(f"--pair-seed must be >= 0, got {seed}")
    df = _checkpoints(wh, env, algo)
    if df.height == 0:
        raise InterpolationError(f"no trained {algo} checkpoints of {env} in the warehouse at {wh.root}; "
                                 "run `retland train` first")
    out, eligible = [], {}
    for kind in KINDS:
        if which in (kind, "both"):
            pairs, eligible[kind] = draw_pairs(df, kind, pairs_per_kind, seed)
            out += pairs
    if not out:
        raise InterpolationError(
            f"no {'same-run or different-run' if which == 'both' else which} pairs among the trained {algo} "
            f"checkpoints of {env}: same-run pairs need two "
            "checkpoints of a run, different-run pairs two runs of one training config with different seeds")
    return PairSelection(out, eligible, pairs_per_kind, seed)


def parse_ref(text: str) -> tuple[str, int]:
    """'run_id:step' -> (run_id, step)."""
    run, sep, step = text.rpartition(":")
    if not sep or not run:
        raise InterpolationError(f"checkpoint {text!r}: expected RUN_ID:STEP")
    try:
        return run, int(float(step))
    except ValueError:
        raise InterpolationError(f"checkpoint {text!r}: step {step!r} is not a number") from None


def explicit_pair(a: str, b: str) -> Pair:
    (ra, sa), (rb, sb) = parse_ref(a), parse_ref(b)
    return Pair(ra, sa, rb, sb, "same-run" if ra == rb else "different-run")


# ------------------------------------------------------------------------ evaluation

@dataclass
class PairPlan:
    pair: Pair
    pair_id: str
    env: str
    algo: str
    backend: str
    horizon: int
    batch_size: int
    present: set[int]
    exists: bool  # the interpolation_pairs row is stored
    pair_seed: int | None = None  # the random draw that chose the pair; None: given explicitly
    variant: str = field(kw_only=True)  # the runs' task rules (retland.core.envs.VARIANTS)

    def n(self, s: InterpolationSettings) -> int:
        return s.points * s.samples


def _run(wh, run_id: str) -> dict:

    try:
        rec = run_record(wh, run_id)
    except ValueError as exc:
        raise InterpolationError(str(exc)) from None
    rec["train_config"] = run_config(rec)
    return rec


def plan(wh, pairs: list[Pair], s: InterpolationSettings, batch_size: int | str | None = "auto",
         pair_seed: int | None = None) -> list[PairPlan]:
    """Check every pair (runs, checkpoints, env/algo/network match) and read what is stored.
    pair_seed: the seed of the random draw that chose `pairs` (select_pairs), stored with
    each pair not stored yet; None for pairs given explicitly. It is not part of the pair
    id: a pair's returns do not depend on how it was chosen.
    Raises InterpolationError before anything is computed or written."""
    s.check()
    plans = []
    recs: dict[str, dict] = {}
    steps_of: dict[str, set[int]] = {}
    for pair in pairs:
        for run, step in ((pair.run_a, pair.step_a), (pair.run_b, pair.step_b)):
            if run not in recs:
                recs[run] = _run(wh, run)
                steps_of[run] = set(wh.query("SELECT step FROM checkpoints WHERE run_id = ?", [run])["step"].to_list())
            if step not in steps_of[run]:
                raise InterpolationError(f"run {run} has no checkpoint at step {step}; it has {sorted(steps_of[run])}")
        ra, rb = recs[pair.run_a], recs[pair.run_b]
        added = [isinstance(r["train_config"], PolicyConfig) for r in (ra, rb)]
        for col in ("env", "backend") if all(added) else ("env", "algo", "backend"):
            if ra[col] != rb[col]:
                raise InterpolationError(f"pair {pair.label}: {col} differs ({ra[col]} vs {rb[col]})")
        if ra["train_config"].variant != rb["train_config"].variant:
            raise InterpolationError(f"pair {pair.label}: task variant differs ({ra['train_config'].variant} vs "
                                     f"{rb['train_config'].variant})")
        if any(added):
            _check_added_pair(pair, ra, rb, added)
        elif ra["train_config"].agent != rb["train_config"].agent:
            raise InterpolationError(f"pair {pair.label}: the runs' agent configs differ (network shapes must match)")
        if pair.run_a == pair.run_b and pair.step_a == pair.step_b:
            raise InterpolationError(f"pair {pair.label}: a checkpoint with itself")
        horizon = s.horizon or ra["train_config"].horizon
        pid = pair_id(pair, s, horizon)
        stored = wh.query("SELECT chunk_size FROM interpolation_pairs WHERE pair_id = ?", [pid])
        present = set(wh.query("SELECT point * ? + sample AS j FROM interpolation_points WHERE pair_id = ?",
                               [s.samples, pid])["j"].to_list())
        n = s.points * s.samples
        if stored.height:
            b = int(stored["chunk_size"][0])
            if batch_size not in (None, "auto") and int(batch_size) != b:
                raise InterpolationError(f"pair {pair.label} was started with --batch-size {b}; "
                                         f"use {b} or auto to resume it")
        elif batch_size in (None, "auto"):
            b = sampling.auto_batch_size(n)
        else:
            b = int(batch_size)
            if b < 1:
                raise InterpolationError(f"--batch-size must be >= 1, got {b}")
        plans.append(PairPlan(pair, pid, ra["env"], ra["algo"], ra["backend"], int(horizon), b, present,
                              bool(stored.height), pair_seed, variant=ra["train_config"].variant))
    return plans


def _check_added_pair(pair: Pair, ra: dict, rb: dict, added: list[bool]) -> None:
    """Added policies interpolate only with one another, through one policy function."""
    if not all(added):
        which, other = (pair.run_a, pair.run_b) if added[0] else (pair.run_b, pair.run_a)
        raise InterpolationError(f"pair {pair.label}: {which} is an added policy and {other} a trained run; "
                                 "θ(λ) needs one policy function for both endpoints")
    ca, cb = ra["train_config"], rb["train_config"]
    if ca.apply != cb.apply or ca.apply_kwargs != cb.apply_kwargs:
        raise InterpolationError(f"pair {pair.label}: the policies' apply functions differ ({ca.apply} "
                                 f"{json.dumps(ca.apply_kwargs, sort_keys=True):.60} vs {cb.apply} "
                                 f"{json.dumps(cb.apply_kwargs, sort_keys=True):.60}); θ(λ) needs the same function "
                                 "and keywords")
    wrong = describe_mismatch(cb.params_target(), ca.params_target(), what=f"{pair.run_b}'s params")
    if wrong:
        raise InterpolationError(f"pair {pair.label}: {wrong.replace('the run', pair.run_a)}")


def _actor(wh, run_id: str, step: int):

    ck = load_checkpoint(wh, run_id, step)
    agent = get_agent(ck.algo, ck.config)
    return agent, agent.actor_params(ck.state)


@dataclass
class PairResult:
    pair_id: str
    kind: str
    label: str
    rows_written: int = 0
    seconds: float = 0.0


def run(wh, plan: PairPlan, s: InterpolationSettings, *, devices=None,
             progress: Callable[[int], None] | None = None, flush_seconds: float = FLUSH_SECONDS) -> PairResult:
    """Compute and append the pair's missing rollouts (whole chunks; see retland.purd.engine)."""
    result = PairResult(plan.pair_id, plan.pair.kind, plan.pair.label)
    n = plan.n(s)
    if len(plan.present) >= n and plan.exists:
        return result
    t0 = time.monotonic()
    agent, theta_a = _actor(wh, plan.pair.run_a, plan.pair.step_a)
    _, theta_b = _actor(wh, plan.pair.run_b, plan.pair.step_b)
    if not plan.exists:
        wh.append("interpolation_pairs", [{
            "pair_id": plan.pair_id, "kind": plan.pair.kind, "env": plan.env, "algo": plan.algo,
            "run_a": plan.pair.run_a, "step_a": plan.pair.step_a, "run_b": plan.pair.run_b,
            "step_b": plan.pair.step_b, "points": s.points, "samples": s.samples, "sigma": float(s.sigma),
            "seed": s.seed, "horizon": plan.horizon, "chunk_size": plan.batch_size,
            "pair_seed": plan.pair_seed, "created_at": datetime.now(timezone.utc)}])
    lams = lambdas(s.points)
    prog = SampleProgram(plan.env, plan.backend, plan.horizon, AgentPolicy(agent), LineParams(s.samples, float(s.sigma)),
                         variant=plan.variant)
    op_state = (theta_a, theta_b, jnp.asarray(lams), jax.random.PRNGKey(s.seed))
    def columns(j):
        p = (j // s.samples).astype(np.int32)
        return {"pair_id": [plan.pair_id] * len(j), "point": p, "sample": (j % s.samples).astype(np.int32),
                "lam": lams[p].astype(np.float64)}

    try:
        result.rows_written += fill(
            wh, "interpolation_points", columns, prog, op_state, n, plan.batch_size, plan.present,
            label=f"pair {plan.pair_id}", devices=devices, flush_seconds=flush_seconds, progress=progress,
            timing={"run_id": plan.pair.run_a, "step": int(plan.pair.step_a),
                    "operator_id": plan.pair_id}).rows_written
    finally:
        result.seconds = time.monotonic() - t0
    return result


# ------------------------------------------------------------------------- summaries

def btp_table(wh, env: str | None = None, algo: str | None = None) -> pl.DataFrame:
    """`interpolation_btp` rows of complete pairs (optionally of one env/algo)."""
    cond, params = ["complete"], []
    for col, val in (("env", env), ("algo", algo)):
        if val is not None:
            cond.append(f"{col} = ?")
            params.append(val)
    return wh.query(f"SELECT * FROM interpolation_btp WHERE {' AND '.join(cond)} ORDER BY kind, pair_id", params)


def pair_btp(wh, pair_ids: list[str]) -> pl.DataFrame:
    """`interpolation_btp` rows of these pairs, complete or not, ordered by kind, run_a,
    step_a, run_b."""
    cond, params = in_list("pair_id", pair_ids)
    return wh.query(f"SELECT * FROM interpolation_btp WHERE {cond} ORDER BY kind, run_a, step_a, run_b", params)


def btp_summary(btp: pl.DataFrame, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0) -> pl.DataFrame:
    """Per pair kind: number of pairs and envs, IQM of BTP, stratified bootstrap CI
    (strata = envs, rliable-style), from `btp_table` rows."""
    rows = []
    for kind in KINDS:
        sub = btp.filter(pl.col("kind") == kind)
        if sub.height == 0:
            continue
        strata = {env: g["btp"].to_numpy() for (env,), g in sub.group_by(["env"], maintain_order=True)}
        lo, hi = stats.stratified_bootstrap_ci(strata, stats.iqm, n_resamples, confidence, seed)
        rows.append({"kind": kind, "pairs": sub.height, "envs": len(strata),
                     "btp_iqm": float(stats.iqm(sub["btp"].to_numpy())), "ci_lo": lo, "ci_hi": hi,
                     "btp_mean": float(sub["btp"].mean())})
    return pl.DataFrame(rows, schema={"kind": pl.String, "pairs": pl.Int64, "envs": pl.Int64, "btp_iqm": pl.Float64,
                                      "ci_lo": pl.Float64, "ci_hi": pl.Float64, "btp_mean": pl.Float64})


# ----------------------------------------------------------------- the request

@dataclass(frozen=True)
class InterpolationRequest:
    """`retland interpolate`: random pairs of env's trained checkpoints of algo
    (pair_kind same-run, different-run or both; settings.pairs_per_kind of each, drawn
    with settings.pair_seed), or one explicit pair a, b ("RUN:STEP", run ids or unique
    prefixes); the points, samples and noise of `settings`."""

    command: ClassVar[str] = "interpolate"

    env: str | None = None
    algo: str = "td3"
    pair_kind: str | None = None
    a: str | None = None
    b: str | None = None
    settings: InterpolationSettings = InterpolationSettings()

    def check(self) -> "InterpolationRequest":
        if (self.a is None) != (self.b is None):
            raise InterpolationError("an explicit pair needs both --a RUN:STEP and --b RUN:STEP")
        if self.a is not None and self.pair_kind is not None:
            raise InterpolationError("give either --a/--b or --pair-kind, not both")
        if self.a is None and (self.pair_kind is None or self.env is None):
            raise InterpolationError("say which pairs: --env ENV --pair-kind same-run|different-run|both, or "
                                     "--a RUN:STEP --b RUN:STEP")
        self.settings.check()
        return self

    def argv(self) -> list[str]:
        s, d = self.settings, InterpolationSettings()
        return ["interpolate"] + options([
            ("--env", self.env), ("--algo", self.algo), ("--pair-kind", self.pair_kind), ("--a", self.a),
            ("--b", self.b), ("--pairs-per-kind", s.pairs_per_kind if self.a is None else
                              (s.pairs_per_kind if s.pairs_per_kind != d.pairs_per_kind else None)),
            ("--pair-seed", s.pair_seed if self.a is None else (s.pair_seed or None)),
            ("--points", s.points), ("--samples", s.samples), ("--sigma", number(s.sigma)), ("--noise-seed", s.seed),
            ("--horizon", s.horizon)])


@dataclass
class InterpolationOutcome:
    plans: list[PairPlan]
    selection: PairSelection | None  # the random draw (None for an explicit pair)
    results: list[PairResult] = field(default_factory=list)


def run_request(wh, request: InterpolationRequest, *, batch_size: int | str | None = "auto", devices=None,
                progress: Bar | None = None, on_select: Callable[[PairSelection], None] | None = None,
                on_plan: Callable[[list[PairPlan], int], None] | None = None,
                on_result: Callable[[PairPlan, PairResult], None] | None = None) -> InterpolationOutcome:
    """A checked request's pairs, what `retland interpolate` and a study's interpolation
    stage compute: chosen (drawn, `on_select(selection)` sees the draw; or the explicit
    pair with its runs resolved), planned (`on_plan(plans, rollouts to compute)` sees
    them before anything is computed), the missing rollouts computed pair by pair (`on_result` after each) with
    one `progress` bar. batch_size/devices choose how, not what."""
    from retland.warehouse.runs import require_checkpoint, resolve_run

    s = request.check().settings
    selection = None
    if request.a is not None:
        (ra, sa), (rb, sb) = parse_ref(request.a), parse_ref(request.b)
        ra, rb = resolve_run(wh, ra, option="--a"), resolve_run(wh, rb, option="--b")
        chosen, drawn_with = [explicit_pair(f"{ra}:{sa}", f"{rb}:{sb}")], None
    else:
        selection = select_pairs(wh, request.env, request.algo, request.pair_kind, s.pairs_per_kind, s.pair_seed)
        chosen, drawn_with = selection.pairs, s.pair_seed
        if on_select is not None:
            on_select(selection)
    for pair in chosen:
        for r, st in ((pair.run_a, pair.step_a), (pair.run_b, pair.step_b)):
            require_checkpoint(wh, r, st, "interpolation")
    plans = plan(wh, chosen, s, batch_size, pair_seed=drawn_with)
    todo = sum(s.points * s.samples - len(p.present) for p in plans if not (
        p.exists and len(p.present) >= s.points * s.samples))
    if on_plan is not None:
        on_plan(plans, todo)
    out = InterpolationOutcome(plans, selection)
    with bar(progress, todo, "interpolate", unit="rollouts") as advance:
        for p in plans:
            res = run(wh, p, s, devices=devices, progress=advance)
            out.results.append(res)
            if on_result is not None:
                on_result(p, res)
    return out
