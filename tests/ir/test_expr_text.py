"""parse_expr: the inverse of expr.to_text."""
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from warpweave.errors import ParseError
from warpweave.ir import dtypes as dt
from warpweave.ir import expr as ex
from warpweave.ir.expr_text import expr_to_text, parse_expr

ALL = dt.ALL
FLOATS = [d for d in ALL if d.is_float]
INTS = [d for d in ALL if d.is_int]
TENSORS = {f"T_{d.name}": d for d in ALL}
# Names that read back as something else (`true`, `inf:float32`) are left out.
NAMES = ["i", "j", "t", "row_1", "x.y", "acc$", "_k"]


def same(a: ex.Expr, b: ex.Expr) -> bool:
    return a == b and ex.to_text(a) == ex.to_text(b)


# ----------------------------------------------------------------------------- examples

@pytest.mark.parametrize("text", [
    "g", "x:float32", "m:bool", "n:int32",
    "0", "-7", "123456789012345", "5:int32", "-3:int32", "true", "false",
    "1.5:float32", "-0.0:float32", "0.0:float16", "inf:float64", "-inf:bfloat16", "nan:float32",
    "1e-05:float32", "1.5e+20:float64", "2.0:bfloat16",
    "((g * 1000) + t)", "((t // 32) % 4)", "(i - -5)", "(-5 - i)",
    "neg(x:float32)", "not(m:bool)", "exp(x:float32)", "rsqrt(abs(x:float64))",
    "max(a, b)", "min(a, 3)", "pow(x:float32, 2.0:float32)", "and(m:bool, lt(t, 4))",
    "select(lt(t, 4), x:float32, 0.0:float32)", "cast<float16>(cast<float32>(h:float16))",
    "cast<int64>(i:int32)", "eq((t % 32), 0)", "ne(x:float32, nan:float32)",
    "sum(x:float32 over k<4)", "max((x:float32 + y:float32) over k<4, j<8)", "sum(max(x:float32, y:float32) over k<2)",
])
def test_examples_round_trip(text):
    e = parse_expr(text)
    assert ex.to_text(e) == text
    assert same(parse_expr(ex.to_text(e)), e)


def test_kinds_and_types():
    assert parse_expr("g") == ex.Var("g")
    assert parse_expr("x:float16") == ex.Var("x", dt.float16)
    c = parse_expr("-0.0:float32")
    assert isinstance(c, ex.Const) and c.dtype == dt.float32 and math.copysign(1, c.value) < 0
    assert parse_expr("nan:float64") == ex.Const(math.nan, dt.float64)
    assert parse_expr("7") == ex.Const(7, dt.int64)
    assert parse_expr("true") == ex.Const(True, dt.bool_)
    assert parse_expr("(a + b)") == ex.Binary("add", ex.Var("a"), ex.Var("b"))
    assert parse_expr("cast<float32>(i)") == ex.Cast(ex.Var("i"), dt.float32)
    r = parse_expr("sum(x:float32 over k<4, j<2)")
    assert isinstance(r, ex.Reduce) and r.axes == (ex.Var("k"), ex.Var("j")) and r.extents == (4, 2)


def test_infix_precedence_without_parentheses():
    e = parse_expr("a + b * c // 2 % 3 - 1")
    assert ex.to_text(e) == "((a + (((b * c) // 2) % 3)) - 1)"
    assert parse_expr("a - 1 - 2") == parse_expr("((a - 1) - 2)")
    assert parse_expr(" ( a+b ) ") == parse_expr("(a + b)")


def test_loads_need_dtypes():
    text = "T[i, (j + 1)]"
    with pytest.raises(ParseError, match="dtype"):
        parse_expr(text)
    with pytest.raises(ParseError, match="unknown tensor 'T'"):
        parse_expr(text, {"U": dt.float32})
    e = parse_expr(text, {"T": dt.float16})
    assert e == ex.Load("T", [ex.Var("i"), ex.Var("j") + 1], dt.float16)
    assert ex.to_text(e) == text
    # the typed form reads back without a mapping
    typed = expr_to_text(e)
    assert typed == "T:float16[i, (j + 1)]"
    assert parse_expr(typed) == e
    assert expr_to_text(e, {"T": dt.float16}) == text


