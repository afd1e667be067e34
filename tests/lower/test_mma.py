"""The tensor-core GEMM kernel: interpreter runs at odd shapes against numpy float64,
the verifier's tensor-core checks, and ptxas on the generated PTX."""
import shutil
import subprocess
from dataclasses import replace

import ml_dtypes
import numpy as np
import pytest

from warpweave.backends.interp import run_kernel
from warpweave.errors import VerificationError
from warpweave.ir import dtypes as dt
from warpweave.ir import expr as ex
from warpweave.ir.contraction import Contraction, Layout, Operand
from warpweave.ir.gir import LDMATRIX, make_kernel
from warpweave.ir.gir_verify import check, verify
from warpweave.lower.mma import lower_mma
from warpweave.schedule.mma import _CANDIDATES, GpuMma, default_mma, legal, mma_space, mma_time

SMALL = GpuMma(64, 64, 32, 2, 2, 3)


def _gemm(m, n, k, at=False, bt=False, batch=(), d=dt.bfloat16, out=dt.float32):
    nb = int(np.prod(batch)) if batch else 1
    la = Layout((m * k,) * len(batch), 1 if at else k, m if at else 1)
    lb = Layout((k * n,) * len(batch), 1 if bt else n, k if bt else 1)
    c = Contraction("out", batch, m, n, k, Operand("a", d, la, d), Operand("b", d, lb, d),
                    Layout((m * n,) * len(batch), n, 1), dt.float32, out,
                    ("batch",) * len(batch) + ("m", "n"))
    shapes = {"a": batch + ((k, m) if at else (m, k)), "b": batch + ((n, k) if bt else (k, n)),
              "out": batch + (m, n)}
    return c, shapes, nb


def _run(c, shapes, s, seed=0):
    kernels = [verify(x) for x in lower_mma(c, s, shapes)]
    rng = np.random.default_rng(seed)
    npd = ml_dtypes.bfloat16 if c.a.dtype == dt.bfloat16 else np.float16
    a = rng.standard_normal(shapes["a"]).astype(npd)
    b = rng.standard_normal(shapes["b"]).astype(npd)
    out = np.full(int(np.prod(shapes["out"])), np.nan, dtype=c.out_dtype.numpy)
    buffers = {"a": a.ravel(), "b": b.ravel(), "out": out}
    for k in kernels:
        for p in k.params:
            if p.role == "temp":
                buffers.setdefault(p.name, np.full(p.size, np.nan, p.dtype.numpy))
        run_kernel(k, buffers)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if shapes["a"][-2:] == (c.k, c.m) and c.a.layout.rows == 1:
        a64 = np.swapaxes(a64, -1, -2)
    if shapes["b"][-2:] == (c.n, c.k) and c.b.layout.rows == 1:
        b64 = np.swapaxes(b64, -1, -2)
    return kernels, out.astype(np.float64).reshape(shapes["out"]), a64 @ b64


@pytest.mark.parametrize("m,n,k", [(33, 17, 40), (1, 8, 16), (130, 70, 200)])
def test_odd_shapes(m, n, k):
    c, shapes, _ = _gemm(m, n, k)
    _, got, want = _run(c, shapes, SMALL)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("at,bt", [(False, True), (True, False), (True, True)])
def test_transposed_operands(at, bt):
    c, shapes, _ = _gemm(70, 130, 72, at, bt)
    _, got, want = _run(c, shapes, GpuMma(128, 128, 32, 2, 2, 3))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("split", [2, 3])
def test_split_k(split):
    c, shapes, _ = _gemm(33, 70, 200, batch=(2,))
    kernels, got, want = _run(c, shapes, GpuMma(64, 64, 32, 2, 2, 3, split))
    assert len(kernels) == 2 and kernels[0].grid == split * 2 * 2
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_bmm_float16_to_float16():
    c, shapes, _ = _gemm(24, 40, 48, batch=(3,), d=dt.float16, out=dt.float16)
    _, got, want = _run(c, shapes, GpuMma(64, 64, 16, 2, 2, 2))
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-2)


def test_space_is_legal_and_default_first():
    c, _, _ = _gemm(4096, 4096, 4096)
    space = mma_space(c)
    assert space[0] == default_mma(c) and all(legal(p, c) for p in space) and len(space) > 10
    assert any(p.instr == "wgmma" for p in space)
    fc, _, _ = _gemm(64, 64, 64, d=dt.float32)
    assert mma_space(fc) == []


