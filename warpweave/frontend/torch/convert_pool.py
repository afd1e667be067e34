"""2-D pooling, forward and backward: max_pool2d_with_indices (values and PyTorch's
flat indices), its backward, avg_pool2d and its backward.

Forward passes reduce over the (kernel row, kernel column) window; positions in the
padding are excluded by a select on index conditions (so they are never read) and
every read is also clamped into the input. Backward passes gather instead of
scattering: input element (h, w) sums over the outputs (oh, ow) whose windows read
it, so each gradient element is written once — with a stride and no dilation, the
ceil(k / stride) outputs oh = (h + padding) // stride − q whose kernel offset
h + padding − oh·stride lies inside the kernel; else over the kernel offsets kh, the
output oh = (h + padding − kh·dilation) / stride where that divides and is in range.

max_pool2d's indices follow PyTorch's CPU kernel: the first maximum of the window in
row-major order, or the last NaN where the window holds NaNs. Its backward reads the
indices only within each output's window: indices made by the forward (the only ones
autograd passes) always are.
"""
from __future__ import annotations

import math

import torch

from ...errors import UnsupportedError
from ...ir import dtypes as dt
from ...ir import expr as ex
from ..tensor import index_vars, op_label, var_ranges
from .convert import ww_dtype
from .convert_index import register

aten = torch.ops.aten
INDEX = dt.INDEX


def _pair(v, default=None) -> tuple[int, int]:
    if v is None or (isinstance(v, (list, tuple)) and not v):
        v = default
    if isinstance(v, int):
        return (v, v)
    v = tuple(int(e) for e in v)
    return v * 2 if len(v) == 1 else v


def _c(v: int) -> ex.Const:
    return ex.Const(v, INDEX)


def _clamp(e: ex.Expr, n: int) -> ex.Expr:
    return ex.binary("min", ex.binary("max", e, _c(0)), _c(n - 1))


