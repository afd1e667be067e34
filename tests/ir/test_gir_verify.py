"""The GIR verifier, on hand-built kernels (see example_kernels.py)."""
import dataclasses
import random

import pytest

from warpweave.errors import VerificationError
from warpweave.ir import dtypes as dt
from warpweave.ir import expr as ex
from warpweave.ir.gir import Buffer, Edge, KernelBuilder, SharedAlloc, make_kernel
from warpweave.ir.gir_verify import Limits, check, verify

from tests.ir.example_kernels import GOOD, V, cpu_kernel, lt, rowsum_kernel
from tests.utils import with_l2_prefetch

f16, f32, i64 = dt.float16, dt.float32, dt.int64


def problems_of(kernel, **limits):
    return check(kernel, Limits(**limits) if limits else None)


def rejected(kernel, **limits) -> str:
    with pytest.raises(VerificationError) as info:
        verify(kernel, Limits(**limits) if limits else None)
    return str(info.value)


# ----------------------------------------------------------------------------- good kernels

@pytest.mark.parametrize("name", sorted(GOOD))
def test_accepts_good_kernels(name):
    k = GOOD[name]()
    assert verify(k) is k
    assert check(k) == []


def test_predicated_bounds_are_proven_from_the_predicate():
    # x[g*1000 + i*128 + t] overshoots by interval arithmetic (i*128 + t reaches 1023)
    # and the shared read red[t % 32] reaches 31 > 3: the predicates' conjuncts
    # (i*128 + t < 1000, t % 32 < 4) prove both without any exhaustive evaluation.
    assert check(rowsum_kernel(), Limits(max_exhaustive_points=16)) == []


def test_bounds_beyond_the_predicate_analysis_need_exhaustive_evaluation():
    b = KernelBuilder("sq", "gpu")
    b.add_param(Buffer("x", f32, (100,), (1,), "in"))
    b.add_param(Buffer("y", f32, (100,), (1,), "out"))
    g = b.scope("grid", "g", 1, None)
    t = b.scope("block", "t", 32, g)
    x = b.load("x", V("t") * 4, t, pred=lt(V("t") * V("t"), 625))  # t < 25 keeps 4t < 100
    b.store("y", V("t"), x, t)
    k = b.build()
    assert check(k) == []  # 32 points: evaluated exhaustively
    msg = rejected(k, max_exhaustive_points=16)
    assert "unproven bounds" in msg and "move.global.reg x" in msg


# ----------------------------------------------------------------------------- the rejections the brief names

def test_missing_barrier():
    msg = rejected(rowsum_kernel(sync=False))
    assert "missing barrier between %18 (write red) and %19 (read red)" in msg


