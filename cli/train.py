"""`retland train`: TD3/SAC/PPO checkpoints on Brax tasks, N seeds in one job."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from retland.cli.app import CliError, WarehouseOpt, app, console


class Algo(str, Enum):
    td3 = "td3"
    sac = "sac"
    ppo = "ppo"


def _steps_list(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(float(x)) for x in text.split(",") if x.strip())
    except ValueError:
        raise CliError(f"--checkpoints wants comma-separated env steps, got {text!r}") from None


def _error_text(err: dict) -> str:
    where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("td3", "sac", "ppo"))
    msg = err["msg"].removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


@app.command()
def train(
    algo: Annotated[Optional[Algo], typer.Option(help="Algorithm (default td3, or the config file's).")] = None,
    env: Annotated[Optional[str], typer.Option(help="ant | halfcheetah | hopper | walker2d (default hopper).")] = None,
    seeds: Annotated[Optional[int], typer.Option(help="Seeds trained together, vmapped (default 20).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="First seed; seed i uses PRNGKey(seed + i).")] = None,
    steps: Annotated[Optional[int], typer.Option(help="Env steps per seed (default: td3/sac 1e6, ppo 6e7).")] = None,
    checkpoints: Annotated[Optional[str], typer.Option(
        help="Comma-separated env steps to checkpoint at (default 50k,150k,…,950k; ppo: 10 evenly spaced).")] = None,
    eval_every: Annotated[Optional[int], typer.Option(help="Env steps between learning-curve points.")] = None,
    backend: Annotated[Optional[str], typer.Option(help="Brax physics backend (default positional).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML file with TrainConfig fields and an \\[agent] table.")] = None,
    resume: Annotated[Optional[str], typer.Option(
        help="Job id (run id without -s<seed>) to continue from its last checkpoint "
             "(from step 0 if it was killed before its first).")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    warehouse: WarehouseOpt = None,
) -> None:
    """Train SEEDS seeds of ALGO on ENV; write runs, learning curves and checkpoints to
    the warehouse. Defaults are METHOD.md Table 1."""
    from retland.config import load_train_config
    from retland.training import resume_config, train as run_training
    from retland.warehouse import Warehouse

    wh = Warehouse.open(warehouse)
    if resume is not None:
        given = [n for n, v in dict(algo=algo, env=env, seeds=seeds, seed=seed, steps=steps, checkpoints=checkpoints,
                                    eval_every=eval_every, backend=backend, config=config).items() if v is not None]
        if given:
            raise CliError(f"--resume continues a job with its recorded config; drop {', '.join('--' + g for g in given)}")
        cfg = resume_config(wh, resume)
    else:
        from pydantic import ValidationError

        try:
            cfg = load_train_config(
                config, algo=algo.value if algo else None, env=env, seeds=seeds, seed=seed, total_steps=steps,
                checkpoints=_steps_list(checkpoints), eval_every=eval_every, backend=backend)
        except ValidationError as exc:
            raise CliError("; ".join(_error_text(e) for e in exc.errors())) from None
    console.print(f"[bold]{cfg.algo}[/] on [bold]{cfg.env}[/] ({cfg.backend}), {cfg.seeds} seeds x "
                  f"{cfg.steps:,} steps; checkpoints at {', '.join(f'{s:,}' for s in cfg.checkpoint_steps)}")
    result = run_training(cfg, wh, progress=progress, resume=resume)
    if result.resumed_from == 0:
        console.print(f"job {result.job_id} had no checkpoint (killed before its first one): restarted from step 0")
    final = result.curve.get(result.steps)
    console.print(f"job [bold]{result.job_id}[/]: {len(result.run_ids)} runs, {result.steps:,} steps, "
                  f"{result.env_steps_per_s:,.0f} env-steps/s"
                  + (f", final eval return mean {final.mean():.1f}" if final is not None else ""))
    console.print(f"runs: {result.run_ids[0]} … {result.run_ids[-1]}")
