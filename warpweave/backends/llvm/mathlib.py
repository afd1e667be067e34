"""float32 and float64 math functions as LLVM IR without calls, so they vectorize on
the CPU and need no libm on the GPU (the NVPTX backend aborts on `llvm.sin` and
friends, so the only intrinsics used are `llvm.floor` and `llvm.fabs`).

Each function takes a float or double, scalar or vector, and dispatches on that
element type: the structure (range reduction, special values) is shared, and
where the two precisions need different approximations the constants live in
tables keyed by `FLOAT32` / `FLOAT64`. The code is straight-line except for one
branch in float64 sin/cos, around Payne–Hanek reduction, taken only when some
lane needs it. The builder they are written with is `mathops`; sin and cos live in
`trig`.

float32 follows Cephes (Cody–Waite reduction, short polynomials): a few ulp. On the
CPU every lane of a vector computes every branch, so the float32 code there has as
few operations as accuracy allows (measured against float64 on random and edge
inputs, tests/backends/test_mathlib_float32_cpu.py; `Features` says what the target
lets it use: fused multiply-adds, a one-instruction ldexp):

* exp (1.0 ulp): n = round(x·log2 e) through a rounding constant whose bits hold n, one
  scaling by 2^n (`llvm.ldexp`, or two halves), and no selects: x is clamped to
  [−104, 89] letting NaN through, and the scaling overflows or underflows by itself.
* erf (1.2 ulp): one branch, 1 − e^Q with Q ≈ log erfc |x| a polynomial on [0, 4],
  as (1 − 2^n) − 2^n·(e^r − 1), exact in n = 0 so that small x keep their accuracy.
* tanh (1.3 ulp): x + x³·P(x²) below 0.625, 1 − 2/(1 + e^2|x|) above.
float64 follows fdlibm (Sun's freely distributable libm, which glibc's and musl's
double functions descend from); against numpy, every function is within one ulp:

* exp: x = n·ln2 + r with ln2 in two parts; e^r − 1 = hi − (lo − r·c/(2 − c)) with
  c = r − r²·P(r²); the result is scaled by 2^n in two halves, so that results
  near overflow and subnormal results come out right.
* log: x = 2^k·(1 + f) with √½ ≤ 1 + f < √2; log(1 + f) = f − f²/2 + s·(f²/2 + R(s²)),
  s = f/(2 + f).
* tanh: Cephes: x + x³·P(x²)/Q(x²) below 0.625; above, (e − 1)/(e + 1) for
  e = e^2|x| = 2^n·(1 + d), numerator and denominator as double-doubles.
* erf: fdlibm s_erf.c: a rational function on each of [0, 0.84375), [0.84375, 1.25),
  [1.25, 1/0.35), [1/0.35, 6), the last two as 1 − exp(−x² − 0.5625 + R/S)/x.
* sin, cos (`trig.py`): x = n·π/2 + r with r as a double-double: π/2 in 22-bit pieces (exact
  products while |x| < 2^31·π/2 ≈ 3.4e9), Payne–Hanek with the bits of 2/π (a
  constant table) beyond that; fdlibm's kernels on |r| ≤ π/4.
* pow: fdlibm e_pow.c: log2|x| in two pieces to about 2^-64, y·log2|x| = n + y' in
  extra precision, 2^y' by the exp kernel; numpy's (C99's) special cases. float32
  pow runs this float64 algorithm and rounds once.

Special values match numpy: exp(±inf) = inf / 0, log(0) = −inf, log(x < 0) = NaN,
sin(±inf) = NaN, odd functions keep the sign of ±0, NaN in → NaN out.
"""
from __future__ import annotations

from types import SimpleNamespace as Table

from llvmlite import ir

from .mathops import F64, FLOAT32, FLOAT64, INF, LOG2E, NAN, PLAIN, Features, Ops, finish_special
from .trig import cos, sin

# ----------------------------------------------------------------------------- constants

