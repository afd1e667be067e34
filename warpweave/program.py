"""`Program`: a compiled tensor program — its kernels, its launch and buffer plan, and
the target's runner — that checks arguments, runs, and shows what the compiler did.

The pipeline (`warpweave.pipeline.compile`) builds it; nothing here compiles.
"""
from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np

from .errors import ArgumentError, DTypeError, ShapeError, TargetError
from .ir import dtypes as dt
from .ir.gir import Buffer, Kernel
from .ir.gir_text import print_kernel
from .ir.tensor import TensorGraph, row_major_strides
from .passes.cost import DeviceModel, KernelCost
from .passes.fuse import FusionPlan
from .schedule.templates import Schedule

STAGES = ("tensor", "groups", "gir", "llvm", "ptx", "launcher")


@dataclass(frozen=True)
class KernelInfo:
    """One generated kernel: the operations it computes, its schedule and where the
    schedule came from (`source`: "default", "override", "database", "predicted"), its
    GIR and the cost model's estimate."""

    name: str
    ops: tuple[str, ...]
    schedule: Schedule
    gir: Kernel
    cost: KernelCost
    source: str = "default"

    @property
    def grid(self) -> int:
        return self.gir.grid

    def __str__(self):
        return f"{self.name}: ops {', '.join(self.ops)} schedule {self.schedule}"

    def __repr__(self):
        return (f"<KernelInfo {self.name} ops=[{', '.join(self.ops)}] grid={self.gir.grid} "
                f"block={self.gir.block} schedule={type(self.schedule).__name__} "
                f"estimate={self.cost.time_s * 1e6:.1f}us>")


class KernelList(list):
    """A program's kernels: a list, shown one kernel per line."""

    def __repr__(self):
        return "[" + ",\n ".join(repr(k) for k in self) + "]"


@dataclass(frozen=True)
class CostEstimate:
    time_us: float
    bytes: int


def check_plain_array(value, what: str) -> None:
    """An ArgumentError for an ndarray subclass (np.matrix, masked arrays, ...): its
    semantics (matrix products, masks) would be silently dropped."""
    if isinstance(value, np.ndarray) and type(value) is not np.ndarray:
        kind = f"{type(value).__module__}.{type(value).__qualname__}"
        hint = ("x.filled(fill_value) to fill the masked elements, or np.asarray(x) to drop the mask"
                if isinstance(value, np.ma.MaskedArray) else "np.asarray(x)")
        raise ArgumentError(f"{what} is a {kind}, a numpy ndarray subclass whose meaning warpweave "
                            f"cannot keep; pass a plain array: {hint}")


class Runner(Protocol):
    """How a target runs a program's kernels: `stages` (text for `Program.dump`),
    `files` (what a dump directory gets) and `run`; optionally `torch_call`."""

    stages: dict[str, str]
    files: dict[str, str]

    def run(self, program: "Program", args) -> list: ...


