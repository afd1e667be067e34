"""Printing GIR kernels in their text form: `print_kernel` (its inverse is
`gir_parse.parse_kernel`) and `format_value`, plus the grammar tables both share.
It reads kernels, nodes and edges through their attributes and does not import
`gir`, which imports it for `Kernel.__str__` (the `nodes` dicts below map node ids
to `gir.Node`s).

Example (a row sum; comments after `#` are informative and ignored by the parser):

    kernel rowsum target=gpu  # grid=64 block=128 shared=16B
      # global (DRAM): reads x (1 load node); writes out (1 store node)
      # shared: red (1 store, 1 load); 1 barrier
      # registers: 23 value nodes
      param x: float32[64, 1000] strides=[1000, 1] in
      param out: float32[64] strides=[1] out
      shared red: float32[4]  # 16 B
      meta schedule="row-reduce"
      %0 = mem.global x : float32
      %1 = mem.global out : float32
      %2 = mem.shared red : float32
      %3 = parallel.grid g < 64
        %4 = parallel.block t < 128
          %5 = parallel.serial i < 8
            %6 = move.global.reg [%0 global] x[((g * 1000) + ((i * 128) + t))] if lt(((i * 128) + t), 1000) else 0.0:float32 : float32
          %7 = compute.reduce [%6] sum over %5 where lt(((i * 128) + t), 1000) : float32
          %8 = move.reg.reg [%7] bfly 16 : float32
          %9 = compute.add [%7, %8] : float32
          ...
          %18 = move.reg.shared [%2 shared, %17] red[(t // 32)] if eq((t % 32), 0) : float32
          %19 = sync.block [%18 shared]
          %20 = move.shared.reg [%19 shared] red[(t % 32)] if lt((t % 32), 4) else 0.0:float32 : float32
          ...
          %31 = move.reg.global [%1 global, %30] out[g] if eq(t, 0) : float32

Layout of a node line (indented two spaces per enclosing scope):

    ID = OP [OPERANDS] SPECIAL : DTYPE {ATTR=VALUE, ...} in SCOPE

* OPERANDS are the edges into the node, in the kernel's edge order:
  `SRC[ LEVEL][:DTYPE[SHAPE]][@SLOT]`. The level is written unless it is `reg`
  (so every `global` or `shared` word marks bytes that live in DRAM or shared
  memory); the dtype only where it differs from the producer's, the shape
  (`[4]`, `[]`) only where it differs from the producer's vector shape (memory
  edges: `[]`), the slot only where it differs from the operand's position.
* SPECIAL is the op's own syntax for its usual attrs: scopes `var < extent`;
  `mem.*` the buffer; `compute.const` its value; `compute.index` its expression;
  `compute.reduce` `combiner over %scope [where mask]`; loads
  `buf[offset] [if pred] [else other]`; stores `buf[offset] [if pred]`;
  shuffles `mode lane`. Optional attrs that are None are left out.
* `{...}` holds every other attr as `key=value`: `none`, `true`/`false`, ints,
  floats, `"strings"` (JSON), dtype names, `` `expressions` `` and `(tuples,)`.
  `~key` says that a usual attr is absent altogether (rather than None).
* A node's scope is the nearest line above it at one level less indentation.
  Where the emission order leaves a scope and comes back to it, a line
  `%scope ...` reopens it; `in SCOPE` is written only where neither can say it
  (a node whose scope chain is broken).
* Edges into nodes that do not exist are written `edge OPERAND -> DST`; an
  `edge-order` line restores an edge order the node lines do not imply.
"""
from __future__ import annotations

import json
import numbers
import re
from typing import Any

from . import expr as ex
from .dtypes import DType
from .expr_text import expr_to_text

__all__ = ["print_kernel", "format_value"]

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.$]*")
_ID = re.compile(r"%[A-Za-z0-9_.$\-]+")
_LEVEL_WORDS = ("global", "shared", "reg")
_INDENT = "  "

# op -> (kind, required attrs, optional attrs)
_SPECIAL: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    **{f"parallel.{k}": ("scope", ("var", "extent"), ()) for k in
       ("grid", "block", "serial", "unroll", "vector")},
    "mem.global": ("mem", ("buffer",), ()),
    "mem.shared": ("mem", ("buffer",), ()),
    "compute.const": ("const", ("value",), ()),
    "compute.index": ("index", ("expr",), ()),
    "compute.reduce": ("reduce", ("combiner", "over"), ("mask",)),
    "move.global.reg": ("load", ("buffer", "offset"), ("pred", "other")),
    "move.shared.reg": ("load", ("buffer", "offset"), ("pred", "other")),
    "move.reg.global": ("store", ("buffer", "offset"), ("pred",)),
    "move.reg.shared": ("store", ("buffer", "offset"), ("pred",)),
    "move.reg.reg": ("shuffle", ("mode", "lane"), ()),
}


