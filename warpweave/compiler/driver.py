"""The driver: tensor graph → groups → GIR → target code, and the `Program` that runs it.

Every stage is a pure function of its input and the options; `Program.dump(stage)`
shows each one, and `WARPWEAVE_DUMP=<dir>` writes them all to disk.
"""
from __future__ import annotations

import hashlib
import os
import re
import threading
from dataclasses import dataclass

import numpy as np

from ..errors import ArgumentError, DTypeError, ShapeError, TargetError
from ..ir import dtypes as dt
from ..ir.gir import Kernel
from ..ir.gir_dot import to_dot
from ..ir.gir_text import print_kernel
from ..ir.tensor import TensorGraph
from ..passes.cleanup import DEFAULT_PASSES
from ..passes.manager import PassManager
from . import options as opts
from .lower import lower
from .schedule import DEFAULT_SM_COUNT, Schedule, choose

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
    """One generated kernel: the operations it computes, its schedule and its GIR."""

    name: str
    ops: tuple[str, ...]
    schedule: Schedule
    gir: Kernel

    @property
    def grid(self) -> int:
        return self.gir.grid

    def __str__(self):
        return f"{self.name}: ops {', '.join(self.ops)} schedule {self.schedule}"


def _sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name) or "program"


class Program:
    """A compiled tensor program for one target and one set of input shapes/dtypes."""

    def __init__(self, graph: TensorGraph, single: bool, target: str, name: str = "program"):
        self.graph = graph
        self.single = single
        self.name = _sanitize(name)
        self.target = resolve_target(target)
        options = opts.current()
        self._dump_dir = self._make_dump_dir(options.dump_dir)
        self._write("tensor.txt", str(graph))
        family = "cpu" if self.target == "cpu" else "gpu"  # interp runs the GPU kernels
        sm_count = _sm_count() if self.target == "cuda" else DEFAULT_SM_COUNT
        self.kernels: list[KernelInfo] = []
        for op in graph.compute_ops:
            schedule = choose(op, family, sm_count)
            for gir in lower(op, graph, schedule, f"{self.name}_{op.name}"):
                pm = PassManager(DEFAULT_PASSES, verify=options.verify, dump=self._dump_kernel)
                self.kernels.append(KernelInfo(gir.name, (op.name,), schedule, pm.run(gir)))
        self.temps = _temporaries(graph, self.kernels)
        self._scratch = threading.local()  # host intermediates, reused per thread
        self._write("groups.txt", self.dump("groups"))
        self._backend = _make_backend(self, options)
        for filename, text in self._backend.files.items():
            self._write(filename, text)

    # ------------------------------------------------------------------ inspection
    def dump(self, stage: str) -> str:
        """Text of one stage: tensor, groups, gir, llvm (or ptx on CUDA)."""
        if stage == "tensor":
            return str(self.graph)
        if stage == "groups":
            lines = []
            for n, k in enumerate(self.kernels):
                kinds = ", ".join(f"{o} ({self.graph[o].kind})" for o in k.ops)
                lines.append(f"group {n}: {kinds}\n  kernel {k.name} grid={k.gir.grid} "
                             f"block={k.gir.block} schedule={k.schedule}")
            return "\n".join(lines) if lines else "(no kernels: every output is empty)"
        if stage == "gir":
            return "\n\n".join(print_kernel(k.gir) for k in self.kernels)
        if stage in self._backend.stages:
            return self._backend.stages[stage]
        if stage in STAGES:
            raise TargetError(f"stage {stage!r} does not exist for the {self.target} target "
                              f"(it has {', '.join(['tensor', 'groups', 'gir', *self._backend.stages])})")
        raise ArgumentError(f"unknown stage {stage!r}; expected one of {STAGES}")

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
        outs = self._backend.run(self, args)
        return outs[0] if self.single else tuple(outs)

    def __repr__(self):
        return f"<warpweave.Program {self.name} target={self.target} kernels={len(self.kernels)}>"


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
        scratch = {op.name: np.empty(op.shape, dtype=op.dtype.numpy)
                   for op in program.graph.compute_ops if op.name not in outputs}
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
                       texts["llvm"], texts["ptx"], load_image)
