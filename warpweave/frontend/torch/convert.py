"""ATen operations performed on traced tensors: how a torch graph becomes a tensor graph.

`CONVERTERS` maps a core-ATen overload (what AOTAutograd hands a backend after the
decompositions) to a function that performs it on the symbolic tensors of
`frontend/trace.py`, so a torch graph is traced by the same frontend as `ww.jit`.
A converter is called as `fn(out, *args, **kwargs)`: `out` is PyTorch's record of
the node's result (`node.meta["val"]`), the arguments are the node's, with traced
tensors for the tensor arguments.

Dtypes follow PyTorch, not numpy: a pointwise operation computes in PyTorch's
computation dtype (its type promotion, with weak Python scalars and 0-d tensors;
float32 for float16/bfloat16) and casts once to the dtype PyTorch records for the
result. Reductions of 16-bit floats accumulate in float32. `convert_node` checks
every result's shape and dtype against PyTorch's record.

`NOT_COMPILED` says why the operations without a converter stay in PyTorch.
"""
from __future__ import annotations

import math
import operator

import torch
from torch._prims_common import ELEMENTWISE_TYPE_PROMOTION_KIND as KIND
from torch._prims_common import elementwise_dtypes
from torch.fx.node import map_arg

from ...errors import DTypeError, Error, UnsupportedError
from ...options import current as current_options
from ...ir import dtypes as dt
from ...ir import expr as ex
from .. import ops
from ..algebra import const, elem_binary, elem_unary, normalize_axes
from ..constructors import arange, concatenate, full
from ..tensor import Tensor, map_elementwise, op_label, scope, var_ranges
from ..tensor import index_vars as output_vars
from ..trace import trace

aten = torch.ops.aten

TORCH_DTYPES = {torch.bool: dt.bool_, torch.int32: dt.int32, torch.int64: dt.int64,
                torch.float16: dt.float16, torch.bfloat16: dt.bfloat16, torch.float32: dt.float32,
                torch.float64: dt.float64}
_TO_TORCH = {v: k for k, v in TORCH_DTYPES.items()}
# A symbolic Python scalar (a value read from a tensor at run time) is a 0-d tensor of these.
SYMBOLIC_SCALARS = {torch.SymFloat: torch.float64, torch.SymInt: torch.int64, torch.SymBool: torch.bool}


def ww_dtype(torch_dtype) -> dt.DType:
    """The warpweave dtype of a torch dtype; DTypeError for one warpweave lacks."""
    d = TORCH_DTYPES.get(torch_dtype)
    if d is None:
        names = ", ".join(str(t).removeprefix("torch.") for t in TORCH_DTYPES)
        raise DTypeError(f"{torch_dtype} is not a warpweave dtype (it has {names})")
    return d


# ----------------------------------------------------------------------------- registry

CONVERTERS: dict = {}
# Operations whose converters read the memory layouts PyTorch records for their tensor
# arguments (as_strided): called with `layouts=`, the arguments with those records.
READS_LAYOUTS: set = set()

_MATMUL = "matrix products and convolutions run in PyTorch (its BLAS, cuBLAS, cuDNN)"
_RANDOM = "random numbers come from PyTorch's generator"
_GATHER = "data-dependent indexing of this kind has no warpweave index expression (convert_index has the others)"
_PIECES = "writing pieces into a larger tensor through strides or diagonals is not supported yet"
_ARG = "sorting and top-k are not supported"
NOT_COMPILED = {
    **dict.fromkeys(["mm", "bmm", "addmm", "baddbmm", "addmv", "mv", "dot", "convolution",
                     "convolution_backward", "_scaled_mm"], _MATMUL),
    **dict.fromkeys(["native_dropout", "rand", "rand_like", "randn",
                     "randn_like", "randint", "bernoulli", "uniform", "normal"], _RANDOM),
    **dict.fromkeys(["scatter_reduce"], _GATHER),
    "diagonal_scatter": _PIECES,
    **dict.fromkeys(["sort", "topk"], _ARG),
    **dict.fromkeys(["_scaled_dot_product_flash_attention_for_cpu",
                     "_scaled_dot_product_flash_attention_for_cpu_backward",
                     "_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_backward",
                     "_scaled_dot_product_efficient_attention",
                     "_scaled_dot_product_efficient_attention_backward",
                     "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_cudnn_attention_backward"],
                    "attention runs in PyTorch's fused attention kernels"),
    "_local_scalar_dense": "reading a tensor's value into a Python scalar stays in PyTorch (programs "
                           "take the scalar as a runtime argument)",
    "copy_": "writing into an input (an in-place update) is left to PyTorch",
}


