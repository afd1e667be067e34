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
multi-pass row group. Softmax's sum of exp(a - max(a)) and layer norm's sum of
(a - mean)² are swept with the reduction they depend on, each block against its own
maximum or mean, and combined in closed form (`_online_sums`): x is read twice, not
three times. A final kernel, a block per row, combines the last sweep's partials where the
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
    partner = {m: [graph[n] for n, (_, mm) in online.items() if mm == m] for _, m in online.values()}
    phases = [(scalars, elems, [o for o in reds if o.name not in online]
               + [x for o in reds for x in partner.get(o.name, [])]) for scalars, elems, reds in phases]
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


def _online_sums(group: Group, graph: TensorGraph, phases) -> dict[str, tuple[str, str]]:
    """{s: (kind, m)} for each sum reduction s swept in the phase after reduction m that
    a block can sweep together with m, its partials combined in closed form:
    "exp" — s = sum(exp(a - m)), m = max(a) (softmax, log-softmax): each block sums
    against its own maximum m_j, combined as the sum of s_j·exp(m_j - m);
    "centered" — s = sum((a - m/N)²), m = sum(a) (layer norm's variance): each block
    centres on its own mean, combined as Chan's sum of s_j + n_j·(m_j/n_j - m/N)²."""
    row, col = ex.Var("row$"), ex.Var("col$")
    pairs = {}
    for q in range(len(phases) - 1):
        for m in phases[q][2]:
            a = ex.substitute(m.value, _row_index(m, group, row, col))
            for s in phases[q + 1][2]:
                v = s.value
                if s.reduce.combiner != "sum" or s.name in pairs:
                    continue
                if m.reduce.combiner == "max" and isinstance(v, ex.Unary) and v.op == "exp":
                    d, kind = v.a, "exp"
                elif m.reduce.combiner == "sum" and isinstance(v, ex.Binary) and v.op == "mul" and v.a == v.b:
                    d, kind = v.a, "centered"
                else:
                    continue
                if not (isinstance(d, ex.Binary) and d.op == "sub"):
                    continue
                center = d.b
                if kind == "centered":
                    if not (isinstance(center, ex.Binary) and center.op == "div" and isinstance(center.b, ex.Const)
                            and center.b.value == group.length):
                        continue
                    center = center.a
                if isinstance(center, ex.Load) and center.tensor == m.name \
                        and ex.substitute(d.a, _row_index(s, group, row, col)) == a:
                    pairs[s.name] = (kind, m.name)
    return pairs


def _partials(graph: TensorGraph, op_name: str, rows: int, splits: int) -> Buffer:
    cd = dt.compute_dtype(graph[op_name].dtype)
    return Buffer(f"{op_name}_partials", cd, (rows, splits), (splits, 1), "temp")


def _kernel(group: Group, graph: TensorGraph, s: sch.GpuSplitRows, phases, online: dict[str, tuple[str, str]], m: int,
            home: set[str], name: str) -> Kernel:
    """The kernel that sweeps phase `m` (or, past the last phase, only combines),
    storing the group outputs in `home` that are row scalars."""
    R, N = math.prod(group.rows), group.length
    final = m >= len(phases)
    S = 1 if final else s.splits
    T, L, passes = s.threads, s.slice_length(N), s.passes(N)
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
            if tensor in online:
                part = combine_online(tensor, part, at, mine, cd)
            v = _row_all_reduce(low, op.reduce.combiner, part, t_id, t, T, T, f"{tensor}_c")
        else:
            v = low.region([g_id, t_id], _row_index(op, group, row, None), None, staged(op.body)).emit(op.body)
        if tensor in home:
            low.store(op, v, _row_flat(op, group, row, None), t_id, first)
        if low.b._node(v).dtype != op.dtype:  # one precision for every consumer
            v = low.b.compute("cast", [low.b.compute("cast", [v], t_id, op.dtype)], t_id, low.b._node(v).dtype)
        values[tensor] = v
        return v

    def count(j: ex.Expr, scope: str, cd: dt.DType, least: int) -> str:
        """The elements of the row in block j's slice (at least `least`), as a `cd` value."""
        n = ex.binary("max", ex.binary("min", ex.Const(L, dt.INDEX), N - j * L), ex.Const(least, dt.INDEX))
        return low.b.compute("cast", [low.b.index(low.simplify(n), scope)], scope, cd)

    def combine_online(tensor: str, part: str, at: ex.Expr, mine: ex.Expr, cd: dt.DType) -> str:
        """Block t's term of an online sum's combination (identity past the partials)."""
        kind, m = online[tensor]
        b = low.b
        m_j = b.load(f"{m}_partials", at, t_id, mine, identity(graph[m].reduce.combiner, cd))
        if kind == "exp":  # s_j · exp(m_j - m)
            return b.compute("mul", [part, b.compute("exp", [b.compute("sub", [m_j, value(m)], t_id, cd)],
                                                     t_id, cd)], t_id, cd)
        mean = b.compute("div", [value(m), b.const(ex.Const(N, cd), t_id)], t_id, cd)  # s_j + n_j·(m_j/n_j - m/N)²
        gap = b.compute("sub", [b.compute("div", [m_j, count(t, t_id, cd, 1)], t_id, cd), mean], t_id, cd)
        term = b.compute("add", [part, b.compute("mul", [count(t, t_id, cd, 0), b.compute("mul", [gap, gap], t_id, cd)],
                                                 t_id, cd)], t_id, cd)
        return b.compute("select", [b.index(mine, t_id), term, b.const(ex.Const(0, cd), t_id)], t_id, cd)

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
    block: dict[str, str] = {}  # the block's own statistics, for the online sums swept after them
    for op in reds:
        if op.name not in online:
            block[op.name] = reduce(op, chain, col, guard, {})
            continue
        kind, m = online[op.name]
        own = block[m]  # its maximum; or its sum, scaled so that dividing by N gives its mean
        if kind == "centered":
            cd = low.b._node(own).dtype
            scale = low.b.compute("div", [low.b.const(ex.Const(N, cd), t_id), count(split, t_id, cd, 1)], t_id, cd)
            own = low.b.compute("mul", [own, scale], t_id, cd)
        reduce(op, *sweep("o"), {ld: own for ld in ex.loads(op.reduce.body) if ld.tensor == m})
    return _build(low, group, s)


def _build(low: _GroupLowering, group: Group, s: sch.GpuSplitRows) -> Kernel:
    """The kernel, with only the buffers it reads or writes as parameters."""
    k = low.b.build(op=",".join(group.ops), schedule=repr(s))
    used = {n.attr("buffer") for n in k.nodes if n.family == "move" and n.attr("buffer")}
    nodes = [n for n in k.nodes if n.op != "mem.global" or n.attr("buffer") in used]
    return make_kernel(k.name, [p for p in k.params if p.name in used], k.shared, nodes, k.edges,
                       k.target, dict(k.meta))

