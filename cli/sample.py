"""`retland sample`: fill the warehouse with post-update return distributions."""
from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.markup import escape

from retland.cli.app import (
    CliError,
    WarehouseOpt,
    app,
    check_seed,
    console,
    count_or_keyword,
    err_console,
    require_writable,
)
from retland.cli.progress import progress_bar
from retland.cli.selection import parse_sources, resolve_run, source_option
from retland.settings import SampleSettings, default_of, help_of


def _int_list(text: str | None, what: str) -> list[int] | None:
    """'0,2,5-7' -> [0, 2, 5, 6, 7]: integers >= 0 and inclusive ranges LO-HI."""
    if text is None:
        return None
    out: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            lo, hi = (int(x) for x in part.split("-", 1)) if "-" in part else (int(part), int(part))
        except ValueError:
            raise CliError(f"--{what} {text!r}: expected integers >= 0 and ranges like 0,2,5-7") from None
        if hi < lo:
            raise CliError(f"--{what} {text!r}: range {part!r} is empty (LO-HI needs LO <= HI)")
        out.extend(range(lo, hi + 1))
    if not out:
        raise CliError(f"--{what} {text!r}: no values given; e.g. 0,2,5-7")
    return out


def select_checkpoints(wh, runs, algo, env, seeds, steps, sources=("trained",)) -> list[tuple[str, int, str]]:
    """(run_id, step, env) of the chosen checkpoints, in (run_id, step) order.

    --run takes ids or unique prefixes of them (with --seeds, a prefix may match one run
    per seed). --algo/--env take runs of `sources` only (trained by default: derived runs
    share algo, env and seed with their source run and would double the work). Only
    checkpoints with stored parameters can be sampled: runs whose returns were imported
    have none, and are refused by name (--run) or left out (--algo/--env)."""
    where, params = [], []
    if runs:
        if seeds and len(runs) == 1 and not wh.query("SELECT 1 FROM runs WHERE run_id = ?", [runs[0]]).height:
            runs = [resolve_run(wh, runs[0], s, seed_option="--seeds") for s in seeds]
        else:
            runs = [resolve_run(wh, r, seed_option="--seeds") for r in runs]
        where.append(f"c.run_id IN ({', '.join('?' for _ in runs)})")
        params += list(runs)
    else:
        if not (algo and env):
            raise CliError("choose checkpoints with --run RUN_ID, or with --algo and --env")
        where += ["r.algo = ?", "r.env = ?", f"r.source IN ({', '.join('?' for _ in sources)})"]
        params += [algo, env, *sources]
    if seeds:
        where.append(f"r.seed IN ({', '.join('?' for _ in seeds)})")
        params += seeds
    if steps:
        where.append(f"c.step IN ({', '.join('?' for _ in steps)})")
        params += steps
    df = wh.query(
        "SELECT c.run_id, c.step, r.env, c.artifact_path IS NOT NULL AS stored FROM checkpoints c "
        f"JOIN runs r USING (run_id) WHERE {' AND '.join(where)} ORDER BY c.run_id, c.step", params)
    rows = list(df.iter_rows())
    found = [(r, int(s), e) for r, s, e, stored in rows if stored]
    bare = [(r, int(s)) for r, s, _, stored in rows if not stored]
    if runs and bare:
        r, s = bare[0]
        raise CliError(f"run {r} step {s} has no stored checkpoint to sample from (its returns were imported); "
                       "only trained runs can be sampled")
    if not found:
        raise CliError("no checkpoints match " + ", ".join(
            f"{k}={v}" for k, v in dict(run=runs, algo=algo, env=env, seeds=seeds, steps=steps,
                                        source=None if runs else ",".join(sources)).items() if v)
            + (f" ({len(bare)} imported checkpoint(s) without parameters left out)" if bare else ""))
    if runs:
        missing = sorted(set(runs) - {r for r, _, _ in found})
        if missing:
            raise CliError(f"no checkpoints for run(s) {', '.join(missing)}")
    return found