def test_unswizzled_tiles_conflict():
    c, shapes, _ = _gemm(128, 128, 64)
    (k,) = lower_mma(c, default_mma(c), shapes)
    assert check(k) == []
    nodes = [n.replace(attrs={**n.attr_map, "swizzle": False}) if n.op == LDMATRIX else n
             for n in k.nodes]
    bad = make_kernel(k.name, k.params, k.shared, nodes, k.edges, k.target)
    with pytest.raises(VerificationError, match="bank conflict"):
        verify(bad)


def test_read_without_wait_fails():
    c, shapes, _ = _gemm(64, 64, 64)
    (k,) = lower_mma(c, SMALL, shapes)
    waits = {n.id for n in k.nodes if n.op == "sync.async_wait"}
    # bypass the wait: its consumers read the state it was given
    src = {e.dst: e.src for e in k.edges if e.dst in waits}
    edges = [e if e.src not in waits else type(e)(src[e.src], e.dst, e.slot, e.level, e.dtype,
                                                   e.shape) for e in k.edges if e.dst not in waits]
    nodes = [n for n in k.nodes if n.id not in waits]
    bad = make_kernel(k.name, k.params, k.shared, nodes, edges, k.target)
    assert any("sync.async_wait" in p for p in check(bad))


def _epilogue_kernel(m=70, n=130, k=72, schedule=SMALL, name="fused"):
    """The product of bf16 a and b, then gelu(. + bias) + r fused as its epilogue."""
    import warpweave as ww
    from warpweave.passes import fuse
    from warpweave.pipeline.compile import lower_kernels

    rng = np.random.default_rng(3)
    bf = ml_dtypes.bfloat16
    args = [rng.standard_normal(s).astype(bf) for s in ((m, k), (k, n), (n,), (m, n))]
    g = ww.jit(lambda a, b, bias, r: ww.gelu(a @ b + bias) + r, target="interp").lower(*args).graph
    ops = [op.name for op in g.compute_ops]
    group = fuse.Group(tuple(ops), "contraction", (ops[0], ops[-1]))  # the product is stored too
    return [verify(k) for k in lower_kernels(group, g, schedule, name)], g, ops, args


@pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas not on PATH")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_ptxas_assembles(tmp_path, arch):
    from warpweave.backends.cuda.codegen import compile_ptx

    kernels = []
    cases = [((33, 17, 40), SMALL),  # single-element copies, predicated stores
             ((128, 256, 96, True, True), GpuMma(128, 128, 32, 2, 2, 3)),  # .trans, 16-byte copies
             ((24, 40, 48, False, False, (3,), dt.float16, dt.float16), GpuMma(64, 64, 16, 2, 2, 2)),
             ((300, 520, 72, False, True), GpuMma(128, 256, 32, 2, 4, 4, 1, 8)),  # dynamic shared
             ((520, 130, 100), GpuMma(256, 128, 32, 4, 2, 5, 1, 4)),
             ((395, 141, 136, True), GpuMma(128, 128, 64, 2, 4, 3, 1, 3))]
    for i, (args, s) in enumerate(cases):
        c, shapes, _ = _gemm(*args)
        kernels += lower_mma(c, s, shapes, f"mma{i}")
    kernels += _epilogue_kernel()[0]
    kernels += _epilogue_kernel(schedule=GpuMma(64, 64, 32, 2, 2, 3, 2), name="split")[0]
    ptx = compile_ptx(kernels, arch)[1]
    assert "mma.sync.aligned.m16n8k16" in ptx and "ldmatrix" in ptx and "cp.async" in ptx
    assert ptx.count(".extern .shared .align 16 .b8") == 1  # one dynamic array, three kernels
    path = tmp_path / "k.ptx"
    path.write_text(ptx)
    r = subprocess.run(["ptxas", f"-arch={arch}", str(path), "-o", str(tmp_path / "k.cubin")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("split", [1, 2])
def test_fused_epilogue_bias_gelu_residual(split):
    from warpweave.ir.tensor import evaluate

    kernels, g, ops, args = _epilogue_kernel(schedule=GpuMma(64, 64, 32, 2, 2, 3, split))
    assert len(kernels) == split
    m, n = args[3].shape
    buffers = {name: v.ravel() for name, v in zip(g.inputs, args)}
    for name in (ops[0], ops[-1]):
        buffers[name] = np.full(m * n, np.nan, ml_dtypes.bfloat16)
    for kernel in kernels:
        for p in kernel.params:
            if p.role == "temp":
                buffers.setdefault(p.name, np.full(p.size, np.nan, np.float32))
        run_kernel(kernel, buffers)
    want = evaluate(g, dict(zip(g.inputs, args)))
    for name in (ops[0], ops[-1]):  # as the unfused kernels round them
        np.testing.assert_allclose(buffers[name].astype(np.float64),
                                   want[name].astype(np.float64).ravel(), rtol=2 ** -7, atol=1e-2)


@pytest.mark.parametrize("ta,tb,batch", [(False, False, ()), (True, True, ()), (False, True, (2,))])
def test_pipeline_routes_16_bit_products_to_tensor_cores(ta, tb, batch):
    import warpweave as ww

    rng = np.random.default_rng(5)
    a = rng.standard_normal(batch + ((40, 33) if ta else (33, 40))).astype(ml_dtypes.bfloat16)
    b = rng.standard_normal(batch + ((17, 40) if tb else (40, 17))).astype(ml_dtypes.bfloat16)

    def fn(x, y):
        return (x.swapaxes(-1, -2) if ta else x) @ (y.swapaxes(-1, -2) if tb else y)

    f = ww.jit(fn, target="interp")
    assert [type(k.schedule) for k in f.lower(a, b).kernels] == [GpuMma]
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    want = (np.swapaxes(a64, -1, -2) if ta else a64) @ (np.swapaxes(b64, -1, -2) if tb else b64)
    np.testing.assert_allclose(f(a, b).astype(np.float64), want, rtol=2 ** -7, atol=1e-2)


def test_matrix_vector_products_are_not_routed():
    import warpweave as ww

    rng = np.random.default_rng(6)
    a = rng.standard_normal((33, 40)).astype(ml_dtypes.bfloat16)
    v = rng.standard_normal(40).astype(ml_dtypes.bfloat16)
    kernels = ww.jit(lambda x, y: x @ y, target="interp").lower(a, v).kernels
    assert kernels and not any(isinstance(k.schedule, GpuMma) for k in kernels)


def test_interpreter_orders_cp_async_by_its_groups():
    """A wait that leaves the stage being read in flight reads poisoned (NaN) data."""
    c, shapes, _ = _gemm(64, 64, 160)
    (k,) = lower_mma(c, SMALL, shapes)
    lenient = [n.replace(attrs={**n.attr_map, "pending": SMALL.stages - 1})
               if n.op == "sync.async_wait" else n for n in k.nodes]
    bad = make_kernel(k.name, k.params, k.shared, lenient, k.edges, k.target)
    a = np.ones(shapes["a"], ml_dtypes.bfloat16)
    b = np.ones(shapes["b"], ml_dtypes.bfloat16)
    for kernel, poisoned in ((k, False), (bad, True)):
        out = np.zeros(64 * 64, np.float32)
        run_kernel(kernel, {"a": a.ravel(), "b": b.ravel(), "out": out})
        assert np.isnan(out).any() == poisoned


def test_split_k_program_through_the_pipeline():
    import warpweave as ww
    from warpweave.pipeline.compile import compile_graph
    from warpweave.schedule.space import group_key

    rng = np.random.default_rng(7)
    a = rng.standard_normal((33, 200)).astype(ml_dtypes.bfloat16)
    b = rng.standard_normal((200, 70)).astype(ml_dtypes.bfloat16)
    p = ww.jit(lambda x, y: x @ y, target="interp").lower(a, b)
    point = GpuMma(64, 64, 32, 2, 2, 3, 4)
    split = compile_graph(p.traced, True, "interp", "split",
                          {group_key(p.plan.groups[0], p.graph): point})
    assert [k.schedule for k in split.kernels] == [point, point]
    np.testing.assert_allclose(split(a, b).astype(np.float64),
                               a.astype(np.float64) @ b.astype(np.float64), rtol=2 ** -7, atol=1e-2)


def test_cp_async_bounds_are_proven_and_violations_reported():
    # (1037, 770, 1000): 17 block rows in groups of 8, a last group of one (a tile order
    # dividing by min(rows left, 8)), too many points to enumerate
    for args in ((4096, 4096, 4096), (1999, 2056, 1001), (70, 130, 72, True, True), (1037, 770, 1000)):
        c, shapes, _ = _gemm(*args)
        assert all(check(k) == [] for k in lower_mma(c, default_mma(c), shapes))
    c, shapes, _ = _gemm(64, 64, 64)
    (k,) = lower_mma(c, SMALL, shapes)
    shifted = [n.replace(attrs={**n.attr_map, "offset": n.attr("offset") + 8})
               if n.op == "move.global.shared" else n for n in k.nodes]
    bad = make_kernel(k.name, k.params, k.shared, shifted, k.edges, k.target)
    assert any(p.startswith("out-of-bounds load") and "cp.async" in p for p in check(bad))


def test_sampled_space_points_at_odd_shapes():
    """Points of the space (split-K among them) at random odd shapes and layouts."""
    rng = np.random.default_rng()
    space = mma_space(_gemm(300, 300, 300)[0])
    for _ in range(8):
        s = space[int(rng.integers(len(space)))]
        m, n, k = (int(x) for x in rng.integers(1, 300, 3))
        c, shapes, _ = _gemm(m, n, k, bool(rng.integers(2)), bool(rng.integers(2)))
        if not legal(s, c):  # a wgmma point whose warpgroups' B columns are no whole panel
            continue
        _, got, want = _run(c, shapes, s, seed=int(rng.integers(1 << 30)))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4, err_msg=f"{s} {m}x{n}x{k}")


def test_default_is_the_cost_models_fastest_candidate():
    """Big products take big tiles in grouped order, small ones small tiles, few tiles
    over a long k split-K: whatever `mma_time` ranks first, never a shape rule."""
    big, small, long_k = (_gemm(*s)[0] for s in ((4096, 4096, 4096), (300, 200, 64), (100, 72, 3000)))
    d = default_mma(big, 132, "sm_80")  # mma.sync: no wgmma before sm_90
    assert d.instr == "mma.sync" and d.block_m * d.block_n >= 128 * 128 and d.raster > 1 and legal(d)
    assert d == min([replace(p, raster=d.raster) for p in _CANDIDATES], key=lambda p: mma_time(big, p))
    assert default_mma(small, 132).block_m * default_mma(small, 132).block_n == 64 * 64
    assert default_mma(small, 132).split_k == 1  # k too short to split
    assert default_mma(long_k, 132, "sm_80").split_k == 4
    # fewer SMs: fewer, bigger waves are cheaper than tail-heavy ones
    assert mma_time(big, d, 66) > mma_time(big, d, 132)


def test_sm_90_defaults_take_wgmma_where_k_is_long():
    from warpweave.schedule.mma import _WGMMA_CANDIDATES, WGMMA_MIN_K, wgmma_time

    for shape in ((4096, 4096, 4096), (8192, 3072, 768), (1999, 2056, 1001, True, True)):
        c = _gemm(*shape)[0]
        d = default_mma(c, 132)
        assert d.instr == "wgmma" and legal(d, c) and d == mma_space(c)[0]
        assert replace(d, raster=8) == min(_WGMMA_CANDIDATES, key=lambda p: wgmma_time(c, p))
    # few output tiles over a long k: split wgmma (H200: 512 x 512 x 4096 at 4 slices of
    # 64 x 128 tiles 9.8 µs, unsplit 128 x 128 28.2, mma.sync's split default 16.3)
    few = default_mma(_gemm(512, 512, 4096)[0], 132)
    assert (few.instr, few.block_m, few.block_n, few.split_k) == ("wgmma", 64, 128, 4)
    assert default_mma(_gemm(4096, 4096, 4096)[0], 132).split_k == 1
    short = _gemm(512, 512, 64, batch=(32,))[0]
    assert short.k < WGMMA_MIN_K and default_mma(short, 132).instr == "mma.sync"
    # a wide output fills the GPU with the biggest tile; few rows take smaller ones
    assert default_mma(_gemm(4096, 4096, 4096)[0]).block_n == 256
    assert default_mma(_gemm(256, 4096, 1024)[0]).block_m * default_mma(_gemm(256, 4096, 1024)[0]).block_n < 128 * 256


@pytest.mark.parametrize("s,m,n,k", [
    (GpuMma(128, 256, 32, 2, 4, 4, 1, 2), 300, 520, 72),    # dynamic shared memory, grouped order
    (GpuMma(256, 128, 32, 4, 2, 5, 1, 4), 520, 130, 100),   # 5 stages, a partial last group
    (GpuMma(128, 128, 64, 2, 4, 3, 1, 3), 395, 141, 136)])  # 64-deep k-tiles, k tail
def test_big_tiles_stages_and_raster(s, m, n, k):
    c, shapes, _ = _gemm(m, n, k, bt=True)
    assert legal(s) and replace(s, raster=1) in mma_space(c)
    kernels, got, want = _run(c, shapes, s, seed=m)
    assert kernels[0].dynamic_shared_bytes == s.shared_bytes() > 48 * 1024
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_raster_visits_every_tile_once():
    from warpweave.lower.mma import _tile_order

    for tiles_m, tiles_n, raster in ((7, 5, 4), (8, 3, 8), (3, 9, 8), (10, 1, 4)):
        m, n = _tile_order(ex.Var("r"), tiles_m, tiles_n, raster)
        seen = [(int(ex.evaluate(m, {"r": r})), int(ex.evaluate(n, {"r": r})))
                for r in range(tiles_m * tiles_n)]
        assert sorted(seen) == [(i, j) for i in range(tiles_m) for j in range(tiles_n)]
        assert all(i // raster == r // (raster * tiles_n) for r, (i, _) in enumerate(seen))


def test_verifier_names_the_shared_memory_limit():
    from warpweave.errors import Error
    from warpweave.ir.gir import KernelBuilder, SharedAlloc
    from warpweave.ir.gir_verify import Limits

    b = KernelBuilder("big_shared")
    block = b.scope("block", "t", 128, b.scope("grid", "g", 1, None))
    b.add_shared(SharedAlloc("s", dt.bfloat16, 120 * 1024))  # 240 KiB
    b.store("s", ex.Var("t"), b.const(ex.Const(1.0, dt.bfloat16), block), block)
    k = b.build()
    assert k.dynamic_shared_bytes == 240 * 1024
    with pytest.raises(Error, match=r"sm_90's limit of 232448 B \(227 KiB\)"):
        verify(k)
    small = make_kernel(k.name, k.params, (SharedAlloc("s", dt.bfloat16, 50 * 1024),),
                        k.nodes, k.edges, k.target)
    assert check(small) == []  # 100 KiB: dynamic shared memory on sm_90 ...
    assert any("sm_86's limit of 101376 B" in p for p in check(small, Limits.for_arch("sm_86")))


def _erf_gelu(x):
    import math
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / np.sqrt(2)))


