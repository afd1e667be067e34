"""Rows split over several blocks (`GpuSplitRows`): partial statistics in DRAM, combined
by every block of the next kernel. Checked against numpy in float64 at odd widths and
row counts on the interpreter, as PTX through ptxas, and on the GPU."""
import numpy as np
import pytest

import warpweave as ww
from tests.utils import (assert_close, assert_ptxas_accepts, layer_norm_reference, log_softmax_reference,
                         random_array, softmax_reference)
from warpweave.errors import VerificationError
from warpweave.frontend.trace import trace
from tests.schedule.test_space import _without_barriers
from warpweave.ir.gir_verify import verify
from warpweave.passes import fuse
from warpweave.passes.cost import device_for
from warpweave.pipeline.compile import compile_graph, lower_kernels
from warpweave.schedule.choose import default_schedule
from warpweave.schedule.space import group_key, space
from warpweave.schedule.templates import GpuRowGroup, GpuSplitRows

CASES = {
    "softmax": (lambda x: ww.softmax(x), softmax_reference),
    "log_softmax": (lambda x: ww.log_softmax(x), log_softmax_reference),
    "layer_norm": (lambda x: ww.layer_norm(x), layer_norm_reference),
    "row_sum": (lambda x: x.sum(axis=-1), lambda x: x.sum(axis=-1)),
    "row_max": (lambda x: x.max(axis=-1), lambda x: x.max(axis=-1)),
}


def _row_group(fn, shape, dtype):
    graph, single = trace(fn, [(shape, dtype)])
    inlined = fuse.inline_broadcast_producers(graph)
    groups = [g for g in fuse.plan(inlined, device_for("gpu", 132)).groups if g.pattern == "row"]
    assert len(groups) == 1
    return graph, single, inlined, groups[0]


def _run(name, shape, dtype, point, target="interp"):
    fn, ref = CASES[name]
    graph, single, inlined, group = _row_group(fn, shape, dtype)
    program = compile_graph(graph, single, target, name, {group_key(group, inlined): point})
    assert all(k.schedule == point for k in program.kernels if k.ops == group.ops)
    x = random_array(np.random.default_rng(), shape, dtype)
    assert_close(program(x), ref(x.astype(np.float64)), dtype, scale=1 + np.sqrt(shape[-1]) / 8,
                 what=f"{name} {shape} {dtype} under {point}")
    return program


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("shape,point", [
    ((1, 7), GpuSplitRows(splits=2, threads=32, vector=1, chunks=1)),
    ((3, 1), GpuSplitRows(splits=2, threads=32, vector=1, chunks=1)),        # blocks without elements
    ((3, 4093), GpuSplitRows(splits=5, threads=64, vector=1, chunks=4)),     # serial passes per slice
    ((1, 50257), GpuSplitRows(splits=32, threads=128, vector=1, chunks=8)),
    ((2, 4096), GpuSplitRows(splits=4, threads=128, vector=4, chunks=2)),
])
def test_split_rows_match_numpy(name, shape, point):
    _run(name, shape, "float32", point)


@pytest.mark.parametrize("name,kernels", [("softmax", 2), ("log_softmax", 2), ("layer_norm", 2), ("row_sum", 2)])
def test_a_kernel_per_sweep(name, kernels):
    """A kernel per sweep — softmax's sum of exponentials is swept with its maximum and
    layer norm's squared deviations with its sum (online: each block against its own
    maximum or mean, combined in closed form), so x is read twice — and where the
    group's output is a row scalar, a last kernel combining."""
    program = _run(name, (3, 4093), "float32", GpuSplitRows(splits=5, threads=64, vector=1, chunks=4))
    assert len(program.kernels) == kernels


@pytest.mark.parametrize("name", ["softmax", "layer_norm"])
def test_split_rows_bfloat16(name):
    _run(name, (3, 1000), "bfloat16", GpuSplitRows(splits=4, threads=64, vector=4, chunks=1))


def test_long_rows_few_rows_split_by_default():
    for shape, split in [((8, 262144), True), ((1, 65536), True), ((2, 40000), False),
                         ((1024, 50257), False), ((4096, 1000), False)]:
        _, _, inlined, group = _row_group(CASES["softmax"][0], shape, "float32")
        point = default_schedule(group, inlined, "gpu")
        assert isinstance(point, GpuSplitRows) == split, (shape, point)
        points = space(group, inlined, "gpu")
        assert points[0] == point and any(isinstance(p, GpuRowGroup) for p in points)
        if split:  # every block has elements, a thread per partial combines them
            for p in points:
                if isinstance(p, GpuSplitRows):
                    assert 2 <= p.splits <= p.threads and (p.splits - 1) * p.slice_length(shape[1]) < shape[1]


def _kernels(name, shape, dtype, point):
    _, _, inlined, group = _row_group(CASES[name][0], shape, dtype)
    return lower_kernels(group, inlined, point, name)


def test_combining_without_barriers_fails_verification():
    kernels = _kernels("softmax", (3, 4093), "float32", GpuSplitRows(splits=5, threads=64, vector=1, chunks=4))
    for k in kernels:
        verify(k)
        assert any(n.op == "sync.block" for n in k.nodes)
        with pytest.raises(VerificationError):
            verify(_without_barriers(k))


@pytest.mark.ptx
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_split_rows_ptx_assembles(dtype):
    from warpweave.backends.cuda.codegen import compile_ptx
    from warpweave.passes.manager import PassManager
    from warpweave.pipeline.compile import PIPELINE

    kernels = [PassManager(PIPELINE).run(k) for k in
               _kernels("layer_norm", (3, 4093), dtype, GpuSplitRows(splits=5, threads=64, vector=1, chunks=4))
               + _kernels("softmax", (8, 262144), dtype, GpuSplitRows(splits=32, threads=256, vector=4, chunks=8))]
    _, ptx = compile_ptx(kernels)
    assert ptx.count(".entry") == len(kernels) == 4
    assert ("ld.global.nc.v4" if dtype == "float32" else "ld.global.nc.v2") in ptx and "bar.sync" in ptx
    assert_ptxas_accepts(ptx)


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("shape,dtype", [((8, 262144), "float32"), ((1, 65536), "bfloat16"), ((3, 70001), "float32")])
def test_split_rows_on_the_gpu(name, shape, dtype):
    _, _, inlined, group = _row_group(CASES[name][0], shape, dtype)
    _run(name, shape, dtype, default_schedule(group, inlined, "gpu") if shape[1] >= 65536 else
         GpuSplitRows(splits=16, threads=256, vector=1, chunks=8), target="cuda")


def test_online_softmax_reads_x_twice():
    """The cost model's count of the kernels' DRAM reads: x twice (the statistics, then
    the output), plus the partials."""
    from warpweave.passes.cost import H100, kernel_cost
    from warpweave.passes.manager import PassManager
    from warpweave.pipeline.compile import PIPELINE

    point = GpuSplitRows(splits=32, threads=256, vector=4, chunks=8)
    kernels = [PassManager(PIPELINE).run(k) for k in _kernels("softmax", (8, 262144), "float32", point)]
    x = 8 * 262144 * 4
    read = sum(kernel_cost(k, H100).global_read for k in kernels)
    assert len(kernels) == 2 and 2 * x <= read <= 2 * x + 4 * 8 * 32 * 4 * 256
