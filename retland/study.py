"""Studies: the paper's whole pipeline declared in one TOML file.

A study names the policies (training jobs to run, or example checkpoints shipped with
retland), the post-update distributions to sample from their checkpoints, the analyses
to run on them, and the report. `retland study FILE` runs it stage by stage:

    train / example -> sample -> failures -> landscape -> interpolation -> stabilize -> report

Each stage is the same `retland` command a user would type (the plan prints them), so a
study adds no second code path: it decides *which* commands to run and skips the ones
whose results the warehouse already holds. Whether a stage is done is read from the
warehouse with the analyses' own read-only planners (the sampler's stored indices, the
landscape and interpolation plans, Algorithm 1's completed experiments), so a study
killed at any point, or run on another machine against the same warehouse, continues
where the warehouse stands; the commands themselves resume inside a stage.

Scope. The study's policies are the trained jobs whose recorded configuration equals a
`[[train]]` entry (any job id; the first complete one, else one to resume) and its
examples. Analyses choose among the study's checkpoints: `top-ltp:K` takes the K
checkpoints with the highest left-tail probability (LTP > 0 with a positive mode, β = 0.5)
under the analysis's operator over the whole study, or K per env with `per_env = true`
([failures] and [stabilize]); or give `["RUN_ID:STEP", ...]`. [failures] also takes
`random:K` (K drawn uniformly with its `seed`, as the paper's §3.2 does) and `algo` (one
algorithm's runs). [sample] `own` says which update "own" means per
algorithm, e.g. `own = { ppo = "ppo:clip=0.1,rows=first" }` (the authors' PPO operator).
Interpolation pairs every trained checkpoint of the study's (algo, env) in the warehouse,
as `retland interpolate --env` does.

The file is validated before the warehouse is opened: unknown keys, impossible
combinations and steps that are not checkpoints are refused, one line each.
"""
from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from retland.config.registry import ALGOS, check_backend, check_env, check_new_task, check_variant, default_variant
from retland.config.settings import DIRECTIONS, GAUSSIAN_SIGMA

__all__ = ["KINDS", "Study", "Stage", "StudyError", "study_operator_id", "load_study", "preset_path", "PRESETS_DIR", "stages", "study_scope"]

