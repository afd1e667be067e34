"""Tensor-core GIR nodes one at a time: ldmatrix fragment layouts on the interpreter
(against the PTX ISA's tables, written out here independently), the swizzle, the
verifier's group and shape checks, and the text round trip."""
import ml_dtypes
import numpy as np
import pytest

from warpweave.backends.interp import run_kernel
from warpweave.ir import dtypes as dt
from warpweave.ir import expr as ex
from warpweave.ir.gir import ASYNC_COMMIT, ASYNC_WAIT, Buffer, KernelBuilder, SharedAlloc, \
    make_kernel, swizzle_offset
from warpweave.ir.gir_parse import parse_kernel
from warpweave.ir.gir_text import print_kernel
from warpweave.ir.gir_verify import check, verify

T = ex.Var("t")
LANE = T % 32


def _a_fragment_reference(a):
    """PTX ISA, mma.m16n8k16 A (16 x 16, row): register pair p of lane l holds row
    g + 8 (p % 2), columns 2 c + e + 8 (p // 2), g = l // 4, c = l % 4."""
    out = np.zeros((32, 8), a.dtype)
    for lane in range(32):
        g, c = lane // 4, lane % 4
        for p in range(4):
            for e in range(2):
                out[lane, 2 * p + e] = a[g + 8 * (p % 2), 2 * c + e + 8 * (p // 2)]
    return out


def _ldmatrix_kernel(trans: bool, swizzle: bool):
    """One warp: cp.async a 16 x 16 tile into shared memory (stored transposed when
    `trans`), then one ldmatrix.x4 of the A fragment; every element stored out."""
    b = KernelBuilder("ldm")
    b.add_param(Buffer("x", dt.bfloat16, (16, 16), (16, 1), "in"))
    b.add_param(Buffer("y", dt.bfloat16, (32, 8), (8, 1), "out"))
    b.add_shared(SharedAlloc("s", dt.bfloat16, 256))
    grid = b.scope("grid", "g", 1, None)
    block = b.scope("block", "t", 32, grid)
    row, col = T // 2, (T % 2) * 8
    b.cp_async("x", row * 16 + col, "s", row, col, 16, swizzle, 16, block)
    b.async_sync(ASYNC_COMMIT, ["s"], block)
    b.async_sync(ASYNC_WAIT, ["s"], block, pending=0)
    b.sync(["s"], block)
    if trans:  # shared holds x's rows as k: matrix j = lane // 8 is (m half j % 2, k half j // 2)
        j = LANE // 8
        r, c = (j // 2) * 8 + LANE % 8, (j % 2) * 8
    else:
        r, c = LANE % 16, (LANE // 16) * 8
    frag = b.ldmatrix("s", r, c, 16, swizzle, trans, (("i", 1),), (1, 8), block)
    regs = b.scope("unroll", "r", 8, block)
    v = b.frag(frag, (ex.as_index(0), ex.Var("r")), regs)
    b.store("y", T * 8 + ex.Var("r"), v, regs)
    return b.build()


@pytest.mark.parametrize("trans", [False, True])
@pytest.mark.parametrize("swizzle", [False, True])
def test_ldmatrix_gives_the_mma_a_fragment(trans, swizzle):
    k = _ldmatrix_kernel(trans, swizzle)
    if swizzle:  # unswizzled 32-byte rows conflict (see below), but still compute
        verify(k)
    x = np.random.default_rng(1).standard_normal((16, 16)).astype(ml_dtypes.bfloat16)
    y = np.full(256, np.nan, ml_dtypes.bfloat16)
    run_kernel(k, {"x": x.ravel(), "y": y})
    a = x.T if trans else x  # .trans reads the stored tile transposed
    np.testing.assert_array_equal(y.reshape(32, 8), _a_fragment_reference(a))


def test_swizzle_is_a_permutation_of_chunks_within_rows():
    for row_elems in (16, 32, 64, 128, 256):
        rows = np.arange(64)[:, None]
        cols = np.arange(row_elems)[None, :]
        off = swizzle_offset(rows, cols, row_elems, True)
        assert sorted(off.ravel()) == list(range(64 * row_elems))
        assert ((off // row_elems) == rows).all()
        # any 8 consecutive rows at one chunk column: 8 different 16-byte bank groups
        for c in range(0, row_elems, 8):
            for r0 in range(0, 64, 8):
                groups = (swizzle_offset(np.arange(r0, r0 + 8), c, row_elems, True) // 8) % 8
                assert len(set(groups.tolist())) == 8


def test_unswizzled_ldmatrix_conflicts_and_is_reported():
    # rows of 16 elements (32 bytes): rows r and r + 4 share a bank group unswizzled
    assert any("bank conflict" in p for p in check(_ldmatrix_kernel(False, False)))
    assert check(_ldmatrix_kernel(False, True)) == []


def test_missing_wait_and_commit_are_reported():
    k = _ldmatrix_kernel(False, True)
    drop = {n.id for n in k.nodes if n.op in (ASYNC_COMMIT, ASYNC_WAIT)}
    src = {}
    for e in k.edges:
        if e.dst in drop:
            src[e.dst] = src.get(e.src, e.src)
    edges = [type(e)(src.get(e.src, e.src), e.dst, e.slot, e.level, e.dtype, e.shape)
             for e in k.edges if e.dst not in drop]
    bad = make_kernel(k.name, k.params, k.shared, [n for n in k.nodes if n.id not in drop],
                      edges, k.target)
    problems = check(bad)
    assert any("sync.async_commit" in p for p in problems)
    assert any("sync.async_wait" in p for p in problems)


def test_fragment_shape_mismatch_is_reported():
    k = _ldmatrix_kernel(False, True)
    nodes = [n.replace(attrs={**n.attr_map, "shape": (2, 8)}) if n.op == "move.shared.frag"
             else n for n in k.nodes]
    bad = make_kernel(k.name, k.params, k.shared, nodes, k.edges, k.target)
    assert any("ldmatrix.x4 give 8 elements" in p for p in check(bad))


def test_text_round_trip():
    from tests.lower.test_mma import SMALL, _gemm
    from warpweave.lower.mma import lower_mma

    c, shapes, _ = _gemm(33, 17, 40, True)
    for k in (_ldmatrix_kernel(True, True), *lower_mma(c, SMALL, shapes)):
        text = print_kernel(k)
        assert parse_kernel(text) == k and print_kernel(parse_kernel(text)) == text
