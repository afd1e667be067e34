"""Regressions found running many transformers architectures (issue 14,
benchmarks/architectures.py): each operation against eager float64, values and
gradients, strict (nothing may fall back)."""
from __future__ import annotations

import math

import pytest

torch = pytest.importorskip(
    "torch", reason="the torch.compile backend needs PyTorch (.ci/run installs torch==2.13.0, the CPU build)")

from tests.frontend.torch.test_convert_index import check, rnd, with_grad  # noqa: E402

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
