"""The function library (ww.exp ... ww.gelu) on traced tensors, checked against numpy
in float64 with the reference executor."""
import math

import ml_dtypes
import numpy as np
import pytest

from tests.utils import layer_norm_reference, log_softmax_reference, random_array, softmax_reference
import warpweave as ww
from warpweave.frontend.trace import trace
from warpweave.errors import Error, ShapeError, UnsupportedError
from warpweave.ir import dtypes as dt
from warpweave.ir import expr as ex
from warpweave.ir.tensor import evaluate

BF16 = np.dtype(ml_dtypes.bfloat16)
FLOATS = ["float32", "float16", "bfloat16"]
ALL = FLOATS + ["int32", "bool"]
RTOL = {"float64": 1e-12, "float32": 1e-5, "float16": 2e-3, "bfloat16": 2e-2}
rng = np.random.default_rng()


def rand(shape, dtype, positive=False):
    return random_array(rng, shape, dtype, positive=positive)


def run(fn, *arrays):
    graph, single = trace(fn, [(a.shape, dt.dtype(a.dtype)) for a in arrays])
    values = evaluate(graph, {f"arg{k}": a for k, a in enumerate(arrays)})
    return [values[n] for n in graph.outputs], graph


def f64(a):
    a = np.asarray(a)
    return a.astype(np.float64) if a.dtype.kind in "fV" or a.dtype == BF16 else a


def _dtname(d):
    d = np.dtype(d)
    return "bfloat16" if d == BF16 else str(d)


def assert_close(got, ref, *dtypes, scale=None):
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    tols = [RTOL[n] for n in map(_dtname, (got.dtype,) + dtypes) if n in RTOL]
    if not tols:
        np.testing.assert_array_equal(got, ref)
        return
    tol = max(tols)
    finite = np.abs(ref[np.isfinite(ref)])
    s = scale if scale is not None else max(1.0, float(np.max(finite, initial=0.0)))
    np.testing.assert_allclose(got.astype(np.float64), ref.astype(np.float64), rtol=tol, atol=tol * s,
                               equal_nan=True)


_erf = np.vectorize(math.erf, otypes=[np.float64])


def np_float_result(d):
    """numpy's dtype for exp() of dtype d (bfloat16 kept)."""
    if np.dtype(d) == BF16:
        return BF16
    return np.exp(np.ones(1, d)).dtype


UNARY = {
    "exp": (ww.exp, np.exp, False),
    "log": (ww.log, np.log, True),
    "tanh": (ww.tanh, np.tanh, False),
    "sqrt": (ww.sqrt, np.sqrt, True),
    "rsqrt": (ww.rsqrt, lambda x: 1.0 / np.sqrt(x), True),
    "sin": (ww.sin, np.sin, False),
    "cos": (ww.cos, np.cos, False),
    "erf": (ww.erf, _erf, False),
    "sigmoid": (ww.sigmoid, lambda x: 1.0 / (1.0 + np.exp(-x)), False),
}


@pytest.mark.parametrize("name", list(UNARY))
@pytest.mark.parametrize("d", ALL)
def test_unary_math(name, d):
    wfn, nfn, positive = UNARY[name]
    x = rand((5, 7), d, positive=positive)
    if d == "bool" and positive:
        x = np.ones((5, 7), bool)
    (got,), g = run(wfn, x)
    assert got.dtype == np_float_result(x.dtype)
    assert len(g.compute_ops) == 1
    assert g.compute_ops[0].label == name
    with np.errstate(all="ignore"):
        assert_close(got, nfn(f64(x).astype(np.float64)), x.dtype)


@pytest.mark.parametrize("d", ALL)
def test_abs_keeps_dtype(d):
    x = rand((4, 5), d)
    (got,), _ = run(ww.abs, x)
    assert got.dtype == np.abs(x).dtype == x.dtype
    assert_close(got, np.abs(f64(x)))


