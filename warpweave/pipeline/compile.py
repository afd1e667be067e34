"""The compile driver: tensor graph → fusion plan → GIR kernels → GIR passes → target
code, producing a `Program`.

Every stage is a pure function of its input and the options; `Program.dump(stage)`
shows each one, and `WARPWEAVE_DUMP=<dir>` writes them all to disk.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Mapping

import numpy as np

from ..options import Options, TARGETS, current
from ..errors import StitchError, TargetError
from ..ir.gir import Kernel
from ..ir.gir_dot import to_dot
from ..ir.gir_text import print_kernel
from ..ir.tensor import TensorGraph
from ..lower.group import lower_group
from ..lower.op import lower
from ..passes import fuse
from ..passes.cleanup import DCE, FOLD_CASTS, SIMPLIFY
from ..passes.cost import device_for, kernel_cost
from ..passes.manager import PassManager
from ..passes.movement import COALESCING, FORWARD_LOADS, HOIST_LOADS, PREFETCH_LINES
from ..passes.stitch import STITCH
from ..program import CpuRunner, InterpRunner, KernelInfo, Program
from ..schedule.choose import DEFAULT_SM_COUNT, choose, choose_group
from ..schedule.space import group_key
from ..schedule.templates import Schedule
from .tuned import tuned_schedules

# GIR passes after lowering, in order (each verified and dumped by the pass manager).
PIPELINE = [SIMPLIFY, FOLD_CASTS, STITCH, FORWARD_LOADS, HOIST_LOADS, DCE, PREFETCH_LINES, COALESCING]


def resolve_target(target: str) -> str:
    """The concrete target for a requested one ("auto" → cuda where a GPU is usable,
    else cpu). "cuda" always compiles (to PTX); running it needs a GPU."""
    if target == "auto":
        from ..backends.cuda import driver

        return "cuda" if driver.available() else "cpu"
    if target not in ("cpu", "interp", "cuda"):
        raise TargetError(f"unknown target {target!r}; expected one of {TARGETS}")
    return target


def compile_graph(graph: TensorGraph, single: bool, target: str, name: str = "program",
                  schedules: Mapping[str, Schedule] | None = None) -> Program:
    """Compile a tensor graph for a target under the current options. `single`: the
    program returns its one output rather than a tuple. `schedules` maps a group's
    key (`schedule.space.group_key`) to the schedule to use for it (a point of its
    space); other groups take the tuning database's schedule for this device, or the
    predictor's (`pipeline.tuned`), else their default."""
    options = current()
    name = re.sub(r"[^A-Za-z0-9_]", "_", name) or "program"
    target = resolve_target(target)
    inlined = fuse.inline_broadcast_producers(graph) if options.fuse else graph
    dumps = _Dumps(options.dump_dir, name, target, inlined)
    dumps.write("tensor.txt", str(graph))
    family = "cpu" if target == "cpu" else "gpu"  # interp runs the GPU kernels
    sm_count = _sm_count() if target == "cuda" else DEFAULT_SM_COUNT
    device = device_for(family, sm_count)
    plan = fuse.plan(inlined, device, fuse=options.fuse)
    tuned = tuned_schedules(target)
    kernels: list[KernelInfo] = []
    unfused: list[str] = []
    n = 0
    while n < len(plan.groups):
        group = plan.groups[n]
        try:
            key = group_key(group, inlined)
            chosen, source = (schedules or {}).get(key), "override"
            if chosen is None and tuned is not None:
                chosen, source = tuned.choose(group, inlined, key, family, sm_count) or (None, "default")
            kernels += _compile_group(group, inlined, family, sm_count, device, options, dumps,
                                      f"{name}_{group.anchor}", chosen, source)
        except StitchError as exc:
            if len(group.ops) == 1:
                raise
            unfused.append(f"{', '.join(group.ops)}: {exc}")
            plan = fuse.split(plan, n, inlined, device)
            continue
        n += 1
    program = Program(name=name, target=target, single=single, traced=graph, graph=inlined,
                      plan=plan, kernels=kernels, unfused=unfused,
                      temps=_temporaries(inlined, kernels), device=device, dump_dir=dumps.path)
    dumps.write("groups.txt", program.dump("groups"))
    program.runner = _make_runner(program, options)
    for filename, text in program.runner.files.items():
        dumps.write(filename, text)
    return program


def _compile_group(group: fuse.Group, graph: TensorGraph, family: str, sm_count: int, device,
                   options: Options, dumps: "_Dumps", name: str,
                   chosen: Schedule | None, source: str = "override") -> list[KernelInfo]:
    """The group's kernels under `chosen` (else its default schedule), through the GIR
    pipeline; `source` says where `chosen` came from."""
    if chosen is None:
        chosen, source = default_schedule(group, graph, family, sm_count), "default"
    infos = []
    for gir in lower_kernels(group, graph, chosen, name):
        gir = PassManager(PIPELINE, verify=options.verify, dump=dumps.kernel).run(gir)
        infos.append(KernelInfo(gir.name, group.ops, chosen, gir, kernel_cost(gir, device), source))
    return infos


def default_schedule(group: fuse.Group, graph: TensorGraph, family: str, sm_count: int) -> Schedule:
    """The schedule a group gets without tuning (`family`: "gpu" or "cpu")."""
    if len(group.ops) == 1:
        return choose(graph[group.ops[0]], family, sm_count)
    return choose_group(group, graph, family)


def compile_group(group: fuse.Group, graph: TensorGraph, target: str, schedule: Schedule,
                  name: str = "candidate") -> list[KernelInfo]:
    """One group's kernels under `schedule` through the GIR passes, with their costs
    (no code generation): what the tuner compiles each candidate into."""
    family = "cpu" if target == "cpu" else "gpu"
    sm_count = _sm_count() if target == "cuda" else DEFAULT_SM_COUNT
    return _compile_group(group, graph, family, sm_count, device_for(family, sm_count), current(),
                          _Dumps(None, name, target, graph), name, schedule)


def lower_kernels(group: fuse.Group, graph: TensorGraph, schedule: Schedule, name: str) -> list[Kernel]:
    """The unstitched GIR kernels of one group under `schedule`, in launch order."""
    if len(group.ops) == 1:
        return lower(graph[group.ops[0]], graph, schedule, name)
    kernel = lower_group(group, graph, schedule, name)
    return [] if kernel is None else [kernel]


class _Dumps:
    """The dump directory of one compile (`WARPWEAVE_DUMP` / `options(dump_dir=...)`)."""

    def __init__(self, root: str | None, name: str, target: str, graph: TensorGraph):
        self.path = None
        if root:
            digest = hashlib.sha256(str(graph).encode()).hexdigest()[:10]
            self.path = os.path.join(root, f"{name}-{target}-{digest}")
            os.makedirs(self.path, exist_ok=True)

    def write(self, filename: str, text: str) -> None:
        if self.path:
            with open(os.path.join(self.path, filename), "w") as f:
                f.write(text)

    def kernel(self, stage: str, kernel: Kernel) -> None:
        if self.path:
            self.write(f"{kernel.name}.{stage}.gir", print_kernel(kernel))
            if stage == "lowered":
                self.write(f"{kernel.name}.dot", to_dot(kernel))


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
        from ..backends.cpu import CpuExecutable

        works = [work_per_step(program.graph, k) for k in program.kernels]
        return CpuRunner(CpuExecutable([k.gir for k in program.kernels], works, program.name))
    return _cuda_runner(program, options)


def _cuda_runner(program: Program, options: Options):
    """PTX for the program's kernels (from the disk cache when it has them), and a
    module image linked for the device on first use (cached too)."""
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