@app.command()
def sample(
    operator: Annotated[str, typer.Option(
        help="Update operator: td3 | sac | ppo[:clip=C,rows=R] | gaussian[:sigma] | action[:sigma] | "
             "init_state[:xF | :factor=F | :abs=A]. ppo alone is retland's operator (grad-norm clip as in training, "
             "one random minibatch, R = random); ppo:clip=0.1,rows=first is the authors' (clip 0.1, the minibatch "
             "of the first 1/num_minibatches of the rollout steps). init_state:xF resets within F times the task's "
             "standard reset range (the paper's unit; plain init_state is x1); init_state:abs=A within ±A. "
             "Legacy init_state:scale=A is absolute, as in ids written before the units were named.")],
    run: Annotated[Optional[list[str]], typer.Option(
        help="Run id or a unique prefix of one (repeatable); all its checkpoints unless --steps. One prefix with "
             "--seeds picks that prefix's run of each seed.")] = None,
    algo: Annotated[Optional[str], typer.Option(help="Select runs by algorithm (with --env).")] = None,
    env: Annotated[Optional[str], typer.Option(help="Select runs by env (with --algo).")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="Training seeds of the runs, e.g. 0,1,5-9.")] = None,
    source: source_option("that --algo/--env select; default trained (derived: stabilize's final policies; "
                          "imported runs have no parameters to sample)") = "trained",
    steps: Annotated[Optional[str], typer.Option(help="Checkpoint env steps, e.g. 50000,150000.")] = None,
    samples: Annotated[int, typer.Option(help=help_of(SampleSettings, "samples"))] = default_of(SampleSettings, "samples"),
    horizon: Annotated[int, typer.Option(help=help_of(SampleSettings, "horizon"))] = default_of(SampleSettings, "horizon"),
    key_seed: Annotated[int, typer.Option(help=help_of(SampleSettings, "key_seed"))] = default_of(SampleSettings, "key_seed"),
    batch_size: Annotated[str, typer.Option(help=help_of(SampleSettings, "batch_size"))] = default_of(SampleSettings, "batch_size"),
    shard: Annotated[str, typer.Option(help=help_of(SampleSettings, "shard"))] = default_of(SampleSettings, "shard"),
    devices: Annotated[str, typer.Option(help=help_of(SampleSettings, "devices"))] = default_of(SampleSettings, "devices"),
    progress: Annotated[bool, typer.Option(
        "--progress/--no-progress",
        help="Show progress: a live bar on a terminal, one plain line at most every 10 s when piped.")] = True,
    warehouse: WarehouseOpt = None,
) -> None:
    """Sample post-update return distributions of checkpoints into the warehouse.

    For each chosen checkpoint and update index i < N: θ_i = U(state, fold_in(key, i)),
    then the deterministic return of π_θ_i from the reference state. Resumable: a rerun
    computes only missing indices. Shards split the chunks of all chosen distributions
    into N contiguous ranges, so array jobs on many machines can share one warehouse.
    Rows are bit-identical however the work is split, on one platform; across platforms
    or chunk sizes the distributions agree statistically, not bit for bit.
    """
    from retland.purd.engine import resolve_devices
    from retland.purd.operators import check_operator, parse_operator
    from retland.purd.sampling import SamplingError, parse_shard, plan_job, sample_checkpoint
    from retland.warehouse import Warehouse

    # Options first, then the warehouse: nothing is read, compiled or written for bad input.
    if samples < 1:
        raise CliError(f"--samples {samples}: give a whole number >= 1")
    if horizon < 1:
        raise CliError(f"--horizon {horizon}: give a whole number of env steps >= 1")
    check_seed(key_seed, "--key-seed")
    batch = count_or_keyword(batch_size, "--batch-size", "auto")
    n_devices = count_or_keyword(devices, "--devices", "all")
    seed_list, step_list = _int_list(seeds, "seeds"), _int_list(steps, "steps")
    sources = parse_sources(source)
    try:  # init_state as a factor resolves per checkpoint's env below; its syntax is checked here
        check_operator(operator, horizon=horizon, seed=key_seed)
    except ValueError as exc:
        raise CliError(f"--operator {operator!r}: {exc}") from None
    wh = Warehouse.open(warehouse, create=False)
    require_writable(wh.root)
    try:
        shard_ij = parse_shard(shard)
        devs = resolve_devices(n_devices)
        chosen = select_checkpoints(wh, run, algo, env, seed_list, step_list, sources)
        specs = {e: parse_operator(operator, env=e, horizon=horizon, seed=key_seed) for _, _, e in chosen}
        plans = plan_job(wh, [(r, s, specs[e]) for r, s, e in chosen], samples, batch_size=batch, shard=shard_ij)
    except SamplingError as exc:
        raise CliError(str(exc)) from None

    total = sum(p.new_rows for p in plans)
    work = [p for p in plans if p.todo]
    operator_ids = ", ".join(sorted({spec.operator_id for spec in specs.values()}))
    err_console.print(escape(
        f"{len(chosen)} distribution(s), operator {operator_ids}, N={samples}, "
        f"shard {shard_ij[0]}/{shard_ij[1]}: {total} new samples in {sum(len(p.todo) for p in work)} "
        f"chunk(s) on {len(devs)} device(s)"), highlight=False, soft_wrap=True)
    results = []
    with progress_bar(total, "sample", unit="samples", rate_scale=horizon, rate_unit="env-steps",
                      enabled=progress and bool(work)) as advance:
        for p in work:
            results.append(sample_checkpoint(wh, p, devices=devs, progress=advance))
    written = sum(x.rows_written for x in results)
    console.print(escape(f"wrote {written} rows ({len(results)} distribution(s) computed, "
                         f"{len(plans) - len(work)} already complete for this shard) into {wh.root}"),
                  highlight=False, soft_wrap=True)
