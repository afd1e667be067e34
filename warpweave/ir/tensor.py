"""The tensor graph: a DAG of tensor operations defined by index expressions.

A `ComputeOp` maps its output indices (`axes`) to a scalar expression over loads
of other tensors; a `Reduce` at the root of the body makes it a reduction.
Views (reshape, transpose, broadcast, slice) never appear here: the frontends
fold them into the index expressions of the loads. An index expression may itself
load an integer tensor (a gather: `out[n, d] = W[i[n], d]`); such an index must
lie in its axis — reference evaluators raise IndexOutOfRangeError where it does
not, compiled code clamps it into the axis (it never reads outside the tensor).
"""
from __future__ import annotations

from dataclasses import dataclass
import heapq
from functools import cached_property
from typing import TYPE_CHECKING, Mapping

import numpy as np

from ..errors import IndexOutOfRangeError, IRError, ShapeError
from . import dtypes as dt
from . import expr as ex
from . import simplify as sx
from .dtypes import DType

if TYPE_CHECKING:
    import networkx as nx

EXPENSIVE_OPS = frozenset({"exp", "log", "tanh", "sqrt", "rsqrt", "sin", "cos", "erf",
                           "sigmoid", "div", "pow"})


@dataclass(frozen=True)
class Placeholder:
    """A program input."""

    name: str
    shape: tuple[int, ...]
    dtype: DType

    def __post_init__(self):
        check_elements(f"shape of placeholder {self.name}", self.shape)

    def __str__(self):
        return f"{self.name} = placeholder({list(self.shape)}, {self.dtype})"


INT64_MAX = (1 << 63) - 1


def check_elements(what: str, shape) -> None:
    """A ShapeError if `shape` (`what`, e.g. "shape of A") has more elements than
    int64 indexes count."""
    count = 1
    for n in shape:
        count *= int(n)
    if count > INT64_MAX:
        raise ShapeError(f"{what} {tuple(shape)} has {count} elements, more than "
                         f"int64 indexing allows ({INT64_MAX})")


def row_major_strides(shape) -> tuple[int, ...]:
    """C-contiguous element strides of `shape` (as PyTorch gives them, empty axes too)."""
    strides, acc = [], 1
    for n in reversed(shape):
        strides.append(acc)
        acc *= max(n, 1)
    return tuple(reversed(strides))


def _transposed(ld: ex.Load, axes: tuple[str, ...]) -> bool:
    """Whether the load walks memory along an output axis other than the last: its
    innermost index follows another axis while the last axis moves it by rows (or,
    in one flat index, by a stride other than 1)."""
    if len(axes) < 2 or not ld.indices:
        return False
    last, inner = axes[-1], ld.indices[-1]
    used = ex.free_vars(inner)
    if last not in used:
        return any(last in ex.free_vars(i) for i in ld.indices[:-1]) and any(a in used for a in axes[:-1])
    step = sx.stride(inner, last)
    return step not in (0, 1, None) and any(sx.stride(inner, a) == 1 for a in axes[:-1])


