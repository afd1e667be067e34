"""Array constructors inside a traced function: full, concatenate, arange."""
from __future__ import annotations

import builtins
import math

import numpy as np

from ..errors import ShapeError, UnsupportedError
from ..ir import dtypes as dt
from ..ir import expr as ex
from .algebra import as_scalar, check_shape, const, normalize_axes, promote, shape_text
from .tensor import Tensor, active_trace, common_trace, describe, index_vars, op_label, var_ranges

# ============================================================================ constants

def full(shape, fill_value, dtype) -> "Tensor":
    """A tensor of `shape` whose elements are `fill_value` stored as `dtype`; only
    inside a traced function."""
    tr = active_trace("full")
    shape = check_shape(shape)
    value = as_scalar(fill_value)
    if value is None:
        raise UnsupportedError(f"full: the fill value must be a scalar, got {describe(fill_value)}")
    return tr.compute(shape, index_vars(len(shape)), const(value, dt.dtype(dtype)), op_label("full"))


def concatenate(tensors, axis=0, dtype=None) -> "Tensor":
    """numpy.concatenate of traced tensors: one ComputeOp whose element j along `axis`
    reads piece k at j - offset_k. Each piece's index is clamped into the piece, so
    the reads of the pieces a select does not take stay in bounds (and hit the cache)."""
    what = "concatenate"
    pieces = list(tensors) if isinstance(tensors, (list, tuple)) else None
    if not pieces or not all(isinstance(t, Tensor) for t in pieces):
        raise UnsupportedError(f"{what}: takes a non-empty list or tuple of traced tensors, got "
                               f"{describe(tensors)}")
    tr = common_trace(pieces, what)
    ndim = pieces[0].ndim
    if ndim == 0 or any(t.ndim != ndim for t in pieces):
        raise ShapeError(f"{what}: pieces must have one rank of at least 1, got shapes "
                         f"{', '.join(shape_text(t.shape) for t in pieces)}")
    (axis,) = normalize_axes(axis, ndim, what)
    for t in pieces:
        if any(n != m for k, (n, m) in enumerate(zip(t.shape, pieces[0].shape)) if k != axis):
            raise ShapeError(f"{what}: shapes {', '.join(shape_text(t.shape) for t in pieces)} differ "
                             f"outside axis {axis}")
    out = dt.dtype(dtype) if dtype is not None else promote(*(t._dt for t in pieces))
    pieces = [t for t in pieces if t.shape[axis]] or pieces[:1]
    shape = list(pieces[0].shape)
    shape[axis] = builtins.sum(t.shape[axis] for t in pieces)
    axes = index_vars(ndim)
    ranges = var_ranges(axes, shape)
    j = axes[axis]
    body, end = None, shape[axis]
    for t in reversed(pieces):  # from the last piece out: select(j < end_k, piece k, the later pieces)
        start = end - t.shape[axis]
        index = ex.binary("sub", j, start) if start else j
        if start:
            index = ex.binary("max", index, ex.Const(0, dt.INDEX))
        if end < shape[axis]:
            index = ex.binary("min", index, ex.Const(t.shape[axis] - 1, dt.INDEX))
        value = ex.cast(t._load([index if k == axis else a for k, a in enumerate(axes)], ranges), out)
        body = value if body is None else ex.select(ex.binary("lt", j, end), value, body)
        end = start
    return tr.compute(shape, axes, body, op_label(what))


def arange(start, stop=None, step=1, dtype=None) -> "Tensor":
    """numpy.arange inside a traced function: `start + k * step` for k in range of the
    length `ceil((stop - start) / step)`; integers give int64, floats float64."""
    tr = active_trace("arange")
    if stop is None:
        start, stop = 0, start
    bounds = [as_scalar(v) for v in (start, stop, step)]
    if any(b is None or isinstance(b, (bool, np.bool_)) for b in bounds):
        raise UnsupportedError(f"arange: start, stop and step must be numbers, got "
                               f"{start!r}, {stop!r}, {step!r}")
    start, stop, step = (b.item() if isinstance(b, np.generic) else b for b in bounds)
    if step == 0:
        raise ShapeError("arange: step must not be zero")
    n = builtins.max(0, math.ceil((stop - start) / step))
    ints = all(isinstance(b, int) for b in (start, stop, step))
    d = dt.dtype(dtype) if dtype is not None else (dt.int64 if ints else dt.float64)
    k = index_vars(1)[0]
    if ints:
        value = ex.Const(start, dt.INDEX) + k * step
    else:
        value = ex.Binary("add", ex.Binary("mul", ex.cast(k, dt.float64), ex.Const(float(step), dt.float64)),
                          ex.Const(float(start), dt.float64))
    return tr.compute((n,), [k], ex.cast(value, d), op_label("arange"))
