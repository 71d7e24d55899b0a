"""retland's brax0013 simulator against Brax 0.0.13: the residual tables of BENCHMARKS.md.

    python benchmarks/oracle.py ORACLE_DIR        (ORACLE_DIR as `make test-oracle` leaves it: .oracle)

Reads the recordings tests/oracle/record.py made in the oracle venv and prints, as
Markdown:
1. per task and comparison, the largest difference between retland and Brax 0.0.13
   (float32 and float64) next to how far Brax 0.0.13 moves against itself when its inputs
   move by one unit in the last place (float32);
2. the policies' 1000-step returns: the shipped td3-hopper checkpoint from s0 and from
   20 noisy starts, and its first 32 td3 post-update samples (mean, std, share below half
   the checkpoint's own return), in retland's paper variant and in Brax 0.0.13.
The float64 rows run in a child process with JAX_ENABLE_X64=1.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

FIELDS = ("pos", "rot", "vel", "ang")


def residuals(root: Path, x64: bool) -> list[str]:
    import jax
    import jax.numpy as jnp

    from retland.core.brax0013 import QP, TASKS, make_task

    rows = []
    for name in TASKS:
        ref = dict(np.load(root / "reference" / (f"{name}-x64.npz" if x64 else f"{name}.npz")))
        env = make_task(name, 0.0)
        s0 = jax.jit(env.reset)(jax.random.PRNGKey(0)).pipeline_state
        template = env.reset(jax.random.PRNGKey(0))
        qp_in = QP(*(jnp.asarray(ref[f"single/in/{f}"]) for f in FIELDS))
        out = jax.jit(jax.vmap(lambda qp, a: env.step(template.replace(pipeline_state=qp), a)))(
            qp_in, jnp.asarray(ref["single/action"]))

        def run(actions):
            def body(s, a):
                s = env.step(s, a)
                return s, s.pipeline_state
            return jax.lax.scan(body, template, actions)[1]
        run = jax.jit(run)
        opens = {plan: run(jnp.asarray(ref[f"open/{plan}/action"])) for plan in ("zero", "sine")}

        def err(got, key):
            return float(np.abs(np.asarray(got, np.float64) - ref[key]).max())

        def own(key, other):
            return f" ({float(np.abs(ref[other] - ref[key]).max()):.1e})" if other in ref and not x64 else ""

        s0_err = max(err(getattr(s0, f), f"s0/{f}") for f in FIELDS)
        cells = [name, "float64" if x64 else "float32", f"{s0_err:.1e}"]
        for f in ("pos", "vel", "ang"):
            cells.append(f"{err(getattr(out.pipeline_state, f), f'single/out/{f}'):.1e}"
                         f"{own(f'single/out/{f}', f'single/self/{f}')}")
        for plan in ("zero", "sine"):
            cells.append(f"{err(opens[plan].pos, f'open/{plan}/pos'):.1e}"
                         f"{own(f'open/{plan}/pos', f'open/{plan}/jitter/pos')}")
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def policy_table(root: Path) -> list[str]:
    import jax
    import jax.numpy as jnp

    from retland.core.brax0013 import make_task
    from retland.core.envs import make_env, reference_state
    from retland.core.networks import DeterministicActor
    from retland.core.rollout import rollout

    ref = dict(np.load(root / "reference" / "hopper.npz"))
    data = np.load(root / "policies" / "hopper.npz")
    n = len({k.split("/")[1] for k in data.files})
    params = {"MLP_0": {f"Dense_{i}": {"kernel": jnp.asarray(data[f"layer/{i}/kernel"]),
                                       "bias": jnp.asarray(data[f"layer/{i}/bias"])} for i in range(n)}}
    env = make_env("hopper", "brax0013", 0.0, variant="paper")
    actor = DeterministicActor(3)
    policy = lambda p, o: actor.apply({"params": p}, o)  # noqa: E731
    s0 = reference_state("hopper", "brax0013", variant="paper")
    ours = jax.jit(jax.vmap(lambda p: rollout(env, policy, p, s0, 1000)))(params)
    first = jax.tree.map(lambda x: x[0], params)
    starts = jax.vmap(make_task("hopper", 0.0).state_from_joints)(jnp.asarray(ref["starts/joint_angle"]),
                                                                   jnp.asarray(ref["starts/joint_vel"]))
    noisy = jax.jit(jax.vmap(lambda s: rollout(env, policy, first, s, 1000)))(starts)
    r_ours, l_ours = np.asarray(ours.ret), np.asarray(ours.episode_length)
    r_ref, l_ref = ref["policy/s0_return"], ref["policy/s0_length"]
    n_ours, n_ref = np.asarray(noisy.ret), ref["policy/starts_return"]

    def sample_stats(r):
        return f"mean {r.mean():.1f}, std {r.std():.1f}, falls (< half the median) {np.sum(r < 0.5 * np.median(r))}"

    moved = np.concatenate([ref["policy/s0_self_return"][None], ref["policy/s0_jitter_return"]])[:, 1:]

    return [
        "| the shipped td3-hopper checkpoint | retland `paper` (brax0013) | Brax 0.0.13 |",
        "| --- | --- | --- |",
        f"| from s0 | {r_ours[0]:.1f}, {l_ours[0]} steps | {r_ref[0]:.1f}, {l_ref[0]} steps |",
        f"| 20 noisy starts | mean {n_ours.mean():.1f}, {np.sum(np.asarray(noisy.episode_length) == 1000)}/20 reach 1000 | "
        f"mean {n_ref.mean():.1f}, {np.sum(ref['policy/starts_length'] == 1000)}/20 reach 1000 |",
        f"| noisy starts within 1% of 0.0.13 | {int(np.sum(np.abs(n_ours - n_ref) <= 0.01 * np.abs(n_ref)))}/20 | |",
        f"| {len(r_ours) - 1} td3 post-update samples | {sample_stats(r_ours[1:])} | {sample_stats(r_ref[1:])} |",
        f"| the same, Brax 0.0.13 moved by one ulp ({len(moved)} runs) | | falls "
        f"{', '.join(str(int(np.sum(m < 0.5 * np.median(r_ref[1:])))) for m in moved)} |",
        f"| samples within 1% of 0.0.13 | {int(np.sum(np.abs(r_ours[1:] - r_ref[1:]) <= 0.01 * np.abs(r_ref[1:])))}"
        f"/{len(r_ours) - 1} | |",
    ]


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    root = Path(sys.argv[1])
    if "--policies-only" in sys.argv:
        print("\n".join(policy_table(root)))
        return
    if "--x64-rows" in sys.argv:
        print("\n".join(residuals(root, True)))
        return
    print("Largest |retland − Brax 0.0.13| (in brackets, float32: Brax 0.0.13 against itself when its inputs, or for "
          "the 100-step columns its state after every step, move by one unit in the last place)\n")
    print("| task | precision | s0 | one step: pos | vel | ang | 100 steps, zero action: pos | sine: pos |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(residuals(root, False)), flush=True)
    x64 = subprocess.run([sys.executable, __file__, str(root), "--x64-rows"], capture_output=True, text=True,
                         env={**os.environ, "JAX_ENABLE_X64": "1"})
    print(x64.stdout.rstrip() if x64.returncode == 0 else f"(float64 rows failed: {x64.stderr.strip()[-300:]})")
    if (root / "policies" / "hopper.npz").exists():
        print()
        print("\n".join(policy_table(root)))


if __name__ == "__main__":
    main()
