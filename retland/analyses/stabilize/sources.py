"""Several source policies in one Algorithm 1 invocation.

The paper's Fig. 7 aggregates at least 10 source policies per env, so `retland
stabilize` takes many sources at once. Each source is its own experiment (its own
experiment_id, rows and derived runs, written as soon as that source finishes), so a
killed invocation loses only the source in progress, and running the same command again
skips every source whose experiment with the same settings is already complete
(`completed_experiment`). Sources whose training configs differ only in seeds and
lengths (`program_config`) get one common replay capacity, so they share one compiled
propose/PURD/commit program; the sources run one after another, each vmapping its own
seeds x arms lanes (the PURD's memory is lanes x chunk already, so more lanes at once
would only mean smaller chunks).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, ClassVar, Sequence

from retland.analyses.stabilize.config import StabilizeConfig
from retland.analyses.stabilize.experiment import StabilizeResult, load_source, run_experiment
from retland.analyses.stabilize.program import program_config
from retland.config.requests import Bar, bar, int_list_text, number, options

# The candidates of a top-LTP selection: TD3-operator distributions of trained TD3 runs'
# checkpoints that stabilize can start from (parameters and a non-empty replay buffer
# stored) and whose LTP is > 0 with a positive mode (a PURD whose mode is <= 0 has an
# LTP, but against a non-positive threshold: not a failure-prone good policy).
# `stabilize_candidates` is purd_stats at the experiment's β, filtered by --where.
CANDIDATES_SQL = """
SELECT s.env, s.run_id, s.seed, s.step, s.operator, s.n, s.mean, s.ltp, s.cvar, c.replay_size
FROM stabilize_candidates s
JOIN operators o ON o.operator_id = s.operator
JOIN runs r ON r.run_id = s.run_id
JOIN checkpoints c ON c.run_id = s.run_id AND c.step = s.step
WHERE o.kind = 'td3' AND r.algo = 'td3' AND r.source = 'trained'
  AND c.artifact_path IS NOT NULL AND coalesce(c.replay_size, 0) > 0 AND s.ltp > 0
  AND NOT s.mode_nonpositive AND start_row_of(s.operator) IS NULL
