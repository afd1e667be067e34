"""Clean-up passes on GIR: expression simplification, cast folding and dead-node
elimination."""
from __future__ import annotations

from ..ir import dtypes as dt
from ..ir import expr as ex
from ..ir import simplify as sx
from ..ir.gir import Edge, Kernel, make_kernel
from .manager import Pass

_EXPR_ATTRS = ("offset", "pred", "lane", "expr", "mask")
_SIDE_EFFECTS = ("move.reg.global", "move.reg.shared", "sync.block", "call.gemm")


def simplify_exprs(kernel: Kernel) -> Kernel:
    """Simplify every index expression under its scope's variable ranges; drop
    predicates and masks that always hold."""
    nodes = []
    for n in kernel.nodes:
        if n.is_scope or n.family == "mem":
            nodes.append(n)
            continue
        scope = n.attr("over") if n.op == "compute.reduce" else n.scope
        ranges = kernel.ranges(scope)
        attrs = n.attr_map
        for key in _EXPR_ATTRS:
            e = attrs.get(key)
            if isinstance(e, ex.Expr):
                e = sx.simplify(e, ranges)
                if key in ("pred", "mask") and isinstance(e, ex.Const) and e.value:
                    e = None
                attrs[key] = e
        nodes.append(n.replace(attrs=attrs))
    return make_kernel(kernel.name, kernel.params, kernel.shared, nodes, kernel.edges,
                       kernel.target, dict(kernel.meta))


def _widens_exactly(src: dt.DType, wide: dt.DType) -> bool:
    """Every `src` value converts to `wide` and back unchanged."""
    if src.kind != wide.kind or wide.bits < src.bits:
        return False
    return src.bits < wide.bits or src == wide


def fold_casts(kernel: Kernel) -> Kernel:
    """Users of a cast that changes nothing read its operand instead: a cast to the
    operand's own dtype, and `cast<T>(cast<W>(x))` for x of dtype T when W holds
    every T exactly (a 16-bit float widened to float32 and rounded back). The
    orphaned casts are left to dead-node elimination."""
    source: dict[str, str] = {}  # cast node -> the value its users read instead
    for n in kernel.nodes:
        if n.op != "compute.cast":
            continue
        (operand,) = kernel.operands(n.id)
        x = kernel.node(source.get(operand.src, operand.src))
        if x.dtype == n.dtype:
            source[n.id] = x.id
        elif x.op == "compute.cast" and _widens_exactly(n.dtype, x.dtype):
            (inner,) = kernel.operands(x.id)
            y = kernel.node(source.get(inner.src, inner.src))
            if y.dtype == n.dtype:
                source[n.id] = y.id
    if not source:
        return kernel
    edges = []
    for e in kernel.edges:
        if e.src in source:
            src = kernel.node(source[e.src])
            e = Edge(src.id, e.dst, e.slot, e.level, src.dtype, kernel.vector_shape(src.scope))
        edges.append(e)
    return make_kernel(kernel.name, kernel.params, kernel.shared, kernel.nodes, edges,
                       kernel.target, dict(kernel.meta))


def eliminate_dead_nodes(kernel: Kernel) -> Kernel:
    """Remove compute and load nodes whose values nobody uses."""
    live: set[str] = set()
    users: dict[str, list[str]] = {}
    for e in kernel.edges:
        users.setdefault(e.src, []).append(e.dst)
    operands: dict[str, list[str]] = {}
    for e in kernel.edges:
        operands.setdefault(e.dst, []).append(e.src)
    work = [n.id for n in kernel.nodes if n.op in _SIDE_EFFECTS or n.is_scope or n.family == "mem"]
    while work:
        nid = work.pop()
        if nid in live:
            continue
        live.add(nid)
        work.extend(operands.get(nid, []))
    nodes = [n for n in kernel.nodes if n.id in live]
    edges = [e for e in kernel.edges if e.src in live and e.dst in live]
    return make_kernel(kernel.name, kernel.params, kernel.shared, nodes, edges, kernel.target,
                       dict(kernel.meta))


SIMPLIFY = Pass("simplify", simplify_exprs)
FOLD_CASTS = Pass("fold-casts", fold_casts)
DCE = Pass("dce", eliminate_dead_nodes)
DEFAULT_PASSES = [SIMPLIFY, DCE]