@pytest.mark.parametrize("fn,nfn", [(ww.maximum, np.maximum), (ww.minimum, np.minimum)])
@pytest.mark.parametrize("da", ALL)
@pytest.mark.parametrize("db", ALL)
def test_maximum_minimum(fn, nfn, da, db):
    a, b = rand((3, 6), da), rand((6,), db)
    (got,), _ = run(fn, a, b)
    assert got.dtype == nfn(a, b).dtype
    assert_close(got, nfn(f64(a), f64(b)))


def test_maximum_minimum_weak_scalars_and_nan():
    x = rand((4, 8), "float32")
    x[0, 1] = np.nan
    x[2, 3] = np.nan
    outs, _ = run(lambda t: (ww.maximum(t, 0.5), ww.minimum(2, t), ww.maximum(t, t[::-1]), ww.relu(t)), x)
    wants = [np.maximum(x, 0.5), np.minimum(2, x), np.maximum(x, x[::-1]), np.maximum(x, 0)]
    for got, want in zip(outs, wants):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        assert_close(got, f64(want))
    i = rand((5,), "int32")
    (m, r), _ = run(lambda t: (ww.maximum(t, 2.5), ww.relu(t)), i)
    assert m.dtype == np.float64 and r.dtype == np.int32
    np.testing.assert_array_equal(r, np.maximum(i, 0))


@pytest.mark.parametrize("d", FLOATS + ["int32"])
def test_relu(d):
    x = rand((6, 6), d)
    (got,), g = run(ww.relu, x)
    assert got.dtype == x.dtype
    assert len(g.compute_ops) == 1
    assert_close(got, np.maximum(f64(x), 0))


def test_where():
    c, x, y = rand((4, 5), "bool"), rand((4, 5), "float32"), rand((5,), "float16")
    i = rand((4, 5), "int32")
    outs, g = run(lambda c, x, y, i: (ww.where(c, x, y), ww.where(c, x, 0.0), ww.where(x > 0, 1, 2),
                                       ww.where(i, i, 0.5), ww.where(c, y, x.astype("float16")),
                                       np.where(c, x, -1.0)), c, x, y, i)
    wants = [np.where(c, x, y), np.where(c, x, 0.0), np.where(x > 0, 1, 2), np.where(i, i, 0.5),
             np.where(c, y, x.astype(np.float16)), np.where(c, x, -1.0)]
    for got, want in zip(outs, wants):
        assert got.dtype == want.dtype
        assert_close(got, f64(want))
    # a bfloat16 branch with a Python float stays bfloat16 (NEP 50)
    (got,), _ = run(lambda c, b: ww.where(c, b, 0.0), c, rand((4, 5), "bfloat16"))
    assert got.dtype == BF16


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("d", FLOATS + ["int32"])
def test_gelu(approximate, d):
    x = rand((6, 9), d)
    x = x * np.asarray(2, x.dtype)
    (got,), g = run(lambda t: ww.gelu(t, approximate=approximate), x)
    assert got.dtype == np_float_result(x.dtype)
    assert len(g.compute_ops) == 1  # one elementwise op
    v = f64(x)
    if approximate == "none":
        want = 0.5 * v * (1 + _erf(v / math.sqrt(2)))
    else:
        want = 0.5 * v * (1 + np.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3)))
    assert_close(got, want)
    if d in ("float16", "bfloat16"):  # computed in float32, cast back once
        body = g.compute_ops[0].body
        assert isinstance(body, ex.Cast) and body.a.dtype == dt.float32


def test_gelu_rejects_unknown_approximation():
    with pytest.raises(Error, match="approximate"):
        trace(lambda t: ww.gelu(t, approximate="fast"), [((3,), dt.float32)])
    with pytest.raises(ValueError):
        ww.gelu(1.0, approximate="sigmoid")


