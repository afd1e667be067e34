"""Graphviz rendering of GIR kernels.

`to_dot(kernel)` returns DOT text: every parallel scope is a nested
`subgraph cluster_*` labelled `kind var < extent`; node shapes tell the families
apart (compute: ellipse, move: parallelogram, sync: octagon, mem: cylinder) and
edges are coloured by the memory level their value lives in — global (DRAM) red,
shared orange, registers green — with a legend. Render it with
`dot -Tsvg kernel.dot -o kernel.svg`.
"""
from __future__ import annotations

from .expr_text import expr_to_text
from . import expr as ex
from .gir import Kernel, Node

__all__ = ["to_dot", "LEVEL_COLORS", "FAMILY_SHAPES"]

LEVEL_COLORS = {"global": "red", "shared": "darkorange", "reg": "forestgreen"}
LEVEL_LABELS = {"global": "global (DRAM)", "shared": "shared memory", "reg": "registers"}
FAMILY_SHAPES = {"compute": "ellipse", "move": "parallelogram", "sync": "octagon",
                 "mem": "cylinder", "parallel": "tab"}
_FILL = {"compute": "white", "move": "lightyellow", "sync": "lightpink", "mem": "lightgrey",
         "parallel": "white"}
_SCOPE_FILL = {"grid": "#f4f4f4", "block": "#e8f0fb", "serial": "#fdf6e3", "unroll": "#fdf6e3",
               "vector": "#eaf7ea"}
_MAX_LABEL = 64


def _q(text) -> str:
    """A DOT double-quoted string (escapes quotes and backslashes; keeps `\\n` breaks)."""
    s = str(text).replace("\\", "\\\\").replace('"', '\\"')
    s = s.replace("\r", "").replace("\n", "\\n")
    return f'"{s}"'


