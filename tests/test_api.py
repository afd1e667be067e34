"""The public API contract: jit forms, Program, targets, dumps, tensor expressions, errors."""
import os

import ml_dtypes
import numpy as np
import pytest

import warpweave as ww
from tests.utils import assert_close
from tests.utils import softmax as _softmax
from tests.utils import softmax_reference as _np_softmax


@pytest.fixture
def x():
    return np.random.default_rng().standard_normal((6, 50)).astype(np.float32)


def test_three_ways_to_jit(x):
    @ww.jit
    def a(v):
        return _softmax(v)

    @ww.jit(target="interp")
    def b(v):
        return _softmax(v)

    c = ww.jit(_softmax, target="cpu")
    for f in (a, b, c):
        out = f(x)
        assert isinstance(out, np.ndarray) and out.dtype == np.float32
        assert_close(out, _np_softmax(x), "float32")


def test_compiled_once_per_shape_dtype_and_target(x):
    f = ww.jit(_softmax, target="cpu")
    p1 = f.lower(x)
    assert f.lower(x.copy()) is p1
    assert f.lower(x[:3]) is not p1
    assert f.lower(x.astype(np.float16)) is not p1
    assert f.lower(x[:3]).graph[f.lower(x[:3]).graph.inputs[0]].shape == (3, 50)


def test_program_inspection(x):
    p = ww.jit(_softmax, target="cpu").lower(x)
    assert isinstance(p, ww.Program)
    assert len(p.kernels) == 1  # max, sub, exp, sum, div fused into one row group
    assert "placeholder" in p.dump("tensor") and "reduction-row" in p.dump("tensor")
    groups = p.dump("groups")
    assert groups.count("group ") == 1 and "[row rows=[6] x 50]" in groups and "stitched:" in groups
    gir = p.dump("gir")
    assert gir.count("kernel ") >= len(p.kernels) and "move.global.reg" in gir
    llvm = p.dump("llvm")
    assert "define" in llvm and "<16 x float>" in llvm
    with pytest.raises(ww.TargetError):
        p.dump("ptx")
    with pytest.raises(ww.ArgumentError, match="unknown stage"):
        p.dump("asm")
    assert_close(p(x), _np_softmax(x), "float32")


def test_interp_runs_gpu_style_kernels(x):
    p = ww.jit(lambda v: v.sum(axis=1), target="interp").lower(x)
    (k,) = p.kernels
    assert k.gir.target == "gpu" and k.gir.block >= 32
    ops = [n.op for n in k.gir.nodes]
    assert "move.reg.reg" in ops  # the warp shuffles run in the interpreter
    assert_close(p(x), x.astype(np.float64).sum(1), "float32", scale=10)


def test_several_outputs_and_unused_arguments(x):
    @ww.jit(target="cpu")
    def f(a, unused, b):
        return a + b, (a * b).sum()

    y = np.random.default_rng().standard_normal(50).astype(np.float32)
    s, t = f(x, np.ones(3, np.int32), y)
    assert_close(s, x + y, "float32")
    assert t.shape == () and np.isclose(t, (x.astype(np.float64) * y).sum(), rtol=1e-4)


def test_bfloat16_host_arrays():
    x = np.random.default_rng().standard_normal((4, 33)).astype(ml_dtypes.bfloat16)
    out = ww.jit(lambda v: ww.tanh(v) * 2.0, target="cpu")(x)
    assert out.dtype == ml_dtypes.bfloat16
    assert_close(out, np.tanh(x.astype(np.float64)) * 2, "bfloat16")


def test_tensor_expressions_build():
    A = ww.placeholder((40, 30), "float32", name="A")
    B = ww.placeholder((30,), "float32", name="B")
    k = ww.reduce_axis(30, name="k")
    rows = ww.compute((40,), lambda i: ww.sum(A[i, k] * B[k], axis=k), name="rows")
    scaled = ww.compute((40, 30), lambda i, j: ww.exp(A[i, j]) * 0.5, name="scaled")
    rng = np.random.default_rng()
    a, b = rng.standard_normal((40, 30)).astype(np.float32), rng.standard_normal(30).astype(np.float32)
    for target in ("cpu", "interp"):
        p = ww.build([rows, scaled], [A, B], target=target)
        r, s = p(a, b)
        assert_close(r, a.astype(np.float64) @ b, "float32", scale=10)
        assert_close(s, np.exp(a.astype(np.float64)) * 0.5, "float32")
    single = ww.build(rows, [A, B], target="cpu")(a, b)
    assert isinstance(single, np.ndarray) and single.shape == (40,)


