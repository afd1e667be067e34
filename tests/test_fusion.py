"""Fused programs agree with unfused ones and with numpy, on every target, on odd shapes."""
import math

import numpy as np
import pytest

import warpweave as ww
from tests.utils import assert_close, layer_norm_reference, random_array, softmax_reference

TARGETS = ["interp", "cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
# rows of 1, 3, 1000, 4097 and 40000 (two passes: too long for registers) elements;
# more rows than one grid step covers; one row
SHAPES = [(5, 1), (7, 3), (3, 1000), (2, 4097), (300, 64), (1, 128), (2, 40000)]


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


# name: (warpweave function, numpy reference, argument shapes from (R, N), kernels when fused)
CASES = {
    "softmax": (lambda x: ww.softmax(x), lambda x: softmax_reference(x), lambda r, n: [(r, n)]),
    "log_softmax": (lambda x: ww.log_softmax(x),
                    lambda x: np.log(softmax_reference(x)), lambda r, n: [(r, n)]),
    "layer_norm": (lambda x, w, b: ww.layer_norm(x, w, b), layer_norm_reference, lambda r, n: [(r, n), (n,), (n,)]),
    "rms_norm": (lambda x, w: ww.rms_norm(x, w),
                 lambda x, w: x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6) * w,
                 lambda r, n: [(r, n), (n,)]),
    "bias_gelu": (lambda x, b: ww.gelu(x + b, approximate="tanh"), lambda x, b: _gelu_tanh(x + b),
                  lambda r, n: [(r, n), (n,)]),
    "add_layer_norm": (lambda x, r, w, b: (x + r, ww.layer_norm(x + r, w, b)),
                       lambda x, r, w, b: (x + r, layer_norm_reference(x + r, w, b)),
                       lambda r, n: [(r, n), (r, n), (n,), (n,)]),
    "chain": (lambda x, r: ww.relu(0.5 * x + r) * ww.sigmoid(r) - x,
              lambda x, r: np.maximum(0.5 * x + r, 0) * _sigmoid(r) - x, lambda r, n: [(r, n), (r, n)]),
    "row_stats": (lambda x: (x.sum(-1), x.max(-1, keepdims=True), (x * x).mean(-1)),
                  lambda x: (x.sum(-1), x.max(-1, keepdims=True), (x * x).mean(-1)), lambda r, n: [(r, n)]),
}


def _run(fn, target, args, fuse):
    with ww.options(fuse=fuse):
        f = ww.jit(fn, target=target)
        program = f.lower(*args)
        out = f(*args)
    return program, out if isinstance(out, tuple) else (out,)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_matches_unfused_and_numpy(case, shape, target):
    fn, ref_fn, arg_shapes = CASES[case]
    rng = np.random.default_rng()
    args = [random_array(rng, s, "float32") for s in arg_shapes(*shape)]
    fused, got = _run(fn, target, args, True)
    unfused, plain = _run(fn, target, args, False)
    assert len(fused.kernels) == 1, fused.dump("groups")
    assert len(unfused.kernels) > 1 or len(unfused.graph.compute_ops) == 1
    ref = ref_fn(*[a.astype(np.float64) for a in args])
    ref = ref if isinstance(ref, tuple) else (ref,)
    scale = 1 + math.sqrt(shape[1]) / 4
    for g, p, r in zip(got, plain, ref):
        assert_close(g, r, "float32", scale=scale, what=f"{case} fused {shape}")
        assert_close(g, p.astype(np.float64), "float32", scale=scale, what=f"{case} fused vs unfused")


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("case", ["softmax", "layer_norm", "add_layer_norm", "chain"])
def test_fused_16_bit(case, dtype, target):
    fn, ref_fn, arg_shapes = CASES[case]
    rng = np.random.default_rng()
    args = [random_array(rng, s, dtype) for s in arg_shapes(9, 256)]
    fused, got = _run(fn, target, args, True)
    _, plain = _run(fn, target, args, False)
    assert len(fused.kernels) == 1, fused.dump("groups")
    ref = ref_fn(*[a.astype(np.float64) for a in args])
    ref = ref if isinstance(ref, tuple) else (ref,)
    for g, p, r in zip(got, plain, ref):
        assert g.dtype == args[0].dtype
        assert_close(g, r, dtype, scale=4, what=case)
        # each operation rounds to 16 bits in both programs: they agree to the last bit or so
        assert_close(g, p.astype(np.float64), dtype, scale=2, what=f"{case} fused vs unfused")


