"""Wall-time estimates of a study's stages, from throughput this warehouse has measured.

A stage's work left is training (`Stage.training`: the [[train]] jobs, and the BC jobs of
[clones]) and rollouts (`Stage.env_steps` of the rollout stages). Training is divided by
the rate measured here on the same kind of device for its algorithm and task (the seed
count closest to the job's, plus what a job costs once: compile, warm-up;
retland.analyses.estimates), rollouts by the slowest sampling rate of the study's tasks,
since their cost is 1000-step rollouts of those tasks. A stage whose task has never run
on this device gets no estimate and `--plan` says so, unless `--calibrate` measured it
(retland.analyses.calibrate): an estimate is a measurement scaled, never a guess.
"""
from __future__ import annotations

from dataclasses import dataclass

from retland.study.planners import Stage
from retland.study.spec import Study

# stages whose env steps are rollouts of the study's tasks ([clones]: its clones' and
# teachers' distributions; its BC training is `Stage.training`)
ROLLOUT_KINDS = ("sample", "failures", "landscape", "interpolation", "stabilize", "start_states", "clones")


@dataclass(frozen=True)
class Estimate:
    seconds: float | None  # None: nothing measured on this device for the stage's task(s)
    basis: str  # what it was scaled from, or what is missing
    calibrated: bool = False  # scaled (in part) from a calibration run (--plan --calibrate)


def _tasks(study: Study) -> list[tuple[str, str, str, str]]:
    """(algo, env, variant, backend) of the study's policies."""
    from retland.config.registry import default_backend
    from retland.shipped import EXAMPLES

    out = {(t.algo, t.env, t.variant, t.backend or default_backend(t.env, t.variant)) for t in study.train}
    for name in study.examples:
        run = EXAMPLES[name].meta["run"]
        variant = run.get("variant") or "brax"
        out.add((run["algo"], run["env"], variant, run.get("backend") or default_backend(run["env"], variant)))
    return sorted(out)


def stage_estimates(study: Study, rows: list[Stage], wh, device: str) -> list[Estimate | None]:
    """One estimate per stage row, in the order of `stages(study, …)` (see stage_estimate)."""
    cache: dict = {}
    return [stage_estimate(study, i, st, wh, device, cache) for i, st in enumerate(rows)]


def stage_estimate(study: Study, index: int, st: Stage, wh, device: str, cache: dict | None = None) -> Estimate | None:
    """The estimate of stage number `index` (0-based, in the order of `stages`) as it
    stands: its training jobs (`st.training`) at their measured training rates plus its
    rollouts (`st.env_steps` of a rollout stage) at the study's slowest sampling rate;
    None where there is nothing to estimate (done, no work, example, report).
    cache: reused between calls for the study's sampling rate."""
    from retland.analyses.estimates import training_rate

    cache = {} if cache is None else cache
    if st.done:
        return None
    seconds, bases, missing, calibrated = 0.0, [], [], False
    for w in st.training:
        if w.steps <= 0:
            continue
        rate = training_rate(wh, algo=w.algo, env=w.env, variant=w.variant, backend=w.backend, device=device,
                             seeds=w.seeds)
        if rate is None:
            missing.append(f"no {w.algo} {w.env} training measured on {device}")
            continue
        seconds += w.jobs * rate.seconds(w.steps * w.seeds)
        bases.append(rate.measured_on)
        calibrated |= rate.calibrated
    if st.kind in ROLLOUT_KINDS and st.env_steps > 0:
        if "rollout" not in cache:
            cache["rollout"] = _slowest_rate(study, wh, device)
        rate, basis = cache["rollout"]
        if rate is None:
            missing.append(basis)
        else:
            seconds += rate.seconds(st.env_steps)
            bases.append(basis)
            calibrated |= rate.calibrated
    if missing:
        return Estimate(None, "; ".join(dict.fromkeys(missing)))
    if not bases:
        return None
    return Estimate(seconds, "; ".join(dict.fromkeys(bases)), calibrated)


def _slowest_rate(study: Study, wh, device: str):
    """(the slowest sampling Rate among the study's tasks, what it was measured on), or
    (None, which task has none) when one of them was never sampled on this device."""
    from retland.analyses.estimates import sampling_rate

    slowest = None
    for algo, env, variant, backend in _tasks(study):
        rate = sampling_rate(wh, algo=algo, env=env, variant=variant, backend=backend, device=device)
        if rate is None:
            return None, f"no {algo} {env} ({variant}) sampling measured on {device}"
        if slowest is None or rate.env_steps_per_second < slowest.env_steps_per_second:
            slowest = rate
    return slowest, slowest.measured_on


