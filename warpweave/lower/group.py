"""Lowering a fusion group into one GIR kernel, before stitching.

Every operation of the group is emitted under the group's mapping, and every
tensor passes through DRAM exactly as if the operations ran one after another:
the producer stores it (`move.reg.global` into its buffer — an output of the
group, or a `temp` buffer) and each consumer loads it (`move.global.reg`). The
mapping makes each such load read an element that the same thread, its warp or
its block wrote; `passes.stitch` then rewrites every round trip into a register
edge, a shuffle or shared memory, and `passes.movement` removes repeated loads.

Row groups run in *phases*: a phase sweeps the row once (one vector scope, the
thread's register tile, or serial passes over it), computing the row-elementwise
operations whose inputs are ready and the reductions over them; the reductions
are combined across the row's threads, and the row-scalar operations that follow
run once per thread before the next phase.
"""
from __future__ import annotations

import math

from ..errors import CompileError
from ..ir import dtypes as dt
from ..ir import expr as ex
from ..ir.gir import WARP_SIZE, Buffer, Kernel, KernelBuilder, SharedAlloc
from ..ir.tensor import ComputeOp, TensorGraph, row_major_strides
from ..passes.fuse import Group, recompute_row_intermediates, row_place
from ..schedule import templates as sch
from ..schedule.choose import flat_elementwise
from .op import _Lowering, _warp_reduce, gpu_elementwise_parts, identity, unflatten


class _GroupLowering(_Lowering):
    """Builder state for a group: external inputs, then one buffer per member
    (role "out" when the group's outputs include it, else "temp")."""

    def __init__(self, group: Group, graph: TensorGraph, target: str, name: str):
        self.graph = graph
        self.group = group
        self.b = KernelBuilder(name, target)
        self.ranges: dict[str, tuple[int, int]] = {}
        self.scope_vars: dict[str, str] = {}
        members = set(group.ops)
        seen = set()
        for name_ in group.ops:
            for src in graph[name_].inputs:
                if src not in members and src not in seen:
                    seen.add(src)
                    t = graph[src]
                    self.b.add_param(Buffer(src, t.dtype, tuple(t.shape), row_major_strides(t.shape), "in"))
        for name_ in group.ops:
            op = graph[name_]
            role = "out" if name_ in group.outputs else "temp"
            self.b.add_param(Buffer(name_, op.dtype, tuple(op.shape), row_major_strides(op.shape), role))

    def load_depth(self, tensor: str, chain: list[str]) -> int:
        """Loads of the group's own tensors sit where their stores do — in the same
        scopes for elements, in the thread scope for row scalars — so that stitching
        can match each one with the store that wrote it."""
        if tensor not in self.group.ops:
            return 0
        if self.group.pattern != "row" or \
                row_place(self.graph[tensor], self.group.rows, self.group.length) == "elementwise":
            return len(chain) - 1
        return 1 if self.b.target == "gpu" and len(chain) > 1 else 0

    def store(self, op: ComputeOp, value: str, flat: ex.Expr, scope: str, guard: ex.Expr | None) -> None:
        if self.b._node(value).dtype != op.dtype:
            value = self.b.compute("cast", [value], scope, op.dtype)
        self.b.store(op.name, self.simplify(flat), value, scope, self.simplify(guard))


def _flat(op: ComputeOp, index: dict[str, ex.Expr]) -> ex.Expr:
    return sum((index[a.name] * s for a, s in zip(op.axes, row_major_strides(op.shape))),
               ex.Const(0, dt.INDEX))


# ----------------------------------------------------------------------------- elementwise

def _elementwise_gpu(low: _GroupLowering, s: sch.GpuElementwise) -> None:
    ops = [low.graph[n] for n in low.group.ops]
    shape = ops[0].shape
    flat_ok = flat_elementwise(ops, low.graph)
    w = s.vector if flat_ok or (shape and shape[-1] % s.vector == 0) else 1
    for chain, flat, guard in gpu_elementwise_parts(low, math.prod(shape), s.threads, w):
        position = unflatten(flat, shape)
        for op in ops:  # stores spell offsets as the loads of their consumers do
            index = dict(zip((a.name for a in op.axes), position))
            low.store(op, low.region(chain, index, guard).emit(op.body), _flat(op, index), chain[-1], guard)


