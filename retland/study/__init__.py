"""Studies: the paper's whole pipeline declared in one TOML file.

A study names the policies (training jobs to run, or example checkpoints shipped with
retland), the post-update distributions to sample from their checkpoints, the analyses
to run on them, and the report. `retland study FILE` runs it stage by stage:

    train / example -> sample -> failures -> landscape -> interpolation -> stabilize -> start_states -> clones -> report

Each stage produces the library's own request objects (a training job, a sampling
request, a landscape request, an Algorithm 1 request, ...) and runs them with the same
library runner the corresponding command calls after parsing its options, so a study
adds no second code path: it decides *which* requests to run and skips those whose
results the warehouse already holds. A request renders itself as the equivalent command
line (`argv()`), which `--plan` prints.

    spec.py    the TOML models and their validation (`load_study`, presets)
    scope.py   which of the study's policies the warehouse holds; operator ids
    planners.py  the stage planners: the requests left, as the warehouse stands
    run.py     the library runner of each request kind (`run_stage`)

[sample] `own` says which update "own" means per algorithm, e.g. `own = { ppo =
"ppo:clip=0.1,rows=first" }` (the authors' PPO operator). The file is validated before
the warehouse is opened: unknown keys, impossible combinations and steps that are not
checkpoints are refused, one line each.
"""
from __future__ import annotations

from retland.study.scope import Scope, study_operator_id, study_scope, train_config
from retland.study.spec import (
    KINDS,
    OWN,
    PRESETS_DIR,
    ClonesSpec,
    FailuresSpec,
    InterpolationSpec,
    LandscapeSpec,
    ReportSpec,
    SampleSpec,
    StabilizeSpec,
    Study,
    StudyError,
    TrainSpec,
    load_study,
    preset_path,
)
from retland.study.planners import Stage, fmt_env_steps, stages, train_request

__all__ = ["KINDS", "OWN", "PRESETS_DIR", "Study", "StudyError", "TrainSpec", "SampleSpec", "FailuresSpec",
           "LandscapeSpec", "InterpolationSpec", "StabilizeSpec", "ClonesSpec", "ReportSpec", "Stage", "Scope", "load_study",
           "preset_path", "stages", "study_scope", "study_operator_id", "train_config", "train_request",
           "fmt_env_steps"]
