"""`retland stabilize`: Algorithm 1, post-update rejection of TD3 updates."""
from __future__ import annotations

from enum import Enum
from typing import Annotated, Optional

import typer

from retland.cli.app import CliError, WarehouseOpt, app, console, require_stored_checkpoint, require_writable
from retland.cli.progress import progress_bar
from retland.settings import ARMS, CRITERIA, StabilizeConfig, default_of, help_of

MAX_SEED = 2**31 - 1


Criterion = Enum("Criterion", {c: c for c in CRITERIA}, type=str)


def parse_seeds(text: str) -> tuple[int, ...]:
    """'0..9' -> 0, 1, …, 9 (inclusive); also '0,3,5' and '2-4'."""
    out: list[int] = []
    try:
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            sep = ".." if ".." in part else ("-" if "-" in part[1:] else None)
            if sep:
                lo, hi = (int(x) for x in part.split(sep, 1))
                if hi < lo:
                    raise CliError(f"--seeds {text!r}: range {part!r} is empty")
                out.extend(range(lo, hi + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise CliError(f"--seeds {text!r}: expected integers like 0..9, 0,3,5 or 2-4") from None
    if not out:
        raise CliError(f"--seeds {text!r}: no seeds given")
    if max(out) > MAX_SEED:  # stabilize_steps.seed is int32; a failure there would come after the whole run
        raise CliError(f"--seeds {text!r}: seeds must be <= {MAX_SEED}")
    return tuple(out)


def parse_arms(text: str) -> tuple[str, ...]:

    arms = tuple(a.strip() for a in text.split(",") if a.strip())
    bad = [a for a in arms if a not in ARMS]
    if bad or not arms:
        raise CliError(f"--arms {text!r}: choose from {', '.join(ARMS)} (comma-separated)")
    return arms


@app.command()
def stabilize(
    run: Annotated[str, typer.Option("--run", help="Source run id (a TD3 run).", show_default=False)],
    step: Annotated[int, typer.Option("--step", help="Env step of the source checkpoint.", show_default=False)],
    proposals: Annotated[int, typer.Option(help=help_of(StabilizeConfig, "proposals"))] = default_of(StabilizeConfig, "proposals"),
    samples: Annotated[int, typer.Option(help=help_of(StabilizeConfig, "samples"))] = default_of(StabilizeConfig, "samples"),
    alpha: Annotated[float, typer.Option(help=help_of(StabilizeConfig, "alpha"))] = default_of(StabilizeConfig, "alpha"),
    tolerance: Annotated[float, typer.Option(help=help_of(StabilizeConfig, "tolerance"))] = default_of(StabilizeConfig, "tolerance"),
    criterion: Annotated[Criterion, typer.Option(help=help_of(StabilizeConfig, "criterion"))] = Criterion(
        default_of(StabilizeConfig, "criterion")),
    arms: Annotated[str, typer.Option(help="reject (Algorithm 1) and/or baseline (never rejects, same keys).")]
    = "reject,baseline",
    seeds: Annotated[str, typer.Option(help="Rejection seeds: 0..9, 0,3,5 or 2-4.")] = "0..9",
    chunk: Annotated[Optional[int], typer.Option(
        help="PURD samples per lane computed at once; memory grows with lanes × chunk. "
             "Default: 256 on CPU, 512 on a GPU (recorded with the experiment).", show_default=False)] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    warehouse: WarehouseOpt = None,
) -> None:
    """Algorithm 1 (paper §4.2, Fig. 7): from a TD3 checkpoint, each proposal takes one
    env step (exploration noise 0.1, collection reset noise 10% of standard), appends
    it to the replay buffer and does one full TD3 update; the proposal's post-update
    return distribution (N td3-operator samples) decides: the reject arm keeps it only
    if the criterion holds against the last accepted state, else restores everything.
    All seeds and arms run vmapped in one program.

    Writes one `stabilize_steps` row per lane and proposal, the samples in
    `stabilize_returns`, and each lane's final state as a derived run with one
    checkpoint (runs.source = 'derived'). Nothing is written unless the whole
    experiment finishes. See the views stabilize_trajectory, stabilize_arms and the
    macro stabilize_replay(alpha, beta, tolerance, criterion)."""
    from pydantic import ValidationError

    from retland.analyses.stabilize import load_source, run_experiment
    from retland.warehouse import Warehouse

    try:
        scfg = StabilizeConfig(run_id=run, step=step, proposals=proposals, samples=samples, alpha=alpha,
                               tolerance=tolerance, criterion=criterion.value, arms=parse_arms(arms),
                               seeds=parse_seeds(seeds), chunk=chunk)
    except ValidationError as exc:
        msgs = "; ".join(f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg'].removeprefix('Value error, ')}"
                         for e in exc.errors())
        raise CliError(msgs) from None
    wh = Warehouse.open(warehouse, create=False)
    require_writable(wh.root)
    require_stored_checkpoint(wh, run, step, "stabilize")
    ckpt = load_source(wh, scfg)  # refuses an unknown run/step or a non-TD3 run before any work
    lanes = len(scfg.lanes)
    console.print(f"stabilize [bold]{run}[/]@{step} ({ckpt.env}): {len(scfg.seeds)} seeds x {len(scfg.arms)} arms, "
                  f"{proposals} proposals x {samples} samples, criterion {scfg.criterion} "
                  f"(α={alpha}, tolerance={tolerance}); {lanes} lanes vmapped")
    with progress_bar(proposals, f"stabilize {ckpt.env} {lanes} lanes x {samples} samples", unit="proposals",
                      enabled=progress) as advance:
        result = run_experiment(scfg, wh, checkpoint=ckpt, progress=advance)
    last = {(r["arm"], r["seed"]): r for r in result.rows if r["proposal"] == proposals}
    for arm in scfg.arms:
        acc = [sum(1 for r in result.rows if r["arm"] == arm and r["seed"] == s and r["proposal"] > 0
                   and r["accepted"]) for s in scfg.seeds]
        held = [last[(arm, s)] for s in scfg.seeds]
        cur = lambda r, k: r[k] if r["accepted"] else r[f"last_{k}"]  # noqa: E731
        ltps = [cur(r, "ltp") for r in held if cur(r, "ltp") is not None]
        console.print(f"  {arm:8s} accepted {sum(acc)}/{proposals * len(scfg.seeds)}; final mean "
                      f"{sum(cur(r, 'mean') for r in held) / len(held):,.1f}"
                      + (f", LTP {sum(ltps) / len(ltps):.3f}" if ltps else ""))
    console.print(f"experiment [bold]{result.experiment_id}[/] in {result.wall_seconds:,.1f} s; "
                  f"derived runs {result.derived_run_ids[0]} … {result.derived_run_ids[-1]}")
    if {"reject", "baseline"} <= set(scfg.arms):
        from retland.analyses.stabilize import arm_effect

        eff = arm_effect(wh.query("SELECT * FROM stabilize_final WHERE experiment_id = ?", [result.experiment_id]))
        console.print(f"reject − baseline after {proposals} proposals (mean over {len(scfg.seeds)} seeds, "
                      "95% bootstrap CI over seeds):")
        for r in eff.iter_rows(named=True):
            console.print(f"  {r['statistic']:10s} {r['difference']:+.4g} [{r['lo']:+.4g}, {r['hi']:+.4g}] "
                          f"(reject {r['reject']:.4g}, baseline {r['baseline']:.4g})")
