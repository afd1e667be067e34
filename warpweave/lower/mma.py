"""A contraction under a `GpuMma` schedule → one pipelined tensor-core GIR kernel.

Per thread block (one block_m x block_n output tile of one batch entry, in the
grouped order of `GpuMma.raster`):

    prologue: cp.async k-tiles 0 .. stages-2 into stages 0 .. stages-2, a group each
    for kt in k-tiles:                                     (serial; the MMA sums over it)
        wait until at most stages-2 groups are pending; barrier
        ldmatrix A and B fragments of stage kt % stages    (x4, .trans per layout)
        cp.async k-tile kt+stages-1 into stage (kt-1) % stages; commit
        mma.m16n8k16 (float32 accumulators)
    epilogue: each accumulator element → cast → store, predicated on m < M and n < N

Each operand's shared tile keeps the operand's contiguous axis along its rows (A as
[m][k] or [k][m], B as [n][k] or [k][n]; ldmatrix transposes where the MMA wants the
other) in XOR-swizzled 16-byte chunks. Copies are as wide as the operand's strides
allow: 16, 8 or 4 bytes through cp.async, single elements through a plain copy;
rows and columns outside the matrix (the m, n and k tails) are zero-filled.

With split_k > 1 the k-tiles are divided into that many slices, one block per
(slice, tile): the first kernel stores each slice's float32 partial product into a
temporary buffer, a second kernel sums the slices per element and applies the
epilogue (what a product of few output tiles and a long k needs to fill the GPU).

An epilogue — elementwise operations of the product's shape that read it (and each
other) in place: bias, activation, residual, scaling, casts — is applied to each
accumulator element before the store (`lower_mma_group`); the product and each
epilogue value are rounded to their dtype where a consumer reads them, as their
unfused kernels would store them.

With `instr="wgmma"` (sm_90, `_WgmmaLowering`) the products are taken by warpgroups
straight from shared memory:

    prologue: cp.async k-tiles 0 .. d-1 into stages 0 .. d-1, a group each
    for kt in k-tiles:
        wait until at most d-1 copy groups are pending; fence them to the async proxy;
        barrier
        cp.async k-tile kt+d into stage (kt+d) % stages; commit
        wgmma.m64nNk16 of stage kt % stages: every k step, every 64-row slab of the
            warpgroup's rows, operands through shared-memory descriptors; commit;
        wait until at most p groups of products are in flight
    wait for the products

With three stages or more, p = 1 and the copies run d = stages-2 k-tiles ahead: a
warpgroup's products of k-tile kt run while it waits at the next barrier and issues
the next copies, and the stage those copies overwrite, (kt-2) % stages, was last
read by products every warpgroup waited for before that barrier. With two stages,
p = 0 and d = 1. Tiles are 1024-byte aligned, so that `gir.swizzle_offset`'s XOR
pattern is the hardware's 32/64/128-byte swizzle. An operand whose k runs along the
tile's rows (k contiguous in memory: "K-major") has block_k-element rows; one with k
along its columns ([k][m] or [k][n]: m or n contiguous, "MN-major", transposed by the
instruction) is cut into panels of 64 columns. Each warp's accumulators are laid out
as mma.m16n8's, its 16 rows of each 64-row slab, so the epilogue is shared.

With `loader="tma"` (`_TmaWgmmaLowering`) the stages are filled by bulk tensor copies,
S = stages, with a `full` and an `empty` barrier per stage and no block barrier in the
k-loop:

    thread 0: initialise the barriers; barrier
    thread 0: k-tiles 0 .. S-1 into stages 0 .. S-1 (announce the bytes on full, copy)
    for kt in k-tiles:
        wait on full[kt % S] for phase (kt // S) % 2
        wgmma of stage kt % S as above (one group left in flight)
        where kt >= 1 and k-tile kt+S-1 exists, for stage s = (kt-1) % S:
            every thread arrives on empty[s] (its warpgroup's products of k-tile kt-1 are done)
            thread 0: waits on empty[s]; k-tile kt+S-1 into stage s
    wait for the products
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from ..errors import UnsupportedError
from ..ir import dtypes as dt
from ..ir import expr as ex
from ..ir.contraction import Contraction, Layout
from ..ir.gir import ASYNC_COMMIT, ASYNC_WAIT, MBAR_ARRIVE, MBAR_EXPECT, MBAR_INIT, MBAR_WAIT, PANEL, SHARED_ALIGN, Buffer, \
    Kernel, KernelBuilder, SharedAlloc, TensorMap
from ..ir.tensor import ComputeOp, TensorGraph, row_major_strides
from ..schedule.mma import WARPGROUP, GpuMma, k_rows, legal, supports, tensor_axes
from .op import _Region, unflatten

__all__ = ["lower_mma", "lower_mma_group"]


@dataclass(frozen=True)
class _Tile:
    """How one operand's k-tile lies in shared memory."""

    name: str          # shared allocation
    rows: int          # rows per stage
    row_elems: int     # elements per row
    width: int         # elements per copy
    k_major: bool      # rows are k (else k runs along a row)
    trans: bool        # ldmatrix.trans
    panel_rows: int = 0  # rows of a panel where the tile is cut into panels (gir.swizzle_offset)


