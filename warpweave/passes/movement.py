"""Data-movement passes on GIR: fewer loads, loads in the outermost scope, and a
coalescing report.

* `forward_loads` — a load of a buffer the kernel never writes, at an offset and
  predicate another load already read in the same thread (the same scopes, or a
  sibling vector scope: the register tile), reuses that register: a row of `x`
  read by the max, the sum and the output of a softmax is loaded from DRAM once.
* `hoist_loads` — a load of a read-only buffer moves out of every scope whose
  variable its offset and predicate do not use.
* `coalescing` — for each global access, the element stride between consecutive
  threads of a block (1, or contiguous vector lanes, is coalesced); where the
  offset is not affine in the thread index (a block split into rows × columns of
  threads), the 32-byte sectors the first warp touches against the fewest that
  hold its elements. Recorded in the kernel's meta for `Program.dump("groups")`.
  Uncoalesced patterns are re-mapped by the schedules (transposes are staged
  through padded shared memory).

Widening to 16-byte accesses happens where it is decided: schedules give each
thread runs of contiguous elements in vector scopes, and code generation emits a
wide access per run when `expr.divisor` proves the alignment.
"""
from __future__ import annotations

import numpy as np

from ..ir import expr as ex
from ..ir.gir import WARP_SIZE, Edge, Kernel, make_kernel
from .manager import Pass
from .stitch import Rewriter, aligned


def _read_only(kernel: Kernel) -> set[str]:
    written = {n.attr("buffer") for n in kernel.nodes if n.op in ("move.reg.global", "move.reg.shared")}
    return {p.name for p in kernel.params} - written


def forward_loads(kernel: Kernel) -> Kernel:
    """Reuse an earlier load's register for a repeated load of a read-only buffer."""
    readonly = _read_only(kernel)
    rw = Rewriter(kernel)
    seen: dict[str, list] = {}
    for n in kernel.nodes:
        if n.op != "move.global.reg" or n.attr("buffer") not in readonly:
            continue
        ranges = kernel.ranges(n.scope)
        key = ex.simplify(n.attr("offset"), ranges)
        for first in seen.get(n.attr("buffer"), []):
            al = aligned(kernel, first.scope, n.scope)
            if al is None or not al[1] <= {"vector"} or first.attr("other") != n.attr("other"):
                continue
            rename = al[0]
            if ex.simplify(ex.substitute(first.attr("offset"), rename), ranges) != key:
                continue
            p_first, p_n = first.attr("pred"), n.attr("pred")
            if (p_first is None) != (p_n is None) or (
                    p_first is not None and ex.simplify(ex.substitute(p_first, rename), ranges)
                    != ex.simplify(p_n, ranges)):
                continue
            rw.redirect(n.id, first.id, first)
            break
        else:
            seen.setdefault(n.attr("buffer"), []).append(n)
    return make_kernel(kernel.name, rw.params, rw.shared, rw.nodes, rw.edges, kernel.target,
                       dict(kernel.meta))


def hoist_loads(kernel: Kernel) -> Kernel:
    """Move loads of read-only buffers to the outermost scope their indices allow."""
    readonly = _read_only(kernel)
    nodes = []
    for n in kernel.nodes:
        if n.op == "move.global.reg" and n.attr("buffer") in readonly:
            used = ex.free_vars(n.attr("offset")) | (ex.free_vars(n.attr("pred")) if n.attr("pred") is not None else set())
            chain = kernel.scope_chain(n.scope)
            keep = 0
            for d, s in enumerate(chain):
                if s.attr("var") in used or s.scope_kind in ("grid", "block"):
                    keep = d
            target = chain[keep].id if chain else n.scope
            if target != n.scope and not _vector_between(chain, keep):
                n = n.replace(scope=target)
        nodes.append(n)
    return make_kernel(kernel.name, kernel.params, kernel.shared, nodes,
                       _reshape_edges(kernel, nodes), kernel.target, dict(kernel.meta))


def _vector_between(chain, keep: int) -> bool:
    """Leaving a vector scope changes the value's shape: only hoist above serial and
    unroll scopes (a vector value stays where its lanes are)."""
    return any(s.scope_kind == "vector" for s in chain[keep + 1:])


def _reshape_edges(kernel: Kernel, nodes) -> list:
    scope_of = {n.id: n.scope for n in nodes}
    out = []
    for e in kernel.edges:
        if e.level == "reg":
            e = Edge(e.src, e.dst, e.slot, e.level, e.dtype, kernel.vector_shape(scope_of[e.src]))
        out.append(e)
    return out


def _warp_sectors(kernel: Kernel, node, t: str) -> str:
    """"coalesced" when the first warp's accesses (every vector lane, the other scope
    variables at their first value, predicates ignored) touch no more 32-byte sectors
    than their distinct elements need; else how many they touch."""
    env = {}
    axes = []
    for scope in kernel.scope_chain(node.scope):
        var, extent = scope.attr("var"), scope.attr("extent")
        if var == t or scope.scope_kind == "vector":
            axes.append((var, min(extent, WARP_SIZE) if var == t else extent))
        else:
            env[var] = 0
    grids = np.meshgrid(*[np.arange(n, dtype=np.int64) for _, n in axes], indexing="ij")
    env.update((var, g) for (var, _), g in zip(axes, grids))
    offsets = np.unique(np.broadcast_to(ex.evaluate(node.attr("offset"), env), grids[0].shape))
    size = node.dtype.itemsize
    sectors = len(np.unique(offsets * size // 32))
    fewest = -(-len(offsets) * size // 32)
    return "coalesced" if sectors <= fewest else f"{sectors} sectors/warp, fewest {fewest}"


def coalescing(kernel: Kernel) -> Kernel:
    """Record, per global access, the stride between neighbouring threads."""
    block = kernel.find_scope("block")
    if block is None:
        return kernel
    t = block.attr("var")
    notes = []
    for n in kernel.nodes:
        if n.op not in ("move.global.reg", "move.reg.global"):
            continue
        ranges = kernel.ranges(n.scope)
        step = ex.stride(n.attr("offset"), t, ranges)
        lanes = kernel.vector_shape(n.scope)
        width = lanes[0] if lanes else 1
        if step is None:
            verdict = _warp_sectors(kernel, n, t)
        elif step == 0:
            verdict = "broadcast"
        elif step <= width:
            verdict = "coalesced"
        else:
            verdict = f"stride {step}"
        notes.append(f"{n.attr('buffer')}@{n.id}:{verdict}")
    meta = dict(kernel.meta)
    meta["coalescing"] = "; ".join(notes)
    return make_kernel(kernel.name, kernel.params, kernel.shared, kernel.nodes, kernel.edges,
                       kernel.target, meta)


FORWARD_LOADS = Pass("forward-loads", forward_loads)
HOIST_LOADS = Pass("hoist-loads", hoist_loads)
COALESCING = Pass("coalescing", coalescing)
