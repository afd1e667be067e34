"""Index analysis: bounds, linear forms, simplification, affine decomposition,
strides and alignment divisors of scalar expressions."""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Iterable, Mapping

from . import dtypes as dt
from .expr import (COMPARE_OPS, Binary, Cast, Const, Expr, Load, Reduce, Select, Unary, Var,
                   evaluate, free_vars, postorder, substitute, to_text, transform)

Ranges = Mapping[str, tuple[int, int]]  # inclusive bounds of index variables


def bounds(e: Expr, ranges: Ranges) -> tuple[int, int] | None:
    """Inclusive integer bounds of an index expression, or None if unknown."""
    memo: dict[Expr, tuple[int, int] | None] = {}
    for n in postorder(e):
        memo[n] = _bounds_node(n, [memo[c] for c in n.children], ranges)
    return memo[e]


def _bounds_node(n: Expr, c, ranges):
    if isinstance(n, Const) and n.dtype.is_int:
        return (n.value, n.value)
    if isinstance(n, Var):
        return ranges.get(n.name)
    if isinstance(n, Select) and n.dtype.is_int:
        if c[1] is None or c[2] is None:
            return None
        return (min(c[1][0], c[2][0]), max(c[1][1], c[2][1]))
    if not isinstance(n, Binary) or not n.dtype.is_int or c[0] is None or c[1] is None:
        return None
    (alo, ahi), (blo, bhi) = c
    if n.op == "add":
        return (alo + blo, ahi + bhi)
    if n.op == "sub":
        return (alo - bhi, ahi - blo)
    if n.op == "mul":
        p = (alo * blo, alo * bhi, ahi * blo, ahi * bhi)
        return (min(p), max(p))
    if n.op == "max":
        return (max(alo, blo), max(ahi, bhi))
    if n.op == "min":
        return (min(alo, blo), min(ahi, bhi))
    if n.op in ("floordiv", "mod") and blo == bhi and blo > 0 and alo >= 0:
        if n.op == "floordiv":
            return (alo // blo, ahi // blo)
        return (0, min(ahi, blo - 1)) if ahi >= blo else (alo, ahi)
    if n.op in ("floordiv", "mod") and blo > 0 and alo >= 0:  # a divisor that varies, always positive
        return (alo // bhi, ahi // blo) if n.op == "floordiv" else (0, min(ahi, bhi - 1))
    return None


def int_problems(e: Expr, ranges: Ranges) -> list[str]:
    """Integer sub-expressions of `e` that divide by zero (a divisor whose bounds
    contain 0) or leave their dtype's range (int64 for index arithmetic), for the
    variables in `ranges`; one message per problem, naming the sub-expression."""
    problems = []
    memo: dict[Expr, tuple[int, int] | None] = {}
    for n in postorder(e):
        c = [memo[x] for x in n.children]
        if isinstance(n, Binary) and n.op in ("floordiv", "mod") and c[1] is not None \
                and c[1][0] <= 0 <= c[1][1]:
            problems.append(f"{to_text(n)} divides by zero (the divisor {to_text(n.b)} ranges over "
                            f"{c[1][0]}..{c[1][1]})")
            memo[n] = None
            continue
        b = memo[n] = _bounds_node(n, c, ranges)
        if b is not None and n.dtype.is_int:
            lo, hi = -(1 << (n.dtype.bits - 1)), (1 << (n.dtype.bits - 1)) - 1
            if b[0] < lo or b[1] > hi:
                problems.append(f"{to_text(n)} overflows {n.dtype} (it ranges over {b[0]}..{b[1]})")
                memo[n] = None
    return problems


def _linear(e: Expr) -> tuple[dict[Expr, int], int] | None:
    """Decompose an int64 expression into {term: coefficient} + constant."""
    if e.dtype != dt.INDEX:
        return None
    if isinstance(e, Const):
        return {}, e.value
    if isinstance(e, Binary) and e.op in ("add", "sub"):
        la, lb = _linear(e.a), _linear(e.b)
        if la is None or lb is None:
            return None
        sign = 1 if e.op == "add" else -1
        terms = dict(la[0])
        for t, k in lb[0].items():
            terms[t] = terms.get(t, 0) + sign * k
        return {t: k for t, k in terms.items() if k}, la[1] + sign * lb[1]
    if isinstance(e, Binary) and e.op == "mul":
        for x, y in ((e.a, e.b), (e.b, e.a)):
            if isinstance(y, Const):
                lx = _linear(x)
                if lx is None:
                    return None
                k = y.value
                return ({t: c * k for t, c in lx[0].items() if c * k}, lx[1] * k)
    if isinstance(e, Unary) and e.op == "neg":
        la = _linear(e.a)
        return None if la is None else ({t: -k for t, k in la[0].items()}, -la[1])
    return {e: 1}, 0


def _from_linear(terms: Mapping[Expr, int], c: int) -> Expr:
    ordered = sorted(terms.items(), key=lambda tk: to_text(tk[0]))
    out: Expr | None = None
    for t, k in ordered:
        term = t if abs(k) == 1 else Binary("mul", t, Const(abs(k), dt.INDEX))
        if out is None:
            out = term if k > 0 else Binary("sub", Const(0, dt.INDEX), term)
        else:
            out = Binary("add" if k > 0 else "sub", out, term)
    if out is None:
        return Const(c, dt.INDEX)
    if c > 0:
        out = Binary("add", out, Const(c, dt.INDEX))
    elif c < 0:
        out = Binary("sub", out, Const(-c, dt.INDEX))
    return out


def _merge_div_mod(terms: dict[Expr, int], k0: int, ranges: Ranges) -> tuple[dict[Expr, int], int]:
    """Rewrite `a·c·((x // c) % m) + a·(x % c)` as `a·(x % (c·m))` and
    `a·c·(x // c) + a·(x % c)` as `a·x` (what unflattening then re-linearizing an
    index produces: the first rule folds the inner axes, the second the outermost).
    `x // c` may appear in the form the ranges simplified it to."""
    terms = dict(terms)
    changed = True
    while changed:
        changed = False
        for t, k in list(terms.items()):
            if not (isinstance(t, Binary) and t.op == "mod" and isinstance(t.b, Const) and t.b.value > 0
                    and t in terms):
                continue
            plain = Binary("floordiv", t.a, t.b)
            forms = (plain, _simplify_node(plain, ranges))
            wrapped = next((u for u, ku in terms.items() if ku == k * t.b.value and isinstance(u, Binary)
                            and u.op == "mod" and u.a in forms and isinstance(u.b, Const) and u.b.value > 0),
                           None)
            if wrapped is not None:
                del terms[t], terms[wrapped]
                merged = Binary("mod", t.a, Const(t.b.value * wrapped.b.value, dt.INDEX))
                terms[merged] = terms.get(merged, 0) + k
                terms = {u: ku for u, ku in terms.items() if ku}
                changed = True
                break
            q = next((f for f in forms if terms.get(f) == k * t.b.value), None)
            if q is None:
                continue
            del terms[t], terms[q]
            inner = _linear(t.a)
            if inner is None:
                terms[t.a] = terms.get(t.a, 0) + k
            else:
                for u, ku in inner[0].items():
                    terms[u] = terms.get(u, 0) + k * ku
                k0 += k * inner[1]
            terms = {u: ku for u, ku in terms.items() if ku}
            changed = True
            break
    return terms, k0


def _divisors_desc(n: int) -> list[int]:
    small = [d for d in range(1, int(math.isqrt(n)) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]), reverse=True)


def _div_mod(op: str, a: Expr, c: int, ranges: Ranges) -> Expr | None:
    """Simplify `a // c` or `a % c` (c > 0) using the affine form of `a` and ranges."""
    lin = _linear(a)
    if lin is None:
        return None
    terms, k0 = lin
    for d in _divisors_desc(c):
        if d == 1:
            break
        big = {t: k for t, k in terms.items() if k % d == 0}
        small = {t: k for t, k in terms.items() if k % d != 0}
        small_c = k0 % d
        big_c = k0 - small_c
        b = bounds(_from_linear(small, small_c), ranges)
        if b is None or b[0] < 0 or b[1] >= d:
            continue
        if not big and big_c == 0:
            return Const(0, dt.INDEX) if op == "floordiv" else _from_linear(small, small_c)
        q = _from_linear({t: k // d for t, k in big.items()}, big_c // d)
        qb = bounds(q, ranges)
        if qb is None or qb[0] < 0:
            continue
        if op == "floordiv":
            return simplify(Binary("floordiv", q, Const(c // d, dt.INDEX)), ranges) if c != d else q
        if c == d:
            return _from_linear(small, small_c)
        inner = simplify(Binary("mod", q, Const(c // d, dt.INDEX)), ranges)
        return simplify(inner * d + _from_linear(small, small_c), ranges)
    b = bounds(a, ranges)
    if b is not None and 0 <= b[0] and b[1] < c:
        return Const(0, dt.INDEX) if op == "floordiv" else a
    # (c*Q + R) // c = Q + R // c and (c*Q + R) % c = R % c whenever R >= 0.
    q = {t: k // c for t, k in terms.items() if k % c == 0}
    q0, r0 = divmod(k0, c)
    if q or q0:
        rest = _from_linear({t: k for t, k in terms.items() if k % c != 0}, r0)
        rb = bounds(rest, ranges)
        if rb is not None and rb[0] >= 0:
            r_part = simplify(Binary(op, rest, Const(c, dt.INDEX)), ranges)
            return r_part if op == "mod" else simplify(_from_linear(q, q0) + r_part, ranges)
    return None


_MEMO_SIZE = 1 << 14  # expressions are immutable: passes and the verifier ask again and again


def _memo_key(ranges: Ranges | None) -> frozenset | None:
    """`ranges` as a cache key, or None when its values cannot be one."""
    key = frozenset(ranges.items()) if ranges else frozenset()
    try:
        hash(key)
    except TypeError:
        return None
    return key


def simplify(root: Expr, ranges: Ranges | None = None) -> Expr:
    """Fold constants, normalize affine index arithmetic, and decide comparisons
    that the variable ranges settle."""
    key = _memo_key(ranges)
    return _simplify(root, dict(ranges or {})) if key is None else _simplify_memo(root, key)


def _simplify(root: Expr, ranges: Ranges) -> Expr:
    return transform(root, lambda _o, e: _simplify_node(e, ranges))


@lru_cache(maxsize=_MEMO_SIZE)
def _simplify_memo(root: Expr, key: frozenset) -> Expr:
    return _simplify(root, dict(key))


def _simplify_node(e: Expr, ranges: Ranges) -> Expr:
    ch = e.children
    if ch and all(isinstance(c, Const) for c in ch) and not isinstance(e, (Load, Reduce)):
        folded = _fold(e)
        if folded is not None:
            return folded
    if isinstance(e, Binary):
        a, b = e.a, e.b
        if e.dtype == dt.INDEX and e.op in ("add", "sub", "mul"):
            lin = _linear(e)
            if lin is not None:
                return _from_linear(*_merge_div_mod(*lin, ranges))
        if e.op in ("floordiv", "mod") and isinstance(b, Const) and b.value > 0 and e.dtype == dt.INDEX:
            if b.value == 1:
                return a if e.op == "floordiv" else Const(0, dt.INDEX)
            if e.op == "floordiv" and isinstance(a, Binary) and a.op == "floordiv" and isinstance(a.b, Const) and a.b.value > 0:
                return _simplify_node(Binary("floordiv", a.a, Const(a.b.value * b.value, dt.INDEX)), ranges)
            r = _div_mod(e.op, a, b.value, ranges)
            if r is not None:
                return r
        if e.op in COMPARE_OPS and a.dtype.is_int:
            decided = _decide(e.op, a, b, ranges)
            if decided is not None:
                return Const(decided, dt.bool_)
        if e.op == "and" and e.dtype.is_bool:
            for x, y in ((a, b), (b, a)):
                if isinstance(x, Const):
                    return y if x.value else x
        if e.op == "or" and e.dtype.is_bool:
            for x, y in ((a, b), (b, a)):
                if isinstance(x, Const):
                    return x if x.value else y
        if e.op == "mul" and e.dtype.is_int:
            for x, y in ((a, b), (b, a)):
                if isinstance(x, Const) and x.value == 1:
                    return y
    if isinstance(e, Select):
        if isinstance(e.cond, Const):
            return e.a if e.cond.value else e.b
        if e.a == e.b:
            return e.a
    if isinstance(e, Cast) and e.a.dtype == e.dtype:
        return e.a
    return e


def _decide(op: str, a: Expr, b: Expr, ranges: Ranges) -> bool | None:
    d = bounds(simplify(Binary("sub", a, b), ranges) if a.dtype == dt.INDEX else Binary("sub", a, b), ranges)
    if d is None:
        return None
    lo, hi = d
    table = {
        "lt": (hi < 0, lo >= 0), "le": (hi <= 0, lo > 0),
        "gt": (lo > 0, hi <= 0), "ge": (lo >= 0, hi < 0),
        "eq": (lo == hi == 0, lo > 0 or hi < 0), "ne": (lo > 0 or hi < 0, lo == hi == 0),
    }
    yes, no = table[op]
    return True if yes else False if no else None


def _fold(e: Expr) -> Const | None:
    import numpy as np

    if isinstance(e, Binary) and e.op in ("floordiv", "mod") and e.b.value == 0:
        return None
    try:
        v = evaluate(e, {})
    except (ArithmeticError, ValueError):
        return None
    v = np.asarray(v).astype(e.dtype.numpy).item()
    if isinstance(v, float) and not math.isfinite(v) and not e.dtype.is_float:
        return None
    return Const(v, e.dtype)


def affine(e: Expr, variables: Iterable[str], ranges: Ranges | None = None) -> tuple[dict[str, int], Expr] | None:
    """`e` as `sum(coeff[v] * v) + rest`, with `rest` free of `variables`; None if
    `e` is not affine in them."""
    names = set(variables)
    lin = _linear(simplify(e, ranges))
    if lin is None:
        return None
    coeffs: dict[str, int] = {}
    rest: dict[Expr, int] = {}
    for t, k in lin[0].items():
        if isinstance(t, Var) and t.name in names:
            coeffs[t.name] = coeffs.get(t.name, 0) + k
        elif free_vars(t) & names:
            return None
        else:
            rest[t] = k
    return coeffs, _from_linear(rest, lin[1])


def conjuncts(pred: Expr | None) -> list[Expr]:
    """The terms of `pred` joined by `and` (none for a missing predicate)."""
    if pred is None:
        return []
    if isinstance(pred, Binary) and pred.op == "and":
        return conjuncts(pred.a) + conjuncts(pred.b)
    return [pred]


def bounds_under(e: Expr, pred: Expr | None, ranges: Ranges) -> tuple[int, int] | None:
    """Inclusive bounds of the index expression `e` at the points where `pred` holds.

    Each conjunct `lt(x, c)` / `le(x, c)` of `pred` with an affine `x` is matched
    against the affine form of `e`: where `e = a·x + rest` with a > 0, `a·x` is bounded
    by the conjunct above and by `ranges` below, and what is left by `ranges`.
    """
    key = _memo_key(ranges)
    return _bounds_under(e, pred, ranges) if key is None else _bounds_under_memo(e, pred, key)


@lru_cache(maxsize=_MEMO_SIZE)
def _bounds_under_memo(e: Expr, pred: Expr | None, key: frozenset) -> tuple[int, int] | None:
    return _bounds_under(e, pred, dict(key))


def _bounds_under(e: Expr, pred: Expr | None, ranges: Ranges) -> tuple[int, int] | None:
    if pred is None:
        return bounds(e, ranges)
    lin = _linear(simplify(e, ranges))
    if lin is None:
        return bounds(e, ranges)
    remaining, k0 = dict(lin[0]), lin[1]
    lo = hi = k0
    for atom in conjuncts(simplify(pred, ranges)):
        if not (isinstance(atom, Binary) and atom.op in ("lt", "le") and atom.a.dtype == dt.INDEX
                and isinstance(atom.b, Const)):
            continue
        xl = _linear(atom.a)
        if xl is None or not xl[0]:
            continue
        xterms, x0 = xl
        first = next(iter(xterms))
        a, rem = divmod(remaining.get(first, 0), xterms[first])
        if a <= 0 or rem or any(remaining.get(t) != a * k for t, k in xterms.items()):
            continue
        x_hi = atom.b.value - (1 if atom.op == "lt" else 0)
        step = math.gcd(*xterms.values())  # x only takes values x0 + step·n
        x_hi -= (x_hi - x0) % step
        xb = bounds(_from_linear(xterms, x0), ranges)
        if xb is None:
            continue
        for t in xterms:
            del remaining[t]
        lo += a * (xb[0] - x0)
        hi += a * (min(x_hi, xb[1]) - x0)
    rb = bounds(_from_linear(remaining, 0), ranges)
    if rb is None:
        return None
    return lo + rb[0], hi + rb[1]


def bounds_under_split(e: Expr, pred: Expr | None, ranges: Ranges) -> tuple[int, int] | None:
    """`bounds_under`, tightened by rewriting the variables the predicate bounds in
    combination (sound: every point where `pred` holds maps to a point of the new
    ranges with the same value of `e`):

    - a variable the predicate reads through a quotient `t // c` or a remainder `t % c`
      (c dividing t's extent) becomes `c·a + b`, a ∈ [0, extent / c), b ∈ [0, c);
    - a conjunct `x < C` with x = g·u + x0 over variables, where u has a variable p of
      coefficient 1, makes u a variable f ranging over u's bounds cut at the conjunct's,
      and p = f − (the rest of u): an index flattened from k·256 + t and split again
      by `//` and `%` is then bounded by its own predicate.

    The verifier's second attempt at an access it could not bound (a batch norm's
    statistics over [8, 256, 56, 56], a channels-last transpose whose tile overhangs
    its rows): the plain bounds count points the predicate excludes."""
    plain = bounds_under(e, pred, ranges)
    if pred is None:
        return plain
    ranges = dict(ranges)
    fresh = (f"~{n}" for n in range(1 << 30))  # names no program's variable takes
    for d in [d for d in postorder(pred) if isinstance(d, Binary) and d.op in ("floordiv", "mod")]:
        if isinstance(d.a, Var) and isinstance(d.b, Const) and d.b.value > 1 and d.a.name in ranges:
            lo, hi = ranges[d.a.name]
            c = d.b.value
            if lo == 0 and (hi + 1) % c == 0:
                a, b = Var(next(fresh), dt.INDEX), Var(next(fresh), dt.INDEX)
                del ranges[d.a.name]
                ranges[a.name], ranges[b.name] = (0, (hi + 1) // c - 1), (0, c - 1)
                whole = {d.a.name: Binary("add", Binary("mul", a, d.b), b)}
                e, pred = substitute(e, whole), substitute(pred, whole)
    e, pred = simplify(e, ranges), simplify(pred, ranges)
    fused = True
    while fused:
        fused = False
        for atom in conjuncts(pred):
            sub = _fuse_combination(atom, ranges, fresh)
            if sub is not None:
                e, pred = simplify(substitute(e, sub), ranges), simplify(substitute(pred, sub), ranges)
                fused = True
                break
    tight = bounds_under(e, pred, ranges)
    if plain is None or tight is None:
        return plain or tight
    return max(plain[0], tight[0]), min(plain[1], tight[1])


def _fuse_combination(atom: Expr, ranges: dict, fresh) -> dict[str, Expr] | None:
    """For a conjunct `x < C` / `x <= C` with x = g·u + x0 (u over at least two
    variables, one of them p of coefficient 1): a fresh variable f in `ranges` bounded
    by u's range and the conjunct, and the substitution of p by f − (u − p); else None."""
    if not (isinstance(atom, Binary) and atom.op in ("lt", "le") and atom.a.dtype == dt.INDEX
            and isinstance(atom.b, Const)):
        return None
    lin = _linear(atom.a)
    if lin is None or len(lin[0]) < 2 or not all(isinstance(t, Var) and t.name in ranges for t in lin[0]):
        return None
    terms, x0 = lin
    g = math.gcd(*terms.values())
    unit = {t: k // g for t, k in terms.items()}
    pivot = next((t for t, k in reversed(list(unit.items())) if k == 1), None)
    u = bounds(_from_linear(unit, 0), ranges)
    if pivot is None or u is None:
        return None
    top = (atom.b.value - (1 if atom.op == "lt" else 0) - x0) // g
    f = Var(next(fresh), dt.INDEX)
    ranges[f.name] = (u[0], max(u[0], min(u[1], top)))
    del ranges[pivot.name]
    rest = {t: k for t, k in unit.items() if t != pivot}
    return {pivot.name: Binary("sub", f, _from_linear(rest, 0))}


def divisor(e: Expr, cap: int = 1 << 30) -> int:
    """A power of two (at most `cap`) that divides the index expression `e` for every
    value of its variables (1 when nothing better is known): the alignment question."""
    memo: dict[Expr, int] = {}
    for n in postorder(e):
        c = [memo[x] for x in n.children]
        if isinstance(n, Const) and n.dtype.is_int:
            v = cap if n.value == 0 else min(cap, n.value & -n.value)
        elif isinstance(n, Binary) and n.op in ("add", "sub", "max", "min"):
            v = min(c)
        elif isinstance(n, Binary) and n.op == "mul":
            v = min(cap, c[0] * c[1])
        elif isinstance(n, Binary) and n.op == "mod" and isinstance(n.b, Const):
            v = min(c[0], c[1])
        elif isinstance(n, Select):
            v = min(c[1], c[2])
        else:
            v = 1
        memo[n] = v
    return memo[e]


def stride(e: Expr, var: str, ranges: Ranges | None = None) -> int | None:
    """How much `e` changes when `var` grows by one, if that is a constant."""
    ranges = dict(ranges or {})
    if var in ranges:
        lo, hi = ranges[var]
        ranges[var] = (lo, max(lo, hi - 1))
    v = Var(var)
    d = simplify(Binary("sub", substitute(e, {var: v + 1}), e), ranges)
    return d.value if isinstance(d, Const) else None