def _elementwise_cpu(low: _GroupLowering, s: sch.CpuElementwise) -> None:
    from .op import _rows_and_chunks, _vector_main_and_tail

    ops = [low.graph[n] for n in low.group.ops]
    low.op = ops[-1]  # _rows_and_chunks reads the iteration shape from here
    g_id, row, j0, length, _ = _rows_and_chunks(low, s.chunk)
    shape = ops[0].shape
    n = shape[-1] if shape else 1

    def body(chain, j):
        flat = row * n + j if shape else ex.Const(0, dt.INDEX)
        position = unflatten(flat, shape) if shape else []
        for op in ops:
            index = dict(zip((a.name for a in op.axes), position))
            low.store(op, low.region(chain, index).emit(op.body), _flat(op, index), chain[-1], None)

    _vector_main_and_tail(low, g_id, j0, length, s.vector, body)


# ----------------------------------------------------------------------------- rows

def _phases(group: Group, graph: TensorGraph) -> list[tuple[list[ComputeOp], list[ComputeOp], list[ComputeOp]]]:
    """[(row-scalar ops before the sweep, row-elementwise ops, reductions)] per phase,
    plus a final entry holding the row-scalar ops after the last sweep."""
    slot: dict[str, int] = {}  # sweep p computes at 2p+1; results of its reductions at 2p+2
    for name in group.ops:
        op = graph[name]
        place = row_place(op, group.rows, group.length)
        ready = max((slot[s] for s in op.inputs if s in slot), default=0)
        if place == "scalar":
            slot[name] = ready if ready % 2 == 0 else ready + 1
        elif place == "elementwise":
            slot[name] = ready if ready % 2 == 1 else ready + 1
        else:  # a reduction: swept at an odd slot, its result ready one later
            sweep = ready if ready % 2 == 1 else ready + 1
            slot[name] = sweep + 1
            slot[name + "\0sweep"] = sweep
    last = max(slot.values(), default=0)
    phases = []
    for p in range(0, last + 2, 2):
        scalars = [graph[n] for n in group.ops if slot[n] == p and row_place(graph[n], group.rows, group.length) == "scalar"]
        elems = [graph[n] for n in group.ops if slot[n] == p + 1 and row_place(graph[n], group.rows, group.length) == "elementwise"]
        reds = [graph[n] for n in group.ops if slot.get(n + "\0sweep") == p + 1]
        phases.append((scalars, elems, reds))
    return phases


def _row_index(op: ComputeOp, group: Group, row: ex.Expr, col: ex.Expr | None) -> dict[str, ex.Expr]:
    """Index expressions of `op`'s axes (and reduce axis) at (row, col)."""
    place = row_place(op, group.rows, group.length)
    if group.length == 1 and col is not None:
        col = ex.Const(0, dt.INDEX)  # spelled as the loads of one-element rows spell it
    row_pos = iter(unflatten(row, group.rows) if group.rows else [])
    shape = op.shape[:-1] if place == "elementwise" else op.shape
    index = {}
    for a, n in zip(op.axes, shape):
        index[a.name] = ex.Const(0, dt.INDEX) if n == 1 else next(row_pos)
    if place == "elementwise":
        index[op.axes[-1].name] = col
    if place == "reduce":
        index[op.reduce.axes[0].name] = col
    return index


def _row_flat(op: ComputeOp, group: Group, row: ex.Expr, col: ex.Expr | None) -> ex.Expr:
    """The element offset of `op` at (row, col), spelled as its consumers' loads spell it."""
    index = _row_index(op, group, row, col)
    return _flat(op, {a.name: index[a.name] for a in op.axes})


def _broadcast_columns(op: ComputeOp, group: Group, column_at: ex.Expr | None) -> ex.Expr:
    """The expression `op` computes per column of a row (its body, or its reduction's),
    with the column index of each load that no row index reaches (a weight that every
    row reads) spelled as `column_at`, an expression over the kernel's scope variables:
    the same column as the op's own, written so that the verifier bounds it under the
    run's guard and the thread's addresses of it stay affine (no division per lane)."""
    place = row_place(op, group.rows, group.length)
    body = op.reduce.body if place == "reduce" else op.body
    if column_at is None or place == "scalar":
        return body
    column = op.reduce.axes[0].name if place == "reduce" else op.axes[-1].name
    rows = {a.name for a in op.axes} - {column}

    def spell(_orig: ex.Expr, e: ex.Expr) -> ex.Expr:
        if not isinstance(e, ex.Load):
            return e
        used = set().union(*(ex.free_vars(i) for i in e.indices)) if e.indices else set()
        if column not in used or used & rows:
            return e
        return ex.Load(e.tensor, [ex.substitute(i, {column: column_at}) for i in e.indices], e.dtype)

    return ex.transform(body, spell)


