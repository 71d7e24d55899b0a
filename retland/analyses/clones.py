"""Behaviour cloning, the paper's Appendix A.7 (Fig. 22): do clones of a TD3 policy
inherit its post-update return distribution?

The experiment (`CloneRequest`, `run`): for each teacher checkpoint (a TD3 RUN@STEP),
a BC run trained on the teacher's logged data relabelled with its actions
(`retland train --algo bc --teacher RUN@STEP`, retland.train.bc), its checkpoints
sampled under the clone's own update (operator bc: one more Adam step of the BC
objective on a fresh minibatch) and the teacher under TD3's (operator td3), N samples
each at the teacher's horizon.

The comparison (`read_pairs`, `compare_clones`) reads the view `bc_pairs`
(schema/60_clones.sql): one row per BC run, its last checkpoint beside its teacher
(`clone="all"`: every clone checkpoint, `bc_pairs_all`). Per env it gives

- Pearson's r between teacher and clone of the distributions' means, and of their LTPs,
  with a 95% percentile bootstrap CI that redraws pairs with replacement (a resample
  whose x or y is constant has no r and is dropped; the share dropped is reported);
- the mean LTP of the BC policies and of the TD3 policies (each teacher once), with a
  95% stratified bootstrap CI (policies redrawn within each env, rliable's scheme,
  `retland.stats.stratified_bootstrap_ci`), per env and over all envs (env 'all').

Every interval draws from `numpy.random.default_rng(seed)` anew.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from ..config.requests import Bar, bar, int_list_text, options
from ..stats import stratified_bootstrap_ci

CONFIDENCE = 0.95
DEFAULT_REPS = 2000
ALL = "all"
CLONES = ("last", "all")


class CloneError(ValueError):
    """A clone experiment or comparison that cannot be made from what was asked (one line)."""


# ---------------------------------------------------------------------------------------
# The experiment: teachers -> clones -> samples
# ---------------------------------------------------------------------------------------
class CloneRequest(BaseModel):
    """The whole A.7 experiment for a list of teachers (`retland clone`'s options, parsed).
    Defaults: the paper's (1M gradient steps, 10 clone checkpoints, 1000 samples); BC's
    network, minibatch and Adam are TD3's (retland's choice, docs/method.md "Behaviour
    cloning")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: ClassVar[str] = "clone"

    teachers: tuple[str, ...] = Field(min_length=1)  # "RUN@STEP", RUN a run id or unique prefix
    total_steps: int = Field(1_000_000, ge=1)  # gradient steps per BC run
    checkpoints: tuple[int, ...] | None = None  # gradient steps; None = 10 evenly spaced, the last at the end
    eval_every: int | None = Field(None, ge=1)
    seeds: int = Field(1, ge=1)  # clones per teacher
    seed: int = Field(0, ge=0)
    agent: dict[str, Any] = Field(default_factory=dict)  # BCConfig fields over the defaults (hidden, batch_size, …)
    samples: int = Field(1000, ge=1)  # post-update samples per distribution
    horizon: int | None = Field(None, ge=1)  # None = the teacher's task horizon
    key_seed: int = Field(0, ge=0)
    clone_steps: Literal["last", "all"] = "last"  # which clone checkpoints to sample
    sample_teachers: bool = True  # sample the teacher's td3 distribution where missing
    batch_size: int | str = "auto"  # samples per chunk

    def argv(self) -> list[str]:
        """The `retland clone` command line of this request (options at their default left out)."""
        import json

        d = {name: f.get_default(call_default_factory=True) for name, f in type(self).model_fields.items()}
        differs = lambda name: getattr(self, name) != d[name]  # noqa: E731
        out = ["clone"]
        for t in self.teachers:
            out += ["--teacher", t]
        for key, value in sorted(self.agent.items()):
            out += ["--agent", f"{key}={json.dumps(value, separators=(',', ':'))}"]
        return out + options([
            ("--total-steps", self.total_steps if differs("total_steps") else None),
            ("--checkpoints", int_list_text(self.checkpoints) if self.checkpoints is not None else None),
            ("--eval-every", self.eval_every),
            ("--seeds", self.seeds if differs("seeds") else None),
            ("--seed", self.seed if differs("seed") else None),
            ("--samples", self.samples if differs("samples") else None),
            ("--horizon", self.horizon),
            ("--key-seed", self.key_seed if differs("key_seed") else None),
            ("--clone", self.clone_steps if differs("clone_steps") else None),
            ("--no-sample-teachers", not self.sample_teachers),
            ("--batch-size", self.batch_size if differs("batch_size") else None)])

    def check(self) -> "CloneRequest":
        """Refuse, before the warehouse is read, what no warehouse could honour (CloneError,
        one line): a teacher not written RUN@STEP, an agent field BC has not or that the
        teacher sets, a batch size that is neither a count nor auto."""
        from retland.train.bc import TeacherError, parse_teacher

        for text in self.teachers:
            try:
                parse_teacher(text)
            except TeacherError as exc:
                raise CloneError(str(exc)) from None
        if len(set(self.teachers)) != len(self.teachers):
            twice = next(t for t in self.teachers if self.teachers.count(t) > 1)
            raise CloneError(f"--teacher {twice!r} is given twice")
        check_agent(self.agent)
        if self.batch_size != "auto" and not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise CloneError(f"--batch-size {self.batch_size!r}: give a whole number >= 1 or auto")
        if self.checkpoints is not None:
            bad = [c for c in self.checkpoints if not 1 <= c <= self.total_steps]
            if bad or not self.checkpoints:
                raise CloneError(f"--checkpoints {int_list_text(self.checkpoints)}: give gradient steps in "
                                 f"1..{self.total_steps:,} (--total-steps)")
        return self


def check_agent(agent: dict) -> None:
    """CloneError (one line) for a key of `agent` that is no behaviour-cloning setting or
    that the teacher sets, or whose value BC's config refuses."""
    from pydantic import ValidationError

    from retland.config.agents import BCConfig

    fixed = ("algo", "teacher_run_id", "teacher_step", "dataset_size")
    for key in agent:
        if key in fixed:
            raise CloneError(f"--agent {key}: set from the teacher, not an option of the clone")
        if key not in BCConfig.model_fields:
            choices = ", ".join(k for k in BCConfig.model_fields if k not in fixed)
            raise CloneError(f"--agent {key}: not a behaviour-cloning setting; choose from {choices}")
    try:
        BCConfig(**agent)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first.get("loc", ()))
        raise CloneError(f"--agent {key}={agent.get(first['loc'][0]) if first.get('loc') else ''}: "
                         f"{first['msg'].removeprefix('Value error, ')}") from None