# exp: x = n·ln2 + r, |r| ≤ ln2/2, ln2 = ln2_hi + ln2_lo with n·ln2_hi exact.
EXP = {
    # x clamped to [−104, 89] (NaN kept): 2^n then overflows or rounds to 0 by itself
    FLOAT32: Table(clamp=(-104.0, 89.0), ln2_hi=0.693359375, ln2_lo=-2.12194440e-4,
                   # Cephes expf: e^r ≈ 1 + r + r²·P(r)
                   poly=[1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                         1.6666665459e-1, 5.0000001201e-1]),
    FLOAT64: Table(clamp=(-746.0, 710.0), zero_below=-7.45133219101941108420e+02,
                   inf_above=7.09782712893383973096e+02,
                   ln2_hi=6.93147180369123816490e-01, ln2_lo=1.90821492927058770002e-10,
                   # fdlibm e_exp.c: r·(e^r + 1)/(e^r − 1) ≈ 2 + r²·P(r²)
                   poly=[4.13813679705723846039e-08, -1.65339022054652515390e-06,
                         6.61375632143793436117e-05, -2.77777777770155933842e-03,
                         1.66666666666666019037e-01]),
}

# log: x = 2^k·(1 + f), √½ ≤ 1 + f < √2.
LOG = {
    # Cephes logf: log(1 + f) ≈ f − f²/2 + f³·P(f)
    FLOAT32: Table(ln2_hi=0.693359375, ln2_lo=-2.12194440e-4,
                   poly=[7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
                         1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
                         3.3333331174e-1]),
    # fdlibm k_log.h: log(1 + f) = 2s + s·R(s²), s = f/(2 + f); R split into even and
    # odd powers of s⁴ as fdlibm evaluates it (Lg2, Lg4, Lg6 and Lg1, Lg3, Lg5, Lg7).
    FLOAT64: Table(ln2_hi=6.93147180369123816490e-01, ln2_lo=1.90821492927058770002e-10,
                   even=[1.531383769920937332e-01, 2.222219843214978396e-01,
                         3.999999999940941908e-01],
                   odd=[1.479819860511658591e-01, 1.818357216161805012e-01,
                        2.857142874366239149e-01, 6.666666666666735130e-01]),
}

# tanh on |x| < 0.625: x + x³·P(x²) (float32, Cephes tanhf) or x + x³·P(x²)/Q(x²) with
# Q monic (float64, Cephes tanh.c); above, (e − 1)/(e + 1) with e = e^2|x|.
TANH = {
    FLOAT32: Table(p=[-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2,
                      1.33314422036e-1, -3.33332819422e-1], q=None),
    FLOAT64: Table(p=[-9.64399179425052238628e-1, -9.92877231001918586564e1,
                      -1.61468768441708447952e3],
                   q=[1.0, 1.12811678491632931402e2, 2.23548839060100448583e3,
                      4.84406305325125486048e3]),
}

# erf, float32: x + x·P(x²) up to |x| = 0.921875, 1 − exp(Q(|x|)) beyond (|x| clamped to 4,
# where erf rounds to 1). Least-squares fits in double to erf(x)/x − 1 and log(erfc(t)) on
# Chebyshev nodes, rounded to float32: 1.2 ulp at most against erf in 30 digits. No
# division, one exp: the erf-GELU is memory-bound again.
ERF32 = Table(split=0.921875, clamp=4.0,
              small=[8.438845543423668e-05, -0.0008160565630532801, 0.00520278699696064,
                     -0.026860205456614494, 0.11283712834119797, -0.37612634897232056,
                     0.12837916612625122],
              large=[1.613085714780027e-06, -4.5570875954581425e-05, 0.0005925991572439671,
                     -0.004739406052976847, 0.026362348347902298, -0.10997398942708969,
                     -0.6319416761398315, -1.1301639080047607, 0.00030253425939008594])

# erf, float32, in one branch (the CPU's): log erfc(x) ≈ x·R(x) − x on [0, 4], a
# least-squares fit in double for erf's relative error (on Chebyshev nodes, iteratively
# reweighted towards minimax), rounded to float32: 0.07 ulp of erf before float32
# evaluation.
ERF32_ONE = Table(clamp=4.0,
                  log_erfc=[9.258339559892192e-06, -0.00011766043462557718, 0.0006329078460112214,
                            -0.0016671632183715701, 0.00016053974104579538, 0.01915298029780388,
                            -0.10277780890464783, -0.6366193890571594, -0.12837916612625122])

