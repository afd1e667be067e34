"""Lowering a contraction group on the CPU (`CpuContraction`): a matrix product and
its epilogue.

The main kernel's grid has a step per batch element and tile of rows of the product.
Each step makes one `call.gemm` for its tile — the host BLAS, or the loop nest —
into the product's buffer (or, for a 16-bit product, a float32 buffer of the same
shape), then sweeps the tile's rows with the group's elementwise operations (bias,
activation, residual, the cast to the product's dtype), `vector` lanes at a time,
while the tile is still in cache. Their stores and loads between each other are
stitched into registers like any group's.

16-bit operands are widened first, by one elementwise kernel each into a temporary
buffer of the accumulation type, so that the product runs at the BLAS's speed.
"""
from __future__ import annotations

import math

from ..errors import CompileError
from ..ir import dtypes as dt
from ..ir import expr as ex
from ..ir.contraction import Contraction, Operand, match_contraction
from ..ir.gir import Buffer, Kernel, make_kernel
from ..ir.tensor import ComputeOp, TensorGraph, row_major_strides
from ..passes.fuse import Group
from ..schedule import templates as sch
from .group import _flat, _GroupLowering
from .op import _cpu_elementwise, _Lowering, unflatten


def _widen(operand: Operand, acc: dt.DType, graph: TensorGraph, name: str) -> tuple[Kernel, Buffer]:
    """A kernel writing `operand`'s whole tensor as `acc` into a temporary buffer."""
    src = graph[operand.tensor]
    axes = tuple(ex.Var(f"i{k}") for k in range(len(src.shape)))
    buf = Buffer(f"{operand.tensor}_as_{acc}", acc, tuple(src.shape), row_major_strides(src.shape), "temp")
    op = ComputeOp(buf.name, buf.shape, acc, axes, ex.cast(ex.Load(operand.tensor, axes, src.dtype), acc))
    low = _Lowering(op, graph, "cpu", f"{name}_{buf.name}", out=buf)
    _cpu_elementwise(low, sch.CpuElementwise(vector=max(1, 64 // acc.itemsize)))
    return low.b.build(op=op.name, schedule="widen"), buf


def lower_contraction(group: Group, graph: TensorGraph, schedule: sch.CpuContraction,
                      name: str) -> list[Kernel]:
    """The kernels of a contraction group in launch order: operand conversions, then
    the product with its epilogue (none when the product is empty)."""
    op = graph[group.ops[0]]
    c = match_contraction(op, graph)
    if c is None:
        raise CompileError(f"{op.name} is not a contraction; schedule {schedule} cannot lower it")
    if math.prod(op.shape) == 0:
        return []
    low = _GroupLowering(group, graph, "cpu", name)
    kernels, widened = [], {}
    for operand in (c.a, c.b):
        if operand.dtype != c.acc and operand.tensor not in widened:
            kernel, buf = _widen(operand, c.acc, graph, name)
            kernels.append(kernel)
            low.b.add_param(buf)
            widened[operand.tensor] = buf.name
    result = op.name
    if op.dtype != c.acc:
        result = f"{op.name}_{c.acc}"
        low.b.add_param(Buffer(result, c.acc, tuple(op.shape), row_major_strides(op.shape), "temp"))
    _product(low, c, op, schedule, widened, result)
    return kernels + [_without_unread(low.b.build(op=",".join(group.ops), schedule=repr(schedule)))]


def _without_unread(kernel: Kernel) -> Kernel:
    """The kernel without the input params nothing reads (16-bit operands it reads
    widened)."""
    read = {e.src for e in kernel.edges}
    unread = {n.attr("buffer") for n in kernel.nodes if n.op == "mem.global" and n.id not in read
              and kernel.param(n.attr("buffer")).role == "in"}
    return make_kernel(kernel.name, [p for p in kernel.params if p.name not in unread], kernel.shared,
                       [n for n in kernel.nodes if not (n.op == "mem.global" and n.attr("buffer") in unread)],
                       kernel.edges, kernel.target, dict(kernel.meta))


def _product(low: _GroupLowering, c: Contraction, op: ComputeOp, s: sch.CpuContraction,
             widened: dict[str, str], result: str) -> None:
    rows = min(s.rows, c.m) if s.rows else c.m
    tiles = -(-c.m // rows)
    g_id, g = low.scope("grid", "g", c.batch_count * tiles, None)
    batch = unflatten(g // tiles, c.batch) if tiles > 1 else unflatten(g, c.batch)
    i0 = (g % tiles) * rows if tiles > 1 else ex.Const(0, dt.INDEX)

    def offset(layout, row0) -> ex.Expr:
        at = ex.Const(layout.offset, dt.INDEX) + row0 * layout.rows
        for i, stride in zip(batch, layout.batch):
            at = at + i * stride
        return low.simplify(at)

    m = ex.Const(rows, dt.INDEX)
    if c.m % rows:
        m = low.simplify(ex.binary("min", m, ex.Const(c.m, dt.INDEX) - i0))
    k0 = ex.Const(0, dt.INDEX)
    operands = [(widened.get(c.a.tensor, c.a.tensor), offset(c.a.layout, i0), (c.a.layout.rows, c.a.layout.cols)),
                (widened.get(c.b.tensor, c.b.tensor), offset(c.b.layout, k0), (c.b.layout.rows, c.b.layout.cols)),
                (result, offset(c.out_layout, i0), (c.out_layout.rows, c.out_layout.cols))]
    low.b.gemm(c.acc, m, ex.Const(c.n, dt.INDEX), ex.Const(c.k, dt.INDEX), operands, g_id)
    if len(low.group.ops) > 1 or result != op.name:
        _epilogue(low, c, op, s, g_id, batch, i0, rows, result)


def _epilogue(low: _GroupLowering, c: Contraction, op: ComputeOp, s: sch.CpuContraction, g_id: str,
              batch: list[ex.Expr], i0: ex.Expr, rows: int, result: str) -> None:
    """The group's other operations over the tile's rows: row r, column j."""
    r_id, r = low.scope("serial", "r", rows, g_id)
    guard = ex.binary("lt", i0 + r, c.m) if c.m % rows else None
    ops = [low.graph[n] for n in low.group.ops[1:]]

    def body(chain: list[str], j: ex.Expr) -> None:
        queue = iter(batch)
        position = [next(queue) if role == "batch" else i0 + r if role == "m" else j for role in c.roles]
        index = dict(zip((a.name for a in op.axes), position))
        if result != op.name:  # the float32 product, rounded to the product's dtype
            value = low.b.load(result, low.simplify(_flat(op, index)), chain[-1], low.simplify(guard))
            low.store(op, value, _flat(op, index), chain[-1], guard)
        for o in ops:
            at = dict(zip((a.name for a in o.axes), position))
            low.store(o, low.region(chain, at, guard).emit(o.body), _flat(o, at), chain[-1], guard)

    w = s.vector
    if c.n // w:
        jo_id, jo = low.scope("serial", "jo", c.n // w, r_id)
        v_id, v = low.scope("vector", "v", w, jo_id)
        body([g_id, r_id, jo_id, v_id], jo * w + v)
    if c.n % w:
        jt_id, jt = low.scope("serial", "jt", c.n % w, r_id)
        body([g_id, r_id, jt_id], ex.Const((c.n // w) * w, dt.INDEX) + jt)
