"""Padded matrix products (frontend/torch/pad_matmuls): the rewrite keeps every value,
and only misaligned, large products are candidates."""
import pytest

torch = pytest.importorskip("torch", reason="padding rewrites PyTorch FX graphs")
from torch.fx.experimental.proxy_tensor import make_fx  # noqa: E402

from warpweave.frontend.torch.pad_matmuls import pad_matmuls, padding  # noqa: E402

aten = torch.ops.aten


def _graph(fn, *args):
    return make_fx(fn, tracing_mode="fake")(*args)


def _randn(*shape, dtype=torch.float64):
    return torch.randn(*shape, dtype=dtype)


CASES = {
    "mm": (lambda a, b: torch.mm(a, b) * 2, lambda: (_randn(130, 67), _randn(67, 301))),
    "mm transposed": (lambda a, b: torch.mm(a.t(), b.t()), lambda: (_randn(67, 130), _randn(301, 67))),
    "addmm vector bias": (lambda c, a, b: torch.addmm(c, a, b).relu(),
                          lambda: (_randn(301), _randn(130, 67), _randn(67, 301))),
    "addmm matrix bias": (lambda c, a, b: torch.addmm(c, a, b),
                          lambda: (_randn(130, 301), _randn(130, 67), _randn(67, 301))),
    "addmm row bias": (lambda c, a, b: torch.addmm(c, a, b),
                       lambda: (_randn(130, 1), _randn(130, 67), _randn(67, 301))),
    "bmm": (lambda a, b: torch.bmm(a, b) + 1, lambda: (_randn(3, 33, 17), _randn(3, 17, 45))),
}


@pytest.mark.parametrize("case", CASES)
def test_padded_graph_computes_the_same_values(case):
    fn, make = CASES[case]
    args = make()
    gm = _graph(fn, *args)
    seen = []
    padded = pad_matmuls(gm, faster=lambda sig: seen.append(sig) or True, device="cpu", min_flops=0)
    assert seen and padded is not gm
    targets = [n.target for n in padded.graph.nodes if n.op == "call_function"]
    assert aten.constant_pad_nd.default in targets and aten.slice.Tensor in targets
    for n in padded.graph.nodes:  # every product runs on extents of whole 16-byte units
        if n.target in (aten.mm.default, aten.bmm.default, aten.addmm.default):
            shapes = [a.meta["val"].shape for a in n.args if isinstance(a, torch.fx.Node)][-2:]
            assert not any(padding(shapes[0][-2], shapes[1][-1], shapes[0][-1], torch.float64))
    fresh = make()
    torch.testing.assert_close(padded(*fresh), fn(*fresh), rtol=1e-12, atol=1e-12)


def test_views_of_the_padded_product_are_traced_again():
    """A view of the product has the padded strides after the rewrite: its fake value
    (which the partitioner lays results out by) says so, and a view that cannot take
    them declines the padding."""
    h, w = _randn(16, 16), _randn(37, 16)
    padded = pad_matmuls(_graph(lambda h, w: (h @ w.t()).view(2, 8, 37), h, w),
                         faster=lambda sig: True, device="cpu", min_flops=0)
    out = [n for n in padded.graph.nodes if n.op == "output"][0].args[0]
    n = 37 + padding(16, 37, 16, torch.float64)[1]
    assert n > 37 and out.meta["val"].stride() == (8 * n, n, 1)
    gm = _graph(lambda h, w: (h @ w.t()).view(-1), h, w)
    assert pad_matmuls(gm, faster=lambda sig: True, device="cpu", min_flops=0) is gm


def test_backend_returns_the_values_of_a_padded_product_viewed(monkeypatch):
    """GPT-2's logits are the padded product viewed as [batch, sequence, vocabulary]
    and returned: the values of eager, whatever layout they come in."""
    import warpweave.torch as wt
    from warpweave.frontend.torch import backend

    monkeypatch.setattr(backend, "pad_matmuls", lambda gm: pad_matmuls(
        gm, faster=lambda sig: True, device="cpu", min_flops=0))
    torch._dynamo.reset()
    fn = lambda h, w: (h.reshape(16, 16) @ w.t()).view(2, 8, 37)  # noqa: E731
    h, w = torch.randn(2, 8, 16), torch.randn(37, 16)
    got = torch.compile(fn, backend=wt.backend, dynamic=False)(h, w)
    torch.testing.assert_close(got, fn(h, w), rtol=1e-5, atol=1e-5)


