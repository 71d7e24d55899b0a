"""`retland landscape | failures | interpolate`: the paper's geometric analyses.

Each command validates everything it was given before it computes or writes anything,
appends rows through the warehouse's one write path, and skips work already stored.
"""
from __future__ import annotations

from pathlib import Path
from contextlib import contextmanager
from enum import Enum
from typing import Annotated, Optional

import typer

from retland.cli.app import (
    MAX_BOOTSTRAP,
    CliError,
    OutputFormat,
    WarehouseOpt,
    app,
    check_seed,
    count_or_keyword,
    emit,
    err_console,
    renamed,
    require_writable,
)
from retland.cli.progress import progress_bar
from retland.cli.selection import SeedOpt
from retland.config.settings import (
    DIRECTIONS,
    InterpolationError,
    InterpolationSettings,
    LandscapeError,
    LandscapeRequest,
    default_of,
    help_of,
)


def _user_errors(*types):
    """Map library request errors to CliError (printed, exit 2, nothing written)."""

    @contextmanager
    def guard():
        try:
            yield
        except types as exc:
            raise CliError(str(exc)) from None

    return guard()


# ------------------------------------------------------------------------ interpolate

# Bootstrap resamples: the CIs are computed after every rollout, so a count numpy cannot
# allocate must be refused before them.

class PairKind(str, Enum):
    same_run = "same-run"
    different_run = "different-run"
    both = "both"


@app.command()
def interpolate(
    env: Annotated[Optional[str], typer.Option(help="Env whose checkpoints to pair (with --pair-kind).")] = None,
    algo: Annotated[str, typer.Option(help="Algorithm of the runs to pair.")] = "td3",
    pairs: Annotated[Optional[PairKind], typer.Option(
        "--pair-kind",
        help="same-run: any two checkpoints of one run; different-run: any checkpoints of two runs of one "
             "training config with different seeds; both. Trained runs of --env/--algo only.")] = None,
    old_pairs: Annotated[Optional[PairKind], typer.Option("--pairs", hidden=True)] = None,
    pairs_per_kind: Annotated[int, typer.Option(
        "--pairs-per-kind", help=help_of(InterpolationSettings, "pairs_per_kind"))] = default_of(
        InterpolationSettings, "pairs_per_kind"),
    max_pairs: Annotated[Optional[int], typer.Option("--max-pairs", hidden=True)] = None,
    pair_seed: Annotated[int, typer.Option(help=help_of(InterpolationSettings, "pair_seed"))] = default_of(
        InterpolationSettings, "pair_seed"),
    a: Annotated[Optional[str], typer.Option("--a", help="Explicit pair: endpoint λ=0 as RUN_ID:STEP.")] = None,
    b: Annotated[Optional[str], typer.Option("--b", help="Explicit pair: endpoint λ=1 as RUN_ID:STEP.")] = None,
    points: Annotated[int, typer.Option(help=help_of(InterpolationSettings, "points"))] = default_of(InterpolationSettings, "points"),
    samples: Annotated[int, typer.Option(help=help_of(InterpolationSettings, "samples"))] = default_of(InterpolationSettings, "samples"),
    sigma: Annotated[float, typer.Option(help=help_of(InterpolationSettings, "sigma"))] = default_of(InterpolationSettings, "sigma"),
    seed: Annotated[int, typer.Option("--noise-seed", help=help_of(InterpolationSettings, "seed"))] = default_of(
        InterpolationSettings, "seed"),
    old_seed: Annotated[Optional[int], typer.Option("--seed", hidden=True)] = None,
    horizon: Annotated[Optional[int], typer.Option(help=help_of(InterpolationSettings, "horizon"))] = default_of(InterpolationSettings, "horizon"),
    batch_size: Annotated[str, typer.Option(help="Rollouts per chunk, or auto (recorded per pair, reused).")] = "auto",
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the BTP CIs.")] = 1000,
    fmt: Annotated[OutputFormat, typer.Option("--format", "-f", help="How to print the BTP summary.")] = OutputFormat.table,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    warehouse: WarehouseOpt = None,
) -> None:
    """Evaluate θ(λ) = (1−λ)·θa + λ·θb between pairs of checkpoints (actor parameters
    only) and print each pair's below-threshold proportion (BTP: share of points whose
    mean return < 0.1 × the lower endpoint's) and the IQM of BTP by pair kind with
    stratified bootstrap 95% CIs. Pairs are drawn at random from --env's checkpoints
    (--pair-kind, --pairs-per-kind, --pair-seed; the paper's 500 of each kind), or one
    explicit pair is given with --a/--b. Stored in interpolation_pairs /
    interpolation_points; a pair already complete is not recomputed. See
    docs/method.md §6.3."""
    from retland.analyses import interpolation as ip

    if (a is None) != (b is None):
        raise CliError("an explicit pair needs both --a RUN:STEP and --b RUN:STEP")
    pairs = renamed(pairs, old_pairs, None, "--pair-kind", "--pairs")
    if a is not None and pairs is not None:
        raise CliError("give either --a/--b or --pair-kind, not both")
    if a is None and (pairs is None or env is None):
        raise CliError("say which pairs: --env ENV --pair-kind same-run|different-run|both, or --a RUN:STEP "
                       "--b RUN:STEP")
    seed = renamed(seed, old_seed, default_of(InterpolationSettings, "seed"), "--noise-seed", "--seed")
    pairs_per_kind = renamed(pairs_per_kind, max_pairs, default_of(InterpolationSettings, "pairs_per_kind"),
                             "--pairs-per-kind", "--max-pairs")
    batch = count_or_keyword(batch_size, "--batch-size", "auto")
    if not 1 <= bootstrap <= MAX_BOOTSTRAP:
        raise CliError(f"--bootstrap {bootstrap}: give a whole number of resamples in [1, {MAX_BOOTSTRAP}]")
    check_seed(seed, "--noise-seed")
    check_seed(pair_seed, "--pair-seed")
    with _user_errors(InterpolationError):
        settings = InterpolationSettings(points=points, samples=samples, sigma=sigma, seed=seed, horizon=horizon,
                                         pairs_per_kind=pairs_per_kind, pair_seed=pair_seed).check()
    request = ip.InterpolationRequest(env=env, algo=algo, pair_kind=pairs.value if pairs is not None else None,
                                      a=a, b=b, settings=settings)
    execute_interpolate(request, warehouse, progress, batch_size=batch, bootstrap=bootstrap, fmt=fmt)