@dataclass
class CloneOutcome:
    """What `run` did: per teacher the clone run ids, and the rows it wrote."""
    clones: dict[str, list[str]] = field(default_factory=dict)  # "RUN@STEP" -> BC run ids
    trained: list[str] = field(default_factory=list)  # job ids trained (or resumed) now
    rows_written: int = 0


def clone_configs(wh, request: CloneRequest) -> list[tuple[dict, Any]]:
    """(teacher, TrainConfig) per teacher, every one checked before anything is written;
    CloneError (one line) on the first bad one."""
    from pydantic import ValidationError

    from retland.train.bc import TeacherError, clone_fields, resolve_teacher
    from retland.train.config import load_train_config

    out = []
    for text in request.teachers:
        try:
            teacher = resolve_teacher(wh, text)
            fields = clone_fields(teacher, {})
            cfg = load_train_config(None, algo="bc", agent_fields={**request.agent, **fields.pop("agent")},
                                    seeds=request.seeds, seed=request.seed, total_steps=request.total_steps,
                                    checkpoints=request.checkpoints, eval_every=request.eval_every, **fields)
        except TeacherError as exc:
            raise CloneError(str(exc)) from None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()) if p != "bc")
            raise CloneError(f"clone of {text}: {where + ': ' if where else ''}"
                             f"{first['msg'].removeprefix('Value error, ')}") from None
        out.append((teacher, cfg))
    return out


def existing_clone_job(wh, cfg) -> str | None:
    """The job id of a BC job already started with exactly this config (teacher included)."""
    from retland.train.checkpoints import run_config

    rows = wh.records("SELECT * FROM runs WHERE algo = 'bc' AND source = 'trained' AND parent_run_id = ? "
                      "AND parent_step = ? ORDER BY run_id", [cfg.agent.teacher_run_id, cfg.agent.teacher_step])
    import json

    for row in rows:
        if run_config(row) == cfg:
            return json.loads(row["config"])["job_id"]
    return None


