"""Schedules: how one group's iteration space maps onto the machine.

A schedule is a small frozen record — which template, and its parameters — so it
can be enumerated, hashed, stored and replayed. `choose` picks one per operation
from its kind and shape; `compiler.lower` turns (operation, schedule) into GIR.

GPU templates use a grid of blocks of threads (cross-thread reductions through
warp shuffles and shared memory); CPU templates use a grid of independent rows
that a thread pool splits, with explicit vector scopes and no barriers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..ir.dtypes import compute_dtype
from ..ir.tensor import ComputeOp


@dataclass(frozen=True)
class GpuElementwise:
    """One thread per `vector` consecutive output elements, `threads` per block."""

    threads: int = 256
    vector: int = 4


@dataclass(frozen=True)
class GpuRowReduce:
    """One block per output element; its threads stride over the reduction, each
    reading `vector` consecutive elements, then combine through warp shuffles and
    shared memory."""

    threads: int = 256
    vector: int = 4


@dataclass(frozen=True)
class GpuColumnReduce:
    """One thread per output element, a serial loop over the reduction (coalesced
    when consecutive outputs are consecutive in memory: column sums, matmul)."""

    threads: int = 256


@dataclass(frozen=True)
class GpuColumnTile:
    """A column reduction whose outputs fill the GPU a block per tile but not a thread
    per output: a block per `32` consecutive outputs (a tile), `32 // vector` threads
    across the tile (each reading `vector` consecutive outputs' inputs) times
    `32 * vector` threads striding down the reduction with `unroll` rows in flight;
    their partials meet in padded shared memory, where one warp per output combines
    them. One kernel, every input read once."""

    vector: int = 4
    unroll: int = 8

    tile: ClassVar[int] = 32
    threads: ClassVar[int] = 1024

    @property
    def col_threads(self) -> int:
        return self.tile // self.vector

    @property
    def row_threads(self) -> int:
        return self.threads // self.col_threads


@dataclass(frozen=True)
class GpuSplitColumnReduce:
    """A column reduction with too few outputs to fill the GPU: `splits` blocks per
    column tile each reduce a slice of the rows into float32 partials (threads read
    `vector` consecutive outputs' inputs), and a second kernel combines the partials."""

    splits: int
    threads: int = 256
    vector: int = 4


@dataclass(frozen=True)
class GpuTranspose:
    """`tile`×`tile` tiles staged through padded shared memory: a block of 32 × `rows`
    threads, each reading and writing `vector` consecutive elements."""

    tile: int = 32
    rows: int = 8
    vector: int = 1


@dataclass(frozen=True)
class CpuElementwise:
    """Rows (or row chunks) across the thread pool; `vector` lanes along the last
    axis with a scalar tail."""

    vector: int = 16
    chunk: int = 1 << 16


@dataclass(frozen=True)
class CpuRowReduce:
    """One output element per grid step; `vector` partial accumulators along the
    reduction, combined at the end, with a scalar tail."""

    vector: int = 16


@dataclass(frozen=True)
class CpuColumnReduce:
    """`vector` consecutive outputs per step accumulated together over the
    reduction (column sums, contractions): one wide contiguous read per row of the
    reduction, accumulators in registers; a scalar tail."""

    vector: int = 256
    chunk: int = 256


@dataclass(frozen=True)
class GpuRowGroup:
    """A fused row group: `row_threads` threads per row (up to a warp: shuffles only;
    more: shuffles, then shared memory), `threads // row_threads` rows per block. Each
    thread holds `chunks` runs of `vector` contiguous elements of its row per pass — a
    register tile that stays live across the group's phases — and `passes` serial
    passes cover a row too long for registers (phases then re-read their inputs)."""

    threads: int = 256
    row_threads: int = 256
    vector: int = 4
    chunks: int = 4
    passes: int = 1


@dataclass(frozen=True)
class CpuRowGroup:
    """A fused row group on the CPU: one row per grid step; every phase sweeps the row
    with `vector` lanes and a scalar tail (the row stays in cache between phases)."""

    vector: int = 16


Schedule = (GpuElementwise | GpuRowReduce | GpuColumnReduce | GpuColumnTile | GpuSplitColumnReduce | GpuTranspose
            | GpuRowGroup | CpuElementwise | CpuRowReduce | CpuColumnReduce | CpuRowGroup)

MAX_TILE = 32  # register-tile elements per thread (the GPU verifier's vector limit)

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
    tiles = -(-outputs // (256 * vec))
    splits = max(2, min(k // 16, -(-4 * sm_count // tiles)))
    chunk = -(-k // splits)
    return GpuSplitColumnReduce(splits=-(-k // chunk), vector=vec)
