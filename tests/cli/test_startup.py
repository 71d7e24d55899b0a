"""The program store (retland.core.programs): a later process loads the traced chunk
program instead of tracing it, and computes the same rows bit for bit.

"A later process" is this process after `engine.forget_compiled()`: the chunk function is
then built anew and looks its program up in the store, as a fresh process does
(benchmarks/startup.py measures real fresh processes of `retland sample`)."""
from __future__ import annotations

import os
import time

import numpy as np
import pytest

pytest.importorskip("flatbuffers")  # jax.export's serializer: without it the store is off

import jax  # noqa: E402

from retland.core import programs  # noqa: E402
from retland.core.envs import reference_state  # noqa: E402
from retland.core.networks import DeterministicActor  # noqa: E402
from retland.purd import engine  # noqa: E402
from retland.purd.engine import ActorPolicy, AgentPolicy, SampleProgram  # noqa: E402
from retland.purd.operators import Gaussian  # noqa: E402

B, H = 16, 20
CHUNKS = [0, 1]
KEY = jax.random.PRNGKey(7)


def tiny_program(horizon: int = H) -> SampleProgram:
    return SampleProgram("hopper", "positional", horizon, ActorPolicy(3, (8,)), Gaussian(0.05), variant="paper")


@pytest.fixture(scope="module")
def params():
    obs_size = reference_state("hopper", "positional", variant="paper").obs.shape[-1]
    return DeterministicActor(3, (8,)).init(jax.random.PRNGKey(0), np.zeros(obs_size, np.float32))["params"]


def sample(params, program=None) -> tuple[np.ndarray, dict]:
    """Chunks 0 and 1 as a fresh process computes them: (the four result columns as
    raw bits [4, 2B], what the store did)."""
    engine.forget_compiled()
    programs.reset_stats()
    res = list(engine.run_chunks(program or tiny_program(), params, KEY, CHUNKS, B))
    cols = [np.concatenate([getattr(r, f) for r in res]) for f in ("ret", "discounted_return", "episode_length",
                                                                  "terminated")]
    bits = np.stack([c.astype(c.dtype.newbyteorder("=")).view(f"u{c.dtype.itemsize}").astype(np.uint64)
                     for c in cols])
    return bits, programs.stats()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("programs")


@pytest.fixture(scope="module")
def traced(params):
    """The rows with the store off: the traced program, as before the store existed."""
    with pytest.MonkeyPatch.context() as m:
        m.setenv(programs.ENV_VAR, "0")
        bits, stats = sample(params)
    assert stats["traced"] == 1 and stats["hits"] == stats["misses"] == 0 and not stats["enabled"]
    return bits


def entries(store) -> list:
    return sorted(store.glob(f"*{programs.SUFFIX}"))


def test_a_warm_start_loads_the_stored_program_and_gives_the_traced_rows(params, store, traced, monkeypatch):
    monkeypatch.setenv(programs.ENV_VAR, str(store))
    cold, stats = sample(params)
    assert (stats["misses"], stats["hits"], stats["traced"], stats["stored"]) == (1, 0, 0, 2)  # program + s0
    assert stats["value_misses"] == 1 and len(entries(store)) == 2
    warm, stats = sample(params)
    assert (stats["hits"], stats["misses"], stats["traced"], stats["stored"]) == (1, 0, 0, 0)
    assert stats["value_hits"] == 1 and stats["first_dispatch"] is not None
    np.testing.assert_array_equal(cold, traced)
    np.testing.assert_array_equal(warm, traced)
    assert (traced[2] == H).any()  # episodes of full length: the rollout really ran H steps


