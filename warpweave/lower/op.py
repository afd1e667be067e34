"""Lowering: one tensor operation under a schedule becomes one GIR kernel.

Each template builds the kernel's scopes, then asks a `_Region` to emit the
operation's body at an iteration point (index expressions of the scope
variables, plus a guard where the point may fall outside the tensor). Every
load becomes a `move.global.reg` (an index that reads a tensor becomes one of
its data indices: `gir.data_indices`), every arithmetic node a compute node, placed
in the outermost scope whose variables it uses, and shared between uses.
Arithmetic on 16-bit floats is carried out in float32.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import UnsupportedError
from ..ir import dtypes as dt
from ..ir import expr as ex
from ..ir import simplify as sx
from ..ir.gir import WARP_SIZE, Buffer, Kernel, KernelBuilder, SharedAlloc, data_var
from ..ir.tensor import ComputeOp, Placeholder, TensorGraph, row_major_strides
from ..schedule import templates as sch
from ..schedule.choose import flat_elementwise


def _prod(xs) -> int:
    return int(np.prod(xs, dtype=np.int64)) if len(xs) else 1


def unflatten(flat: ex.Expr, shape) -> list[ex.Expr]:
    """Row-major indices of the flat position `flat` in `shape`."""
    out = []
    for k, (n, s) in enumerate(zip(shape, row_major_strides(shape))):
        i = flat // s if s != 1 else flat
        out.append(i % n if k > 0 else i)
    return out


def identity(combiner: str, dtype: dt.DType) -> ex.Const:
    if combiner == "sum":
        return ex.Const(0, dtype)
    if combiner == "prod":
        return ex.Const(1, dtype)
    if dtype.is_float:
        return ex.Const(-math.inf if combiner == "max" else math.inf, dtype)
    if dtype.is_bool:
        return ex.Const(combiner == "min", dtype)
    info = np.iinfo(dtype.numpy)
    return ex.Const(info.min if combiner == "max" else info.max, dtype)


_COMBINE_OP = {"sum": "add", "prod": "mul", "max": "max", "min": "min"}
TREE_FANOUT = 64  # the most terms one serial loop adds before its partial joins a tree


class _Lowering:
    """Shared state of one operation's lowering."""

    def __init__(self, op: ComputeOp, graph: TensorGraph, target: str, name: str,
                 out: Buffer | None = None):
        self.op = op
        self.graph = graph
        self.b = KernelBuilder(name, target)
        self.ranges: dict[str, tuple[int, int]] = {}
        self.scope_vars: dict[str, str] = {}  # scope id -> var
        for src in op.inputs:
            t = graph[src]
            self.b.add_param(Buffer(src, t.dtype, tuple(t.shape), row_major_strides(t.shape), "in"))
        self.out = out or Buffer(op.name, op.dtype, tuple(op.shape), row_major_strides(op.shape), "out")
        self.b.add_param(self.out)
        self.cdtype = dt.compute_dtype(op.dtype)

    def scope(self, kind: str, var: str, extent: int, parent: str | None) -> tuple[str, ex.Var]:
        sid = self.b.scope(kind, var, extent, parent)
        self.ranges[var] = (0, extent - 1)
        self.scope_vars[sid] = var
        return sid, ex.Var(var)

    def simplify(self, e: ex.Expr | None) -> ex.Expr | None:
        if e is None:
            return None
        e = sx.simplify(e, self.ranges)
        if isinstance(e, ex.Const) and e.dtype.is_bool and e.value:
            return None
        return e

    def region(self, chain: list[str], index: dict[str, ex.Expr], guard: ex.Expr | None = None,
               staged: dict[ex.Load, str] | None = None) -> "_Region":
        return _Region(self, chain, index, self.simplify(guard), staged or {})

    def store_output(self, value: str, flat: ex.Expr, scope: str, guard: ex.Expr | None) -> None:
        if self.b._node(value).dtype != self.out.dtype:
            value = self.b.compute("cast", [value], scope, self.out.dtype)
        self.b.store(self.out.name, self.simplify(flat), value, scope, self.simplify(guard))

    def combine(self, combiner: str, a: str, b: str, scope: str) -> str:
        return self.b.compute(_COMBINE_OP[combiner], [a, b], scope, self.b._node(a).dtype)

    def serial_loops(self, chain: list[str], var: str, count: int, tree: bool):
        """Serial loops over `k` in [0, count) under `chain[-1]`: one loop, or with
        `tree` and more than `TREE_FANOUT` iterations, nested loops of at most that
        many iterations each. Returns (scope ids outermost first, k, the mask that
        keeps k below count or None)."""
        levels = [count]
        while tree and levels[0] > TREE_FANOUT:
            levels = [-(-levels[0] // TREE_FANOUT), TREE_FANOUT] + levels[1:]
        ids, k = [], ex.Const(0, dt.INDEX)
        for n, extent in enumerate(levels):
            sid, v = self.scope("serial", var if len(levels) == 1 else f"{var}l{n}", extent, (chain + ids)[-1])
            ids.append(sid)
            k = k * extent + v if n else v
        return ids, k, (ex.binary("lt", k, count) if math.prod(levels) != count else None)

    def reduce_loops(self, combiner: str, value: str, ids: list[str], mask: ex.Expr | None) -> str:
        """Combine `value` over nested serial loops, innermost first: a sum over a tree
        of loops errs as a pairwise sum does, with the depth of the tree, not with
        the number of terms."""
        acc = self.b.reduce(combiner, value, ids[-1], self.simplify(mask))
        for sid in reversed(ids[:-1]):
            acc = self.b.reduce(combiner, acc, sid)
        return acc

    def serial_reduce(self, combiner: str, chain: list[str], var: str, count: int, body) -> str:
        """Reduce over `k` in [0, count) in serial loops under `chain[-1]` (a tree of
        loops for sums); `body(chain, k, bound)` emits the value at `k` — reading only
        where `bound` (k < count, or None when the loops fit exactly) holds — and
        returns it with the mask of the terms to combine (or None)."""
        ids, k, bound = self.serial_loops(chain, var, count, tree=combiner == "sum")
        value, mask = body(chain + ids, k, bound)
        return self.reduce_loops(combiner, value, ids, ex.all_of([m for m in (mask, bound) if m is not None]))

    def load_depth(self, tensor: str, chain: list[str]) -> int:
        """The shallowest position in `chain` where a load of `tensor` may go."""
        return 0


class _Region:
    """Emits expressions at one iteration point (a chain of scopes, outermost first)."""

    def __init__(self, low: _Lowering, chain, index, guard, staged):
        self.low = low
        self.chain = chain
        self.depth_of = {low.scope_vars[s]: d for d, s in enumerate(chain)}
        self.index = index
        self.guard = guard
        self.staged = staged
        self.memo: dict[ex.Expr, tuple[str, int]] = {}

    def _depth(self, *exprs) -> int:
        d = 0
        for e in exprs:
            if e is not None:
                for v in ex.free_vars(e):
                    d = max(d, self.depth_of.get(v, 0))
        return d

    def emit(self, e: ex.Expr) -> str:
        return self._emit(e)[0]

    def _emit(self, e: ex.Expr) -> tuple[str, int]:
        if e in self.memo:
            return self.memo[e]
        b, low = self.low.b, self.low
        if isinstance(e, ex.Load) and e in self.staged:
            out = (self.staged[e], len(self.chain) - 1)
        elif isinstance(e, ex.Const):
            c = ex.Const(e.value, dt.compute_dtype(e.dtype))
            out = (b.const(c, self.chain[0]), 0)
        elif isinstance(e, ex.Var):
            idx = low.simplify(self.index[e.name])
            d = self._depth(idx)
            out = (b.index(idx, self.chain[d]), d)
        elif isinstance(e, ex.Load):
            out = self._load(e)
        elif isinstance(e, ex.Select) and not ex.loads(e.cond):
            out = self._select(e)
        else:
            args = [self._emit(c) for c in e.children]
            d = max((a[1] for a in args), default=0)
            scope = self.chain[d]
            ids = [a[0] for a in args]
            if isinstance(e, ex.Cast):
                node = b.compute("cast", ids, scope, e.dtype)
                if dt.compute_dtype(e.dtype) != e.dtype:
                    node = b.compute("cast", [node], scope, dt.compute_dtype(e.dtype))
            else:
                op = e.op if isinstance(e, (ex.Unary, ex.Binary)) else "select"
                node = b.compute(op, ids, scope, dt.compute_dtype(e.dtype))
            out = (node, d)
        self.memo[e] = out
        return out

    def _select(self, e: ex.Select) -> tuple[str, int]:
        """A select on an index condition: each branch is emitted with the condition
        (or its negation) added to the guard of its loads, so that what the select
        discards is never read from memory (a causal mask reads half the scores)."""
        cond, dc = self._emit(e.cond)
        where = ex.substitute(e.cond, self.index)
        a, da = self._branch(where)._emit(e.a)
        b, db = self._branch(ex.unary("not", where))._emit(e.b)
        d = max(dc, da, db)
        return self.low.b.compute("select", [cond, a, b], self.chain[d], dt.compute_dtype(e.dtype)), d

    def _branch(self, cond: ex.Expr) -> "_Region":
        """This region with `cond` (weakened to hold on whole runs of vector lanes, so
        that wide accesses stay wide) added to its guard; itself where no such
        condition is found."""
        low = self.low
        for sid in self.chain:
            scope = low.b._node(sid)
            if scope.op == "parallel.vector" and cond is not None:
                cond = _lane_superset(cond, scope.attr("var"), scope.attr("extent"), low.ranges)
        cond = low.simplify(cond)
        if cond is None:
            return self
        guard = low.simplify(ex.all_of(c for c in (self.guard, cond) if c is not None))
        child = _Region(low, self.chain, self.index, guard, self.staged)
        child.memo = dict(self.memo)
        return child

    def _load(self, e: ex.Load) -> tuple[str, int]:
        """A load; an index that reads a tensor (a gather's), or that computes with more
        than integer index arithmetic (an index tensor's producer fused in: nearest
        interpolation's positions through float32), is emitted as a register value and
        becomes one of the load's data indices."""
        b, low = self.low.b, self.low
        src = low.graph[e.tensor]
        offset = ex.Const(0, dt.INDEX)
        data, depths = [], []
        for i, s, n in zip(e.indices, row_major_strides(src.shape), src.shape):
            if ex.loads(i) or not ex.is_index_arithmetic(i):
                value, depth = self._emit(i)
                i = ex.Var(data_var(len(data)))
                data.append((value, n))
                depths.append(depth)
            else:
                i = ex.substitute(i, self.index)
            offset = offset + i * s
        offset = low.simplify(offset)
        pred = self.guard
        d = max(self._depth(offset, pred), low.load_depth(e.tensor, self.chain), *depths)
        scope = self.chain[d]
        node = b.load(e.tensor, offset, scope, pred, data=data)
        if dt.compute_dtype(e.dtype) != e.dtype:
            node = b.compute("cast", [node], scope, dt.compute_dtype(e.dtype))
        return node, d


_FLIP = {"lt": "ge", "le": "gt", "gt": "le", "ge": "lt", "eq": "ne", "ne": "eq"}


def _lane_superset(cond: ex.Expr, var: str, extent: int, ranges) -> ex.Expr | None:
    """A condition that holds wherever `cond` holds on some lane of the same run of
    r lanes of vector variable `var` (lanes r·a .. r·a + r - 1, r the largest power of
    two dividing `extent` over which `cond`'s comparisons are affine), and that is
    the same on every lane of a run: the predicate of loads whose values matter only
    where `cond` holds. None: no such condition was found (every lane loads)."""
    if var not in ex.free_vars(cond):
        return cond
    r = extent
    while r >= 1:
        if extent % r == 0:
            found = _exists_in_run(cond, var, r, extent, ranges)
            if found is not False:
                return found
        r //= 2
    return None


def _exists_in_run(c: ex.Expr, var: str, r: int, extent: int, ranges):
    """`_lane_superset` for runs of r lanes: an expression, None (true) or False (the
    comparisons are not affine within runs of r)."""
    if var not in ex.free_vars(c):
        return c
    if isinstance(c, ex.Unary) and c.op == "not" and isinstance(c.a, ex.Binary):
        inner = c.a
        if inner.op in _FLIP:
            return _exists_in_run(ex.Binary(_FLIP[inner.op], inner.a, inner.b), var, r, extent, ranges)
        if inner.op in ("and", "or"):
            flip = "or" if inner.op == "and" else "and"
            return _exists_in_run(ex.Binary(flip, ex.unary("not", inner.a), ex.unary("not", inner.b)),
                                  var, r, extent, ranges)
    if isinstance(c, ex.Binary) and c.op in ("and", "or"):
        a = _exists_in_run(c.a, var, r, extent, ranges)
        b = _exists_in_run(c.b, var, r, extent, ranges)
        if a is False or b is False:
            return False
        if c.op == "and":  # over-approximated: each side on its own best lane
            return b if a is None else a if b is None else ex.Binary("and", a, b)
        return None if a is None or b is None else ex.Binary("or", a, b)
    if isinstance(c, ex.Binary) and c.op in ("lt", "le", "gt", "ge") and c.a.dtype.is_int:
        run, lane = f"{var}_run", f"{var}_lane"
        local = {**ranges, run: (0, extent // r - 1), lane: (0, r - 1)}
        split = {var: ex.Var(run) * r + ex.Var(lane)}
        diff = sx.simplify(ex.substitute(c.a - c.b, split), local)
        step = sx.stride(diff, lane, local)
        if step is None:
            return False
        smallest = c.op in ("lt", "le")  # the lane that makes a - b smallest (largest for gt/ge)
        first = (step >= 0) == smallest
        at = (ex.Var(var) // r) * r + (0 if first else r - 1)
        return ex.Binary(c.op, ex.substitute(c.a, {var: at}), ex.substitute(c.b, {var: at}))
    return None


# ----------------------------------------------------------------------------- templates

def gpu_elementwise_parts(low: _Lowering, total: int, threads: int, w: int):
    """The GPU elementwise mapping of `total` elements: thread i of the grid covers
    elements [i·w, i·w + w) as one vector (w divides what it must for the loads to stay
    wide: the caller's choice), and where w does not divide `total` the thread just past
    the last whole vector covers the remainder with a scalar loop. Returns
    [(scope chain, flat element index, guard)]: the vector part, then the tail."""
    full, tail = divmod(total, w)
    count = full + (1 if tail else 0)
    threads = min(threads, max(WARP_SIZE, 1 << max(0, (count - 1).bit_length())))
    g_id, g = low.scope("grid", "g", math.ceil(count / threads), None)
    t_id, t = low.scope("block", "t", threads, g_id)
    i = g * threads + t
    if w == 1:
        return [([g_id, t_id], i, ex.binary("lt", i, total))]
    parts = []
    if full:
        v_id, v = low.scope("vector", "v", w, t_id)
        parts.append(([g_id, t_id, v_id], i * w + v, ex.binary("lt", i, full)))  # lane-invariant
    if tail:
        s_id, k = low.scope("serial", "s", tail, t_id)
        parts.append(([g_id, t_id, s_id], full * w + k, ex.binary("eq", i, full)))
    return parts


def _gpu_elementwise(low: _Lowering, s: sch.GpuElementwise) -> None:
    op = low.op
    flat_ok = flat_elementwise([op], low.graph)
    w = s.vector if flat_ok or (op.shape and op.shape[-1] % s.vector == 0) else 1
    for chain, flat, guard in gpu_elementwise_parts(low, _prod(op.shape), s.threads, w):
        index = dict(zip((a.name for a in op.axes), unflatten(flat, op.shape)))
        region = low.region(chain, index, guard)
        low.store_output(region.emit(op.body), flat, chain[-1], guard)


def _warp_reduce(low: _Lowering, combiner: str, value: str, scope: str, lanes: int = WARP_SIZE) -> str:
    """Combine `value` over each aligned group of `lanes` lanes (a power of two up to a
    warp) with butterfly shuffles; every lane of a group gets the result."""
    off = lanes // 2
    while off >= 1:
        other = low.b.shuffle("bfly", value, ex.Const(off, dt.INDEX), scope)
        value = low.combine(combiner, value, other, scope)
        off //= 2
    return value


def _gpu_row_reduce(low: _Lowering, s: sch.GpuRowReduce) -> None:
    op = low.op
    red = op.reduce
    total, k_total = _prod(op.shape), _prod(red.extents)
    w = s.vector if k_total % s.vector == 0 else 1
    threads = s.threads
    g_id, g = low.scope("grid", "g", total, None)
    t_id, t = low.scope("block", "t", threads, g_id)
    inner = t_id
    if w > 1:
        inner, v = low.scope("vector", "v", w, t_id)
    steps = max(1, math.ceil(k_total / (threads * w)))
    out_index = dict(zip((a.name for a in op.axes), unflatten(g, op.shape)))

    def body(chain, k, bound):
        kf = (k * threads + t) * w + v if w > 1 else k * threads + t
        guard = low.simplify(ex.binary("lt", (k * threads + t) * w, k_total))  # w divides k_total
        index = dict(out_index)
        index.update(zip((a.name for a in red.axes), unflatten(kf, red.extents)))
        return low.region(chain, index, guard).emit(red.body), guard

    acc = low.serial_reduce(red.combiner, [g_id, t_id] + ([inner] if w > 1 else []), "k", steps, body)
    if w > 1:
        acc = low.b.reduce(red.combiner, acc, inner)
    acc = _warp_reduce(low, red.combiner, acc, t_id)
    warps = threads // WARP_SIZE
    if warps > 1:
        cd = low.b._node(acc).dtype
        low.b.add_shared(SharedAlloc("partials", cd, warps))
        lane, warp = t % WARP_SIZE, t // WARP_SIZE
        low.b.store("partials", low.simplify(warp), acc, t_id, low.simplify(ex.binary("eq", lane, 0)))
        low.b.sync(["partials"], t_id)
        part = low.b.load("partials", low.simplify(lane), t_id,
                          low.simplify(ex.binary("lt", lane, warps)), identity(red.combiner, cd))
        acc = _warp_reduce(low, red.combiner, part, t_id)
    low.store_output(acc, g, t_id, ex.binary("eq", t, 0))


def _gpu_column_reduce(low: _Lowering, s: sch.GpuColumnReduce) -> None:
    op = low.op
    red = op.reduce
    total, k_total = _prod(op.shape), _prod(red.extents)
    threads = min(s.threads, max(WARP_SIZE, 1 << max(0, (total - 1).bit_length())))
    g_id, g = low.scope("grid", "g", math.ceil(total / threads), None)
    t_id, t = low.scope("block", "t", threads, g_id)
    flat = g * threads + t
    guard = ex.binary("lt", flat, total)
    out_index = dict(zip((a.name for a in op.axes), unflatten(flat, op.shape)))

    def body(chain, k, bound):
        index = dict(out_index)
        index.update(zip((a.name for a in red.axes), unflatten(k, red.extents)))
        return low.region(chain, index, ex.all_of([m for m in (guard, bound) if m is not None])).emit(red.body), None

    acc = low.serial_reduce(red.combiner, [g_id, t_id], "k", k_total, body)
    low.store_output(acc, flat, t_id, guard)


def _row_partial(low: _Lowering, chain: list[str], flat: ex.Expr, base: ex.Expr, row: ex.Expr) -> str:
    """A thread's partial of a column reduction: the body at output `flat` (whose
    vector lanes start at `base`) and reduction row `row`, combined over the serial and
    unroll loops that end `chain` (rows past the end and outputs past the last masked)."""
    op = low.op
    red = op.reduce
    guard = ex.all_of([ex.binary("lt", base, _prod(op.shape)), ex.binary("lt", row, _prod(red.extents))])
    index = dict(zip((a.name for a in op.axes), unflatten(flat, op.shape)))
    index.update(zip((a.name for a in red.axes), unflatten(row, red.extents)))
    value = low.region(chain, index, guard).emit(red.body)
    acc = low.b.reduce(red.combiner, value, chain[-1], low.simplify(guard))
    return low.b.reduce(red.combiner, acc, chain[-2])


def _gpu_column_tile(low: _Lowering, s: sch.GpuColumnTile) -> None:
    """Block g reduces outputs [32g, 32g + 32): thread (row r, column c) of its
    `row_threads` × `col_threads` accumulates rows r, r + row_threads, ... of outputs
    32g + c·vector + [0, vector); the partials go to shared memory (rows padded to an
    odd length, so that warp w reading column w down the rows hits distinct banks),
    and after a barrier warp w sums column w: each lane a few rows, then shuffles."""
    op = low.op
    red = op.reduce
    total, k_total = _prod(op.shape), _prod(red.extents)
    w, unroll, tile = s.vector, s.unroll, s.tile
    cols, rows = s.col_threads, s.row_threads
    g_id, g = low.scope("grid", "g", math.ceil(total / tile), None)
    t_id, t = low.scope("block", "t", s.threads, g_id)
    c, r = t % cols, t // cols
    base = g * tile + c * w
    inner, flat = t_id, base
    if w > 1:
        inner, v = low.scope("vector", "v", w, t_id)
        flat = base + v
    k_id, k = low.scope("serial", "k", math.ceil(k_total / (rows * unroll)), inner)
    u_id, u = low.scope("unroll", "u", unroll, k_id)
    chain = [g_id, t_id] + ([inner] if w > 1 else []) + [k_id, u_id]
    acc = _row_partial(low, chain, flat, base, (k * unroll + u) * rows + r)
    pitch = tile + 1
    cd = low.b._node(acc).dtype
    low.b.add_shared(SharedAlloc("partials", cd, rows * pitch))
    low.b.store("partials", low.simplify(r * pitch + (flat - g * tile)), acc, inner)
    low.b.sync(["partials"], t_id)
    lane, warp = t % WARP_SIZE, t // WARP_SIZE
    i_id, i = low.scope("unroll", "i", rows // WARP_SIZE, t_id)
    part = low.b.load("partials", low.simplify((i * WARP_SIZE + lane) * pitch + warp), i_id)
    acc = _warp_reduce(low, red.combiner, low.b.reduce(red.combiner, part, i_id), t_id)
    out = g * tile + warp
    low.store_output(acc, out, t_id, ex.all_of([ex.binary("eq", lane, 0), ex.binary("lt", out, total)]))


def _gpu_column_partials(low: _Lowering, s: sch.GpuSplitColumnReduce) -> None:
    """Phase 1 of a split column reduction: block (split, tile) reduces rows
    [split·chunk, (split+1)·chunk) for `threads·vector` outputs into partials[split, :]."""
    op = low.op
    red = op.reduce
    total, k_total = _prod(op.shape), _prod(red.extents)
    w, threads = s.vector, s.threads
    tiles = math.ceil(total / (threads * w))
    unroll = 4  # rows whose loads are in flight together
    chunk = math.ceil(math.ceil(k_total / s.splits) / unroll) * unroll
    g_id, g = low.scope("grid", "g", s.splits * tiles, None)
    t_id, t = low.scope("block", "t", threads, g_id)
    split, tile = g // tiles, g % tiles
    base = (tile * threads + t) * w
    inner, flat = t_id, base
    if w > 1:
        inner, v = low.scope("vector", "v", w, t_id)
        flat = base + v
    k_id, k = low.scope("serial", "k", chunk // unroll, inner)
    u_id, u = low.scope("unroll", "u", unroll, k_id)
    chain = [g_id, t_id] + ([inner] if w > 1 else []) + [k_id, u_id]
    acc = _row_partial(low, chain, flat, base, split * chunk + k * unroll + u)
    low.store_output(acc, split * total + flat, inner, ex.binary("lt", base, total))


def split_column_reduce(op: ComputeOp, graph: TensorGraph, s: sch.GpuSplitColumnReduce,
                         name: str) -> list[Kernel]:
    """Two kernels: partials over row slices (a float32 temporary), then their combination."""
    cd = dt.compute_dtype(op.dtype)
    total = _prod(op.shape)
    partial = Buffer(f"{op.name}_partials", cd, (s.splits, total), (total, 1), "temp")
    low = _Lowering(op, graph, "gpu", f"{name}_partials", out=partial)
    _gpu_column_partials(low, s)
    first = low.b.build(op=op.name, schedule=repr(s))
    split = ex.Var("split")
    flat = sum((a * st for a, st in zip(op.axes, row_major_strides(op.shape))), ex.Const(0, dt.INDEX))
    combine = ComputeOp(op.name, op.shape, op.dtype, op.axes,
                        ex.Reduce(op.reduce.combiner, ex.Load(partial.name, (split, flat), cd),
                                  (split,), (s.splits,)), op.label)
    second_graph = TensorGraph([Placeholder(partial.name, partial.shape, cd), combine],
                               [partial.name], [op.name])
    # the combination is a column reduction over `splits` rows: a thread per output when
    # that fills the GPU, else column tiles, whose threads also share the rows (a thread
    # per output of a [100000, 64] sum walked 527 partials serially: 23 µs on the H200)
    few = math.ceil(total / sch.GpuColumnReduce().threads) < 32
    vec = 4 if total % 4 == 0 else 1
    scheme = sch.GpuColumnTile(vector=vec, unroll=1) \
        if few and s.splits >= sch.GpuColumnTile(vector=vec).row_threads else sch.GpuColumnReduce()
    second = lower_op(combine, second_graph, scheme, name)
    return [first, second]


def _transposed_loads(op: ComputeOp, graph: TensorGraph) -> list[ex.Load]:
    """Loads whose fastest-moving memory axis is the output's second-to-last axis
    (and that move along the last one: broadcasts along it need no staging)."""
    i_ax, j_ax = op.axes[-2].name, op.axes[-1].name
    ranges = {a.name: (0, n - 1) for a, n in zip(op.axes, op.shape)}
    found = []
    for ld in op.loads:
        strides = row_major_strides(graph[ld.tensor].shape)
        offset = sum((i * s for i, s in zip(ld.indices, strides)), ex.Const(0, dt.INDEX))
        if sx.stride(offset, i_ax, ranges) == 1 and sx.stride(offset, j_ax, ranges) not in (0, 1):
            found.append(ld)
    return found


def _gpu_transpose(low: _Lowering, s: sch.GpuTranspose) -> None:
    op = low.op
    staged_loads = _transposed_loads(op, low.graph)
    T, rows, w = s.tile, s.rows, s.vector
    lanes = T // w  # threads along a tile row
    I, J = op.shape[-2], op.shape[-1]
    batch = op.shape[:-2]
    n_i, n_j = math.ceil(I / T), math.ceil(J / T)
    g_id, g = low.scope("grid", "g", _prod(batch) * n_i * n_j, None)
    t_id, t = low.scope("block", "t", lanes * rows, g_id)
    tx, ty = t % lanes, t // lanes
    bidx, ti, tj = g // (n_i * n_j), (g // n_j) % n_i, g % n_j
    batch_index = dict(zip((a.name for a in op.axes[:-2]), unflatten(bidx, batch)))
    i_ax, j_ax = op.axes[-2].name, op.axes[-1].name
    pitch = T + 1  # padding: a column of the tile spreads over the banks
    tiles = {}
    for n, ld in enumerate(staged_loads):
        name = f"tile{n}"
        low.b.add_shared(SharedAlloc(name, dt.compute_dtype(ld.dtype), T * pitch))
        tiles[ld] = name

    def lanes_of(parent):
        if w == 1:
            return parent, ex.Const(0, dt.INDEX)
        return low.scope("vector", f"v{parent[1:]}", w, parent)

    def guard(i_base, i, j_base, j):
        # w divides the extent: the guard of a vector is its first lane's
        return ex.all_of([ex.binary("lt", i_base if I % w == 0 else i, I),
                          ex.binary("lt", j_base if J % w == 0 else j, J)])

    # Phase 1: read tile rows along the input's contiguous axis (i), stage them.
    r_id, r = low.scope("serial", "r", T // rows, t_id)
    inner, v = lanes_of(r_id)
    i_base, j = ti * T + tx * w, tj * T + ty + rows * r
    chain = [g_id, t_id, r_id] + ([inner] if w > 1 else [])
    region = low.region(chain, {**batch_index, i_ax: i_base + v, j_ax: j}, guard(i_base, i_base + v, j, j))
    for ld, name in tiles.items():
        low.b.store(name, low.simplify((ty + rows * r) * pitch + tx * w + v), region.emit(ld), inner)
    low.b.sync(list(tiles.values()), t_id)
    # Phase 2: write tile rows along the output's contiguous axis (j).
    q_id, q = low.scope("serial", "q", T // rows, t_id)
    inner, v = lanes_of(q_id)
    i, j_base = ti * T + ty + rows * q, tj * T + tx * w
    chain = [g_id, t_id, q_id] + ([inner] if w > 1 else [])
    staged = {ld: low.b.load(name, low.simplify((tx * w + v) * pitch + ty + rows * q), inner)
              for ld, name in tiles.items()}
    index = {**batch_index, i_ax: i, j_ax: j_base + v}
    region = low.region(chain, index, guard(i, i, j_base, j_base + v), staged)
    flat = sum((index[a.name] * st for a, st in zip(op.axes, row_major_strides(op.shape))),
               ex.Const(0, dt.INDEX))
    low.store_output(region.emit(op.body), flat, inner, guard(i, i, j_base, j_base + v))


def _chunks(n: int, chunk: int) -> int:
    """How many equal chunks to split a row of `n` into: the fewest of length ≤ chunk."""
    if n <= chunk:
        return 1
    for c in range(2, n + 1):
        if n % c == 0 and n // c <= chunk:
            return c
    return 1  # pragma: no cover - c == n always qualifies


def _rows_and_chunks(low: _Lowering, chunk: int):
    op = low.op
    outer, n = (op.shape[:-1], op.shape[-1]) if op.shape else ((), 1)
    c = _chunks(n, chunk)
    g_id, g = low.scope("grid", "g", _prod(outer) * c, None)
    row, j0 = (g // c, (g % c) * (n // c)) if c > 1 else (g, ex.Const(0, dt.INDEX))
    out_index = dict(zip((a.name for a in op.axes[:-1]), unflatten(row, outer)))
    return g_id, row, j0, n // c, out_index


def _vector_main_and_tail(low: _Lowering, g_id: str, j0: ex.Expr, length: int, w: int, body) -> None:
    """Cover `[j0, j0 + length)` with `w`-lane vectors, then a scalar tail; `body(chain, j)`
    emits the work at position `j` in the scope chain `chain`."""
    if length // w:
        jo_id, jo = low.scope("serial", "jo", length // w, g_id)
        v_id, v = low.scope("vector", "v", w, jo_id)
        body([g_id, jo_id, v_id], j0 + jo * w + v)
    if length % w:
        jt_id, jt = low.scope("serial", "jt", length % w, g_id)
        body([g_id, jt_id], j0 + (length // w) * w + jt)


def _cpu_elementwise(low: _Lowering, s: sch.CpuElementwise) -> None:
    op = low.op
    g_id, row, j0, length, out_index = _rows_and_chunks(low, s.chunk)
    n = op.shape[-1] if op.shape else 1
    w = s.vector
    last = op.axes[-1].name if op.shape else None

    def body(chain, j):
        index = dict(out_index)
        if last is not None:
            index[last] = j
        flat = row * n + j if op.shape else ex.Const(0, dt.INDEX)
        low.store_output(low.region(chain, index).emit(op.body), flat, chain[-1], None)

    _vector_main_and_tail(low, g_id, j0, length, w, body)


def _cpu_row_reduce(low: _Lowering, s: sch.CpuRowReduce) -> None:
    op = low.op
    red = op.reduce
    k_total = _prod(red.extents)
    g_id, g = low.scope("grid", "g", _prod(op.shape), None)
    out_index = dict(zip((a.name for a in op.axes), unflatten(g, op.shape)))
    w = s.vector
    parts = []

    def body(chain, k, bound=None):
        index = dict(out_index)
        index.update(zip((a.name for a in red.axes), unflatten(k, red.extents)))
        return low.region(chain, index, bound).emit(red.body)

    if k_total // w:
        v_id, v = low.scope("vector", "v", w, g_id)
        acc = low.serial_reduce(red.combiner, [g_id, v_id], "ko", k_total // w,
                                lambda chain, ko, bound: (body(chain, ko * w + v, bound), None))
        parts.append(low.b.reduce(red.combiner, acc, v_id))
    if k_total % w:
        kt_id, kt = low.scope("serial", "kt", k_total % w, g_id)
        parts.append(low.b.reduce(red.combiner, body([g_id, kt_id], (k_total // w) * w + kt), kt_id))
    acc = parts[0]
    for p in parts[1:]:
        acc = low.combine(red.combiner, acc, p, g_id)
    low.store_output(acc, g, g_id, None)


def _cpu_column_reduce(low: _Lowering, s: sch.CpuColumnReduce) -> None:
    op = low.op
    red = op.reduce
    k_total = _prod(red.extents)
    g_id, row, j0, length, out_index = _rows_and_chunks(low, s.chunk)
    n = op.shape[-1] if op.shape else 1
    last = op.axes[-1].name if op.shape else None
    w = s.vector

    def body(chain, j):
        index = dict(out_index)
        if last is not None:
            index[last] = j

        def term(inner, k, bound):
            at = dict(index)
            at.update(zip((a.name for a in red.axes), unflatten(k, red.extents)))
            return low.region(inner, at, bound).emit(red.body), None

        acc = low.serial_reduce(red.combiner, chain, f"k{len(low.ranges)}", k_total, term)
        flat = row * n + j if op.shape else ex.Const(0, dt.INDEX)
        low.store_output(acc, flat, chain[-1], None)

    _vector_main_and_tail(low, g_id, j0, length, w, body)


_TEMPLATES = {
    sch.GpuElementwise: _gpu_elementwise,
    sch.GpuRowReduce: _gpu_row_reduce,
    sch.GpuColumnReduce: _gpu_column_reduce,
    sch.GpuColumnTile: _gpu_column_tile,
    sch.GpuTranspose: _gpu_transpose,
    sch.CpuElementwise: _cpu_elementwise,
    sch.CpuRowReduce: _cpu_row_reduce,
    sch.CpuColumnReduce: _cpu_column_reduce,
}
_NEEDS_REDUCE = (sch.GpuRowReduce, sch.GpuColumnReduce, sch.GpuColumnTile, sch.CpuRowReduce, sch.CpuColumnReduce)


def lower_op(op: ComputeOp, graph: TensorGraph, schedule: sch.Schedule, name: str | None = None) -> Kernel | None:
    """The GIR kernel computing `op` under `schedule`; None when `op` is empty."""
    if _prod(op.shape) == 0:
        return None
    if op.reduce is not None and _prod(op.reduce.extents) == 0:
        # A reduction over nothing reads nothing: every output is the identity.
        op = ComputeOp(op.name, op.shape, op.dtype, op.axes, identity(op.reduce.combiner, op.dtype), op.label)
        schedule = sch.CpuElementwise() if type(schedule).__name__.startswith("Cpu") else sch.GpuElementwise()
    if isinstance(schedule, _NEEDS_REDUCE) != (op.reduce is not None):
        raise UnsupportedError(f"schedule {schedule} does not fit {op.kind} operation {op.name}")
    if isinstance(schedule, sch.GpuTranspose) and (len(op.shape) < 2 or not _transposed_loads(op, graph)):
        schedule = sch.GpuElementwise()
    target = "cpu" if type(schedule).__name__.startswith("Cpu") else "gpu"
    low = _Lowering(op, graph, target, name or op.name)
    _TEMPLATES[type(schedule)](low, schedule)
    return low.b.build(op=op.name, schedule=repr(schedule))
