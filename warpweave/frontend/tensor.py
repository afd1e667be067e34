"""Traced tensors: the recording state of one trace, `Tensor` (a symbolic tensor with
numpy semantics, whose every operation records one `ComputeOp`) and matmul.

Views (reshape, transpose, broadcasting, slicing, `None` indexing) produce no
operation: a view maps its indices to index expressions over its base tensor, and
consumers load through the composed indices. numpy's `__array_ufunc__` and
`__array_function__` protocols dispatch through tables that `frontend.numpy_api`
fills.
"""
from __future__ import annotations

import builtins
import operator
import threading
from typing import Callable

import numpy as np

from ..errors import IndexOutOfRangeError, ShapeError, UnsupportedError
from ..ir import dtypes as dt
from ..ir import expr as ex
from ..ir import simplify as sx
from ..ir.dtypes import DType
from ..ir.tensor import ComputeOp, Placeholder
from .algebra import as_scalar, broadcast_shapes, check_shape, const, dtype_of, elem_binary, elem_unary, elem_where, normalize_axes, product, promote

# ============================================================================ the trace

_state = threading.local()


def _scopes() -> list[str]:
    if not hasattr(_state, "scopes"):
        _state.scopes = []
    return _state.scopes


class recording:
    """`with recording(trace):` makes `trace` the active one (for constructors such as
    `full`) with no scope labels, restoring the outer state on exit."""

    def __init__(self, trace: "Trace"):
        self.trace = trace

    def __enter__(self):
        self.saved, self.outer = list(_scopes()), getattr(_state, "active", None)
        _scopes().clear()
        _state.active = self.trace
        return self.trace

    def __exit__(self, *exc):
        _scopes()[:] = self.saved
        _state.active = self.outer


def active_trace(what: str) -> Trace:
    tr = getattr(_state, "active", None)
    if tr is None:
        raise UnsupportedError(f"{what} builds a traced tensor: call it inside a function being "
                               "traced (ww.jit)")
    return tr



