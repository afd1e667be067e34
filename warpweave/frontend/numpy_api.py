"""numpy's protocols on traced tensors: which numpy ufuncs and array functions a
`Tensor` answers, registered on `Tensor` when the frontend package loads."""
from __future__ import annotations

from ..errors import UnsupportedError
from . import ops
from .algebra import normalize_axes
from .constructors import concatenate
from .tensor import Tensor, _binop, _unop, matmul


def _ufunc_table():
    b = lambda op: (lambda x, y: _binop(op, x, y))
    return {
        "add": b("add"), "subtract": b("sub"), "multiply": b("mul"), "true_divide": b("div"),
        "divide": b("div"), "power": b("pow"), "maximum": ops.maximum, "minimum": ops.minimum,
        "less": b("lt"), "less_equal": b("le"), "greater": b("gt"), "greater_equal": b("ge"),
        "equal": b("eq"), "not_equal": b("ne"), "logical_and": b("and"), "logical_or": b("or"),
        "logical_xor": b("xor"), "bitwise_and": b("and"), "bitwise_or": b("or"),
        "bitwise_xor": b("xor"), "logical_not": lambda x: _unop("not", x, "logical_not"),
        "invert": lambda x: _unop("not", x, "invert"), "negative": lambda x: _unop("neg", x),
        "positive": lambda x: x, "absolute": ops.abs, "exp": ops.exp, "log": ops.log,
        "tanh": ops.tanh, "sqrt": ops.sqrt, "sin": ops.sin, "cos": ops.cos, "matmul": matmul,
        "square": lambda x: _binop("pow", x, 2, "square"),
    }


def _array_function_table():
    def _red(method):
        def fn(a, axis=None, dtype=None, out=None, keepdims=False, **kw):
            if out is not None or kw or (dtype is not None and method != "sum"):
                raise UnsupportedError(f"numpy.{method} with out=/dtype=/{', '.join(kw)} is not "
                                       "supported on traced tensors")
            if method == "sum":
                return a.sum(axis=axis, dtype=dtype, keepdims=keepdims)
            return getattr(a, method)(axis=axis, keepdims=keepdims)
        return fn

    def _var(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
        if out is not None or dtype is not None:
            raise UnsupportedError("numpy.var with out=/dtype= is not supported on traced tensors")
        return a.var(axis=axis, ddof=ddof, keepdims=keepdims)

    return {
        "sum": _red("sum"), "max": _red("max"), "amax": _red("max"), "min": _red("min"),
        "amin": _red("min"), "mean": _red("mean"), "prod": _red("prod"), "var": _var,
        "reshape": lambda a, shape=None, order="C", **kw: a.reshape(kw.get("newshape", shape), order=order),
        "transpose": lambda a, axes=None: a.transpose(axes),
        "swapaxes": lambda a, x, y: a.swapaxes(x, y),
        "squeeze": lambda a, axis=None: a.squeeze(axis),
        "broadcast_to": lambda a, shape, subok=False: a.broadcast_to(shape),
        "where": ops.where, "matmul": matmul, "ndim": lambda a: a.ndim,
        "shape": lambda a: a.shape, "size": lambda a, axis=None: a.size if axis is None else a.shape[axis],
        "expand_dims": _expand_dims, "concatenate": concatenate,
        "take": lambda a, indices, axis=None, out=None, mode="raise": _take(a, indices, axis, out, mode),
    }


def _take(a, indices, axis, out, mode):
    if out is not None or mode != "raise":
        raise UnsupportedError("numpy.take with out= or a mode other than 'raise' is not supported on "
                               "traced tensors")
    return ops.take(a, indices, axis)


def _expand_dims(a, axis):
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    ndim = a.ndim + len(axes)
    axes = normalize_axes(axes, ndim)
    it = iter(a.shape)
    return a.reshape(tuple(1 if k in axes else next(it) for k in range(ndim)))


Tensor.UFUNCS.update(_ufunc_table())
Tensor.ARRAY_FUNCTIONS.update(_array_function_table())
