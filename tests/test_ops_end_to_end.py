"""End-to-end tests of the public surface of `ww.jit`: every operator, method and
function, compiled for the "interp" and "cpu" targets (and "cuda" in the gpu tier), run on fresh random inputs
and compared with numpy computed in float64 (inputs cast up). Result dtypes must
be numpy's on the original dtypes; where bfloat16 is involved (numpy cannot
promote it) they must follow warpweave's documented rule: bfloat16 ranks with
float16, so bf16 op bf16 / Python float gives bf16 and bf16 op int32 gives float64.
"""
from __future__ import annotations

import math
import warnings

import ml_dtypes
import numpy as np
import pytest

import warpweave as ww
from tests.utils import (assert_close, layer_norm_reference, log_softmax_reference, random_array,
                         softmax_reference)
from warpweave.ir import dtypes as dt

TARGETS = ["interp", "cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
FLOATS = ["float32", "float16", "bfloat16"]
NUMERIC = FLOATS + ["int32"]
ALL = NUMERIC + ["bool"]
BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)

targets = pytest.mark.parametrize("target", TARGETS)


# ============================================================================ helpers

def _npdt(name) -> np.dtype:
    return dt.dtype(name).numpy


def rand(rng, shape, dtype, positive=False, nonzero=False, low=-2.0, high=2.0):
    """Random values of `dtype`: positive (for log/sqrt/pow bases), nonzero (divisors,
    kept away from 0 so 16-bit results cannot overflow), or anything in [low, high)."""
    d = dt.dtype(dtype)
    if d.is_bool:
        if positive:
            return np.ones(shape, dtype=bool)
        return random_array(rng, shape, d)
    if d.is_int:
        if positive:
            return rng.integers(1, 50, size=shape).astype(d.numpy)
        if nonzero:
            mag = rng.integers(1, 50, size=shape)
            return (mag * rng.choice([-1, 1], size=shape)).astype(d.numpy)
        return random_array(rng, shape, d)
    if positive:
        return random_array(rng, shape, d, low=0.25, high=3.0)
    if nonzero:
        mag = rng.uniform(0.5, 2.0, size=shape)
        return (mag * rng.choice([-1.0, 1.0], size=shape)).astype(d.numpy)
    return random_array(rng, shape, d, low=low, high=high)


def _is_array(a) -> bool:
    return isinstance(a, (np.ndarray, np.generic))


def up(a):
    """The float64 (int64 for integers, bool unchanged) version of an input."""
    if not _is_array(a):
        return a
    a = np.asarray(a)
    if a.dtype == BF16 or a.dtype.kind == "f":
        return a.astype(np.float64)
    if a.dtype.kind in "iu":
        return a.astype(np.int64)
    return a


def expected_dtypes(fn, *args):
    """Result dtype(s) of `fn` as numpy gives them on the original inputs; with a
    bfloat16 input, numpy is run with bfloat16 replaced by float16 and a float16
    result means bfloat16 (warpweave's documented rule) unless a real float16
    input was also present."""
    has_bf = any(_is_array(a) and np.asarray(a).dtype == BF16 for a in args)
    has_f16 = any(_is_array(a) and np.asarray(a).dtype == F16 for a in args)
    subs = [np.asarray(a).astype(np.float16) if _is_array(a) and np.asarray(a).dtype == BF16 else a
            for a in args]
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = fn(*subs)
    outs = out if isinstance(out, tuple) else (out,)
    res = []
    for o in outs:
        d = np.asarray(o).dtype
        if has_bf and d == F16 and not has_f16:
            d = BF16
        res.append(d)
    return tuple(res) if isinstance(out, tuple) else res[0]


def compile_run(fn, target, *arrays):
    return ww.jit(fn, target=target)(*arrays)


def check(got, ref, dtype, scale=1.0, what=""):
    """Result dtype equals `dtype` and values match `ref` (float64) under `dtype`'s tolerance."""
    got = np.asarray(got)
    assert got.dtype == np.dtype(dtype), f"{what}: dtype {got.dtype} != expected {np.dtype(dtype)}"
    ref = np.asarray(ref)
    tol = dt.dtype(dtype)
    if tol.is_int or tol.is_bool:
        assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
        np.testing.assert_array_equal(got, ref, err_msg=what)
    else:
        assert_close(got, ref.astype(np.float64), tol, scale=scale, what=what)


def run_check(target, fn, arrays, ref_fn=None, dtype_fn=None, scale=1.0, what=""):
    """Compile `fn` for `target`, run on `arrays`, compare with `ref_fn` (default: `fn`
    itself, which has numpy semantics) on the inputs cast up to float64, and the
    dtype with `dtype_fn` (default: `ref_fn` or `fn`) on the original inputs."""
    got = compile_run(fn, target, *arrays)
    ref_fn = ref_fn or fn
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # e.g. numpy's "Mean of empty slice"
        ref = ref_fn(*[up(a) for a in arrays])
    want = expected_dtypes(dtype_fn or ref_fn, *arrays)
    if isinstance(ref, tuple):
        assert isinstance(got, tuple) and len(got) == len(ref), f"{what}: got {type(got)}"
        scales = scale if isinstance(scale, tuple) else (scale,) * len(ref)
        for k, (g, r, d, s) in enumerate(zip(got, ref, want, scales)):
            check(g, r, d, s, f"{what} output {k}")
    else:
        check(got, ref, want, scale, what)
    return got


_erf = np.vectorize(math.erf, otypes=[np.float64])


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# ============================================================================ binary operators

ARG = object()  # marks an operand passed as an array argument

# (name, a, b): a shape tuple is an argument of that shape; anything else a captured scalar.
BCAST_CASES = [
    ("same", (5, 7), (5, 7)),
    ("row", (5, 7), (7,)),
    ("col", (5, 7), (5, 1)),
    ("outer", (5, 1), (7,)),
    ("row_left", (7,), (5, 7)),
    ("int_right", (5, 7), 3),
    ("int_left", 3, (5, 7)),
    ("float_right", (5, 7), 1.5),
    ("float_left", 1.5, (5, 7)),
    ("npf32_right", (5, 7), np.float32(1.5)),
    ("npf32_left", np.float32(1.5), (5, 7)),
]
BCAST_IDS = [c[0] for c in BCAST_CASES]