"""


def parse_selection(text: str) -> int:
    """'top-ltp:K' -> K (>= 1); anything else is refused by name."""
    kind, _, k = text.partition(":")
    if kind.strip() != "top-ltp" or not k.strip().isdigit() or int(k) < 1:
        raise ValueError(f"--sources {text!r}: expected top-ltp:K with K >= 1, e.g. top-ltp:10")
    return int(k)


def top_ltp_sources(wh, k: int, *, env: str | None = None, where: str | None = None,
                    operator: str | None = None, beta: float = 0.5):
    """The `k` checkpoints with the highest LTP (own mode, β) among the candidates
    (CANDIDATES_SQL) that `env`, `operator` and `where` (one SQL condition over env,
    run_id, seed, step, operator, n, mean, std, skewness, mode, ltp, cvar) keep; ties by
    run_id, step. Refuses a selection that mixes several td3 operators (choose one) or
    finds nothing. Returns a polars DataFrame, highest LTP first; fewer than `k` rows
    when fewer candidates exist."""
    import duckdb

    from retland.analyses.distributions import stats_relation
    from retland.warehouse.readonly import query_error

    con = wh.connect()
    try:
        stats_relation(con, 0.1, beta, where).create_view("stabilize_candidates", replace=True)
        sql, params = CANDIDATES_SQL, []
        if env is not None:
            sql, params = sql + " AND s.env = ?", params + [env]
        if operator is not None:
            sql, params = sql + " AND s.operator = ?", params + [operator]
        df = con.sql(sql + " ORDER BY s.ltp DESC, s.run_id, s.step", params=params).pl()
    except duckdb.Error as exc:
        raise query_error(exc) from None
    finally:
        con.close()
    scope = " ".join(x for x in (f"env {env!r}" if env else "", f"operator {operator!r}" if operator else "",
                                 f"--where {where!r}" if where else "") if x) or "the warehouse"
    if not df.height:
        raise ValueError(f"--sources top-ltp:{k}: no td3-operator distribution with LTP > 0 of a stored TD3 "
                         f"checkpoint (with its replay buffer) in {scope}; run `retland sample` on TD3 checkpoints")
    operators = sorted(set(df["operator"]))
    if len(operators) > 1:
        raise ValueError(f"--sources top-ltp:{k}: the candidates were sampled with {len(operators)} td3 operators "
                         f"({', '.join(operators)}); choose one with --operator")
    return df.head(k)


def check_source(wh, run_id: str, step: int) -> None:
    """Refuse, before any work and without loading it, a source that is not a stored TD3
    checkpoint with a replay buffer (the same rules as `load_source`)."""
    # records(), not query(): running Algorithm 1 on given sources needs no polars (GPU nodes)
    runs = wh.records("SELECT algo FROM runs WHERE run_id = ?", [run_id])
    if not runs:
        raise ValueError(f"no run {run_id!r} in the warehouse at {wh.root}")
    if runs[0]["algo"] != "td3":
        raise ValueError(f"stabilize needs a td3 checkpoint; run {run_id!r} is {runs[0]['algo']}")
    ck = wh.records("SELECT artifact_path, replay_size FROM checkpoints WHERE run_id = ? AND step = ?",
                    [run_id, int(step)])
    if not ck:
        steps = [r["step"] for r in wh.records("SELECT step FROM checkpoints WHERE run_id = ? ORDER BY step",
                                               [run_id])]
        raise ValueError(f"run {run_id!r} has no checkpoint at step {step}; it has "
                         f"{', '.join(map(str, steps)) if steps else 'none'}")
    if ck[0]["artifact_path"] is None:
        raise ValueError(f"run {run_id} step {step} has no stored checkpoint (its returns were imported); "
                         "stabilize needs a trained run")
    if not (ck[0]["replay_size"] or 0) >= 1:
        raise ValueError(f"checkpoint {run_id}@{step} has an empty replay buffer")


def completed_experiment(wh, scfg: StabilizeConfig) -> str | None:
    """The id of a complete experiment already stored for `scfg`'s source with the same
    settings (criterion, α, β, tolerance, N, P, the same arms x seeds lanes, exploration
    and collection reset noise; the PURD chunk only changes rounding and is ignored), or
    None. Complete = every lane's P + 1 rows and their samples are stored."""
    cand = wh.records(
        "SELECT experiment_id, list(DISTINCT arm || ':' || seed) AS lanes, max(proposal) AS p, count(*) AS n_rows, "
        "any_value(derived_run_id) AS derived "
        "FROM stabilize_steps WHERE run_id = ? AND step = ? AND criterion = ? AND alpha = ? AND beta = ? "
        "AND tolerance = ? AND n_samples = ? GROUP BY experiment_id ORDER BY experiment_id",
        [scfg.run_id, int(scfg.step), scfg.criterion, scfg.alpha, scfg.beta, scfg.tolerance, scfg.samples])
    want = {f"{a}:{s}" for a, s in scfg.lanes}
    L, P1 = len(want), scfg.proposals + 1
    for row in cand:
        if set(row["lanes"]) != want or row["p"] != scfg.proposals or row["n_rows"] != L * P1:
            continue
        n = wh.records("SELECT count(*) AS n FROM stabilize_returns WHERE experiment_id = ?", [row["experiment_id"]])
        if n[0]["n"] != L * P1 * scfg.samples:
            continue
        repro = wh.records("SELECT repro FROM runs WHERE run_id = ?", [row["derived"]])
        if not repro:
            continue
        stored = (json.loads(repro[0]["repro"]).get("config") or {}).get("stabilize") or {}
        if all(stored.get(f) == getattr(scfg, f) for f in ("exploration_noise", "reset_noise_fraction")):
            return row["experiment_id"]
    return None


