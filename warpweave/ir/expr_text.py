"""Reading expressions back from their text form (the inverse of `expr.to_text`).

Grammar (whitespace between tokens is free, except that a `:dtype` suffix must
follow its name or number directly):

    expr     := term (("+" | "-") term)*
    term     := operand (("*" | "//" | "%") operand)*
    operand  := "(" expr ")"
              | number [":" dtype]        -- bare integer: int64; `1.5:float32`,
              | ("inf" | "-inf" | "nan") ":" dtype          `-0.0:float64`, ...
              | "true" | "false"
              | "cast" "<" dtype ">" "(" expr ")"
              | "select" "(" expr "," expr "," expr ")"
              | op "(" expr ["," expr] ")"           -- unary and binary ops
              | combiner "(" expr "over" name "<" int ("," name "<" int)* ")"
              | name [":" dtype] "[" expr ("," expr)* "]"   -- a load
              | name [":" dtype]                     -- a variable (int64 if bare)

Infix operators bind as usual (`*`, `//`, `%` tighter than `+`, `-`, all
left-associative); `to_text` parenthesizes every infix operation, so its output
reads back exactly: `parse_expr(to_text(e)) == e`.

A load needs the dtype of its tensor: pass `tensor_dtypes` (a mapping from tensor
name to `DType`), or write the dtype after the name (`T:float32[i, j]`, the form
`expr_to_text(e, tensor_dtypes)` prints for tensors the mapping does not give).
"""
from __future__ import annotations

import re
from typing import Mapping

from ..errors import DTypeError, IRError, ParseError
from . import dtypes as dt
from . import expr as ex
from .dtypes import DType

