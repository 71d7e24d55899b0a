"""Memory sizing (retland.core.sizing): XLA's memory analysis of compiled programs against
a byte budget. CPUs report no allocator limit, so the budgets here are given explicitly;
the programs and their memory figures are real."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from retland import shipped
from retland.core import sizing
from retland.purd import engine
from retland.purd.operators import parse_operator
from retland.purd.sampling import SamplingError, checkpoint_program
from retland.train.checkpoints import load_checkpoint
from retland.warehouse import Warehouse


@jax.jit
def _per_row(w, x):
    """[B, 256] outputs and a [B, 256, 64] temporary: bytes linear in B."""
    h = jnp.tanh(x[:, :, None] * w[None, None, :])
    return h.sum(-1) + jnp.cumsum(h, axis=1)[:, :, -1]


def _need_at(b):
    return sizing.footprint(_per_row, jax.ShapeDtypeStruct((64,), jnp.float32),
                            jax.ShapeDtypeStruct((b, 256), jnp.float32))


def test_footprint_grows_with_the_batch_and_counts_arguments():
    small, big = _need_at(8), _need_at(64)
    assert small.arguments == 64 * 4 + 8 * 256 * 4
    assert big.outputs == 64 * 256 * 4
    assert big.scaling > 7 * small.scaling  # outputs and temporaries grow with B
    assert big.total == big.arguments + big.outputs + big.temporaries - big.aliased


def test_fit_keeps_the_preferred_size_when_it_fits_and_compiles_once():
    calls = []

    def at(b):
        calls.append(b)
        return _need_at(b)

    need = _need_at(64).scaling
    f = sizing.fit(at, 64, budget_bytes=need + 1)
    assert (f.size, calls) == (64, [64])
    assert "budget" in f.reason
    assert sizing.fit(at, 64, None).size == 64 and calls == [64]  # no limit: nothing compiled


def test_fit_shrinks_to_the_largest_multiple_of_8_that_fits():
    per = _need_at(64).scaling / 64
    budget = int(per * 20)  # room for about 20 rows
    f = sizing.fit(_need_at, 64, budget)
    assert f.size < 64 and f.size % 8 == 0
    assert f.bytes <= budget
    assert _need_at(f.size + 8).scaling > budget  # the next multiple of 8 would not fit
    assert f.tried[0][0] == 64 and "64 would need" in f.reason


def test_fit_refuses_when_nothing_fits():
    with pytest.raises(MemoryError, match="does not fit"):
        sizing.fit(_need_at, 64, budget_bytes=10)


def test_budget_is_none_on_cpu():
    if jax.default_backend() != "cpu":
        pytest.skip(f"checks CPUs, which report no allocator limit; the default backend here is "
                    f"{jax.default_backend()}")
    assert sizing.budget() is None


# ---- the chunk program of `retland sample` ----------------------------------------------

@pytest.fixture(scope="module")
def chunk(tmp_path_factory):
    wh = Warehouse.open(tmp_path_factory.mktemp("sizing") / "wh")
    run_id, step = shipped.add(wh)
    ckpt = load_checkpoint(wh, run_id, step)
    spec = parse_operator("gaussian", horizon=20, seed=0)
    program, op_state = checkpoint_program(spec, ckpt)
    fn = engine.chunk_function(program)
    args = (op_state, engine.reference_start(program), spec.base_key)
    return fn, args


def test_stored_program_lowers_without_running(chunk):
    fn, args = chunk
    fp = sizing.footprint(fn, *args, np.arange(16, dtype=np.int32))
    assert fp is not None and fp.scaling > 0


def test_a_chunk_that_does_not_fit_is_refused_with_the_size_that_does(chunk):
    fn, args = chunk
    device = jax.local_devices()[0]
    fp = sizing.footprint(fn, *args, np.arange(64, dtype=np.int32))
    per_sample = fp.scaling / 64
    room = int(per_sample * 20)
    with pytest.raises(SamplingError, match=r"a chunk of 64 samples needs .* pass --batch-size 16 or less"):
        engine.chunk_fits(fn, args, 64, device, room=room)
    engine.chunk_fits(fn, args, 16, device, room=room)  # fits: no error
    engine.chunk_fits(fn, args, 64, device)  # CPU: no limit, nothing checked


def test_export_platform_names_cuda_and_rocm():
    """jax.export wants "cuda"/"rocm" where a device says "gpu" (a stored program exported
    for "gpu" could not be called on an H200); CPUs keep their name."""
    from types import SimpleNamespace

    from retland.core.programs import export_platform

    gpu = lambda version: SimpleNamespace(platform="gpu", client=SimpleNamespace(platform_version=version))  # noqa: E731
    assert export_platform(gpu("PJRT C API\ncuda 13000")) == "cuda"
    assert export_platform(gpu("rocm 6.2")) == "rocm"
    assert export_platform(jax.devices("cpu")[0]) == "cpu"
