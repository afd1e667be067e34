"""Aligned sibling vector scopes: a value defined directly in vector scope V1 may be
used in a sibling vector scope V2 (same parent, same extent), lane for lane."""
import pytest

from warpweave.errors import VerificationError
from warpweave.ir import dtypes as dt
from warpweave.ir import expr as ex
from warpweave.ir.gir import Buffer, KernelBuilder
from warpweave.ir.gir_dot import to_dot
from warpweave.ir.gir_parse import parse_kernel
from warpweave.ir.gir_text import print_kernel
from warpweave.ir.gir_verify import check, verify

from tests.ir.example_kernels import V, softmax_cpu_kernel, softmax_tile_kernel

f32 = dt.float32


def rejected(kernel) -> str:
    with pytest.raises(VerificationError) as info:
        verify(kernel)
    return str(info.value)


def _pair(kind1="vector", e1=8, kind2="vector", e2=8, same_parent=True, deeper=False,
          use_in_parent=False, reduce_over_v2=False):
    """A CPU kernel: scope S1 (kind1, e1) loads x, scope S2 (kind2, e2) stores 2 * x.
    Returns (kernel, ids)."""
    b = KernelBuilder("pair", target="cpu")
    b.add_param(Buffer("x", f32, (64,), (1,), "in"))
    b.add_param(Buffer("y", f32, (64,), (1,), "out"))
    b.add_param(Buffer("z", f32, (8,), (1,), "out"))
    g = b.scope("grid", "g", 8, None)
    p1 = p2 = g
    if not same_parent:
        p2 = b.scope("serial", "k", 1, g)
    s1 = b.scope(kind1, "a", e1, p1)
    holder = b.scope("unroll", "u", 1, s1) if deeper else s1
    x = b.load("x", V("g") * 8 + V("a") % 8 + V("u") if deeper else V("g") * 8 + V("a") % 8, holder)
    ids = {"g": g, "s1": s1, "x": x, "holder": holder}
    if use_in_parent:
        y = b.compute("mul", [x, b.const(ex.Const(2.0, f32), g)], g, f32)
        b.store("z", V("g"), y, g)
        ids["y"] = y
        return b.build(), ids
    s2 = b.scope(kind2, "c", e2, p2)
    two = b.const(ex.Const(2.0, f32), p2)
    y = b.compute("mul", [x, two], s2, f32)
    b.store("y", V("g") * 8 + V("c") % 8, y, s2)
    if reduce_over_v2:
        r = b.reduce("sum", x, over=s2)
        b.store("z", V("g"), r, p2)
        ids["r"] = r
    ids.update(s2=s2, y=y)
    return b.build(), ids


def test_aligned_siblings_are_accepted():
    k, _ = _pair()
    assert check(k) == []
    k, _ = _pair(reduce_over_v2=True)  # a reduce over V2 may take V1's value too
    assert check(k) == []
    for k in (softmax_tile_kernel(), softmax_cpu_kernel(), softmax_tile_kernel(E=32, N=2000)):
        assert check(k) == []


def test_siblings_with_different_extents_are_rejected():
    k, ids = _pair(e2=4)
    msg = rejected(k)
    assert "used outside its scope" in msg
    assert (f"sibling vector scopes {ids['s1']} and {ids['s2']} share values only when they "
            f"are aligned (same extent), but {ids['s1']} has 8 lanes and {ids['s2']} has 4") in msg
    k, ids = _pair(e2=4, reduce_over_v2=True)
    msg = rejected(k)
    assert f"{ids['r']} (compute.reduce) reduces over {ids['s2']}" in msg
    assert "has 8 lanes" in msg


def test_siblings_with_different_parents_are_rejected():
    k, ids = _pair(same_parent=False)
    msg = rejected(k)
    assert (f"aligned sibling vector scopes must have the same parent, but {ids['s1']} lies in "
            f"{ids['g']} and {ids['s2']} in ") in msg


@pytest.mark.parametrize("kind1,kind2", [("serial", "vector"), ("vector", "serial"),
                                         ("vector", "unroll"), ("serial", "serial")])
def test_non_vector_siblings_are_rejected(kind1, kind2):
    k, ids = _pair(kind1=kind1, kind2=kind2)
    msg = rejected(k)
    bad = ids["s1"] if kind1 != "vector" else ids["s2"]
    kind = kind1 if kind1 != "vector" else kind2
    assert (f"only vector scopes share values with their siblings (lane i reads lane i), but "
            f"{bad} (parallel.{kind}") in msg and f"is a {kind} scope" in msg


def test_values_from_inside_a_vector_scope_stay_there():
    k, ids = _pair(deeper=True)
    msg = rejected(k)
    assert f"lives in {ids['holder']}" in msg
    assert f"only values defined directly in vector scope {ids['s1']}" in msg


def test_a_vector_value_is_not_visible_in_the_parent():
    k, ids = _pair(use_in_parent=True)
    msg = rejected(k)
    assert f"value {ids['x']} (move.global.reg x) is used outside its scope" in msg
    assert "sibling" not in msg


@pytest.mark.parametrize("make", [softmax_tile_kernel, softmax_cpu_kernel])
def test_sibling_edges_round_trip_through_text_and_dot(make):
    k = make()
    text = print_kernel(k)
    back = parse_kernel(text)
    assert back == k and back.edges == k.edges
    assert print_kernel(back) == text
    # an edge from a node of one vector scope into a node of its sibling survives
    scopes = k.scopes
    crossing = [e for e in k.edges if e.level == "reg"
                and k.node(e.src).scope != k.node(e.dst).scope
                and scopes.get(k.node(e.src).scope) is not None
                and scopes[k.node(e.src).scope].scope_kind == "vector"
                and scopes.get(k.node(e.dst).scope) is not None
                and scopes[k.node(e.dst).scope].scope_kind == "vector"]
    assert len(crossing) == 2  # x into V2, e into V3
    dot = to_dot(k)
    for e in crossing:
        assert f'"{e.src}" -> "{e.dst}"' in dot