class scope:
    """`with scope("softmax"):` labels the ops recorded inside as `softmax.<op>`."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        _scopes().append(self.name)
        return self

    def __exit__(self, *exc):
        _scopes().pop()


def op_label(short: str, full: str | None = None) -> str:
    s = _scopes()
    if s:
        return ".".join(s + [short])
    return full if full is not None else short


class Trace:
    """The operations recorded while tracing one function."""

    def __init__(self):
        self.ops: dict[str, Placeholder | ComputeOp] = {}
        self.count = 0
        self.closed = False

    def placeholder(self, name: str, shape, dtype: DType) -> "Tensor":
        self.ops[name] = Placeholder(name, shape, dtype)
        return Tensor._base_of(self, name, shape, dtype)

    def compute(self, shape, axes, body: ex.Expr, label: str) -> "Tensor":
        name = f"t{self.count}"
        self.count += 1
        op = ComputeOp(name, tuple(shape), body.dtype, tuple(axes), body, label)
        self.ops[name] = op
        return Tensor._base_of(self, name, op.shape, op.dtype)


def index_vars(n: int, prefix: str = "i") -> list[ex.Var]:
    return [ex.Var(f"{prefix}{k}") for k in range(n)]


def var_ranges(vars_, extents) -> dict[str, tuple[int, int]]:
    return {v.name: (0, builtins.max(0, n - 1)) for v, n in zip(vars_, extents)}


_VIEW = [ex.Var(f"_v{k}") for k in range(64)]


def _view_var(k: int) -> ex.Var:
    while k >= len(_VIEW):
        _VIEW.append(ex.Var(f"_v{len(_VIEW)}"))
    return _VIEW[k]


def common_trace(operands, what: str) -> Trace:
    tr = None
    for o in operands:
        if isinstance(o, Tensor):
            if o._tr.closed:
                raise UnsupportedError(f"{what}: a tensor of a finished trace was used; traced "
                                       "tensors are only valid inside the function being traced")
            if tr is not None and o._tr is not tr:
                raise UnsupportedError(f"{what}: tensors of two different traces were mixed")
            tr = o._tr
    return tr


def _check_operand(o, what: str):
    if isinstance(o, Tensor):
        return o
    s = as_scalar(o)
    if s is not None:
        return s
    if isinstance(o, (np.ndarray, list, tuple)):
        raise UnsupportedError(f"{what}: numpy arrays and lists cannot be captured as constants "
                               "in a traced function; pass them as arguments instead")
    raise UnsupportedError(f"{what}: unsupported operand of type {type(o).__name__}: {o!r}")


def map_elementwise(label: str, fn: Callable[..., ex.Expr], *operands, full_label=None) -> "Tensor":
    """One ComputeOp: `fn` of the broadcast operands (loads for tensors, the values
    themselves for scalars)."""
    operands = [_check_operand(o, label) for o in operands]
    tensors = [o for o in operands if isinstance(o, Tensor)]
    tr = common_trace(tensors, label)
    if tr is None:
        raise UnsupportedError(f"{label}: no traced tensor among the operands")
    shape = broadcast_shapes(*(t.shape for t in tensors), what=label)
    axes = index_vars(len(shape))
    ranges = var_ranges(axes, shape)
    args = [o._load_broadcast(axes, shape, ranges) if isinstance(o, Tensor) else o for o in operands]
    body = fn(*args)
    if not isinstance(body, ex.Expr):
        body = const(body, dtype_of(body))
    return tr.compute(shape, axes, body, op_label(label, full_label))


def _binop(op: str, a, b, label: str | None = None):
    for o in (a, b):
        if not (isinstance(o, (Tensor, np.ndarray, list, tuple)) or as_scalar(o) is not None):
            return NotImplemented
    return map_elementwise(label or op, lambda x, y: elem_binary(op, x, y), a, b)


def _unop(op: str, a, label: str | None = None):
    return map_elementwise(label or op, lambda x: elem_unary(op, x), a)


def where(cond, a, b):
    """numpy.where(cond, a, b) on traced tensors and scalars: one ComputeOp."""
    return map_elementwise("where", elem_where, cond, a, b)


def _rounding_division(name: str, a, b):
    """numpy's floor_divide (//) and remainder (%) (`mathfns.numpy_division`)."""
    from .mathfns import numpy_division

    for o in (a, b):
        if not (isinstance(o, (Tensor, np.ndarray, list, tuple)) or as_scalar(o) is not None):
            return NotImplemented
    return map_elementwise(name, numpy_division(name), a, b)


def _unsupported_op(name):
    def fn(self, *args, **kwargs):
        raise UnsupportedError(f"the {name} operator is not supported on traced tensors")
    fn.__name__ = name
    return fn


# ============================================================================ Tensor