def test_a_damaged_entry_is_ignored_and_rewritten(params, store, traced, monkeypatch):
    monkeypatch.setenv(programs.ENV_VAR, str(store))
    sample(params)  # make sure both entries exist (the tests may run alone)
    files = entries(store)
    assert files
    for i, f in enumerate(files):  # one truncated, one with a flipped byte, one replaced by text
        blob = f.read_bytes()
        f.write_bytes(blob[: len(blob) // 2] if i % 3 == 0 else
                      blob[:-1] + bytes([blob[-1] ^ 1]) if i % 3 == 1 else b"not a program")
    bits, stats = sample(params)
    assert stats["ignored"] == len(files) and stats["misses"] == 1 and stats["hits"] == 0
    np.testing.assert_array_equal(bits, traced)
    bits, stats = sample(params)  # rewritten: read back whole
    assert (stats["hits"], stats["misses"], stats["ignored"], stats["value_hits"]) == (1, 0, 0, 1)
    np.testing.assert_array_equal(bits, traced)


def test_another_program_or_chunk_size_has_another_entry(params, store, monkeypatch):
    monkeypatch.setenv(programs.ENV_VAR, str(store))
    start = engine.reference_start(tiny_program())
    idx = engine.chunk_indices(0, B)

    def path(program, indices=idx, per_step=False):
        return engine.chunk_function(program, per_step).entry_path(params, start, KEY, indices)

    sample(params)
    base = path(tiny_program())
    assert base.is_file() and base.parent == store
    others = [path(tiny_program(H + 1)), path(tiny_program(), engine.chunk_indices(0, B // 2)),
              path(tiny_program(), per_step=True),
              path(SampleProgram("hopper", "positional", H, ActorPolicy(3, (8,)), Gaussian(0.06), variant="paper")),
              path(SampleProgram("hopper", "positional", H, ActorPolicy(3, (8,)), Gaussian(0.05), variant="brax"))]
    assert len({base, *others}) == 6 and not any(p.exists() for p in others)
    monkeypatch.setenv(programs.ENV_VAR, "off")
    assert path(tiny_program()) is None


def test_keys_hash_a_user_modules_source_and_refuse_what_cannot_be_named(tmp_path, monkeypatch):
    from retland.agents.policy import PolicyAgent

    module = tmp_path / "startup_user_policy.py"
    module.write_text("def apply(params, obs):\n    return obs[:3]\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def key(value):
        modules: dict[str, str] = {}
        return programs.describe(value, modules), modules

    text, modules = key(AgentPolicy(PolicyAgent("startup_user_policy:apply")))
    assert "startup_user_policy:apply" in text and modules["startup_user_policy"]
    programs.module_digest.cache_clear()
    module.write_text("def apply(params, obs):\n    return -obs[:3]\n")
    assert key(AgentPolicy(PolicyAgent("startup_user_policy:apply")))[1] != modules
    with pytest.raises(programs.Unstorable, match="cannot be found|no Python source"):
        key(PolicyAgent("no_such_module_here:apply"))
    with pytest.raises(programs.Unstorable, match="lambda"):
        key(SampleProgram("hopper", "positional", H, lambda p, o: o, Gaussian(0.05), variant="paper"))
    with pytest.raises(programs.Unstorable, match="cannot describe"):
        key(object())
    # equal values, equal keys: a float's text is exact, a tuple is not a list
    assert key(Gaussian(0.05)) == key(Gaussian(0.05)) and key(Gaussian(0.05)) != key(Gaussian(0.05000001))
    assert key((1, 2)) != key([1, 2])


def test_stored_values_are_kept_and_the_least_recently_used_entries_pruned(tmp_path, monkeypatch):
    monkeypatch.setenv(programs.ENV_VAR, str(tmp_path))
    monkeypatch.setattr(programs, "MAX_ENTRIES", 2)
    computed = []

    def value(i):
        def compute():
            computed.append(i)
            return {"a": np.arange(3, dtype=np.float32) + i, "b": (np.int32(i), None)}
        return programs.stored_value(("test_startup.value", i), compute)

    def age_all():  # every entry used a minute ago
        old = time.time() - 60
        for p in entries(tmp_path):
            os.utime(p, (old, old))

    first = value(0)
    assert isinstance(first, programs.StoredValue) and computed == [0]
    value(1)
    age_all()
    programs.reset_stats()
    again = value(0)  # read back (not computed) and so used last
    assert programs.stats()["value_hits"] == 1 and computed == [0, 1]
    assert [np.asarray(x).tolist() for x in again.leaves] == [[0, 1, 2], 0]
    np.testing.assert_array_equal(again.tree()["a"], [0, 1, 2])  # the real tree around the stored leaves
    value(2)  # a third entry: the least recently used one (1) goes
    assert len(entries(tmp_path)) == 2 and computed == [0, 1, 2]
    programs.reset_stats()
    value(0), value(2)
    assert programs.stats()["value_hits"] == 2 and computed == [0, 1, 2]
    value(1)
    assert computed == [0, 1, 2, 1]
