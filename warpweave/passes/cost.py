"""The cost model: bytes per memory level, instructions, launches and occupancy,
against a device's measured bandwidth and throughput.

Two views of the same question. `group_traffic` estimates a fusion group from the
tensor graph alone (DRAM bytes in and out, arithmetic, one launch), which is what
the fusion planner ranks plans with. `kernel_cost` reads a GIR kernel after
stitching: every move node's bytes at its memory level, counted over the
iterations of its scopes, plus instructions, barriers and occupancy; its time is
what the benchmarks print next to measured times.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..ir import expr as ex
from ..ir import simplify as sx
from ..ir.gir import Kernel, Node, data_indices
from ..ir.scatter import match_scatter
from ..ir.tensor import EXPENSIVE_OPS, ComputeOp, TensorGraph

# Arithmetic cost of one operation in simple-instruction units (the math library's
# exp/tanh/erf are straight-line sequences of 10-20 instructions).
_OP_WEIGHT = {op: 16 for op in EXPENSIVE_OPS}
_OP_WEIGHT.update(div=4, rsqrt=4, sqrt=4)


@dataclass(frozen=True)
class DeviceModel:
    """What the cost model knows about a device."""

    name: str
    bandwidth: float       # DRAM bytes per second (measured copy bandwidth)
    launch_s: float        # fixed cost of one kernel launch
    ops_per_s: float       # simple arithmetic instructions per second (all cores)
    sm_count: int = 1
    sm_bandwidth: float = 9e10  # DRAM bytes per second one SM can pull (H100: a column
    #                             reduction on 24 SMs moved 2.2 TB/s)
    threads_per_sm: int = 2048
    shared_per_sm: int = 228 * 1024
    registers_per_sm: int = 65536
    blocks_per_sm: int = 32
    # the memory system, fitted on the recorded exhaustive H200 sweep (benchmarks/cost_model_fit.py
    # --fit, 2026-12-03); the SM side is the H100's and the H200's alike
    l2_bandwidth: float = 1.2e13   # bytes per second between the L2 and the SMs (32-byte sectors)
    l2_bytes: int = 50 << 20       # L2 capacity: re-reads hit it while their working set fits
    latency_s: float = 4e-7        # a global load's round trip under load
    requests_per_sm: int = 192     # warp-level global loads an SM keeps in flight at most
    barrier_s: float = 1e-8        # a block barrier with the shared-memory step around it
    clock_hz: float = 1.755e9      # SM clock: one L1 wavefront per SM and clock
    overlap_p: float = 2.0         # the p of the p-norm that combines the resource times


_MEMORY = dict(l2_bandwidth=1.2e13, l2_bytes=50 << 20, latency_s=4e-7, requests_per_sm=192, barrier_s=1e-8,
               clock_hz=1.755e9, overlap_p=2.0)  # fitted on the H200 (2026-12-03); the H100 shares its SMs and L2
H100 = DeviceModel("H100 (sm_90)", bandwidth=2.99e12, launch_s=3e-6, ops_per_s=3.3e13, sm_count=132, **_MEMORY)
# H200: the H100's SMs and clocks with HBM3e; copy bandwidth measured 4.14-4.25 TB/s (2026-12-02)
H200 = DeviceModel("H200 (sm_90)", bandwidth=4.2e12, launch_s=3e-6, ops_per_s=3.3e13, sm_count=132,
                   sm_bandwidth=1.1e11, **_MEMORY)
HOST_CPU = DeviceModel("host CPU", bandwidth=1.5e10, launch_s=5e-6, ops_per_s=4e10)
# Shipped profiles, by the device name CUDA reports (a calibrated profile overrides them).
SHIPPED = {"NVIDIA H100 80GB HBM3": H100, "NVIDIA H100": H100, "NVIDIA H200": H200}


def device_for(target: str, sm_count: int | None = None, name: str | None = None) -> DeviceModel:
    """The model for a target family ("gpu" or "cpu"): a shipped profile for a GPU it
    knows by `name`, else the H100's scaled to `sm_count` SMs."""
    if target == "cpu":
        return HOST_CPU
    if name in SHIPPED and (not sm_count or SHIPPED[name].sm_count == sm_count):
        return SHIPPED[name]
    if sm_count and sm_count != H100.sm_count:
        scale = sm_count / H100.sm_count
        return DeviceModel(f"{name or 'GPU'} with {sm_count} SMs", H100.bandwidth * scale, H100.launch_s,
                           H100.ops_per_s * scale, sm_count)
    return H100


