"""Contraction groups on the CPU: planning (the product and its elementwise epilogue
in one group), lowering under CpuContraction, and the kernels on the interpreter and
in native code (host BLAS and loop nest) against numpy in float64, outputs poisoned."""
import math

import numpy as np
import pytest

import warpweave as ww
from tests.utils import assert_close, random_array
from warpweave.backends import cpu
from warpweave.backends.interp import run_kernel
from warpweave.frontend.trace import trace
from warpweave.ir import dtypes as dt
from warpweave.ir.gir_verify import verify
from warpweave.lower.contraction_cpu import lower_contraction
from warpweave.passes import fuse
from warpweave.passes.cost import HOST_CPU
from warpweave.schedule import templates as sch
from warpweave.schedule.choose import default_schedule
from warpweave.schedule.space import space

_erf = np.vectorize(math.erf)


def _gelu(x):
    return 0.5 * x * (1 + _erf(x / np.sqrt(2)))


CASES = {  # name: (traced fn, numpy float64 fn, input shapes, epilogue ops)
    "mm": (lambda a, b: a @ b, lambda a, b: a @ b, [(7, 5), (5, 3)], 0),
    "odd": (lambda a, b: a @ b, lambda a, b: a @ b, [(129, 33), (33, 65)], 0),
    "row": (lambda a, b: a @ b, lambda a, b: a @ b, [(1, 9), (9, 4)], 0),
    "mv": (lambda a, b: a @ b, lambda a, b: a @ b, [(300, 7), (7,)], 0),
    "dot": (lambda a, b: a @ b, lambda a, b: a @ b, [(9,), (9,)], 0),
    "a-transposed": (lambda a, b: a.T @ b, lambda a, b: a.T @ b, [(33, 130), (33, 6)], 0),
    "b-transposed": (lambda a, b: a @ b.T, lambda a, b: a @ b.T, [(130, 33), (6, 33)], 0),
    "flipped-strided": (lambda a, b: a[::-1] @ b[:, ::2], lambda a, b: a[::-1] @ b[:, ::2],
                        [(9, 5), (5, 8)], 0),  # no unit stride in b: the loop nest, BLAS or not
    "bmm": (lambda a, b: a @ b, lambda a, b: a @ b, [(3, 20, 7), (3, 7, 5)], 0),
    "broadcast-batch": (lambda a, b: a @ b, lambda a, b: a @ b, [(3, 20, 7), (7, 5)], 0),
    "broadcast-a": (lambda a, b: a @ b, lambda a, b: a @ b, [(20, 7), (2, 3, 7, 5)], 0),
    "bias-gelu": (lambda x, w, b: ww.gelu(x @ w + b), lambda x, w, b: _gelu(x @ w + b),
                  [(300, 24), (24, 40), (40,)], 2),
    "bias-gelu-residual": (lambda x, w, b, r: ww.gelu(x @ w + b) + r,
                           lambda x, w, b, r: _gelu(x @ w + b) + r,
                           [(150, 24), (24, 40), (40,), (150, 40)], 3),
    "bmm-scale": (lambda a, b: (a @ b) * 0.5, lambda a, b: (a @ b) * 0.5, [(2, 65, 9), (2, 9, 11)], 1),
}


def _group(fn, shapes, dtype):
    graph, _ = trace(fn, [(s, dtype) for s in shapes])
    graph = fuse.inline_broadcast_producers(graph)
    plan = fuse.plan(graph, HOST_CPU, contractions=True)
    groups = [g for g in plan.groups if g.pattern == "contraction"]
    assert len(plan.groups) == 1 and len(groups) == 1, [str(g) for g in plan.groups]
    return groups[0], graph


def _buffers(kernels, graph, inputs):
    """Inputs, and every other buffer the kernels take poisoned."""
    bufs = {n: np.ascontiguousarray(a).reshape(-1) for n, a in inputs.items()}
    for k in kernels:
        for p in k.params:
            if p.name not in bufs:
                bufs[p.name] = np.full(p.size, np.nan, dtype=p.dtype.numpy)
    return bufs


def _run(kernels, bufs, runner):
    if runner == "interp":
        for k in kernels:
            run_kernel(k, bufs)
        return
    code = cpu.compile_code(kernels, blas=None if runner == "loops" else "auto")
    exe = cpu.CpuExecutable(kernels, [1 << 20] * len(kernels), code=code)
    for k in kernels:
        exe.launch(k.name, [bufs[p.name].ctypes.data for p in k.params])