# erf, float64: fdlibm s_erf.c. Polynomials highest power first.
ERF64 = Table(
    # |x| < 0.84375: erf(x) = x + x·pp(x²)/qq(x²)
    pp=[-2.37630166566501626084e-05, -5.77027029648944159157e-03, -2.84817495755985104766e-02,
        -3.25042107247001499370e-01, 1.28379167095512558561e-01],
    qq=[-3.96022827877536812320e-06, 1.32494738004321644526e-04, 5.08130628187576562776e-03,
        6.50222499887672944485e-02, 3.97917223959155352819e-01, 1.0],
    efx8=1.02703333676410069053e+00,  # 8·(2/√π − 1), for subnormal x
    # 0.84375 ≤ |x| < 1.25: erf(x) = erx + pa(s)/qa(s), s = |x| − 1
    erx=8.45062911510467529297e-01,
    pa=[-2.16637559486879084300e-03, 3.54783043256182359371e-02, -1.10894694282396677476e-01,
        3.18346619901161753674e-01, -3.72207876035701323847e-01, 4.14856118683748331666e-01,
        -2.36211856075265944077e-03],
    qa=[1.19844998467991074170e-02, 1.36370839120290507362e-02, 1.26171219808761642112e-01,
        7.18286544141962662868e-02, 5.40397917702171048937e-01, 1.06420880400844228286e-01, 1.0],
    # 1.25 ≤ |x| < 6: erf(x) = 1 − exp(−x² − 0.5625 + R(s)/S(s))/|x|, s = 1/x²,
    # (ra, sa) below 1/0.35 and (rb, sb) above; rb, sb padded with zeros to the same degree.
    ra=[-9.81432934416914548592e+00, -8.12874355063065934246e+01, -1.84605092906711035994e+02,
        -1.62396669462573470355e+02, -6.23753324503260060396e+01, -1.05586262253232909814e+01,
        -6.93858572707181764372e-01, -9.86494403484714822705e-03],
    sa=[-6.04244152148580987438e-02, 6.57024977031928170135e+00, 1.08635005541779435134e+02,
        4.29008140027567833386e+02, 6.45387271733267880336e+02, 4.34565877475229228821e+02,
        1.37657754143519042600e+02, 1.96512716674392571292e+01, 1.0],
    rb=[0.0, -4.83519191608651397019e+02, -1.02509513161107724954e+03,
        -6.37566443368389627722e+02, -1.60636384855821916062e+02, -1.77579549177547519889e+01,
        -7.99283237680523006574e-01, -9.86494292470009928597e-03],
    sb=[0.0, -2.24409524465858183362e+01, 4.74528541206955367215e+02, 2.55305040643316442583e+03,
        3.19985821950859553908e+03, 1.53672958608443695994e+03, 3.25792512996573918826e+02,
        3.03380607434824582924e+01, 1.0],
)

# pow, float64: fdlibm e_pow.c.
POW64 = Table(
    # (3/2)·(log(x) − 2s − (2/3)s³) ≈ s⁴·L(s²)
    L=[2.06975017800338417784e-01, 2.30660745775561754067e-01, 2.72728123808534006489e-01,
       3.33333329818377432918e-01, 4.28571428578550184252e-01, 5.99999999999994648725e-01],
    dp_h=5.84962487220764160156e-01, dp_l=1.35003920212974897128e-08,  # log2(1.5) in two
    cp=9.61796693925975554329e-01,  # 2/(3·ln2)
    cp_h=9.61796700954437255859e-01, cp_l=-7.02846165095275826516e-09,
    lg2=6.93147180559945286227e-01,
    lg2_h=6.93147182464599609375e-01, lg2_l=-1.90465429995776804525e-09,
    ovt=8.0085662595372944372e-17,  # −(1024 − log2(DBL_MAX + ulp/2))
)


# ----------------------------------------------------------------------------- functions


def _exp_parts(o: Ops, x):
    """(n, d) with e^x = 2^n·(1 + d), |d| < 0.42: x = n·ln2 + r, d = e^r − 1 (the
    "1 +" left to the caller keeps d's accuracy for tanh)."""
    c = EXP[o.fmt]
    n = o.round(o.mul(x, LOG2E))
    hi = o.sub(x, o.mul(n, c.ln2_hi))
    lo = o.mul(n, c.ln2_lo)
    r = o.sub(hi, lo)
    if o.double:
        # fdlibm: e^r − 1 = hi − (lo − r·c/(2 − c)) with c = r − r²·P(r²)
        t = o.mul(r, r)
        cc = o.sub(r, o.mul(t, o.poly(t, c.poly)))
        return n, o.sub(hi, o.sub(lo, o.div(o.mul(r, cc), o.sub(2.0, cc))))
    return n, o.add(o.mul(o.mul(r, r), o.poly(r, c.poly)), r)


