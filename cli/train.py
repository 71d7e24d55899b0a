"""`retland train`: TD3/SAC/PPO checkpoints on Brax tasks, N seeds in one job; BC clones
of a TD3 checkpoint (--algo bc --teacher RUN@STEP)."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from retland.cli.app import CliError, WarehouseOpt, app, console, int_list, renamed, require_writable
from retland.cli.progress import progress_bar
from retland.config.registry import ALGOS


Algo = Enum("Algo", {a: a for a in ALGOS}, type=str)  # the registry's algorithms, as choices


# TrainConfig fields set by a command-line option: errors in them name the option.
_OPTION_OF = {"env": "--env", "seeds": "--seeds", "seed": "--seed", "total_steps": "--total-steps",
              "checkpoints": "--checkpoints", "eval_every": "--eval-every", "backend": "--backend",
              "variant": "--variant"}


def _error_text(err: dict, given: set[str] = frozenset(), source: str | None = None) -> str:
    """One pydantic error as 'agent.batch_size: Input should be … (got -4)', or with the
    command-line option ('--seeds: …') when the value came from one."""
    loc = [str(p) for p in err.get("loc", ()) if p not in ALGOS]
    msg = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    if loc and err.get("type") != "value_error" and isinstance(value, (int, float, str)):
        msg += f" (got {value!r})"
    if loc and loc[0] in given:
        return f"{_OPTION_OF[loc[0]]}: {msg}"
    where = ".".join(loc)
    if where and source:
        where = f"{source}: {where}"
    return f"{where}: {msg}" if where else msg


def config_error(exc, given: set[str] = frozenset(), source: str | None = None) -> str:
    """A pydantic ValidationError of a TrainConfig as one line naming every bad field."""
    return "; ".join(_error_text(e, given, source) for e in exc.errors())


@app.command()
def train(
    algo: Annotated[Optional[Algo], typer.Option(help="Algorithm (default td3, or the config file's).")] = None,
    env: Annotated[Optional[str], typer.Option(
        help="ant | halfcheetah | hopper | walker2d (default hopper), or a DeepMind Control task with the dmc "
             "extra: cheetah-run, hopper-hop, hopper-stand, walker-stand, walker-walk, walker-run, "
             "humanoid-stand, humanoid-walk, humanoid-run.")] = None,
    seeds: Annotated[Optional[int], typer.Option(help="Seeds trained together, vmapped (default 20).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="First seed; seed i uses PRNGKey(seed + i).")] = None,
    steps: Annotated[Optional[int], typer.Option(
        "--total-steps", help="Env steps per seed (default: td3/sac 1e6, ppo 6e7; ppo on a MinAtar game 1e7).")] = None,
    old_steps: Annotated[Optional[int], typer.Option("--steps", hidden=True)] = None,
    checkpoints: Annotated[Optional[str], typer.Option(
        help="Env steps to checkpoint at, e.g. 50000,150000 or 5e4,1.5e5 (default 50k,150k,…,950k; ppo: 10 "
             "evenly spaced).")] = None,
    eval_every: Annotated[Optional[int], typer.Option(help="Env steps between learning-curve points.")] = None,
    backend: Annotated[Optional[str], typer.Option(
        help="Physics: brax0013 (Brax 0.0.13's simulator; the paper variant's, and its default) or, for variant "
             "brax, one of brax 0.14's positional (default), generalized, spring, mjx. DeepMind Control tasks run "
             "on mjx (MuJoCo's JAX physics); MinAtar games on gymnax.")] = None,
    variant: Annotated[Optional[str], typer.Option(
        help="Task: paper (default; the paper's Brax 0.0.13 robots, simulator, terminations, rewards and "
             "observations, e.g. hopper ends only when its torso drops below 0.7) or brax (brax 0.14's own "
             "robots and rules: hopper also ends when tilted past 0.2 rad). DeepMind Control tasks: dmc, their "
             "own rules (the default for them); MinAtar games: minatar.")] = None,
    teacher: Annotated[Optional[str], typer.Option(
        help="With --algo bc: the TD3 checkpoint RUN@STEP to clone (RUN: a run id or a unique prefix; STEP: one of "
             "its checkpoints). The clone trains on the teacher's logged data up to STEP with the teacher's actions, "
             "on the teacher's task; --total-steps and --checkpoints count gradient steps (default 1e6, 10 evenly "
             "spaced). The run records its teacher (runs.parent_run_id/parent_step).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="TOML file with TrainConfig fields and an \\[agent] table.")] = None,
    store_states: Annotated[Optional[bool], typer.Option(
        "--store-states", help="TD3/SAC on a brax task: store each replay row's simulator state too, so "
                               "`retland sample --start replay:K` can start rollouts there (about 2x the replay's "
                               "memory and disk for the paper's hopper; docs/method.md). Training is unchanged.",
        show_default=False)] = None,
    resume: Annotated[Optional[str], typer.Option(
        help="Job id (run id without -s<seed>) to continue from its last checkpoint "
             "(from step 0 if it was killed before its first).")] = None,
    time_limit: Annotated[Optional[str], typer.Option(
        "--time-limit", help="Wall time this command may train, as SLURM's --time writes it: minutes, MIN:SS, H:MM:SS "
                             "or D-HH:MM:SS (3:50 is 3 minutes 50 seconds; 3:50:00 is 3 hours 50), "
                             "counted from the start of training, compiles included. After each checkpoint the job "
                             "goes on only if the next checkpoint (or the end) fits, at the rate it has measured; "
                             "otherwise it stops there and prints the command that continues it (--resume). Give a "
                             "few minutes less than a cluster task's limit.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    warehouse: WarehouseOpt = None,
) -> None:
    """Train SEEDS seeds of ALGO on ENV; write runs, learning curves and checkpoints to
    the warehouse. Defaults are the paper's Table 1 (docs/method.md §4). --algo bc
    --teacher RUN@STEP clones a TD3 checkpoint (the paper's Appendix A.7; one seed by
    default), on its teacher's task."""
    import tomllib

    from pydantic import ValidationError

    from retland.train.request import TrainRequest

    steps = renamed(steps, old_steps, None, "--total-steps", "--steps")
    limit = None
    if time_limit is not None:
        from retland.config.requests import parse_duration

        try:
            limit = parse_duration(time_limit, "--time-limit")
        except ValueError as exc:
            raise CliError(str(exc)) from None
        if limit <= 0:
            raise CliError(f"--time-limit {time_limit!r}: give a wall time above zero")
    # Everything given is checked before the warehouse is opened or anything compiled.
    if resume is not None:
        given = [n.replace("_", "-") for n, v in dict(
            algo=algo, env=env, seeds=seeds, seed=seed, total_steps=steps, checkpoints=checkpoints,
            eval_every=eval_every, backend=backend, variant=variant, teacher=teacher,
            config=config, store_states=store_states).items() if v is not None]
        if given:
            raise CliError(f"--resume continues a job with its recorded config; drop {', '.join('--' + g for g in given)}")
        request = TrainRequest(resume=resume, time_limit=limit)
    else:
        if config is not None and not config.is_file():
            raise CliError(f"--config {config}: no such file")
        request = TrainRequest(algo=algo.value if algo else None, env=env, seeds=seeds, seed=seed, total_steps=steps,
                               checkpoints=int_list(checkpoints, "--checkpoints", minimum=1), eval_every=eval_every,
                               backend=backend, variant=variant, config=config, teacher=teacher,
                               store_states=store_states, time_limit=limit)
        from retland.train.bc import TeacherError

        try:
            if request.algo == "bc" and request.teacher is not None:
                from retland.train.bc import parse_teacher

                from retland.warehouse import Warehouse

                parse_teacher(request.teacher)  # a malformed text is refused before the warehouse is read
                request.train_config(Warehouse.open(warehouse, create=False))
            else:
                request.train_config()
        except TeacherError as exc:
            raise CliError(str(exc)) from None
        except ValidationError as exc:
            given = {k for k, v in request.overrides().items() if v is not None}
            raise CliError(config_error(exc, given, config.name if config else None)) from None
        except tomllib.TOMLDecodeError as exc:
            raise CliError(f"--config {config}: not valid TOML: {exc}") from None
        except UnicodeDecodeError:
            raise CliError(f"--config {config}: not a text (TOML) file") from None
    execute(request, warehouse, progress)


