"""Stitching: turn DRAM round trips inside a fused kernel into cheaper edges.

An unstitched group kernel (`lower.group`) passes every tensor through
its buffer: one store (`move.reg.global`) and loads (`move.global.reg`). For each
load of a buffer written in the kernel, the pass proves which thread wrote the
element it reads and picks the cheapest legal scheme:

* **local** — the same thread wrote it in an aligned scope (the same scopes, or
  a sibling vector scope: a register tile): the load becomes a register edge. It
  carries the value as stored, so a 16-bit float intermediate is rounded for every
  reader alike (one precision per intermediate, as PyTorch eager rounds each op's
  result), whichever scheme each reader gets;
* **warp** — the writer is the leader of the reader's row within the same warp:
  a shuffle from the leader's lane;
* **regional** — the writer is in the same block but another warp: the value
  goes through shared memory, with a block barrier between write and read;
* **global** — the same thread wrote it in an earlier loop (a serial pass over a
  row too long for registers): the round trip stays, and needs no barrier.

A store to a `temp` buffer whose loads are all stitched away is deleted, and so
is the buffer. Precondition (the lowering guarantees it): the stores of a stitched
buffer write each element at most once.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import StitchError
from ..ir import dtypes as dt
from ..ir import expr as ex
from ..ir import simplify as sx
from ..ir.gir import (WARP_SIZE, Edge, Kernel, Node, SharedAlloc, buffers_read, buffers_written,
                      data_indices, make_kernel)
from .manager import Pass

SCHEMES = ("local", "warp", "regional", "global")
MAX_TILE_BYTES = 16 * 1024  # largest shared tile one regional edge may take


@dataclass(frozen=True)
class Decision:
    buffer: str
    load: str
    scheme: str

    def __str__(self):
        return f"{self.buffer}@{self.load}:{self.scheme}"


def aligned(kernel: Kernel, a: str | None, b: str | None) -> tuple[dict[str, ex.Expr], set[str]] | None:
    """Whether scope chain `b` covers chain `a` position by position — the same
    scope, or a sibling of the same kind and extent — with the renaming of `a`'s
    variables to `b`'s and the kinds of the siblings; None when it does not."""
    ca, cb = kernel.scope_chain(a), kernel.scope_chain(b)
    if len(cb) < len(ca):
        return None
    rename, kinds = {}, set()
    for sa, sb in zip(ca, cb):
        if sa.id == sb.id:
            continue
        if sa.scope_kind != sb.scope_kind or sa.attr("extent") != sb.attr("extent") \
                or sa.scope_kind in ("grid", "block"):
            return None
        rename[sa.attr("var")] = ex.Var(sb.attr("var"))
        kinds.add(sa.scope_kind)
    return rename, kinds


def implies(have: ex.Expr | None, need: ex.Expr | None, ranges) -> bool:
    """Every conjunct of `need` is a conjunct of `have` (both simplified)."""
    got = {sx.simplify(c, ranges) for c in sx.conjuncts(have)}
    return all(sx.simplify(c, ranges) in got or sx.simplify(c, ranges) == ex.Const(True, dt.bool_)
               for c in sx.conjuncts(need))


class Rewriter:
    """Mutable copy of a kernel's parts while loads are replaced (the stitch and
    movement passes share it)."""

    def __init__(self, kernel: Kernel):
        self.k = kernel
        self.nodes = list(kernel.nodes)
        self.edges = list(kernel.edges)
        self.shared = list(kernel.shared)
        self.params = list(kernel.params)
        self._next = 1 + max((int(n.id[1:]) for n in kernel.nodes if n.id[1:].isdigit()), default=0)
        self.replaced: dict[str, str] = {}  # removed node -> the node its users read now

    def resolve(self, node_id: str) -> Node:
        """The current node standing for `node_id` (after earlier redirects)."""
        while node_id in self.replaced:
            node_id = self.replaced[node_id]
        return next(n for n in self.nodes if n.id == node_id)

    def new_id(self) -> str:
        nid = f"%{self._next}"
        self._next += 1
        return nid

    def shape_of(self, node: Node) -> tuple[int, ...]:
        return self.k.vector_shape(node.scope)

    def insert_before(self, anchor: str, *new: Node) -> None:
        pos = next(i for i, n in enumerate(self.nodes) if n.id == anchor)
        self.nodes[pos:pos] = list(new)

    def insert_after(self, anchor: str, *new: Node) -> None:
        pos = next(i for i, n in enumerate(self.nodes) if n.id == anchor)
        self.nodes[pos + 1:pos + 1] = list(new)

    def redirect(self, old: str, new: str, new_node: Node) -> None:
        """Users of `old` read `new` instead; `old` is removed."""
        shape = self.k.vector_shape(new_node.scope) if new_node.scope in self.k.scopes else ()
        out = []
        for e in self.edges:
            if e.dst == old:
                continue
            if e.src == old:
                e = Edge(new, e.dst, e.slot, "reg", new_node.dtype, shape)
            out.append(e)
        self.edges = out
        self.nodes = [n for n in self.nodes if n.id != old]
        self.replaced[old] = new

    def remove(self, node_id: str) -> None:
        self.nodes = [n for n in self.nodes if n.id != node_id]
        self.edges = [e for e in self.edges if e.src != node_id and e.dst != node_id]


