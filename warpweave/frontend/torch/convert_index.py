"""Indexing by data: embedding (and its backward), index, index_select, gather,
scatter with a value or a source, scatter_add, index_add.

Gathers read their table through a load whose index is data (`out[n, d] =
W[i[n], d]`): any table size, one read per output element, fused with their
consumers like any elementwise operation. Their indices follow PyTorch: `index`
counts negative indices from the end, embedding, index_select and gather take
them as they are. An index outside its axis (where PyTorch raises) is an
IndexOutOfRangeError naming the operation in the reference evaluators; compiled
code clamps it into the axis, so that it never reads outside the table.

Scatters (a scatter, a scatter-add, the embedding's backward, index_add) write
where the data say. They are written as one-hot reductions over the index
positions, `out[i] = Σ_m (index[m] == i ? src[m] : 0)` — an index out of range hits
nothing. A sum of that form is a scatter-add (`ir.scatter`), lowered as a zeroed
output plus one add per term (in order on the CPU, atomic on the GPU), whatever the
output's size: the embedding's backward, scatter_add and index_add. A scatter of a
value (a `max` of booleans) stays a one-hot reduction, whose work is the output's
size times the index positions: its converter refuses (UnsupportedError: PyTorch
runs it) above `MAX_WORK` terms when that is more than twice what the operation
reads and writes anyway.
"""
from __future__ import annotations

import math

import torch

from ...errors import UnsupportedError
from ...ir import dtypes as dt
from ...ir import expr as ex
from ...ir.scatter import scatter_form
from ..algebra import const, normalize_axes
from ..tensor import Tensor, index_vars, map_elementwise, op_label, var_ranges, where
from .convert import CONVERTERS, ww_dtype

aten = torch.ops.aten

MAX_WORK = 1 << 17  # one-hot terms a converter accepts whatever the sizes


def register(*targets):
    def wrap(fn):
        CONVERTERS.update(dict.fromkeys(targets, fn))
        return fn
    return wrap


def check_work(what: str, out_size: int, extent: int, natural: int) -> None:
    """UnsupportedError where a one-hot reduction of `extent` terms per output element
    costs more than MAX_WORK and more than twice the `natural` elements moved."""
    work = out_size * extent
    if work > MAX_WORK and work > 2 * natural:
        raise UnsupportedError(
            f"{what}: a one-hot reduction of {extent} terms for each of {out_size} elements "
            f"({work} terms) exceeds {MAX_WORK}, so PyTorch runs it")


def _accumulator(d: dt.DType) -> tuple[str, dt.DType]:
    """(combiner, dtype) of a one-hot sum over values of dtype d: exact for every d."""
    if d.is_bool:
        return "max", d
    return "sum", (dt.int64 if d.is_int else dt.compute_dtype(d))


def _zero(d: dt.DType) -> ex.Const:
    return ex.Const(False if d.is_bool else 0, d)


def _as_index(e: ex.Expr) -> ex.Expr:
    return e if e.dtype == dt.INDEX else ex.cast(e, dt.INDEX)


def onehot(what: str, shape, reduce_extents, term, natural: int, out_dtype: dt.DType, tr) -> Tensor:
    """A tensor of `shape`: element i is Σ over r in `reduce_extents` of
    `term(i_vars, r_vars, ranges)`, which returns (condition, value); the sum runs in an
    exact accumulator and is cast to out_dtype. A sum whose condition picks an output
    coordinate by data is a scatter-add (`ir.scatter`), computed at the cost of its
    terms; any other is refused above `MAX_WORK` terms (`check_work`)."""
    shape = tuple(shape)
    ivars, rvars = index_vars(len(shape)), index_vars(len(reduce_extents), "r")
    ranges = {**var_ranges(ivars, shape), **var_ranges(rvars, reduce_extents)}
    cond, value = term(ivars, rvars, ranges)
    combiner, acc = _accumulator(value.dtype)
    body = ex.Reduce(combiner, ex.select(cond, ex.cast(value, acc), _zero(acc)), rvars, reduce_extents)
    if scatter_form(ivars, body) is None:
        check_work(what, math.prod(shape), math.prod(reduce_extents), natural)
    result = tr.compute(shape, ivars, body, op_label(what))
    return result.astype(out_dtype)