def _binary_fn(op, a, b):
    """fn(*arrays) computing op(a, b), with scalars captured and arrays as arguments."""
    def fn(*args):
        it = iter(args)
        x = next(it) if a is ARG else a
        y = next(it) if b is ARG else b
        return op(x, y)
    return fn


def _operands(rng, a, b, dtype, b_nonzero=False, a_nonzero=False, share=False):
    """Arrays for the shape entries of (a, b) and the markers/scalars for the fn."""
    arrays, spec = [], []
    for k, s in enumerate((a, b)):
        if isinstance(s, tuple):
            nz = b_nonzero if k == 1 else a_nonzero
            arrays.append(rand(rng, s, dtype, nonzero=nz))
            spec.append(ARG)
        else:
            spec.append(s)
    if share:
        # make some elements equal, so that == and != (and <=, >=) see ties
        if len(arrays) == 2:
            shape = np.broadcast_shapes(arrays[0].shape, arrays[1].shape)
            for i, j in ((0, 1), (1, 0)):
                if arrays[i].shape == shape:
                    mask = rng.random(shape) < 0.3
                    arrays[i] = np.where(mask, np.broadcast_to(arrays[j], shape), arrays[i]).astype(
                        arrays[i].dtype)
                    break
        else:
            scalar = a if not isinstance(a, tuple) else b
            x = arrays[0]
            if x.dtype != bool:
                v = int(scalar) if x.dtype.kind in "iu" else float(scalar)
                mask = rng.random(x.shape) < 0.3
                arrays[0] = np.where(mask, np.asarray(v).astype(x.dtype), x).astype(x.dtype)
    return arrays, spec


def _numpy_rejects(fn, arrays) -> bool:
    try:
        with np.errstate(all="ignore"):
            expected_dtypes(fn, *arrays)
    except TypeError:
        return True
    return False


ARITH = {
    "add": lambda x, y: x + y,
    "sub": lambda x, y: x - y,
    "mul": lambda x, y: x * y,
    "div": lambda x, y: x / y,
}


@targets
@pytest.mark.parametrize("dtype", ALL)
@pytest.mark.parametrize("case", BCAST_CASES, ids=BCAST_IDS)
@pytest.mark.parametrize("op", sorted(ARITH))
def test_arith_operator(op, case, dtype, target):
    rng = np.random.default_rng()
    _, a, b = case
    arrays, spec = _operands(rng, a, b, dtype, b_nonzero=(op == "div"))
    fn = _binary_fn(ARITH[op], *spec)
    if _numpy_rejects(fn, arrays):  # bool - bool: numpy raises TypeError
        with pytest.raises(TypeError):
            compile_run(fn, target, *arrays)
        return
    run_check(target, fn, arrays, what=f"{op} {case[0]} {dtype}")


POW_CASES = {
    # name: (fn, base positive?, exponent array shape or None, dtypes)
    "tensor_tensor": (lambda x, y: x ** y, True, (5, 7), FLOATS),
    "tensor_row": (lambda x, y: x ** y, True, (7,), FLOATS),
    "sq": (lambda x: x ** 2, False, None, NUMERIC),
    "cube": (lambda x: x ** 3, False, None, NUMERIC),
    "zero": (lambda x: x ** 0, False, None, NUMERIC),
    "one": (lambda x: x ** 1, False, None, NUMERIC),
    "four_float": (lambda x: x ** 4.0, False, None, NUMERIC),
    "half": (lambda x: x ** 0.5, True, None, NUMERIC),
    "float_1_5": (lambda x: x ** 1.5, True, None, NUMERIC),
    "neg_int": (lambda x: x ** -1, "nonzero", None, FLOATS),
    "neg_two": (lambda x: x ** -2, "nonzero", None, FLOATS),
    "npf32": (lambda x: x ** np.float32(1.5), True, None, NUMERIC),
    "rpow_float": (lambda x: 2.0 ** x, False, None, NUMERIC),
    "rpow_int": (lambda x: 2 ** x, False, None, FLOATS),
}


# bool ** x is excluded (numpy gives int8, which warpweave lacks), and so are int32
# tensors and int32 ** negative ints as exponents (numpy rejects negative integer powers;
# warpweave documents no support for integer tensor exponents).
POW_PARAMS = [(case, d) for case in sorted(POW_CASES) for d in POW_CASES[case][3]]


@targets
@pytest.mark.parametrize("case,dtype", POW_PARAMS)
def test_pow_operator(case, dtype, target):
    fn, base, exp_shape, _ = POW_CASES[case]
    rng = np.random.default_rng()
    x = rand(rng, (5, 7), dtype, positive=base is True, nonzero=base == "nonzero")
    arrays = [x] if exp_shape is None else [x, rand(rng, exp_shape, dtype)]
    run_check(target, fn, arrays, what=f"pow {case} {dtype}")


def test_int_pow_negative_exponent_is_rejected():
    x = np.arange(1, 6, dtype=np.int32)
    with pytest.raises(ww.Error):
        compile_run(lambda a: a ** -1, "interp", x)


@targets
@pytest.mark.parametrize("dtype", ALL)
def test_negate(dtype, target):
    rng = np.random.default_rng()
    x = rand(rng, (6, 9), dtype)
    if dtype == "bool":  # numpy: TypeError for the boolean negative
        with pytest.raises(TypeError):
            compile_run(lambda a: -a, target, x)
        return
    run_check(target, lambda a: (-a, -(a * 2) + a, +a), [x], what=f"neg {dtype}")


COMPARE = {
    "lt": lambda x, y: x < y,
    "le": lambda x, y: x <= y,
    "gt": lambda x, y: x > y,
    "ge": lambda x, y: x >= y,
    "eq": lambda x, y: x == y,
    "ne": lambda x, y: x != y,
}
CMP_CASES = [c for c in BCAST_CASES if c[0] in ("same", "row", "outer", "int_left",
                                                  "float_right", "npf32_left")]


@targets
@pytest.mark.parametrize("dtype", ALL)
@pytest.mark.parametrize("case", CMP_CASES, ids=[c[0] for c in CMP_CASES])
@pytest.mark.parametrize("op", sorted(COMPARE))
def test_comparison(op, case, dtype, target):
    rng = np.random.default_rng()
    _, a, b = case
    arrays, spec = _operands(rng, a, b, dtype, share=True)
    run_check(target, _binary_fn(COMPARE[op], *spec), arrays, what=f"{op} {case[0]} {dtype}")