class Program:
    """A compiled tensor program for one target and one set of input shapes/dtypes."""

    def __init__(self, *, name: str, target: str, single: bool, traced: TensorGraph,
                 graph: TensorGraph, plan: FusionPlan, kernels: list[KernelInfo], unfused: list[str],
                 temps: list[Buffer], device: DeviceModel, dump_dir: str | None):
        self.name = name
        self.target = target
        self.single = single
        self.traced = traced  # as the frontend built it; `graph` after inlining
        self.graph = graph
        self.plan = plan
        self.kernels = KernelList(kernels)
        self.unfused = unfused  # why a planned group was compiled op by op
        self.temps = temps  # buffers kernels pass each other that are not tensors of the graph
        self.device = device
        self.dump_dir = dump_dir  # where this compile's stages were written, if anywhere
        self.runner: Runner | None = None  # set by the pipeline once the target code exists
        self._scratch = threading.local()  # host intermediates, reused per thread
        self._fast = None  # the runner's hot path, made on first use (see fast_path)

    def __getstate__(self):
        """What the disk cache keeps: everything but the runner and per-process state."""
        state = dict(self.__dict__)
        for transient in ("runner", "_scratch", "_fast"):
            del state[transient]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.runner, self._scratch, self._fast = None, threading.local(), None

    # ------------------------------------------------------------------ inspection
    def dump(self, stage: str) -> str:
        """Text of one stage: tensor, groups, gir, llvm, and on CUDA ptx and launcher."""
        if stage == "tensor":
            return str(self.traced)
        if stage == "groups":
            return self.explain_groups()
        if stage == "gir":
            return "\n\n".join(print_kernel(k.gir) for k in self.kernels)
        if stage in self.runner.stages:
            return self.runner.stages[stage]
        if stage in STAGES:
            raise TargetError(f"stage {stage!r} does not exist for the {self.target} target "
                              f"(it has {', '.join(['tensor', 'groups', 'gir', *self.runner.stages])})")
        raise ArgumentError(f"unknown stage {stage!r}; expected one of {STAGES}")

    def explain_groups(self) -> str:
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
            lines.append(f"  writes {', '.join(group.outputs)}; planned DRAM traffic "
                         f"{traffic.dram_bytes} B")
            for k in self.kernels:
                if k.ops != group.ops:
                    continue
                lines.append(f"  kernel {k.name} grid={k.gir.grid} block={k.gir.block} schedule={k.schedule} ({k.source})")
                meta = dict(k.gir.meta)
                if meta.get("stitched"):
                    lines.append(f"    stitched: {meta['stitched']}")
                lines.append(f"    cost: {k.cost.summary()}")
        if not self.kernels:
            lines.append("(no kernels: every output is empty)")
        return "\n".join(lines)

    @property
    def cost_estimate(self) -> CostEstimate:
        """The cost model's estimate for one call: time and DRAM bytes of every kernel."""
        return CostEstimate(sum(k.cost.time_s for k in self.kernels) * 1e6,
                            sum(k.cost.dram_bytes for k in self.kernels))

    # ------------------------------------------------------------------ arguments
    @property
    def input_specs(self):
        return [self.graph[n] for n in self.graph.inputs]

    def check_host_args(self, args) -> list[np.ndarray]:
        """The arguments as C-contiguous numpy arrays, or an error naming what is wrong."""
        specs = self.input_specs
        self.check_arg_count(args)
        out = []
        for k, (a, s) in enumerate(zip(args, specs)):
            if not isinstance(a, (np.ndarray, np.generic)):
                raise ArgumentError(f"argument {k} of {self.name} must be a numpy array "
                                    f"({s.dtype}{list(s.shape)}), got {type(a).__name__}")
            check_plain_array(a, f"argument {k} of {self.name}")
            a = np.asarray(a)
            self.check_arg(k, tuple(a.shape), dt.dtype(a.dtype))
            out.append(np.ascontiguousarray(a))
        return out

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

    # ------------------------------------------------------------------ running
    def __call__(self, *args):
        out = self.fast_path()(args)
        if out is not None:
            return out
        outs = self.runner.run(self, args)
        return outs[0] if self.single else tuple(outs)

    def fast_path(self, layouts: tuple | None = None, out_layouts: tuple | None = None) -> Callable:
        """`call(args)`: this program's result for the arguments its runner takes
        without checks beyond a few attribute tests (PyTorch tensors of the compiled
        shapes and dtypes on the program's device, see CudaProgram.torch_call and
        CpuRunner.torch_call); None for any other arguments. Made on first use, once
        PyTorch is imported. `layouts`: per input None, or the (shape, strides)
        of the strided tensor passed for it, whose memory span the input is;
        `out_layouts`: per output None, or the (shape, strides) of a permutation of
        its axes to return it as (the same memory: a channels-last result computed in
        NHWC order), which only the CUDA runner's path does: None where no path
        returns them so. Paths for either are made anew on each request."""
        if out_layouts is not None and any(out_layouts):
            if "torch" in sys.modules and not isinstance(self.runner, CpuRunner) and hasattr(self.runner, "torch_call"):
                return self.runner.torch_call(layouts, out_layouts)
            return None
        if layouts is not None and any(layouts):
            made = None
            if "torch" in sys.modules and isinstance(self.runner, CpuRunner):
                made = self.runner.torch_call(self, layouts)
            elif "torch" in sys.modules and hasattr(self.runner, "torch_call"):
                made = self.runner.torch_call(layouts)
            return made or _no_fast_path
        if self._fast is None:
            if "torch" not in sys.modules:
                return _no_fast_path
            if isinstance(self.runner, CpuRunner):
                made = self.runner.torch_call(self)
            else:
                make = getattr(self.runner, "torch_call", None)
                made = make() if make is not None else None
            self._fast = made or _no_fast_path
        return self._fast

    def scratch_buffers(self) -> dict[str, np.ndarray]:
        """This thread's host intermediates (made on its first call, then reused:
        touching new pages costs as much as a memory-bound kernel)."""
        scratch = getattr(self._scratch, "buffers", None)
        if scratch is None:
            outputs = set(self.graph.outputs)
            used = {p.name for k in self.kernels for p in k.gir.params}
            scratch = {op.name: np.empty(op.shape, dtype=op.dtype.numpy)
                       for op in self.graph.compute_ops if op.name not in outputs and op.name in used}
            scratch.update((t.name, np.empty(t.shape, dtype=t.dtype.numpy)) for t in self.temps)
            self._scratch.buffers = scratch
        return scratch

    def host_buffers(self, args) -> dict[str, np.ndarray]:
        """Inputs as given, fresh outputs, and this thread's intermediates."""
        arrays = self.check_host_args(args)
        buffers = dict(zip(self.graph.inputs, arrays))
        scratch = self.scratch_buffers()
        buffers.update(scratch)
        for name in self.graph.outputs:
            if name not in buffers or name in scratch:
                op = self.graph[name]
                buffers[name] = np.empty(op.shape, dtype=op.dtype.numpy)
        return buffers

    def __repr__(self):
        inputs = ", ".join(f"{s.dtype}{list(s.shape)}" for s in self.input_specs)
        return (f"<warpweave.Program {self.name}({inputs}) target={self.target} "
                f"kernels={len(self.kernels)} estimate={self.cost_estimate.time_us:.1f}us>")