def test_dump_dir_from_environment(tmp_path, monkeypatch, x):
    monkeypatch.setenv("WARPWEAVE_DUMP", str(tmp_path))
    p = ww.jit(_softmax, target="cpu").lower(x)
    files = sorted(os.listdir(p.dump_dir))
    assert os.path.dirname(p.dump_dir) == str(tmp_path)
    (k,) = p.kernels
    gir = [f for f in files if f.endswith(".gir")]
    assert gir == [f"02-{k.name}.{n:02d}-{s}.gir" for n, s in enumerate(
        ["lowered", "simplify", "fold-casts", "stitch", "forward-loads", "hoist-loads", "dce",
         "prefetch-lines", "coalescing"])]
    assert [f[:-4] for f in files if f.endswith(".dot")] == [f[:-4] for f in gir]
    assert "after stitch" in open(os.path.join(p.dump_dir, f"02-{k.name}.03-stitch.dot")).read()
    assert [f for f in files if not f.endswith((".gir", ".dot", ".svg"))] == \
        ["00-tensor.txt", "01-groups.txt", "03-llvm.ll", "04-llvm.opt.ll"]
    text = open(os.path.join(p.dump_dir, f"02-{k.name}.06-dce.gir")).read()
    from warpweave.ir.gir_parse import parse_kernel

    assert parse_kernel(text) == p.kernels[0].gir


def test_options_context_sets_default_target(x):
    with ww.options(target="interp"):
        assert ww.jit(_softmax).lower(x).target == "interp"
    assert ww.jit(_softmax).lower(x).target == "cpu"
    with pytest.raises(ww.ArgumentError, match="unknown options"):
        with ww.options(colour="blue"):
            pass


# ----------------------------------------------------------------------------- errors

def test_cuda_target_compiles_without_a_gpu(x):
    from warpweave.backends.cuda import driver

    f = ww.jit(_softmax, target="cuda")
    p = f.lower(x)
    assert p.target == "cuda" and len(p.kernels) == 1
    assert p.dump("ptx").count(".entry") == 1 and "nvptx64" in p.dump("llvm")
    if not driver.available():
        with pytest.raises(ww.TargetError, match="cannot run a cuda program here"):
            f(x)


def test_unknown_target():
    with pytest.raises(ww.Error, match="unknown target 'tpu'"):
        ww.jit(_softmax, target="tpu")


def test_non_array_argument(x):
    f = ww.jit(_softmax, target="cpu")
    with pytest.raises(ww.ArgumentError, match="numpy arrays or CUDA arrays, got list"):
        f([[1.0, 2.0]])
    with pytest.raises(ww.ArgumentError, match="float"):
        f(1.5)


def test_wrong_argument_count_on_program(x):
    p = ww.jit(_softmax, target="cpu").lower(x)
    with pytest.raises(ww.ArgumentError, match=r"takes 1 arguments \(float32\[6, 50\]\), got 2"):
        p(x, x)


def test_wrong_shape_and_dtype_on_program(x):
    p = ww.jit(_softmax, target="cpu").lower(x)
    with pytest.raises(ww.ShapeError, match=r"expected shape \(6, 50\), got \(5, 50\)"):
        p(x[:5])
    with pytest.raises(ww.DTypeError, match="expected dtype float32, got float64"):
        p(x.astype(np.float64))


def test_wrong_argument_count_when_tracing(x):
    def add(a, b):
        return a + b

    with pytest.raises(ww.ArgumentError, match=r"add\(a, b\) was called with 1 arguments"):
        ww.jit(add, target="cpu")(x)


def test_shape_mismatch_names_both_shapes():
    f = ww.jit(lambda a, b: a + b, target="cpu")
    with pytest.raises(ww.ShapeError, match=r"\(3, 4\).*\(5,\)|\(5,\).*\(3, 4\)"):
        f(np.ones((3, 4), np.float32), np.ones(5, np.float32))


def test_unsupported_dtype():
    with pytest.raises(ww.DTypeError, match="complex128"):
        ww.jit(lambda a: a * 2, target="cpu")(np.ones(3, np.complex128))


def test_unsupported_operation_names_it():
    with pytest.raises(ww.UnsupportedError):
        ww.jit(lambda a: a[np.array([0, 2])], target="cpu")(np.ones((4, 4), np.float32))


def test_non_contiguous_inputs_are_accepted(x):
    f = ww.jit(lambda v: v * 2.0, target="cpu")
    view = x.T
    assert_close(f(view), view.astype(np.float64) * 2, "float32")


def test_relu_keeps_the_dtype():
    f = ww.jit(ww.relu, target="cpu")
    assert f(np.array([True, False])).dtype == np.bool_
    np.testing.assert_array_equal(f(np.array([-3, 4], np.int32)), [0, 4])


def test_outputs_are_fresh_while_intermediates_are_reused():
    """Host intermediates are reused across calls (per thread); outputs never are."""
    import threading

    f = ww.jit(lambda v: (ww.exp(v * 0.5) - 1.0, (v * 2.0).sum(axis=1)), target="cpu")
    rng = np.random.default_rng()
    xs = [rng.standard_normal((64, 300)).astype(np.float32) for _ in range(4)]
    first = f(xs[0])
    kept = [a.copy() for a in first]
    second = f(xs[1])
    for a, b in zip(first, kept):
        np.testing.assert_array_equal(a, b)  # the second call did not write into the first's outputs
    assert all(a is not b for a, b in zip(first, second))
    results = {}

    def work(k):
        for _ in range(20):
            results[k] = f(xs[k])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k, x in enumerate(xs):
        assert_close(results[k][0], np.exp(x.astype(np.float64) * 0.5) - 1.0, "float32")
        assert_close(results[k][1], (x.astype(np.float64) * 2).sum(axis=1), "float32", scale=20)