def execute_interpolate(request, warehouse, progress: bool = True, *, batch_size: int | str = "auto",
                        bootstrap: int = 1000, fmt: OutputFormat = OutputFormat.table) -> None:
    """Run a checked InterpolationRequest (`retland.analyses.interpolation.run_request`)
    and print what `retland interpolate` prints; `retland study` calls this for its
    interpolation stage."""
    from functools import partial

    from retland.analyses import interpolation as ip
    from retland.warehouse import Warehouse

    settings = request.settings
    wh = Warehouse.open(warehouse, create=False)
    require_writable(wh.root)

    def on_select(selection) -> None:
        for kind, eligible in selection.eligible.items():
            how = (f"all {eligible} eligible (fewer than --pairs-per-kind {settings.pairs_per_kind})"
                   if selection.capped(kind) else f"{selection.drawn(kind)} of {eligible} eligible")
            err_console.print(f"{kind} pairs of {request.env}: {how}, --pair-seed {settings.pair_seed}",
                              highlight=False, soft_wrap=True)

    def on_plan(plans, todo) -> None:
        err_console.print(f"{len(plans)} pair(s), {todo} rollouts to compute", highlight=False)

    def on_result(plan, res) -> None:
        if res.rows_written:
            err_console.print(f"{plan.pair.kind} {plan.pair.label}: {res.rows_written} rows in "
                              f"{res.seconds:.1f} s", highlight=False, soft_wrap=True)

    with _user_errors(InterpolationError):
        done = ip.run_request(wh, request, batch_size=batch_size, progress=partial(progress_bar, enabled=progress),
                              on_select=on_select, on_plan=on_plan, on_result=on_result)
    ids = [p.pair_id for p in done.plans]
    btp = ip.pair_btp(wh, ids)
    emit(btp.select("kind", "run_a", "step_a", "run_b", "step_b", "value_a", "value_b", "btp", "complete"),
         fmt, None, "below-threshold proportion per pair")
    complete = btp.filter(btp["complete"])
    if complete.height:
        emit(ip.btp_summary(complete, n_resamples=bootstrap, seed=settings.seed), fmt, None,
             "BTP: IQM over pairs, stratified bootstrap 95% CI (strata = envs)")