@targets
@pytest.mark.parametrize("dtype", ["int32", "bool", "float32", "bfloat16"])
@pytest.mark.parametrize("op", sorted(COMPARE))
def test_comparison_big_python_int(op, dtype, target):
    """Python ints outside int32 compare by value with int32/bool tensors (numpy 2
    compares in int64). float16 is left out: numpy itself rounds 2**40 to inf there."""
    rng = np.random.default_rng()
    x = rand(rng, (5, 7), dtype)
    fn = lambda a: (COMPARE[op](a, 2 ** 40), COMPARE[op](-2 ** 40, a), COMPARE[op](a, -2 ** 31 - 1))
    run_check(target, fn, [x], what=f"{op} big int {dtype}")


LOGIC = {
    "and": lambda x, y: x & y,
    "or": lambda x, y: x | y,
    "xor": lambda x, y: x ^ y,
}
LOGIC_CASES = [("same", (5, 7), (5, 7)), ("row", (5, 7), (7,)), ("col", (5, 7), (5, 1)),
               ("outer", (5, 1), (7,)), ("true_right", (5, 7), True), ("false_left", False, (5, 7))]


@targets
@pytest.mark.parametrize("case", LOGIC_CASES, ids=[c[0] for c in LOGIC_CASES])
@pytest.mark.parametrize("op", sorted(LOGIC))
def test_bool_logic(op, case, target):
    rng = np.random.default_rng()
    _, a, b = case
    arrays, spec = _operands(rng, a, b, "bool")
    run_check(target, _binary_fn(LOGIC[op], *spec), arrays, what=f"{op} {case[0]}")


@targets
def test_bool_invert_and_compound(target):
    rng = np.random.default_rng()
    a, b = rand(rng, (6, 9), "bool"), rand(rng, (9,), "bool")
    x = rand(rng, (6, 9), "float32")
    run_check(target, lambda p, q, v: (~p, ~(p & q) | (v > 0.5), (v < 0) & ~p),
              [a, b, x], what="invert")


# ============================================================================ matmul

MATMUL_CASES = [
    ("2d", (5, 7), (7, 3)),
    ("1d_2d", (7,), (7, 3)),
    ("2d_1d", (5, 7), (7,)),
    ("1d_1d", (7,), (7,)),
    ("3d", (2, 5, 7), (2, 7, 3)),
    ("3d_2d", (2, 5, 7), (7, 3)),
    ("3d_bcast", (1, 5, 7), (3, 7, 4)),
]


# `@` for every case; ww.matmul for a 2-D and a batched one
MATMUL_PARAMS = [("operator", c) for c in MATMUL_CASES] + [
    ("function", c) for c in MATMUL_CASES if c[0] in ("2d", "3d_bcast")]


@targets
@pytest.mark.parametrize("dtype", ALL)
@pytest.mark.parametrize("form,case", MATMUL_PARAMS, ids=[f"{f}-{c[0]}" for f, c in MATMUL_PARAMS])
def test_matmul(form, case, dtype, target):
    rng = np.random.default_rng()
    _, sa, sb = case
    a, b = rand(rng, sa, dtype), rand(rng, sb, dtype)
    fn = (lambda x, y: x @ y) if form == "operator" else (lambda x, y: ww.matmul(x, y))
    k = sa[-1]
    run_check(target, fn, [a, b], ref_fn=lambda x, y: np.matmul(x, y),
              scale=max(1.0, math.sqrt(k)) * 2, what=f"matmul {case[0]} {dtype}")


# ============================================================================ reductions

# (axis, keepdims): an int, a negative int, tuples (unsorted, negative), None, () and
# keepdims both ways; one compiled output per case keeps the file fast.
REDUCE_CASES = [(1, False), (-1, True), (-3, False), ((-1, 0), True), ((0, 2), False),
                ((0, 1, 2), True), (None, False), (None, True), ((), False)]
REDUCE_SHAPE = (4, 6, 5)


def _reduced_count(axis, shape=REDUCE_SHAPE):
    if axis is None:
        return int(np.prod(shape))
    axes = axis if isinstance(axis, tuple) else (axis,)
    return int(np.prod([shape[a] for a in axes])) if axes else 1


# every case for the float dtypes; for int32 and bool, one case per reduction shape
# (row, column, all, none), which is what the generated code depends on
REDUCE_PARAMS = ([(d, a, k) for d in FLOATS for a, k in REDUCE_CASES]
                 + [(d, a, k) for d in ("int32", "bool")
                    for a, k in [(-1, True), ((0, 2), False), ((-1, 0), True), (None, False), ((), False)]])


@targets
@pytest.mark.parametrize("dtype,axis,keepdims", REDUCE_PARAMS,
                         ids=[f"{d}-{a!r}" + ("-keep" if k else "") for d, a, k in REDUCE_PARAMS])
@pytest.mark.parametrize("method", ["sum", "max", "min", "mean", "var"])
def test_reduction(method, axis, keepdims, dtype, target):
    rng = np.random.default_rng()
    x = rand(rng, REDUCE_SHAPE, dtype)

    def fn(a):
        return getattr(a, method)(axis=axis, keepdims=keepdims)

    scale = math.sqrt(_reduced_count(axis)) * (2.0 if method == "var" else 1.0)
    run_check(target, fn, [x], scale=scale, what=f"{method}(axis={axis!r}, keepdims={keepdims}) {dtype}")


@targets
@pytest.mark.parametrize("dtype", FLOATS)
def test_reductions_numpy_functions(dtype, target):
    """np.sum / np.max / ... called on traced tensors dispatch to the same methods."""
    rng = np.random.default_rng()
    x = rand(rng, (6, 9), dtype)

    def fn(a):
        return (np.sum(a, axis=0), np.max(a, axis=-1, keepdims=True), np.min(a), np.mean(a, axis=1),
                np.var(a, axis=(0, 1)), a.var(axis=0, ddof=1))

    run_check(target, fn, [x], scale=math.sqrt(54), what=f"np reductions {dtype}")


# ============================================================================ views