def calibrate(study: Study, base, rows: list[Stage], wh, device: str, *, progress=None,
              say=lambda text: None) -> list:
    """Measure, with short calibration runs on this device (retland.analyses.calibrate),
    what the stages whose estimate is `?` lack: each training program (algorithm, task,
    agent settings, seed count: BC's of [clones] too) with no training rate here, and
    each of the study's tasks with no sampling rate here (its [sample] operator, horizon
    and chunk size, from the state of a training calibration). The timings go into the
    warehouse, so they are history for every later plan. Returns the Calibrated
    measurements, in order; `say(text)` is told what is measured and what it gave."""
    from retland.analyses.calibrate import calibrate_sampling, calibrate_training, calibration_checkpoint
    from retland.analyses.estimates import fmt_seconds, sampling_rate, training_rate
    from retland.study.scope import operator_text, train_config

    unknown = [st for st, est in zip(rows, stage_estimates(study, rows, wh, device))
               if est is not None and est.seconds is None]
    train_work, sample_tasks = {}, []
    for st in unknown:
        for w in st.training:
            key = (w.algo, w.env, w.variant, w.backend, w.seeds)
            if w.steps > 0 and key not in train_work and training_rate(
                    wh, algo=w.algo, env=w.env, variant=w.variant, backend=w.backend, device=device,
                    seeds=w.seeds) is None:
                train_work[key] = w
        if st.kind in ROLLOUT_KINDS and st.env_steps > 0:
            for task in _tasks(study):
                if task not in sample_tasks and sampling_rate(wh, algo=task[0], env=task[1], variant=task[2],
                                                              backend=task[3], device=device) is None:
                    sample_tasks.append(task)
    done, states = [], {}

    def report(c) -> None:
        rate = c.steady_rate
        first = c.rows[0]["seconds"]
        say(f"calibrated {c.what}: first {fmt_seconds(first)} (compile included), then "
            f"{rate:,.0f} env steps/s" if rate else f"calibrated {c.what}: {fmt_seconds(first)}")

    def train_cfg(algo, env, variant, backend, seeds):
        if algo == "bc":
            return _bc_config(study, env, variant, backend, seeds)
        spec = next(t for t in study.train if (t.algo, t.env, t.variant) == (algo, env, variant)
                    and train_config(t, base).backend == backend)
        return train_config(spec, base).model_copy(update={"seeds": seeds, "seed": 0})

    for (algo, env, variant, backend, seeds), w in train_work.items():
        cfg = train_cfg(algo, env, variant, backend, seeds)
        c = calibrate_training(wh, cfg, progress=progress)
        states.setdefault((algo, env, variant, backend), (cfg, c))
        done.append(c)
        report(c)
    for algo, env, variant, backend in sample_tasks:
        if not any((t.algo, t.env, t.variant) == (algo, env, variant) for t in study.train):
            say(f"not calibrated: {algo} {env} sampling (an example's task: its stage adds it, and sampling it "
                "measures it)")
            continue
        ckpt = _stored_checkpoint(wh, algo, env, variant, backend)
        if ckpt is None:  # nothing trained yet: the state a training calibration reached
            if (algo, env, variant, backend) not in states:
                cfg = train_cfg(algo, env, variant, backend, 1)
                c = calibrate_training(wh, cfg, progress=progress)
                states[(algo, env, variant, backend)] = (cfg, c)
                done.append(c)
                report(c)
            ckpt = calibration_checkpoint(*states[(algo, env, variant, backend)])
        s = study.sample
        op = operator_text(s.operators[0], algo, s) if s is not None else algo
        c = calibrate_sampling(wh, ckpt, op, s.horizon if s else 1000, "auto", s.samples if s else 1000,
                               progress=progress)
        done.append(c)
        report(c)
    return done


# BC's calibration dataset: its rows' count does not change a gradient step's cost (a
# minibatch is drawn either way), only the memory it takes
BC_CALIBRATION_ROWS = 100_000


def _bc_config(study: Study, env: str, variant: str, backend: str, seeds: int):
    """The TrainConfig of a [clones] BC job on a task, with a stand-in teacher (calibration)."""
    from retland.train.config import load_train_config

    spec = study.clones
    return load_train_config(None, algo="bc", env=env, variant=variant, backend=backend, seeds=seeds,
                             total_steps=spec.steps,
                             agent_fields={**spec.agent, "teacher_run_id": "calibration", "teacher_step": 1,
                                           "dataset_size": BC_CALIBRATION_ROWS})


def _stored_checkpoint(wh, algo: str, env: str, variant: str, backend: str):
    """The last checkpoint of a trained run of this task in the warehouse, loaded; None if none."""
    from retland.train.checkpoints import load_checkpoint

    rows = wh.records("SELECT c.run_id, max(c.step) AS step FROM checkpoints c JOIN runs r USING (run_id) "
                      "WHERE r.source = 'trained' AND r.algo = ? AND r.env = ? AND run_variant(r.variant, r.source) = ? "
                      "AND r.backend = ? AND c.artifact_path IS NOT NULL GROUP BY c.run_id ORDER BY c.run_id LIMIT 1",
                      [algo, env, variant, backend])
    return load_checkpoint(wh, rows[0]["run_id"], int(rows[0]["step"])) if rows else None
