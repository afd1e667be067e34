"""Matrix operands that are not matrices in memory.

A product whose operand is read through a reshape that no strides describe — the
heads of attention, `[b, h, s, d]` permuted to `[b, s, h, d]` and flattened to
`[b·s, h·d]`, read as `t[r // s, i // d, r % s, i % d]`, or a matrix split into
per-head batches `[b·h, s, d]` — is a sum of products, but
no matrix-product kernel (host BLAS, tensor cores) can read it: it would compile as
a reduction that re-reads its operands for every output, and cheap producers inlined
into it would be recomputed as often. `materialize_operands` copies each such operand
into a tensor of its own, indexed by the variables it uses, and lets the product read
that: one pass over the operand, then a matrix product.
"""
from __future__ import annotations

from typing import Callable

from ..ir import expr as ex
from ..ir.contraction import strided
from ..ir.tensor import ComputeOp, TensorGraph

ProductRule = Callable[[ComputeOp, TensorGraph], bool]


def materialize_operands(graph: TensorGraph, product: ProductRule) -> TensorGraph:
    """`graph` with the operands of its would-be matrix products copied out where that
    makes `product` take them (unchanged where nothing is)."""
    ops: list = [graph[n] for n in graph.inputs]
    shapes = {n: op.shape for n, op in graph.ops.items()}
    made: dict = {}  # (copy body, shape) -> the copy's name
    changed = False
    for op in graph.compute_ops:
        if _product_form(op) and not product(op, graph):
            found = _with_copied_operands(op, graph, shapes, made)
            if found is not None:
                copies, rewritten = found
                probe = TensorGraph([*ops, *copies, rewritten], list(graph.inputs), [rewritten.name])
                if product(rewritten, probe):
                    ops += [*copies, rewritten]
                    shapes.update((c.name, c.shape) for c in copies)
                    made.update(((c.body, c.shape), c.name) for c in copies)
                    changed = True
                    continue
        ops.append(op)
    if not changed:
        return graph
    return TensorGraph(ops, list(graph.inputs), list(graph.outputs))


def _product_form(op: ComputeOp) -> bool:
    """Whether `op` sums, over one axis, the product of two loads that each move along
    it and along an axis of their own (m and n; shared axes are batch axes)."""
    red = op.reduce
    if red is None or red.combiner != "sum" or len(red.axes) != 1 or len(op.loads) != 2:
        return False
    k = red.axes[0].name
    a, b = (ex.free_vars(ld) for ld in op.loads)
    return k in a and k in b and bool(a - b) and bool(b - a)


def _with_copied_operands(op: ComputeOp, graph: TensorGraph, shapes: dict, made: dict):
    """([new copies], the product reading them) for `op`'s operands that are not
    strided views, or None when there is nothing to copy. `made`: the copies made so
    far, by (body, shape), which serve again."""
    extents = {a.name: n for a, n in zip(op.axes, op.shape)}
    extents.update((a.name, n) for a, n in zip(op.reduce.axes, op.reduce.extents))
    variables = {a.name: a for a in (*op.axes, *op.reduce.axes)}
    order = list(variables)
    copies, replace = [], {}
    for k, ld in enumerate(op.loads):
        if strided(ld, shapes[ld.tensor], extents):
            continue  # a strided matrix already (or a broadcast one): products read it
        used = [v for v in order if v in ex.free_vars(ld)]
        axes = tuple(ex.Var(f"i{j}") for j in range(len(used)))
        body = ex.substitute(ld, {v: a for v, a in zip(used, axes)})
        shape = tuple(extents[v] for v in used)
        name = made.get((body, shape))
        if name is None:  # the same copy serves every product that reads it so
            name = _fresh(f"{op.name}_operand{k}", shapes)
            copies.append(ComputeOp(name, shape, graph[ld.tensor].dtype, axes, body,
                                    f"{op.label} operand" if op.label else "operand"))
        replace[ld] = ex.Load(name, tuple(variables[v] for v in used), ld.dtype)
    if not copies:
        return None
    body = ex.transform(op.body, lambda _o, e: replace.get(e, e) if isinstance(e, ex.Load) else e)
    return copies, ComputeOp(op.name, op.shape, op.dtype, op.axes, body, op.label)


def _fresh(name: str, taken) -> str:
    k = 0
    while f"{name}{'_' + str(k) if k else ''}" in taken:
        k += 1
    return f"{name}{'_' + str(k) if k else ''}"
