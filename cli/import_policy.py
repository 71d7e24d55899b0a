"""`retland import-policy`: a policy trained outside retland, added as a run."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from retland.cli.app import CliError, WarehouseOpt, app, check_seed, console, require_writable


class PolicyFormat(str, Enum):
    brax = "brax"


class BraxKind(str, Enum):
    ppo = "ppo"
    sac = "sac"


def _hidden(text: str | None) -> tuple[int, ...] | None:
    """'32,32,32,32' -> (32, 32, 32, 32)."""
    if text is None:
        return None
    try:
        sizes = tuple(int(p) for p in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or any(s < 1 for s in sizes):
        raise CliError(f"--hidden {text!r}: give the policy's hidden layer sizes as whole numbers >= 1, e.g. 32,32")
    return sizes


@app.command("import-policy")
def import_policy(
    fmt: Annotated[PolicyFormat, typer.Argument(
        metavar="FORMAT", help="Who wrote the policy: brax (brax.training's PPO or SAC).", show_default=False)],
    path: Annotated[Path, typer.Argument(
        metavar="PATH", help="A brax.training checkpoint folder (one step's folder, or the folder brax saved every step's into: "
             "then --step, default the latest), or the file brax.io.model.save_params wrote.", show_default=False)],
    env: Annotated[str, typer.Option(
        help="The task the policy was trained on: ant | halfcheetah | hopper | walker2d.", show_default=False)],
    variant: Annotated[str, typer.Option(
        help="Task rules of the rollouts. brax.training trains on brax's own rules, so the default is brax; "
             "paper gives the paper's Brax 0.0.13 rules.")] = "brax",
    backend: Annotated[Optional[str], typer.Option(
        help="Physics backend of the rollouts: positional | generalized | spring | mjx. Default: the one "
             "brax.envs.get_environment builds the env with when given none (generalized for all four tasks), "
             "so returns are measured in the simulator the policy was trained in.", show_default=False)] = None,
    name: Annotated[Optional[str], typer.Option(
        help="The run's algo label, which also starts its run id: a letter, then letters, digits, _ or . "
             "Default: brax_ppo or brax_sac.", show_default=False)] = None,
    step: Annotated[Optional[int], typer.Option(
        help="Checkpoint: which step folder to read (default the latest) and the run's step. Params file: the "
             "run's step (default 0).", show_default=False)] = None,
    kind: Annotated[Optional[BraxKind], typer.Option(
        help="The agent that wrote a params file (required for one; a checkpoint's config names it).",
        show_default=False)] = None,
    hidden: Annotated[Optional[str], typer.Option(
        help="Params file: the policy's hidden layer sizes. Default brax's: ppo 32,32,32,32; sac 256,256.",
        show_default=False)] = None,
    activation: Annotated[Optional[str], typer.Option(
        help="Params file: the hidden layers' activation, by brax's name (swish, relu, tanh, elu, …). Default "
             "brax's: ppo swish; sac relu. The params cannot show it: a wrong one imports a different policy.",
        show_default=False)] = None,
    normalize: Annotated[Optional[bool], typer.Option(
        "--normalize/--no-normalize",
        help="Params file: whether the agent normalised observations (normalize_observations= of its train). "
             "Default brax's: off for both. The file holds the statistics either way.", show_default=False)] = None,
    horizon: Annotated[int, typer.Option(
        help="Rollout length of the run's distributions unless a command says otherwise (brax.training's "
             "default episode_length is 1000).")] = 1000,
    seed: Annotated[int, typer.Option(
        help="The seed the policy was trained with, as recorded (for --seeds selections); it changes no "
             "rollout.")] = 0,
    warehouse: WarehouseOpt = None,
) -> None:
    """Add a policy trained with brax.training (PPO or SAC) to the warehouse as a run.

    retland keeps brax's deterministic policy: observations normalised with the agent's
    running statistics (if it normalised them), the policy network, and the mode of the
    action distribution (tanh of its mean; the mean itself for brax's plain normal one),
    as brax's make_inference_fn(params,
    deterministic=True) computes it, bit for bit. The policy network's weights are the
    parameters θ that update operators move; the observation statistics stay fixed.

    A checkpoint folder records its network (ppo_network_config.json or
    sac_network_config.json beside the orbax data). A params file is a bare pickle: give
    --kind, and --hidden, --activation and --normalize when the agent did not use brax's
    defaults. Reading a pickle runs code from it: import only files you trust. Sizes
    that do not fit the params, and observation or action sizes that are not the env's,
    are refused with the layer and shapes.

    Update operators for an imported run: gaussian, action and init_state work from
    `retland sample`. The td3, sac and ppo operators need retland's own training state
    (optimizer, replay buffer, critics), which a brax policy does not have; to sample
    your own update, pass it to the Python API retland.sample_update.

    Example: retland import-policy brax ckpts/hopper_ppo --env hopper
    """
    from retland.ingest import brax as brax_import
    from retland.core.envs import check_backend, check_env, check_variant

    # Options first, then the policy, then the warehouse: nothing is written for bad input.
    try:
        check_env(env)
        check_variant(variant)
        if backend is not None:
            check_backend(backend)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if step is not None and step < 0:
        raise CliError(f"--step {step}: give a whole number >= 0")
    check_seed(seed, "--seed", 2**31 - 1)
    if horizon < 1:
        raise CliError(f"--horizon {horizon}: give a whole number of env steps >= 1")
    sizes = _hidden(hidden)
    try:
        policy = brax_import.read(path, kind=None if kind is None else kind.value, hidden_sizes=sizes,
                                  activation=activation, normalize=normalize, step=step)
        backend = backend or brax_import.brax_default_backend(env)
        brax_import.check_env_fit(policy, env, backend, variant)
    except brax_import.BraxImportError as exc:
        raise CliError(str(exc)) from None
    run_step = step if step is not None else (policy.step if policy.step is not None else 0)
    name = name if name is not None else f"brax_{policy.kind}"
    require_writable(warehouse)
    import retland
    from retland.warehouse import resolve_root

    root = resolve_root(warehouse)
    # add_policy checks everything (the name too) before it creates or writes the warehouse
    run_id = retland.add_policy(root, env=env, apply=brax_import.APPLY, params=policy.params, name=name,
                                step=run_step, apply_kwargs=policy.apply_kwargs, variant=variant, backend=backend,
                                seed=seed, horizon=horizon)
    console.print(escape(f"added {policy.what} as run {run_id} ({env}, variant {variant}, backend {backend}, "
                         f"step {run_step}) in {root}"), highlight=False, soft_wrap=True)
    console.print(escape(f"sample it: retland sample --run {run_id} --operator gaussian --samples 1000 -w {root}"),
                  highlight=False, soft_wrap=True)
