"""Scatter-adds (`ir.scatter`: a sum whose terms data pick an output coordinate for),
end to end from tensor expressions: the interpreter and native CPU code against numpy
(np.add.at in float64) on fresh random inputs — repeated and out-of-range indices
(which hit nothing), int32 and int64 indices, index tensors of rank 1 and 2, the
scattered axis first or last, integer sums — PTX with atomic adds through ptxas, and
the same programs on the GPU (gpu tier)."""
from __future__ import annotations

import numpy as np
import pytest

import warpweave as ww
from tests.utils import assert_close, assert_ptxas_accepts

rng = np.random.default_rng()


def embedding_backward(vocab: int, width: int, index_shape, index_dtype="int64", dtype="float32"):
    """(placeholders, output): out[v, d] = Σ_m (ids[m] == v ? g[m, d] : 0)."""
    ids = ww.placeholder(index_shape, index_dtype, "ids")
    G = ww.placeholder((*index_shape, width), dtype, "G")

    def body(v, d):
        r = [ww.reduce_axis(n, f"r{k}") for k, n in enumerate(index_shape)]
        return ww.sum(ww.where(ids[tuple(r)] == v, G[(*r, d)], 0), axis=r)

    return [ids, G], ww.compute((vocab, width), body, name="grad")


def reference(vocab, ids, g):
    out = np.zeros((vocab, g.shape[-1]), np.float64 if g.dtype.kind == "f" else np.int64)
    flat = ids.reshape(-1)
    keep = (flat >= 0) & (flat < vocab)
    np.add.at(out, flat[keep], g.reshape(len(flat), -1)[keep].astype(out.dtype))
    return out


def random_ids(vocab, shape, dtype):
    ids = rng.integers(-2, vocab + 2, size=shape).astype(dtype)  # a few out of range: they hit nothing
    ids.reshape(-1)[:3] = 1  # repeated
    return ids


@pytest.mark.parametrize("target", ["interp", "cpu"])
@pytest.mark.parametrize("index_shape", [(7,), (3, 5)])
@pytest.mark.parametrize("index_dtype", ["int32", "int64"])
def test_embedding_backward(target, index_shape, index_dtype):
    vocab, width = 29, 37  # a width that leaves a scalar tail after the vectors
    inputs, out = embedding_backward(vocab, width, index_shape, index_dtype)
    ids = random_ids(vocab, index_shape, index_dtype)
    g = rng.standard_normal((*index_shape, width)).astype(np.float32)
    program = ww.build(out, inputs, target=target)
    assert_close(program(ids, g), reference(vocab, ids, g), "float32", scale=4)
    assert len(program.kernels) == 2  # the output zeroed, then the adds


@pytest.mark.parametrize("target", ["interp", "cpu"])
def test_integer_sums_and_the_scattered_axis_last(target):
    inputs, out = embedding_backward(11, 6, (9,), "int64", "int64")
    ids, g = random_ids(11, (9,), "int64"), rng.integers(-50, 50, (9, 6))
    np.testing.assert_array_equal(ww.build(out, inputs, target=target)(ids, g), reference(11, ids, g))
    X = ww.placeholder((4, 8), "float32", "X")
    idx = ww.placeholder((4, 8), "int32", "idx")

    def body(a, c):  # scatter_add along the last axis
        r = ww.reduce_axis(8, "r")
        return ww.sum(ww.where(idx[a, r] == c, X[a, r], 0.0), axis=r)

    x, i = rng.standard_normal((4, 8)).astype(np.float32), rng.integers(0, 5, (4, 8)).astype(np.int32)
    want = np.zeros((4, 5))
    for a in range(4):
        np.add.at(want[a], i[a], x[a].astype(np.float64))
    got = ww.build(ww.compute((4, 5), body, name="sa"), [X, idx], target=target)(x, i)
    assert_close(got, want, "float32", scale=4)


def test_scatter_ptx_adds_atomically_and_assembles():
    inputs, out = embedding_backward(1000, 64, (4, 16))
    ptx = ww.build(out, inputs, target="cuda").dump("ptx")
    assert "atom.global.add.f32" in ptx or "red.global.add.f32" in ptx
    assert_ptxas_accepts(ptx)


# ----------------------------------------------------------------------------- gpu tier

@pytest.mark.gpu
@pytest.mark.parametrize("index_shape", [(7,), (8, 128)])
def test_embedding_backward_on_the_gpu(index_shape):
    vocab, width = 50257, 72
    inputs, out = embedding_backward(vocab, width, index_shape)
    ids = random_ids(vocab, index_shape, "int64")
    g = rng.standard_normal((*index_shape, width)).astype(np.float32)
    assert_close(ww.build(out, inputs, target="cuda")(ids, g), reference(vocab, ids, g), "float32", scale=4)


@pytest.mark.parametrize("target,family", [("interp", "gpu"), ("cpu", "cpu")])
def test_every_point_of_the_scatter_space_is_right(target, family):
    from warpweave.frontend.te import build_graph
    from warpweave.passes import fuse
    from warpweave.passes.cost import device_for
    from warpweave.pipeline.compile import compile_graph
    from warpweave.schedule.space import group_key, space

    inputs, out = embedding_backward(13, 24, (5,))
    graph = build_graph(out, inputs)
    (group,) = fuse.plan(graph, device_for(family, 132)).groups
    assert group.pattern == "single"
    ids, g = random_ids(13, (5,), "int64"), rng.standard_normal((5, 24)).astype(np.float32)
    points = space(group, graph, family)
    assert len(points) > 1 and type(points[0]).__name__.endswith("Scatter")
    for point in points:
        program = compile_graph(graph, True, target, "sc", {group_key(group, graph): point})
        assert_close(program(ids, g), reference(13, ids, g), "float32", scale=4, what=str(point))


def test_a_16_bit_one_hot_sum_stays_a_reduction():
    """Memory adds only 32- and 64-bit numbers: a bfloat16 sum of that form keeps the
    reduction's templates (and its float32 accumulator)."""
    import ml_dtypes

    inputs, out = embedding_backward(9, 16, (6,), dtype="bfloat16")
    ids = random_ids(9, (6,), "int64")
    g = rng.standard_normal((6, 16)).astype(ml_dtypes.bfloat16)
    program = ww.build(out, inputs, target="cpu")
    assert len(program.kernels) == 1
    assert_close(program(ids, g), reference(9, ids, g.astype(np.float32)), "bfloat16")
