"""Converters of the math functions PyTorch has and the expression language builds
from its primitives (`frontend/mathfns.py`): expm1, log1p, log2, exp2, tan, sinh,
cosh, asin, acos, atan, asinh, acosh, atanh, lgamma, digamma, atan2, hypot, copysign, the float
classifications (isnan, isinf, isfinite, signbit), fmod, remainder and division
rounded to the floor or toward zero, of floats and integers.

Typing follows PyTorch as in `convert.py`: the operands are cast to PyTorch's
computation dtype (float32 for the 16-bit floats) and the result to the dtype PyTorch
records. Integer division by zero, which raises in PyTorch, gives 0.
"""
from __future__ import annotations

import torch
from torch._prims_common import ELEMENTWISE_TYPE_PROMOTION_KIND as KIND

from ...ir import dtypes as dt
from ...ir import expr as ex
from .. import mathfns
from ..algebra import const
from .convert import CONVERTERS, _binary, _computation_dtype, _overloads, _pointwise, ww_dtype

aten = torch.ops.aten

_UNARY = {"expm1": mathfns.expm1, "log1p": mathfns.log1p, "log2": mathfns.log2, "exp2": mathfns.exp2,
          "tan": mathfns.tan, "sinh": mathfns.sinh, "cosh": mathfns.cosh, "asin": mathfns.asin,
          "acos": mathfns.acos, "atan": mathfns.atan, "asinh": mathfns.asinh, "acosh": mathfns.acosh,
          "atanh": mathfns.atanh, "lgamma": mathfns.lgamma,
          "digamma": mathfns.digamma}


def _unary(name, fn):
    def convert(out, x):
        return _pointwise(name, fn, out, x, kind=KIND.INT_TO_FLOAT)
    return convert


for _name, _fn in _UNARY.items():
    for _overload in _overloads(_name, "default"):
        CONVERTERS[_overload] = _unary(_name, _fn)

# predicates on floats; integers and bools are finite, never NaN, and negative below 0
_PREDICATES = {"isnan": (mathfns.isnan, False), "isinf": (mathfns.isinf, False),
               "isfinite": (mathfns.isfinite, True), "signbit": (mathfns.signbit, None)}


def _predicate(name, fn, constant):
    def convert(out, x):
        d = dt.dtype(x.dtype)
        if d.is_float:
            return _pointwise(name, fn, out, x, compute=dt.compute_dtype(d))
        if constant is None:  # signbit of an integer
            return _pointwise(name, lambda v: ex.Binary("lt", v, const(0, v.dtype)), out, x, compute=d)
        return _pointwise(name, lambda v: const(constant, dt.bool_), out, x, compute=d)
    return convert


for _name, (_fn, _constant) in _PREDICATES.items():
    for _overload in _overloads(_name, "default"):
        CONVERTERS[_overload] = _predicate(_name, _fn, _constant)


def _float_binary(name, fn, kind):
    def convert(out, a, b):
        return _pointwise(name, fn, out, a, b, kind=kind)
    return convert


for _name, _fn in [("atan2", mathfns.atan2), ("hypot", mathfns.hypot), ("copysign", mathfns.copysign)]:
    for _overload in _overloads(_name, "default", "Tensor", "Scalar"):
        CONVERTERS[_overload] = _float_binary(_name, _fn, KIND.INT_TO_FLOAT)


def _fmod(x, y):
    return mathfns.int_fmod(x, y) if x.dtype.is_int else mathfns.fmod(x, y)


def _with_ints(name, fn):
    """A binary function of floats or integers (bools computed as int64, as PyTorch does)."""
    def convert(out, a, b):
        c = _computation_dtype(KIND.DEFAULT, a, b)
        if c.is_bool:
            c = dt.int64
        return _pointwise(name, fn, out, a, b, compute=c)
    return convert


for _name, _fn in [("fmod", _fmod), ("remainder", mathfns.remainder), ("floor_divide", mathfns.floor_divide)]:
    for _overload in _overloads(_name, "default", "Tensor", "Scalar", "Scalar_Tensor"):
        CONVERTERS[_overload] = _with_ints(_name, _fn)


def _div_mode(out, a, b, *, rounding_mode=None):
    """div with rounding_mode None, "trunc" or "floor". PyTorch's float trunc division
    rounds the quotient to the result dtype before truncating."""
    if rounding_mode is None:
        return _binary("div", KIND.INT_TO_FLOAT)(out, a, b)
    if rounding_mode == "floor":
        return _with_ints("div_floor", mathfns.floor_divide)(out, a, b)
    c = _computation_dtype(KIND.DEFAULT, a, b)
    if c.is_bool:
        c = dt.int64
    if c.is_int:
        return _pointwise("div_trunc", mathfns.trunc_divide, out, a, b, compute=c)
    r = ww_dtype(out.dtype)
    return _pointwise("div_trunc", lambda x, y: ex.Unary("trunc", ex.cast(ex.cast(ex.Binary("div", x, y), r), c)),
                      out, a, b, compute=c)


for _overload in _overloads("div", "Tensor_mode", "Scalar_mode"):
    CONVERTERS[_overload] = _div_mode