def _size(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _op_work(op: ComputeOp) -> int:
    """Arithmetic instructions to compute `op` (per element of its iteration space;
    a scatter-add's space leaves out the axis its data pick)."""
    per = 0
    for n in ex.postorder(op.value):
        if isinstance(n, (ex.Unary, ex.Binary)):
            per += _OP_WEIGHT.get(n.op, 1)
        elif isinstance(n, (ex.Select, ex.Cast)):
            per += 1
    space = _size(op.shape) * (_size(op.reduce.extents) if op.reduce is not None else 1)
    scatter = match_scatter(op)
    if scatter is not None:
        space //= max(1, op.shape[scatter.axis])
    return (per + (1 if op.reduce is not None else 0)) * space


@dataclass(frozen=True)
class GroupTraffic:
    """A fusion group's estimated DRAM bytes, arithmetic and time."""

    read_bytes: int
    write_bytes: int
    instructions: int
    time_s: float

    @property
    def dram_bytes(self) -> int:
        return self.read_bytes + self.write_bytes


def _gathered(op: ComputeOp) -> set[str]:
    """The tensors `op` reads only through loads whose index is data (gathers)."""
    lds = op.loads
    data = {ld.tensor for ld in lds if any(ex.loads(i) for i in ld.indices)}
    return data - {ld.tensor for ld in lds if not any(ex.loads(i) for i in ld.indices)}


def group_traffic(group, graph: TensorGraph, device: DeviceModel) -> GroupTraffic:
    """DRAM traffic of a group: each tensor it reads from outside once (a gathered
    table: at most one element per point of the gathering operation's iteration
    space), each output written once; time = max(bytes / bandwidth, work /
    throughput) + one launch."""
    members = set(group.ops)
    read = {}
    work = 0
    for name in group.ops:
        op = graph[name]
        work += _op_work(op)
        gathered = _gathered(op)
        for src in op.inputs:
            if src not in members:
                t = graph[src]
                n = _size(t.shape)
                if src in gathered:
                    n = min(n, _size(op.shape) * (_size(op.reduce.extents) if op.reduce is not None else 1))
                read[src] = max(read.get(src, 0), n * t.dtype.itemsize)
    write = sum(_size(graph[n].shape) * graph[n].dtype.itemsize for n in group.outputs)
    r = sum(read.values())
    time = max((r + write) / device.bandwidth, work / device.ops_per_s) + device.launch_s
    return GroupTraffic(r, write, work, time)


# ----------------------------------------------------------------------------- GIR

@dataclass(frozen=True)
class KernelCost:
    """Bytes per memory level and instructions of one GIR kernel, what limits how many
    of its blocks an SM holds and how many bytes each thread has in flight, and the
    estimate (`kernel_time` of these counts on the device)."""

    global_read: int       # bytes loaded from global memory, every iteration counted
    global_write: int
    shared_bytes: int      # shared-memory traffic (loads + stores)
    shuffle_bytes: int     # register bytes moved between lanes
    instructions: int      # thread instructions: arithmetic, shuffles, memory accesses
    barriers: int          # block barriers executed per block
    occupancy: float       # resident threads per SM / the SM's maximum
    time_s: float
    dram_bytes_unique: int = 0  # global bytes once per buffer (a re-read can hit the L2)
    reread_bytes: int = 0       # the rest of the global bytes: L2 hits while the blocks'
    #                             working set fits the L2, DRAM reads past it
    reuse_shared: int = 0       # bytes of the re-read buffers every block reads whole
    reuse_per_block: int = 0    # bytes of the re-read buffers each block reads its own part of
    sector_bytes: int = 0       # bytes moved between L2 and the SMs, in 32-byte sectors
    wavefronts: int = 0         # L1 wavefronts: 128-byte lines each warp access touches
    round_trips: int = 0        # dependent global-load batches, summed over threads
    load_requests: int = 0      # warp-level global load instructions
    load_sectors: int = 0       # the sector bytes of those loads
    grid: int = 1
    block: int = 1
    block_shared: int = 0       # shared bytes per block
    registers: int = 32         # registers per thread (estimated from the per-thread tile)
    launches: int = 1

    @property
    def dram_bytes(self) -> int:
        return self.global_read + self.global_write

    def summary(self) -> str:
        return (f"global {_fmt_bytes(self.global_read)} read + {_fmt_bytes(self.global_write)} written, "
                f"shared {_fmt_bytes(self.shared_bytes)}, shuffles {_fmt_bytes(self.shuffle_bytes)}, "
                f"{self.barriers} barriers/block, occupancy {self.occupancy:.0%}, "
                f"estimate {self.time_s * 1e6:.1f} us")


def _fmt_bytes(n: int) -> str:
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _iterations(kernel: Kernel, node: Node) -> int:
    n = 1
    for s in kernel.scope_chain(node.scope):
        n *= s.attr("extent")
    return n


_COUNT_LIMIT = 1 << 16  # largest iteration space counted point by point; larger ones are sampled


def _active(kernel: Kernel, node: Node) -> float:
    """The fraction of a move's iterations its predicate lets through: counted over
    every combination of the predicate's scope variables when there are at most
    `_COUNT_LIMIT`, else over that many points drawn at random (with a fixed seed)."""
    pred = node.attr("pred")
    ranges = kernel.ranges(node.scope)
    names = sorted(ex.free_vars(pred))
    if any(n not in ranges for n in names):
        return 1.0
    spans = [ranges[n][1] - ranges[n][0] + 1 for n in names]
    if int(np.prod(spans, dtype=np.float64)) <= _COUNT_LIMIT:
        grids = np.meshgrid(*[np.arange(ranges[n][0], ranges[n][1] + 1, dtype=np.int64) for n in names],
                            indexing="ij")
        env = dict(zip(names, grids))
    else:
        rng = np.random.default_rng(0)
        env = {n: rng.integers(ranges[n][0], ranges[n][1] + 1, _COUNT_LIMIT) for n in names}
    shape = np.broadcast_shapes(*(v.shape for v in env.values())) if env else ()
    return float(np.mean(np.broadcast_to(ex.evaluate(pred, env), shape)))


WARP = 32
SECTOR = 32    # bytes: the unit the L2 moves to and from an SM
LINE = 128     # bytes: an L1 line; a warp access takes one wavefront per line it touches
MAX_ACCESS = 16  # bytes one thread moves in one instruction


@dataclass(frozen=True)
class _Access:
    """How one global move is issued: elements per thread instruction (`width`), the
    instructions per element of its iteration space (`per_element`: lanes reading one
    address share an instruction), and per warp instruction the L1 lines it touches
    and the sectors the warp needs (over the move's vector lanes, a sector fetched once)."""

    width: int
    per_element: float
    lines: float
    sectors: float


def _access(kernel: Kernel, node: Node, t: str | None) -> _Access:
    size = node.dtype.itemsize if node.dtype is not None else 4
    env: dict = {}
    vec_axes = []
    t_extent = 1
    for scope in kernel.scope_chain(node.scope):
        var, extent = scope.attr("var"), scope.attr("extent")
        if scope.scope_kind == "vector":
            vec_axes.append((var, extent))
        elif var == t:
            t_extent = min(WARP, extent)
        else:
            env[var] = 0
    lanes = int(np.prod([n for _, n in vec_axes], dtype=np.int64)) if vec_axes else 1
    if data_indices(node):  # a gather: one sector and one line per element
        return _Access(1, 1.0, float(t_extent), float(t_extent))
    grids = np.meshgrid(*[np.arange(n, dtype=np.int64) for _, n in vec_axes], indexing="ij") if vec_axes else []
    env.update({var: g.reshape(1, -1) for (var, _), g in zip(vec_axes, grids)})
    if t is not None:
        env[t] = np.arange(t_extent, dtype=np.int64)[:, None]
    try:
        off = np.broadcast_to(ex.evaluate(node.attr("offset"), env), (t_extent, lanes)).astype(np.int64)
    except Exception:  # noqa: BLE001 - an offset the sampler cannot evaluate: count it coalesced
        return _Access(1, 1.0, max(1.0, t_extent * size / LINE), max(1.0, t_extent * size / SECTOR))
    row, first = np.unique(off[0], return_index=True)  # thread 0's distinct elements
    starts = _starts(kernel, node, t, vec_axes, np.sort(first))
    width = 1
    w = max(1, MAX_ACCESS // size)
    while w > 1:
        if len(row) % w == 0:
            groups = row.reshape(-1, w)
            if np.all(np.diff(groups, axis=1) == 1) and np.all(starts[:, ::w] % w == 0):
                width = w
                break
        w //= 2
    instrs = max(1, len(row) // width)
    lead = off[:, np.sort(first)[:width]].reshape(-1) * size  # the first instruction's bytes, over the warp
    lines = float(len(np.unique(lead // LINE)))
    sectors = len(np.unique(off.reshape(-1) * size // SECTOR)) / instrs
    return _Access(width, instrs / lanes, lines, sectors)


def _starts(kernel: Kernel, node: Node, t: str | None, vec_axes, lanes) -> np.ndarray:
    """The offsets of thread 0's distinct lanes (in `lanes` order) at the first thread of
    every warp of a block and in the first few blocks and outer iterations: a vector
    access must be aligned at every one (a ragged row's start moves from row to row)."""
    env: dict = {}
    axes = []
    for scope in kernel.scope_chain(node.scope):
        var, extent = scope.attr("var"), scope.attr("extent")
        if scope.scope_kind == "vector":
            continue
        if var == t:
            axes.append((var, np.arange(0, extent, WARP, dtype=np.int64)))
        else:
            axes.append((var, np.arange(min(extent, 4), dtype=np.int64)))
    grids = np.meshgrid(*[v for _, v in axes], indexing="ij") if axes else []
    env.update({var: g.reshape(-1, 1) for (var, _), g in zip(axes, grids)})
    vgrids = np.meshgrid(*[np.arange(n, dtype=np.int64) for _, n in vec_axes], indexing="ij") if vec_axes else []
    env.update({var: g.reshape(1, -1)[:, lanes] for (var, _), g in zip(vec_axes, vgrids)})
    samples = grids[0].size if grids else 1
    return np.broadcast_to(ex.evaluate(node.attr("offset"), env), (samples, len(lanes))).astype(np.int64)


ACCESS_INSTRUCTIONS = 2  # a global access: the load or store, and its address
UNROLLED = 32  # elements: serial loops of up to this many (with their vector lanes) are unrolled


def _batch(kernel: Kernel, node: Node) -> tuple[str, int]:
    """The scope whose iterations issue a global load's batches (loads in one iteration
    issue together, without waiting for each other), and how many batches run in the
    kernel: vector lanes and unroll scopes issue together, and so do serial loops of up
    to `UNROLLED` elements with them (unrolled); a longer loop is unrolled in part, by
    as many iterations as fit `UNROLLED` elements."""
    chain = [s for s in kernel.scope_chain(node.scope) if s.scope_kind != "vector"]
    lanes = int(np.prod(kernel.vector_shape(node.scope), dtype=np.int64)) or 1
    partial, keep = 1, len(chain)
    for i in range(len(chain) - 1, -1, -1):
        s = chain[i]
        if s.scope_kind == "unroll" or (s.scope_kind == "serial" and lanes * s.attr("extent") <= UNROLLED):
            lanes *= s.attr("extent")
            keep = i
        else:
            if s.scope_kind == "serial":
                partial = -(-s.attr("extent") // max(1, UNROLLED // lanes))
                keep = i
            break
    n = partial
    for s in chain[:keep]:
        n *= s.attr("extent")
    key = chain[keep].id if partial > 1 else chain[keep - 1].id if keep else ""
    return key, n


def _registers(kernel: Kernel) -> int:
    """Registers per thread: a base for addresses, indices and scalars, and one (two for
    8-byte values) per element of every vector value that stays live outside the vector
    scope that computed it (a row tile kept across a barrier)."""
    nodes = kernel.node_map
    live = {}
    for e in kernel.edges:
        if e.level != "reg" or e.src not in nodes or e.dst not in nodes:
            continue
        src, dst = nodes[e.src], nodes[e.dst]
        lanes = int(np.prod(kernel.vector_shape(src.scope), dtype=np.int64)) if src.scope else 1
        if lanes > 1 and src.scope != dst.scope and src.dtype is not None:
            live[src.id] = lanes * max(1, src.dtype.itemsize // 4)
    return 32 + sum(live.values())


def kernel_cost(kernel: Kernel, device: DeviceModel) -> KernelCost:
    """Bytes per level (over every iteration of every move), instructions, barriers per
    block, how the global accesses are issued (width, L2 sectors, L1 wavefronts, load
    batches, re-reads) and what limits occupancy; on a GPU its time is `kernel_time`
    (on the CPU, the larger of bytes / bandwidth and instructions / throughput, plus a
    launch)."""
    g_read = g_write = shared = shuffles = instr = barriers = 0
    sectors = wavefronts = requests = load_sectors = 0.0
    per_buffer: dict[str, int] = {}
    batches: dict[str, float] = {}
    gpu = kernel.target != "cpu"
    block_scope = kernel.find_scope("block")
    t = block_scope.attr("var") if block_scope is not None else None
    for n in kernel.nodes:
        if n.is_scope or n.family == "mem":
            continue
        count = _iterations(kernel, n)
        if n.family == "move" and n.attr("pred") is not None:
            count = round(count * _active(kernel, n))
        size = n.dtype.itemsize if n.dtype is not None else 0
        if n.op in ("move.global.reg", "move.reg.global"):
            if n.op == "move.global.reg":
                g_read += count * size
            else:
                g_write += count * size
            buf = n.attr("buffer")
            per_buffer[buf] = per_buffer.get(buf, 0) + count * size
            if gpu:
                acc = _access(kernel, n, t)
                warp_instrs = count * acc.per_element / WARP
                instr += int(count * acc.per_element) * (ACCESS_INSTRUCTIONS + (n.attr("pred") is not None))
                wavefronts += warp_instrs * acc.lines
                sectors += warp_instrs * acc.sectors * SECTOR
                if n.op == "move.global.reg":
                    requests += warp_instrs
                    load_sectors += warp_instrs * acc.sectors * SECTOR
                    key, n_outer = _batch(kernel, n)
                    batches[key] = max(batches.get(key, 0.0), n_outer * count / max(1, _iterations(kernel, n)))
        elif n.op in ("move.shared.reg", "move.reg.shared"):
            shared += count * size
            instr += count
        elif n.op == "move.reg.reg":
            shuffles += count * size
            instr += count
        elif n.op == "sync.block":
            barriers += count // max(1, kernel.grid * kernel.block)
        elif n.family == "compute" and n.op != "compute.const":
            instr += count * _OP_WEIGHT.get(n.op.split(".", 1)[1], 1)
        elif n.op == "call.gemm":  # operands read once, result written once, one FMA per term
            m, nn, k = (_most(kernel, n, key) for key in ("m", "n", "k"))
            g_read += count * (m * k + k * nn) * size
            g_write += count * m * nn * size
            instr += count * m * nn * k
    unique = shared_reuse = block_reuse = 0
    for buf, moved in per_buffer.items():
        try:
            size_b = kernel.param(buf).size * kernel.param(buf).dtype.itemsize
        except Exception:  # noqa: BLE001 - not a parameter: count what moved
            size_b = moved
        unique += min(moved, size_b)
        if moved > size_b:  # re-read: by every block (all of it), or each block its own part
            if moved >= size_b * kernel.grid:
                shared_reuse += size_b
            else:
                block_reuse += size_b / max(1, kernel.grid)
    total = g_read + g_write
    if not gpu or not per_buffer:
        sectors, unique = float(total), total
    cost = KernelCost(g_read, g_write, shared, shuffles, instr, barriers, 0.0, 0.0,
                      dram_bytes_unique=unique, reread_bytes=max(0, total - unique),
                      reuse_shared=shared_reuse, reuse_per_block=int(block_reuse),
                      sector_bytes=int(sectors), wavefronts=int(wavefronts),
                      round_trips=int(sum(batches.values())), load_requests=int(requests),
                      load_sectors=int(load_sectors), grid=kernel.grid, block=kernel.block,
                      block_shared=kernel.shared_bytes, registers=_registers(kernel) if gpu else 32)
    if not gpu:
        time = max(total / device.bandwidth, instr / device.ops_per_s) + device.launch_s
        return replace(cost, occupancy=1.0, time_s=time)
    resident = _resident_blocks(cost, device)
    occupancy = min(resident, -(-cost.grid // device.sm_count)) * cost.block / device.threads_per_sm
    return replace(cost, occupancy=occupancy, time_s=kernel_time(cost, device))


def _resident_blocks(cost: KernelCost, device: DeviceModel) -> int:
    """Blocks an SM holds at once: limited by its threads, shared memory, registers
    (a block that needs more than the SM has runs with spilled registers) and slots."""
    per_sm = device.threads_per_sm // max(1, cost.block)
    if cost.block_shared:
        per_sm = min(per_sm, device.shared_per_sm // cost.block_shared)
    regs = min(255, -(-cost.registers // 8) * 8)
    per_sm = min(per_sm, device.registers_per_sm // (regs * cost.block))
    return max(1, min(per_sm, device.blocks_per_sm))


def _spilled(cost: KernelCost, device: DeviceModel) -> int:
    """Registers per thread past what a block may hold (255 a thread, the SM's file a
    block): kept in local memory, stored once and loaded once, through the L1."""
    cap = min(255, device.registers_per_sm // max(1, cost.block) // 8 * 8)
    return max(0, cost.registers - cap)


def kernel_terms(cost: KernelCost, device: DeviceModel) -> dict[str, float]:
    """The seconds each resource of the device would need for the kernel alone: DRAM
    (unique bytes, and the re-reads when their working set outgrows the L2), the busy
    SMs' pull on DRAM, L2 sectors, L1 wavefronts (with spilled registers' local
    accesses), instruction issue, Little's law (the load sectors over the bytes a busy
    SM keeps in flight — its resident threads' batches, or its outstanding requests —
    per round trip), and the latency chain (rounds of resident blocks, each waiting out
    its threads' load batches and its barriers). Per-SM resources count the SMs' worth
    of work the grid spreads evenly (its last wave partial)."""
    sms = device.sm_count
    resident = _resident_blocks(cost, device)
    per_sm = -(-cost.grid // sms)                       # blocks the busiest SM runs
    busy = min(sms, cost.grid)
    effective = cost.grid / per_sm                      # SMs' worth of work the grid spreads evenly
    threads = min(resident, per_sm) * cost.block        # resident threads on a busy SM
    working = cost.reuse_shared + min(cost.grid, sms * resident) * cost.reuse_per_block
    miss = 0.0 if working <= device.l2_bytes else 1.0 - device.l2_bytes / working
    dram = (cost.dram_bytes_unique + miss * cost.reread_bytes) / device.bandwidth
    pull = (cost.dram_bytes_unique + miss * cost.reread_bytes) / (busy * device.sm_bandwidth)
    l2 = cost.sector_bytes / device.l2_bandwidth
    spill = 2 * _spilled(cost, device) * cost.grid * cost.block  # local accesses, one 4-byte word each
    l1 = (cost.wavefronts + spill / WARP) / (effective * device.clock_hz)
    issue = (cost.instructions + spill) / (device.ops_per_s * effective / sms)
    if cost.round_trips and cost.load_requests:  # Little's law: bytes in flight per SM / latency
        in_flight = min(threads * cost.load_sectors / cost.round_trips,
                        device.requests_per_sm * cost.load_sectors / cost.load_requests)
        little = cost.load_sectors * device.latency_s / (effective * in_flight)
    else:
        little = 0.0
    rounds = cost.grid * cost.block / (threads * effective)  # rounds of resident threads
    steps = cost.round_trips / max(1, cost.grid * cost.block)  # load batches per thread
    latency = rounds * (steps * device.latency_s + cost.barriers * device.barrier_s)
    return {"dram": dram, "pull": pull, "l2": l2, "l1": l1, "issue": issue, "little": little, "latency": latency}


def kernel_time(cost: KernelCost, device: DeviceModel) -> float:
    """The throughput terms of `kernel_terms` combined by a p-norm (a soft maximum:
    resources that limit about equally overlap imperfectly), then with the latency
    term by a norm whose exponent falls from p to 1 as fewer blocks share an SM (one
    block alone waits out its own round trips and barriers), plus one launch."""
    terms = kernel_terms(cost, device)
    latency = terms.pop("latency")
    p = device.overlap_p
    stream = sum(v ** p for v in terms.values()) ** (1 / p)
    blocks = min(_resident_blocks(cost, device), -(-cost.grid // device.sm_count))
    q = 1 + (p - 1) * (1 - 1 / blocks)
    return float((stream ** q + latency ** q) ** (1 / q)) + cost.launches * device.launch_s


def _most(kernel: Kernel, node: Node, key: str) -> int:
    """The largest value of an int64 attr over the node's scopes."""
    b = sx.bounds(node.attr(key), kernel.ranges(node.scope))
    return max(0, b[1]) if b is not None else 0


def row_sweeps_time(rows: int, length: int, itemsize: int, sweeps: int, blocks: int, kernels: int,
                    device: DeviceModel) -> float:
    """Estimated time of a row group that reads its rows of `length` elements of
    `itemsize` bytes `sweeps` times with `blocks` blocks over `kernels` launches: each
    sweep's bytes at the bandwidth the busy SMs can pull (later sweeps hit L2 as often
    as not, which the estimate ignores), one launch, and half a launch for each further
    kernel (launched while the one before runs: only the gap between them counts)."""
    bandwidth = min(device.bandwidth, min(blocks, device.sm_count) * device.sm_bandwidth)
    return sweeps * rows * length * itemsize / bandwidth + (1 + (kernels - 1) / 2) * device.launch_s
