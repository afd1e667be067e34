"""Regressions found running many transformers architectures (issue 14,
benchmarks/architectures.py): each operation against eager float64, values and
gradients, strict (nothing may fall back)."""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip(
    "torch", reason="the torch.compile backend needs PyTorch (.ci/run installs torch==2.13.0, the CPU build)")

import warpweave.torch as wt  # noqa: E402
from tests.frontend.torch.test_convert_index import check, rnd, with_grad  # noqa: E402
from warpweave.frontend.torch.backend import collecting_reports  # noqa: E402

F = torch.nn.functional


def test_log1p_accurate_near_zero_and_at_the_edges():
    """Mamba's and Jamba's softplus: log1p is accurate where log(1 + x) loses every digit."""
    x = torch.tensor([0.0, -0.0, 1e-20, -1e-20, 3e-8, -3e-8, 1e-4, -0.5, 0.3, 2.0, 1e10, 1e300,
                      math.inf, -1.0, -2.0, math.nan, -math.inf], dtype=torch.float64)
    check(torch.log1p, x)
    check(with_grad(lambda x: F.softplus(x) + torch.log1p(x.abs())), rnd(4, 9))
    small = torch.tensor([1e-9, -3e-8, 2.5e-7, 0.75], dtype=torch.float32)
    got = check_float32(torch.log1p, small)
    torch.testing.assert_close(got.double(), torch.log1p(small.double()), rtol=2.4e-7, atol=0)


def check_float32(fn, x):
    from tests.frontend.torch.test_convert_index import compiled

    got = compiled(fn, x)(x)
    return got[0] if isinstance(got, (tuple, list)) else got


def test_uninitialised_allocations_filled_by_copies():
    """Funnel's, BigBird's and Longformer's backwards copy a gradient into new_empty_strided;
    MoE routers allocate with empty_permuted. Uninitialised memory may hold zeros, and what
    fills it decides the values."""
    aten = torch.ops.aten

    def fill(x):
        a = aten.copy.default(aten.new_empty_strided.default(x, [5, 4], [4, 1]), x.t() * 2)
        b = aten.copy.default(aten.empty_permuted.default([4, 5], [1, 0], dtype=x.dtype), x.exp())
        c = aten.copy.default(aten.new_empty.default(x, [4, 5]), x[:1])  # broadcast into it
        d = aten.copy.default(aten.empty_strided.default([4, 5], [1, 4], dtype=x.dtype), x.sin())
        e = aten.copy.default(torch.empty_like(x), x * 3) + aten.copy.default(torch.empty(5, dtype=x.dtype), x[0])
        return a, b + c, d, e

    check(fill, rnd(4, 5))

    def filled_in_place(x):  # functionalized by AOTAutograd into copies of empty allocations
        a = x.new_empty_strided((2, 3, 5, 4), (60, 20, 1, 5)).copy_(x.transpose(-1, -2) * 2)
        b = torch.empty_like(x, memory_format=torch.channels_last).copy_(x.exp())
        return a.transpose(-1, -2) * b

    x = rnd(2, 3, 4, 5).requires_grad_()
    w = torch.cos(torch.arange(120, dtype=x.dtype)).reshape(2, 3, 4, 5)
    with collecting_reports() as reports:
        got = torch.compile(filled_in_place, backend=wt.backend, options={"strict": True})(x)
        (got_grad,) = torch.autograd.grad((got * w).sum(), x)
    want = filled_in_place(x)
    (want_grad,) = torch.autograd.grad((want * w).sum(), x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-12, atol=1e-12)
    assert not [f for r in reports for f in r.fallbacks]


@pytest.mark.parametrize("shape, dim", [((6, 4, 5), 2), ((6, 4, 5), 0), ((7, 3), 0), ((7, 3), -1)])
def test_weight_norm_and_its_backward(shape, dim):
    """wav2vec2's and HuBERT's positional convolution: `_weight_norm_interface` has a
    decomposition, its backward had none (it fell back to PyTorch)."""
    v = rnd(*shape).requires_grad_()
    g = rnd(*[n if k == dim % len(shape) else 1 for k, n in enumerate(shape)]).requires_grad_()
    w = torch.cos(torch.arange(v.numel(), dtype=v.dtype)).reshape(shape)

    def weight_and_grads(v, g):
        out = torch._weight_norm(v, g, dim)
        return (out, *torch.autograd.grad((out * w).sum(), (v, g)))

    with collecting_reports() as reports:
        got = torch.compile(weight_and_grads, backend=wt.backend, options={"strict": True})(v, g)
    want = weight_and_grads(v, g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    ops = {op for r in reports for p in r.programs for op in p.ops}
    assert not [f for r in reports for f in r.fallbacks] and "aten.sum.dim_IntList" in ops, reports


def test_as_strided_and_its_scatter_of_contiguous_tensors():
    """Group norm's decomposition (SEW, BiT, PoolFormer) reshapes through as_strided, and
    its backward scatters through as_strided_scatter (Swin's pooler)."""
    aten = torch.ops.aten
    check(lambda x: aten.as_strided.default(x * 2, [2, 16], [16, 1]), rnd(2, 16, 1, 1))
    check(lambda x: aten.as_strided.default(x.exp(), [3, 4], [1, 3], 5), rnd(4, 5))  # transposed, offset
    check(lambda x: aten.as_strided.default(x.exp(), [3, 2, 2], [4, 2, 1], 2), rnd(4, 5))  # overlapping
    check(lambda x, s: aten.as_strided_scatter.default(x.exp(), s * 3, [2, 16], [16, 1], 0),
          rnd(2, 16, 1, 1), rnd(2, 16))
    check(lambda x, s: aten.as_strided_scatter.default(x.exp(), s * 3, [2, 1, 3], [3, 7, 1], 4),
          rnd(4, 5), rnd(2, 1, 3))
    check(with_grad(lambda x: F.group_norm(x, 2) * x), rnd(2, 4, 3, 5))
    check(with_grad(lambda x: F.adaptive_avg_pool2d(x, 1).flatten(1) * 3), rnd(2, 4, 3, 5))