def not_compiled_reason(target) -> str:
    """Why an operation without a converter stays in PyTorch."""
    packet = getattr(target, "_overloadpacket", None)
    reason = NOT_COMPILED.get(getattr(packet, "__name__", ""))
    return reason or f"no warpweave conversion for {op_name(target)}"


def op_name(target) -> str:
    """How reports name an operation: aten.add.Tensor."""
    if isinstance(target, torch._ops.OpOverload):
        return f"aten.{target.__name__}" if target.namespace == "aten" else str(target)
    return getattr(target, "__name__", str(target))


def _register(*targets):
    def wrap(fn):
        for t in targets:
            CONVERTERS[t] = fn
        return fn
    return wrap


# ----------------------------------------------------------------------------- pointwise

def _like(x):
    """What PyTorch's type promotion reads from an operand: a meta tensor of its dtype
    and rank class (0-d or not) for a traced tensor; a Python scalar as it is."""
    if isinstance(x, Tensor):
        return torch.empty(() if x.ndim == 0 else (0,), dtype=_TO_TORCH[dt.dtype(x.dtype)],
                           device="meta")
    return x


def _computation_dtype(kind, *operands) -> dt.DType:
    present = [_like(o) for o in operands if o is not None]
    return ww_dtype(elementwise_dtypes(*present, type_promotion_kind=kind)[0])


def _as(x, d: dt.DType) -> ex.Expr:
    return ex.cast(x, d) if isinstance(x, ex.Expr) else const(x, d)


def _pointwise(name, fn, out, *operands, kind=KIND.DEFAULT, compute=None):
    """One elementwise ComputeOp: the operands (traced tensors or scalars) cast to the
    computation dtype, `fn` of them, cast to the dtype PyTorch records for `out`."""
    c = compute or _computation_dtype(kind, *operands)
    res = ww_dtype(out.dtype)
    return map_elementwise(name, lambda *xs: ex.cast(fn(*(_as(x, c) for x in xs)), res), *operands)


def _overloads(name, *names):
    packet = getattr(aten, name)
    return [getattr(packet, n) for n in names if hasattr(packet, n)]


def _binary(op, kind):
    def convert(out, a, b):
        return _pointwise(op, lambda x, y: elem_binary(op, x, y), out, a, b, kind=kind)
    return convert


def _unary(op, kind):
    def convert(out, x):
        return _pointwise(op, lambda v: elem_unary(op, v), out, x, kind=kind)
    return convert


for _name, _op, _kind in [("mul", "mul", KIND.DEFAULT), ("div", "div", KIND.INT_TO_FLOAT),
                          ("maximum", "max", KIND.DEFAULT), ("minimum", "min", KIND.DEFAULT),
                          ("eq", "eq", KIND.DEFAULT), ("ne", "ne", KIND.DEFAULT),
                          ("lt", "lt", KIND.DEFAULT), ("le", "le", KIND.DEFAULT),
                          ("gt", "gt", KIND.DEFAULT), ("ge", "ge", KIND.DEFAULT),
                          ("bitwise_and", "and", KIND.DEFAULT), ("bitwise_or", "or", KIND.DEFAULT),
                          ("bitwise_xor", "xor", KIND.DEFAULT)]:
    for _overload in _overloads(_name, "Tensor", "Scalar", "default"):
        CONVERTERS[_overload] = _binary(_op, _kind)
CONVERTERS[aten.max.other] = _binary("max", KIND.DEFAULT)
CONVERTERS[aten.min.other] = _binary("min", KIND.DEFAULT)

for _name in ("exp", "log", "tanh", "sqrt", "rsqrt", "sin", "cos", "erf", "sigmoid"):
    CONVERTERS[getattr(aten, _name).default] = _unary(_name, KIND.INT_TO_FLOAT)