# x + ROUNDER is x rounded to an integer n (|x| < 2^22), n in the low bits of its float
ROUNDER = 1.5 * 2 ** 23
ROUNDER_BITS = 0x4B400000


def _exp32(o: Ops, x):
    """e^x, float32: x = n·ln2 + r with n = x·log2 e rounded through ROUNDER (whose bits
    hold n: no fptosi, which NaN would make poison), e^r = 1 + r + r²·P(r) (Cephes), then
    2^n applied by `llvm.ldexp` where it is one instruction (`Features.ldexp`; one
    rounding: overflow gives inf, subnormal results come out right), else in two halves.
    x is first clamped to [−104, 89] letting NaN through: beyond the clamp the scaling
    overflows to inf or rounds to 0 by itself, and NaN propagates, so there are no
    selects."""
    c = EXP[FLOAT32]
    b = o.b
    x = o.clamp(x, *c.clamp)
    t = o.add(o.mul(x, LOG2E), ROUNDER)
    n = o.sub(t, ROUNDER)
    r = o.sub(o.sub(x, o.mul(n, c.ln2_hi)), o.mul(n, c.ln2_lo))
    y = o.add(o.add(o.mul(o.mul(r, r), o.poly(r, c.poly)), r), 1.0)
    k = b.sub(o.bits(t), o.i(ROUNDER_BITS))
    if o.features.ldexp:
        name = f"llvm.ldexp.v{o.width}f32.v{o.width}i32" if o.width else "llvm.ldexp.f32.i32"
        fn = o.module.globals.get(name) or ir.Function(o.module, ir.FunctionType(o.fty, [o.fty, o.ity]), name)
        return b.call(fn, [y, k])
    half = b.ashr(k, o.i(1))
    return o.mul(o.mul(y, o.pow2(half)), o.pow2(b.sub(k, half)))


def exp(b: ir.IRBuilder, module: ir.Module, x: ir.Value, features: Features = PLAIN) -> ir.Value:
    o = Ops(b, module, x, features=features)
    if not o.double:
        return _exp32(o, x)
    c = EXP[o.fmt]
    lo_clamp, hi_clamp = c.clamp
    xc = o.select(o.lt(x, hi_clamp), x, hi_clamp)  # NaN too, so that n stays finite
    xc = o.select(o.gt(xc, lo_clamp), xc, lo_clamp)
    n, d = _exp_parts(o, xc)
    y = o.ldexp(o.add(d, 1.0), n)
    y = o.select(o.gt(x, c.inf_above), INF, y)
    y = o.select(o.lt(x, c.zero_below), 0.0, y)
    return finish_special(o, x, y)


def log(b: ir.IRBuilder, module: ir.Module, x: ir.Value, features: Features = PLAIN) -> ir.Value:
    o = Ops(b, module, x, features=features)
    fmt, c = o.fmt, LOG[o.fmt]
    # x = 2^e·m with m in [0.5, 1), subnormals scaled up first
    tiny = o.lt(x, fmt.min_normal)
    xs = o.select(tiny, o.mul(x, 2.0 ** fmt.mantissa), x)
    bits = o.bits(xs)
    e = b.sub(b.and_(b.lshr(bits, o.i(fmt.mantissa)), o.i(fmt.exponent_mask)), o.i(fmt.bias - 1))
    e = b.select(tiny, b.sub(e, o.i(fmt.mantissa)), e)
    m = o.from_bits(b.or_(b.and_(bits, o.i(fmt.sign | ((1 << fmt.mantissa) - 1))),
                          o.i((fmt.bias - 1) << fmt.mantissa)))
    # 1 + f = 2m or m, whichever lies in [√½, √2) (exact)
    small = o.lt(m, 0.707106781186547524)
    k = o.to_float(b.select(small, b.sub(e, o.i(1)), e))
    f = o.select(small, o.sub(o.add(m, m), 1.0), o.sub(m, 1.0))
    if o.double:
        s = o.div(f, o.add(f, 2.0))
        z = o.mul(s, s)
        w = o.mul(z, z)
        r = o.add(o.mul(z, o.poly(w, c.odd)), o.mul(w, o.poly(w, c.even)))
        hfsq = o.mul(o.mul(f, f), 0.5)
        y = o.add(o.mul(s, o.add(hfsq, r)), o.mul(k, c.ln2_lo))
        y = o.add(o.add(o.sub(y, hfsq), f), o.mul(k, c.ln2_hi))
    else:
        z = o.mul(f, f)
        y = o.mul(o.mul(o.poly(f, c.poly), f), z)
        y = o.add(y, o.mul(k, c.ln2_lo))
        y = o.sub(y, o.mul(z, 0.5))
        y = o.add(o.add(f, y), o.mul(k, c.ln2_hi))
    y = o.select(o.eq(x, INF), x, y)
    y = o.select(o.eq(x, 0.0), -INF, y)
    y = o.select(o.lt(x, 0.0), NAN, y)
    return finish_special(o, x, y)


