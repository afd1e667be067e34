"""The float32 math library against float64 numpy, special values included, in
scalar and vector code."""
import math

import numpy as np
import pytest

from warpweave.backends.cpu import CpuExecutable
from warpweave.compiler import schedule as sch
from warpweave.compiler.lower import lower_op
from warpweave.ir import dtypes as dt
from warpweave.ir import expr as ex
from warpweave.ir.tensor import ComputeOp, Placeholder, TensorGraph

SPECIAL = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1e-38, 88.7, 88.73, -87.3,
                    -103.9, -104.0, 1e30, -1e30, 0.4999, 0.5, 0.6249, 0.625, 9.0, -9.0], np.float32)
REFERENCE = {"exp": np.exp, "log": np.log, "tanh": np.tanh,
             "erf": np.vectorize(math.erf, otypes=[np.float64])}
DOMAIN = {"exp": (-100, 90), "log": (1e-30, 1e30), "tanh": (-12, 12), "erf": (-6, 6)}


def run_unary(op_name, x, vector):
    n = x.shape[0]
    i = ex.Var("i")
    src = Placeholder("x", (n,), dt.float32)
    op = ComputeOp("y", (n,), dt.float32, (i,), ex.unary(op_name, ex.Load("x", (i,), dt.float32)))
    g = TensorGraph([src, op], ["x"], ["y"])
    k = lower_op(op, g, sch.CpuElementwise(vector=vector))
    out = np.full(n, 12345.0, np.float32)
    CpuExecutable([k], [1]).launch(k.name, [x.ctypes.data, out.ctypes.data])
    return out


@pytest.mark.parametrize("name", sorted(REFERENCE))
@pytest.mark.parametrize("vector", [1, 16])
def test_accuracy_and_special_values(name, vector):
    rng = np.random.default_rng()
    lo, hi = DOMAIN[name]
    if name == "log":
        body = np.exp(rng.uniform(np.log(lo), np.log(hi), 4096))
    else:
        body = rng.uniform(lo, hi, 4096)
    x = np.concatenate([SPECIAL, body.astype(np.float32)])
    got = run_unary(name, x, vector).astype(np.float64)
    with np.errstate(all="ignore"):
        ref = REFERENCE[name](x.astype(np.float64)).astype(np.float32).astype(np.float64)
    finite = np.isfinite(ref) & (np.abs(ref) > 1e-37)
    rel = np.abs(got[finite] - ref[finite]) / np.abs(ref[finite])
    assert rel.max() < 2e-6 or (name == "erf" and np.abs(got - ref)[finite].max() < 3e-7), rel.max()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    inf = np.isinf(ref)
    np.testing.assert_array_equal(got[inf], ref[inf])
    tiny = np.abs(ref) <= 1e-37  # subnormal results: absolute error within a few subnormal ulps
    assert np.all(np.abs(got[tiny] - ref[tiny]) <= 1e-44)