def _leader_rows(kernel: Kernel, store: Node) -> int | None:
    """`tp` when the store's predicate pins one writer per `tp` consecutive threads
    (`t % tp == 0`, or `t == 0` for the whole block)."""
    block = kernel.find_scope("block")
    if block is None:
        return None
    t = block.attr("var")
    for c in sx.conjuncts(store.attr("pred")):
        if isinstance(c, ex.Binary) and c.op == "eq" and c.b == ex.Const(0, dt.INDEX):
            if c.a == ex.Var(t):
                return block.attr("extent")
            if isinstance(c.a, ex.Binary) and c.a.op == "mod" and c.a.a == ex.Var(t) \
                    and isinstance(c.a.b, ex.Const):
                return int(c.a.b.value)
    return None


def _choose(kernel: Kernel, store: Node, load: Node) -> tuple[str, dict] | None:
    """The scheme for one (store, load) pair and what its rewrite needs (none for a
    gather: which element it reads is data)."""
    if data_indices(load):
        return None
    ranges = kernel.ranges(load.scope)
    off_l = sx.simplify(load.attr("offset"), ranges)
    al = aligned(kernel, store.scope, load.scope)
    if al is not None:
        rename, kinds = al
        off_s = sx.simplify(ex.substitute(store.attr("offset"), rename), ranges)
        pred_s = ex.substitute(store.attr("pred"), rename) if store.attr("pred") is not None else None
        if off_s == off_l and implies(load.attr("pred"), pred_s, ranges):
            return ("local", {}) if kinds <= {"vector"} else ("global", {})
    tp = _leader_rows(kernel, store)
    block = kernel.find_scope("block")
    if tp is None or store.scope != block.id:
        return None
    if "block" not in [s.scope_kind for s in kernel.scope_chain(load.scope)]:
        return None  # the exchange happens in the block scope, where the load can see it
    t = ex.Var(block.attr("var"))
    lead = {t.name: (t // tp) * tp}
    ranges_b = kernel.ranges(block.id)
    off_s = sx.simplify(ex.substitute(store.attr("offset"), lead), ranges)
    pred_s = sx.simplify(ex.substitute(store.attr("pred"), lead), ranges_b)
    if off_s != off_l or not implies(load.attr("pred"), pred_s, ranges):
        return None
    if tp <= WARP_SIZE and WARP_SIZE % tp == 0:
        lane = sx.simplify((t % WARP_SIZE) // tp * tp, ranges_b)
        return "warp", {"lane": lane}
    # The block's tile: offsets relative to the block's first writer (thread 0),
    # which must not depend on the grid variable and must stay inside the tile.
    g = kernel.find_scope("grid").attr("var")
    base = ex.substitute(store.attr("offset"), {t.name: ex.Const(0, dt.INDEX)})
    local_s = sx.simplify(store.attr("offset") - base, ranges_b)
    local_l = sx.simplify(off_l - base, ranges)
    spans = [sx.bounds(e, rg) for e, rg in ((local_s, ranges_b), (local_l, ranges))]
    if any(b is None or b[0] < 0 for b in spans) \
            or any(g in ex.free_vars(e) for e in (local_s, local_l)):
        return None
    band = max(b[1] for b in spans) + 1
    if band * store.dtype.itemsize > MAX_TILE_BYTES:
        return None
    return "regional", {"size": band, "store_offset": local_s, "load_offset": local_l}


def stitch(kernel: Kernel) -> Kernel:
    """Stitch every round trip through a buffer written in the kernel (see module doc)."""
    stores: dict[str, list[Node]] = {}
    loads: dict[str, list[Node]] = {}
    for n in kernel.nodes:
        if n.op == "move.reg.global":
            stores.setdefault(n.attr("buffer"), []).append(n)
        elif n.op == "move.global.reg":
            loads.setdefault(n.attr("buffer"), []).append(n)
    rw = Rewriter(kernel)
    decisions: list[Decision] = []
    for buf, ss in stores.items():
        if buf not in loads:
            continue
        kept = 0
        regional: dict[str, tuple[str, str]] = {}
        for load in loads[buf]:
            match = next(((st, c) for st in ss for c in [_choose(kernel, st, load)] if c is not None), None)
            if match is None:
                raise StitchError(f"kernel {kernel.name}: cannot stitch {load.id} reading {buf} "
                                  f"(no thread mapping proves who wrote it within a block, in "
                                  f"at most {MAX_TILE_BYTES} bytes of shared memory)")
            store, (scheme, info) = match
            value = rw.resolve(next(e.src for e in kernel.operands(store.id) if e.slot == 1))
            value_id = value.id
            decisions.append(Decision(buf, load.id, scheme))
            if scheme == "global":
                kept += 1
            elif scheme == "local":
                rw.redirect(load.id, value_id, value)
            elif scheme == "warp":
                _exchange(rw, load, _shuffle(rw, kernel, value, load, info["lane"]))
            else:
                if store.id not in regional:
                    regional[store.id] = _to_shared(rw, kernel, store, value, info)
                _exchange(rw, load, _shared_load(rw, kernel, regional[store.id], load, info))
        if not kept and kernel.param(buf).role == "temp":
            for store in ss:
                rw.remove(store.id)
    return _rebuild(kernel, rw, decisions)


def _shuffle(rw: Rewriter, kernel: Kernel, value: Node, load: Node, lane: ex.Expr) -> Node:
    """The leader's value, read by every lane of its row (in the block scope)."""
    node = Node(rw.new_id(), "move.reg.reg", kernel.find_scope("block").id, value.dtype,
                (("lane", lane), ("mode", "idx")))
    rw.edges.append(Edge(value.id, node.id, 0, "reg", value.dtype, ()))
    rw.insert_before(load.id, node)
    return node


def _to_shared(rw: Rewriter, kernel: Kernel, store: Node, value: Node, info) -> tuple[str, str]:
    """The store also writes a shared tile, followed by a barrier: (tile, barrier id)."""
    tile = f"{store.attr('buffer')}_tile"
    rw.shared.append(SharedAlloc(tile, store.dtype, info["size"]))
    mem = Node(rw.new_id(), "mem.shared", None, store.dtype, (("buffer", tile),))
    put = Node(rw.new_id(), "move.reg.shared", store.scope, store.dtype,
               (("buffer", tile), ("offset", info["store_offset"]), ("pred", store.attr("pred"))))
    bar = Node(rw.new_id(), "sync.block", store.scope, None, ())
    rw.nodes.insert(0, mem)
    rw.insert_after(store.id, put, bar)
    rw.edges += [Edge(mem.id, put.id, 0, "shared", store.dtype), Edge(value.id, put.id, 1, "reg", value.dtype),
                 Edge(put.id, bar.id, 0, "shared", store.dtype)]
    return tile, bar.id


def _shared_load(rw: Rewriter, kernel: Kernel, regional, load: Node, info) -> Node:
    tile, bar = regional
    block = kernel.find_scope("block")
    node = Node(rw.new_id(), "move.shared.reg", block.id, load.dtype,
                (("buffer", tile), ("offset", info["load_offset"]), ("other", load.attr("other")),
                 ("pred", None)))
    rw.edges.append(Edge(bar, node.id, 0, "shared", load.dtype))
    rw.insert_before(load.id, node)
    return node


def _exchange(rw: Rewriter, load: Node, got: Node) -> None:
    """Users of `load` read `got`, kept to the load's predicate where it may fail."""
    pred = load.attr("pred")
    if pred is None:
        rw.redirect(load.id, got.id, got)
        return
    cond = Node(rw.new_id(), "compute.index", load.scope, dt.bool_, (("expr", pred),))
    other = Node(rw.new_id(), "compute.const", load.scope, load.dtype, (("value", load.attr("other")),))
    sel = Node(rw.new_id(), "compute.select", load.scope, load.dtype, ())
    rw.insert_before(load.id, cond, other, sel)
    rw.edges += [Edge(cond.id, sel.id, 0, "reg", dt.bool_, rw.k.vector_shape(load.scope)),
                 Edge(got.id, sel.id, 1, "reg", got.dtype, rw.k.vector_shape(got.scope)),
                 Edge(other.id, sel.id, 2, "reg", load.dtype, rw.k.vector_shape(load.scope))]
    rw.redirect(load.id, sel.id, sel)


def _rebuild(kernel: Kernel, rw: Rewriter, decisions: list[Decision]) -> Kernel:
    used = {n.attr("buffer") for n in rw.nodes if n.family in ("move",) and n.attr("buffer")}
    used |= {b for n in rw.nodes if n.family == "call" for b in (*buffers_read(n), *buffers_written(n))}
    dead_mem = {n.id for n in rw.nodes if n.op == "mem.global" and n.attr("buffer") not in used}
    nodes = [n for n in rw.nodes if n.id not in dead_mem]
    edges = [e for e in rw.edges if e.src not in dead_mem and e.dst not in dead_mem]
    params = [p for p in rw.params if p.name in used or p.role != "temp"]
    meta = dict(kernel.meta)
    if decisions:
        meta["stitched"] = " ".join(str(d) for d in decisions)
    return make_kernel(kernel.name, params, rw.shared, nodes, edges, kernel.target, meta)


STITCH = Pass("stitch", stitch)