def _presets_dir() -> Path:
    """Shipped as package data `retland.studies`; a plain checkout falls back to studies/."""
    from importlib import resources

    try:
        return Path(str(resources.files("retland.studies")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "studies"


PRESETS_DIR = _presets_dir()
# Kinds of stage, in the order they run (`--until KIND`).
KINDS = ("train", "example", "sample", "failures", "landscape", "interpolation", "stabilize", "report")
OWN = "own"  # operator "own": each run's own training update (td3 / sac / ppo)
_SELECTION = re.compile(r"^top-ltp:(\d+)$")
_REF = re.compile(r"^(.+):(\d+)$")


class StudyError(ValueError):
    """A study file that cannot be run; the message names what is wrong, one line per problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Sample counts, horizons and grid sizes beyond this are typos (1e30), and would overflow
# the int32/int64 columns and index arrays they become.
MAX_COUNT = 10**9


def _positive(v, info):
    if v is not None and not 1 <= v <= MAX_COUNT:
        raise ValueError(f"must be >= 1 and <= {MAX_COUNT:_}, got {v}")
    return v


def _int_list_text(**bounds):
    """A before-validator: a list of integers may also be written as the command line
    takes it, "50000,150000" or "0..9" (retland.config.intlist); arrays pass through."""
    def parse(v, info):
        if isinstance(v, str):
            from retland.config.intlist import parse_int_list

            return parse_int_list(v, info.field_name, **bounds)
        return v
    return parse


def _check_selection(v):
    """'top-ltp:K' or a list of 'RUN_ID:STEP'."""
    if isinstance(v, str):
        if v.strip().startswith("random:"):
            raise ValueError(f"{v!r}: random:K chooses [failures] checkpoints only; here use top-ltp:K or a list "
                             "of \"RUN_ID:STEP\"")
        m = _SELECTION.match(v.strip())
        if not m or int(m.group(1)) < 1:
            raise ValueError(f"{v!r}: expected top-ltp:K with K >= 1, or a list of \"RUN_ID:STEP\"")
        return v.strip()
    if not v:
        raise ValueError("the list of checkpoints is empty")
    for ref in v:
        if not _REF.match(ref):
            raise ValueError(f"{ref!r}: expected RUN_ID:STEP")
    return list(v)


class TrainSpec(_Strict):
    """One `retland train` job: `seeds` runs of one algorithm on one env."""
    algo: Literal[ALGOS] = "td3"
    env: str = Field("hopper", description="any task `retland train` takes (a DeepMind Control task needs the "
                                           "dmc extra)")
    variant: str = Field(None, description="task rules (default: the task's, as `retland train`)")
    backend: str | None = None
    seeds: int = Field(description="runs trained together (vmapped)")
    seed: int = 0
    steps: int | None = Field(None, description="env steps per seed (default: the algorithm's, as `retland train`)")
    checkpoints: tuple[int, ...] | None = Field(None, description="env steps to checkpoint at (default: ten, "
                                                                  "as `retland train`)")
    eval_every: int | None = None
    config: str | None = Field(None, description="TOML file of agent settings, relative to the study file")

    _pos = field_validator("seeds", "steps", "eval_every")(_positive)
    _ckpts = field_validator("checkpoints", mode="before")(_int_list_text(minimum=1))  # as train --checkpoints

    @model_validator(mode="before")
    @classmethod
    def _default_variant(cls, data):
        if isinstance(data, dict) and data.get("variant") is None and isinstance(data.get("env", "hopper"), str):
            data = {**data, "variant": default_variant(data.get("env", "hopper"))}
        return data

    @model_validator(mode="after")
    def _task(self):
        """The task checks `retland train` makes, so a study refuses what train would."""
        check_env(self.env)
        check_variant(self.variant, self.env)
        if self.backend is not None:
            check_new_task(self.env, check_backend(self.backend, self.env, self.variant), self.variant)
        return self

    @model_validator(mode="after")
    def _steps(self):
        if self.checkpoints is not None:
            bad = [c for c in self.checkpoints if not 1 <= c <= self.total]
            if not self.checkpoints or bad:
                raise ValueError(f"checkpoints must be env steps in 1..{self.total:,} (steps); "
                                 f"got {list(self.checkpoints)}")
        return self

    @property
    def total(self) -> int:
        from retland.train.config import DEFAULT_TOTAL_STEPS

        return int(self.steps or DEFAULT_TOTAL_STEPS[self.algo])

    @property
    def checkpoint_steps(self) -> tuple[int, ...]:
        """The checkpoints this entry trains (the algorithm's defaults when not given;
        PPO's on the default rollout size)."""
        if self.checkpoints is not None:
            return tuple(sorted(set(self.checkpoints)))
        from retland.train.config import TrainConfig, default_checkpoints

        cfg = TrainConfig(agent={"algo": self.algo}, env=self.env, variant=self.variant, backend=self.backend,
                          total_steps=self.total)
        return default_checkpoints(self.algo, cfg.steps, cfg.granularity)

    @property
    def label(self) -> str:
        return f"{self.algo} {self.env} ({self.variant}) {self.seeds} seeds x {self.total:,} steps"


class SampleSpec(_Strict):
    """`retland sample` on every checkpoint of the study (or those at `steps`)."""
    operators: tuple[str, ...] = Field((OWN,), description="operators; 'own' = each run's training update")
    own: dict[str, str] = Field(default_factory=dict, description="which update 'own' means per algorithm, e.g. "
                                "{ ppo = \"ppo:clip=0.1,rows=first\" } (the authors' PPO operator); "
                                "default: the plain td3 / sac / ppo")
    samples: int = 1000
    horizon: int = 1000
    key_seed: int = 0
    steps: tuple[int, ...] | None = Field(None, description="only these checkpoint steps")

    _pos = field_validator("samples", "horizon")(_positive)
    _steps = field_validator("steps", mode="before")(_int_list_text())  # as sample --steps

    @field_validator("own")
    @classmethod
    def _own(cls, v):
        from retland.purd.operators import check_operator

        for algo, text in v.items():
            if algo not in ALGOS:
                raise ValueError(f"own.{algo}: not an algorithm; choose from {', '.join(ALGOS)}")
            kind = str(text).split(":", 1)[0].split("[", 1)[0].strip()
            if kind != algo:
                raise ValueError(f"own.{algo} = {text!r}: must be a {algo} operator, e.g. {algo!r}")
            check_operator(text)
        return v

    def own_operator(self, algo: str) -> str:
        """The operator text 'own' means on runs of `algo`."""
        return self.own.get(algo, algo)

    @field_validator("operators")
    @classmethod
    def _ops(cls, v):
        if not v:
            raise ValueError("give at least one operator, e.g. [\"own\"]")
        if len(set(v)) != len(v):
            raise ValueError(f"operators are given twice: {list(v)}")
        from retland.purd.operators import check_operator

        for text in v:
            if text != OWN:
                check_operator(text)
        return v


def _check_failure_selection(v):
    """'top-ltp:K', 'random:K' or a list of 'RUN_ID:STEP'."""
    if isinstance(v, str):
        from retland.analyses.failures import parse_selector

        return parse_selector(v).text
    return _check_selection(v)


class FailuresSpec(_Strict):
    """`retland failures`: re-roll successful/failing pairs of the chosen checkpoints."""
    checkpoints: str | tuple[str, ...] = Field("top-ltp:3", description="top-ltp:K, random:K (seeded by `seed`; "
                                               "the paper's §3.2) or [\"RUN_ID:STEP\", ...]")
    pairs: int = 1
    operator: str | None = Field(None, description="one of sample.operators (default: the first)")
    algo: Literal[ALGOS] | None = Field(None, description="choose among this algorithm's runs only")
    per_env: bool = Field(False, description="K checkpoints per env (else K over the study)")
    seed: int = Field(0, description="the seed of a random:K draw")

    _pos = field_validator("pairs")(_positive)
    _sel = field_validator("checkpoints")(_check_failure_selection)

    @model_validator(mode="after")
    def _chosen_only(self):
        if not isinstance(self.checkpoints, str) and (self.algo or self.per_env or self.seed):
            raise ValueError("algo, per_env and seed narrow a top-ltp:K or random:K selection, not a list of "
                             "checkpoints")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        return self


class LandscapeSpec(_Strict):
    """`retland landscape` around the chosen checkpoints."""
    checkpoints: str | tuple[str, ...] = "top-ltp:1"
    grid: int = 41
    range: str = "-2:2"
    zoom: tuple[float, ...] = (1.0,)
    directions: Literal[DIRECTIONS] = "update"
    operator: str | None = Field(None, description="one of sample.operators (default: the first)")
    samples_per_point: int = 1
    sigma: float = GAUSSIAN_SIGMA
    seed: int = 0
    horizon: int | None = None

    _sel = field_validator("checkpoints")(_check_selection)

    def request(self, run_id: str, step: int, operator: str):
        from retland.analyses.landscape import parse_range
        from retland.config.settings import LandscapeRequest

        lo, hi = parse_range(self.range)
        return LandscapeRequest(run_id, step, directions=self.directions, operator=operator, resolution=self.grid,
                                lo=lo, hi=hi, zoom=tuple(self.zoom), samples_per_point=self.samples_per_point,
                                sigma=self.sigma, seed=self.seed, horizon=self.horizon)

    @model_validator(mode="after")
    def _check(self):
        from retland.config.settings import LandscapeError

        try:
            self.request("check", 0, "td3").check()
        except (LandscapeError, ValueError) as exc:
            raise ValueError(str(exc).replace("--", "")) from None
        return self


class InterpolationSpec(_Strict):
    """`retland interpolate` for every (algo, env) the study trains."""
    pairs: Literal["same-run", "different-run", "both"] = "both"
    pairs_per_kind: int = 500
    pair_seed: int = 0
    points: int = 100
    samples: int = 100
    sigma: float = GAUSSIAN_SIGMA
    seed: int = 0
    horizon: int | None = None

    def settings(self):
        from retland.config.settings import InterpolationSettings

        return InterpolationSettings(points=self.points, samples=self.samples, sigma=self.sigma, seed=self.seed,
                                     horizon=self.horizon, pairs_per_kind=self.pairs_per_kind,
                                     pair_seed=self.pair_seed)

    @model_validator(mode="after")
    def _check(self):
        from retland.config.settings import InterpolationError

        try:
            self.settings().check()
        except InterpolationError as exc:
            raise ValueError(str(exc).replace("--", "")) from None
        return self


class StabilizeSpec(_Strict):
    """`retland stabilize` (Algorithm 1) from the chosen TD3 checkpoints."""
    sources: str | tuple[str, ...] = "top-ltp:10"
    per_env: bool = Field(False, description="K sources per env (else K over the study), as [failures] per_env")
    proposals: int = 40
    samples: int = 1000
    seeds: str = "0..9"
    criterion: Literal["cvar", "ltp", "mean"] = "cvar"
    alpha: float = 0.1
    tolerance: float = 0.0

    _sel = field_validator("sources")(_check_selection)

    @model_validator(mode="after")
    def _per_env_narrows(self):
        if self.per_env and not isinstance(self.sources, str):
            raise ValueError("per_env narrows a top-ltp:K selection, not a list of sources")
        return self

    def seed_list(self) -> tuple[int, ...]:
        """`seeds` as `retland stabilize --seeds` reads it (retland.config.intlist)."""
        from retland.config.intlist import INT32_MAX, parse_int_list

        return parse_int_list(self.seeds, "seeds", maximum=INT32_MAX)

    def base(self):
        from retland.config.settings import StabilizeConfig

        return StabilizeConfig(run_id="", step=0, proposals=self.proposals, samples=self.samples,
                               criterion=self.criterion, alpha=self.alpha, tolerance=self.tolerance,
                               seeds=self.seed_list())

    @model_validator(mode="after")
    def _check(self):
        self.base()  # its own validators name the field
        return self


class ReportSpec(_Strict):
    """`retland report` over the study's distributions."""
    out: str | None = Field(None, description="HTML file (default reports/<study name>.html)")
    bootstrap: int = 1000

    @field_validator("bootstrap")
    @classmethod
    def _boot(cls, v):
        if v < 0:
            raise ValueError(f"must be >= 0, got {v}")
        return v


class Study(_Strict):
    """A study file (studies/*.toml)."""
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    train: tuple[TrainSpec, ...] = ()
    examples: tuple[str, ...] = ()
    sample: SampleSpec | None = None
    failures: FailuresSpec | None = None
    landscape: LandscapeSpec | None = None
    interpolation: InterpolationSpec | None = None
    stabilize: StabilizeSpec | None = None
    report: ReportSpec | None = ReportSpec()

    @field_validator("examples")
    @classmethod
    def _examples(cls, v):
        from retland.shipped import EXAMPLES

        for name in v:
            if name not in EXAMPLES:
                raise ValueError(f"unknown example {name!r}: choose from {', '.join(sorted(EXAMPLES))}")
        return v

    @model_validator(mode="after")
    def _combinations(self):
        if not self.train and not self.examples:
            raise ValueError("a study needs policies: a [[train]] entry or examples = [\"td3-hopper\"]")
        algos = {t.algo for t in self.train} | {_example(e)["algo"] for e in self.examples}
        steps = {c for t in self.train for c in t.checkpoint_steps} | {_example(e)["step"] for e in self.examples}
        s = self.sample
        if s is not None:
            for op in s.operators:
                kind = op.split(":")[0].split("[")[0]
                if kind in ALGOS and algos != {kind}:
                    raise ValueError(f"sample.operators: {op!r} is the {kind} update, but the study has "
                                     f"{', '.join(sorted(algos))} runs; use \"own\" (each run's own update)")
            if s.own and OWN not in s.operators:
                raise ValueError(f"sample.own is set ({', '.join(sorted(s.own))}) but sample.operators has no "
                                 "\"own\" for it to apply to")
            unused = sorted(set(s.own) - algos)
            if unused:
                raise ValueError(f"sample.own.{unused[0]}: the study has no {unused[0]} policy "
                                 f"(it has {', '.join(sorted(algos))})")
            bad = sorted(set(s.steps or ()) - steps)
            if bad:
                raise ValueError(f"sample.steps: {bad} are not checkpoints of any [[train]] entry or example "
                                 f"(checkpoints: {sorted(steps)})")
        for name in ("failures", "landscape", "stabilize"):
            spec = getattr(self, name)
            if spec is None:
                continue
            sel = spec.sources if name == "stabilize" else spec.checkpoints
            if isinstance(sel, str) and s is None:
                raise ValueError(f"[{name}] chooses checkpoints by {sel}, which needs a [sample] section")
            op = getattr(spec, "operator", None)
            if op is not None and (s is None or op not in s.operators):
                raise ValueError(f"{name}.operator {op!r} is not one of sample.operators "
                                 f"{list(s.operators) if s else []}")
        if self.failures is not None and self.failures.algo is not None and self.failures.algo not in algos:
            raise ValueError(f"failures.algo {self.failures.algo!r}: the study has no {self.failures.algo} policy "
                             f"(it has {', '.join(sorted(algos))})")
        if self.stabilize is not None:
            if "td3" not in algos:
                raise ValueError("[stabilize] runs Algorithm 1 on TD3 checkpoints; the study has no td3 policy")
            if isinstance(self.stabilize.sources, str) and not any(
                    o in (OWN, "td3") or o.startswith("td3:") for o in s.operators):
                raise ValueError("[stabilize] sources = top-ltp:K ranks td3-operator distributions; "
                                 "add \"own\" or \"td3\" to sample.operators")
            envs = {t.env for t in self.train if t.algo == "td3"} | {_example(e)["env"] for e in self.examples}
            if (isinstance(self.stabilize.sources, str) and len(envs) > 1
                    and "per_env" not in self.stabilize.model_fields_set):
                # top-ltp:K in [stabilize] meant K per env before it meant K over the study:
                # a study of several envs says which, so an old file is not silently re-read
                raise ValueError(f"[stabilize] sources = {self.stabilize.sources!r} over {len(envs)} envs: say "
                                 "per_env = true (K per env) or per_env = false (K over the whole study)")
        if self.interpolation is not None:
            if not self.train:
                raise ValueError("[interpolation] pairs trained checkpoints; the study has no [[train]] entry")
            kinds = {"same-run": any(len(t.checkpoint_steps) > 1 for t in self.train),
                     "different-run": any(t.seeds > 1 for t in self.train)}
            wanted = list(kinds) if self.interpolation.pairs == "both" else [self.interpolation.pairs]
            if not any(kinds[k] for k in wanted):
                raise ValueError(f"interpolation.pairs = {self.interpolation.pairs!r}: same-run pairs need two "
                                 "checkpoints per run, different-run pairs two seeds")
        return self

    def operator_of(self, spec) -> str:
        """The sampled operator an analysis reads (its own, else the first sampled)."""
        return getattr(spec, "operator", None) or self.sample.operators[0]

    def report_path(self) -> Path:
        return Path(self.report.out if self.report and self.report.out else f"reports/{self.name}.html")


def _example(name: str) -> dict:
    from retland.shipped import EXAMPLES

    ex = EXAMPLES[name]
    return {"run_id": ex.run_id, "step": ex.step, "algo": ex.meta["run"]["algo"], "env": ex.meta["run"]["env"]}


def preset_path(name_or_path: str | Path) -> Path:
    """A study file: the path as given, else a preset shipped with retland (`demo`,
    `cpu-small`, `paper`)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    preset = PRESETS_DIR / f"{p.stem if p.suffix == '.toml' else p.name}.toml"
    if p.parent == Path(".") and preset.is_file():
        return preset
    names = ", ".join(sorted(x.stem for x in PRESETS_DIR.glob("*.toml")))
    raise StudyError(f"{name_or_path}: no such study file (presets: {names})")


def _error_lines(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        loc = ""
        for part in err.get("loc", ()):
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        msg = err["msg"].removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "unknown key"
        elif err.get("type") == "missing":
            msg = "required key missing"
        out.append(f"{loc}: {msg}" if loc else msg)
    return out


def load_study(path: str | Path) -> tuple[Study, Path]:
    """Read and validate a study file (a path or a preset name). Returns the study and
    the file's folder (train configs are relative to it)."""
    p = preset_path(path)
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise StudyError(f"{p}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise StudyError(f"{p}: not a text (TOML) file") from None
    try:
        study = Study.model_validate(data)
    except ValidationError as exc:
        raise StudyError("\n".join(f"{p}: {line}" for line in _error_lines(exc))) from None
    base = p.resolve().parent
    for i, t in enumerate(study.train):
        if t.config is not None and not (base / t.config).is_file():
            raise StudyError(f"{p}: train[{i}].config: no such file {base / t.config}")
    return study, base


# ------------------------------------------------------------------------------ stages

@dataclass
class Stage:
    """One stage as the warehouse stands now: what is done and the commands left."""
    name: str
    status: Literal["done", "todo", "waiting", "nothing"]
    detail: str
    commands: list[list[str]] = field(default_factory=list)
    env_steps: int = 0  # estimate of env steps still to compute (rollouts and training)

    @property
    def done(self) -> bool:
        return self.status in ("done", "nothing")


@dataclass
class Scope:
    """The study's policies found in the warehouse."""
    jobs: dict[int, tuple[str, list[str], bool]] = field(default_factory=dict)  # train index -> job, runs, complete
    algo: dict[str, str] = field(default_factory=dict)  # run id -> algo
    env: dict[str, str] = field(default_factory=dict)
    steps: dict[str, list[int]] = field(default_factory=dict)  # run id -> checkpoint steps in the study

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
                                 eval_every=spec.eval_every)
    except (ValidationError, ValueError) as exc:
        lines = _error_lines(exc) if isinstance(exc, ValidationError) else [str(exc)]
        raise StudyError("; ".join(f"train ({spec.label}): {x}" for x in lines)) from None


def _trained_runs(wh) -> list[dict]:
    """Every trained run with its config and checkpoint steps, in one query."""
    return wh.query("SELECT r.run_id, r.algo, r.env, r.config, r.seed, "
                    "list(c.step ORDER BY c.step) FILTER (WHERE c.step IS NOT NULL) AS steps "
                    "FROM runs r LEFT JOIN checkpoints c USING (run_id) "
                    "WHERE r.source = 'trained' GROUP BY ALL").to_dicts()


def _find_job(rows: list[dict], cfg) -> tuple[str, list[str], bool] | None:
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
    scope = Scope()
    rows = _trained_runs(wh) if study.train else []
    steps_of = {r["run_id"]: r["steps"] or [] for r in rows}
    for i, spec in enumerate(study.train):
        cfg = train_config(spec, base)
        found = _find_job(rows, cfg)
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
        meta = _example(name)
        hit = wh.query("SELECT 1 FROM checkpoints WHERE run_id = ? AND step = ?", [meta["run_id"], meta["step"]])
        if hit.height and not (study.sample and study.sample.steps and meta["step"] not in study.sample.steps):
            steps = scope.steps.setdefault(meta["run_id"], [])
            if meta["step"] not in steps:
                steps.append(int(meta["step"]))
            scope.algo[meta["run_id"]], scope.env[meta["run_id"]] = meta["algo"], meta["env"]
    return scope


def _fmt_steps(steps) -> str:
    return ",".join(str(int(s)) for s in sorted(steps))


def _operator_text(op: str, algo: str, sample: SampleSpec | None = None) -> str:
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
    return parse_operator(_operator_text(op, algo, s), env=env, horizon=s.horizon, seed=s.key_seed).operator_id


def _train_stage(study: Study, i: int, wh, base: Path) -> Stage:
    spec = study.train[i]
    cfg = train_config(spec, base)
    found = _find_job(_trained_runs(wh), cfg)
    name = f"train {spec.algo} {spec.env}"
    if found and found[2]:
        return Stage(name, "done", f"job {found[0]}: {spec.seeds} runs x {len(cfg.checkpoint_steps)} checkpoints")
    if found:
        job = found[0]
        from retland.warehouse.sqlgen import in_list

        cond, params = in_list("run_id", found[1])
        last = wh.query(f"SELECT min(m) AS m FROM (SELECT max(step) AS m FROM checkpoints WHERE {cond} "
                        "GROUP BY run_id)", params)["m"][0] or 0
        return Stage(name, "todo", f"resume job {job} from step {int(last):,} ({spec.label})",
                     [["train", "--resume", job]], (cfg.steps - int(last)) * cfg.seeds)
    cmd = ["train", "--algo", spec.algo, "--env", spec.env, "--variant", spec.variant, "--seeds", str(spec.seeds),
           "--seed", str(spec.seed)]
    for opt, v in (("--total-steps", spec.steps), ("--checkpoints", _fmt_steps(spec.checkpoints) if spec.checkpoints else None),
                   ("--backend", spec.backend), ("--eval-every", spec.eval_every),
                   ("--config", str(base / spec.config) if spec.config else None)):
        if v is not None:
            cmd += [opt, str(v)]
    return Stage(name, "todo", spec.label, [cmd], cfg.steps * cfg.seeds)


def _example_stage(study: Study, name: str, wh) -> Stage:
    meta = _example(name)
    hit = wh.query("SELECT 1 FROM checkpoints WHERE run_id = ? AND step = ?", [meta["run_id"], meta["step"]])
    if hit.height:
        return Stage(f"example {name}", "done", f"{meta['run_id']} @ {meta['step']:,} is in the warehouse")
    return Stage(f"example {name}", "todo", f"add {meta['algo']} {meta['env']} checkpoint {meta['run_id']} @ "
                 f"{meta['step']:,}", [["add-example", name]])


def _expected_runs(study: Study) -> int:
    """Distributions per operator the finished study will hold (for estimates before training)."""
    n = 0
    for t in study.train:
        steps = [c for c in t.checkpoint_steps if not (study.sample.steps and c not in study.sample.steps)]
        n += t.seeds * len(steps)
    for name in study.examples:
        if not (study.sample.steps and _example(name)["step"] not in study.sample.steps):
            n += 1
    return n


def _sample_stage(study: Study, wh, scope: Scope) -> Stage:
    from retland.purd.sampling import stored_rows

    s = study.sample
    groups: dict[tuple[str, str, tuple[int, ...]], list[str]] = {}
    for run in scope.runs:
        groups.setdefault((scope.algo[run], scope.env[run], tuple(scope.steps[run])), []).append(run)
    work = [(op, key, runs, study_operator_id(study, op, key[0], key[1]))
            for op in s.operators for key, runs in sorted(groups.items()) if key[2]]
    stored = stored_rows(wh, [oid for *_, oid in work]) if work else {}
    commands, missing, total = [], 0, 0
    for op, (algo, env, steps), runs, oid in work:
        todo = 0
        for r in runs:
            for st in steps:
                have = stored.get((r, st, oid), (set(), set()))[0]
                todo += s.samples - sum(1 for i in have if 0 <= i < s.samples)
                total += s.samples
        if todo:
            missing += todo
            cmd = ["sample"]
            for r in runs:
                cmd += ["--run", r]
            commands.append(cmd + ["--steps", _fmt_steps(steps), "--operator", _operator_text(op, algo, s),
                                   "--samples", str(s.samples), "--horizon", str(s.horizon),
                                   "--key-seed", str(s.key_seed)])
    pending = _expected_runs(study) * len(s.operators) * s.samples - total
    if pending > 0:
        return Stage("sample", "waiting" if not commands else "todo",
                     f"{missing:,} samples missing now; {pending:,} more once the policies exist", commands,
                     (missing + pending) * s.horizon)
    if not commands:
        return Stage("sample", "done", f"{total // max(s.samples, 1)} distributions x {s.samples} samples stored")
    return Stage("sample", "todo", f"{missing:,} of {total:,} samples missing", commands, missing * s.horizon)


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
    commands, pairs, todo, picked, passed = [], 0, 0, [], []
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
                commands.append(["failures", "--run", run, "--step", str(step), "--operator", oid,
                                 "--pairs", str(spec.pairs)])
    horizon = study.sample.horizon
    where = ", ".join(f"{r}@{s:,}" for r, s in picked)
    if passed:
        where += f" (passed over, no sample near the mean: {', '.join(passed)})"
    if not commands:
        return Stage("failures", "done", f"{pairs} pair(s) stored for {where}")
    return Stage("failures", "todo", f"{todo} of {pairs} pair(s) to re-roll for {where}", commands,
                 2 * todo * horizon)


def _landscape_stage(study: Study, wh, scope: Scope) -> Stage:
    from retland.analyses import landscape

    spec = study.landscape
    if isinstance(spec.checkpoints, str) and not _sampled(study, wh, scope):
        return _waiting("landscape", f"chooses {spec.checkpoints} once sampling is done")
    op = study.operator_of(spec) if study.sample else OWN
    picked = _chosen(study, spec.checkpoints, op, wh, scope)
    if not picked:
        return Stage("landscape", "nothing", "no sampled checkpoint of the study has LTP > 0")
    commands, todo, total = [], 0, 0
    for run, step in picked:
        algo, _ = _run_info(wh, scope, run)
        req = spec.request(run, step, _operator_text(op, algo, study.sample))
        p = landscape.plan(wh, req)
        total += req.n * len(req.zoom)
        if p.todo:
            todo += p.todo
            commands.append(["landscape", "--run", run, "--step", str(step), "--operator", req.operator,
                             "--grid", str(spec.grid), "--range", spec.range, "--zoom",
                             ",".join(repr(float(z)) for z in spec.zoom), "--directions", spec.directions,
                             "--samples-per-point", str(spec.samples_per_point), "--sigma", repr(spec.sigma),
                             "--noise-seed", str(spec.seed)] + (["--horizon", str(spec.horizon)] if spec.horizon else []))
            horizon = p.horizon
    where = ", ".join(f"{r}@{s:,}" for r, s in picked)
    if not commands:
        return Stage("landscape", "done", f"{total:,} points stored for {where}")
    return Stage("landscape", "todo", f"{todo:,} of {total:,} points to compute for {where}", commands,
                 todo * horizon)


def _interpolation_stage(study: Study, wh, scope: Scope) -> Stage:
    from retland.analyses import interpolation
    from retland.config.settings import InterpolationError

    spec = study.interpolation
    s = spec.settings()
    if len(scope.jobs) < len(study.train) or not all(c for _, _, c in scope.jobs.values()):
        return _waiting("interpolation", "pairs trained checkpoints once training is done")
    commands, todo, total, npairs = [], 0, 0, 0
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
            commands.append(["interpolate", "--env", env, "--algo", algo, "--pair-kind", spec.pairs,
                             "--pairs-per-kind", str(spec.pairs_per_kind), "--pair-seed", str(spec.pair_seed),
                             "--points", str(s.points), "--samples", str(s.samples), "--sigma", repr(s.sigma),
                             "--noise-seed", str(s.seed)] + (["--horizon", str(s.horizon)] if s.horizon else []))
    if not commands:
        return Stage("interpolation", "done", f"{npairs} pairs x {s.points} points x {s.samples} samples stored")
    return Stage("interpolation", "todo", f"{todo:,} of {total:,} rollouts over {npairs} pairs to compute",
                 commands, todo * horizon)


def _stabilize_stage(study: Study, wh, scope: Scope) -> Stage:
    from retland.analyses.stabilize.sources import plan_sources

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
    commands = []
    seeds = ",".join(str(x) for x in base.seeds)
    for i in plan.todo:
        c = plan.configs[i]
        commands.append(["stabilize", "--source", f"{c.run_id}:{c.step}", "--proposals", str(base.proposals),
                         "--samples", str(base.samples), "--seeds", seeds, "--criterion", base.criterion,
                         "--alpha", repr(base.alpha), "--tolerance", repr(base.tolerance)])
    return Stage("stabilize", "todo", f"{len(plan.todo)} of {len(picked)} source(s) to run", commands,
                 len(plan.todo) * per_source * horizon)


def _report_stage(study: Study, wh, scope: Scope) -> Stage:
    if not scope.runs:
        return _waiting("report", "written once the study has policies")
    out = study.report_path()
    where = scope.where()
    return Stage("report", "todo", f"statistics, and the report written to {out} (every run)",
                 [["stats", "--where", where],
                  ["report", "--where", where, "--output", str(out), "--bootstrap", str(study.report.bootstrap)]])


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
                     ("report", _report_stage)):
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