@pytest.mark.parametrize("d", FLOATS + ["int32"])
@pytest.mark.parametrize("axis", [-1, 0, 1, (0, 2), -2])
def test_softmax_and_log_softmax(d, axis):
    x = rand((3, 8, 5), d)
    (s, ls), g = run(lambda t: (ww.softmax(t, axis=axis), ww.log_softmax(t, axis=axis)), x)
    want_dtype = np_float_result(x.dtype)
    assert s.dtype == ls.dtype == want_dtype
    assert_close(s, softmax_reference(f64(x), axis))
    assert_close(ls, log_softmax_reference(f64(x), axis))
    ops = g.compute_ops
    assert any(op.label == "softmax.max" for op in ops)
    assert any(op.label == "log_softmax.log" for op in ops)
    if d in ("float16", "bfloat16"):  # internal math in float32
        assert all(op.dtype == dt.float32 for op in ops if op.reduce is not None)
        assert ops[-1].dtype == dt.dtype(d)


def test_softmax_structure():
    _, g = run(lambda t: ww.softmax(t), rand((4, 16), "float32"))
    assert [op.label for op in g.compute_ops] == ["softmax.max", "softmax.sub", "softmax.exp",
                                                  "softmax.sum", "softmax.div"]


@pytest.mark.parametrize("d", FLOATS)
def testlayer_norm_reference(d):
    x = rand((4, 6, 16), d) * np.asarray(3, dt.dtype(d).numpy) + np.asarray(1, dt.dtype(d).numpy)
    w, b = rand((16,), d), rand((16,), d)
    outs, _ = run(lambda x, w, b: (ww.layer_norm(x, w, b), ww.layer_norm(x), ww.layer_norm(x, w, eps=1e-3),
                                   ww.layer_norm(x, None, b, axis=(1, 2)),
                                   ww.layer_norm(x, w[None, None, :6].reshape(6, 1), b, axis=-2)), x, w, b)
    v, wv, bv = f64(x), f64(w), f64(b)
    wants = [layer_norm_reference(v, wv, bv, 1e-5, -1), layer_norm_reference(v, None, None, 1e-5, -1),
             layer_norm_reference(v, wv, None, 1e-3, -1), layer_norm_reference(v, None, bv, 1e-5, (1, 2)),
             layer_norm_reference(v, wv[:6].reshape(6, 1), bv, 1e-5, -2)]
    for got, want in zip(outs, wants):
        assert got.dtype == x.dtype
        assert_close(got, want)


def test_layer_norm_mixed_dtypes_and_errors():
    x, w = rand((4, 8), "float16"), rand((8,), "float32")
    (got,), _ = run(lambda x, w: ww.layer_norm(x, w), x, w)
    assert got.dtype == np.float32
    assert_close(got, layer_norm_reference(f64(x), f64(w), None, 1e-5, -1), "float16")
    (got,), _ = run(lambda x: ww.layer_norm(x), rand((4, 8), "int32"))
    assert got.dtype == np.float64
    with pytest.raises(ShapeError, match=r"\(4, 8\).*\(5,\)"):
        trace(lambda x, w: ww.layer_norm(x, w), [((4, 8), dt.float32), ((5,), dt.float32)])
    with pytest.raises(UnsupportedError, match="weight"):
        trace(lambda x: ww.layer_norm(x, 2.0), [((4, 8), dt.float32)])


@pytest.mark.parametrize("d", FLOATS)
def test_rms_norm(d):
    x, w = rand((5, 32), d), rand((32,), d)
    outs, g = run(lambda x, w: (ww.rms_norm(x, w), ww.rms_norm(x, eps=1e-2, axis=0)), x, w)
    v = f64(x)
    wants = [v / np.sqrt((v * v).mean(-1, keepdims=True) + 1e-6) * f64(w),
             v / np.sqrt((v * v).mean(0, keepdims=True) + 1e-2)]
    for got, want in zip(outs, wants):
        assert got.dtype == x.dtype
        assert_close(got, want)
    assert any(op.label.startswith("rms_norm.") for op in g.compute_ops)


