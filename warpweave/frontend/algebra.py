"""The typing and shape rules both frontends share: numpy 2's dtype promotion (NEP 50:
Python scalars are weak, numpy scalars are strong) extended to bfloat16 (ranked with
float16; bfloat16 with float16 gives float32; a Python float keeps a bfloat16 tensor
bfloat16), the scalar algebra that builds typed expressions (`elem_*`, `promote`),
broadcasting and axis normalization."""
from __future__ import annotations

import builtins
import math
import operator

import numpy as np

from ..errors import DTypeError, ShapeError, UnsupportedError
from ..ir import dtypes as dt
from ..ir import expr as ex
from ..ir.dtypes import DType
from ..ir.tensor import check_elements

# ============================================================================ scalar algebra

def as_scalar(x):
    """A Python scalar (weak) or numpy scalar (strong) for `x`, or None if `x` is not one.
    0-d numpy arrays count as numpy scalars."""
    if isinstance(x, np.ndarray) and x.ndim == 0:
        x = x[()]
    if isinstance(x, np.generic):
        if isinstance(x, (np.complexfloating,)):
            raise DTypeError(f"complex scalars are not supported: {x!r}")
        return x
    if isinstance(x, (bool, int, float)):
        return x
    if isinstance(x, complex):
        raise DTypeError(f"complex scalars are not supported: {x!r}")
    return None


def is_scalar(x) -> bool:
    if isinstance(x, np.ndarray):
        return x.ndim == 0
    return isinstance(x, (bool, int, float, np.generic))


def _as_dtype_operand(o):
    if isinstance(o, ex.Expr):
        return o.dtype
    if isinstance(o, np.generic):
        return dt.dtype(o.dtype)
    return o


def promote(*operands) -> DType:
    """numpy's result type of expressions, DTypes and scalars (Python scalars weak).

    bfloat16 ranks like float16: with float16 it gives float32; with a Python float
    it stays bfloat16 (NEP 50; ml_dtypes itself would give float32)."""
    args = []
    has_bf = has_f16 = False
    for o in operands:
        o = _as_dtype_operand(o)
        if isinstance(o, DType):
            if o == dt.bfloat16:
                has_bf = True
                o = dt.float16
            elif o == dt.float16:
                has_f16 = True
        args.append(o)
    r = dt.result_type(*args)
    if has_bf and r == dt.float16:
        r = dt.float32 if has_f16 else dt.bfloat16
    return r


def float_result(d: DType) -> DType:
    """The dtype numpy's float ufuncs (exp, log, ...) return for an input of dtype `d`:
    floats stay, bool gives float16, integers give float64."""
    if d.is_float:
        return d
    if d.is_bool:
        return dt.float16
    return dt.float64


def dtype_of(o) -> DType:
    if isinstance(o, ex.Expr):
        return o.dtype
    if isinstance(o, np.generic):
        return dt.dtype(o.dtype)
    return dt.python_scalar_dtype(o)


def const(value, d: DType) -> ex.Const:
    """A constant of dtype `d` holding `value` as numpy would store it (floats are
    rounded to `d`; integers must fit)."""
    if isinstance(value, np.generic):
        value = value.item()
    if d.is_bool:
        return ex.Const(bool(value), d)
    if d.is_int:
        if isinstance(value, float):
            if not math.isfinite(value):
                raise DTypeError(f"cannot convert {value} to {d}")
            value = int(value)  # truncation, like numpy's cast
        v = int(value)
        info = np.iinfo(d.numpy)
        if not info.min <= v <= info.max:
            raise DTypeError(f"Python integer {v} out of bounds for {d}")
        return ex.Const(v, d)
    try:
        f = float(value)
    except OverflowError:
        f = math.inf if value > 0 else -math.inf
    with np.errstate(all="ignore"):
        f = float(np.asarray(f, dtype=np.float64).astype(d.numpy))
    return ex.Const(f, d)


def _to(o, d: DType) -> ex.Expr:
    if isinstance(o, ex.Expr):
        return ex.cast(o, d)
    return const(o, d)


def elem_cast(a, d) -> ex.Expr:
    return _to(a, dt.dtype(d))


def _weak_int_fits(o, d: DType) -> bool:
    if isinstance(o, bool) or not isinstance(o, int) or not d.is_int:
        return True
    info = np.iinfo(d.numpy)
    return info.min <= o <= info.max


_CMP = {"lt", "le", "gt", "ge", "eq", "ne"}


def elem_unary(op: str, a) -> ex.Expr:
    """numpy's unary ufunc `op` on an expression (or scalar), typed as numpy types it."""
    d = dtype_of(a)
    if op == "neg":
        if d.is_bool:
            raise DTypeError("the numpy boolean negative, the `-` operator, is not supported; "
                             "use the `~` operator or logical_not instead")
        return ex.Unary("neg", _to(a, d))
    if op == "pos":
        return _to(a, d)
    if op == "abs":
        return _to(a, d) if d.is_bool else ex.Unary("abs", _to(a, d))
    if op == "not":
        if d.is_int:  # two's complement: ~a = -1 - a
            return ex.Binary("sub", const(-1, d), _to(a, d))
        if not d.is_bool:
            raise UnsupportedError(f"bitwise not (~) on {d} is not supported; only on bool and integers")
        return ex.Unary("not", _to(a, d))
    if op in ex.UNARY_OPS:
        return ex.Unary(op, _to(a, float_result(d)))
    raise UnsupportedError(f"unknown elementwise operation {op!r}")


