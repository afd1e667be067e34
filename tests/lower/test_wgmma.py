"""wgmma kernels (sm_90): lowering, interpreter, verifier, text and PTX, without a GPU."""
from dataclasses import replace

import ml_dtypes
import numpy as np
import pytest

from tests.utils import assert_ptxas_accepts
from warpweave.backends.interp import run_kernel
from warpweave.errors import IRError, UnsupportedError, VerificationError
from warpweave.ir import dtypes as dt
from warpweave.ir.gir import ASYNC_WAIT, WGMMA, SharedAlloc, make_kernel, swizzle_offset
from warpweave.ir.gir_parse import parse_kernel
from warpweave.ir.gir_verify import check, verify
from warpweave.lower.mma import lower_mma
from warpweave.schedule.mma import GpuMma, k_rows, legal

from .test_mma import _epilogue_kernel, _gemm, _run


def W(*args, **kw):
    return GpuMma(*args, instr="wgmma", **kw)


@pytest.mark.parametrize("at,bt", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("point", [W(64, 64, 64, 1, 1, 3), W(128, 128, 32, 2, 1, 3), W(128, 128, 16, 1, 1, 2),
                                   W(64, 128, 64, 1, 2, 4, 1, 2)])
def test_every_layout_at_odd_shapes(at, bt, point):
    """K-major tiles and MN-major panels of both operands, tails in m, n and k."""
    c, shapes, _ = _gemm(70, 130, 72, at, bt)
    assert legal(point, c)  # each warpgroup's B columns are whole 64-column panels
    kernels, got, want = _run(c, shapes, point, seed=int(np.random.default_rng().integers(1 << 30)))
    assert sum(n.op == WGMMA for n in kernels[0].nodes) == 1
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_batched_float16_and_split_k():
    c, shapes, _ = _gemm(33, 40, 200, batch=(3,), d=dt.float16, out=dt.float16)
    kernels, got, want = _run(c, shapes, W(64, 64, 32, 1, 1, 3, 3))
    assert len(kernels) == 2
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-2)


def test_fused_epilogue():
    from warpweave.ir.tensor import evaluate

    kernels, g, ops, args = _epilogue_kernel(schedule=W(64, 128, 32, 1, 1, 3))
    m, n = args[3].shape
    buffers = {name: v.ravel() for name, v in zip(g.inputs, args)}
    for name in (ops[0], ops[-1]):
        buffers[name] = np.full(m * n, np.nan, ml_dtypes.bfloat16)
    for kernel in kernels:
        run_kernel(kernel, buffers)
    want = evaluate(g, dict(zip(g.inputs, args)))
    for name in (ops[0], ops[-1]):
        np.testing.assert_allclose(buffers[name].astype(np.float64),
                                   want[name].astype(np.float64).ravel(), rtol=2 ** -7, atol=1e-2)


def test_tiles_are_aligned_and_mn_major_tiles_in_panels():
    c, shapes, _ = _gemm(300, 520, 136, True, False)  # A [k][m], B [k][n]: both MN-major
    assert k_rows(c) == (True, True)
    (k,) = lower_mma(c, W(128, 256, 64, 1, 2, 3), shapes)
    assert [s.align for s in k.shared] == [1024, 1024]
    assert k.shared_offsets["b_s"] % 1024 == 0 and k.shared_align == 1024
    copies = [n for n in k.nodes if n.op == "move.global.shared"]
    assert {n.attr("panel_rows") for n in copies} == {3 * 64}
    # a 64-column panel of 192 rows: column 64 of row 0 starts the second panel
    assert swizzle_offset(0, 64, 256, True, 192) == 192 * 64
    assert swizzle_offset(9, 70, 256, True, 192) == 192 * 64 + 9 * 64 + ((0 ^ 1) * 8) + 6