@dataclass(frozen=True)
class ComputeOp:
    """`name[axes] = body` over `shape`; `label` names the source operation in dumps."""

    name: str
    shape: tuple[int, ...]
    dtype: DType
    axes: tuple[ex.Var, ...]
    body: ex.Expr
    label: str = ""

    def __post_init__(self):
        if len(self.axes) != len(self.shape):
            raise IRError(f"{self.name}: {len(self.axes)} axes for a rank-{len(self.shape)} shape")
        if any(s < 0 for s in self.shape):
            raise ShapeError(f"{self.name}: negative extent in shape {self.shape}")
        reduced = self.body.extents if isinstance(self.body, ex.Reduce) else ()
        check_elements(f"{'iteration space' if reduced else 'shape'} of {self.name}", (*self.shape, *reduced))
        inner = self.body.body if isinstance(self.body, ex.Reduce) else self.body
        if any(isinstance(n, ex.Reduce) for n in ex.postorder(inner)):
            raise IRError(f"{self.name}: a reduction may only be the root of a compute body")
        allowed = {a.name for a in self.axes} | {a.name for a in self.reduce_axes}
        stray = ex.free_vars(inner) - allowed
        if stray:
            raise IRError(f"{self.name}: body uses unknown variables {sorted(stray)}")

    @property
    def reduce(self) -> ex.Reduce | None:
        return self.body if isinstance(self.body, ex.Reduce) else None

    @property
    def reduce_axes(self) -> tuple[ex.Var, ...]:
        return self.body.axes if isinstance(self.body, ex.Reduce) else ()

    @property
    def value(self) -> ex.Expr:
        """The body under the reduction (the body itself for non-reductions)."""
        return self.body.body if isinstance(self.body, ex.Reduce) else self.body

    @cached_property
    def loads(self) -> tuple[ex.Load, ...]:
        """The loads of the body (an operation is immutable: walked once)."""
        return tuple(ex.loads(self.value))

    @cached_property
    def inputs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(ld.tensor for ld in self.loads))

    @cached_property
    def kind(self) -> str:
        """For planning: elementwise, elementwise-expensive, broadcast, layout,
        reduction-row, reduction-column or contraction."""
        axes = tuple(a.name for a in self.axes)
        lds = ex.loads(self.value)
        if self.reduce is not None:
            red = {a.name for a in self.reduce_axes}
            if self.reduce.combiner == "sum" and len(lds) == 2 and all(
                    red <= ex.free_vars(ld) and (ex.free_vars(ld) - red) for ld in lds):
                others = [ex.free_vars(ld) - red for ld in lds]
                if not (others[0] & others[1]) and len(red) == 1:
                    return "contraction"
            for ld in lds:
                if ld.indices and red & ex.free_vars(ld.indices[-1]):
                    return "reduction-row"
            return "reduction-column"
        if any(_transposed(ld, axes) for ld in lds):
            return "layout"
        if any(len(ex.free_vars(ld)) < len(axes) for ld in lds):
            return "broadcast"
        heavy = any(isinstance(n, (ex.Unary, ex.Binary)) and n.op in EXPENSIVE_OPS
                    for n in ex.postorder(self.value))
        return "elementwise-expensive" if heavy else "elementwise"

    def __str__(self):
        return self.text()

    def text(self, labels: bool = True) -> str:
        """The operation in one line; `labels=False` leaves out the source operation's
        name, so operations that differ only in where they came from read the same."""
        idx = ", ".join(a.name for a in self.axes)
        label = f"  # {self.label}" if self.label and labels else ""
        return (f"{self.name}[{idx}] = {self.body}   "
                f": {self.dtype}{list(self.shape)} {self.kind}{label}")


Op = Placeholder | ComputeOp


class TensorGraph:
    """Placeholders, compute operations in definition order, and the outputs."""

    def __init__(self, ops: Mapping[str, Op] | list[Op], inputs: list[str], outputs: list[str]):
        ops = list(ops.values()) if isinstance(ops, Mapping) else list(ops)
        self._ops = {op.name: op for op in ops}
        if len(self._ops) != len(ops):
            raise IRError("tensor graph has two operations with one name")
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        for name in self.inputs:
            if not isinstance(self._ops.get(name), Placeholder):
                raise IRError(f"input {name!r} is not a placeholder of the graph")
        for name in self.outputs:
            if name not in self._ops:
                raise IRError(f"output {name!r} is not an operation of the graph")
        for op in ops:
            if isinstance(op, ComputeOp):
                for ld in op.loads:
                    src = self._ops.get(ld.tensor)
                    if src is None:
                        raise IRError(f"{op.name} loads unknown tensor {ld.tensor!r}")
                    if len(ld.indices) != len(src.shape):
                        raise IRError(f"{op.name} indexes rank-{len(src.shape)} {ld.tensor} "
                                      f"with {len(ld.indices)} indices")
        self._consumers: dict[str, list[str]] = {name: [] for name in self._ops}
        for op in ops:
            if isinstance(op, ComputeOp):
                for src in dict.fromkeys(op.inputs):
                    self._consumers[src].append(op.name)
        self._topological = self._sort()

    def _sort(self) -> list[str]:
        """Names in topological order, earliest defined first among the ready ones;
        IRError on a cycle. (Plain Python: importing networkx costs more than this.)"""
        position = {name: k for k, name in enumerate(self._ops)}
        waiting = {name: len(set(op.inputs)) if isinstance(op, ComputeOp) else 0
                   for name, op in self._ops.items()}
        ready = [(position[n], n) for n, count in waiting.items() if count == 0]
        heapq.heapify(ready)
        order = []
        while ready:
            _, name = heapq.heappop(ready)
            order.append(name)
            for c in self._consumers[name]:
                waiting[c] -= 1
                if waiting[c] == 0:
                    heapq.heappush(ready, (position[c], c))
        if len(order) != len(self._ops):
            raise IRError("tensor graph has a cycle")
        return order

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("graph", None)  # the networkx view is rebuilt on use
        return state

    @property
    def ops(self) -> Mapping[str, Op]:
        return dict(self._ops)

    def __getitem__(self, name: str) -> Op:
        return self._ops[name]

    @cached_property
    def graph(self) -> nx.DiGraph:
        import networkx as nx

        g = nx.DiGraph()
        for name, op in self._ops.items():
            g.add_node(name, op=op)
        for name, op in self._ops.items():
            if isinstance(op, ComputeOp):
                for src in op.inputs:
                    g.add_edge(src, name)
        return g

    @property
    def compute_ops(self) -> list[ComputeOp]:
        """Compute operations in a topological order."""
        return [self._ops[n] for n in self._topological if isinstance(self._ops[n], ComputeOp)]

    def consumers(self, name: str) -> list[str]:
        return list(self._consumers[name])

    def __str__(self):
        return self.text()

    def text(self, labels: bool = True) -> str:
        """One line per operation, inputs first; `labels=False`: see `ComputeOp.text`."""
        lines = [str(self._ops[n]) for n in self.inputs]
        lines += [op.text(labels) for op in self.compute_ops]
        lines.append(f"outputs: {', '.join(self.outputs)}")
        return "\n".join(lines)