def _wrapped(e: ex.Expr, n: int) -> ex.Expr:
    """A negative index counted from the end, as PyTorch's indexing does."""
    e = _as_index(e)
    return ex.select(ex.binary("lt", e, 0), e + n, e)


def gathered(what: str, x: Tensor, out_shape, x_index, out) -> Tensor:
    """The tensor of `out_shape` whose element i reads x at `x_index(i, ranges)`,
    indices that load an integer tensor (data indices) included."""
    out_shape = tuple(out_shape)
    ivars = index_vars(len(out_shape))
    ranges = var_ranges(ivars, out_shape)
    idx = x_index(ivars, ranges)
    if math.prod(out_shape) and any(ex.loads(e) and n == 0 for e, n in zip(idx, x.shape)):
        raise UnsupportedError(f"{what}: indexing an empty axis of a tensor of shape "
                               f"{tuple(x.shape)}: every index is out of range")
    result = x._tr.compute(out_shape, ivars, x._load(idx, ranges), op_label(what))
    return result.astype(ww_dtype(out.dtype))


def gather_along(what: str, x: Tensor, axis: int, out_shape, index_of, out) -> Tensor:
    """x gathered along `axis`: element i of the result reads x at i with the
    coordinate along `axis` replaced by the data index `index_of(i, ranges)`."""
    return gathered(what, x, out_shape, lambda iv, rg: [
        *iv[:axis], _as_index(index_of(iv, rg)), *iv[axis + 1:x.ndim]], out)


# ----------------------------------------------------------------------------- gathers