VIEWS = {
    "reshape_-1_first": lambda x: x.reshape(-1, 5),
    "reshape_-1_mid": lambda x: x.reshape(2, -1, 5),
    "reshape_flat": lambda x: x.reshape(-1),
    "reshape_args": lambda x: x.reshape(6, 4, 5),
    "reshape_split": lambda x: x.reshape((2, 2, 3, 2, 5)),
    "reshape_ones": lambda x: x.reshape(1, 120, 1),
    "transpose": lambda x: x.transpose(),
    "transpose_axes": lambda x: x.transpose(2, 0, 1),
    "transpose_tuple": lambda x: x.transpose((1, 2, 0)),
    "transpose_neg": lambda x: x.transpose(-1, 0, -2),
    "T": lambda x: x.T,
    "T_reshape": lambda x: x.T.reshape(-1),
    "reshape_T": lambda x: x.reshape(20, 6).T,
    "int": lambda x: x[1],
    "neg_int": lambda x: x[-1],
    "two_ints": lambda x: x[2, -3],
    "scalar": lambda x: x[-1, 0, -2],
    "slice_step": lambda x: x[::2],
    "slice_neg_step": lambda x: x[::-1],
    "slice_mixed": lambda x: x[1:4, ::-2, 1::2],
    "slice_neg_bounds": lambda x: x[-2:, -5:-1:3, :-1],
    "slice_neg_start_step": lambda x: x[3:0:-2, :, 4::-3],
    "none": lambda x: x[None],
    "none_mid": lambda x: x[:, None, 2],
    "none_end": lambda x: x[..., None],
    "ellipsis_int": lambda x: x[..., -2],
    "ellipsis_mid": lambda x: x[1, ..., ::-1],
    "none_ellipsis_none": lambda x: x[None, ..., None],
    "mixed": lambda x: x[-3:, None, 1::3, ..., 0],
    "chained": lambda x: x[::-1][1:, ::2].T[1],
    "index_transposed": lambda x: x.transpose(2, 0, 1)[::-2, 1],
    "empty_slice": lambda x: x[2:2],
    "slice_past_end": lambda x: x[10:],
}


@targets
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "bool"])  # 4-, 2- and 1-byte elements
@pytest.mark.parametrize("view", sorted(VIEWS))
def test_view(view, dtype, target):
    rng = np.random.default_rng()
    x = rand(rng, REDUCE_SHAPE, dtype)
    fn = VIEWS[view]
    got = compile_run(fn, target, x)
    want = np.array(fn(x))
    assert got.dtype == x.dtype and got.shape == want.shape, (got.dtype, got.shape, want.shape)
    np.testing.assert_array_equal(up(got), up(want), err_msg=view)


VIEW_COMPUTE = {
    "reversed_plus": lambda x, y: x[::-1] + y[None, :, ::-1],
    "transpose_mul": lambda x, y: x.T * y.T[:, :, None],
    "reshape_sub": lambda x, y: x.reshape(-1, 30) - y.reshape(-1)[None, :30],
    "index_sum": lambda x, y: x[:, 1::2].sum(axis=1) + y[1:4, ::-1].sum(axis=0),
    "T_matmul": lambda x, y: x[0].T @ y[:, ::-1],
    "none_broadcast": lambda x, y: x[..., None] * y[None, :, None, :2],
}


@targets
@pytest.mark.parametrize("dtype", NUMERIC)
@pytest.mark.parametrize("case", sorted(VIEW_COMPUTE))
def test_view_then_compute(case, dtype, target):
    rng = np.random.default_rng()
    x, y = rand(rng, REDUCE_SHAPE, dtype), rand(rng, (6, 5), dtype)
    run_check(target, VIEW_COMPUTE[case], [x, y], scale=4.0, what=f"{case} {dtype}")


ASTYPE = ALL


@targets
@pytest.mark.parametrize("src", ALL)
@pytest.mark.parametrize("dst", ASTYPE)
def test_astype(src, dst, target):
    rng = np.random.default_rng()
    # a wide range, so that float -> int truncation and float -> bool see many values
    x = rand(rng, (6, 9), src, low=-100.0, high=100.0)
    if dt.dtype(src).is_float:
        x.flat[:3] = np.asarray([0.0, -0.75, 0.5]).astype(x.dtype)  # truncation towards 0, zero -> False
    got = compile_run(lambda a: (a.astype(dst), a.astype(_npdt(dst)) * 1), target, x)
    ref = x.astype(_npdt(dst))
    assert got[0].dtype == _npdt(dst)
    d = dt.dtype(dst)
    if d.is_float:
        check(got[0], up(ref), dst, what=f"astype {src}->{dst}")
    else:
        np.testing.assert_array_equal(got[0], ref, err_msg=f"astype {src}->{dst}")
    np.testing.assert_array_equal(up(got[1]), up(ref * 1), err_msg=f"astype {src}->{dst} then *1")


# ============================================================================ functions

UNARY = {
    # name: (ww function, float64 reference, positive domain?, numpy function giving the dtype)
    "exp": (ww.exp, np.exp, False, np.exp),
    "log": (ww.log, np.log, True, np.log),
    "tanh": (ww.tanh, np.tanh, False, np.tanh),
    "sqrt": (ww.sqrt, np.sqrt, True, np.sqrt),
    "rsqrt": (ww.rsqrt, lambda x: 1.0 / np.sqrt(x), True, np.sqrt),
    "abs": (ww.abs, np.abs, False, np.abs),
    "sin": (ww.sin, np.sin, False, np.sin),
    "cos": (ww.cos, np.cos, False, np.cos),
    "erf": (ww.erf, _erf, False, np.exp),
    "sigmoid": (ww.sigmoid, _sigmoid, False, np.exp),
}


@targets
@pytest.mark.parametrize("dtype", ALL)
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_function(name, dtype, target):
    wfn, ref, positive, dfn = UNARY[name]
    rng = np.random.default_rng()
    if dtype == "int32" and not positive:
        x = rng.integers(-8, 8, size=(6, 9)).astype(np.int32)  # keep exp() of ints modest
    else:
        x = rand(rng, (6, 9), dtype, positive=positive, low=-3.0, high=3.0)
    run_check(target, lambda a: wfn(a), [x], ref_fn=lambda a: ref(a.astype(np.float64)), dtype_fn=dfn,
              what=f"{name} {dtype}")