# -------------------------------------------------------------------------- landscape

Directions = Enum("Directions", {d.replace("-", "_"): d for d in DIRECTIONS}, type=str)


@app.command()
def landscape(
    run: Annotated[str, typer.Option(help="Run id of the checkpoint, or a unique prefix of one.")],
    step: Annotated[int, typer.Option(help="Env step of the checkpoint (`retland runs` lists them).")],
    operator: Annotated[str, typer.Option(help=help_of(LandscapeRequest, "operator"))] = default_of(LandscapeRequest, "operator"),
    grid: Annotated[int, typer.Option(help=help_of(LandscapeRequest, "resolution"))] = default_of(LandscapeRequest, "resolution"),
    range_: Annotated[str, typer.Option("--range", help=help_of(LandscapeRequest, "lo"))] = (
        f"{default_of(LandscapeRequest, 'lo'):g}:{default_of(LandscapeRequest, 'hi'):g}"),
    zoom: Annotated[str, typer.Option(help=help_of(LandscapeRequest, "zoom"))] = ",".join(f"{z:g}" for z in default_of(LandscapeRequest, "zoom")),
    directions: Annotated[Directions, typer.Option(help=help_of(LandscapeRequest, "directions"))] = Directions(
        default_of(LandscapeRequest, "directions")),
    samples_per_point: Annotated[int, typer.Option(help=help_of(LandscapeRequest, "samples_per_point"))] = default_of(
        LandscapeRequest, "samples_per_point"),
    sigma: Annotated[float, typer.Option(help=help_of(LandscapeRequest, "sigma"))] = default_of(LandscapeRequest, "sigma"),
    seed: Annotated[int, typer.Option("--noise-seed", help=help_of(LandscapeRequest, "seed"))] = default_of(
        LandscapeRequest, "seed"),
    old_seed: Annotated[Optional[int], typer.Option("--seed", hidden=True)] = None,
    horizon: Annotated[Optional[int], typer.Option(help=help_of(LandscapeRequest, "horizon"))] = default_of(LandscapeRequest, "horizon"),
    batch_size: Annotated[str, typer.Option(help="Rollouts per chunk, or auto (recorded per grid, reused).")] = "auto",
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    warehouse: WarehouseOpt = None,
) -> None:
    """Evaluate J(θ + a·d1 + b·d2) on a GRID × GRID window around a checkpoint (Fig. 1,
    A.2; --zoom for A.12). Every point is a rollout; rows go to landscape_points, the
    grid and its saved directions to landscape_grids. A grid already complete is not
    recomputed; view `landscape_values` has per-point mean/std/LTP/CVaR."""
    from retland.analyses import landscape as ls

    seed = renamed(seed, old_seed, default_of(LandscapeRequest, "seed"), "--noise-seed", "--seed")
    batch = count_or_keyword(batch_size, "--batch-size", "auto")
    check_seed(seed, "--noise-seed")
    with _user_errors(LandscapeError):
        lo, hi = ls.parse_range(range_)
        req = LandscapeRequest(run, step, directions.value, operator, grid, lo, hi, ls.parse_zoom(zoom),
                         samples_per_point, sigma, seed, horizon).check()
    execute_landscape(req, warehouse, progress, batch_size=batch)