@register(aten.embedding.default)
def _embedding(out, weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    k = indices.ndim
    return gathered("embedding", weight, out.shape, lambda iv, rg: [
        _as_index(indices._load(iv[:k], rg)), *iv[k:]], out)


@register(aten.index_select.default)
def _index_select(out, x, dim, index):
    (d,) = normalize_axes(dim, max(x.ndim, 1), "index_select")
    if x.ndim == 0:
        return gather_along("index_select", x.reshape((1,)), 0, (), lambda iv, rg: index._load(
            [ex.Const(0, dt.INDEX)] * index.ndim, rg), out).reshape(())
    return gathered("index_select", x, out.shape, lambda iv, rg: [
        *iv[:d], _as_index(index._load([iv[d]] if index.ndim else [], rg)), *iv[d + 1:]], out)


@register(aten.gather.default)
def _gather(out, x, dim, index, *, sparse_grad=False):
    if x.ndim == 0 or index.ndim == 0:
        x, index = x.reshape((1,) * max(x.ndim, 1)), index.reshape((1,) * max(index.ndim, 1))
        return _gather(out, x, dim, index).reshape(tuple(out.shape))
    (d,) = normalize_axes(dim, x.ndim, "gather")
    return gather_along("gather", x, d, index.shape, lambda iv, rg: index._load(iv, rg), out)


@register(aten.index.Tensor, aten._unsafe_index.Tensor)
def _index(out, x, indices):
    """x[indices]: tensors (broadcast together) at some axes, None for whole axes. The
    indexed axes' result axes go where the first indexed axis is when the indexed axes
    are adjacent, else first (numpy's rule)."""
    indexed = [k for k, t in enumerate(indices) if t is not None]
    if any(dt.dtype(indices[k].dtype).is_bool for k in indexed):
        raise UnsupportedError("index with a boolean mask: the result's shape depends on the data")
    bshape = tuple(torch.broadcast_shapes(*(tuple(indices[k].shape) for k in indexed)))
    rest = [k for k in range(x.ndim) if k not in indexed]
    adjacent = indexed == list(range(indexed[0], indexed[-1] + 1))
    front = indexed[0] if adjacent else 0  # result axes before the broadcast index axes
    nb = len(bshape)

    def x_index(ivars, ranges):
        bvars = ivars[front:front + nb]
        place = dict(zip(rest, ivars[:front] + ivars[front + nb:]))
        for k in indexed:
            t = indices[k]
            bi = [ex.Const(0, dt.INDEX) if n == 1 and bshape[nb - t.ndim + j] != 1 else bvars[nb - t.ndim + j]
                  for j, n in enumerate(t.shape)]
            place[k] = _wrapped(t._load(bi, ranges), x.shape[k])
        return [place[k] for k in range(x.ndim)]

    return gathered("index", x, out.shape, x_index, out)


# ----------------------------------------------------------------------------- scatters

def _in_index(ivars, dim: int, index: Tensor, m) -> tuple[list[ex.Expr], ex.Expr | None]:
    """The position of `index` at output element i with `m` along dim (coordinates
    clamped into index's shape), and the condition that i lies within index's shape."""
    pos, conds = [], []
    for k, (v, n) in enumerate(zip(ivars, index.shape)):
        if k == dim:
            pos.append(m)
        else:
            pos.append(ex.binary("min", v, ex.Const(max(n - 1, 0), dt.INDEX)))
            conds.append(ex.binary("lt", v, n))
    return pos, ex.all_of(conds)


def _scatter_hits(what, x: Tensor, dim: int, index: Tensor, value_at, out_dtype) -> Tensor:
    """Σ over the positions m along dim of index of value_at(position) where index there
    names this element's coordinate along dim (and the position exists)."""
    def term(ivars, rvars, ranges):
        pos, inside = _in_index(ivars, dim, index, rvars[0])
        hit = ex.binary("eq", _as_index(index._load(pos, ranges)), ivars[dim])
        return (hit if inside is None else ex.binary("and", inside, hit)), value_at(pos, ranges)

    return onehot(what, x.shape, (index.shape[dim],), term, x.size + 2 * index.size, out_dtype, x._tr)


@register(aten.scatter_add.default)
def _scatter_add(out, x, dim, index, src):
    if x.ndim == 0:
        return _scatter_add(out, x.reshape((1,)), 0, index.reshape((1,)), src.reshape((1,))).reshape(())
    (d,) = normalize_axes(dim, x.ndim, "scatter_add")
    res = ww_dtype(out.dtype)
    added = _scatter_hits("scatter_add", x, d, index, lambda pos, rg: src._load(pos, rg),
                          dt.compute_dtype(res) if res.is_float else dt.dtype(x.dtype))
    return (x.astype(added._dt) + added).astype(res)


@register(aten.scatter.value)
def _scatter_value(out, x, dim, index, value):
    if x.ndim == 0:
        return _scatter_value(out, x.reshape((1,)), 0, index.reshape((1,)), value).reshape(())
    (d,) = normalize_axes(dim, x.ndim, "scatter")
    hit = _scatter_hits("scatter", x, d, index, lambda pos, rg: ex.Const(True, dt.bool_), dt.bool_)
    res = ww_dtype(out.dtype)
    return map_elementwise("scatter", lambda h, v: ex.select(h, const(value, res), ex.cast(v, res)), hit, x)


@register(aten.scatter.src)
def _scatter_src(out, x, dim, index, src):
    """x with src[p] written where index[p] names the element along dim (p's other
    coordinates its own): the last such position along dim, found by a max over the
    positions, then src read there (PyTorch leaves repeated indices unspecified; the
    max.dim backward scatters one position per row)."""
    if x.ndim == 0:
        return _scatter_src(out, x.reshape((1,)), 0, index.reshape((1,)), src.reshape((1,))).reshape(())
    (d,) = normalize_axes(dim, x.ndim, "scatter")
    ivars, rvars = index_vars(x.ndim), index_vars(1, "r")
    ranges = {**var_ranges(ivars, x.shape), **var_ranges(rvars, (index.shape[d],))}
    pos, inside = _in_index(ivars, d, index, rvars[0])
    hit = ex.binary("eq", _as_index(index._load(pos, ranges)), ivars[d])
    hit = hit if inside is None else ex.binary("and", inside, hit)
    found = ex.select(hit, ex.cast(rvars[0], dt.int64) + ex.Const(1, dt.int64), ex.Const(0, dt.int64))
    check_work("scatter", x.size, index.shape[d], x.size + 2 * index.size)
    last = x._tr.compute(x.shape, ivars, ex.Reduce("max", found, rvars, (index.shape[d],)), op_label("scatter"))
    res = ww_dtype(out.dtype)
    ranges = var_ranges(ivars, x.shape)
    at = last._load(list(ivars), ranges)
    where = [ex.binary("min", v, ex.Const(max(n - 1, 0), dt.INDEX)) for v, n in zip(ivars, src.shape)]
    where[d] = _as_index(ex.binary("max", at - ex.Const(1, dt.int64), ex.Const(0, dt.int64)))
    value = ex.select(ex.binary("gt", at, ex.Const(0, dt.int64)), ex.cast(src._load(where, ranges), res),
                      ex.cast(x._load(list(ivars), ranges), res))
    return x._tr.compute(x.shape, ivars, value, op_label("scatter"))


@register(aten.embedding_dense_backward.default)
def _embedding_backward(out, grad, indices, num_weights, padding_idx, scale_grad_by_freq):
    """The weight's gradient: row v sums the gradient rows of the tokens that read it
    (none for padding_idx); with scale_grad_by_freq each divided by v's count."""
    extents = tuple(indices.shape)
    res = ww_dtype(out.dtype)

    def picks(ivars, rvars, ranges):
        hit = ex.binary("eq", _as_index(indices._load(rvars, ranges)), ivars[0])
        if padding_idx is not None and padding_idx >= 0:
            hit = ex.binary("and", hit, ex.binary("ne", ivars[0], padding_idx))
        return hit

    natural = grad.size + math.prod(out.shape)
    summed = onehot("embedding_backward", out.shape, extents, lambda iv, rv, rg: (
        picks(iv, rv, rg), ex.cast(grad._load([*rv, *iv[1:]], rg), dt.compute_dtype(res))),
        natural, dt.compute_dtype(res), grad._tr)
    if scale_grad_by_freq:
        counts = onehot("embedding_counts", (num_weights,) + (1,) * (len(out.shape) - 1), extents,
                        lambda iv, rv, rg: (picks(iv, rv, rg), ex.Const(1, dt.INDEX)),
                        natural, dt.compute_dtype(res), grad._tr)
        summed = where(counts > 0, summed / counts, summed)
    return summed.astype(res)


@register(aten.index_add.default)
def _index_add(out, x, dim, index, source, *, alpha=1):
    """x plus alpha·source[.., m, ..] at x[.., index[m], ..] along dim."""
    if x.ndim == 0:
        return _index_add(out, x.reshape((1,)), 0, index.reshape((1,)), source.reshape((1,)), alpha=alpha
                          ).reshape(())
    (d,) = normalize_axes(dim, x.ndim, "index_add")
    res = ww_dtype(out.dtype)
    acc = dt.compute_dtype(res) if res.is_float else dt.int64

    def term(ivars, rvars, ranges):
        hit = ex.binary("eq", _as_index(index._load(rvars if index.ndim else [], ranges)), ivars[d])
        return hit, ex.cast(source._load([*ivars[:d], rvars[0], *ivars[d + 1:]], ranges), acc)

    added = onehot("index_add", x.shape, (index.size,) if index.ndim else (1,), term,
                   x.size + 2 * source.size, acc, x._tr)
    return (x.astype(acc) + (added * alpha if alpha != 1 else added)).astype(res)


@register(aten.index_put.default, aten._unsafe_index_put.default)
def _index_put(out, x, indices, values, accumulate=False):
    """x with `values` added at x[..., index, ...] (accumulate=True, one integer index
    tensor of one axis: the backward of indexing along it, as `index_add` with
    negative indices counted from the end); other forms stay in PyTorch."""
    indexed = [(k, t) for k, t in enumerate(indices) if t is not None]
    if not accumulate or len(indexed) != 1 or indexed[0][1].ndim != 1 or not dt.dtype(indexed[0][1].dtype).is_int:
        raise UnsupportedError("index_put: only accumulating into one axis through one integer index tensor "
                               "is compiled (writes that overwrite, boolean masks and several index tensors "
                               "stay in PyTorch)")
    d, index = indexed[0]
    shape = tuple(index.shape[0] if k == d else n for k, n in enumerate(x.shape))
    source = values.broadcast_to(shape) if tuple(values.shape) != shape else values
    res = ww_dtype(out.dtype)
    acc = dt.compute_dtype(res) if res.is_float else dt.int64

    def term(ivars, rvars, ranges):
        hit = ex.binary("eq", _wrapped(index._load(rvars, ranges), x.shape[d]), ivars[d])
        return hit, ex.cast(source._load([*ivars[:d], rvars[0], *ivars[d + 1:]], ranges), acc)

    added = onehot("index_put", x.shape, (index.shape[0],), term, x.size + 2 * source.size, acc, x._tr)
    return (x.astype(acc) + added).astype(res)
