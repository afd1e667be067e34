"""Lowering scatter-adds (`ir.scatter`): a kernel that zeroes the output, then one
that adds every term at its target, the index along the scattered axis a data index
of the store (one thread in order on the CPU, atomic adds on the GPU)."""
from __future__ import annotations

from ..errors import UnsupportedError
from ..ir import dtypes as dt
from ..ir import expr as ex
from ..ir.gir import Kernel, data_var
from ..ir.scatter import Scatter, match_scatter
from ..ir.tensor import ComputeOp, TensorGraph, row_major_strides
from ..schedule import templates as sch
from .op import _Lowering, _prod, gpu_elementwise_parts, identity, lower_op, unflatten


def _scatter_term(low: _Lowering, sc: Scatter, chain: list[str], index: dict, guard: ex.Expr | None) -> None:
    """Add the term of the scatter-add `sc` at `index` (every output axis but the
    scattered one, and the reduction axes) to the output at its target."""
    op = low.op
    region = low.region(chain, index, guard)
    value = region.emit(sc.value)
    if low.b._node(value).dtype != op.dtype:
        value = low.b.compute("cast", [value], chain[-1], op.dtype)
    target = region.emit(sc.target)
    place = [ex.Var(data_var(0)) if k == sc.axis else index[a.name] for k, a in enumerate(op.axes)]
    flat = sum((i * st for i, st in zip(place, row_major_strides(op.shape))), ex.Const(0, dt.INDEX))
    low.b.store(low.out.name, low.simplify(flat), value, chain[-1], low.simplify(guard),
                data=[(target, op.shape[sc.axis])], combine="add")


def _free_axes(op: ComputeOp, sc: Scatter) -> list[tuple[str, int]]:
    return [(a.name, n) for k, (a, n) in enumerate(zip(op.axes, op.shape)) if k != sc.axis]


def _cpu_scatter(low: _Lowering, s: sch.CpuScatter) -> None:
    """One grid step: for each reduction position in order, for each point of the
    other output axes (`vector` lanes along the last one, then a scalar tail), add the
    term: one thread adds in order, so the sums are deterministic."""
    op, sc = low.op, match_scatter(low.op)
    red = op.reduce
    free = _free_axes(op, sc)
    g_id, _ = low.scope("grid", "g", 1, None)
    r_id, r = low.scope("serial", "r", _prod(red.extents), g_id)
    index = dict(zip((a.name for a in red.axes), unflatten(r, red.extents)))
    lanes = free.pop() if free and sc.axis != len(op.shape) - 1 else None
    chain = [g_id, r_id]
    if free:
        f_id, f = low.scope("serial", "f", _prod([n for _, n in free]), r_id)
        chain.append(f_id)
        index.update(zip((name for name, _ in free), unflatten(f, [n for _, n in free])))
    if lanes is None:
        _scatter_term(low, sc, chain, index, None)
        return
    name, length = lanes
    w = s.vector
    if length // w:
        jo_id, jo = low.scope("serial", "jo", length // w, chain[-1])
        v_id, v = low.scope("vector", "v", w, jo_id)
        _scatter_term(low, sc, chain + [jo_id, v_id], {**index, name: jo * w + v}, None)
    if length % w:
        jt_id, jt = low.scope("serial", "jt", length % w, chain[-1])
        _scatter_term(low, sc, chain + [jt_id], {**index, name: (length // w) * w + jt}, None)


def _gpu_scatter(low: _Lowering, s: sch.GpuScatter) -> None:
    """Every (reduction position, other output axes) point is a thread's vector lane
    (the last output axis fastest: neighbouring threads add to neighbouring elements);
    atomic adds."""
    op, sc = low.op, match_scatter(low.op)
    names = [a.name for a in op.reduce.axes] + [name for name, _ in _free_axes(op, sc)]
    dims = list(op.reduce.extents) + [n for _, n in _free_axes(op, sc)]
    scattered_last = sc.axis == len(op.shape) - 1
    w = s.vector if not scattered_last and dims[-1] % s.vector == 0 else 1
    for chain, flat, guard in gpu_elementwise_parts(low, _prod(dims), s.threads, w):
        _scatter_term(low, sc, chain, dict(zip(names, unflatten(flat, dims))), guard)


def lower_scatter(op: ComputeOp, graph: TensorGraph, s, name: str) -> list[Kernel]:
    """A scatter-add (`ir.scatter`): a kernel that zeroes the output, then one that
    adds every term at its target."""
    if _prod(op.shape) == 0:
        return []
    sc = match_scatter(op)
    if sc is None:
        raise UnsupportedError(f"schedule {s} needs a scatter-add; {op.name} is a {op.kind} operation")
    cpu = isinstance(s, sch.CpuScatter)
    zero = ComputeOp(op.name, op.shape, op.dtype, op.axes, identity("sum", op.dtype), op.label)
    kernels = [lower_op(zero, graph, sch.CpuElementwise() if cpu else sch.GpuElementwise(), f"{name}_zero")]
    if _prod(op.reduce.extents) == 0:
        return kernels
    low = _Lowering(op, graph, "cpu" if cpu else "gpu", name)
    (_cpu_scatter if cpu else _gpu_scatter)(low, s)
    return kernels + [low.b.build(op=op.name, schedule=repr(s))]
