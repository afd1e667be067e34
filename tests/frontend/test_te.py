"""Tensor expressions (ww.placeholder / ww.compute / ww.reduce_axis) built into tensor
graphs and run with the reference executor against numpy in float64."""
import math

import ml_dtypes
import numpy as np
import pytest

import warpweave as ww
from warpweave.frontend.te import build_graph
from warpweave.errors import ArgumentError, DTypeError, ShapeError, UnsupportedError
from warpweave.ir import dtypes as dt
from warpweave.ir import expr as ex
from warpweave.ir.tensor import ComputeOp, evaluate

BF16 = np.dtype(ml_dtypes.bfloat16)
RTOL = {"float64": 1e-12, "float32": 1e-5, "float16": 2e-3, "bfloat16": 2e-2}
rng = np.random.default_rng()


def rand(shape, dtype):
    d = dt.dtype(dtype)
    if d.is_float:
        return rng.standard_normal(shape).astype(d.numpy)
    if d.is_int:
        return rng.integers(-20, 20, size=shape).astype(d.numpy)
    return rng.random(shape) < 0.5


def run(outputs, inputs, *arrays):
    g = build_graph(outputs, inputs)
    values = evaluate(g, {p.name: a for p, a in zip(inputs, arrays)})
    return [values[n] for n in g.outputs], g


def f64(a):
    a = np.asarray(a)
    return a.astype(np.float64) if a.dtype.kind == "f" or a.dtype == BF16 else a


def assert_close(got, ref, scale=None, tol=None):
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape
    name = "bfloat16" if got.dtype == BF16 else str(got.dtype)
    if name not in RTOL:
        np.testing.assert_array_equal(got, ref)
        return
    tol = tol or RTOL[name]
    s = scale if scale is not None else max(1.0, float(np.max(np.abs(ref), initial=0.0)))
    np.testing.assert_allclose(got.astype(np.float64), ref, rtol=tol, atol=tol * s, equal_nan=True)


# ----------------------------------------------------------------------------- basics

def test_elementwise_and_names():
    A = ww.placeholder((4, 5), "float32", name="A")
    B = ww.placeholder((5,), ww.float32, name="B")
    C = ww.compute((4, 5), lambda i, j: A[i, j] * 2 + B[j], name="C")
    a, b = rand((4, 5), "float32"), rand((5,), "float32")
    (c,), g = run(C, [A, B], a, b)
    assert g.inputs == ("A", "B") and g.outputs == ("C",)
    assert str(g["C"].body) == "((A[i0, i1] * 2.0:float32) + B[i1])"
    assert c.dtype == np.float32 and C.dtype == np.float32 and C.shape == (4, 5)
    assert_close(c, f64(a) * 2 + f64(b))


@pytest.mark.parametrize("d", ["float32", "float16", "bfloat16", "int32"])
def test_matmul_with_reduce_axis(d):
    n, k, m = 6, 7, 5
    A = ww.placeholder((n, k), d, name="A")
    B = ww.placeholder((k, m), d, name="B")
    r = ww.reduce_axis(k, name="k")
    C = ww.compute((n, m), lambda i, j: ww.sum(A[i, r] * B[r, j], axis=r), name="C")
    a, b = rand((n, k), d), rand((k, m), d)
    (c,), g = run(C, [A, B], a, b)
    op = g["C"]
    assert isinstance(op.body, ex.Reduce) and [v.name for v in op.reduce_axes] == ["r0"]
    assert op.kind == "contraction"
    assert c.dtype == dt.dtype(d).numpy
    if d == "int32":
        np.testing.assert_array_equal(c, a @ b)
    else:
        assert_close(c, f64(a) @ f64(b), scale=float((np.abs(f64(a)) @ np.abs(f64(b))).max()))


