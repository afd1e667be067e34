"""Schedules for shapes never measured, from the database's records of the same group
structure on the same device.

The nearest tuned shapes (in log-shape space, `features.shape_vector`) vote: every
point of the new shape's space that a neighbour measured gets the neighbour's time
for it relative to the neighbour's best, averaged with weights falling with distance;
the point with the lowest score wins, unless it beats the default schedule's score by
less than `margin` (neighbours' times are noisy; the default is the safe choice).
`LearnedPredictor` instead fits gradient-boosted trees (scikit-learn, the `tune` extra)
to every tuned point's time relative to its group's best, over schedule and shape
features, and takes the point it predicts fastest. Default compiles use the
neighbours (no scikit-learn needed). `leave_one_out` checks either on a recorded
sweep by hiding each shape in turn.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import numpy as np

from ..schedule.templates import Schedule
from .features import features, shape_vector
from .records import Trial, schedule_from_json


@dataclass(frozen=True)
class _Tuned:
    """One measured group: its shape vector and each point's time relative to its best."""

    key: str
    dtypes: tuple
    position: np.ndarray
    relative: dict


class Predictor:
    """Built from trials (any devices, any structures); `predict` filters."""

    def __init__(self, trials: list[Trial], neighbours: int = 3, margin: float = 0.05):
        self.neighbours = neighbours
        self.margin = margin
        groups: dict[tuple, list[Trial]] = {}
        for t in trials:
            if t.status == "ok":
                groups.setdefault((t.device.target, t.device.name, t.structure, t.group_key), []).append(t)
        self._tuned: dict[tuple, list[_Tuned]] = {}
        for (target, device, structure, key), rows in groups.items():
            times: dict[Schedule, float] = {}
            for t in rows:
                s = schedule_from_json(t.schedule)
                times[s] = min(times.get(s, float("inf")), t.median_us)
            best = min(times.values())
            self._tuned.setdefault((target, device, structure), []).append(
                _Tuned(key, rows[0].dtypes, shape_vector(rows[0].shapes), {s: v / best for s, v in times.items()}))

    def predict(self, target: str, device_name: str, structure: str, shapes, dtypes,
                space: list[Schedule], default: Schedule | None = None) -> Schedule | None:
        """The predicted best point of `space` (`default`: the group's default schedule),
        or None when no tuned neighbour measured any of its points."""
        here = shape_vector(shapes)
        candidates = [g for g in self._tuned.get((target, device_name, structure), ())
                      if tuple(g.dtypes) == tuple(dtypes)]
        candidates.sort(key=lambda g: float(np.linalg.norm(g.position - here)))
        nearest = [g for g in candidates if any(s in g.relative for s in space)][:self.neighbours]
        if not nearest:
            return None
        best, best_score = None, float("inf")
        scores = {}
        for s in space:
            votes = [(1.0 / (1e-3 + float(np.linalg.norm(g.position - here))), g.relative[s])
                     for g in nearest if s in g.relative]
            if not votes:
                continue
            score = sum(w * r for w, r in votes) / sum(w for w, _ in votes)
            score *= 1 + 0.1 * (len(nearest) - len(votes))  # unmeasured by some neighbours: less sure
            scores[s] = score
            if score < best_score:
                best, best_score = s, score
        if default in scores and best_score > scores[default] * (1 - self.margin):
            return default
        return best


class LearnedPredictor:
    """Gradient-boosted trees of log(time / the group's best) per (device, structure)."""

    def __init__(self, trials: list[Trial], margin: float = 0.05):
        self.margin = margin
        self._rows: dict[tuple, list[Trial]] = {}
        for t in trials:
            if t.status == "ok":
                self._rows.setdefault((t.device.target, t.device.name, t.structure), []).append(t)
        self._models: dict[tuple, object] = {}

    def _model(self, key: tuple):
        if key not in self._models:
            from sklearn.ensemble import GradientBoostingRegressor

            rows = self._rows[key]
            best: dict[str, float] = {}
            for t in rows:
                best[t.group_key] = min(best.get(t.group_key, math.inf), t.median_us)
            x = [features(schedule_from_json(t.schedule), t.shapes, t.dtypes) for t in rows]
            y = [math.log(t.median_us / best[t.group_key]) for t in rows]
            self._models[key] = GradientBoostingRegressor(n_estimators=50, max_depth=3, random_state=0).fit(x, y)
        return self._models[key]

    def predict(self, target: str, device_name: str, structure: str, shapes, dtypes,
                space: list[Schedule], default: Schedule | None = None) -> Schedule | None:
        key = (target, device_name, structure)
        if key not in self._rows or not space:
            return None
        predicted = self._model(key).predict(np.array([features(s, shapes, dtypes) for s in space]))
        best = int(np.argmin(predicted))
        if default in space and predicted[best] > predicted[space.index(default)] + math.log1p(-self.margin):
            return default
        return space[best]


@dataclass(frozen=True)
class LeaveOneOut:
    """Each held-out shape's time under a choice, relative to its best (1.0 = optimal),
    averaged (geometric mean) over the shapes the predictor had neighbours for."""

    shapes: int
    predicted: float
    default: float
    space_mean: float     # the trivial baseline: a point of the space at random
    hits: float           # fraction of shapes where the prediction is within 3 % of the best
    method: str = "neighbours"
    hits5: float = 0.0    # ... within 5 %

    def __str__(self):
        return (f"leave-shape-out over {self.shapes} shapes: {self.method} predicted {self.predicted:.3f}x the best, "
                f"default {self.default:.3f}x, random point {self.space_mean:.3f}x; "
                f"within 3 % of the best on {self.hits:.0%}, within 5 % on {self.hits5:.0%}")


def _geomean(xs) -> float:
    return float(np.exp(np.mean(np.log(xs))))


def leave_one_out(trials: list[Trial], method: str = "neighbours", neighbours: int = 3,
                  margin: float = 0.05) -> LeaveOneOut:
    """Hide each group's trials in turn, predict its best point from the rest (`method`:
    "neighbours" or "learned"), and compare the hidden time of the prediction with the
    default's and the space's mean."""
    groups: dict[str, list[Trial]] = {}
    for t in trials:
        groups.setdefault(t.group_key, []).append(t)
    predicted, default, mean, hits, hits5 = [], [], [], [], []
    for key, rows in groups.items():
        times = {schedule_from_json(t.schedule): t.median_us for t in rows if t.status == "ok"}
        defaults = [schedule_from_json(t.schedule) for t in rows if t.is_default and t.status == "ok"]
        if not times or not defaults:
            continue
        best = min(times.values())
        rest = [t for t in trials if t.group_key != key]
        predictor = LearnedPredictor(rest, margin) if method == "learned" else Predictor(rest, neighbours, margin)
        d = rows[0].device
        choice = predictor.predict(d.target, d.name, rows[0].structure, rows[0].shapes, rows[0].dtypes,
                                   list(times), defaults[0])
        if choice is None:
            continue
        predicted.append(times[choice] / best)
        default.append(times[defaults[0]] / best)
        mean.append(statistics.mean(times.values()) / best)
        hits.append(times[choice] <= 1.03 * best)
        hits5.append(times[choice] <= 1.05 * best)
    if not predicted:
        return LeaveOneOut(0, float("nan"), float("nan"), float("nan"), 0.0, method)
    return LeaveOneOut(len(predicted), _geomean(predicted), _geomean(default), _geomean(mean),
                       float(np.mean(hits)), method, float(np.mean(hits5)))
