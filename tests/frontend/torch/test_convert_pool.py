"""Pooling, padding, scans and boolean reductions (convert_pool, convert_misc) against
eager float64 (values, max-pool indices and gradients), strict: nothing may fall back."""
from __future__ import annotations

import pytest

torch = pytest.importorskip(
    "torch", reason="the torch.compile backend needs PyTorch (.ci/run installs torch==2.13.0, the CPU build)")

from tests.frontend.torch.test_convert_index import check, rnd, with_grad  # noqa: E402

F = torch.nn.functional


@pytest.mark.parametrize("shape, kernel, stride, padding, dilation, ceil_mode", [
    ((2, 3, 9, 11), 3, 2, 1, 1, False),
    ((2, 3, 9, 11), 3, 2, 1, 1, True),
    ((3, 10, 7), (2, 3), (1, 2), (1, 0), (2, 1), True),
    ((1, 2, 8, 8), 2, None, 0, 1, False),
    ((1, 1, 7, 9), (3, 2), (3, 1), (1, 1), (1, 3), False),
])
def test_max_pool_values_indices_and_gradient(shape, kernel, stride, padding, dilation, ceil_mode):
    def pool(x):
        return F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, return_indices=True)

    def values_indices_gradient(x):
        x = x.detach().requires_grad_()
        y, indices = pool(x)
        (g,) = torch.autograd.grad((y * torch.cos(y.detach())).sum(), x)
        return y, indices, g

    check(values_indices_gradient, rnd(*shape))


def test_max_pool_ties_and_nans_pick_as_pytorch():
    x = torch.randint(0, 3, (1, 2, 6, 6)).double()  # many ties: the first maximum
    x[0, 1, 1, 1] = x[0, 1, 2, 2] = float("nan")  # the last NaN of a window
    check(lambda x: F.max_pool2d(x, 3, 1, 1, return_indices=True), x)


@pytest.mark.parametrize("shape, kernel, stride, padding, ceil_mode, include, divisor", [
    ((2, 3, 9, 11), 3, 2, 1, False, True, None),
    ((2, 3, 9, 11), 3, 2, 1, True, False, None),
    ((3, 10, 7), (2, 3), (1, 2), (1, 0), True, True, None),
    ((1, 2, 8, 8), 2, None, 0, False, True, 3),
])
def test_avg_pool_and_gradient(shape, kernel, stride, padding, ceil_mode, include, divisor):
    def pool(x):
        return F.avg_pool2d(x, kernel, stride, padding, ceil_mode, include, divisor)

    check(with_grad(pool), rnd(*shape))


def test_constant_pad_nd():
    x = rnd(2, 3, 5)
    check(with_grad(lambda x: F.pad(x, (1, 2, 0, 3), value=-1.5)), x)
    check(with_grad(lambda x: F.pad(x, (-1, 2, 2, -1))), x)  # negative pads crop
    check(lambda x: F.pad(x, (2, 0, 1, 1, 1, 0)), torch.randint(0, 9, (2, 3, 5)))


def test_cumsum():
    x = rnd(3, 17, 2)
    check(with_grad(lambda x: torch.cumsum(x, 1)), x)
    check(lambda x: torch.cumsum(x, -1), torch.randint(-5, 5, (4, 9), dtype=torch.int32))
    check(lambda x: torch.cumsum(x, 0), torch.rand(7) > 0.5)


def test_any_and_all():
    x = rnd(4, 5, 6)
    x[x.abs() < 0.5] = 0
    check(lambda x: (x.any(), x.all(), x.any(1), x.all(-1, keepdim=True), x.any((0, 2)), (x > 0).all(0)), x)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 2] = False
    check(lambda m: (m.all(), m.any(1), (~m).any()), mask)


def test_dropout_that_draws_nothing_and_its_backward():
    x, mask = rnd(3, 8), torch.rand(3, 8) > 0.3
    check(lambda x: torch.ops.aten.native_dropout(x, 0.0, True), x)
    check(lambda x: torch.ops.aten.native_dropout(x, 0.5, False), x)
    check(lambda x: torch.ops.aten.native_dropout(x, 1.0, True), x)
    check(lambda g, m: torch.ops.aten.native_dropout_backward(g, m, 1.25), x, mask)
    from torch.fx.experimental.proxy_tensor import make_fx

    from warpweave.frontend.torch.backend import decompositions
    from warpweave.frontend.torch.partition import split_graph

    gm = make_fx(lambda x: torch.ops.aten.native_dropout(x, 0.5, True)[0] * 2, tracing_mode="fake",
                 decomposition_table=decompositions())(x)
    _, report = split_graph(gm, "test", "cpu")
    assert [(f.op, "random" in f.reason) for f in report.fallbacks] == [("aten.native_dropout.default", True)]


@pytest.mark.ptx
def test_converted_graphs_assemble_for_the_gpu():
    """The one-hot and window reductions lower to PTX that ptxas accepts (bfloat16 and
    float32), without a GPU."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from tests.utils import assert_ptxas_accepts
    from warpweave.frontend.torch.backend import decompositions
    from warpweave.frontend.torch.partition import build_call

    bf16 = torch.bfloat16
    cases = [
        (with_grad(lambda w, i: F.embedding(i, w)), torch.randn(11, 5, dtype=bf16), torch.randint(0, 11, (3, 7))),
        (with_grad(lambda x: F.max_pool2d(x, 3, 2, 1)), torch.randn(2, 3, 9, 11)),
        (with_grad(lambda x: F.avg_pool2d(x, 3, 2, 1, True, False)), torch.randn(2, 3, 9, 11, dtype=bf16)),
        (lambda x, i: (torch.gather(x, 1, i), torch.cumsum(x, 1), F.pad(x, (1, 2)).any(-1)),
         torch.randn(3, 17), torch.randint(0, 17, (3, 4))),
    ]
    for fn, *args in cases:
        gm = make_fx(fn, tracing_mode="fake", decomposition_table=decompositions())(*args)
        program = build_call(gm, "cuda", "gpu_check").program
        assert program.kernels
        assert_ptxas_accepts(program.dump("ptx"))


@pytest.mark.parametrize("shape, kernel, stride, padding, ceil_mode", [
    ((2, 3, 9, 11), 3, 2, 1, True),
    ((1, 2, 7, 9), (3, 2), (3, 1), (1, 1), False),
])
def test_pools_and_their_backwards_on_the_gpu_schedules(shape, kernel, stride, padding, ceil_mode):
    """The same graphs through the GPU schedules (the interpreter): the backward's
    windows of covering outputs (stride without dilation) and of kernel offsets."""
    from torch.fx.experimental.proxy_tensor import make_fx

    from warpweave.frontend.torch.backend import decompositions
    from warpweave.frontend.torch.partition import split_graph

    def fn(x):
        x = x.detach().requires_grad_()
        y, indices = F.max_pool2d(x, kernel, stride, padding, 1, ceil_mode, return_indices=True)
        (g,) = torch.autograd.grad((y * torch.cos(y.detach())).sum(), x)
        z = F.avg_pool2d(x, kernel, stride, padding, ceil_mode)
        (h,) = torch.autograd.grad((z * torch.sin(z.detach())).sum(), x)
        return y, indices, g, z, h

    x = rnd(*shape)
    gm = make_fx(fn, tracing_mode="fake", decomposition_table=decompositions())(x)
    split, report = split_graph(gm, "pools", "interp", strict=True)
    assert not report.fallbacks
    for got, want in zip(split(x), fn(x)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
