"""Default GPU points of row groups and column reductions, from the shapes and dtypes
alone (no lowering): 16-bit rows move 16 bytes an access whatever precision the group
computes in, short rows take a thread per 16-byte run, and a column reduction takes
column tiles only where the cost model ranks them ahead of a split."""
import numpy as np
import pytest

import warpweave as ww
from warpweave.frontend.trace import trace
from warpweave.passes import fuse
from warpweave.passes.cost import H100, H200, device_for
from warpweave.schedule.choose import column_tile_pays, default_schedule, row_access_bytes
from warpweave.schedule.space import space
from warpweave.schedule.templates import GpuColumnReduce, GpuRowGroup, GpuRowReduce, GpuSplitColumnReduce

FUNCTIONS = {
    "softmax": (lambda x: ww.softmax(x), 1),
    "log_softmax": (lambda x: ww.log_softmax(x), 1),
    "layer_norm": (lambda x, w, b: ww.layer_norm(x, w, b), 3),
    "rms_norm": (lambda x, w: x * ww.rsqrt((x * x).mean(-1, keepdims=True) + 1e-6) * w, 2),
    "row_sum": (lambda x: x.sum(axis=-1), 1),
}


def _group(name, rows, n, dtype):
    fn, arity = FUNCTIONS[name]
    shapes = [(rows, n)] + [(n,)] * (arity - 1)
    graph, _ = trace(fn, [(s, dtype) for s in shapes])
    inlined = fuse.inline_broadcast_producers(graph)
    (group,) = [g for g in fuse.plan(inlined, device_for("gpu", 132)).groups if g.pattern == "row"]
    return inlined, group


