"""Math functions built from the expression language's primitives, so that every
target (interpreter, CPU, CUDA) compiles them without a lowering of its own:
classification (isnan, isinf, isfinite, signbit), copysign, expm1, log1p, log2,
exp2, tan, the hyperbolic functions and their inverses, atan, asin, acos, atan2,
hypot, lgamma, digamma, fmod-based remainders and floor/trunc division of floats and
integers.

Each function takes and returns `ex.Expr` values of one dtype (float32 or float64 for
the float functions: 16-bit floats are computed in float32 by the callers). The
float64 algorithms follow fdlibm (expm1 and log1p by Kahan's correction of exp and
log, asinh/acosh/atanh by fdlibm's cases, atan by Cephes' rational approximation
with Cody–Waite pieces of π/2 and π/4): within a few ulp of the correctly rounded
result. float32 runs the float64 algorithm and rounds once (`widened`), which is
within about half an ulp, at the price of float64 arithmetic (cheap on the CPU; on
the GPU a few float64 instructions per element).

Integer division: `floordiv`/`mod` of the expression language are defined for
non-negative operands (index arithmetic), so signed division divides magnitudes
and fixes the sign. A zero integer divisor (PyTorch raises) gives 0 here rather than
a trap.
"""
from __future__ import annotations

import math

from ..ir import dtypes as dt
from ..ir import expr as ex
from .algebra import const, elem_cast, promote

INF = math.inf
LN2 = 0.6931471805599453
PI_HI, PI_LO = 3.141592653589793, 1.2246467991473532e-16  # π = PI_HI + PI_LO to 2^-106


# ----------------------------------------------------------------------------- shorthands

def _c(v, like: ex.Expr) -> ex.Const:
    return const(v, like.dtype)


def _b(op, a, b):
    a = a if isinstance(a, ex.Expr) else _c(a, b)
    b = b if isinstance(b, ex.Expr) else _c(b, a)
    return ex.Binary(op, a, b)


def add(a, b): return _b("add", a, b)  # noqa: E704
def sub(a, b): return _b("sub", a, b)  # noqa: E704
def mul(a, b): return _b("mul", a, b)  # noqa: E704
def div(a, b): return _b("div", a, b)  # noqa: E704
def lt(a, b): return _b("lt", a, b)  # noqa: E704
def le(a, b): return _b("le", a, b)  # noqa: E704
def gt(a, b): return _b("gt", a, b)  # noqa: E704
def ge(a, b): return _b("ge", a, b)  # noqa: E704
def eq(a, b): return _b("eq", a, b)  # noqa: E704
def ne(a, b): return _b("ne", a, b)  # noqa: E704
def and_(a, b): return ex.Binary("and", a, b)  # noqa: E704
def or_(a, b): return ex.Binary("or", a, b)  # noqa: E704
def not_(a): return ex.Unary("not", a)  # noqa: E704
def neg(a): return ex.Unary("neg", a)  # noqa: E704
def fabs(a): return ex.Unary("abs", a)  # noqa: E704
def exp(a): return ex.Unary("exp", a)  # noqa: E704
def log(a): return ex.Unary("log", a)  # noqa: E704
def sqrt(a): return ex.Unary("sqrt", a)  # noqa: E704
def floor(a): return ex.Unary("floor", a)  # noqa: E704
def trunc(a): return ex.Unary("trunc", a)  # noqa: E704


def sel(c, a, b):
    a = a if isinstance(a, ex.Expr) else _c(a, b)
    b = b if isinstance(b, ex.Expr) else _c(b, a)
    return ex.Select(c, a, b)


def widened(fn):
    """`fn` on float64 algorithms: float32 operands are widened and the result rounded
    once to float32 (integer or bool results are returned as they are)."""
    def run(*xs):
        d = xs[0].dtype
        if d != dt.float32:
            return fn(*xs)
        r = fn(*(ex.cast(x, dt.float64) for x in xs))
        return ex.cast(r, dt.float32) if r.dtype == dt.float64 else r
    run.__name__ = fn.__name__
    run.__doc__ = fn.__doc__
    return run


