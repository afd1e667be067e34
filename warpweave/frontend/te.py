"""Tensor expressions, in the style of TVM's `te`.

    A = ww.placeholder((n, m), "float32", name="A")
    k = ww.reduce_axis(m, name="k")
    B = ww.compute((n,), lambda i: ww.sum(A[i, k] * A[i, k], axis=k), name="B")
    graph = build_graph(B, [A])

`compute(shape, fn)` calls `fn` with one index variable per output dimension; `fn`
returns a value expression built from loads (`A[i, j]`), Python scalars, operators
(numpy promotion; Python scalars are weak), the elementwise functions of `ww`
(`ww.exp`, `ww.where`, ...) and, only at the root, one reducer (`ww.sum`, `ww.max`,
`ww.min`) over reduce axes. Reducers keep the value's dtype (as in TVM; numpy's
sum would widen integers to int64). Index variables support `+ - * // %` with
ints (index arithmetic: `//` and `%` assume non-negative operands).

`ww.sum`, `ww.max` and `ww.min` also work on traced tensors (as `x.sum(...)` etc.).
"""
from __future__ import annotations

import inspect
import itertools
import threading

import numpy as np

from ..errors import ArgumentError, DTypeError, ShapeError, UnsupportedError
from ..ir import dtypes as dt
from ..ir import expr as ex
from ..ir.simplify import int_problems
from ..ir.tensor import ComputeOp, Placeholder, TensorGraph
from .algebra import as_scalar, check_shape, const, elem_binary, elem_cast, elem_unary, promote
from .tensor import Tensor

__all__ = ["placeholder", "reduce_axis", "compute", "sum", "max", "min", "build_graph",
           "TeTensor", "Value", "IndexVar", "ReduceAxis", "map_values"]

_ids = itertools.count()
_state = threading.local()


def _depth() -> int:
    return getattr(_state, "depth", 0)


def _merge_deps(*values) -> tuple:
    out = {}
    for v in values:
        if isinstance(v, Value):
            for d in v.deps:
                out[id(d)] = d
    return tuple(out.values())


def _operand(x, what):
    """The Expr or scalar a Value operator works on."""
    if isinstance(x, Value):
        if isinstance(x.expr, ex.Reduce):
            raise UnsupportedError(f"{what}: a reducer (ww.sum/ww.max/ww.min) may only be the whole "
                                   "body of ww.compute, not an operand; compute it into its own tensor "
                                   "and use that tensor instead")
        return x.expr
    s = as_scalar(x)
    if s is not None:
        return s
    if isinstance(x, TeTensor):
        raise UnsupportedError(f"{what}: tensor {x.name} must be indexed (e.g. {x.name}[i])")
    if isinstance(x, Tensor):
        raise UnsupportedError(f"{what}: traced tensors and tensor-expression values cannot be mixed")
    raise UnsupportedError(f"{what}: unsupported operand of type {type(x).__name__}: {x!r}")


def map_values(fn, *args) -> "Value":
    """`fn` of the expressions of Values (and scalars) as a new Value."""
    exprs = [_operand(a, getattr(fn, "__name__", "expression")) for a in args]
    out = fn(*exprs)
    if not isinstance(out, ex.Expr):
        out = const(out, dt.python_scalar_dtype(out))
    return Value(out, _merge_deps(*args))


def _bin(op):
    def f(self, other):
        if isinstance(other, (np.ndarray, list, tuple)):
            raise UnsupportedError(f"{op}: arrays cannot be operands of tensor expressions")
        if not isinstance(other, Value) and as_scalar(other) is None:
            return NotImplemented
        return map_values(lambda a, b: elem_binary(op, a, b), self, other)
    return f


def _rbin(op):
    def f(self, other):
        if not isinstance(other, Value) and as_scalar(other) is None:
            return NotImplemented
        return map_values(lambda a, b: elem_binary(op, a, b), other, self)
    return f


