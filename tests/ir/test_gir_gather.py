"""Loads with data indices (gathers) and combining stores with data indices
(scatter-adds) in GIR: the verifier's rules and bounds proofs, the interpreter's
range check and in-order adds, and the movement and stitching passes leaving what
they cannot prove alone (see gir.py's module docstring)."""
import dataclasses

import numpy as np
import pytest

from warpweave.backends.interp import run_kernel
from warpweave.errors import IndexOutOfRangeError, StitchError, VerificationError
from warpweave.ir import dtypes as dt
from warpweave.ir import expr as ex
from warpweave.ir.gir import Buffer, Edge, KernelBuilder, make_kernel
from warpweave.ir.gir_parse import parse_kernel
from warpweave.ir.gir_text import print_kernel
from warpweave.ir.gir_verify import check, verify
from warpweave.passes.movement import coalescing, forward_loads, hoist_loads
from warpweave.passes.stitch import stitch

from tests.ir.example_kernels import V, gather_kernel, lt

f32 = dt.float32


def _replace_node(k, node_id, **changes):
    nodes = [dataclasses.replace(n, **changes) if n.id == node_id else n for n in k.nodes]
    return make_kernel(k.name, k.params, k.shared, nodes, k.edges, k.target, dict(k.meta))


def _gather_node(k):
    return next(n for n in k.nodes if n.attr("data"))


def test_bounds_are_proven_with_the_data_index_over_its_extent():
    verify(gather_kernel())
    k = gather_kernel(V_=10, N=3)
    load = _gather_node(k)
    wide = load.replace(attrs={**load.attr_map, "data": (("data$0", 11),)})  # one row too many
    problems = "\n".join(check(_replace_node(k, load.id, attrs=wide.attrs)))
    assert "out-of-bounds load" in problems and "W[640]" in problems