def _rows_gpu(low: _GroupLowering, s: sch.GpuRowGroup) -> None:
    group, graph = low.group, low.graph
    R, N = math.prod(group.rows), group.length
    tp, w, c = s.row_threads, s.vector, s.chunks
    per_block = s.threads // tp
    g_id, g = low.scope("grid", "g", math.ceil(R / per_block), None)
    t_id, t = low.scope("block", "t", s.threads, g_id)
    row, lane = g * per_block + t // tp, t % tp
    row_ok = ex.binary("lt", row, R) if R % per_block else None
    leader = ex.all_of([ex.binary("eq", lane, 0), row_ok] if row_ok is not None else [ex.binary("eq", lane, 0)])
    for n, (scalars, elems, reds) in enumerate(_phases(group, graph)):
        for op in scalars:
            index = _row_index(op, group, row, None)
            value = low.region([g_id, t_id], index, row_ok).emit(op.body)
            low.store(op, value, _row_flat(op, group, row, None), t_id, leader)
        if not (elems or reds):
            continue
        chain = [g_id, t_id]
        col_base = ex.Const(0, dt.INDEX)
        if s.passes > 1:
            k_id, k = low.scope("serial", f"k{n}", s.passes, t_id)
            chain.append(k_id)
            col_base = k * (tp * w * c)
        v_id, v = low.scope("vector", f"v{n}", w * c, chain[-1])
        chain.append(v_id)
        run_start = col_base + (v // w) * (tp * w) + lane * w
        bounds = [row_ok] if row_ok is not None else []
        ends = []  # the scalar head and tail of a ragged row: (column, guard)
        weight_col = None  # a weight's column in the runs, where it differs from the op's own
        if N % w:  # runs from the row's first w-aligned element; a scalar head and tail
            start = ((row * N + (w - 1)) // w) * w  # aligned, as the wide accesses need
            head = start - row * N
            lead = (w - (row * N) % w) % w  # head again, its range [0, w) evident
            col = head + run_start + v % w
            bounds += [ex.binary("le", lead + run_start + w, N),     # the run lies in the row
                       ex.binary("le", start + run_start + w, R * N)]  # implied; for the verifier
            few = ex.binary("lt", lane, w)  # implied; for the verifier
            weight_col = lead + run_start + v % w
            if N < w:  # a row shorter than a run: its head may hold all of it
                head = ex.binary("min", head, ex.Const(N, dt.INDEX))
            ends = [(lane, ex.all_of([c for c in (row_ok, few, ex.binary("lt", lane, head)) if c is not None])),
                    (N - 1 - lane, ex.all_of([c for c in (row_ok, few, ex.binary("lt", lane, (N - head) % w))
                                              if c is not None]))]
        else:
            col = run_start + v % w
            if s.passes * tp * w * c != N:
                bounds.append(ex.binary("lt", run_start, N))  # w divides N: a run is all in or all out
            if row_ok is not None and tp > 1:  # implied; for the verifier, where row and lane merge
                bounds.append(ex.binary("le", row * N + run_start + w, R * N))
        guard = ex.all_of(bounds) if bounds else None
        for op in elems:
            index = _row_index(op, group, row, col)
            value = low.region(chain, index, guard).emit(_broadcast_columns(op, group, weight_col))
            low.store(op, value, _row_flat(op, group, row, col), v_id, guard)
            for end, ok in ends:
                value = low.region([g_id, t_id], _row_index(op, group, row, end), ok).emit(op.body)
                low.store(op, value, _row_flat(op, group, row, end), t_id, ok)
        for op in reds:
            red = op.reduce
            index = _row_index(op, group, row, col)
            value = low.region(chain, index, guard).emit(_broadcast_columns(op, group, weight_col))
            acc = low.b.reduce(red.combiner, value, v_id, low.simplify(guard))
            if s.passes > 1:
                acc = low.b.reduce(red.combiner, acc, chain[-2])
            for end, ok in ends:
                term = low.region([g_id, t_id], _row_index(op, group, row, end), ok).emit(red.body)
                cd = low.b._node(term).dtype
                kept = low.b.compute("select", [low.b.index(low.simplify(ok), t_id), term,
                                                low.b.const(identity(red.combiner, cd), t_id)], t_id, cd)
                acc = low.combine(red.combiner, acc, kept, t_id)
            acc = _row_all_reduce(low, red.combiner, acc, t_id, t, tp, s.threads, op.name)
            low.store(op, acc, _row_flat(op, group, row, None), t_id, leader)


def _row_all_reduce(low: _GroupLowering, combiner: str, value: str, t_id: str, t: ex.Expr,
                    tp: int, threads: int, name: str) -> str:
    """Combine `value` over the `tp` threads of each row; every thread gets the result."""
    value = _warp_reduce(low, combiner, value, t_id, min(tp, WARP_SIZE))
    if tp <= WARP_SIZE:
        return value
    cd = low.b._node(value).dtype
    per_row = tp // WARP_SIZE
    buf = f"{name}_warps"
    low.b.add_shared(SharedAlloc(buf, cd, threads // WARP_SIZE))
    lane32 = t % WARP_SIZE
    low.b.store(buf, low.simplify(t // WARP_SIZE), value, t_id, low.simplify(ex.binary("eq", lane32, 0)))
    low.b.sync([buf], t_id)
    part = low.b.load(buf, low.simplify((t // tp) * per_row + lane32 % per_row), t_id, None,
                      identity(combiner, cd))
    return _warp_reduce(low, combiner, part, t_id, per_row)


def _rows_cpu(low: _GroupLowering, s: sch.CpuRowGroup) -> None:
    group, graph = low.group, low.graph
    R, N = math.prod(group.rows), group.length
    w = s.vector if N >= s.vector else 1
    sums = any(graph[o].reduce is not None and graph[o].reduce.combiner == "sum" for o in group.ops)
    g_id, g = low.scope("grid", "g", R, None)
    for n, (scalars, elems, reds) in enumerate(_phases(group, graph)):
        for op in scalars:
            value = low.region([g_id], _row_index(op, group, g, None)).emit(op.body)
            low.store(op, value, _row_flat(op, group, g, None), g_id, None)
        if not (elems or reds):
            continue
        # sweeps (vector scope or None, serial loops, column, mask): w lanes across serial
        # loops (a tree of loops when the group sums: the same loops in every phase, so
        # that a value one phase stores is read back under aligned scopes), then a tail
        sweeps = []
        if N // w:
            v_id, v = low.scope("vector", f"v{n}", w, g_id)
            ids, k, mask = low.serial_loops([g_id, v_id], f"k{n}", N // w, tree=sums)
            sweeps.append((v_id, ids, k * w + v, mask))
        if N % w:
            ids, kt, _ = low.serial_loops([g_id], f"kt{n}", N % w, tree=False)
            sweeps.append((None, ids, (N // w) * w + kt, None))
        parts: dict[str, list[str]] = {op.name: [] for op in reds}
        for v_id, ids, j, mask in sweeps:
            chain = [g_id] + ([v_id] if v_id else []) + ids
            for op in elems:
                value = low.region(chain, _row_index(op, group, g, j), mask).emit(op.body)
                low.store(op, value, _row_flat(op, group, g, j), chain[-1], mask)
            for op in reds:
                value = low.region(chain, _row_index(op, group, g, j), mask).emit(op.reduce.body)
                acc = low.reduce_loops(op.reduce.combiner, value, ids, mask)
                if v_id:  # then across the vector lanes
                    acc = low.b.reduce(op.reduce.combiner, acc, v_id)
                parts[op.name].append(acc)
        for op in reds:
            acc = parts[op.name][0]
            for p in parts[op.name][1:]:
                acc = low.combine(op.reduce.combiner, acc, p, g_id)
            low.store(op, acc, _row_flat(op, group, g, None), g_id, None)


_TEMPLATES = {
    sch.GpuElementwise: _elementwise_gpu,
    sch.CpuElementwise: _elementwise_cpu,
    sch.GpuRowGroup: _rows_gpu,
    sch.CpuRowGroup: _rows_cpu,
}


def lower_group(group: Group, graph: TensorGraph, schedule: sch.Schedule, name: str) -> Kernel | None:
    """The unstitched GIR kernel of a multi-operation group; None when it is empty."""
    shapes = [graph[n].shape for n in group.ops]
    if all(math.prod(sh) == 0 for sh in shapes) or (group.pattern == "row" and math.prod(group.rows) == 0):
        return None
    template = _TEMPLATES.get(type(schedule))
    if template is None:
        raise CompileError(f"schedule {schedule} cannot lower a {group.pattern} group")
    if isinstance(schedule, sch.GpuRowGroup) and schedule.passes > 1:
        group, graph = recompute_row_intermediates(group, graph)
    target = "cpu" if type(schedule).__name__.startswith("Cpu") else "gpu"
    low = _GroupLowering(group, graph, target, name)
    template(low, schedule)
    return low.b.build(op=",".join(group.ops), schedule=repr(schedule))