def _rounding(op):
    def convert(out, x):
        if not dt.dtype(x.dtype).is_float:  # integral already: PyTorch returns the values as they are
            return _pointwise(op, lambda v: v, out, x)
        return _pointwise(op, lambda v: elem_unary(op, v), out, x)
    return convert


for _name in ex.ROUNDING:
    CONVERTERS[getattr(aten, _name).default] = _rounding(_name)


@_register(aten.sign.default)
def _sign(out, x):
    """-1, 0 or 1 by the sign of x (0 for NaN, as PyTorch gives; bools as they are)."""
    if dt.dtype(x.dtype) == dt.bool_:
        return _pointwise("sign", lambda v: v, out, x)

    def sign(v):
        one, zero = _as(1, v.dtype), _as(0, v.dtype)
        return ex.select(ex.binary("gt", v, zero), one,
                         ex.select(ex.binary("lt", v, zero), elem_unary("neg", one), zero))
    return _pointwise("sign", sign, out, x)
CONVERTERS[aten.abs.default] = _unary("abs", KIND.DEFAULT)
CONVERTERS[aten.neg.default] = _unary("neg", KIND.DEFAULT)
CONVERTERS[aten.bitwise_not.default] = _unary("not", KIND.DEFAULT)


def _add_or_sub(op):
    def convert(out, a, b, alpha=1):
        c = _computation_dtype(KIND.DEFAULT, a, b)
        if alpha == 1:
            return _pointwise(op, lambda x, y: elem_binary(op, x, y), out, a, b, compute=c)
        return _pointwise(op, lambda x, y, s: elem_binary(op, x, elem_binary("mul", y, s)),
                          out, a, b, alpha, compute=c)
    return convert


_register(aten.add.Tensor, aten.add.Scalar)(_add_or_sub("add"))
_register(aten.sub.Tensor, aten.sub.Scalar)(_add_or_sub("sub"))


# div with a rounding mode, floor_divide, remainder, fmod: convert_math.py


@_register(aten.reciprocal.default)
def _reciprocal(out, x):
    return _pointwise("reciprocal", lambda v: elem_binary("div", _as(1, v.dtype), v), out, x,
                      kind=KIND.INT_TO_FLOAT)


@_register(*_overloads("pow", "Tensor_Scalar", "Tensor_Tensor", "Scalar"))
def _pow(out, base, exponent):
    c = _computation_dtype(KIND.BOOL_TO_LONG, base, exponent)
    if isinstance(exponent, Tensor):
        return _pointwise("pow", lambda x, y: elem_binary("pow", x, y), out, base, exponent,
                          compute=c)
    # PyTorch's special cases of a scalar exponent: sqrt, rsqrt, reciprocals, small powers
    special = {0.5: lambda v: elem_unary("sqrt", v), -0.5: lambda v: elem_unary("rsqrt", v),
               -1.0: lambda v: elem_binary("div", _as(1, c), v),
               -2.0: lambda v: elem_binary("div", _as(1, c), elem_binary("mul", v, v))}
    fn = special.get(float(exponent)) if c.is_float else None
    if fn is None:
        e = c.numpy.type(exponent)  # a numpy scalar: small integral powers become products
        fn = lambda v: elem_binary("pow", v, e)  # noqa: E731
    return _pointwise("pow", fn, out, base, compute=c)


def _clamp(out, x, lo=None, hi=None):
    def fn(v, *bounds):
        bounds = iter(bounds)
        if lo is not None:
            v = elem_binary("max", v, next(bounds))
        if hi is not None:
            v = elem_binary("min", v, next(bounds))
        return v
    return _pointwise("clamp", fn, out, x, *(b for b in (lo, hi) if b is not None))


_register(aten.clamp.default, aten.clamp.Tensor)(_clamp)
_register(aten.clamp_min.default, aten.clamp_min.Tensor)(lambda out, x, lo: _clamp(out, x, lo=lo))
_register(aten.clamp_max.default, aten.clamp_max.Tensor)(lambda out, x, hi: _clamp(out, x, hi=hi))
_register(aten.hardtanh.default)(lambda out, x, lo=-1.0, hi=1.0: _clamp(out, x, lo, hi))


@_register(aten.relu.default)
def _relu(out, x):
    return _pointwise("relu", lambda v: elem_binary("max", v, _as(0, v.dtype)), out, x)


