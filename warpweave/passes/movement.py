"""Data-movement passes on GIR: fewer loads, loads in the outermost scope, and a
coalescing report.

* `forward_loads` — a load of a buffer the kernel never writes, at an offset and
  predicate another load already read in the same thread (the same scopes, or a
  sibling vector scope: the register tile), reuses that register: a row of `x`
  read by the max, the sum and the output of a softmax is loaded from DRAM once
  (a gather, only where its data indices are the same register values).
* `hoist_loads` — a load of a read-only buffer moves out of every scope whose
  variable its offset and predicate do not use (gathers stay with their data
  indices).
* `prefetch_lines` — a load whose warps read only part of each 128-byte line,
  the rest being read by neighbouring threads or blocks, gets the hint
  `l2_prefetch=128` (the L2 fetches whole lines).
* `coalescing` — for each global access, the element stride between consecutive
  threads of a block (1, or contiguous vector lanes, is coalesced); where the
  offset is not affine in the thread index (a block split into rows × columns of
  threads), the 32-byte sectors the first warp touches against the fewest that
  hold its elements; a gather's offset is data, "gather" (its lanes are contiguous
  where its data index is one value for the whole vector). Recorded in the
  kernel's meta for `Program.dump("groups")`.
  Uncoalesced patterns are re-mapped by the schedules (transposes are staged
  through padded shared memory).

Widening to 16-byte accesses happens where it is decided: schedules give each
thread runs of contiguous elements in vector scopes, and code generation emits a
wide access per run when `simplify.divisor` proves the alignment.
"""
from __future__ import annotations

import numpy as np

from ..ir import expr as ex
from ..ir import simplify as sx
from ..ir.gir import WARP_SIZE, Edge, Kernel, buffers_written, data_indices, make_kernel
from .manager import Pass
from .stitch import Rewriter, aligned


def _read_only(kernel: Kernel) -> set[str]:
    written = {b for n in kernel.nodes for b in buffers_written(n)}
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
        key = sx.simplify(n.attr("offset"), ranges)
        for first in seen.get(n.attr("buffer"), []):
            al = aligned(kernel, first.scope, n.scope)
            if al is None or not al[1] <= {"vector"} or first.attr("other") != n.attr("other") \
                    or _data_sources(kernel, first) != _data_sources(kernel, n):
                continue
            rename = al[0]
            if sx.simplify(ex.substitute(first.attr("offset"), rename), ranges) != key:
                continue
            p_first, p_n = first.attr("pred"), n.attr("pred")
            if (p_first is None) != (p_n is None) or (
                    p_first is not None and sx.simplify(ex.substitute(p_first, rename), ranges)
                    != sx.simplify(p_n, ranges)):
                continue
            rw.redirect(n.id, first.id, first)
            break
        else:
            seen.setdefault(n.attr("buffer"), []).append(n)
    return make_kernel(kernel.name, rw.params, rw.shared, rw.nodes, rw.edges, kernel.target,
                       dict(kernel.meta))


def _data_sources(kernel: Kernel, load) -> tuple:
    """A load's data indices and the register values that feed them."""
    return data_indices(load), tuple(e.src for e in kernel.operands(load.id) if e.slot > 0)


def hoist_loads(kernel: Kernel) -> Kernel:
    """Move loads of read-only buffers to the outermost scope their indices allow."""
    readonly = _read_only(kernel)
    nodes = []
    for n in kernel.nodes:
        if n.op == "move.global.reg" and n.attr("buffer") in readonly and not data_indices(n):
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


def _sample_offsets(kernel: Kernel, node, counts: dict[str, int]) -> np.ndarray:
    """The distinct element offsets `node` accesses with each scope variable named in
    `counts` over its first counts[var] values, vector lanes over all of theirs and
    the other scope variables at 0 (predicates ignored)."""
    env = {}
    axes = []
    for scope in kernel.scope_chain(node.scope):
        var, extent = scope.attr("var"), scope.attr("extent")
        if var in counts or scope.scope_kind == "vector":
            axes.append((var, min(extent, counts.get(var, extent))))
        else:
            env[var] = 0
    grids = np.meshgrid(*[np.arange(n, dtype=np.int64) for _, n in axes], indexing="ij")
    env.update((var, g) for (var, _), g in zip(axes, grids))
    shape = grids[0].shape if grids else ()
    return np.unique(np.broadcast_to(ex.evaluate(node.attr("offset"), env), shape))


