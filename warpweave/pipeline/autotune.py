"""Tuning a tensor graph: the pipeline (the fusion plan, one group's GIR under a
schedule, code for a candidate) wired into `warpweave.tune`, which measures, searches
and records. `ww.tune` (frontend.tuning) and `ww.jit(..., tune=True)` call `tune_graph`.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from ..errors import ArgumentError, Error
from ..ir.gir_verify import GPU_ARCH
from ..ir.tensor import TensorGraph
from ..options import Options, current, options as scoped_options
from ..passes.fuse import Group
from ..program import KernelInfo, Program
from ..schedule.choose import DEFAULT_SM_COUNT, default_schedule
from ..schedule.space import group_key, space
from ..schedule.templates import Schedule
from ..tune.database import Database
from ..tune.executors import Executor, LocalExecutor
from ..tune.features import describe
from ..tune.compiling import CompilePool, Compiled
from ..tune.measure import Settings, make_artifact
from ..tune.records import DeviceInfo, cuda_device, host_device
from ..tune.session import GroupResult, Task, table, tune_tasks
from ..tune.strategies import Problem
from .cache import ENV_VAR as CACHE_ENV_VAR, cache_dir, tuning_db_path
from .compile import (compile_graph, compile_group, cpu_code, cubin, gpu_arch, ptx_texts, resolve_target,
                      work_per_step)


@dataclass
class TuneReport:
    """What `tune` did: one result per group, and the program compiled afterwards."""

    groups: list[GroupResult]
    program: Program
    database: str

    def __str__(self):
        return f"{table(self.groups)}\n(tuning database: {self.database})"


def _device(target: str) -> DeviceInfo:
    if target == "cuda":
        from ..backends.cuda import driver

        return cuda_device(driver.current_ordinal())
    return host_device()


@dataclass
class GroupCompiler:
    """Compiles one group's candidates for a target: GIR through the passes, then native
    code or a cubin (through the disk cache). Picklable, so the tuner's pool runs it in
    other processes, under the options in force where it was made. Passes are not
    verified one by one (the final kernel is, and every candidate's outputs are checked
    against the default's), which halves a candidate's GIR time."""

    group: Group
    graph: TensorGraph
    target: str
    options: Options
    cache: str = dataclasses.field(default_factory=cache_dir)  # the disk cache it compiles through

    def __post_init__(self):
        self._kernels: dict[Schedule, list[KernelInfo]] = {}

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_kernels"}

    def __setstate__(self, state):
        # unpickled in a pool process (started earlier, perhaps under another environment):
        # compile through the cache of the process that made it
        self.__dict__.update(state, _kernels={})
        os.environ[CACHE_ENV_VAR] = self.cache

    def kernels(self, schedule: Schedule) -> list[KernelInfo]:
        if schedule not in self._kernels:
            with scoped_options(**{**dataclasses.asdict(self.options), "verify": False}):
                self._kernels = {schedule: compile_group(self.group, self.graph, self.target, schedule)}
        return self._kernels[schedule]

    def estimate(self, schedule: Schedule) -> float:
        """The cost model's seconds (inf: the point does not compile)."""
        try:
            return sum(k.cost.time_s for k in self.kernels(schedule))
        except Error:
            return float("inf")

    def __call__(self, schedule: Schedule) -> Compiled:
        infos = self.kernels(schedule)
        girs = [k.gir for k in infos]
        if self.target == "cpu":
            image = cpu_code(girs, "candidate").object
        else:
            from ..backends.cuda import codegen, driver

            usable = driver.available()
            arch = codegen.module_arch(girs, gpu_arch(self.options))  # sm_90a where wgmma
            ptx = ptx_texts(girs, arch, "candidate")["ptx"]
            image = cubin(ptx, arch) if usable else ptx.encode()
        members = set(self.group.ops)
        inputs = {i for o in self.group.ops for i in self.graph[o].inputs if i not in members}
        artifact = make_artifact(self.target, girs, [work_per_step(self.graph, k) for k in infos], inputs,
                                 set(self.group.outputs), image)
        return Compiled(artifact, sum(k.cost.time_s for k in infos))


def group_task(group: Group, graph: TensorGraph, target: str, sm_count: int) -> Task:
    """The search task of one group: its space, default, cost model and compiler."""
    family = "cpu" if target == "cpu" else "gpu"
    compiler = GroupCompiler(group, graph, target, current())
    info = describe(group, graph)
    arch = gpu_arch(current()) if family == "gpu" else GPU_ARCH
    default = default_schedule(group, graph, family, sm_count, arch)
    points = space(group, graph, family, sm_count, arch)
    problem = Problem(group_key(group, graph), info.shapes, info.dtypes, points, default, compiler.estimate)
    return Task(problem, info, compiler)


_SHARED: list[CompilePool] = []


def _shared_pool() -> CompilePool:
    """The compile pool tuning uses by default: one per process, so that tuning many
    programs (`torch.compile(mode="max-autotune")` over a model) starts its processes
    once; they end after a minute without work (on the GPU each holds a CUDA context)."""
    if not _SHARED:
        _SHARED.append(CompilePool(idle_s=60.0))
    return _SHARED[0]


def tune_graph(graph: TensorGraph, single: bool, target: str = "auto", name: str = "program", *,
               budget: int | None = None, strategy: str = "model", db: str | Database | None = None,
               executor: Executor | None = None, settings: Settings | None = None,
               progress: bool = True, retune: bool = True, jobs: int | None = None,
               pool: CompilePool | None = None) -> TuneReport:
    """Tune every group of a tensor graph's default compile (see `ww.tune` for the
    arguments) and compile it again with the results. `retune=False` skips groups the
    database already has a correct trial for on this device. Candidates compile in
    `jobs` processes (default: the process's shared pool, one per CPU core; 0: in this
    process), or in `pool`, a `CompilePool` the caller shares between calls (and closes)."""
    target = resolve_target(target)
    if target not in ("cpu", "cuda"):
        raise ArgumentError(f"target {target!r} cannot be tuned: tune for 'cpu' or 'cuda'")
    path = db.path if isinstance(db, Database) else (db or tuning_db_path())
    database = db if isinstance(db, Database) else Database(path)
    with scoped_options(tuned=False):  # the plan and the defaults, never earlier results
        baseline = compile_graph(graph, single, target, name)
    sm_count = baseline.device.sm_count if target == "cuda" else DEFAULT_SM_COUNT
    device = _device(target)
    tasks = [group_task(g, baseline.graph, target, sm_count) for g in baseline.plan.groups
             if any(k.ops == g.ops for k in baseline.kernels)]
    if not retune:
        tasks = [t for t in tasks if database.best(t.problem.key, device) is None]
    own = executor is None and bool(tasks)
    executor = executor or (LocalExecutor(target) if tasks else None)
    own_pool = pool is None and jobs is not None
    pool = pool or (CompilePool(jobs) if jobs is not None else _shared_pool())
    try:
        results = tune_tasks(tasks, executor=executor, db=database, device=device, strategy=strategy,
                             budget=budget, settings=settings or Settings(), progress=progress, pool=pool)
    finally:
        if own_pool:
            pool.close()
        if own:
            executor.close()
    with scoped_options(tuning_db=path, tuned=True):
        program = compile_graph(graph, single, target, name)
    return TuneReport(results, program, path)


def compile_program(graph: TensorGraph, single: bool, target: str, name: str = "program") -> Program:
    """`compile_graph`, after tuning the groups the database lacks when the `autotune`
    option is on (`torch.compile(mode="max-autotune")` turns it on) and the target is
    tunable."""
    if current().autotune and resolve_target(target) in ("cpu", "cuda"):
        return tune_graph(graph, single, target, name, retune=False).program
    return compile_graph(graph, single, target, name)