def _index_arith(op, reflected=False):
    def f(self, other):
        if not isinstance(other, Value) and as_scalar(other) is None:
            return NotImplemented
        a, b = (other, self) if reflected else (self, other)

        def g(x, y):
            d = promote(x, y)
            if not d.is_int:
                raise UnsupportedError(f"{'//' if op == 'floordiv' else '%'} is only for integer index "
                                       f"arithmetic, got {d}")
            return ex.Binary(op, elem_cast(x, d), elem_cast(y, d))
        return map_values(g, a, b)
    return f


class Value:
    """A scalar expression inside a tensor expression (a load, an index, arithmetic)."""

    __slots__ = ("expr", "deps")
    __array_priority__ = 1000

    def __init__(self, expr: ex.Expr, deps: tuple = ()):
        self.expr = expr
        self.deps = deps

    @property
    def dtype(self) -> np.dtype:
        return self.expr.dtype.numpy

    def __repr__(self):
        return f"Value({self.expr}: {self.expr.dtype})"

    __hash__ = object.__hash__

    def __bool__(self):
        raise UnsupportedError("the truth value of a tensor expression is not known when it is built; "
                               "use ww.where(cond, a, b) instead of Python if/and/or")

    def astype(self, dtype) -> "Value":
        d = dt.dtype(dtype)
        return map_values(lambda a: elem_cast(a, d), self)

    __add__, __radd__ = _bin("add"), _rbin("add")
    __sub__, __rsub__ = _bin("sub"), _rbin("sub")
    __mul__, __rmul__ = _bin("mul"), _rbin("mul")
    __truediv__, __rtruediv__ = _bin("div"), _rbin("div")
    __pow__, __rpow__ = _bin("pow"), _rbin("pow")
    __and__, __rand__ = _bin("and"), _rbin("and")
    __or__, __ror__ = _bin("or"), _rbin("or")
    __xor__, __rxor__ = _bin("xor"), _rbin("xor")
    __lt__, __le__, __gt__, __ge__ = _bin("lt"), _bin("le"), _bin("gt"), _bin("ge")
    __eq__, __ne__ = _bin("eq"), _bin("ne")
    __floordiv__, __rfloordiv__ = _index_arith("floordiv"), _index_arith("floordiv", True)
    __mod__, __rmod__ = _index_arith("mod"), _index_arith("mod", True)

    def __neg__(self):
        return map_values(lambda a: elem_unary("neg", a), self)

    def __pos__(self):
        return self

    def __abs__(self):
        return map_values(lambda a: elem_unary("abs", a), self)

    def __invert__(self):
        return map_values(lambda a: elem_unary("not", a), self)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        raise UnsupportedError(f"numpy.{ufunc.__name__} cannot be applied to tensor expressions; "
                               "use the ww functions (ww.exp, ww.maximum, ...)")


class IndexVar(Value):
    """An output axis of a compute (the arguments `fn` receives)."""

    __slots__ = ()


class ReduceAxis(Value):
    """A reduction axis: `reduce_axis(extent)`; use it in indices and as `axis=` of a reducer."""

    __slots__ = ("extent", "name")

    def __init__(self, extent: int, name: str):
        super().__init__(ex.Var(f"{name}#{next(_ids)}"))
        self.extent = extent
        self.name = name

    def __repr__(self):
        return f"ReduceAxis({self.name}, extent={self.extent})"


