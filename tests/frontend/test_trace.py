"""Tracing numpy-style functions: graphs are run with the reference executor and
compared with numpy in float64 on fresh random inputs."""
import ml_dtypes
import numpy as np
import pytest

from tests.utils import random_array
import warpweave as ww
from warpweave.frontend.trace import Tensor, trace
from warpweave.errors import IndexOutOfRangeError
from warpweave.errors import DTypeError, ShapeError, UnsupportedError
from warpweave.ir import dtypes as dt
from warpweave.ir import expr as ex
from warpweave.ir.tensor import ComputeOp, evaluate

BF16 = np.dtype(ml_dtypes.bfloat16)
FLOATS = ["float32", "float16", "bfloat16"]
ALL = FLOATS + ["int32", "bool"]
RTOL = {"float64": 1e-12, "float32": 1e-5, "float16": 2e-3, "bfloat16": 2e-2}
rng = np.random.default_rng()


def np_dtype(name):
    return dt.dtype(name).numpy


def rand(shape, dtype, positive=False):
    return random_array(rng, shape, dtype, positive=positive)


def run(fn, *arrays):
    """Trace fn on the arrays' shapes/dtypes and evaluate; returns (outputs, graph, single)."""
    specs = [(a.shape, dt.dtype(a.dtype)) for a in arrays]
    graph, single = trace(fn, specs)
    values = evaluate(graph, {f"arg{k}": a for k, a in enumerate(arrays)})
    return [values[n] for n in graph.outputs], graph, single


def f64(a):
    a = np.asarray(a)
    return a.astype(np.float64) if a.dtype.kind == "f" or a.dtype == BF16 else a


def _dtname(d):
    d = np.dtype(d)
    return "bfloat16" if d == BF16 else str(d)


def assert_close(got, ref, *dtypes, scale=None):
    """Compare with a float64 reference; the tolerance is the loosest of the result's
    dtype and any extra `dtypes` the computation passed through (exact for ints/bools)."""
    got = np.asarray(got)
    ref = np.asarray(ref)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    tols = [RTOL[n] for n in map(_dtname, (got.dtype,) + dtypes) if n in RTOL]
    if tols:
        tol = max(tols)
        finite = np.abs(ref[np.isfinite(ref)])
        s = scale if scale is not None else max(1.0, float(np.max(finite, initial=0.0)))
        np.testing.assert_allclose(got.astype(np.float64), ref.astype(np.float64), rtol=tol,
                                   atol=tol * s, equal_nan=True)
    else:
        np.testing.assert_array_equal(got, ref)


def n_ops(graph):
    return len(graph.compute_ops)


# ----------------------------------------------------------------------------- interface

def test_inputs_outputs_and_single():
    def f(x, unused, y):
        return x + y

    (out,), g, single = run(f, rand((3, 4), "float32"), rand((2,), "int32"), rand((4,), "float32"))
    assert single is True
    assert g.inputs == ("arg0", "arg1", "arg2")
    assert len(g.outputs) == 1 and isinstance(g[g.outputs[0]], ComputeOp)
    assert g["arg1"].shape == (2,) and g["arg1"].dtype == dt.int32

    _, g, single = run(lambda x: [x * 2, x + 1], rand((3,), "float32"))
    assert single is False and len(g.outputs) == 2


def test_tensor_attributes():
    seen = {}

    def f(x):
        assert isinstance(x, Tensor) and not x.is_view and x.T.is_view
        seen.update(shape=x.shape, ndim=x.ndim, dtype=x.dtype, size=x.size, len=len(x),
                    T=x.T.shape, bf=x.astype("bfloat16").dtype)
        return x

    trace(f, [((3, 4, 5), dt.float16)])
    assert seen == dict(shape=(3, 4, 5), ndim=3, dtype=np.dtype("float16"), size=60, len=3,
                        T=(5, 4, 3), bf=BF16)


