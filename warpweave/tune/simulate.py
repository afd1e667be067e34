"""Simulation: replaying a recorded exhaustive sweep instead of measuring, so that
strategies are compared without a GPU (as Kernel Tuner's simulation runner does).

A sweep is a tuning database (or its JSON lines export) holding every point of each
group's space, measured on one device. `problems` rebuilds each group's search from
it (its space, default, and the cost model's recorded estimates); `replay` runs a
strategy on one group with measurements looked up instead of taken; `compare` reports,
per strategy, how many trials it needs to come within 3 % and 1 % of the best point.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

import numpy as np

from ..errors import ArgumentError
from .database import Database
from .records import Trial, schedule_from_json
from .strategies import Problem, State, make_strategy


@dataclass(frozen=True)
class Sweep:
    """One group's recorded sweep: every point's median time (None: it failed)."""

    problem: Problem
    times: dict       # schedule -> median µs or None
    trials: list[Trial]

    @property
    def best_us(self) -> float:
        return min(t for t in self.times.values() if t is not None)


def load(path: str) -> Database:
    """A sweep file (JSON lines) or database, as an in-memory database."""
    if path.endswith(".jsonl"):
        db = Database(":memory:")
        db.import_jsonl(path)
        return db
    return Database(path)


def sweeps(db: Database, target: str | None = None, device_name: str | None = None) -> list[Sweep]:
    """Every group of the database with at least one correct trial, rebuilt as a search
    problem whose `history` is the other groups of the same structure and device."""
    trials = [t for t in db.trials(target=target, device_name=device_name) if t.strategy == "exhaustive"]
    by_group: dict[tuple, list[Trial]] = {}
    for t in trials:
        by_group.setdefault((t.device.target, t.device.name, t.group_key), []).append(t)
    out = []
    for (tgt, dev, key), rows in by_group.items():
        times, estimates, default = {}, {}, None
        for t in rows:
            s = schedule_from_json(t.schedule)
            times[s] = t.median_us if t.status == "ok" else None
            estimates[s] = t.estimate_us if t.estimate_us is not None else float("inf")
            if t.is_default:
                default = s
        if not any(v is not None for v in times.values()) or default is None:
            continue
        space = [default] + [s for s in times if s != default]
        history = [t for t in trials if t.structure == rows[0].structure and t.group_key != key
                   and (t.device.target, t.device.name) == (tgt, dev)]
        problem = Problem(key, rows[0].shapes, rows[0].dtypes, space, default,
                          lambda s, e=estimates: e[s], history)
        out.append(Sweep(problem, times, rows))
    return out


def replay(strategy_name: str, sweep: Sweep, seed: int = 0, batch: int = 1,
           until: float | None = None) -> list[float | None]:
    """The times a strategy measures, in order, over the whole space (or until one is
    at most `until`)."""
    strategy = make_strategy(strategy_name, seed)
    problem, state = sweep.problem, State()
    state.measured.append((problem.default, sweep.times[problem.default]))  # the default is measured first
    while len(state.measured) < len(problem.space):
        if until is not None and any(t is not None and t <= until for _, t in state.measured[-batch:]):
            break
        points = strategy.propose(problem, state, batch)
        if not points:
            break
        state.measured += [(s, sweep.times[s]) for s in points]
    return [t for _, t in state.measured]


def _ranks(values) -> np.ndarray:
    """Ranks from 1, ties sharing their mean rank."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for v in np.unique(values):
        tied = values == v
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a, b) -> float:
    """Spearman's rank correlation of two sequences (nan when either is constant): how
    well the cost model's estimates order a group's points by their measured times."""
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def trials_to_within(times: list[float | None], best: float, margin: float) -> int:
    """How many trials until one came within `margin` (0.03: 3 %) of `best`."""
    for n, t in enumerate(times, 1):
        if t is not None and t <= best * (1 + margin):
            return n
    return len(times) + 1


@dataclass(frozen=True)
class Comparison:
    strategy: str
    groups: int
    space: float        # mean space size
    within3: float      # mean trials to within 3 %
    within1: float      # mean trials to within 1 %
    default_gap: float  # mean default time / best time

    def row(self) -> str:
        return (f"{self.strategy:<11} {self.groups:>6} {self.space:>7.1f} {self.within3:>9.2f} "
                f"{self.within1:>9.2f}")


HEADER = f"{'strategy':<11} {'groups':>6} {'space':>7} {'to 3%':>9} {'to 1%':>9}"


def compare(sweep_list: list[Sweep], strategies, seeds: int = 5) -> list[Comparison]:
    """Mean trials to within 3 % and 1 % of each group's best point, per strategy
    (randomized strategies averaged over `seeds` seeds)."""
    if not sweep_list:
        raise ArgumentError("the sweep holds no group with a correct exhaustive trial")
    out = []
    for name in strategies:
        n3, n1 = [], []
        for sw in sweep_list:
            for seed in range(seeds if name in ("random", "bayesian", "learned") else 1):
                times = replay(name, sw, seed, until=sw.best_us * 1.01)
                n3.append(trials_to_within(times, sw.best_us, 0.03))
                n1.append(trials_to_within(times, sw.best_us, 0.01))
        out.append(Comparison(name, len(sweep_list), statistics.mean(len(s.problem.space) for s in sweep_list),
                              statistics.mean(n3), statistics.mean(n1),
                              statistics.mean(sw.times[sw.problem.default] / sw.best_us
                                              if sw.times[sw.problem.default] else float("inf")
                                              for sw in sweep_list)))
    return out
