"""Register tiles: aligned sibling vector scopes and "runs" accesses (runs of r
contiguous lanes) through the interpreter, the CPU backend and the CUDA code
generator (PTX without a GPU)."""
import re

import numpy as np
import pytest

from tests.ir.example_kernels import V, lt, softmax_cpu_kernel, softmax_tile_kernel
from tests.utils import assert_close, assert_ptxas_accepts, random_array, softmax_reference
from warpweave.backends import cpu
from warpweave.backends.cuda.codegen import compile_ptx
from warpweave.backends.interp import run_kernel
from warpweave.ir import dtypes as dt
from warpweave.ir import expr as ex
from warpweave.ir.gir import Buffer, KernelBuilder, SharedAlloc
from warpweave.ir.gir_verify import verify

f32 = dt.float32


def _poisoned(shape, d):
    return np.full(shape, np.nan, dtype=dt.dtype(d).numpy)


def _interp(k, inputs, outputs):
    bufs = {**{n: a.reshape(-1) for n, a in inputs.items()},
            **{n: o.reshape(-1) for n, o in outputs.items()}}
    run_kernel(k, bufs)


def _cpu(k, inputs, outputs):
    exe = cpu.CpuExecutable([k], [1])
    arrays = {**inputs, **outputs}
    exe.launch(k.name, [arrays[p.name].ctypes.data for p in k.params])
    return exe


def _global_accesses(ptx):
    return re.findall(r"\b(ld|st)\.global(?:\.nc)?((?:\.v\d)?)\.(\w+)", ptx)


# ----------------------------------------------------------------------------- GPU softmax tile

@pytest.mark.parametrize("E,N,d", [(8, 300, "float32"), (8, 512, "float32"), (8, 301, "float32"),
                                   (16, 1000, "float16"), (32, 2044, "bfloat16"),
                                   (32, 2048, "float32"), (8, 260, "float64")])
def test_softmax_tile_on_the_interpreter(E, N, d):
    rng = np.random.default_rng()
    k = verify(softmax_tile_kernel(R=5, N=N, E=E, d=dt.dtype(d)))
    x = random_array(rng, (5, N), d, -4.0, 4.0)
    for _ in range(2):  # fresh poison each run: nothing left over counts
        y = _poisoned((5, N), d)
        _interp(k, {"x": x}, {"y": y})
        assert_close(y, softmax_reference(x), d if d != "float64" else "float32", 4.0)
        x = random_array(rng, (5, N), d, -4.0, 4.0)