def _combine(combiner: str, values: np.ndarray, axes: tuple[int, ...]):
    fn = {"sum": np.sum, "max": np.max, "min": np.min, "prod": np.prod}[combiner]
    if values.size == 0 and combiner in ("max", "min"):
        raise ShapeError(f"{combiner} over an empty axis has no identity")
    return fn(values, axis=axes)


def _check_data_indices(op: ComputeOp, load: ex.Load, idx, shape) -> None:
    """IndexOutOfRangeError where an index of `load` that reads a tensor leaves its
    axis (index arithmetic of the iteration variables stays in range by construction)."""
    for k, (e, i) in enumerate(zip(load.indices, idx)):
        if ex.loads(e):
            bad = (i < 0) | (i >= shape[k])
            if bad.any():
                raise IndexOutOfRangeError(
                    f"{op.label or op.name}: index {int(i[bad].flat[0])} is out of bounds for axis {k} "
                    f"of {load.tensor} with size {shape[k]}")


def evaluate(graph: TensorGraph, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Reference semantics of a tensor graph, computed with numpy: 16-bit floats in
    float32, every operation's result rounded to its dtype. Returns every tensor.
    An index that reads a tensor (a gather's) must lie in its axis: IndexOutOfRangeError
    names the operation, the index and the axis's size where one does not."""
    values: dict[str, np.ndarray] = {n: np.asarray(inputs[n]) for n in graph.inputs}
    for op in graph.compute_ops:
        axes = [a.name for a in op.axes] + [a.name for a in op.reduce_axes]
        extents = list(op.shape) + list(op.reduce.extents if op.reduce else ())
        env = {}
        for k, (name, n) in enumerate(zip(axes, extents)):
            shape = [1] * len(axes)
            shape[k] = n
            env[name] = np.arange(n, dtype=np.int64).reshape(shape)

        def load(node, idx, _values=values, _op=op):
            src = _values[node.tensor]
            idx = np.broadcast_arrays(*[np.asarray(i, dtype=np.int64) for i in idx]) if idx else ()
            _check_data_indices(_op, node, idx, src.shape)
            out = src[tuple(idx)] if idx else src[()]
            return np.asarray(out).astype(dt.compute_dtype(node.dtype).numpy)

        full = tuple(extents)
        v = ex.evaluate(op.value, env, load)
        v = np.broadcast_to(np.asarray(v), full)
        if op.reduce is not None:
            red = tuple(range(len(op.shape), len(extents)))
            v = _combine(op.reduce.combiner, v, red)
        values[op.name] = np.asarray(v).astype(op.dtype.numpy).reshape(op.shape)
    return values