def test_op_names_and_labels():
    def f(x):
        return ww.softmax(x + 1, axis=1), x.sum(axis=1)

    g, _ = trace(f, [((4, 8), dt.float32)])
    labels = [op.label for op in g.compute_ops]
    assert labels == ["add", "softmax.max", "softmax.sub", "softmax.exp", "softmax.sum",
                      "softmax.div", "sum(axis=1)"]
    assert [op.name for op in g.compute_ops] == [f"t{k}" for k in range(7)]
    # the body loads its operands; t0 = add(arg0, 1)
    t0 = g.compute_ops[0]
    assert str(t0.body) == "(arg0[i0, i1] + 1.0:float32)"


def test_every_output_is_a_distinct_compute_op():
    def f(x, y):
        z = x * y
        return x, z, z, x.T, y[1:]

    x, y = rand((3, 3), "float32"), rand((3, 3), "float32")
    outs, g, _ = run(f, x, y)
    assert len(set(g.outputs)) == 5
    assert all(isinstance(g[n], ComputeOp) for n in g.outputs)
    assert n_ops(g) == 5  # mul + 4 copies
    for got, want in zip(outs, [x, x * y, x * y, x.T, y[1:]]):
        assert_close(got, f64(want))


def test_non_tensor_return_values():
    with pytest.raises(UnsupportedError, match="float"):
        trace(lambda x: 2.0, [((3,), dt.float32)])
    with pytest.raises(UnsupportedError, match="NoneType"):
        trace(lambda x: None, [((3,), dt.float32)])
    with pytest.raises(UnsupportedError, match="item 1 is int"):
        trace(lambda x: (x, 3), [((3,), dt.float32)])
    with pytest.raises(UnsupportedError, match="ndarray"):
        trace(lambda x: np.ones(3), [((3,), dt.float32)])


def test_dead_ops_are_dropped():
    def f(x):
        _ = x * 3  # never used
        return x + 1

    _, g, _ = run(f, rand((4,), "float32"))
    assert n_ops(g) == 1


def test_escaped_tensor_and_truth_value_errors():
    kept = []

    def f(x):
        kept.append(x)
        return x + 1

    trace(f, [((3,), dt.float32)])
    with pytest.raises(UnsupportedError, match="finished trace"):
        trace(lambda y: y + kept[0], [((3,), dt.float32)])
    with pytest.raises(UnsupportedError, match="truth value"):
        trace(lambda x: x if x > 0 else -x, [((3,), dt.float32)])
    with pytest.raises(UnsupportedError, match="constants"):
        trace(lambda x: x + np.ones(3, np.float32), [((3,), dt.float32)])
    with pytest.raises(UnsupportedError, match="item assignment"):
        trace(lambda x: x.__setitem__(0, 1.0), [((3,), dt.float32)])


# ----------------------------------------------------------------------------- elementwise

BINOPS = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
}


def _numpy_dtype(fn, *arrays):
    with np.errstate(all="ignore"):
        return fn(*arrays).dtype


@pytest.mark.parametrize("op", list(BINOPS))
@pytest.mark.parametrize("da", ALL)
@pytest.mark.parametrize("db", ALL)
def test_binary_ops_dtypes_and_values(op, da, db):
    fn = BINOPS[op]
    a, b = rand((4, 5), da), rand((5,), db)
    if op == "div":
        b = rand((5,), db, positive=True) if db != "bool" else np.ones(5, bool)
    if op == "sub" and da == db == "bool":
        with pytest.raises(DTypeError, match="boolean"):
            trace(fn, [(a.shape, dt.bool_), (b.shape, dt.bool_)])
        return
    (got,), g, _ = run(fn, a, b)
    assert got.dtype == _numpy_dtype(fn, a, b)
    assert n_ops(g) == 1
    with np.errstate(all="ignore"):
        want = fn(f64(a), f64(b))
    if got.dtype == np.bool_:
        want = fn(a, b)
    assert_close(got, want, a.dtype, b.dtype)


SCALARS = [2, -3, 2.5, True, np.float32(1.5), np.float64(0.25), np.int32(3), np.int64(2), np.bool_(True)]


