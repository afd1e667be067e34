"""The function library: math functions, activations, norms and softmaxes.

Every function works on traced tensors (inside a function compiled with
`ww.jit`). The elementwise ones (`exp log tanh sqrt rsqrt abs sin cos erf sigmoid
maximum minimum where relu gelu`) also work on tensor-expression values inside
`ww.compute` (`ww.exp(A[i])`), and on plain Python/numpy scalars, which they
evaluate at once (numpy's result; a Python float for Python scalar arguments).

Called with a numpy array, they raise `UnsupportedError`: warpweave does not
compute eagerly; call them inside a function compiled with `ww.jit`.

Dtypes follow numpy: math functions on integers give float64 (on bool float16),
`maximum`/`minimum` promote and propagate NaN. Composite operations (softmax,
log_softmax, layer_norm, rms_norm, gelu) on float16/bfloat16 compute in float32
and cast the result back, as PyTorch does.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import DTypeError, IndexOutOfRangeError, OptionError, ShapeError, UnsupportedError
from ..ir import dtypes as dt
from ..ir import expr as ex
from . import mathfns, te
from . import tensor as traced
from .algebra import (as_scalar, broadcast_shapes, const, elem_binary, elem_cast, elem_unary, elem_where,
                      float_result, is_scalar, normalize_axes, promote)
from .tensor import Tensor, map_elementwise, scope

__all__ = ["exp", "log", "tanh", "sqrt", "rsqrt", "abs", "sin", "cos", "erf", "sigmoid",
           "maximum", "minimum", "where", "matmul", "softmax", "log_softmax", "layer_norm",
           "rms_norm", "gelu", "relu", "take", "expm1", "log1p", "log2", "exp2", "tan", "sinh", "cosh",
           "arcsinh", "arccosh", "arctanh", "arctan", "arcsin", "arccos", "arctan2", "hypot",
           "copysign", "fmod", "isnan", "isinf", "isfinite", "signbit", "lgamma", "digamma"]

def _kind(name: str, args) -> str:
    """'trace', 'te' or 'scalar' for the arguments of function `name`."""
    kinds = set()
    for a in args:
        if isinstance(a, Tensor):
            kinds.add("trace")
        elif isinstance(a, te.Value):
            kinds.add("te")
        elif isinstance(a, te.TeTensor):
            raise UnsupportedError(f"ww.{name}: a tensor-expression tensor ({a.name}) must be "
                                   f"indexed inside ww.compute, e.g. ww.{name}({a.name}[i])")
        elif is_scalar(a):
            as_scalar(a)  # rejects complex
        elif isinstance(a, (np.ndarray, list, tuple)):
            raise UnsupportedError(f"ww.{name} was called with a {type(a).__name__}; warpweave does not "
                                   "compute eagerly: call it inside a function compiled with ww.jit "
                                   "(or inside ww.compute on tensor-expression values)")
        else:
            raise UnsupportedError(f"ww.{name}: unsupported argument of type {type(a).__name__}: {a!r}")
    if kinds == {"trace", "te"}:
        raise UnsupportedError(f"ww.{name}: traced tensors and tensor-expression values cannot be mixed")
    return kinds.pop() if kinds else "scalar"


def _eager(fn, args):
    """Evaluate an elementwise function of scalars with numpy semantics."""
    consts = []
    for a in args:
        s = as_scalar(a)
        d = dt.dtype(s.dtype) if isinstance(s, np.generic) else dt.python_scalar_dtype(s)
        consts.append(const(s, d))
    e = fn(*consts)
    value = np.asarray(ex.evaluate(e, {})).astype(e.dtype.numpy)[()]
    if all(not isinstance(as_scalar(a), np.generic) for a in args):
        return value.item()
    return value


def _elementwise(name: str, fn, *args):
    kind = _kind(name, args)
    if kind == "trace":
        return map_elementwise(name, fn, *args)
    if kind == "te":
        return te.map_values(fn, *args)
    return _eager(fn, args)


def _unary(op):
    def f(x):
        return _elementwise(op, lambda a: elem_unary(op, a), x)
    f.__name__ = op
    f.__qualname__ = op
    f.__doc__ = (f"Elementwise {op}, typed like numpy's ufunc (integers give float64, "
                 "bool float16)." if op != "abs" else "Elementwise absolute value (dtype kept).")
    return f


exp = _unary("exp")
log = _unary("log")
tanh = _unary("tanh")
sqrt = _unary("sqrt")
rsqrt = _unary("rsqrt")
abs = _unary("abs")
sin = _unary("sin")
cos = _unary("cos")
erf = _unary("erf")
sigmoid = _unary("sigmoid")


def _math(name, fn, arity=1, predicate=False):
    """An elementwise function of `mathfns` with numpy's typing: float operands promoted
    together (integers give float64, bool float16), computed in float32 for the 16-bit
    floats and cast back; predicates (isnan ...) give bool."""
    def f(*xs):
        if len(xs) != arity:
            raise TypeError(f"ww.{name} takes {arity} argument(s), got {len(xs)}")

        def body(*vs):
            d = float_result(promote(*vs))
            c = dt.compute_dtype(d)
            r = fn(*(elem_cast(v, c) for v in vs))
            return r if predicate else ex.cast(r, d)
        return _elementwise(name, body, *xs)
    f.__name__ = f.__qualname__ = name
    f.__doc__ = f"Elementwise {name} (numpy's), from `frontend.mathfns`: {fn.__doc__ or ''}".strip()
    return f


expm1 = _math("expm1", mathfns.expm1)
log1p = _math("log1p", mathfns.log1p)
log2 = _math("log2", mathfns.log2)
exp2 = _math("exp2", mathfns.exp2)
tan = _math("tan", mathfns.tan)
sinh = _math("sinh", mathfns.sinh)
cosh = _math("cosh", mathfns.cosh)
arcsinh = _math("arcsinh", mathfns.asinh)
arccosh = _math("arccosh", mathfns.acosh)
arctanh = _math("arctanh", mathfns.atanh)
arctan = _math("arctan", mathfns.atan)
arcsin = _math("arcsin", mathfns.asin)
arccos = _math("arccos", mathfns.acos)
arctan2 = _math("arctan2", mathfns.atan2, 2)
hypot = _math("hypot", mathfns.hypot, 2)
copysign = _math("copysign", mathfns.copysign, 2)
fmod = _math("fmod", mathfns.fmod, 2)
isnan = _math("isnan", mathfns.isnan, predicate=True)
isinf = _math("isinf", mathfns.isinf, predicate=True)
isfinite = _math("isfinite", mathfns.isfinite, predicate=True)
signbit = _math("signbit", mathfns.signbit, predicate=True)
lgamma = _math("lgamma", mathfns.lgamma)
digamma = _math("digamma", mathfns.digamma)


def maximum(a, b):
    """numpy.maximum: promotes like numpy; NaN in either operand gives NaN."""
    return _elementwise("maximum", lambda x, y: elem_binary("max", x, y), a, b)


def minimum(a, b):
    """numpy.minimum: promotes like numpy; NaN in either operand gives NaN."""
    return _elementwise("minimum", lambda x, y: elem_binary("min", x, y), a, b)


def where(cond, a, b):
    """numpy.where(cond, a, b): `cond` tested for truth, `a` and `b` promoted together."""
    return _elementwise("where", elem_where, cond, a, b)


def relu(x):
    """max(x, 0), keeping x's dtype (NaN stays NaN)."""
    return _elementwise("relu", lambda a: elem_binary("max", a, ex.Const(0, a.dtype)), x)


