"""Training, checkpoints and update operators of the agents, on tiny configs.

One small TD3 job (2 seeds, 20-step episodes, 16-unit nets) is trained once per module
and shared; compiled chunk functions are cached in-process, so the other jobs here
(stopped/resumed, shifted seeds) reuse them.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from retland.agents import get_agent, td3
from retland.train.checkpoints import from_nested, list_checkpoints, load_checkpoint, to_nested
from retland.train.config import TD3Config, TrainConfig, agent_config, load_train_config
from retland.train.job import train
from retland.train.program import abstract_seed_state, init_states, make_chunk_fn

TINY_TD3 = TrainConfig(
    env="hopper", seeds=2, total_steps=120, checkpoints=(60, 120), eval_every=60, horizon=20,
    agent=TD3Config(hidden=(16, 16), batch_size=8, learning_starts=40, buffer_size=120),
)


def leaves_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def seed_slice(tree, i):
    return jax.tree.map(lambda x: x[i], tree)


@pytest.fixture(scope="module")
def wh(tmp_path_factory):
    from retland.warehouse import Warehouse

    return Warehouse.open(tmp_path_factory.mktemp("agents") / "wh")


@pytest.fixture(scope="module")
def td3_job(wh):
    return train(TINY_TD3, wh)


# ---- training writes what it promises -------------------------------------------------

def test_training_records_runs_curve_and_checkpoints(wh, td3_job):
    runs = wh.query("SELECT run_id, algo, env, backend, seed FROM runs WHERE run_id LIKE ? ORDER BY seed",
                    [td3_job.job_id + "%"])
    assert runs["run_id"].to_list() == td3_job.run_ids
    assert set(runs["backend"]) == {"brax0013"} and runs["seed"].to_list() == [0, 1]
    for rid in td3_job.run_ids:
        assert list_checkpoints(wh, rid) == [60, 120]
        steps = wh.query("SELECT step FROM evaluations WHERE run_id = ? ORDER BY step", [rid])["step"]
        assert steps.to_list() == [0, 60, 120]
    sizes = wh.query("SELECT step, replay_size FROM checkpoints WHERE run_id = ? ORDER BY step",
                     [td3_job.run_ids[0]])
    assert sizes["replay_size"].to_list() == [60, 120]
    # the curve logged is the deterministic return of each seed's own policy
    assert td3_job.curve[120].shape == (2,) and td3_job.curve[120][0] != td3_job.curve[120][1]


def test_checkpoint_round_trip_is_bit_exact(wh, td3_job):
    for i, rid in enumerate(td3_job.run_ids):
        ck = load_checkpoint(wh, rid, 120)
        assert (ck.algo, ck.env, ck.seed, ck.step, ck.replay_size) == ("td3", "hopper", i, 120, 120)
        assert leaves_equal(ck.state, seed_slice(td3_job.state, i))
        assert leaves_equal(ck.replay, seed_slice(td3_job.replay.data, i))


def test_earlier_checkpoint_reads_its_replay_prefix(wh, td3_job):
    ck = load_checkpoint(wh, td3_job.run_ids[1], 60)
    full = seed_slice(td3_job.replay.data, 1)
    assert ck.replay_size == 60 and ck.replay.obs.shape == full.obs.shape  # padded to capacity
    assert leaves_equal(jax.tree.map(lambda x: x[:60], ck.replay), jax.tree.map(lambda x: x[:60], full))
    assert not np.any(ck.replay.obs[60:])
    assert int(ck.state.agent.update_count) == 60 - 40  # one update per step after warm-up


def test_resumed_training_equals_uninterrupted(wh, td3_job):
    """Kill after the first checkpoint, resume: every update after loading is the one
    the uninterrupted loop did (same keys), down to the last bit."""
    first = train(TINY_TD3, wh, stop_at=60)
    assert first.steps == 60 and list_checkpoints(wh, first.run_ids[0]) == [60]
    resumed = train(TINY_TD3, wh, resume=first.job_id)
    assert resumed.steps == 120 and list_checkpoints(wh, first.run_ids[0]) == [60, 120]
    assert leaves_equal(resumed.state, td3_job.state)
    assert leaves_equal(resumed.replay, td3_job.replay)


def test_seed_groups_train_each_seed_from_its_own_keys_and_resume_per_group(wh, td3_job):
    """Seeds trained one group at a time (as on a device that cannot hold them all) get
    the same keys: the warm-up's uniform actions are the same bits, and the trained
    networks are the same up to float reassociation across vmap widths (which XLA
    versions amplify differently: so compared against the distance between two seeds).
    A grouped job killed mid-way resumes each group from its own last checkpoint."""
    first = train(TINY_TD3, wh, seed_group=1, stop_at=60)
    assert first.seed_group == 1 and first.state is None  # groups' states are not kept
    resumed = train(TINY_TD3, wh, resume=first.job_id, seed_group=1)
    assert resumed.steps == 120 and resumed.resumed_from == 60 and resumed.curve[120].shape == (2,)
    for i, rid in enumerate(first.run_ids):
        assert list_checkpoints(wh, rid) == [60, 120]
        steps = wh.records("SELECT step FROM evaluations WHERE run_id = ? ORDER BY step", [rid])
        assert [r["step"] for r in steps] == [0, 60, 120]
        ck = load_checkpoint(wh, rid, 120)
        assert ck.seed == i and int(ck.state.agent.update_count) == 120 - 40
        warmup = TINY_TD3.agent.learning_starts
        assert np.array_equal(ck.replay.action[:warmup], np.asarray(td3_job.replay.data.action[i, :warmup]))
        same = _flat(ck.state.agent.actor_params) - _flat(seed_slice(td3_job.state, i).agent.actor_params)
        other = _flat(seed_slice(td3_job.state, 0).agent.actor_params) - \
            _flat(seed_slice(td3_job.state, 1).agent.actor_params)
        assert np.linalg.norm(same) < 0.05 * np.linalg.norm(other)


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(tree)])


def test_seed_group_size_is_what_fits_the_budget():
    from retland.core import sizing
    from retland.train.job import boundaries, seed_group_size

    assert seed_group_size(TINY_TD3) == 2  # CPU: no allocator limit, all seeds together
    one = TINY_TD3.model_copy(update={"seeds": 1})
    ts, rb = jax.eval_shape(lambda: init_states(one))
    fn = make_chunk_fn(one, 0, boundaries(one)[2])
    need = sizing.footprint(fn.func, ts, rb, fn.keywords["warmup"]).total
    assert seed_group_size(TINY_TD3, room=int(need * 1.5)) == 1
    assert seed_group_size(TINY_TD3, room=need * 10) == 2
    with pytest.raises(ValueError, match="one seed of td3 on hopper does not fit"):
        seed_group_size(TINY_TD3, room=16)


class _Killed(BaseException):
    """Stands in for SIGKILL: no `except Exception` in retland or orbax stops it."""


def test_a_job_killed_in_its_first_save_is_listed_and_resume_restarts_it(wh, td3_job, capsys, monkeypatch):
    """Killed while orbax writes seed 0's first checkpoint (its temporary folder written,
    not yet renamed): runs rows, no checkpoint row, leftovers under artifacts/.
    `retland train --resume JOB` restarts it from step 0 under the same run ids and
    reaches the uninterrupted job's state bit for bit (same process, same compiled chunk
    programs); the published checkpoints of other jobs are untouched."""
    import orbax.checkpoint._src.checkpointers.checkpointer as orbax_checkpointer

    from conftest import run_cli, tree_digest
    from retland.train.checkpoints import discard_orphan_artifacts, orphan_runs
    from retland.train.job import _load_job

    async def killed(*args, **kwargs):
        raise _Killed

    with monkeypatch.context() as m:
        m.setattr(orbax_checkpointer.atomicity, "on_commit_callback", killed)
        with pytest.raises(_Killed):
            train(TINY_TD3, wh)
    orphans = orphan_runs(wh)
    assert len(orphans) == 2 and orphans[0].job_id == orphans[1].job_id
    job = orphans[0].job_id
    assert [o.run_id for o in orphans] == [f"{job}-s0", f"{job}-s1"] and not job.startswith(td3_job.job_id)
    (tmp,) = orphans[0].temp_paths  # seed 0: its replay segment, then the state being saved
    assert f"runs/{job}-s0/checkpoints/step_0000000060.orbax-checkpoint-tmp" in tmp and (wh.root / tmp).is_dir()
    assert orphans[0].unpublished_paths == (f"artifacts/runs/{job}-s0/replay/rows_0000000000_0000000060",)
    assert (orphans[1].temp_paths, orphans[1].unpublished_paths) == ((), ())  # seed 1 never started
    with pytest.raises(ValueError, match="no checkpoint common to all 2 seeds"):  # what resume used to say
        _load_job(wh, TINY_TD3, [o.run_id for o in orphans])
    with pytest.raises(ValueError, match="published, not orphaned"):
        discard_orphan_artifacts(wh, td3_job.run_ids[0])

    published = {rid: tree_digest(wh.root / "artifacts" / "runs" / rid) for rid in td3_job.run_ids}
    code, out, err = run_cli(capsys, monkeypatch, "train", "--resume", job, "-w", wh.root, "--no-progress")
    assert code == 0, err
    assert "restarted from step 0" in " ".join(out.split())
    assert orphan_runs(wh) == [] and not (wh.root / tmp).exists()
    for i, o in enumerate(orphans):
        assert list_checkpoints(wh, o.run_id) == [60, 120]
        ck = load_checkpoint(wh, o.run_id, 120)
        assert leaves_equal(ck.state, seed_slice(td3_job.state, i))
        assert leaves_equal(ck.replay, seed_slice(td3_job.replay.data, i))
        evals = wh.query("SELECT step FROM evaluations WHERE run_id = ? ORDER BY step", [o.run_id])
        assert evals["step"].to_list() == [0, 60, 120]  # step 0 evaluated twice, stored once
    assert {rid: tree_digest(wh.root / "artifacts" / "runs" / rid) for rid in td3_job.run_ids} == published


def test_vmapped_seeds_are_independent_and_reproducible():
    """Seed 1 evolves the same whether its batch neighbour is seed 0 or seed 2."""

    def advance(cfg):
        ts, rb = init_states(cfg)
        for step in (0, 20, 40, 60, 80, 100):  # chunk length 20 = gcd of the tiny schedule
            ts, rb = make_chunk_fn(cfg, step, 20)(ts, rb)
        return ts, rb

    a = advance(TINY_TD3)
    b = advance(TINY_TD3.model_copy(update={"seed": 1}))
    again = advance(TINY_TD3)
    assert leaves_equal(a, again)
    assert leaves_equal(seed_slice(a[0], 1), seed_slice(b[0], 0))
    assert leaves_equal(seed_slice(a[1], 1), seed_slice(b[1], 0))
    assert not leaves_equal(seed_slice(a[0].agent.actor_params, 0), seed_slice(a[0].agent.actor_params, 1))


# ---- the update operator --------------------------------------------------------------

@pytest.fixture(scope="module")
def td3_ckpt(wh, td3_job):
    return load_checkpoint(wh, td3_job.run_ids[0], 60)


def test_td3_operator_is_one_actor_adam_step_on_frozen_critics(td3_ckpt):
    agent = get_agent("td3", td3_ckpt.config)
    op = agent.operator_state(td3_ckpt)
    key = jax.random.PRNGKey(7)
    got = jax.jit(agent.update)(op, key)

    # The same step written out: minibatch from [0, size), -mean(min(Q1, Q2)), Adam.
    s = td3_ckpt.state.agent
    idx = jax.random.randint(key, (8,), 0, td3_ckpt.replay_size)
    obs = jnp.asarray(td3_ckpt.replay.obs)[idx]
    cfg = td3_ckpt.config.agent

    def loss(p):
        a = td3.actor_net(cfg, 3).apply({"params": p}, obs)
        q = td3.critic_net(cfg).apply({"params": s.critic_params}, obs, a)
        return -jnp.mean(jnp.minimum(q[:, 0], q[:, 1]))

    updates, _ = optax.adam(3e-4).update(jax.grad(loss)(s.actor_params), s.actor_opt_state, s.actor_params)
    want = optax.apply_updates(s.actor_params, updates)
    assert jax.tree.all(jax.tree.map(lambda x, y: np.allclose(x, y, rtol=1e-5, atol=1e-7), got, want))
    assert not leaves_equal(got, s.actor_params)


def test_td3_operator_vmaps_over_keys_and_reads_only_the_checkpoint_prefix(td3_ckpt):
    agent = get_agent("td3", td3_ckpt.config)
    op = agent.operator_state(td3_ckpt)
    # Rows beyond the checkpoint's size must never be drawn: poison them.
    poisoned = op._replace(replay=jax.tree.map(lambda x: jnp.asarray(x).at[td3_ckpt.replay_size:].set(jnp.nan), op.replay))
    keys = jax.random.split(jax.random.PRNGKey(0), 16)
    batched = jax.jit(jax.vmap(agent.update, in_axes=(None, 0)))(poisoned, keys)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(batched))
    single = jax.jit(agent.update)(op, keys[3])
    assert jax.tree.all(jax.tree.map(lambda x, y: np.allclose(x[3], y, rtol=1e-5, atol=1e-7), batched, single))
    assert leaves_equal(single, jax.jit(agent.update)(op, keys[3]))  # a key fixes the sample
    first_layer = np.asarray(batched["MLP_0"]["Dense_0"]["kernel"])
    assert not np.allclose(first_layer[0], first_layer[1])  # distinct keys, distinct updates


def test_policy_is_the_deterministic_actor(td3_ckpt):
    agent = get_agent("td3")
    theta = agent.actor_params(td3_ckpt.state)
    obs = jnp.asarray(td3_ckpt.replay.obs[:5])
    a = agent.policy(theta, obs)
    assert a.shape == (5, 3) and np.all(np.abs(a) <= 1.0)
    assert np.allclose(agent.policy(theta, obs[2]), a[2], atol=1e-6)


# ---- bad input fails clearly ----------------------------------------------------------

def test_unknown_env_algo_backend_are_refused():
    with pytest.raises(ValueError, match="unknown env 'pong'"):
        TrainConfig(env="pong")
    with pytest.raises(ValueError, match="unknown algo 'ddpg'.*td3, sac, ppo"):
        agent_config("ddpg")
    with pytest.raises(ValueError, match="unknown algo 'ddpg'"):
        get_agent("ddpg")
    with pytest.raises(ValueError, match="unknown backend"):
        load_train_config(backend="bullet")


def test_checkpoints_beyond_training_are_refused():
    with pytest.raises(ValueError, match=r"checkpoint steps \[2000\] are outside"):
        TrainConfig(total_steps=1000, checkpoints=(500, 2000), agent=TD3Config(learning_starts=100))
    with pytest.raises(ValueError, match="buffer must not wrap"):
        TrainConfig(total_steps=2_000_000)


def test_default_checkpoints_follow_method():
    assert TrainConfig().checkpoint_steps == tuple(range(50_000, 1_000_000, 100_000))
    ppo = TrainConfig(agent=agent_config("ppo"))
    assert len(ppo.checkpoint_steps) == 10 and all(s % 32768 == 0 for s in ppo.checkpoint_steps)
    assert ppo.checkpoint_steps[-1] <= 60_000_000


def test_missing_and_mismatched_checkpoints_are_refused(wh, td3_job):
    rid = td3_job.run_ids[0]
    with pytest.raises(ValueError, match="no checkpoint at step 70; it has 60, 120"):
        load_checkpoint(wh, rid, 70)
    with pytest.raises(ValueError, match="no run 'nope'"):
        load_checkpoint(wh, "nope", 60)
    with pytest.raises(ValueError, match="trained on 'hopper', not 'ant'"):
        load_checkpoint(wh, rid, 60, env="ant")
    # a hopper state does not restore into the structure an ant config builds
    ant_target, _ = abstract_seed_state(TINY_TD3.model_copy(update={"env": "ant"}))
    hopper_state = seed_slice(td3_job.state, 0)
    with pytest.raises(ValueError, match="agent/actor_params/MLP_0/Dense_0/kernel has shape"):
        from_nested(to_nested(hopper_state), ant_target)


def test_toml_config_overrides(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('env = "walker2d"\nseeds = 3\n[agent]\nalgo = "td3"\nbatch_size = 64\n')
    cfg = load_train_config(f, seeds=4)
    assert (cfg.env, cfg.seeds, cfg.agent.batch_size, cfg.agent.tau) == ("walker2d", 4, 64, 0.005)
    with pytest.raises(ValueError, match="config file says algo='td3' but 'sac'"):
        load_train_config(f, algo="sac")
    f.write_text('[agent]\nalgo = "td3"\nbatchsize = 64\n')
    with pytest.raises(ValueError, match="batchsize"):
        load_train_config(f)


# ---- a wall-time limit ------------------------------------------------------------------

class _Clock:
    def __init__(self, now=0.0):
        self.now = now

    def __call__(self):
        return self.now


def test_deadline_estimates_the_next_stretch_from_the_measured_rate():
    from retland.train.job import Deadline

    clock = _Clock()
    d = Deadline(100.0, clock=clock)
    assert d.fits(10**9)  # nothing measured or recorded yet: nothing to refuse on
    d.prior = 0.002  # the job's rate recorded by an earlier call: 2 ms per step
    assert d.fits(40_000) and not d.fits(50_000)  # 40 s x 1.15 + 5 <= 100 < 50 s x 1.15 + 5
    d.measure(1000, 1.0)  # measured here (compile left out): 1 ms per step, the prior no longer counts
    assert d.fits(80_000) and not d.fits(90_000)
    d.measure(1000, 1.5)  # the slowest of the last three stretches counts
    assert d.fits(50_000) and not d.fits(60_000)
    clock.now = 60.0
    assert d.fits(20_000) and not d.fits(30_000)
    assert not d.passed()
    clock.now = 100.0
    assert d.passed() and not d.fits(1) and d.fits(0)
    assert Deadline(None).fits(10**12) and not Deadline(None).passed()


class _StepClock(_Clock):
    """Time that passes one second per env step trained (the job's progress moves it)."""

    def advance(self, n=0, **info):
        self.now += n


def test_a_time_limited_job_stops_at_a_checkpoint_and_resumes_exactly(wh, td3_job):
    """A deadline that the next stretch cannot meet stops the job at its checkpoint,
    whole (rows, files); resume trains the rest to the uninterrupted job's bits."""
    from retland.train.job import Deadline

    # One second per step, 100 s: from step 0 the first checkpoint (60) fits at the job's
    # recorded rate (1 s per step); from 60 the next (120) does not: it stops at 60.
    clock = _StepClock()
    deadline = Deadline(100.0, clock=clock)
    deadline.prior = 1.0
    stopped = train(TINY_TD3, wh, progress=clock.advance, deadline=deadline)
    assert stopped.time_limited and stopped.steps == 60 and stopped.checkpoints == [60] and clock.now == 60
    for rid in stopped.run_ids:
        assert list_checkpoints(wh, rid) == [60]
    resumed = train(TINY_TD3, wh, resume=stopped.job_id, deadline=Deadline(1e9, clock=_Clock()))
    assert not resumed.time_limited and resumed.steps == 120
    assert leaves_equal(resumed.state, td3_job.state) and leaves_equal(resumed.replay, td3_job.replay)


def test_past_the_deadline_between_checkpoints_the_job_stops_after_its_chunk(wh, td3_job):
    """Nothing to estimate from (no rate recorded, the compile's chunk left out): the job
    goes on, and once the deadline has passed it stops after the chunk in flight; the
    steps since its last checkpoint are lost, and resume redoes them to the same bits."""
    from retland.train.job import Deadline

    clock = _StepClock()
    stopped = train(TINY_TD3, wh, progress=clock.advance, deadline=Deadline(90.0, clock=clock))
    assert stopped.time_limited and stopped.steps == 100 and stopped.checkpoints == [60]  # chunks of 20
    resumed = train(TINY_TD3, wh, resume=stopped.job_id)
    assert resumed.resumed_from == 60 and leaves_equal(resumed.state, td3_job.state)


def test_a_deadline_already_past_trains_nothing(tmp_path):
    from retland.train.job import Deadline
    from retland.warehouse import Warehouse

    late = train(TINY_TD3, Warehouse.open(tmp_path / "wh"), deadline=Deadline(0.0, clock=_Clock(1.0)))
    assert late.time_limited and late.steps == 0 and late.checkpoints == []


def test_train_time_limit_prints_the_command_that_continues(wh, td3_job, capsys, monkeypatch, tmp_path):
    """`retland train --time-limit` stops at a checkpoint and prints the --resume line;
    that line, run, finishes the job (the same bits as one uninterrupted run)."""
    import shlex

    from retland.train.job import Deadline
    from conftest import run_cli

    toml = tmp_path / "tiny.toml"
    toml.write_text('env = "hopper"\nseeds = 2\ntotal_steps = 120\ncheckpoints = [60, 120]\n'
                    'eval_every = 60\nhorizon = 20\n[agent]\nhidden = [16, 16]\nbatch_size = 8\n'
                    'learning_starts = 40\nbuffer_size = 120\n')
    answers = iter([True])  # the start fits; the next checkpoint, from step 60, does not
    with monkeypatch.context() as m:
        m.setattr(Deadline, "fits", lambda self, steps: next(answers, False))
        code, out, err = run_cli(capsys, monkeypatch, "train", "--config", toml, "--time-limit", "90",
                                 "-w", wh.root, "--no-progress")
    assert code == 0, err
    text = " ".join(out.split())
    assert "stopped by --time-limit at step 60 of 120" in text and "checkpoint at step 60" in text
    line = next(ln.strip() for ln in out.splitlines() if ln.strip().startswith("retland train --resume"))
    argv = shlex.split(line)[1:]
    assert argv[argv.index("--time-limit") + 1] == "1:30:00"
    code, out, err = run_cli(capsys, monkeypatch, *argv, "--no-progress")
    assert code == 0, err
    assert "stopped" not in out
    job = argv[argv.index("--resume") + 1]
    for i in range(2):
        ck = load_checkpoint(wh, f"{job}-s{i}", 120)
        assert leaves_equal(ck.state, seed_slice(td3_job.state, i))