def execute_landscape(request, warehouse, progress: bool = True, *, batch_size: int | str = "auto") -> None:
    """Run a checked LandscapeRequest (`retland.analyses.landscape.run_request`) and print
    what `retland landscape` prints; `retland study` calls this for its landscape stage."""
    from functools import partial

    from retland.analyses import landscape as ls
    from retland.warehouse import Warehouse

    wh = Warehouse.open(warehouse, create=False)
    require_writable(wh.root)

    def on_plan(p) -> None:
        err_console.print(f"{len(p.grids)} grid(s) of {request.resolution}×{request.resolution}×"
                          f"{request.samples_per_point}, {p.todo} rollouts to compute", highlight=False)

    with _user_errors(LandscapeError):
        p, results = ls.run_request(wh, request, batch_size=batch_size, progress=partial(progress_bar, enabled=progress),
                                    on_plan=on_plan)
    summary = ls.grid_summary(wh, [r.grid_id for r in results])
    emit(summary, OutputFormat.table, None,
         f"landscape of {p.request.run_id} at step {request.step} ({request.directions} directions)")


# --------------------------------------------------------------------------- failures

@app.command()
def failures(
    run: Annotated[Optional[str], typer.Option(
        help="Run id of the checkpoint, or a unique prefix of one (with --step).", show_default=False)] = None,
    step: Annotated[Optional[int], typer.Option(
        help="Env step of the checkpoint (`retland runs` lists them).", show_default=False)] = None,
    seed: SeedOpt = None,
    checkpoints: Annotated[Optional[str], typer.Option(
        "--checkpoints", help="Choose the checkpoints instead of --run/--step: top-ltp:K (the K with the highest "
        "LTP) or random:K (K drawn at random, seeded by --selection-seed; the paper's §3.2 takes 10 random TD3 "
        "policies), among trained runs' sampled checkpoints with LTP > 0 and a positive mode, narrowed by --env, "
        "--algo, "
        "--operator and --where. Checkpoints without a sample near the mean are passed over.",
        show_default=False)] = None,
    env: Annotated[Optional[str], typer.Option(help="With --checkpoints: only this env.", show_default=False)] = None,
    algo: Annotated[Optional[str], typer.Option(help="With --checkpoints: only runs of this algorithm.",
                                                show_default=False)] = None,
    where: Annotated[Optional[str], typer.Option(
        help="With --checkpoints: SQL condition on the columns of `retland stats` (env, seed, step, operator, "
             "mean, ltp, …).", show_default=False)] = None,
    per_env: Annotated[bool, typer.Option(
        "--per-env/--overall", help="With --checkpoints: K per env, or K over everything selected.")] = False,
    selection_seed: Annotated[int, typer.Option(
        help="With --checkpoints random:K: the seed of the draw (the same seed and stored distributions give "
             "the same checkpoints).")] = 0,
    operator: Annotated[Optional[str], typer.Option(
        help="Operator id or kind of the distribution (needed when a checkpoint has several; with --checkpoints "
             "the default is each run's own update).")] = None,
    pairs: Annotated[int, typer.Option(help="Success/failure pairs to re-roll per checkpoint (the lowest "
                                            "qualifying update indices; the paper shows 1).")] = 1,
    frames: Annotated[bool, typer.Option(
        "--frames/--no-frames", help="Also draw each pair as filmstrips and animations (table renders; "
        "`retland render` has the options), where a MuJoCo renderer works; else a one-line note.")] = True,
    progress: Annotated[bool, typer.Option(help="Show progress: a live bar on a terminal, plain lines when piped.")] = True,
    warehouse: WarehouseOpt = None,
) -> None:
    """Re-roll a successful post-update sample (return within 10% of the PURD mean) and
    a failing one (return < 50% of the PURD mode) of a checkpoint with LTP > 0, with
    the same keys (same θ_i, checked against the stored return), and store per-step
    reward, cumulative return, done, torso height and pitch in `trajectories`. Prints
    view `failure_divergence`: the step where the two cumulative returns part, and
    whether the failure is a termination or a low-reward stretch (Fig. 3).

    One checkpoint with --run/--step, or several chosen with --checkpoints top-ltp:K |
    random:K (e.g. the paper's §3.2: --checkpoints random:10 --algo td3 --per-env).
    Everything is checked before anything is re-rolled; pairs already stored are kept."""
    from retland.analyses import failures as fl

    with _user_errors(fl.FailureError):
        request = fl.FailuresRequest(run=run, step=step, seed=seed, checkpoints=checkpoints, env=env, algo=algo,
                                     where=where, per_env=per_env, selection_seed=selection_seed,
                                     operator=operator, pairs=pairs, frames=frames).check()
    if checkpoints is not None:
        check_seed(selection_seed, "--selection-seed")
    execute_failures(request, warehouse, progress)