def _html(text) -> str:
    return (str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;"))


def _short(text: str) -> str:
    return text if len(text) <= _MAX_LABEL else text[: _MAX_LABEL - 1] + "…"


def _ex(e, tdt) -> str:
    return _short(expr_to_text(e, tdt)) if isinstance(e, ex.Expr) else _short(repr(e))


def _node_label(n: Node, tdt) -> str:
    a = n.attr_map
    lines = [f"{n.id} {n.op}"]
    if n.op.startswith("move.") and n.op != "move.reg.reg" and "buffer" in a:
        lines.append(f"{a['buffer']}[{_ex(a.get('offset'), tdt)}]")
        if a.get("pred") is not None:
            lines.append(f"if {_ex(a['pred'], tdt)}")
        if a.get("other") is not None and a.get("pred") is not None:
            lines.append(f"else {_ex(a['other'], tdt)}")
    elif n.op == "move.reg.reg":
        lines.append(f"{a.get('mode')} {_ex(a.get('lane'), tdt)}")
    elif n.op == "compute.const":
        lines.append(_ex(a.get("value"), tdt))
    elif n.op == "compute.index":
        lines.append(_ex(a.get("expr"), tdt))
    elif n.op == "compute.reduce":
        lines.append(f"{a.get('combiner')} over {a.get('over')}")
        if a.get("mask") is not None:
            lines.append(f"where {_ex(a['mask'], tdt)}")
    elif n.family == "mem":
        lines.append(str(a.get("buffer")))
    else:
        for k, v in n.attrs:
            if v is not None:
                lines.append(f"{k}={_ex(v, tdt) if isinstance(v, ex.Expr) else _short(str(v))}")
    if n.dtype is not None:
        lines[0] += f" : {n.dtype}"
    return "\n".join(lines)


def to_dot(kernel: Kernel, stage: str | None = None) -> str:
    """DOT text for `kernel` (see the module docstring); `stage` (e.g. "after stitch")
    goes into the graph's label."""
    tdt = {b.name: b.dtype for b in (*kernel.shared, *kernel.params)}
    nodes = {}
    for n in kernel.nodes:
        nodes.setdefault(n.id, n)
    scopes = {nid: n for nid, n in nodes.items() if n.is_scope}
    referenced = {e.src for e in kernel.edges} | {e.dst for e in kernel.edges}

    # Which cluster each node is drawn in; scopes whose parent is broken go to the root.
    children: dict[str | None, list[Node]] = {}
    members: dict[str | None, list[Node]] = {}
    for n in nodes.values():
        parent = n.scope if n.scope in scopes else None
        if n.is_scope:
            # guard against cycles: a scope whose chain loops is drawn at the root
            seen, s = set(), n.scope
            while s in scopes and s not in seen:
                seen.add(s)
                s = scopes[s].scope
            if s is not None:
                parent = None
            children.setdefault(parent, []).append(n)
            if n.id in referenced:
                members.setdefault(n.id, []).append(n)
        else:
            members.setdefault(parent, []).append(n)

    out = [f"digraph {_q(kernel.name)} {{",
           "  graph [rankdir=TB, compound=true, fontname=\"Helvetica\", "
           f"label={_q(_graph_label(kernel, stage))}, labelloc=t];",
           "  node [fontname=\"Helvetica\", fontsize=10, style=filled];",
           "  edge [fontname=\"Helvetica\", fontsize=9];"]
    counter = [0]

    def emit(scope_id: str | None, indent: str):
        for n in members.get(scope_id, []):
            fam = n.family if n.family in FAMILY_SHAPES else "compute"
            out.append(f"{indent}{_q(n.id)} [label={_q(_node_label(n, tdt))}, "
                       f"shape={FAMILY_SHAPES[fam]}, fillcolor={_q(_FILL[fam])}];")
        for s in children.get(scope_id, []):
            counter[0] += 1
            kind = s.scope_kind or "?"
            label = f"{kind} {s.attr('var')} < {s.attr('extent')}   ({s.id})"
            out.append(f"{indent}subgraph {_q(f'cluster_{counter[0]}_{kind}')} {{")
            out.append(f"{indent}  label={_q(label)}; style=\"filled,rounded\"; "
                       f"fillcolor={_q(_SCOPE_FILL.get(kind, 'white'))}; color=\"grey40\";")
            if not members.get(s.id) and not children.get(s.id):
                out.append(f"{indent}  {_q('empty_' + s.id)} [label=\"\", shape=point, "
                           f"style=invis];")
            emit(s.id, indent + "  ")
            out.append(f"{indent}}}")

    emit(None, "  ")
    for nid in sorted(referenced - set(nodes)):
        out.append(f"  {_q(nid)} [label={_q(nid + ' (missing)')}, shape=box, style=dashed];")
    for e in kernel.edges:
        color = LEVEL_COLORS.get(e.level, "black")
        shape = "" if not e.shape else "[" + ", ".join(map(str, e.shape)) + "]"
        label = f"{e.dtype}{shape}" + (f" @{e.slot}" if e.slot else "")
        if e.level != "reg":
            label = f"{e.level} {label}"
        width = "2.0" if e.level == "global" else "1.4" if e.level == "shared" else "1.0"
        style = "" if e.level in LEVEL_COLORS else ", style=dashed"
        out.append(f"  {_q(e.src)} -> {_q(e.dst)} [color={_q(color)}, fontcolor={_q(color)}, "
                   f"penwidth={width}, label={_q(label)}{style}];")
    out.append(_legend())
    out.append("}")
    return "\n".join(out) + "\n"


def _graph_label(k: Kernel, stage: str | None = None) -> str:
    parts = [f"kernel {k.name}", *([stage] if stage else []), f"target={k.target}"]
    try:
        parts += [f"grid={k.grid}", f"block={k.block}", f"shared={k.shared_bytes}B"]
    except Exception:  # noqa: BLE001 - a malformed kernel still renders
        pass
    return "  ".join(parts)


def _legend() -> str:
    rows = "".join(
        f'<tr><td><font color="{LEVEL_COLORS[lvl]}">&#9473;&#9473;&#9654;</font></td>'
        f'<td align="left">{_html(LEVEL_LABELS[lvl])}</td></tr>'
        for lvl in ("global", "shared", "reg"))
    shapes = "".join(f'<tr><td>{_html(shape)}</td><td align="left">{_html(fam)}</td></tr>'
                     for fam, shape in FAMILY_SHAPES.items())
    return ("  legend [shape=plaintext, style=\"\", label=<<table border=\"1\" cellborder=\"0\" "
            "cellspacing=\"2\"><tr><td colspan=\"2\"><b>edges: memory level</b></td></tr>"
            f"{rows}<tr><td colspan=\"2\"><b>node shapes</b></td></tr>{shapes}</table>>];")