@pytest.mark.parametrize("case", ["bias_gelu_residual", "relu_cast", "product_kept"])
def test_gpu_plans_fuse_epilogues_into_the_product(case):
    """On the GPU target a tensor-core product and its elementwise consumers (bias,
    activation, residual, casts) are one contraction group, one kernel; numerics
    against numpy float64 on fresh random inputs, at odd shapes."""
    import warpweave as ww

    rng = np.random.default_rng()
    bf = ml_dtypes.bfloat16
    m, n, k = (int(x) for x in rng.integers(20, 150, 3))
    a, b = rng.standard_normal((m, k)).astype(bf), rng.standard_normal((k, n)).astype(bf)
    bias, r = rng.standard_normal(n).astype(bf), rng.standard_normal((m, n)).astype(bf)
    a64, b64, bias64, r64 = (x.astype(np.float64) for x in (a, b, bias, r))
    p64 = a64 @ b64
    if case == "bias_gelu_residual":
        fn, args, want = (lambda x, y, c, d: ww.gelu(x @ y + c) + d), (a, b, bias, r), \
            [_erf_gelu(p64 + bias64) + r64]
    elif case == "relu_cast":
        fn, args, want = (lambda x, y: ww.relu(x @ y).astype(ww.float32) * 0.5), (a, b), \
            [np.maximum(p64, 0) * 0.5]
    else:  # the product is an output too: stored beside the epilogue's result
        def fn(x, y, c):
            product = x @ y
            return product, product + c

        args, want = (a, b, bias), [p64, p64 + bias64]
    f = ww.jit(fn, target="interp")
    program = f.lower(*args)
    assert [type(k.schedule) for k in program.kernels] == [GpuMma]
    assert [g.pattern for g in program.plan.groups] == ["contraction"]
    got = f(*args)
    for g, w in zip(got if isinstance(got, tuple) else (got,), want):
        scale = np.abs(w).max() + 1
        assert np.abs(g.astype(np.float64) - w).max() <= 2 ** -6 * scale, case


def test_float32_products_on_the_gpu_stay_unfused_reductions():
    import warpweave as ww

    rng = np.random.default_rng(8)
    a, b = rng.standard_normal((40, 24)).astype(np.float32), rng.standard_normal((24, 33)).astype(np.float32)
    program = ww.jit(lambda x, y: ww.relu(x @ y), target="interp").lower(a, b)
    assert "contraction" not in [g.pattern for g in program.plan.groups]
    assert not any(isinstance(k.schedule, GpuMma) for k in program.kernels)