@pytest.mark.parametrize("da", ALL)
@pytest.mark.parametrize("s", SCALARS, ids=repr)
def test_weak_and_strong_scalars(da, s):
    a = rand((3, 4), da)
    fns = [lambda x: x + s, lambda x: s + x, lambda x: x * s, lambda x: x / s,
           lambda x: x < s, lambda x: s >= x, lambda x: x == s, lambda x: x != s]
    if not (da == "bool" and isinstance(s, (bool, np.bool_))):  # numpy has no bool - bool
        fns.append(lambda x: s - x)
    if da != "bool":
        fns.append(lambda x: s / (x + 1))
    python_float = isinstance(s, float) and not isinstance(s, np.generic)
    for fn in fns:
        (got,), _, _ = run(fn, a)
        want_dtype = _numpy_dtype(fn, a)
        if da == "bfloat16" and python_float and want_dtype == np.float32:
            want_dtype = BF16  # NEP 50: a Python float keeps bfloat16 (ml_dtypes gives float32)
        assert got.dtype == want_dtype, (da, s)
        with np.errstate(all="ignore"):
            want = fn(f64(a)) if got.dtype != np.bool_ else fn(a)
        assert_close(got, want, a.dtype)


def test_bfloat16_promotion_rules():
    def f(a, b, c, d):
        return a + 2.0, a + b, a + c, a * d, a + 2

    outs, _, _ = run(f, rand((3,), "bfloat16"), rand((3,), "float16"), rand((3,), "int32"),
                     rand((3,), "bool"))
    assert [o.dtype for o in outs] == [BF16, np.float32, np.float64, BF16, BF16]


def test_comparisons_and_logic():
    x, y = rand((5, 6), "float32"), rand((6,), "float32")
    m, n = rand((5, 6), "bool"), rand((6,), "bool")
    outs, g, _ = run(lambda x, y, m, n: (x < y, x <= y, x > y, x >= y, x == y, x != y,
                                          m & n, m | n, m ^ n, ~m, (x > 0) & m), x, y, m, n)
    wants = [x < y, x <= y, x > y, x >= y, x == y, x != y, m & n, m | n, m ^ n, ~m, (x > 0) & m]
    for got, want in zip(outs, wants):
        assert got.dtype == np.bool_
        np.testing.assert_array_equal(got, want)
    # comparisons are usable as dict keys (identity hash)
    trace(lambda x: {x: 1} and x + 1, [((2,), dt.float32)])
    # on integers they are bitwise, as numpy's
    i, j = np.array([-7, 0, 5, 12, -1], np.int32), np.array([3, -2, 6, 12, 9], np.int32)
    outs, _, _ = run(lambda i, j: (i & j, i | j, i ^ j, ~i, i & 6, -3 ^ j), i, j)
    for got, want in zip(outs, [i & j, i | j, i ^ j, ~i, i & 6, -3 ^ j]):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)
    with pytest.raises(UnsupportedError, match="float32"):
        trace(lambda a: a & a, [((3,), dt.float32)])
    with pytest.raises(UnsupportedError, match="float32"):
        trace(lambda a: ~a, [((3,), dt.float32)])


def test_compare_int_with_out_of_range_python_int():
    a = rand((4,), "int32")
    (got,), _, _ = run(lambda x: x < 2**40, a)
    assert got.all()
    with pytest.raises(DTypeError, match="out of bounds for int32"):
        trace(lambda x: x + 2**40, [((4,), dt.int32)])


def test_unary_minus_abs_pos():
    for d in ["float32", "float16", "bfloat16", "int32"]:
        a = rand((7,), d)
        (n, ab, p), _, _ = run(lambda x: (-x, abs(x), +x), a)
        assert n.dtype == ab.dtype == p.dtype == a.dtype
        assert_close(n, -f64(a))
        assert_close(ab, np.abs(f64(a)))
        assert_close(p, f64(a))
    with pytest.raises(DTypeError, match="boolean negative"):
        trace(lambda x: -x, [((3,), dt.bool_)])
    (ab,), _, _ = run(lambda x: abs(x), rand((3,), "bool"))
    assert ab.dtype == np.bool_


