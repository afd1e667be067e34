"""Loads whose index is data (gathers), end to end from tensor expressions: the
interpreter and native CPU code against numpy in float64 on fresh random inputs —
negative (wrapped) and repeated indices, int32 and int64 indices, bfloat16 tables,
index tensors of rank 0 to 3, gathers fused with their consumers — out-of-range
indices (raise in the reference, clamped in compiled code), PTX through ptxas, and
the same programs on the GPU (gpu tier)."""
from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import warpweave as ww
from tests.utils import assert_close, assert_ptxas_accepts, layer_norm_reference
from warpweave.errors import IndexOutOfRangeError

rng = np.random.default_rng()
BF16 = np.dtype(ml_dtypes.bfloat16)


def embedding(vocab: int, width: int, index_shape, index_dtype: str, table_dtype: str, wrap: bool):
    """(placeholders, output): out[*i, d] = W[ids[*i], d] (ids counted from the end
    where negative, with `wrap`)."""
    W = ww.placeholder((vocab, width), table_dtype, "W")
    ids = ww.placeholder(index_shape, index_dtype, "ids")

    def body(*axes):
        i = ids[tuple(axes[:-1])]
        if wrap:
            i = ww.where(i < 0, i + vocab, i)
        return W[i, axes[-1]]

    return [W, ids], ww.compute((*index_shape, width), body, name="embed")


def random_ids(vocab: int, shape, dtype: str, wrap: bool) -> np.ndarray:
    low = -vocab if wrap else 0
    ids = rng.integers(low, vocab, size=shape).astype(dtype)
    if ids.size > 2:  # repeated indices, and both ends of the table
        flat = ids.reshape(-1)
        flat[0] = flat[-1]
        flat[1] = vocab - 1
    return ids


def run(target: str, outputs, inputs, *arrays):
    return ww.build(outputs, inputs, target=target)(*arrays)


@pytest.mark.parametrize("target", ["interp", "cpu"])
@pytest.mark.parametrize("index_shape", [(), (5,), (3, 4), (2, 3, 2)])
@pytest.mark.parametrize("index_dtype", ["int32", "int64"])
def test_embedding_of_any_index_rank_and_dtype(target, index_shape, index_dtype):
    vocab, width = 37, 24
    wrap = index_dtype == "int64"
    inputs, out = embedding(vocab, width, index_shape, index_dtype, "float32", wrap)
    table = rng.standard_normal((vocab, width)).astype(np.float32)
    ids = random_ids(vocab, index_shape, index_dtype, wrap)
    got = run(target, out, inputs, table, ids)
    np.testing.assert_array_equal(got, table.astype(np.float64)[ids])


@pytest.mark.parametrize("target", ["interp", "cpu"])
def test_bfloat16_table_and_widths_that_do_not_fill_a_vector(target):
    vocab, width = 50, 13
    inputs, out = embedding(vocab, width, (7,), "int64", "bfloat16", True)
    table = rng.standard_normal((vocab, width)).astype(BF16)
    ids = random_ids(vocab, (7,), "int64", True)
    got = run(target, out, inputs, table, ids)
    assert got.dtype == BF16
    np.testing.assert_array_equal(got.astype(np.float64), table.astype(np.float64)[ids])


def _embed_add_norm(W, P, ids):
    """Token embedding + position embedding + layer norm (no affine): a model's input."""
    x = ww.take(W, ids, axis=0) + P
    m = x.mean(axis=-1, keepdims=True)
    v = ((x - m) ** 2).mean(axis=-1, keepdims=True)
    return (x - m) / ww.sqrt(v + 1e-5)


def _embed_add_norm_inputs(vocab=300, seq=9, width=64):
    table = rng.standard_normal((vocab, width)).astype(np.float32)
    pos = rng.standard_normal((seq, width)).astype(np.float32)
    ids = random_ids(vocab, (2, seq), "int32", False)
    ids[1, 0] = -vocab  # numpy.take counts negative indices from the end
    return table, pos, ids


