"""The driver: tensor graph → groups → GIR → target code, and the `Program` that runs it.

Every stage is a pure function of its input and the options; `Program.dump(stage)`
shows each one, and `WARPWEAVE_DUMP=<dir>` writes them all to disk.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import ArgumentError, DTypeError, ShapeError, StitchError, TargetError
from ..ir import dtypes as dt
from ..ir.gir import Kernel
from ..ir.gir_dot import to_dot
from ..ir.gir_text import print_kernel
from ..ir.tensor import TensorGraph
from ..passes import fuse
from ..passes.cleanup import DCE, FOLD_CASTS, SIMPLIFY
from ..passes.cost import KernelCost, device_for, kernel_cost
from ..passes.manager import PassManager
from ..passes.movement import COALESCING, FORWARD_LOADS, HOIST_LOADS, PREFETCH_LINES
from ..passes.stitch import STITCH
from . import options as opts
from .lower import lower
from .lower_group import lower_group
from .schedule import DEFAULT_SM_COUNT, Schedule, choose, choose_row_group, GpuElementwise, CpuElementwise

# GIR passes after lowering, in order (each verified and dumped by the pass manager).
PIPELINE = [SIMPLIFY, FOLD_CASTS, STITCH, FORWARD_LOADS, HOIST_LOADS, DCE, PREFETCH_LINES, COALESCING]

STAGES = ("tensor", "groups", "gir", "llvm", "ptx")


def resolve_target(target: str) -> str:
    """The concrete target for a requested one ("auto" → cuda where a GPU is usable,
    else cpu). "cuda" always compiles (to PTX); running it needs a GPU."""
    if target == "auto":
        from ..backends.cuda import driver

        return "cuda" if driver.available() else "cpu"
    if target not in ("cpu", "interp", "cuda"):
        raise TargetError(f"unknown target {target!r}; expected one of {opts.TARGETS}")
    return target


@dataclass(frozen=True)
class KernelInfo:
    """One generated kernel: the operations it computes, its schedule, its GIR and the
    cost model's estimate."""

    name: str
    ops: tuple[str, ...]
    schedule: Schedule
    gir: Kernel
    cost: KernelCost

    @property
    def grid(self) -> int:
        return self.gir.grid

    def __str__(self):
        return f"{self.name}: ops {', '.join(self.ops)} schedule {self.schedule}"


@dataclass(frozen=True)
class CostEstimate:
    time_us: float
    bytes: int


def _lower(group: fuse.Group, graph: TensorGraph, family: str, sm_count: int, name: str):
    """(schedule, unstitched GIR kernel) pairs for one group, in launch order."""
    if len(group.ops) == 1:
        op = graph[group.ops[0]]
        schedule = choose(op, family, sm_count)
        return [(schedule, k) for k in lower(op, graph, schedule, name)]
    widest = max(t.dtype.itemsize for o in group.ops for t in
                 [graph[o]] + [graph[i] for i in graph[o].inputs])
    if group.pattern == "row":
        rows = int(np.prod(group.rows, dtype=np.int64)) if group.rows else 1
        schedule = choose_row_group(group.length, rows, widest, family)
    else:
        shape = graph[group.anchor].shape
        lanes = max(1, (64 if family == "cpu" else 16) // max(widest, 4 if family == "cpu" else 1))
        if family == "gpu" and shape and shape[-1] % lanes:
            lanes = 1
        schedule = CpuElementwise(vector=lanes) if family == "cpu" else GpuElementwise(vector=lanes)
    kernel = lower_group(group, graph, schedule, name)
    return [] if kernel is None else [(schedule, kernel)]


def _sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name) or "program"