class Tensor:
    """A symbolic tensor inside a traced function, with numpy semantics.

    Either the result of an operation (a `ComputeOp`) or an input, or a view of one:
    `_index` maps the view's indices (variables `_v0`, `_v1`, ...) to the base
    tensor's indices (None for the base itself).
    """

    __slots__ = ("_tr", "_base", "_base_shape", "_index", "_shape", "_dt", "__weakref__")

    # numpy's protocols dispatch through these tables, filled by frontend.numpy_api
    UFUNCS: dict[str, Callable] = {}
    ARRAY_FUNCTIONS: dict[str, Callable] = {}
    __array_priority__ = 1000

    def __init__(self, tr, base, base_shape, index, shape, dtype):
        self._tr = tr
        self._base = base
        self._base_shape = tuple(base_shape)
        self._shape = tuple(shape)
        self._dt = dtype
        if index is not None and self._shape == self._base_shape and all(
                isinstance(e, ex.Var) and e.name == f"_v{k}" for k, e in enumerate(index)):
            index = None
        self._index = None if index is None else tuple(index)

    @classmethod
    def _base_of(cls, tr, name, shape, dtype):
        return cls(tr, name, shape, None, shape, dtype)

    # ------------------------------------------------------------------ attributes
    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def ndim(self) -> int:
        return len(self._shape)

    @property
    def size(self) -> int:
        return product(self._shape)

    @property
    def dtype(self) -> np.dtype:
        return self._dt.numpy

    @property
    def is_view(self) -> bool:
        """True for a view (an index rewrite of another tensor)."""
        return self._index is not None

    def __len__(self):
        if not self._shape:
            raise TypeError("len() of unsized object")
        return self._shape[0]

    def __iter__(self):
        if not self._shape:
            raise TypeError("iteration over a 0-d tensor")
        return (self[k] for k in range(self._shape[0]))

    def __repr__(self):
        kind = f"view of {self._base}" if self.is_view else self._base
        return f"Tensor({kind}, shape={self._shape}, dtype={self._dt})"

    __hash__ = object.__hash__

    def __bool__(self):
        raise UnsupportedError("the truth value of a traced tensor is not known while tracing; "
                               "data-dependent Python control flow is not supported (use ww.where)")

    def _no_value(self, *args):
        raise UnsupportedError("a traced tensor has no concrete value while tracing "
                               "(int(), float(), index() are not supported)")

    __int__ = __float__ = __index__ = __complex__ = _no_value

    def __array__(self, *args, **kwargs):
        raise UnsupportedError("a traced tensor cannot be converted to a numpy array while tracing")

    def __setitem__(self, key, value):
        raise UnsupportedError("item assignment is not supported on traced tensors "
                               "(they are immutable); build the result with ww.where")

    # ------------------------------------------------------------------ index plumbing
    def _compose(self, idx, ranges) -> tuple[ex.Expr, ...]:
        """Base-tensor indices for the indices `idx` of this tensor."""
        if self._index is None:
            exprs = tuple(idx)
        else:
            mapping = {f"_v{k}": e for k, e in enumerate(idx)}
            exprs = tuple(ex.substitute(e, mapping) for e in self._index)
        return tuple(sx.simplify(ex.as_index(e), ranges) for e in exprs)

    def _load(self, idx, ranges) -> ex.Load:
        return ex.Load(self._base, self._compose(idx, ranges), self._dt)

    def _load_broadcast(self, axes, shape, ranges) -> ex.Load:
        off = len(shape) - self.ndim
        idx = [ex.Const(0, dt.INDEX) if n == 1 and shape[off + k] != 1 else axes[off + k]
               for k, n in enumerate(self._shape)]
        return self._load(idx, ranges)

    def _view(self, shape, fn) -> "Tensor":
        """A view of shape `shape`; `fn(view_vars)` gives this tensor's indices."""
        shape = tuple(shape)
        vs = [_view_var(k) for k in range(len(shape))]
        idx = fn(vs)
        base_idx = self._compose(idx, var_ranges(vs, shape))
        return Tensor(self._tr, self._base, self._base_shape, base_idx, shape, self._dt)

    def _check_live(self, what):
        common_trace([self], what)

    # ------------------------------------------------------------------ views
    def reshape(self, *shape, order="C"):
        if order != "C":
            raise UnsupportedError(f"reshape(order={order!r}) is not supported; only order='C'")
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        elif len(shape) == 1 and isinstance(shape[0], (int, np.integer)):
            shape = (shape[0],)
        try:
            shape = [operator.index(s) for s in shape]
        except TypeError:
            raise ShapeError(f"reshape: the new shape must be ints, got {shape!r}") from None
        unknown = [k for k, s in enumerate(shape) if s == -1]
        if len(unknown) > 1:
            raise ShapeError(f"reshape: can only specify one unknown dimension, got {tuple(shape)}")
        if any(s < -1 for s in shape):
            raise ShapeError(f"reshape: negative dimension in {tuple(shape)}")
        size = self.size
        if unknown:
            known = product(s for s in shape if s != -1)
            if known == 0 or size % known:
                raise ShapeError(f"cannot reshape tensor of shape {self._shape} "
                                 f"(size {size}) into shape {tuple(shape)}")
            shape[unknown[0]] = size // known
        shape = tuple(shape)
        if product(shape) != size:
            raise ShapeError(f"cannot reshape tensor of shape {self._shape} (size {size}) "
                             f"into shape {shape} (size {product(shape)})")
        if shape == self._shape:
            return self
        old = self._shape

        def fn(vs):
            if size == 0:
                return [ex.Const(0, dt.INDEX)] * len(old)
            flat = None
            stride = 1
            for v, n in reversed(list(zip(vs, shape))):
                if n != 1:
                    term = v if stride == 1 else v * stride
                    flat = term if flat is None else term + flat
                stride *= n
            if flat is None:
                flat = ex.Const(0, dt.INDEX)
            out = []
            stride = 1
            strides = []
            for n in reversed(old):
                strides.append(stride)
                stride *= n
            strides.reverse()
            for j, (n, s) in enumerate(zip(old, strides)):
                if n == 1:
                    out.append(ex.Const(0, dt.INDEX))
                    continue
                e = flat if s == 1 else flat // s
                if j > 0:
                    e = e % n
                out.append(e)
            return out

        return self._view(shape, fn)

    def transpose(self, *axes):
        if len(axes) == 1 and (axes[0] is None or isinstance(axes[0], (tuple, list))):
            axes = axes[0]
        if axes is None or axes == ():
            perm = tuple(reversed(range(self.ndim)))
        else:
            if len(axes) != self.ndim:
                raise ShapeError(f"transpose: axes {tuple(axes)} do not match a tensor of shape "
                                 f"{self._shape}")
            perm = tuple(a % self.ndim if -self.ndim <= a < self.ndim else a
                         for a in (operator.index(x) for x in axes))
            if sorted(perm) != list(range(self.ndim)):
                raise ShapeError(f"transpose: axes {tuple(axes)} are not a permutation of the axes "
                                 f"of a tensor of shape {self._shape}")
        if perm == tuple(range(self.ndim)):
            return self
        shape = tuple(self._shape[p] for p in perm)

        def fn(vs):
            idx = [None] * self.ndim
            for k, p in enumerate(perm):
                idx[p] = vs[k]
            return idx

        return self._view(shape, fn)

    @property
    def T(self):
        return self.transpose()

    def swapaxes(self, a, b):
        a, b = (normalize_axes(x, self.ndim)[0] for x in (a, b))
        perm = list(range(self.ndim))
        perm[a], perm[b] = perm[b], perm[a]
        return self.transpose(tuple(perm))

    def flatten(self):
        return self.reshape(-1)

    ravel = flatten

    def squeeze(self, axis=None):
        if axis is None:
            axes = tuple(k for k, n in enumerate(self._shape) if n == 1)
        else:
            axes = normalize_axes(axis, self.ndim)
            bad = [a for a in axes if self._shape[a] != 1]
            if bad:
                raise ShapeError(f"squeeze: axis {bad[0]} of shape {self._shape} is not of size 1")
        return self.reshape(tuple(n for k, n in enumerate(self._shape) if k not in axes))

    def broadcast_to(self, shape):
        shape = check_shape(shape)
        if broadcast_shapes(self._shape, shape, what="broadcast_to") != shape:
            raise ShapeError(f"broadcast_to: cannot broadcast shape {self._shape} to {shape}")
        if shape == self._shape:
            return self
        off = len(shape) - self.ndim
        return self._view(shape, lambda vs: [ex.Const(0, dt.INDEX) if n == 1 and shape[off + k] != 1
                                             else vs[off + k] for k, n in enumerate(self._shape)])

    def as_strided(self, shape, strides, offset: int = 0):
        """The view whose element `i` is element `offset + sum(i[k] * strides[k])` of
        this tensor flattened in C order (PyTorch's `as_strided` on contiguous storage)."""
        shape = check_shape(shape)
        strides = check_shape(strides, "strides")
        offset = operator.index(offset)
        if len(strides) != len(shape):
            raise ShapeError(f"as_strided: {len(strides)} strides for a shape of rank {len(shape)}")
        if product(shape) and (offset < 0 or offset + builtins.sum(
                (n - 1) * s for n, s in zip(shape, strides)) >= self.size):
            raise ShapeError(f"as_strided: shape {shape}, strides {strides} and offset {offset} reach "
                             f"past the {self.size} elements of a tensor of shape {self._shape}")
        flat = self.reshape(-1)

        def fn(vs):
            if not product(shape):
                return [ex.Const(0, dt.INDEX)]
            index = ex.Const(offset, dt.INDEX)
            for v, n, s in zip(vs, shape, strides):
                if n != 1 and s:
                    index = index + (v if s == 1 else v * s)
            return [index]

        return flat._view(shape, fn)

    def __getitem__(self, key):
        self._check_live("indexing")
        if not isinstance(key, tuple):
            key = (key,)
        items = []
        for k in key:
            if k is None or k is Ellipsis or isinstance(k, slice):
                items.append(k)
            elif isinstance(k, (bool, np.bool_)):
                raise UnsupportedError("indexing with a bool scalar (advanced indexing) is not supported")
            elif isinstance(k, (int, np.integer)) or (isinstance(k, np.ndarray) and k.ndim == 0
                                                       and k.dtype.kind in "iu"):
                items.append(int(k))
            elif isinstance(k, (Tensor, np.ndarray, list)):
                raise UnsupportedError(f"advanced (array) indexing with {type(k).__name__} is not "
                                       "supported; use ints, slices, None and ...")
            else:
                raise UnsupportedError(f"unsupported index {k!r} of type {type(k).__name__}")
        n_ell = sum(1 for k in items if k is Ellipsis)
        if n_ell > 1:
            raise ShapeError("an index can only have a single ellipsis ('...')")
        consumed = sum(1 for k in items if k is not None and k is not Ellipsis)
        if consumed > self.ndim:
            raise IndexOutOfRangeError(f"too many indices for tensor of shape {self._shape}: "
                                       f"{consumed} were indexed")
        if n_ell:
            pos = items.index(Ellipsis)
            items[pos:pos + 1] = [slice(None)] * (self.ndim - consumed)
        else:
            items += [slice(None)] * (self.ndim - consumed)
        # plan: for each input axis an (int) or (slice start, step) bound to an output axis
        shape = []
        plan = []  # entries: ("int", value) | ("slice", start, step, out_axis); None-axes add output dims
        dim = 0
        for k in items:
            if k is None:
                shape.append(1)
                continue
            n = self._shape[dim]
            if isinstance(k, int):
                if not -n <= k < n:
                    raise IndexOutOfRangeError(f"index {k} is out of bounds for axis {dim} with size {n} "
                                               f"(tensor of shape {self._shape})")
                plan.append(("int", k % n))
            else:
                start, stop, step = k.indices(n)
                length = len(range(start, stop, step))
                plan.append(("slice", start, step, len(shape)))
                shape.append(length)
            dim += 1
        if tuple(shape) == self._shape and all(p[0] == "slice" and p[1] == 0 and p[2] == 1 for p in plan):
            return self

        def fn(vs):
            idx = []
            for p in plan:
                if p[0] == "int":
                    idx.append(ex.Const(p[1], dt.INDEX))
                else:
                    _, start, step, ax = p
                    v = vs[ax]
                    e = v if step == 1 else v * step
                    idx.append(e + start if start else e)
            return idx

        return self._view(tuple(shape), fn)

    # ------------------------------------------------------------------ elementwise
    def __add__(self, o):
        return _binop("add", self, o)

    def __radd__(self, o):
        return _binop("add", o, self)

    def __sub__(self, o):
        return _binop("sub", self, o)

    def __rsub__(self, o):
        return _binop("sub", o, self)

    def __mul__(self, o):
        return _binop("mul", self, o)

    def __rmul__(self, o):
        return _binop("mul", o, self)

    def __truediv__(self, o):
        return _binop("div", self, o)

    def __rtruediv__(self, o):
        return _binop("div", o, self)

    def __pow__(self, o, mod=None):
        if mod is not None:
            raise UnsupportedError("pow() with a modulus is not supported")
        return _binop("pow", self, o)

    def __rpow__(self, o):
        return _binop("pow", o, self)

    def __neg__(self):
        return _unop("neg", self)

    def __pos__(self):
        return self

    def __abs__(self):
        return _unop("abs", self)

    def __invert__(self):
        return _unop("not", self, label="invert")

    def __and__(self, o):
        return _binop("and", self, o)

    def __rand__(self, o):
        return _binop("and", o, self)

    def __or__(self, o):
        return _binop("or", self, o)

    def __ror__(self, o):
        return _binop("or", o, self)

    def __xor__(self, o):
        return _binop("xor", self, o)

    def __rxor__(self, o):
        return _binop("xor", o, self)

    def __lt__(self, o):
        return _binop("lt", self, o)

    def __le__(self, o):
        return _binop("le", self, o)

    def __gt__(self, o):
        return _binop("gt", self, o)

    def __ge__(self, o):
        return _binop("ge", self, o)

    def __eq__(self, o):
        return _binop("eq", self, o)

    def __ne__(self, o):
        return _binop("ne", self, o)

    def __matmul__(self, o):
        return matmul(self, o)

    def __rmatmul__(self, o):
        return matmul(o, self)

    def __floordiv__(self, o): return _rounding_division("floor_divide", self, o)  # noqa: E704
    def __rfloordiv__(self, o): return _rounding_division("floor_divide", o, self)  # noqa: E704
    def __mod__(self, o): return _rounding_division("remainder", self, o)  # noqa: E704
    def __rmod__(self, o): return _rounding_division("remainder", o, self)  # noqa: E704

    __divmod__ = __rdivmod__ = _unsupported_op("divmod")
    __lshift__ = __rlshift__ = __rshift__ = __rrshift__ = _unsupported_op("shift")

    def astype(self, dtype, copy=True):
        d = dt.dtype(dtype)
        self._check_live("astype")
        if d == self._dt:
            return self
        return map_elementwise(f"astype({d})", lambda x: ex.cast(x, d), self)

    # ------------------------------------------------------------------ reductions
    def _reduce(self, combiner, axis, keepdims, acc: DType | None, short: str):
        self._check_live(short)
        axes = normalize_axes(axis, self.ndim)
        if combiner in ("max", "min"):
            empty = [a for a in axes if self._shape[a] == 0]
            if empty:
                raise ShapeError(f"{short}: zero-size reduction over axis {empty[0]} of shape "
                                 f"{self._shape} has no identity")
        kept = [k for k in range(self.ndim) if k not in axes]
        out_shape = tuple(self._shape[k] for k in kept)
        ivars = index_vars(len(kept))
        rvars = index_vars(len(axes), "r")
        ranges = {**var_ranges(ivars, out_shape), **var_ranges(rvars, [self._shape[a] for a in axes])}
        idx = [None] * self.ndim
        for v, k in zip(ivars, kept):
            idx[k] = v
        for v, k in zip(rvars, axes):
            idx[k] = v
        value = ex.cast(self._load(idx, ranges), acc or self._dt)
        if axes:
            body = ex.Reduce(combiner, value, rvars, [self._shape[a] for a in axes])
        else:
            body = value
        full = short if axis is None else f"{short}(axis={axis!r})"
        result = self._tr.compute(out_shape, ivars, body, op_label(short, full))
        if keepdims:
            result = result.reshape(tuple(1 if k in axes else n for k, n in enumerate(self._shape)))
        return result

    def sum(self, axis=None, dtype=None, keepdims=False):
        """numpy's sum: bool and integers accumulate (and result) in int64."""
        if dtype is not None:
            acc = dt.dtype(dtype)
        else:
            acc = dt.int64 if (self._dt.is_int or self._dt.is_bool) else self._dt
        return self._reduce("sum", axis, keepdims, acc, "sum")

    def max(self, axis=None, keepdims=False):
        return self._reduce("max", axis, keepdims, None, "max")

    def min(self, axis=None, keepdims=False):
        return self._reduce("min", axis, keepdims, None, "min")

    def prod(self, axis=None, keepdims=False):
        acc = dt.int64 if (self._dt.is_int or self._dt.is_bool) else self._dt
        return self._reduce("prod", axis, keepdims, acc, "prod")

    def _mean_dtypes(self):
        out = self._dt if self._dt.is_float else dt.float64
        return out, dt.compute_dtype(out)

    def _count(self, axis) -> int:
        return product(self._shape[a] for a in normalize_axes(axis, self.ndim))

    def mean(self, axis=None, keepdims=False):
        """numpy's mean: integers and bool give float64; 16-bit floats sum in float32."""
        out, acc = self._mean_dtypes()
        n = self._count(axis)
        with scope("mean"):
            s = self._reduce("sum", axis, keepdims, acc, "sum")
            return map_elementwise("div", lambda x: ex.cast(elem_binary("div", x, n), out), s)

    def _sum_sq_dev(self, axis, keepdims):
        """sum((x - mean(x))**2) in the accumulation dtype."""
        out, acc = self._mean_dtypes()
        n = self._count(axis)
        s = self._reduce("sum", axis, True, acc, "sum")
        d = self - s / n
        return (d * d).sum(axis, keepdims=keepdims), out

    def var(self, axis=None, ddof=0, keepdims=False):
        """numpy's var (biased for ddof=0), computed as numpy does: mean, deviations, mean of squares."""
        denom = builtins.max(self._count(axis) - ddof, 0)
        with scope("var"):
            s, out = self._sum_sq_dev(axis, keepdims)
            return map_elementwise("div", lambda x: ex.cast(elem_binary("div", x, denom), out), s)

    def std(self, axis=None, ddof=0, keepdims=False):
        denom = builtins.max(self._count(axis) - ddof, 0)
        with scope("std"):
            s, out = self._sum_sq_dev(axis, keepdims)
            return map_elementwise(
                "sqrt", lambda x: ex.cast(elem_unary("sqrt", elem_binary("div", x, denom)), out), s)

    # ------------------------------------------------------------------ numpy protocols
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        name = getattr(ufunc, "__name__", str(ufunc))
        if method != "__call__" or kwargs:
            raise UnsupportedError(f"numpy.{name}.{method}{' with ' + ', '.join(kwargs) if kwargs else ''} "
                                   "is not supported on traced tensors")
        fn = self.UFUNCS.get(name)
        if fn is None:
            raise UnsupportedError(f"numpy.{name} is not supported on traced tensors")
        return fn(*inputs)

    def __array_function__(self, func, types, args, kwargs):
        name = getattr(func, "__name__", str(func))
        fn = self.ARRAY_FUNCTIONS.get(name)
        if fn is None:
            raise UnsupportedError(f"numpy.{name} is not supported on traced tensors")
        return fn(*args, **kwargs)