@_register(aten.leaky_relu.default)
def _leaky_relu(out, x, negative_slope=0.01):
    def fn(v, s):
        return ex.Select(elem_binary("gt", v, _as(0, v.dtype)), v, elem_binary("mul", v, s))
    return _pointwise("leaky_relu", fn, out, x, negative_slope, compute=_computation_dtype(KIND.DEFAULT, x))


@_register(aten.gelu.default)
def _gelu(out, x, *, approximate="none"):
    return ops.gelu(x, approximate=approximate)


@_register(aten.silu.default)
def _silu(out, x):
    return _pointwise("silu", lambda v: elem_binary("mul", v, elem_unary("sigmoid", v)), out, x,
                      kind=KIND.INT_TO_FLOAT)


@_register(aten.glu.default)
def _glu(out, x, dim=-1):
    d = _dim(x, dim)
    half = x.shape[d] // 2
    a, b = (x[(slice(None),) * d + (slice(s, s + half),)] for s in (0, half))
    return _pointwise("glu", lambda u, v: elem_binary("mul", u, elem_unary("sigmoid", v)), out, a, b)


def _add_combined(op):
    def convert(out, x, t1, t2, *, value=1):
        kind = KIND.DEFAULT if op == "mul" else KIND.INT_TO_FLOAT
        return _pointwise(f"addc{op}", lambda a, b, c, s: elem_binary(
            "add", a, elem_binary("mul", s, elem_binary(op, b, c))), out, x, t1, t2, value, kind=kind)
    return convert


CONVERTERS[aten.addcmul.default] = _add_combined("mul")
CONVERTERS[aten.addcdiv.default] = _add_combined("div")


@_register(aten.lerp.Scalar, aten.lerp.Tensor)
def _lerp(out, start, end, weight):
    """start + weight·(end − start), or end − (1 − weight)·(end − start) where
    |weight| ≥ 0.5, as PyTorch computes it."""
    def fn(a, b, w):
        diff = elem_binary("sub", b, a)
        near_start = elem_binary("lt", elem_unary("abs", w), _as(0.5, w.dtype))
        return ex.Select(near_start, elem_binary("add", a, elem_binary("mul", w, diff)),
                         elem_binary("sub", b, elem_binary("mul", diff, elem_binary(
                             "sub", _as(1, w.dtype), w))))
    return _pointwise("lerp", fn, out, start, end, weight)


@_register(aten.where.self, aten.where.ScalarSelf, aten.where.ScalarOther, aten.where.Scalar)
def _where(out, cond, a, b):
    c, res = _computation_dtype(KIND.DEFAULT, a, b), ww_dtype(out.dtype)
    return map_elementwise(
        "where", lambda k, x, y: ex.cast(ex.Select(_as(k, dt.bool_), _as(x, c), _as(y, c)), res),
        cond, a, b)


def _logical(op):
    def convert(out, a, b):
        return _pointwise(f"logical_{op}", lambda x, y: elem_binary(op, x, y), out, a, b,
                          compute=dt.bool_)
    return convert


for _op in ("and", "or", "xor"):
    CONVERTERS[getattr(aten, f"logical_{_op}").default] = _logical(_op)
_register(aten.logical_not.default)(
    lambda out, x: _pointwise("logical_not", lambda v: elem_unary("not", v), out, x, compute=dt.bool_))


# ----------------------------------------------------------------------------- casts, copies

@_register(aten._to_copy.default, torch.ops.prims.convert_element_type.default)
def _to_copy(out, x, dtype=None, *, layout=None, device=None, pin_memory=None, non_blocking=False,
             memory_format=None):
    _check_layout(layout)
    return _pointwise("to", lambda v: v, out, x, compute=dt.dtype(x.dtype))


@_register(aten.clone.default, aten.alias.default, aten.lift_fresh_copy.default, aten.detach.default)
def _identity(out, x, *, memory_format=None):
    return x


@_register(aten.copy.default)
def _copy(out, dst, src, non_blocking=False):
    return _pointwise("copy", lambda v: v, out, src.broadcast_to(dst.shape), compute=dt.dtype(src.dtype))


def _check_layout(layout):
    if layout not in (None, torch.strided):
        raise UnsupportedError(f"tensors of layout {layout} are not supported (only strided)")


