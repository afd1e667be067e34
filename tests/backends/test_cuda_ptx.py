"""The CUDA code generator without a GPU: every template and dtype lowers to PTX
that ptxas accepts, with the instructions the design calls for."""
from types import SimpleNamespace

import pytest
from llvmlite import ir

from tests.lower.test_lower import graph_for, single_kernel_schedule
from tests.utils import assert_ptxas_accepts, column_sum_tile, with_l2_prefetch
from warpweave.backends.cuda.codegen import CudaTarget, compile_ptx
from warpweave.schedule import templates as sch
from warpweave.lower.op import lower_op
from warpweave.errors import DTypeError, UnsupportedError
from warpweave.ir import dtypes as dt
from warpweave.ir import expr as ex
from warpweave.ir.gir import Buffer, KernelBuilder
from warpweave.ir.tensor import ComputeOp, Placeholder, TensorGraph

pytestmark = pytest.mark.ptx


@pytest.mark.parametrize("shape", [(32, 4096), (33, 4097), (1, 1), (65, 3)])
@pytest.mark.parametrize("d", [dt.float32, dt.float16, dt.bfloat16])
def test_every_gpu_template_assembles(shape, d):
    g, ops = graph_for(*shape, d)
    kernels = [lower_op(op, g, single_kernel_schedule(op, "gpu")) for op in ops]
    _, ptx = compile_ptx(kernels)
    assert ptx.count(".entry") == len(kernels)
    assert_ptxas_accepts(ptx)


def test_wide_accesses_shuffles_barriers_and_shared_memory():
    g, ops = graph_for(32, 4096, dt.float32)
    _, ew = compile_ptx([lower_op(ops[0], g, single_kernel_schedule(ops[0], "gpu"))])
    assert "ld.global.nc.v4.b32" in ew and "st.global.v4.b32" in ew
    _, rs = compile_ptx([lower_op(ops[1], g, single_kernel_schedule(ops[1], "gpu"))])
    assert rs.count("shfl.sync.bfly.b32") == 10
    assert "bar.sync" in rs and "st.shared" in rs and "ld.shared" in rs
    _, tr = compile_ptx([lower_op(ops[4], g, sch.GpuTranspose())])
    assert ".shared" in tr and "bar.sync" in tr
    g16, ops16 = graph_for(32, 4096, dt.bfloat16)
    _, ew16 = compile_ptx([lower_op(ops16[0], g16, single_kernel_schedule(ops16[0], "gpu"))])
    assert "ld.global.nc.v4.b32" in ew16  # eight bfloat16 per 16-byte access
    for ptx in (ew, rs, tr, ew16):
        assert_ptxas_accepts(ptx)


@pytest.mark.parametrize("op", ["exp", "log", "tanh", "erf", "sin", "cos", "sqrt", "rsqrt", "abs",
                                "sigmoid", "neg", "pow"])
@pytest.mark.parametrize("d", [dt.float32, dt.float16, dt.float64])
def test_math_functions_assemble(op, d):
    i, j = ex.Var("i"), ex.Var("j")
    x = Placeholder("x", (8, 64), d)
    a = ex.Load("x", (i, j), d)
    body = ex.binary(op, a, a) if op == "pow" else ex.unary(op, a)
    c = ComputeOp("y", (8, 64), d, (i, j), body)
    g = TensorGraph([x, c], ["x"], ["y"])
    _, ptx = compile_ptx([lower_op(c, g, single_kernel_schedule(c, "gpu"))])
    assert "call" not in ptx  # no libm on the GPU: everything inline
    if d == dt.float64:  # computed in double precision, never through float32
        assert ".f32" not in ptx
    assert_ptxas_accepts(ptx)


def test_shuffles_of_every_width_assemble():
    for d in (dt.float64, dt.int32, dt.int64, dt.float16, dt.bool_):
        i, r = ex.Var("i"), ex.Var("r")
        x = Placeholder("x", (4, 256), d)
        comb = "max"
        c = ComputeOp("m", (4,), d, (i,), ex.Reduce(comb, ex.Load("x", (i, r), d), (r,), (256,)))
        g = TensorGraph([x, c], ["x"], ["m"])
        _, ptx = compile_ptx([lower_op(c, g, single_kernel_schedule(c, "gpu"))])
        assert "shfl.sync" in ptx
        assert_ptxas_accepts(ptx)


def test_math_on_other_dtypes_is_a_clear_error():
    # GIR refuses transcendentals of integers outright ...
    with pytest.raises(DTypeError, match="exp needs a float operand"):
        ex.unary("exp", ex.Load("x", (ex.Var("i"),), dt.int32))
    # ... and the target names the op and dtype should one reach it anyway.
    module = ir.Module()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ir.IntType(32)]), "k")
    cg = SimpleNamespace(b=ir.IRBuilder(fn.append_basic_block()), module=module)
    with pytest.raises(UnsupportedError, match="exp on int32"):
        CudaTarget().math(cg, "exp", [fn.args[0]], dt.int32)
    with pytest.raises(UnsupportedError, match="no cuda implementation of lgamma on float64"):
        CudaTarget().math(cg, "lgamma", [ir.Constant(ir.DoubleType(), 1.0)], dt.float64)