# ----------------------------------------------------------------------------- classification

def isnan(x):
    return ne(x, x)


def isinf(x):
    return eq(fabs(x), INF)


def isfinite(x):
    return lt(fabs(x), INF)  # false for NaN


def signbit(x):
    """x < 0, and -0.0 (1/-0 = -inf). A NaN's sign bit is not visible without bit
    casts: NaN gives False."""
    return or_(lt(x, 0.0), and_(eq(x, 0.0), lt(div(1.0, x), 0.0)))


def copysign(x, y):
    m = fabs(x)
    return sel(signbit(y), neg(m), m)


# ----------------------------------------------------------------------------- exp and log

def _expm1(x):
    """Kahan: u = e^x; (u − 1)·(x / log u) corrects the cancellation in u − 1 (the
    ratio first: (u − 1)·x overflows for x in [703, 709.78] in float64)."""
    u = exp(x)
    d = sub(u, 1.0)
    r = mul(d, div(x, log(u)))
    r = sel(eq(u, 1.0), x, r)  # |x| tiny (±0 keeps its sign)
    r = sel(eq(d, -1.0), -1.0, r)
    return sel(eq(u, INF), INF, r)


def _log1p(x):
    """Kahan: u = 1 + x; log(u)·x / (u − 1) corrects the rounding of 1 + x."""
    u = add(x, 1.0)
    r = div(mul(log(u), x), sub(u, 1.0))
    r = sel(eq(u, 1.0), x, r)
    return sel(eq(u, INF), add(x, 1.0), sel(eq(u, 0.0), -INF, r))


expm1 = widened(_expm1)
log1p = widened(_log1p)


@widened
def log2(x):
    return mul(log(x), 1.4426950408889634)


@widened
def exp2(x):
    """2^x = 2^n · e^(f·ln 2) with n = floor(x), f = x − n ∈ [0, 1) exact."""
    n = floor(x)
    f = sub(x, n)
    r = mul(exp(mul(f, LN2)), ex.Binary("pow", _c(2.0, x), n))
    r = sel(gt(x, 1024.0), INF, r)
    return sel(lt(x, -1100.0), 0.0, r)


@widened
def tan(x):
    return div(ex.Unary("sin", x), ex.Unary("cos", x))


@widened
def sinh(x):
    """fdlibm: |x| < 22: (t + t/(t + 1))/2 with t = expm1|x|; beyond, e^(|x|/2)²/2."""
    a = fabs(x)
    t = _expm1(sel(lt(a, 22.0), a, 0.0))
    small = mul(0.5, add(t, div(t, add(t, 1.0))))
    w = exp(mul(a, 0.5))
    r = sel(lt(a, 22.0), small, mul(mul(w, 0.5), w))
    r = sel(lt(x, 0.0), neg(r), r)
    return sel(eq(x, 0.0), x, r)


@widened
def cosh(x):
    a = fabs(x)
    t = exp(sel(lt(a, 22.0), a, 0.0))
    w = exp(mul(a, 0.5))
    return sel(lt(a, 22.0), mul(0.5, add(t, div(1.0, t))), mul(mul(w, 0.5), w))


@widened
def asinh(x):
    """fdlibm s_asinh.c on |x|, the sign restored."""
    a = fabs(x)
    big = add(log(a), LN2)
    a2 = mul(a, a)
    mid = log(add(mul(a, 2.0), div(1.0, add(sqrt(add(a2, 1.0)), a))))
    small = _log1p(add(a, div(a2, add(sqrt(add(a2, 1.0)), 1.0))))
    r = sel(gt(a, 268435456.0), big, sel(gt(a, 2.0), mid, small))
    r = sel(lt(x, 0.0), neg(r), r)
    return sel(eq(x, 0.0), x, r)


