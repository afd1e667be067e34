"""The driver: tensor graph → groups → GIR → target code, and the `Program` that runs it.

Every stage is a pure function of its input and the options; `Program.dump(stage)`
shows each one, and `WARPWEAVE_DUMP=<dir>` writes them all to disk.
"""
from __future__ import annotations

import hashlib
import os
import re
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
from .lower import lower_op
from .schedule import Schedule, choose

STAGES = ("tensor", "groups", "gir", "llvm", "ptx")


def resolve_target(target: str) -> str:
    """The concrete target for a requested one ("auto" → cuda where usable, else cpu)."""
    if target == "auto":
        return "cpu"  # the CUDA backend is not part of this build yet
    if target == "cuda":
        raise TargetError("target 'cuda' is not available in this build of warpweave: the CUDA "
                          "backend has not landed yet; use target='cpu' or target='interp'")
    if target not in ("cpu", "interp"):
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
        family = "cpu" if self.target == "cpu" else "gpu"
        self.kernels: list[KernelInfo] = []
        for op in graph.compute_ops:
            schedule = choose(op, family)
            kname = f"{self.name}_{op.name}"
            gir = lower_op(op, graph, schedule, kname)
            if gir is None:
                continue
            pm = PassManager(DEFAULT_PASSES, verify=options.verify, dump=self._dump_kernel)
            self.kernels.append(KernelInfo(kname, (op.name,), schedule, pm.run(gir)))
        self._write("groups.txt", self.dump("groups"))
        self._backend = None
        if self.target == "cpu":
            from ..backends.cpu import CpuExecutable

            works = [self._work(k) for k in self.kernels]
            self._backend = CpuExecutable([k.gir for k in self.kernels], works, self.name)
            self._write("llvm.ll", self._backend.llvm_ir)
            self._write("llvm.opt.ll", self._backend.optimized_ir)

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
        if stage == "llvm":
            if self.target != "cpu":
                raise TargetError(f"stage 'llvm' exists for the cpu target; this program targets {self.target}")
            return self._backend.optimized_ir
        if stage == "ptx":
            raise TargetError(f"stage 'ptx' exists for the cuda target; this program targets {self.target}")
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

    def _work(self, k: KernelInfo) -> int:
        op = self.graph[k.ops[0]]
        total = int(np.prod(op.shape, dtype=np.int64)) * max(1, int(np.prod(op.reduce.extents)) if op.reduce else 1)
        return max(1, total // max(1, k.gir.grid))

    # ------------------------------------------------------------------ running
    def _check_args(self, args) -> list[np.ndarray]:
        specs = [self.graph[n] for n in self.graph.inputs]
        if len(args) != len(specs):
            want = ", ".join(f"{s.dtype}{list(s.shape)}" for s in specs)
            raise ArgumentError(f"{self.name} takes {len(specs)} arguments ({want}), got {len(args)}")
        out = []
        for k, (a, s) in enumerate(zip(args, specs)):
            if not isinstance(a, (np.ndarray, np.generic)):
                raise ArgumentError(f"argument {k} of {self.name} must be a numpy array "
                                    f"({s.dtype}{list(s.shape)}), got {type(a).__name__}")
            a = np.asarray(a)
            if tuple(a.shape) != tuple(s.shape):
                raise ShapeError(f"argument {k} of {self.name}: expected shape {tuple(s.shape)}, "
                                 f"got {tuple(a.shape)}")
            if a.dtype != s.dtype.numpy:
                raise DTypeError(f"argument {k} of {self.name}: expected dtype {s.dtype}, got {a.dtype}")
            out.append(np.ascontiguousarray(a))
        return out

    def __call__(self, *args):
        arrays = self._check_args(args)
        buffers: dict[str, np.ndarray] = dict(zip(self.graph.inputs, arrays))
        for op in self.graph.compute_ops:
            buffers[op.name] = np.empty(op.shape, dtype=op.dtype.numpy)
        for k in self.kernels:
            params = [buffers[p.name] for p in k.gir.params]
            if self.target == "interp":
                from ..backends.interp import run_kernel

                run_kernel(k.gir, {p.name: b.reshape(-1) for p, b in zip(k.gir.params, params)})
            else:
                self._backend.launch(k.name, [b.ctypes.data for b in params])
        outs = tuple(buffers[n] for n in self.graph.outputs)
        return outs[0] if self.single else outs

    def __repr__(self):
        return f"<warpweave.Program {self.name} target={self.target} kernels={len(self.kernels)}>"


def spec_of(value) -> tuple[tuple[int, ...], dt.DType]:
    """(shape, dtype) of a jit argument, or an ArgumentError saying what came."""
    if not isinstance(value, (np.ndarray, np.generic)):
        raise ArgumentError(f"warpweave functions take numpy arrays, got {type(value).__name__}"
                            + (f" ({value!r})" if isinstance(value, (int, float, bool)) else "")
                            + "; wrap scalars as np.float32(x) or np.asarray(x)")
    a = np.asarray(value)
    return tuple(int(s) for s in a.shape), dt.dtype(a.dtype)