def test_max_min_over_several_axes():
    A = ww.placeholder((3, 4, 5), "float32", name="A")
    k1, k2 = ww.reduce_axis(3), ww.reduce_axis(5)
    Mx = ww.compute((4,), lambda j: ww.max(A[k1, j, k2], axis=(k1, k2)), name="Mx")
    Mn = ww.compute((4,), lambda j: ww.min(A[k1, j, k2] * -1.0, axis=[k2, k1]), name="Mn")
    a = rand((3, 4, 5), "float32")
    (mx, mn), g = run([Mx, Mn], [A], a)
    np.testing.assert_array_equal(mx, a.max(axis=(0, 2)))
    np.testing.assert_array_equal(mn, (-a).min(axis=(0, 2)))
    assert [v.name for v in g["Mx"].reduce_axes] == ["r0", "r1"]


def test_row_softmax_pipeline():
    n, m = 8, 16
    X = ww.placeholder((n, m), "float16", name="X")
    k = ww.reduce_axis(m, name="k")
    M = ww.compute((n,), lambda i: ww.max(X[i, k].astype("float32"), axis=k), name="M")
    E = ww.compute((n, m), lambda i, j: ww.exp(X[i, j] - M[i]), name="E")
    k2 = ww.reduce_axis(m, name="k")  # a second axis with the same name is a different axis
    S = ww.compute((n,), lambda i: ww.sum(E[i, k2], axis=k2), name="S")
    Y = ww.compute((n, m), lambda i, j: (E[i, j] / S[i]).astype("float16"), name="Y")
    x = rand((n, m), "float16")
    (y,), g = run(Y, [X], x)
    v = f64(x)
    e = np.exp(v - v.max(1, keepdims=True))
    assert y.dtype == np.float16
    assert_close(y, e / e.sum(1, keepdims=True))
    assert [op.name for op in g.compute_ops] == ["M", "E", "S", "Y"]


