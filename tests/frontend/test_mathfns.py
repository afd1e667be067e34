"""The math functions built from expression primitives (`frontend/mathfns.py`, the
`ww.expm1` … `ww.signbit` ops) against numpy in float64 on fresh random inputs and
edge values (±0, ±inf, NaN, tiny and huge magnitudes, the ends of each domain), on
the interpreter and the CPU; float32 within 1 ulp of the correctly rounded result,
float64 within a few ulp; and the PTX of each assembles."""
from __future__ import annotations

import numpy as np
import pytest

import warpweave as ww
from tests.utils import assert_ptxas_accepts

EDGE = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 1e-300, -1e-300, 1e-10, -1e-10, 0.5,
                 -0.5, 0.999, -0.999, 2.0, 3.0, 8.0, 1e10, -1e10, 88.0, -88.0, 700.0, -700.0, 1e300,
                 22.0, -22.0, 0.66, 2.4142, 1.0000001, 1e-30, 3e38, -3e38, 1e-45, 703.5, 709.7])

UNARY = {"expm1": (ww.expm1, np.expm1), "log1p": (ww.log1p, np.log1p), "log2": (ww.log2, np.log2),
         "exp2": (ww.exp2, np.exp2), "tan": (ww.tan, np.tan), "sinh": (ww.sinh, np.sinh),
         "cosh": (ww.cosh, np.cosh), "arcsinh": (ww.arcsinh, np.arcsinh),
         "arccosh": (ww.arccosh, np.arccosh), "arctanh": (ww.arctanh, np.arctanh),
         "arctan": (ww.arctan, np.arctan), "arcsin": (ww.arcsin, np.arcsin),
         "arccos": (ww.arccos, np.arccos)}
BINARY = {"arctan2": (ww.arctan2, np.arctan2), "hypot": (ww.hypot, np.hypot),
          "copysign": (ww.copysign, np.copysign), "fmod": (ww.fmod, np.fmod)}
PREDICATES = {"isnan": (ww.isnan, np.isnan), "isinf": (ww.isinf, np.isinf),
              "isfinite": (ww.isfinite, np.isfinite), "signbit": (ww.signbit, np.signbit)}
ULPS = {np.float32: 1, np.float64: 3}


def _inputs(rng, d, n=400):
    x = np.concatenate([EDGE, rng.standard_normal(n) * 3, rng.uniform(-1, 1, n),
                        np.exp(rng.uniform(-30, 30, n)) * rng.choice([-1, 1], n)])
    with np.errstate(over="ignore"):
        return x.astype(d)


def _ulps(got, want, d):
    """Distance in units of the last place of `want` (0 where both are the same NaN/inf)."""
    g, w = got.astype(np.float64), want.astype(np.float64)
    same = (g == w) | (np.isnan(g) & np.isnan(w))
    with np.errstate(all="ignore"):
        ulp = np.spacing(np.abs(w).astype(d)).astype(np.float64)
        return np.where(same, 0.0, np.abs(g - w) / ulp)


def _reference(fn, args, d):
    """numpy in float64, rounded once to `d`."""
    with np.errstate(all="ignore"):
        return fn(*(a.astype(np.float64) for a in args)).astype(d)


def _assert_close(name, got, want, args, d):
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    err = _ulps(got, want, d)
    k = int(np.argmax(err))
    assert err[k] <= ULPS[d], (f"{name}({', '.join(repr(a[k]) for a in args)}) = {got[k]!r}, "
                               f"want {want[k]!r}: {err[k]:.3g} ulp")


@pytest.mark.parametrize("target", ["interp", "cpu"])
@pytest.mark.parametrize("d", [np.float32, np.float64])
def test_unary_functions(target, d):
    rng = np.random.default_rng()
    x = _inputs(rng, d)
    for name, (ours, theirs) in UNARY.items():
        _assert_close(name, np.asarray(ww.jit(ours, target=target)(x)), _reference(theirs, [x], d), [x], d)


@pytest.mark.parametrize("target", ["interp", "cpu"])
@pytest.mark.parametrize("d", [np.float32, np.float64])
def test_binary_functions(target, d):
    rng = np.random.default_rng()
    x = _inputs(rng, d)
    y = rng.permutation(_inputs(rng, d))
    for name, (ours, theirs) in BINARY.items():
        _assert_close(name, np.asarray(ww.jit(ours, target=target)(x, y)), _reference(theirs, [x, y], d),
                      [x, y], d)


@pytest.mark.parametrize("target", ["interp", "cpu"])
@pytest.mark.parametrize("d", [np.float16, np.float32, np.float64, np.int32])
def test_predicates(target, d):
    rng = np.random.default_rng()
    x = _inputs(rng, np.float64)
    with np.errstate(all="ignore"):
        x = np.nan_to_num(x, posinf=7, neginf=-7).astype(d) if d == np.int32 else x.astype(d)
    for name, (ours, theirs) in PREDICATES.items():
        got = np.asarray(ww.jit(ours, target=target)(x))
        want = theirs(x)
        if name == "signbit":  # a NaN's sign bit is not visible to the expression language
            want = want & ~np.isnan(x)
        np.testing.assert_array_equal(got, want, err_msg=name)


