"""Clean-up passes on GIR: expression simplification and dead-node elimination."""
from __future__ import annotations

from ..ir import expr as ex
from ..ir.gir import Kernel, make_kernel
from .manager import Pass

_EXPR_ATTRS = ("offset", "pred", "lane", "expr", "mask")
_SIDE_EFFECTS = ("move.reg.global", "move.reg.shared", "sync.block")


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
                e = ex.simplify(e, ranges)
                if key in ("pred", "mask") and isinstance(e, ex.Const) and e.value:
                    e = None
                attrs[key] = e
        nodes.append(n.replace(attrs=attrs))
    return make_kernel(kernel.name, kernel.params, kernel.shared, nodes, kernel.edges,
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
DCE = Pass("dce", eliminate_dead_nodes)
DEFAULT_PASSES = [SIMPLIFY, DCE]
