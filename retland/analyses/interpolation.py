"""Linear interpolation between two checkpoints' actors (docs/method.md §6.3 Interpolation and BTP).

    θ(λ) = (1 − λ)·θa + λ·θb,   λ_p = linspace(0, 1, P)[p]   (actor parameters only)
    θ(λ_p, k) = θ(λ_p) + σ·ε_k,  ε_k drawn with key fold_in(PRNGKey(seed), k)

Sample k uses the same noise draw ε_k at every λ (common random numbers), and that draw
is exactly the one gaussian(σ) sample k of the sampler uses, so the λ = 0 row of sample
k is the policy of gaussian sample k of checkpoint a. The value of a point is the mean
of its K returns. Index j of the flat batch is p·K + k.

Pairs: *same run* = two consecutive checkpoints of one run; *different runs* = seed s
and seed s+1 of one training job at the same step. The below-threshold proportion (BTP)
is computed in SQL (schema/30_interpolation.sql); `btp_summary` aggregates it with the
IQM and stratified bootstrap CIs (strata = envs), split by pair kind.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import polars as pl

from retland import stats
from retland.agents import get_agent
from retland.purd import sampling
from retland.purd.engine import FLUSH_SECONDS, AgentPolicy, SampleProgram, fill
from retland.purd.operators import gaussian_perturb, sample_key
from retland.settings import InterpolationError, InterpolationSettings
from retland.train.checkpoints import load_checkpoint, run_config, run_record

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

def _checkpoints(wh, env: str, algo: str) -> pl.DataFrame:
    """run_id, seed, job, step of every checkpoint of (env, algo)."""
    return wh.query(
        "SELECT r.run_id, r.seed, regexp_replace(r.run_id, '-s[0-9]+$', '') AS job, c.step "
        "FROM runs r JOIN checkpoints c USING (run_id) WHERE r.env = ? AND r.algo = ? "
        "ORDER BY job, r.seed, c.step", [env, algo])


def select_pairs(wh, env: str, algo: str, which: str = "both", max_pairs: int | None = None) -> list[Pair]:
    """Pairs from the warehouse's checkpoints of (env, algo), in a fixed order.

    same-run: (step_i, step_{i+1}) of each run; different-run: seed s vs the job's next
    seed at each step both have. max_pairs caps each kind (the first ones in order).
    """
    if which not in KINDS + ("both",):
        raise InterpolationError(f"--pairs {which!r}: choose same-run, different-run or both")
    if max_pairs is not None and max_pairs < 1:
        raise InterpolationError(f"--max-pairs must be >= 1, got {max_pairs}")
    df = _checkpoints(wh, env, algo)
    if df.height == 0:
        raise InterpolationError(f"no {algo} checkpoints of {env} in the warehouse at {wh.root}; run `retland train` first")
    same, diff = [], []
    for (run_id,), g in df.group_by(["run_id"], maintain_order=True):
        steps = g["step"].to_list()
        same += [Pair(run_id, a, run_id, b, "same-run") for a, b in zip(steps, steps[1:])]
    for (job,), g in df.group_by(["job"], maintain_order=True):
        by_seed = {s: set(gg["step"].to_list()) for (s,), gg in g.group_by(["seed"], maintain_order=True)}
        ids = dict(zip(g["seed"].to_list(), g["run_id"].to_list()))
        seeds = sorted(by_seed)
        for s, t in zip(seeds, seeds[1:]):
            for step in sorted(by_seed[s] & by_seed[t]):
                diff.append(Pair(ids[s], step, ids[t], step, "different-run"))
    out = []
    for kind, pairs in (("same-run", same), ("different-run", diff)):
        if which in (kind, "both"):
            out += pairs[:max_pairs] if max_pairs else pairs
    if not out:
        raise InterpolationError(
            f"no {which} pairs among the {algo} checkpoints of {env}: same-run pairs need two "
            "checkpoints of a run, different-run pairs two seeds of one job at a common step")
    return out


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

    def n(self, s: InterpolationSettings) -> int:
        return s.points * s.samples


def _run(wh, run_id: str) -> dict:

    try:
        rec = run_record(wh, run_id)
    except ValueError as exc:
        raise InterpolationError(str(exc)) from None
    rec["train_config"] = run_config(rec)
    return rec


def plan(wh, pairs: list[Pair], s: InterpolationSettings, batch_size: int | str | None = "auto") -> list[PairPlan]:
    """Check every pair (runs, checkpoints, env/algo/network match) and read what is stored.
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
        for field in ("env", "algo", "backend"):
            if ra[field] != rb[field]:
                raise InterpolationError(f"pair {pair.label}: {field} differs ({ra[field]} vs {rb[field]})")
        if ra["train_config"].agent != rb["train_config"].agent:
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
                              bool(stored.height)))
    return plans


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
            "created_at": datetime.now(timezone.utc)}])
    lams = lambdas(s.points)
    prog = SampleProgram(plan.env, plan.backend, plan.horizon, AgentPolicy(agent), LineParams(s.samples, float(s.sigma)))
    op_state = (theta_a, theta_b, jnp.asarray(lams), jax.random.PRNGKey(s.seed))
    def columns(j):
        p = (j // s.samples).astype(np.int32)
        return {"pair_id": [plan.pair_id] * len(j), "point": p, "sample": (j % s.samples).astype(np.int32),
                "lam": lams[p].astype(np.float64)}

    try:
        result.rows_written += fill(
            wh, "interpolation_points", columns, prog, op_state, n, plan.batch_size, plan.present,
            label=f"pair {plan.pair_id}", devices=devices, flush_seconds=flush_seconds, progress=progress).rows_written
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
