"""Accurate sums at any length: serial accumulation runs as a tree of loops, so a
float32 sum errs like numpy's pairwise sum, not like a running total (a running
float32 total stops growing at 2^24)."""
import numpy as np
import pytest

import warpweave as ww


def _relative(got, values) -> float:
    exact = values.astype(np.float64).sum(axis=-1)
    return float(np.max(np.abs(np.asarray(got, np.float64) - exact) / np.abs(exact)))


def test_full_sum_of_ones_past_2_to_24_is_exact():
    x = np.ones(1 << 25, np.float32)
    assert float(ww.jit(lambda a: a.sum(), target="cpu")(x)) == float(1 << 25)


@pytest.mark.parametrize("target,n", [("cpu", 1 << 24), ("interp", 1 << 20)])
def test_long_uniform_sum_is_near_pairwise(target, n):
    x = np.random.default_rng(3).random(n, dtype=np.float32)
    assert _relative(ww.jit(lambda a: a.sum(), target=target)(x), x) < 1e-6


@pytest.mark.parametrize("target", ["cpu", "interp"])
def test_fused_row_mean_of_long_rows(target):
    """The row-group template (a fused mean: sum, then divide)."""
    x = np.random.default_rng(4).random((2, 1 << 19), dtype=np.float32) + 1.0
    got = ww.jit(lambda a: a.mean(axis=-1) * 2.0, target=target)(x)
    want = x.astype(np.float64).mean(axis=-1) * 2.0
    assert np.max(np.abs(got - want) / want) < 1e-6


@pytest.mark.parametrize("target", ["cpu", "interp"])
def test_long_column_sum(target):
    x = np.random.default_rng(5).random((1 << 17, 8), dtype=np.float32)
    got = ww.jit(lambda a: a.sum(axis=0), target=target)(x)
    assert _relative(got, x.T) < 1e-6
