"""Fusion planning on the tensor graph: which operations share a kernel.

A `Group` is a set of operations lowered into one kernel under one iteration
mapping (its `pattern`):

* ``elementwise`` — every operation has the same shape; each output element is
  computed by one thread from the same elements of the group's tensors;
* ``row`` — a tensor of `rows` × `length` with reductions over the row: every
  operation is a row reduction (one value per row), row-elementwise (shape
  rows + [length]) or row-scalar (one value per row, after reductions);
* ``single`` — one operation under its own template (transpose, column
  reduction, contraction, a reduction over several axes);
* ``contraction`` — (when planning asks for them) a matrix product
  (`ir.contraction.match_contraction`) followed by elementwise operations of its
  output's shape that read it in place — bias, activation, residual, cast — which
  run as its epilogue on each tile of the product while the tile is in cache.
  Which products anchor one is the caller's rule (`contractions`): every
  floating-point product on the CPU, those the tensor-core template takes on the
  GPU (`schedule.mma.tensor_core_product`).

Inside a group every tensor another group member reads must be read at the
element (or row) the mapping assigns to the reader; that is what lets the
stitcher turn the DRAM round trip into a register, shuffle or shared-memory edge.
Each operation is computed once: a value with consumers inside and outside its
group is an output of the group.

`plan` starts from one group per operation and merges greedily — producer and
consumer first, then independent groups with the same mapping ("remote"
fusion) — keeping a merge only when it is legal (mapping, indexing, no cycle
between groups) and the cost model says it is cheaper.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Union

from ..ir import dtypes as dt
from ..ir import expr as ex
from ..ir import simplify as sx
from ..ir.contraction import match_contraction
from ..ir.scatter import match_scatter
from ..ir.tensor import ComputeOp, TensorGraph
from .cost import DeviceModel, GroupTraffic, group_traffic

if TYPE_CHECKING:
    import networkx as nx

_ROW_VAR = "__row{}"
_COL = ex.Var("__col")
_ELEMENTWISE_KINDS = ("elementwise", "elementwise-expensive", "broadcast")


@dataclass(frozen=True)
class Group:
    """Operations sharing one kernel, in a topological order, and the ones whose
    values leave it (graph outputs or read by another group)."""

    ops: tuple[str, ...]
    pattern: str                 # "elementwise", "row", "single" or "contraction"
    outputs: tuple[str, ...]
    rows: tuple[int, ...] = ()   # row pattern: the row shape (extents other than 1)
    length: int = 0              # row pattern: elements per row

    @property
    def anchor(self) -> str:
        """The dominant operation: the last reduction of a row group, else the last op."""
        return self.ops[-1]

    def __str__(self):
        shape = f" rows={list(self.rows)} length={self.length}" if self.pattern == "row" else ""
        return f"{self.pattern}{shape}: {', '.join(self.ops)} -> {', '.join(self.outputs)}"


@dataclass(frozen=True)
class FusionPlan:
    """Groups in launch order, with the cost model's traffic for each."""

    groups: tuple[Group, ...]
    traffic: tuple[GroupTraffic, ...]

    @property
    def estimated_time_s(self) -> float:
        return sum(t.time_s for t in self.traffic)


# ----------------------------------------------------------------------------- mappings

def _non_unit(shape) -> tuple[int, ...]:
    return tuple(n for n in shape if n != 1)


def _signature(op: ComputeOp) -> tuple[str, tuple[int, ...], int]:
    """The pattern an operation alone forms: (pattern, rows, length); a scatter-add
    (`ir.scatter`) has templates of its own."""
    red = op.reduce
    if red is not None and match_scatter(op) is not None:
        return "single", (), 0
    if red is not None:
        if op.kind == "reduction-row" and len(red.axes) == 1 and red.extents[0] > 0 \
                and _reduces_last_index(op):
            return "row", _non_unit(op.shape), red.extents[0]
        return "single", (), 0
    if op.kind in _ELEMENTWISE_KINDS:
        return "elementwise", tuple(op.shape), 0
    return "single", (), 0


