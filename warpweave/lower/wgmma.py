"""A contraction under a wgmma `GpuMma` schedule → one pipelined warpgroup-MMA GIR kernel.

As `lower.mma` builds it (grid, tile order, cp.async stages, split-K, epilogue), with
the products taken by warpgroups (sm_90's wgmma) straight from shared memory:

    prologue: cp.async k-tiles 0 .. stages-2 into stages 0 .. stages-2, a group each
    for kt in k-tiles:
        wait until at most stages-2 groups are pending; fence them to the async proxy;
        barrier
        wgmma.m64nNk16 of stage kt % stages: every k step, every 64-row slab of the
            warpgroup's rows, operands through shared-memory descriptors
        cp.async k-tile kt+stages-1 into stage (kt-1) % stages; commit
        (the products are waited for at the end of the iteration: when the next
        barrier passes, no warpgroup still reads the stage the next copies overwrite)

Tiles are 1024-byte aligned, so that `gir.swizzle_offset`'s XOR pattern is the
hardware's 32/64/128-byte swizzle. An operand whose k runs along the tile's rows (k
contiguous in memory: "K-major") has block_k-element rows; one with k along its
columns ([k][m] or [k][n]: m or n contiguous, "MN-major", transposed by the
instruction) is cut into panels of 64 columns. Each warp's accumulators are laid out
as mma.m16n8's, its 16 rows of each 64-row slab, so the epilogue is `lower.mma`'s.
"""
from __future__ import annotations

from ..ir import expr as ex
from ..ir.gir import ASYNC_COMMIT, ASYNC_WAIT, PANEL
from ..schedule.mma import WARPGROUP
from .mma import _MmaLowering, _Tile

__all__ = ["WgmmaLowering"]

WGMMA_M = 64  # rows of one wgmma


class WgmmaLowering(_MmaLowering):
    """Shared stages filled by cp.async, products by wgmma reading them in place."""

    SHARED_ALIGN = 1024  # the swizzle atom: 8 rows of 128 bytes
    MI_STRIDE = WGMMA_M

    def _panel_rows(self, rows: int, row_elems: int) -> int:
        return self.s.stages * rows if row_elems > PANEL else 0

    def _warpgroup_origin(self) -> tuple[ex.Expr, ex.Expr]:
        s = self.s
        group = self.t // (32 * WARPGROUP)
        return (group // s.warps_n) * (s.block_m // s.warps_m), (group % s.warps_n) * (s.block_n // s.warps_n)

    def _warp_origin(self, warp: ex.Expr) -> tuple[ex.Expr, ex.Expr]:
        row, col = self._warpgroup_origin()
        return row + (warp % WARPGROUP) * 16, col

    def _operand(self, tile: _Tile, stage: ex.Expr, origin: ex.Expr) -> dict:
        """The wgmma operand of `tile` at stage `stage`, the warpgroup's rows or columns
        starting at `origin`, at tile point (kk, mi) (B has no slabs: its mi is unused)."""
        kk = ex.Var("kk")
        slab = ex.Var("mi") * WGMMA_M if tile is self.ta else ex.as_index(0)
        first = stage * tile.rows
        if tile.k_major:  # [k][m or n]
            row, col = first + kk * 16, origin + slab
        else:
            row, col = first + origin + slab, kk * 16
        return dict(buffer=tile.name, row=row, col=col, row_elems=tile.row_elems,
                    k_rows=tile.k_major, panel_rows=tile.panel_rows)

    def _main_loop(self, k_first: ex.Expr, per_slice: int, block: str) -> str:
        s, b = self.s, self.b
        shared = [self.ta.name, self.tb.name]
        pro = b.scope("unroll", "p", s.stages - 1, block)
        self._copy_tile(k_first + ex.Var("p"), ex.Var("p"), pro, "pa")
        b.async_sync(ASYNC_COMMIT, shared, pro)

        loop = b.scope("serial", "kt", per_slice, block)
        kt = ex.Var("kt")
        b.async_sync(ASYNC_WAIT, shared, loop, pending=s.stages - 2, proxy=True)
        b.sync(shared, loop)
        stage = kt % s.stages
        rows, cols = self._warpgroup_origin()
        tile = (("kk", s.block_k // 16), ("mi", s.block_m // s.warps_m // WGMMA_M))
        acc = b.wgmma(self._operand(self.ta, stage, rows), self._operand(self.tb, stage, cols),
                      tile, s.block_n // s.warps_n, loop)
        nxt = kt + (s.stages - 1)
        self._copy_tile(k_first + nxt, nxt % s.stages, loop, "la")
        b.async_sync(ASYNC_COMMIT, shared, loop)
        return acc