@pytest.mark.ptx
@pytest.mark.parametrize("E", [8, 32])
def test_softmax_tile_ptx_has_16_byte_run_accesses(E):
    k = verify(softmax_tile_kernel(N=64 * E - 4, E=E))
    _, ptx = compile_ptx([k])
    assert re.search(r"ld\.global(\.nc)?\.v4\.(f32|b32)", ptx)
    assert re.search(r"st\.global\.v4\.(f32|b32)", ptx)
    acc = _global_accesses(ptx)
    # one 4-lane load and one 4-lane store per run of 4 lanes, nothing lane by lane
    assert [a for a in acc if a[0] == "ld"] == [("ld", ".v4", acc[0][2])] * (E // 4), acc
    assert [a for a in acc if a[0] == "st"] == [("st", ".v4", acc[0][2])] * (E // 4), acc
    assert acc[0][2] in ("b32", "f32")
    assert_ptxas_accepts(ptx)


@pytest.mark.ptx
@pytest.mark.parametrize("d,per_run", [("float16", 1), ("bfloat16", 1), ("float64", 2)])
def test_half_and_double_runs_in_ptx(d, per_run):
    """float16/bfloat16 runs of 4 are one 8-byte access; float64 runs of 4 (32 bytes)
    are split into two 16-byte accesses."""
    E = 8
    k = verify(softmax_tile_kernel(N=500, E=E, d=dt.dtype(d)))
    _, ptx = compile_ptx([k])
    acc = _global_accesses(ptx)
    loads = [a for a in acc if a[0] == "ld"]
    stores = [a for a in acc if a[0] == "st"]
    assert len(loads) == len(stores) == (E // 4) * per_run
    assert all(v in (".v2", ".v4") for _, v, _ in acc), acc
    if d == "float64":
        assert all(v == ".v2" and w in ("b64", "f64") for _, v, w in acc), acc
    else:
        assert re.search(r"ld\.global(\.nc)?\.(v4\.(b16|f16|bf16)|v2\.b32)", ptx)
    assert_ptxas_accepts(ptx)


@pytest.mark.ptx
def test_runs_fall_back_to_gather_when_the_predicate_splits_a_run():
    k = verify(softmax_tile_kernel(N=301, E=8))  # 301 % 4: column 300 ends mid-run
    _, ptx = compile_ptx([k])
    acc = _global_accesses(ptx)
    assert len(acc) == 16 and all(v == "" for _, v, _ in acc)  # lane by lane
    assert_ptxas_accepts(ptx)


# ----------------------------------------------------------------------------- CPU softmax rows

@pytest.mark.parametrize("E,N,R,rows,wide", [
    (64, 48, 7, 2, "<16 x float>"),  # runs of 16: the 4th is off everywhere
    (12, 12, 5, 2, "<4 x float>"),   # 12 lanes: 3 runs of 4
    (12, 10, 5, 3, "<2 x float>"),   # 10 columns: runs of 2
    (8, 5, 3, 2, None),              # 5 columns: lane by lane
])
def test_softmax_rows_on_cpu_and_interpreter(E, N, R, rows, wide):
    """Siblings inside a serial loop; rows not a multiple of the row block, so each run
    has the predicate row < R."""
    rng = np.random.default_rng()
    k = verify(softmax_cpu_kernel(R=R, N=N, E=E, rows=rows))
    x = random_array(rng, (R, N), "float32", -4.0, 4.0)
    ref = softmax_reference(x)
    y = _poisoned((R, N), "float32")
    _interp(k, {"x": x}, {"y": y})
    assert_close(y, ref, "float32", 4.0, what="interp")
    y = _poisoned((R, N), "float32")
    exe = _cpu(k, {"x": x}, {"y": y})
    assert_close(y, ref, "float32", 4.0, what="cpu")
    if wide is not None:
        assert f"load {wide}" in exe.llvm_ir and f"store {wide}" in exe.llvm_ir
        assert "store float" not in exe.llvm_ir and "load float" not in exe.llvm_ir
        assert "shufflevector" in exe.llvm_ir
    else:
        assert "store float" in exe.llvm_ir


# ----------------------------------------------------------------------------- run stores

def _strided_copy(target, G, N, r, E, d=f32, shared=False):
    """y[j] = 3 * x[j] + 1 for j = (v // r) * (G * r) + p * r + v % r, p the grid (CPU)
    or thread (GPU) index, guarded by j < N: runs of r lanes, each run under its own
    predicate when N is not a multiple of the tile G * E."""
    b = KernelBuilder("strided_copy", target)
    b.add_param(Buffer("x", d, (N,), (1,), "in"))
    b.add_param(Buffer("y", d, (N,), (1,), "out"))
    gs = b.scope("grid", "g", G if target == "cpu" else 1, None)
    ps, p = gs, "g"
    if target == "gpu":
        ps, p = b.scope("block", "t", G, gs), "t"
    if shared:
        b.add_shared(SharedAlloc("s", d, G * E))
    v1 = b.scope("vector", "v1", E, ps)
    j1 = (V("v1") // r) * (G * r) + V(p) * r + V("v1") % r
    x = b.load("x", j1, v1, pred=lt(j1, N), other=ex.Const(0, d))
    if shared:  # through shared memory, read back by the next thread in a sibling scope
        b.store("s", j1, x, v1)
        b.sync(["s"], ps)
    v2 = b.scope("vector", "v2", E, ps)
    j2 = (V("v2") // r) * (G * r) + V(p) * r + V("v2") % r
    if shared:
        jn = (V("v2") // r) * (G * r) + ((V(p) + 1) % G) * r + V("v2") % r
        x = b.compute("add", [x, b.load("s", jn, v2)], v2, d)  # x: sibling v1's value
    cd = dt.compute_dtype(d)
    if cd != d:
        x = b.compute("cast", [x], v2, cd)
    y = b.compute("add", [b.compute("mul", [x, b.const(ex.Const(3, cd), ps)], v2, cd),
                          b.const(ex.Const(1, cd), ps)], v2, cd)
    if cd != d:
        y = b.compute("cast", [y], v2, d)
    b.store("y", j2, y, v2, pred=lt(j2, N))
    return verify(b.build())


def _strided_copy_reference(x, G, r, E, shared):
    n = x.size
    xx = x.astype(np.float64)
    if not shared:
        return 3 * xx + 1
    tile = G * E
    padded = np.zeros(-(-n // tile) * tile if n % tile else n)
    padded[:n] = xx
    j = np.arange(n)
    p = (j // r) % G  # owner thread of column j
    jn = j + ((p + 1) % G - p) * r
    nb = np.where(jn < n, padded[np.minimum(jn, padded.size - 1)], 0.0)
    return 3 * (xx + nb) + 1


@pytest.mark.parametrize("N", [400, 512, 264])
def test_run_stores_with_per_run_predicates_on_cpu_and_interpreter(N):
    G, r, E = 16, 8, 32  # tile 512: N = 400 and 264 cut the tile mid-way (at run bounds)
    rng = np.random.default_rng()
    k = _strided_copy("cpu", G, N, r, E)
    x = random_array(rng, (N,), "float32")
    ref = _strided_copy_reference(x, G, r, E, False)
    for run in (_interp, _cpu):
        y = _poisoned((N,), "float32")
        out = run(k, {"x": x}, {"y": y})
        assert_close(y, ref, "float32", what=run.__name__)
    assert "store <8 x float>" in out.llvm_ir and "load <8 x float>" in out.llvm_ir
    assert "store float" not in out.llvm_ir


@pytest.mark.ptx
def test_gpu_runs_are_split_into_16_byte_pieces_in_global_and_shared_memory():
    G, N, r, E = 64, 1000, 8, 16  # tile 1024: the last runs are off
    k = _strided_copy("gpu", G, N, r, E, shared=True)
    rng = np.random.default_rng()
    x = random_array(rng, (N,), "float32")
    y = _poisoned((N,), "float32")
    _interp(k, {"x": x}, {"y": y})
    assert_close(y, _strided_copy_reference(x, G, r, E, True), "float32")
    _, ptx = compile_ptx([k])
    acc = _global_accesses(ptx)
    assert len(acc) == 2 * (E // 4) and all(v == ".v4" for _, v, _ in acc), acc
    assert len(re.findall(r"st\.shared\.v4\.(?:b32|f32)", ptx)) == E // 4
    assert len(re.findall(r"ld\.shared\.v4\.(?:b32|f32)", ptx)) == E // 4
    assert_ptxas_accepts(ptx)


@pytest.mark.ptx
@pytest.mark.parametrize("d", ["float16", "bfloat16"])
def test_half_run_loads_and_stores_in_ptx(d):
    k = _strided_copy("gpu", 64, 1000, 4, 16, d=dt.dtype(d))
    _, ptx = compile_ptx([k])
    acc = _global_accesses(ptx)
    assert len(acc) == 2 * 4 and all(v in (".v2", ".v4") for _, v, _ in acc), acc
    assert_ptxas_accepts(ptx)


# ----------------------------------------------------------------------------- run predicates

def test_run_predicates_are_exact():
    """`_uniform_over_run` drops the run lane only from conjuncts that hold on a whole
    run or on none of it; brute force over every point agrees."""
    from warpweave.backends.llvm.access import _uniform_over_run

    a, b, t = V("a"), V("b"), V("t")
    r = 4
    ranges = {"a": (0, 3), "b": (0, r - 1), "t": (0, 7)}
    j = a * 32 + t * 4 + b
    cases = {
        ex.binary("lt", j, 100): True, ex.binary("lt", j, 101): False,
        ex.binary("le", j, 99): True, ex.binary("le", j, 100): False,
        ex.binary("gt", j, 35): True, ex.binary("gt", j, 36): False,
        ex.binary("ge", j, 36): True, ex.binary("ge", j, 37): False,
        ex.binary("gt", 100, j): True, ex.binary("lt", 0, 100 - j): True,
        ex.binary("lt", 0, 99 - j): False, ex.binary("eq", j, 8): False,
        ex.binary("and", ex.binary("lt", t, 5), ex.binary("lt", j, 64)): True,
        ex.binary("and", ex.binary("lt", t, 5), ex.binary("lt", j, 66)): False,
    }
    grid = np.meshgrid(*(np.arange(lo, hi + 1) for lo, hi in ranges.values()), indexing="ij")
    env = dict(zip(ranges, grid))
    for pred, uniform in cases.items():
        got = _uniform_over_run(pred, "b", r, ranges)
        assert (got is not None) == uniform, ex.to_text(pred)
        if got is not None:
            assert "b" not in ex.free_vars(got)
            full = np.broadcast_to(ex.evaluate(pred, env), grid[0].shape)
            reduced = np.broadcast_to(ex.evaluate(got, env), grid[0].shape)
            np.testing.assert_array_equal(full, reduced, err_msg=ex.to_text(pred))


def test_reduce_over_a_sibling_of_the_values_scope():
    """compute.reduce over V2 of a value defined in V1 (aligned), next to a use in V2."""
    from tests.ir.test_sibling_scopes import _pair

    k, _ = _pair(reduce_over_v2=True)
    verify(k)
    rng = np.random.default_rng()
    x = random_array(rng, (64,), "float32")
    for run in (_interp, _cpu):
        y, z = _poisoned((64,), "float32"), _poisoned((8,), "float32")
        run(k, {"x": x}, {"y": y, "z": z})
        assert_close(y, 2.0 * x.astype(np.float64), "float32", what=run.__name__)
        assert_close(z, x.astype(np.float64).reshape(8, 8).sum(axis=1), "float32", what=run.__name__)


def test_sibling_declared_first_is_emitted_after_the_scope_it_reads():
    """V2's scope node comes before V1's in the node list; the edge from V1's value into
    V2 still orders V1 first (and the text form keeps the kernel as it is)."""
    from warpweave.ir.gir_parse import parse_kernel
    from warpweave.ir.gir_text import print_kernel

    b = KernelBuilder("late", target="cpu")
    b.add_param(Buffer("x", f32, (40,), (1,), "in"))
    b.add_param(Buffer("y", f32, (40,), (1,), "out"))
    g = b.scope("grid", "g", 5, None)
    v2 = b.scope("vector", "c", 8, g)
    v1 = b.scope("vector", "a", 8, g)
    x = b.load("x", V("g") * 8 + V("a"), v1)
    y = b.compute("exp", [x], v2, f32)
    b.store("y", V("g") * 8 + V("c"), y, v2)
    k = verify(b.build())
    assert parse_kernel(print_kernel(k)) == k
    rng = np.random.default_rng()
    x = random_array(rng, (40,), "float32")
    for run in (_interp, _cpu):
        out = _poisoned((40,), "float32")
        run(k, {"x": x}, {"y": out})
        assert_close(out, np.exp(x.astype(np.float64)), "float32", what=run.__name__)