class Program:
    """A compiled tensor program for one target and one set of input shapes/dtypes."""

    def __init__(self, graph: TensorGraph, single: bool, target: str, name: str = "program"):
        options = opts.current()
        self.traced = graph  # as the frontend built it; `graph` after inlining
        self.graph = fuse.inline_broadcast_producers(graph) if options.fuse else graph
        self.single = single
        self.name = _sanitize(name)
        self.target = resolve_target(target)
        self._dump_dir = self._make_dump_dir(options.dump_dir)
        self._write("tensor.txt", str(graph))
        family = "cpu" if self.target == "cpu" else "gpu"  # interp runs the GPU kernels
        sm_count = _sm_count() if self.target == "cuda" else DEFAULT_SM_COUNT
        self.device = device_for(family, sm_count)
        self.plan = fuse.plan(self.graph, self.device, fuse=options.fuse)
        self.kernels: list[KernelInfo] = []
        self.unfused: list[str] = []  # why a planned group was compiled op by op
        n = 0
        while n < len(self.plan.groups):
            group = self.plan.groups[n]
            try:
                self.kernels += self._compile_group(group, family, sm_count, options)
            except StitchError as exc:
                if len(group.ops) == 1:
                    raise
                self.unfused.append(f"{', '.join(group.ops)}: {exc}")
                self.plan = fuse.split(self.plan, n, self.graph, self.device)
                continue
            n += 1
        self.temps = _temporaries(graph, self.kernels)
        self._scratch = threading.local()  # host intermediates, reused per thread
        self._write("groups.txt", self.dump("groups"))
        self._backend = _make_backend(self, options)
        self._fast = None  # the backend's hot path, made on first use (see fast_path)
        for filename, text in self._backend.files.items():
            self._write(filename, text)

    def _compile_group(self, group: fuse.Group, family: str, sm_count: int,
                       options: opts.Options) -> list[KernelInfo]:
        """The group's kernels, through the GIR pipeline."""
        infos = []
        for schedule, gir in _lower(group, self.graph, family, sm_count, f"{self.name}_{group.anchor}"):
            gir = PassManager(PIPELINE, verify=options.verify, dump=self._dump_kernel).run(gir)
            infos.append(KernelInfo(gir.name, group.ops, schedule, gir, kernel_cost(gir, self.device)))
        return infos

    # ------------------------------------------------------------------ inspection
    def dump(self, stage: str) -> str:
        """Text of one stage: tensor, groups, gir, llvm (or ptx on CUDA)."""
        if stage == "tensor":
            return str(self.traced)
        if stage == "groups":
            return self._explain()
        if stage == "gir":
            return "\n\n".join(print_kernel(k.gir) for k in self.kernels)
        if stage in self._backend.stages:
            return self._backend.stages[stage]
        if stage in STAGES:
            raise TargetError(f"stage {stage!r} does not exist for the {self.target} target "
                              f"(it has {', '.join(['tensor', 'groups', 'gir', *self._backend.stages])})")
        raise ArgumentError(f"unknown stage {stage!r}; expected one of {STAGES}")

    def _explain(self) -> str:
        """Groups, their kernels, the stitching scheme of every edge inside them and the
        cost model's bytes per memory level."""
        lines = [f"device model: {self.device.name}, {self.device.bandwidth / 1e9:.0f} GB/s"]
        inlined = [op.name for op in self.traced.compute_ops if op.name not in self.graph.ops]
        if inlined:
            lines.append(f"inlined into their consumers: {', '.join(inlined)}")
        for why in self.unfused:
            lines.append(f"compiled op by op (fusion failed): {why}")
        for n, (group, traffic) in enumerate(zip(self.plan.groups, self.plan.traffic)):
            ops = ", ".join(f"{o} ({self.graph[o].kind})" for o in group.ops)
            shape = f" rows={list(group.rows)} x {group.length}" if group.pattern == "row" else ""
            lines.append(f"group {n} [{group.pattern}{shape}]: {ops}")
            lines.append(f"  writes {', '.join(group.outputs)}; planned DRAM "
                         f"{traffic.dram_bytes} B, {traffic.time_s * 1e6:.1f} us")
            for k in self.kernels:
                if k.ops != group.ops:
                    continue
                lines.append(f"  kernel {k.name} grid={k.gir.grid} block={k.gir.block} schedule={k.schedule}")
                meta = dict(k.gir.meta)
                if meta.get("stitched"):
                    lines.append(f"    stitched: {meta['stitched']}")
                lines.append(f"    cost: {k.cost.summary()}")
        if not self.kernels:
            lines.append("(no kernels: every output is empty)")
        return "\n".join(lines)

    @property
    def cost_estimate(self) -> "CostEstimate":
        """The cost model's estimate for one call: time and DRAM bytes of every kernel."""
        return CostEstimate(sum(k.cost.time_s for k in self.kernels) * 1e6,
                            sum(k.cost.dram_bytes for k in self.kernels))

    @property
    def dump_dir(self) -> str | None:
        """Where this compile's stages were written (WARPWEAVE_DUMP), if anywhere."""
        return self._dump_dir

    def _make_dump_dir(self, root: str | None) -> str | None:
        if not root:
            return None
        digest = hashlib.sha256(str(self.graph).encode()).hexdigest()[:10]
        path = os.path.join(root, f"{self.name}-{self.target}-{digest}")
        os.makedirs(path, exist_ok=True)
        return path

    def _write(self, filename: str, text: str) -> None:
        if self._dump_dir:
            with open(os.path.join(self._dump_dir, filename), "w") as f:
                f.write(text)

    def _dump_kernel(self, stage: str, kernel: Kernel) -> None:
        if self._dump_dir:
            self._write(f"{kernel.name}.{stage}.gir", print_kernel(kernel))
            if stage == "lowered":
                self._write(f"{kernel.name}.dot", to_dot(kernel))

    # ------------------------------------------------------------------ running
    def check_host_args(self, args) -> list[np.ndarray]:
        """The arguments as C-contiguous numpy arrays, or an error naming what is wrong."""
        specs = self.input_specs
        self.check_arg_count(args)
        out = []
        for k, (a, s) in enumerate(zip(args, specs)):
            if not isinstance(a, (np.ndarray, np.generic)):
                raise ArgumentError(f"argument {k} of {self.name} must be a numpy array "
                                    f"({s.dtype}{list(s.shape)}), got {type(a).__name__}")
            a = np.asarray(a)
            self.check_arg(k, tuple(a.shape), dt.dtype(a.dtype))
            out.append(np.ascontiguousarray(a))
        return out

    @property
    def input_specs(self):
        return [self.graph[n] for n in self.graph.inputs]

    def check_arg_count(self, args) -> None:
        specs = self.input_specs
        if len(args) != len(specs):
            want = ", ".join(f"{s.dtype}{list(s.shape)}" for s in specs)
            raise ArgumentError(f"{self.name} takes {len(specs)} arguments ({want}), got {len(args)}")

    def check_arg(self, k: int, shape: tuple, dtype: dt.DType) -> None:
        s = self.input_specs[k]
        if shape != tuple(s.shape):
            raise ShapeError(f"argument {k} of {self.name}: expected shape {tuple(s.shape)}, got {shape}")
        if dtype != s.dtype:
            raise DTypeError(f"argument {k} of {self.name}: expected dtype {s.dtype}, got {dtype}")

    def __call__(self, *args):
        out = self.fast_path()(args)
        if out is not None:
            return out
        outs = self._backend.run(self, args)
        return outs[0] if self.single else tuple(outs)

    def fast_path(self) -> Callable:
        """`call(args)`: this program's result for the arguments its backend runs
        without checks beyond a few attribute tests (PyTorch CUDA tensors of the
        compiled shapes and dtypes, see CudaProgram.torch_call); None for any other
        arguments. Made on first use, once PyTorch is imported."""
        if self._fast is None:
            make = getattr(self._backend, "torch_call", None)
            if make is None or "torch" not in sys.modules:
                return _no_fast_path
            self._fast = make() or _no_fast_path
        return self._fast

    def __repr__(self):
        return f"<warpweave.Program {self.name} target={self.target} kernels={len(self.kernels)}>"