@widened
def acosh(x):
    """fdlibm e_acosh.c: NaN below 1."""
    big = add(log(x), LN2)
    mid = log(sub(mul(x, 2.0), div(1.0, add(x, sqrt(sub(mul(x, x), 1.0))))))
    t = sub(x, 1.0)
    small = _log1p(add(t, sqrt(add(mul(t, 2.0), mul(t, t)))))
    r = sel(gt(x, 268435456.0), big, sel(gt(x, 2.0), mid, small))
    return sel(lt(x, 1.0), math.nan, r)


@widened
def atanh(x):
    """fdlibm e_atanh.c on |x|: ±inf at ±1, NaN beyond."""
    a = fabs(x)
    a2 = add(a, a)
    small = mul(0.5, _log1p(add(a2, div(mul(a2, a), sub(1.0, a)))))
    large = mul(0.5, _log1p(div(a2, sub(1.0, a))))
    r = sel(lt(a, 0.5), small, large)
    r = sel(gt(a, 1.0), math.nan, r)
    r = sel(lt(x, 0.0), neg(r), r)
    return sel(eq(x, 0.0), x, r)


# ----------------------------------------------------------------------------- inverse trigonometry

# Cephes atan.c: atan(x) = x + x·z·P(z)/Q(z), z = x², on |x| ≤ 0.66 after reduction
_ATAN_P = [-8.750608600031904122785e-1, -1.615753718733365076637e1, -7.500855792314704667340e1,
           -1.228866684490136173410e2, -6.485021904942025371773e1]
_ATAN_Q = [1.0, 2.485846490142306297962e1, 1.650270098316988542046e2, 4.328810604912902668951e2,
           4.853903996359136964868e2, 1.945506571482613964425e2]
_MOREBITS = 6.123233995736765886130e-17  # π/2 − fl(π/2)


def _poly(z, coefficients):
    r = _c(coefficients[0], z)
    for k in coefficients[1:]:
        r = add(mul(r, z), k)
    return r


def _atan_abs(a):
    """atan of a ≥ 0 (or NaN), float64."""
    big = gt(a, 2.414213562373095)  # tan(3π/8)
    mid = and_(not_(big), gt(a, 0.66))
    safe = sel(eq(a, 0.0), 1.0, a)
    t = sel(big, div(-1.0, safe), sel(mid, div(sub(a, 1.0), add(a, 1.0)), a))
    base = sel(big, math.pi / 2, sel(mid, math.pi / 4, _c(0.0, a)))
    more = sel(big, _MOREBITS, sel(mid, 0.5 * _MOREBITS, _c(0.0, a)))
    z = mul(t, t)
    r = add(mul(t, div(mul(z, _poly(z, _ATAN_P)), _poly(z, _ATAN_Q))), t)
    return add(base, add(r, more))


@widened
def atan(x):
    r = _atan_abs(fabs(x))
    r = sel(lt(x, 0.0), neg(r), r)
    return sel(eq(x, 0.0), x, r)


def _atan2(y, x):
    ay, ax = fabs(y), fabs(x)
    base = _atan_abs(div(ay, ax))  # |y|/0 = inf → π/2
    base = sel(eq(ay, 0.0), 0.0, base)
    base = sel(and_(eq(ay, INF), eq(ax, INF)), math.pi / 4, base)
    flipped = sub(PI_HI, sub(base, PI_LO))  # π − base
    r = sel(signbit(x), flipped, base)
    r = sel(or_(isnan(x), isnan(y)), math.nan, r)
    return sel(signbit(y), neg(r), r)


atan2 = widened(_atan2)


@widened
def asin(x):
    return _atan2(x, sqrt(mul(sub(1.0, x), add(1.0, x))))


@widened
def acos(x):
    return _atan2(sqrt(mul(sub(1.0, x), add(1.0, x))), x)


def _hypot64(x, y):
    a, b = fabs(x), fabs(y)
    m = sel(gt(a, b), a, b)
    n = sel(gt(a, b), b, a)
    q = div(n, sel(eq(m, 0.0), 1.0, m))
    r = mul(m, sqrt(add(mul(q, q), 1.0)))
    r = sel(or_(isnan(a), isnan(b)), math.nan, r)
    return sel(or_(eq(a, INF), eq(b, INF)), INF, r)


