"""Search strategies behind one interface.

A strategy proposes the next points of one group's space to measure, given what was
measured so far (`State`); the caller measures them (for real, or replayed from a
recorded sweep) and records the results, until the budget is spent or the space is.

    exhaustive  every point, in the space's order
    random      a random order
    model       the cost model ranks the space (each point compiled to GIR and costed:
                cheap); the best-ranked are measured, then the unmeasured neighbours of
                the best measured point (one parameter different), then down the ranking
    learned     gradient-boosted trees over schedule and shape features (as AutoTVM),
                trained on this group's measurements and the database's records of the
                same structure on the same device, re-ranking the rest after each batch
    bayesian    Optuna's TPE sampler over the templates and their parameters
"""
from __future__ import annotations

import abc
import dataclasses
import math
import random as _random
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import ArgumentError
from ..schedule.templates import Schedule
from .features import features
from .records import Trial, schedule_from_json


@dataclass
class Problem:
    """One group's search: its space (default first), shapes, and the cost model."""

    key: str
    shapes: tuple
    dtypes: tuple
    space: list[Schedule]
    default: Schedule
    estimate: Callable[[Schedule], float]        # the cost model's seconds (inf: does not compile)
    history: list[Trial] = field(default_factory=list)  # the database's records of the same
    #                                                     structure on this device (other shapes)


@dataclass
class State:
    """What has been measured, in order: (schedule, median µs or None when it failed)."""

    measured: list[tuple[Schedule, float | None]] = field(default_factory=list)

    @property
    def seen(self) -> set:
        return {s for s, _ in self.measured}

    def best(self) -> tuple[Schedule, float] | None:
        ok = [(s, t) for s, t in self.measured if t is not None]
        return min(ok, key=lambda p: p[1]) if ok else None


class Strategy(abc.ABC):
    """`propose(problem, state, n)`: up to `n` unmeasured points to measure next.
    `batch`: how many points a search asks for at a time (they compile in parallel);
    `uses_estimates`: whether it reads the cost model's estimate of every point (the
    search computes them all up front, in parallel)."""

    name = "strategy"
    batch = 8
    uses_estimates = False

    def __init__(self, seed: int = 0):
        self.seed = seed

    @abc.abstractmethod
    def propose(self, problem: Problem, state: State, n: int) -> list[Schedule]:
        """Up to `n` points of `problem.space` not in `state`, best first."""


def _unmeasured(problem: Problem, state: State) -> list[Schedule]:
    seen = state.seen
    return [s for s in problem.space if s not in seen]


class Exhaustive(Strategy):
    name = "exhaustive"
    batch = 64

    def propose(self, problem, state, n):
        return _unmeasured(problem, state)[:n]


class Random(Strategy):
    name = "random"
    batch = 64

    def propose(self, problem, state, n):
        rest = _unmeasured(problem, state)
        rng = _random.Random(f"{self.seed}:{problem.key}:{len(state.measured)}")
        return rng.sample(rest, min(n, len(rest)))


def _neighbours(a: Schedule, b: Schedule) -> bool:
    """Same template, exactly one parameter different."""
    if type(a) is not type(b):
        return False
    da, db = dataclasses.asdict(a), dataclasses.asdict(b)
    return sum(da[k] != db[k] for k in da) == 1


class CostModel(Strategy):
    name = "model"
    uses_estimates = True

    def __init__(self, seed: int = 0, top: int = 4):
        super().__init__(seed)
        self.top = top
        self._ranking: dict[str, list[Schedule]] = {}

    def ranking(self, problem: Problem) -> list[Schedule]:
        if problem.key not in self._ranking:
            costs = {s: problem.estimate(s) for s in problem.space}
            self._ranking[problem.key] = sorted(problem.space, key=lambda s: (costs[s], problem.space.index(s)))
        return self._ranking[problem.key]

    def propose(self, problem, state, n):
        seen = state.seen
        ranked = [s for s in self.ranking(problem) if s not in seen]
        out = []
        best = state.best()
        if len(state.measured) >= self.top and best is not None:
            out = [s for s in ranked if _neighbours(s, best[0])][:n]
        out += [s for s in ranked if s not in out][:n - len(out)]
        return out