def _mul_chain(x: ex.Expr, n: int) -> ex.Expr:
    """x ** n for a non-negative int n by repeated multiplication (square-and-multiply)."""
    if n == 0:
        return const(1, x.dtype)
    result = None
    base = x
    while n:
        if n & 1:
            result = base if result is None else ex.Binary("mul", result, base)
        n >>= 1
        if n:
            base = ex.Binary("mul", base, base)
    return result


def _pow(a, b) -> ex.Expr:
    d = promote(a, b)
    if d.is_bool:  # numpy gives int8 here, which warpweave lacks
        d = dt.int64
    if not isinstance(b, ex.Expr):
        if not _weak_int_fits(b, d):
            raise DTypeError(f"Python integer {b} out of bounds for {d}")
        bv = b.item() if isinstance(b, np.generic) else b
        if isinstance(bv, (bool, int)) or (isinstance(bv, float) and bv.is_integer()):
            n = int(bv)
            if 0 <= n <= 4 or (not d.is_float and n >= 0):
                return _mul_chain(_to(a, d), n)
            if not d.is_float:
                raise UnsupportedError("integers to negative integer powers are not allowed "
                                       f"({d} ** {n})")
    if not d.is_float:
        raise UnsupportedError(f"integer power ({dtype_of(a)} ** {dtype_of(b)}) needs a constant "
                               "non-negative exponent; cast to a float dtype first")
    return ex.Binary("pow", _to(a, d), _to(b, d))


def elem_binary(op: str, a, b) -> ex.Expr:
    """numpy's binary ufunc `op` (add sub mul div pow max min lt le gt ge eq ne and or xor)."""
    if op == "pow":
        return _pow(a, b)
    d = promote(a, b)
    if op in _CMP:
        if d.is_int and not (_weak_int_fits(a, d) and _weak_int_fits(b, d)):
            d = dt.int64 if all(_weak_int_fits(o, dt.int64) for o in (a, b)) else dt.float64
        return ex.Binary(op, _to(a, d), _to(b, d))
    for o in (a, b):
        if not _weak_int_fits(o, d):
            raise DTypeError(f"Python integer {o} out of bounds for {d}")
    if op in ("and", "or", "xor"):
        if d.is_int:  # bitwise; a ^ b = (a | b) - (a & b)
            x, y = _to(a, d), _to(b, d)
            if op != "xor":
                return ex.Binary(op, x, y)
            return ex.Binary("sub", ex.Binary("or", x, y), ex.Binary("and", x, y))
        if not d.is_bool:
            raise UnsupportedError(f"bitwise {op} on {d} is not supported; only on bool and integers")
        return ex.Binary("ne" if op == "xor" else op, _to(a, d), _to(b, d))
    if op == "div":
        if not d.is_float:
            d = dt.float64
        return ex.Binary("div", _to(a, d), _to(b, d))
    if d.is_bool:
        bool_ops = {"add": "or", "mul": "and", "max": "or", "min": "and"}
        if op not in bool_ops:
            raise DTypeError(f"numpy boolean {op} is not supported (bool {op} bool); "
                             "use the bitwise_xor, the `^` operator, or the logical_xor function")
        return ex.Binary(bool_ops[op], _to(a, d), _to(b, d))
    if op in ("add", "sub", "mul", "max", "min"):
        return ex.Binary(op, _to(a, d), _to(b, d))
    raise UnsupportedError(f"unknown elementwise operation {op!r}")


def elem_where(c, a, b) -> ex.Expr:
    """numpy.where on expressions: `c` is tested for truth, `a`/`b` promoted together."""
    if isinstance(c, ex.Expr):
        cond = c if c.dtype.is_bool else ex.Binary("ne", c, const(0, c.dtype))
    else:
        cond = const(bool(c), dt.bool_)
    d = promote(a, b)
    return ex.Select(cond, _to(a, d), _to(b, d))


# ============================================================================ shapes and axes

def shape_text(shape) -> str:
    return str(tuple(shape))


def broadcast_shapes(*shapes, what: str = "operands") -> tuple[int, ...]:
    """numpy broadcasting; ShapeError naming all shapes on a mismatch."""
    ndim = builtins.max((len(s) for s in shapes), default=0)
    out = []
    for k in range(ndim):
        sizes = {s[len(s) - ndim + k] for s in shapes if len(s) - ndim + k >= 0}
        big = sizes - {1}
        if len(big) > 1:
            names = " and ".join(shape_text(s) for s in shapes)
            raise ShapeError(f"{what}: shapes {names} cannot be broadcast together")
        out.append(big.pop() if big else 1)
    return tuple(out)


def normalize_axes(axis, ndim: int, what: str = "axis") -> tuple[int, ...]:
    """Sorted non-negative axes for an int, a negative int, a tuple, or None (all)."""
    if axis is None:
        return tuple(range(ndim))
    items = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in items:
        if isinstance(a, (bool, np.bool_)) or not isinstance(a, (int, np.integer)):
            raise ShapeError(f"{what} must be an int, a tuple of ints or None, got {axis!r}")
        a = int(a)
        if not -ndim <= a < ndim:
            raise ShapeError(f"{what} {a} is out of bounds for a tensor of dimension {ndim}")
        a %= ndim if ndim else 1
        if a in out:
            raise ShapeError(f"duplicate value in {what}: {axis!r}")
        out.append(a)
    return tuple(sorted(out))


def product(xs) -> int:
    p = 1
    for x in xs:
        p *= x
    return p


def check_shape(shape, what="shape") -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        shape = tuple(operator.index(s) for s in shape)
    except TypeError:
        raise ShapeError(f"{what} must be a tuple of ints, got {shape!r}") from None
    if any(s < 0 for s in shape):
        raise ShapeError(f"{what} {shape} has a negative extent")
    check_elements(what, shape)
    return shape
