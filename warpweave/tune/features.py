"""Describing groups and schedules as numbers: the group's structure (its ops with the
shapes left out), its shape vector, and the feature vector a learned cost model reads."""
from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np

from ..ir import expr as ex
from ..ir.tensor import TensorGraph
from ..passes.fuse import Group
from ..schedule.mma import INSTRUCTIONS, LOADERS
from ..schedule.templates import Schedule
from .records import TEMPLATES

TEMPLATE_NAMES = sorted(TEMPLATES)
PARAMS = sorted({f.name for cls in TEMPLATES.values() for f in dataclasses.fields(cls)})
CHOICES = {"instr": INSTRUCTIONS, "loader": LOADERS}  # parameters that name a choice: their position in it


def _skeleton(e: ex.Expr) -> str:
    """An expression with constants, variables and load indices left out."""
    if isinstance(e, ex.Load):
        return "load"
    if isinstance(e, (ex.Const, ex.Var)):
        return type(e).__name__[0].lower()
    if isinstance(e, ex.Reduce):
        return f"reduce.{e.combiner}({_skeleton(e.body)})"
    if isinstance(e, ex.Cast):
        return f"cast.{e.dtype}({_skeleton(e.a)})"
    children = [_skeleton(getattr(e, f)) for f in e._fields if isinstance(getattr(e, f), ex.Expr)]
    return f"{getattr(e, 'op', type(e).__name__)}({','.join(children)})"


@dataclasses.dataclass(frozen=True)
class GroupInfo:
    """What the database keeps about a group besides its content hash."""

    structure: str   # equal for the same ops on other shapes
    summary: str     # readable
    shapes: tuple    # the tensors the group reads from outside, then its outputs
    dtypes: tuple


def describe(group: Group, graph: TensorGraph) -> GroupInfo:
    members = set(group.ops)
    reads = list(dict.fromkeys(i for o in group.ops for i in graph[o].inputs if i not in members))
    tensors = [graph[n] for n in reads] + [graph[n] for n in group.outputs]
    ops = [graph[o] for o in group.ops]
    text = "|".join(f"{op.kind}:{op.dtype}:{len(op.shape)}:{_skeleton(op.body)}" for op in ops)
    text += "|" + ",".join(f"{len(t.shape)}{t.dtype}" for t in tensors)
    structure = hashlib.sha256(f"{group.pattern}|{text}".encode()).hexdigest()[:16]
    labels = ", ".join(op.label or op.name for op in ops)
    summary = f"{group.pattern}[{labels}] {' '.join(f'{t.dtype}{list(t.shape)}' for t in tensors)}"
    return GroupInfo(structure, summary, tuple(tuple(t.shape) for t in tensors),
                     tuple(str(t.dtype) for t in tensors))


def _log2(n: float) -> float:
    return math.log2(max(1.0, float(n)))


def shape_vector(shapes) -> np.ndarray:
    """log2 of the first tensor's and the last tensor's sizes and last extents (the
    group's main input and output): the space the predictor measures distance in."""
    first, last = shapes[0], shapes[-1]
    return np.array([_log2(np.prod(first)), _log2(first[-1] if first else 1),
                     _log2(np.prod(last)), _log2(last[-1] if last else 1)])


def schedule_vector(schedule: Schedule) -> np.ndarray:
    """The template one-hot, then log2 of every parameter (a choice's position for the
    parameters of `CHOICES`; 0 where the template has none)."""
    values = dataclasses.asdict(schedule)
    onehot = [1.0 if type(schedule).__name__ == n else 0.0 for n in TEMPLATE_NAMES]
    return np.array(onehot + [_param(p, values[p]) if p in values else 0.0 for p in PARAMS])


def _param(name: str, value) -> float:
    if name in CHOICES:
        return 1.0 + CHOICES[name].index(value)
    return _log2(value) + 1


def features(schedule: Schedule, shapes, dtypes) -> np.ndarray:
    """The learned cost model's input: schedule, shape, and the widest dtype's bytes."""
    from ..ir import dtypes as dt

    widest = max(dt.dtype(d).itemsize for d in dtypes)
    return np.concatenate([schedule_vector(schedule), shape_vector(shapes), [widest]])