def _warp_sectors(kernel: Kernel, node, t: str) -> str:
    """"coalesced" when the first warp's accesses (every vector lane, the other scope
    variables at their first value, predicates ignored) touch no more 32-byte sectors
    than their distinct elements need; else how many they touch."""
    offsets = _sample_offsets(kernel, node, {t: WARP_SIZE})
    size = node.dtype.itemsize
    sectors = len(np.unique(offsets * size // 32))
    fewest = -(-len(offsets) * size // 32)
    return "coalesced" if sectors <= fewest else f"{sectors} sectors/warp, fewest {fewest}"


LINE = 128  # bytes: the L2 prefetch hint's span
NEIGHBOUR_BLOCKS = 16  # blocks sampled for the rest of a line


def _splits_lines(kernel: Kernel, node, t: str, g: str | None) -> bool:
    """Whether the first warp uses only part of some 128-byte line it touches, and
    the threads of the first few blocks (at the same iteration) read all of every
    such line: the rest of the line is wanted soon, by a neighbour."""
    size = kernel.param(node.attr("buffer")).dtype.itemsize
    if LINE % size:
        return False
    per_line = LINE // size

    def lines(offsets):
        ids, counts = np.unique(offsets // per_line, return_counts=True)
        return dict(zip(ids.tolist(), counts.tolist()))

    warp = lines(_sample_offsets(kernel, node, {t: WARP_SIZE}))
    if all(c == per_line for c in warp.values()):
        return False
    counts = {t: kernel.block} | ({g: NEIGHBOUR_BLOCKS} if g is not None else {})
    around = lines(_sample_offsets(kernel, node, counts))
    return all(around.get(line) == per_line for line in warp)


def prefetch_lines(kernel: Kernel) -> Kernel:
    """Give a load of a read-only buffer the hint `l2_prefetch=128` where each warp
    reads only part of the 128-byte lines it touches and neighbouring threads or
    blocks read the rest (a column tile of 32 bfloat16 columns reads 64 bytes of each
    line; the next tile reads the other 64): the L2 then fetches each line from DRAM
    once, in one request, instead of in two halves at different times."""
    block, grid = kernel.find_scope("block"), kernel.find_scope("grid")
    if kernel.target != "gpu" or block is None:
        return kernel
    t, g = block.attr("var"), grid.attr("var") if grid is not None else None
    readonly = _read_only(kernel)
    nodes = []
    for n in kernel.nodes:
        if n.op == "move.global.reg" and n.attr("buffer") in readonly and n.attr("l2_prefetch") is None \
                and not data_indices(n) and _splits_lines(kernel, n, t, g):
            n = n.replace(attrs={**n.attr_map, "l2_prefetch": LINE})
        nodes.append(n)
    return make_kernel(kernel.name, kernel.params, kernel.shared, nodes, kernel.edges, kernel.target,
                       dict(kernel.meta))


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
        step = sx.stride(n.attr("offset"), t, ranges)
        lanes = kernel.vector_shape(n.scope)
        width = lanes[0] if lanes else 1
        if data_indices(n):
            verdict = "gather"
        elif step is None:
            verdict = _warp_sectors(kernel, n, t)
        elif step == 0:
            verdict = "broadcast"
        elif step <= width:
            verdict = "coalesced"
        else:
            verdict = f"stride {step}"
        if n.attr("l2_prefetch"):
            verdict += f", L2 prefetch {n.attr('l2_prefetch')} B"
        notes.append(f"{n.attr('buffer')}@{n.id}:{verdict}")
    meta = dict(kernel.meta)
    meta["coalescing"] = "; ".join(notes)
    return make_kernel(kernel.name, kernel.params, kernel.shared, kernel.nodes, kernel.edges,
                       kernel.target, meta)


FORWARD_LOADS = Pass("forward-loads", forward_loads)
HOIST_LOADS = Pass("hoist-loads", hoist_loads)
PREFETCH_LINES = Pass("prefetch-lines", prefetch_lines)
COALESCING = Pass("coalescing", coalescing)
