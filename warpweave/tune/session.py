"""The search loop: for each group, a strategy proposes points, candidates compile here,
an executor measures them, every trial goes into the database, and a progress bar and
a summary table say how it went.

The caller supplies one `Task` per group: its search `Problem` (space, default, cost
model), what the database keeps about it (`features.GroupInfo`) and
`compile_candidate(schedule) -> measure.Artifact`. Nothing here compiles by itself.
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
from .measure import Artifact, Job, Result, Settings
from .records import DeviceInfo, Trial, schedule_to_json
from .strategies import Problem, State, make_strategy


@dataclass
class Task:
    problem: Problem
    info: GroupInfo
    compile_candidate: Callable[[Schedule], Artifact]


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


def _estimate_us(problem: Problem, s: Schedule) -> float | None:
    try:
        e = problem.estimate(s)
    except Error:
        return None
    return e * 1e6 if math.isfinite(e) else None


def tune_tasks(tasks: list[Task], *, executor: Executor, db: Database, device: DeviceInfo,
               strategy: str = "model", budget: int | None = None, batch: int = 4,
               settings: Settings = Settings(), progress: bool = True) -> list[GroupResult]:
    """Search each task's space (at most `budget` trials per group, the default's
    included; None: the whole space) and return one result per task."""
    from tqdm.auto import tqdm  # imported here: `import warpweave` stays light

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
            limit = min(len(problem.space), budget or len(problem.space))
            reference = task.compile_candidate(problem.default)
            state = State()
            failed = 0
            while len(state.measured) < limit:
                points = [problem.default] if not state.measured else \
                    search.propose(problem, state, min(batch, limit - len(state.measured)))
                if not points:
                    break
                trials: dict[int, Trial] = {}
                jobs, owners = [], []
                for n, s in enumerate(points):
                    try:
                        artifact = reference if s == problem.default else task.compile_candidate(s)
                    except Error as exc:
                        trials[n] = _trial(info, problem, device, strategy, s, Result("failed", error=str(exc)))
                        continue
                    jobs.append(Job(problem.key, reference, artifact, schedule_to_json(s), settings))
                    owners.append(n)
                for k, result in executor.run(jobs):
                    trials[owners[k]] = _trial(info, problem, device, strategy, points[owners[k]], result)
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


def _trial(info: GroupInfo, problem: Problem, device: DeviceInfo, strategy: str, s: Schedule,
           result: Result) -> Trial:
    return Trial(problem.key, info.structure, info.summary, info.shapes, info.dtypes, schedule_to_json(s),
                 device, strategy, result.status, result.median_us, result.min_us, result.runs,
                 _estimate_us(problem, s), s == problem.default, result.error)