# ----------------------------------------------------------------------------- small printers

def _word(s: str) -> str:
    return s if isinstance(s, str) and _WORD.fullmatch(s) else json.dumps(str(s))


def _idtext(s: str) -> str:
    return s if isinstance(s, str) and _ID.fullmatch(s) else json.dumps(str(s))


def _dtype_text(d) -> str:
    return d.name if isinstance(d, DType) else json.dumps(str(d))


def _ints(values) -> str:
    return "[" + ", ".join(str(int(v)) for v in values) + "]"


def format_value(v: Any, tensor_dtypes=None) -> str:
    """The text of an attr or meta value (see the module docstring)."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, numbers.Integral):
        return str(int(v))
    if isinstance(v, numbers.Real):
        return repr(float(v))
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, DType):
        return v.name
    if isinstance(v, ex.Expr):
        return "`" + expr_to_text(v, tensor_dtypes) + "`"
    if isinstance(v, (tuple, list)):
        items = [format_value(x, tensor_dtypes) for x in v]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
    return "opaque " + json.dumps(repr(v))


def _expressible(v: Any) -> bool:
    if v is None or isinstance(v, (bool, numbers.Real, str, DType, ex.Expr)):
        return True
    if isinstance(v, tuple):
        return all(_expressible(x) for x in v)
    return False


# ----------------------------------------------------------------------------- structure helpers

def _first_nodes(nodes) -> dict:
    out: dict = {}
    for n in nodes:
        out.setdefault(n.id, n)
    return out


def _chain(nodes: dict, scope_id) -> list | None:
    """Scopes around `scope_id`, outermost first; None if the chain is broken."""
    chain, seen = [], set()
    while scope_id is not None:
        s = nodes.get(scope_id) if isinstance(scope_id, str) else None
        if s is None or not s.is_scope or scope_id in seen:
            return None
        seen.add(scope_id)
        chain.append(s)
        scope_id = s.scope
    return chain[::-1]


def _vector_shape(nodes: dict, scope_id) -> tuple[int, ...] | None:
    chain = _chain(nodes, scope_id)
    if chain is None:
        return None
    shape = []
    for s in chain:
        if s.scope_kind == "vector":
            e = s.attr("extent")
            if not isinstance(e, int) or isinstance(e, bool):
                return None
            shape.append(e)
    return tuple(shape)


def _default_edge(nodes: dict, src: str, dst: str, level: str):
    """The dtype and shape an operand has when its text does not say."""
    s, d = nodes.get(src), nodes.get(dst)
    dtype = s.dtype if s is not None else None
    if dtype is None and level != "reg" and d is not None:
        dtype = d.dtype
    if level != "reg":
        shape = ()
    else:
        shape = _vector_shape(nodes, s.scope) if s is not None else None
    return dtype, shape


class _Nesting:
    """Which scope the indentation of a node line implies."""

    def __init__(self):
        self.last: dict[int, tuple[str, bool]] = {}

    def implied(self, level: int):
        if level == 0:
            return True, None
        entry = self.last.get(level - 1)
        if entry is None or not entry[1]:
            return False, None
        return True, entry[0]

    def push(self, level: int, node_id: str, is_scope: bool):
        for k in [k for k in self.last if k >= level]:
            del self.last[k]
        self.last[level] = (node_id, is_scope)


# ----------------------------------------------------------------------------- printer

def print_kernel(kernel) -> str:
    """The text form of the `gir.Kernel` `kernel` (`gir_parse.parse_kernel` reads it back)."""
    return _Printer(kernel).run()


class _Printer:
    def __init__(self, kernel):
        self.k = kernel
        self.nodes = _first_nodes(kernel.nodes)
        self.tdt = {b.name: b.dtype for b in (*kernel.shared, *kernel.params)}

    def expr(self, e) -> str:
        return expr_to_text(e, self.tdt)

    def run(self) -> str:
        k = self.k
        out = [f"kernel {_word(k.name)} target={_word(k.target)}  # {self.launch_summary()}"]
        out += [f"{_INDENT}# {line}" for line in self.traffic_summary()]
        for b in k.params:
            out.append(f"{_INDENT}param {_word(b.name)}: {_dtype_text(b.dtype)}{_ints(b.shape)} "
                       f"strides={_ints(b.strides)} {_word(b.role)}")
        for s in k.shared:
            nbytes = s.size * s.dtype.itemsize if isinstance(s.dtype, DType) else "?"
            align = f" align={int(s.align)}" if s.align != type(s).align else ""  # the default
            out.append(f"{_INDENT}shared {_word(s.name)}: {_dtype_text(s.dtype)}[{int(s.size)}]"
                       f"{align}  # {nbytes} B")
        for key, value in k.meta:
            if not _expressible(value):
                out.append(f"{_INDENT}# meta {key}: {value!r}".replace("\n", " "))
            else:
                out.append(f"{_INDENT}meta {_word(key)}={format_value(value, self.tdt)}")

        by_dst: dict[str, list[int]] = {}
        for i, e in enumerate(k.edges):
            by_dst.setdefault(e.dst, []).append(i)
        order: list[int] = []
        nest = _Nesting()
        printed_ids: set[str] = set()
        for n in k.nodes:
            depth, chain_ok = self.depth(n)
            ok, implied = nest.implied(depth)
            if chain_ok and (not ok or implied != n.scope):
                # Reopen the scopes the indentation no longer says we are in.
                chain = _chain(self.nodes, n.scope)
                first = next(lvl for lvl, s in enumerate(chain)
                             if nest.last.get(lvl) != (s.id, True))
                for lvl in range(first, len(chain)):
                    s = chain[lvl]
                    what = f"{s.op} {self._sp_scope(s.attr_map) or ''}".rstrip()
                    out.append(_INDENT * (1 + lvl) + f"{_idtext(s.id)} ...  # continued: {what}")
                    nest.push(lvl, s.id, True)
                ok, implied = nest.implied(depth)
            explicit = not chain_ok or not ok or implied != n.scope
            nest.push(depth, n.id, n.is_scope)
            edge_ids = [] if n.id in printed_ids else by_dst.get(n.id, [])
            printed_ids.add(n.id)
            order += edge_ids
            out.append(_INDENT * (1 + depth) + self.node_line(n, edge_ids, explicit))
        for i, e in enumerate(k.edges):
            if e.dst not in self.nodes:
                order.append(i)
                out.append(f"{_INDENT}edge {self.operand(e, None)} -> {_idtext(e.dst)}")
        if order != list(range(len(k.edges))):
            inverse = [0] * len(order)
            for j, i in enumerate(order):
                inverse[i] = j
            out.append(f"{_INDENT}edge-order " + " ".join(map(str, inverse)))
        return "\n".join(out) + "\n"

    # -------------------------------------------------------------- summaries
    def launch_summary(self) -> str:
        k = self.k
        parts = []
        for kind in ("grid", "block"):
            s = k.find_scope(kind)
            if s is not None:
                parts.append(f"{kind}={s.attr('extent')}")
        try:
            parts.append(f"shared={k.shared_bytes}B")
        except Exception:  # noqa: BLE001 - a malformed alloc must not stop a dump
            pass
        return " ".join(parts) or "no launch scopes"

    def traffic_summary(self) -> list[str]:
        k = self.k
        lines = []
        counts: dict[str, dict[str, int]] = {}
        for n in k.nodes:
            if n.op in ("move.global.reg", "move.reg.global", "move.shared.reg", "move.reg.shared"):
                buf = n.attr("buffer")
                kind = "load" if n.op.endswith(".reg") else "store"
                counts.setdefault(str(buf), {}).setdefault(kind, 0)
                counts[str(buf)][kind] += 1
            elif n.op in ("move.global.shared", "move.shared.frag"):  # cp.async, ldmatrix
                for buf, kind in ((n.attr("buffer"), "load"), (n.attr("dst"), "store")):
                    if buf is not None:
                        counts.setdefault(str(buf), {}).setdefault(kind, 0)
                        counts[str(buf)][kind] += 1
        reads = [f"{b} ({c['load']} load node{'s' * (c['load'] != 1)})"
                 for b, c in counts.items() if "load" in c and any(p.name == b for p in k.params)]
        writes = [f"{b} ({c['store']} store node{'s' * (c['store'] != 1)})"
                  for b, c in counts.items() if "store" in c and any(p.name == b for p in k.params)]
        if k.params:
            lines.append("global (DRAM): reads " + (", ".join(reads) or "nothing")
                         + "; writes " + (", ".join(writes) or "nothing"))
        if k.shared:
            syncs = sum(1 for n in k.nodes if n.op == "sync.block")
            parts = []
            for s in k.shared:
                c = counts.get(s.name, {})
                parts.append(f"{s.name} ({c.get('store', 0)} store, {c.get('load', 0)} load)")
            lines.append("shared: " + ", ".join(parts) + f"; {syncs} barrier{'s' * (syncs != 1)}")
        regs = sum(1 for n in k.nodes if n.family == "compute" or n.op in (
            "move.global.reg", "move.shared.reg", "move.reg.reg", "move.shared.frag"))
        lines.append(f"registers: {regs} value node{'s' * (regs != 1)}")
        return lines

    # -------------------------------------------------------------- nodes
    def depth(self, n) -> tuple[int, bool]:
        if n.scope is None:
            return 0, True
        chain = _chain(self.nodes, n.scope)
        if chain is None:
            return 1, False
        return len(chain), True

    def node_line(self, n, edge_ids: list[int], explicit_scope: bool) -> str:
        parts = [f"{_idtext(n.id)} = {_word(n.op)}"]
        if edge_ids:
            ops = [self.operand(self.k.edges[i], pos) for pos, i in enumerate(edge_ids)]
            parts.append("[" + ", ".join(ops) + "]")
        special, consumed, missing = self.special(n)
        if special:
            parts.append(special)
        if n.dtype is not None:
            parts.append(f": {_dtype_text(n.dtype)}")
        generic = [f"{_word(key)}={format_value(v, self.tdt)}" for key, v in n.attrs
                   if key not in consumed]
        generic += [f"~{_word(key)}" for key in missing]
        if generic:
            parts.append("{" + ", ".join(generic) + "}")
        if explicit_scope and n.scope is not None:
            parts.append(f"in {_idtext(n.scope)}")
        return " ".join(parts)

    def operand(self, e, position: int | None) -> str:
        s = _idtext(e.src)
        if e.level != "reg":
            s += " " + (e.level if e.level in _LEVEL_WORDS else json.dumps(str(e.level)))
        d_dtype, d_shape = _default_edge(self.nodes, e.src, e.dst, e.level)
        if e.shape != d_shape or d_shape is None:
            s += f":{_dtype_text(e.dtype)}{_ints(e.shape)}"
        elif e.dtype != d_dtype:
            s += f":{_dtype_text(e.dtype)}"
        if position is None or e.slot != position:
            s += f"@{int(e.slot)}"
        return s

    def special(self, n) -> tuple[str | None, set[str], list[str]]:
        spec = _SPECIAL.get(n.op)
        if spec is None:
            return None, set(), []
        kind, required, optional = spec
        attrs = n.attr_map
        if any(key not in attrs for key in required):
            return None, set(), []
        text = getattr(self, f"_sp_{kind}")(attrs)
        if text is None:
            return None, set(), []
        missing = [key for key in optional if key not in attrs]
        return text, set(required) | set(optional), missing

    def _sp_scope(self, a):
        var, extent = a.get("var"), a.get("extent")
        if not (isinstance(var, str) and _WORD.fullmatch(var)) or type(extent) is not int:
            return None
        return f"{var} < {extent}"

    def _sp_mem(self, a):
        b = a["buffer"]
        return b if isinstance(b, str) and _WORD.fullmatch(b) else None

    def _sp_const(self, a):
        return self.expr(a["value"]) if isinstance(a["value"], ex.Expr) else None

    def _sp_index(self, a):
        return self.expr(a["expr"]) if isinstance(a["expr"], ex.Expr) else None

    def _sp_reduce(self, a):
        comb, over, mask = a["combiner"], a["over"], a.get("mask")
        if not (isinstance(comb, str) and _WORD.fullmatch(comb)) or not isinstance(over, str):
            return None
        if mask is not None and not isinstance(mask, ex.Expr):
            return None
        s = f"{comb} over {_idtext(over)}"
        return s + (f" where {self.expr(mask)}" if mask is not None else "")

    def _access(self, a):
        b, off, pred = a["buffer"], a["offset"], a.get("pred")
        if not (isinstance(b, str) and _WORD.fullmatch(b)) or not isinstance(off, ex.Expr):
            return None
        if pred is not None and not isinstance(pred, ex.Expr):
            return None
        s = f"{b}[{self.expr(off)}]"
        return s + (f" if {self.expr(pred)}" if pred is not None else "")

    def _sp_load(self, a):
        s = self._access(a)
        other = a.get("other")
        if s is None or (other is not None and not isinstance(other, ex.Expr)):
            return None
        return s + (f" else {self.expr(other)}" if other is not None else "")

    def _sp_store(self, a):
        return self._access(a)

    def _sp_shuffle(self, a):
        mode, lane = a["mode"], a["lane"]
        if not (isinstance(mode, str) and _WORD.fullmatch(mode)) or not isinstance(lane, ex.Expr):
            return None
        return f"{mode} {self.expr(lane)}"