def _elementwise(n=256, block=128, target="gpu"):
    b = KernelBuilder("ew", target=target)
    b.add_param(Buffer("x", f32, (n,), (1,), "in"))
    b.add_param(Buffer("y", f32, (n,), (1,), "out"))
    g = b.scope("grid", "g", n // block, None)
    t = b.scope("block", "t", block, g)
    return b, g, t, V("g") * block + V("t")


def test_level_mismatch_global_value_into_compute():
    b, g, t, off = _elementwise()
    x = b.load("x", off, t)
    s = b.compute("add", ["%0", x], t, f32)  # %0 is mem.global x: a DRAM buffer, not a value
    b.store("y", off, s, t)
    msg = rejected(b.build())
    assert "level mismatch" in msg
    assert "%0 (mem.global x)" in msg and f"{s} (compute.add)" in msg


def test_level_mismatch_edge_marked_global():
    b, g, t, off = _elementwise()
    x = b.load("x", off, t)
    e = b.compute("exp", [x], t, f32)
    b.store("y", off, e, t)
    k = b.build()
    edges = [dataclasses.replace(ed, level="global", shape=()) if ed.dst == e else ed
             for ed in k.edges]
    msg = rejected(dataclasses.replace(k, edges=tuple(edges)))
    assert "level mismatch" in msg and f"{x} (move.global.reg x)" in msg and e in msg


def test_level_mismatch_reg_value_into_memory_slot():
    b, g, t, off = _elementwise()
    x = b.load("x", off, t)
    b.store("y", off, x, t)
    k = b.build()
    # wire the loaded value into the load of x as if it were x's memory state
    edges = list(k.edges) + [Edge(x, "%5", 0, "reg", f32)]
    k2 = make_kernel(k.name, k.params, k.shared, k.nodes, edges)
    msg = rejected(k2)
    assert "level mismatch" in msg or "operands" in msg


def test_out_of_bounds_store():
    b, g, t, off = _elementwise()
    x = b.load("x", off, t)
    st = b.store("y", off + 1, x, t)
    msg = rejected(b.build())
    assert "out-of-bounds store" in msg and f"{st} (move.reg.global y)" in msg
    assert "y[256]" in msg and "g=1, t=127" in msg and "0..255" in msg


def test_out_of_bounds_store_despite_predicate():
    b, g, t, off = _elementwise()
    x = b.load("x", off, t)
    st = b.store("y", off + 2, x, t, pred=lt(off, 255))  # should be < 254
    msg = rejected(b.build())
    assert f"out-of-bounds store: {st}" in msg and "where its predicate holds" in msg


def test_predicated_access_in_bounds():
    b, g, t, off = _elementwise()
    x = b.load("x", off + 2, t, pred=lt(off + 2, 256))
    b.store("y", off, x, t)
    assert check(b.build()) == []


def test_value_used_outside_its_scope():
    b = KernelBuilder("scoped", target="cpu")
    b.add_param(Buffer("x", f32, (64,), (1,), "in"))
    b.add_param(Buffer("y", f32, (64,), (1,), "out"))
    g = b.scope("grid", "g", 4, None)
    i = b.scope("serial", "i", 16, g)
    x = b.load("x", V("g") * 16 + V("i"), i)
    j = b.scope("serial", "j", 16, g)
    e = b.compute("exp", [x], j, f32)
    b.store("y", V("g") * 16 + V("j"), e, j)
    msg = rejected(b.build())
    assert "used outside its scope" in msg
    assert x in msg and i in msg and e in msg and j in msg


def test_shuffle_in_cpu_kernel():
    b = KernelBuilder("cpu_shfl", target="cpu")
    b.add_param(Buffer("x", f32, (64,), (1,), "in"))
    b.add_param(Buffer("y", f32, (64,), (1,), "out"))
    g = b.scope("grid", "g", 64, None)
    x = b.load("x", V("g"), g)
    s = b.shuffle("bfly", x, ex.Const(1, i64), g)
    b.store("y", V("g"), s, g)
    msg = rejected(b.build())
    assert f"cpu kernel has {s} (move.reg.reg)" in msg


def test_too_much_shared_memory():
    b, g, t, off = _elementwise(n=128)
    b.add_shared(SharedAlloc("tile", f32, 65536))
    x = b.load("x", V("t"), t)
    b.store("tile", V("t"), x, t)
    b.sync(["tile"], t)
    r = b.load("tile", 127 - V("t"), t)
    b.store("y", V("t"), r, t)
    msg = rejected(b.build())  # more than sm_90's 227 KiB (dynamic shared memory)
    assert "shared memory: 262144 B" in msg and "tile 262144 B" in msg and "232448" in msg
    assert check(b.build(), Limits(max_shared_bytes=1 << 18)) == []


# ----------------------------------------------------------------------------- more checks

def test_every_problem_is_listed():
    b = KernelBuilder("many")
    b.add_param(Buffer("x", f32, (100,), (1,), "in"))
    b.add_param(Buffer("y", f32, (100,), (1,), "out"))
    g = b.scope("grid", "g", 1, None)
    t = b.scope("block", "t", 2048, g)  # too many threads, not needed for the rest
    x = b.load("x", V("t"), t)  # out of bounds for t >= 100
    b.store("y", V("t") % 100, b.compute("exp", ["%1", x], t, f32), t)  # level + arity
    try:
        verify(b.build())
    except VerificationError as err:
        probs = err.problems
        msg = str(err)
    else:
        pytest.fail("accepted")
    assert len(probs) >= 4
    assert "block scope %3 has 2048 threads; the limit is 1024" in msg
    assert "out-of-bounds load" in msg and "level mismatch" in msg and "operands" in msg
    assert msg.count("\n  - ") == len(probs)


def test_structure_errors():
    k = cpu_kernel()
    nodes = list(k.nodes)
    nodes[5], nodes[6] = nodes[6], nodes[5]  # vector scope %5 after the const %6: fine ...
    k2 = dataclasses.replace(k, nodes=tuple(nodes))
    assert check(k2) == []
    nodes = list(k.nodes)
    nodes[7], nodes[9] = nodes[9], nodes[7]  # ... but a consumer before its producer is not
    msg = rejected(dataclasses.replace(k, nodes=tuple(nodes)))
    assert "emission order" in msg and "%7" in msg and "%9" in msg
    dup = dataclasses.replace(k, nodes=k.nodes + (k.nodes[-1],))
    assert "node id %12 is used by 2 nodes" in rejected(dup)
    dangling = dataclasses.replace(k, edges=k.edges + (Edge("%11", "%99", 0, "reg", f32),))
    assert "destination %99 does not exist" in rejected(dangling)


def test_scope_rules():
    b = KernelBuilder("scopes")
    b.add_param(Buffer("x", f32, (64,), (1,), "in"))
    g = b.scope("grid", "g", 2, None)
    t = b.scope("block", "t", 32, g)
    s = b.scope("serial", "t", 0, t)  # duplicate var, extent 0
    b2 = b.scope("block", "u", 32, s)  # second block, not directly in the grid
    c = b.const(ex.Const(1.0, f32), None)  # outside the grid
    msg = rejected(b.build())
    assert "scope variable 't' is bound by 2 scopes" in msg
    assert f"scope {s} (parallel.serial t < 0) has extent 0" in msg
    assert "2 parallel.block scopes" in msg and f"block scope {b2} must lie directly" in msg
    assert f"{c} (compute.const) lies at the root" in msg


def test_reduce_rules():
    b = KernelBuilder("red", target="cpu")
    b.add_param(Buffer("x", f32, (64,), (1,), "in"))
    b.add_param(Buffer("y", f32, (4,), (1,), "out"))
    g = b.scope("grid", "g", 4, None)
    i = b.scope("serial", "i", 16, g)
    x = b.load("x", V("g") * 16 + V("i"), i)
    r = b.reduce("sum", x, over=i, mask=lt(V("i"), V("k")))  # k is no scope variable
    b.store("y", V("g"), r, g)
    msg = rejected(b.build())
    assert f"{r} (compute.reduce): mask lt(i, k) uses k" in msg
    # a reduce placed in the wrong scope
    k = b.build()
    bad = [n.replace(scope=i) if n.id == r else n for n in k.nodes]
    msg = rejected(dataclasses.replace(k, nodes=tuple(bad)))
    assert f"{r} (compute.reduce) lies in {i} but reduces over {i}" in msg


def test_barrier_and_shuffle_placement():
    b = KernelBuilder("placement")
    b.add_param(Buffer("x", f32, (96,), (1,), "in"))
    b.add_param(Buffer("y", f32, (96,), (1,), "out"))
    b.add_shared(SharedAlloc("s", f32, 96))
    g = b.scope("grid", "g", 1, None)
    t = b.scope("block", "t", 96 + 4, g)  # not a multiple of 32
    v = b.scope("vector", "v", 1, t)
    ok = lt(V("t"), 96)
    x = b.load("x", V("t") + V("v"), v, pred=ok)
    w = b.store("s", V("t") + V("v"), x, v, pred=ok)
    sy = b.sync(["s"], v)  # inside a vector scope
    r = b.load("s", V("t"), t, pred=ok)
    sh = b.shuffle("down", r, V("t") % 32, t)  # lane not a constant
    b.store("y", V("t"), sh, t, pred=ok)
    msg = rejected(b.build())
    assert f"sync.block {sy} lies inside vector scope {v}" in msg
    assert f"shuffle {sh} needs whole warps" in msg and "100 threads" in msg
    assert f"shuffle {sh} (down) needs a constant lane argument" in msg
    assert "missing barrier" not in msg and w


def test_buffer_must_match_memory_state():
    b, g, t, off = _elementwise()
    x = b.load("x", off, t)
    b.store("y", off, x, t)
    k = b.build()
    bad = [n.replace(attrs={**n.attr_map, "buffer": "y"}) if n.id == x else n for n in k.nodes]
    msg = rejected(dataclasses.replace(k, nodes=tuple(bad)))
    assert f"{x} (move.global.reg y) names buffer y but the global memory state reaching it " \
           f"from %0 is x's" in msg


def test_dtype_rules():
    b, g, t, off = _elementwise()
    x = b.load("x", off, t)
    i = b.index(off, t)
    s = b.compute("add", [x, i], t, f32)  # float32 + int64
    c = b.compute("lt", [x, x], t, f32)  # comparison must be bool
    sel = b.compute("select", [x, x, x], t, f32)  # float condition
    b.store("y", off, b.compute("cast", [s], t, f16), t)  # float16 into float32 buffer
    msg = rejected(b.build())
    assert f"{s} (compute.add): operands differ in dtype: float32 ({x}) and int64 ({i})" in msg
    assert f"{c} (compute.lt): a comparison produces bool" in msg
    assert f"{sel} (compute.select): the condition ({x}) must be bool" in msg
    assert "stores a float16 value from %9 into float32 buffer y: cast it first" in msg


def test_vector_limit_and_edge_shape():
    k = cpu_kernel(n=2048, vec=32, inner=4)
    assert check(k) == []  # CPU vectors may span several SIMD registers (limit 256)
    assert "vector scope %5 has 32 elements; the limit is 16" in rejected(k, max_vector_elems=16)
    assert check(dataclasses.replace(k, target="gpu"), Limits()) == []  # GPU limit: 32
    k64 = cpu_kernel(n=2048, vec=64, inner=4)
    assert check(k64) == []
    assert "vector scope %5 has 64 elements; the limit is 32" in "\n".join(
        check(dataclasses.replace(k64, target="gpu"), Limits()))
    k = cpu_kernel()
    edges = tuple(dataclasses.replace(e, shape=()) if e.src == "%7" else e for e in k.edges)
    assert "per-thread shape [] but %7 is a value of shape [4]" in rejected(
        dataclasses.replace(k, edges=edges))


def test_malformed_kernels_never_crash_the_verifier():
    rng = random.Random(1234)
    bases = [f() for f in GOOD.values()]
    for _ in range(300):
        k = rng.choice(bases)
        nodes, edges = list(k.nodes), list(k.edges)
        for _ in range(rng.randint(1, 3)):
            c = rng.randrange(6)
            if c == 0 and edges:
                edges.pop(rng.randrange(len(edges)))
            elif c == 1 and edges:
                j = rng.randrange(len(edges))
                edges[j] = dataclasses.replace(edges[j], src=rng.choice(nodes).id,
                                               level=rng.choice(["global", "shared", "reg", "x"]))
            elif c == 2:
                j = rng.randrange(len(nodes))
                nodes[j] = nodes[j].replace(scope=rng.choice([None, "%77", rng.choice(nodes).id]))
            elif c == 3:
                j, m = rng.randrange(len(nodes)), rng.randrange(len(nodes))
                nodes[j], nodes[m] = nodes[m], nodes[j]
            elif c == 4 and nodes[-1].attrs:
                n = rng.choice(nodes)
                if n.attrs:
                    key = rng.choice(n.attrs)[0]
                    nodes[nodes.index(n)] = n.replace(attrs={**n.attr_map, key: rng.choice(
                        [None, 3, "s", V("zz"), ex.Const(1.5, f32), (1, "%3")])})
            else:
                nodes.pop(rng.randrange(len(nodes)))
        probs = check(make_kernel(k.name, k.params, k.shared, nodes, edges, k.target))
        assert not [p for p in probs if "could not finish" in p], probs


# ----------------------------------------------------------------------------- load hints

def _copy_kernel(hint, write_back=False):
    """y[t] = x[t] (or x[t] = x[t] with write_back), the load carrying l2_prefetch=hint."""
    b = KernelBuilder("copy")
    b.add_param(Buffer("x", f32, (64,), (1,), "inout" if write_back else "in"))
    if not write_back:
        b.add_param(Buffer("y", f32, (64,), (1,), "out"))
    t = b.scope("block", "t", 64, b.scope("grid", "g", 1, None))
    v = b.load("x", V("t"), t)
    b.store("x" if write_back else "y", V("t"), v, t)
    return with_l2_prefetch(b.build(), hint)


def test_l2_prefetch_hints():
    assert problems_of(_copy_kernel(128)) == []
    assert "must be one of (64, 128, 256)" in rejected(_copy_kernel(100))
    assert "which the kernel writes" in rejected(_copy_kernel(128, write_back=True))