def run(wh, request: CloneRequest, *, progress: Bar | None = None) -> CloneOutcome:
    """Train (or resume, or reuse) one BC job per teacher and sample the clones' bc
    distributions and the teachers' td3 distributions; resumable at every stage. Every
    teacher is checked before anything is written. `progress` is a bar factory
    (retland.config.requests): one bar per training job (gradient steps) and per
    sampling job (samples)."""
    from retland.purd.job import SampleRequest
    from retland.purd.job import run_request as sample_request
    from retland.train import checkpoints as ck
    from retland.train.job import run_ids, train

    plans = clone_configs(wh, request.check())
    outcome = CloneOutcome()
    for teacher, cfg in plans:
        name = f"{teacher['run_id']}@{teacher['step']}"
        job = existing_clone_job(wh, cfg)
        ids = run_ids(job, cfg) if job else None
        complete = ids is not None and all(set(cfg.checkpoint_steps) <= set(ck.list_checkpoints(wh, r)) for r in ids)
        if not complete:
            with bar(progress, cfg.steps, f"bc clone of {name} x{cfg.seeds}", unit="gradient-steps",
                     rate_scale=cfg.seeds) as advance:
                result = train(cfg, wh, resume=job, progress=advance)
            job, ids = result.job_id, result.run_ids
            outcome.trained.append(job)
        outcome.clones[name] = list(ids)
        horizon = request.horizon or cfg.horizon
        steps = [max(cfg.checkpoint_steps)] if request.clone_steps == "last" else list(cfg.checkpoint_steps)
        jobs = [SampleRequest("bc", runs=tuple(ids), steps=tuple(steps))]
        if request.sample_teachers:
            jobs.append(SampleRequest("td3", runs=(teacher["run_id"],), steps=(teacher["step"],)))
        for job_request in jobs:
            job_request = dataclasses.replace(job_request, samples=request.samples, horizon=horizon,
                                              key_seed=request.key_seed, batch_size=request.batch_size)
            outcome.rows_written += sample_request(wh, job_request, progress=progress).rows_written
    return outcome


# ---------------------------------------------------------------------------------------
# The comparison: Fig. 22
# ---------------------------------------------------------------------------------------
def read_pairs(wh, clone: str = "last", where: str | None = None) -> pl.DataFrame:
    """The rows of `bc_pairs` (clone='last') or `bc_pairs_all` (clone='all'), optionally
    filtered by a user's SQL condition `where` on their columns."""
    if clone not in CLONES:
        raise CloneError(f"--clone {clone!r}: choose last (each BC run's last checkpoint) or all")
    import duckdb

    from retland.warehouse.readonly import filtered, query_error

    view = "bc_pairs" if clone == "last" else "bc_pairs_all"
    con = wh.connect()
    try:
        return filtered(con, f"SELECT * FROM {view}", where).order(
            "env, teacher_run_id, teacher_step, clone_run_id, clone_step, operator").pl()
    except duckdb.Error as exc:
        raise query_error(exc) from None
    finally:
        con.close()


def pearson(x, y) -> float | None:
    """Pearson's r of two equal-length samples; None if either is constant or n < 2."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def pearson_ci(x, y, reps: int = DEFAULT_REPS, confidence: float = CONFIDENCE,
               seed: int = 0) -> tuple[float | None, float | None, float]:
    """(lo, hi, share of resamples dropped) of a percentile bootstrap CI of Pearson's r:
    pairs redrawn with replacement, `reps` times, from default_rng(seed); resamples in
    which x or y is constant have no r and are dropped. (None, None, share) when fewer
    than half of them have one."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = x.size
    if n < 2:
        return None, None, 1.0
    idx = np.random.default_rng(seed).integers(0, n, size=(int(reps), n))
    xs, ys = x[idx], y[idx]
    xc, yc = xs - xs.mean(axis=1, keepdims=True), ys - ys.mean(axis=1, keepdims=True)
    sxx, syy = (xc * xc).sum(axis=1), (yc * yc).sum(axis=1)
    ok = (np.ptp(xs, axis=1) > 0) & (np.ptp(ys, axis=1) > 0)
    dropped = float(1 - ok.mean())
    if ok.sum() < reps / 2:
        return None, None, dropped
    r = (xc * yc).sum(axis=1)[ok] / np.sqrt(sxx[ok] * syy[ok])
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(np.clip(r, -1, 1), [tail, 1 - tail])
    return float(lo), float(hi), dropped