@targets
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_function_of_expression(name, target):
    """A function applied to a broadcast expression, and composed with another."""
    wfn, ref, positive, _ = UNARY[name]
    rng = np.random.default_rng()
    x = rand(rng, (5, 7), "float32", positive=True)
    y = rand(rng, (7,), "float32", positive=True)
    run_check(target, lambda a, b: wfn(a * b + 0.5) * 2.0 - wfn(b),
              [x, y], ref_fn=lambda a, b: ref(a * b + 0.5) * 2.0 - ref(b),
              dtype_fn=lambda a, b: a * b, what=name)


MINMAX = {"maximum": (ww.maximum, np.maximum), "minimum": (ww.minimum, np.minimum)}
MINMAX_CASES = [c for c in BCAST_CASES if c[0] in ("same", "row", "col", "outer", "int_left",
                                                     "float_right", "npf32_left")]


@targets
@pytest.mark.parametrize("dtype", ALL)
@pytest.mark.parametrize("case", MINMAX_CASES, ids=[c[0] for c in MINMAX_CASES])
@pytest.mark.parametrize("name", sorted(MINMAX))
def test_maximum_minimum(name, case, dtype, target):
    wfn, nfn = MINMAX[name]
    rng = np.random.default_rng()
    _, a, b = case
    arrays, spec = _operands(rng, a, b, dtype, share=True)
    run_check(target, _binary_fn(wfn, *spec), arrays, ref_fn=_binary_fn(nfn, *spec),
              what=f"{name} {case[0]} {dtype}")


WHERE_CASES = {
    # name: (ww fn, numpy fn, shapes of (a, b) args after the condition, condition kind)
    "tensors": (lambda c, a, b: ww.where(c, a, b), lambda c, a, b: np.where(c, a, b),
                ((5, 7), (5, 7)), (5, 7)),
    "broadcast": (lambda c, a, b: ww.where(c, a, b), lambda c, a, b: np.where(c, a, b),
                  ((7,), (5, 7)), (5, 1)),
    "float_scalar": (lambda c, a: ww.where(c, a, 0.5), lambda c, a: np.where(c, a, 0.5),
                     ((5, 7),), (5, 7)),
    "int_scalar_left": (lambda c, a: ww.where(c, 2, a), lambda c, a: np.where(c, 2, a),
                        ((5, 7),), (7,)),
    "scalars": (lambda c: ww.where(c, 1.0, -1.0) * 3, lambda c: np.where(c, 1.0, -1.0) * 3, (), (5, 7)),
    "cond_from_compare": (lambda a, b: ww.where(a > b, a, b), lambda a, b: np.where(a > b, a, b),
                          ((5, 7), (7,)), None),
}


@targets
@pytest.mark.parametrize("dtype", ALL)
@pytest.mark.parametrize("case", sorted(WHERE_CASES))
def test_where(case, dtype, target):
    wfn, nfn, shapes, cond = WHERE_CASES[case]
    rng = np.random.default_rng()
    arrays = [rand(rng, s, dtype) for s in shapes]
    if cond is not None:
        arrays.insert(0, rand(rng, cond, "bool"))
    run_check(target, wfn, arrays, ref_fn=nfn, what=f"where {case} {dtype}")


@targets
@pytest.mark.parametrize("cond_dtype", ["float32", "int32", "bfloat16"])
def test_where_non_bool_condition(cond_dtype, target):
    """numpy.where tests a non-bool condition for truth (nonzero)."""
    rng = np.random.default_rng()
    c = rand(rng, (5, 7), cond_dtype)
    c.flat[::3] = 0
    a, b = rand(rng, (5, 7), "float32"), rand(rng, (7,), "float32")
    run_check(target, lambda c, a, b: ww.where(c, a, b), [c, a, b],
              ref_fn=lambda c, a, b: np.where(c != 0, a, b),
              dtype_fn=lambda c, a, b: np.where(c != 0, a, b), what=f"where cond {cond_dtype}")


SOFTMAX_PARAMS = [(d, a) for d in FLOATS for a in (-1, 0, (0, 1))] + [("int32", -1)]


@targets
@pytest.mark.parametrize("dtype,axis", SOFTMAX_PARAMS, ids=[f"{d}-{a!r}" for d, a in SOFTMAX_PARAMS])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax(name, axis, dtype, target):
    rng = np.random.default_rng()
    x = rand(rng, (6, 9), dtype, low=-4.0, high=4.0)
    wfn = getattr(ww, name)
    ref = softmax_reference if name == "softmax" else log_softmax_reference
    run_check(target, lambda a: wfn(a, axis=axis), [x], ref_fn=lambda a: ref(a, axis),
              dtype_fn=np.exp, scale=2.0, what=f"{name} axis={axis} {dtype}")


@targets
@pytest.mark.parametrize("dtype", FLOATS)
def test_softmax_default_axis_3d(dtype, target):
    rng = np.random.default_rng()
    x = rand(rng, (3, 4, 10), dtype, low=-4.0, high=4.0)
    run_check(target, lambda a: (ww.softmax(a), ww.log_softmax(a)), [x],
              ref_fn=lambda a: (softmax_reference(a, -1), log_softmax_reference(a, -1)),
              dtype_fn=lambda a: (np.exp(a), np.exp(a)), scale=2.0, what=f"softmax 3d {dtype}")


def _rms_norm(x, w=None, eps=1e-6, axis=-1):
    y = x / np.sqrt((x * x).mean(axis=axis, keepdims=True) + eps)
    return y if w is None else y * w


@targets
@pytest.mark.parametrize("dtype", NUMERIC)
@pytest.mark.parametrize("params", ["none", "weight", "bias", "both"])
def testlayer_norm_reference(params, dtype, target):
    rng = np.random.default_rng()
    x = rand(rng, (6, 33), dtype, low=-3.0, high=5.0)
    arrays = [x]
    if params in ("weight", "both"):
        arrays.append(rand(rng, (33,), dtype))
    if params in ("bias", "both"):
        arrays.append(rand(rng, (33,), dtype))

    def unpack(args):
        x, rest = args[0], list(args[1:])
        w = rest.pop(0) if params in ("weight", "both") else None
        b = rest.pop(0) if params in ("bias", "both") else None
        return x, w, b

    def fn(*args):
        x, w, b = unpack(args)
        if params == "bias":
            return ww.layer_norm(x, bias=b)
        return ww.layer_norm(x, w, b)

    def ref(*args):
        return layer_norm_reference(*unpack(args))

    run_check(target, fn, arrays, ref_fn=ref, dtype_fn=lambda *a: np.exp(a[0]), scale=2.0,
              what=f"layer_norm {params} {dtype}")


