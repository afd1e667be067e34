"""Tracing numpy-style functions into a tensor graph.

`trace(fn, specs)` calls `fn` with symbolic `Tensor`s (`frontend.tensor`) and records
every numpy operation it performs as one `ComputeOp` of a `TensorGraph`
(elementwise ops, reductions, matmuls, casts); fusion is a later pass.
"""
from __future__ import annotations



from ..errors import ShapeError, UnsupportedError
from ..ir import dtypes as dt
from ..ir.tensor import ComputeOp, Placeholder, TensorGraph
from .algebra import check_shape
from .tensor import Tensor, Trace, describe, map_elementwise, recording

def trace(fn, specs) -> tuple[TensorGraph, bool]:
    """Trace `fn` on symbolic tensors.

    specs: sequence of (shape tuple, DType) for fn's positional args.
    Returns the graph and `single` (True if fn returned one tensor, False if a tuple/list).
    """
    tr = Trace()
    args = []
    for k, spec in enumerate(specs):
        try:
            shape, dtype = spec
        except (TypeError, ValueError):
            raise ShapeError(f"spec {k} must be a (shape, dtype) pair, got {spec!r}") from None
        args.append(tr.placeholder(f"arg{k}", check_shape(shape, f"shape of argument {k}"),
                                   dt.dtype(dtype)))
    with recording(tr):
        result = fn(*args)
    single = isinstance(result, Tensor)
    if single:
        outs = [result]
    elif isinstance(result, (tuple, list)):
        outs = list(result)
        if not outs:
            raise UnsupportedError(f"{_fn_name(fn)} returned an empty {type(result).__name__}; "
                                   "it must return at least one tensor")
        for k, o in enumerate(outs):
            if not isinstance(o, Tensor):
                raise UnsupportedError(f"{_fn_name(fn)} returned a {type(result).__name__} whose item {k} "
                                       f"is {describe(o)}, not a tensor; only tensors can be returned")
    else:
        raise UnsupportedError(f"{_fn_name(fn)} returned {describe(result)}; a traced function must "
                               "return a tensor or a tuple/list of tensors")
    for o in outs:
        if o._tr is not tr:
            raise UnsupportedError(f"{_fn_name(fn)} returned a tensor of another trace")
    names = []
    for o in outs:
        if o.is_view or isinstance(tr.ops[o._base], Placeholder) or o._base in names:
            o = map_elementwise("copy", lambda x: x, o)
        names.append(o._base)
    tr.closed = True
    # drop operations no output depends on
    live = set()
    stack = list(names)
    while stack:
        n = stack.pop()
        if n in live:
            continue
        live.add(n)
        op = tr.ops[n]
        if isinstance(op, ComputeOp):
            stack.extend(op.inputs)
    ops = [op for name, op in tr.ops.items() if isinstance(op, Placeholder) or name in live]
    graph = TensorGraph(ops, [f"arg{k}" for k in range(len(args))], names)
    return graph, single


def _fn_name(fn) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