def _reduces_last_index(op: ComputeOp) -> bool:
    """Every load that uses the reduction variable uses it alone, as its last index."""
    r = op.reduce.axes[0].name
    for ld in op.loads:
        if r in ex.free_vars(ld):
            if not ld.indices or ld.indices[-1] != op.reduce.axes[0]:
                return False
            if any(r in ex.free_vars(i) for i in ld.indices[:-1]):
                return False
    return True


def row_place(op: ComputeOp, rows: tuple[int, ...], length: int) -> str | None:
    """How `op` sits in a row group: "reduce", "elementwise", "scalar" or None."""
    if op.reduce is not None:
        ok = (_signature(op) == ("row", rows, length))
        return "reduce" if ok else None
    if op.kind not in _ELEMENTWISE_KINDS:
        return None
    if op.shape and op.shape[-1] == length and _non_unit(op.shape[:-1]) == rows and length != 1:
        return "elementwise"
    if _non_unit(op.shape) == rows:
        return "scalar"
    return None


def _row_indices(shape, rows_used: bool, with_col: bool) -> list[ex.Expr]:
    """Symbolic indices of a tensor in a row group: non-unit row extents take the
    row variables in order, unit extents 0, the last axis the column variable."""
    out, k = [], 0
    body = shape[:-1] if with_col else shape
    for n in body:
        if n == 1:
            out.append(ex.Const(0, dt.INDEX))
        else:
            out.append(ex.Var(_ROW_VAR.format(k)))
            k += 1
    if with_col:
        out.append(_COL)
    return out


def axis_map(op: ComputeOp, group: Group) -> dict[str, ex.Expr]:
    """Symbolic position of `op`'s axes (and reduce axis) under the group's mapping."""
    if group.pattern in ("elementwise", "contraction"):
        return {a.name: ex.Var(_ROW_VAR.format(k)) for k, a in enumerate(op.axes)}
    place = row_place(op, group.rows, group.length)
    idx = _row_indices(op.shape, True, place == "elementwise")
    out = {a.name: i for a, i in zip(op.axes, idx)}
    if place == "reduce":  # a row of one element has only column 0
        out[op.reduce.axes[0].name] = _COL if group.length != 1 else ex.Const(0, dt.INDEX)
    return out


def _reads_in_place(consumer: ComputeOp, producer: ComputeOp, group: Group) -> bool:
    """Every load of `producer` in `consumer` reads the element the mapping gives it."""
    env = axis_map(consumer, group)
    want = [axis_map(producer, group)[a.name] for a in producer.axes]
    for ld in consumer.loads:
        if ld.tensor != producer.name:
            continue
        got = [sx.simplify(ex.substitute(i, env)) for i in ld.indices]
        if got != [sx.simplify(w) for w in want]:
            return False
    return True


# ----------------------------------------------------------------------------- planning

def _merged_signature(a: Group, b: Group, graph: TensorGraph):
    """The pattern of a ∪ b, or None when no single mapping covers both."""
    if "single" in (a.pattern, b.pattern):
        return None
    if "contraction" in (a.pattern, b.pattern):
        other = b if a.pattern == "contraction" else a
        product = graph[(a if a.pattern == "contraction" else b).ops[0]]
        if other.pattern != "elementwise" or tuple(graph[other.ops[0]].shape) != tuple(product.shape):
            return None
        return "contraction", (), 0
    if a.pattern == b.pattern == "elementwise":
        shape_a, shape_b = (graph[a.ops[0]].shape, graph[b.ops[0]].shape)
        return ("elementwise", (), 0) if tuple(shape_a) == tuple(shape_b) else None
    rows = [g for g in (a, b) if g.pattern == "row"]
    if len(rows) == 2 and (rows[0].rows, rows[0].length) != (rows[1].rows, rows[1].length):
        return None
    r = rows[0]
    for g in (a, b):
        for name in g.ops:
            if row_place(graph[name], r.rows, r.length) is None:
                return None
    return "row", r.rows, r.length


def is_gemm(op: ComputeOp, graph: TensorGraph) -> bool:
    """Whether `op` is a floating-point matrix product a contraction group computes."""
    if op.reduce is None or op.reduce.combiner != "sum":
        return False
    c = match_contraction(op, graph)
    return c is not None and c.acc.is_float


ProductRule = Callable[[ComputeOp, TensorGraph], bool]
Contractions = Union[bool, ProductRule]  # False: none; True: every `is_gemm` product; or a rule


