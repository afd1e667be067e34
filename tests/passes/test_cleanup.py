"""Each pass keeps what a kernel computes (checked on the interpreter) and does its job."""
import numpy as np
import pytest

from tests.compiler.test_lower import graph_for, run_interp, single_kernel_schedule
from tests.utils import random_array
from warpweave.compiler.lower import lower_op
from warpweave.ir import dtypes as dt
from warpweave.ir import expr as ex
from warpweave.ir.gir import Buffer, KernelBuilder
from warpweave.passes.cleanup import DEFAULT_PASSES, eliminate_dead_nodes, simplify_exprs
from warpweave.passes.manager import PassManager


@pytest.mark.parametrize("family", ["gpu", "cpu"])
def test_passes_preserve_semantics(family):
    rng = np.random.default_rng()
    g, ops = graph_for(5, 300, dt.float32)
    inputs = {"x": random_array(rng, (5, 300), "float32"), "y": random_array(rng, (300,), "float32")}
    for op in ops:
        before = lower_op(op, g, single_kernel_schedule(op, family))
        seen = []
        after = PassManager(DEFAULT_PASSES, dump=lambda stage, k: seen.append(stage)).run(before)
        assert seen == ["lowered", "simplify", "dce"]
        np.testing.assert_array_equal(run_interp(before, op, inputs), run_interp(after, op, inputs))


def _kernel_with_dead_code_and_true_predicate():
    b = KernelBuilder("k", "cpu")
    b.add_param(Buffer("x", dt.float32, (8,), (1,), "in"))
    b.add_param(Buffer("y", dt.float32, (8,), (1,), "out"))
    g = b.scope("grid", "g", 8, None)
    x = b.load("x", ex.Var("g"), g, pred=ex.binary("lt", ex.Var("g"), 8))
    b.compute("exp", [x], g, dt.float32)  # unused
    b.store("y", ex.Var("g") + 0, b.compute("neg", [x], g, dt.float32), g)
    return b.build()


def test_simplify_drops_predicates_that_always_hold():
    k = simplify_exprs(_kernel_with_dead_code_and_true_predicate())
    load = next(n for n in k.nodes if n.op == "move.global.reg")
    assert load.attr("pred") is None
    store = next(n for n in k.nodes if n.op == "move.reg.global")
    assert store.attr("offset") == ex.Var("g")


def test_dce_removes_unused_values_only():
    k = _kernel_with_dead_code_and_true_predicate()
    out = eliminate_dead_nodes(k)
    assert "compute.exp" not in [n.op for n in out.nodes]
    assert "compute.neg" in [n.op for n in out.nodes]
    assert len(out.nodes) == len(k.nodes) - 1
    x = np.random.default_rng().standard_normal(8).astype(np.float32)
    from warpweave.backends.interp import run_kernel

    y = np.full(8, np.nan, np.float32)
    run_kernel(out, {"x": x, "y": y})
    np.testing.assert_array_equal(y, -x)