def test_the_space_and_defaults_follow_the_architecture():
    from warpweave.schedule.mma import default_mma, mma_space

    c, _, _ = _gemm(1024, 1024, 1024)
    assert any(p.instr == "wgmma" for p in mma_space(c, arch="sm_90"))
    older = mma_space(c, arch="sm_80")
    assert older and all(p.instr == "mma.sync" for p in older)
    assert older[0] == default_mma(c, 132, "sm_80")


def test_illegal_points_are_refused():
    c, shapes, _ = _gemm(70, 130, 72)  # B [k][n]: a warpgroup's 32 columns are no whole panel
    assert not legal(W(64, 64, 64, 1, 2, 3), c)
    with pytest.raises(UnsupportedError, match="not a legal tensor-core schedule"):
        lower_mma(c, W(64, 64, 64, 1, 2, 3), shapes)
    assert not legal(W(32, 64, 64, 1, 1, 3))  # slabs of 64 rows
    assert not legal(W(64, 512, 64, 1, 1, 2))  # n at most 256 per warpgroup
    assert not legal(replace(W(64, 64, 64, 1, 1, 3), instr="mma.async"))


def _with_attrs(k, op, **attrs):
    nodes = [n.replace(attrs={**n.attr_map, **attrs}) if n.op == op else n for n in k.nodes]
    return make_kernel(k.name, k.params, k.shared, nodes, k.edges, k.target)


def _kernel(point=W(64, 64, 64, 1, 1, 3), args=(70, 130, 72)):
    c, shapes, _ = _gemm(*args)
    (k,) = lower_mma(c, point, shapes)
    assert check(k) == []
    return k


def test_verifier_needs_the_async_proxy_fence():
    bad = _with_attrs(_kernel(), ASYNC_WAIT, proxy=False)
    assert any("async proxy" in p for p in check(bad))


def test_verifier_needs_aligned_tiles():
    k = _kernel()
    shared = [SharedAlloc(s.name, s.dtype, s.size) for s in k.shared]
    bad = make_kernel(k.name, k.params, shared, k.nodes, k.edges, k.target)
    assert any("1024-byte aligned" in p for p in check(bad))


def test_verifier_rejects_unreachable_and_divergent_operands():
    from warpweave.ir import expr as ex

    k = _kernel()
    (node,) = [n for n in k.nodes if n.op == WGMMA]
    off = _with_attrs(k, WGMMA, a_col=node.attr("a_col") + 8)  # half a k step
    assert any("no descriptor" in p for p in check(off))
    divergent = _with_attrs(k, WGMMA, a_row=node.attr("a_row") + (ex.Var("t") % 2) * 8)
    assert any("differs within a warpgroup" in p for p in check(divergent))
    past = _with_attrs(k, WGMMA, b_row=node.attr("b_row") + 3 * 64)
    assert any("reads past" in p for p in check(past))
    with pytest.raises(VerificationError):
        verify(past)


def test_verifier_rejects_what_the_hardware_would_read_otherwise():
    """Tile points out of (kk, mi) order, panels off the 1024-byte grid, and an
    allocation a few elements short of the last row's swizzled chunks."""
    k = _kernel()
    (node,) = [n for n in k.nodes if n.op == WGMMA]
    swapped = _with_attrs(k, WGMMA, tile=tuple(reversed(node.attr("tile"))))
    assert any("expected points (kk, mi)" in p for p in check(swapped))
    panels = _kernel(W(128, 256, 64, 1, 2, 3), (300, 520, 136, True, False))
    assert any("multiple of 8 rows" in p for p in check(_with_attrs(panels, WGMMA, b_panel_rows=100)))
    deep = _kernel(W(64, 64, 64, 1, 1, 3), (70, 130, 200))  # k-tiles in every stage
    short = [SharedAlloc(a.name, a.dtype, a.size - 8 if a.name == "b_s" else a.size, a.align)
             for a in deep.shared]
    bad = make_kernel(deep.name, deep.params, short, deep.nodes, deep.edges, deep.target)
    assert any("reads past b_s" in p for p in check(bad))
    odd = [SharedAlloc(a.name, a.dtype, a.size, 48) for a in k.shared]
    bad = make_kernel(k.name, k.params, odd, k.nodes, k.edges, k.target)
    assert any("not a power of two" in p for p in check(bad))