def hypot(x, y):
    if x.dtype == dt.float32:  # no overflow in float64: the sum of squares rounded once
        xd, yd = ex.cast(x, dt.float64), ex.cast(y, dt.float64)
        r = sqrt(add(mul(xd, xd), mul(yd, yd)))
        return ex.cast(sel(or_(isinf(xd), isinf(yd)), INF, r), dt.float32)  # inf even with a NaN
    return _hypot64(x, y)


# ----------------------------------------------------------------------------- division and remainders

def fmod(a, b):
    """C's fmod (the sign of a); floats only: the expression op, exact on every target."""
    return ex.Binary("fmod", a, b)


def remainder(a, b):
    """Python's (and PyTorch's) remainder: the sign of b."""
    if a.dtype.is_int:  # 0 for a zero divisor (numpy's; PyTorch raises)
        return sel(eq(b, 0), 0, sub(a, mul(floor_divide(a, b), b)))
    m = fmod(a, b)
    return sel(and_(ne(m, 0.0), ne(lt(b, 0.0), lt(m, 0.0))), add(m, b), m)


def floor_divide(a, b):
    """PyTorch's floor division: of integers, the floor of the quotient (0 where b is 0);
    of floats, (a − fmod(a, b))/b corrected to the floor as PyTorch computes it."""
    if a.dtype.is_int:
        q, r = _trunc_divmod(a, b)
        opposite = ne(lt(a, 0), lt(b, 0))
        return sel(and_(ne(r, 0), opposite), sub(q, 1), q)
    m = fmod(a, b)
    d = div(sub(a, m), b)
    d = sel(and_(ne(m, 0.0), ne(lt(b, 0.0), lt(m, 0.0))), sub(d, 1.0), d)
    f = floor(d)
    f = sel(gt(sub(d, f), 0.5), add(f, 1.0), f)
    zero = copysign(_c(0.0, a), div(a, b))
    r = sel(eq(d, 0.0), zero, f)
    return sel(eq(b, 0.0), div(a, b), r)


def trunc_divide(a, b):
    """Division rounded toward zero: integers (0 where b is 0) and floats (trunc(a/b))."""
    if a.dtype.is_int:
        return _trunc_divmod(a, b)[0]
    return trunc(div(a, b))


def int_fmod(a, b):
    """C's integer remainder (the sign of a; 0 where b is 0)."""
    return _trunc_divmod(a, b)[1]


def _trunc_divmod(a, b):
    """(quotient toward zero, remainder with a's sign) of integers, from the magnitudes
    (non-negative floordiv and mod agree on every target)."""
    zero = eq(b, 0)
    ua = fabs(a)
    ub = sel(zero, 1, fabs(b))
    q = ex.Binary("floordiv", ua, ub)
    r = ex.Binary("mod", ua, ub)
    negative = ne(lt(a, 0), lt(b, 0))
    q = sel(negative, neg(q), q)
    r = sel(lt(a, 0), neg(r), r)
    return sel(zero, 0, q), sel(zero, 0, r)


def numpy_division(name: str):
    """The elementwise body of numpy's floor_divide or remainder of two operands
    (expressions or scalars): integers (0 for a zero divisor, as numpy gives) and floats
    (through the exact fmod), 16-bit floats computed in float32, bools as int64."""
    fn = floor_divide if name == "floor_divide" else remainder

    def body(x, y):
        d = promote(x, y)
        d = dt.int64 if d.is_bool else d
        c = dt.compute_dtype(d)
        return ex.cast(fn(elem_cast(x, c), elem_cast(y, c)), d)
    return body


# ----------------------------------------------------------------------------- lgamma

# Lanczos (g = 7, n = 9): Γ(z + 1) = √(2π) t^(z + ½) e^(−t) A(z), t = z + g + ½
_LANCZOS = [0.99999999999980993, 676.5203681218851, -1259.1392167224028, 771.32342877765313,
            -176.61502916214059, 12.507343278686905, -0.13857109526572012, 9.9843695780195716e-6,
            1.5056327351493116e-7]