@targets
@pytest.mark.parametrize("dtype", FLOATS)
def test_layer_norm_eps_and_axes(dtype, target):
    rng = np.random.default_rng()
    x = rand(rng, (4, 6, 5), dtype)
    w = rand(rng, (6, 5), dtype)
    run_check(target,
              lambda a, w: (ww.layer_norm(a, w, eps=0.1, axis=(1, 2)), ww.layer_norm(a, axis=0)),
              [x, w], ref_fn=lambda a, w: (layer_norm_reference(a, w, eps=0.1, axis=(1, 2)),
                                           layer_norm_reference(a, axis=0)),
              dtype_fn=lambda a, w: (np.exp(a), np.exp(a)), scale=2.0, what=f"layer_norm axes {dtype}")


@targets
@pytest.mark.parametrize("dtype", NUMERIC)
@pytest.mark.parametrize("weight", [False, True])
def test_rms_norm(weight, dtype, target):
    rng = np.random.default_rng()
    x = rand(rng, (6, 33), dtype)
    if weight:
        w = rand(rng, (33,), dtype)
        run_check(target, lambda a, w: ww.rms_norm(a, w), [x, w], ref_fn=_rms_norm,
                  dtype_fn=lambda a, w: np.exp(a), scale=2.0, what=f"rms_norm w {dtype}")
    else:
        run_check(target, lambda a: (ww.rms_norm(a), ww.rms_norm(a, eps=0.5, axis=0)), [x],
                  ref_fn=lambda a: (_rms_norm(a), _rms_norm(a, eps=0.5, axis=0)),
                  dtype_fn=lambda a: (np.exp(a), np.exp(a)), scale=2.0, what=f"rms_norm {dtype}")


def _gelu(x, approximate):
    if approximate == "none":
        return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


@targets
@pytest.mark.parametrize("dtype", NUMERIC)
@pytest.mark.parametrize("approximate", ["none", "tanh", "default"])
def test_gelu(approximate, dtype, target):
    rng = np.random.default_rng()
    if dtype == "int32":
        x = rng.integers(-6, 6, size=(6, 9)).astype(np.int32)
    else:
        x = rand(rng, (6, 9), dtype, low=-4.0, high=4.0)
    if approximate == "default":
        fn, ref = (lambda a: ww.gelu(a)), (lambda a: _gelu(a, "none"))
    else:
        fn, ref = (lambda a: ww.gelu(a, approximate=approximate)), (lambda a: _gelu(a, approximate))
    run_check(target, fn, [x], ref_fn=ref, dtype_fn=np.exp, what=f"gelu {approximate} {dtype}")


@targets
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_gelu_tanh_keeps_relative_accuracy_in_its_negative_tail(dtype, target):
    """Where tanh(u) is near -1, 0.5 x (1 + tanh u) cancels to nothing; warpweave's
    x / (1 + e^-2u) does not: each element's relative error is bounded by the
    exponential's conditioning, a few ulps of the dtype times (1 + 2|u|)."""
    x = -np.random.default_rng().uniform(2.0, 9.0, (4, 64)).astype(ml_dtypes.bfloat16 if dtype == "bfloat16"
                                                                   else np.float32)
    got = up(compile_run(lambda a: ww.gelu(a, approximate="tanh"), target, x))
    v = up(x)  # float64, in a form that does not cancel either
    two_u = 2.0 * math.sqrt(2.0 / math.pi) * (v + 0.044715 * v ** 3)
    want = v / (1.0 + np.exp(-two_u))
    ulp = {"float32": 2.0 ** -23, "bfloat16": 2.0 ** -7}[dtype]
    assert np.all(np.abs(got - want) <= 4 * ulp * (1 + np.abs(two_u)) * np.abs(want))


@targets
@pytest.mark.parametrize("widths, axis", [((4, 1, 3), 1), ((1000, 4097), -1), ((5,), 0), ((2, 3), 0)],
                         ids=["three", "long", "one", "rows"])
def test_concatenate(widths, axis, target):
    """Pieces of other dtypes (promoted), transposed and broadcast pieces, and
    computation on the result, which fuses with it."""
    rng = np.random.default_rng()
    rows = 3 if axis != 0 else 7
    shapes = [((rows, w) if axis != 0 else (w, rows)) for w in widths]
    pieces = [rand(rng, s, "float32" if k % 2 else "bfloat16") for k, s in enumerate(shapes)]
    run_check(target, lambda *p: np.concatenate(p, axis=axis) * 2 - 1, pieces,
              what=f"concatenate {widths} axis {axis}")
    a, b = rand(rng, (4, 3), "float32"), rand(rng, (4,), "float32")
    run_check(target, lambda a, b: np.concatenate([a.T, np.broadcast_to(b, (2, 4))]), [a, b],
              what="concatenate views")


def test_concatenate_errors():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ww.ShapeError, match="differ outside axis 1"):
        compile_run(lambda a, b: np.concatenate([a, b], axis=1), "interp", x, np.ones((3, 3), np.float32))
    with pytest.raises(ww.ShapeError, match="one rank"):
        compile_run(lambda a, b: np.concatenate([a, b]), "interp", x, np.ones(3, np.float32))
    with pytest.raises(ww.UnsupportedError, match="list or tuple of traced tensors"):
        compile_run(lambda a: np.concatenate([a, [1.0, 2.0, 3.0]]), "interp", x)


def test_gelu_bad_approximate():
    with pytest.raises(ww.OptionError):
        compile_run(lambda a: ww.gelu(a, approximate="fast"), "interp", np.ones(3, np.float32))


