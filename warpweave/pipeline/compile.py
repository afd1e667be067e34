"""The compile driver: tensor graph → fusion plan → GIR kernels → GIR passes → target
code, producing a `Program`.

Every stage is a pure function of its input and the options; `Program.dump(stage)`
shows each one, and `WARPWEAVE_DUMP=<dir>` writes them all to disk.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import logging
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from typing import Mapping

import numpy as np

from ..options import Options, TARGETS, compile_key, current
from ..errors import StitchError, TargetError
from ..ir.gir import Kernel
from ..ir.gir_dot import to_dot
from ..ir.gir_text import print_kernel
from ..ir.tensor import TensorGraph
from ..lower.contraction_cpu import lower_contraction
from ..lower.group import lower_group
from ..lower.mma import lower_mma_group
from ..lower.kernels import lower
from ..lower.split_rows import lower_split_rows
from ..passes import fuse
from ..passes.cleanup import DCE, FOLD_CASTS, SIMPLIFY
from ..passes.cost import device_for, kernel_cost
from ..passes.manager import PassManager
from ..passes.movement import COALESCING, FORWARD_LOADS, HOIST_LOADS, PREFETCH_LINES
from ..passes.cse import merge_duplicates
from ..passes.layout import follow_output_layout
from ..passes.operands import materialize_operands
from ..passes.stitch import STITCH
from ..program import CpuRunner, InterpRunner, KernelInfo, Program
from ..ir.gir_verify import GPU_ARCH
from ..schedule.mma import GpuMma, contraction_of, tensor_core_product
from ..schedule.choose import DEFAULT_SM_COUNT, GROUP_TEMPLATES, default_schedule
from ..schedule.space import group_key
from ..schedule.templates import CpuContraction, GpuSplitRows, Schedule
from .cache import default_cache, make_key
from .tuned import TunedSchedules, tuned_schedules
from .profiles import gpu_model

log = logging.getLogger("warpweave")

# GIR passes after lowering, in order (each verified and dumped by the pass manager).
PIPELINE = [SIMPLIFY, FOLD_CASTS, STITCH, FORWARD_LOADS, HOIST_LOADS, DCE, PREFETCH_LINES, COALESCING]
# Tensor-core kernels carry their shared-memory pipeline across loop iterations, which
# the movement passes and dead-node elimination do not model: they are only simplified.
TC_PIPELINE = [SIMPLIFY]
# Which matrix products anchor contraction groups (fused with their elementwise
# consumers): every floating-point one on the CPU; on the GPU those the tensor-core
# template takes (the rest stay reductions of their own).
_CONTRACTIONS = {"cpu": True, "gpu": tensor_core_product}


def resolve_target(target: str) -> str:
    """The concrete target for a requested one ("auto" → cuda where a GPU is usable,
    else cpu). "cuda" always compiles (to PTX); running it needs a GPU."""
    if target == "auto":
        if not _driver_library_loads():
            return "cpu"
        from ..backends.cuda import driver

        return "cuda" if driver.available() else "cpu"
    if target not in ("cpu", "interp", "cuda"):
        raise TargetError(f"unknown target {target!r}; expected one of {TARGETS}")
    return target


@functools.lru_cache(maxsize=None)
def _driver_library_loads() -> bool:
    """Whether the CUDA driver library can be loaded at all: a dlopen, far cheaper
    than importing cuda-python, which the full probe needs."""
    name = {"win32": "nvcuda.dll", "darwin": None}.get(sys.platform, "libcuda.so.1")
    try:
        return name is not None and bool(ctypes.CDLL(name))
    except OSError:
        return False


def compile_graph(graph: TensorGraph, single: bool, target: str, name: str = "program",
                  schedules: Mapping[str, Schedule] | None = None) -> Program:
    """Compile a tensor graph for a target under the current options. `single`: the
    program returns its one output rather than a tuple. `schedules` maps a group's
    key (`schedule.space.group_key`) to the schedule to use for it (a point of its
    space); other groups take the tuning database's schedule for this device, or the
    predictor's (`pipeline.tuned`), else their default.

    The planned and lowered program comes from the disk cache when it has it (unless
    a dump directory asks for every stage); target code comes from its own cache
    entries, keyed by the final GIR (`_make_runner`)."""
    options = current()
    name = re.sub(r"[^A-Za-z0-9_]", "_", name) or "program"
    target = resolve_target(target)
    start = time.perf_counter()
    dumps = _Dumps(options.dump_dir, name, target, graph)
    tuned = tuned_schedules(target)
    if dumps.path:
        program = _compile_kernels(graph, single, target, name, options, dumps, schedules, tuned)
    else:
        key = program_key(graph, single, target, schedules, tuned)
        program = _cached_program(key)
        if program is None:
            program = _compile_kernels(graph, single, target, name, options, dumps, schedules, tuned)
            default_cache().put(key, pickle.dumps(program, protocol=pickle.HIGHEST_PROTOCOL))
        else:
            program.name = name
            log.debug("%s: plan and kernels from the disk cache (%.1f ms)", name,
                      (time.perf_counter() - start) * 1e3)
    t = time.perf_counter()
    program.runner = _make_runner(program, options)
    log.debug("%s: %s code in %.1f ms", name, target, (time.perf_counter() - t) * 1e3)
    for filename, text in program.runner.files.items():
        dumps.write(filename, text)
    log.debug("%s: compiled for %s in %.1f ms: %d kernels", name, target,
              (time.perf_counter() - start) * 1e3, len(program.kernels))
    return program


def program_key(graph: TensorGraph, single: bool, target: str,
                schedules: Mapping[str, Schedule] | None = None,
                tuned: TunedSchedules | None = None) -> str:
    """The disk-cache key of the planned and lowered program `compile_graph` makes
    of `graph` for the resolved `target` under the current options."""
    sm_count = _sm_count() if target == "cuda" else DEFAULT_SM_COUNT
    device = repr(_device_model("cpu" if target == "cpu" else "gpu", target))  # plans depend on it
    # neither the name nor the source labels: programs that differ only there (the
    # layers of a model) share one compile; the copy from the cache takes this name
    arch = gpu_arch(current()) if target != "cpu" else None  # which tensor-core instructions
    return make_key("program", target, single, graph.text(labels=False), list(graph.inputs),
                    list(graph.outputs), sm_count, device, arch,
                    sorted((k, repr(v)) for k, v in (schedules or {}).items()),
                    tuned.stamp if tuned else None, *compile_key(current()))


def _cached_program(key: str) -> Program | None:
    """The Program cached under `key`, or None; an entry that does not unpickle into
    one is discarded. (Entries are checksummed and live in the user's own cache
    directory, like the native code loaded beside them.)"""
    cache = default_cache()
    blob = cache.get(key)
    if blob is None:
        return None
    try:
        program = pickle.loads(blob)
        if isinstance(program, Program):
            return program
    except Exception:  # noqa: BLE001 - whatever a bad payload raises, it is rebuilt
        pass
    cache.discard(key)
    return None


def _compile_kernels(graph: TensorGraph, single: bool, target: str, name: str,
                     options: Options, dumps: "_Dumps", schedules: Mapping[str, Schedule] | None,
                     tuned: TunedSchedules | None) -> Program:
    """The program without its runner: fusion plan, schedules, GIR through the passes."""
    t = time.perf_counter()
    family = "cpu" if target == "cpu" else "gpu"  # interp runs the GPU kernels
    contractions = _CONTRACTIONS[family]
    product = fuse.product_rule(contractions)
    inlined = graph
    if options.fuse:
        inlined = follow_output_layout(merge_duplicates(graph))
        inlined = materialize_operands(inlined, product) if product is not None else inlined
        inlined = fuse.inline_broadcast_producers(inlined, contractions)
    dumps.write("tensor.txt", str(graph))
    sm_count = _sm_count() if target == "cuda" else DEFAULT_SM_COUNT
    device = _device_model(family, target)
    plan = fuse.plan(inlined, device, fuse=options.fuse, contractions=contractions)
    log.debug("%s: fusion plan in %.1f ms: %d groups", name, (time.perf_counter() - t) * 1e3,
              len(plan.groups))
    t = time.perf_counter()
    kernels: list[KernelInfo] = []
    unfused: list[str] = []
    n = 0
    while n < len(plan.groups):
        group = plan.groups[n]
        try:
            key = group_key(group, inlined)
            chosen, source = (schedules or {}).get(key), "override"
            if chosen is None and tuned is not None:
                chosen, source = tuned.choose(group, inlined, key, family, sm_count,
                                              gpu_arch(options) if family == "gpu" else GPU_ARCH) \
                    or (None, "default")
            kernels += _compile_group(group, inlined, family, sm_count, device, options, dumps,
                                      f"{name}_{group.anchor}", chosen, source)
        except StitchError as exc:
            if len(group.ops) == 1:
                raise
            unfused.append(f"{', '.join(group.ops)}: {exc}")
            log.debug("%s: group %s compiled op by op: %s", name, ", ".join(group.ops), exc)
            plan = fuse.split(plan, n, inlined, device, contractions=contractions)
            continue
        n += 1
    log.debug("%s: lowering and GIR passes in %.1f ms: %d kernels", name,
              (time.perf_counter() - t) * 1e3, len(kernels))
    program = Program(name=name, target=target, single=single, traced=graph, graph=inlined,
                      plan=plan, kernels=kernels, unfused=unfused,
                      temps=_temporaries(inlined, kernels), device=device, dump_dir=dumps.path)
    dumps.write("groups.txt", program.dump("groups"))
    return program


def _compile_group(group: fuse.Group, graph: TensorGraph, family: str, sm_count: int, device,
                   options: Options, dumps: "_Dumps", name: str,
                   chosen: Schedule | None, source: str = "override") -> list[KernelInfo]:
    """The group's kernels under `chosen` (else its default schedule), through the GIR
    pipeline; `source` says where `chosen` came from."""
    if chosen is None:
        arch = gpu_arch(options) if family == "gpu" else GPU_ARCH
        chosen, source = default_schedule(group, graph, family, sm_count, arch), "default"
    infos = []
    passes = TC_PIPELINE if isinstance(chosen, GpuMma) else PIPELINE
    for gir in lower_kernels(group, graph, chosen, name):
        gir = PassManager(passes, verify=options.verify, dump=dumps.kernel).run(gir)
        infos.append(KernelInfo(gir.name, group.ops, chosen, gir, kernel_cost(gir, device), source))
    return infos


def compile_group(group: fuse.Group, graph: TensorGraph, target: str, schedule: Schedule,
                  name: str = "candidate") -> list[KernelInfo]:
    """One group's kernels under `schedule` through the GIR passes, with their costs
    (no code generation): what the tuner compiles each candidate into."""
    family = "cpu" if target == "cpu" else "gpu"
    sm_count = _sm_count() if target == "cuda" else DEFAULT_SM_COUNT
    return _compile_group(group, graph, family, sm_count, _device_model(family, target), current(),
                          _Dumps(None, name, target, graph), name, schedule)


def lower_kernels(group: fuse.Group, graph: TensorGraph, schedule: Schedule, name: str) -> list[Kernel]:
    """The unstitched GIR kernels of one group under `schedule`, in launch order."""
    if isinstance(schedule, GpuMma):
        c = contraction_of(group, graph)
        epilogue = [graph[n] for n in group.ops if n != c.out]
        return lower_mma_group(c, epilogue, group.outputs, graph, schedule, name)
    if isinstance(schedule, CpuContraction):
        return lower_contraction(group, graph, schedule, name)
    if len(group.ops) == 1 and not isinstance(schedule, GROUP_TEMPLATES):
        return lower(graph[group.ops[0]], graph, schedule, name)
    if isinstance(schedule, GpuSplitRows):
        return lower_split_rows(group, graph, schedule, name)
    kernel = lower_group(group, graph, schedule, name)
    return [] if kernel is None else [kernel]


class _Dumps:
    """The dump directory of one compile (`WARPWEAVE_DUMP` / `options(dump_dir=...)`).
    Files are numbered in pipeline order: 00-tensor.txt, 01-groups.txt, then per
    kernel `NN-<kernel>.MM-<stage>.gir` and `.dot` (`.svg` too where Graphviz's `dot`
    is installed) for its input and after every pass, then the target's files."""

    FIXED = {"tensor.txt": 0, "groups.txt": 1}

    def __init__(self, root: str | None, name: str, target: str, graph: TensorGraph):
        self.path = None
        self.kernels: dict[str, list] = {}  # kernel name -> [its number, stages written]
        self.files = 0  # target files written so far
        if root:
            digest = hashlib.sha256(str(graph).encode()).hexdigest()[:10]
            self.path = os.path.join(root, f"{name}-{target}-{digest}")
            os.makedirs(self.path, exist_ok=True)

    def write(self, filename: str, text: str) -> str | None:
        if not self.path:
            return None
        if filename in self.FIXED:
            number = self.FIXED[filename]
        else:  # the target's files come after every kernel
            number = len(self.FIXED) + len(self.kernels) + self.files
            self.files += 1
        return self._write(f"{number:02d}-{filename}", text)

    def _write(self, filename: str, text: str) -> str:
        path = os.path.join(self.path, filename)
        with open(path, "w") as f:
            f.write(text)
        return path

    def kernel(self, stage: str, kernel: Kernel) -> None:
        if not self.path:
            return
        entry = self.kernels.setdefault(kernel.name, [len(self.FIXED) + len(self.kernels), 0])
        stem = f"{entry[0]:02d}-{kernel.name}.{entry[1]:02d}-{stage}"
        entry[1] += 1
        self._write(stem + ".gir", print_kernel(kernel))
        dot = self._write(stem + ".dot", to_dot(kernel, "lowered" if stage == "lowered" else f"after {stage}"))
        if shutil.which("dot"):
            try:
                subprocess.run(["dot", "-Tsvg", dot, "-o", dot[:-4] + ".svg"],
                               check=True, capture_output=True, timeout=60)
            except (OSError, subprocess.SubprocessError) as exc:
                log.warning("Graphviz could not render %s: %s", dot, exc)