class _Window:
    """A pooling's geometry: input (H, W), output (OH, OW), kernel, stride, padding, dilation."""

    def __init__(self, x, out_shape, kernel, stride, padding, dilation=1):
        if x.ndim not in (3, 4):
            raise UnsupportedError(f"2-D pooling takes a 3-D or 4-D input, got shape {x.shape}")
        self.lead = x.ndim - 2
        self.H, self.W = x.shape[-2:]
        self.OH, self.OW = out_shape[-2:]
        self.k = _pair(kernel)
        self.s = _pair(stride, self.k)
        self.p = _pair(padding)
        self.d = _pair(dilation)

    def inputs_at(self, o, r):
        """Input row and column read by output (oh, ow) at kernel offsets r, and whether
        they lie inside the input (None: always)."""
        pos = [o[a] * self.s[a] - self.p[a] + r[a] * self.d[a] for a in (0, 1)]
        conds = []
        for e, n in zip(pos, (self.H, self.W)):
            conds += [ex.binary("ge", e, _c(0)), ex.binary("lt", e, _c(n))]
        return pos, conds

    def candidates(self) -> tuple[int, int]:
        """Per axis, how many outputs' windows may read one input element: the reduce
        extents of a backward pass (`outputs_at`)."""
        return tuple(-(-self.k[a] // self.s[a]) if self._by_output(a) else self.k[a] for a in (0, 1))

    def _by_output(self, a: int) -> bool:
        """Whether axis a's backward runs over the outputs covering an input element
        (stride > 1, no dilation: ceil(k / s) of them, against k kernel offsets of
        which all but those fail a divisibility test)."""
        return self.s[a] > 1 and self.d[a] == 1

    def outputs_at(self, i, r):
        """Output row and column of the r-th window that reads input (h, w) (see
        `candidates`), and the conditions that such an output exists."""
        pos, conds = [], []
        for a, (n_out, v) in enumerate(zip((self.OH, self.OW), i)):
            s = self.s[a]
            if self._by_output(a):  # o = (v + p) // s - r, reading kernel offset v + p - o·s
                o = (v + self.p[a]) // s - r[a]
                pos.append(o)
                conds += [ex.binary("ge", o, _c(0)), ex.binary("lt", o, _c(n_out)),
                          ex.binary("lt", v + self.p[a] - o * s, _c(self.k[a]))]
                continue
            shift = -(-self.d[a] * (self.k[a] - 1) // s)  # keeps u non-negative
            u = v + (self.p[a] + s * shift) - r[a] * self.d[a]
            o = u // s - shift if s > 1 else u - shift
            pos.append(o)
            if s > 1:
                conds.append(ex.binary("eq", u % s, _c(0)))
            conds += [ex.binary("ge", o, _c(0)), ex.binary("lt", o, _c(n_out))]
        return pos, conds


def _window_reduce(x, shape, kernel, combiner, term, label):
    """A tensor of `shape` whose element (lead..., i) is `combiner` over the kernel
    offsets r of `term(lead, i, r, ranges)`."""
    ivars, rvars = index_vars(len(shape)), index_vars(2, "r")
    ranges = {**var_ranges(ivars, shape), **var_ranges(rvars, kernel)}
    body = ex.Reduce(combiner, term(ivars[:-2], ivars[-2:], rvars, ranges), rvars, kernel)
    return x._tr.compute(tuple(shape), ivars, body, op_label(label))


@register(aten.max_pool2d_with_indices.default)
def _max_pool(out, x, kernel_size, stride=(), padding=0, dilation=1, ceil_mode=False):
    g = _Window(x, out[0].shape, kernel_size, stride, padding, dilation)
    xd = dt.dtype(x.dtype)
    if not xd.is_float:
        raise UnsupportedError(f"max_pool2d of {xd}: only floating-point inputs are compiled")

    def read(lead, o, r, ranges):
        (h, w), conds = g.inputs_at(o, r)
        value = x._load([*lead, _clamp(h, g.H), _clamp(w, g.W)], ranges)
        return value, ex.all_of(conds), h * g.W + w

    def values(lead, o, r, ranges):
        value, inside, _ = read(lead, o, r, ranges)
        return ex.select(inside, value, ex.Const(-math.inf, xd))

    shape = tuple(out[0].shape)
    m = _window_reduce(x, shape, g.k, "max", values, "max_pool2d")
    plane = g.H * g.W

    def keys(lead, o, r, ranges):
        """Last NaN: 2P + flat; else first maximum: 2P - 1 - flat; else -1 (max wins)."""
        value, inside, flat = read(lead, o, r, ranges)
        best = m._load([*lead, *o], ranges)
        nan = ex.binary("and", inside, ex.binary("ne", value, value))
        top = ex.binary("and", inside, ex.binary("eq", value, best))
        return ex.select(nan, flat + 2 * plane, ex.select(top, _c(2 * plane - 1) - flat, _c(-1)))

    key = _window_reduce(x, shape, g.k, "max", keys, "max_pool2d_indices")
    ivars = index_vars(len(shape))
    k = key._load(ivars, var_ranges(ivars, shape))
    index = ex.select(ex.binary("ge", k, _c(2 * plane)), k - 2 * plane, _c(2 * plane - 1) - k)
    indices = x._tr.compute(shape, ivars, index, op_label("max_pool2d_indices"))
    return [m.astype(ww_dtype(out[0].dtype)), indices.astype(ww_dtype(out[1].dtype))]


@register(aten.max_pool2d_with_indices_backward.default)
def _max_pool_backward(out, grad, x, kernel_size, stride, padding, dilation, ceil_mode, indices):
    g = _Window(x, grad.shape, kernel_size, stride, padding, dilation)
    res = ww_dtype(out.dtype)
    acc = dt.compute_dtype(res)

    def term(lead, i, r, ranges):
        (oh, ow), conds = g.outputs_at(i, r)
        at = [*lead, _clamp(oh, g.OH), _clamp(ow, g.OW)]
        chosen = ex.binary("eq", ex.cast(indices._load(at, ranges), INDEX), i[0] * g.W + i[1])
        return ex.select(ex.all_of([*conds, chosen]), ex.cast(grad._load(at, ranges), acc), ex.Const(0, acc))

    return _window_reduce(x, x.shape, g.candidates(), "sum", term, "max_pool2d_backward").astype(res)


def _divisor(g: _Window, o, count_include_pad: bool, divisor_override) -> ex.Expr:
    """PyTorch's avg_pool2d divisor for output o: the window clipped to the padded
    input, or to the input without count_include_pad; or divisor_override."""
    if divisor_override:
        return _c(int(divisor_override))
    size = None
    for a, n in enumerate((g.H, g.W)):
        start = o[a] * g.s[a] - g.p[a]
        end = ex.binary("min", start + g.k[a], _c(n + g.p[a]))
        if not count_include_pad:
            start, end = ex.binary("max", start, _c(0)), ex.binary("min", end, _c(n))
        extent = end - start
        size = extent if size is None else size * extent
    return ex.binary("max", size, _c(1))


@register(aten.avg_pool2d.default)
def _avg_pool(out, x, kernel_size, stride=(), padding=0, ceil_mode=False, count_include_pad=True,
              divisor_override=None):
    g = _Window(x, out.shape, kernel_size, stride, padding)
    res = ww_dtype(out.dtype)
    acc = dt.compute_dtype(res)

    def term(lead, o, r, ranges):
        (h, w), conds = g.inputs_at(o, r)
        value = ex.cast(x._load([*lead, _clamp(h, g.H), _clamp(w, g.W)], ranges), acc)
        return ex.select(ex.all_of(conds), value, ex.Const(0, acc))

    shape = tuple(out.shape)
    total = _window_reduce(x, shape, g.k, "sum", term, "avg_pool2d")
    ivars = index_vars(len(shape))
    ranges = var_ranges(ivars, shape)
    divisor = ex.cast(_divisor(g, ivars[-2:], count_include_pad, divisor_override), acc)
    body = ex.cast(ex.binary("div", total._load(ivars, ranges), divisor), res)
    return x._tr.compute(shape, ivars, body, op_label("avg_pool2d"))


@register(aten.avg_pool2d_backward.default)
def _avg_pool_backward(out, grad, x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                       divisor_override):
    g = _Window(x, grad.shape, kernel_size, stride, padding)
    res = ww_dtype(out.dtype)
    acc = dt.compute_dtype(res)

    def term(lead, i, r, ranges):
        (oh, ow), conds = g.outputs_at(i, r)
        at = [_clamp(oh, g.OH), _clamp(ow, g.OW)]
        share = ex.binary("div", ex.cast(grad._load([*lead, *at], ranges), acc),
                          ex.cast(_divisor(g, at, count_include_pad, divisor_override), acc))
        return ex.select(ex.all_of(conds), share, ex.Const(0, acc))

    return _window_reduce(x, x.shape, g.candidates(), "sum", term, "avg_pool2d_backward").astype(res)