_SQRT1_2 = math.sqrt(0.5)
_SQRT2_PI = math.sqrt(2.0 / math.pi)


def gelu(x, approximate: str = "none"):
    """GELU: exact `0.5 x (1 + erf(x / sqrt 2))` or, with approximate="tanh",
    `0.5 x (1 + tanh(u))`, u = sqrt(2/pi) (x + 0.044715 x^3), computed as the equal
    `x / (1 + exp(-2u))`: one exponential and no cancellation where tanh(u) is near
    -1 (there it is more accurate than the tanh form). One elementwise operation."""
    if approximate not in ("none", "tanh"):
        raise OptionError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")

    def fn(a):
        out = float_result(a.dtype if isinstance(a, ex.Expr) else promote(a))
        c = dt.compute_dtype(out)
        v = elem_cast(a, c)
        if approximate == "tanh":
            # -2u = v (c1 + c2 v²)
            minus_2u = elem_binary("mul", v, elem_binary("add", elem_binary("mul", elem_binary("mul", v, v),
                                                                          -2 * _SQRT2_PI * 0.044715),
                                                       -2 * _SQRT2_PI))
            return ex.cast(elem_binary("div", v, elem_binary("add", elem_unary("exp", minus_2u), 1.0)), out)
        inner = elem_unary("erf", elem_binary("mul", v, _SQRT1_2))
        y = elem_binary("mul", elem_binary("mul", v, 0.5), elem_binary("add", inner, 1.0))
        return ex.cast(y, out)

    return _elementwise("gelu", fn, x)


# ----------------------------------------------------------------------------- tensor-only ops

def _need_tensor(name: str, *args):
    kind = _kind(name, args)
    if kind != "trace":
        if kind == "te":
            raise UnsupportedError(f"ww.{name} works on traced tensors (ww.jit), not on tensor-expression "
                                   "values; write it with ww.compute and ww.sum/ww.max")
        raise UnsupportedError(f"ww.{name} needs a traced tensor argument; call it inside a function "
                               "compiled with ww.jit")


def matmul(a, b):
    """numpy.matmul (1-D, 2-D and batched with broadcast batch dimensions)."""
    _need_tensor("matmul", a, b)
    return traced.matmul(a, b)