# ============================================================================ matmul

def matmul(a, b):
    """numpy.matmul on traced tensors: one ComputeOp with a sum over the contracted axis."""
    for o in (a, b):
        if not isinstance(o, Tensor):
            _check_operand(o, "matmul")
            raise UnsupportedError(f"matmul: operands must be tensors, got {type(o).__name__}")
    tr = common_trace([a, b], "matmul")
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"matmul: operands must be at least 1-D, got shapes {a.shape} and {b.shape}")
    ash = a.shape if a.ndim >= 2 else (1,) + a.shape
    bsh = b.shape if b.ndim >= 2 else b.shape + (1,)
    k = ash[-1]
    if bsh[-2] != k:
        raise ShapeError(f"matmul: contracted dimensions differ for shapes {a.shape} and {b.shape} "
                         f"({k} != {bsh[-2]})")
    batch = broadcast_shapes(ash[:-2], bsh[:-2], what=f"matmul of shapes {a.shape} and {b.shape}")
    out_shape = batch + ((ash[-2],) if a.ndim >= 2 else ()) + ((bsh[-1],) if b.ndim >= 2 else ())
    ivars = index_vars(len(out_shape))
    bvars = ivars[:len(batch)]
    rest = ivars[len(batch):]
    r = ex.Var("r0")
    ranges = {**var_ranges(ivars, out_shape), r.name: (0, builtins.max(0, k - 1))}

    def batch_idx(t):
        nb = t.ndim - 2
        off = len(batch) - nb
        return [ex.Const(0, dt.INDEX) if t.shape[j] == 1 and batch[off + j] != 1 else bvars[off + j]
                for j in range(nb)]

    if a.ndim >= 2:
        a_idx = batch_idx(a) + [rest[0], r]
    else:
        a_idx = [r]
    if b.ndim >= 2:
        b_idx = batch_idx(b) + [r, rest[-1]]
    else:
        b_idx = [r]
    d = promote(a._dt, b._dt)
    la = ex.cast(a._load(a_idx, ranges), d)
    lb = ex.cast(b._load(b_idx, ranges), d)
    if d.is_bool:
        body = ex.Reduce("max", ex.Binary("and", la, lb), [r], [k]) if k else const(False, d)
    else:
        body = ex.Reduce("sum", ex.Binary("mul", la, lb), [r], [k])
    return tr.compute(out_shape, ivars, body, op_label("matmul"))


def describe(v) -> str:
    text = repr(v)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(v).__name__} {text}"
