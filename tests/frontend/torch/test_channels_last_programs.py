"""Random channels-last programs (per-channel affine maps, activations, pools, spatial
and channel means, a residual, a round trip through NHWC) on the CPU and through the
GPU schedules (interpreter): eager's float64 values and layouts, strict. Where the
outputs are channels-last the program computes in that order (passes.layout)."""
from __future__ import annotations

import random

import pytest

torch = pytest.importorskip(
    "torch", reason="the torch.compile backend needs PyTorch (.ci/run installs torch==2.13.0, the CPU build)")
import warpweave.torch as wt  # noqa: E402

F = torch.nn.functional
OPS = ("add_vec", "mul_vec", "relu", "exp", "tanh", "skip", "maxpool", "avgpool", "centre_hw", "centre_c",
       "nhwc_round_trip")


def _program(seed: int):
    rnd = random.Random(seed)
    n, c, h, w = rnd.choice([1, 2, 3]), rnd.choice([1, 3, 4, 8]), rnd.choice([5, 6, 9]), rnd.choice([4, 7, 11])
    ops = [rnd.choice(OPS) for _ in range(rnd.randint(2, 6))]

    def fn(x, v, s):
        y = x
        for op in ops:
            if op == "add_vec":
                y = y + v.view(1, -1, 1, 1)
            elif op == "mul_vec":
                y = y * v.view(1, -1, 1, 1)
            elif op == "relu":
                y = y.relu()
            elif op == "exp":
                y = torch.exp(y.clamp(-5, 5))
            elif op == "tanh":
                y = torch.tanh(y)
            elif op == "skip" and y.shape == s.shape:
                y = y + s
            elif op == "maxpool" and min(y.shape[-2:]) >= 3:
                y = F.max_pool2d(y, 3, 2, 1)
            elif op == "avgpool" and min(y.shape[-2:]) >= 2:
                y = F.avg_pool2d(y, 2)
            elif op == "centre_hw":
                y = y - y.mean((2, 3), keepdim=True)
            elif op == "centre_c":
                y = y - y.mean(1, keepdim=True)
            elif op == "nhwc_round_trip":
                y = y.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
        return y, y.sum((2, 3))

    x, s = torch.randn(n, c, h, w, dtype=torch.float64), torch.randn(n, c, h, w, dtype=torch.float64)
    if rnd.random() < 0.8:
        x = x.contiguous(memory_format=torch.channels_last)
    if rnd.random() < 0.5:
        s = s.contiguous(memory_format=torch.channels_last)
    return fn, (x, torch.randn(c, dtype=torch.float64), s)


def _strides(t):
    """Strides of the axes longer than 1 (the others' do not place any element)."""
    return [st for st, n in zip(t.stride(), t.shape) if n > 1]


@pytest.mark.parametrize("target", ["cpu", "interp"])
@pytest.mark.parametrize("seed", range(8))
def test_random_channels_last_program(seed, target):
    fn, args = _program(seed)
    torch._dynamo.reset()
    got = torch.compile(fn, backend=wt.backend, options=dict(strict=True, target=target), dynamic=False)(*args)
    for g, want in zip(got, fn(*args)):
        assert _strides(g) == _strides(want)
        torch.testing.assert_close(g, want, rtol=1e-12, atol=1e-12)
