"""Matrix operands that are not strided views get a copy of their own
(warpweave.passes.operands), so that the product compiles as one."""
import numpy as np
import pytest

import warpweave as ww
from warpweave.frontend.trace import trace
from warpweave.ir import dtypes as dt
from warpweave.ir.tensor import evaluate
from warpweave.passes import fuse
from warpweave.passes.operands import materialize_operands


def _heads_then_product(x, w):
    """Attention's heads merged back ([b, h, s, d] → [b·s, h·d]) and projected; the
    same merged heads also multiplied transposed (the weight gradient's form)."""
    merged = (x * 2.0).transpose(0, 2, 1, 3).reshape(64, 64)
    return merged @ w, merged.T @ merged


def _trace(fn, *shapes):
    graph, _ = trace(fn, [(s, dt.float32) for s in shapes])
    return graph


def test_a_product_of_merged_heads_reads_a_copy_and_is_a_matrix_product():
    graph = _trace(_heads_then_product, (2, 4, 32, 16), (64, 48))
    products = [op for op in graph.compute_ops if op.kind == "contraction"]
    assert products and not any(fuse.is_gemm(op, graph) for op in products)
    made = materialize_operands(graph, fuse.is_gemm)
    now = [made[op.name] for op in products]
    assert all(fuse.is_gemm(op, made) for op in now)
    copies = [op for op in made.compute_ops if op.name not in graph.ops]
    assert 1 <= len(copies) <= 3  # one per distinct operand layout, shared between products
    rng = np.random.default_rng(3)
    inputs = {graph.inputs[0]: rng.standard_normal((2, 4, 32, 16)).astype(np.float32),
              graph.inputs[1]: rng.standard_normal((64, 48)).astype(np.float32)}
    want, got = evaluate(graph, inputs), evaluate(made, inputs)
    for name in graph.outputs:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5)


def test_products_of_strided_operands_and_other_reductions_are_left_alone():
    plain = _trace(lambda a, b: (a.T @ b, (a * a).sum(axis=0)), (32, 16), (32, 8))
    assert materialize_operands(plain, fuse.is_gemm) is plain
    three = _trace(lambda a, b, c: (a[:, :, None] * b[None, :, :] * c[:, :, None]).sum(axis=1),
                   (8, 16), (16, 4), (8, 16))
    assert materialize_operands(three, fuse.is_gemm) is three


@pytest.mark.parametrize("target", ["cpu", "interp"])
def test_merged_heads_product_end_to_end(target):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 4, 32, 16)).astype(np.float32)
    w = rng.standard_normal((64, 48)).astype(np.float32)
    fn = ww.jit(_heads_then_product, target=target)
    got = fn(x, w)
    merged = (x.astype(np.float64) * 2).transpose(0, 2, 1, 3).reshape(64, 64)
    np.testing.assert_allclose(got[0], merged @ w, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got[1], merged.T @ merged, rtol=1e-4, atol=1e-4)
    if target == "cpu":
        program = fn.lower(x, w)
        assert sum(g.pattern == "contraction" for g in program.plan.groups) == 2


def test_batched_products_over_split_heads_become_batched_matrix_products():
    def fn(q, k):  # q [b·s, h·d] split into per-head batches [b·h, s, d], then q @ kᵀ
        heads = q.reshape(2, 32, 4, 16).transpose(0, 2, 1, 3).reshape(8, 32, 16)
        return heads @ k
    graph = _trace(fn, (64, 64), (8, 16, 24))
    made = materialize_operands(graph, fuse.is_gemm)
    (out,) = graph.outputs
    assert not fuse.is_gemm(graph[out], graph) and fuse.is_gemm(made[out], made)
    rng = np.random.default_rng(5)
    inputs = {graph.inputs[0]: rng.standard_normal((64, 64)).astype(np.float32),
              graph.inputs[1]: rng.standard_normal((8, 16, 24)).astype(np.float32)}
    np.testing.assert_allclose(evaluate(made, inputs)[out], evaluate(graph, inputs)[out], rtol=1e-5, atol=1e-5)