def test_half_precision_results_are_rounded_once():
    """16-bit inputs compute in float32 (which computes in float64) and round once."""
    x = np.linspace(-3, 3, 301).astype(np.float16)
    got = ww.jit(ww.arctan, target="cpu")(x)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, np.arctan(x.astype(np.float64)).astype(np.float16))


@pytest.mark.ptx
@pytest.mark.parametrize("d", [np.float32, np.float64])
def test_every_function_assembles_for_the_gpu(d):
    x = np.linspace(-2, 2, 256).astype(d)

    def everything(x):
        out = ww.lgamma(x)
        for ours, _ in UNARY.values():
            out = out + ours(x)
        for ours, _ in BINARY.values():
            out = out + ours(x, out)
        for ours, _ in PREDICATES.values():
            out = ww.where(ours(out), out, x)
        return out
    ptx = ww.jit(everything, target="cuda").lower(x).dump("ptx")
    assert ".entry" in ptx
    assert_ptxas_accepts(ptx)


@pytest.mark.parametrize("target", ["interp", "cpu"])
@pytest.mark.parametrize("d", [np.int64, np.int32, np.float16, np.float32, np.float64])
def test_floor_division_and_remainder_operators_match_numpy(target, d):
    """`//` and `%` on traced tensors: numpy's floors (signed integers through their
    magnitudes, floats through the exact fmod), zero divisors and infinities included."""
    rng = np.random.default_rng()
    a, b = (rng.standard_normal(300) * 20).astype(d), (rng.standard_normal(300) * 4).astype(d)
    b[:3], a[3] = 0, 0
    if np.dtype(d).kind == "f":
        a[4], b[5] = np.inf, -np.inf

    def fn(a, b):
        return a // b, a % b, a // 3, 7 % b, a % -2
    got = ww.jit(fn, target=target)(a, b)
    with np.errstate(all="ignore"):
        want = fn(a, b)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        np.testing.assert_array_equal(g, w)


@pytest.mark.parametrize("target", ["interp", "cpu"])
def test_lgamma(target):
    """float64 within 5e-15 of max(1, |lgamma|, |lgamma(1 − x)| below ½) (Lanczos and the
    reflection), float32 correctly rounded
    here; poles and infinities give inf."""
    import math

    rng = np.random.default_rng()
    x = np.concatenate([[0.0, -0.0, 1.0, 2.0, -1.0, -2.5, 0.5, 1e-30, 1e30, np.inf, -np.inf, np.nan,
                         1 + 1e-7, 2 - 1e-7, -1e5 + 0.3, 171.6, 1e10],
                        rng.uniform(-20, 20, 500), np.exp(rng.uniform(-20, 20, 200))])

    def ref(v):
        try:
            return math.lgamma(v)
        except (ValueError, OverflowError):
            return math.inf
    want = np.array([ref(v) for v in x])
    got = ww.jit(ww.lgamma, target=target)(x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_array_equal(np.isinf(got[ok]), np.isinf(want[ok]))
    fin = ok & np.isfinite(want)
    # below ½ the reflection subtracts lgamma(1 − x): its size is the error's scale
    scale = np.maximum(np.maximum(1, np.abs(want)), [abs(ref(1 - v)) if v < 0.5 else 0 for v in x])
    assert (np.abs(got[fin] - want[fin]) <= 5e-15 * scale[fin]).all()
    x32 = x.astype(np.float32)
    want32 = np.array([ref(float(v)) for v in x32]).astype(np.float32)
    _assert_close("lgamma", ww.jit(ww.lgamma, target=target)(x32), want32, [x32], np.float32)


@pytest.mark.parametrize("target", ["interp", "cpu"])
def test_digamma(target):
    """float64 within 2e-15 of max(1, |ψ|) against mpmath (PyTorch's own errs by 1e-14
    next to the poles, where it takes tan of π times x's fractional part); poles as
    PyTorch gives them: −inf at 0, NaN at the negative integers."""
    mpmath = pytest.importorskip("mpmath")
    rng = np.random.default_rng()
    x = np.concatenate([[-16.992108460545392, 1.4616321449683622, 0.3, -0.5, 2.5, 9.999, 10.0, 1e10],
                        rng.uniform(-20, 20, 300), np.exp(rng.uniform(-10, 10, 100))])
    want = np.array([float(mpmath.digamma(mpmath.mpf(float(v)))) for v in x])
    got = ww.jit(ww.digamma, target=target)(x)
    assert (np.abs(got - want) <= 2e-15 * np.maximum(1, np.abs(want))).all()
    special = np.array([0.0, -0.0, -1.0, -7.0, np.inf, -np.inf, np.nan])
    got = ww.jit(ww.digamma, target=target)(special)
    np.testing.assert_array_equal(got, [-np.inf, -np.inf, np.nan, np.nan, np.inf, np.nan, np.nan])
