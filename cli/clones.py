"""`retland clones`: behaviour clones beside their TD3 teachers (the paper's Appendix A.7,
Fig. 22), from the view bc_pairs (retland.analyses.clones)."""
from __future__ import annotations

from typing import Annotated, Optional

import typer

from retland.cli.app import CliError, FormatOpt, OutputFormat, OutputOpt, WarehouseOpt, app, console, emit


@app.command()
def clones(
    clone: Annotated[str, typer.Option(
        help="Which clone of each BC run is compared with its teacher: last (its last checkpoint, the default) "
             "or all (every sampled clone checkpoint, one pair each).")] = "last",
    where: Annotated[Optional[str], typer.Option(
        help="SQL condition on the view bc_pairs (env, teacher_run_id, teacher_step, clone_run_id, clone_step, "
             "operator, clone_ltp, teacher_ltp, …), e.g. \"teacher_step >= 50000\".", show_default=False)] = None,
    pairs: Annotated[bool, typer.Option(
        "--show-pairs", help="Print the pairs themselves (teacher and clone statistics side by side) instead.")] = False,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples for the CIs (0: none).")] = 2000,
    seed: Annotated[int, typer.Option("--bootstrap-seed", help="Bootstrap seed.")] = 0,
    fmt: FormatOpt = OutputFormat.table,
    output: OutputOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Fig. 22: do behaviour clones inherit their teacher's post-update returns? Per env,
    Pearson's r between teacher (td3 operator) and clone (bc operator) of the
    distributions' means and of their LTPs, with 95% bootstrap CIs over pairs; and the
    mean LTP of the BC policies and of the TD3 teachers with 95% stratified bootstrap
    CIs (env 'all': strata = envs). Pairs come from `retland train --algo bc --teacher
    RUN@STEP` runs sampled with --operator bc, and their teachers sampled with
    --operator td3 at the same --horizon and key seed."""
    from retland.analyses.clones import CLONES, CloneError, compare_clones, read_pairs
    from retland.warehouse import Warehouse

    if clone not in CLONES:
        raise CliError(f"--clone {clone!r}: choose last (each BC run's last checkpoint) or all")
    if not 0 <= bootstrap <= 1_000_000:
        raise CliError(f"--bootstrap {bootstrap}: give a whole number in [0, 1000000]")
    wh = Warehouse.open(warehouse, create=False)
    rows = read_pairs(wh, clone, where)
    if pairs:
        emit(rows, fmt, output, title=f"teachers and their clones ({'last clone' if clone == 'last' else 'every clone'})")
        return
    try:
        result = compare_clones(rows, reps=bootstrap, seed=seed, clone=clone)
    except CloneError as exc:
        raise CliError(str(exc)) from None
    if fmt is OutputFormat.table and output is None:
        emit(result.correlations, fmt, None, title="Pearson r between teacher and clone, per env (95% bootstrap CI "
                                                   "over pairs)")
        emit(result.ltp, fmt, None, title="mean LTP of BC and TD3 policies (95% stratified bootstrap CI)")
        console.print(f"clone = {clone}; {bootstrap} resamples, seed {seed}")
        return
    import polars as pl

    both = pl.concat([result.correlations.with_columns(table=pl.lit("correlation")),
                      result.ltp.with_columns(table=pl.lit("mean_ltp"))], how="diagonal")
    emit(both, fmt, output, title="Fig. 22")
