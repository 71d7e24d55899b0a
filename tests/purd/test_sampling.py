"""The sampling engine: rows are a function of (distribution, update index, B) only.

Plumbing tests use a tiny actor (16 hidden units) on hopper with a 40-step horizon and
gaussian(σ = 0.05), so returns vary across samples; one compiled chunk program (B = 8)
is shared by every test of the module, and the subprocess tests find it in the
persistent compilation cache.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import cli_env
from retland.core.envs import env_dims
from retland.core.networks import DeterministicActor, init_params
from retland.purd import engine, sampling
from retland.purd.engine import ActorPolicy, NonFiniteReturnError, SamplingError, program_for
from retland.purd.operators import parse_operator
from retland.purd.sampling import sample_distribution
from retland.warehouse import Warehouse

ENV, BACKEND, VARIANT, H, HIDDEN = "hopper", "positional", "paper", 40, (16,)
OP, N, B = "gaussian:0.05", 48, 8
RUN, STEP = "init-hopper-s0", 0
COLUMNS = ["update_index", "return", "discounted_return", "episode_length", "terminated", "chunk_size"]
HERE = Path(__file__).resolve().parent


def build(op: str = OP):
    """(spec, program, θ) of the plumbing tests: a fresh tiny actor."""
    obs_size, action_size = env_dims(ENV, BACKEND, variant=VARIANT)
    theta = init_params(DeterministicActor(action_size, HIDDEN), jax.random.PRNGKey(0), jnp.zeros(obs_size))
    spec = parse_operator(op, horizon=H, env=ENV)
    return spec, program_for(spec, ENV, BACKEND, ActorPolicy(action_size, HIDDEN), variant=VARIANT), theta


def sample(wh, n=N, batch_size=B, op=OP, **kw):
    spec, program, theta = build(op)
    return sample_distribution(wh, run_id=RUN, step=STEP, spec=spec, program=program, op_state=theta,
                               n_samples=n, batch_size=batch_size, flush_seconds=0, **kw)


def rows(wh, op=OP):
    operator_id = parse_operator(op, horizon=H, env=ENV).operator_id
    return wh.query(
        f"SELECT {', '.join(COLUMNS)} FROM post_update_returns WHERE run_id = ? AND operator_id = ? "
        "ORDER BY update_index", [RUN, operator_id])


def run_script(code: str, env_extra: dict | None = None, **popen) -> subprocess.Popen:
    env = cli_env({"TF_CPP_MIN_LOG_LEVEL": "3", **(env_extra or {})})
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env["PYTHONPATH"]])  # the child imports test_sampling
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, text=True, **popen)


@pytest.fixture(scope="module")
def children(tmp_path_factory):
    """The subprocess jobs, started first so their JAX start-up and compiles overlap
    with the in-process ones: a 2-device job, and a job that waits for the parent after
    each flushed chunk so the parent can SIGKILL it at a known point."""
    two_dev, killed = tmp_path_factory.mktemp("two_devices"), tmp_path_factory.mktemp("killed")
    procs = {
        "two_devices": (two_dev, run_script(f"""
            import json, jax
            from retland.warehouse import Warehouse
            import test_sampling as t
            assert jax.local_device_count() == 2
            r = t.sample(Warehouse.open({str(two_dev)!r}), devices="all")
            print(json.dumps(sorted(set(r.chunk_devices.values()))))
            """, {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}, stdout=subprocess.PIPE)),
        "killed": (killed, run_script(f"""
            import sys
            from retland.warehouse import Warehouse
            import test_sampling as t
            def progress(n):
                print("chunk", flush=True)
                sys.stdin.readline()
            t.sample(Warehouse.open({str(killed)!r}), progress=progress)
            """, stdout=subprocess.PIPE, stdin=subprocess.PIPE)),
    }
    yield procs
    for _, proc in procs.values():
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, children):
    """All N samples in one job on one device: the reference every split must equal."""
    wh = Warehouse.open(tmp_path_factory.mktemp("baseline"))
    result = sample(wh)
    assert (result.chunks_computed, result.rows_written) == (N // B, N)
    return wh, rows(wh)


def test_a_distribution_has_one_row_per_index_and_its_operator(baseline):
    wh, df = baseline
    assert df["update_index"].to_list() == list(range(N))
    assert set(df["chunk_size"].to_list()) == {B}
    assert np.isfinite(df["return"].to_numpy()).all()
    assert df["return"].std() > 0.1  # a real distribution, not one policy N times
    ops = wh.query("SELECT * FROM operators")
    assert ops["operator_id"].to_list() == ["gaussian[sigma=0.05,h=40,seed=0]"]
    assert json.loads(ops["params"][0])["sigma"] == 0.05


def test_each_flush_records_its_timing_and_the_views_turn_it_into_an_estimate(baseline, tmp_path):
    import datetime

    from retland.analyses.estimates import current_device, sampling_rate

    wh, _ = baseline
    t = wh.query("SELECT * FROM chunk_timings ORDER BY recorded_at")
    # sample() flushes every chunk (flush_seconds=0): one timing row per chunk, the first
    # holding the compile, every one committed with its rows
    assert t.height == N // B and t["chunks"].to_list() == [1] * (N // B)
    assert t["includes_compile"].to_list() == [True] + [False] * (N // B - 1)
    assert set(t["env_steps"].to_list()) == {B * H}
    assert (t["seconds"] > 0).all() and t["device"][0] == current_device()
    assert set(t["operator_id"].to_list()) == {"gaussian[sigma=0.05,h=40,seed=0]"}
    # the rate needs the run's task: register it in a copy, then read the estimate
    import shutil

    copy = Warehouse.open(shutil.copytree(wh.root, tmp_path / "wh"))
    copy.append("runs", [dict(run_id=RUN, algo="init", env=ENV, seed=0, backend=BACKEND, variant=VARIANT,
                              source="added", created_at=datetime.datetime.now(datetime.timezone.utc))])
    rate = sampling_rate(copy, algo="init", env=ENV, variant=VARIANT, backend=BACKEND, device=current_device(),
                         operator_kind="gaussian")
    steady = t.filter(~t["includes_compile"])
    assert rate.env_steps_per_second == pytest.approx(steady["env_steps"].sum() / steady["seconds"].sum())
    assert rate.overhead_seconds >= 0 and "gaussian sampling of init hopper" in rate.measured_on
    assert rate.seconds(10 * B * H) == pytest.approx(rate.overhead_seconds + 10 * B * H / rate.env_steps_per_second)
    assert sampling_rate(copy, algo="init", env=ENV, variant=VARIANT, backend=BACKEND, device="gpu:none") is None


def test_a_rerun_computes_nothing_and_a_bigger_n_only_the_missing_indices(baseline, tmp_path):
    wh0, full = baseline
    assert sample(wh0).chunks_computed == 0
    wh = Warehouse.open(tmp_path)
    sample(wh, n=N - 5)  # chunk 5 is computed but only its first 3 rows stored
    grown = sample(wh, n=N)
    assert (grown.chunks_computed, grown.rows_written) == (1, 5)
    assert rows(wh).equals(full)


def test_a_conflicting_batch_size_is_refused_and_auto_reuses_the_recorded_one(baseline):
    wh, full = baseline
    with pytest.raises(SamplingError, match="--batch-size 8"):
        sample(wh, n=N + 8, batch_size=16)
    assert rows(wh).equals(full)
    plan = sampling.plan_distribution(wh, RUN, STEP, build()[0], N + 8, batch_size="auto")
    assert (plan.batch_size, plan.todo) == (B, [6])


def test_shards_together_equal_one_job(baseline, tmp_path):
    _, full = baseline
    wh = Warehouse.open(tmp_path)
    first, second = sample(wh, shard="0/2"), sample(wh, shard="1/2")
    assert (first.chunks_computed, second.chunks_computed) == (3, 3)
    assert sample(wh, shard="1/2").chunks_computed == 0
    assert rows(wh).equals(full)


def test_non_finite_returns_are_refused_naming_the_sample(baseline, tmp_path, monkeypatch):
    real = engine.run_chunks

    def poisoned(*args, **kwargs):
        for res in real(*args, **kwargs):
            if res.chunk == 2:
                res.ret = res.ret.copy()
                res.ret[3] = np.nan
            yield res

    monkeypatch.setattr(engine, "run_chunks", poisoned)
    wh = Warehouse.open(tmp_path)
    with pytest.raises(NonFiniteReturnError, match=r"run init-hopper-s0 step 0 .*update_index \[19\]"):
        sample(wh)
    assert rows(wh)["update_index"].to_list() == list(range(2 * B))  # chunks 0, 1 kept; 2 refused


def test_two_devices_give_the_rows_of_one(baseline, children):
    _, full = baseline
    path, proc = children["two_devices"]
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0
    assert json.loads(out.strip().splitlines()[-1]) == [0, 1]  # both devices computed chunks
    assert rows(Warehouse.open(path)).equals(full)


def test_a_job_killed_half_way_and_resumed_gives_the_rows_of_one(baseline, children):
    _, full = baseline
    path, proc = children["killed"]
    for k in range(3):
        assert proc.stdout.readline().strip() == "chunk"
        if k < 2:
            proc.stdin.write("\n")
            proc.stdin.flush()
    proc.send_signal(signal.SIGKILL)  # while it waits after its third chunk
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    parts = list((path / "tables" / "post_update_returns").rglob("*.parquet"))
    assert sum(pq.read_table(p).num_rows for p in parts) == 3 * B  # whole files, whole chunks
    wh = Warehouse.open(path)
    assert rows(wh)["update_index"].to_list() == list(range(3 * B))
    resumed = sample(wh)
    assert (resumed.chunks_computed, resumed.rows_written) == (N // B - 3, N - 3 * B)
    assert rows(wh).equals(full)


def test_another_chunk_size_gives_the_same_distribution(tmp_path):
    """Across B the arithmetic differs, so single samples may too; the law must not.

    How far single samples move depends on the CPU and XLA build (returns are chaotic
    in θ), so the test assumes the worst — the two sets are independent draws of one
    law — and only asks what then holds with high probability: a two-sample KS test
    that does not reject at the 0.1% level, and means within 4 standard errors. Both
    still fail for a B-dependent bias (a shift of about 0.4 standard deviations or
    more, at n = 240) or spread."""
    from scipy.stats import ks_2samp

    n = 240
    small = Warehouse.open(tmp_path / "b8")
    wide = Warehouse.open(tmp_path / "b48")
    sample(small, n=n, batch_size=8)
    sample(wide, n=n, batch_size=48)
    da, db = rows(small), rows(wide)
    assert da["update_index"].to_list() == db["update_index"].to_list() == list(range(n))
    assert set(da["chunk_size"]) == {8} and set(db["chunk_size"]) == {48}
    a, b = da["return"].to_numpy(), db["return"].to_numpy()
    assert np.isfinite(a).all() and np.isfinite(b).all()
    assert a.std() > 0.1
    assert ks_2samp(a, b).pvalue > 0.001
    assert abs(a.mean() - b.mean()) < 4 * np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / n)


@pytest.mark.slow
@pytest.mark.parametrize("op", ["action:0.2", "init_state:abs=0.05"])
def test_rollout_perturbations_end_to_end(tmp_path, op):
    wh = Warehouse.open(tmp_path)
    sample(wh, n=16, op=op)
    df = rows(wh, op)
    assert df.height == 16 and df["return"].std() > 0


def test_td3_operator_is_one_hand_written_adam_step_of_the_actor():
    """U_td3(state, key) = one Adam step on -mean(min(Q1, Q2)(s, π(s))) over a uniform
    minibatch of rows [0, size), critics frozen, Adam state restored."""
    import optax

    from retland.agents import get_agent, td3
    from retland.core.networks import TwinCritic
    from retland.core.replay import Transition
    from retland.train.config import TD3Config

    cfg = TD3Config(hidden=(8,), batch_size=32)
    agent = get_agent("td3", cfg)
    obs_size, action_size = env_dims(ENV, BACKEND, variant=VARIANT)
    state = td3.init(cfg, jax.random.PRNGKey(1), obs_size, action_size)
    cap, size = 100, 60
    k = jax.random.split(jax.random.PRNGKey(2), 3)
    replay = Transition(jax.random.normal(k[0], (cap, obs_size)), jax.random.uniform(k[1], (cap, action_size)),
                        jnp.zeros(cap), jax.random.normal(k[2], (cap, obs_size)), jnp.ones(cap))
    # a restored Adam state that is not the initial one
    actor, opt_state = state.actor_params, state.actor_opt_state
    for _ in range(2):
        actor, opt_state = td3.actor_step(cfg, actor, opt_state, state.critic_params, replay.obs[:32])
    op_state = td3.OperatorState(actor, opt_state, state.critic_params, replay, jnp.int32(size))

    spec = parse_operator("td3", seed=3)
    key_i = jax.random.fold_in(jax.random.PRNGKey(3), 11)
    make_params = engine.program_for(spec, ENV, BACKEND, engine.AgentPolicy(agent), agent, variant=VARIANT).make_params
    got = jax.jit(make_params)(op_state, key_i, 11)

    idx = jax.random.randint(key_i, (cfg.batch_size,), 0, size)
    assert int(idx.max()) < size
    obs = replay.obs[idx]

    def loss(p):
        a = DeterministicActor(action_size, (8,)).apply({"params": p}, obs)
        q = TwinCritic((8,)).apply({"params": state.critic_params}, obs, a)
        return -jnp.mean(jnp.minimum(q[:, 0], q[:, 1]))

    g = jax.jit(jax.grad(loss))(actor)
    adam = opt_state[0]
    assert isinstance(adam, optax.ScaleByAdamState) and int(adam.count) == 2
    t = 3
    b1, b2, eps, lr = 0.9, 0.999, 1e-8, cfg.learning_rate

    def step(p, g, m, v):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        return p - lr * (m / (1 - b1**t)) / (jnp.sqrt(v / (1 - b2**t)) + eps)

    want = jax.tree.map(step, actor, g, adam.mu, adam.nu)
    for w, o, x in zip(jax.tree.leaves(want), jax.tree.leaves(got), jax.tree.leaves(actor)):
        np.testing.assert_allclose(np.asarray(o), np.asarray(w), rtol=1e-5, atol=1e-7)
        assert np.abs(np.asarray(o - x)).max() > 1e-5  # the step moved θ


@pytest.mark.slow
def test_cli_samples_trained_checkpoints_and_resumes(tmp_path, capsys, monkeypatch):
    from conftest import run_cli
    from retland.train.config import TD3Config, TrainConfig
    from retland.train.job import train

    root = tmp_path / "wh"
    cfg = TrainConfig(env=ENV, seeds=1, total_steps=200, checkpoints=(100, 200), eval_every=100, horizon=50,
                      agent=TD3Config(hidden=(16,), learning_starts=100, batch_size=32))
    train(cfg, root)
    args = ["sample", "--warehouse", str(root), "--algo", "td3", "--env", ENV, "--operator", "td3",
            "--samples", "20", "--horizon", "30", "--batch-size", "8"]
    for shard in ("1/2", "0/2"):
        code, out, err = run_cli(capsys, monkeypatch, *args, "--shard", shard)
        assert code == 0, err
    code, out, err = run_cli(capsys, monkeypatch, *args)
    assert code == 0 and "wrote 0 rows" in out, out + err
    wh = Warehouse.open(root)
    df = wh.query("SELECT step, count(*) AS n, min(update_index) AS lo, max(update_index) AS hi "
                  "FROM post_update_returns GROUP BY step ORDER BY step")
    assert df.rows() == [(100, 20, 0, 19), (200, 20, 0, 19)]