def execute(request, warehouse: Path | None, progress: bool = True) -> None:
    """Run a checked TrainRequest (`retland.train.request.run_request`) and print what
    `retland train` prints; `retland study` calls this for its train stages."""
    from functools import partial

    from retland.train.job import resume_config
    from retland.train.request import run_request
    from retland.warehouse import Warehouse

    if request.resume is not None:
        resume_config(Warehouse.open(warehouse, create=False), request.resume)  # an unknown job changes nothing
    require_writable(warehouse)
    wh = Warehouse.open(warehouse)

    started = {}

    def header(cfg) -> None:
        started["algo"], started["steps"] = cfg.algo, cfg.steps
        unit = "gradient steps" if cfg.algo == "bc" else "steps"
        if cfg.algo == "bc":
            console.print(f"cloning teacher {cfg.agent.teacher_run_id}@{cfg.agent.teacher_step} "
                          f"({cfg.agent.dataset_size:,} logged rows, relabelled with its actions)")
        console.print(f"[bold]{cfg.algo}[/] on [bold]{cfg.env}[/] ({cfg.variant} task rules, {cfg.backend}), "
                      f"{cfg.seeds} seeds x "
                      f"{cfg.steps:,} {unit}; checkpoints at {', '.join(f'{s:,}' for s in cfg.checkpoint_steps)}")

    result = run_request(wh, request, progress=partial(progress_bar, enabled=progress), on_start=header)
    if result.resumed_from == 0:
        console.print(f"job {result.job_id} had no checkpoint (killed before its first one): restarted from step 0")
    if result.time_limited:
        import shlex

        from retland.config.requests import duration_text

        resume_from = max(result.checkpoints, default=result.resumed_from or 0)
        again = ["retland", "train", "--resume", result.job_id, "--time-limit", duration_text(request.time_limit)]
        if warehouse is not None:
            again += ["-w", str(warehouse)]
        # seed groups (a device that cannot hold every seed) resume each from its own last checkpoint
        where = (f"its checkpoint at step {resume_from:,}" if result.seed_group >= len(result.run_ids)
                 else "each seed group's last checkpoint")
        console.print(f"job [bold]{result.job_id}[/] stopped by --time-limit at step {result.steps:,} of "
                      f"{started['steps']:,}; it resumes from {where}. Continue with:")
        console.print(f"  {shlex.join(again)}", highlight=False, soft_wrap=True)
        return
    final = result.curve.get(result.steps)
    console.print(f"job [bold]{result.job_id}[/]: {len(result.run_ids)} runs, {result.steps:,} steps, "
                  f"{result.env_steps_per_s:,.0f} {'gradient' if started.get('algo') == 'bc' else 'env'}-steps/s"
                  + (f", final eval return mean {final.mean():.1f}" if final is not None else ""))
    console.print(f"runs: {result.run_ids[0]} … {result.run_ids[-1]}")
