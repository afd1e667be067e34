"""The math library against numpy, special values included, in scalar and vector
code: float32 against float64 numpy, and float64 (forced onto the CPU with
`math="mathlib"`, since the CPU calls libm for float64 by default) against
float64 numpy to a few ulp."""
import math

import numpy as np
import pytest

from warpweave.backends.cpu import CpuExecutable, CpuTarget
from warpweave.backends.llvm import trig
from warpweave.schedule import templates as sch
from warpweave.lower.op import lower_op
from warpweave.ir import dtypes as dt
from warpweave.ir import expr as ex
from warpweave.ir.tensor import ComputeOp, Placeholder, TensorGraph

SPECIAL = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1e-38, 88.7, 88.73, -87.3,
                    -103.9, -104.0, 1e30, -1e30, 0.4999, 0.5, 0.6249, 0.625, 9.0, -9.0], np.float32)
REFERENCE = {"exp": np.exp, "log": np.log, "tanh": np.tanh, "sin": np.sin, "cos": np.cos,
             "erf": np.vectorize(math.erf, otypes=[np.float64])}
DOMAIN = {"exp": (-100, 90), "log": (1e-30, 1e30), "tanh": (-12, 12), "erf": (-6, 6),
          "sin": (-1000, 1000), "cos": (-1000, 1000)}


def run_unary(op_name, x, vector, d=dt.float32, math_impl="libm"):
    n = x.shape[0]
    i = ex.Var("i")
    src = Placeholder("x", (n,), d)
    op = ComputeOp("y", (n,), d, (i,), ex.unary(op_name, ex.Load("x", (i,), d)))
    g = TensorGraph([src, op], ["x"], ["y"])
    k = lower_op(op, g, sch.CpuElementwise(vector=vector))
    out = np.full(n, 12345.0, d.numpy)
    CpuExecutable([k], [1], math=math_impl).launch(k.name, [x.ctypes.data, out.ctypes.data])
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


def run_pow(x, y, vector, d=dt.float32, math_impl="libm"):
    n = x.shape[0]
    i = ex.Var("i")
    xs, ys = Placeholder("x", (n,), d), Placeholder("y", (n,), d)
    op = ComputeOp("z", (n,), d, (i,), ex.binary("pow", ex.Load("x", (i,), d), ex.Load("y", (i,), d)))
    g = TensorGraph([xs, ys, op], ["x", "y"], ["z"])
    k = lower_op(op, g, sch.CpuElementwise(vector=vector))
    out = np.full(n, 12345.0, d.numpy)
    CpuExecutable([k], [1], math=math_impl).launch(k.name, [x.ctypes.data, y.ctypes.data, out.ctypes.data])
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


# ----------------------------------------------------------------------------- float64

TINY64 = 2.2250738585072014e-308  # smallest normal double
SUBNORMAL_ULP = 5e-324
SPECIAL64 = np.array([
    0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, -5e-324, 1e-310, -1e-310, TINY64, 1e-300, -1e-300,
    0.5, -0.5, 0.625, -0.625, 0.84375, -0.84375, 1.0, -1.0, 1.25, 2.857142857142857, 6.0, -6.0,
    19.06, 22.0, -22.0, 700.0, 709.782712893384, 709.79, -708.4, -745.13, -745.14, -746.0,
    np.pi / 2, np.pi, -np.pi, 1e5, 3.37e9, 3.38e9, -3.38e9, 1e22, 6381956970095103.0 * 2.0 ** 797,
    1e300, -1e300, 1.7976931348623157e308, -1.7976931348623157e308])
REFERENCE64 = {"exp": np.exp, "log": np.log, "tanh": np.tanh, "sin": np.sin, "cos": np.cos,
               "erf": np.vectorize(math.erf, otypes=[np.float64])}
ABSOLUTE_NEAR_ZEROS = ("erf", "sin", "cos")


def random64(name, rng, n=3000):
    def log_uniform(lo, hi, size):
        return np.exp(rng.uniform(np.log(lo), np.log(hi), size))

    sign = rng.choice([-1.0, 1.0], n)
    if name == "exp":
        parts = [rng.uniform(-745.2, 709.8, n), rng.uniform(-2, 2, n), sign * log_uniform(1e-300, 1, n)]
    elif name == "log":
        parts = [log_uniform(5e-324, 1.7e308, n), rng.uniform(0.5, 2, n), 1 + rng.uniform(-1e-8, 1e-8, n)]
    elif name in ("tanh", "erf"):
        parts = [rng.uniform(-25, 25, n), rng.uniform(-1.5, 1.5, n), sign * log_uniform(1e-300, 1, n)]
    else:  # sin, cos: the Cody–Waite range, its edge and the Payne–Hanek range
        parts = [rng.uniform(-10, 10, n), rng.uniform(-1e6, 1e6, n), rng.uniform(-4e9, 4e9, n),
                 sign * log_uniform(1e9, 1.7e308, n)]
    return np.concatenate([SPECIAL64] + parts)