@dataclass
class SourcePlan:
    """What `run_sources` will do: one config per source, the experiment already stored
    for it (skipped) or None, and the replay capacity its lanes get."""
    configs: list[StabilizeConfig]
    done: list[str | None]
    capacity: list[int]

    @property
    def todo(self) -> list[int]:
        return [i for i, d in enumerate(self.done) if d is None]


def plan_sources(wh, base: StabilizeConfig, sources: Sequence[tuple[str, int]], *,
                 skip_done: bool = True) -> SourcePlan:
    """Check every source (refusing a bad one before any work), find those already done,
    and give the sources of one program config (`program_config`) one capacity: the
    largest of their replay sizes + P (memory: lanes x capacity rows per source)."""
    from retland.train.checkpoints import run_config, run_record

    keys = [(str(r), int(s)) for r, s in sources]
    if not keys:
        raise ValueError("no source policy given: use --run/--step, --source RUN:STEP or --sources top-ltp:K")
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ValueError(f"source {dup[0][0]}:{dup[0][1]} is given twice")
    for r, s in keys:
        check_source(wh, r, s)
    configs = [base.model_copy(update=dict(run_id=r, step=s)) for r, s in keys]
    done = [completed_experiment(wh, c) if skip_done else None for c in configs]
    sizes = {(r, s): int(wh.records("SELECT replay_size FROM checkpoints WHERE run_id = ? AND step = ?",
                                    [r, s])[0]["replay_size"]) for r, s in keys}
    group = {r: program_config(run_config(run_record(wh, r))) for r in {r for r, _ in keys}}
    cap: dict = {}
    for r, s in keys:  # all sources given, done or not: the capacity does not depend on what is left
        cap[group[r]] = max(cap.get(group[r], 0), sizes[(r, s)] + base.proposals)
    capacity = [cap[group[r]] for r, _ in keys]
    return SourcePlan(configs, done, capacity)


@dataclass
class SourceOutcome:
    run_id: str
    step: int
    experiment_id: str
    skipped: bool  # an experiment with the same settings was already stored
    wall_seconds: float = 0.0


def run_sources(wh, plan: SourcePlan, *, progress: Callable[..., None] | None = None,
                on_result: Callable[[StabilizeResult], None] | None = None) -> list[SourceOutcome]:
    """Run Algorithm 1 from every source of `plan` that is not done yet, one experiment
    per source written as soon as it finishes, sources of one program config one after
    another (one compile). `progress` is passed to each experiment (P + 1 units per
    source); `on_result` sees each result before its arrays are dropped (the lanes hold
    whole replay buffers, so results are not kept)."""
    order = sorted(plan.todo, key=lambda i: plan.capacity[i])  # equal capacities (one shape) together
    outcomes: dict[int, SourceOutcome] = {
        i: SourceOutcome(c.run_id, c.step, d, True) for i, (c, d) in enumerate(zip(plan.configs, plan.done))
        if d is not None}
    for i in order:
        scfg = plan.configs[i]
        ckpt = load_source(wh, scfg)
        result = run_experiment(scfg, wh, checkpoint=ckpt, progress=progress, capacity=plan.capacity[i])
        if on_result is not None:
            on_result(result)
        outcomes[i] = SourceOutcome(scfg.run_id, scfg.step, result.experiment_id, False, result.wall_seconds)
        del result, ckpt
    return [outcomes[i] for i in range(len(plan.configs))]


# ----------------------------------------------------------------- the request

def _base() -> StabilizeConfig:
    return StabilizeConfig(run_id="-", step=0)


