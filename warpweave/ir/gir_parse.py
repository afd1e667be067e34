"""Reading GIR kernels back from their text form (the inverse of `gir_text`):
`parse_kernel` and `parse_value`. The grammar is described in `gir_text`."""
from __future__ import annotations

import json
import math
import re
from typing import Any

from ..errors import ParseError
from . import dtypes as dt
from . import expr as ex
from .dtypes import DType
from .expr_text import Cursor, parse_expr_at
from .gir import SHARED_ALIGN, Buffer, Edge, Kernel, Node, SharedAlloc, make_kernel
from .gir_text import _ID, _LEVEL_WORDS, _SPECIAL, _WORD, _default_edge, _first_nodes, _Nesting

__all__ = ["parse_kernel", "parse_value"]

_INT = re.compile(r"-?\d+")
_NUM = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


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

def parse_value(text: str, tensor_dtypes=None) -> Any:
    """The value `format_value` printed as `text`."""
    sc = _Scanner(text, 0, tensor_dtypes)
    v = sc.value()
    if not sc.at_end():
        sc.fail("end of value")
    return v


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
        align = SHARED_ALIGN
        sc.ws()
        if sc.keyword("align"):
            sc.expect("=", "'=' after align")
            align = sc.integer("the alignment")
        self.shared.append(SharedAlloc(name, d, size[0], align))

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