@targets
@pytest.mark.parametrize("dtype", NUMERIC)
def test_relu(dtype, target):
    rng = np.random.default_rng()
    x = rand(rng, (6, 9), dtype)
    run_check(target, lambda a: (ww.relu(a), ww.relu(a - 1)), [x],
              ref_fn=lambda a: (np.maximum(a, 0), np.maximum(a - 1, 0)),
              dtype_fn=lambda a: (a, a - 1), what=f"relu {dtype}")


# ============================================================================ programs: outputs and arguments

@targets
@pytest.mark.parametrize("dtype", FLOATS)
def test_several_outputs(dtype, target):
    rng = np.random.default_rng()
    x, y = rand(rng, (5, 7), dtype), rand(rng, (7,), dtype)

    def fn(a, b):
        s = a + b
        return s, s.sum(axis=0), ww.exp(a) * b, (a * 2).T, s.max(axis=-1, keepdims=True)

    run_check(target, fn, [x, y],
              ref_fn=lambda a, b: (a + b, (a + b).sum(axis=0), np.exp(a) * b, (a * 2).T,
                                   (a + b).max(axis=-1, keepdims=True)),
              dtype_fn=lambda a, b: (a + b, (a + b).sum(axis=0), np.exp(a) * b, (a * 2).T, a + b),
              scale=(1.0, 3.0, 1.0, 1.0, 1.0), what=f"tuple outputs {dtype}")


@targets
def test_list_of_outputs(target):
    rng = np.random.default_rng()
    x = rand(rng, (5, 7), "float32")
    got = compile_run(lambda a: [a * 2, a - 1], target, x)
    assert len(got) == 2
    check(got[0], up(x) * 2, np.float32)
    check(got[1], up(x) - 1, np.float32)


@targets
@pytest.mark.parametrize("dtype", ALL)
def test_unused_argument(dtype, target):
    rng = np.random.default_rng()
    x = rand(rng, (5, 7), dtype)
    unused = rand(rng, (3, 2, 2), "float16")
    got = compile_run(lambda a, b: a.astype("float32") * 2, target, x, unused)
    check(got, up(x).astype(np.float64) * 2, np.float32)
    got2 = compile_run(lambda b, a: (a == a) & (a == a), target, unused, x)  # unused first argument
    check(got2, np.ones(x.shape, bool), np.bool_)


@targets
@pytest.mark.parametrize("dtype", ALL)
def test_output_is_input_or_view(dtype, target):
    rng = np.random.default_rng()
    x, y = rand(rng, (5, 7), dtype), rand(rng, (4,), dtype)

    def fn(a, b):
        return a, a.T, a[::2, 1:], b[None, ::-1], a.reshape(-1), b

    got = compile_run(fn, target, x, y)
    want = fn(x, y)
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == w.dtype and g.shape == w.shape, (k, g.dtype, g.shape, w.shape)
        np.testing.assert_array_equal(up(g), up(w), err_msg=f"output {k}")
    # single output that is the input itself
    got = compile_run(lambda a: a, target, x)
    np.testing.assert_array_equal(up(got), up(x))
    assert got.dtype == x.dtype


@targets
def test_same_tensor_returned_twice(target):
    rng = np.random.default_rng()
    x = rand(rng, (5, 7), "float32")
    got = compile_run(lambda a: (lambda s: (s, s, s.T))(a * 3 + 1), target, x)
    ref = up(x) * 3 + 1
    assert len(got) == 3
    for g, r in zip(got, (ref, ref, ref.T)):
        check(g, r, np.float32)


@targets
def test_recompiles_per_shape_and_dtype(target):
    rng = np.random.default_rng()
    f = ww.jit(lambda a: a * 2 + 1, target=target)
    for shape, dtype in [((3, 5), "float32"), ((4,), "float32"), ((3, 5), "float16"),
                         ((2, 2), "int32")]:
        x = rand(rng, shape, dtype)
        check(f(x), up(x) * 2 + 1, x.dtype)


# ============================================================================ odd shapes

ODD_SHAPES = [(1, 1), (3, 5), (2, 4097), (33, 64)]


@targets
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "int32"])
@pytest.mark.parametrize("shape", ODD_SHAPES, ids=["x".join(map(str, s)) for s in ODD_SHAPES])
def test_odd_shapes(shape, dtype, target):
    rng = np.random.default_rng()
    x = rand(rng, shape, dtype)
    r = rand(rng, shape[-1:], dtype)

    def fn(a, b):
        return (a * 2 + b, a.sum(axis=-1), a.max(axis=0), a.min(), a.mean(axis=0, keepdims=True),
                a.T, a.sum())

    n0, n1 = shape
    scales = (1.0, math.sqrt(n1), 1.0, 1.0, math.sqrt(n0), 1.0, math.sqrt(n0 * n1))
    run_check(target, fn, [x, r], scale=scales, what=f"odd {shape} {dtype}")
    if dtype != "int32":
        run_check(target, lambda a: (ww.softmax(a), ww.layer_norm(a)), [x],
                  ref_fn=lambda a: (softmax_reference(a, -1), layer_norm_reference(a)),
                  dtype_fn=lambda a: (a, a), scale=2.0, what=f"odd norm {shape} {dtype}")


@targets
def test_matmul_odd_shapes(target):
    rng = np.random.default_rng()
    a, b = rand(rng, (33, 64), "float32"), rand(rng, (64, 17), "float32")
    run_check(target, lambda x, y: (x @ y, x[:1] @ y, x.T[:, :1].T @ y[:, :1]), [a, b],
              ref_fn=lambda x, y: (x @ y, x[:1] @ y, x.T[:, :1].T @ y[:, :1]), scale=16.0,
              what="matmul odd")


SCALARS = [np.float32(2.5), np.float16(-1.25), ml_dtypes.bfloat16(0.75), np.int32(7), np.bool_(True)]


@targets
@pytest.mark.parametrize("value", SCALARS, ids=[np.asarray(s).dtype.name for s in SCALARS])
def test_zero_d_scalar_argument(value, target):
    """A numpy scalar argument is a 0-d tensor, and gives 0-d outputs."""
    rng = np.random.default_rng()
    d = np.asarray(value).dtype
    m = rand(rng, (3, 4), d)

    def fn(s, a):
        return s * 2 + 1, s.sum(), s.astype("float32") + 0.5, a * s, s.reshape(1, 1), s[None]

    got = run_check(target, fn, [value, m], what=f"0-d {d}")
    for k in range(3):
        assert got[k].shape == (), (k, got[k].shape)
    if d != np.bool_:
        run_check(target, lambda s: (ww.exp(s), ww.maximum(s, 1), -s), [value],
                  ref_fn=lambda s: (np.exp(s), np.maximum(s, 1), -s),
                  dtype_fn=lambda s: (np.exp(s), np.maximum(s, 1), -s), what=f"0-d fn {d}")


