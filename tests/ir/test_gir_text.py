"""print_kernel / parse_kernel: the GIR text form round-trips exactly."""
import dataclasses
import math
import random

import pytest

from warpweave.errors import ParseError
from warpweave.ir import dtypes as dt
from warpweave.ir import expr as ex
from warpweave.ir.gir import Edge, Kernel, Node, SharedAlloc, make_kernel
from warpweave.ir.gir_parse import parse_kernel, parse_value
from warpweave.ir.gir_text import format_value, print_kernel


from tests.ir import example_kernels as EX  # noqa: E402

f32 = dt.float32


def round_trip(k: Kernel) -> Kernel:
    text = print_kernel(k)
    back = parse_kernel(text)
    assert back == k, text
    assert back.nodes == k.nodes and back.edges == k.edges  # the parts, one by one
    drop_opaque_meta = lambda t: [ln for ln in t.splitlines() if not ln.startswith("  # meta ")]  # noqa: E731
    assert drop_opaque_meta(print_kernel(back)) == drop_opaque_meta(text)
    return back


@pytest.mark.parametrize("name", sorted(EX.GOOD))
def test_example_kernels_round_trip(name):
    k = EX.GOOD[name]()
    back = round_trip(k)
    assert back.meta == k.meta
    assert str(k) == print_kernel(k)


def test_attr_types_are_restored():
    k = EX.rowsum_kernel()
    back = parse_kernel(print_kernel(k))
    for a, b in zip(k.nodes, back.nodes):
        for (ka, va), (kb, vb) in zip(a.attrs, b.attrs):
            assert ka == kb and type(va) is type(vb) and va == vb
    load = next(n for n in back.nodes if n.op == "move.global.reg")
    assert isinstance(load.attr("other"), ex.Const) and load.attr("other").dtype == f32
    assert isinstance(load.attr("offset"), ex.Expr) and isinstance(load.attr("pred"), ex.Expr)
    red = next(n for n in back.nodes if n.op == "compute.reduce")
    assert red.attr("over") == "%5" and isinstance(red.attr("mask"), ex.Expr)
    grid = back.node("%3")
    assert type(grid.attr("extent")) is int and grid.attr("var") == "g"
    shuffle = next(n for n in back.nodes if n.op == "move.reg.reg")
    assert shuffle.attr("lane") == ex.Const(16, dt.int64) and shuffle.attr("mode") == "bfly"


def test_text_shows_scopes_and_levels():
    text = print_kernel(EX.rowsum_kernel())
    lines = text.splitlines()
    assert lines[0].startswith("kernel rowsum target=gpu")
    assert "  param x: float32[64, 1000] strides=[1000, 1] in" in lines
    assert "  shared red: float32[4]  # 16 B" in lines
    grid = next(ln for ln in lines if "parallel.grid" in ln)
    block = next(ln for ln in lines if "parallel.block" in ln)
    load = next(ln for ln in lines if "move.global.reg" in ln)
    indent = lambda ln: len(ln) - len(ln.lstrip())  # noqa: E731
    assert indent(grid) < indent(block) < indent(load)
    assert "[%0 global]" in load and "if lt(" in load and "else 0.0:float32" in load
    assert any("move.reg.shared [%2 shared, %17]" in ln for ln in lines)
    assert any("sync.block [%18 shared]" in ln for ln in lines)
    assert any("# global (DRAM): reads x" in ln for ln in lines)


def test_cpu_kernel_reopens_scopes():
    text = print_kernel(EX.cpu_kernel())
    assert "    %4 ...  # continued: parallel.serial j < 16" in text
    assert " in %" not in text


def _odd_kernel() -> Kernel:
    """Attrs of every type, unusual ids and names, explicit edge fields, a broken
    scope reference, a dangling edge and a shuffled edge order."""
    k = EX.half_kernel()
    nodes = list(k.nodes)
    extra = Node("%weird.id-1", "compute.custom", "%3", dt.bfloat16, dict((
        ("a_none", None), ("b_true", True), ("c_int", -7), ("d_float", -0.0), ("e_inf", math.inf),
        ("f_str", 'he said "hi"\n'), ("g_dtype", dt.int32), ("h_expr", ex.Var("t") * 4),
        ("i_tuple", (1, ("x", None), ex.Const(math.nan, f32), ())), ("j_one", (dt.bool_,)),
        ("k_nan", math.nan), ("l_load", ex.Load("h", [ex.Var("t")], dt.float16)),
        ("m_load", ex.Load("zz", [ex.Var("t")], dt.int32)),
    )))
    nodes.append(extra)
    nodes.append(Node('%"quoted id"', "compute.exp", "%3", f32, ()))
    nodes.append(Node("%orphan", "compute.neg", "%nowhere", f32, ()))
    # a load without 'other' at all (absent, not None) and a reduce with a generic attr
    nodes.append(Node("%nl", "move.global.reg", "%3", dt.float16,
                      {"buffer": "h", "offset": ex.Var("t"), "pred": None}))
    nodes.append(Node("%gen", "move.global.reg", "%3", dt.float16,
                      {"buffer": "h", "offset": 5, "pred": None, "other": None}))
    nodes.append(Node("%sc", "parallel.serial", "%3", None, {"var": "s", "extent": True}))
    edges = list(k.edges)
    edges.append(Edge("%4", "%weird.id-1", 3, "shared", dt.float16, (2, 2)))
    edges.append(Edge("%5", "%weird.id-1", 0, "reg", dt.bfloat16, ()))
    edges.append(Edge("%weird.id-1", '%"quoted id"', 0, "odd level", f32, (1,)))
    edges.append(Edge("%14", "%missing", 1, "reg", f32, ()))
    edges.append(Edge("%0", "%nl", 0, "global", dt.float16, ()))
    random.Random(3).shuffle(edges)
    return make_kernel('odd "name"', k.params, [SharedAlloc("s.m", dt.int32, 8)], nodes, edges,
                       target="weird target", meta={"t": (1, "a"), "obj": object()})


