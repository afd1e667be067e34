"""Schedules for contractions on the GPU's tensor cores (`GpuMma`) and their space.

`GpuMma` tiles `out[b, m, n] = sum_k a[b, m, k] b[b, k, n]` into block tiles of
block_m x block_n (one thread block each, warps_m x warps_n warps of 32 threads,
each warp a (block_m / warps_m) x (block_n / warps_n) tile of m16n8k16 MMAs) and
walks k in steps of block_k through a ring of `stages` shared-memory stages filled
by cp.async. `mma_space` lists the legal points for a contraction and a device.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..ir import dtypes as dt
from ..ir.contraction import Contraction

MMA_DTYPES = (dt.bfloat16, dt.float16)
STATIC_SHARED_BYTES = 48 * 1024  # kernels declare shared memory statically


@dataclass(frozen=True)
class GpuMma:
    block_m: int
    block_n: int
    block_k: int
    warps_m: int
    warps_n: int
    stages: int
    split_k: int = 1  # k-tile slices, each a block per output tile (then a kernel sums them)

    @property
    def threads(self) -> int:
        return 32 * self.warps_m * self.warps_n

    def shared_bytes(self, itemsize: int = 2) -> int:
        return self.stages * (self.block_m + self.block_n) * self.block_k * itemsize


def supports(c: Contraction) -> bool:
    """Whether the tensor-core template applies: operands of one 16-bit dtype (multiplied
    as loaded, or widened to float32 first: the products are exact either way), summed in
    float32 or in that dtype (the template always accumulates in float32)."""
    d = c.a.dtype
    return (d in MMA_DTYPES and c.b.dtype == d and {c.a.compute, c.b.compute} <= {d, dt.float32}
            and c.acc in (dt.float32, d) and min(c.m, c.n, c.k) >= 1)


def legal(s: GpuMma) -> bool:
    wm, wn = s.block_m // max(s.warps_m, 1), s.block_n // max(s.warps_n, 1)
    if s.split_k < 1 or s.stages < 2 or s.block_k not in (16, 32, 64):
        return False
    if s.block_m % (16 * s.warps_m) or s.block_n % (16 * s.warps_n) or wm < 16 or wn < 16:
        return False
    if s.threads > 1024 or s.shared_bytes() > STATIC_SHARED_BYTES:
        return False
    # every cp.async round covers whole tiles: tile chunks divide among the threads
    return all((rows * s.block_k) % (8 * s.threads) == 0 for rows in (s.block_m, s.block_n))


def mma_space(c: Contraction, device=None) -> list[GpuMma]:
    """Every legal `GpuMma` point for `c` on `device` (a `passes.cost.DeviceModel`;
    None: an H100/H200's 132 SMs): the default for its SM count first, then those of
    any sm_80+ GPU with 48 KiB of static shared memory; [] where the template does
    not apply."""
    sm_count = getattr(device, "sm_count", 132)
    if not supports(c):
        return []
    points = []
    for bm in (64, 128, 256):
        for bn in (64, 128, 256):
            for bk in (32, 64, 16):
                for wm in (1, 2, 4):
                    for wn in (1, 2, 4):
                        for stages in (3, 2, 4):
                            s = GpuMma(bm, bn, bk, wm, wn, stages)
                            if legal(s):
                                points.append(s)
    k_tiles = -(-c.k // 32)
    points += [replace(p, split_k=n) for p in points[:8] for n in (2, 4) if n < k_tiles
               and p.block_k == 32]
    default = default_mma(c, sm_count)
    return [default] + [p for p in points if p != default]


# Default block tiles, largest first: 2 x 2 warps, 3 stages of 32-deep k-tiles.
_DEFAULT_TILES = (GpuMma(128, 128, 32, 2, 2, 3), GpuMma(128, 64, 32, 2, 2, 3),
                  GpuMma(64, 64, 32, 2, 2, 3))
MIN_TILES_PER_SPLIT = 4  # k-tiles each split-K slice keeps at least


def default_mma(c: Contraction, sm_count: int = 132) -> GpuMma:
    """The largest default tiles that give every SM a block (128 x 128 at 4096^3);
    where even 64 x 64 tiles leave SMs idle and k is long, split-K slices of at least
    `MIN_TILES_PER_SPLIT` k-tiles, up to 4, fill them."""
    for s in _DEFAULT_TILES:
        if c.batch_count * -(-c.m // s.block_m) * -(-c.n // s.block_n) >= sm_count:
            return s
    s = _DEFAULT_TILES[-1]
    tiles = c.batch_count * -(-c.m // s.block_m) * -(-c.n // s.block_n)
    split = min(4, -(-sm_count // tiles), -(-c.k // s.block_k) // MIN_TILES_PER_SPLIT)
    return replace(s, split_k=max(split, 1))


def contraction_of(group, graph) -> Contraction | None:
    """The contraction of a fusion group that the tensor-core template takes: one
    matrix product (not a matrix-vector product: those stay memory-bound reductions),
    the group's other operations elementwise over its shape (its epilogue)."""
    from ..ir.contraction import match_contraction
    from ..ir.tensor import ComputeOp

    ops = [graph[n] for n in group.ops]
    if not all(isinstance(op, ComputeOp) for op in ops):
        return None
    products = [op for op in ops if op.reduce is not None]
    if len(products) != 1:
        return None
    c = match_contraction(products[0], graph)
    if c is None or not supports(c) or min(c.m, c.n) == 1:
        return None
    shape = tuple(products[0].shape)
    return c if all(tuple(op.shape) == shape for op in ops) else None