def execute_failures(request, warehouse, progress: bool = True) -> None:
    """Run a checked FailuresRequest (`retland.analyses.render.run_failures_request`: the
    pairs, then their frames) and print what `retland failures` prints; `retland study`
    calls this for its failures stage."""
    from functools import partial

    from retland.analyses import failures as fl
    from retland.warehouse import Warehouse

    wh = Warehouse.open(warehouse, create=False)
    require_writable(wh.root)

    def on_select(targets, passed) -> None:
        selector = fl.parse_selector(request.checkpoints)
        how = (f"seed {request.selection_seed}" if selector.kind == "random" else "highest LTP first")
        err_console.print(f"{selector.text}{' per env' if request.per_env else ''} ({how}): "
                          + ", ".join(f"{t.run_id}@{t.step}" for t in targets), highlight=False, soft_wrap=True)
        if passed:
            err_console.print("passed over (no sample within 10% of the mean): "
                              + ", ".join(f"{c.run_id}@{c.step}" for c in passed), highlight=False,
                              soft_wrap=True)

    def on_plan(targets, todo) -> None:
        err_console.print(f"{sum(len(t.pairs) for t in targets)} pair(s) in {len(targets)} checkpoint(s), "
                          f"{sum(todo.values())} to re-roll", highlight=False, soft_wrap=True)

    def on_note(line: str) -> None:
        err_console.print(line, highlight=False, soft_wrap=True, markup=False)

    from retland.analyses import render as rd
    from retland.core.render import RenderUnavailable

    with _user_errors(fl.FailureError, rd.RenderError, RenderUnavailable):
        done = rd.run_failures_request(wh, request, progress=partial(progress_bar, enabled=progress),
                                       on_select=on_select, on_plan=on_plan, on_note=on_note)
    for t in done.targets:
        ids = done.pair_ids[id(t)]
        df = fl.divergence(wh, ids)
        # pair ids hold operator ids, whose brackets the table would read as markup
        emit(df.drop("pair_id", "run_id", "step", "operator_id"), OutputFormat.table, None,
             f"failure pairs of {t.run_id} step {t.step} {t.operator_id} (LTP {t.ltp:.3f})")


# ----------------------------------------------------------------------------- render