def _tanh32(o: Ops, x):
    """tanh, float32: x + x³·P(x²) below 0.625, above 1 − 2/(1 + e^2|x|) (within two
    ulp), given x's sign. No selects for special values: NaN takes the exponential,
    which propagates it, ±inf gives e = inf and so ±1, and ±0 the polynomial, whose
    −0 + 0 the sign restores."""
    c = TANH[FLOAT32]
    ax = o.fabs(x)
    z = o.mul(x, x)
    small = o.add(o.mul(o.mul(o.poly(z, c.p), z), x), x)
    e = _exp32(o, o.mul(ax, 2.0))
    large = o.sub(1.0, o.div(2.0, o.add(e, 1.0)))
    return o.copysign(o.select(o.lt(ax, 0.625), small, large), x)


def tanh(b: ir.IRBuilder, module: ir.Module, x: ir.Value, features: Features = PLAIN) -> ir.Value:
    o = Ops(b, module, x, features=features)
    if not o.double:
        return _tanh32(o, x)
    c = TANH[o.fmt]
    ax = o.fabs(x)
    z = o.mul(x, x)
    ratio = o.poly(z, c.p) if c.q is None else o.div(o.poly(z, c.p), o.poly(z, c.q))
    small = o.add(o.mul(o.mul(ratio, z), x), x)
    # (e − 1)/(e + 1) with e = e^2|x| = 2^n·(1 + d) (|x| ≤ 22, where tanh is 1 anyway):
    # numerator and denominator as double-doubles s ± 1 + s·d, s = 2^n, then one
    # division corrected by the low parts
    n, d = _exp_parts(o, o.mul(o.select(o.lt(ax, 22.0), ax, 22.0), 2.0))
    s = o.pow2(o.to_int(n))
    sd = o.mul(s, d)

    def plus(one):
        hi, lo = o.two_sum(s, one)
        hi, err = o.two_sum(hi, sd)
        return hi, o.add(lo, err)

    (num_hi, num_lo), (den_hi, den_lo) = plus(-1.0), plus(1.0)
    t = o.div(num_hi, den_hi)
    large = o.add(t, o.div(o.sub(num_lo, o.mul(t, den_lo)), den_hi))
    y = o.select(o.lt(ax, 0.625), small, o.copysign(large, x))
    return finish_special(o, x, y, zero_keeps_sign=True)


def tanh_with(b: ir.IRBuilder, module: ir.Module, x: ir.Value, exp2, reciprocal) -> ir.Value:
    """float32 tanh from a hardware `exp2(v)` and `reciprocal(v)` (builders of LLVM
    values; the GPU's ex2.approx and rcp.approx): the polynomial below 0.625, and
    1 − 2/(1 + 2^(2|x|·log2 e)) above, where the approximations are within a few ulp.
    Multiplies and adds may contract into fused multiply-adds (the GPU's default)."""
    o = Ops(b, module, x, contract=True)
    c = TANH[o.fmt]
    ax = o.fabs(x)
    z = o.mul(x, x)
    small = o.add(o.mul(o.mul(o.poly(z, c.p), z), x), x)
    e = exp2(o.mul(ax, 2.0 * 1.4426950408889634))
    large = o.copysign(o.sub(1.0, o.mul(2.0, reciprocal(o.add(e, 1.0)))), x)
    return finish_special(o, x, o.select(o.lt(ax, 0.625), small, large), zero_keeps_sign=True)


