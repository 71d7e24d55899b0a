"""A study's scope: which of its policies the warehouse holds, and the operator ids its
sample stage stores.

The study's policies are the trained jobs whose recorded configuration equals a
`[[train]]` entry (any job id; the first complete one, else one to resume) and its
examples; analyses choose among their checkpoints.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from retland.study.spec import OWN, SampleSpec, Study, StudyError, TrainSpec, error_lines, example_meta

__all__ = ["Scope", "train_config", "trained_runs", "find_job", "study_scope", "fmt_steps", "operator_text",
           "study_operator_id"]


@dataclass
class Scope:
    """The study's policies found in the warehouse."""
    jobs: dict[int, tuple[str, list[str], bool]] = field(default_factory=dict)  # train index -> job, runs, complete
    algo: dict[str, str] = field(default_factory=dict)  # run id -> algo
    env: dict[str, str] = field(default_factory=dict)
    steps: dict[str, list[int]] = field(default_factory=dict)  # run id -> checkpoint steps in the study
    base: Path | None = None  # the study file's folder ([[train]] config files are relative to it)

    @property
    def runs(self) -> list[str]:
        return sorted(self.steps)

    def where(self) -> str:
        return "run_id IN (" + ", ".join("'" + r.replace("'", "''") + "'" for r in self.runs) + ")"


def train_config(spec: TrainSpec, base: Path):
    from retland.train.config import load_train_config

    try:
        return load_train_config(base / spec.config if spec.config else None, algo=spec.algo, env=spec.env,
                                 variant=spec.variant, backend=spec.backend, seeds=spec.seeds, seed=spec.seed,
                                 total_steps=spec.steps, checkpoints=spec.checkpoints,
                                 eval_every=spec.eval_every, store_states=spec.store_states)
    except (ValidationError, ValueError) as exc:
        lines = error_lines(exc) if isinstance(exc, ValidationError) else [str(exc)]
        raise StudyError("; ".join(f"train ({spec.label}): {x}" for x in lines)) from None


def trained_runs(wh) -> list[dict]:
    """Every trained run with its config and checkpoint steps, in one query (as plain
    records: a GPU node without polars finds a study's jobs too)."""
    return wh.records("SELECT r.run_id, r.algo, r.env, r.config, r.seed, "
                      "list(c.step ORDER BY c.step) FILTER (WHERE c.step IS NOT NULL) AS steps "
                      "FROM runs r LEFT JOIN checkpoints c USING (run_id) "
                      "WHERE r.source = 'trained' GROUP BY ALL")


def find_job(rows: list[dict], cfg) -> tuple[str, list[str], bool] | None:
    """A trained job (of `_trained_runs` rows) whose recorded config equals `cfg`:
    (job id, run ids by seed, complete); the first complete one, else the one with most
    checkpoints."""
    from retland.train.checkpoints import run_config

    jobs: dict[str, list[dict]] = {}
    for r in rows:
        if r["algo"] != cfg.algo or r["env"] != cfg.env:
            continue
        job = json.loads(r["config"] or "{}").get("job_id")
        if job is not None:
            jobs.setdefault(job, []).append(r)
    best = None
    want = set(cfg.checkpoint_steps)
    for job in sorted(jobs):
        runs = jobs[job]
        try:
            stored = run_config(runs[0])
        except (ValidationError, ValueError):
            continue
        if stored != cfg:
            continue
        ids = [r["run_id"] for r in sorted(runs, key=lambda r: r["seed"])]
        n = sum(len(want & set(r["steps"] or ())) for r in runs)
        complete = len(runs) == cfg.seeds and n == cfg.seeds * len(want)
        if complete:
            return job, ids, True
        if best is None or n > best[0]:
            best = (n, job, ids)
    return None if best is None else (best[1], best[2], False)


def study_scope(study: Study, wh, base: Path) -> Scope:
    """Which of the study's policies the warehouse holds."""
    scope = Scope(base=base)
    rows = trained_runs(wh) if study.train else []
    steps_of = {r["run_id"]: r["steps"] or [] for r in rows}
    for i, spec in enumerate(study.train):
        cfg = train_config(spec, base)
        found = find_job(rows, cfg)
        if found is None:
            continue
        scope.jobs[i] = found
        job, ids, _ = found
        for run in ids:
            steps = [s for s in steps_of[run] if s in set(cfg.checkpoint_steps)]
            if not steps:
                continue
            if study.sample and study.sample.steps:
                steps = [s for s in steps if s in set(study.sample.steps)]
            scope.steps[run], scope.algo[run], scope.env[run] = steps, cfg.algo, cfg.env
    for name in study.examples:
        meta = example_meta(name)
        hit = wh.query("SELECT 1 FROM checkpoints WHERE run_id = ? AND step = ?", [meta["run_id"], meta["step"]])
        if hit.height and not (study.sample and study.sample.steps and meta["step"] not in study.sample.steps):
            steps = scope.steps.setdefault(meta["run_id"], [])
            if meta["step"] not in steps:
                steps.append(int(meta["step"]))
            scope.algo[meta["run_id"]], scope.env[meta["run_id"]] = meta["algo"], meta["env"]
    return scope


def fmt_steps(steps) -> str:
    return ",".join(str(int(s)) for s in sorted(steps))


def operator_text(op: str, algo: str, sample: SampleSpec | None = None) -> str:
    """Operator text for `retland sample --operator`: 'own' is the run's training update
    (or the study's [sample] own.<algo>)."""
    if op != OWN:
        return op
    return sample.own_operator(algo) if sample is not None else algo


def study_operator_id(study: Study, op: str, algo: str, env: str) -> str:
    """The operator id the study's sample stage stores for operator text `op` ("own" or
    an operator) on runs of `algo` on `env`."""
    from retland.purd.operators import parse_operator

    s = study.sample
    return parse_operator(operator_text(op, algo, s), env=env, horizon=s.horizon, seed=s.key_seed).operator_id