class TeTensor:
    """A placeholder or the result of `compute`."""

    def __init__(self, name, shape, dtype, op=None, deps=(), auto_name=False):
        self.name = name
        self.shape = shape
        self._dt = dtype
        self.op = op  # the ComputeOp of a compute, None for a placeholder
        self.deps = deps
        self.auto_name = auto_name

    @property
    def dtype(self) -> np.dtype:
        return self._dt.numpy

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def is_placeholder(self) -> bool:
        return self.op is None

    def __repr__(self):
        kind = "placeholder" if self.op is None else "compute"
        return f"TeTensor({self.name}: {kind} {self._dt}{list(self.shape)})"

    def __getitem__(self, key) -> Value:
        if not isinstance(key, tuple):
            key = (key,)
        if len(key) != len(self.shape):
            raise ShapeError(f"{self.name} has shape {self.shape} and needs {len(self.shape)} indices, "
                             f"got {len(key)}")
        idx = []
        for k in key:
            if isinstance(k, Value):
                if isinstance(k.expr, ex.Reduce):
                    raise UnsupportedError("a reducer cannot be used as an index")
                if not k.expr.dtype.is_int:
                    raise DTypeError(f"index of {self.name} must be an integer expression, got "
                                     f"{k.expr.dtype}: {k.expr}")
                idx.append(ex.cast(k.expr, dt.INDEX))
            elif isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)):
                idx.append(ex.Const(int(k), dt.INDEX))
            elif isinstance(k, slice) or k is Ellipsis or k is None:
                raise UnsupportedError(f"{self.name}[...]: tensor expressions index element by element; "
                                       "slices, None and ... are not supported")
            else:
                raise DTypeError(f"index of {self.name} must be an int or an index expression, got "
                                 f"{type(k).__name__}: {k!r}")
        deps = _merge_deps(*(k for k in key if isinstance(k, Value)))
        return Value(ex.Load(self.name, idx, self._dt), (self,) + tuple(d for d in deps if d is not self))

    def __array_ufunc__(self, *args, **kwargs):
        raise UnsupportedError(f"numpy functions cannot be applied to tensor-expression tensor {self.name}")

    def __bool__(self):
        return True


def _shape(shape, what) -> tuple[int, ...]:
    return check_shape(shape, what)


def placeholder(shape, dtype="float32", name: str | None = None) -> TeTensor:
    """An input tensor of `shape` and `dtype` (anything `ww` accepts as a dtype)."""
    auto = name is None
    if auto:
        name = f"placeholder{next(_ids)}"
    elif not isinstance(name, str) or not name:
        raise ArgumentError(f"placeholder name must be a non-empty string, got {name!r}")
    return TeTensor(name, _shape(shape, f"shape of placeholder {name}"), dt.dtype(dtype),
                    auto_name=auto)


def reduce_axis(extent, name: str | None = None) -> ReduceAxis:
    """A reduction axis ranging over 0 .. extent-1."""
    if isinstance(extent, (tuple, list)) and len(extent) == 2:  # TVM's (0, n) form
        lo, hi = extent
        if lo != 0:
            raise UnsupportedError(f"reduce_axis: only ranges starting at 0 are supported, got {extent}")
        extent = hi
    try:
        import operator
        extent = operator.index(extent)
    except TypeError:
        raise ShapeError(f"reduce_axis: extent must be an int, got {extent!r}") from None
    if extent < 0:
        raise ShapeError(f"reduce_axis: negative extent {extent}")
    return ReduceAxis(extent, name or "k")


def _reducer(combiner: str, value, axis) -> Value:
    if _depth() == 0:
        raise UnsupportedError(f"ww.{combiner}(expr, axis=...) on a tensor expression is a reducer: it may "
                               "only be used as the body of ww.compute")
    if axis is None:
        raise UnsupportedError(f"ww.{combiner}: a reducer needs axis=<reduce_axis> (or a tuple of them)")
    axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    if not axes or not all(isinstance(a, ReduceAxis) for a in axes):
        raise UnsupportedError(f"ww.{combiner}: axis must be reduce axes made with ww.reduce_axis, "
                               f"got {axis!r}")
    if len({id(a) for a in axes}) != len(axes):
        raise UnsupportedError(f"ww.{combiner}: the same reduce axis appears twice in {axis!r}")
    body = _operand(value, f"ww.{combiner}")
    if not isinstance(body, ex.Expr):
        body = const(body, dt.python_scalar_dtype(body))
    if combiner in ("max", "min"):
        empty = [a.name for a in axes if a.extent == 0]
        if empty:
            raise ShapeError(f"ww.{combiner} over the empty reduce axis {empty[0]} has no identity")
    red = ex.Reduce(combiner, body, [a.expr for a in axes], [a.extent for a in axes])
    return Value(red, _merge_deps(value))