@pytest.mark.parametrize("name,rows,n", [("log_softmax", 4096, 30522), ("layer_norm", 4096, 4095),
                                         ("softmax", 1024, 50257), ("layer_norm", 16384, 768),
                                         ("rms_norm", 2048, 5120), ("log_softmax", 8192, 1000)])
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_rows_move_16_bytes_an_access(name, rows, n, dtype):
    """The vector width counts bytes of the rows' own element type, not of the float32
    row scalars and intermediates the group computes."""
    graph, group = _group(name, rows, n, dtype)
    itemsize = np.dtype(np.float32 if dtype == "float32" else np.float16).itemsize
    assert row_access_bytes(group, graph) == itemsize
    point = default_schedule(group, graph, "gpu")
    assert isinstance(point, GpuRowGroup) and point.vector * itemsize == 16, point
    assert point.vector * point.chunks <= 32
    assert point.row_threads * point.vector * point.chunks * point.passes >= n
    assert point in space(group, graph, "gpu")
    assert any(isinstance(p, GpuRowGroup) and p.vector == 16 // itemsize for p in space(group, graph, "gpu")[1:])


@pytest.mark.parametrize("name,rows,n,dtype,row_threads,vector,chunks", [
    ("layer_norm", 1000000, 16, "float32", 2, 4, 2),
    ("layer_norm", 1000000, 16, "bfloat16", 2, 8, 1),
    ("softmax", 1000000, 8, "float32", 2, 4, 1),
    ("softmax", 1000000, 8, "bfloat16", 1, 8, 1),
    ("softmax", 65536, 128, "bfloat16", 8, 8, 2),
    ("rms_norm", 100000, 96, "bfloat16", 4, 8, 3),
    ("softmax", 65536, 128, "float32", 8, 4, 4),   # 32 runs: the general rule
])
def test_short_rows_take_one_or_two_runs_a_thread(name, rows, n, dtype, row_threads, vector, chunks):
    """A warp's accesses cover whole rows side by side (a thread per run up to two runs,
    about two runs a thread beyond), never one thread striding over four runs of its
    row while its neighbours read other rows."""
    graph, group = _group(name, rows, n, dtype)
    point = default_schedule(group, graph, "gpu")
    assert point == GpuRowGroup(threads=256, row_threads=row_threads, vector=vector, chunks=chunks, passes=1)


@pytest.mark.parametrize("name,rows,n", [("row_sum", 1000003, 7), ("softmax", 65536, 31), ("layer_norm", 4096, 6)])
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_short_narrow_rows_take_a_thread_each(name, rows, n, dtype):
    """Rows shorter than a warp that no 16-byte run tiles: a thread per row loops over
    its elements (a row sum over [1000003, 7] on the H200, 2026-12-03: 5.2 µs float32,
    6.2 bfloat16, against 9.0 and 9.9 at two threads a row)."""
    graph, group = _group(name, rows, n, dtype)
    point = default_schedule(group, graph, "gpu")
    vector = next(w for w in (8, 4, 2, 1) if n % w == 0 and w * row_access_bytes(group, graph) < 16)
    assert point == GpuRowGroup(threads=256, row_threads=1, vector=vector, chunks=-(-n // vector), passes=1), point
    assert point in space(group, graph, "gpu")


@pytest.mark.parametrize("name,n", [("row_sum", 7), ("softmax", 31), ("layer_norm", 6), ("log_softmax", 3)])
def test_short_narrow_rows_on_the_interpreter(name, n):
    """A thread per row gives the float64 answer (the rows end mid-block: 77 rows)."""
    from tests.utils import assert_close, random_array
    from warpweave.pipeline.compile import compile_graph

    fn, arity = FUNCTIONS[name]
    shapes = [(77, n)] + [(n,)] * (arity - 1)
    graph, single = trace(fn, [(s, "float32") for s in shapes])
    program = compile_graph(graph, single, "interp", name)
    assert any(isinstance(k.schedule, GpuRowGroup) and k.schedule.row_threads == 1 for k in program.kernels)
    rng = np.random.default_rng(n)
    args = [random_array(rng, s, "float32") for s in shapes]
    assert_close(program(*args), REFERENCES[name](*[a.astype(np.float64) for a in args]), "float32",
                 what=f"{name} [77, {n}]")


@pytest.mark.parametrize("name,rows,n,dtype,threads,chunks,passes", [
    ("log_softmax", 4096, 30522, "float32", 1024, 4, 2),   # 122 KB rows: one per SM in L2
    ("log_softmax", 4096, 30522, "bfloat16", 512, 4, 2),   # 61 KB rows: two per SM
    ("layer_norm", 1024, 12288, "float32", 1024, 3, 1),
])
def test_long_rows_keep_their_tiles_in_registers_and_their_rows_in_l2(name, rows, n, dtype, threads, chunks, passes):
    """A 1024-thread block holds at most 16 elements a thread (64 registers); rows that
    need several passes take the fewest threads whose rows in flight fit in L2."""
    graph, group = _group(name, rows, n, dtype)
    point = default_schedule(group, graph, "gpu")
    assert (point.threads, point.row_threads, point.chunks, point.passes) == (threads, threads, chunks, passes)
    assert point.vector * point.chunks <= (16 if point.threads == 1024 else 32)


def test_a_block_per_row_beyond_a_warp():
    graph, group = _group("layer_norm", 4096, 4095, "bfloat16")
    point = default_schedule(group, graph, "gpu")
    assert point.row_threads > 32 and point.threads == point.row_threads


@pytest.mark.parametrize("device", [H100, H200])
def test_column_tiles_only_where_they_pull_the_bandwidth(device):
    """24 tiles (768 outputs) pull less than a split's two kernels; 128 tiles pull it all."""
    read = 16384 * 768 * 4 * 2
    assert not column_tile_pays(read, 24, 512 * 768 * 4, device)
    assert column_tile_pays(8192 * 4096 * 4, 128, 512 * 4096 * 4, device)


def test_a_layer_norm_weight_gradient_splits_its_column_sum():
    def wgrad(x, mu, rstd, dy):
        return (dy * ((x - mu) * rstd)).sum(axis=(0, 1))

    shapes = [(32, 512, 768), (32, 512, 1), (32, 512, 1), (32, 512, 768)]
    graph, _ = trace(wgrad, [(s, "float32") for s in shapes])
    inlined = fuse.inline_broadcast_producers(graph)
    (group,) = fuse.plan(inlined, device_for("gpu", 132)).groups
    point = default_schedule(group, inlined, "gpu")
    assert isinstance(point, GpuSplitColumnReduce) and point.splits >= 132


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


REFERENCES = {
    "softmax": _softmax,
    "log_softmax": lambda x: np.log(_softmax(x)),
    "layer_norm": lambda x, w, b: (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * w + b,
    "row_sum": lambda x: x.sum(-1),
}


@pytest.mark.gpu
@pytest.mark.parametrize("name,rows,n", [("layer_norm", 100003, 16), ("softmax", 70001, 8), ("row_sum", 100003, 7),
                                         ("log_softmax", 257, 30522), ("layer_norm", 513, 4095)])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_default_row_points_on_the_gpu(name, rows, n, dtype):
    from tests.utils import assert_close, random_array
    from warpweave.pipeline.compile import compile_graph

    fn, arity = FUNCTIONS[name]
    shapes = [(rows, n)] + [(n,)] * (arity - 1)
    graph, single = trace(fn, [(s, dtype) for s in shapes])
    rng = np.random.default_rng(rows)
    args = [random_array(rng, s, dtype) for s in shapes]
    got = compile_graph(graph, single, "cuda", name)(*args)
    assert_close(got, REFERENCES[name](*[a.astype(np.float64) for a in args]), dtype, scale=1 + np.sqrt(n) / 8,
                 what=f"{name} [{rows}, {n}] {dtype}")


@pytest.mark.parametrize("dtype_bytes", [1, 2, 4, 8])
def test_default_row_points_fit_the_register_tile(dtype_bytes):
    """Every row length takes a point whose register tile (vector × chunks) the GPU
    verifier accepts: rows of 1-byte booleans have 16-element runs."""
    from warpweave.schedule.choose import choose_row_group
    from warpweave.schedule.templates import MAX_TILE

    for n in list(range(1, 600)) + [4095, 4096, 30522, 50257]:
        point = choose_row_group(n, 7, dtype_bytes, "gpu")
        assert point.vector * point.chunks <= MAX_TILE, (n, dtype_bytes, point)
        assert point.row_threads * point.vector * point.chunks * point.passes >= n, (n, dtype_bytes, point)


@pytest.mark.parametrize("n", [48, 96, 160])
def test_a_masked_row_group_verifies_on_the_gpu(n):
    """A cross-entropy-style backward whose rows read a boolean mask (GPT-2's loss
    backward in bfloat16 at vocabulary 96 failed verification: 48-element vector)."""
    from warpweave.pipeline.compile import compile_graph

    def grad(logp, mask, g):
        go = ww.where(mask, -1.0, 0.0) * g
        return (go - ww.exp(logp) * go.sum(axis=-1, keepdims=True)).astype("bfloat16")

    graph, single = trace(grad, [((22, n), "float32"), ((22, n), "bool"), ((22, 1), "float32")])
    program = compile_graph(graph, single, "cuda", "masked")
    assert any(isinstance(k.schedule, GpuRowGroup) for k in program.kernels)
    assert ".entry" in program.dump("ptx")


def _window_max(n, c, h, w, window, stride):
    """A max over `window` x `window` windows at `stride` with one element of padding:
    the reduction of a max pool, whose windows are far shorter than a warp."""
    X = ww.placeholder((n, c, h, w), "float32", name="X")
    oh, ow = (h + 2 - window) // stride + 1, (w + 2 - window) // stride + 1
    r, s = ww.reduce_axis(window), ww.reduce_axis(window)

    def at(i, j, k, l_):
        y, x = k * stride + r - 1, l_ * stride + s - 1
        inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
        return ww.max(ww.where(inside, X[i, j, ww.minimum(ww.maximum(y, 0), h - 1), ww.minimum(ww.maximum(x, 0), w - 1)], -np.inf),
                      axis=(r, s))
    return X, ww.compute((n, c, oh, ow), at, name="pool")


def _pool_reference(x, window, stride):
    n, c, h, w = x.shape
    padded = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    oh, ow = (h + 2 - window) // stride + 1, (w + 2 - window) // stride + 1
    return np.max([padded[:, :, a:a + stride * oh:stride, b:b + stride * ow:stride][:, :, :oh, :ow]
                   for a in range(window) for b in range(window)], axis=0)


@pytest.mark.parametrize("window,stride", [(3, 2), (2, 1), (5, 3)])
def test_windows_shorter_than_a_warp_take_a_thread_per_output(window, stride):
    """A warp per output of a 3 x 3 window left 23 of its 32 lanes idle (ResNet-50's max
    pool took 64 % of its inference step on the H200); each thread loops over its own
    window instead, and the interpreter's answer is the float64 reference's."""
    X, pool = _window_max(2, 3, 11, 13, window, stride)
    program = ww.build(pool, [X], target="interp")
    (kernel,) = program.kernels
    assert isinstance(kernel.schedule, GpuColumnReduce), kernel.schedule
    x = np.random.default_rng(window).standard_normal((2, 3, 11, 13)).astype(np.float32)
    np.testing.assert_array_equal(program(x), _pool_reference(x, window, stride).astype(np.float32))


def test_reductions_of_a_warp_or_more_keep_a_block_per_output():
    X = ww.placeholder((7, 3, 40), "float32", name="X")
    r = ww.reduce_axis(40)
    total = ww.compute((3,), lambda j: ww.sum(X[r % 7, j, r] * 2.0, axis=r), name="total")
    (kernel,) = ww.build(total, [X], target="interp").kernels
    assert isinstance(kernel.schedule, GpuRowReduce), kernel.schedule
