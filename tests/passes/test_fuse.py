"""Fusion planning on the tensor graph."""
import numpy as np

import warpweave as ww
from warpweave.frontend.trace import trace
from warpweave.ir import dtypes as dt
from warpweave.ir import expr as ex
from warpweave.passes import fuse
from warpweave.passes.cost import H100
from tests.utils import softmax


def _plan(fn, *shapes, fuse_=True):
    graph, _ = trace(fn, [(s, dt.float32) for s in shapes])
    graph = fuse.inline_broadcast_producers(graph)
    return graph, fuse.plan(graph, H100, fuse=fuse_)


def test_softmax_is_one_row_group_and_cheaper_than_unfused():
    graph, plan = _plan(softmax, (64, 512))
    (group,) = plan.groups
    assert group.pattern == "row" and group.rows == (64,) and group.length == 512
    assert group.outputs == graph.outputs
    _, unfused = _plan(softmax, (64, 512), fuse_=False)
    assert len(unfused.groups) == len(graph.compute_ops)
    assert plan.estimated_time_s < unfused.estimated_time_s
    assert plan.traffic[0].dram_bytes == 2 * 64 * 512 * 4


def test_value_read_inside_and_outside_its_group_is_computed_once():
    def fn(x, r):
        h = x + r
        return h, ww.layer_norm(h)

    graph, plan = _plan(fn, (8, 32), (8, 32))
    (group,) = plan.groups
    h = graph.outputs[0]
    assert group.ops.count(h) == 1 and h in group.outputs


def test_transpose_stays_alone_and_blocks_fusion_through_it():
    graph, plan = _plan(lambda x: (x * 2.0).T + 1.0, (16, 24))
    layout = next(op.name for op in graph.compute_ops if op.kind == "layout")
    assert next(g for g in plan.groups if layout in g.ops).ops == (layout,)
    assert len(plan.groups) == len(graph.compute_ops)


def test_no_cycle_through_an_outside_group():
    # b depends on a through a transpose (its own group); fusing a with c would
    # put the transpose's group both before and after the merged one
    def fn(x):
        a = x * 2.0
        t = a.T
        c = a + t
        return c

    graph, plan = _plan(fn, (8, 8))
    position = {n: k for k, g in enumerate(plan.groups) for n in g.ops}
    for op in graph.compute_ops:
        for src in op.inputs:
            if src in position:
                assert position[src] <= position[op.name]


def test_remote_fusion_of_independent_groups():
    graph, plan = _plan(lambda x, y: (x * 2.0, ww.exp(y)), (32, 32), (32, 32))
    (group,) = plan.groups
    assert set(group.outputs) == set(graph.outputs)


def test_rows_of_different_lengths_do_not_fuse():
    graph, plan = _plan(lambda x, y: (x.sum(-1), y.max(-1)), (8, 32), (8, 16))
    assert len(plan.groups) == 2


def test_inlining_recomputes_broadcast_casts():
    def fn(x, w):
        return x * w.astype("float32")

    graph, _ = trace(fn, [((8, 16), dt.float32), ((16,), dt.bfloat16)])
    inlined = fuse.inline_broadcast_producers(graph)
    assert len(inlined.compute_ops) == 1 < len(graph.compute_ops)
    x = np.random.default_rng().standard_normal((8, 16)).astype(np.float32)
    import ml_dtypes
    w = np.random.default_rng().standard_normal(16).astype(ml_dtypes.bfloat16)
    from warpweave.ir.tensor import evaluate
    a = evaluate(graph, dict(zip(graph.inputs, (x, w))))[graph.outputs[0]]
    b = evaluate(inlined, dict(zip(inlined.inputs, (x, w))))[inlined.outputs[0]]
    np.testing.assert_array_equal(a, b)


def test_cheap_producers_are_inlined_into_column_reductions():
    """(x * y).sum(0): the product is recomputed inside the column reduction instead of
    being written to DRAM; a producer other groups also read stays for them."""
    def fn(x, y):
        p = x * y
        return p.sum(0), p.sum(-1)

    graph, _ = trace(fn, [((64, 48), dt.float32), ((64, 48), dt.float32)])
    inlined = fuse.inline_broadcast_producers(graph)
    column = next(op for op in inlined.compute_ops if op.kind == "reduction-column")
    assert {ld.tensor for ld in ex.loads(column.value)} == set(inlined.inputs)
    assert len(inlined.compute_ops) == len(graph.compute_ops)  # the row sum still reads it


def test_split_replaces_a_group_by_its_operations():
    graph, plan = _plan(lambda x: ww.softmax(x), (8, 32))
    (group,) = plan.groups
    parts = fuse.split(plan, 0, graph, H100)
    assert [g.ops for g in parts.groups] == [(name,) for name in group.ops]
    assert all(g.outputs == g.ops for g in parts.groups[:-1])
    assert len(parts.traffic) == len(parts.groups)
    assert parts.estimated_time_s > plan.estimated_time_s


def test_transposed_reads_are_layout_operations():
    """A copy that walks its input along another axis than the last is a layout
    operation (a tiled transpose of its own) whether the input is indexed by axes,
    by expressions of them, or through one flat strided index; a slice is not."""
    from warpweave.ir.tensor import ComputeOp

    i, j = ex.Var("i0"), ex.Var("i1")
    load = {"axes": ex.Load("x", (j, i), dt.float32),
            "expressions": ex.Load("x", (j, i * 2 + 1), dt.float32),
            "flat": ex.Load("x", (j * 64 + i,), dt.float32),
            "slice": ex.Load("x", (i, j + 3), dt.float32)}
    kinds = {name: ComputeOp("t", (16, 16), dt.float32, (i, j), ld).kind for name, ld in load.items()}
    assert kinds == {"axes": "layout", "expressions": "layout", "flat": "layout", "slice": "elementwise"}


def test_a_consumer_takes_a_chain_of_cheap_producers_only_so_far():
    """A broadcast consumer of a long chain of cheap operations (an unrolled
    recurrence) would absorb the whole chain, one producer at a time, each rewrite
    walking its growing body: consumers stop taking producers past a bounded size,
    and the program still computes the chain."""
    def f(v, w):
        for _ in range(300):
            v = v * 1.01 + 0.1
        return v[:, None] + w[None, :]

    graph, single = trace(f, [((8,), dt.float32), ((5,), dt.float32)])
    inlined = fuse.inline_broadcast_producers(graph)
    sizes = [len(ex.postorder(op.body)) for op in inlined.compute_ops]
    assert max(sizes) <= fuse._INLINE_INTO_MAX_NODES + fuse._INLINE_MAX_NODES
    assert len(inlined.compute_ops) < len(graph.compute_ops)  # it still inlines up to the bound
    rng = np.random.default_rng()
    v, w = rng.standard_normal(8).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    want = v.astype(np.float64)
    for _ in range(300):
        want = want * 1.01 + 0.1
    got = ww.jit(f, target="cpu")(v, w)
    np.testing.assert_allclose(np.asarray(got), want[:, None] + w[None, :], rtol=1e-4)
