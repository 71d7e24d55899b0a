"""Wall-time estimates from the throughput this warehouse has measured.

Sampling jobs commit a `chunk_timings` row with each flush and training jobs (BC
included) a `training_timings` row per stretch between two stops; `retland study --plan
--calibrate` adds short calibration measurements (retland.analyses.calibrate). The views
`sampling_throughput` and `training_throughput` (schema/70_throughput.sql) turn them
into env steps per second per (algo, env, variant, backend, device), with what a job
costs once (compile, warm-up) apart. An estimate divides the env steps left by the
closest measured rate on the same device kind and says what it was measured on, and
whether that was a calibration; with no measurement on this device it is None, never a
guess.

    rate = sampling_rate(wh, algo="td3", env="hopper", variant="paper", backend="brax0013",
                         operator_kind="td3", device=current_device())
    rate.seconds(2e7)   # steady rate plus one first-flush (compile) overhead
"""
from __future__ import annotations

from dataclasses import dataclass

from retland.core.repro import device_label


@dataclass(frozen=True)
class Rate:
    """A measured throughput and what it was measured on."""

    env_steps_per_second: float
    overhead_seconds: float  # once per job: compile (sampling's first flush beyond its steady time)
    measured_on: str  # e.g. "td3 sampling of td3 hopper (paper) on cpu:cpu, 42 flushes"
    calibrated: bool = False  # measured by a calibration run (--plan --calibrate), not a job

    def seconds(self, env_steps: float) -> float:
        if env_steps <= 0:
            return 0.0
        return self.overhead_seconds + env_steps / self.env_steps_per_second


def current_device() -> str:
    """`platform:device kind` of this process's first JAX device, as the views record it."""
    return device_label()


def _task_filter(algo, env, variant, backend, device) -> tuple[list[str], list]:
    """WHERE conditions (NULL matches NULL) and their parameters for one task on one device."""
    conds, params = [], []
    for col, value in (("algo", algo), ("env", env), ("variant", variant), ("backend", backend),
                       ("device", device)):
        if value is None:
            conds.append(f"{col} IS NULL")
        else:
            conds.append(f"{col} = ?")
            params.append(value)
    return conds, params


def sampling_rate(wh, *, algo: str, env: str, variant: str | None, backend: str | None, device: str,
                  operator_kind: str | None = None) -> Rate | None:
    """The steady sampling rate measured for this task on `device`: by jobs before
    calibrations, and among them the operator kind's own when it was measured, else the
    task's over every operator (the rollout dominates: a 1000-step rollout against one
    gradient step), else None."""
    conds, params = _task_filter(algo, env, variant, backend, device)
    rows = wh.records(
        "SELECT operator_kind, source, flushes, steady_env_steps, steady_seconds, first_flush_seconds, "
        "first_flush_env_steps FROM sampling_throughput WHERE " + " AND ".join(conds)
        + " AND steady_seconds > 0", params)
    if not rows:
        return None
    rows = [r for r in rows if r["source"] == "job"] or rows
    calibrated = rows[0]["source"] == "calibration"
    own = [r for r in rows if r["operator_kind"] == operator_kind]
    use = own or rows
    steps = sum(float(r["steady_env_steps"]) for r in use)
    secs = sum(float(r["steady_seconds"]) for r in use)
    rate = steps / secs
    firsts = [(r["first_flush_seconds"], r["first_flush_env_steps"]) for r in use
              if r["first_flush_seconds"] is not None]
    overhead = max(0.0, max((s - float(n) / rate for s, n in firsts), default=0.0))
    kinds = ", ".join(sorted({r["operator_kind"] for r in use}))
    flushes = sum(int(r["flushes"]) for r in use)
    what = f"{flushes} calibration chunk(s)" if calibrated else f"{flushes} flushes"
    return Rate(rate, overhead, f"{kinds} sampling of {algo} {env} on {device}, {what}", calibrated)


# training_throughput sources, the most telling first: a job's own stretches, then a
# job's wall clock (warehouses from before training_timings), then a calibration run
_TRAINING_SOURCES = ("job", "evaluations", "calibration")


def training_rate(wh, *, algo: str, env: str, variant: str | None, backend: str | None, device: str,
                  seeds: int) -> Rate | None:
    """The training rate (env steps of all seeds per second; BC: gradient steps) measured
    for this algorithm and task on `device`, from the seed-group size closest to `seeds`
    (vmapped seeds share each step's cost, so the rate grows with them; jobs before
    calibrations at the same distance): the steady rate after warm-up, and once per job
    what its compile and warm-up stretches took beyond that rate. None without one."""
    conds, params = _task_filter(algo, env, variant, backend, device)
    rows = wh.records("SELECT seeds, source, jobs, stretches, steady_env_steps, steady_seconds, first_seconds, "
                      "first_env_steps FROM training_throughput WHERE " + " AND ".join(conds)
                      + " AND steady_seconds > 0", params)
    if not rows:
        return None
    best = min(rows, key=lambda r: (abs(int(r["seeds"]) - seeds), _TRAINING_SOURCES.index(r["source"]),
                                    -int(r["seeds"])))
    rate = float(best["steady_env_steps"]) / float(best["steady_seconds"])
    overhead = 0.0
    if best["first_seconds"] is not None:
        overhead = max(0.0, float(best["first_seconds"]) - float(best["first_env_steps"] or 0) / rate)
    how = {"job": f"{best['jobs']} job(s)", "evaluations": f"{best['jobs']} job(s), end to end",
           "calibration": f"a calibration of {best['stretches']} stretch(es)"}[best["source"]]
    return Rate(rate, overhead, f"{algo} {env} training of {best['seeds']} seed(s) on {device}, {how}",
                best["source"] == "calibration")


def fmt_seconds(s: float | None) -> str:
    """A person's duration: 45 s, 12 min, 3.4 h; '-' for none."""
    if s is None:
        return "-"
    if s < 90:
        return f"{s:.0f} s"
    if s < 90 * 60:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"
