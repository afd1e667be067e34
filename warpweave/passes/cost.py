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

from dataclasses import dataclass

import numpy as np

from ..ir import expr as ex
from ..ir import simplify as sx
from ..ir.gir import Kernel, Node
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


H100 = DeviceModel("H100 (sm_90)", bandwidth=2.99e12, launch_s=3e-6, ops_per_s=3.3e13, sm_count=132)
# H200: the H100's SMs and clocks with HBM3e; copy bandwidth measured 4.14-4.25 TB/s (2026-12-02)
H200 = DeviceModel("H200 (sm_90)", bandwidth=4.2e12, launch_s=3e-6, ops_per_s=3.3e13, sm_count=132,
                   sm_bandwidth=1.1e11)
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
    """Bytes per memory level and instructions of one GIR kernel, and the estimate."""

    global_read: int
    global_write: int
    shared_bytes: int      # shared-memory traffic (loads + stores)
    shuffle_bytes: int     # register bytes moved between lanes
    instructions: int
    barriers: int          # block barriers executed per block
    occupancy: float       # resident threads per SM / the SM's maximum
    time_s: float

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


def kernel_cost(kernel: Kernel, device: DeviceModel) -> KernelCost:
    """Bytes per level (over every iteration of every move), instructions, barriers per
    block and occupancy; time = max(DRAM bytes / bandwidth, instructions / throughput)
    / occupancy-limited efficiency + one launch."""
    g_read = g_write = shared = shuffles = instr = barriers = 0
    for n in kernel.nodes:
        if n.is_scope or n.family == "mem":
            continue
        count = _iterations(kernel, n)
        if n.family == "move" and n.attr("pred") is not None:
            count = round(count * _active(kernel, n))
        size = n.dtype.itemsize if n.dtype is not None else 0
        if n.op == "move.global.reg":
            g_read += count * size
        elif n.op == "move.reg.global":
            g_write += count * size
        elif n.op in ("move.shared.reg", "move.reg.shared"):
            shared += count * size
        elif n.op == "move.reg.reg":
            shuffles += count * size
            instr += count
        elif n.op == "sync.block":
            barriers += count // max(1, kernel.grid * kernel.block)
        elif n.family == "compute" and n.op not in ("compute.const", "compute.index"):
            instr += count * _OP_WEIGHT.get(n.op.split(".", 1)[1], 1)
        elif n.op == "call.gemm":  # operands read once, result written once, one FMA per term
            m, nn, k = (_most(kernel, n, key) for key in ("m", "n", "k"))
            g_read += count * (m * k + k * nn) * size
            g_write += count * m * nn * size
            instr += count * m * nn * k
    occupancy, used_sms = _occupancy(kernel, device)
    bandwidth = min(device.bandwidth, used_sms * device.sm_bandwidth)
    time = max((g_read + g_write) / bandwidth, instr / device.ops_per_s * device.sm_count / used_sms)
    time = time / max(0.25, min(1.0, occupancy * 2)) + device.launch_s  # half occupancy hides latency
    return KernelCost(g_read, g_write, shared, shuffles, instr, barriers, occupancy, time)


def _most(kernel: Kernel, node: Node, key: str) -> int:
    """The largest value of an int64 attr over the node's scopes."""
    b = sx.bounds(node.attr(key), kernel.ranges(node.scope))
    return max(0, b[1]) if b is not None else 0


def _occupancy(kernel: Kernel, device: DeviceModel) -> tuple[float, int]:
    """Resident threads per busy SM as a fraction of the maximum (from the block size,
    shared memory per block and the grid), and how many SMs are busy."""
    if kernel.target == "cpu":
        return 1.0, device.sm_count
    block = kernel.block
    per_sm = device.threads_per_sm // block
    if kernel.shared_bytes:
        per_sm = min(per_sm, device.shared_per_sm // kernel.shared_bytes)
    per_sm = max(1, min(per_sm, 32))
    blocks = min(per_sm, -(-kernel.grid // device.sm_count))
    return blocks * block / device.threads_per_sm, min(device.sm_count, kernel.grid)


def row_sweeps_time(rows: int, length: int, itemsize: int, sweeps: int, blocks: int, kernels: int,
                    device: DeviceModel) -> float:
    """Estimated time of a row group that reads its rows of `length` elements of
    `itemsize` bytes `sweeps` times with `blocks` blocks over `kernels` launches: each
    sweep's bytes at the bandwidth the busy SMs can pull (later sweeps hit L2 as often
    as not, which the estimate ignores), one launch, and half a launch for each further
    kernel (launched while the one before runs: only the gap between them counts)."""
    bandwidth = min(device.bandwidth, min(blocks, device.sm_count) * device.sm_bandwidth)
    return sweeps * rows * length * itemsize / bandwidth + (1 + (kernels - 1) / 2) * device.launch_s