@pytest.mark.parametrize("target", ["interp", "cpu"])
def test_gather_fuses_with_its_consumers(target):
    table, pos, ids = _embed_add_norm_inputs()
    fused = ww.jit(_embed_add_norm, target=target)
    ref = layer_norm_reference(np.take(table.astype(np.float64), ids, axis=0) + pos)
    assert_close(fused(table, pos, ids), ref, "float32", scale=4)
    assert len(fused.lower(table, pos, ids).kernels) == 1  # gather, add and norm in one kernel


@pytest.mark.parametrize("target", ["interp", "cpu"])
def test_gather_along_a_middle_axis_varies_per_lane(target):
    """index_select along axis 1: the data index differs between the vector lanes of
    the last axis' neighbours, so the load goes lane by lane."""
    X = ww.placeholder((4, 30, 6), "float32", "X")
    idx = ww.placeholder((11,), "int64", "idx")
    out = ww.compute((4, 6, 11), lambda a, c, k: X[a, idx[k], c] * 2, name="sel")
    x = rng.standard_normal((4, 30, 6)).astype(np.float32)
    i = random_ids(30, (11,), "int64", False)
    got = run(target, out, [X, idx], x, i)
    np.testing.assert_array_equal(got, np.transpose(x[:, i, :], (0, 2, 1)) * 2)


def test_out_of_range_indices():
    """The reference evaluators raise, naming the index and the bound; native code
    clamps the index into the table, never reading outside it."""
    inputs, out = embedding(10, 8, (3,), "int64", "float32", False)
    table = rng.standard_normal((10, 8)).astype(np.float32)
    bad = np.array([2, 10, -3])
    with pytest.raises(IndexOutOfRangeError, match="10.*outside \\[0, 10\\)"):
        run("interp", out, inputs, table, bad)
    from warpweave.frontend.te import build_graph
    from warpweave.ir.tensor import evaluate

    with pytest.raises(IndexOutOfRangeError, match="embed: index 10 is out of bounds for axis 0 of W with size 10"):
        evaluate(build_graph(out, inputs), {"W": table, "ids": bad})
    np.testing.assert_array_equal(run("cpu", out, inputs, table, bad), table[[2, 9, 0]])


@pytest.mark.parametrize("table_dtype", ["float32", "bfloat16"])
def test_gather_ptx_assembles_with_wide_row_loads(table_dtype):
    inputs, out = embedding(1000, 64, (4, 16), "int64", table_dtype, True)
    program = ww.build(out, inputs, target="cuda")
    ptx = program.dump("ptx")
    assert_ptxas_accepts(ptx)
    assert "ld.global.nc.v4" in ptx or "ld.global.v4" in ptx  # the row is read 16 bytes at a time


# ----------------------------------------------------------------------------- gpu tier

@pytest.mark.gpu
@pytest.mark.parametrize("index_shape", [(), (5,), (3, 4), (2, 3, 2)])
@pytest.mark.parametrize("table_dtype", ["float32", "bfloat16"])
def test_embedding_on_the_gpu(index_shape, table_dtype):
    vocab, width = 50257, 72
    inputs, out = embedding(vocab, width, index_shape, "int64", table_dtype, True)
    table = rng.standard_normal((vocab, width)).astype(np.dtype(ml_dtypes.bfloat16) if
                                                      table_dtype == "bfloat16" else np.float32)
    ids = random_ids(vocab, index_shape, "int64", True)
    got = run("cuda", out, inputs, table, ids)
    np.testing.assert_array_equal(got.astype(np.float64), table.astype(np.float64)[ids])


@pytest.mark.gpu
def test_fused_gather_and_per_lane_gather_on_the_gpu():
    table, pos, ids = _embed_add_norm_inputs()
    ref = layer_norm_reference(np.take(table.astype(np.float64), ids, axis=0) + pos)
    assert_close(ww.jit(_embed_add_norm, target="cuda")(table, pos, ids), ref, "float32", scale=4)
    X = ww.placeholder((4, 30, 6), "float32", "X")
    idx = ww.placeholder((11,), "int64", "idx")
    out = ww.compute((4, 6, 11), lambda a, c, k: X[a, idx[k], c] * 2, name="sel")
    x = rng.standard_normal((4, 30, 6)).astype(np.float32)
    i = random_ids(30, (11,), "int64", False)
    np.testing.assert_array_equal(run("cuda", out, [X, idx], x, i), np.transpose(x[:, i, :], (0, 2, 1)) * 2)