@pytest.mark.parametrize("d", ["float32", "float16", "bfloat16", "int32"])
def test_power(d):
    a = rand((4, 4), d)
    fns = [lambda x: x ** 2, lambda x: x ** 3, lambda x: x ** 0, lambda x: x ** 1, lambda x: x ** 2.0]
    for fn in fns:
        (got,), g, _ = run(fn, a)
        want_dtype = _numpy_dtype(fn, a) if d != "bfloat16" else BF16  # ml_dtypes: bf16 ** 2.0 is f32
        assert got.dtype == want_dtype
        assert_close(got, fn(f64(a)), scale=max(1.0, float(np.max(np.abs(fn(f64(a)))))))
        # small integer exponents become multiplications
        assert not any(isinstance(n, ex.Binary) and n.op == "pow" for n in ex.postorder(g.compute_ops[0].body))
    if d != "int32":
        p = np.abs(a) + np.asarray(0.5, a.dtype)
        for fn in [lambda x: x ** 0.5, lambda x: x ** -1.5, lambda x: 2.0 ** x, lambda x: x ** x]:
            (got,), g, _ = run(fn, p)
            assert got.dtype == p.dtype
            assert_close(got, fn(f64(p)))
            assert any(isinstance(n, ex.Binary) and n.op == "pow" for n in ex.postorder(g.compute_ops[0].body))
    else:
        (got,), _, _ = run(lambda x: x ** 0.5, np.abs(a))
        assert got.dtype == np.float64
        assert_close(got, np.abs(a) ** 0.5)
        (got,), _, _ = run(lambda x: x ** 5, a)
        np.testing.assert_array_equal(got, a ** 5)
        with pytest.raises(UnsupportedError, match="non-negative exponent"):
            trace(lambda x, y: x ** y, [((3,), dt.int32), ((3,), dt.int32)])
        with pytest.raises(UnsupportedError, match="negative integer powers"):
            trace(lambda x: x ** -1, [((3,), dt.int32)])


def test_broadcasting_and_error_message():
    a, b, c = rand((2, 1, 4), "float32"), rand((3, 1), "float32"), rand((), "float32")
    (got,), g, _ = run(lambda a, b, c: a * b + c, a, b, c)
    assert got.shape == (2, 3, 4)
    assert_close(got, f64(a) * f64(b) + f64(c))
    assert n_ops(g) == 2
    with pytest.raises(ShapeError, match=r"\(2, 3\).*\(4,\)"):
        trace(lambda x, y: x + y, [((2, 3), dt.float32), ((4,), dt.float32)])


# ----------------------------------------------------------------------------- reductions

AXES = [None, 0, 1, -1, -2, (0, 2), (-1, 0), (0, 1, 2), ()]


@pytest.mark.parametrize("d", ALL)
@pytest.mark.parametrize("method", ["sum", "max", "min", "mean", "var"])
def test_reductions(d, method):
    x = rand((3, 5, 4), d)
    for axis in AXES:
        for keepdims in (False, True):
            fn = lambda t: getattr(t, method)(axis=axis, keepdims=keepdims)
            (got,), g, _ = run(fn, x)
            want = getattr(x, method)(axis=axis, keepdims=keepdims)
            assert got.dtype == want.dtype, (method, d, axis)
            assert got.shape == want.shape
            ref = getattr(f64(x), method)(axis=axis, keepdims=keepdims)
            if method == "sum" and got.dtype.kind == "f":
                scale = float(np.abs(f64(x)).sum(axis=axis).max(initial=1.0))
                assert_close(got, ref, scale=scale)
            elif method == "var" and x.dtype.kind == "f" or x.dtype == BF16 and method == "var":
                assert_close(got, ref, scale=max(1.0, float(np.max(f64(x) ** 2))))
            else:
                assert_close(got, ref)


def test_reduction_ops_and_keepdims_are_views():
    _, g, _ = run(lambda x: x.sum(axis=1, keepdims=True) * 2, rand((4, 6), "float32"))
    assert n_ops(g) == 2  # sum + mul; keepdims is a reshape view
    red = g.compute_ops[0]
    assert isinstance(red.body, ex.Reduce) and red.body.combiner == "sum"
    assert [a.name for a in red.axes] == ["i0"] and [a.name for a in red.reduce_axes] == ["r0"]
    _, g, _ = run(lambda x: x.mean(axis=(0, 2)), rand((4, 6, 3), "float32"))
    assert [op.label for op in g.compute_ops] == ["mean.sum", "mean.div"]


