"""The search loop: for each group, a strategy proposes points, candidates compile here,
an executor measures them, every trial goes into the database, and a progress bar and
a summary table say how it went.

The caller supplies one `Task` per group: its search `Problem` (space, default, cost
model), what the database keeps about it (`features.GroupInfo`) and
`compile_candidate(schedule) -> compiling.Compiled`. Nothing here compiles by itself:
a `compiling.CompilePool` runs the callable, in parallel where it pickles.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from ..errors import Error
from ..schedule.templates import Schedule
from .database import Database
from .executors import Executor
from .features import GroupInfo
from .compiling import CompilePool, Compiled
from .measure import Job, Result, Settings
from .records import DeviceInfo, Trial, schedule_to_json
from .strategies import Problem, State, make_strategy


@dataclass
class Task:
    problem: Problem
    info: GroupInfo
    compile_candidate: Callable[[Schedule], Compiled]  # picklable: compiles in a pool


@dataclass(frozen=True)
class GroupResult:
    summary: str
    trials: int
    failed: int
    default_us: float | None
    best_us: float | None
    best: Schedule | None

    @property
    def speedup(self) -> float | None:
        return self.default_us / self.best_us if self.default_us and self.best_us else None


def table(results: list[GroupResult]) -> str:
    """Per group: default and tuned time, speed-up, trials (failed)."""
    def us(v):
        return f"{v:10.1f}" if v is not None else f"{'-':>10}"

    lines = [f"{'default us':>10} {'tuned us':>10} {'speed-up':>8} {'trials (failed)':>15}  group"]
    for r in results:
        speedup = f"{r.speedup:7.2f}x" if r.speedup else f"{'-':>8}"
        lines.append(f"{us(r.default_us)} {us(r.best_us)} {speedup} {f'{r.trials} ({r.failed})':>15}  {r.summary}")
    return "\n".join(lines)


def tune_tasks(tasks: list[Task], *, executor: Executor, db: Database, device: DeviceInfo,
               strategy: str = "model", budget: int | None = None, batch: int | None = None,
               settings: Settings = Settings(), progress: bool = True,
               pool: CompilePool | None = None) -> list[GroupResult]:
    """Search each task's space (at most `budget` trials per group, the default's
    included; None: the whole space) and return one result per task. Candidates compile
    in `pool` (default: in this process) `batch` at a time (default: the strategy's),
    each measured as soon as it has compiled."""
    from tqdm.auto import tqdm  # imported here: `import warpweave` stays light

    pool = pool or CompilePool(0)
    results = []
    total = sum(min(len(t.problem.space), budget or len(t.problem.space)) for t in tasks)
    bar = tqdm(total=total, desc=f"tuning ({strategy})", unit="trial", disable=not progress)
    failed_total = 0
    try:
        for task in tasks:
            problem, info = task.problem, task.info
            search = make_strategy(strategy)
            problem.history = db.trials(structure=info.structure, target=device.target,
                                        device_name=device.name, status="ok")
            if search.uses_estimates:
                problem.estimate = _estimates(pool, problem)
            limit = min(len(problem.space), budget or len(problem.space))
            [(_, reference, error)] = pool.map(task.compile_candidate, [problem.default])
            if error is not None:
                raise error
            state = State()
            failed = 0
            while len(state.measured) < limit:
                points = [problem.default] if not state.measured else \
                    search.propose(problem, state, min(batch or search.batch, limit - len(state.measured)))
                if not points:
                    break
                trials = _measure_batch(task, points, reference, pool, executor, device, strategy, settings)
                db.add(trials[n] for n in sorted(trials))
                for n in sorted(trials):
                    t = trials[n]
                    state.measured.append((points[n], t.median_us if t.status == "ok" else None))
                    failed += t.status != "ok"
                failed_total += sum(t.status != "ok" for t in trials.values())
                bar.update(len(trials))
                best = state.best()
                bar.set_postfix(group=info.summary[:24], failed=failed_total,
                                best=f"{best[1]:.1f}us" if best else "-")
            best = state.best()
            default_us = state.measured[0][1] if state.measured else None
            results.append(GroupResult(info.summary, len(state.measured), failed, default_us,
                                       best[1] if best else None, best[0] if best else None))
    finally:
        bar.close()
    return results


def _estimates(pool: CompilePool, problem: Problem) -> Callable[[Schedule], float]:
    """The cost model's estimate of every point of the space, computed in the pool."""
    table = {}
    for n, estimate, error in pool.map(problem.estimate, problem.space):
        table[problem.space[n]] = float("inf") if error is not None else estimate
    return lambda s: table.get(s, float("inf"))


def _measure_batch(task: Task, points: list[Schedule], reference: Compiled, pool: CompilePool,
                   executor: Executor, device: DeviceInfo, strategy: str,
                   settings: Settings) -> dict[int, Trial]:
    """Compile `points` in the pool and measure each as soon as it has compiled: the
    trials by index into `points`. A candidate that fails to compile is a failed trial."""
    problem, info = task.problem, task.info
    trials: dict[int, Trial] = {}
    owners: list[tuple[int, float]] = []  # job index -> (point index, estimate)
    todo = [n for n, s in enumerate(points) if s != problem.default]

    def compiled():  # (index, Compiled, error): the default's at once, the rest as they compile
        yield from ((n, reference, None) for n, s in enumerate(points) if s == problem.default)
        for k, c, error in pool.map(task.compile_candidate, [points[n] for n in todo]):
            yield todo[k], c, error

    def jobs():
        for n, compiled_point, error in compiled():
            if error is not None:
                message = str(error) if isinstance(error, Error) else f"{type(error).__name__}: {error}"
                trials[n] = _trial(info, problem, device, strategy, points[n], Result("failed", error=message),
                                   None)
                continue
            owners.append((n, compiled_point.estimate_s))
            yield Job(problem.key, reference.artifact, compiled_point.artifact, schedule_to_json(points[n]), settings)

    for k, result in executor.run(jobs()):
        n, estimate = owners[k]
        trials[n] = _trial(info, problem, device, strategy, points[n], result, estimate)
    return trials


def _trial(info: GroupInfo, problem: Problem, device: DeviceInfo, strategy: str, s: Schedule,
           result: Result, estimate_s: float | None) -> Trial:
    estimate_us = estimate_s * 1e6 if estimate_s is not None and math.isfinite(estimate_s) else None
    return Trial(problem.key, info.structure, info.summary, info.shapes, info.dtypes, schedule_to_json(s),
                 device, strategy, result.status, result.median_us, result.min_us, result.runs,
                 estimate_us, s == problem.default, result.error)
