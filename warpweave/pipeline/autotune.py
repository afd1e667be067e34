"""Tuning a tensor graph: the pipeline (the fusion plan, one group's GIR under a
schedule, code for a candidate) wired into `warpweave.tune`, which measures, searches
and records. `ww.tune` (frontend.tuning) and `ww.jit(..., tune=True)` call `tune_graph`.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ArgumentError
from ..ir.tensor import TensorGraph
from ..options import current, options as scoped_options
from ..passes.fuse import Group
from ..program import Program
from ..schedule.choose import DEFAULT_SM_COUNT, default_schedule
from ..schedule.space import group_key, space
from ..schedule.templates import Schedule
from ..tune.database import Database
from ..tune.executors import Executor, LocalExecutor
from ..tune.features import describe
from ..tune.measure import Artifact, Settings, build_artifact
from ..tune.records import DeviceInfo, cuda_device, host_device
from ..tune.session import GroupResult, Task, table, tune_tasks
from ..tune.strategies import Problem
from .cache import tuning_db_path
from .compile import compile_graph, compile_group, resolve_target, work_per_step


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


def group_task(group: Group, graph: TensorGraph, target: str, sm_count: int) -> Task:
    """The search task of one group: its space, default, cost model and how a candidate
    compiles (GIR through the passes, then native code or a cubin)."""
    family = "cpu" if target == "cpu" else "gpu"
    compiled: dict[Schedule, list] = {}

    def kernels(schedule: Schedule):
        if schedule not in compiled:
            compiled[schedule] = compile_group(group, graph, target, schedule)
        return compiled[schedule]

    def estimate(schedule: Schedule) -> float:
        return sum(k.cost.time_s for k in kernels(schedule))

    members = set(group.ops)
    inputs = {i for o in group.ops for i in graph[o].inputs if i not in members}

    def compile_candidate(schedule: Schedule) -> Artifact:
        infos = kernels(schedule)
        return build_artifact(target, [k.gir for k in infos], [work_per_step(graph, k) for k in infos],
                              inputs, set(group.outputs))

    info = describe(group, graph)
    default = default_schedule(group, graph, family, sm_count)
    points = space(group, graph, family, sm_count)
    problem = Problem(group_key(group, graph), info.shapes, info.dtypes, points, default, estimate)
    return Task(problem, info, compile_candidate)


def tune_graph(graph: TensorGraph, single: bool, target: str = "auto", name: str = "program", *,
               budget: int | None = None, strategy: str = "model", db: str | Database | None = None,
               executor: Executor | None = None, settings: Settings | None = None,
               progress: bool = True, retune: bool = True) -> TuneReport:
    """Tune every group of a tensor graph's default compile (see `ww.tune` for the
    arguments) and compile it again with the results. `retune=False` skips groups the
    database already has a correct trial for on this device."""
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
    try:
        results = tune_tasks(tasks, executor=executor, db=database, device=device, strategy=strategy,
                             budget=budget, settings=settings or Settings(), progress=progress)
    finally:
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