@app.command()
def render(
    run: Annotated[str, typer.Argument(help="Run id of the checkpoint, or a unique prefix of one.",
                                       show_default=False)],
    step: Annotated[int, typer.Option(help="Env step of the checkpoint (`retland runs` lists them).",
                                      show_default=False)],
    seed: SeedOpt = None,
    index: Annotated[Optional[list[int]], typer.Option(
        help="Update index of a stored sample to draw (repeat for several). Default: the checkpoint's first "
             "failure pair (a sample within 10% of the mean and one below half the mode, as `retland failures` "
             "picks), both strips on the same steps with the divergence step marked.", show_default=False)] = None,
    operator: Annotated[Optional[str], typer.Option(
        help="Operator id or kind of the distribution (needed when the checkpoint has several).",
        show_default=False)] = None,
    every: Annotated[int, typer.Option(help="Filmstrip spacing: a frame every this many env steps, from step 0 "
                                            "to the episode's end (a failing one ends at its termination).")] = 50,
    animation: Annotated[bool, typer.Option(
        "--animation/--no-animation", help="Also write an animated WebP of the whole episode.")] = True,
    animation_every: Annotated[int, typer.Option(
        help="Env steps between animation frames; 0: about 100 frames per episode.")] = 0,
    width: Annotated[int, typer.Option(help="Pixels of one frame, across (16..1280).")] = 240,
    height: Annotated[int, typer.Option(help="Pixels of one frame, down (16..960).")] = 180,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Also copy the filmstrips and animations into this folder (outside the "
        "warehouse), named RUN-STEP-INDEX.png/.webp.", show_default=False)] = None,
    progress: Annotated[bool, typer.Option(help="Show progress: a live bar on a terminal, plain lines when piped.")] = True,
    warehouse: WarehouseOpt = None,
) -> None:
    """Draw stored post-update samples: re-roll each exactly (same θ_i, its return checked
    against the stored one), keep the simulator's pose at every step, and draw it with
    MuJoCo's renderer (off screen: EGL or OSMesa, software Mesa where there is no GPU)
    as a filmstrip (PNG, a frame every --every steps) and an animation (animated WebP).
    The files go under the warehouse's artifacts/renders/ with a row in table `renders`,
    which the report shows beside the failure pairs; a sample drawn before with the same
    settings is not drawn again. Tasks: the brax and paper variants of hopper, walker2d,
    halfcheetah and ant, and the DeepMind Control tasks."""
    import shutil

    from retland.analyses import render as rd
    from retland.analyses.failures import FailureError
    from retland.cli.app import require_stored_checkpoint
    from retland.cli.selection import resolve_run
    from retland.core import render as core_render
    from retland.warehouse import Warehouse
    from retland.warehouse.writer import WarehouseError

    if output is not None:
        from retland.warehouse import refuse_inside_warehouse

        refuse_inside_warehouse(output, "--output")
        if output.exists() and not output.is_dir():
            raise CliError(f"--output {output} is a file; give a folder")
    wh = Warehouse.open(warehouse, create=False)
    require_writable(wh.root)
    with _user_errors(rd.RenderError, FailureError, WarehouseError, core_render.RenderUnavailable):
        run = resolve_run(wh, run, seed)
        require_stored_checkpoint(wh, run, step, "drawing samples")
        req = rd.RenderRequest(run, step, operator, None if not index else tuple(index), every, animation,
                               animation_every, width, height)
        plan = rd.plan(wh, req)
        todo = rd.missing(plan)
        if todo and core_render.available() is None:
            raise CliError(core_render.unavailable_reason())
        err_console.print(f"{len(plan.samples)} sample(s) of {run} step {step} {plan.operator_id}, "
                          f"{len(todo)} to draw", highlight=False, soft_wrap=True, markup=False)
        with progress_bar(len(todo), "render", unit="samples", enabled=progress and bool(todo)) as advance:
            rd.run(wh, plan, progress=advance)
    rows = rd.plan(wh, req).done
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
    for s in plan.samples:
        row = rows[s.index]
        files = [row["filmstrip_path"]] + ([row["animation_path"]] if row["animation_path"] else [])
        if output is not None:
            for rel in list(files):
                dest = output / f"{run}-{step}-{s.index}{Path(rel).suffix}"
                shutil.copyfile(wh.root / rel, dest)
                files.append(str(dest))
        what = f" ({s.role}, diverges at step {row['diverge_step']})" if s.role else ""
        typer.echo(f"sample {s.index}{what}: return {row['stored_return']:.1f}, {row['episode_length']} steps"
                   f"{', terminated' if row['terminated'] else ''}; frames at steps {row['frame_steps']}")
        for rel in files:
            typer.echo(f"  {rel if Path(rel).is_absolute() else wh.root / rel}")