def test_matmul_function():
    a, b = rand((2, 3, 4), "float32"), rand((4, 5), "float32")
    (got,), g = run(ww.matmul, a, b)
    assert len(g.compute_ops) == 1 and g.compute_ops[0].label == "matmul"
    assert_close(got, f64(a) @ f64(b), scale=float((np.abs(f64(a)) @ np.abs(f64(b))).max()))
    with pytest.raises(ShapeError, match=r"\(2, 3, 4\).*\(5, 4\)"):
        trace(ww.matmul, [((2, 3, 4), dt.float32), ((5, 4), dt.float32)])


def test_sum_max_min_on_traced_tensors():
    x = rand((4, 6), "int32")
    outs, _ = run(lambda t: (ww.sum(t, axis=1), ww.max(t, axis=0, keepdims=True), ww.min(t)), x)
    for got, want in zip(outs, [x.sum(axis=1), x.max(axis=0, keepdims=True), x.min()]):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------- outside tracing

def test_numpy_arrays_are_rejected_with_a_hint():
    arr = np.ones((3,), np.float32)
    for fn in [ww.exp, ww.relu, ww.softmax, ww.layer_norm, lambda a: ww.maximum(a, 1.0),
               lambda a: ww.where(a > 0, a, 0), lambda a: ww.matmul(a, a), ww.gelu, ww.sum]:
        with pytest.raises(UnsupportedError, match="ww.jit"):
            fn(arr)


def test_scalars_are_evaluated_eagerly():
    assert ww.exp(1.0) == pytest.approx(math.e) and isinstance(ww.exp(1.0), float)
    assert ww.exp(0) == 1.0
    assert ww.maximum(2, 3.5) == 3.5
    assert ww.minimum(np.nan, 1.0) != ww.minimum(np.nan, 1.0)  # NaN propagates
    r = ww.sqrt(np.float32(4))
    assert isinstance(r, np.float32) and r == 2
    assert ww.where(True, 1, 2.5) == 1.0
    assert ww.relu(-3) == 0
    assert ww.erf(0.5) == pytest.approx(math.erf(0.5))
    assert ww.gelu(1.0) == pytest.approx(0.5 * (1 + math.erf(1 / math.sqrt(2))))


def test_mixing_frontends_is_an_error():
    A = ww.placeholder((3,), "float32", name="A")
    with pytest.raises(UnsupportedError, match="mixed"):
        trace(lambda x: ww.maximum(x, A[0]), [((3,), dt.float32)])
    with pytest.raises(UnsupportedError, match="indexed"):
        ww.exp(A)


@pytest.mark.parametrize("axis", [None, 0, 1, -1])
def test_take_gathers_along_an_axis_like_numpy(axis):
    a = rand((5, 7, 3), "float32")
    n = a.size if axis is None else a.shape[axis]
    idx = rng.integers(-n, n, size=(2, 4)).astype(np.int32)
    (got,), graph = run(lambda x, i: ww.take(x, i, axis=axis) * 2, a, idx)
    np.testing.assert_array_equal(got, np.take(f64(a), idx, axis=axis) * 2)
    (got,), _ = run(lambda x, i: np.take(x, i, axis=axis), a, idx)  # numpy's protocol
    np.testing.assert_array_equal(got, np.take(a, idx, axis=axis))


def test_take_checks_its_arguments_and_indices():
    from warpweave.errors import DTypeError, IndexOutOfRangeError

    a = rand((5, 3), "float32")
    with pytest.raises(DTypeError, match="indices must be integers"):
        run(lambda x, i: ww.take(x, i), a, rand((2,), "float32"))
    with pytest.raises(IndexOutOfRangeError, match="take: index 5 is out of bounds for axis 0 of arg0 with size 5"):
        run(lambda x, i: ww.take(x, i, axis=0), a, np.array([0, 5]))
    with pytest.raises(UnsupportedError, match="mode"):
        run(lambda x, i: np.take(x, i, mode="clip"), a, np.array([0]))