_HALF_LOG_2PI = 0.9189385332046727


def _lgamma_lanczos(x):
    """log Γ(x) for x ≥ ½ (float64): about 1e-15 absolute, relative away from the zeros
    at 1 and 2."""
    z = sub(x, 1.0)
    a = _c(_LANCZOS[0], x)
    for k, p in enumerate(_LANCZOS[1:], start=1):
        a = add(a, div(p, add(z, float(k))))
    t = add(z, 7.5)
    return add(sub(add(_HALF_LOG_2PI, mul(add(z, 0.5), log(t))), t), log(a))


@widened
def lgamma(x):
    """log|Γ(x)|: Lanczos on x ≥ ½, the reflection log(π/|sin πx|) − lgamma(1 − x) below
    (sin of π times x's distance to the nearest integer, exact); inf at the poles
    (0, −1, −2, …) and at ±inf; within about 5e-15 of max(1, |lgamma x|) in float64
    (Lanczos' absolute error: relative accuracy fades near the zeros at 1 and 2)."""
    low = lt(x, 0.5)
    y = sel(low, sub(1.0, x), x)
    big = gt(y, 1e300)
    main = _lgamma_lanczos(sel(big, 2.0, y))
    main = sel(big, INF, main)
    r = sub(x, floor(add(x, 0.5)))  # x − round(x), exact
    s = fabs(ex.Unary("sin", mul(r, math.pi)))
    reflected = sub(log(div(math.pi, s)), main)
    out = sel(low, reflected, main)
    out = sel(or_(eq(x, 1.0), eq(x, 2.0)), 0.0, out)  # the zeros exactly
    out = sel(eq(fabs(x), INF), INF, out)
    return sel(isnan(x), x, out)


# ψ(y) ~ log y − 1/(2y) − Σ B₂ₖ/(2k y²ᵏ) for y ≥ 10
_PSI_SERIES = [1 / 12, -1 / 120, 1 / 252, -1 / 240, 1 / 132, -691 / 32760, 1 / 12]


@widened
def digamma(x):
    """ψ(x) = d/dx log Γ(x): shifted up to y ≥ 10 by ψ(y) = ψ(y + 1) − 1/y, then the
    asymptotic series; the reflection ψ(1 − x) − π/tan(πx) below ½ (tan of π times x's
    distance to the nearest integer). −inf at 0 and NaN at the negative integers, as
    PyTorch gives; about 1e-15 absolute (relative accuracy fades near the root 1.4616)."""
    low = lt(x, 0.5)
    y = sel(low, sub(1.0, x), x)
    # n = the steps up to 10 (≤ 10 from y ≥ ½), each term its own select: an expression
    # linear in the steps, where a chain of conditional steps nests exponentially
    n = ex.Unary("ceil", sub(10.0, y))
    n = sel(lt(n, 0.0), 0.0, sel(gt(n, 10.0), 10.0, n))
    acc = _c(0.0, x)
    for k in range(10):
        acc = add(acc, sel(lt(float(k), n), div(1.0, add(y, float(k))), 0.0))
    y = add(y, n)
    z = div(1.0, mul(y, y))
    series = _c(_PSI_SERIES[-1], x)
    for c in reversed(_PSI_SERIES[:-1]):
        series = add(mul(series, z), c)
    psi = sub(sub(sub(log(y), div(0.5, y)), mul(series, z)), acc)
    r = sub(x, floor(add(x, 0.5)))  # x − round(x), exact
    cot = div(ex.Unary("cos", mul(r, math.pi)), ex.Unary("sin", mul(r, math.pi)))
    out = sel(low, sub(psi, mul(cot, math.pi)), psi)
    out = sel(and_(low, eq(r, 0.0)), math.nan, out)  # the poles at −1, −2, …
    out = sel(eq(x, 0.0), -INF, out)
    out = sel(eq(x, INF), INF, sel(eq(x, -INF), math.nan, out))
    return sel(isnan(x), x, out)