@targets
def test_zero_d_from_reduction_and_index(target):
    rng = np.random.default_rng()
    x = rand(rng, (5, 7), "float32")
    got = run_check(target, lambda a: (a.sum(), a[2, -1], a.max() - a.min(), a[1, 1] * a),
                    [x], scale=6.0, what="0-d")
    assert [g.shape for g in got] == [(), (), (), (5, 7)]


@targets
@pytest.mark.parametrize("dtype", ["float32", "int32"])
def test_empty_input(dtype, target):
    """(0, 4) inputs: empty outputs (no reduction over the empty axis)."""
    rng = np.random.default_rng()
    x = rand(rng, (0, 4), dtype)
    y = rand(rng, (4, 3), dtype)

    def fn(a, b):
        return (a * 2 + 1, a.sum(axis=1), a.T, a @ b, a.mean(axis=1), a.reshape(-1, 2),
                a[:, ::-1] - 1, a.max(axis=1, keepdims=True))

    run_check(target, fn, [x, y], what=f"empty {dtype}")


EMPTY_REDUCTIONS = {
    # reductions over the empty axis of a (0, 4) input, into non-empty outputs
    "sum_axis0": lambda a: a.sum(axis=0),
    "sum_axis0_keepdims": lambda a: a.sum(axis=0, keepdims=True),
    "mean_axis0": lambda a: a.mean(axis=0),        # 0/0: NaN, as numpy
    "matmul_contract_empty": lambda a: a.T @ a,    # (4, 0) @ (0, 4): zeros
    "sum_all": lambda a: a.sum(),
    "sum_all_keepdims": lambda a: a.sum(axis=(0, 1), keepdims=True),
}


@targets
@pytest.mark.parametrize("dtype", ["float32", "int32"])
@pytest.mark.parametrize("case", sorted(EMPTY_REDUCTIONS))
def test_empty_reduction(case, dtype, target):
    """numpy: a sum over an empty axis is 0 (the identity), a mean 0/0 = NaN."""
    rng = np.random.default_rng()
    x = rand(rng, (0, 4), dtype)
    run_check(target, EMPTY_REDUCTIONS[case], [x], what=f"empty {case} {dtype}")


@targets
def test_empty_max_is_rejected(target):
    x = np.ones((0, 4), np.float32)
    with pytest.raises(ww.ShapeError):
        compile_run(lambda a: a.max(axis=0), target, x)


# ============================================================================ NaN and inf

def _with_specials(rng, shape, dtype):
    x = rand(rng, shape, dtype)
    flat = x.reshape(-1)
    idx = rng.permutation(flat.size)
    flat[idx[:4]] = np.nan
    flat[idx[4:7]] = np.inf
    flat[idx[7:10]] = -np.inf
    return x


@targets
@pytest.mark.parametrize("dtype", FLOATS)
def test_nan_inf_maximum_minimum(dtype, target):
    rng = np.random.default_rng()
    a, b = _with_specials(rng, (6, 8), dtype), _with_specials(rng, (6, 8), dtype)
    # NaN in the first operand only, in the second only, and in both
    a[0, 0], b[0, 0] = np.nan, 1.0
    a[0, 1], b[0, 1] = 1.0, np.nan
    a[0, 2], b[0, 2] = np.nan, np.nan
    a[0, 3], b[0, 3] = np.inf, np.nan
    a[0, 4], b[0, 4] = -np.inf, np.nan
    a[0, 5], b[0, 5] = np.nan, -np.inf
    run_check(target,
              lambda x, y: (ww.maximum(x, y), ww.minimum(x, y), ww.maximum(x, 0.5),
                            ww.minimum(-1.0, x), ww.relu(x), ww.maximum(x, y[0])),
              [a, b],
              ref_fn=lambda x, y: (np.maximum(x, y), np.minimum(x, y), np.maximum(x, 0.5),
                                   np.minimum(-1.0, x), np.maximum(x, 0), np.maximum(x, y[0])),
              dtype_fn=lambda x, y: (x, x, x, x, x, x), what=f"nan maximum {dtype}")


@targets
@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("method", ["max", "min"])
def test_nan_inf_max_min_reductions(method, dtype, target):
    rng = np.random.default_rng()
    x = rand(rng, (7, 40), dtype)
    x[1, 0] = np.nan          # first element of a row
    x[2, 39] = np.nan         # last element of a row
    x[3, 17] = np.nan         # NaN next to an infinity
    x[3, 18] = np.inf
    x[4, 5] = np.inf          # infinities without NaN
    x[4, 6] = -np.inf
    x[5, :] = -np.inf if method == "max" else np.inf  # the identity's infinity, and a NaN
    x[5, 7] = np.nan
    x[6, :] = -np.inf if method == "max" else np.inf  # a row of only that infinity

    def fn(a):
        return (getattr(a, method)(axis=1), getattr(a, method)(axis=0), getattr(a, method)(),
                getattr(a[:, 1:], method)(axis=-1, keepdims=True), getattr(a[4:5], method)(),
                getattr(a[:1], method)())

    run_check(target, fn, [x], what=f"nan {method} {dtype}")


@targets
def test_nan_propagates_through_elementwise(target):
    x = np.array([[np.nan, 1.0, -np.inf, np.inf]], np.float32)
    run_check(target, lambda a: (a + 1, a * 0, ww.exp(a), ww.tanh(a), a > 0, a == a,
                                 ww.where(a != a, 0.0, a)),
              [x], ref_fn=lambda a: (a + 1, a * 0, np.exp(a), np.tanh(a), a > 0, a == a,
                                     np.where(a != a, 0.0, a)),
              dtype_fn=lambda a: (a + 1, a * 0, np.exp(a), np.tanh(a), a > 0, a == a,
                                  np.where(a != a, 0.0, a)), what="nan elementwise")