def _erf32(o: "Ops", x: ir.Value, exp_fn) -> ir.Value:
    c = ERF32
    ax = o.fabs(x)
    small = o.add(x, o.mul(x, o.poly(o.mul(x, x), c.small)))
    t = o.select(o.lt(ax, c.clamp), ax, c.clamp)
    tail = o.copysign(o.sub(1.0, exp_fn(o.poly(t, c.large))), x)
    return finish_special(o, x, o.select(o.gt(ax, c.split), tail, small))


def _erf32_one_branch(o: "Ops", x: ir.Value) -> ir.Value:
    """erf, float32, with no branches to blend (the CPU's: there every lane computes
    every branch): erf|x| = 1 − e^Q with Q = x·R(x) − x ≈ log erfc x on [0, 4] (|x|
    clamped to 4, where erf rounds to 1; NaN passes the clamp and propagates), and
    1 − e^Q = (1 − 2^n) − 2^n·d with Q = n·ln2 + r, d = e^r − 1 = r + r²·P(r) (Cephes
    expf's P): where n = 0 (|x| < 0.27) that is −d with r = Q exactly, so small
    arguments keep their relative accuracy."""
    c = ERF32_ONE
    e = EXP[FLOAT32]
    b = o.b
    ax = o.fabs(x)
    ax = o.select(o.lt(c.clamp, ax), c.clamp, ax)
    R = o.poly(ax, c.log_erfc)
    q = o.fma(R, ax, o.neg(ax))
    q_lo = o.fma(R, ax, o.neg(o.add(ax, q)))  # q's rounding error: ax + q is exact while |q| ≤ 2|x|
    t = o.add(o.mul(q, LOG2E), ROUNDER)
    n = o.sub(t, ROUNDER)
    r = o.sub(o.sub(q, o.mul(n, e.ln2_hi)), o.mul(n, e.ln2_lo))
    d = o.add(r, o.add(o.mul(o.mul(r, r), o.poly(r, e.poly)), q_lo))
    s = o.from_bits(b.add(b.shl(o.bits(t), o.i(23)), o.i(127 << 23)))  # 2^n, n in [−26, 0]
    return o.copysign(o.sub(o.sub(1.0, s), o.mul(s, d)), x)


def erf_with(b: ir.IRBuilder, module: ir.Module, x: ir.Value, exp2) -> ir.Value:
    """float32 erf from a hardware `exp2(v)` (the GPU's ex2.approx: in the tail,
    1 − e^Q, its few-ulp error is scaled by e^Q ≤ 0.2); multiplies and adds may
    contract into fused multiply-adds."""
    o = Ops(b, module, x, contract=True)
    return _erf32(o, x, lambda v: exp2(o.mul(v, 1.4426950408889634)))


def erf(b: ir.IRBuilder, module: ir.Module, x: ir.Value, features: Features = PLAIN) -> ir.Value:
    o = Ops(b, module, x, features=features)
    if not o.double:
        return _erf32_one_branch(o, x)
    ax = o.fabs(x)
    z = o.mul(x, x)
    c = ERF64
    near0 = o.add(x, o.mul(x, o.div(o.poly(z, c.pp), o.poly(z, c.qq))))
    subnormal = o.mul(0.125, o.add(o.mul(x, 8.0), o.mul(x, c.efx8)))  # no underflow in x·0.128
    near0 = o.select(o.lt(ax, 2.0 ** -1015), subnormal, near0)
    s = o.sub(ax, 1.0)
    near1 = o.add(c.erx, o.div(o.poly(s, c.pa), o.poly(s, c.qa)))
    # the tail, on |x| clamped to [1.25, 6] (erf is 1 to double precision above 6)
    a = o.select(o.gt(ax, 1.25), ax, 1.25)
    a = o.select(o.lt(a, 6.0), a, 6.0)
    s = o.div(1.0, o.mul(a, a))
    first = o.lt(a, 2.8571434020996094)  # fdlibm's 1/0.35 (high word 0x4006DB6E)
    R = o.poly(s, [o.select(first, ra, rb) for ra, rb in zip(c.ra, c.rb)])
    S = o.poly(s, [o.select(first, sa, sb) for sa, sb in zip(c.sa, c.sb)])
    # exp(−a²) as exp(−h² − 0.5625)·exp((h − a)(h + a) + R/S), h = a to 21 bits (h² exact)
    h = o.clear_low(a, 32)
    r = o.mul(exp(b, module, o.sub(o.neg(o.mul(h, h)), 0.5625)),
              exp(b, module, o.add(o.mul(o.sub(h, a), o.add(h, a)), o.div(R, S))))
    tail = o.sub(1.0, o.div(r, a))
    y = o.select(o.lt(ax, 1.25), near1, tail)
    y = o.select(o.lt(ax, 0.84375), near0, o.copysign(y, x))
    return finish_special(o, x, y)