def test_declined_padding_returns_the_graph_itself():
    fn, make = CASES["mm"]
    gm = _graph(fn, *make())
    assert pad_matmuls(gm, faster=lambda sig: False, device="cpu", min_flops=0) is gm


def test_only_large_misaligned_products_are_candidates():
    seen = []
    decide = lambda sig: seen.append(sig) or False  # noqa: E731
    aligned = _graph(torch.mm, _randn(64, 64), _randn(64, 64))
    small = _graph(torch.mm, _randn(5, 7), _randn(7, 3))
    other_device = _graph(torch.mm, *CASES["mm"][1]())
    pad_matmuls(aligned, faster=decide, device="cpu", min_flops=0)
    pad_matmuls(small, faster=decide, device="cpu")
    pad_matmuls(other_device, faster=decide, device="cuda", min_flops=0)
    assert seen == []
    pad_matmuls(other_device, faster=decide, device="cpu", min_flops=0)
    assert len(seen) == 1


def test_padding_reaches_sixteen_bytes():
    assert padding(8192, 50257, 768, torch.bfloat16) == (0, 7, 0)
    assert padding(10, 12, 3, torch.float32) == (2, 0, 1)
    assert padding(7, 7, 7, torch.float64) == (1, 1, 1)


@pytest.mark.gpu
@pytest.mark.parametrize("view", [False, True])
def test_logits_product_on_the_gpu_matches_eager(torch_cuda, view):
    """GPT-2's logits product (a vocabulary of 50257 columns) through the backend: the
    same values whether or not the measurement chose padding, returned as computed or
    viewed as [batch, sequence, vocabulary] as GPT-2 returns them."""
    import warpweave.torch as wt

    h = torch.randn(4, 128, 768, device="cuda", dtype=torch.bfloat16)
    w = torch.randn(50257, 768, device="cuda", dtype=torch.bfloat16)
    if view:
        fn = lambda h, w: (h.reshape(512, 768) @ w.t()).view(4, 128, 50257)  # noqa: E731
    else:
        fn = lambda h, w: (h.reshape(512, 768) @ w.t()).float()  # noqa: E731
    torch._dynamo.reset()
    got = torch.compile(fn, backend=wt.backend, dynamic=False)(h, w)
    torch.testing.assert_close(got, fn(h, w), rtol=2e-2, atol=2e-2)


def test_transposed_operands_are_padded_in_their_memory_order_and_shared():
    """A logits gradient read as it is (x @ w) and transposed (x.t() @ h): one padded
    copy, made without transposing (padded along its own rows), which both read."""
    g, w, h = _randn(64, 37), _randn(37, 16), _randn(64, 16)
    fn = lambda g, w, h: (g @ w, g.t() @ h)  # noqa: E731
    padded = pad_matmuls(_graph(fn, g, w, h), faster=lambda sig: True, device="cpu", min_flops=0)
    pads = [n for n in padded.graph.nodes if n.target is aten.constant_pad_nd.default]
    from_g = [n for n in pads if n.args[0].op == "placeholder" and n.args[0].meta["val"].shape == (64, 37)]
    assert len(from_g) == 1 and from_g[0].meta["val"].is_contiguous()
    assert not any(n.args[0].target in (aten.t.default, aten.transpose.int) for n in pads)
    for n in padded.graph.nodes:
        if n.target is aten.mm.default:
            assert all(a.meta["val"].is_contiguous() or a.meta["val"].t().is_contiguous() for a in n.args)
    fresh = (_randn(64, 37), _randn(37, 16), _randn(64, 16))
    for got, want in zip(padded(*fresh), fn(*fresh)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