def test_reduction_errors():
    with pytest.raises(ShapeError, match=r"zero-size.*\(3, 0\)"):
        trace(lambda x: x.max(axis=1), [((3, 0), dt.float32)])
    with pytest.raises(ShapeError, match="out of bounds"):
        trace(lambda x: x.sum(axis=2), [((3, 4), dt.float32)])
    with pytest.raises(ShapeError, match="duplicate"):
        trace(lambda x: x.sum(axis=(0, -2)), [((3, 4), dt.float32)])
    # an empty sum is zero
    (got,), _, _ = run(lambda x: x.sum(axis=1), np.zeros((3, 0), np.float32))
    np.testing.assert_array_equal(got, np.zeros(3, np.float32))


def test_prod_std_and_axis_type_errors():
    x = rand((4, 6), "float32")
    outs, _, _ = run(lambda t: (t.prod(axis=1), t.std(axis=0), t.std(ddof=1), np.prod(t, axis=-1)), x)
    wants = [f64(x).prod(axis=1), f64(x).std(axis=0), f64(x).std(ddof=1), f64(x).prod(axis=-1)]
    for got, want in zip(outs, wants):
        assert got.dtype == np.float32
        assert_close(got, want)
    (got,), _, _ = run(lambda t: t.prod(axis=0), rand((3, 4), "int32"))
    assert got.dtype == np.int64
    with pytest.raises(ShapeError, match="axis must be an int"):
        trace(lambda t: t.sum(axis=1.0), [((3, 4), dt.float32)])
    with pytest.raises(UnsupportedError, match="ww.maximum"):
        trace(lambda t, u: ww.max(t, u), [((3, 4), dt.float32), ((3, 4), dt.float32)])


def test_var_ddof():
    x = rand((5, 7), "float32")
    (got,), _, _ = run(lambda t: t.var(axis=1, ddof=1), x)
    assert_close(got, f64(x).var(axis=1, ddof=1))


# ----------------------------------------------------------------------------- views

def _load_indices(op):
    return [tuple(str(i) for i in ld.indices) for ld in ex.loads(op.value)]


def test_views_produce_no_compute_ops():
    def f(x):
        v = x.reshape(6, -1)[::-1, 1:4].T[None, ..., ::2]  # (1, 3, 3)
        return v + 1

    x = rand((2, 3, 4), "float32")
    (got,), g, _ = run(f, x)
    assert n_ops(g) == 1
    assert_close(got, f64(x).reshape(6, -1)[::-1, 1:4].T[None, ..., ::2] + 1)


def test_view_indices_stay_affine():
    _, g, _ = run(lambda x: x.T + 1, rand((3, 4), "float32"))
    assert _load_indices(g.compute_ops[0]) == [("i1", "i0")]
    _, g, _ = run(lambda x: x.reshape(2, 3, 4)[1] * 2, rand((6, 4), "float32"))
    assert _load_indices(g.compute_ops[0]) == [("(i0 + 3)", "i1")]
    _, g, _ = run(lambda x: x.reshape(24)[5:17:3] * 2, rand((2, 12), "float32"))
    (idx,) = _load_indices(g.compute_ops[0])
    assert "//" in idx[0]  # a flat slice of a 2-D tensor needs div/mod
    _, g, _ = run(lambda x: x.reshape(4, 6).reshape(2, 12) * 2, rand((2, 2, 6), "float32"))
    assert _load_indices(g.compute_ops[0]) == [("i0", "(i1 // 6)", "(i1 % 6)")]
    _, g, _ = run(lambda x: x.reshape(6, 4).T.reshape(4, 2, 3).transpose(1, 0, 2) * 2,
                  rand((2, 3, 4), "float32"))
    assert _load_indices(g.compute_ops[0]) == [("i0", "i2", "i1")]
    assert g.compute_ops[0].kind == "layout"


