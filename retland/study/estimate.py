"""Wall-time estimates of a study's stages, from throughput this warehouse has measured.

A stage's env steps left (`Stage.env_steps`) divided by a rate measured here on the same
kind of device (retland.analyses.estimates): training stages by the training rate of
their algorithm and task (the job with the closest number of seeds), the rollout stages
(sample, failures, landscape, interpolation, stabilize) by the slowest sampling rate of
the study's tasks, since their cost is 1000-step rollouts of those tasks. A stage whose
task has never run on this device gets no estimate, and `--plan` says so: an estimate is
a measurement scaled, never a guess.
"""
from __future__ import annotations

from dataclasses import dataclass

from retland.study.planners import Stage
from retland.study.spec import Study

ROLLOUT_KINDS = ("sample", "failures", "landscape", "interpolation", "stabilize")


@dataclass(frozen=True)
class Estimate:
    seconds: float | None  # None: nothing measured on this device for the stage's task(s)
    basis: str  # what it was scaled from, or what is missing


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
    stands: None where there is nothing to estimate (done, no env steps, example, report).
    cache: reused between calls for the study's sampling rate."""
    from retland.analyses.estimates import training_rate
    from retland.config.registry import default_backend

    cache = {} if cache is None else cache
    if st.env_steps <= 0 or st.done:
        return None
    if index < len(study.train) and st.kind == "train":
        t = study.train[index]
        rate = training_rate(wh, algo=t.algo, env=t.env, variant=t.variant,
                             backend=t.backend or default_backend(t.env, t.variant), device=device, seeds=t.seeds)
        return (Estimate(rate.seconds(st.env_steps), rate.measured_on) if rate else
                Estimate(None, f"no {t.algo} {t.env} training measured on {device}"))
    if st.kind in ROLLOUT_KINDS:
        if "rollout" not in cache:
            cache["rollout"] = _slowest_rate(study, wh, device)
        rate, basis = cache["rollout"]
        return Estimate(rate.seconds(st.env_steps) if rate else None, basis)
    return None


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
