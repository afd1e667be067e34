"""Each pass keeps what a kernel computes (checked on the interpreter) and does its job."""
import numpy as np
import pytest

from tests.lower.test_lower import graph_for, run_interp, single_kernel_schedule
from tests.utils import random_array
from warpweave.lower.op import lower_op
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


def test_fold_casts_skips_exact_round_trips_only():
    """cast<bf16>(cast<f32>(x: bf16)) is x; cast<f32>(x: f32) is x; a narrowing round
    trip cast<f32>(cast<bf16>(y: f32)) rounds and stays."""
    from warpweave.passes.cleanup import fold_casts

    b = KernelBuilder("k", "gpu")
    b.add_param(Buffer("x", dt.bfloat16, (64,), (1,), "in"))
    b.add_param(Buffer("y", dt.bfloat16, (64,), (1,), "out"))
    b.add_param(Buffer("z", dt.float32, (64,), (1,), "out"))
    g = b.scope("grid", "g", 1, None)
    t = b.scope("block", "t", 64, g)
    x = b.load("x", ex.Var("t"), t)
    wide = b.compute("cast", [x], t, dt.float32)
    same = b.compute("cast", [wide], t, dt.float32)
    b.store("y", ex.Var("t"), b.compute("cast", [same], t, dt.bfloat16), t)
    narrow = b.compute("cast", [b.compute("exp", [wide], t, dt.float32)], t, dt.bfloat16)
    b.store("z", ex.Var("t"), b.compute("cast", [narrow], t, dt.float32), t)
    k = b.build()
    folded = eliminate_dead_nodes(fold_casts(k))
    ops = [n.op for n in folded.nodes]
    assert ops.count("compute.cast") == 3  # x→f32 for exp, exp→bf16, →f32 for z
    store_y = next(n for n in folded.nodes if n.op == "move.reg.global" and n.attr("buffer") == "y")
    assert folded.operands(store_y.id)[-1].src == x
    from warpweave.backends.interp import run_kernel
    from warpweave.ir.gir_verify import verify

    verify(folded)
    xs = random_array(np.random.default_rng(), (64,), "bfloat16")
    outs = []
    for kernel in (k, folded):
        bufs = {"x": xs, "y": np.zeros(64, xs.dtype), "z": np.full(64, np.nan, np.float32)}
        run_kernel(kernel, bufs)
        outs.append(bufs)
    np.testing.assert_array_equal(outs[0]["y"].view(np.uint16), xs.view(np.uint16))
    np.testing.assert_array_equal(outs[1]["y"].view(np.uint16), xs.view(np.uint16))
    np.testing.assert_array_equal(outs[0]["z"], outs[1]["z"])
