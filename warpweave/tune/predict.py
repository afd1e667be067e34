"""Schedules for shapes never measured, from the database's records of the same group
structure on the same device.

The nearest tuned shapes (in log-shape space, `features.shape_vector`) vote: every
point of the new shape's space that a neighbour measured gets the neighbour's time
for it relative to the neighbour's best, averaged with weights falling with distance;
the point with the lowest score wins. `leave_one_out` checks the predictor on a
recorded sweep by hiding each shape in turn.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

import numpy as np

from ..schedule.templates import Schedule
from .features import shape_vector
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

    def __init__(self, trials: list[Trial], neighbours: int = 3):
        self.neighbours = neighbours
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
                space: list[Schedule]) -> Schedule | None:
        """The predicted best point of `space`, or None when no tuned neighbour
        measured any of its points."""
        here = shape_vector(shapes)
        candidates = [g for g in self._tuned.get((target, device_name, structure), ())
                      if tuple(g.dtypes) == tuple(dtypes)]
        candidates.sort(key=lambda g: float(np.linalg.norm(g.position - here)))
        nearest = [g for g in candidates if any(s in g.relative for s in space)][:self.neighbours]
        if not nearest:
            return None
        best, best_score = None, float("inf")
        for s in space:
            votes = [(1.0 / (1e-3 + float(np.linalg.norm(g.position - here))), g.relative[s])
                     for g in nearest if s in g.relative]
            if not votes:
                continue
            score = sum(w * r for w, r in votes) / sum(w for w, _ in votes)
            score *= 1 + 0.1 * (len(nearest) - len(votes))  # unmeasured by some neighbours: less sure
            if score < best_score:
                best, best_score = s, score
        return best


@dataclass(frozen=True)
class LeaveOneOut:
    """Each held-out shape's time under a choice, relative to its best (1.0 = optimal),
    averaged (geometric mean) over the shapes the predictor had neighbours for."""

    shapes: int
    predicted: float
    default: float
    space_mean: float     # the trivial baseline: a point of the space at random
    hits: float           # fraction of shapes where the prediction is within 3 % of the best

    def __str__(self):
        return (f"leave-shape-out over {self.shapes} shapes: predicted {self.predicted:.3f}x the best, "
                f"default {self.default:.3f}x, random point {self.space_mean:.3f}x; "
                f"within 3 % of the best on {self.hits:.0%}")


def _geomean(xs) -> float:
    return float(np.exp(np.mean(np.log(xs))))


def leave_one_out(trials: list[Trial], neighbours: int = 3) -> LeaveOneOut:
    """Hide each group's trials in turn, predict its best point from the rest, and
    compare the hidden time of the prediction with the default's and the space's mean."""
    groups: dict[str, list[Trial]] = {}
    for t in trials:
        groups.setdefault(t.group_key, []).append(t)
    predicted, default, mean, hits = [], [], [], []
    for key, rows in groups.items():
        times = {schedule_from_json(t.schedule): t.median_us for t in rows if t.status == "ok"}
        defaults = [schedule_from_json(t.schedule) for t in rows if t.is_default and t.status == "ok"]
        if not times or not defaults:
            continue
        best = min(times.values())
        predictor = Predictor([t for t in trials if t.group_key != key], neighbours)
        d = rows[0].device
        choice = predictor.predict(d.target, d.name, rows[0].structure, rows[0].shapes, rows[0].dtypes,
                                   list(times))
        if choice is None:
            continue
        predicted.append(times[choice] / best)
        default.append(times[defaults[0]] / best)
        mean.append(statistics.mean(times.values()) / best)
        hits.append(times[choice] <= 1.03 * best)
    if not predicted:
        return LeaveOneOut(0, float("nan"), float("nan"), float("nan"), 0.0)
    return LeaveOneOut(len(predicted), _geomean(predicted), _geomean(default), _geomean(mean),
                       float(np.mean(hits)))