@pytest.mark.parametrize("d", ["float32", "bfloat16", "int32", "bool"])
def test_reshape_transpose_roundtrips(d):
    x = rand((2, 3, 4), d)
    cases = [
        lambda t: t.reshape(4, 6),
        lambda t: t.reshape((-1, 2)),
        lambda t: t.reshape(24),
        lambda t: t.reshape(2, 12).reshape(3, 2, 4),
        lambda t: t.transpose(),
        lambda t: t.transpose(1, 0, 2),
        lambda t: t.transpose((2, 0, 1)),
        lambda t: t.transpose(-1, 0, 1).reshape(4, 6).T,
        lambda t: t.T.reshape(-1, 3)[::2],
        lambda t: t.reshape(1, 24, 1).reshape(2, 3, 4),
    ]
    for fn in cases:
        (got,), g, _ = run(fn, x)
        np.testing.assert_array_equal(got, fn(x))
        assert n_ops(g) == 1  # the output copy


def test_identity_views_are_not_copies():
    _, g, _ = run(lambda x: (x.reshape(3, 4) + 1).reshape(12).reshape(3, 4).T.T, rand((12,), "float32"))
    assert n_ops(g) == 1  # the add is the output itself


def test_indexing():
    x = rand((4, 5, 6), "float32")
    cases = [
        lambda t: t[1],
        lambda t: t[-1, 2],
        lambda t: t[:, -2],
        lambda t: t[..., 3],
        lambda t: t[1:3, ::2, ::-1],
        lambda t: t[::-2, 4:0:-2],
        lambda t: t[None, :, None, 1],
        lambda t: t[..., None],
        lambda t: t[2, ..., 1:],
        lambda t: t[-3:, -100:100, 5:2],
        lambda t: t[1, 2, 3],
        lambda t: t[np.int64(1)][::3],
        lambda t: t[:],
    ]
    for fn in cases:
        (got,), g, _ = run(fn, x)
        np.testing.assert_array_equal(got, fn(x))
        assert n_ops(g) == 1


def test_index_errors():
    with pytest.raises(IndexOutOfRangeError, match="index 4 is out of bounds for axis 0 with size 4"):
        trace(lambda x: x[4], [((4, 5), dt.float32)])
    with pytest.raises(IndexError, match="-6"):
        trace(lambda x: x[:, -6], [((4, 5), dt.float32)])
    with pytest.raises(ShapeError, match="too many indices"):
        trace(lambda x: x[0, 0, 0], [((4, 5), dt.float32)])
    with pytest.raises(UnsupportedError, match="advanced"):
        trace(lambda x: x[[0, 1]], [((4, 5), dt.float32)])
    with pytest.raises(UnsupportedError, match="advanced"):
        trace(lambda x, i: x[i], [((4, 5), dt.float32), ((2,), dt.int32)])
    with pytest.raises(UnsupportedError, match="advanced"):
        trace(lambda x: x[np.array([0, 2])], [((4, 5), dt.float32)])


def test_reshape_and_transpose_errors():
    with pytest.raises(ShapeError, match=r"\(2, 3\).*\(4, 2\)"):
        trace(lambda x: x.reshape(4, 2), [((2, 3), dt.float32)])
    with pytest.raises(ShapeError, match="one unknown"):
        trace(lambda x: x.reshape(-1, -1), [((2, 3), dt.float32)])
    with pytest.raises(ShapeError, match=r"\(2, 3\).*\(4, -1\)"):
        trace(lambda x: x.reshape(4, -1), [((2, 3), dt.float32)])
    with pytest.raises(ShapeError, match="permutation"):
        trace(lambda x: x.transpose(0, 0), [((2, 3), dt.float32)])
    with pytest.raises(ShapeError, match=r"\(2, 3\)"):
        trace(lambda x: x.transpose(0, 1, 2), [((2, 3), dt.float32)])


def test_iteration_and_len():
    x = rand((3, 2), "float32")
    outs, _, _ = run(lambda t: [r * 1 for r in t], x)
    for got, row in zip(outs, x):
        assert_close(got, f64(row))
    with pytest.raises(TypeError):
        trace(lambda t: len(t), [((), dt.float32)])


def test_zero_size_and_zero_dim():
    (a, b), _, _ = run(lambda t, s: (t + 1, s * 2), np.zeros((0, 3), np.float32), rand((), "float32"))
    assert a.shape == (0, 3)
    assert b.shape == ()