# ----------------------------------------------------------------------------- reductions

def index_vars(x, dim):
    """PyTorch's reduction dims as trace axes: None and [] mean all; a 0-d tensor
    accepts dim 0 or -1."""
    if dim is None or x.ndim == 0 or (isinstance(dim, (list, tuple)) and not dim):
        return None
    return tuple(dim) if isinstance(dim, (list, tuple)) else dim


@_register(aten.sum.dim_IntList, aten.sum.default)
def _sum(out, x, dim=None, keepdim=False, *, dtype=None):
    res = ww_dtype(out.dtype)
    return x.sum(axis=index_vars(x, dim), dtype=dt.compute_dtype(res), keepdims=keepdim).astype(res)


@_register(aten.mean.dim, aten.mean.default)
def _mean(out, x, dim=None, keepdim=False, *, dtype=None):
    if dtype is not None:
        x = x.astype(ww_dtype(dtype))
    return x.mean(axis=index_vars(x, dim), keepdims=keepdim)


@_register(aten.max.default)
def _max_all(out, x):
    return x.max()


@_register(aten.min.default)
def _min_all(out, x):
    return x.min()


@_register(aten.amax.default)
def _amax(out, x, dim=(), keepdim=False):
    return x.max(axis=index_vars(x, dim), keepdims=keepdim)


@_register(aten.amin.default)
def _amin(out, x, dim=(), keepdim=False):
    return x.min(axis=index_vars(x, dim), keepdims=keepdim)


def _arg_extreme(combiner: str, x: Tensor, dim, keepdim: bool) -> Tensor:
    """The index of the first largest (smallest) element along `dim` (of all, flat,
    where dim is None), a NaN counting as the extreme as in PyTorch: the extreme
    value, then the least position that holds it (or NaN), as two reductions."""
    if dim is None:
        shape, x = x.shape, x.reshape(-1)
        found = _arg_extreme(combiner, x, 0, False)
        return found.reshape((1,) * len(shape)) if keepdim else found
    d = dim % x.ndim if x.ndim else 0
    if x.ndim == 0:
        return map_elementwise("arg", lambda v: ex.Const(0, dt.int64), x)
    best = x.max(axis=d, keepdims=True) if combiner == "max" else x.min(axis=d, keepdims=True)
    ivars = output_vars(x.ndim)
    ranges = var_ranges(ivars, x.shape)
    v = x._load(list(ivars), ranges)
    hit = ex.binary("eq", v, best._load_broadcast(ivars, x.shape, ranges))
    if dt.dtype(x.dtype).is_float:
        hit = ex.binary("or", hit, ex.binary("ne", v, v))
    position = ex.select(hit, ex.cast(ivars[d], dt.int64), ex.Const(x.shape[d], dt.int64))
    candidates = x._tr.compute(x.shape, ivars, position, op_label(f"arg{combiner}"))
    return candidates.min(axis=d, keepdims=keepdim)


@_register(aten.argmax.default)
def _argmax(out, x, dim=None, keepdim=False):
    return _arg_extreme("max", x, dim, keepdim)


@_register(aten.argmin.default)
def _argmin(out, x, dim=None, keepdim=False):
    return _arg_extreme("min", x, dim, keepdim)


@_register(aten.max.dim)
def _max_dim(out, x, dim, keepdim=False):
    return [x.max(axis=dim % max(x.ndim, 1) if x.ndim else None, keepdims=keepdim),
            _arg_extreme("max", x, dim, keepdim)]


@_register(aten.min.dim)
def _min_dim(out, x, dim, keepdim=False):
    return [x.min(axis=dim % max(x.ndim, 1) if x.ndim else None, keepdims=keepdim),
            _arg_extreme("min", x, dim, keepdim)]


@_register(aten.var.correction)
def _var(out, x, dim=None, *, correction=None, keepdim=False):
    return x.var(axis=index_vars(x, dim), ddof=1 if correction is None else correction, keepdims=keepdim)


# ----------------------------------------------------------------------------- softmax, norms

def _softmax_of(fn):
    def convert(out, x, dim, half_to_float):
        return fn(x.astype(ww_dtype(out.dtype)) if half_to_float else x, axis=dim)
    return convert


