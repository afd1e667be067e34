"""Memory order of a program's intermediates.

A program whose outputs PyTorch lays out as a permutation of their logical axes —
channels-last activations, `[n, c, h, w]` stored as `[n, h, w, c]` — writes each
such output as a permuted copy of the value it computes (`out[n, h, w, c] =
x[n, c, h, w]`). Computed in logical order, every intermediate of that rank lies the
other way round: the channels-last input is read across its channels, the
intermediates are written row-major, and the copy is a transpose (ResNet-50's batch
norm, ReLU and max pool on the H200, 2026-12-03: one pass became three).

`follow_output_layout` stores every intermediate of that rank in the outputs' order
instead: an operation keeps its body and its axis variables, listed in the new order
(its shape with them), and every load of it takes its indices in that order, so no
value changes. Each output then reads its value in place: a copy the fusion planner
fuses with its producer, which the output's kernel computes directly.
"""
from __future__ import annotations

import math

from ..ir import expr as ex
from ..ir.scatter import match_scatter
from ..ir.tensor import ComputeOp, TensorGraph


def follow_output_layout(graph: TensorGraph) -> TensorGraph:
    """`graph` with its intermediates of the rank of its permuted outputs stored in
    their permutation, where every output of that rank is the same permutation of an
    intermediate and it moves the innermost axis, and no operation reduces long rows
    along the innermost axis; else `graph` itself."""
    found = _output_permutation(graph)
    if found is None or any(_row_reduction(op) for op in graph.compute_ops):
        return graph
    rank, order = found
    outputs = set(graph.outputs)
    moved = {op.name for op in graph.compute_ops
             if op.name not in outputs and len(op.shape) == rank and match_scatter(op) is None}
    if not moved:
        return graph

    def reindex(old: ex.Expr, new: ex.Expr) -> ex.Expr:
        if isinstance(new, ex.Load) and new.tensor in moved:
            return ex.Load(new.tensor, tuple(new.indices[k] for k in order), new.dtype)
        return new

    ops: dict = {n: graph[n] for n in graph.inputs}
    for op in graph.compute_ops:
        body = ex.transform(op.body, reindex)
        if op.name in moved:
            ops[op.name] = ComputeOp(op.name, tuple(op.shape[k] for k in order), op.dtype,
                                     tuple(op.axes[k] for k in order), body, op.label)
        else:
            ops[op.name] = op if body is op.body else ComputeOp(op.name, op.shape, op.dtype, op.axes, body, op.label)
    for name in graph.outputs:  # an output that copies a value only it reads computes that value
        out, src = ops[name], ops[name].body
        if isinstance(src, ex.Load) and src.tensor in moved and graph.consumers(src.tensor) == [name] \
                and list(src.indices) == list(out.axes) and ops[src.tensor].dtype == out.dtype:
            value = ops.pop(src.tensor)
            ops[name] = ComputeOp(name, value.shape, value.dtype, value.axes, value.body, value.label or out.label)
    return TensorGraph(list(ops.values()), list(graph.inputs), list(graph.outputs))


LONG_ROW = 32


def _row_reduction(op: ComputeOp) -> bool:
    """Whether `op` reduces rows of `LONG_ROW` elements or more along the innermost
    axis it reads (a softmax, a norm's statistics): stored in another order, its rows
    would lie across memory. A pooling window is short."""
    return op.kind == "reduction-row" and math.prod(op.reduce.extents) >= LONG_ROW


def _output_permutation(graph: TensorGraph) -> tuple[int, tuple[int, ...]] | None:
    """(rank, order) where every output of one rank r ≥ 3 is `x[axes permuted]` of a
    computed x of rank r, all by one permutation that moves the innermost axis: the
    output's axis j is x's axis `order[j]`. None where no rank qualifies."""
    by_rank: dict[int, set] = {}
    for name in graph.outputs:
        op = graph[name]
        if isinstance(op, ComputeOp) and len(op.shape) >= 3:
            by_rank.setdefault(len(op.shape), set()).add(_permutation_of(op, graph))
    for rank, orders in sorted(by_rank.items(), reverse=True):
        if len(orders) == 1:
            (order,) = orders
            if order is not None and order[-1] != rank - 1:
                return rank, order
    return None


def _permutation_of(op: ComputeOp, graph: TensorGraph) -> tuple[int, ...] | None:
    """`order` where `op` is `x[i_p]` for a computed x with `op`'s axis j being x's
    axis order[j]; None for anything else."""
    body = op.body
    if not isinstance(body, ex.Load) or not isinstance(graph[body.tensor], ComputeOp) \
            or body.tensor in graph.outputs or len(body.indices) != len(op.axes):
        return None
    names = [a.name for a in op.axes]
    used = [i.name if isinstance(i, ex.Var) else None for i in body.indices]
    if sorted(filter(None, used)) != sorted(names) or len(set(used)) != len(used):
        return None
    return tuple(used.index(n) for n in names)