def assert_matches64(got, ref, rtol=4e-16, atol=0.0):
    """Within rtol of the reference where it is a normal number (or atol, for the
    functions judged absolutely near their zeros), within a subnormal ulp where it is
    subnormal; NaN, infinities and signed zeros in the same places."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    exact = np.isinf(ref) | (ref == 0)
    np.testing.assert_array_equal(got[exact], ref[exact])
    np.testing.assert_array_equal(np.signbit(got[exact]), np.signbit(ref[exact]))
    normal = np.isfinite(ref) & (np.abs(ref) >= TINY64)
    err = np.abs(got[normal] - ref[normal])
    bound = np.maximum(rtol * np.abs(ref[normal]), atol)
    worst = np.argmax(err / bound) if err.size else 0
    assert np.all(err <= bound), (f"relative error {err[worst] / np.abs(ref[normal][worst]):.3g} "
                                  f"(absolute {err[worst]:.3g}) at {ref[normal][worst]!r}")
    subnormal = np.isfinite(ref) & (ref != 0) & (np.abs(ref) < TINY64)
    assert np.all(np.abs(got[subnormal] - ref[subnormal]) <= SUBNORMAL_ULP)


@pytest.mark.parametrize("name", sorted(REFERENCE64))
@pytest.mark.parametrize("vector", [1, 8])
def test_float64_accuracy_and_special_values(name, vector):
    x = random64(name, np.random.default_rng())
    got = run_unary(name, x, vector, dt.float64, math_impl="mathlib")
    with np.errstate(all="ignore"):
        ref = REFERENCE64[name](x)
    assert_matches64(got, ref, atol=1.2e-16 if name in ABSOLUTE_NEAR_ZEROS else 0.0)


@pytest.mark.parametrize("vector", [1, 8])
def test_float64_sin_cos_near_multiples_of_pi_over_2(vector):
    """The argument reduction keeps r = x − n·π/2 to far below an ulp of the result
    even where it cancels to nearly nothing (the last value is a classic worst case)."""
    rng = np.random.default_rng()
    k = np.concatenate([np.arange(1, 300), rng.integers(1, 2 ** 31, 300),
                        rng.integers(2 ** 31, 2 ** 52, 300)])
    x = k.astype(np.float64) * (np.pi / 2)
    x = np.concatenate([x, np.nextafter(x, np.inf), -x, [6381956970095103.0 * 2.0 ** 797]])
    for name in ("sin", "cos"):
        got = run_unary(name, x, vector, dt.float64, math_impl="mathlib")
        assert_matches64(got, getattr(np, name)(x), atol=1e-30)


@pytest.mark.parametrize("vector", [1, 8])
def test_float64_pow_accuracy(vector):
    rng = np.random.default_rng()
    n = 2000
    log_uniform = np.exp(rng.uniform(np.log(1e-300), np.log(1e300), n))
    xs = np.concatenate([log_uniform, rng.uniform(0, 4, n), 1 + rng.uniform(-1e-6, 1e-6, n),
                         -rng.integers(1, 50, n).astype(float), np.exp(rng.uniform(-744, -708, n))])
    ys = np.concatenate([rng.uniform(-1.05, 1.05, n), rng.uniform(-300, 300, n), rng.uniform(-1e8, 1e8, n),
                         rng.integers(-200, 200, n).astype(float), rng.uniform(-1.1, 1.1, n)])
    got = run_pow(xs, ys, vector, dt.float64, math_impl="mathlib")
    with np.errstate(all="ignore"):
        ref = np.power(xs, ys)
    assert_matches64(got, ref)


@pytest.mark.parametrize("vector", [1, 8])
def test_float64_pow_special_cases(vector):
    values = [0.0, -0.0, 1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 3.0, -3.0, 1.5, -1.5, 2.5, -2.5, 4.0,
              np.inf, -np.inf, np.nan, 1e-310, -1e-310, 1e300, -1e300, 2.0 ** 53 + 2, -(2.0 ** 53 + 2)]
    xs, ys = (a.ravel().copy() for a in np.meshgrid(values, values))
    got = run_pow(xs, ys, vector, dt.float64, math_impl="mathlib")
    with np.errstate(all="ignore"):
        ref = np.power(xs, ys)
    assert_matches64(got, ref)
    # the cases the brief spells out, against literal values
    x = np.array([-2.0, -2.0, -2.0, -2.0, -8.0, -3.0, 0.0, -0.0, -0.0, 5.0, np.nan, 1.0, -1.0, np.inf])
    y = np.array([3.0, 2.0, -3.0, 0.5, 1 / 3, np.inf, -2.0, -3.0, 3.0, 0.0, 0.0, np.nan, np.inf, -1.0])
    want = np.array([-8.0, 4.0, -0.125, np.nan, np.nan, np.inf, np.inf, -np.inf, -0.0, 1.0, 1.0, 1.0,
                     1.0, 0.0])
    got = run_pow(x, y, vector, dt.float64, math_impl="mathlib")
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(want))


def test_float64_uses_libm_unless_asked():
    i = ex.Var("i")
    x = Placeholder("x", (64,), dt.float64)
    op = ComputeOp("y", (64,), dt.float64, (i,), ex.unary("sin", ex.Load("x", (i,), dt.float64)))
    g = TensorGraph([x, op], ["x"], ["y"])
    k = lower_op(op, g, sch.CpuElementwise(vector=4))
    assert "llvm.sin" in CpuExecutable([k], [1]).llvm_ir
    inline = CpuExecutable([k], [1], math="mathlib").llvm_ir
    assert "llvm.sin" not in inline and "two_over_pi" in inline
    with pytest.raises(ValueError, match="math must be one of"):
        CpuTarget(math="fast")


def test_two_over_pi_table():
    mp = pytest.importorskip("mpmath", reason="mpmath is not installed (the test extra installs it)")
    with mp.workprec(24 * len(trig.TWO_OVER_PI_24) + 64):
        t = 2 / mp.pi
        for chunk in trig.TWO_OVER_PI_24:
            t *= 2 ** 24
            assert chunk == int(mp.floor(t))
            t -= chunk