def test_bfloat16_rounding_and_fused_multiply_adds():
    """bfloat16 values round two at a time (`cvt.rn.bf16x2.f32`): the stored result and
    the fused intermediate x + b (rounded for its consumer as eager rounds it), bfloat16
    inputs widen in one instruction each (no 16-bit moves), a bfloat16 input read back in
    float32 is not rounded twice, and a·b + c contracts into `fma.rn.f32`."""
    import numpy as np

    import warpweave as ww
    from tests.utils import random_array

    x = random_array(np.random.default_rng(), (64, 256), "bfloat16")
    b = random_array(np.random.default_rng(), (256,), "bfloat16")
    program = ww.jit(lambda x, b: ww.gelu(x + b, approximate="tanh"), target="cuda").lower(x, b)
    ptx = program.dump("ptx")
    (kernel,) = program.kernels
    assert ptx.count("cvt.rn.bf16x2.f32") == 2 * (kernel.schedule.vector // 2)  # per pair: x + b, result
    assert "cvt.rn.bf16.f32" not in ptx and "cvt.u32.u16" not in ptx
    assert "fma.rn.f32" in ptx and "setp.nan" not in ptx
    assert_ptxas_accepts(ptx)


@pytest.mark.parametrize("d, width", [(dt.float32, 16), (dt.bfloat16, 8), (dt.float16, 8)])
@pytest.mark.parametrize("size", [64, 128, 256])
def test_l2_prefetch_hints_become_ld_global_nc_with_a_prefetch_size(d, width, size):
    kernel = with_l2_prefetch(column_sum_tile(d, 512, 1024), size)
    _, ptx = compile_ptx([kernel])
    loads = [line for line in ptx.splitlines() if "ld.global" in line]
    shape = {16: ".v4.b32", 8: ".v2.b32"}[width]
    assert loads and all(f"ld.global.nc.L2::{size}B{shape}" in line for line in loads), loads
    assert_ptxas_accepts(ptx)


@pytest.mark.parametrize("d, form", [(dt.float32, "ld.global.nc.L2::128B.b32"), (dt.float16, None)])
def test_l2_prefetch_hints_on_scalar_loads(d, form):
    """4-byte scalars take the hint; narrower loads are plain (no 16-bit form is emitted)."""
    b = KernelBuilder("scalar")
    b.add_param(Buffer("x", d, (64,), (1,), "in"))
    b.add_param(Buffer("y", d, (64,), (1,), "out"))
    t = b.scope("block", "t", 64, b.scope("grid", "g", 1, None))
    b.store("y", ex.Var("t"), b.load("x", ex.Var("t"), t), t)
    _, ptx = compile_ptx([with_l2_prefetch(b.build(), 128)])
    loads = [line for line in ptx.splitlines() if "ld.global" in line]
    assert len(loads) == 1 and (form in loads[0] if form else "L2::" not in loads[0]), loads
    assert_ptxas_accepts(ptx)


@pytest.mark.parametrize("d", [dt.float32, dt.bfloat16])
def test_large_four_axis_elementwise_compiles_for_the_gpu(d):
    """ViT-B/16's attention probabilities at batch 64 ([64, 12, 197, 197], more points
    than the verifier enumerates): the flat vectorized index is proven in bounds."""
    from warpweave.frontend.trace import trace
    from warpweave.pipeline.autotune import compile_program

    shape = (64, 12, 197, 197)
    graph, _ = trace(lambda x, y: x * y + 1.0, [(shape, d), (shape, d)])
    program = compile_program(graph, False, "cuda", "probs")
    assert len(program.kernels) == 1


@pytest.mark.parametrize("d", [dt.float32, dt.float64, dt.bfloat16])
def test_rounding_is_one_conversion_instruction(d):
    """floor, ceil, trunc and round (half to even) lower to PTX's cvt.rmi/rpi/rzi/rni."""
    from warpweave.frontend.algebra import elem_unary
    from warpweave.frontend.tensor import map_elementwise
    from warpweave.frontend.trace import trace
    from warpweave.pipeline.autotune import compile_program

    def fn(x):
        return [map_elementwise(op, lambda v, op=op: elem_unary(op, v), x) for op in ("floor", "ceil", "trunc", "round")]

    graph, _ = trace(fn, [((33, 65), d)])
    program = compile_program(graph, False, "cuda", "rounding")
    ptx = program.runner.stages["ptx"]
    for mode in ("rmi", "rpi", "rzi", "rni"):
        assert f"cvt.{mode}." in ptx, mode
    assert_ptxas_accepts(ptx)


@pytest.mark.parametrize("shape", [(64, 50257), (4096, 7), (3, 1)])
def test_argmax_over_rows_assembles(shape):
    """The torch backend's argmax (a max, then the least position holding it: an int64
    min reduction across lanes and warps) lowers to PTX that ptxas accepts."""
    pytest.importorskip("torch", reason="the argmax lowered here is the torch backend's converter")
    from warpweave.frontend.torch.convert import _arg_extreme
    from warpweave.frontend.trace import trace
    from warpweave.pipeline.autotune import compile_program

    graph, _ = trace(lambda x: _arg_extreme("max", x, -1, False), [(shape, dt.bfloat16)])
    program = compile_program(graph, False, "cuda", "argmax")
    assert_ptxas_accepts(program.runner.stages["ptx"])


def test_gather_at_computed_float_positions_assembles():
    """A gather whose index is computed in float32 in the same kernel (nearest
    interpolation) takes it as a data index: PTX that ptxas accepts."""
    torch = pytest.importorskip("torch", reason="the gather is traced from a PyTorch interpolation")
    from torch.fx.experimental.proxy_tensor import make_fx

    from warpweave.frontend.torch.backend import decompositions
    from warpweave.frontend.torch.partition import build_call

    fn = lambda x: torch.nn.functional.interpolate(x, size=(7, 9), mode="nearest") * 2  # noqa: E731
    gm = make_fx(fn, tracing_mode="fake", decomposition_table=decompositions())(torch.randn(2, 3, 5, 4))
    call = build_call(gm, "cuda", "nearest")
    assert_ptxas_accepts(call.program.runner.stages["ptx"])