CONVERTERS[aten._softmax.default] = _softmax_of(ops.softmax)
CONVERTERS[aten._log_softmax.default] = _softmax_of(ops.log_softmax)


@_register(aten._softmax_backward_data.default)
def _softmax_backward(out, grad, y, dim, input_dtype):
    """y · (grad − Σ grad·y), in float32 for 16-bit tensors."""
    c = dt.compute_dtype(dt.dtype(grad.dtype))
    g, yc = grad.astype(c), y.astype(c)
    axis = None if y.ndim == 0 else dim  # a 0-d tensor's one element (dim 0 or -1)
    return (yc * (g - (g * yc).sum(axis=axis, keepdims=True))).astype(ww_dtype(out.dtype))


@_register(aten.native_layer_norm.default)
def _layer_norm(out, x, normalized_shape, weight, bias, eps):
    """(normalized, mean, 1/std) over the trailing `normalized_shape` axes, computed in
    float32 for 16-bit inputs, each in the dtype PyTorch records."""
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    xc = x.astype(dt.compute_dtype(dt.dtype(x.dtype)))
    mean = xc.mean(axis=axes, keepdims=True)
    centered = xc - mean
    rstd = ops.rsqrt((centered * centered).mean(axis=axes, keepdims=True) + eps)
    y = centered * rstd
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return [t.astype(ww_dtype(o.dtype)) for t, o in zip((y, mean, rstd), out)]


# ----------------------------------------------------------------------------- views

@_register(aten.view.default, aten._unsafe_view.default, aten.reshape.default,
           aten.unsqueeze.default, aten.squeeze.default, aten.squeeze.dim, aten.squeeze.dims)
def _reshape(out, x, *shape_or_dims):
    return x.reshape(tuple(out.shape))


@_register(aten.cat.default)
def _cat(out, tensors, dim=0):
    # PyTorch skips 1-D empty pieces beside pieces of other ranks (legacy behaviour)
    pieces = [t for t in tensors if not (t.ndim == 1 and t.size == 0 and len(out.shape) != 1)]
    return concatenate(pieces or list(tensors), dim, ww_dtype(out.dtype))


@_register(aten.permute.default)
def _permute(out, x, dims):
    return x.transpose(tuple(dims))


@_register(aten.transpose.int)
def _transpose(out, x, dim0, dim1):
    return x.swapaxes(dim0, dim1) if x.ndim else x


@_register(aten.t.default)
def _t(out, x):
    return x.transpose()


@_register(aten.expand.default)
def _expand(out, x, size, *, implicit=False):
    return x.broadcast_to(tuple(out.shape))


def _dim(x, dim) -> int:
    return normalize_axes(dim, x.ndim, "dim")[0]


@_register(aten.slice.Tensor)
def _slice(out, x, dim=0, start=None, end=None, step=1):
    return x[(slice(None),) * _dim(x, dim) + (slice(start, end, step),)]


@_register(aten.select.int)
def _select(out, x, dim, index):
    return x[(slice(None),) * _dim(x, dim) + (index,)]


@_register(aten.split_with_sizes.default)
def _split_with_sizes(out, x, split_sizes, dim=0):
    d = _dim(x, dim)
    starts = [sum(split_sizes[:k]) for k in range(len(split_sizes))]
    return [x[(slice(None),) * d + (slice(s, s + n),)] for s, n in zip(starts, split_sizes)]


@_register(aten.split.Tensor)
def _split(out, x, split_size, dim=0):
    return _split_with_sizes(out, x, [o.shape[_dim(x, dim)] for o in out], dim)


@_register(aten.unbind.int)
def _unbind(out, x, dim=0):
    return [_select(None, x, dim, k) for k in range(x.shape[_dim(x, dim)])]


