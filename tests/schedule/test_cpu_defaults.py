"""Default CPU schedules: a column reduction's vectors are no wider than its rows (a
row narrower than the vector ran as scalars), and the result is numpy's."""
import numpy as np
import pytest

import warpweave as ww
from tests.utils import assert_close
from warpweave.schedule.templates import CpuColumnReduce


@pytest.mark.parametrize("rows,width,vector", [(512, 64, 64), (50, 7, 4), (300, 1000, 256), (9, 1, 1)])
def test_column_sums_vectorise_within_the_row(rows, width, vector):
    X = ww.placeholder((rows, width), "float32", name="X")
    r = ww.reduce_axis(rows)
    total = ww.compute((width,), lambda j: ww.sum(X[r, j], axis=r), name="total")
    program = ww.build(total, [X], target="cpu")
    (kernel,) = program.kernels
    assert kernel.schedule == CpuColumnReduce(vector=vector, chunk=256)
    x = np.random.default_rng(width).standard_normal((rows, width)).astype(np.float32)
    assert_close(program(x), x.astype(np.float64).sum(axis=0), "float32", scale=float(np.abs(x).sum(axis=0).max()))