def product_rule(contractions: Contractions) -> ProductRule | None:
    """The products that anchor contraction groups under `contractions`."""
    if callable(contractions):
        return contractions
    return is_gemm if contractions else None


class _Planner:
    def __init__(self, graph: TensorGraph, device: DeviceModel, contractions: Contractions = False):
        self.graph = graph
        self.device = device
        self.ops = {op.name: op for op in graph.compute_ops}
        self.order = {op.name: k for k, op in enumerate(graph.compute_ops)}
        self.group_of: dict[str, int] = {}
        self.groups: dict[int, Group] = {}
        self._edges: nx.DiGraph | None = None
        product = product_rule(contractions)
        for k, op in enumerate(graph.compute_ops):
            pattern, rows, length = _signature(op)
            if product is not None and product(op, graph):
                pattern = "contraction"
            self.groups[k] = self._finish(Group((op.name,), pattern, (), rows, length))
            self.group_of[op.name] = k

    def _finish(self, g: Group) -> Group:
        members = set(g.ops)
        outs = tuple(n for n in g.ops
                     if n in self.graph.outputs or any(c not in members for c in self.graph.consumers(n)))
        return Group(g.ops, g.pattern, outs, g.rows, g.length)

    def _group_graph(self) -> nx.DiGraph:
        """Groups and the edges between them, built once and contracted as groups merge."""
        if self._edges is None:
            import networkx as nx

            self._edges = nx.DiGraph()
            self._edges.add_nodes_from(self.groups)
            for name, op in self.ops.items():
                for src in op.inputs:
                    if src in self.group_of and self.group_of[src] != self.group_of[name]:
                        self._edges.add_edge(self.group_of[src], self.group_of[name])
        return self._edges

    def _detour(self, x: int, y: int) -> bool:
        """Whether a path leads from group x to group y through some other group."""
        gg = self._group_graph()
        stack = [s for s in gg.successors(x) if s != y]
        seen = set(stack)
        while stack:
            for s in gg.successors(stack.pop()):
                if s == y:
                    return True
                if s not in seen:
                    seen.add(s)
                    stack.append(s)
        return False

    def _candidate(self, a: int, b: int) -> Group | None:
        ga, gb = self.groups[a], self.groups[b]
        sig = _merged_signature(ga, gb, self.graph)
        if sig is None:
            return None
        if self._detour(a, b) or self._detour(b, a):
            return None  # merging would put an outside group between members
        if sig[0] == "contraction":  # the product first, its epilogue after (a valid order: it
            product, other = (ga, gb) if ga.pattern == "contraction" else (gb, ga)  # feeds no product)
            if not self._epilogue(product, other):
                return None
            names = [*product.ops, *sorted(other.ops, key=self.order.__getitem__)]
        else:
            names = sorted(ga.ops + gb.ops, key=self.order.__getitem__)
        merged = self._finish(Group(tuple(names), sig[0], (), sig[1], sig[2]))
        members = set(names)
        for name in names:
            for src in self.ops[name].inputs:
                if src in members and not _reads_in_place(self.ops[name], self.ops[src], merged):
                    return None
        return merged

    def _epilogue(self, product: Group, other: Group) -> bool:
        """Whether `other` can follow `product` as its epilogue: it reads the product's
        group, and nothing in the product's group reads it."""
        inside, after = set(product.ops), set(other.ops)
        reads = any(src in inside for n in other.ops for src in self.ops[n].inputs)
        feeds = any(src in after for n in product.ops for src in self.ops[n].inputs)
        return reads and not feeds

    def _cost(self, *groups: Group) -> float:
        return sum(group_traffic(g, self.graph, self.device).time_s for g in groups)

    def _try_merge(self, a: int, b: int) -> bool:
        if a == b:
            return False
        merged = self._candidate(a, b)
        if merged is None or self._cost(merged) >= self._cost(self.groups[a], self.groups[b]):
            return False
        keep, gone = min(a, b), max(a, b)
        del self.groups[gone]
        self.groups[keep] = merged
        for name in merged.ops:
            self.group_of[name] = keep
        if self._edges is not None:
            gg = self._edges
            gg.add_edges_from((p, keep) for p in gg.predecessors(gone) if p != keep)
            gg.add_edges_from((keep, q) for q in gg.successors(gone) if q != keep)
            gg.remove_node(gone)
        return True

    def run(self) -> FusionPlan:
        changed = True
        while changed:  # producer → consumer merges, to a fixed point
            changed = False
            for name in sorted(self.ops, key=self.order.__getitem__):
                for src in self.ops[name].inputs:
                    if src in self.group_of and self._try_merge(self.group_of[src], self.group_of[name]):
                        changed = True
        ids = sorted(self.groups)
        for i in ids:  # remote fusion: independent groups under one mapping
            for j in ids:
                if i < j and i in self.groups and j in self.groups:
                    self._try_merge(i, j)
        import networkx as nx

        gg = self._group_graph()
        order = nx.lexicographical_topological_sort(
            gg, key=lambda k: min(self.order[n] for n in self.groups[k].ops))
        groups = tuple(self._finish(self.groups[k]) for k in order)
        return FusionPlan(groups, tuple(group_traffic(g, self.graph, self.device) for g in groups))


