"""Data-dependent indexing (convert_index): gathers (embedding, index, index_select,
gather) through loads with data indices, scatter-adds (scatter_add, index_add, the
embedding's backward) through adding stores, a scatter of a value as a one-hot
reduction, against eager float64, strict (nothing may fall back); out-of-range
indices never read or write out of bounds."""
from __future__ import annotations

import pytest

torch = pytest.importorskip(
    "torch", reason="the torch.compile backend needs PyTorch (.ci/run installs torch==2.13.0, the CPU build)")
from torch.fx.experimental.proxy_tensor import make_fx  # noqa: E402

import warpweave.torch as wt  # noqa: E402
from warpweave.errors import UnsupportedError  # noqa: E402
from warpweave.frontend.torch import convert_index  # noqa: E402
from warpweave.frontend.torch.backend import decompositions  # noqa: E402
from warpweave.frontend.torch.partition import split_graph  # noqa: E402

F = torch.nn.functional


def compiled(fn, *args):
    """fn's ATen graph split strictly: every operation must compile."""
    gm = make_fx(fn, tracing_mode="fake", decomposition_table=decompositions())(*args)
    split, report = split_graph(gm, "test", "cpu", strict=True)
    assert not report.fallbacks and report.programs, str(report)
    return split


def check(fn, *args):
    got, want = compiled(fn, *args)(*args), fn(*args)
    for g, w in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want)):
        assert g.dtype == w.dtype and g.shape == w.shape, (g.dtype, g.shape, w.dtype, w.shape)
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12, equal_nan=True)


def with_grad(fn, weight_shape_of=None):
    """fn and the gradient of <fn(x), w> with respect to x, in one graph."""
    def both(x, *rest):
        x = x.detach().requires_grad_()
        y = fn(x, *rest)
        w = torch.cos(torch.arange(y.numel(), dtype=y.dtype)).reshape(y.shape)
        (g,) = torch.autograd.grad((y * w).sum(), x)
        return y, g
    return both


def rnd(*shape):
    return torch.randn(*shape, dtype=torch.float64)


def test_embedding_and_its_gradient():
    weight, ids = rnd(11, 5), torch.randint(0, 11, (3, 7))
    check(lambda w, i: F.embedding(i, w), weight, ids)
    check(with_grad(lambda w, i: F.embedding(i, w) * 2), weight, ids)
    check(with_grad(lambda w, i: F.embedding(i, w, padding_idx=2)), weight, ids)
    check(with_grad(lambda w, i: F.embedding(i, w, scale_grad_by_freq=True)), weight, ids)