def test_unusual_kernels_round_trip():
    k = _odd_kernel()
    text = print_kernel(k)
    assert "edge-order" in text and "-> %missing" in text and "~other" in text
    assert "in %nowhere" in text and "# meta obj:" in text
    back = round_trip(k)
    assert back.meta == (("t", (1, "a")),)


def test_values_round_trip():
    for v in [None, True, False, 0, -12, 1.5, -0.0, math.inf, -math.inf, "s", 'q"\\',
              dt.float16, ex.Var("i") + 1, (), (1,), (1, (2, "x")), ex.Const(1e-5, f32)]:
        text = format_value(v)
        back = parse_value(text)
        assert back == v and type(back) is type(v), text
    assert math.isnan(parse_value(format_value(math.nan)))


def test_malformed_kernels_round_trip():
    rng = random.Random(7)
    bases = [f() for f in EX.GOOD.values()]
    for _ in range(200):
        k = rng.choice(bases)
        nodes, edges = list(k.nodes), list(k.edges)
        for _ in range(rng.randint(1, 3)):
            c = rng.randrange(7)
            if c == 0 and edges:
                j = rng.randrange(len(edges))
                edges[j] = dataclasses.replace(edges[j], src=rng.choice(nodes).id,
                                               slot=rng.choice([0, 1, 4]),
                                               shape=rng.choice([(), (4,)]))
            elif c == 1:
                j = rng.randrange(len(nodes))
                nodes[j] = nodes[j].replace(scope=rng.choice([None, "%77", rng.choice(nodes).id]))
            elif c == 2:
                j, m = rng.randrange(len(nodes)), rng.randrange(len(nodes))
                nodes[j], nodes[m] = nodes[m], nodes[j]
            elif c == 3:
                n = rng.choice(nodes)
                if n.attrs:
                    key = rng.choice(n.attrs)[0]
                    nodes[nodes.index(n)] = n.replace(attrs={**n.attr_map, key: rng.choice(
                        [None, 3, "s", ex.Var("zz"), ex.Const(1.5, f32), (1, "%3"), dt.int32])})
            elif c == 4:
                j = rng.randrange(len(nodes))
                nodes[j] = nodes[j].replace(id=rng.choice(nodes).id)
            elif c == 5:
                rng.shuffle(edges)
            else:
                nodes.pop(rng.randrange(len(nodes)))
        round_trip(make_kernel(k.name, k.params, k.shared, nodes, edges, k.target))


GOOD_TEXT = """\
kernel tiny target=cpu
  param x: float32[8] strides=[1] in
  param y: float32[8] strides=[1] out
  %0 = mem.global x : float32
  %1 = mem.global y : float32
  %2 = parallel.grid g < 8
    %3 = move.global.reg [%0 global] x[g] else 0.0:float32 : float32
    %4 = compute.exp [%3] : float32
    %5 = move.reg.global [%1 global, %4] y[g] : float32
"""


def test_parse_hand_written_text():
    k = parse_kernel(GOOD_TEXT)
    assert k.target == "cpu" and k.grid == 8 and [n.id for n in k.nodes][-1] == "%5"
    assert k.inputs("%5") == [Edge("%1", "%5", 0, "global", f32), Edge("%4", "%5", 1, "reg", f32)]
    assert print_kernel(k).endswith(GOOD_TEXT.split("\n", 3)[3])


@pytest.mark.parametrize("old, new, line, what", [
    ("kernel tiny", "kernal tiny", 1, "'kernel NAME"),
    ("x[g] else", "x[g else", 7, "']' after the offset"),
    ("strides=[1] in", "strides=[1 in", 2, "']' closing the strides"),
    ("%4 = compute.exp [%3]", "%4 = compute.exp [%3", 8, "',' or ']'"),
    ("%4 = compute.exp [%3] : float32", "%4 = compute.exp [%3] : float99", 8, "unknown dtype"),
    ("    %4 = compute.exp", "     %4 = compute.exp", 8, "indented 2 spaces"),
    ("    %4 = compute.exp", "      %4 = compute.exp", 8, "not a scope"),
    ("g < 8", "g < eight", 6, "the scope extent"),
    ("%4 = compute.exp [%3] : float32", "%4 = compute.exp [%3] exp : float32", 8,
     "no special syntax"),
    ("y[g] : float32", "y[g] : float32 junk", 9, "end of line"),
    ("x[g] else", "x[(g + ] else", 7, "an operand"),
    ("[%0 global]", "[%0 global:float32[4]@x]", 7, "slot"),
])
def test_parse_errors_name_the_line(old, new, line, what):
    assert old in GOOD_TEXT
    with pytest.raises(ParseError) as info:
        parse_kernel(GOOD_TEXT.replace(old, new, 1))
    msg = str(info.value)
    assert f"line {line}" in msg and what in msg, msg


def test_parse_error_for_missing_dtype_and_empty_text():
    with pytest.raises(ParseError, match="no 'kernel' line"):
        parse_kernel("# nothing here\n")
    with pytest.raises(ParseError, match="line 7: operand %9 needs an explicit dtype"):
        parse_kernel(GOOD_TEXT.replace("[%0 global]", "[%9]"))