@dataclass(frozen=True)
class StabilizeRequest:
    """`retland stabilize`: Algorithm 1 from explicit sources (`run`/`step` pairs, run ids
    or unique prefixes; `source` (RUN_ID, STEP) pairs) and/or the `sources` selection
    top-ltp:K (narrowed by env, where, operator), with the settings of `config` (its
    run_id and step are placeholders: each source fills them). skip_done=False redoes
    sources already done with these settings."""

    command: ClassVar[str] = "stabilize"

    run: tuple[str, ...] = ()
    step: tuple[int, ...] = ()
    source: tuple[tuple[str, int], ...] = ()
    sources: str | None = None
    env: str | None = None
    where: str | None = None
    operator: str | None = None
    config: StabilizeConfig = field(default_factory=_base)
    skip_done: bool = True

    def check(self) -> "StabilizeRequest":
        """Refuse (ValueError) what cannot be honoured before the warehouse is read."""
        if len(self.run) != len(self.step):
            raise ValueError(f"--run and --step pair up (the i-th --run with the i-th --step): got {len(self.run)} "
                             f"--run and {len(self.step)} --step")
        if (self.env or self.where or self.operator) and not self.sources:
            raise ValueError("--env, --where and --operator choose among sampled checkpoints: use them with "
                             "--sources top-ltp:K")
        if self.sources is not None:
            parse_selection(self.sources)
        return self

    def argv(self) -> list[str]:
        c, d = self.config, _base()
        out = ["stabilize"]
        for r, s in zip(self.run, self.step):
            out += ["--run", r, "--step", str(s)]
        for r, s in self.source:
            out += ["--source", f"{r}:{s}"]
        return out + options([
            ("--sources", self.sources), ("--env", self.env), ("--where", self.where), ("--operator", self.operator),
            ("--proposals", c.proposals), ("--samples", c.samples), ("--seeds", int_list_text(c.seeds)),
            ("--criterion", c.criterion), ("--alpha", number(c.alpha)), ("--tolerance", number(c.tolerance)),
            ("--arms", ",".join(c.arms) if c.arms != d.arms else None), ("--chunk", c.chunk),
            ("--redo", not self.skip_done)])


@dataclass
class StabilizeOutcome:
    picked: list[tuple[str, int]]  # every source, in order (explicit ones, then the selection's)
    plan: SourcePlan
    outcomes: list[SourceOutcome]


def run_request(wh, request: StabilizeRequest, *, progress: Bar | None = None,
                on_select: Callable[[int, object], None] | None = None,
                on_plan: Callable[[SourcePlan, list[tuple[str, int]]], None] | None = None,
                on_result: Callable[[StabilizeResult], None] | None = None) -> StabilizeOutcome:
    """A checked request's Algorithm 1, what `retland stabilize` and a study's stabilize
    stage run: explicit sources resolved (unique prefixes), then the top-ltp:K selection
    (`on_select(k, table)` sees it), planned (`on_plan(plan, picked)`: sources done are
    skipped), then every source left, one experiment each (`on_result` after each), with
    one `progress` bar of PURDs."""
    from retland.warehouse.runs import resolve_run

    request.check()
    picked = [(resolve_run(wh, r, seed_option=None), int(s)) for r, s in zip(request.run, request.step)]
    picked += [(resolve_run(wh, r, option="--source", seed_option=None), int(s)) for r, s in request.source]
    if request.sources:
        k = parse_selection(request.sources)
        top = top_ltp_sources(wh, k, env=request.env, where=request.where, operator=request.operator,
                              beta=request.config.beta)
        if on_select is not None:
            on_select(k, top)
        picked += [(r, int(s)) for r, s in zip(top["run_id"], top["step"]) if (r, int(s)) not in picked]
    if not picked:
        raise ValueError("no source policy: give --run RUN --step STEP (repeatable), --source RUN:STEP "
                         "(repeatable) or --sources top-ltp:K")
    base = request.config
    p = plan_sources(wh, base, picked, skip_done=request.skip_done)  # refuses a bad source before any work
    if on_plan is not None:
        on_plan(p, picked)
    outcomes = []
    if p.todo:
        with bar(progress, len(p.todo) * (base.proposals + 1), f"stabilize {len(p.todo)} sources x "
                 f"{len(base.lanes)} lanes x {base.samples} samples", unit="PURDs") as advance:
            outcomes = run_sources(wh, p, progress=advance, on_result=on_result)
    return StabilizeOutcome(picked, p, outcomes)