# ----------------------------------------------------------------------------- astype, matmul

@pytest.mark.parametrize("src", ALL + ["int64", "float64"])
@pytest.mark.parametrize("dst", ALL + ["int64", "float64"])
def test_astype(src, dst):
    x = rand((4, 6), src) * (np.asarray(10, np_dtype(src)) if dt.dtype(src).is_float else 1)
    (got,), g, _ = run(lambda t: t.astype(dst), x)
    assert got.dtype == np_dtype(dst)
    want = x.astype(np_dtype(dst))
    if dt.dtype(dst).is_float and dt.dtype(src).is_float:
        assert_close(got, f64(want))
    else:
        np.testing.assert_array_equal(got, want)
    assert n_ops(g) == 1


@pytest.mark.parametrize("d", ALL)
def test_matmul(d):
    cases = [((4, 5), (5, 3)), ((5,), (5, 3)), ((4, 5), (5,)), ((5,), (5,)),
             ((2, 4, 5), (5, 3)), ((2, 1, 4, 5), (3, 5, 2)), ((7, 5), (2, 5, 1))]
    for sa, sb in cases:
        a, b = rand(sa, d), rand(sb, d)
        (got,), g, _ = run(lambda x, y: x @ y, a, b)
        want = np.matmul(a, b)
        exp_dtype = want.dtype if d != "bfloat16" else BF16  # ml_dtypes gives float32
        assert got.dtype == exp_dtype and got.shape == want.shape
        assert n_ops(g) == 1
        op = g.compute_ops[0]
        assert isinstance(op.body, ex.Reduce)
        if d in FLOATS:
            scale = float((np.abs(f64(a)) @ np.abs(f64(b))).max())
            assert_close(got, f64(a) @ f64(b), scale=scale)
        else:
            np.testing.assert_array_equal(got, want)


def test_matmul_mixed_dtypes_and_errors():
    a, b = rand((3, 4), "int32"), rand((4, 2), "float32")
    (got,), _, _ = run(lambda x, y: (x @ y, np.matmul(x, y))[0], a, b)
    assert got.dtype == np.float64
    assert_close(got, f64(a) @ f64(b))
    with pytest.raises(ShapeError, match=r"\(3, 4\).*\(5, 2\)"):
        trace(lambda x, y: x @ y, [((3, 4), dt.float32), ((5, 2), dt.float32)])
    with pytest.raises(ShapeError, match=r"\(2, 3, 4\).*\(5, 4, 2\)"):
        trace(lambda x, y: x @ y, [((2, 3, 4), dt.float32), ((5, 4, 2), dt.float32)])
    with pytest.raises(ShapeError, match="at least 1-D"):
        trace(lambda x, y: x @ y, [((), dt.float32), ((4,), dt.float32)])


# ----------------------------------------------------------------------------- numpy protocols

def test_numpy_functions_dispatch():
    x, y = rand((3, 4), "float32"), rand((4,), "float32")

    def f(a, b):
        return (np.exp(a), np.sum(a, axis=1), np.maximum(a, b), np.where(a > 0, a, 0.0),
                np.mean(a, axis=0, keepdims=True), np.transpose(a), np.reshape(a, (4, 3)),
                np.float32(2) * a, np.sqrt(np.abs(a)), a.max(0), np.var(a))

    outs, _, _ = run(f, x, y)
    wants = f(f64(x), f64(y))
    for got, want in zip(outs, wants):
        assert got.dtype == np.float32
        assert_close(got, want)
    with pytest.raises(UnsupportedError, match="numpy.cumsum"):
        trace(lambda a: np.cumsum(a), [((3,), dt.float32)])
    with pytest.raises(UnsupportedError, match="numpy.add.reduce"):
        trace(lambda a: np.add.reduce(a), [((3,), dt.float32)])


def test_trace_specs_errors():
    with pytest.raises(ww.DTypeError, match="int8"):
        trace(lambda x: x, [((3,), "int8")])
    with pytest.raises(ShapeError, match="negative"):
        trace(lambda x: x, [((-1,), dt.float32)])