def test_index_arithmetic_and_constants():
    A = ww.placeholder((10,), "float32", name="A")
    B = ww.compute((4,), lambda i: A[i * 2 + 1] + A[9 - i] + A[(i + 7) // 2] - A[i % 3], name="B")
    C = ww.compute((3,), lambda i: A[0] * i, name="C")  # int64 index * float32 -> float64 (numpy)
    D = ww.compute((2, 2), lambda i, j: 1.5, name="D")
    a = rand((10,), "float32")
    (b, c, d), g = run([B, C, D], [A], a)
    idx = np.arange(4)
    assert_close(b, f64(a)[idx * 2 + 1] + f64(a)[9 - idx] + f64(a)[(idx + 7) // 2] - f64(a)[idx % 3])
    assert c.dtype == np.float64
    assert_close(c, f64(a)[0] * np.arange(3))
    np.testing.assert_array_equal(d, np.full((2, 2), 1.5))


def test_operator_sugar_and_promotion():
    A = ww.placeholder((6,), "float16", name="A")
    I = ww.placeholder((6,), "int32", name="I")
    M = ww.placeholder((6,), "bool", name="M")
    outs = [
        ww.compute((6,), lambda i: A[i] + 1.5),              # float16 (weak scalar)
        ww.compute((6,), lambda i: I[i] / 2),                 # float64
        ww.compute((6,), lambda i: I[i] * A[i]),              # float64
        ww.compute((6,), lambda i: -A[i] ** 2 + abs(I[i])),   # float64
        ww.compute((6,), lambda i: (A[i] > 0) & M[i] | ~M[i]),
        ww.compute((6,), lambda i: ww.where(M[i], A[i], 0.0)),
        ww.compute((6,), lambda i: ww.maximum(I[i], 3)),
        ww.compute((6,), lambda i: ww.sigmoid(A[i]) * ww.tanh(I[i])),
        ww.compute((6,), lambda i: 2 - I[i] != 3),
        ww.compute((6,), lambda i: A[i].astype("bfloat16") + 1.0),
    ]
    a, ii, m = rand((6,), "float16"), rand((6,), "int32"), rand((6,), "bool")
    got, _ = run(outs, [A, I, M], a, ii, m)
    av = f64(a)
    wants = [
        a + 1.5, ii / 2, ii * a, -a.astype(np.float64) ** 2 + np.abs(ii), (a > 0) & m | ~m,
        np.where(m, a, np.float16(0.0)), np.maximum(ii, 3),
        None, 2 - ii != 3, None,
    ]
    dtypes = [np.float16, np.float64, np.float64, np.float64, np.bool_, np.float16, np.int32,
              np.float64, np.bool_, BF16]
    for k, (g, w, d) in enumerate(zip(got, wants, dtypes)):
        assert g.dtype == d, k
        if w is not None:
            assert_close(g, f64(w))
    # float16 intermediates inside one expression are computed in float32
    assert_close(got[7], (1 / (1 + np.exp(-av))) * np.tanh(ii), tol=1e-5)
    assert_close(got[-1], av + 1.0, scale=float(np.abs(av).max() + 1) * 2)


def test_gather_through_integer_loads():
    A = ww.placeholder((8,), "float32", name="A")
    Idx = ww.placeholder((5,), "int32", name="Idx")
    G = ww.compute((5,), lambda i: A[Idx[i]], name="G")
    a, idx = rand((8,), "float32"), rng.integers(0, 8, size=5).astype(np.int32)
    (g,), _ = run(G, [A, Idx], a, idx)
    np.testing.assert_array_equal(g, a[idx])


# ----------------------------------------------------------------------------- build_graph

def test_unreachable_computes_are_dropped_and_unused_inputs_kept():
    A = ww.placeholder((4,), name="A")
    U = ww.placeholder((2,), name="U")
    ww.compute((4,), lambda i: A[i] * 3, name="Dead")
    B = ww.compute((4,), lambda i: A[i] + 1, name="B")
    _, g = run(B, [A, U], rand((4,), "float32"), rand((2,), "float32"))
    assert [op.name for op in g.compute_ops] == ["B"]
    assert g.inputs == ("A", "U")


def test_outputs_that_are_placeholders_or_repeated_get_copies():
    A = ww.placeholder((3,), name="A")
    B = ww.compute((3,), lambda i: A[i] * 2, name="B")
    a = rand((3,), "float32")
    (x, y, z), g = run([A, B, B], [A], a)
    assert len(set(g.outputs)) == 3 and all(isinstance(g[n], ComputeOp) for n in g.outputs)
    np.testing.assert_array_equal(x, a)
    np.testing.assert_array_equal(y, z)


def test_auto_names_are_unique():
    A, B = ww.placeholder((3,)), ww.placeholder((3,))
    assert A.name != B.name
    C = ww.compute((3,), lambda i: A[i] + B[i])
    D = ww.compute((3,), lambda i: C[i] * 2)
    a, b = rand((3,), "float32"), rand((3,), "float32")
    (d,), g = run(D, [A, B], a, b)
    assert len({A.name, B.name, C.name, D.name}) == 4
    assert_close(d, (f64(a) + f64(b)) * 2)


def test_build_errors():
    A = ww.placeholder((3,), name="A")
    B = ww.placeholder((3,), name="B")
    C = ww.compute((3,), lambda i: A[i] + B[i], name="C")
    with pytest.raises(ArgumentError, match=r"\['B'\].*not listed"):
        build_graph(C, [A])
    A2 = ww.placeholder((3,), name="A")
    D = ww.compute((3,), lambda i: A[i] + A2[i], name="D")
    with pytest.raises(ArgumentError, match="named 'A'"):
        build_graph(D, [A, A2])
    with pytest.raises(ArgumentError, match="placeholders"):
        build_graph(C, [A, C])
    with pytest.raises(ArgumentError, match="twice"):
        build_graph(C, [A, B, A])
    with pytest.raises(ArgumentError, match="outputs"):
        build_graph([C, 3], [A, B])


# ----------------------------------------------------------------------------- errors in expressions

def test_reducer_only_at_the_root():
    A = ww.placeholder((4, 5), name="A")
    k = ww.reduce_axis(5)
    with pytest.raises(UnsupportedError, match="reducer"):
        ww.compute((4,), lambda i: ww.sum(A[i, k], axis=k) * 2)
    with pytest.raises(UnsupportedError, match="reducer"):
        ww.compute((4,), lambda i: 1 + ww.sum(A[i, k], axis=k))
    with pytest.raises(UnsupportedError, match="reducer"):
        ww.compute((4,), lambda i: ww.exp(ww.max(A[i, k], axis=k)))
    with pytest.raises(UnsupportedError, match="reducer"):
        ww.compute((4,), lambda i: ww.sum(ww.sum(A[i, k], axis=k), axis=k))


def test_reducer_outside_compute():
    A = ww.placeholder((4, 5), name="A")
    k = ww.reduce_axis(5)
    with pytest.raises(UnsupportedError, match="body of ww.compute"):
        ww.sum(A[0, k], axis=k)
    with pytest.raises(UnsupportedError, match="ww.jit"):
        ww.max(np.ones(3))
    with pytest.raises(UnsupportedError, match="index the tensor"):
        ww.min(A, axis=k)
    with pytest.raises(UnsupportedError, match="reduce_axis"):
        ww.compute((4,), lambda i: ww.sum(A[i, 0], axis=i))


def test_reduce_axis_used_outside_its_reducer():
    A = ww.placeholder((4, 5), name="A")
    k = ww.reduce_axis(5, name="kk")
    with pytest.raises(UnsupportedError, match=r"\['kk'\]"):
        ww.compute((4,), lambda i: A[i, k] * 2)
    j = ww.reduce_axis(4, name="jj")
    with pytest.raises(UnsupportedError, match=r"\['jj'\]"):
        ww.compute((4,), lambda i: ww.sum(A[j, k], axis=k))


def test_shape_and_type_errors():
    A = ww.placeholder((4, 5), "float32", name="A")
    with pytest.raises(ShapeError, match=r"\(4, 5\).*2 indices, got 1"):
        ww.compute((4,), lambda i: A[i])
    with pytest.raises(ShapeError, match="2 dimensions"):
        ww.compute((4, 5), lambda i: A[i, 0])
    with pytest.raises(DTypeError, match="float"):
        ww.compute((4,), lambda i: A[i * 1.5, 0])
    with pytest.raises(UnsupportedError, match="slices"):
        ww.compute((4,), lambda i: A[i, 1:3])
    with pytest.raises(UnsupportedError, match="ww.where"):
        ww.compute((4,), lambda i: A[i, 0] if A[i, 0] > 0 else 0.0)
    with pytest.raises(UnsupportedError, match="integer index"):
        ww.compute((4,), lambda i: A[i, 0] // 2)
    with pytest.raises(ShapeError, match="empty reduce axis"):
        e = ww.reduce_axis(0)
        ww.compute((4,), lambda i: ww.max(A[i, e], axis=e))
    with pytest.raises(UnsupportedError, match="value expression"):
        ww.compute((4,), lambda i: A)
    with pytest.raises(ww.DTypeError, match="int8"):
        ww.placeholder((3,), "int8")


def test_empty_sum_is_zero_and_sum_of_constant():
    A = ww.placeholder((3,), name="A")
    e = ww.reduce_axis(0)
    k = ww.reduce_axis(4)
    Z = ww.compute((3,), lambda i: ww.sum(A[i] * 1.0, axis=e), name="Z")
    N = ww.compute((3,), lambda i: ww.sum(A[i], axis=k), name="N")
    a = rand((3,), "float32")
    (z, n), _ = run([Z, N], [A], a)
    np.testing.assert_array_equal(z, np.zeros(3, np.float32))
    assert_close(n, 4 * f64(a))


def test_math_functions_on_values_follow_numpy_types():
    I = ww.placeholder((5,), "int32", name="I")
    B = ww.placeholder((5,), "bool", name="B")
    outs = [ww.compute((5,), lambda i: ww.exp(I[i] * 0.1)), ww.compute((5,), lambda i: ww.sqrt(B[i])),
            ww.compute((5,), lambda i: ww.erf(I[i])), ww.compute((5,), lambda i: ww.gelu(I[i] * 0.5))]
    ii, bb = rand((5,), "int32"), rand((5,), "bool")
    (e, s, r, g), _ = run(outs, [I, B], ii, bb)
    assert e.dtype == np.float64 and s.dtype == np.float16 and r.dtype == np.float64
    assert_close(e, np.exp(ii * 0.1))
    assert_close(s, np.sqrt(bb.astype(np.float64)))
    assert_close(r, np.array([math.erf(v) for v in ii]))
    v = ii * 0.5
    assert_close(g, 0.5 * v * (1 + np.array([math.erf(x / math.sqrt(2)) for x in v])))
