"""Pointwise CPU convolutions as matrix products (frontend.torch.conv_decompositions):
no convolution is left in the graph, and values and every gradient match eager's in
float64; other convolutions stay whole."""
from __future__ import annotations

import pytest

torch = pytest.importorskip(
    "torch", reason="the torch.compile backend needs PyTorch (.ci/run installs torch==2.13.0, the CPU build)")
from torch.fx.experimental.proxy_tensor import make_fx  # noqa: E402

import warpweave.torch as wt  # noqa: E402
from warpweave.frontend.torch.backend import collecting_reports, decompositions  # noqa: E402

aten, nn, F = torch.ops.aten, torch.nn, torch.nn.functional


@pytest.mark.parametrize("bias", [True, False])
def test_pointwise_convolutions_and_their_gradients_are_products(bias):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 1, bias=bias).double()
    x = torch.randn(3, 6, 7, 5, dtype=torch.float64)

    def step(module, fn, x):
        x = x.detach().requires_grad_()
        y = fn(x)
        (y * torch.cos(y.detach())).sum().backward()
        return [y, x.grad] + [p.grad for p in module.parameters()]

    twin = nn.Conv2d(6, 5, 1, bias=bias).double()
    twin.load_state_dict(conv.state_dict())
    with collecting_reports() as reports:
        got = step(conv, torch.compile(lambda t: F.relu(conv(t)), backend=wt.backend,
                                       options=dict(strict=True)), x)
    want = step(twin, lambda t: F.relu(twin(t)), x)
    fell = {f.op for r in reports for f in r.fallbacks}
    assert not any("convolution" in op for op in fell), fell
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel,stride,groups", [(3, 1, 1), (1, 2, 1), (1, 1, 2)])
def test_other_convolutions_stay_whole(kernel, stride, groups):
    def fn(x, w):
        return F.conv2d(x, w, stride=stride, groups=groups)

    x, w = torch.randn(2, 4, 6, 6), torch.randn(4, 4 // groups, kernel, kernel)
    gm = make_fx(fn, decomposition_table=decompositions())(x, w)
    assert any(n.target is aten.convolution.default for n in gm.graph.nodes)
