"""Schedule templates: how one group's iteration space maps onto the machine.

A schedule is a small frozen record — which template, and its parameters — so it
can be enumerated, hashed, stored and replayed. `schedule.choose` picks one per
group; `warpweave.lower` turns (operation or group, schedule) into GIR.

GPU templates use a grid of blocks of threads (cross-thread reductions through
warp shuffles and shared memory); CPU templates use a grid of independent rows
that a thread pool splits, with explicit vector scopes and no barriers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .mma import GpuMma


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
class GpuSplitRows:
    """A row group of few long rows (fewer than the GPU has SMs): `splits` blocks of
    `threads` share each row, block j sweeping the slice [j·L, j·L + L) with L =
    `slice_length(n)` (`chunks` runs of `vector` elements per thread per pass). One
    kernel per sweep of the group: its reductions leave one float32 partial per block
    in DRAM ([rows, splits]), and every block of a later kernel first combines the
    partials of its row (its threads read them, then shuffles and shared memory). A
    last kernel combines the final partials where the group outputs a row scalar."""

    splits: int
    threads: int = 256
    vector: int = 4
    chunks: int = 4

    def passes(self, length: int) -> int:
        """Serial passes per block over its slice of a row of `length` elements."""
        return -(-(-(-length // self.splits)) // (self.threads * self.vector * self.chunks))

    def slice_length(self, length: int) -> int:
        return self.passes(length) * self.threads * self.vector * self.chunks


@dataclass(frozen=True)
class CpuRowGroup:
    """A fused row group on the CPU: one row per grid step; every phase sweeps the row
    with `vector` lanes and a scalar tail (the row stays in cache between phases)."""

    vector: int = 16


@dataclass(frozen=True)
class CpuContraction:
    """A contraction group on the CPU: a grid step per batch element and tile of `rows`
    rows of the product (0: all of them), each one `call.gemm` (the host BLAS, one
    thread per step when there are several steps) followed by the group's epilogue
    over the tile's rows, `vector` lanes along the last axis, while the tile is in
    cache."""

    rows: int = 0
    vector: int = 16


@dataclass(frozen=True)
class GpuScatter:
    """A scatter-add (`ir.scatter`): a kernel zeroes the output, then each thread adds
    `vector` consecutive terms of (reduction position, other output axes), the last
    output axis fastest, with atomic adds."""

    threads: int = 256
    vector: int = 1


@dataclass(frozen=True)
class CpuScatter:
    """A scatter-add on the CPU: the output zeroed, then one grid step adds every term
    in order (reduction positions outermost; deterministic, no atomics), `vector`
    lanes along the last output axis where the data pick another axis."""

    vector: int = 16


Schedule = (GpuElementwise | GpuRowReduce | GpuColumnReduce | GpuColumnTile | GpuSplitColumnReduce | GpuTranspose
            | GpuRowGroup | GpuSplitRows | GpuMma | GpuScatter | CpuElementwise | CpuRowReduce | CpuColumnReduce
            | CpuRowGroup | CpuContraction | CpuScatter)

MAX_TILE = 32  # register-tile elements per thread (the GPU verifier's vector limit)