def _no_fast_path(args):
    return None


def spec_of(value) -> tuple[tuple[int, ...], dt.DType]:
    """(shape, dtype) of a jit argument — a numpy array or scalar, or a CUDA array
    (PyTorch, CuPy, DeviceArray, anything with the CUDA array interface or DLPack)
    — or an ArgumentError saying what came."""
    if isinstance(value, (np.ndarray, np.generic)):
        a = np.asarray(value)
        return tuple(int(s) for s in a.shape), dt.dtype(a.dtype)
    if not isinstance(value, (int, float, complex, bool, str, bytes, list, tuple, dict)):
        from ..backends.cuda.arrays import as_cuda_buffer

        b = as_cuda_buffer(value)
        if b is not None:
            return tuple(b.shape), b.dtype
    raise ArgumentError(f"warpweave functions take numpy arrays or CUDA arrays, got "
                        f"{type(value).__name__}"
                        + (f" ({value!r}); wrap scalars as np.float32(x) or np.asarray(x)"
                           if isinstance(value, (int, float, bool)) else ""))


class _InterpBackend:
    """Runs the GIR kernels with the numpy interpreter. Backends expose `stages` (text
    for `Program.dump`) and `files` (what a dump directory gets) and `run`."""

    stages: dict[str, str] = {}
    files: dict[str, str] = {}

    def run(self, program: Program, args) -> list[np.ndarray]:
        from ..backends.interp import run_kernel

        buffers = _host_buffers(program, args)
        for k in program.kernels:
            run_kernel(k.gir, {p.name: buffers[p.name].reshape(-1) for p in k.gir.params})
        return [buffers[n] for n in program.graph.outputs]


