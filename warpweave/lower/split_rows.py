"""Lowering a row group whose few long rows are split over several blocks
(`GpuSplitRows`): one kernel per sweep of the group, partial statistics in DRAM.

Block (row, j) of a sweep kernel covers the slice [j·L, j·L + L) of its row. Its
reductions are combined over the slice (lanes, passes, then the block's threads)
into one float32 partial, `<op>_partials[row, j]`. A later kernel's blocks begin by
combining the partials of their row — thread i reads partial i, then shuffles and
shared memory — and compute the row-scalar operations from them in registers, so a
row scalar never crosses DRAM except as partials (or as a group output, stored once
by block j = 0 of the kernel that first has it). Elementwise intermediates are
recomputed from the inputs in each sweep (`recompute_row_intermediates`), as in a
multi-pass row group. A sum of exp(a - m) swept after m = max(a) (softmax,
log-softmax) is swept with m, online: each block sums against its own maximum m_j,
and combining rescales, sum over j of s_j·exp(m_j - m), so x is read twice, not three
times. A final kernel, a block per row, combines the last sweep's partials where the
group outputs a row scalar that no sweep kernel has.
"""
from __future__ import annotations

import math

from ..ir import dtypes as dt
from ..ir import expr as ex
from ..ir.gir import Buffer, Kernel, make_kernel
from ..ir.tensor import TensorGraph
from ..passes.fuse import Group, recompute_row_intermediates
from ..schedule import templates as sch
from .group import _GroupLowering, _phases, _row_all_reduce, _row_flat, _row_index
from .op import identity


def lower_split_rows(group: Group, graph: TensorGraph, s: sch.GpuSplitRows, name: str) -> list[Kernel]:
    """The kernels of row group `group` under `s`, in launch order (none when empty)."""
    if math.prod(group.rows) == 0 or group.length == 0:
        return []
    group, graph = recompute_row_intermediates(group, graph)
    phases = _phases(group, graph)
    online = _online_sums(group, graph, phases)
    with_max = {m: [graph[n] for n, mm in online.items() if mm == m] for m in online.values()}
    phases = [(scalars, elems, [o for o in reds if o.name not in online]
               + [x for o in reds for x in with_max.get(o.name, [])]) for scalars, elems, reds in phases]
    # when each row-scalar value is first known: a scalar op of phase m at m, a
    # reduction swept in phase m at m + 1
    ready: dict[str, int] = {}
    for m, (scalars, _, reds) in enumerate(phases):
        ready.update({op.name: m for op in scalars})
        ready.update({op.name: m + 1 for op in reds})
    sweeps = [m for m, (_, elems, reds) in enumerate(phases) if elems or reds]
    late = [o for o in group.outputs if o in ready and ready[o] > sweeps[-1]]
    stops = sweeps + ([len(phases)] if late else [])
    kernels = []
    for k, m in enumerate(stops):
        home = {o for o in group.outputs if o in ready and (k == 0 or ready[o] > stops[k - 1]) and ready[o] <= m}
        kernels.append(_kernel(group, graph, s, phases, online, m, home, f"{name}_{k}" if len(stops) > 1 else name))
    return kernels


def _online_sums(group: Group, graph: TensorGraph, phases) -> dict[str, str]:
    """{s: m} for each sum reduction s = sum(exp(a - m)) swept in the phase after the
    max reduction m = max(a) (softmax, log-softmax): s is swept with m, each block
    summing exp(a - its own maximum); combining rescales (sum of s_j·exp(m_j - m))."""
    row, col = ex.Var("row$"), ex.Var("col$")
    pairs = {}
    for q in range(len(phases) - 1):
        for m in phases[q][2]:
            if m.reduce.combiner != "max":
                continue
            a = ex.substitute(m.value, _row_index(m, group, row, col))
            for s in phases[q + 1][2]:
                v = s.value
                if s.reduce.combiner == "sum" and isinstance(v, ex.Unary) and v.op == "exp" \
                        and isinstance(v.a, ex.Binary) and v.a.op == "sub" and isinstance(v.a.b, ex.Load) \
                        and v.a.b.tensor == m.name and s.name not in pairs \
                        and ex.substitute(v.a.a, _row_index(s, group, row, col)) == a:
                    pairs[s.name] = m.name
    return pairs


def _partials(graph: TensorGraph, op_name: str, rows: int, splits: int) -> Buffer:
    cd = dt.compute_dtype(graph[op_name].dtype)
    return Buffer(f"{op_name}_partials", cd, (rows, splits), (splits, 1), "temp")