class Learned(Strategy):
    """Gradient-boosted regression trees of log time (scikit-learn's
    GradientBoostingRegressor: for the few hundred records a search has, it fits in tens
    of milliseconds); the first batch comes from the cost model."""

    name = "learned"
    uses_estimates = True

    def __init__(self, seed: int = 0, first: int = 4):
        super().__init__(seed)
        self.first = first
        self._model = CostModel(seed)

    def propose(self, problem, state, n):
        from sklearn.ensemble import GradientBoostingRegressor

        rest = _unmeasured(problem, state)
        ok = [(s, t) for s, t in state.measured if t is not None]
        x, y = [], []
        for t in problem.history:
            if t.status == "ok" and t.group_key != problem.key:
                x.append(features(schedule_from_json(t.schedule), t.shapes, t.dtypes))
                y.append(math.log(t.median_us))
        for s, t in ok:  # this group's own measurements weigh more: repeated
            for _ in range(4):
                x.append(features(s, problem.shapes, problem.dtypes))
                y.append(math.log(t))
        if len(ok) < min(self.first, len(problem.space)) and len(x) < 16:
            return self._model.propose(problem, state, n)
        model = GradientBoostingRegressor(n_estimators=50, max_depth=3, random_state=self.seed)
        model.fit(np.array(x), np.array(y))
        predicted = model.predict(np.array([features(s, problem.shapes, problem.dtypes) for s in rest]))
        order = np.argsort(predicted, kind="stable")
        return [rest[i] for i in order[:n]]


class Bayesian(Strategy):
    """Optuna's TPE sampler: the template is one categorical parameter, each of its
    parameters another; combinations outside the space are told as failed (and cost no
    measurement), points already measured are told their time."""

    name = "bayesian"
    MAX_ASKS = 200

    def __init__(self, seed: int = 0):
        super().__init__(seed)
        self._studies: dict[str, tuple] = {}

    def _study(self, problem: Problem):
        import optuna

        if problem.key not in self._studies:
            optuna.logging.set_verbosity(optuna.logging.WARNING)
            sampler = optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=4)
            self._studies[problem.key] = (optuna.create_study(sampler=sampler), {}, 0)
        return self._studies[problem.key]

    def propose(self, problem, state, n):
        import optuna

        study, pending, told = self._study(problem)
        for s, t in state.measured[told:]:  # tell what was measured since the last call
            trial = pending.pop(s, None)
            if trial is not None:
                study.tell(trial, math.log(t) if t is not None else None,
                           state=None if t is not None else optuna.trial.TrialState.FAIL)
        self._studies[problem.key] = (study, pending, len(state.measured))
        space = set(problem.space)
        names = sorted({type(s).__name__ for s in problem.space})
        values: dict[str, dict[str, list]] = {}
        for s in problem.space:
            for k, v in dataclasses.asdict(s).items():
                values.setdefault(type(s).__name__, {}).setdefault(k, set()).add(v)
        known = dict(state.measured)
        out: list[Schedule] = []
        for _ in range(self.MAX_ASKS):
            if len(out) >= n:
                break
            trial = study.ask()
            name = trial.suggest_categorical("template", names)
            cls = next(type(s) for s in problem.space if type(s).__name__ == name)
            params = {k: trial.suggest_categorical(f"{name}.{k}", sorted(v))
                      for k, v in sorted(values[name].items())}
            point = cls(**params)
            if point not in space:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            elif point in known:
                t = known[point]
                study.tell(trial, math.log(t) if t is not None else None,
                           state=None if t is not None else optuna.trial.TrialState.FAIL)
            elif point in out or point in pending:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                pending[point] = trial
                out.append(point)
        if len(out) < n:  # the sampler keeps proposing measured points: fill at random
            rest = [s for s in _unmeasured(problem, state) if s not in out]
            out += _random.Random(self.seed + len(state.measured)).sample(rest, min(n - len(out), len(rest)))
        return out


STRATEGIES = {cls.name: cls for cls in (Exhaustive, Random, CostModel, Learned, Bayesian)}


def make_strategy(name: str, seed: int = 0) -> Strategy:
    if name not in STRATEGIES:
        raise ArgumentError(f"unknown tuning strategy {name!r}; expected one of {sorted(STRATEGIES)}")
    return STRATEGIES[name](seed)