@pytest.mark.parametrize("target", TARGETS)
def test_causal_masked_softmax(target):
    """Scaled, causally masked softmax written with tensor expressions: one kernel."""
    B, T = 3, 37
    x = ww.placeholder((B, T, T), ww.float32, "x")
    masked = ww.compute((B, T, T), lambda b, i, j: ww.where(j <= i, x[b, i, j] * 0.125, -math.inf))
    k = ww.reduce_axis(T)
    m = ww.compute((B, T), lambda b, i: ww.max(masked[b, i, k], axis=k))
    e = ww.compute((B, T, T), lambda b, i, j: ww.exp(masked[b, i, j] - m[b, i]))
    k2 = ww.reduce_axis(T)
    s = ww.compute((B, T), lambda b, i: ww.sum(e[b, i, k2], axis=k2))
    y = ww.compute((B, T, T), lambda b, i, j: e[b, i, j] / s[b, i])
    program = ww.build(y, [x], target=target)
    assert len(program.kernels) == 1, program.dump("groups")
    xs = random_array(np.random.default_rng(), (B, T, T), "float32")
    ref = np.where(np.tril(np.ones((T, T), bool)), xs.astype(np.float64) * 0.125, -np.inf)
    assert_close(program(xs), softmax_reference(ref), "float32", scale=4)


def test_groups_dump_explains_stitching():
    x = random_array(np.random.default_rng(), (8, 4096), "float32")
    program = ww.jit(lambda x: ww.softmax(x), target="interp").lower(x)
    text = program.dump("groups")
    assert "group 0 [row rows=[8] x 4096]" in text
    assert "stitched:" in text and ":regional" in text and ":local" in text
    assert "global" in text and "shared" in text and "estimate" in text
    assert program.cost_estimate.bytes == 2 * 8 * 4096 * 4  # x read once, y written once
    gir = program.dump("gir")
    assert gir.count("move.global.reg") == 1 and "sync.block" in gir


def test_multi_dimensional_rows_stitch_across_warps():
    """Rows indexed by three dimensions ([2, 3, 4] × 1024): the row maximum and sum
    cross warps through shared memory, whose tile index must not depend on the block."""
    x = random_array(np.random.default_rng(), (2, 3, 4, 1024), "float32")
    program = ww.jit(lambda x: ww.softmax(x), target="interp").lower(x)
    assert len(program.kernels) == 1 and "regional" in program.dump("groups")
    assert_close(program(x), softmax_reference(x), "float32")


def test_a_group_that_cannot_be_stitched_compiles_op_by_op(monkeypatch, tmp_path):
    """Where the stitcher proves nothing, the group's operations become separate kernels
    (each still correct), and the groups dump says why."""
    from warpweave.passes import stitch
    monkeypatch.setattr(stitch, "_choose", lambda kernel, store, load: None)
    monkeypatch.setenv("WARPWEAVE_CACHE_DIR", str(tmp_path))  # the patched compile is not cached
    x = random_array(np.random.default_rng(), (5, 300), "float32")
    program = ww.jit(lambda x: ww.softmax(x), target="interp").lower(x)
    assert len(program.kernels) == len(program.graph.compute_ops) > 1
    assert "compiled op by op (fusion failed)" in program.dump("groups")
    assert_close(program(x), softmax_reference(x), "float32")


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_column_sum_of_a_product_reads_inputs_once(dtype):
    """(x·y).sum(0) at 8192 × 768: the product is computed inside the column reduction
    (one group — a split reduction's partials and their combination — no product in
    DRAM), and its bounds verify."""
    x = random_array(np.random.default_rng(), (8192, 768), dtype)
    program = ww.jit(lambda x, y: (x.astype("float32") * y.astype("float32")).sum(0),
                     target="cuda").lower(x, x)
    assert len({k.ops for k in program.kernels}) == 1, program.dump("groups")
    assert program.cost_estimate.bytes < 2 * x.nbytes + 4 * 1024 * 1024
