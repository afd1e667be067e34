"""match_contraction: matrix products traced through the frontend are described
exactly (checked by evaluating the description with numpy strides), and everything
else is not a contraction."""
import numpy as np
import pytest

from warpweave.frontend.trace import trace
from warpweave.ir import dtypes as dt
from warpweave.ir import expr as ex
from warpweave.ir.contraction import Contraction, Layout, match_contraction
from warpweave.ir.tensor import ComputeOp, evaluate

from ..utils import random_array


def _graph(fn, *specs):
    graph, _ = trace(fn, [(s, d) for s, d in specs])
    return graph


def _only(graph) -> tuple[ComputeOp, Contraction | None]:
    (op,) = [o for o in graph.compute_ops if o.reduce is not None]
    return op, match_contraction(op, graph)


def _view(buf: np.ndarray, layout: Layout, batch, rows: int, cols: int) -> np.ndarray:
    """The (batch..., rows, cols) matrix a layout describes in a flat buffer."""
    item = buf.itemsize
    return np.lib.stride_tricks.as_strided(
        buf[layout.offset:], shape=(*batch, rows, cols),
        strides=tuple(s * item for s in (*layout.batch, layout.rows, layout.cols)),
        writeable=False)


def _run(c: Contraction, arrays: dict[str, np.ndarray], out_shape) -> np.ndarray:
    """The contraction evaluated from its description alone, in float64."""
    a = _view(arrays[c.a.tensor].astype(np.float64).ravel(), c.a.layout, c.batch, c.m, c.k)
    b = _view(arrays[c.b.tensor].astype(np.float64).ravel(), c.b.layout, c.batch, c.k, c.n)
    out = np.full(int(np.prod(out_shape)), np.nan)
    target = np.lib.stride_tricks.as_strided(
        out[c.out_layout.offset:], shape=(*c.batch, c.m, c.n),
        strides=tuple(8 * s for s in (*c.out_layout.batch, c.out_layout.rows, c.out_layout.cols)))
    target[...] = a @ b
    return out.reshape(out_shape)


CASES = {
    "mm": (lambda a, b: a @ b, ((7, 5), (5, 3))),
    "mm-a-transposed": (lambda a, b: a.T @ b, ((5, 7), (5, 3))),
    "mm-b-transposed": (lambda a, b: a @ b.T, ((7, 5), (3, 5))),
    "mm-both-transposed": (lambda a, b: a.T @ b.T, ((5, 7), (3, 5))),
    "bmm": (lambda a, b: a @ b, ((4, 7, 5), (4, 5, 3))),
    "bmm-broadcast-b": (lambda a, b: a @ b, ((4, 7, 5), (5, 3))),
    "bmm-broadcast-a": (lambda a, b: a @ b, ((7, 5), (2, 4, 5, 3))),
    "bmm-unit-batch": (lambda a, b: a @ b, ((1, 7, 5), (4, 5, 3))),
    "bmm-two-batch": (lambda a, b: a @ b, ((2, 3, 7, 5), (2, 3, 5, 3))),
    "bmm-transposed-batch": (lambda a, b: a.transpose(1, 0, 2) @ b, ((7, 4, 5), (4, 5, 3))),
    "mv": (lambda a, b: a @ b, ((7, 5), (5,))),
    "vm": (lambda a, b: a @ b, ((5,), (5, 3))),
    "dot": (lambda a, b: a @ b, ((5,), (5,))),
    "row-times-matrix": (lambda a, b: a @ b, ((1, 5), (5, 3))),
    "sliced": (lambda a, b: a[1:, 2:] @ b[::2], ((8, 7), (10, 3))),
    "reshaped": (lambda a, b: a.reshape(7, 6) @ b, ((7, 2, 3), (6, 3))),
}


@pytest.mark.parametrize("name", CASES)
def test_described_product_matches_numpy(name):
    fn, shapes = CASES[name]
    graph = _graph(fn, *[(s, dt.float32) for s in shapes])
    op, c = _only(graph)
    assert c is not None, name
    assert c.out == op.name and c.acc == dt.float32 and c.out_dtype == dt.float32
    assert c.a.dtype == c.b.dtype == dt.float32
    rng = np.random.default_rng(1)
    arrays = {f"arg{k}": random_array(rng, s, dt.float32) for k, s in enumerate(shapes)}
    ref = fn(*[a.astype(np.float64) for a in arrays.values()])
    np.testing.assert_allclose(_run(c, arrays, op.shape), np.broadcast_to(ref, op.shape), rtol=1e-12)
    # the tensor graph's own semantics agree with the description
    got = evaluate(graph, arrays)[op.name]
    np.testing.assert_allclose(got, ref, rtol=2e-5, atol=1e-5)


def test_layout_details():
    c = _only(_graph(lambda a, b: a @ b.T, ((7, 5), dt.float32), ((3, 5), dt.float32)))[1]
    assert (c.batch, c.m, c.n, c.k) == ((), 7, 3, 5)
    assert c.a.layout == Layout((), 5, 1, 0) and c.a.tensor == "arg0"
    assert c.b.layout == Layout((), 1, 5, 0) and c.b.tensor == "arg1"
    assert c.out_layout == Layout((), 3, 1, 0)
    assert c.roles == ("m", "n") and c.flops == 2 * 7 * 3 * 5
    c = _only(_graph(lambda a, b: a @ b, ((4, 7, 5), dt.float32), ((5, 3), dt.float32)))[1]
    assert c.batch == (4,) and c.a.layout.batch == (35,) and c.b.layout.batch == (0,)
    assert c.out_layout == Layout((21,), 3, 1, 0) and c.roles == ("batch", "m", "n")
    mv = _only(_graph(lambda a, b: a @ b, ((7, 5), dt.float32), ((5,), dt.float32)))[1]
    assert (mv.m, mv.n, mv.roles) == (7, 1, ("m",)) and mv.b.layout.cols == 0
    vm = _only(_graph(lambda a, b: a @ b, ((5,), dt.float32), ((5, 3), dt.float32)))[1]
    assert (vm.m, vm.n, vm.roles) == (1, 3, ("n",)) and vm.a.tensor == "arg0"
    sliced = _only(_graph(lambda a: a[1:, 2:] @ a[:5, :3], ((8, 7), dt.float32)))[1]
    assert sliced.a.layout.offset == 9 and sliced.b.layout.offset == 0