@pytest.mark.parametrize("data, message", [
    ((("t", 10),), "differ from every scope variable (t)"),
    ((("data$0", 0),), "extent >= 1"),
    ((("data$0", 10), ("data$1", 10)), "has 2 operands; it takes 3"),
])
def test_malformed_data_indices_are_rejected(data, message):
    k = gather_kernel(V_=10, N=3)
    load = _gather_node(k)
    attrs = {**load.attr_map, "data": data}
    if data[0][0] == "t":
        attrs["offset"] = ex.substitute(load.attr("offset"), {"data$0": V("t")})
    with pytest.raises(VerificationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        verify(_replace_node(k, load.id, attrs=tuple(sorted(attrs.items()))))


def test_a_data_index_must_be_an_integer_and_stay_out_of_the_predicate():
    k = gather_kernel(V_=10, N=3)
    load = _gather_node(k)
    const = next(n for n in k.nodes if n.op == "compute.const")
    edges = [Edge(const.id, e.dst, e.slot, e.level, f32, ()) if e.dst == load.id and e.slot == 1 else e
             for e in k.edges]
    floating = make_kernel(k.name, k.params, k.shared, k.nodes, edges, k.target)
    assert any("data index 0" in p and "must be an integer" in p for p in check(floating))
    pred = ex.binary("and", load.attr("pred"), lt(V("data$0"), 5))
    assert any("only the offset may" in p for p in check(_replace_node(
        k, load.id, attrs=tuple(sorted({**load.attr_map, "pred": pred}.items())))))
    plain = load.replace(attrs={key: v for key, v in load.attr_map.items() if key != "data"})
    assert any("data$0" in p and "not a variable" in p for p in check(_replace_node(k, load.id, attrs=plain.attrs)))


def test_the_interpreter_checks_data_indices_where_the_predicate_holds():
    k = gather_kernel(V_=10, D=8, N=3, block=2)
    table = np.random.default_rng().standard_normal((10, 8)).astype(np.float32)
    out = np.full(24, np.nan, dtype=np.float32)
    run_kernel(k, {"ids": np.array([3, 0, 9], np.int32), "W": table.reshape(-1), "out": out})
    np.testing.assert_array_equal(out.reshape(3, 8), table[[3, 0, 9]] + 1)
    with pytest.raises(IndexOutOfRangeError, match="data index -1, outside \\[0, 10\\)"):
        run_kernel(k, {"ids": np.array([3, -1, 9], np.int32), "W": table.reshape(-1), "out": out})


def _two_gathers(same_index: bool):
    """Two loads of W at the same offset text, their data indices from ids and jds."""
    b = KernelBuilder("two", target="cpu")
    b.add_param(Buffer("ids", dt.int64, (4,), (1,), "in"))
    b.add_param(Buffer("jds", dt.int64, (4,), (1,), "in"))
    b.add_param(Buffer("W", f32, (10, 8), (8, 1), "in"))
    b.add_param(Buffer("out", f32, (4, 8), (8, 1), "out"))
    g = b.scope("grid", "g", 4, None)
    s = b.scope("serial", "s", 8, g)
    i = b.load("ids", V("g"), g)
    j = i if same_index else b.load("jds", V("g"), g)
    w1 = b.load("W", V("data$0") * 8 + V("s"), s, data=[(i, 10)])
    w2 = b.load("W", V("data$0") * 8 + V("s"), s, data=[(j, 10)])
    b.store("out", V("g") * 8 + V("s"), b.compute("sub", [w1, w2], s, f32), s)
    return b.build()


def test_forward_loads_reuses_a_gather_only_with_the_same_data_index():
    gathers = lambda k: sum(1 for n in k.nodes if n.attr("data"))  # noqa: E731
    assert gathers(forward_loads(_two_gathers(same_index=False))) == 2
    assert gathers(forward_loads(_two_gathers(same_index=True))) == 1


def test_hoisting_keeps_gathers_with_their_indices_and_coalescing_names_them():
    """The gather's offset does not use the loop variable s, but its data index does."""
    b = KernelBuilder("loop", target="cpu")
    b.add_param(Buffer("ids", dt.int64, (8,), (1,), "in"))
    b.add_param(Buffer("W", f32, (10, 4), (4, 1), "in"))
    b.add_param(Buffer("out", f32, (4,), (1,), "out"))
    g = b.scope("grid", "g", 4, None)
    s = b.scope("serial", "s", 8, g)
    w = b.load("W", V("data$0") * 4 + V("g"), s, data=[(b.load("ids", V("s"), s), 10)])
    b.store("out", V("g"), b.reduce("sum", w, over=s), g)
    k = b.build()
    hoisted = hoist_loads(k)
    assert _gather_node(hoisted).scope == s
    verify(hoisted)
    assert "W@%7:gather" in dict(coalescing(gather_kernel()).meta)["coalescing"]


def test_a_gather_of_a_value_written_in_the_kernel_is_not_stitched():
    b = KernelBuilder("inner")
    b.add_param(Buffer("ids", dt.int64, (32,), (1,), "in"))
    b.add_param(Buffer("x", f32, (32,), (1,), "in"))
    b.add_param(Buffer("tmp", f32, (32,), (1,), "temp"))
    b.add_param(Buffer("out", f32, (32,), (1,), "out"))
    g = b.scope("grid", "g", 1, None)
    t = b.scope("block", "t", 32, g)
    b.store("tmp", V("t"), b.load("x", V("t"), t), t)
    w = b.load("tmp", V("data$0"), t, data=[(b.load("ids", V("t"), t), 32)])
    b.store("out", V("t"), w, t)
    with pytest.raises(StitchError, match="cannot stitch"):
        stitch(b.build())


# ----------------------------------------------------------------------------- scatters

def _scatter_kernel(target="cpu", grid=1, dtype=f32):
    """out[ids[m], :] += x[m, :] for m < 6 (out has 5 rows of 4): a combining store whose
    row index is data."""
    b = KernelBuilder("scatter", target=target)
    b.add_param(Buffer("ids", dt.int64, (6,), (1,), "in"))
    b.add_param(Buffer("x", dtype, (6, 4), (4, 1), "in"))
    b.add_param(Buffer("out", dtype, (5, 4), (4, 1), "out"))
    g = b.scope("grid", "g", grid, None)
    m = b.scope("serial", "m", 6, g)
    v = b.scope("vector", "v", 4, m)
    i = b.load("ids", V("m"), m)
    b.store("out", V("data$0") * 4 + V("v"), b.load("x", V("m") * 4 + V("v"), v), v, data=[(i, 5)],
            combine="add")
    return b.build()


def test_combining_stores_add_in_order_and_skip_indices_out_of_range():
    k = verify(_scatter_kernel())
    assert parse_kernel(print_kernel(k)) == k
    x = np.random.default_rng().standard_normal((6, 4)).astype(np.float32)
    ids = np.array([1, 4, 1, 7, -1, 0])  # 7 and -1 hit nothing
    want = np.zeros((5, 4), np.float32)
    for m, i in enumerate(ids):
        if 0 <= i < 5:
            want[i] += x[m]
    out = np.zeros(20, np.float32)
    run_kernel(k, {"ids": ids, "x": x.reshape(-1), "out": out})
    np.testing.assert_array_equal(out.reshape(5, 4), want)


def test_combining_stores_need_a_grid_of_one_on_the_cpu_and_wide_numbers():
    assert any("needs a grid of one" in p for p in check(_scatter_kernel(grid=2)))
    verify(_scatter_kernel(target="gpu", grid=2))  # atomic adds on the GPU
    assert any("32- or 64-bit numbers" in p for p in check(_scatter_kernel(dtype=dt.bfloat16)))
