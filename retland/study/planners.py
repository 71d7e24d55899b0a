"""A study's stages: each a planner that reads the warehouse as it stands and returns
the library requests left to run.

    train / example -> sample -> failures -> landscape -> interpolation -> stabilize -> start_states -> clones -> report

A stage holds the requests the commands themselves build from their options
(`retland.train.request.TrainRequest`, `retland.shipped.ExampleRequest`,
`retland.purd.job.SampleRequest`, `retland.analyses.failures.FailuresRequest`,
`retland.config.settings.LandscapeRequest`,
`retland.analyses.interpolation.InterpolationRequest`,
`retland.analyses.stabilize.StabilizeRequest`, `retland.analyses.start_states.StartStatesRequest`,
`retland.analyses.clones.CloneRequest`,
`retland.analyses.distributions.StatsRequest`,
`retland.report.ReportRequest`), so a study runs the library functions the commands
run (`retland.study.run`), not a second code path; a request's `argv()` is the command
line that does the same, shown by `--plan`. Whether a stage is done is read with the
analyses' own read-only planners (the sampler's stored indices, the landscape and
interpolation plans, Algorithm 1's completed experiments), so a study killed at any
point, or run on another machine against the same warehouse, continues where the
warehouse stands; the runners themselves resume inside a stage.

Analyses choose among the study's checkpoints after sampling: `top-ltp:K` takes the K
checkpoints with the highest left-tail probability (LTP > 0 with a positive mode, β =
0.5) under the analysis's operator over the whole study, or K per env with `per_env =
true` ([failures] and [stabilize]); or `["RUN_ID:STEP", ...]`. [failures] also takes
`random:K` (K drawn uniformly with its `seed`, as the paper's §3.2 does) and `algo`.
Interpolation pairs every trained checkpoint of the study's (algo, env) in the
warehouse, as `retland interpolate --env` does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from retland.study.scope import (
    Scope,
    find_job,
    operator_text,
    study_operator_id,
    study_scope,
    train_config,
    trained_runs,
)
from retland.study.spec import _REF, _SELECTION, OWN, Study, StudyError, TrainSpec, example_meta

__all__ = ["Stage", "Training", "stages", "train_request", "fmt_env_steps"]


@dataclass(frozen=True)
class Training:
    """Training a stage still has to do: `jobs` jobs of `seeds` vmapped seeds of `algo`
    on a task, `steps` env steps per seed left in each (BC: gradient steps)."""
    algo: str
    env: str
    variant: str
    backend: str
    seeds: int
    steps: int
    jobs: int = 1


@dataclass
class Stage:
    """One stage as the warehouse stands now: what is done and the requests left (each a
    frozen request of the library; `argv()` renders it as its command line)."""
    name: str
    status: Literal["done", "todo", "waiting", "nothing"]
    detail: str
    requests: list = field(default_factory=list)
    env_steps: int = 0  # estimate of env steps still to compute (rollouts and training)
    training: tuple[Training, ...] = ()  # the training jobs among that work (what --plan estimates them from)

    @property
    def done(self) -> bool:
        return self.status in ("done", "nothing")

    @property
    def kind(self) -> str:
        """train, example, sample, failures, landscape, interpolation, stabilize or report."""
        return self.name.split()[0]

    @property
    def commands(self) -> list[list[str]]:
        """The requests as command lines (for --plan and the study's log)."""
        return [r.argv() for r in self.requests]


def train_request(spec: TrainSpec, base: Path):
    """The TrainRequest of a [[train]] entry (its config file relative to the study's folder)."""
    from retland.train.request import TrainRequest

    return TrainRequest(algo=spec.algo, env=spec.env, variant=spec.variant, seeds=spec.seeds, seed=spec.seed,
                        total_steps=spec.steps,
                        checkpoints=tuple(sorted(spec.checkpoints)) if spec.checkpoints else None,
                        backend=spec.backend, eval_every=spec.eval_every,
                        config=base / spec.config if spec.config else None, store_states=spec.store_states)


def _train_stage(study: Study, i: int, wh, base: Path) -> Stage:
    from retland.train.request import TrainRequest

    spec = study.train[i]
    cfg = train_config(spec, base)
    found = find_job(trained_runs(wh), cfg)
    name = f"train {spec.algo} {spec.env}"
    if found and found[2]:
        return Stage(name, "done", f"job {found[0]}: {spec.seeds} runs x {len(cfg.checkpoint_steps)} checkpoints")
    if found:
        job = found[0]
        from retland.warehouse.sqlgen import in_list

        cond, params = in_list("run_id", found[1])
        last = wh.query(f"SELECT min(m) AS m FROM (SELECT max(step) AS m FROM checkpoints WHERE {cond} "
                        "GROUP BY run_id)", params)["m"][0] or 0
        left = cfg.steps - int(last)
        return Stage(name, "todo", f"resume job {job} from step {int(last):,} ({spec.label})",
                     [TrainRequest(resume=job)], left * cfg.seeds, (_training(cfg, left),))
    return Stage(name, "todo", spec.label, [train_request(spec, base)], cfg.steps * cfg.seeds,
                 (_training(cfg, cfg.steps),))


def _training(cfg, steps: int, jobs: int = 1) -> Training:
    return Training(cfg.algo, cfg.env, cfg.variant, cfg.backend, cfg.seeds, int(steps), jobs)


def _example_stage(study: Study, name: str, wh) -> Stage:
    from retland.shipped import ExampleRequest

    meta = example_meta(name)
    hit = wh.query("SELECT 1 FROM checkpoints WHERE run_id = ? AND step = ?", [meta["run_id"], meta["step"]])
    if hit.height:
        return Stage(f"example {name}", "done", f"{meta['run_id']} @ {meta['step']:,} is in the warehouse")
    return Stage(f"example {name}", "todo", f"add {meta['algo']} {meta['env']} checkpoint {meta['run_id']} @ "
                 f"{meta['step']:,}", [ExampleRequest(name)])


def _expected_runs(study: Study) -> int:
    """Distributions per operator the finished study will hold (for estimates before training)."""
    n = 0
    for t in study.train:
        steps = [c for c in t.checkpoint_steps if not (study.sample.steps and c not in study.sample.steps)]
        n += t.seeds * len(steps)
    for name in study.examples:
        if not (study.sample.steps and example_meta(name)["step"] not in study.sample.steps):
            n += 1
    return n


def _sample_stage(study: Study, wh, scope: Scope) -> Stage:
    from retland.purd.job import SampleRequest
    from retland.purd.sampling import stored_rows

    s = study.sample
    groups: dict[tuple[str, str, tuple[int, ...]], list[str]] = {}
    for run in scope.runs:
        groups.setdefault((scope.algo[run], scope.env[run], tuple(scope.steps[run])), []).append(run)
    work = [(op, key, runs, study_operator_id(study, op, key[0], key[1]))
            for op in s.operators for key, runs in sorted(groups.items()) if key[2]]
    stored = stored_rows(wh, [oid for *_, oid in work]) if work else {}
    requests, missing, total = [], 0, 0
    for op, (algo, env, steps), runs, oid in work:
        todo = 0
        for r in runs:
            for st in steps:
                have = stored.get((r, st, oid), (set(), set()))[0]
                todo += s.samples - sum(1 for i in have if 0 <= i < s.samples)
                total += s.samples
        if todo:
            missing += todo
            requests.append(SampleRequest(operator_text(op, algo, s), runs=tuple(runs),
                                          steps=tuple(sorted(int(x) for x in steps)), samples=s.samples,
                                          horizon=s.horizon, key_seed=s.key_seed))
    pending = _expected_runs(study) * len(s.operators) * s.samples - total
    if pending > 0:
        return Stage("sample", "waiting" if not requests else "todo",
                     f"{missing:,} samples missing now; {pending:,} more once the policies exist", requests,
                     (missing + pending) * s.horizon)
    if not requests:
        return Stage("sample", "done", f"{total // max(s.samples, 1)} distributions x {s.samples} samples stored")
    return Stage("sample", "todo", f"{missing:,} of {total:,} samples missing", requests, missing * s.horizon)


def _sampled(study: Study, wh, scope: Scope) -> bool:
    st = _sample_stage(study, wh, scope)
    return st.done


def _candidates(study: Study, op: str, wh, scope: Scope, algo: str | None = None):
    """The study's sampled checkpoints (of `algo`'s runs) whose distribution under `op`
    has LTP > 0 and a positive mode: failures.Candidate rows."""
    from retland.analyses.failures import Candidate

    out = []
    for run in scope.runs:
        if algo is not None and scope.algo[run] != algo:
            continue
        oid = study_operator_id(study, op, scope.algo[run], scope.env[run])
        for r in wh.query("SELECT run_id, step, ltp FROM purd_stats() WHERE run_id = ? AND operator_id = ? "
                          "AND ltp > 0 AND NOT mode_nonpositive", [run, oid]).to_dicts():
            if r["step"] in scope.steps[run]:
                out.append(Candidate(scope.env[run], r["run_id"], int(r["step"]), oid, float(r["ltp"])))
    return out


def _chosen(study: Study, spec_sel, op: str, wh, scope: Scope, *, td3_only: bool = False,
            per_env: bool = False) -> list[tuple[str, int]]:
    """The checkpoints an analysis runs on: explicit refs, or top-ltp:K of the study's
    sampled checkpoints under operator `op`: the K of highest LTP over the study, or K per
    env with `per_env` (one meaning for every section). td3_only: TD3 runs only."""
    if not isinstance(spec_sel, str):
        out = []
        for ref in spec_sel:
            m = _REF.match(ref)
            out.append((m.group(1), int(m.group(2))))
        return out
    k = int(_SELECTION.match(spec_sel).group(1))
    rows = [(c.env, -c.ltp, c.run_id, c.step) for c in _candidates(study, op, wh, scope, "td3" if td3_only else None)]
    rows.sort()
    if per_env:
        out, taken = [], {}
        for env, _, run, step in rows:
            if taken.get(env, 0) < k:
                taken[env] = taken.get(env, 0) + 1
                out.append((run, step))
        return out
    rows.sort(key=lambda x: (x[1], x[2], x[3]))
    return [(run, step) for _, _, run, step in rows[:k]]


def _run_info(wh, scope: Scope, run: str) -> tuple[str, str]:
    """(algo, env) of a run: the study's, else (an explicit RUN:STEP outside it) the runs table's."""
    if run in scope.algo:
        return scope.algo[run], scope.env[run]
    rows = wh.query("SELECT algo, env FROM runs WHERE run_id = ?", [run]).to_dicts()
    if not rows:
        raise StudyError(f"run {run!r} (named in the study file) is not in the warehouse at {wh.root}")
    return rows[0]["algo"], rows[0]["env"]


def _waiting(name: str, why: str) -> Stage:
    return Stage(name, "waiting", why)


def _failures_stage(study: Study, wh, scope: Scope) -> Stage:
    from retland.analyses import failures
    from retland.analyses.failures import FailuresRequest

    spec = study.failures
    if not _sampled(study, wh, scope):
        return _waiting("failures", f"chooses {spec.checkpoints} once sampling is done")
    op = study.operator_of(spec)
    ranked = isinstance(spec.checkpoints, str)
    # top-ltp:K / random:K: the first K checkpoints in the selector's order (per env with
    # per_env) that have a pair to show (a bimodal distribution may have no sample within
    # 10% of its mean); explicit ones must have one
    if ranked:
        selector = failures.parse_selector(spec.checkpoints)
        groups = failures.order_candidates(_candidates(study, op, wh, scope, spec.algo), selector, spec.seed,
                                           spec.per_env)
        k = selector.k
    else:
        groups, k = [[(run, step) for run, step in _chosen(study, spec.checkpoints, op, wh, scope)]], None
    groups = [[(c.run_id, c.step) if ranked else c for c in g] for g in groups]
    if not any(groups):
        return Stage("failures", "nothing", "no sampled checkpoint of the study has LTP > 0: no failure to explain")
    requests, pairs, todo, undrawn, picked, passed = [], 0, 0, 0, [], []
    for group in groups:
        taken = 0
        for run, step in group:
            if k is not None and taken == k:
                break
            oid = study_operator_id(study, op, *_run_info(wh, scope, run))
            try:
                plan = failures.plan(wh, run, step, oid, spec.pairs)
            except failures.FailureError as exc:
                if not ranked:
                    raise StudyError(f"failures.checkpoints {run}:{step}: {exc}") from None
                passed.append(f"{run}@{step:,}")
                continue
            taken += 1
            picked.append((run, step))
            miss = failures.missing_pairs(wh, plan)
            pairs += len(plan.pairs)
            if miss:
                todo += len(miss)
                requests.append(FailuresRequest(run=run, step=int(step), operator=oid, pairs=spec.pairs))
            elif (n := _undrawn(wh, plan)) and _can_draw():
                # stored pairs without frames (a warehouse from before frames, or one
                # filled where no renderer worked): the same request draws them
                undrawn += n
                requests.append(FailuresRequest(run=run, step=int(step), operator=oid, pairs=spec.pairs))
    horizon = study.sample.horizon
    if not picked:  # every candidate passed over: no pair to show anywhere
        return Stage("failures", "nothing", "no chosen checkpoint has a sample within 10% of its mean to pair "
                     f"with a failure (passed over: {', '.join(passed)})")
    where = ", ".join(f"{r}@{s:,}" for r, s in picked)
    if passed:
        where += f" (passed over, no sample near the mean: {', '.join(passed)})"
    if not requests:
        return Stage("failures", "done", f"{pairs} pair(s) stored for {where}")
    what = [f"{todo} of {pairs} pair(s) to re-roll"] if todo else []
    what += [f"{undrawn} stored sample(s) to draw"] if undrawn else []
    return Stage("failures", "todo", f"{', '.join(what)} for {where}", requests, (2 * todo + undrawn) * horizon)


def _undrawn(wh, plan) -> int:
    """Samples of a failures plan's stored pairs that have no frames yet."""
    from retland.analyses import render

    return sum(len(render.missing(p)) for p in render.pair_plans(wh, plan))


def _can_draw() -> bool:
    """A renderer works here (else missing frames are not work the stage can do)."""
    from retland.core import render

    return render.available() is not None


def _landscape_stage(study: Study, wh, scope: Scope) -> Stage:
    from retland.analyses import landscape

    spec = study.landscape
    if isinstance(spec.checkpoints, str) and not _sampled(study, wh, scope):
        return _waiting("landscape", f"chooses {spec.checkpoints} once sampling is done")
    op = study.operator_of(spec) if study.sample else OWN
    picked = _chosen(study, spec.checkpoints, op, wh, scope)
    if not picked:
        return Stage("landscape", "nothing", "no sampled checkpoint of the study has LTP > 0")
    requests, todo, total = [], 0, 0
    for run, step in picked:
        algo, _ = _run_info(wh, scope, run)
        req = spec.request(run, step, operator_text(op, algo, study.sample))
        p = landscape.plan(wh, req)
        total += req.n * len(req.zoom)
        if p.todo:
            todo += p.todo
            requests.append(req)
            horizon = p.horizon
    where = ", ".join(f"{r}@{s:,}" for r, s in picked)
    if not requests:
        return Stage("landscape", "done", f"{total:,} points stored for {where}")
    return Stage("landscape", "todo", f"{todo:,} of {total:,} points to compute for {where}", requests,
                 todo * horizon)


def _interpolation_stage(study: Study, wh, scope: Scope) -> Stage:
    from retland.analyses import interpolation
    from retland.analyses.interpolation import InterpolationRequest
    from retland.config.settings import InterpolationError

    spec = study.interpolation
    s = spec.settings()
    if len(scope.jobs) < len(study.train) or not all(c for _, _, c in scope.jobs.values()):
        return _waiting("interpolation", "pairs trained checkpoints once training is done")
    requests, todo, total, npairs = [], 0, 0, 0
    horizon = 1000
    for algo, env in sorted({(t.algo, t.env) for t in study.train}):
        try:
            sel = interpolation.select_pairs(wh, env, algo, spec.pairs, spec.pairs_per_kind, spec.pair_seed)
            plans = interpolation.plan(wh, sel.pairs, s, pair_seed=spec.pair_seed)
        except InterpolationError as exc:
            return Stage("interpolation", "nothing", str(exc))
        n = s.points * s.samples
        miss = sum(n - len(p.present) for p in plans)
        npairs += len(plans)
        total += n * len(plans)
        if miss:
            todo += miss
            horizon = plans[0].horizon
            requests.append(InterpolationRequest(env=env, algo=algo, pair_kind=spec.pairs, settings=s))
    if not requests:
        return Stage("interpolation", "done", f"{npairs} pairs x {s.points} points x {s.samples} samples stored")
    return Stage("interpolation", "todo", f"{todo:,} of {total:,} rollouts over {npairs} pairs to compute",
                 requests, todo * horizon)


def _stabilize_stage(study: Study, wh, scope: Scope) -> Stage:
    from retland.analyses.stabilize.sources import StabilizeRequest, plan_sources

    spec = study.stabilize
    if isinstance(spec.sources, str) and not _sampled(study, wh, scope):
        return _waiting("stabilize", f"chooses sources {spec.sources}{' per env' if spec.per_env else ''} once "
                        "sampling is done")
    op = "td3" if study.sample is None else OWN if OWN in study.sample.operators else next(
        o for o in study.sample.operators if o == "td3" or o.startswith("td3:"))
    picked = _chosen(study, spec.sources, op, wh, scope, td3_only=True, per_env=spec.per_env)
    if not picked:
        return Stage("stabilize", "nothing", "no sampled TD3 checkpoint of the study has LTP > 0: nothing to stabilize")
    base = spec.base()
    plan = plan_sources(wh, base, picked)
    lanes = len(base.arms) * len(base.seeds)
    per_source = lanes * (base.proposals + 1) * base.samples
    horizon = study.sample.horizon if study.sample else 1000
    if not plan.todo:
        return Stage("stabilize", "done", f"{len(picked)} source(s) done: {', '.join(f'{r}@{s:,}' for r, s in picked)}")
    requests = [StabilizeRequest(source=((plan.configs[i].run_id, int(plan.configs[i].step)),), config=base)
                for i in plan.todo]
    return Stage("stabilize", "todo", f"{len(plan.todo)} of {len(picked)} source(s) to run", requests,
                 len(plan.todo) * per_source * horizon)


def _start_states_stage(study: Study, wh, scope: Scope) -> Stage:
    """Every run of the study's store_states [[train]] entries: their distributions from
    replay rows and from s0 (retland.analyses.start_states)."""
    from retland.analyses.start_states import StartStatesRequest, prepare

    spec = study.start_states
    used = [i for i, t in enumerate(study.train) if t.store_states and spec.picks(t)]
    sample = study.sample
    samples = spec.samples or (sample.samples if sample else 200)
    horizon = spec.horizon or (sample.horizon if sample else 1000)
    if not all(i in scope.jobs and scope.jobs[i][2] for i in used):
        # estimated from the file: each chosen run's checkpoints from `rows` rows and s0
        n = sum(len(spec.picks(study.train[i])) * len([c for c in study.train[i].checkpoint_steps
                                                       if spec.steps is None or c in spec.steps]) for i in used)
        return Stage("start_states", "waiting", "starts from replay rows once training is done", [],
                     n * (spec.rows + 1) * samples * horizon)
    runs = sorted(scope.jobs[i][1][k] for i in used for k in spec.picks(study.train[i]))
    request = StartStatesRequest(
        runs=tuple(runs), steps=spec.steps, operator=spec.operator, rows=spec.rows,
        samples=samples, horizon=horizon, key_seed=spec.key_seed)
    prepared = prepare(wh, request)
    what = f"{spec.rows} replay rows and s0 at the checkpoints of {len(runs)} run(s)"
    if not prepared.new_rows:
        return Stage("start_states", "done", f"{what}: stored")
    return Stage("start_states", "todo", f"{prepared.new_rows:,} samples to compute from {what}", [request],
                 prepared.new_rows * request.horizon)


def _clones_teachers(study: Study, wh, scope: Scope) -> list[str] | None:
    """The [clones] teachers, "RUN@STEP": `teachers_per_run` checkpoints of each run of the
    study's TD3 jobs; None until every TD3 [[train]] job is complete."""
    from retland.train.checkpoints import list_checkpoints

    teachers = []
    for i, t in enumerate(study.train):
        picks = study.clones.picks(t) if t.algo == "td3" else []
        if not picks:
            continue
        found = scope.jobs.get(i)
        if found is None or not found[2]:
            return None
        for run in (found[1][k] for k in picks):
            teachers += [f"{run}@{step}" for step in study.clones.teacher_steps(list_checkpoints(wh, run))]
    return list(dict.fromkeys(teachers))


def _clones_stage(study: Study, wh, scope: Scope) -> Stage:
    from retland.analyses.clones import CloneError, CloneRequest, clone_configs, existing_clone_job
    from retland.purd.operators import parse_operator
    from retland.purd.sampling import stored_rows
    from retland.train import checkpoints as ck
    from retland.train.job import run_ids

    spec = study.clones
    teachers = _clones_teachers(study, wh, scope)
    s = study.sample
    samples = spec.samples or (s.samples if s else 1000)
    horizon = spec.horizon or (s.horizon if s else None)
    if teachers is None:
        # estimated from the file: each teacher's BC job and its clone's distribution (its
        # teacher's own distribution may come from [sample]) at the teachers' horizon
        training, n, env_steps = [], 0, 0
        for t in study.train:
            runs = len(spec.picks(t)) if t.algo == "td3" else 0
            if not runs:
                continue
            k = runs * min(spec.teachers_per_run, len(t.checkpoint_steps))
            cfg = train_config(t, scope.base or Path("."))
            n += k
            env_steps += k * samples * (horizon or cfg.horizon)
            training.append(Training("bc", cfg.env, cfg.variant, cfg.backend, 1, spec.steps, k))
        k = spec.teachers_per_run
        return Stage("clones", "waiting", f"clones {k} checkpoint{'s' if k != 1 else ''} of each chosen TD3 run "
                     f"({n} teachers, {n} BC job(s) of {spec.steps:,} gradient steps) once training is done", [],
                     env_steps, tuple(training))
    request = CloneRequest(teachers=tuple(teachers), total_steps=spec.steps, agent=dict(spec.agent),
                           samples=samples, horizon=horizon, key_seed=s.key_seed if s else 0)
    try:
        plans = clone_configs(wh, request)
    except CloneError as exc:
        raise StudyError(f"[clones]: {exc}") from None
    left, untrained, dists, env_steps, training = [], 0, 0, 0, []
    for text, (teacher, cfg) in zip(teachers, plans):
        h = horizon or cfg.horizon
        job = existing_clone_job(wh, cfg)
        ids = run_ids(job, cfg) if job else []
        last = max(cfg.checkpoint_steps)
        want = [(r, last, parse_operator("bc", env=cfg.env, horizon=h, seed=request.key_seed).operator_id)
                for r in ids]
        want.append((teacher["run_id"], int(teacher["step"]),
                     parse_operator("td3", env=cfg.env, horizon=h, seed=request.key_seed).operator_id))
        stored = stored_rows(wh, [oid for *_, oid in want])
        missing = sum(1 for key in want if sum(1 for i in stored.get(key, (set(),))[0] if 0 <= i < samples) < samples)
        missing += 0 if job else cfg.seeds  # the clones' distributions, once trained
        trained = bool(job) and all(set(cfg.checkpoint_steps) <= set(ck.list_checkpoints(wh, r)) for r in ids)
        if not trained:
            done = min((max(ck.list_checkpoints(wh, r), default=0) for r in ids), default=0)
            training.append(_training(cfg, cfg.steps - done))
        if missing or not trained:
            left.append(text)
            untrained += not trained
            dists += missing
            env_steps += missing * samples * h
    what = f"{len(teachers)} teacher(s), {spec.teachers_per_run} per TD3 run"
    if not left:
        return Stage("clones", "done", f"{what}: each cloned ({spec.steps:,} gradient steps) and sampled beside "
                                       f"its clone ({samples} samples each)")
    return Stage("clones", "todo", f"{len(left)} of {what} left: {untrained} BC job(s) to train or finish, "
                                   f"{dists} distribution(s) to sample",
                 [request.model_copy(update={"teachers": tuple(left)})], env_steps, tuple(training))


def _report_where(study: Study, wh, scope: Scope) -> str:
    """The rows the statistics and the report cover: the study's runs, and with [clones]
    the BC runs that clone them (else the report's Behaviour cloning section has none)."""
    if study.clones is None or not scope.runs:
        return scope.where()
    from retland.warehouse.sqlgen import in_list

    cond, params = in_list("parent_run_id", scope.runs)
    clones = [r["run_id"] for r in wh.records(f"SELECT run_id FROM runs WHERE algo = 'bc' AND source = 'trained' "
                                              f"AND {cond} ORDER BY run_id", params)]
    return "run_id IN (" + ", ".join("'" + r.replace("'", "''") + "'" for r in [*scope.runs, *clones]) + ")"


def _report_stage(study: Study, wh, scope: Scope) -> Stage:
    from retland.analyses.distributions import StatsRequest
    from retland.report import ReportRequest

    if not scope.runs:
        return _waiting("report", "written once the study has policies")
    out = study.report_path()
    where = _report_where(study, wh, scope)
    return Stage("report", "todo", f"statistics, and the report written to {out} (every run)",
                 [StatsRequest(where=where),
                  ReportRequest(where=where, output=Path(out), bootstrap=study.report.bootstrap)])


def stages(study: Study, base: Path) -> list[tuple[str, Callable[[object], Stage]]]:
    """The study's stages in order, each a function of the warehouse as it stands when
    the stage starts (earlier stages change what later ones see)."""
    out: list[tuple[str, Callable]] = []
    for i, t in enumerate(study.train):
        out.append((f"train {t.algo} {t.env}", lambda wh, i=i: _train_stage(study, i, wh, base)))
    for name in study.examples:
        out.append((f"example {name}", lambda wh, name=name: _example_stage(study, name, wh)))

    def scoped(fn):
        return lambda wh: fn(study, wh, study_scope(study, wh, base))

    for kind, fn in (("sample", _sample_stage), ("failures", _failures_stage), ("landscape", _landscape_stage),
                     ("interpolation", _interpolation_stage), ("stabilize", _stabilize_stage),
                     ("start_states", _start_states_stage), ("clones", _clones_stage), ("report", _report_stage)):
        if getattr(study, kind) is not None:
            out.append((kind, scoped(fn)))
    return out


def fmt_env_steps(n: int) -> str:
    if n <= 0:
        return "-"
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(n)
