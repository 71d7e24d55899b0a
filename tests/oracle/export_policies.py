"""Write the policies the Brax 0.0.13 oracle rolls out (run in retland's venv).

For hopper: the shipped example checkpoint's actor (policy 0) and the actors of its first
32 td3 post-update samples (policies 1..32: θ_j = U(state, key_j) exactly as `retland
sample --operator td3` computes them). For the other tasks: three freshly initialised
TD3 actors (keys 0, 1, 2). One file per task, `<task>.npz`, with `layer/<i>/kernel
[P, in, out]` and `layer/<i>/bias [P, out]` (retland's DeterministicActor: ReLU hidden
layers, tanh output), which tests/oracle/record.py reads without retland.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from retland.core.brax0013 import TASKS, make_task
from retland.core.networks import DeterministicActor, init_params

TD3_SAMPLES = 32


def layers(params) -> dict[str, np.ndarray]:
    """{layer/<i>/kernel, layer/<i>/bias} of a (stacked) DeterministicActor params tree."""
    mlp = params["MLP_0"]
    out = {}
    for i in range(len(mlp)):
        out[f"layer/{i}/kernel"] = np.asarray(mlp[f"Dense_{i}"]["kernel"], np.float32)
        out[f"layer/{i}/bias"] = np.asarray(mlp[f"Dense_{i}"]["bias"], np.float32)
    return out


def example_policies() -> dict[str, np.ndarray]:
    """The shipped td3-hopper checkpoint's actor and its first TD3_SAMPLES td3 updates."""
    from retland import shipped
    from retland.purd.operators import parse_operator, sample_key
    from retland.purd.sampling import checkpoint_program
    from retland.train.checkpoints import load_checkpoint
    from retland.warehouse import Warehouse

    with tempfile.TemporaryDirectory(prefix="retland-oracle-") as tmp:
        wh = Warehouse.open(Path(tmp) / "wh")
        run_id, step = shipped.add(wh, shipped.DEFAULT)
        ckpt = load_checkpoint(wh, run_id, step)
        spec = parse_operator("td3", env=ckpt.env)
        program, op_state = checkpoint_program(spec, ckpt)
        theta = jax.jit(jax.vmap(lambda j: program.make_params(op_state, sample_key(spec.base_key, j), j)))(
            jnp.arange(TD3_SAMPLES))
        actor = program.policy.agent.actor_params(ckpt.agent_state)
    stacked = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), actor, theta)
    return layers(jax.device_get(stacked))


def random_policies(task: str, n: int = 3) -> dict[str, np.ndarray]:
    t = make_task(task)
    actor = DeterministicActor(t.action_size)
    params = [init_params(actor, jax.random.PRNGKey(i), jnp.zeros((t.observation_size,))) for i in range(n)]
    return layers(jax.tree.map(lambda *x: np.stack(x), *params))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for <task>.npz")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for task in TASKS:
        data = example_policies() if task == "hopper" else random_policies(task)
        np.savez(args.out / f"{task}.npz", **data)
        print(f"{task}: {data['layer/0/kernel'].shape[0]} policies")


if __name__ == "__main__":
    main()
