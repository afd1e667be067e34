"""Schedules for contractions on the GPU's tensor cores (`GpuMma`) and their space.

`GpuMma` tiles `out[b, m, n] = sum_k a[b, m, k] b[b, k, n]` into block tiles of
block_m x block_n (one thread block each, warps_m x warps_n warps of 32 threads,
each warp a (block_m / warps_m) x (block_n / warps_n) tile of m16n8k16 MMAs) and
walks k in steps of block_k through a ring of `stages` shared-memory stages filled
by cp.async (dynamic shared memory above 48 KiB, up to sm_90's 227 KiB). Blocks
take output tiles in groups of `raster` block rows, column by column within a
group (1: row by row), so that blocks running together share operand tiles in L2.
With `instr="wgmma"` (sm_90) the block is warps_m x warps_n warpgroups of four warps;
each warpgroup computes (block_m / warps_m) x (block_n / warps_n) in slabs of 64 rows
by wgmma.m64nNk16, both operands read from the shared stages through descriptors.
With `loader="tma"` (wgmma only) one thread fills each stage by bulk tensor copies
(TMA) that complete on a shared-memory barrier, instead of every thread's cp.async.
`mma_space` lists the legal points for a contraction and a device; `default_mma`
picks one by `mma_time`, a model of waves, occupancy and traffic per tile.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..ir import dtypes as dt
from ..ir.contraction import Contraction
from ..ir.gir import PANEL
from ..ir.gir_verify import GPU_ARCH, SHARED_BYTES_PER_ARCH

MMA_DTYPES = (dt.bfloat16, dt.float16)
MAX_SHARED_BYTES = SHARED_BYTES_PER_ARCH[GPU_ARCH]  # per block, dynamic above 48 KiB
MAX_REGISTERS = 255  # per thread
# Registers a thread needs besides accumulators and fragments (addresses, indices,
# loop state): ptxas, sm_90, 2026-12-02: 128 x 128 x 32 tiles of 2 x 2 warps use 212
# registers for 128 accumulators and 64 fragment registers.
_OTHER_REGISTERS = 24
WARPGROUP = 4  # warps of a wgmma warpgroup
INSTRUCTIONS = ("mma.sync", "wgmma")  # what GpuMma.instr may name
WGMMA_ARCHS = ("sm_90", "sm_90a")  # the architectures with wgmma
WGMMA_N = range(16, 257, 16)  # the wgmma n a warpgroup's columns may be (PTX allows multiples of 8)
LOADERS = ("cp.async", "tma")  # what GpuMma.loader may name
TMA_MAX_RANK = 5  # axes of a tensor map


@dataclass(frozen=True)
class GpuMma:
    block_m: int
    block_n: int
    block_k: int
    warps_m: int
    warps_n: int
    stages: int
    split_k: int = 1  # k-tile slices, each a block per output tile (then a kernel sums them)
    raster: int = 1   # block rows per group of the tile order (1: row-major order)
    instr: str = "mma.sync"  # or "wgmma": then warps_m x warps_n count warpgroups
    loader: str = "cp.async"  # or "tma" (wgmma only): how the shared stages are filled

    @property
    def threads(self) -> int:
        return 32 * self.warps_m * self.warps_n * (WARPGROUP if self.instr == "wgmma" else 1)

    def shared_bytes(self, itemsize: int = 2) -> int:
        return self.stages * (self.block_m + self.block_n) * self.block_k * itemsize

    @property
    def registers(self) -> int:
        """An estimate of the registers a thread uses: float32 accumulators, one k-tile's
        A and B fragments (32-bit registers of two elements) and `_OTHER_REGISTERS`."""
        wm, wn = self.block_m // self.warps_m, self.block_n // self.warps_n
        if self.instr == "wgmma":  # a warpgroup's accumulators, no fragments
            return wm * wn // (32 * WARPGROUP) + _OTHER_REGISTERS
        acc = wm * wn // 32
        frags = (self.block_k // 16) * ((wm // 16) * 4 + (wn // 8) * 2)
        return acc + frags + _OTHER_REGISTERS


def supports(c: Contraction) -> bool:
    """Whether the tensor-core template applies: operands of one 16-bit dtype (multiplied
    as loaded, or widened to float32 first: the products are exact either way), summed in
    float32 or in that dtype (the template always accumulates in float32)."""
    d = c.a.dtype
    return (d in MMA_DTYPES and c.b.dtype == d and {c.a.compute, c.b.compute} <= {d, dt.float32}
            and c.acc in (dt.float32, d) and min(c.m, c.n, c.k) >= 1)


def legal(s: GpuMma, c: Contraction | None = None) -> bool:
    """Whether `s` is a point the template builds (for `c`'s operand layouts, if given)."""
    wm, wn = s.block_m // max(s.warps_m, 1), s.block_n // max(s.warps_n, 1)
    if s.split_k < 1 or s.raster < 1 or s.stages < 2 or s.block_k not in (16, 32, 64):
        return False
    if s.instr == "wgmma":
        # slabs of 64 rows; n a wgmma shape; a [k][n] B tile in whole 64-column panels
        if s.block_m % (64 * s.warps_m) or s.block_n % s.warps_n or wn not in WGMMA_N:
            return False
        if c is not None and k_rows(c)[1] and wn % PANEL:
            return False
    elif s.instr not in INSTRUCTIONS:
        return False
    if s.loader not in LOADERS or (s.loader == "tma" and (s.instr != "wgmma" or (c is not None
                                                                              and not tma_loads(c)))):
        return False
    elif s.block_m % (16 * s.warps_m) or s.block_n % (16 * s.warps_n) or wm < 16 or wn < 16:
        return False
    if s.threads > 1024 or s.shared_bytes() > MAX_SHARED_BYTES or s.registers > MAX_REGISTERS:
        return False
    # every cp.async round covers whole tiles: tile chunks divide among the threads
    return all((rows * s.block_k) % (8 * s.threads) == 0 for rows in (s.block_m, s.block_n))


def k_rows(c: Contraction) -> tuple[bool, bool]:
    """For A and B: whether its shared tile has k along its rows ([k][m], [k][n]: the
    operand's m or n axis is the contiguous one), else k runs along each row."""
    a, b = c.a.layout, c.b.layout
    return a.rows == 1 and a.cols != 1, not (b.rows == 1 and b.cols != 1)


def tensor_axes(extents: tuple[int, ...], layout) -> list[tuple[int, int]]:
    """(extent, element stride) of an operand's axes that a tensor map needs: its
    contiguous axis first, the other matrix axis, then the batch axes innermost first
    (those of one entry or stride 0, which every batch entry shares, left out)."""
    rows, cols, *batch = extents
    inner, outer = ((cols, 1), (rows, layout.rows)) if layout.cols == 1 else ((rows, 1), (cols, layout.cols))
    return [inner, outer] + [(n, st) for n, st in reversed(list(zip(batch, layout.batch))) if n > 1 and st]


def tma_loads(c: Contraction) -> bool:
    """Whether bulk tensor copies can load both operands of `c`: a contiguous axis,
    other strides and the first element on 16-byte boundaries, at most `TMA_MAX_RANK` axes."""
    for op, extents in ((c.a, (c.m, c.k, *c.batch)), (c.b, (c.k, c.n, *c.batch))):
        size = op.dtype.itemsize
        axes = tensor_axes(extents, op.layout)
        if 1 not in (op.layout.rows, op.layout.cols) or len(axes) > TMA_MAX_RANK \
                or (op.layout.offset * size) % 16 or any((st * size) % 16 for _, st in axes[1:]):
            return False
    return True


GROUPED_ROWS = 8  # block rows per group of the grouped tile order the space and the default use


def mma_space(c: Contraction, device=None, arch: str = GPU_ARCH) -> list[GpuMma]:
    """Every legal `GpuMma` point for `c` on `device` (a `passes.cost.DeviceModel`;
    None: an H100/H200's 132 SMs): the default for its SM count first, then block
    tiles up to 256 x 128 and 128 x 256 with 2 to 5 stages, each also in groups of
    `GROUPED_ROWS` block rows where there are more, and split-K points; on sm_90
    (`arch`) also the `wgmma_points`; [] where the template does not apply."""
    sm_count = getattr(device, "sm_count", 132)
    if not supports(c):
        return []
    points = []
    for bm in (64, 128, 256):
        for bn in (64, 128, 256):
            for bk in (32, 64, 16):
                for wm in (1, 2, 4):
                    for wn in (1, 2, 4):
                        for stages in (3, 4, 2, 5):
                            s = GpuMma(bm, bn, bk, wm, wn, stages)
                            if legal(s):
                                points.append(s)
    if arch in WGMMA_ARCHS:
        points += wgmma_points(c)
    points += [replace(p, raster=GROUPED_ROWS) for p in points if -(-c.m // p.block_m) > GROUPED_ROWS]
    k_tiles = -(-c.k // 32)
    points += [replace(p, split_k=n) for p in points[:8] for n in (2, 4) if n < k_tiles
               and p.block_k == 32]
    default = default_mma(c, sm_count, arch)
    return [default] + [p for p in points if p != default]


def wgmma_points(c: Contraction) -> list[GpuMma]:
    """The legal wgmma points for `c`'s layouts: block tiles of 64 to 256 rows and
    columns, k-tiles of 32 or 64, one or two warpgroups, 2 to 5 stages, each loaded by
    cp.async or TMA."""
    points = []
    for bm in (128, 256, 64):
        for bn in (128, 256, 64):
            for bk in (64, 32):
                for wm, wn in ((2, 1), (1, 1), (1, 2)):
                    for stages in (3, 4, 2, 5):
                        for loader in LOADERS:
                            s = GpuMma(bm, bn, bk, wm, wn, stages, instr="wgmma", loader=loader)
                            if legal(s, c):
                                points.append(s)
    return points


# What `mma_time` assumes of an sm_90 SM, fitted to 39 timings of seven or eight points
# at each of the five shapes of benchmarks/gemm.py (H200, 2026-12-02, data
# benchmarks/data/h200_gemm_2026-12-02_dynamic_shared.json; the fitted model's pick is
# within 0-8 % of the fastest point measured at each): mma.sync throughput,
# the L2 bandwidth one SM pulls, shared-memory reads (ldmatrix: 128 bytes per clock
# at 1.75 GHz) and the rate a block's epilogue stores drain at.
SM_MMA_FLOPS = 3.2e12
SM_L2_BYTES = 5.0e10
SM_SHARED_BYTES = 2.2e11
SM_STORE_BYTES = 5.0e9
SM_REGISTERS, SM_THREADS, SM_SHARED = 65536, 2048, 228 * 1024
DRAM_BYTES, LAUNCH_S = 4.0e12, 3e-6
WARPS_TO_FILL_SM = 8  # resident warps that keep the tensor cores issuing
# The default's candidates: 128 x 128 tiles at 3 stages (at 4096^3: 0.338 ms in row-major
# order against 0.380 at 4 stages in groups of 8 rows), the others at the 4 stages they
# were measured with.
_CANDIDATES = (GpuMma(128, 256, 32, 2, 4, 4), GpuMma(256, 128, 32, 4, 2, 4),
               GpuMma(128, 128, 32, 2, 2, 3), GpuMma(128, 64, 32, 2, 2, 4),
               GpuMma(64, 128, 32, 2, 2, 4), GpuMma(64, 64, 32, 2, 2, 4))
MIN_TILES_PER_SPLIT = 4  # k-tiles each split-K slice keeps at least


def resident_blocks(s: GpuMma) -> int:
    """Blocks of `s` an SM holds at once (registers, threads, shared memory)."""
    regs = -(-s.registers // 8) * 8 * s.threads  # ptxas allocates 8 registers at a time
    return max(1, min(SM_REGISTERS // regs, SM_THREADS // s.threads,
                      SM_SHARED // max(1, s.shared_bytes() + 1024)))


def mma_time(c: Contraction, s: GpuMma, sm_count: int = 132) -> float:
    """Estimated seconds of `c` under `s`: the output tiles (times split-K slices) run
    in waves of `sm_count` x `resident_blocks`. In a wave an SM runs its blocks' k-loops
    one after another at its full rate — each bound by the slowest of MMAs (slowed where
    fewer than `WARPS_TO_FILL_SM` warps are resident), operand tiles from L2 and
    fragment reads from shared memory — plus, per block, the pipeline's fill and its
    epilogue's stores; with split-K, the float32 partials' round trip and a launch."""
    tiles = c.batch_count * -(-c.m // s.block_m) * -(-c.n // s.block_n) * s.split_k
    k = -(-c.k // s.block_k) * s.block_k / s.split_k  # k of one block (tails padded)
    blocks = resident_blocks(s)
    running = min(blocks, -(-tiles // sm_count))  # blocks an SM runs at once
    warps = running * s.warps_m * s.warps_n
    mma = 2 * s.block_m * s.block_n * k / (SM_MMA_FLOPS * min(1.0, warps / WARPS_TO_FILL_SM))
    loads = (s.block_m + s.block_n) * k * 2 / SM_L2_BYTES
    frags = (s.block_m * s.warps_n + s.block_n * s.warps_m) * k * 2 / SM_SHARED_BYTES
    fill = (s.stages - 1) * (s.block_m + s.block_n) * s.block_k * 2 / SM_L2_BYTES
    stores = s.block_m * s.block_n * c.out_dtype.itemsize / SM_STORE_BYTES
    waves = -(-tiles // (sm_count * blocks))
    time = waves * (running * max(mma, loads, frags) + fill + stores)
    if s.split_k > 1:
        time += 2 * s.split_k * c.batch_count * c.m * c.n * 4 / DRAM_BYTES + LAUNCH_S
    return time


# wgmma's default candidates, at the 4 stages and in the grouped tile order measured
# best, and what `wgmma_time` assumes of an sm_90 SM: fitted to the 40 four-stage wgmma
# timings at the five shapes of benchmarks/gemm.py (H200, 2026-12-03, data
# benchmarks/data/h200_gemm_wgmma_2026-12-03.json; among these candidates its pick is
# the fastest measured at four shapes, 1.22x the fastest at 1999 x 2056 x 1001).
_WGMMA_CANDIDATES = tuple(GpuMma(bm, bn, 64, wm, 1, 4, 1, GROUPED_ROWS, "wgmma")
                          for bm, bn, wm in ((128, 256, 2), (128, 128, 2), (64, 128, 1)))
SM_WGMMA_FLOPS = 5.0e12
SM_WGMMA_L2_BYTES = 5.0e10
SM_WGMMA_STORE_BYTES = 2.0e10
# Below this k the wgmma pipeline has few k-tiles to overlap: bmm 32 x 512^2 x 64 took
# 0.018 ms under every wgmma point against 0.015 under mma.sync's 64 x 64 (H200).
WGMMA_MIN_K = 256


def wgmma_time(c: Contraction, s: GpuMma, sm_count: int = 132) -> float:
    """Estimated seconds of `c` under the wgmma point `s`: as `mma_time`, with a
    warpgroup's products at `SM_WGMMA_FLOPS` and no fragment traffic (wgmma reads
    shared memory itself), plus a launch (two with split-K). Its picks among the split
    points of `default_mma` were the fastest measured, or within 1 %, at 512 x 512 x
    4096, 256 x 1024 x 8192 and 1024 x 768 x 3072 (H200, 2026-12-03: 9.8, 14.1, 17.5 µs
    against cuBLAS's 9.8, 14.4, 9.5)."""
    tiles = c.batch_count * -(-c.m // s.block_m) * -(-c.n // s.block_n) * s.split_k
    k = -(-c.k // s.block_k) * s.block_k / s.split_k
    blocks = resident_blocks(s)
    running = min(blocks, -(-tiles // sm_count))
    mma = 2 * s.block_m * s.block_n * k / SM_WGMMA_FLOPS
    loads = (s.block_m + s.block_n) * k * 2 / SM_WGMMA_L2_BYTES
    fill = (s.stages - 1) * (s.block_m + s.block_n) * s.block_k * 2 / SM_WGMMA_L2_BYTES
    stores = s.block_m * s.block_n * c.out_dtype.itemsize / SM_WGMMA_STORE_BYTES
    waves = -(-tiles // (sm_count * blocks))
    time = waves * (running * max(mma, loads) + fill + stores) + LAUNCH_S
    if s.split_k > 1:  # the float32 partials' round trip and the summing kernel's launch
        time += 2 * s.split_k * c.batch_count * c.m * c.n * 4 / DRAM_BYTES + LAUNCH_S
    return time


def default_mma(c: Contraction, sm_count: int = 132, arch: str = GPU_ARCH) -> GpuMma:
    """The `_CANDIDATES` point (or a split-K version of the smallest: slices of at least
    `MIN_TILES_PER_SPLIT` k-tiles, up to 4) that `mma_time` estimates fastest; on sm_90
    where k is at least `WGMMA_MIN_K`, instead the `_WGMMA_CANDIDATES` point, or a
    split-K version (2, 4 or 8 slices of at least `MIN_TILES_PER_SPLIT` k-tiles) of the
    smaller two, that `wgmma_time` estimates fastest (H200: wgmma ran 1.4-1.9x
    mma.sync's defaults at the four such shapes of benchmarks/gemm.py, and split wgmma
    1.3-1.9x mma.sync's split defaults at three products of few output tiles). Either
    in groups of `GROUPED_ROWS` block rows where there are more (measured 1-3 % faster
    than row-major order at equal tiles in three of four pairs, H200)."""
    small = _CANDIDATES[-1]
    most = min(4, -(-c.k // small.block_k) // MIN_TILES_PER_SPLIT)
    points = list(_CANDIDATES) + [replace(small, split_k=n) for n in (2, 4) if n <= most]
    best = min(points, key=lambda p: mma_time(c, p, sm_count))
    if arch in WGMMA_ARCHS and c.k >= WGMMA_MIN_K:
        slices = -(-c.k // 64) // MIN_TILES_PER_SPLIT  # k-tiles of 64 allow this many slices
        wgmma = list(_WGMMA_CANDIDATES) + [replace(p, split_k=n) for p in _WGMMA_CANDIDATES[1:]
                                           for n in (2, 4, 8) if n <= slices]
        wgmma = [p for p in wgmma if legal(p, c)]
        if wgmma:
            best = min(wgmma, key=lambda p: wgmma_time(c, p, sm_count))
    return replace(best, raster=GROUPED_ROWS if -(-c.m // best.block_m) > GROUPED_ROWS else 1)


def tensor_core_product(op, graph) -> bool:
    """Whether the operation `op` of `graph` is a matrix product the tensor-core template
    takes (not a matrix-vector product: those stay memory-bound reductions); the GPU's
    rule for which products anchor contraction groups (`passes.fuse`)."""
    from ..ir.contraction import match_contraction

    if op.reduce is None or op.reduce.combiner != "sum":
        return False
    c = match_contraction(op, graph)
    return c is not None and supports(c) and min(c.m, c.n) > 1


def contraction_of(group, graph) -> Contraction | None:
    """The contraction of a fusion group that the tensor-core template takes: one
    `tensor_core_product`, the group's other operations elementwise over its shape
    (its epilogue)."""
    from ..ir.contraction import match_contraction
    from ..ir.tensor import ComputeOp

    ops = [graph[n] for n in group.ops]
    if not all(isinstance(op, ComputeOp) for op in ops):
        return None
    products = [op for op in ops if op.reduce is not None]
    if len(products) != 1 or not tensor_core_product(products[0], graph):
        return None
    shape = tuple(products[0].shape)
    return match_contraction(products[0], graph) if all(tuple(op.shape) == shape for op in ops) else None
