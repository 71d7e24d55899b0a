"""A study file: the TOML models, their validation and the presets.

Every section is a strict pydantic model, so an unknown key, an impossible combination
or a step that is not a checkpoint is refused, one line each, before the warehouse is
opened (`load_study`). The models say what a study asks for; `retland.study.planners`
turns them into the library's requests as the warehouse stands.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from retland.config.registry import ALGOS, check_backend, check_env, check_new_task, check_variant, default_variant
from retland.config.settings import DIRECTIONS, GAUSSIAN_SIGMA

__all__ = ["KINDS", "OWN", "MAX_COUNT", "PRESETS_DIR", "Study", "StudyError", "TrainSpec", "SampleSpec", "FailuresSpec",
           "LandscapeSpec", "InterpolationSpec", "StabilizeSpec", "ClonesSpec", "ReportSpec", "load_study", "preset_path",
           "example_meta", "error_lines"]

def _presets_dir() -> Path:
    """Shipped as package data `retland.studies`; a plain checkout falls back to studies/."""
    from importlib import resources

    try:
        return Path(str(resources.files("retland.studies")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "studies"


PRESETS_DIR = _presets_dir()
# Kinds of stage, in the order they run (`--until KIND`).
KINDS = ("train", "example", "sample", "failures", "landscape", "interpolation", "stabilize", "start_states",
         "clones", "report")
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
    store_states: bool | None = Field(None, description="keep each replay row's simulator state, which "
                                      "[start_states] starts rollouts from (as `retland train --store-states`)")

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
        if self.algo == "bc":
            raise ValueError("algo = \"bc\" clones TD3 checkpoints of the study: use a [clones] section, not "
                             "[[train]]")
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
        from retland.train.config import default_total_steps

        return int(self.steps or default_total_steps(self.algo, self.env))

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

        return StabilizeConfig(run_id="-", step=0, proposals=self.proposals, samples=self.samples,
                               criterion=self.criterion, alpha=self.alpha, tolerance=self.tolerance,
                               seeds=self.seed_list())

    @model_validator(mode="after")
    def _check(self):
        self.base()  # its own validators name the field
        return self


class _RunChoice(_Strict):
    """`seeds` and `envs`: which of the study's runs an analysis takes (all by default)."""
    seeds: tuple[int, ...] | None = Field(None, description="only the runs of these seeds (a run's seed is its "
                                          "[[train]] entry's seed + its index), e.g. \"0..2\" (default: all)")
    envs: tuple[str, ...] | None = Field(None, description="only the runs on these envs, e.g. [\"ant\", "
                                         "\"walker2d\"] (default: all)")

    _seeds = field_validator("seeds", mode="before")(_int_list_text(maximum=2**31 - 1))

    @field_validator("envs")
    @classmethod
    def _envs(cls, v):
        if v is not None and not v:
            raise ValueError("the list of envs is empty: leave envs out to take every env")
        if v is not None and len(set(v)) != len(v):
            raise ValueError(f"envs are given twice: {list(v)}")
        return v

    def picks(self, t: "TrainSpec") -> list[int]:
        """Which runs of [[train]] entry `t` (their index 0..seeds-1) are chosen."""
        if self.envs is not None and t.env not in self.envs:
            return []
        return [i for i in range(t.seeds) if self.seeds is None or t.seed + i in self.seeds]

    def check_choice(self, name: str, entries: list, what: str) -> None:
        """ValueError (one line) for an env or seed that no entry of `entries` (the
        [[train]] entries the analysis can take, described by `what`) trains."""
        envs = sorted({t.env for t in entries})
        for env in self.envs or ():
            if env not in envs:
                raise ValueError(f"{name}.envs: {env!r} has no {what} (those train {', '.join(envs)})")
        if self.seeds is not None:
            have = sorted({t.seed + i for t in entries if self.envs is None or t.env in self.envs
                           for i in range(t.seeds)})
            bad = [x for x in self.seeds if x not in have]
            if bad:
                from retland.config.requests import int_list_text

                on = f" on {', '.join(self.envs)}" if self.envs else ""
                raise ValueError(f"{name}.seeds: {int_list_text(bad)} {'is' if len(bad) == 1 else 'are'} not the "
                                 f"seed of a run of a {what}{on} (they train seeds {_ranges(have)})")


def _ranges(values) -> str:
    """Sorted ints as seeds text: 0..2,5."""
    out, values = [], sorted(values)
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        out.append(str(values[i]) if i == j else f"{values[i]}..{values[j]}")
        i = j + 1
    return ",".join(out)