# ----------------------------------------------------------------------------- inlining

_INLINE_MAX_NODES = 8
# Consumers take producers while their bodies have at most this many nodes: chains of
# cheap operations (an unrolled recurrence's) would otherwise be recomputed whole in
# every consumer, and inlining them would cost time cubic in the chain's length.
_INLINE_INTO_MAX_NODES = 256


def _cheap(op: ComputeOp) -> bool:
    if op.reduce is not None or op.kind == "elementwise-expensive" or op.kind not in _ELEMENTWISE_KINDS:
        return False
    return ex.node_count(op.body, _INLINE_MAX_NODES + 1) <= _INLINE_MAX_NODES


def inline_broadcast_producers(graph: TensorGraph, contractions: Contractions = False) -> TensorGraph:
    """Substitute cheap elementwise operations (a cast, a scaled bias, a product) into
    the consumers that cannot share their kernel: those that read them under a
    broadcast (no group mapping matches both iteration spaces) and those with a
    template of their own (column reductions, transposes). Recomputing costs a few
    instructions; a separate kernel or group output costs a DRAM round trip. The
    operation stays where other consumers still read it. With `contractions` (plans
    that make contraction groups), a matrix product only takes producers that leave
    it a matrix product (widening casts), so that it keeps its template."""
    ops = {op.name: op for op in graph.compute_ops}
    product = product_rule(contractions)
    consumers: dict[str, list[str]] = {}
    for op in ops.values():
        for src in op.inputs:
            consumers.setdefault(src, []).append(op.name)
    # To a fixed point (an inlined body brings its own loads to the consumer), in passes
    # over the operations in order; an operation is looked at again only where its
    # decision may have changed: it was rewritten, or one of its readers was.
    order, dirty, rewritten = list(ops), set(ops), False
    while dirty:
        for name in order:
            op = ops.get(name)
            if name not in dirty or op is None:
                continue
            dirty.discard(name)
            readers = [ops[c] for c in dict.fromkeys(consumers.get(name, ()))
                       if c in ops and name in ops[c].inputs]
            if not readers or not _cheap(op):
                continue
            into = [c for c in readers
                    if (not _reads_one_to_one(c, name) or _signature(c)[0] == "single")
                    and ex.node_count(c.body, _INLINE_INTO_MAX_NODES + 1) <= _INLINE_INTO_MAX_NODES
                    and not (product is not None and _unmade_gemm(c, op, graph, product))]
            if not into:
                continue  # read in place: fusion keeps it in registers
            for c in into:
                ops[c.name] = _inline_into(c, op)
                dirty.add(c.name)
                for src in ops[c.name].inputs:
                    consumers.setdefault(src, []).append(c.name)
                    dirty.add(src)
            if len(into) == len(readers) and name not in graph.outputs:
                del ops[name]
            rewritten = True
        dirty &= ops.keys()
    if not rewritten:
        return graph
    return TensorGraph([graph[n] for n in graph.inputs] + list(ops.values()),
                       list(graph.inputs), list(graph.outputs))


