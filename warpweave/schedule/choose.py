"""The default schedule of a fusion group: a template and its parameters chosen from
the group's kind, shapes and dtypes and the target."""
from __future__ import annotations

import numpy as np

from ..ir.dtypes import compute_dtype
from ..ir.tensor import ComputeOp, TensorGraph
from ..passes.fuse import Group
from .contraction import choose_contraction
from .templates import (MAX_TILE, CpuColumnReduce, CpuElementwise, CpuRowGroup, CpuRowReduce,
                        GpuColumnReduce, GpuColumnTile, GpuElementwise, GpuRowGroup, GpuRowReduce,
                        GpuSplitColumnReduce, GpuTranspose, Schedule)


DEFAULT_SM_COUNT = 132  # H100 / H200; the driver passes the device's own count


def _pow2_at_most(n: int, cap: int) -> int:
    p = 1
    while p * 2 <= min(n, cap):
        p *= 2
    return p


def choose(op: ComputeOp, target: str, sm_count: int = DEFAULT_SM_COUNT) -> Schedule:
    """The default schedule for `op` on `target` ("gpu" or "cpu")."""
    kind = op.kind
    lanes16 = 16 // op.dtype.itemsize  # elements of one 16-byte access
    if target == "cpu":
        lanes64 = max(1, 64 // compute_dtype(op.dtype).itemsize)
        if kind == "reduction-row":
            return CpuRowReduce(vector=lanes64)
        if kind in ("reduction-column", "contraction"):
            return CpuColumnReduce(vector=16 * lanes64, chunk=16 * lanes64)  # 1 KB of each row
        return CpuElementwise(vector=lanes64)
    if kind == "reduction-row":
        k = 1
        for e in op.reduce.extents:
            k *= e
        vec = lanes16 if k % lanes16 == 0 else 1
        threads = max(32, _pow2_at_most(max(1, k // vec), 256))
        return GpuRowReduce(threads=threads, vector=vec)
    if kind in ("reduction-column", "contraction"):
        return _column_reduce(op, sm_count)
    if kind == "layout" and len(op.shape) >= 2:
        if op.dtype.itemsize == 2 and op.shape[-1] % 2 == 0 and op.shape[-2] % 2 == 0:
            return GpuTranspose(tile=64, vector=2)  # 4-byte accesses for 16-bit types
        return GpuTranspose()
    last = op.shape[-1] if op.shape else 1
    vec = lanes16 if last % lanes16 == 0 else 1
    return GpuElementwise(vector=vec)


def choose_row_group(length: int, rows: int, dtype_bytes: int, target: str) -> Schedule:
    """The mapping of a fused row group whose rows hold `length` elements of at most
    `dtype_bytes` bytes (the widest tensor the group moves)."""
    if target == "cpu":
        return CpuRowGroup(vector=max(1, 64 // max(4, dtype_bytes)))
    w = 16 // dtype_bytes
    while w > 1 and length % w:
        w //= 2
    # about four 16-byte runs per thread per pass; a whole row in one pass when it fits
    tile = min(MAX_TILE, 4 * w)
    row_threads = min(1024, max(1, _next_pow2(-(-length // tile))))
    chunks = max(1, min(MAX_TILE // w, -(-length // (row_threads * w))))
    passes = -(-length // (row_threads * w * chunks))
    threads = max(row_threads, min(256, _next_pow2(rows * row_threads)), 32)
    return GpuRowGroup(threads=threads, row_threads=row_threads, vector=w, chunks=chunks, passes=passes)


GROUP_TEMPLATES = (GpuRowGroup, CpuRowGroup)
SHORT_ROW = 4096  # templates that lower a group of any size


def default_schedule(group: Group, graph: TensorGraph, target: str, sm_count: int = DEFAULT_SM_COUNT) -> Schedule:
    """The default schedule of a fusion group on `target` ("gpu" or "cpu"). On the GPU a
    row group of one reduction over rows of at most `SHORT_ROW` elements takes the
    row-group template too: it maps several short rows to a block (a block per row of
    seven elements wastes the GPU; H200, 2026-12-02: a [1000003, 7] row sum 604 → 8 µs),
    while longer rows keep the row reduction's block per row (a [4096, 100003] sum:
    372 µs against the row group's 599)."""
    if group.pattern == "contraction":
        return choose_contraction(group, graph)
    if len(group.ops) > 1 or (target == "gpu" and group.pattern == "row" and group.length <= SHORT_ROW):
        return choose_group(group, graph, target)
    return choose(graph[group.ops[0]], target, sm_count)


def choose_group(group: Group, graph: TensorGraph, target: str) -> Schedule:
    """The default schedule of a fused group of several operations on `target`
    ("gpu" or "cpu"): a row group's mapping, or an elementwise vector width."""
    widest = max(t.dtype.itemsize for o in group.ops for t in
                 [graph[o]] + [graph[i] for i in graph[o].inputs])
    if group.pattern == "row":
        rows = int(np.prod(group.rows, dtype=np.int64)) if group.rows else 1
        return choose_row_group(group.length, rows, widest, target)
    shape = graph[group.anchor].shape
    lanes = max(1, (64 if target == "cpu" else 16) // max(widest, 4 if target == "cpu" else 1))
    if target == "gpu" and shape and shape[-1] % lanes:
        lanes = 1
    return CpuElementwise(vector=lanes) if target == "cpu" else GpuElementwise(vector=lanes)


def _next_pow2(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


def _column_reduce(op: ComputeOp, sm_count: int) -> Schedule:
    """One thread per output when that fills the GPU; for a long reduction, a block
    of 1024 threads per 32 outputs when that occupies a sixth of the SMs or more (on
    the H100 it beats a split reduction's two kernels down to 24 blocks); else split
    the reduction so that about four blocks per SM stream the rows."""
    outputs, k = 1, 1
    for n in op.shape:
        outputs *= n
    for n in op.reduce.extents:
        k *= n
    plain = GpuColumnReduce()
    if -(-outputs // plain.threads) >= 2 * sm_count or k < 64:
        return plain
    tile = GpuColumnTile(vector=4 if outputs % 4 == 0 else 1)
    if 6 * -(-outputs // tile.tile) >= sm_count and k >= tile.row_threads * tile.unroll:
        return tile
    vec = 4 if outputs % 4 == 0 else 1
    # as many threads across the outputs as there are outputs (up to 256), and enough
    # blocks for about a thousand threads per SM
    threads = min(256, max(32, _next_pow2(-(-outputs // vec))))
    tiles = -(-outputs // (threads * vec))
    splits = max(2, min(k // 16, -(-4 * (256 // threads) * sm_count // tiles)))
    chunk = -(-k // splits)
    return GpuSplitColumnReduce(splits=-(-k // chunk), threads=threads, vector=vec)
