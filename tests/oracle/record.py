"""Record Brax 0.0.13's own behaviour as reference data for retland's `brax0013` simulator.

Runs in the oracle venv (`make test-oracle` builds it: jax 0.4.13 and Brax 0.0.13, see
tests/oracle/requirements.txt), never in retland's: it imports Brax 0.0.13 and numpy only.
tests/core/test_oracle.py holds retland's simulator to what this script writes.

What it records, per task (ant, halfcheetah, hopper, walker2d), into one .npz per task:
- `s0/*`: the start state with no reset noise (default joint angles, zero velocities,
  the body lowered onto the floor) and its observation;
- `starts/*`: 20 noisy starts: joint angles default + U(±b) and joint velocities U(±b),
  b the task's own reset bound, drawn here with numpy (JAX's PRNG bits differ between
  jax 0.4 and today's, so keys could not reproduce them) and recorded as inputs;
- `single/*`: single env steps from states visited under random actions, with random
  actions: the state before, the action, and the state, observation, reward and done after;
- `open/<name>/*`: 100-step open-loop trajectories from s0 (zero action; a fixed sinusoid);
- `policy/*`: 1000-step returns and episode lengths of the deterministic MLP policies in
  the inputs file (retland's TD3 actor: relu hidden layers, tanh output), from s0 and, for
  the first policy, from every noisy start.

Brax 0.0.13 against itself: `single/self/*`, `open/<name>/self/*` and
`policy/s0_self_return`, `policy/starts_self_return` repeat the same computations from inputs moved by one unit in
the last place (every state value to the next float up); `open/<name>/jitter/*` moves
the state by one unit in the last place after every step, up or down at random, in
JITTERS independent draws (fixed numpy draws; `[JITTERS, T, ...]`): round-off of the size
a reimplementation that orders its float operations differently makes at each step. One
draw is not enough: a discrete event (a joint reaching its limit, a foot sticking or
slipping) that round-off flips one way in some draws and not in others moves a whole
trajectory. `policy/s0_jitter_return` [POLICY_JITTERS, P] does the same to the
policies' episodes from s0. How far 0.0.13's own outputs move then is how far any
float32 reimplementation can be held to it: its position-based velocity update divides
position changes by the substep (5 ms for hopper), which turns round-off into velocity
differences of ~1e-5, and some tasks (halfcheetah) amplify that over steps.

With --x64 (JAX_ENABLE_X64 set by the script) everything but the policies is recorded in
float64 into `<task>-x64.npz`: at that precision round-off no longer hides a difference
in the model, so agreement there shows the same computation.

A QP is stored as four arrays `pos [.., B, 3]`, `rot [.., B, 4]` (w, x, y, z),
`vel [.., B, 3]`, `ang [.., B, 3]`, B counting the floor body as 0.0.13 does.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

import jax
import jax.numpy as jnp
from jax import core  # noqa: E402

X64 = "--x64" in sys.argv
if X64:
    jax.config.update("jax_enable_x64", True)
FLOAT = np.float64 if X64 else np.float32

from brax import jumpy  # noqa: E402

# Brax 0.0.13's jumpy decides between numpy and jax.numpy with `_in_jit`, which asks for
# a sublevel above 0: on jax 0.4 `jit` traces with a dynamic trace instead, so the check
# must accept that too (else the physics runs in numpy on tracers and fails).
_old_in_jit = jumpy._in_jit


def _in_jit() -> bool:
    return _old_in_jit() or core.thread_local_state.trace_state.trace_stack.dynamic.level > 0


jumpy._in_jit = _in_jit

from brax import envs  # noqa: E402

TASKS = ("ant", "halfcheetah", "hopper", "walker2d")
# Each task's own reset bound (its reset() draws U(±b) for joint angles and velocities).
RESET_BOUND = {"ant": 0.1, "halfcheetah": 0.1, "hopper": 0.005, "walker2d": 0.005}
# Tasks whose observation reads the contact info of sys.info at reset.
INFO_OBS = ("ant", "halfcheetah")
N_STARTS = 20
JITTERS = 10
POLICY_JITTERS = 4
HORIZON = 1000


def qp_dict(qp, prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}/{f}": np.asarray(getattr(qp, f), FLOAT) for f in ("pos", "rot", "vel", "ang")}


def as_float(tree):
    """Every floating leaf as FLOAT."""
    def cast(a):
        a = jnp.asarray(a)
        return a.astype(FLOAT) if jnp.issubdtype(a.dtype, jnp.floating) else a
    return jax.tree_util.tree_map(cast, tree)


def ulp_up(tree):
    """Every float moved to the next representable value up."""
    return jax.tree_util.tree_map(lambda a: jnp.nextafter(a, jnp.asarray(np.inf, a.dtype)), tree)


def ulp_signed(tree, signs):
    """Every float moved one representable value towards the sign (±1) given for it."""
    return jax.tree_util.tree_map(lambda a, d: jnp.nextafter(a, jnp.where(d > 0, np.inf, -np.inf).astype(a.dtype)),
                                  tree, signs)


def qp_from(arrays: dict, prefix: str, index=None):
    from brax.physics.base import QP

    take = (lambda a: a) if index is None else (lambda a: a[index])
    return QP(*(jnp.asarray(take(arrays[f"{prefix}/{f}"])) for f in ("pos", "rot", "vel", "ang")))


class Oracle:
    """One Brax 0.0.13 task and the jitted functions the recording needs."""

    def __init__(self, name: str):
        self.name = name
        self.env = envs.get_environment(name)
        sys = self.env.sys
        self.n_joint = sys.num_joint_dof
        self.default_angle = np.asarray(jax.jit(sys.default_angle)(), FLOAT)

        def from_joints(angle, vel):
            qp = sys.default_qp(joint_angle=angle, joint_velocity=vel)
            obs = (self.env._get_obs(qp, sys.info(qp)) if name in INFO_OBS else self.env._get_obs(qp))
            zero = jnp.zeros(())
            return envs.State(qp, obs, zero, zero, {})

        self.from_joints = jax.jit(from_joints)
        reset = jax.jit(self.env.reset)(jax.random.PRNGKey(0))
        self.obs_size = int(reset.obs.shape[-1])
        self.metrics = dict(reset.metrics)

    def state(self, qp):
        """A State around `qp` (step reads only the qp and the metrics dict)."""
        zero = jnp.zeros(())
        return envs.State(qp, jnp.zeros((self.obs_size,)), zero, zero, dict(self.metrics))


def record_task(name: str, policies: dict[str, np.ndarray] | None, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    o = Oracle(name)
    out: dict[str, np.ndarray] = {"default_angle": o.default_angle}
    n, b = o.n_joint, RESET_BOUND[name]

    s0 = o.from_joints(jnp.asarray(o.default_angle), jnp.zeros(n))
    out.update(qp_dict(s0.qp, "s0"))
    out["s0/obs"] = np.asarray(s0.obs, FLOAT)

    angles = (o.default_angle + rng.uniform(-b, b, (N_STARTS, n))).astype(FLOAT)
    vels = rng.uniform(-b, b, (N_STARTS, n)).astype(FLOAT)
    out["starts/joint_angle"], out["starts/joint_vel"] = angles, vels
    starts = jax.vmap(o.from_joints)(jnp.asarray(angles), jnp.asarray(vels))
    out.update(qp_dict(starts.qp, "starts"))
    out["starts/obs"] = np.asarray(starts.obs, FLOAT)

    # Single steps: from 4 noisy starts, 40 steps under random actions; the state every
    # 8 steps is a test state, stepped once with a fresh random action.
    act_size = o.env.action_size
    metrics = o.metrics
    steps_fn = jax.jit(lambda s, a: o.env.step(s, a))
    tests_in, tests_act = [], []
    for k in range(4):
        state = jax.tree_util.tree_map(lambda x: x[k], starts).replace(metrics=metrics)
        for t in range(40):
            if t % 8 == 0:
                tests_in.append(jax.device_get(state.qp))
                tests_act.append(rng.uniform(-1, 1, act_size).astype(FLOAT))
            state = steps_fn(state, jnp.asarray(rng.uniform(-1, 1, act_size), FLOAT))
    qp_in = jax.tree_util.tree_map(lambda *x: np.stack(x), *tests_in)
    acts = np.stack(tests_act)
    one = jax.jit(jax.vmap(lambda qp, a: o.env.step(o.state(qp), a)))
    after = one(qp_in, jnp.asarray(acts))
    after_self = one(ulp_up(jax.tree_util.tree_map(jnp.asarray, qp_in)), jnp.asarray(acts))
    out.update(qp_dict(after_self.qp, "single/self"))
    out["single/self/obs"] = np.asarray(after_self.obs, FLOAT)
    out["single/self/reward"] = np.asarray(after_self.reward, FLOAT)
    out.update(qp_dict(qp_in, "single/in"))
    out["single/action"] = acts
    out.update(qp_dict(after.qp, "single/out"))
    out["single/obs"] = np.asarray(after.obs, FLOAT)
    out["single/reward"] = np.asarray(after.reward, FLOAT)
    out["single/done"] = np.asarray(after.done, FLOAT)

    # Open-loop trajectories from s0.
    t = np.arange(100, dtype=FLOAT)[:, None]
    phase = np.linspace(0, math.pi, act_size, dtype=FLOAT)[None, :]
    plans = {"zero": np.zeros((100, act_size), FLOAT),
             "sine": (0.8 * np.sin(2 * math.pi * t / 25.0 + phase)).astype(FLOAT)}
    s0m = as_float(s0.replace(metrics=metrics))

    def body(s, a):
        s = as_float(o.env.step(s, a))  # ant's step returns float32 done/metrics even under x64
        return s, (s.qp, s.obs, s.reward, s.done)
    def jitter_body(s, x):
        a, signs = x
        s, y = body(s, a)
        return s.replace(qp=ulp_signed(s.qp, signs)), y

    trajectory = jax.jit(lambda s, a: jax.lax.scan(body, s, a)[1])
    jittered = lambda s, a, signs: jax.lax.scan(jitter_body, s, (a, signs))[1]  # noqa: E731
    for plan, actions in plans.items():
        qps, obs, rew, done = trajectory(s0m, jnp.asarray(actions))
        self_qps, self_obs, _, _ = trajectory(s0m.replace(qp=ulp_up(s0m.qp)), jnp.asarray(actions))
        out.update(qp_dict(self_qps, f"open/{plan}/self"))
        out[f"open/{plan}/self/obs"] = np.asarray(self_obs, FLOAT)
        signs = jax.tree_util.tree_map(
            lambda a: jnp.asarray(rng.choice([-1.0, 1.0], (JITTERS, len(actions)) + a.shape), FLOAT), s0m.qp)
        jit_qps, jit_obs, _, _ = jax.jit(jax.vmap(jittered, in_axes=(None, None, 0)))(s0m, jnp.asarray(actions), signs)
        out.update(qp_dict(jit_qps, f"open/{plan}/jitter"))
        out[f"open/{plan}/jitter/obs"] = np.asarray(jit_obs, FLOAT)
        out[f"open/{plan}/action"] = actions
        out.update(qp_dict(qps, f"open/{plan}"))
        out[f"open/{plan}/obs"] = np.asarray(obs, FLOAT)
        out[f"open/{plan}/reward"] = np.asarray(rew, FLOAT)
        out[f"open/{plan}/done"] = np.asarray(done, FLOAT)

    if policies and not X64:
        batched = {k: jnp.broadcast_to(v, (N_STARTS,)) for k, v in metrics.items()}
        out.update(record_policies(o, policies, s0m, as_float(starts.replace(metrics=batched))))
    return out


def actor(params: list[tuple[jnp.ndarray, jnp.ndarray]], obs):
    x = obs
    for i, (w, b) in enumerate(params):
        x = x @ w + b
        x = jnp.tanh(x) if i == len(params) - 1 else jax.nn.relu(x)
    return x


def episode(env, params, state, jitter_key=None):
    """Undiscounted return over HORIZON steps, rewards after the first done not counted
    (the terminating step's is), and the episode length. With `jitter_key`, the state is
    moved by one ulp, up or down at random, after every step."""
    def body(carry, t):
        s, alive, ret, length = carry
        s = env.step(s, actor(params, s.obs))
        if jitter_key is not None:
            leaves, tree = jax.tree_util.tree_flatten(s.qp)
            keys = jax.random.split(jax.random.fold_in(jitter_key, t), len(leaves))
            signs = [jax.random.rademacher(k, x.shape).astype(x.dtype) for k, x in zip(keys, leaves)]
            s = s.replace(qp=ulp_signed(s.qp, jax.tree_util.tree_unflatten(tree, signs)))
        ret = ret + jnp.where(alive, s.reward, 0.0)
        length = length + alive.astype(jnp.int32)
        alive = alive & (s.done < 0.5)
        return (s, alive, ret, length), None
    (_, _, ret, length), _ = jax.lax.scan(body, (state, jnp.array(True), jnp.zeros(()), jnp.zeros((), jnp.int32)),
                                          jnp.arange(HORIZON))
    return ret, length


def record_policies(o: Oracle, policies: dict[str, np.ndarray], s0, starts) -> dict[str, np.ndarray]:
    layers = sorted({k.split("/")[1] for k in policies if k.startswith("layer")}, key=int)
    stacked = [(jnp.asarray(policies[f"layer/{i}/kernel"]), jnp.asarray(policies[f"layer/{i}/bias"]))
               for i in layers]
    from_s0 = jax.jit(jax.vmap(lambda p: episode(o.env, p, s0)))
    ret, length = from_s0(stacked)
    self_ret, _ = jax.jit(jax.vmap(lambda p: episode(o.env, p, s0.replace(qp=ulp_up(s0.qp)))))(stacked)
    jitter = jax.jit(jax.vmap(jax.vmap(lambda p, k: episode(o.env, p, s0, k), in_axes=(0, None)), in_axes=(None, 0)))
    jitter_ret, _ = jitter(stacked, jax.random.split(jax.random.PRNGKey(7), POLICY_JITTERS))
    first = [(w[0], b[0]) for w, b in stacked]
    noisy = jax.jit(jax.vmap(lambda s: episode(o.env, first, s)))
    nret, nlength = noisy(starts)
    self_nret, _ = noisy(starts.replace(qp=ulp_up(starts.qp)))
    return {"policy/s0_return": np.asarray(ret, FLOAT), "policy/s0_length": np.asarray(length, np.int32),
            "policy/s0_self_return": np.asarray(self_ret, FLOAT),
            "policy/s0_jitter_return": np.asarray(jitter_ret, FLOAT),
            "policy/starts_return": np.asarray(nret, FLOAT),
            "policy/starts_self_return": np.asarray(self_nret, FLOAT),
            "policy/starts_length": np.asarray(nlength, np.int32)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for <task>.npz")
    ap.add_argument("--policies", type=Path, default=None,
                    help="folder of <task>.npz policy files (layer/<i>/kernel [P, in, out], layer/<i>/bias [P, out])")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--x64", action="store_true", help="record in float64 (no policies) into <task>-x64.npz")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(args.tasks.split(",")):
        t0 = time.time()
        pfile = args.policies / f"{name}.npz" if args.policies else None
        policies = dict(np.load(pfile)) if pfile is not None and pfile.exists() else None
        data = record_task(name, policies, args.seed + i)
        data["meta/brax_version"] = np.asarray("0.0.13")
        data["meta/jax_version"] = np.asarray(jax.__version__)
        np.savez(args.out / (f"{name}-x64.npz" if X64 else f"{name}.npz"), **data)
        print(f"{name}: {len(data)} arrays in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
