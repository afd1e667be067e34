"""The text form of GIR kernels: `print_kernel` and its inverse `parse_kernel`.

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
import math
import numbers
import re
from typing import Any

from ..errors import ParseError
from . import dtypes as dt
from . import expr as ex
from .dtypes import DType
from .expr_text import Cursor, expr_to_text, parse_expr_at
from .gir import Buffer, Edge, Kernel, Node, SharedAlloc, make_kernel

__all__ = ["print_kernel", "parse_kernel", "format_value", "parse_value"]

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.$]*")
_ID = re.compile(r"%[A-Za-z0-9_.$\-]+")
_INT = re.compile(r"-?\d+")
_NUM = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
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


def parse_value(text: str, tensor_dtypes=None) -> Any:
    """The value `format_value` printed as `text`."""
    sc = _Scanner(text, 0, tensor_dtypes)
    v = sc.value()
    if not sc.at_end():
        sc.fail("end of value")
    return v


# ----------------------------------------------------------------------------- structure helpers

def _first_nodes(nodes) -> dict[str, Node]:
    out: dict[str, Node] = {}
    for n in nodes:
        out.setdefault(n.id, n)
    return out


def _chain(nodes: dict[str, Node], scope_id) -> list[Node] | None:
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


def _vector_shape(nodes: dict[str, Node], scope_id) -> tuple[int, ...] | None:
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


def _default_edge(nodes: dict[str, Node], src: str, dst: str, level: str):
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

def print_kernel(kernel: Kernel) -> str:
    """The text form of `kernel` (`parse_kernel` reads it back)."""
    return _Printer(kernel).run()


class _Printer:
    def __init__(self, kernel: Kernel):
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
            out.append(f"{_INDENT}shared {_word(s.name)}: {_dtype_text(s.dtype)}[{int(s.size)}]"
                       f"  # {nbytes} B")
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
            "move.global.reg", "move.shared.reg", "move.reg.reg"))
        lines.append(f"registers: {regs} value node{'s' * (regs != 1)}")
        return lines

    # -------------------------------------------------------------- nodes
    def depth(self, n: Node) -> tuple[int, bool]:
        if n.scope is None:
            return 0, True
        chain = _chain(self.nodes, n.scope)
        if chain is None:
            return 1, False
        return len(chain), True

    def node_line(self, n: Node, edge_ids: list[int], explicit_scope: bool) -> str:
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

    def operand(self, e: Edge, position: int | None) -> str:
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

    def special(self, n: Node) -> tuple[str | None, set[str], list[str]]:
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


# ----------------------------------------------------------------------------- scanner

class _Scanner(Cursor):
    """A cursor over one line of GIR text."""

    def __init__(self, text: str, pos: int = 0, tensor_dtypes=None, lineno: int | None = None):
        super().__init__(text, pos, lineno)
        self.tdt = tensor_dtypes

    def at_end(self) -> bool:
        self.ws()
        return self.pos >= len(self.text) or self.text[self.pos] == "#"

    def peek_keyword(self, kw: str) -> bool:
        self.ws()
        m = _WORD.match(self.text, self.pos)
        return bool(m) and m.group() == kw

    def keyword(self, kw: str) -> bool:
        if self.peek_keyword(kw):
            self.pos += len(kw)
            return True
        return False

    def string(self) -> str:
        try:
            value, end = json.JSONDecoder().raw_decode(self.text, self.pos)
        except json.JSONDecodeError as exc:
            self.error(f"bad string literal: {exc.msg}")
        if not isinstance(value, str):
            self.fail("a string")
        self.pos = end
        return value

    def word(self, what: str = "a name") -> str:
        self.ws()
        if self.text.startswith('"', self.pos):
            return self.string()
        m = _WORD.match(self.text, self.pos)
        if not m:
            self.fail(what)
        self.pos = m.end()
        return m.group()

    def bare_word(self, what: str = "a name") -> str:
        self.ws()
        m = _WORD.match(self.text, self.pos)
        if not m:
            self.fail(what)
        self.pos = m.end()
        return m.group()

    def node_id(self, what: str = "a node id (%...)") -> str:
        self.ws()
        if self.text.startswith('"', self.pos):
            return self.string()
        m = _ID.match(self.text, self.pos)
        if not m:
            self.fail(what)
        self.pos = m.end()
        return m.group()

    def integer(self, what: str = "an integer") -> int:
        self.ws()
        m = _INT.match(self.text, self.pos)
        if not m:
            self.fail(what)
        self.pos = m.end()
        return int(m.group())

    def int_list(self, what: str) -> tuple[int, ...]:
        self.expect("[", f"'[' opening {what}")
        values = []
        if not self.take("]"):
            values.append(self.integer(what))
            while self.take(","):
                values.append(self.integer(what))
            self.expect("]", f"']' closing {what}")
        return tuple(values)

    def dtype(self) -> DType:
        self.ws()
        at = self.pos
        name = self.word("a dtype")
        if name not in dt.BY_NAME:
            self.error(f"unknown dtype {name!r}; expected one of {', '.join(dt.BY_NAME)}", at)
        return dt.BY_NAME[name]

    def expr(self) -> ex.Expr:
        self.ws()
        try:
            e, end = parse_expr_at(self.text, self.pos, self.tdt)
        except ParseError as exc:
            if self.lineno is None:
                raise
            raise ParseError(f"line {self.lineno}, {exc}") from None
        self.pos = end
        return e

    def value(self) -> Any:
        self.ws()
        t, at = self.text, self.pos
        if t.startswith("`", at):
            end = t.find("`", at + 1)
            if end < 0:
                self.error("unterminated `expression`", at)
            sub = _Scanner(t[:end], at + 1, self.tdt, self.lineno)
            e = sub.expr()
            if not sub.at_end():
                sub.fail("'`' closing the expression")
            self.pos = end + 1
            return e
        if t.startswith('"', at):
            return self.string()
        if t.startswith("(", at):
            self.pos += 1
            items = []
            if self.take(")"):
                return ()
            while True:
                items.append(self.value())
                if self.take(")"):
                    return tuple(items)
                self.expect(",", "',' or ')' in a tuple")
                if self.take(")"):
                    return tuple(items)
        if t.startswith("-inf", at):
            self.pos += 4
            return -math.inf
        m = _NUM.match(t, at)
        if m:
            self.pos = m.end()
            s = m.group()
            return int(s) if _INT.fullmatch(s) else float(s)
        m = _WORD.match(t, at)
        if m:
            w = m.group()
            self.pos = m.end()
            if w == "none":
                return None
            if w in ("true", "false"):
                return w == "true"
            if w == "inf":
                return math.inf
            if w == "nan":
                return math.nan  # the shared object, so that a math.nan attr compares equal
            if w in dt.BY_NAME:
                return dt.BY_NAME[w]
            if w == "opaque":
                self.error("this value was a Python object the text form cannot express", at)
            self.error(f"unknown value {w!r} (strings are written in double quotes)", at)
        self.fail("a value (none, true, false, a number, a \"string\", a dtype, "
                  "an `expression` or a (tuple))")


# ----------------------------------------------------------------------------- parser

def parse_kernel(text: str) -> Kernel:
    """The kernel `print_kernel` printed as `text`."""
    return _KernelParser(text).run()


class _KernelParser:
    def __init__(self, text: str):
        self.lines = text.splitlines()
        self.name = None
        self.target = "gpu"
        self.params: list[Buffer] = []
        self.shared: list[SharedAlloc] = []
        self.meta: dict[str, Any] = {}
        self.nodes: list[Node] = []
        # (src, level, dtype|None, shape|None, slot|None, dst, position, lineno)
        self.raw_edges: list[tuple] = []
        self.edge_order: list[int] | None = None
        self.nest = _Nesting()

    @property
    def tdt(self):
        return {b.name: b.dtype for b in (*self.shared, *self.params)}

    def run(self) -> Kernel:
        body = False
        for lineno, line in enumerate(self.lines, 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            if "\t" in line[: len(line) - len(line.lstrip())]:
                raise ParseError(f"line {lineno}: indent with spaces, not tabs\n    {line}")
            sc = _Scanner(line, 0, self.tdt, lineno)
            sc.ws()
            indent = sc.pos
            if not body:
                if not sc.keyword("kernel"):
                    sc.fail("'kernel NAME target=...' as the first line")
                self.name = sc.word("the kernel name")
                if sc.keyword("target"):
                    sc.expect("=", "'=' after target")
                    self.target = sc.word("the target name")
                if not sc.at_end():
                    sc.fail("end of the kernel line")
                body = True
                continue
            if sc.peek('"') or sc.peek("%"):
                self.node_line(sc, indent)
            elif sc.keyword("param"):
                self.param_line(sc)
            elif sc.keyword("shared"):
                self.shared_line(sc)
            elif sc.keyword("meta"):
                key = sc.word("a meta key")
                sc.expect("=")
                self.meta[key] = sc.value()
            elif sc.peek("edge-order"):
                sc.pos += len("edge-order")
                order = []
                while not sc.at_end():
                    order.append(sc.integer("an edge index"))
                self.edge_order = order
            elif sc.keyword("edge"):
                self.edge_line(sc)
            else:
                sc.fail("a node line (%id = op ...), param, shared, meta, edge or edge-order")
            if not sc.at_end():
                sc.fail("end of line")
        if self.name is None:
            raise ParseError("no 'kernel' line: the text holds no kernel")
        return self.finish()

    # -------------------------------------------------------------- declarations
    def param_line(self, sc: _Scanner):
        name = sc.word("the parameter name")
        sc.expect(":", "':' after the parameter name")
        d = sc.dtype()
        shape = sc.int_list("the parameter shape")
        if not sc.keyword("strides"):
            sc.fail("'strides=[...]'")
        sc.expect("=")
        strides = sc.int_list("the strides")
        role = sc.word("the parameter role (in, out, inout or temp)")
        self.params.append(Buffer(name, d, shape, strides, role))

    def shared_line(self, sc: _Scanner):
        name = sc.word("the shared allocation name")
        sc.expect(":", "':' after the shared allocation name")
        d = sc.dtype()
        size = sc.int_list("the allocation size")
        if len(size) != 1:
            sc.error("a shared allocation has one size: name: dtype[size]")
        self.shared.append(SharedAlloc(name, d, size[0]))

    # -------------------------------------------------------------- nodes and edges
    def operand(self, sc: _Scanner):
        src = sc.node_id("an operand (%id)")
        level = "reg"
        sc.ws()
        if sc.peek('"'):
            level = sc.string()
        else:
            for w in _LEVEL_WORDS:
                if sc.peek_keyword(w):
                    sc.keyword(w)
                    level = w
                    break
        dtype = shape = slot = None
        if sc.take(":"):
            dtype = sc.dtype()
            if sc.peek("["):
                shape = sc.int_list("the operand's shape")
        if sc.take("@"):
            slot = sc.integer("the operand's slot")
        return src, level, dtype, shape, slot

    def edge_line(self, sc: _Scanner):
        src, level, dtype, shape, slot = self.operand(sc)
        sc.expect("->", "'->' in an edge line")
        dst = sc.node_id("the edge's destination")
        self.raw_edges.append((src, level, dtype, shape, slot, dst, None, sc.lineno))

    def node_line(self, sc: _Scanner, indent: int):
        if indent < 2 or indent % 2:
            sc.error(f"node lines are indented 2 spaces per scope level (found {indent} spaces)", 0)
        level = indent // 2 - 1
        node_id = sc.node_id()
        if sc.take("..."):  # reopens scope node_id after lines outside it
            self.nest.push(level, node_id, True)
            return
        sc.expect("=", "'=' after the node id or '...' after a scope id")
        op = sc.word("the op name")
        operands = []
        if sc.take("["):
            if not sc.take("]"):
                operands.append(self.operand(sc))
                while sc.take(","):
                    operands.append(self.operand(sc))
                sc.expect("]", "',' or ']' in the operand list")
        attrs: dict[str, Any] = {}
        if not self._at_tail(sc):
            spec = _SPECIAL.get(op)
            if spec is None:
                sc.fail(f"': dtype', '{{attrs}}' or end of line ({op} has no special syntax)")
            kind, _required, optional = spec
            attrs.update({key: None for key in optional})
            getattr(self, f"_sp_{kind}")(sc, attrs)
        dtype = None
        if sc.take(":"):
            dtype = sc.dtype()
        if sc.take("{"):
            if not sc.take("}"):
                while True:
                    if sc.take("~"):
                        attrs.pop(sc.word("an attr name"), None)
                    else:
                        key = sc.word("an attr name")
                        sc.expect("=", f"'=' after attr {key}")
                        attrs[key] = sc.value()
                    if sc.take("}"):
                        break
                    sc.expect(",", "',' or '}' in the attrs")
        explicit = None
        if sc.keyword("in"):
            explicit = sc.node_id("the scope id after 'in'")
        if explicit is None:
            ok, scope = self.nest.implied(level)
            if not ok:
                sc.error("this line is indented under a line that is not a scope "
                         "(and names no scope with 'in %id')", 0)
        else:
            scope = explicit
        self.nest.push(level, node_id, op.startswith("parallel."))
        self.nodes.append(Node(node_id, op, scope, dtype, tuple(sorted(attrs.items()))))
        for pos, (src, lvl, edtype, shape, slot) in enumerate(operands):
            self.raw_edges.append((src, lvl, edtype, shape, slot, node_id, pos, sc.lineno))

    @staticmethod
    def _at_tail(sc: _Scanner) -> bool:
        if sc.at_end() or sc.peek(":") or sc.peek("{"):
            return True
        if sc.peek_keyword("in"):
            rest = sc.text[sc.pos + 2:]
            stripped = rest.lstrip(" ")
            return rest != stripped and stripped[:1] in ('%', '"')
        return False

    # -------------------------------------------------------------- special forms
    def _sp_scope(self, sc, attrs):
        attrs["var"] = sc.bare_word("the scope variable")
        sc.expect("<", "'<' between the scope variable and its extent")
        attrs["extent"] = sc.integer("the scope extent")

    def _sp_mem(self, sc, attrs):
        attrs["buffer"] = sc.bare_word("the buffer name")

    def _sp_const(self, sc, attrs):
        attrs["value"] = sc.expr()

    def _sp_index(self, sc, attrs):
        attrs["expr"] = sc.expr()

    def _sp_reduce(self, sc, attrs):
        attrs["combiner"] = sc.bare_word("the combiner")
        if not sc.keyword("over"):
            sc.fail("'over %scope'")
        attrs["over"] = sc.node_id("the id of the reduced scope")
        if sc.keyword("where"):
            attrs["mask"] = sc.expr()

    def _access(self, sc, attrs):
        attrs["buffer"] = sc.bare_word("the buffer name")
        sc.expect("[", "'[' before the offset")
        attrs["offset"] = sc.expr()
        sc.expect("]", "']' after the offset")
        if sc.keyword("if"):
            attrs["pred"] = sc.expr()

    def _sp_load(self, sc, attrs):
        self._access(sc, attrs)
        if sc.keyword("else"):
            attrs["other"] = sc.expr()

    def _sp_store(self, sc, attrs):
        self._access(sc, attrs)

    def _sp_shuffle(self, sc, attrs):
        attrs["mode"] = sc.bare_word("the shuffle mode (bfly, down, idx)")
        attrs["lane"] = sc.expr()

    # -------------------------------------------------------------- assembly
    def finish(self) -> Kernel:
        nodes = _first_nodes(self.nodes)
        edges = []
        for src, level, dtype, shape, slot, dst, pos, lineno in self.raw_edges:
            d_dtype, d_shape = _default_edge(nodes, src, dst, level)
            if dtype is None:
                dtype = d_dtype
                if dtype is None:
                    raise ParseError(f"line {lineno}: operand {src} needs an explicit dtype "
                                     f"(':dtype'): its producer does not give one")
            if shape is None:
                shape = d_shape
                if shape is None:
                    raise ParseError(f"line {lineno}: operand {src} needs an explicit shape "
                                     f"(':dtype[...]'): its producer's scopes do not give one")
            if slot is None:
                if pos is None:
                    raise ParseError(f"line {lineno}: an edge line needs '@slot'")
                slot = pos
            edges.append(Edge(src, dst, slot, level, dtype, shape))
        if self.edge_order is not None:
            if sorted(self.edge_order) != list(range(len(edges))):
                raise ParseError(f"edge-order lists {len(self.edge_order)} indices; expected a "
                                 f"permutation of 0..{len(edges) - 1}")
            edges = [edges[j] for j in self.edge_order]
        return make_kernel(self.name, self.params, self.shared, self.nodes, edges, self.target,
                           self.meta)