def _check(name, dtype, runner, schedule=None):
    fn, ref_fn, shapes, epilogue = CASES[name]
    group, graph = _group(fn, shapes, dtype)
    assert len(group.ops) == 1 + epilogue
    rng = np.random.default_rng()
    inputs = {f"arg{k}": random_array(rng, s, dtype) for k, s in enumerate(shapes)}
    schedule = schedule or default_schedule(group, graph, "cpu")
    kernels = [verify(k) for k in lower_contraction(group, graph, schedule, "t")]
    bufs = _buffers(kernels, graph, inputs)
    _run(kernels, bufs, runner)
    (out,) = group.outputs
    got = bufs[out].reshape(graph[out].shape)
    ref = ref_fn(*[a.astype(np.float64) for a in inputs.values()])
    k = graph[group.ops[0]].reduce.extents[0]
    assert_close(got, ref, dtype, scale=max(1.0, k ** 0.5), what=f"{name} {runner} {schedule}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_float32(name):
    for runner in ("interp", "blas"):
        _check(name, dt.float32, runner)


@pytest.mark.parametrize("name", ["odd", "a-transposed", "broadcast-a", "bias-gelu-residual"])
def test_loop_nest_without_blas(name):
    _check(name, dt.float32, "loops")


@pytest.mark.parametrize("dtype", [dt.float64, dt.bfloat16, dt.float16])
@pytest.mark.parametrize("name", ["odd", "bias-gelu-residual", "broadcast-batch", "mv"])
def test_other_dtypes(name, dtype):
    _check(name, dtype, "blas")
    _check(name, dtype, "interp")


@pytest.mark.parametrize("rows", [1, 32, 128])
def test_row_tiles_with_a_ragged_last_tile(rows):
    for runner in ("interp", "blas"):
        _check("bias-gelu-residual", dt.float32, runner, sch.CpuContraction(rows=rows, vector=8))


def test_space_points_lower_and_agree():
    group, graph = _group(*[CASES["bias-gelu"][i] for i in (0,)], CASES["bias-gelu"][2], dt.float32)
    points = space(group, graph, "cpu")
    assert points[0] == default_schedule(group, graph, "cpu")
    assert all(isinstance(p, sch.CpuContraction) for p in points) and len(points) > 4
    for p in points[::5]:
        _check("bias-gelu", dt.float32, "blas", p)


def test_epilogue_reading_the_product_elsewhere_stays_apart():
    """A consumer reading the product transposed is not an epilogue; a row softmax is not."""
    for fn in (lambda a, b: (a @ b).T + 1.0, lambda a, b: ww.softmax(a @ b, axis=-1)):
        graph, _ = trace(fn, [((6, 4), dt.float32), ((4, 6), dt.float32)])
        plan = fuse.plan(fuse.inline_broadcast_producers(graph), HOST_CPU, contractions=True)
        (product,) = [g for g in plan.groups if g.pattern == "contraction"]
        assert len(product.ops) == 1 and len(plan.groups) > 1


def test_gpu_plans_keep_contractions_single():
    graph, _ = trace(lambda a, b: ww.gelu(a @ b), [((6, 4), dt.float32), ((4, 6), dt.float32)])
    plan = fuse.plan(graph, HOST_CPU)
    assert all(g.pattern != "contraction" for g in plan.groups)


def test_jit_on_cpu_uses_the_contraction_template():
    rng = np.random.default_rng()
    f = ww.jit(lambda x, w, b: ww.gelu(x @ w + b), target="cpu")
    x, w, b = (random_array(rng, s, "float32") for s in [(1000, 33), (33, 129), (129,)])
    got = f(x, w, b)
    assert_close(got, _gelu(x.astype(np.float64) @ w + b), "float32", scale=6)
    program = f.lower(x, w, b)
    assert len(program.kernels) == 1
    assert isinstance(program.kernels[0].schedule, sch.CpuContraction)


def test_a_scaled_operand_stays_apart_from_the_product():
    """Inlining x * 0.5 into the product would make it a three-factor sum, which no
    contraction template takes: on the CPU the scaling keeps its own group."""
    graph, _ = trace(lambda x, w: (x * 0.5) @ w, [((30, 4), dt.float32), ((4, 5), dt.float32)])
    kept = fuse.inline_broadcast_producers(graph, contractions=True)
    plan = fuse.plan(kept, HOST_CPU, contractions=True)
    assert [g.pattern for g in plan.groups] == ["elementwise", "contraction"]
    widened, _ = trace(lambda x, w: x.astype("float32") @ w, [((30, 4), dt.bfloat16), ((4, 5), dt.float32)])
    inlined = fuse.inline_broadcast_producers(widened, contractions=True)
    assert len(inlined.compute_ops) == 1  # a widening cast folds into the product's loads
    assert len(fuse.inline_broadcast_producers(graph).compute_ops) == 1  # GPU plans inline as before


def test_epilogue_operations_traced_before_the_product():
    """An epilogue may hold operations that come before the product in the trace
    (exp(x), read by the sum after it): the product still leads its group, and the
    kernel computes them after each tile."""
    def fn(a, b, x):
        e = ww.exp(x)
        return e + a @ b

    shapes = [(40, 9), (9, 30), (40, 30)]
    group, graph = _group(fn, shapes, dt.float32)
    assert fuse.is_gemm(graph[group.ops[0]], graph) and len(group.ops) == 3, str(group)
    rng = np.random.default_rng()
    a, b, x = (random_array(rng, s, "float32") for s in shapes)
    got = ww.jit(fn, target="cpu")(a, b, x)
    assert_close(got, a.astype(np.float64) @ b + np.exp(x.astype(np.float64)), "float32", scale=3)