def _dispatch(combiner, x, axis, keepdims, kwargs):
    if isinstance(axis, (Tensor, TeTensor)) or (isinstance(axis, Value)
                                                    and not isinstance(axis, (ReduceAxis, IndexVar))):
        hint = "add with +" if combiner == "sum" else f"use ww.{combiner}imum"
        raise UnsupportedError(f"ww.{combiner}(x, axis) reduces over axes, and axis is not an axis; "
                               f"to combine two operands elementwise, {hint}")
    if isinstance(x, Tensor):
        return getattr(x, combiner)(axis=axis, keepdims=keepdims, **kwargs)
    if kwargs or keepdims:
        raise UnsupportedError(f"ww.{combiner} as a reducer takes only (expr, axis=...)")
    if isinstance(x, (Value, int, float)) and not isinstance(x, bool) or isinstance(x, np.generic):
        return _reducer(combiner, x, axis)
    if isinstance(x, TeTensor):
        raise UnsupportedError(f"ww.{combiner}: index the tensor inside ww.compute, e.g. "
                               f"ww.{combiner}({x.name}[i, k], axis=k)")
    raise UnsupportedError(f"ww.{combiner} was called with a {type(x).__name__}; it works on traced "
                           "tensors inside a function compiled with ww.jit, or as a reducer inside "
                           "ww.compute")


def sum(x, axis=None, keepdims=False, **kwargs):
    """Sum: a reducer inside ww.compute (`ww.sum(expr, axis=k)`), or numpy's sum of a traced tensor."""
    return _dispatch("sum", x, axis, keepdims, kwargs)


def max(x, axis=None, keepdims=False, **kwargs):
    """Max: a reducer inside ww.compute (`ww.max(expr, axis=k)`), or numpy's max of a traced tensor."""
    return _dispatch("max", x, axis, keepdims, kwargs)


def min(x, axis=None, keepdims=False, **kwargs):
    """Min: a reducer inside ww.compute (`ww.min(expr, axis=k)`), or numpy's min of a traced tensor."""
    return _dispatch("min", x, axis, keepdims, kwargs)


def compute(shape, fn, name: str | None = None) -> TeTensor:
    """The tensor `out[i0, i1, ...] = fn(i0, i1, ...)` of `shape`."""
    auto = name is None
    if auto:
        name = f"compute{next(_ids)}"
    elif not isinstance(name, str) or not name:
        raise ArgumentError(f"compute name must be a non-empty string, got {name!r}")
    shape = _shape(shape, f"shape of compute {name}")
    uid = next(_ids)
    tmp = [ex.Var(f"i{k}#{uid}") for k in range(len(shape))]
    args = [IndexVar(v) for v in tmp]
    try:
        inspect.signature(fn).bind(*args)
    except TypeError:
        raise ShapeError(f"compute {name}: shape {shape} has {len(shape)} dimensions but fn "
                         f"{getattr(fn, '__name__', fn)} does not take {len(shape)} index "
                         "arguments") from None
    except ValueError:  # no signature available (builtins): just call it
        pass
    _state.depth = _depth() + 1
    try:
        result = fn(*args)
    finally:
        _state.depth -= 1
    if isinstance(result, (TeTensor, Tensor)) or (not isinstance(result, Value)
                                                     and as_scalar(result) is None):
        raise UnsupportedError(f"compute {name}: fn must return a value expression (e.g. A[i] * 2), "
                               f"got {type(result).__name__}")
    if isinstance(result, Value):
        body, deps = result.expr, result.deps
    else:
        body, deps = const(result, dt.python_scalar_dtype(as_scalar(result))), ()
    inner = body.body if isinstance(body, ex.Reduce) else body
    if any(isinstance(n, ex.Reduce) for n in ex.postorder(inner)):
        raise UnsupportedError(f"compute {name}: a reducer (ww.sum/ww.max/ww.min) may only be the whole "
                               "body, not nested inside another expression or reducer")
    rvars = list(body.axes) if isinstance(body, ex.Reduce) else []
    mapping = {v.name: ex.Var(f"i{k}") for k, v in enumerate(tmp)}
    mapping.update({v.name: ex.Var(f"r{k}") for k, v in enumerate(rvars)})
    stray = ex.free_vars(inner) - set(mapping)
    if stray:
        names = sorted(s.split("#")[0] for s in stray)
        raise UnsupportedError(f"compute {name}: the body uses variables {names} that are neither its own "
                               "index variables nor reduce axes of its reducer (a reduce axis used outside "
                               "ww.sum/max/min, or an index variable of another compute)")
    if isinstance(body, ex.Reduce):
        new_inner = ex.substitute(body.body, mapping)
        body = ex.Reduce(body.combiner, new_inner, [mapping[v.name] for v in rvars], body.extents)
    else:
        body = ex.substitute(body, mapping)
    _check_index_arithmetic(name, body, shape)
    axes = tuple(ex.Var(f"i{k}") for k in range(len(shape)))
    op = ComputeOp(name, shape, body.dtype, axes, body, label=name if not auto else "compute")
    return TeTensor(name, shape, body.dtype, op=op, deps=deps, auto_name=auto)


