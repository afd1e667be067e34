"""Elementwise groups over contiguous tensors vectorise over the flattened elements
whatever the width of the last axis, with a scalar tail: numpy float64 at odd shapes
on the interpreter, 16-byte accesses in the PTX (through ptxas), and the GPU."""
import numpy as np
import pytest

import warpweave as ww
from tests.utils import assert_close, assert_ptxas_accepts, random_array
from warpweave.frontend.trace import trace
from warpweave.passes import fuse
from warpweave.passes.cost import device_for
from warpweave.pipeline.compile import compile_graph, lower_kernels
from warpweave.schedule.choose import default_schedule, flat_elementwise
from warpweave.schedule.space import space
from warpweave.schedule.templates import GpuElementwise


def _fn(x, y):
    return ww.tanh(x) * y + 1.0


def _ref(x, y):
    return np.tanh(x) * y + 1.0


def _group(fn, shapes, dtype):
    graph, single = trace(fn, [(s, dtype) for s in shapes])
    inlined = fuse.inline_broadcast_producers(graph)
    (group,) = fuse.plan(inlined, device_for("gpu", 132)).groups
    return graph, single, inlined, group


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (5, 13), (2, 3, 5), (1, 4093)])
def test_odd_widths_vectorise_with_a_tail(shape, dtype, target="interp"):
    graph, single, inlined, group = _group(_fn, [shape, shape], dtype)
    point = default_schedule(group, inlined, "gpu")
    assert point == GpuElementwise(vector=16 // np.dtype(np.float32).itemsize * (2 if dtype == "bfloat16" else 1))
    assert all(p.vector <= point.vector for p in space(group, inlined, "gpu"))
    program = compile_graph(graph, single, target, "ew")
    rng = np.random.default_rng()
    x, y = random_array(rng, shape, dtype), random_array(rng, shape, dtype)
    assert_close(program(x, y), _ref(x.astype(np.float64), y.astype(np.float64)), dtype)


def test_broadcasts_keep_the_last_axis_rule():
    graph, single, inlined, group = _group(lambda x, b: x + b, [(3, 7), (7,)], "float32")
    assert not flat_elementwise([inlined[o] for o in group.ops], inlined)
    assert default_schedule(group, inlined, "gpu") == GpuElementwise(vector=1)
    _, _, inlined, group = _group(lambda x: x.T + 1.0, [(8, 8)], "float32")
    assert not flat_elementwise([inlined[o] for o in group.ops], inlined)


@pytest.mark.ptx
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_odd_widths_assemble_to_16_byte_accesses(dtype):
    from warpweave.backends.cuda.codegen import compile_ptx
    from warpweave.passes.manager import PassManager
    from warpweave.pipeline.compile import PIPELINE

    _, _, inlined, group = _group(_fn, [(301, 503)] * 2, dtype)
    kernels = [PassManager(PIPELINE).run(k) for k in
               lower_kernels(group, inlined, default_schedule(group, inlined, "gpu"), "ew")]
    _, ptx = compile_ptx(kernels)
    assert "ld.global.nc.v4.b32" in ptx and "st.global.v4.b32" in ptx
    assert_ptxas_accepts(ptx)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shape", [(3, 7), (301, 503), (1, 1)])
def test_odd_widths_on_the_gpu(shape, dtype):
    test_odd_widths_vectorise_with_a_tail(shape, dtype, target="cuda")