def _no_fast_path(args):
    return None


class InterpRunner:
    """Runs the GIR kernels with the numpy interpreter."""

    stages: dict[str, str] = {}
    files: dict[str, str] = {}

    def run(self, program: Program, args) -> list[np.ndarray]:
        from .backends.interp import run_kernel

        buffers = program.host_buffers(args)
        for k in program.kernels:
            run_kernel(k.gir, {p.name: buffers[p.name].reshape(-1) for p in k.gir.params})
        return [buffers[n] for n in program.graph.outputs]


class CpuRunner:
    """Native code through LLVM (a `backends.cpu.CpuExecutable`), run on the CPU thread pool."""

    def __init__(self, exe):
        self.exe = exe
        self.stages = {"llvm": exe.optimized_ir}
        self.files = {"llvm.ll": exe.llvm_ir, "llvm.opt.ll": exe.optimized_ir}

    def run(self, program: Program, args) -> list[np.ndarray]:
        buffers = program.host_buffers(args)
        for k in program.kernels:
            self.exe.launch(k.name, [buffers[p.name].ctypes.data for p in k.gir.params])
        return [buffers[n] for n in program.graph.outputs]

    def torch_call(self, program: Program, layouts: tuple | None = None) -> Callable | None:
        """The PyTorch hot path, `call(args)`: the outputs (one, or a tuple) as
        PyTorch CPU tensors for contiguous PyTorch CPU tensors of the compiled shapes
        and dtypes (or, where `layouts[k]` is (shape, strides), a tensor of that
        layout for input k: the memory span the program reads); None for anything
        else (`run` takes numpy arrays and reports errors). Python generated for this
        program (the stage "launcher"): no numpy conversions, no loops. An output
        that is also an input or read twice is left to the general path."""
        torch = sys.modules.get("torch")
        inputs, outputs = list(program.graph.inputs), list(program.graph.outputs)
        if torch is None or len(set(outputs)) != len(outputs) or set(inputs) & set(outputs):
            return None
        layouts = layouts or (None,) * len(inputs)
        try:
            namespace = {"PLAIN": (torch.Tensor, torch.nn.Parameter), "empty": _torch_empty(torch),
                         "launch": self.exe.launch, "scratch": _scratch_pointers(program)}
            for k, (name, layout) in enumerate(zip(inputs, layouts)):
                t = program.graph[name]
                shape, strides = layout or (t.shape, None)
                namespace[f"SHAPE{k}"], namespace[f"DTYPE{k}"] = torch.Size(shape), getattr(torch, t.dtype.name)
                namespace[f"STRIDES{k}"] = None if strides is None else tuple(strides)
            for k, name in enumerate(outputs):
                t = program.graph[name]
                namespace[f"OUT{k}_SHAPE"], namespace[f"OUT{k}_DTYPE"] = tuple(t.shape), getattr(torch, t.dtype.name)
                namespace[f"OUT{k}_STRIDES"] = row_major_strides(t.shape)
        except AttributeError:  # a dtype this PyTorch lacks
            return None
        inline = self._inline(program)
        namespace.update((f"K{k}", fn) for k, fn in inline.items())
        runs = getattr(self.exe, "runs", {})
        namespace.update((f"R_{first}", entry) for first, (_, entry) in runs.items())
        source = self._launcher_source(program, inputs, outputs, inline,
                                       {first: run for first, (run, _) in runs.items()}, layouts)
        self.stages["launcher"] = source
        exec(compile(source, "<warpweave cpu launcher>", "exec"), namespace)
        return namespace["call"]

    def _inline(self, program: Program) -> dict[int, object]:
        """Kernel position -> its native function, for the kernels the executable runs
        on the calling thread whatever the thread count (one grid step, or too little
        work to share)."""
        exe = self.exe
        return {k: f.cfunc for k, f in enumerate(exe.functions[kern.name] for kern in program.kernels)
                if f.grid == 1 or f.grid * f.work < exe.PARALLEL_MIN_WORK}

    @staticmethod
    def _launcher_source(program: Program, inputs: list[str], outputs: list[str], inline, runs, layouts) -> str:
        """The launcher's code; `runs`: first kernel's name -> the `backends.cpu.Run`
        starting there, called as `R_<name>` (one native call for its kernels);
        `layouts`: see `torch_call`."""
        scratch = list(program.scratch_buffers())
        where = {**{n: f"p{k}" for k, n in enumerate(inputs)}, **{n: f"q{k}" for k, n in enumerate(outputs)},
                 **{n: f"s[{k}]" for k, n in enumerate(scratch)}}
        xs = [f"x{k}" for k in range(len(inputs))]
        returned = "y0" if program.single else "(" + "".join(f"y{k}, " for k in range(len(outputs))) + ")"
        lines = ["def call(args):", f"    if len(args) != {len(inputs)}:", "        return None"]
        if xs:
            lines.append(f"    {', '.join(xs)}, = args")
        for k, (x, layout) in enumerate(zip(xs, layouts)):
            dense = f"{x}.stride() != STRIDES{k}" if layout else f"not {x}.is_contiguous()"
            lines += [f"    if type({x}) not in PLAIN or {x}.dtype is not DTYPE{k} or {x}.shape != SHAPE{k} or "
                      f"not {x}.is_cpu or {dense}:", "        return None",
                      f"    p{k} = {x}.data_ptr()"]
        for k in range(len(outputs)):
            lines += [f"    y{k} = empty(OUT{k}_SHAPE, OUT{k}_STRIDES, OUT{k}_DTYPE)", f"    q{k} = y{k}.data_ptr()"]
        if scratch:
            lines.append("    s = scratch()")
        in_run: set[str] = set()
        for k, kern in enumerate(program.kernels):
            run = runs.get(kern.name)
            if run is not None:
                lines.append(f"    R_{kern.name}({', '.join(where[p] for p in run.params)})")
                in_run.update(run.kernels)
                continue
            if kern.name in in_run:
                continue
            ptrs = ", ".join(where[p.name] for p in kern.gir.params)
            if k in inline:  # runs on this thread whatever the thread count: its function directly
                lines.append(f"    K{k}(0, {kern.gir.grid}, {ptrs})")
            else:
                lines.append(f"    launch({kern.name!r}, [{ptrs}])")
        lines.append(f"    return {returned}")
        return "\n".join(lines) + "\n"


def _torch_empty(torch) -> Callable:
    """`empty(shape, strides, dtype)`: an uninitialised CPU tensor; PyTorch's C++
    entry point Inductor uses where it exists (a third of `torch.empty`'s cost)."""
    fast = getattr(getattr(getattr(torch._C, "_dynamo", None), "guards", None), "_empty_strided_cpu", None)
    return fast or (lambda shape, strides, dtype: torch.empty_strided(shape, strides, dtype=dtype))


def _scratch_pointers(program: Program) -> Callable[[], tuple[int, ...]]:
    """`scratch()`: the addresses of this thread's intermediates of `program`."""
    def scratch():
        pointers = getattr(program._scratch, "pointers", None)
        if pointers is None:
            pointers = tuple(a.ctypes.data for a in program.scratch_buffers().values())
            program._scratch.pointers = pointers
        return pointers
    return scratch