CORRELATION_SCHEMA = {"env": pl.String, "pairs": pl.Int64, "r_mean": pl.Float64, "r_mean_lo": pl.Float64,
                      "r_mean_hi": pl.Float64, "r_ltp": pl.Float64, "r_ltp_lo": pl.Float64, "r_ltp_hi": pl.Float64}
LTP_SCHEMA = {"env": pl.String, "policies": pl.String, "n": pl.Int64, "mean_ltp": pl.Float64, "lo": pl.Float64,
              "hi": pl.Float64}


@dataclass
class CloneComparison:
    """correlations: env, pairs, r_mean [lo, hi], r_ltp [lo, hi] (one row per env).
    ltp: env (and 'all'), policies ('bc' or 'td3'), n, mean_ltp [lo, hi]."""
    correlations: pl.DataFrame
    ltp: pl.DataFrame
    clone: str
    reps: int
    seed: int

    def to_json(self) -> dict:
        return {"clone": self.clone, "reps": self.reps, "seed": self.seed, "confidence": CONFIDENCE,
                "correlations": self.correlations.to_dicts(), "ltp": self.ltp.to_dicts()}


def compare_clones(pairs: pl.DataFrame, reps: int = DEFAULT_REPS, seed: int = 0, clone: str = "last") -> CloneComparison:
    """Fig. 22 from `read_pairs` rows: per env Pearson r of (teacher, clone) means and LTPs
    with bootstrap CIs over pairs, and the mean LTP of BC and of TD3 policies (each
    teacher once) with stratified bootstrap CIs per env and over all envs. reps = 0
    skips the CIs. CloneError when there are no pairs."""
    if reps < 0:
        raise CloneError(f"--bootstrap {reps}: the number of resamples must be >= 0")
    if pairs.height == 0:
        raise CloneError("no clone beside a sampled teacher: train BC runs (retland train --algo bc --teacher "
                         "RUN@STEP), then sample them with --operator bc and their teachers with --operator td3 "
                         "at the same --horizon")
    envs = sorted(pairs["env"].unique().to_list())
    corr, ltp = [], []
    bc_strata, td3_strata = [], []
    for env in envs:
        p = pairs.filter(pl.col("env") == env)
        row: dict[str, Any] = dict(env=env, pairs=p.height)
        for name in ("mean", "ltp"):
            x, y = p[f"teacher_{name}"].to_numpy(), p[f"clone_{name}"].to_numpy()
            row[f"r_{name}"] = pearson(x, y)
            lo = hi = None
            if reps and row[f"r_{name}"] is not None:
                lo, hi, _ = pearson_ci(x, y, reps, seed=seed)
            row[f"r_{name}_lo"], row[f"r_{name}_hi"] = lo, hi
        corr.append(row)
        bc = p["clone_ltp"].to_numpy().astype(np.float64)
        td3 = p.unique(["teacher_run_id", "teacher_step", "teacher_operator"])["teacher_ltp"].to_numpy().astype(np.float64)
        bc_strata.append(bc)
        td3_strata.append(td3)
        for name, values in (("bc", bc), ("td3", td3)):
            ltp.append(_mean_row(env, name, [values], reps, seed))
    if len(envs) > 1:
        for name, strata in (("bc", bc_strata), ("td3", td3_strata)):
            ltp.append(_mean_row(ALL, name, strata, reps, seed))
    return CloneComparison(pl.DataFrame(corr, schema=CORRELATION_SCHEMA), pl.DataFrame(ltp, schema=LTP_SCHEMA),
                           clone, reps, seed)


def _mean_row(env: str, name: str, strata: list[np.ndarray], reps: int, seed: int) -> dict:
    pooled = np.concatenate(strata)
    lo = hi = None
    if reps:
        lo, hi = stratified_bootstrap_ci(strata, statistic=np.mean, n_resamples=reps, confidence=CONFIDENCE,
                                         seed=seed)
    return dict(env=env, policies=name, n=int(pooled.size), mean_ltp=float(pooled.mean()), lo=lo, hi=hi)