@_register(aten.slice_scatter.default)
def _slice_scatter(out, x, src, dim=0, start=None, end=None, step=1):
    """x with src in place of x[start:end:step] along dim: each element reads src
    where its position is in the slice, x elsewhere."""
    d = _dim(x, dim)
    start, end, step = slice(start, end, step).indices(x.shape[d])
    before = (slice(None),) * d
    if step == 1:  # the pieces concatenated
        return concatenate([x[before + (slice(0, start),)], src, x[before + (slice(max(end, start), None),)]],
                           d, ww_dtype(out.dtype))
    shape = tuple(out.shape)
    ivars = output_vars(len(shape))
    ranges = var_ranges(ivars, shape)
    i, res = ivars[d], ww_dtype(out.dtype)
    body = ex.cast(x._load(list(ivars), ranges), res)
    if src.shape[d]:
        taken = ex.all_of([ex.binary("ge", i, start), ex.binary("lt", i, end),
                           ex.binary("eq", (i - start) % step, 0)])
        k = ex.binary("min", ex.binary("max", (i - start) // step, ex.Const(0, dt.INDEX)),
                      ex.Const(src.shape[d] - 1, dt.INDEX))
        placed = ex.cast(src._load([k if a == d else v for a, v in enumerate(ivars)], ranges), res)
        body = ex.select(taken, placed, body)
    return x._tr.compute(shape, ivars, body, op_label("slice_scatter"))


@_register(aten.repeat.default)
def _repeat(out, x, repeats):
    """x tiled `repeats[k]` times along each axis (x's axes align with the last ones):
    out[..., i] = x[..., i % n]."""
    shape = tuple(out.shape)
    ivars = output_vars(len(shape))
    ranges = var_ranges(ivars, shape)
    lead = len(shape) - x.ndim
    src = [v % n if r != 1 else v for v, n, r in zip(ivars[lead:], x.shape, list(repeats)[lead:])]
    if math.prod(shape) == 0:
        return full(shape, 0, ww_dtype(out.dtype))
    return x._tr.compute(shape, ivars, ex.cast(x._load(src, ranges), ww_dtype(out.dtype)), op_label("repeat"))


@_register(aten.select_scatter.default)
def _select_scatter(out, x, src, dim, index):
    d = _dim(x, dim)
    index %= x.shape[d]
    return _slice_scatter(out, x, src.reshape(src.shape[:d] + (1,) + src.shape[d:]), d, index, index + 1)


@_register(operator.getitem)
def _getitem(out, values, index):
    return values[index]


# ----------------------------------------------------------------------------- constants

def _filled(value_at):
    def convert(out, *args, dtype=None, layout=None, device=None, pin_memory=None, memory_format=None):
        _check_layout(layout)
        return full(tuple(out.shape), value_at(args), ww_dtype(out.dtype))
    return convert


_register(aten.full.default, aten.new_full.default)(_filled(lambda args: args[-1]))
_register(aten.full_like.default, aten.scalar_tensor.default)(
    _filled(lambda args: args[1] if len(args) > 1 else args[0]))
_register(aten.zeros.default, aten.zeros_like.default, aten.new_zeros.default)(_filled(lambda args: 0))
_register(aten.ones.default, aten.ones_like.default, aten.new_ones.default)(_filled(lambda args: 1))
# Uninitialised allocations (AOTAutograd's `new_empty_strided` + `copy` for a clone of a
# view's gradient, empty_permuted for a MoE's buffers): their contents are unspecified,
# so zeros are one valid value of them; what fills them (copy, scatter) is computed as usual.
EMPTY_OPS = (aten.empty.memory_format, aten.empty_strided.default, aten.empty_like.default,
             aten.empty_permuted.default, aten.new_empty.default, aten.new_empty_strided.default)
_register(*EMPTY_OPS)(_filled(lambda args: 0))


@_register(aten.arange.default, aten.arange.start, aten.arange.start_step)
def _arange(out, *bounds, dtype=None, layout=None, device=None, pin_memory=None):
    _check_layout(layout)
    return arange(*bounds, dtype=ww_dtype(out.dtype))


# ----------------------------------------------------------------------------- nodes

def convert_node(node, env):
    """Perform an FX node on traced tensors: `env` maps the nodes it reads to traced
    tensors (or lists of them). Raises UnsupportedError or DTypeError with the reason
    when the node cannot be compiled."""
    fn = CONVERTERS.get(node.target)
    if fn is None:
        raise UnsupportedError(not_compiled_reason(node.target))
    args, kwargs = map_arg((node.args, node.kwargs), lambda n: env[n])
    if node.target in READS_LAYOUTS:  # PyTorch's records of its tensor arguments, strides included
        kwargs = {**kwargs, "layouts": map_arg(node.args, lambda n: n.meta.get("val"))}
    with scope(node.name):
        result = fn(node.meta["val"], *args, **kwargs)
    _check_result(node, result, node.meta["val"])
    return result


def _check_result(node, got, want):
    if isinstance(want, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(want):
            raise UnsupportedError(f"{node.name} ({op_name(node.target)}): warpweave gave "
                                   f"{type(got).__name__}, PyTorch has {len(want)} results")
        for g, w in zip(got, want):
            _check_result(node, g, w)
        return
    shape, dtype = tuple(want.shape), ww_dtype(want.dtype)
    if not isinstance(got, Tensor) or got.shape != shape or dt.dtype(got.dtype) != dtype:
        what = f"{dt.dtype(got.dtype)}{list(got.shape)}" if isinstance(got, Tensor) else repr(got)
        raise UnsupportedError(f"{node.name} ({op_name(node.target)}): warpweave computed {what}, "
                               f"PyTorch records {dtype}{list(shape)}")


# Signatures of nodes that converted on their own (`_signature`): a model repeats the
# same nodes layer after layer, and each trial conversion traces a small program.
_CONVERTED: set = set()
_CONVERTED_LIMIT = 1 << 14


def _signature(node, inputs) -> tuple | None:
    """What a node's trial conversion depends on: its target, its arguments with the
    nodes it reads replaced by their positions, the shapes, dtypes and devices of its
    inputs and results, and the options in force (converters may read them); None
    where an argument has no value to compare (a symbolic size)."""
    position = {n: k for k, n in enumerate(inputs)}

    def frozen(a):
        if isinstance(a, torch.fx.Node):
            return ("input", position[a])
        if isinstance(a, (list, tuple)):
            return tuple(map(frozen, a))
        if isinstance(a, dict):
            return tuple(sorted((k, frozen(v)) for k, v in a.items()))
        return a

    layouts = node.target in READS_LAYOUTS

    def described(v):
        if isinstance(v, torch.Tensor):
            if layouts:
                return tuple(v.shape), v.dtype, v.device.type, v.stride(), v.storage_offset()
            return tuple(v.shape), v.dtype, v.device.type
        if isinstance(v, (list, tuple)):
            return tuple(map(described, v))
        return type(v)

    key = (node.target, current_options(), frozen(node.args), frozen(node.kwargs),
           tuple(described(n.meta.get("val")) for n in inputs), described(node.meta.get("val")))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def node_unsupported_reason(node) -> str | None:
    """None when `node` (a call_function node with tensor metadata) converts on its
    own; else why not. Nodes like one that converted before are not traced again."""
    if node.target not in CONVERTERS:
        return not_compiled_reason(node.target)
    inputs = node.all_input_nodes
    key = _signature(node, inputs)
    if key is not None and key in _CONVERTED:
        return None
    reason = _trial_conversion(node, inputs)
    if reason is None and key is not None:
        if len(_CONVERTED) >= _CONVERTED_LIMIT:
            _CONVERTED.clear()
        _CONVERTED.add(key)
    return reason


def _trial_conversion(node, inputs) -> str | None:
    specs = []
    scalars = []
    try:
        for n in inputs:
            v = n.meta.get("val")
            if type(v) in SYMBOLIC_SCALARS:  # a runtime scalar: a 0-d tensor argument
                specs.append(((), ww_dtype(SYMBOLIC_SCALARS[type(v)])))
                scalars.append(n.name)
                continue
            if not isinstance(v, torch.Tensor):
                return (f"reads {n.name}, a {type(v).__name__} rather than a tensor (values known "
                        "only at run time are not supported)")
            specs.append((tuple(v.shape), ww_dtype(v.dtype)))
        out = node.meta.get("val")
        for v in (out if isinstance(out, (list, tuple)) else [out]):
            if isinstance(v, torch.Tensor):
                ww_dtype(v.dtype)
    except DTypeError as exc:
        return str(exc)

    def run(*tensors):
        result = convert_node(node, dict(zip(inputs, tensors)))
        return list(result) if isinstance(result, (list, tuple)) else result

    try:
        trace(run, specs)
    except Error as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - a converter that takes no tensor where it reads a scalar
        if not scalars:
            raise
        return f"reads the runtime scalar {', '.join(scalars)} where it takes no tensor ({type(exc).__name__}: {exc})"
    return None