@pytest.mark.parametrize("text, where, what", [
    ("(a + ", 6, "an operand"),
    ("(a + b", 7, "')'"),
    ("a b", 3, "end of expression"),
    ("cast<foo>(x)", 6, "a dtype"),
    ("1.5:int32", 1, "not a valid int32"),
    ("add(a, 1.5:float32)", 1, "differ in dtype"),
    ("exp(i)", 1, "float"),
    ("select(i, a, b)", 1, "bool"),
    ("lt(a)", 5, "two operands"),
    ("neg(a, b)", 6, "one operand"),
    ("inf", None, None),  # a variable named inf is fine
    ("x:float99", 3, "a dtype"),
    ("nan", None, None),
    ("sum(x over k)", 13, "'<'"),
    ("", 1, "an operand"),
])
def test_errors_name_position_and_expectation(text, where, what):
    if where is None:
        assert isinstance(parse_expr(text), ex.Var)
        return
    with pytest.raises(ParseError) as info:
        parse_expr(text)
    msg = str(info.value)
    assert f"column {where}" in msg and what in msg, msg


# ----------------------------------------------------------------------------- property

def const_of(d):
    if d.is_bool:
        return st.booleans().map(lambda v: ex.Const(v, d))
    if d == dt.int32:
        return st.integers(-2**31, 2**31 - 1).map(lambda v: ex.Const(v, d))
    if d.is_int:
        return st.integers(-2**63, 2**63 - 1).map(lambda v: ex.Const(v, d))
    return st.floats(allow_nan=True, allow_infinity=True).map(lambda v: ex.Const(v, d))


def leaf(d):
    return st.one_of(const_of(d), st.sampled_from(NAMES).map(lambda n: ex.Var(n, d)))


@st.composite
def typed(draw, d, depth=3):
    if depth <= 0 or draw(st.integers(0, 4)) == 0:
        return draw(leaf(d))
    sub = lambda dd: typed(dd, depth - 1)  # noqa: E731
    kinds = ["unary", "binary", "select", "cast", "load"]
    kind = draw(st.sampled_from(kinds))
    if kind == "unary":
        ops = ["not"] if d.is_bool else ["neg", "abs"] if d.is_int else \
            [op for op in ex.UNARY_OPS if op != "not"]
        return ex.Unary(draw(st.sampled_from(ops)), draw(sub(d)))
    if kind == "binary":
        if d.is_bool:
            if draw(st.booleans()):
                return ex.Binary(draw(st.sampled_from(ex.LOGIC_OPS)), draw(sub(d)), draw(sub(d)))
            od = draw(st.sampled_from(ALL))
            return ex.Binary(draw(st.sampled_from(ex.COMPARE_OPS)), draw(sub(od)), draw(sub(od)))
        ops = ["add", "sub", "mul", "max", "min"] + (["floordiv", "mod"] if d.is_int
                                                     else ["div", "pow"])
        return ex.Binary(draw(st.sampled_from(ops)), draw(sub(d)), draw(sub(d)))
    if kind == "select":
        return ex.Select(draw(sub(dt.bool_)), draw(sub(d)), draw(sub(d)))
    if kind == "cast":
        return ex.Cast(draw(sub(draw(st.sampled_from(ALL)))), d)
    n = draw(st.integers(1, 3))
    idx = [draw(sub(draw(st.sampled_from(INTS)))) for _ in range(n)]
    return ex.Load(f"T_{d.name}", idx, d)


@st.composite
def any_expr(draw):
    d = draw(st.sampled_from(ALL))
    e = draw(typed(d))
    if draw(st.integers(0, 9)) == 0:
        axes = draw(st.lists(st.sampled_from(["k", "r", "s"]), min_size=1, max_size=2, unique=True))
        e = ex.Reduce(draw(st.sampled_from(ex.COMBINERS)), e, [ex.Var(a) for a in axes],
                      draw(st.lists(st.integers(1, 64), min_size=len(axes), max_size=len(axes))))
    return e


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_expr())
def test_round_trip_property(e):
    text = ex.to_text(e)
    back = parse_expr(text, TENSORS)
    assert same(back, e), (text, ex.to_text(back))
    # and the typed-load form reads back without a mapping
    assert same(parse_expr(expr_to_text(e)), e)


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(ALL), st.floats(allow_nan=True, allow_infinity=True))
def test_constants_of_every_dtype(d, v):
    c = ex.Const(v if d.is_float else (int(v) if math.isfinite(v) else 0), d)
    assert same(parse_expr(ex.to_text(c)), c)
