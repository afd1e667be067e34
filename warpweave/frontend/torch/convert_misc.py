"""Padding, scans and reductions: constant_pad_nd, cumsum, cumprod, prod, any and all;
flip, dropout that draws nothing; as_strided and as_strided_scatter of contiguous
tensors.

`cumsum` is a masked reduction over the prefix (`out[i] = Σ_{k ≤ i} x[k]`, cumprod
likewise with products): correct
for any order of summation (a float32 sum errs like a pairwise sum), its work the
input's size times the axis length, so axes past `convert_index.MAX_WORK` terms in
all stay in PyTorch (a scan template would lift that).
"""
from __future__ import annotations

import math

import torch

from ...errors import UnsupportedError
from ...ir import dtypes as dt
from ...ir import expr as ex
from ..algebra import const, normalize_axes
from ..constructors import full
from ..tensor import index_vars, map_elementwise, op_label, var_ranges
from .convert import READS_LAYOUTS, ww_dtype
from .convert_index import check_work, register

aten = torch.ops.aten


def _clamped(e: ex.Expr, n: int) -> ex.Expr:
    return ex.binary("min", ex.binary("max", e, ex.Const(0, dt.INDEX)), ex.Const(n - 1, dt.INDEX))


@register(aten.constant_pad_nd.default)
def _constant_pad(out, x, pad, value=0):
    """x with pad[2k], pad[2k+1] elements of `value` before and after its k-th last axis
    (negative pads crop). Reads outside x are guarded by the select and clamped."""
    res = ww_dtype(out.dtype)
    shape = tuple(out.shape)
    if x.size == 0 or math.prod(shape) == 0:
        return full(shape, value, res)
    before = [0] * x.ndim
    for k in range(len(pad) // 2):
        before[x.ndim - 1 - k] = pad[2 * k]
    ivars = index_vars(len(shape))
    ranges = var_ranges(ivars, shape)
    src, inside = [], []
    for v, b, n, m in zip(ivars, before, x.shape, shape):
        s = v - b if b else v
        src.append(_clamped(s, n))
        if b > 0:
            inside.append(ex.binary("ge", s, 0))
        if m - b > n:
            inside.append(ex.binary("lt", s, n))
    loaded = ex.cast(x._load(src, ranges), res)
    cond = ex.all_of(inside)
    body = loaded if cond is None else ex.select(cond, loaded, const(value, res))
    return x._tr.compute(shape, ivars, body, op_label("constant_pad_nd"))


def _scan(combiner: str, identity: int):
    name = "cum" + combiner

    def convert(out, x, dim, *, dtype=None):
        res = ww_dtype(out.dtype)
        if x.ndim == 0:
            return x.astype(res)
        (d,) = normalize_axes(dim, x.ndim, name)
        n = x.shape[d]
        check_work(name, x.size, n, x.size)
        acc = dt.int64 if res.is_int or res.is_bool else dt.compute_dtype(res)
        ivars, r = index_vars(x.ndim), ex.Var("r0")
        ranges = {**var_ranges(ivars, x.shape), "r0": (0, max(n - 1, 0))}
        term = ex.cast(ex.cast(x._load([*ivars[:d], r, *ivars[d + 1:]], ranges), res), acc)
        masked = ex.select(ex.binary("le", r, ivars[d]), term, ex.Const(identity, acc))
        body = ex.Reduce(combiner, masked, [r], [n])
        return x._tr.compute(x.shape, ivars, body, op_label(name)).astype(res)
    return convert


register(aten.cumsum.default)(_scan("sum", 0))
register(aten.cumprod.default)(_scan("prod", 1))


@register(aten.prod.dim_int, aten.prod.default)
def _prod(out, x, dim=None, keepdim=False, *, dtype=None):
    """The product over one axis (or all), accumulated in float32 for 16-bit floats
    and in int64 for integers and bools, as PyTorch does."""
    res = ww_dtype(out.dtype)
    acc = dt.int64 if res.is_int or res.is_bool else dt.compute_dtype(res)
    axis = None if dim is None or x.ndim == 0 else dim
    return x.astype(acc).prod(axis=axis, keepdims=keepdim and x.ndim > 0).astype(res)


def _bool_reduce(combiner: str, empty: bool):
    def convert(out, x, dim=None, keepdim=False):
        flags = x if dt.dtype(x.dtype).is_bool else x != 0
        axes = None if dim is None or (isinstance(dim, (list, tuple)) and not dim) or x.ndim == 0 else dim
        if x.size == 0:
            return full(tuple(out.shape), empty, dt.bool_)
        reduced = flags.max(axis=axes, keepdims=keepdim) if combiner == "max" else \
            flags.min(axis=axes, keepdims=keepdim)
        return reduced.reshape(tuple(out.shape))
    return convert


def _overloads(name):
    packet = getattr(aten, name)
    return [getattr(packet, o) for o in ("default", "dim", "dims") if hasattr(packet, o)]


register(*_overloads("any"))(_bool_reduce("max", False))
register(*_overloads("all"))(_bool_reduce("min", True))


@register(aten.flip.default)
def _flip(out, x, dims):
    """x reversed along dims (cumsum's backward is a flipped cumsum)."""
    axes = set(normalize_axes(tuple(dims), x.ndim, "flip")) if x.ndim else set()
    ivars = index_vars(x.ndim)
    ranges = var_ranges(ivars, x.shape)
    idx = [(n - 1) - v if k in axes else v for k, (v, n) in enumerate(zip(ivars, x.shape))]
    return x._tr.compute(x.shape, ivars, x._load(idx, ranges), op_label("flip"))


@register(aten.native_dropout.default)
def _native_dropout(out, x, p, train):
    """Dropout that draws nothing: p = 0 or evaluation keeps every element (a mask of
    ones), p = 1 drops every one. Other rates need PyTorch's generator."""
    if train and 0 < p < 1:
        raise UnsupportedError(f"dropout with p={p} in training draws random numbers from PyTorch's generator")
    keep = not train or p == 0
    res = ww_dtype(out[0].dtype)
    values = x.astype(res) if keep else full(tuple(out[0].shape), 0, res)
    return [values, full(tuple(out[1].shape), keep, dt.bool_)]


@register(aten.native_dropout_backward.default)
def _native_dropout_backward(out, grad, mask, scale):
    """grad · mask · scale, as PyTorch computes it (a NaN gradient stays NaN where dropped)."""
    res = ww_dtype(out.dtype)
    c = dt.compute_dtype(res)
    return map_elementwise("dropout_backward", lambda g, m: ex.cast(ex.binary("mul", ex.binary(
        "mul", ex.cast(g, c), ex.cast(m, c)), ex.Const(float(scale), c)), res), grad, mask)


def _storage_window(what, layout, size, stride, storage_offset):
    """Where an as_strided view (size, stride, storage_offset) starts in the elements of
    `layout` (PyTorch's record of the tensor it reads), and its smallest and largest
    element positions; UnsupportedError unless that tensor is contiguous and the view
    stays inside it — then the storage is its elements in row-major order."""
    if layout is None or not layout.is_contiguous():
        raise UnsupportedError(f"{what} of a tensor that is not contiguous reads memory warpweave does not lay "
                               "out as PyTorch does")
    start = (layout.storage_offset() if storage_offset is None else storage_offset) - layout.storage_offset()
    lo = start + sum(s * (n - 1) for n, s in zip(size, stride) if s < 0 and n > 0)
    hi = start + sum(s * (n - 1) for n, s in zip(size, stride) if s > 0 and n > 0)
    if lo < 0 or hi >= layout.numel():
        raise UnsupportedError(f"{what} reads outside the elements of its input (storage the graph does not own)")
    return start


@register(aten.as_strided.default)
def _as_strided(out, x, size, stride, storage_offset=None, *, layouts):
    """x's elements at `storage_offset + Σ i_k · stride_k` (group norm's and pooling's
    decompositions reshape through it), for a contiguous x: a gather on x flattened."""
    size, stride = tuple(size), tuple(stride)
    if math.prod(size) == 0:
        return full(size, 0, ww_dtype(out.dtype))
    start = _storage_window("as_strided", layouts[0], size, stride, storage_offset)
    flat = x.reshape((x.size,))
    ivars = index_vars(len(size))
    ranges = var_ranges(ivars, size)
    position = ex.Const(start, dt.INDEX)
    for v, n, s in zip(ivars, size, stride):
        if n > 1 and s:
            position = position + v * s
    return x._tr.compute(size, ivars, flat._load([position], ranges), op_label("as_strided"))


@register(aten.as_strided_scatter.default)
def _as_strided_scatter(out, x, src, size, stride, storage_offset=None, *, layouts):
    """x with the view (size, stride, storage_offset) replaced by src, where that view is
    one row-major run of x's elements (as_strided's backward of a reshape)."""
    size, stride = tuple(size), tuple(stride)
    dense = [s for n, s in zip(size, stride) if n > 1] == [
        math.prod(n for n in size[k + 1:]) for k, n in enumerate(size) if n > 1]
    if not dense:
        raise UnsupportedError("as_strided_scatter of a view that is not one row-major run of elements")
    count = math.prod(size)
    if count == 0:
        return x.astype(ww_dtype(out.dtype))
    start = _storage_window("as_strided_scatter", layouts[0], size, stride, storage_offset)
    res = ww_dtype(out.dtype)
    shape = tuple(x.shape)
    ivars = index_vars(len(shape))
    ranges = var_ranges(ivars, shape)
    position = ex.Const(0, dt.INDEX)
    for k, v in enumerate(ivars):
        position = position + v * math.prod(shape[k + 1:])
    inside = ex.all_of([ex.binary("ge", position, start), ex.binary("lt", position, start + count)])
    flat = src.reshape((count,))
    taken = ex.cast(flat._load([_clamped(position - start, count)], ranges), res)
    kept = ex.cast(x._load(list(ivars), ranges), res)
    return x._tr.compute(shape, ivars, ex.select(inside, taken, kept), op_label("as_strided_scatter"))


READS_LAYOUTS.update((aten.as_strided.default, aten.as_strided_scatter.default))
