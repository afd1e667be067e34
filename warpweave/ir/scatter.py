"""Scatter-adds among sums: `match_scatter` finds the one-hot form of a scatter-add,

    out[..., a, ...] = Σ_r (E == a and rest ? v : 0),

an operation whose terms are picked by data (E loads an index tensor and uses
neither `a` nor anything but the other output axes and the reduction axes r). It
is the form frontends give the embedding's backward, scatter_add and index_add.
Summed as written it costs the output's size times r's extent; computed as a
scatter it costs r's extent times the other axes: zero the output, then for every
point of (other output axes, r) add `rest ? v : 0` — `a` replaced by E — at
a = E, where E lies in [0, n_a) (an index out of range hits nothing, as in the
sum).
"""
from __future__ import annotations

from dataclasses import dataclass

from . import expr as ex
from .simplify import conjuncts
from .tensor import ComputeOp


@dataclass(frozen=True)
class Scatter:
    """`axis`: the output axis the data pick; `target`: E; `value`: what is added at
    a = E (an expression of the other output axes and the reduction axes)."""

    axis: int
    target: ex.Expr
    value: ex.Expr


def match_scatter(op: ComputeOp) -> Scatter | None:
    """The scatter-add form of `op` (see the module docstring), or None."""
    return scatter_form(op.axes, op.body) if op.dtype == op.body.dtype else None


def scatter_form(axes, body: ex.Expr) -> Scatter | None:
    """`match_scatter` for an operation over `axes` (Vars) defined by `body`: sums of
    32- and 64-bit numbers only (what memory can add to; 16-bit sums accumulate in
    float32 and are rounded after)."""
    red = body
    if not isinstance(red, ex.Reduce) or red.combiner != "sum" or not isinstance(red.body, ex.Select) \
            or red.dtype.is_bool or red.dtype.itemsize < 4:
        return None
    zero = red.body.b
    if not (isinstance(zero, ex.Const) and zero.value == 0) or not (zero.dtype.is_float or zero.dtype.is_int):
        return None
    axes = [a.name for a in axes]
    terms = conjuncts(red.body.cond)
    for k, c in enumerate(terms):
        if not (isinstance(c, ex.Binary) and c.op == "eq"):
            continue
        for e, var in ((c.a, c.b), (c.b, c.a)):
            if isinstance(var, ex.Var) and var.name in axes and ex.loads(e) \
                    and var.name not in ex.free_vars(e):
                rest = ex.all_of(terms[:k] + terms[k + 1:])
                value = red.body.a if rest is None else ex.select(rest, red.body.a, zero)
                return Scatter(axes.index(var.name), e, ex.substitute(value, {var.name: e}))
    return None