def _check_index_arithmetic(name: str, body: ex.Expr, shape: tuple[int, ...]) -> None:
    """A ShapeError if integer arithmetic in the body divides by zero or overflows
    for some point of the iteration space (native code would read anything)."""
    extents = list(shape) + (list(body.extents) if isinstance(body, ex.Reduce) else [])
    if 0 in extents:
        return
    ranges = {f"i{k}": (0, n - 1) for k, n in enumerate(shape)}
    if isinstance(body, ex.Reduce):
        ranges.update({v.name: (0, n - 1) for v, n in zip(body.axes, body.extents)})
    problems = int_problems(body.body if isinstance(body, ex.Reduce) else body, ranges)
    if problems:
        raise ShapeError(f"compute {name}: " + "; ".join(problems))


def build_graph(outputs, inputs) -> TensorGraph:
    """The tensor graph computing `outputs` (a tensor or a list) from `inputs` (the
    placeholders in argument order). Computes that no output needs are dropped."""
    single = isinstance(outputs, TeTensor)
    outs = [outputs] if single else list(outputs)
    if not outs:
        raise ArgumentError("build: no outputs")
    for o in outs:
        if not isinstance(o, TeTensor):
            raise ArgumentError(f"build: outputs must be tensors made with ww.placeholder/ww.compute, "
                                f"got {type(o).__name__}")
    ins = list(inputs)
    for p in ins:
        if not isinstance(p, TeTensor) or not p.is_placeholder:
            raise ArgumentError(f"build: inputs must be placeholders, got {p!r}")
    if len({id(p) for p in ins}) != len(ins):
        raise ArgumentError("build: the same placeholder is listed twice in inputs")
    # collect every tensor the outputs depend on, dependencies first
    order: list[TeTensor] = []
    seen: set[int] = set()
    for root in outs:
        stack = [(root, False)]
        while stack:
            t, done = stack.pop()
            if done:
                order.append(t)
                continue
            if id(t) in seen:
                continue
            seen.add(id(t))
            stack.append((t, True))
            for d in reversed(t.deps):
                if id(d) not in seen:
                    stack.append((d, False))
    by_name: dict[str, TeTensor] = {}
    for t in ins + order:
        other = by_name.get(t.name)
        if other is not None and other is not t:
            raise ArgumentError(f"build: two different tensors are named {t.name!r}; names must be unique")
        by_name[t.name] = t
    in_ids = {id(p) for p in ins}
    missing = [t.name for t in order if t.is_placeholder and id(t) not in in_ids]
    if missing:
        raise ArgumentError(f"build: placeholder(s) {missing} are used by the outputs but not listed in "
                            "inputs")
    ops = [Placeholder(p.name, p.shape, p._dt) for p in ins]
    ops += [t.op for t in order if not t.is_placeholder]
    out_names = []
    for o in outs:
        name = o.name
        if o.is_placeholder or name in out_names:
            k = 0
            while f"{o.name}_copy{k}" in by_name:
                k += 1
            name = f"{o.name}_copy{k}"
            axes = tuple(ex.Var(f"i{j}") for j in range(len(o.shape)))
            ops.append(ComputeOp(name, o.shape, o._dt, axes, ex.Load(o.name, axes, o._dt), label="copy"))
            by_name[name] = o
        out_names.append(name)
    return TensorGraph(ops, [p.name for p in ins], out_names)
