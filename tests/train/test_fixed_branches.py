"""The branch-free training chunk (retland.train.program.fixed_branches): what an
accelerator runs instead of the chunk whose warm-up, actor-step and reset branches are
`lax.cond`s (each a host round trip per env step on a GPU).

Both programs must train the same: same keys, counters, schedule of actor steps (the
actor's Adam count) and warm-up actions bit for bit; networks equal up to the float
rounding of two differently fused programs, far closer than two seeds are. Tiny
programs (16-unit nets, 20-step episodes so resets happen, which the fixed program
selects rather than branches to) on the CPU, where both run.
"""
from __future__ import annotations

import jax
import numpy as np
import pytest

from retland.core.brax0013 import math as bm
from retland.train import program
from retland.train.config import TD3Config, TrainConfig

TINY = TrainConfig(env="hopper", variant="paper", seeds=2, total_steps=120, checkpoints=(60, 120), eval_every=60,
                   horizon=20, agent=TD3Config(hidden=(16, 16), batch_size=8, learning_starts=40, buffer_size=120))
# chunks of 5 steps (one length: fewer compiles): 8 of warm-up, then 4 of updates whose
# actor-step phase at the start is 0, 1, 0, 1, so the fixed program lays out 2 periods
# and a remainder step from either phase.
SCHEDULE = (5,) * 12


def _train(monkeypatch, fixed: bool):
    monkeypatch.setenv("RETLAND_FIXED_BRANCHES", "1" if fixed else "0")
    ts, rb = program.init_states(TINY)
    step = 0
    for n in SCHEDULE:
        ts, rb = program.make_chunk_fn(TINY, step, n)(ts, rb)
        step += n
    return jax.device_get((ts, rb))


@pytest.fixture(scope="module")
def both():
    with pytest.MonkeyPatch.context() as mp:
        return _train(mp, False), _train(mp, True)


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.asarray(x, np.float64).ravel() for x in jax.tree.leaves(tree)])


def test_fixed_chunk_trains_as_the_branching_one(both):
    (ts_b, rb_b), (ts_f, rb_f) = both
    for a, b in [(ts_b.key, ts_f.key), (ts_b.env_steps, ts_f.env_steps), (ts_b.episode_step, ts_f.episode_step),
                 (ts_b.agent.update_count, ts_f.agent.update_count), (rb_b.size, rb_f.size)]:
        np.testing.assert_array_equal(a, b)
    assert int(ts_f.agent.update_count[0]) == sum(SCHEDULE) - TINY.agent.learning_starts
    # the actor/target step every policy_delay-th update, from any phase: Adam's step counts
    counts = lambda ts: [np.asarray(x) for x in jax.tree.leaves(ts.agent.actor_opt_state) if x.dtype == np.int32]  # noqa: E731
    assert all(np.array_equal(a, b) for a, b in zip(counts(ts_b), counts(ts_f)))
    assert int(counts(ts_f)[0][0]) == (sum(SCHEDULE) - TINY.agent.learning_starts) // TINY.agent.policy_delay
    warm = TINY.agent.learning_starts
    np.testing.assert_array_equal(rb_b.data.action[:, :warm], rb_f.data.action[:, :warm])  # the uniform draws
    # networks: the rounding of two programs, amplified by training, against two seeds' distance
    diff = np.linalg.norm(_flat(ts_b.agent) - _flat(ts_f.agent))
    seeds = np.linalg.norm(_flat(jax.tree.map(lambda x: x[0], ts_b.agent)) - _flat(jax.tree.map(lambda x: x[1], ts_b.agent)))
    assert diff < 0.05 * seeds


def test_fixed_chunk_holds_no_branch(monkeypatch):
    """The branching program has a cond per branch; the fixed one none (what makes it a
    host-round-trip-free loop on a GPU). Read from the lowered program: nothing compiles."""
    def branches(fixed: bool, step: int):
        monkeypatch.setenv("RETLAND_FIXED_BRANCHES", "1" if fixed else "0")
        fn = program.make_chunk_fn(TINY, step, 5)
        ts, rb = jax.eval_shape(lambda: program.init_states(TINY))
        text = fn.func.lower(ts, rb, fn.keywords["warmup"]).as_text()
        return text.count("stablehlo.case") + text.count("stablehlo.if")

    assert branches(False, 40) >= 4  # warm-up action, warm-up update, actor step, reset
    assert branches(True, 40) == 0 and branches(True, 0) == 0


@pytest.mark.parametrize("idx", [[0, 1, 2], [2, 0, 1], [1, 1, 3, 4, 0], [3], []])
def test_static_take_is_indexing(idx):
    x = np.arange(5 * 3, dtype=np.float32).reshape(5, 3)
    np.testing.assert_array_equal(np.asarray(bm.take(x, np.array(idx, np.int32))), x[np.array(idx, np.int32)])