class StartStatesSpec(_RunChoice):
    """`retland start-states` on the study's runs trained with store_states (A.4, Fig. 10):
    the operator's distribution from `rows` replay rows of each run and from s0
    (`seeds`, `envs`: only those runs)."""
    rows: int = Field(8, description="replay rows per run (replay:K, the same rows at every checkpoint)")
    samples: int | None = Field(None, description="samples per (checkpoint, row) distribution and of s0 "
                                "(default: [sample] samples, else 200)")
    horizon: int | None = Field(None, description="default: [sample] horizon, else 1000")
    steps: tuple[int, ...] | None = Field(None, description="only these checkpoint steps")
    operator: str | None = Field(None, description="default: each run's own update")
    key_seed: int = 0

    _pos = field_validator("rows", "samples", "horizon")(_positive)
    _steps = field_validator("steps", mode="before")(_int_list_text())

    @field_validator("operator")
    @classmethod
    def _op(cls, v):
        if v is not None:
            from retland.purd.operators import check_operator

            check_operator(v)
        return v


class ClonesSpec(_RunChoice):
    """`retland clone` (the paper's Appendix A.7): behaviour clones of TD3 checkpoints of the
    study, sampled beside their teachers (`seeds`, `envs`: of those TD3 runs only)."""
    teachers_per_run: int = Field(5, description="teachers per TD3 run: that many of its checkpoints, evenly "
                                                 "spaced, the last always among them (the paper's 5); a run with "
                                                 "fewer checkpoints gives all")
    steps: int = Field(1_000_000, description="gradient steps per BC run (the paper's 1M)")
    samples: int | None = Field(None, description="samples per distribution (default: [sample] samples, else 1000)")
    horizon: int | None = Field(None, description="rollout length (default: [sample] horizon, else the teacher's)")
    agent: dict[str, bool | int | float | str | list[int]] = Field(
        default_factory=dict, description="behaviour-cloning settings over the defaults (TD3's actor network, "
                                          "minibatch and Adam), e.g. { hidden = [64, 64] }")

    _pos = field_validator("teachers_per_run", "steps", "samples", "horizon")(_positive)

    @model_validator(mode="after")
    def _check(self):
        from retland.analyses.clones import CloneError, check_agent

        try:
            check_agent(self.agent)
        except CloneError as exc:
            raise ValueError(str(exc).replace("--agent ", "agent.")) from None
        return self

    def teacher_steps(self, steps) -> list[int]:
        """The teachers among a run's checkpoint steps: `teachers_per_run` of them evenly
        spaced, the last included (the i-th of k is at position ceil(i·n/k) of n)."""
        steps = sorted(set(int(x) for x in steps))
        n, k = len(steps), self.teachers_per_run
        if k >= n:
            return steps
        return [steps[-(-i * n // k) - 1] for i in range(1, k + 1)]


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
    start_states: StartStatesSpec | None = None
    clones: ClonesSpec | None = None
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
        algos = {t.algo for t in self.train} | {example_meta(e)["algo"] for e in self.examples}
        steps = {c for t in self.train for c in t.checkpoint_steps} | {example_meta(e)["step"] for e in self.examples}
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
            envs = {t.env for t in self.train if t.algo == "td3"} | {example_meta(e)["env"] for e in self.examples}
            if (isinstance(self.stabilize.sources, str) and len(envs) > 1
                    and "per_env" not in self.stabilize.model_fields_set):
                # top-ltp:K in [stabilize] meant K per env before it meant K over the study:
                # a study of several envs says which, so an old file is not silently re-read
                raise ValueError(f"[stabilize] sources = {self.stabilize.sources!r} over {len(envs)} envs: say "
                                 "per_env = true (K per env) or per_env = false (K over the whole study)")
        if self.start_states is not None and not any(t.store_states for t in self.train):
            raise ValueError("[start_states] starts rollouts from stored replay states: give a [[train]] entry "
                             "store_states = true (TD3 or SAC)")
        if self.start_states is not None:
            self.start_states.check_choice("start_states", [t for t in self.train if t.store_states],
                                           "[[train]] entry with store_states = true")
        if self.clones is not None and not any(t.algo == "td3" for t in self.train):
            raise ValueError("[clones] clones TD3 checkpoints the study trains; it has no [[train]] entry with "
                             "algo = \"td3\"")
        if self.clones is not None:
            self.clones.check_choice("clones", [t for t in self.train if t.algo == "td3"],
                                     "TD3 [[train]] entry")
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


def example_meta(name: str) -> dict:
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


def error_lines(exc: ValidationError) -> list[str]:
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
        raise StudyError("\n".join(f"{p}: {line}" for line in error_lines(exc))) from None
    base = p.resolve().parent
    for i, t in enumerate(study.train):
        if t.config is not None and not (base / t.config).is_file():
            raise StudyError(f"{p}: train[{i}].config: no such file {base / t.config}")
    return study, base
