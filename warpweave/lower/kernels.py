"""One operation's kernels under its schedule, in launch order: a scatter-add and a
column reduction split over blocks take two, every other template one (`lower_op`)."""
from __future__ import annotations

from ..ir.gir import Kernel
from ..ir.tensor import ComputeOp, TensorGraph
from ..schedule import templates as sch
from .op import _prod, lower_op, split_column_reduce
from .scatter import lower_scatter


def lower(op: ComputeOp, graph: TensorGraph, schedule: sch.Schedule, name: str | None = None) -> list[Kernel]:
    """The GIR kernels computing `op` under `schedule`, in launch order (none when
    `op` is empty). Kernels may share temporary buffers (params with role "temp")."""
    name = name or op.name
    if isinstance(schedule, (sch.CpuScatter, sch.GpuScatter)):
        return lower_scatter(op, graph, schedule, name)
    if isinstance(schedule, sch.GpuSplitColumnReduce) and _prod(op.shape) and op.reduce is not None \
            and _prod(op.reduce.extents):
        return split_column_reduce(op, graph, schedule, name)
    if isinstance(schedule, sch.GpuSplitColumnReduce):
        schedule = sch.GpuColumnReduce()
    kernel = lower_op(op, graph, schedule, name)
    return [] if kernel is None else [kernel]