def test_index_select_gather_and_advanced_index():
    x = rnd(6, 9, 4)
    check(with_grad(lambda x, i: x.index_select(1, i)), x, torch.tensor([8, 0, 3, 3, 5]))
    check(with_grad(lambda x, i: torch.gather(x, 1, i)), x, torch.randint(0, 9, (5, 3, 4)))  # index smaller
    check(with_grad(lambda x, i: torch.gather(x, 2, i)), x, torch.randint(0, 4, (6, 9, 2)))
    check(lambda x, i, j: x[i, :, j], x, torch.tensor([[0, -1], [5, 2]]), torch.tensor([3, -4]))  # apart
    check(lambda x, i, j: x[:, i, j], x, torch.tensor([[0, 8], [-9, 2]]), torch.tensor([1]))  # adjacent
    check(lambda x, i: x[i], x, torch.tensor([5, -6, 0]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_gathers_of_16_bit_tables_and_32_bit_indices_are_exact(dtype, index_dtype):
    x = torch.randn(40, 24).to(dtype)
    i = torch.randint(-40, 40, (3, 5), dtype=index_dtype)  # x[i] counts negative ones from the end
    j, k = i.abs() % 24, i.abs() % 40
    fns = [lambda x, i, j, k: F.embedding(k, x), lambda x, i, j, k: x[i],
           lambda x, i, j, k: x.index_select(1, j.flatten()), lambda x, i, j, k: torch.gather(x[:3], 1, j),
           lambda x, i, j, k: x[i, j].unsqueeze(-1) + x[j]]
    for fn in fns:
        got = compiled(fn, x, i, j, k)(x, i, j, k)
        assert got.dtype == dtype and torch.equal(got, fn(x, i, j, k))


def test_scatters():
    x = rnd(5, 7)
    index = torch.randint(0, 7, (4, 3))
    check(lambda x, i, s: torch.scatter_add(x, 1, i, s), x, index, rnd(4, 6))
    check(lambda x, i, s: torch.scatter_add(x, 0, i, s), x, torch.randint(0, 5, (4, 3)), rnd(4, 3))
    check(lambda x, i: torch.scatter(x, 1, i, 2.5), x, index)


def test_cross_entropy_and_its_gradient():
    logits, target = rnd(6, 10), torch.randint(0, 10, (6,))
    target[2] = -100  # ignored
    check(with_grad(lambda x, t: F.cross_entropy(x, t)), logits, target)


def test_out_of_range_indices_never_read_outside_the_table():
    """PyTorch raises; compiled code must never read outside the table: a gathered
    index out of range is clamped into the axis, a scatter leaves the element as it was."""
    weight = rnd(4, 3)
    ids = torch.tensor([1, 3, 2])
    run = compiled(lambda w, i: F.embedding(i, w), weight, ids)
    got = run(weight, torch.tensor([1, 1 << 40, -5]))
    assert torch.equal(got, weight[[1, 3, 0]])
    x, src = rnd(2, 3), rnd(2, 3)
    run = compiled(lambda x, i, s: torch.scatter_add(x, 1, i, s), x, torch.zeros(2, 3, dtype=torch.long), src)
    bad = torch.tensor([[0, 7, -1], [2, 2, 2]])
    got = run(x, bad, src)
    torch.testing.assert_close(got[0], x[0] + torch.tensor([src[0, 0], 0, 0], dtype=torch.float64))
    torch.testing.assert_close(got[1], x[1] + torch.tensor([0, 0, src[1].sum()], dtype=torch.float64))


@pytest.mark.parametrize("vocab", [50257, 30522])
def test_vocabulary_sized_embeddings_compile_and_match_exactly(vocab):
    """GPT-2's and BERT's token tables (768 wide), a small batch: one gather per output
    element, fused with the position embedding's add; eager's values exactly."""
    weight, pos = torch.randn(vocab, 768), torch.randn(16, 768)
    ids = torch.randint(0, vocab, (2, 16))
    ids[0, :3] = torch.tensor([0, vocab - 1, vocab - 1])
    fn = lambda w, p, i: F.embedding(i, w) + F.embedding(torch.arange(16), p)  # noqa: E731
    split = compiled(fn, weight, pos, ids)
    assert torch.equal(split(weight, pos, ids), fn(weight, pos, ids))


def test_large_scatter_adds_compile_at_the_cost_of_their_terms():
    """The backward of a real vocabulary's embedding, scatter_add and index_add into
    large outputs are scatters (a zeroed output, then one add per term), not one-hot
    sums over the output: they compile whatever the output's size."""
    ids = torch.randint(0, 50257, (3, 7))
    ids[0, :3] = 5  # repeated rows add up
    grad = torch.randn(3, 7, 24, dtype=torch.float64)
    for pad, freq in ((-1, False), (5, False), (-1, True)):
        fn = lambda g, i: torch.ops.aten.embedding_dense_backward(g, i, 50257, pad, freq)  # noqa: E731,B023
        check(fn, grad, ids)
    x, src = rnd(3000, 5), rnd(40, 5)
    check(lambda x, i, s: x.index_add(0, i, s, alpha=2), x, torch.randint(0, 3000, (40,)), src)
    check(lambda x, i, s: torch.scatter_add(x, 0, i, s), x, torch.randint(0, 3000, (40, 5)), src)


def test_large_value_scatters_stay_in_pytorch():
    """A scatter of a value is a one-hot `max` over the index positions: where that
    costs more than MAX_WORK terms and more than twice the data it moves, PyTorch runs
    it, with the reason."""
    x, index = torch.randn(100, 2000), torch.randint(0, 2000, (100, 2000))
    fn = lambda x, i: torch.scatter(x, 1, i, 2.5)  # noqa: E731
    gm = make_fx(fn, tracing_mode="fake", decomposition_table=decompositions())(x, index)
    split, report = split_graph(gm, "test", "cpu")
    assert [f.op for f in report.fallbacks] == ["aten.scatter.value"]
    assert "exceeds" in report.fallbacks[0].reason
    torch.testing.assert_close(split(x, index), fn(x, index))
    with pytest.raises(UnsupportedError, match="one-hot"):
        convert_index.check_work("scatter", 10, convert_index.MAX_WORK, 10)


@pytest.mark.gpu
def test_vocabulary_sized_embeddings_on_the_gpu(torch_cuda):
    """bfloat16 tables of GPT-2's vocabulary on the GPU, fused with the position add,
    and a gather and an index along inner axes: eager's values exactly."""
    weight = torch.randn(50257, 768, device=torch_cuda, dtype=torch.bfloat16)
    pos = torch.randn(16, 768, device=torch_cuda, dtype=torch.bfloat16)
    ids = torch.randint(0, 50257, (2, 16), device=torch_cuda)
    fn = lambda w, p, i: F.embedding(i, w) + p  # noqa: E731
    got = torch.compile(fn, backend=wt.backend, dynamic=False)(weight, pos, ids)
    assert torch.equal(got, fn(weight, pos, ids))
    x = torch.randn(6, 9, 4, device=torch_cuda)
    i = torch.randint(0, 9, (5, 3, 4), device=torch_cuda)
    fn = lambda x, i, j: torch.gather(x, 1, i) * 2 + x[:, j].sum()  # noqa: E731
    j = torch.tensor([-1, 3, 3], device=torch_cuda)
    torch.testing.assert_close(torch.compile(fn, backend=wt.backend, dynamic=False)(x, i, j), fn(x, i, j))


@pytest.mark.parametrize("dim", [0, 2, 3])
def test_index_put_accumulating_along_one_axis(dim):
    """index_put(accumulate=True) through one integer index tensor (the backward of
    indexing along an axis, as Falcon's rotary slices take it): repeated and negative
    indices, values broadcast to the indexed shape."""
    x = rnd(4, 3, 5, 6)
    index = torch.tensor([1, -1, 0, 1, 2])
    shape = list(x.shape)
    shape[dim] = len(index)
    lead = [None] * dim
    check(lambda x, i, v: torch.ops.aten.index_put(x, lead + [i], v, True) * 2, x, index, rnd(*shape))
    check(lambda x, i, v: torch.ops.aten.index_put(x, lead + [i], v, True) + 1, x, index,
          rnd(*[1] * (len(shape) - 1), shape[-1]))
    check(with_grad(lambda x, i: x[(slice(None),) * dim + (i,)] * 3), x, index)


def test_index_put_that_overwrites_stays_in_pytorch():
    gm = make_fx(lambda x, i, v: torch.ops.aten.index_put(x, [i], v, False), tracing_mode="fake",
                 decomposition_table=decompositions())(rnd(4, 3), torch.tensor([0, 2]), rnd(2, 3))
    _, report = split_graph(gm, "test", "cpu")
    assert [f.op for f in report.fallbacks] == ["aten.index_put.default"]
    assert "overwrite" in report.fallbacks[0].reason


def test_unchecked_index_forms_compile_as_the_checked_ones():
    """_unsafe_index and _unsafe_index_put (BEiT's relative position bias, PyTorch's own
    decompositions) read and accumulate as index and index_put do."""
    x, i = rnd(6, 5), torch.tensor([4, 0, -2, 4])
    check(lambda x, i: torch.ops.aten._unsafe_index(x, [None, i]) * 2, x, i)
    check(lambda x, i, v: torch.ops.aten._unsafe_index_put(x, [i], v, True) + 1, x, i, rnd(4, 5))
