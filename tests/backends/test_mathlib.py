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
REFERENCE = {"exp": np.exp, "log": np.log, "tanh": np.tanh, "sin": np.sin, "cos": np.cos,
             "erf": np.vectorize(math.erf, otypes=[np.float64])}
DOMAIN = {"exp": (-100, 90), "log": (1e-30, 1e30), "tanh": (-12, 12), "erf": (-6, 6),
          "sin": (-1000, 1000), "cos": (-1000, 1000)}


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
    special = SPECIAL if name not in ("sin", "cos") else SPECIAL[np.abs(SPECIAL) < 1e5]
    x = np.concatenate([special, body.astype(np.float32)])
    got = run_unary(name, x, vector).astype(np.float64)
    with np.errstate(all="ignore"):
        ref = REFERENCE[name](x.astype(np.float64)).astype(np.float32).astype(np.float64)
    finite = np.isfinite(ref) & (np.abs(ref) > 1e-37)
    rel = np.abs(got[finite] - ref[finite]) / np.abs(ref[finite])
    if name in ("erf", "sin", "cos"):  # near their zeros these are judged by absolute error
        assert np.abs(got - ref)[finite].max() < 3e-7 * max(1.0, np.abs(x[finite]).max() / 1000)
    else:
        assert rel.max() < 2e-6, rel.max()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    inf = np.isinf(ref)
    np.testing.assert_array_equal(got[inf], ref[inf])
    tiny = np.abs(ref) <= 1e-37  # near-subnormal results: relative error plus a few subnormal ulps
    assert np.all(np.abs(got[tiny] - ref[tiny]) <= 2e-6 * np.abs(ref[tiny]) + 6e-45)


def run_pow(x, y, vector):
    n = x.shape[0]
    i = ex.Var("i")
    xs, ys = Placeholder("x", (n,), dt.float32), Placeholder("y", (n,), dt.float32)
    op = ComputeOp("z", (n,), dt.float32, (i,),
                   ex.binary("pow", ex.Load("x", (i,), dt.float32), ex.Load("y", (i,), dt.float32)))
    g = TensorGraph([xs, ys, op], ["x", "y"], ["z"])
    k = lower_op(op, g, sch.CpuElementwise(vector=vector))
    out = np.full(n, 12345.0, np.float32)
    CpuExecutable([k], [1]).launch(k.name, [x.ctypes.data, y.ctypes.data, out.ctypes.data])
    return out


@pytest.mark.parametrize("vector", [1, 16])
def test_pow_special_cases_and_accuracy(vector):
    rng = np.random.default_rng()
    xs = np.concatenate([[-2.0, -2.0, -2.0, 0.0, 0.0, 0.0, 1.0, np.nan, -8.0, 3.0],
                         rng.uniform(0.01, 10, 500), -rng.uniform(0.01, 10, 100)]).astype(np.float32)
    ys = np.concatenate([[3.0, 2.0, 0.5, 2.0, 0.0, -1.0, np.nan, 0.0, 1 / 3, -2.0],
                         rng.uniform(-8, 8, 500), rng.integers(-5, 6, 100)]).astype(np.float32)
    got = run_pow(xs, ys, vector).astype(np.float64)
    with np.errstate(all="ignore"):
        ref = np.power(xs.astype(np.float64), ys.astype(np.float64)).astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    ok = np.isfinite(ref)
    np.testing.assert_allclose(got[ok], ref[ok], rtol=1e-5)
    np.testing.assert_array_equal(got[np.isinf(ref)], ref[np.isinf(ref)])
