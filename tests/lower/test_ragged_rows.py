"""Row groups whose width the 16-byte vector does not divide: runs from each row's
first aligned element, a scalar head and tail. numpy float64 at odd widths and row
counts on the interpreter, aligned 16-byte accesses in the PTX (through ptxas), the GPU."""
import numpy as np
import pytest

import warpweave as ww
from tests.utils import (assert_close, assert_ptxas_accepts, layer_norm_reference, log_softmax_reference,
                         random_array, softmax_reference)
from warpweave.frontend.trace import trace
from warpweave.passes import fuse
from warpweave.passes.cost import device_for
from warpweave.pipeline.compile import compile_graph, lower_kernels
from warpweave.schedule.choose import default_schedule
from warpweave.schedule.space import group_key
from warpweave.schedule.templates import GpuRowGroup

CASES = {
    "softmax": (lambda x: ww.softmax(x), softmax_reference),
    "log_softmax": (lambda x: ww.log_softmax(x), log_softmax_reference),
    "layer_norm": (lambda x, w, b: ww.layer_norm(x, w, b),
                   lambda x, w, b: layer_norm_reference(x, w, b)),
    "row_sum": (lambda x: x.sum(axis=-1), lambda x: x.sum(axis=-1)),
}


def _shapes(name, rows, n):
    return [(rows, n), (n,), (n,)] if name == "layer_norm" else [(rows, n)]


def _group(name, rows, n, dtype):
    graph, single = trace(CASES[name][0], [(s, dtype) for s in _shapes(name, rows, n)])
    inlined = fuse.inline_broadcast_producers(graph)
    (group,) = [g for g in fuse.plan(inlined, device_for("gpu", 132)).groups if g.pattern == "row"]
    return graph, single, inlined, group


def _check(name, rows, n, dtype, point=None, target="interp"):
    graph, single, inlined, group = _group(name, rows, n, dtype)
    point = point or default_schedule(group, inlined, "gpu")
    assert isinstance(point, GpuRowGroup) and n % point.vector
    program = compile_graph(graph, single, target, name, {group_key(group, inlined): point})
    rng = np.random.default_rng()
    args = [random_array(rng, s, dtype) for s in _shapes(name, rows, n)]
    assert_close(program(*args), CASES[name][1](*[a.astype(np.float64) for a in args]), dtype,
                 scale=1 + np.sqrt(n) / 8, what=f"{name} [{rows}, {n}] {dtype} under {point}")


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("rows,n,point", [
    (3, 4093, None),
    (3, 257, GpuRowGroup(threads=128, row_threads=32, vector=4, chunks=1, passes=3)),   # serial passes
    (5, 263, GpuRowGroup(threads=256, row_threads=4, vector=4, chunks=8, passes=3)),    # rows per block
    (2, 50257, GpuRowGroup(threads=1024, row_threads=1024, vector=4, chunks=4, passes=4)),
])
def test_ragged_rows_match_numpy(name, rows, n, point):
    _check(name, rows, n, "float32", point)


@pytest.mark.parametrize("name", ["softmax", "layer_norm"])
def test_ragged_rows_bfloat16(name):
    _check(name, 3, 4095, "bfloat16", GpuRowGroup(threads=256, row_threads=256, vector=8, chunks=2, passes=2))


def test_short_odd_rows_keep_the_dividing_width():
    _, _, inlined, group = _group("softmax", 3, 255, "float32")
    assert default_schedule(group, inlined, "gpu").vector == 1