def _pow_positive(o: Ops, ax, y):
    """ax**y for finite ax > 0 and finite y, float64 (fdlibm e_pow.c)."""
    b, c = o.b, POW64
    i = o.i
    # log2(ax) = t1 + t2: ax = 2^n·(1 + f) normalized into [√½·…, √3) around bp = 1 or 1.5,
    # ss = (ax − bp)/(ax + bp) in two pieces, log2 from the series in ss
    tiny = o.lt(ax, FLOAT64.min_normal)
    ax = o.select(tiny, o.mul(ax, 2.0 ** 53), ax)
    bits = o.bits(ax)
    hx = b.lshr(bits, i(32))
    n = b.sub(b.lshr(hx, i(20)), i(0x3FF))
    n = b.select(tiny, b.sub(n, i(53)), n)
    j = b.and_(hx, i(0xFFFFF))
    k1 = b.and_(b.icmp_signed(">", j, i(0x3988E)), b.icmp_signed("<", j, i(0xBB67A)))
    wrap = b.icmp_signed(">=", j, i(0xBB67A))  # |x| ≥ √3·2^n: the next binade, bp = 1
    n = b.select(wrap, b.add(n, i(1)), n)
    ix = b.or_(j, i(0x3FF00000))
    ix = b.select(wrap, b.sub(ix, i(0x00100000)), ix)
    ax = o.from_bits(b.or_(b.shl(ix, i(32)), b.and_(bits, i(0xFFFFFFFF))))
    bp = o.select(k1, 1.5, 1.0)
    dp_h = o.select(k1, c.dp_h, 0.0)
    dp_l = o.select(k1, c.dp_l, 0.0)
    u = o.sub(ax, bp)
    v = o.div(1.0, o.add(ax, bp))
    ss = o.mul(u, v)
    s_h = o.clear_low(ss, 32)
    t_h = b.add(b.add(b.or_(b.lshr(ix, i(1)), i(0x20000000)), i(0x00080000)),
                b.select(k1, i(1 << 18), i(0)))
    t_h = o.from_bits(b.shl(t_h, i(32)))  # ax + bp to 21 bits
    t_l = o.sub(ax, o.sub(t_h, bp))
    s_l = o.mul(v, o.sub(o.sub(u, o.mul(s_h, t_h)), o.mul(s_h, t_l)))
    s2 = o.mul(ss, ss)
    r = o.mul(o.mul(s2, s2), o.poly(s2, c.L))
    r = o.add(r, o.mul(s_l, o.add(s_h, ss)))
    s2 = o.mul(s_h, s_h)
    t_h = o.clear_low(o.add(o.add(3.0, s2), r), 32)
    t_l = o.sub(r, o.sub(o.sub(t_h, 3.0), s2))
    u = o.mul(s_h, t_h)
    v = o.add(o.mul(s_l, t_h), o.mul(t_l, ss))
    p_h = o.clear_low(o.add(u, v), 32)
    p_l = o.sub(v, o.sub(p_h, u))
    z_h = o.mul(c.cp_h, p_h)
    z_l = o.add(o.add(o.mul(c.cp_l, p_h), o.mul(p_l, c.cp)), dp_l)
    t = o.to_float(n)
    t1 = o.clear_low(o.add(o.add(o.add(z_h, z_l), dp_h), t), 32)
    t2 = o.sub(z_l, o.sub(o.sub(o.sub(t1, t), dp_h), z_h))
    # y·log2(ax) = p_h + p_l, y split so that y1·t1 is exact
    y1 = o.clear_low(y, 32)
    p_l = o.add(o.mul(o.sub(y, y1), t1), o.mul(y, t2))
    p_h = o.mul(y1, t1)
    z = o.add(p_l, p_h)
    over = b.or_(o.gt(z, 1024.0), b.and_(o.eq(z, 1024.0),
                                          o.gt(o.add(p_l, c.ovt), o.sub(z, p_h))))
    under = b.or_(o.lt(z, -1075.0), b.and_(o.eq(z, -1075.0), o.le(p_l, o.sub(z, p_h))))
    inside = b.not_(b.or_(over, under))
    p_h = o.select(inside, p_h, 0.0)
    p_l = o.select(inside, p_l, 0.0)
    # 2^(p_h + p_l) = 2^m·e^(t·ln2) with m the nearest integer, by the exp kernel
    z = o.add(p_l, p_h)
    m = o.select(o.gt(o.fabs(z), 0.5), o.round(z), 0.0)
    p_h = o.sub(p_h, m)  # exact
    t = o.clear_low(o.add(p_l, p_h), 32)
    u = o.mul(t, c.lg2_h)
    v = o.add(o.mul(o.sub(p_l, o.sub(t, p_h)), c.lg2), o.mul(t, c.lg2_l))
    z = o.add(u, v)
    w = o.sub(v, o.sub(z, u))
    t = o.mul(z, z)
    t1 = o.sub(z, o.mul(t, o.poly(t, EXP[FLOAT64].poly)))
    r = o.sub(o.div(o.mul(z, t1), o.sub(t1, 2.0)), o.add(w, o.mul(z, w)))
    out = o.ldexp(o.sub(1.0, o.sub(r, z)), m)
    out = o.select(over, INF, out)
    return o.select(under, 0.0, out)