@pytest.mark.parametrize("dtype", [dt.bfloat16, dt.float16])
def test_sixteen_bit_operands(dtype):
    c = _only(_graph(lambda a, b: a @ b, ((7, 5), dtype), ((5, 3), dtype)))[1]
    assert c.a.dtype == c.b.dtype == dtype and c.acc == dt.float32 and c.out_dtype == dtype


def test_widening_casts_are_part_of_the_operands():
    fn = lambda a, b: a.astype("float32") @ b  # noqa: E731
    graph = _graph(fn, ((7, 5), dt.bfloat16), ((5, 3), dt.float32))
    ops = [o for o in graph.compute_ops if o.reduce is not None]
    c = match_contraction(ops[0], graph)
    # the frontend may materialise the cast; either way the product is a contraction
    assert c is not None and c.acc == dt.float32
    assert c.a.compute == dt.float32 and c.a.dtype in (dt.bfloat16, dt.float32)


def _te_op(body_fn, shapes=((6, 4), (4, 5)), combiner="sum", dtype=dt.float32):
    """A hand-built ComputeOp out[i, j] = combiner_r body_fn(A-load, B-load, i, j, r)."""
    i, j, r = ex.Var("i"), ex.Var("j"), ex.Var("r")
    body = ex.Reduce(combiner, body_fn(i, j, r, dtype), [r], [4])
    return ComputeOp("out", (6, 5), body.dtype, (i, j), body), {"A": shapes[0], "B": shapes[1]}


def _a(i, r, d):
    return ex.Load("A", [i, r], d)


def _b(r, j, d):
    return ex.Load("B", [r, j], d)


NEGATIVES = {
    "max": lambda i, j, r, d: ex.mul(_a(i, r, d), _b(r, j, d)),
    "three-factors": lambda i, j, r, d: ex.mul(ex.mul(_a(i, r, d), _b(r, j, d)), _b(r, j, d)),
    "add": lambda i, j, r, d: ex.add(_a(i, r, d), _b(r, j, d)),
    "masked": lambda i, j, r, d: ex.select(ex.binary("lt", r, i), ex.mul(_a(i, r, d), _b(r, j, d)),
                                           ex.const(0.0, d)),
    "non-affine": lambda i, j, r, d: ex.mul(ex.Load("A", [i, ex.mod(r * r, 4)], d), _b(r, j, d)),
    "index-var-offset": lambda i, j, r, d: ex.mul(ex.Load("A", [i, ex.mod(r + j, 4)], d), _b(r, j, d)),
    "narrowing-cast": lambda i, j, r, d: ex.mul(ex.cast(_a(i, r, dt.float32), dt.bfloat16),
                                                ex.cast(_b(r, j, dt.float32), dt.bfloat16)),
    "scaled": lambda i, j, r, d: ex.mul(ex.mul(_a(i, r, d), ex.const(2.0, d)), _b(r, j, d)),
    "repeated-output": lambda i, j, r, d: ex.mul(ex.Load("A", [r, r], d), ex.Load("B", [r, r], d)),
}


@pytest.mark.parametrize("name", NEGATIVES)
def test_not_a_contraction(name):
    combiner = "max" if name == "max" else "sum"
    op, shapes = _te_op(NEGATIVES[name], combiner=combiner,
                        shapes=((6, 4), (4, 5)) if name != "repeated-output" else ((4, 4), (4, 4)))
    assert match_contraction(op, shapes) is None


def test_hand_built_product_matches():
    op, shapes = _te_op(lambda i, j, r, d: ex.mul(_a(i, r, d), _b(r, j, d)))
    c = match_contraction(op, shapes)
    assert (c.m, c.n, c.k) == (6, 5, 4) and c.a.layout == Layout((), 4, 1, 0)
    widened, _ = _te_op(lambda i, j, r, d: ex.mul(ex.cast(_a(i, r, dt.bfloat16), dt.float32),
                                                  ex.cast(_b(r, j, dt.float16), dt.float32)))
    c = match_contraction(widened, shapes)
    assert (c.a.dtype, c.a.compute, c.b.dtype, c.b.compute) == (
        dt.bfloat16, dt.float32, dt.float16, dt.float32)
    assert c.acc == c.out_dtype == dt.float32


def test_frontend_non_contractions():
    for fn, count in ((lambda a: a.sum(axis=0), 0), (lambda a: a.max(axis=1), 0),
                      (lambda a: (a * a).sum(axis=1), 0), (lambda a: (a @ a.T).sum(axis=1), 1)):
        graph = _graph(fn, ((6, 6), dt.float32))
        assert sum(match_contraction(o, graph) is not None for o in graph.compute_ops) == count


def test_bool_matmul_is_not_a_contraction():
    graph = _graph(lambda a, b: a @ b, ((3, 4), dt.bool_), ((4, 2), dt.bool_))
    assert all(match_contraction(o, graph) is None for o in graph.compute_ops)
