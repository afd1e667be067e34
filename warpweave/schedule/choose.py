"""The default schedule of a fusion group: a template and its parameters chosen from
the group's kind, shapes and dtypes and the target."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from ..ir import expr as ex
from ..ir.dtypes import compute_dtype
from ..ir.gir_verify import GPU_ARCH
from ..ir.scatter import match_scatter
from ..ir.tensor import ComputeOp, TensorGraph
from ..passes.cost import DeviceModel, device_for, row_sweeps_time
from ..passes.fuse import Group, row_place
from .contraction import choose_contraction
from .mma import contraction_of, default_mma
from .templates import (MAX_TILE, CpuColumnReduce, CpuElementwise, CpuRowGroup, CpuRowReduce, CpuScatter,
                        GpuColumnReduce, GpuColumnTile, GpuElementwise, GpuRowGroup, GpuRowReduce,
                        GpuScatter, GpuSplitColumnReduce, GpuSplitRows, GpuTranspose, Schedule)


DEFAULT_SM_COUNT = 132  # H100 / H200; the driver passes the device's own count


def _pow2_at_most(n: int, cap: int) -> int:
    p = 1
    while p * 2 <= min(n, cap):
        p *= 2
    return p


def flat_elementwise(ops: list[ComputeOp], graph: TensorGraph) -> bool:
    """Whether these elementwise operations (of one shape) read every tensor at their
    own position (same shape, axes in order): their vectors may then run over the
    flattened elements, whatever the width of the last axis, with a scalar tail
    (H200, 2026-12-02: GELU over [3001, 5003] ran at vector width 1, 0.70x Inductor)."""
    shape = ops[0].shape if ops else ()
    if not shape:
        return False
    for op in ops:
        if op.reduce is not None or op.shape != shape:
            return False
        axes = [a.name for a in op.axes]
        for ld in op.loads:
            if graph[ld.tensor].shape != shape or \
                    [i.name if isinstance(i, ex.Var) else None for i in ld.indices] != axes:
                return False
    return True


def choose(op: ComputeOp, target: str, sm_count: int = DEFAULT_SM_COUNT,
           graph: TensorGraph | None = None) -> Schedule:
    """The default schedule for `op` on `target` ("gpu" or "cpu"); `graph` (holding
    its inputs) lets an elementwise operation vectorise over its flattened elements."""
    kind = op.kind
    lanes16 = 16 // op.dtype.itemsize  # elements of one 16-byte access
    scatter = match_scatter(op)
    if scatter is not None:
        last = op.shape[-1] if op.shape and scatter.axis != len(op.shape) - 1 else 1
        if target == "cpu":
            return CpuScatter(vector=max(1, 64 // op.dtype.itemsize))
        return GpuScatter(vector=lanes16 if last % lanes16 == 0 else 1)
    if target == "cpu":
        lanes64 = max(1, 64 // compute_dtype(op.dtype).itemsize)
        if kind == "reduction-row":
            return CpuRowReduce(vector=lanes64)
        if kind in ("reduction-column", "contraction"):
            # 1 KB of each row, in vectors no wider than the row: a row narrower than
            # the vector ran as scalars (a bias gradient over [512, 64] float32: 36 µs)
            width = _pow2_at_most(op.shape[-1] if op.shape else 1, 16 * lanes64)
            return CpuColumnReduce(vector=width, chunk=16 * lanes64)
        return CpuElementwise(vector=lanes64)
    if kind == "reduction-row":
        k = 1
        for e in op.reduce.extents:
            k *= e
        if k < SHORT_REDUCTION:
            return GpuColumnReduce(threads=256)
        vec = lanes16 if k % lanes16 == 0 else 1
        threads = max(32, _pow2_at_most(max(1, k // vec), 256))
        return GpuRowReduce(threads=threads, vector=vec)
    if kind in ("reduction-column", "contraction"):
        read = sum(math.prod(graph[i].shape) * graph[i].dtype.itemsize for i in op.inputs) if graph else None
        return _column_reduce(op, sm_count, read)
    if kind == "layout" and len(op.shape) >= 2:
        if op.dtype.itemsize == 2 and op.shape[-1] % 2 == 0 and op.shape[-2] % 2 == 0:
            return GpuTranspose(tile=64, vector=2)  # 4-byte accesses for 16-bit types
        return GpuTranspose()
    last = op.shape[-1] if op.shape else 1
    flat = graph is not None and flat_elementwise([op], graph)
    return GpuElementwise(vector=lanes16 if flat or last % lanes16 == 0 else 1)


SHORT_REDUCTION = 32
"""Reductions over fewer elements than a warp's lanes (pooling windows, short rows left
unfused) take a thread per output looping over its elements: a warp per output left
most lanes idle (H200, 2026-12-03: ResNet-50's 3x3 max pool over [64, 64, 112, 112]
bfloat16 took 7.7 ms, 64 % of the inference step)."""


def choose_row_group(length: int, rows: int, dtype_bytes: int, target: str) -> Schedule:
    """The mapping of a fused row group whose rows hold `length` elements; its accesses
    move elements of `dtype_bytes` bytes (`row_access_bytes` on the GPU; the widest
    tensor the group moves on the CPU). Each rule below was measured on the H200
    (2026-12-02, `benchmarks/RESULTS.md`)."""
    if target == "cpu":
        return CpuRowGroup(vector=max(1, 64 // max(4, dtype_bytes)))
    w = ragged_vector(length, dtype_bytes)
    runs = -(-length // w)
    if length < SHORT_REDUCTION and w * dtype_bytes < 16:
        # rows too short and too narrow for 16-byte runs: a thread per row holding it
        # (a row sum over [1000003, 7]: 5.2 µs float32, 6.2 bfloat16; 9.0 and 9.9 at two
        # threads a row of four scalars each)
        return _row_point(rows, 1, w, runs, 1)
    if runs <= SHORT_RUNS and w * dtype_bytes == 16:
        # a thread per run up to two runs, about two runs a thread beyond, several rows
        # per warp side by side: a thread per row striding over four runs reached 67 %
        # of the roofline on a layer norm over [1000000, 16] float32 (33 µs at two
        # threads of two runs, 47 at one of four); softmax over [1000000, 8] float32,
        # 17.4 µs at two threads of one run, 18.3 at one of two
        # (enough threads that a thread's runs fit the register tile: a row of
        # 1-byte booleans has 16-element runs)
        row_threads = runs if runs <= 2 else _pow2_at_most(runs // 2, runs)
        row_threads = max(row_threads, _next_pow2(-(-runs * w // MAX_TILE)))
        return _row_point(rows, row_threads, w, -(-runs // row_threads), 1)
    # about four 16-byte runs per thread per pass; a whole row in one pass when it fits
    tile = min(MAX_TILE, 4 * w)
    row_threads = min(1024, max(1, _next_pow2(-(-length // tile))))
    chunks = max(1, min(_tile_cap(row_threads) // w, -(-length // (row_threads * w))))
    passes = -(-length // (row_threads * w * chunks))
    if passes > 1:
        # every phase rereads the row: the fewest threads per row (the most rows in
        # flight, each with a full tile) whose rows stay in L2 between the phases
        row_threads = next(t for t in (256, 512, 1024) if t == 1024 or
                           (1024 // t) * length * dtype_bytes <= L2_ROW_BYTES_PER_SM)
        chunks = _tile_cap(row_threads) // w
        passes = -(-length // (row_threads * w * chunks))
    return _row_point(rows, row_threads, w, chunks, passes)


def _row_point(rows: int, row_threads: int, w: int, chunks: int, passes: int) -> GpuRowGroup:
    """Several rows per block of up to 256 threads; a block per row from `BLOCK_ROW`
    threads a row, whose barriers no other row then waits on (layer norm over [4096,
    4095]: bfloat16 61 µs at two rows of 128 threads per block, 38 at one; float32 61-71
    µs at two or four rows of 256, 46 at one)."""
    if row_threads >= BLOCK_ROW:
        return GpuRowGroup(threads=row_threads, row_threads=row_threads, vector=w, chunks=chunks, passes=passes)
    threads = max(row_threads, min(256, _next_pow2(rows * row_threads)), 32)
    return GpuRowGroup(threads=threads, row_threads=row_threads, vector=w, chunks=chunks, passes=passes)


def _tile_cap(threads: int) -> int:
    """Register-tile elements per thread: a block of 1024 threads has 64 registers a
    thread, and a 32-element tile spills (log-softmax over [4096, 30522] float32: 476 µs
    in one pass at 32, 363 in two at 16)."""
    return MAX_TILE // 2 if threads >= 1024 else MAX_TILE


SHORT_RUNS = 16  # rows of at most this many 16-byte runs take the short-row mapping
BLOCK_ROW = 128  # threads a row from which a row has its block to itself
L2_ROW_BYTES_PER_SM = 150 * 1024
"""Bytes of rows in flight per SM that multi-pass row groups keep in L2 between phases
(a fifth of the H100's and H200's 50 MB over 132 SMs): log-softmax over [4096, 30522]
bfloat16 (61 KB rows), 222 µs at 512 threads a row (two rows per SM), 289 at 1024; in
float32 (122 KB rows) 476 µs at 512, 363 at 1024."""


def choose_split_rows(length: int, rows: int, dtype_bytes: int, sm_count: int) -> GpuSplitRows:
    """Split rows over enough blocks for about two per SM (at most a block's threads
    per row, so that one thread per partial combines them), each slice a whole number
    of passes of the block's register tile, and no block left without elements."""
    w = 16 // dtype_bytes
    while w > 1 and length % w:
        w //= 2
    threads = 256
    splits = min(threads, max(2, -(-2 * sm_count // rows)))
    per_block = -(-length // splits)
    chunks = max(1, min(MAX_TILE // w, -(-per_block // (threads * w))))
    point = GpuSplitRows(splits=splits, threads=threads, vector=w, chunks=chunks)
    return replace(point, splits=-(-length // point.slice_length(length)))


LONG_ROW = 2 * 1024 * MAX_TILE  # two passes of the largest block's register tile, or more


def split_rows_pays(group: Group, graph: TensorGraph, sm_count: int) -> GpuSplitRows | None:
    """The split-row point for a GPU row group of fewer rows than SMs, each at least
    `LONG_ROW` long, when the cost model ranks it ahead of a block per row (which
    leaves SMs idle: H200, 2026-12-02, softmax over [8, 262144] at 10 % of the
    roofline), else None."""
    rows = int(np.prod(group.rows, dtype=np.int64)) if group.rows else 1
    if group.pattern != "row" or rows >= sm_count or group.length < LONG_ROW:
        return None
    access = row_access_bytes(group, graph)
    point = choose_split_rows(group.length, rows, access, sm_count)
    if point.splits < 2:
        return None
    device = device_for("gpu", sm_count)
    reductions = sum(1 for o in group.ops if graph[o].reduce is not None)
    elementwise_out = any(row_place(graph[o], group.rows, group.length) == "elementwise" for o in group.outputs)
    sweeps = reductions + elementwise_out  # a kernel per sweep, and a last one that combines
    kernels = sweeps + (not elementwise_out)
    split = row_sweeps_time(rows, group.length, access, sweeps, rows * point.splits, kernels, device)
    whole = row_sweeps_time(rows, group.length, access, sweeps, rows, 1, device)
    return point if split < whole else None


def row_access_bytes(group: Group, graph: TensorGraph) -> int:
    """The element size that sets a GPU row group's vector width: the narrowest type
    among the tensors it reads or writes along its rows in DRAM (inputs from outside
    the group and its outputs, whose last axis is the row), so that 16-bit rows move 16
    bytes an access whatever precision the group computes its intermediates and row
    scalars in (H200, 2026-12-02: log-softmax over [4096, 30522] in bfloat16 read 8
    bytes an access, 348 → 420 µs); the widest tensor where none runs along the row."""
    members = set(group.ops)
    moved = [graph[i] for o in group.ops for i in graph[o].inputs if i not in members]
    moved += [graph[o] for o in group.outputs]
    along = [t.dtype.itemsize for t in moved if group.length > 1 and t.shape and t.shape[-1] == group.length]
    if along:
        return min(along)
    return max(t.dtype.itemsize for o in group.ops for t in [graph[o]] + [graph[i] for i in graph[o].inputs])


def ragged_vector(length: int, dtype_bytes: int) -> int:
    """The vector width of a GPU row group's rows of `length` elements: 16 bytes when
    the row is long enough (`RAGGED_ROW` runs) for a scalar head and tail to cost little
    where the width does not divide it (H200, 2026-12-02: softmax over [1024, 50257] at
    vector width 1 ran at 17 % of the roofline), else what divides the row."""
    w = 16 // dtype_bytes
    if length % w == 0 or length >= RAGGED_ROW * w:
        return w
    while w > 1 and length % w:
        w //= 2
    return w


RAGGED_ROW = 64  # 16-byte runs a row needs before its vectors may leave a scalar head and tail
GROUP_TEMPLATES = (GpuRowGroup, CpuRowGroup, GpuSplitRows)
SHORT_ROW = 4096  # templates that lower a group of any size


def default_schedule(group: Group, graph: TensorGraph, target: str, sm_count: int = DEFAULT_SM_COUNT,
                     arch: str = GPU_ARCH) -> Schedule:
    """The default schedule of a fusion group on `target` ("gpu" or "cpu"). On the GPU a
    row group of one reduction over rows of at most `SHORT_ROW` elements takes the
    row-group template too: it maps several short rows to a block (a block per row of
    seven elements wastes the GPU; H200, 2026-12-02: a [1000003, 7] row sum 604 → 8 µs),
    while longer rows keep the row reduction's block per row (a [4096, 100003] sum:
    372 µs against the row group's 599). `arch` is the GPU's architecture (which
    tensor-core instructions it has)."""
    product = contraction_of(group, graph) if target == "gpu" else None
    if product is not None:
        return default_mma(product, sm_count, arch)
    if group.pattern == "contraction":
        return choose_contraction(group, graph)
    split = split_rows_pays(group, graph, sm_count) if target == "gpu" else None
    if split is not None:
        return split
    if len(group.ops) > 1 or (target == "gpu" and group.pattern == "row" and group.length <= SHORT_ROW):
        return choose_group(group, graph, target)
    return choose(graph[group.ops[0]], target, sm_count, graph)


def choose_group(group: Group, graph: TensorGraph, target: str) -> Schedule:
    """The default schedule of a fused group of several operations on `target`
    ("gpu" or "cpu"): a row group's mapping, or an elementwise vector width."""
    widest = max(t.dtype.itemsize for o in group.ops for t in
                 [graph[o]] + [graph[i] for i in graph[o].inputs])
    if group.pattern == "row":
        rows = int(np.prod(group.rows, dtype=np.int64)) if group.rows else 1
        return choose_row_group(group.length, rows, widest if target == "cpu" else row_access_bytes(group, graph),
                                target)
    shape = graph[group.anchor].shape
    lanes = max(1, (64 if target == "cpu" else 16) // max(widest, 4 if target == "cpu" else 1))
    if target == "gpu" and shape and shape[-1] % lanes and \
            not flat_elementwise([graph[o] for o in group.ops], graph):
        lanes = 1
    return CpuElementwise(vector=lanes) if target == "cpu" else GpuElementwise(vector=lanes)


def _next_pow2(n: int) -> int:
    p = 1
    while p < n:
        p *= 2
    return p


def _column_reduce(op: ComputeOp, sm_count: int, read_bytes: int | None = None) -> Schedule:
    """One thread per output when that fills the GPU; for a long reduction, a block
    of 1024 threads per 32 outputs when that occupies a sixth of the SMs or more and
    the cost model ranks its one kernel ahead of a split's two (`column_tile_pays`);
    else split the reduction so that about four blocks per SM stream the rows."""
    outputs, k = 1, 1
    for n in op.shape:
        outputs *= n
    for n in op.reduce.extents:
        k *= n
    plain = GpuColumnReduce()
    if -(-outputs // plain.threads) >= 2 * sm_count or k < 64:
        return plain
    vec = 4 if outputs % 4 == 0 else 1
    tile = GpuColumnTile(vector=vec)
    tiles = -(-outputs // tile.tile)
    # as many threads across the outputs as there are outputs (up to 256), and enough
    # blocks for about a thousand threads per SM
    threads = min(256, max(32, _next_pow2(-(-outputs // vec))))
    blocks = -(-outputs // (threads * vec))
    splits = max(2, min(k // 16, -(-4 * (256 // threads) * sm_count // blocks)))
    chunk = -(-k // splits)
    split = GpuSplitColumnReduce(splits=-(-k // chunk), threads=threads, vector=vec)
    read = read_bytes or outputs * k * op.dtype.itemsize
    if 6 * tiles >= sm_count and k >= tile.row_threads * tile.unroll and \
            column_tile_pays(read, tiles, split.splits * outputs * 4, device_for("gpu", sm_count)):
        return tile
    return split


def column_tile_pays(read_bytes: int, tiles: int, partial_bytes: int, device: DeviceModel) -> bool:
    """Whether a column reduction's `tiles` blocks, one kernel reading `read_bytes`, beat
    a split reduction that reads them at the full bandwidth but writes and rereads
    `partial_bytes` of partials in a second kernel: few blocks pull only what their SMs
    can (H200, 2026-12-02: a layer norm's weight gradient, [32, 512, 768] summed to
    768 outputs on 24 column tiles, moved 2.6 TB/s of the 4.2)."""
    tile = read_bytes / min(device.bandwidth, min(tiles, device.sm_count) * device.sm_bandwidth)
    split = (read_bytes + 2 * partial_bytes) / device.bandwidth + device.launch_s / 2
    return tile <= split