__all__ = ["parse_expr", "parse_expr_at", "expr_to_text"]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.$]*")
_NUMBER = re.compile(r"(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_WS = re.compile(r"\s*")
_INFIX_TEXT = {"+": "add", "-": "sub", "*": "mul", "//": "floordiv", "%": "mod"}
_OP_TEXT = {v: k for k, v in _INFIX_TEXT.items()}
_KEYWORDS = ("true", "false")

TensorDTypes = Mapping[str, DType] | None


# ----------------------------------------------------------------------------- printing

def expr_to_text(root: ex.Expr, tensor_dtypes: TensorDTypes = None) -> str:
    """`expr.to_text`, except that a load whose tensor dtype `tensor_dtypes` does not
    give (or gives differently) is written `T:dtype[...]`, so that it reads back
    without a mapping."""
    typed = [ld for ld in ex.loads(root)
             if tensor_dtypes is None or tensor_dtypes.get(ld.tensor) != ld.dtype]
    if not typed:
        return ex.to_text(root)
    memo: dict[ex.Expr, str] = {}
    for e in ex.postorder(root):
        c = [memo[x] for x in e.children]
        if isinstance(e, ex.Load):
            name = e.tensor
            if tensor_dtypes is None or tensor_dtypes.get(e.tensor) != e.dtype:
                name = f"{name}:{e.dtype}"
            memo[e] = f"{name}[{', '.join(c)}]"
        elif isinstance(e, ex.Binary) and e.op in _OP_TEXT:
            memo[e] = f"({c[0]} {_OP_TEXT[e.op]} {c[1]})"
        elif isinstance(e, (ex.Unary, ex.Binary)):
            memo[e] = f"{e.op}({', '.join(c)})"
        elif isinstance(e, ex.Select):
            memo[e] = f"select({', '.join(c)})"
        elif isinstance(e, ex.Cast):
            memo[e] = f"cast<{e.dtype}>({c[0]})"
        elif isinstance(e, ex.Reduce):
            axes = ", ".join(f"{a.name}<{n}" for a, n in zip(e.axes, e.extents))
            memo[e] = f"{e.combiner}({c[0]} over {axes})"
        else:  # leaves print the same either way
            memo[e] = ex.to_text(e)
    return memo[root]


# ----------------------------------------------------------------------------- parsing

def parse_expr(text: str, tensor_dtypes: TensorDTypes = None) -> ex.Expr:
    """The expression `text` spells (see the module docstring for the grammar)."""
    p = _Parser(text, 0, tensor_dtypes)
    e = p.expr()
    p.ws()
    if p.pos != len(text):
        p.fail("end of expression")
    return e


def parse_expr_at(text: str, pos: int = 0,
                  tensor_dtypes: TensorDTypes = None) -> tuple[ex.Expr, int]:
    """Parse the longest expression starting at `pos`; returns it and the position
    where the text after it begins (whitespace after it may be consumed)."""
    p = _Parser(text, pos, tensor_dtypes)
    e = p.expr()
    return e, p.pos


class Cursor:
    """A position in one line of text, with the scanning steps parsers share."""

    def __init__(self, text: str, pos: int = 0, lineno: int | None = None):
        self.text = text
        self.pos = pos
        self.lineno = lineno

    def where(self, at: int) -> str:
        prefix = f"line {self.lineno}, " if self.lineno is not None else ""
        return f"{prefix}column {at + 1}"

    def error(self, message: str, at: int | None = None):
        at = self.pos if at is None else at
        line = self.text.replace("\n", " ")
        raise ParseError(f"{self.where(at)}: {message}\n    {line}\n    {' ' * at}^")

    def fail(self, expected: str, at: int | None = None):
        at = self.pos if at is None else at
        rest = self.text[at:at + 16]
        self.error(f"expected {expected}, found {rest!r}" if rest else
                   f"expected {expected}, found end of text", at)

    def ws(self):
        self.pos = _WS.match(self.text, self.pos).end()

    def peek(self, s: str) -> bool:
        self.ws()
        return self.text.startswith(s, self.pos)

    def take(self, s: str) -> bool:
        if self.peek(s):
            self.pos += len(s)
            return True
        return False

    def expect(self, s: str, what: str | None = None):
        if not self.take(s):
            self.fail(what or repr(s))


class _Parser(Cursor):
    def __init__(self, text: str, pos: int, tensor_dtypes: TensorDTypes):
        super().__init__(text, pos)
        self.tensor_dtypes = tensor_dtypes

    def name(self, what: str = "a name") -> str:
        self.ws()
        m = _NAME.match(self.text, self.pos)
        if not m:
            self.fail(what)
        self.pos = m.end()
        return m.group()

    def dtype(self) -> DType:
        start = self.pos
        m = _NAME.match(self.text, self.pos)
        if not m or m.group() not in dt.BY_NAME:
            self.fail("a dtype (" + ", ".join(dt.BY_NAME) + ")", start)
        self.pos = m.end()
        return dt.BY_NAME[m.group()]

    def int_literal(self, what: str = "an integer") -> int:
        self.ws()
        m = re.compile(r"-?\d+").match(self.text, self.pos)
        if not m:
            self.fail(what)
        self.pos = m.end()
        return int(m.group())

    def build(self, at: int, fn, *args):
        try:
            return fn(*args)
        except (DTypeError, IRError) as exc:
            if isinstance(exc, ParseError):
                raise
            self.error(str(exc), at)

    # -------------------------------------------------------------- grammar
    def expr(self) -> ex.Expr:
        a = self.term()
        while True:
            self.ws()
            at = self.pos
            if self.text.startswith("+", at):
                op = "add"
            elif self.text.startswith("-", at):
                op = "sub"
            else:
                return a
            self.pos += 1
            b = self.term()
            a = self.build(at, ex.Binary, op, a, b)

    def term(self) -> ex.Expr:
        a = self.operand()
        while True:
            self.ws()
            at = self.pos
            if self.text.startswith("//", at):
                op, n = "floordiv", 2
            elif self.text.startswith("*", at):
                op, n = "mul", 1
            elif self.text.startswith("%", at):
                op, n = "mod", 1
            else:
                return a
            self.pos += n
            b = self.operand()
            a = self.build(at, ex.Binary, op, a, b)

    def operand(self) -> ex.Expr:
        self.ws()
        start = self.pos
        text = self.text
        if start >= len(text):
            self.fail("an operand")
        ch = text[start]
        if ch == "(":
            self.pos += 1
            e = self.expr()
            self.expect(")", "')' or an infix operator")
            return e
        if ch == "-" or ch.isdigit() or (ch == "." and text[start + 1:start + 2].isdigit()):
            return self.number()
        m = _NAME.match(text, start)
        if not m:
            self.fail("an operand (a name, a number, or '(')")
        word = m.group()
        self.pos = m.end()
        if word in ("inf", "nan") and text.startswith(":", self.pos):
            self.pos = start
            return self.number()
        if word in _KEYWORDS:
            value = word == "true"
            if text.startswith(":", self.pos):
                self.pos += 1
                d = self.dtype()
                return self.build(start, ex.Const, value, d)
            return ex.Const(value, dt.bool_)
        if word == "cast" and self.peek("<"):
            self.pos += 1
            self.ws()
            d = self.dtype()
            self.expect(">")
            self.expect("(")
            a = self.expr()
            self.expect(")", "')' closing cast")
            return self.build(start, ex.Cast, a, d)
        if word == "select" and self.peek("("):
            self.pos += 1
            c = self.expr()
            self.expect(",", "',' after the select condition")
            a = self.expr()
            self.expect(",", "',' after the select's first branch")
            b = self.expr()
            self.expect(")", "')' closing select")
            return self.build(start, ex.Select, c, a, b)
        is_call = word in ex.UNARY_OPS or word in ex.BINARY_OPS or word in ex.COMBINERS
        if is_call and self.peek("("):
            return self.call(word, start)
        dtype = None
        if text.startswith(":", self.pos):
            self.pos += 1
            dtype = self.dtype()
        if self.peek("["):
            return self.load(word, dtype, start)
        return ex.Var(word, dtype if dtype is not None else dt.INDEX)

    def number(self) -> ex.Expr:
        start = self.pos
        text = self.text
        neg = text.startswith("-", start)
        p = start + 1 if neg else start
        if text.startswith(("inf", "nan"), p) and not _NAME.match(text, p).group()[3:]:
            body = text[p:p + 3]
            p += 3
            is_int = False
        else:
            m = _NUMBER.match(text, p)
            if not m:
                self.fail("a number", start)
            body = m.group()
            p = m.end()
            is_int = body.isdigit()
        if _NAME.match(text, p) or text.startswith(".", p):
            self.fail("a number", start)
        literal = ("-" if neg else "") + body
        self.pos = p
        if text.startswith(":", p):
            self.pos += 1
            d = self.dtype()
        elif is_int:
            d = dt.INDEX
        elif body in ("inf", "nan"):
            self.fail(f"':dtype' after {literal}")
        else:
            d = dt.float64
        if d.is_float:
            value = float(literal)
        elif is_int:
            value = int(literal)
        else:
            self.error(f"{literal} is not a valid {d} value", start)
        if d.is_bool and value not in (0, 1):
            self.error(f"{literal} is not a valid bool value", start)
        return ex.Const(value, d)

    def call(self, op: str, start: int) -> ex.Expr:
        self.expect("(")
        a = self.expr()
        self.ws()
        if op in ex.COMBINERS or op in ("max", "min"):
            m = _NAME.match(self.text, self.pos)
            if m and m.group() == "over":
                if op not in ex.COMBINERS:
                    self.error(f"{op} is not a reduction combiner", start)
                self.pos = m.end()
                axes, extents = [], []
                while True:
                    axes.append(ex.Var(self.name("a reduce axis name")))
                    self.expect("<", "'<' after the reduce axis")
                    extents.append(self.int_literal("the extent of the reduce axis"))
                    if not self.take(","):
                        break
                self.expect(")", "')' closing the reduction")
                return self.build(start, ex.Reduce, op, a, axes, extents)
            if op not in ex.UNARY_OPS and op not in ex.BINARY_OPS:
                self.fail(f"'over' in the {op} reduction")
        if op in ex.UNARY_OPS:
            self.expect(")", f"')' ({op} takes one operand)")
            return self.build(start, ex.Unary, op, a)
        self.expect(",", f"',' ({op} takes two operands)")
        b = self.expr()
        self.expect(")", f"')' ({op} takes two operands)")
        return self.build(start, ex.Binary, op, a, b)

    def load(self, tensor: str, dtype: DType | None, start: int) -> ex.Expr:
        if dtype is None:
            if self.tensor_dtypes is None:
                self.error(f"load of tensor {tensor!r} needs its dtype: pass tensor_dtypes "
                           f"or write {tensor}:<dtype>[...]", start)
            if tensor not in self.tensor_dtypes:
                self.error(f"unknown tensor {tensor!r} (tensor_dtypes has "
                           f"{', '.join(sorted(self.tensor_dtypes)) or 'none'})", start)
            dtype = dt.dtype(self.tensor_dtypes[tensor])
        self.expect("[")
        indices = [self.expr()]
        while self.take(","):
            indices.append(self.expr())
        self.expect("]", "']' or ',' in the load's indices")
        return self.build(start, ex.Load, tensor, indices, dtype)