def take(a, indices, axis=None):
    """numpy.take: the elements of `a` at the integer tensor `indices` along `axis` (of
    `a` flattened when None), negative indices counted from the end — a gather, one
    load per result element whatever `a`'s size (an embedding is `take(table, ids,
    axis=0)`). An index outside [-n, n) raises IndexOutOfRangeError in the reference
    evaluators; compiled code clamps it into the axis, never reading outside `a`."""
    _need_tensor("take", a, indices)
    traced.common_trace([a, indices], "take")
    if not indices._dt.is_int:
        raise DTypeError(f"take: indices must be integers, got {indices._dt}")
    if axis is None:
        a, axis = a.reshape((-1,)), 0
    (axis,) = normalize_axes(axis, a.ndim, "take")
    n, k = a.shape[axis], indices.ndim
    shape = tuple(a.shape[:axis]) + tuple(indices.shape) + tuple(a.shape[axis + 1:])
    if math.prod(shape) and n == 0:
        raise IndexOutOfRangeError(f"take: cannot take from an empty axis {axis} of a tensor of shape "
                                   f"{tuple(a.shape)}")
    ivars = traced.index_vars(len(shape))
    ranges = traced.var_ranges(ivars, shape)
    i = ex.cast(indices._load(ivars[axis:axis + k], ranges), dt.INDEX)
    i = ex.select(ex.binary("lt", i, 0), i + n, i)
    body = a._load([*ivars[:axis], i, *ivars[axis + k:]], ranges)
    return a._tr.compute(shape, ivars, body, traced.op_label("take"))


def _float_dtypes(x: Tensor, *others):
    """(result dtype, compute dtype) of a composite op: numpy's float result of the
    promoted inputs, computed in float32 for the 16-bit floats."""
    d = promote(x._dt, *(o._dt if isinstance(o, Tensor) else o for o in others if o is not None))
    out = float_result(d)
    return out, dt.compute_dtype(out)


def _on_scalar(fn, x, axis):
    """A normalization of a 0-d tensor, as PyTorch defines it: over its one element
    (axis 0, -1 or None; () too), as if it had shape (1,)."""
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    for a in axes:
        if a not in (0, -1, None):
            raise ShapeError(f"{fn.__name__}: axis {a} is out of bounds for a tensor of dimension 0")
    return fn(x.reshape(1), axis=0).reshape(())


def softmax(x, axis=-1):
    """exp(x - max) / sum(exp(x - max)) over `axis` (int or tuple)."""
    _need_tensor("softmax", x)
    if x.ndim == 0:
        return _on_scalar(softmax, x, axis)
    out, c = _float_dtypes(x)
    with scope("softmax"):
        xc = x.astype(c)
        m = xc.max(axis=axis, keepdims=True)
        e = exp(xc - m)
        y = e / e.sum(axis=axis, keepdims=True)
        return y.astype(out)


def log_softmax(x, axis=-1):
    """x - max - log(sum(exp(x - max))) over `axis` (int or tuple)."""
    _need_tensor("log_softmax", x)
    if x.ndim == 0:
        return _on_scalar(log_softmax, x, axis)
    out, c = _float_dtypes(x)
    with scope("log_softmax"):
        xc = x.astype(c)
        d = xc - xc.max(axis=axis, keepdims=True)
        y = d - log(exp(d).sum(axis=axis, keepdims=True))
        return y.astype(out)


def _check_param(name, p, x):
    if p is None:
        return
    if not isinstance(p, Tensor):
        _kind(name, [p])
        raise UnsupportedError(f"ww.{name}: weight/bias must be traced tensors, got {type(p).__name__}")
    broadcast_shapes(x.shape, p.shape, what=f"{name} of input {x.shape} with parameter")


def layer_norm(x, weight=None, bias=None, eps: float = 1e-5, axis=-1):
    """(x - mean) / sqrt(var + eps) * weight + bias, with the biased variance over
    `axis` (int or tuple); weight and bias broadcast against x like numpy."""
    _need_tensor("layer_norm", x)
    for p in (weight, bias):
        _check_param("layer_norm", p, x)
    out, c = _float_dtypes(x, weight, bias)
    with scope("layer_norm"):
        xc = x.astype(c)
        mean = xc.mean(axis=axis, keepdims=True)
        d = xc - mean
        var = (d * d).mean(axis=axis, keepdims=True)
        y = d * rsqrt(var + eps)
        if weight is not None:
            y = y * weight.astype(c)
        if bias is not None:
            y = y + bias.astype(c)
        return y.astype(out)


def rms_norm(x, weight=None, eps: float = 1e-6, axis=-1):
    """x / sqrt(mean(x^2) + eps) * weight over `axis` (int or tuple)."""
    _need_tensor("rms_norm", x)
    _check_param("rms_norm", weight, x)
    out, c = _float_dtypes(x, weight)
    with scope("rms_norm"):
        xc = x.astype(c)
        ms = (xc * xc).mean(axis=axis, keepdims=True)
        y = xc * rsqrt(ms + eps)
        if weight is not None:
            y = y * weight.astype(c)
        return y.astype(out)