def _unmade_gemm(consumer: ComputeOp, producer: ComputeOp, graph: TensorGraph,
                 product: ProductRule = is_gemm) -> bool:
    """Whether inlining `producer` would turn the matrix product `consumer` into
    something else (a scaled operand is a third factor)."""
    return product(consumer, graph) and not product(_inline_into(consumer, producer), graph)


def _reads_one_to_one(consumer: ComputeOp, producer: str) -> bool:
    """Every load of `producer` indexes it by distinct iteration variables: each
    element is read at one point of the consumer's iteration space (no broadcast)."""
    space = [(a.name, n) for a, n in zip(consumer.axes, consumer.shape)]
    if consumer.reduce is not None:
        space += [(a.name, n) for a, n in zip(consumer.reduce.axes, consumer.reduce.extents)]
    needed = {a for a, n in space if n > 1}
    for ld in consumer.loads:
        if ld.tensor == producer:
            names = [i.name for i in ld.indices if isinstance(i, ex.Var)]
            if len(set(names)) != len(names) or not needed <= set(names):
                return False
    return True


def _inline_into(consumer: ComputeOp, producer: ComputeOp) -> ComputeOp:
    def rewrite(node: ex.Expr, new: ex.Expr) -> ex.Expr:
        if isinstance(new, ex.Load) and new.tensor == producer.name:
            body = ex.substitute(producer.body, {a.name: i for a, i in zip(producer.axes, new.indices)})
            return body if body.dtype == producer.dtype else ex.cast(body, producer.dtype)
        return new

    return ComputeOp(consumer.name, consumer.shape, consumer.dtype, consumer.axes,
                     ex.transform(consumer.body, rewrite), consumer.label)


def recompute_row_intermediates(group: Group, graph: TensorGraph) -> tuple[Group, TensorGraph]:
    """A row group whose rows take several passes keeps no row in registers: each
    phase re-reads what it needs. Substitute the group's row-elementwise
    intermediates (those no other group reads) into their consumers, so later phases
    recompute them from the group's inputs — re-read from L2 — instead of storing and
    reloading them through DRAM; not where a consumer would then sit in the row
    otherwise (a sum of `x[:, 0]` over [n, 1] reads a column). Returns the smaller
    group and the rewritten graph."""
    ops = {op.name: op for op in graph.compute_ops}
    dropped = []
    for name in group.ops:
        op = ops[name]
        if name in group.outputs or row_place(op, group.rows, group.length) != "elementwise":
            continue
        inlined = {c: _inline_into(ops[c], op) for c in graph.graph.successors(name)}
        if any(row_place(new, group.rows, group.length) != row_place(ops[c], group.rows, group.length)
               for c, new in inlined.items()):
            continue  # a consumer would read its row otherwise (a column of [n, 1]): keep it stored
        ops.update(inlined)
        del ops[name]
        dropped.append(name)
        graph = TensorGraph([graph[n] for n in graph.inputs] + list(ops.values()),
                            list(graph.inputs), list(graph.outputs))
    kept = tuple(n for n in group.ops if n not in dropped)
    return Group(kept, group.pattern, group.outputs, group.rows, group.length), graph


def split(fusion: FusionPlan, index: int, graph: TensorGraph, device: DeviceModel,
          contractions: Contractions = False) -> FusionPlan:
    """The plan with group `index` replaced by one group per operation (in its order),
    for a group whose kernel cannot be built fused."""
    planner = _Planner(graph, device, contractions)  # starts from one group per operation
    singles = tuple(planner.groups[planner.group_of[name]] for name in fusion.groups[index].ops)
    groups = fusion.groups[:index] + singles + fusion.groups[index + 1:]
    return FusionPlan(groups, tuple(group_traffic(g, graph, device) for g in groups))


def plan(graph: TensorGraph, device: DeviceModel, fuse: bool = True,
         contractions: Contractions = False) -> FusionPlan:
    """Partition `graph`'s operations into groups (one per operation when not `fuse`);
    with `contractions` (True: every `is_gemm` product; or a rule picking products),
    matrix products form contraction groups with their epilogues."""
    planner = _Planner(graph, device, contractions)
    if not fuse:
        groups = tuple(planner.groups[k] for k in sorted(planner.groups))
        return FusionPlan(groups, tuple(group_traffic(g, graph, device) for g in groups))
    return planner.run()