def _kernel(group: Group, graph: TensorGraph, s: sch.GpuSplitRows, phases, online: dict[str, str], m: int,
            home: set[str], name: str) -> Kernel:
    """The kernel that sweeps phase `m` (or, past the last phase, only combines),
    storing the group outputs in `home` that are row scalars."""
    R, N = math.prod(group.rows), group.length
    final = m >= len(phases)
    S = 1 if final else s.splits
    T = s.threads
    low = _GroupLowering(group, graph, "gpu", name)
    earlier = [op for q in range(min(m, len(phases))) for op in phases[q][2]]
    swept = [] if final else phases[m][2]
    for op in earlier + swept:
        low.b.add_param(_partials(graph, op.name, R, s.splits))
    g_id, g = low.scope("grid", "g", R * S, None)
    t_id, t = low.scope("block", "t", T, g_id)
    row, split = (g // S, g % S) if S > 1 else (g, ex.Const(0, dt.INDEX))
    first = ex.all_of([ex.binary("eq", t, 0)] + ([ex.binary("eq", split, 0)] if S > 1 else []))
    earlier_names = {op.name for op in earlier}
    scalar_ops = {op.name: op for q in range(min(m + 1, len(phases))) for op in phases[q][0]}
    values: dict[str, str] = {}

    def value(tensor: str) -> str:
        """The row-scalar `tensor` in registers (every thread of the block)."""
        if tensor in values:
            return values[tensor]
        op = graph[tensor]
        if tensor in earlier_names:
            cd = dt.compute_dtype(op.dtype)
            mine = low.simplify(ex.binary("lt", t, s.splits))
            at = low.simplify(row * s.splits + t)
            part = low.b.load(f"{tensor}_partials", at, t_id, mine, identity(op.reduce.combiner, cd))
            if tensor in online:  # s_j · exp(m_j - m): each block summed against its own maximum
                top = value(online[tensor])
                m_cd = dt.compute_dtype(graph[online[tensor]].dtype)
                m_j = low.b.load(f"{online[tensor]}_partials", at, t_id, mine, identity("max", m_cd))
                shift = low.b.compute("exp", [low.b.compute("sub", [m_j, top], t_id, m_cd)], t_id, m_cd)
                part = low.b.compute("mul", [part, shift], t_id, cd)
            v = _row_all_reduce(low, op.reduce.combiner, part, t_id, t, T, T, f"{tensor}_c")
        else:
            v = low.region([g_id, t_id], _row_index(op, group, row, None), None, staged(op.body)).emit(op.body)
        if tensor in home:
            low.store(op, v, _row_flat(op, group, row, None), t_id, first)
        if low.b._node(v).dtype != op.dtype:  # one precision for every consumer
            v = low.b.compute("cast", [low.b.compute("cast", [v], t_id, op.dtype)], t_id, low.b._node(v).dtype)
        values[tensor] = v
        return v

    def staged(body: ex.Expr) -> dict[ex.Load, str]:
        return {ld: value(ld.tensor) for ld in ex.loads(body)
                if ld.tensor in earlier_names or ld.tensor in scalar_ops}

    for o in sorted(home):  # outputs first known here that no sweep reads
        if o in earlier_names or o in scalar_ops:
            value(o)
    if final:
        return _build(low, group, s)
    _, elems, reds = phases[m]
    w, c = s.vector, s.chunks
    L, passes = s.slice_length(N), s.passes(N)

    def sweep(tag: str):
        """Scopes over the block's slice: (chain, columns, guard)."""
        chain, col_base = [g_id, t_id], split * L
        if passes > 1:
            k_id, k = low.scope("serial", f"k{tag}", passes, t_id)
            chain.append(k_id)
            col_base = col_base + k * (T * w * c)
        v_id, v = low.scope("vector", f"v{tag}", w * c, chain[-1])
        chain.append(v_id)
        run_start = col_base + (v // w) * (T * w) + t * w
        guard = ex.binary("lt", run_start, N) if S * L != N else None  # w divides N: whole runs
        return chain, run_start + v % w, guard

    def reduce(op, chain, col, guard, extra: dict) -> str:
        """Sweep reduction `op` over the slice into its partial (loads in `extra` staged)."""
        red = op.reduce
        body = red.body
        term = low.region(chain, _row_index(op, group, row, col), guard, {**staged(body), **extra}).emit(body)
        acc = low.b.reduce(red.combiner, term, chain[-1], low.simplify(guard))
        if passes > 1:
            acc = low.b.reduce(red.combiner, acc, chain[-2])
        acc = _row_all_reduce(low, red.combiner, acc, t_id, t, T, T, op.name)
        low.b.store(f"{op.name}_partials", low.simplify(row * s.splits + split), acc, t_id,
                    low.simplify(ex.binary("eq", t, 0)))
        return acc

    chain, col, guard = sweep("")
    for op in elems:
        value_id = low.region(chain, _row_index(op, group, row, col), guard, staged(op.body)).emit(op.body)
        low.store(op, value_id, _row_flat(op, group, row, col), chain[-1], guard)
    block: dict[str, str] = {}  # the block's own maxima, for the online sums swept after them
    for op in reds:
        if op.name in online:
            extra = {ld: block[online[op.name]] for ld in ex.loads(op.reduce.body) if ld.tensor == online[op.name]}
            reduce(op, *sweep("o"), extra)
        else:
            block[op.name] = reduce(op, chain, col, guard, {})
    return _build(low, group, s)


def _build(low: _GroupLowering, group: Group, s: sch.GpuSplitRows) -> Kernel:
    """The kernel, with only the buffers it reads or writes as parameters."""
    k = low.b.build(op=",".join(group.ops), schedule=repr(s))
    used = {n.attr("buffer") for n in k.nodes if n.family == "move" and n.attr("buffer")}
    nodes = [n for n in k.nodes if n.op != "mem.global" or n.attr("buffer") in used]
    return make_kernel(k.name, [p for p in k.params if p.name in used], k.shared, nodes, k.edges,
                       k.target, dict(k.meta))

