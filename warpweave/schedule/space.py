"""The schedule space of a fusion group: every legal point of its template family for
its shapes, dtypes and target, and the group's content key.

A point is legal by construction: its vector widths divide the extents they tile and
fit a 16-byte access, its thread counts are whole warps within a block's 1024, its
register tile stays within `MAX_TILE`, and its shared memory within the target's limit.
The default point (`schedule.choose`) is always in the space; the tuner searches the
rest. Enumeration is cheap (no lowering); `len(space(...))` stays in the hundreds.
"""
from __future__ import annotations

import hashlib
import math
import re

from ..ir.dtypes import compute_dtype
from ..ir.gir_verify import GPU_ARCH
from ..ir.scatter import match_scatter
from ..ir.tensor import ComputeOp, TensorGraph
from ..passes.fuse import Group
from .choose import DEFAULT_SM_COUNT, default_schedule, flat_elementwise, ragged_vector, row_access_bytes
from .contraction import contraction_space
from .mma import GpuMma, contraction_of, mma_space
from .templates import (MAX_TILE, CpuColumnReduce, CpuElementwise, CpuRowGroup, CpuRowReduce, CpuScatter,
                        GpuColumnReduce, GpuColumnTile, GpuElementwise, GpuRowGroup, GpuRowReduce,
                        GpuScatter, GpuSplitColumnReduce, GpuSplitRows, GpuTranspose, Schedule)

_POW2 = [1 << k for k in range(11)]  # 1 .. 1024
_SHARED_BYTES = 48 * 1024
MAX_CPU_LANES = 256  # the verifier's limit on a vector scope's lanes  # static shared memory a block may use without opting in


def space(group: Group, graph: TensorGraph, target: str, sm_count: int = DEFAULT_SM_COUNT,
          arch: str = GPU_ARCH) -> list[Schedule]:
    """Every legal schedule of `group` on `target` ("gpu" or "cpu"; `arch` the GPU's
    architecture), the default first."""
    if group.pattern == "contraction" and target == "cpu":
        return contraction_space(group, graph)
    default = default_schedule(group, graph, target, sm_count, arch)
    if isinstance(default, GpuMma):
        return [default] + [p for p in mma_space(contraction_of(group, graph), arch=arch) if p != default]
    points: list[Schedule] = []
    if len(group.ops) == 1:
        op = graph[group.ops[0]]
        points = _single_cpu(op) if target == "cpu" else _single_gpu(op, graph)
    if len(group.ops) > 1 or (target == "gpu" and group.pattern == "row"):
        widest = _widest(group, graph)
        if group.pattern == "row":
            access = row_access_bytes(group, graph)
            points += _row_group_cpu() if target == "cpu" else _row_group_gpu(group, access)
            if target == "gpu":
                points += _split_rows_gpu(group, access, sm_count)
        else:
            last = graph[group.anchor].shape[-1] if graph[group.anchor].shape else 1
            flat = flat_elementwise([graph[o] for o in group.ops], graph)
            points += _elementwise_cpu(widest) if target == "cpu" else _elementwise_gpu(last, widest, flat)
    return [default] + [p for p in dict.fromkeys(points) if p != default]


def group_key(group: Group, graph: TensorGraph) -> str:
    """A content hash of the group: its operations' index expressions, shapes and
    dtypes with tensors renamed in order of appearance, so the same computation on the
    same shapes has the same key in any program."""
    names: dict[str, str] = {}
    lines = [group.pattern]
    for name in group.ops:
        op = graph[name]
        for src in (*op.inputs, name):
            names.setdefault(src, f"%{len(names)}")
            if src not in group.ops:
                t = graph[src]
                lines.append(f"in {names[src]}: {t.dtype}{list(t.shape)}")
        lines.append(str(op).split("  # ")[0])
    lines.append("out " + " ".join(names[o] for o in group.outputs))
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, sorted(names, key=len, reverse=True))) + r")\b")
    text = "\n".join(pattern.sub(lambda m: names[m.group(1)], line) for line in lines)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _widest(group: Group, graph: TensorGraph) -> int:
    return max(t.dtype.itemsize for o in group.ops for t in [graph[o]] + [graph[i] for i in graph[o].inputs])


def _vectors(extent: int, itemsize: int, cap_bytes: int = 16) -> list[int]:
    """Vector widths that divide `extent` and fit a `cap_bytes` access."""
    return [w for w in _POW2 if w * itemsize <= cap_bytes and extent % w == 0]


# ----------------------------------------------------------------------------- GPU

def _elementwise_gpu(last: int, itemsize: int, flat: bool) -> list[Schedule]:
    """Vector widths dividing the last axis, or any up to 16 bytes when the vectors run
    over the flattened elements (`flat`: a scalar tail takes the remainder)."""
    return [GpuElementwise(threads=t, vector=w)
            for t in (128, 256, 512, 1024) for w in _vectors(16 if flat else last, itemsize)]