@pytest.mark.ptx
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_ragged_rows_assemble_to_aligned_wide_accesses(dtype):
    from warpweave.backends.cuda.codegen import compile_ptx
    from warpweave.passes.manager import PassManager
    from warpweave.pipeline.compile import PIPELINE

    _, _, inlined, group = _group("softmax", 1024, 50257, dtype)
    point = GpuRowGroup(threads=1024, row_threads=1024, vector=16 // np.dtype(np.float32).itemsize
                        * (2 if dtype == "bfloat16" else 1), chunks=4, passes=2 if dtype == "bfloat16" else 4)
    _, ptx = compile_ptx([PassManager(PIPELINE).run(k) for k in lower_kernels(group, inlined, point, "k")])
    assert "ld.global.nc.v4.b32" in ptx and "st.global.v4.b32" in ptx
    assert_ptxas_accepts(ptx)


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("rows,n,dtype", [(64, 50257, "float32"), (33, 4095, "bfloat16"), (3, 30523, "float32")])
def test_ragged_rows_on_the_gpu(name, rows, n, dtype):
    graph, _, inlined, group = _group(name, rows, n, dtype)
    point = default_schedule(group, inlined, "gpu")
    if not isinstance(point, GpuRowGroup) or n % point.vector == 0:
        point = GpuRowGroup(threads=1024, row_threads=1024, vector=4, chunks=4, passes=-(-n // 16384))
    _check(name, rows, n, dtype, point, target="cuda")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_large_ragged_rows_verify(dtype):
    """Bounds too many to check point by point are proven: a weight's column is spelled
    from the head's length in its evident range (`_broadcast_columns`), the row's runs
    under their guard."""
    from warpweave.ir.gir_verify import verify

    _, _, inlined, group = _group("layer_norm", 4096, 4095, dtype)
    point = default_schedule(group, inlined, "gpu")
    assert 4095 % point.vector
    for k in lower_kernels(group, inlined, point, "k"):
        verify(k)


def _interp(name, rows, n, dtype, point, rng):
    """The group's kernels under `point` on the interpreter, outputs and temporaries
    poisoned with NaN first; returns (output, float64 reference)."""
    from warpweave.backends.interp import run_kernel
    from warpweave.ir.gir_verify import verify

    graph, _, inlined, group = _group(name, rows, n, dtype)
    args = [random_array(rng, s, dtype) for s in _shapes(name, rows, n)]
    (out,) = group.outputs
    bufs = {p: np.ascontiguousarray(a).reshape(-1) for p, a in zip(graph.inputs, args)}
    result = np.full(inlined[out].shape, np.nan, dtype=inlined[out].dtype.numpy)
    bufs[out] = result.reshape(-1)
    for k in lower_kernels(group, inlined, point, "k"):
        verify(k)
        for p in k.params:
            bufs.setdefault(p.name, np.full(p.size, np.nan, dtype=p.dtype.numpy))
        run_kernel(k, bufs)
    return result, CASES[name][1](*[a.astype(np.float64) for a in args])


@pytest.mark.parametrize("name", ["log_softmax", "layer_norm", "row_sum"])
@pytest.mark.parametrize("n", [1, 3, 7, 9, 17, 263])
def test_bfloat16_runs_of_16_bytes_at_every_misalignment(name, n):
    """Eight bfloat16 lanes (16 bytes) a run at widths shorter and longer than a run:
    over nine rows, row starts fall at every residue modulo 8, so the head and the tail
    take every length from 0 to 7."""
    rng = np.random.default_rng(n)
    point = GpuRowGroup(threads=64, row_threads=8, vector=8, chunks=2, passes=-(-n // 128))
    got, want = _interp(name, 9, n, "bfloat16", point, rng)
    assert_close(got, want, "bfloat16", scale=1 + np.sqrt(n) / 8, what=f"{name} [9, {n}] under {point}")


@pytest.mark.parametrize("name,rows,n", [("log_softmax", 2, 30522), ("layer_norm", 3, 4095),
                                         ("layer_norm", 1, 50257), ("log_softmax", 5, 4095)])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_default_ragged_points_on_the_interpreter_and_the_cpu(name, rows, n, dtype):
    """The default GPU point at long odd widths on the interpreter (poisoned outputs), and
    the same program on the LLVM CPU backend, against numpy in float64."""
    rng = np.random.default_rng(rows * n)
    graph, single, inlined, group = _group(name, rows, n, dtype)
    point = default_schedule(group, inlined, "gpu")
    assert isinstance(point, GpuRowGroup) and point.vector * np.dtype(dtype).itemsize == 16
    got, want = _interp(name, rows, n, dtype, point, rng)
    assert_close(got, want, dtype, scale=1 + np.sqrt(n) / 8, what=f"{name} [{rows}, {n}] under {point}")
    args = [random_array(rng, s, dtype) for s in _shapes(name, rows, n)]
    assert_close(compile_graph(graph, single, "cpu", name)(*args),
                 CASES[name][1](*[a.astype(np.float64) for a in args]), dtype, scale=1 + np.sqrt(n) / 8)


@pytest.mark.ptx
@pytest.mark.parametrize("name,n", [("log_softmax", 30522), ("layer_norm", 4095), ("softmax", 50257)])
def test_bfloat16_ragged_rows_load_16_bytes_and_weights_without_division(name, n):
    """The default bfloat16 point's runs are 16-byte accesses (v4.b32); a weight read by
    every row is addressed without a division or remainder per lane (no 64-bit
    multiply-high, which a remainder by the row length compiles to)."""
    from warpweave.backends.cuda.codegen import compile_ptx
    from warpweave.passes.manager import PassManager
    from warpweave.pipeline.compile import PIPELINE

    _, _, inlined, group = _group(name, 64, n, "bfloat16")
    point = default_schedule(group, inlined, "gpu")
    _, ptx = compile_ptx([PassManager(PIPELINE).run(k) for k in lower_kernels(group, inlined, point, "k")])
    assert "ld.global.nc.v4.b32" in ptx and "st.global.v4.b32" in ptx
    assert "mul.hi" not in ptx and "rem." not in ptx
    assert_ptxas_accepts(ptx)