class _CpuBackend:
    """Native code through LLVM, run on the CPU thread pool."""

    def __init__(self, program: Program):
        from ..backends.cpu import CpuExecutable

        works = [_work(program.graph, k) for k in program.kernels]
        self.exe = CpuExecutable([k.gir for k in program.kernels], works, program.name)
        self.stages = {"llvm": self.exe.optimized_ir}
        self.files = {"llvm.ll": self.exe.llvm_ir, "llvm.opt.ll": self.exe.optimized_ir}

    def run(self, program: Program, args) -> list[np.ndarray]:
        buffers = _host_buffers(program, args)
        for k in program.kernels:
            self.exe.launch(k.name, [buffers[p.name].ctypes.data for p in k.gir.params])
        return [buffers[n] for n in program.graph.outputs]


def _host_buffers(program: Program, args) -> dict[str, np.ndarray]:
    """Inputs as given, fresh outputs, and intermediates reused across calls (one set
    per thread: touching new pages costs as much as a memory-bound kernel)."""
    arrays = program.check_host_args(args)
    buffers = dict(zip(program.graph.inputs, arrays))
    scratch = getattr(program._scratch, "buffers", None)
    if scratch is None:
        outputs = set(program.graph.outputs)
        used = {p.name for k in program.kernels for p in k.gir.params}
        scratch = {op.name: np.empty(op.shape, dtype=op.dtype.numpy)
                   for op in program.graph.compute_ops if op.name not in outputs and op.name in used}
        scratch.update((t.name, np.empty(t.shape, dtype=t.dtype.numpy)) for t in program.temps)
        program._scratch.buffers = scratch
    buffers.update(scratch)
    for name in program.graph.outputs:
        if name not in buffers or name in scratch:
            op = program.graph[name]
            buffers[name] = np.empty(op.shape, dtype=op.dtype.numpy)
    return buffers


def _temporaries(graph: TensorGraph, kernels: list[KernelInfo]):
    """Buffers kernels pass each other that are not tensors of the graph."""
    seen = {}
    for k in kernels:
        for p in k.gir.params:
            if p.name not in graph.ops and p.name not in seen:
                seen[p.name] = p
    return list(seen.values())


def _sm_count() -> int:
    from ..backends.cuda import driver

    return driver.device().sm_count if driver.available() else DEFAULT_SM_COUNT


def _work(graph: TensorGraph, k: KernelInfo) -> int:
    """Element operations per grid step: whether a CPU launch is worth splitting."""
    op = graph[k.ops[0]]
    total = int(np.prod(op.shape, dtype=np.int64))
    if op.reduce is not None:
        total *= max(1, int(np.prod(op.reduce.extents, dtype=np.int64)))
    return max(1, total // max(1, k.gir.grid))


def _make_backend(program: Program, options: opts.Options):
    if program.target == "interp":
        return _InterpBackend()
    if program.target == "cpu":
        return _CpuBackend(program)
    return _cuda_backend(program, options)


def _cuda_backend(program: Program, options: opts.Options):
    """PTX for the program's kernels (from the disk cache when it has them), and a
    module image linked for the device on first use (cached too)."""
    import json

    from ..backends.cuda import codegen, driver
    from ..backends.cuda.runtime import CudaProgram
    from .cache import default_cache, make_key

    arch = codegen.check_arch(options.cuda_arch) if options.cuda_arch else \
        (driver.device().arch if driver.available() else codegen.DEFAULT_ARCH)
    girs = [k.gir for k in program.kernels]
    cache = default_cache()
    key = make_key("ptx", arch, *(print_kernel(g) for g in girs))

    def build() -> bytes:
        llvm_ir, ptx = codegen.compile_ptx(girs, arch, program.name)
        return json.dumps({"llvm": llvm_ir, "ptx": ptx}).encode()

    texts = json.loads(cache.get_or_build(key, build))

    def load_image() -> bytes:
        return cache.get_or_build(make_key("cubin", arch, driver.driver_version(), texts["ptx"]),
                                  lambda: driver.link_ptx(texts["ptx"], arch))

    return CudaProgram(program.graph, [(k.name, k.gir) for k in program.kernels], program.temps,
                       texts["llvm"], texts["ptx"], load_image, program.single)
