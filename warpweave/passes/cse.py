"""One operation per computation: `merge_duplicates`.

Decompositions repeat work: batch norm's training statistics sum the input once for
the variance's mean and again for the mean itself (`var` and `mean` decompose apart),
and a sum repeated is a pass over DRAM repeated. An operation whose shape, dtype, axes
and body equal an earlier one's — after the loads of operations already merged are
redirected — is dropped and read from the earlier one. The program's outputs are
kept (each is a buffer the caller receives); inputs are never merged.
"""
from __future__ import annotations

from ..ir import expr as ex
from ..ir.tensor import ComputeOp, TensorGraph


def merge_duplicates(graph: TensorGraph) -> TensorGraph:
    """`graph` with each repeated computation made once; `graph` itself when none is."""
    outputs = set(graph.outputs)
    merged: dict[str, str] = {}  # dropped operation -> the one computing its value
    first: dict[tuple, str] = {}
    ops: list = [graph[n] for n in graph.inputs]

    def redirect(_old: ex.Expr, new: ex.Expr) -> ex.Expr:
        if isinstance(new, ex.Load) and new.tensor in merged:
            return ex.Load(merged[new.tensor], new.indices, new.dtype)
        return new

    for op in graph.compute_ops:
        body = ex.transform(op.body, redirect) if merged else op.body
        key = (op.shape, op.dtype, tuple(a.name for a in op.axes), body)
        if key in first and op.name not in outputs:
            merged[op.name] = first[key]
            continue
        first.setdefault(key, op.name)
        ops.append(op if body is op.body else ComputeOp(op.name, op.shape, op.dtype, op.axes, body, op.label))
    if not merged:
        return graph
    return TensorGraph(ops, list(graph.inputs), list(graph.outputs))