def test_interpreter_refuses_reads_outside_the_tile():
    k = _kernel()
    (node,) = [n for n in k.nodes if n.op == WGMMA]
    bad = _with_attrs(k, WGMMA, b_row=node.attr("b_row") + 3 * 64)
    c, shapes, _ = _gemm(70, 130, 72)
    buffers = {"a": np.ones(70 * 72, ml_dtypes.bfloat16), "b": np.ones(72 * 130, ml_dtypes.bfloat16),
               "out": np.zeros(70 * 130, np.float32)}
    with pytest.raises(IRError, match="outside"):
        run_kernel(bad, buffers)


def test_products_stay_in_flight_while_copies_overwrite_older_stages():
    """Three stages or more: one group of products left running per iteration, the
    copies two k-tiles behind it; a group left running longer is caught as a race."""
    k = _kernel(W(64, 64, 32, 1, 1, 3), (70, 130, 200))
    (node,) = [n for n in k.nodes if n.op == WGMMA]
    assert node.attr("pending") == 1
    assert [n.attr("pending") for n in k.nodes if n.op == ASYNC_WAIT] == [0]
    assert _kernel(W(64, 64, 32, 1, 1, 2)).nodes and \
        [n.attr("pending") for n in _kernel(W(64, 64, 32, 1, 1, 2)).nodes if n.op == WGMMA] == [0]
    racy = _with_attrs(k, WGMMA, pending=2)
    assert check(racy) == []  # statically fine; the interpreter sees the overwrite
    buffers = {"a": np.ones(70 * 200, ml_dtypes.bfloat16), "b": np.ones(200 * 130, ml_dtypes.bfloat16),
               "out": np.zeros(70 * 130, np.float32)}
    run_kernel(k, dict(buffers))
    with pytest.raises(IRError, match="in flight"):
        run_kernel(racy, dict(buffers))
    assert any("wait_group takes" in p for p in check(_with_attrs(k, WGMMA, pending=9)))


def test_text_round_trip():
    k = _kernel(W(128, 256, 64, 1, 2, 3), (300, 520, 136, True, False))
    text = str(k)
    assert "compute.wgmma" in text and "align=1024" in text
    assert parse_kernel(text) == k


def test_ptxas_assembles_for_sm_90a():
    from warpweave.backends.cuda.codegen import compile_ptx, module_arch

    kernels = []
    for i, (args, s) in enumerate([((70, 130, 72), W(64, 64, 64, 1, 1, 3)),  # static shared
                                   ((300, 520, 136, True, False), W(128, 256, 64, 1, 2, 3)),
                                   ((24, 40, 48, False, True, (3,), dt.float16, dt.float16),
                                    W(64, 64, 16, 1, 1, 2, 2)),
                                   ((1000, 1000, 1000, True, True), W(128, 256, 64, 2, 1, 4, 1, 8))]):
        c, shapes, _ = _gemm(*args)
        kernels += lower_mma(c, s, shapes, f"wg{i}")
    assert module_arch(kernels, "sm_90") == "sm_90a"
    with pytest.raises(UnsupportedError, match="sm_90"):
        module_arch(kernels, "sm_80")
    ptx = compile_ptx(kernels, "sm_90")[1]
    assert ".target sm_90a" in ptx and ".extern .shared .align 1024 .b8" in ptx
    assert "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16" in ptx
    assert "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16" in ptx
    assert "fence.proxy.async.shared::cta" in ptx and "wgmma.wait_group.sync.aligned 1;" in ptx
    assert_ptxas_accepts(ptx, "sm_90a")
