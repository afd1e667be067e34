"""call.gemm: one GIR node, the same product on the interpreter, the host BLAS and
the loop nest; verified, printed and parsed back; bad nodes are reported."""
import numpy as np
import pytest

from tests.utils import assert_close, random_array
from warpweave.backends import blas, cpu
from warpweave.backends.interp import run_kernel
from warpweave.backends.llvm.gemm import BLAS_THREADS_MIN_WORK, blas_layout
from warpweave.errors import VerificationError
from warpweave.ir import dtypes as dt
from warpweave.ir import expr as ex
from warpweave.ir.gir import Buffer, KernelBuilder
from warpweave.ir.gir_parse import parse_kernel
from warpweave.ir.gir_text import print_kernel
from warpweave.ir.gir_verify import check, verify


def gemm_kernel(M, N, K, dtype=dt.float32, acc=dt.float32, rows=4, a_t=False, b_t=False, batch=1,
                b_batch_stride=None):
    """c[bt, i, j] = sum_l a[bt, i, l] * b[bt, l, j] with a grid over (batch, tiles of
    `rows` rows); a (b) stored transposed with `a_t` (`b_t`)."""
    tiles = -(-M // rows)
    kb = KernelBuilder("gemm", "cpu")
    kb.add_param(Buffer("a", dtype, (batch, M, K), (M * K, K, 1), "in"))
    bsz = 1 if b_batch_stride == 0 else batch
    kb.add_param(Buffer("b", dtype, (bsz, K, N), (K * N, N, 1), "in"))
    kb.add_param(Buffer("c", acc, (batch, M, N), (M * N, N, 1), "out"))
    g_id = kb.scope("grid", "g", batch * tiles, None)
    g = ex.Var("g")
    bt, i0 = g // tiles, (g % tiles) * rows
    m = ex.binary("min", ex.Const(rows, dt.INDEX), ex.Const(M, dt.INDEX) - i0)
    a_str = (1, M) if a_t else (K, 1)
    b_str = (1, K) if b_t else (N, 1)
    bstride = K * N if b_batch_stride is None else b_batch_stride
    kb.gemm(acc, m, ex.Const(N, dt.INDEX), ex.Const(K, dt.INDEX),
            [("a", bt * (M * K) + i0 * a_str[0], a_str), ("b", bt * bstride, b_str),
             ("c", bt * (M * N) + i0 * N, (N, 1))], g_id)
    return kb.build()


def _inputs(rng, M, N, K, dtype, a_t, b_t, batch=1, b_batch=None):
    a = random_array(rng, (batch, K, M) if a_t else (batch, M, K), dtype)
    b = random_array(rng, (b_batch or batch, N, K) if b_t else (b_batch or batch, K, N), dtype)
    a64 = a.astype(np.float64).transpose(0, 2, 1) if a_t else a.astype(np.float64)
    b64 = b.astype(np.float64).transpose(0, 2, 1) if b_t else b.astype(np.float64)
    return a, b, a64 @ b64


def _run_cpu(kernel, bufs, which):
    code = cpu.compile_code([kernel], blas=(None if which == "loops" else "auto"))
    exe = cpu.CpuExecutable([kernel], [1 << 20], code=code)
    exe.launch(kernel.name, [bufs[p.name].ctypes.data for p in kernel.params])
    return exe


def _run(kernel, bufs, runner) -> str:
    """Run `kernel` on `bufs` with `runner` ("interp", "blas" or "loops"); the LLVM IR
    of the CPU runners ("" for the interpreter)."""
    if runner == "interp":
        run_kernel(kernel, bufs)
        return ""
    return _run_cpu(kernel, bufs, runner).llvm_ir


RUNNERS = ["interp", "blas", "loops"]


def _require_blas() -> None:
    """The BLAS runner needs a host BLAS: numpy's own must always be found; without one
    (a numpy built without a bundled BLAS and none on the system) there is nothing to call."""
    if blas.numpy_library_files():
        assert blas.find() is not None, f"numpy ships {blas.numpy_library_files()} but no gemm was found in it"
    elif blas.find() is None:
        pytest.skip("this numpy ships no BLAS library and the system has none: nothing to call")


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("shape,a_t,b_t", [((7, 5, 3), False, False), ((129, 33, 65), True, False),
                                           ((1, 9, 4), False, True), ((10, 1, 7), True, True)])
def test_product_matches_numpy(runner, shape, a_t, b_t):
    if runner == "blas":
        _require_blas()
    M, N, K = shape
    rng = np.random.default_rng()
    k = verify(gemm_kernel(M, N, K, a_t=a_t, b_t=b_t, batch=2))
    a, b, ref = _inputs(rng, M, N, K, "float32", a_t, b_t, batch=2)
    c = np.full((2, M, N), np.nan, np.float32)
    bufs = {"a": a.ravel(), "b": b.ravel(), "c": c.reshape(-1)}
    llvm_ir = _run(k, bufs, runner)
    assert ("warpweave.blas.sgemm" in llvm_ir) == (runner == "blas")
    assert_close(c, ref, "float32", scale=K ** 0.5)


@pytest.mark.parametrize("runner", RUNNERS)
@pytest.mark.parametrize("dtype,acc", [(dt.float64, dt.float64), (dt.bfloat16, dt.float32),
                                       (dt.float16, dt.float32)])
def test_dtypes(runner, dtype, acc):
    if runner == "blas":
        _require_blas()
    M, N, K = 9, 6, 17
    rng = np.random.default_rng()
    k = verify(gemm_kernel(M, N, K, dtype, acc))
    a, b, ref = _inputs(rng, M, N, K, dtype, False, False)
    c = np.full((1, M, N), np.nan, acc.numpy)
    bufs = {"a": a.ravel(), "b": b.ravel(), "c": c.reshape(-1)}
    llvm_ir = _run(k, bufs, runner)
    # the BLAS takes float32 and float64 matrices; 16-bit operands take the loop nest
    assert ("warpweave.blas" in llvm_ir) == (runner == "blas" and dtype == acc)
    assert_close(c, ref, acc.name if dtype == acc else dtype.name, scale=K ** 0.5)


def test_broadcast_batch_and_empty_reduction():
    rng = np.random.default_rng()
    k = verify(gemm_kernel(5, 4, 3, batch=3, b_batch_stride=0))
    a, b, ref = _inputs(rng, 5, 4, 3, "float32", False, False, batch=3, b_batch=1)
    for runner in RUNNERS:
        c = np.full((3, 5, 4), np.nan, np.float32)
        bufs = {"a": a.ravel(), "b": b.ravel(), "c": c.reshape(-1)}
        _run(k, bufs, runner)
        assert_close(c, np.broadcast_to(ref, c.shape), "float32", what=runner)
    empty = verify(gemm_kernel(4, 3, 0))
    for runner in RUNNERS:
        c = np.full((1, 4, 3), np.nan, np.float32)
        bufs = {"a": np.zeros(0, np.float32), "b": np.zeros(0, np.float32), "c": c.reshape(-1)}
        _run(empty, bufs, runner)
        assert (c == 0).all(), runner


def test_blas_threads_only_for_large_single_products():
    """The BLAS shares a product among its threads only when the kernel makes one call
    (a grid of one step) and the product is large; else the call sets one thread."""
    _require_blas()
    if not blas.find().set_threads:
        pytest.skip("this BLAS has no thread-local thread count")
    side = round(BLAS_THREADS_MIN_WORK ** (1 / 3))
    cases = {(64, 64, 1000, 64): True, (side, side, side, side): False, (side, side, side, 2): True}
    for (M, N, K, rows), one_thread in cases.items():
        llvm_ir = cpu.compile_code([gemm_kernel(M, N, K, rows=rows)]).llvm_ir
        calls = llvm_ir.count(f'call i32 @"{blas.SET_THREADS}"')
        assert calls == (2 if one_thread else 0), (M, N, K, rows, calls)


def test_text_round_trip():
    k = gemm_kernel(7, 5, 3, a_t=True)
    text = print_kernel(k)
    assert "call.gemm" in text
    back = parse_kernel(text)
    assert back == k and back.nodes == k.nodes and back.edges == k.edges


def test_blas_layouts():
    assert blas_layout((5, 1), 7, 5) == (False, 5)     # row-major
    assert blas_layout((1, 7), 7, 5) == (True, 7)      # column-major
    assert blas_layout((0, 1), 1, 5) == (False, 5)     # one row, stride 0
    assert blas_layout((3, 1), 7, 5) is None           # rows overlap
    assert blas_layout((10, 2), 7, 5) is None          # no unit stride


def _broken(**changes):
    k = gemm_kernel(7, 5, 3)
    node = next(n for n in k.nodes if n.op == "call.gemm")
    nodes = tuple(node.replace(attrs={**node.attr_map, **changes}) if n is node else n for n in k.nodes)
    from dataclasses import replace
    return replace(k, nodes=nodes)


@pytest.mark.parametrize("changes,words", [
    ({"a_strides": (10, 1)}, "out-of-bounds gemm"),
    ({"m": ex.Const(-1, dt.INDEX)}, "negative"),
    ({"c": "a"}, "names a but the state"),
    ({"b_strides": (1,)}, "two ints"),
    ({"k": ex.Var("q")}, "not a variable of the scopes"),
])
def test_verifier_reports(changes, words):
    problems = check(_broken(**changes))
    assert any(words in p for p in problems), problems
    with pytest.raises(VerificationError):
        verify(_broken(**changes))


def test_gemm_only_in_cpu_kernels():
    from dataclasses import replace
    problems = check(replace(gemm_kernel(3, 3, 3), target="gpu"))
    assert any("cpu target" in p for p in problems), problems


def test_cost_model_counts_the_product():
    from warpweave.passes.cost import HOST_CPU, kernel_cost

    cost = kernel_cost(gemm_kernel(8, 5, 3, rows=4), HOST_CPU)
    assert cost.global_read == 2 * (4 * 3 + 3 * 5) * 4 and cost.global_write == 2 * 4 * 5 * 4
    assert cost.instructions == 2 * 4 * 5 * 3
