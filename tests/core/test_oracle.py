"""retland's `brax0013` simulator held to Brax 0.0.13 itself (`make test-oracle`).

`make test-oracle` builds a separate venv with jax 0.4.13 and Brax 0.0.13, writes the
policies to roll out (tests/oracle/export_policies.py), records Brax 0.0.13's behaviour
there in float32 and in float64 (tests/oracle/record.py), and runs this file twice with
RETLAND_ORACLE_DIR pointing at the recording: once as retland runs (float32), once with
JAX_ENABLE_X64=1. Without a recording (plain `make test`) every test here skips.

float64 shows that the computation is the same: start states, single steps and 100-step
open-loop trajectories agree to round-off of float64 (a difference in any mass, inertia,
offset, limit, solver constant or ordering of the solver's passes would show at 1e-6 or
far above). float32 is what runs, and there two programs that order their float operations
differently cannot agree better than Brax 0.0.13 agrees with itself when its inputs move by
one unit in the last place: its position-based velocity update divides position changes by
the substep, so round-off of 1e-7 in a position becomes ~1e-5 in a velocity, and some
tasks (halfcheetah, ant with a moving gait) amplify that over steps. Each float32
comparison therefore holds retland to the issue's target (s0 to 1e-6; one step 1e-5
relative; 100 steps 1e-3; returns within 1%) or, where Brax 0.0.13 cannot meet that
target against itself, to a small multiple of how far it moves under one unit in the last
place (recorded beside each reference as `self`/`jitter`). Closed-loop returns near a
failure are decided by round-off in Brax 0.0.13 itself, so they are compared as a set
(`returns_agree`). docs/method.md §3 gives the residuals measured.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ORACLE = Path(os.environ["RETLAND_ORACLE_DIR"]) if os.environ.get("RETLAND_ORACLE_DIR") else None
if ORACLE is None or not (ORACLE / "reference" / "hopper.npz").exists():
    pytest.skip("no Brax 0.0.13 recording: run `make test-oracle`", allow_module_level=True)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from retland.core.brax0013 import QP, TASKS, make_task  # noqa: E402

X64 = bool(jax.config.jax_enable_x64)
FIELDS = ("pos", "rot", "vel", "ang")
# How many times Brax 0.0.13's own one-ulp movement a float32 difference may be.
OWN_MARGIN = 4.0

float32_only = pytest.mark.skipif(X64, reason="float32 comparison (run without JAX_ENABLE_X64)")
float64_only = pytest.mark.skipif(not X64, reason="float64 comparison (run with JAX_ENABLE_X64=1)")


def reference(task: str) -> dict[str, np.ndarray]:
    return dict(np.load(ORACLE / "reference" / (f"{task}-x64.npz" if X64 else f"{task}.npz")))


def qp_of(ref: dict, prefix: str) -> QP:
    return QP(*(jnp.asarray(ref[f"{prefix}/{f}"]) for f in FIELDS))


def check(got, ref: dict, key: str, tol: float, *, own: str | None = None, what: str = "") -> float:
    """Largest |got - ref[key]|, asserted <= tol·max(1, |ref|) elementwise, or (given
    `own`, the key of Brax 0.0.13's own output under a one-ulp move of its inputs) <=
    OWN_MARGIN times the largest movement of 0.0.13 itself."""
    want = ref[key]
    err = np.abs(np.asarray(got, np.float64) - want)
    if np.all(err <= tol * np.maximum(1.0, np.abs(want))):
        return float(err.max())
    assert own is not None, f"{what} {key}: max difference {err.max():.3g} > {tol:g}"
    moved = float(np.abs(ref[own] - want).max())
    assert err.max() <= OWN_MARGIN * moved, (
        f"{what} {key}: max difference {err.max():.3g} > {tol:g}, and > {OWN_MARGIN:g} x Brax 0.0.13's own "
        f"movement under one ulp ({moved:.3g})")
    return float(err.max())


@pytest.fixture(scope="module", params=TASKS)
def task(request):
    return request.param, make_task(request.param, 0.0), reference(request.param)


def test_start_states(task):
    """s0 (no reset noise: default angles, body lowered onto the floor) and 20 noisy starts
    drawn with numpy: equal to 1e-6 in float32, 1e-12 in float64."""
    name, env, ref = task
    tol = 1e-12 if X64 else 1e-6
    s0 = jax.jit(env.reset)(jax.random.PRNGKey(0))
    for f in FIELDS:
        check(getattr(s0.pipeline_state, f), ref, f"s0/{f}", tol, what=f"{name} s0")
    check(s0.obs, ref, "s0/obs", tol, what=f"{name} s0")
    starts = jax.jit(jax.vmap(env.state_from_joints))(jnp.asarray(ref["starts/joint_angle"]), jnp.asarray(ref["starts/joint_vel"]))
    for f in FIELDS:
        check(getattr(starts.pipeline_state, f), ref, f"starts/{f}", tol, what=f"{name} noisy starts")
    if name != "ant":
        check(starts.obs, ref, "starts/obs", tol, what=f"{name} noisy starts")
        return
    # The ant observes Brax 0.0.13's contact impulses of the start pose. Lowered onto the
    # floor, its lowest foot is left at a penetration of round-off size (±1e-8 in float32,
    # ±3e-17 in float64), and "penetrating or not" decides whether that foot's 60 entries
    # are ~1e-2 or 0: on a few starts a different rounding flips it.
    obs, want = np.asarray(starts.obs, np.float64), ref["starts/obs"]
    check(obs[:, :27], {"body": want[:, :27]}, "body", tol, what="ant noisy starts (body)")
    same = np.all(np.abs(obs[:, 27:] - want[:, 27:]) <= tol, axis=1)
    assert same.sum() >= 17, f"ant noisy starts: contact entries agree on {same.sum()}/20"


def one_step(env, ref):
    template = env.reset(jax.random.PRNGKey(0))
    fn = jax.jit(jax.vmap(lambda qp, a: env.step(template.replace(pipeline_state=qp), a)))
    return fn(qp_of(ref, "single/in"), jnp.asarray(ref["single/action"]))


@float64_only
def test_one_step_is_the_same_computation(task):
    """float64: one env step from 20 states visited under random actions, with random
    actions, agrees to 1e-9 on every state field, the observation and the reward."""
    name, env, ref = task
    out = one_step(env, ref)
    for f in FIELDS:
        check(getattr(out.pipeline_state, f), ref, f"single/out/{f}", 1e-9, what=f"{name} one step")
    check(out.obs, ref, "single/obs", 1e-9, what=f"{name} one step")
    check(out.reward, ref, "single/reward", 1e-9, what=f"{name} one step")
    np.testing.assert_array_equal(np.asarray(out.done), ref["single/done"])


@float32_only
def test_one_step_float32(task):
    """float32: one step within 1e-5 relative, or within a few times Brax 0.0.13's own
    movement when its inputs move by one ulp."""
    name, env, ref = task
    out = one_step(env, ref)
    for f in FIELDS:
        check(getattr(out.pipeline_state, f), ref, f"single/out/{f}", 1e-5, own=f"single/self/{f}",
              what=f"{name} one step")
    check(out.obs, ref, "single/obs", 1e-5, own="single/self/obs", what=f"{name} one step")
    check(out.reward, ref, "single/reward", 1e-5, own="single/self/reward", what=f"{name} one step")
    np.testing.assert_array_equal(np.asarray(out.done), ref["single/done"])


def open_loop(env, actions):
    def run(actions):
        def body(s, a):
            s = env.step(s, a)
            return s, (s.pipeline_state, s.obs, s.reward, s.done)
        return jax.lax.scan(body, env.reset(jax.random.PRNGKey(0)), actions)[1]
    return jax.jit(run)(jnp.asarray(actions))


@float64_only
@pytest.mark.parametrize("plan", ["zero", "sine"])
def test_open_loop_is_the_same_computation(task, plan):
    """float64: 100 open-loop steps within 1e-6, or (halfcheetah, whose open loop is
    chaotic in Brax 0.0.13 itself: a change of 1e-16 grows tenfold a step) within a few
    times how far Brax 0.0.13 moves when its start moves by one ulp."""
    _check_open_loop(task, plan, 1e-6, "self")


@float32_only
@pytest.mark.parametrize("plan", ["zero", "sine"])
def test_open_loop_float32(task, plan):
    """float32: 100 open-loop steps within 1e-3, or within a few times how far Brax 0.0.13
    moves when its state is moved by one ulp (at random, up or down) after every step, the
    largest over the recorded draws."""
    _check_open_loop(task, plan, 1e-3, "jitter")


def _check_open_loop(task, plan: str, tol: float, own: str) -> None:
    """Every state field and the observation of the open loop `plan` within `tol` of Brax
    0.0.13's, or within a few times its own movement recorded under open/<plan>/<own>."""
    name, env, ref = task
    qps, obs, reward, done = open_loop(env, ref[f"open/{plan}/action"])
    for f in FIELDS:
        check(getattr(qps, f), ref, f"open/{plan}/{f}", tol, own=f"open/{plan}/{own}/{f}",
              what=f"{name} open loop {plan}")
    check(obs, ref, f"open/{plan}/obs", tol, own=f"open/{plan}/{own}/obs", what=f"{name} open loop {plan}")


def policy_params(task: str):
    data = np.load(ORACLE / "policies" / f"{task}.npz")
    n = len({k.split("/")[1] for k in data.files})
    return {"MLP_0": {f"Dense_{i}": {"kernel": jnp.asarray(data[f"layer/{i}/kernel"]),
                                     "bias": jnp.asarray(data[f"layer/{i}/bias"])} for i in range(n)}}


def returns_agree(ours, want, owns, what: str) -> None:
    """Returns of closed-loop episodes are chaotic near a failure: whether a hopper on the
    edge falls is decided by round-off, in Brax 0.0.13 itself (moved by one ulp once or
    after every step, it falls on other policies than it does unmoved). So the returns are
    held to 0.0.13 as a set:
    - falls (a return below half the median, where the median is positive) are as frequent
      as in Brax 0.0.13's runs, unmoved and moved (`owns` [K, P]): Fisher's exact test,
      p >= 0.01;
    - where neither retland's nor 0.0.13's episode fell, the mean distance to 0.0.13's
      return is at most OWN_MARGIN times that of 0.0.13's own moved runs (and never needs
      to be below 1% of the mean return)."""
    from scipy.stats import fisher_exact

    ours, want = np.asarray(ours, np.float64), np.asarray(want, np.float64)
    owns = np.asarray(owns, np.float64).reshape(-1, len(want))
    cut = 0.5 * float(np.median(want)) if np.median(want) > 0 else -np.inf
    theirs = np.concatenate([want[None], owns])
    table = [[int((ours < cut).sum()), int((ours >= cut).sum())],
             [int((theirs < cut).sum()), int((theirs >= cut).sum())]]
    p = fisher_exact(table).pvalue
    assert p >= 0.01, f"{what}: falls retland {table[0][0]}/{len(ours)} vs Brax 0.0.13 {table[1][0]}/{theirs.size}"
    up = (ours >= cut) & (want >= cut)
    mine = float(np.mean(np.abs(ours - want)[up]))
    up_own = (owns >= cut) & (want >= cut)
    own = float(np.mean(np.abs(owns - want)[up_own])) if up_own.any() else 0.0
    floor = 0.01 * float(np.mean(np.abs(want)))
    assert mine <= max(floor, OWN_MARGIN * own), (
        f"{what}: mean |retland - Brax 0.0.13| {mine:.1f} > max(1% {floor:.1f}, {OWN_MARGIN:g} x Brax 0.0.13's own "
        f"{own:.1f}); retland {np.round(ours, 1)} vs {np.round(want, 1)}")


@float32_only
def test_policy_returns_through_retland(task):
    """Policies rolled out by retland's own rollout on the paper variant (the path every
    sample takes), 1000 steps: from s0 (hopper: the shipped checkpoint and its first 32 td3
    post-update samples; the other tasks: untrained actors) and, for the first policy, from
    20 noisy starts. Each set agrees with Brax 0.0.13 as closely as Brax 0.0.13 agrees with
    itself under one-ulp moves (`returns_agree`); and at least 18 of the noisy starts
    within 1% where 0.0.13 itself keeps at least 20 of them within 1% under a one-ulp move."""
    from retland.core.envs import make_env, reference_state
    from retland.core.networks import DeterministicActor
    from retland.core.rollout import rollout

    name, env, ref = task
    params = policy_params(name)
    actor = DeterministicActor(env.action_size)
    policy = lambda p, o: actor.apply({"params": p}, o)  # noqa: E731
    paper = make_env(name, "brax0013", 0.0, variant="paper")
    s0 = reference_state(name, "brax0013", variant="paper")
    ret = np.asarray(jax.jit(jax.vmap(lambda p: rollout(paper, policy, p, s0, 1000)))(params).ret)
    owns = np.concatenate([ref["policy/s0_self_return"][None], ref["policy/s0_jitter_return"]])
    returns_agree(ret, ref["policy/s0_return"], owns, f"{name} from s0")

    first = jax.tree.map(lambda x: x[0], params)
    starts = jax.vmap(env.state_from_joints)(jnp.asarray(ref["starts/joint_angle"]), jnp.asarray(ref["starts/joint_vel"]))
    noisy = np.asarray(jax.jit(jax.vmap(lambda s: rollout(paper, policy, first, s, 1000)))(starts).ret)
    want, own = ref["policy/starts_return"], ref["policy/starts_self_return"]
    returns_agree(noisy, want, own[None], f"{name} from 20 noisy starts")

    def within(r):
        return np.abs(r - want) <= 0.01 * np.maximum(np.abs(want), 1.0)
    if within(own).all():  # 0.0.13 reproduces itself there: the count applies
        assert within(noisy).sum() >= 18, f"{name}: {within(noisy).sum()}/20 noisy starts within 1%"
