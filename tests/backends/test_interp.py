"""The interpreter's semantics of cross-thread movement: shuffles and shared memory."""
import numpy as np
import pytest

from warpweave.backends.interp import run_kernel
from warpweave.errors import IRError
from warpweave.ir import dtypes as dt
from warpweave.ir import expr as ex
from warpweave.ir.gir import Buffer, KernelBuilder, SharedAlloc

t, g = ex.Var("t"), ex.Var("g")


def _shuffle_kernel(mode, lane):
    b = KernelBuilder("shfl", "gpu")
    b.add_param(Buffer("x", dt.float32, (128,), (1,), "in"))
    b.add_param(Buffer("y", dt.float32, (128,), (1,), "out"))
    gs = b.scope("grid", "g", 2, None)
    ts = b.scope("block", "t", 64, gs)
    flat = g * 64 + t
    v = b.load("x", flat, ts)
    s = b.shuffle(mode, v, lane, ts)
    b.store("y", flat, s, ts)
    return b.build()


@pytest.mark.parametrize("mode,lane,source", [
    ("bfly", ex.Const(5, dt.INDEX), lambda i: (i & ~31) | ((i % 32) ^ 5)),
    ("down", ex.Const(3, dt.INDEX), lambda i: i + 3 if i % 32 + 3 < 32 else i),
    ("idx", (t + 7) % 32, lambda i: (i & ~31) | ((i % 32 + 7) % 32)),
])
def test_shuffles_stay_within_a_warp(mode, lane, source):
    x = np.random.default_rng().standard_normal(128).astype(np.float32)
    y = np.full(128, np.nan, np.float32)
    run_kernel(_shuffle_kernel(mode, lane), {"x": x, "y": y})
    expect = np.array([x[source(i)] for i in range(128)], np.float32)
    np.testing.assert_array_equal(y, expect)


def test_shared_memory_is_per_block():
    """Each block reverses its slice through shared memory."""
    b = KernelBuilder("rev", "gpu")
    b.add_param(Buffer("x", dt.int32, (96,), (1,), "in"))
    b.add_param(Buffer("y", dt.int32, (96,), (1,), "out"))
    b.add_shared(SharedAlloc("s", dt.int32, 32))
    gs = b.scope("grid", "g", 3, None)
    ts = b.scope("block", "t", 32, gs)
    b.store("s", t, b.load("x", g * 32 + t, ts), ts)
    b.sync(["s"], ts)
    b.store("y", g * 32 + t, b.load("s", 31 - t, ts), ts)
    x = np.arange(96, dtype=np.int32) * 7 + 1
    y = np.zeros(96, np.int32)
    run_kernel(b.build(), {"x": x, "y": y})
    np.testing.assert_array_equal(y, x.reshape(3, 32)[:, ::-1].reshape(-1))


def test_out_of_bounds_access_raises():
    b = KernelBuilder("oob", "cpu")
    b.add_param(Buffer("x", dt.float32, (4,), (1,), "in"))
    b.add_param(Buffer("y", dt.float32, (4,), (1,), "out"))
    gs = b.scope("grid", "g", 4, None)
    b.store("y", g, b.load("x", g + 1, gs), gs)
    with pytest.raises(IRError, match="outside"):
        run_kernel(b.build(), {"x": np.ones(4, np.float32), "y": np.zeros(4, np.float32)})


def test_predicated_off_load_from_an_empty_buffer_reads_nothing():
    b = KernelBuilder("empty", "cpu")
    b.add_param(Buffer("x", dt.float32, (0,), (1,), "in"))
    b.add_param(Buffer("y", dt.float32, (4,), (1,), "out"))
    gs = b.scope("grid", "g", 4, None)
    v = b.load("x", g, gs, pred=ex.binary("lt", g, 0), other=ex.Const(7.0, dt.float32))
    b.store("y", g, v, gs)
    y = np.zeros(4, np.float32)
    run_kernel(b.build(), {"x": np.zeros(0, np.float32), "y": y})
    np.testing.assert_array_equal(y, 7.0)