def _row_group_gpu(group: Group, itemsize: int) -> list[Schedule]:
    """Threads per row × vector × chunks per pass; passes cover the rest of the row.
    Vectors divide the row, or for long rows take 16 bytes with a scalar head and tail.
    Points whose first pass is more than twice the row, or that need more than 64
    passes, are left out (they only idle threads or re-read too often)."""
    rows, n = math.prod(group.rows) if group.rows else 1, group.length
    out = []
    widths = _vectors(n, itemsize)
    if ragged_vector(n, itemsize) not in widths:  # 16-byte runs, a scalar head and tail
        widths.append(ragged_vector(n, itemsize))
    for w in widths:
        for row_threads in _POW2:
            if n % w and row_threads < w:
                continue  # the head's and the tail's lanes
            for chunks in _POW2:
                per_pass = row_threads * w * chunks
                if w * chunks > MAX_TILE or per_pass > 2 * max(n, w) and chunks > 1:
                    continue
                if row_threads > 1 and row_threads * w > 2 * max(n, w):
                    continue
                passes = -(-n // per_pass)
                if passes > 64:
                    continue
                for threads in (128, 256, 512, 1024):
                    if threads < row_threads or threads // row_threads > 4 * max(rows, 1) * 32:
                        continue
                    out.append(GpuRowGroup(threads=threads, row_threads=row_threads, vector=w,
                                           chunks=chunks, passes=passes))
    return out


def _split_rows_gpu(group: Group, itemsize: int, sm_count: int) -> list[Schedule]:
    """Rows split over 2 to `threads` blocks (powers of two) for groups of fewer rows
    than SMs, at the widest vector dividing the row; points that would leave a block
    without elements, or need more than 64 passes per slice, are left out."""
    rows, n = math.prod(group.rows) if group.rows else 1, group.length
    if rows >= sm_count or n < 2:
        return []
    w = _vectors(n, itemsize)[-1]
    out = []
    for threads in (128, 256, 512):
        for chunks in _POW2:
            if w * chunks > MAX_TILE:
                break
            for splits in _POW2:
                if not 2 <= splits <= threads:
                    continue
                point = GpuSplitRows(splits=splits, threads=threads, vector=w, chunks=chunks)
                if (splits - 1) * point.slice_length(n) < n and point.passes(n) <= 64:
                    out.append(point)
    return out


def _single_gpu(op: ComputeOp, graph: TensorGraph) -> list[Schedule]:
    kind = op.kind
    itemsize = op.dtype.itemsize
    scatter = match_scatter(op)
    if scatter is not None:
        last = op.shape[-1] if scatter.axis != len(op.shape) - 1 else 1
        return [GpuScatter(threads=t, vector=w) for t in (128, 256, 512) for w in _vectors(last, itemsize)]
    if kind == "reduction-row":
        k = math.prod(op.reduce.extents)
        in_size = max([graph[i].dtype.itemsize for i in op.inputs] or [itemsize])
        return [GpuRowReduce(threads=t, vector=w) for t in _POW2 if t >= 32
                for w in _vectors(k, in_size)] + [GpuColumnReduce(threads=t) for t in (64, 128, 256, 512)]
    if kind in ("reduction-column", "contraction"):
        outputs, k = math.prod(op.shape), math.prod(op.reduce.extents)
        points: list[Schedule] = [GpuColumnReduce(threads=t) for t in (64, 128, 256, 512, 1024)]
        vecs = [w for w in (1, 2, 4) if outputs % w == 0]
        points += [GpuColumnTile(vector=w, unroll=u) for w in vecs for u in (1, 2, 4, 8, 16)
                   if k >= GpuColumnTile(vector=w).row_threads]
        points += [GpuSplitColumnReduce(splits=s, threads=t, vector=w)
                   for s in _POW2 if 2 <= s <= max(2, k // 16) for t in (128, 256, 512) for w in vecs]
        return points
    if kind == "layout" and len(op.shape) >= 2:
        rows, cols = op.shape[-2], op.shape[-1]
        points = []
        for tile in (32, 64):
            for r in (4, 8, 16):
                for w in (1, 2):
                    if w > 1 and (itemsize != 2 or rows % w or cols % w):
                        continue  # paired 16-bit elements: 4-byte accesses
                    threads = tile // w * r
                    if tile % r or threads % 32 or threads > 1024 \
                            or (tile + 1) * tile * itemsize > _SHARED_BYTES:
                        continue
                    points.append(GpuTranspose(tile=tile, rows=r, vector=w))
        return points
    last = op.shape[-1] if op.shape else 1
    return _elementwise_gpu(last, itemsize, flat_elementwise([op], graph))


# ----------------------------------------------------------------------------- CPU

def _lanes(itemsize: int) -> list[int]:
    """CPU vector widths of 16 to 128 bytes of the compute type."""
    return [w for w in (4, 8, 16, 32) if 16 <= w * itemsize <= 128]


def _elementwise_cpu(itemsize: int) -> list[Schedule]:
    return [CpuElementwise(vector=w, chunk=c) for w in _lanes(max(itemsize, 4))
            for c in (1 << 12, 1 << 14, 1 << 16, 1 << 18)]


def _row_group_cpu() -> list[Schedule]:
    return [CpuRowGroup(vector=w) for w in (4, 8, 16, 32)]


def _single_cpu(op: ComputeOp) -> list[Schedule]:
    itemsize = compute_dtype(op.dtype).itemsize
    if match_scatter(op) is not None:
        return [CpuScatter(vector=w) for w in _lanes(itemsize)]
    if op.kind == "reduction-row":
        return [CpuRowReduce(vector=w) for w in _lanes(itemsize)]
    if op.kind in ("reduction-column", "contraction"):
        return [CpuColumnReduce(vector=w * m, chunk=w * m) for w in _lanes(itemsize) for m in (1, 4, 16)
                if w * m <= MAX_CPU_LANES]
    return _elementwise_cpu(op.dtype.itemsize)
