"""Recognising contractions (matrix products) in the tensor graph.

`match_contraction(op, graph)` says whether a `ComputeOp` is

    out[batch..., m, n] = sum_k  A[batch..., m, k] * B[batch..., k, n]

with each operand read through an affine map of its buffer (so transposed operands,
broadcast batches and sliced or reshaped views are all one form), each operand
optionally widened by casts (bfloat16 loaded, multiplied and summed in float32), and
describes it as a `Contraction`: the extents, and for both operands and the output a
`Layout` of element strides and offset into the tensor's row-major buffer. Anything
else — a non-affine index, a mask, a third factor, a max or a product — is None.

Output axes take roles: an axis both operands move along is a batch axis; of the axes
only one operand moves along, the innermost is that operand's row (m) or column (n)
axis and any others are batch axes along which the other operand is broadcast
(stride 0). Extent-1 axes are batch axes. A missing m or n axis (matrix-vector,
vector-vector) is an extent 1 with stride 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from . import dtypes as dt
from . import expr as ex
from . import simplify as sx
from .dtypes import DType
from .tensor import ComputeOp, TensorGraph, row_major_strides

ROLES = ("batch", "m", "n")


@dataclass(frozen=True)
class Layout:
    """Where a matrix's elements lie in a buffer: element (b..., row, col) is at
    `offset + sum(batch[i] * b[i]) + row * rows + col * cols` (element strides).

    For A the rows are m and the columns k; for B rows are k and columns n; for the
    output rows are m and columns n."""

    batch: tuple[int, ...]
    rows: int
    cols: int
    offset: int = 0


@dataclass(frozen=True)
class Operand:
    """A matrix operand: the tensor it is read from (`tensor`, whose buffer holds
    `dtype`), how it lies there, and the dtype its elements are widened to before
    the multiplication (`compute`, equal to `dtype` without casts)."""

    tensor: str
    dtype: DType
    layout: Layout
    compute: DType


@dataclass(frozen=True)
class Contraction:
    """`out[b..., m, n] = sum_k a[b..., m, k] * b[b..., k, n]`, accumulated in `acc`
    and stored as `out_dtype` (see the module docstring for the axis roles).

    `roles[i]` is the role ("batch", "m" or "n") of the op's output axis i; the batch
    axes appear in `batch` (and in every `Layout.batch`) in output order."""

    out: str
    batch: tuple[int, ...]
    m: int
    n: int
    k: int
    a: Operand
    b: Operand
    out_layout: Layout
    acc: DType
    out_dtype: DType
    roles: tuple[str, ...]

    @property
    def batch_count(self) -> int:
        count = 1
        for e in self.batch:
            count *= e
        return count

    @property
    def flops(self) -> int:
        """Multiply-adds counted as two operations."""
        return 2 * self.batch_count * self.m * self.n * self.k


def _widens(src: DType, dst: DType) -> bool:
    """Whether every value of `src` is exactly a value of `dst`."""
    if src == dst:
        return True
    if src.is_float and dst.is_float:
        return dst.bits > src.bits and not (src == dt.float16 and dst == dt.bfloat16)
    if src.is_int and dst.is_int:
        return dst.bits > src.bits
    return False


def _factor(e: ex.Expr) -> tuple[ex.Load, DType] | None:
    """A load under exact widening casts: the load and the type it reaches."""
    target = e.dtype
    while isinstance(e, ex.Cast):
        if not _widens(e.a.dtype, e.dtype):
            return None
        e = e.a
    if not isinstance(e, ex.Load):
        return None
    return e, target


def _flat(ld: ex.Load, shape, variables, ranges) -> tuple[dict[str, int], int] | None:
    """The load's element offset into its row-major buffer as coefficients per
    variable plus a constant; None when not affine with a constant remainder."""
    flat: ex.Expr = ex.Const(0, dt.INDEX)
    for idx, stride in zip(ld.indices, row_major_strides(shape)):
        flat = flat + idx * ex.Const(stride, dt.INDEX)
    decomposed = sx.affine(flat, variables, ranges)
    if decomposed is None:
        return None
    coeffs, rest = decomposed
    rest = sx.simplify(rest, ranges)
    if not isinstance(rest, ex.Const):
        return None
    return coeffs, int(rest.value)


def strided(ld: ex.Load, shape, extents: Mapping[str, int]) -> bool:
    """Whether the load reads its row-major buffer of `shape` at an affine offset of the
    variables of `extents` (their extents): a strided view, which matrix products read."""
    ranges = {v: (0, max(0, n - 1)) for v, n in extents.items()}
    return _flat(ld, tuple(shape), list(extents), ranges) is not None


def match_contraction(op: ComputeOp, graph: TensorGraph | Mapping[str, tuple[int, ...]]
                      ) -> Contraction | None:
    """The contraction `op` computes, or None. `graph` gives the shapes of the tensors
    `op` loads (a `TensorGraph`, or a mapping from tensor name to shape)."""
    red = op.reduce
    if red is None or red.combiner != "sum" or len(red.axes) != 1:
        return None
    if red.dtype.is_bool or op.dtype.is_bool:
        return None
    body = red.body
    if not (isinstance(body, ex.Binary) and body.op == "mul"):
        return None
    factors = [_factor(body.a), _factor(body.b)]
    if None in factors:
        return None
    k_var, k = red.axes[0].name, red.extents[0]
    axes = [a.name for a in op.axes]
    ranges = {a: (0, max(0, n - 1)) for a, n in zip(axes, op.shape)}
    ranges[k_var] = (0, max(0, k - 1))
    variables = [*axes, k_var]
    flats = []
    for ld, _ in factors:
        shape = graph[ld.tensor].shape if isinstance(graph, TensorGraph) else graph[ld.tensor]
        f = _flat(ld, tuple(shape), variables, ranges)
        if f is None:
            return None
        flats.append(f)
    extents = dict(zip(variables, [*op.shape, k]))

    def coeff(which: int, var: str) -> int:
        return flats[which][0].get(var, 0) if extents[var] > 1 else 0

    only = ([], [])  # axes (positions) only factor 0, or only factor 1, moves along
    for pos, a in enumerate(axes):
        c0, c1 = coeff(0, a), coeff(1, a)
        if op.shape[pos] > 1 and c0 == 0 and c1 == 0:
            return None  # the output repeats along an axis neither operand moves along
        if c0 and not c1:
            only[0].append(pos)
        elif c1 and not c0:
            only[1].append(pos)
    inner = [o[-1] if o else None for o in only]
    # A is the factor whose lone axis comes first; with one lone axis (or none) the
    # first factor is A, so A @ v has an m axis and v @ B an n axis.
    ia = 1 if None not in inner and inner[1] < inner[0] else 0
    ib = 1 - ia
    m_pos, n_pos = inner[ia], inner[ib]
    roles = tuple("m" if p == m_pos else "n" if p == n_pos else "batch" for p in range(len(axes)))
    batch_axes = [a for a, r in zip(axes, roles) if r == "batch"]
    out_strides = dict(zip(axes, row_major_strides(op.shape)))

    def stride(which: int | None, var: str | None) -> int:
        if var is None or extents[var] <= 1:
            return 0
        return coeff(which, var) if which is not None else out_strides[var]

    m_var = axes[m_pos] if m_pos is not None else None
    n_var = axes[n_pos] if n_pos is not None else None

    def operand(which: int, row: str | None, col: str | None) -> Operand:
        ld, compute = factors[which]
        layout = Layout(tuple(stride(which, a) for a in batch_axes), stride(which, row),
                        stride(which, col), flats[which][1])
        return Operand(ld.tensor, ld.dtype, layout, compute)

    out_layout = Layout(tuple(stride(None, a) for a in batch_axes), stride(None, m_var),
                        stride(None, n_var), 0)
    return Contraction(
        out=op.name, batch=tuple(extents[a] for a in batch_axes),
        m=extents[m_var] if m_var else 1, n=extents[n_var] if n_var else 1, k=k,
        a=operand(ia, m_var, k_var), b=operand(ib, k_var, n_var), out_layout=out_layout,
        acc=dt.compute_dtype(red.dtype), out_dtype=op.dtype, roles=roles)