def _temporaries(graph: TensorGraph, kernels: list[KernelInfo]):
    """Buffers kernels pass each other that are not tensors of the graph."""
    seen = {}
    for k in kernels:
        for p in k.gir.params:
            if p.name not in graph.ops and p.name not in seen:
                seen[p.name] = p
    return list(seen.values())


def _device_model(family: str, target: str):
    """The cost model's device: the GPU in use (its calibrated or shipped profile) for
    the cuda target where one is usable, else the family's default."""
    if target == "cuda":
        from ..backends.cuda import driver

        if driver.available():
            return gpu_model()
    return device_for(family)


def _sm_count() -> int:
    from ..backends.cuda import driver

    return driver.device().sm_count if driver.available() else DEFAULT_SM_COUNT


def gpu_arch(options: Options) -> str:
    """The architecture GPU kernels are scheduled for: the option's, else the device's,
    else the one they are verified for."""
    from ..backends.cuda import driver

    if options.cuda_arch:
        return options.cuda_arch
    return driver.device().arch if driver.available() else GPU_ARCH


def work_per_step(graph: TensorGraph, k: KernelInfo) -> int:
    """Element operations per grid step: whether a CPU launch is worth splitting."""
    op = graph[k.ops[0]]
    total = int(np.prod(op.shape, dtype=np.int64))
    if op.reduce is not None:
        total *= max(1, int(np.prod(op.reduce.extents, dtype=np.int64)))
    return max(1, total // max(1, k.gir.grid))


def _make_runner(program: Program, options: Options):
    if program.target == "interp":
        return InterpRunner()
    if program.target == "cpu":
        from ..backends.cpu import CpuExecutable, inline_runs

        girs = [k.gir for k in program.kernels]
        works = [work_per_step(program.graph, k) for k in program.kernels]
        runs = tuple(inline_runs(girs, works))
        code = cpu_code(girs, program.name, runs)
        return CpuRunner(CpuExecutable(girs, works, program.name, code=code, runs=runs))
    return _cuda_runner(program, options)


def _cuda_runner(program: Program, options: Options):
    """PTX for the program's kernels (from the disk cache when it has them), and a
    module image linked for the device on first use (cached too)."""
    from ..backends.cuda import codegen, driver
    from ..backends.cuda.runtime import CudaProgram

    arch = codegen.module_arch([k.gir for k in program.kernels], gpu_arch(options))
    texts = ptx_texts([k.gir for k in program.kernels], arch, program.name)
    return CudaProgram(program.graph, [(k.name, k.gir) for k in program.kernels], program.temps,
                       texts["llvm"], texts["ptx"], lambda: cubin(texts["ptx"], arch), program.single)


def cpu_code(girs: list[Kernel], name: str, runs: tuple = ()):
    """Host object code for final GIR kernels and the entries of `runs` (see
    `backends.cpu.Run`), from the disk cache when it has it."""
    from ..backends.cpu import CpuCode, compile_code, host_key

    key = make_key("cpu-object", host_key(), *(print_kernel(g) for g in girs),  # not the name: see above
                   *(repr(r) for r in runs))
    return default_cache().get_or_build(key, lambda: compile_code(girs, name, runs=runs).to_bytes(),
                                        decode=CpuCode.from_bytes)


def ptx_texts(girs: list[Kernel], arch: str, name: str) -> dict[str, str]:
    """LLVM IR and PTX ({"llvm": ..., "ptx": ...}) for final GIR kernels, from the disk
    cache when it has them."""
    from ..backends.cuda import codegen

    def build() -> bytes:
        llvm_ir, ptx = codegen.compile_ptx(girs, arch, name)
        return json.dumps({"llvm": llvm_ir, "ptx": ptx}).encode()

    return default_cache().get_or_build(make_key("ptx", arch, *(print_kernel(g) for g in girs)), build,
                                        decode=_ptx_texts)


def cubin(ptx: str, arch: str) -> bytes:
    """PTX linked for `arch` by the driver, from the disk cache when it has it."""
    from ..backends.cuda import driver

    return default_cache().get_or_build(make_key("cubin", arch, driver.driver_version(), ptx),
                                        lambda: driver.link_ptx(ptx, arch))


def _ptx_texts(blob: bytes) -> dict[str, str]:
    texts = json.loads(blob)
    if not (isinstance(texts, dict) and all(isinstance(texts.get(k), str) for k in ("llvm", "ptx"))):
        raise ValueError("cache entry is not a PTX record")
    return texts