def pow(b: ir.IRBuilder, module: ir.Module, x: ir.Value, y: ir.Value, features: Features = PLAIN) -> ir.Value:
    """x**y with numpy's (C99's) special cases: a negative base needs an integer
    exponent (odd ones keep the sign), 0**negative is inf, x**0 and 1**y are 1."""
    o = Ops(b, module, x, features=features)
    ax = o.fabs(x)
    integral = o.eq(o.floor(y), y)  # ±inf counts as an (even) integer
    half = o.mul(y, 0.5)
    odd = b.and_(integral, b.fcmp_unordered("!=", o.floor(half), half))
    # |x|**y on finite nonzero |x| and finite y; other lanes computed on 1**0
    regular = b.and_(b.and_(o.isfinite(x), o.gt(ax, 0.0)), o.isfinite(y))
    axr, yr = o.select(regular, ax, 1.0), o.select(regular, y, 0.0)
    if o.double:
        r = _pow_positive(o, axr, yr)
    else:
        # float32 through the float64 algorithm: exp(y·log x) in float32 loses
        # |y·log x|·2^-24 to the rounding of the product (10 ulp and more for large
        # results); the double result rounded once is within half an ulp or so
        wide = o.ty(F64)
        xd, yd = b.fpext(axr, wide), b.fpext(yr, wide)
        r = b.fptrunc(_pow_positive(Ops(b, module, xd), xd, yd), o.fty)
    negative_odd = b.and_(o.signbit(x), odd)
    r = o.select(negative_odd, o.neg(r), r)
    # (finite x < 0)**(finite non-integer) is NaN
    r = o.select(b.and_(b.and_(o.lt(x, 0.0), regular), b.not_(integral)), NAN, r)
    # ±0 and ±inf bases: inf when |x| = inf and y > 0 or x = 0 and y < 0, else 0
    big = b.icmp_unsigned("==", o.eq(ax, INF), o.gt(y, 0.0))
    special = o.select(big, INF, 0.0)
    special = o.select(negative_odd, o.neg(special), special)
    r = o.select(b.or_(o.eq(ax, 0.0), o.eq(ax, INF)), special, r)
    # infinite exponents: 1 for |x| = 1, inf when |x| > 1 and y = inf or |x| < 1 and y = −inf
    grows = b.icmp_unsigned("==", o.gt(ax, 1.0), o.gt(y, 0.0))
    at_inf = o.select(o.eq(ax, 1.0), 1.0, o.select(grows, INF, 0.0))
    r = o.select(o.eq(o.fabs(y), INF), at_inf, r)
    # exponents ±1 and 2 exactly
    r = o.select(o.eq(y, 1.0), x, r)
    r = o.select(o.eq(y, 2.0), o.mul(x, x), r)
    r = o.select(o.eq(y, -1.0), o.div(1.0, x), r)
    r = o.select(b.or_(o.isnan(x), o.isnan(y)), NAN, r)
    r = o.select(o.eq(y, 0.0), 1.0, r)
    return o.select(o.eq(x, 1.0), 1.0, r)


FUNCTIONS = {"exp": exp, "log": log, "tanh": tanh, "erf": erf, "sin": sin, "cos": cos, "pow": pow}