def _lt(a: ex.Expr, b: int) -> ex.Expr:
    return ex.binary("lt", a, ex.as_index(b))


def _width(layout: Layout, contiguous_extent: int) -> int:
    """Elements per copy: the widest of 8, 4, 2 dividing the contiguous extent, every
    other stride and the offset (1 where none does: a plain copy)."""
    strides = [s for s in (*layout.batch, layout.rows, layout.cols) if s != 1]
    for w in (8, 4, 2):
        if contiguous_extent % w == 0 and all(s % w == 0 for s in strides) and layout.offset % w == 0:
            return w
    return 1


def _tile_order(rank: ex.Expr, tiles_m: int, tiles_n: int, raster: int) -> tuple[ex.Expr, ex.Expr]:
    """(block row, block column) of the `rank`-th output tile of a batch entry: row by
    row for `raster` 1, else in groups of `raster` block rows (fewer in the last group),
    column by column within a group, so that the blocks running at once read a few
    rows of A and columns of B from L2 many times over."""
    if raster == 1:
        return rank // tiles_n, rank % tiles_n
    first = (rank // (raster * tiles_n)) * raster  # the group's first block row
    rows = ex.binary("min", ex.as_index(tiles_m) - first, ex.as_index(raster))
    within = rank % (raster * tiles_n)
    return first + within % rows, within // rows


def lower_mma(c: Contraction, s: GpuMma, shapes: Mapping[str, tuple[int, ...]],
              name: str = "mma") -> list[Kernel]:
    """The kernels computing `c` under `s` (two with split-K), in launch order;
    `shapes` gives the tensors' shapes (their buffers are row-major)."""
    _check(c, s, name)
    return _lowering(s)(c, s, shapes, name).build()


def lower_mma_group(c: Contraction, epilogue: list[ComputeOp], outputs: tuple[str, ...],
                    graph: TensorGraph, s: GpuMma, name: str = "mma") -> list[Kernel]:
    """The kernels computing `c` and then the `epilogue` operations (in order) on each
    of its elements, storing the tensors named in `outputs`."""
    _check(c, s, name)
    members = {c.out} | {op.name for op in epilogue}
    for op in epilogue:
        if tuple(op.shape) != tuple(graph[c.out].shape) or op.reduce is not None:
            raise UnsupportedError(f"{name}: epilogue operation {op.name} of shape {op.shape} is "
                                   f"not elementwise over the product's {graph[c.out].shape}")
        for ld in ex.loads(op.body):
            if ld.tensor in members and tuple(ld.indices) != tuple(op.axes):
                raise UnsupportedError(f"{name}: epilogue operation {op.name} reads {ld.tensor} "
                                       f"other than in place")
    return _lowering(s)(c, s, _Shapes(graph), name, epilogue, tuple(outputs), graph).build()


def _lowering(s: GpuMma):
    """The lowering class of `s`'s instruction and loader."""
    if s.instr == "wgmma":
        return _TmaWgmmaLowering if s.loader == "tma" else _WgmmaLowering
    return _MmaLowering


class _Shapes:
    """`graph[name].shape` as a mapping."""

    def __init__(self, graph):
        self.graph = graph

    def __getitem__(self, name):
        return tuple(self.graph[name].shape)


def _check(c: Contraction, s: GpuMma, name: str) -> None:
    if not supports(c):
        raise UnsupportedError(f"{name}: the tensor-core template takes bfloat16 or float16 "
                            f"operands summed in float32; got {c.a.dtype} x {c.b.dtype} "
                            f"summed in {c.acc}")
    if not legal(s, c):
        raise UnsupportedError(f"{name}: {s} is not a legal tensor-core schedule for operands "
                               f"laid out as {c.a.layout} and {c.b.layout}")


class _MmaLowering:
    """Shared stages filled by cp.async, fragments by ldmatrix, products by mma.sync."""

    SHARED_ALIGN = SHARED_ALIGN  # bytes: the shared tiles' alignment
    MI_STRIDE = 16  # rows between a warp's accumulator slabs

    def __init__(self, c: Contraction, s: GpuMma, shapes, name: str,
                 epilogue: list[ComputeOp] = (), outputs: tuple[str, ...] = (), graph=None):
        self.c, self.s, self.shapes = c, s, shapes
        self.epilogue, self.graph = list(epilogue), graph
        self.outputs = outputs or (c.out,)
        self.name = name
        self.ranges: dict[str, tuple[int, int]] = {}  # what lower.op._Region reads
        self.scope_vars: dict[str, str] = {}
        members = {c.out} | {op.name for op in self.epilogue}
        self.epilogue_inputs = [(ld.tensor, ld.dtype, "in") for op in self.epilogue
                                for ld in ex.loads(op.body) if ld.tensor not in members]
        self.output_params = [(t, graph[t].dtype if graph is not None else c.out_dtype, "out")
                              for t in self.outputs]
        self.total = c.batch_count * c.m * c.n
        self.partials = Buffer(f"{c.out}_partials", dt.float32, (s.split_k, self.total),
                               (self.total, 1), "temp")
        self.b = self._builder(name, [(c.a.tensor, c.a.dtype, "in"), (c.b.tensor, c.b.dtype, "in")]
                               + ([] if s.split_k > 1 else self.epilogue_inputs + self.output_params))
        if s.split_k > 1:
            self.b.add_param(self.partials)
        a, b = c.a.layout, c.b.layout
        # A: [m][k] unless m is the contiguous axis; B: [k][n] unless k is.
        a_km, b_kn = k_rows(c)
        self.ta = self._tile("a_s", s.block_m, a_km, a_km, _width(a, c.m if a_km else c.k)
                             if (a.rows == 1 or a.cols == 1) else 1, c.a.dtype)
        self.tb = self._tile("b_s", s.block_n, b_kn, b_kn,
                             _width(b, c.n if b_kn else c.k) if (b.rows == 1 or b.cols == 1)
                             else 1, c.b.dtype)

    def _builder(self, name: str, params) -> KernelBuilder:
        b = KernelBuilder(name, "gpu")
        for t, d, role in params:
            if not any(p.name == t for p in b.params):
                shape = tuple(self.shapes[t])
                b.add_param(Buffer(t, d, shape, row_major_strides(shape), role))
        return b

    def _tile(self, name, mn_block, k_major, trans, width, dtype) -> _Tile:
        s = self.s
        rows, row_elems = (s.block_k, mn_block) if k_major else (mn_block, s.block_k)
        self.b.add_shared(SharedAlloc(name, dtype, s.stages * rows * row_elems, self.SHARED_ALIGN))
        return _Tile(name, rows, row_elems, width, k_major, trans, self._panel_rows(rows, row_elems))

    def _panel_rows(self, rows: int, row_elems: int) -> int:
        """Rows per panel of a tile of `rows` rows per stage (0: not cut into panels)."""
        return 0

    # ------------------------------------------------------------------ indices
    def build(self) -> list[Kernel]:
        c, s, b = self.c, self.s, self.b
        tiles_m, tiles_n = -(-c.m // s.block_m), -(-c.n // s.block_n)
        k_tiles = -(-c.k // s.block_k)
        per_slice = -(-k_tiles // s.split_k)
        tiles = c.batch_count * tiles_m * tiles_n
        grid = self.scope("grid", "g", s.split_k * tiles, None)
        block = self.scope("block", "t", s.threads, grid)
        g, t = ex.Var("g"), ex.Var("t")
        k_first = (g // tiles) * per_slice  # this slice's first k-tile
        g = g % tiles
        self.batch = g // (tiles_m * tiles_n)
        m_tile, n_tile = _tile_order(g % (tiles_m * tiles_n), tiles_m, tiles_n, s.raster)
        self.m0 = m_tile * s.block_m
        self.n0 = n_tile * s.block_n
        self.t = t
        self.lane = t % 32
        self.wm, self.wn = self._warp_origin(t // 32)
        acc = self._main_loop(k_first, per_slice, block)
        if s.split_k == 1:
            self._epilogue(acc, block)
            return [b.build(schedule=repr(s))]
        self._store_partials(acc, block, ex.Var("g") // tiles)
        return [b.build(schedule=repr(s)), self._sum_slices()]

    def _warp_origin(self, warp: ex.Expr) -> tuple[ex.Expr, ex.Expr]:
        """The (row, column) of warp `warp`'s first accumulator in the block tile."""
        s = self.s
        return (warp // s.warps_n) * (s.block_m // s.warps_m), (warp % s.warps_n) * (s.block_n // s.warps_n)

    def _main_loop(self, k_first: ex.Expr, per_slice: int, block: str) -> str:
        """The pipelined k-loop of one block; returns the accumulator node."""
        s, b = self.s, self.b
        shared = self._prologue(k_first, s.stages - 1, block)
        loop = b.scope("serial", "kt", per_slice, block)
        kt = ex.Var("kt")
        b.async_sync(ASYNC_WAIT, shared, loop, pending=s.stages - 2)
        b.sync(shared, loop)
        stage = kt % s.stages
        fa = self._ldmatrix_a(stage, loop)
        fb = self._ldmatrix_b(stage, loop)
        nxt = kt + (s.stages - 1)
        self._copy_tile(k_first + nxt, nxt % s.stages, loop, "la")
        b.async_sync(ASYNC_COMMIT, shared, loop)
        return b.mma(fa, fb, loop)

    def _prologue(self, k_first: ex.Expr, tiles: int, block: str) -> list[str]:
        """cp.async of the first `tiles` k-tiles into stages 0 .. tiles-1, a group each;
        returns the shared tiles' names."""
        shared = [self.ta.name, self.tb.name]
        pro = self.b.scope("unroll", "p", tiles, block)
        self._copy_tile(k_first + ex.Var("p"), ex.Var("p"), pro, "pa")
        self.b.async_sync(ASYNC_COMMIT, shared, pro)
        return shared

    def scope(self, kind: str, var: str, extent: int, parent: str | None) -> str:
        sid = self.b.scope(kind, var, extent, parent)
        self.ranges[var] = (0, extent - 1)
        self.scope_vars[sid] = var
        return sid

    def simplify(self, e: ex.Expr | None) -> ex.Expr | None:  # for lower.op._Region
        return e

    def load_depth(self, tensor: str, chain: list[str]) -> int:  # for lower.op._Region
        return 0

    def _batch_offset(self, layout: Layout) -> ex.Expr:
        off = ex.as_index(layout.offset)
        rest = self.batch
        for extent, stride in reversed(list(zip(self.c.batch, layout.batch))):
            off = off + (rest % extent) * stride
            rest = rest // extent
        return off

    # ------------------------------------------------------------------ movement
    def _copy_tile(self, k_tile: ex.Expr, stage: ex.Expr, parent: str, var: str) -> None:
        """cp.async of k-tile `k_tile` of both operands into `stage`."""
        c = self.c
        for tile, layout, mn0, mn_extent in ((self.ta, c.a.layout, self.m0, c.m),
                                             (self.tb, c.b.layout, self.n0, c.n)):
            per_row = tile.row_elems // tile.width
            copies = tile.rows * per_row // self.s.threads
            scope = self.b.scope("unroll", f"{var}{tile.name[0]}", copies, parent)
            chunk = ex.Var(f"{var}{tile.name[0]}") * self.s.threads + self.t
            row, col = chunk // per_row, (chunk % per_row) * tile.width
            k0 = k_tile * self.s.block_k
            kk, mn = (k0 + row, mn0 + col) if tile.k_major else (k0 + col, mn0 + row)
            if tile is self.ta:
                offset = self._batch_offset(layout) + mn * layout.rows + kk * layout.cols
            else:
                offset = self._batch_offset(layout) + kk * layout.rows + mn * layout.cols
            pred = ex.all_of([_lt(mn, mn_extent), _lt(kk, c.k)])
            self.b.cp_async(c.a.tensor if tile is self.ta else c.b.tensor, offset, tile.name,
                            stage * tile.rows + row, col, tile.row_elems, True,
                            2 * tile.width, scope, pred, tile.panel_rows)

    def _ldmatrix_a(self, stage: ex.Expr, scope: str) -> str:
        s, tile, lane = self.s, self.ta, self.lane
        kk, mi = ex.Var("kk"), ex.Var("mi")
        mis = s.block_m // s.warps_m // 16
        if tile.trans:  # [k][m]: matrix j = lane // 8 is (m half j % 2, k half j // 2)
            j = lane // 8
            row = stage * tile.rows + kk * 16 + (j // 2) * 8 + lane % 8
            col = self.wm + mi * 16 + (j % 2) * 8
        else:
            row = stage * tile.rows + self.wm + mi * 16 + lane % 16
            col = kk * 16 + (lane // 16) * 8
        return self.b.ldmatrix(tile.name, row, col, tile.row_elems, True, tile.trans,
                               (("kk", s.block_k // 16), ("mi", mis)),
                               (s.block_k // 16, mis, 8), scope)

    def _ldmatrix_b(self, stage: ex.Expr, scope: str) -> str:
        s, tile, lane = self.s, self.tb, self.lane
        kk, nj = ex.Var("kk"), ex.Var("nj")
        njs = s.block_n // s.warps_n // 16
        if tile.trans:  # [k][n]: matrix j = lane // 8 is (k half j % 2, n half j // 2)
            row = stage * tile.rows + kk * 16 + ((lane // 8) % 2) * 8 + lane % 8
            col = self.wn + nj * 16 + (lane // 16) * 8
        else:
            row = stage * tile.rows + self.wn + nj * 16 + (lane // 16) * 8 + lane % 8
            col = kk * 16 + ((lane // 8) % 2) * 8
        return self.b.ldmatrix(tile.name, row, col, tile.row_elems, True, tile.trans,
                               (("kk", s.block_k // 16), ("nj", njs)),
                               (s.block_k // 16, 2 * njs, 4), scope)

    def _pairs(self, acc: str, block: str):
        """Scopes over a thread's accumulator pairs (columns 2 (lane % 4) + {0, 1}, a
        2-lane vector scope): (scope chain, the element, the output position, guard)."""
        c, s, b, lane = self.c, self.s, self.b, self.lane
        mi_s = self.scope("unroll", "mi", s.block_m // s.warps_m // self.MI_STRIDE, block)
        ni_s = self.scope("unroll", "ni", s.block_n // s.warps_n // 8, mi_s)
        h_s = self.scope("unroll", "h", 2, ni_s)
        v_s = self.scope("vector", "v", 2, h_s)
        mi, ni, h, v = ex.Var("mi"), ex.Var("ni"), ex.Var("h"), ex.Var("v")
        m = self.m0 + self.wm + mi * self.MI_STRIDE + lane // 4 + h * 8
        n = self.n0 + self.wn + ni * 8 + (lane % 4) * 2 + v
        # with n even, a pair is wholly in or out: one predicate for both lanes (a 2-lane store)
        n_pred = n - v if c.n % 2 == 0 else n
        guard = ex.all_of([_lt(m, c.m), _lt(n_pred, c.n)])
        batch_idx, rest = [], self.batch  # batch axes, outermost first
        for extent in reversed(c.batch):
            batch_idx.insert(0, rest % extent)
            rest = rest // extent
        batches = iter(batch_idx)
        # the output's axes (those of every epilogue operation) at this accumulator element
        position = [m if role == "m" else n if role == "n" else next(batches) for role in c.roles]
        chain = [b._node(block).scope, block, mi_s, ni_s, h_s, v_s]
        return chain, b.frag(acc, (mi, ni, h * 2 + v), v_s), position, guard

    def _flat(self, position: list[ex.Expr]) -> ex.Expr:
        strides = row_major_strides(self.shapes[self.c.out])
        return sum((p * st for p, st in zip(position, strides)), ex.as_index(0))

    def _epilogue(self, acc: str, block: str) -> None:
        chain, value, position, guard = self._pairs(acc, block)
        self._finish(chain, value, position, guard)

    def _store_partials(self, acc: str, block: str, slice_: ex.Expr) -> None:
        chain, value, position, guard = self._pairs(acc, block)
        self.b.store(self.partials.name, slice_ * self.total + self._flat(position), value,
                     chain[-1], guard)

    def _sum_slices(self) -> Kernel:
        """The second split-K kernel: partials summed per element, then the epilogue."""
        threads = 256
        self.b = b = self._builder(f"{self.name}_sum", self.epilogue_inputs + self.output_params)
        b.add_param(self.partials)
        grid = self.scope("grid", "g", -(-self.total // threads), None)
        block = self.scope("block", "t", threads, grid)
        flat = ex.Var("g") * threads + ex.Var("t")
        guard = _lt(flat, self.total)
        z = self.scope("unroll", "z", self.s.split_k, block)
        part = b.load(self.partials.name, ex.Var("z") * self.total + flat, z, guard)
        value = b.reduce("sum", part, z)
        self._finish([grid, block], value, unflatten(flat, self.shapes[self.c.out]), guard)
        return b.build(schedule=repr(self.s))

    def _finish(self, chain: list[str], value: str, position: list[ex.Expr], guard) -> None:
        """The product's value at `position` rounded to its dtype, the epilogue, the stores."""
        c, b, scope = self.c, self.b, chain[-1]
        values = {c.out: self._rounded(value, c.out_dtype, scope)}
        for op in self.epilogue:
            staged = {ld: values[ld.tensor][0] for ld in ex.loads(op.body) if ld.tensor in values}
            index = dict(zip((a.name for a in op.axes), position))
            value = _Region(self, chain, index, guard, staged).emit(op.body)
            values[op.name] = self._rounded(value, op.dtype, scope)
        for name in self.outputs:
            value, stored = values[name][1], b._dtype_of(name)
            if b._node(value).dtype != stored:
                value = b.compute("cast", [value], scope, stored)
            b.store(name, self._flat(position), value, scope, guard)

    def _rounded(self, value: str, d: dt.DType, scope: str) -> tuple[str, str]:
        """(the value as its consumers read it, the value to store): rounded to `d`,
        then widened to `d`'s compute dtype."""
        b = self.b
        if b._node(value).dtype == d:
            return value, value
        stored = b.compute("cast", [value], scope, d)
        wide = dt.compute_dtype(d)
        return (b.compute("cast", [stored], scope, wide) if wide != d else stored), stored


WGMMA_M = 64  # rows of one wgmma


class _WgmmaLowering(_MmaLowering):
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
        in_flight = 1 if s.stages >= 3 else 0  # groups of products left running per iteration
        ahead = s.stages - 1 - in_flight  # k-tiles the copies run ahead of the products
        shared = self._prologue(k_first, ahead, block)
        loop = b.scope("serial", "kt", per_slice, block)
        kt = ex.Var("kt")
        b.async_sync(ASYNC_WAIT, shared, loop, pending=ahead - 1, proxy=True)
        b.sync(shared, loop)
        stage = kt % s.stages
        rows, cols = self._warpgroup_origin()
        tile = (("kk", s.block_k // 16), ("mi", s.block_m // s.warps_m // WGMMA_M))
        acc = b.wgmma(self._operand(self.ta, stage, rows), self._operand(self.tb, stage, cols),
                      tile, s.block_n // s.warps_n, loop, in_flight)
        nxt = kt + ahead
        self._copy_tile(k_first + nxt, nxt % s.stages, loop, "la")
        b.async_sync(ASYNC_COMMIT, shared, loop)
        return acc


class _TmaWgmmaLowering(_WgmmaLowering):
    """wgmma on shared stages that bulk tensor copies (TMA) fill, with no block barrier
    in the k-loop: a `full` barrier per stage, on which thread 0 announces the stage's
    bytes and issues one copy per operand (per 64-column panel of an MN-major one),
    and an `empty` barrier per stage, on which every thread arrives once its
    warpgroup's products of that stage are done. Every thread waits on `full` for the
    phase of the k-tile it reads (the stage's fill count, mod 2); thread 0 waits on
    `empty` before refilling a stage, so the copies run stages - 1 k-tiles ahead. Tails
    read zeros: the tensor map covers the operand, and the copy fills coordinates
    outside it with zeros."""

    FULL, EMPTY = "stage_full", "stage_empty"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        c = self.c
        for name in (self.FULL, self.EMPTY):
            self.b.add_shared(SharedAlloc(name, dt.int64, self.s.stages, 8))
        self.maps = [(self.ta, self._map(self.ta, c.a, (c.m, c.k))),
                     (self.tb, self._map(self.tb, c.b, (c.k, c.n)))]

    def _map(self, tile: _Tile, op, extents: tuple[int, int]) -> TensorMap:
        """The tensor map of an operand (`extents`: its rows and columns) whose box is one
        stage of `tile`, or one 64-column panel of it."""
        axes = tensor_axes((*extents, *self.c.batch), op.layout)
        box = (min(tile.row_elems, PANEL), tile.rows) + (1,) * (len(axes) - 2)
        return TensorMap(op.tensor, op.layout.offset, tuple(n for n, _ in axes),
                         tuple(st for _, st in axes[1:]), box, box[0] * op.dtype.itemsize)

    def _batch_coords(self, layout) -> list[ex.Expr]:
        """The batch entry's index along each batch axis `tensor_axes` keeps, innermost first."""
        out, rest = [], self.batch
        for extent, stride in reversed(list(zip(self.c.batch, layout.batch))):
            if extent > 1 and stride:
                out.append(rest % extent)
            rest = rest // extent
        return out

    def _first_thread(self) -> ex.Expr:
        return ex.binary("eq", self.t, ex.as_index(0))

    def _fill(self, k_tile: ex.Expr, stage: ex.Expr, scope: str, guard: ex.Expr) -> None:
        """Thread 0 (where `guard` holds): k-tile `k_tile` of both operands into `stage`."""
        b, c = self.b, self.c
        pred = ex.all_of([self._first_thread(), guard])
        k0 = k_tile * self.s.block_k
        total = sum(tile.rows * tile.row_elems * 2 for tile, _ in self.maps)
        b.mbarrier(MBAR_EXPECT, self.FULL, [], scope, slot=stage, bytes=total, pred=pred)
        for (tile, tmap), layout, mn0 in zip(self.maps, (c.a.layout, c.b.layout), (self.m0, self.n0)):
            for panel in range(tile.row_elems // tmap.box[0]):
                col = panel * tmap.box[0]
                inner, outer = (mn0 + col, k0) if tile.k_major else (k0, mn0)
                b.tma_load(tmap, [inner, outer, *self._batch_coords(layout)], tile.name,
                           stage * tile.rows, ex.as_index(col), tile.row_elems, tile.panel_rows,
                           self.FULL, stage, scope, pred)

    def _main_loop(self, k_first: ex.Expr, per_slice: int, block: str) -> str:
        s, b = self.s, self.b
        shared = [self.ta.name, self.tb.name]
        for name, count in ((self.FULL, 1), (self.EMPTY, s.threads)):
            b.mbarrier(MBAR_INIT, name, [], block, count=count, pred=self._first_thread())
        b.sync([self.FULL, self.EMPTY], block)
        pro = b.scope("unroll", "p", s.stages, block)
        p = ex.Var("p")
        self._fill(k_first + p, p, pro, _lt(p, per_slice))
        loop = b.scope("serial", "kt", per_slice, block)
        kt = ex.Var("kt")
        b.mbarrier(MBAR_WAIT, self.FULL, shared, loop, slot=kt % s.stages, parity=(kt // s.stages) % 2)
        rows, cols = self._warpgroup_origin()
        tile = (("kk", s.block_k // 16), ("mi", s.block_m // s.warps_m // WGMMA_M))
        acc = b.wgmma(self._operand(self.ta, kt % s.stages, rows), self._operand(self.tb, kt % s.stages, cols),
                      tile, s.block_n // s.warps_n, loop, 1)
        # the products of k-tile kt - 1 are done (this warpgroup's wait): free its stage,
        # and once every thread has, refill it with k-tile kt - 1 + stages
        nxt = kt + (s.stages - 1)  # the k-tile refilled into stage (kt - 1) % stages
        refill = ex.all_of([ex.binary("ge", kt, ex.as_index(1)), _lt(nxt, per_slice)])
        stage = nxt % s.stages
        b.mbarrier(MBAR_ARRIVE, self.EMPTY, [], loop, slot=stage, pred=refill)
        b.mbarrier(MBAR_WAIT, self.EMPTY, shared, loop, slot=stage, parity=(nxt // s.stages + 1) % 2,
                   pred=ex.all_of([self._first_thread(), refill]))
        self._fill(k_first + nxt, stage, loop, refill)
        return acc
