"""The CPU's float32 exp, erf, tanh, log and sigmoid in ulps against float64 numpy (erf:
`math.erf`), on fresh random inputs and on the edges: ±0, ±inf, NaN, subnormal inputs
and results, the overflow and underflow thresholds, branch points and large
magnitudes. Built for the host (`backends.cpu.float32_features`: fused multiply-adds,
AVX-512's one-instruction ldexp) and, so that hosts without them stay covered, without
the ldexp and without either."""
import math

import numpy as np
import pytest

from warpweave.backends import cpu
from warpweave.backends.cpu import CpuExecutable
from warpweave.backends.llvm import mathlib
from warpweave.ir import dtypes as dt
from warpweave.ir import expr as ex
from warpweave.ir.tensor import ComputeOp, Placeholder, TensorGraph
from warpweave.lower.op import lower_op
from warpweave.schedule import templates as sch

ERF = np.vectorize(math.erf, otypes=[np.float64])
REFERENCE = {"exp": np.exp, "erf": ERF, "tanh": np.tanh, "log": np.log,
             "sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v))}
# ulps of the float32 result (measured: exp 1.0, erf 1.2, tanh 1.3, log 0.8, sigmoid 1.5)
BOUND = {"exp": 1.5, "erf": 2.0, "tanh": 2.0, "log": 1.5, "sigmoid": 2.5}
EDGES = [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 1e-45, -1e-45, 1e-40, -1e-40, 1.1754942e-38,
         -1.1754942e-38, 1e-30, -1e-30, 3.4028235e38, -3.4028235e38, 1e30, -1e30, 1e10, -1e10,
         88.72283, 88.7228394, 88.72284, 88.73, 89.0, 89.5, 100.0, -87.33655, -87.34, -100.0, -103.9,
         -103.97207, -103.97208, -103.98, -104.0, -104.1, -150.0,
         0.921875, -0.921875, 0.2, 0.27, 0.35, 0.5, 3.9, 3.92, 4.0, 4.01, 6.0, -6.0, 9.0, -9.0,
         0.6249, 0.625, -0.625, 0.6251, 10.0, -10.0, 22.0, 1.0, -1.0, 2.0, 0.5, 0.25]
FEATURES = {"host": None, "no-ldexp": mathlib.Features(contract=True),
            "plain": mathlib.PLAIN}


def inputs(name, rng):
    parts = [np.array(EDGES, np.float32)]
    if name == "log":
        parts += [np.exp(rng.uniform(np.log(1e-45), np.log(3.4e38), 40000)),
                  rng.uniform(0.5, 2.0, 20000)]
    else:
        sign = rng.choice([-1.0, 1.0], 20000)
        parts += [rng.uniform(-10, 10, 40000), rng.uniform(-1, 1, 20000),
                  sign * np.exp(rng.uniform(np.log(1e-44), np.log(1e-3), 20000))]
        if name == "exp":
            parts += [rng.uniform(-104.5, 89.5, 40000), rng.uniform(-104.0, -87.0, 20000)]
    x = np.concatenate(parts).astype(np.float32)
    if name == "sigmoid":  # 1/(1 + e^−x) is 0 where e^−x overflows, below about −88.7
        x = x[~(x < -88.7)]
    return x


def run(name, x, vector, features, monkeypatch):
    if features is not None:
        monkeypatch.setattr(cpu, "float32_features", lambda: features)
    n = x.shape[0]
    i = ex.Var("i")
    op = ComputeOp("y", (n,), dt.float32, (i,), ex.unary(name, ex.Load("x", (i,), dt.float32)))
    g = TensorGraph([Placeholder("x", (n,), dt.float32), op], ["x"], ["y"])
    k = lower_op(op, g, sch.CpuElementwise(vector=vector))
    out = np.full(n, 12345.0, np.float32)
    CpuExecutable([k], [1]).launch(k.name, [x.ctypes.data, out.ctypes.data])
    return out


@pytest.mark.parametrize("features", sorted(FEATURES))
@pytest.mark.parametrize("vector", [1, 16])
@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_float32_ulps_and_edges(name, vector, features, monkeypatch):
    x = inputs(name, np.random.default_rng())
    got = run(name, x, vector, FEATURES[features], monkeypatch)
    with np.errstate(all="ignore"):
        ref = REFERENCE[name](x.astype(np.float64))
        ref32 = ref.astype(np.float32)
    # NaN, infinities and zeros exactly, signs of zeros included
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref32))
    exact = np.isinf(ref32) | (ref32 == 0)
    np.testing.assert_array_equal(got[exact], ref32[exact])
    np.testing.assert_array_equal(np.signbit(got[exact]), np.signbit(ref32[exact]))
    # everywhere else within the bound, in ulps of the float32 result (subnormal ones too)
    rest = np.isfinite(ref32) & (ref32 != 0)
    ulps = np.abs(got[rest].astype(np.float64) - ref[rest]) / np.spacing(np.abs(ref32[rest]))
    worst = np.argmax(ulps)
    assert ulps[worst] <= BOUND[name], f"{ulps[worst]:.2f} ulp at x = {x[rest][worst]!r}"


def test_host_float32_features_match_the_host():
    import llvmlite.binding as llvm
    cpu._init_llvm()
    host = llvm.get_host_cpu_features().flatten().split(",")
    found = cpu.float32_features()
    assert found.contract == ("+fma" in host) and found.ldexp == ("+avx512f" in host)
