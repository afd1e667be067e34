"""Schedules of contraction groups on the CPU: how many rows of the product one grid
step computes (`CpuContraction.rows`) and the epilogue's vector width."""
from __future__ import annotations

from ..ir.contraction import match_contraction
from ..ir.tensor import TensorGraph
from ..passes.fuse import Group
from .templates import CpuContraction

TILE_ROWS = 128  # rows of the product per grid step (1024^3 float32: 64-256 rows within noise)


def _lanes(group: Group, graph: TensorGraph) -> int:
    widest = max(max(4, graph[n].dtype.itemsize) for n in group.ops)
    return max(1, 64 // widest)


def choose_contraction(group: Group, graph: TensorGraph) -> CpuContraction:
    """A product with an epilogue (or a 16-bit result) and at least two tiles' rows:
    tiles of `TILE_ROWS` rows, so that the epilogue finds each tile in cache. Else one
    call per batch element, which the BLAS splits across its own threads (where the
    batch has one element) as well as a grid of tiles would."""
    op = graph[group.ops[0]]
    c = match_contraction(op, graph)
    epilogue = len(group.ops) > 1 or op.dtype != c.acc
    rows = TILE_ROWS if epilogue and c.m >= 2 * TILE_ROWS else 0
    return CpuContraction(rows=rows, vector=_lanes(group, graph))


def contraction_space(group: Group, graph: TensorGraph) -> list[CpuContraction]:
    """The legal points: row tiles of 32 to 1024 rows (below the product's rows) or none,
    the epilogue at 1 to 16 lanes, the default first."""
    c = match_contraction(graph[group.ops[0]], graph)
    default = choose_contraction(group, graph)
    rows = [0] + [r for r in (32, 64, 128, 256, 512, 1024) if r < c.m]
    lanes = [w for w in (1, 4, 8, 16) if w <= default.vector]
    points = [CpuContraction(rows=r, vector=w) for r in rows for w in lanes]
    return [default] + [p for p in points if p != default]
