"""float32 math functions as straight-line LLVM IR (no calls), so they vectorize on
the CPU and need no libm on the GPU.

Each function works on a float scalar or vector and keeps IEEE special values:
exp(±inf) = inf / 0, log(0) = -inf, log(x < 0) = NaN, NaN in → NaN out. Accuracy
is a few ulp over the float32 range (the tests compare against float64 numpy).
"""
from __future__ import annotations

from llvmlite import ir

F32 = ir.FloatType()
I32 = ir.IntType(32)

LOG2E = 1.4426950408889634
LN2_HI = 0.693359375
LN2_LO = -2.12194440e-4


class _Ops:
    """Arithmetic on a float scalar or vector type, constants widened as needed."""

    def __init__(self, b: ir.IRBuilder, module: ir.Module, like: ir.Value):
        self.b = b
        self.module = module
        self.width = like.type.count if isinstance(like.type, ir.VectorType) else None

    def ty(self, t: ir.Type) -> ir.Type:
        return ir.VectorType(t, self.width) if self.width else t

    def f(self, c: float) -> ir.Value:
        return ir.Constant(self.ty(F32), [c] * self.width) if self.width else ir.Constant(F32, c)

    def i(self, c: int) -> ir.Value:
        return ir.Constant(self.ty(I32), [c] * self.width) if self.width else ir.Constant(I32, c)

    def add(self, a, c):
        return self.b.fadd(a, c)

    def sub(self, a, c):
        return self.b.fsub(a, c)

    def mul(self, a, c):
        return self.b.fmul(a, c)

    def div(self, a, c):
        return self.b.fdiv(a, c)

    def poly(self, x, coeffs):
        """Horner: coeffs[0]·x^n + … + coeffs[n]."""
        acc = self.f(coeffs[0])
        for c in coeffs[1:]:
            acc = self.add(self.mul(acc, x), self.f(c))
        return acc

    def lt(self, a, c):
        return self.b.fcmp_ordered("<", a, c)

    def gt(self, a, c):
        return self.b.fcmp_ordered(">", a, c)

    def isnan(self, a):
        return self.b.fcmp_unordered("uno", a, a)

    def select(self, cond, a, c):
        return self.b.select(cond, a, c)

    def intrinsic(self, name: str, *args):
        suffix = f"v{self.width}f32" if self.width else "f32"
        full = f"llvm.{name}.{suffix}"
        fn = self.module.globals.get(full)
        if fn is None:
            t = self.ty(F32)
            fn = ir.Function(self.module, ir.FunctionType(t, [t] * len(args)), full)
        return self.b.call(fn, list(args))

    def bits(self, a):
        return self.b.bitcast(a, self.ty(I32))

    def from_bits(self, a):
        return self.b.bitcast(a, self.ty(F32))


def exp(b: ir.IRBuilder, module: ir.Module, x: ir.Value) -> ir.Value:
    o = _Ops(b, module, x)
    xc = o.select(o.gt(x, o.f(88.72283)), o.f(88.72283), x)
    xc = o.select(o.lt(xc, o.f(-104.0)), o.f(-104.0), xc)  # results below 2^-126 are subnormal
    n = o.intrinsic("floor", o.add(o.mul(xc, o.f(LOG2E)), o.f(0.5)))
    r = o.sub(o.sub(xc, o.mul(n, o.f(LN2_HI))), o.mul(n, o.f(LN2_LO)))
    p = o.poly(r, [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                   1.6666665459e-1, 5.0000001201e-1])
    p = o.add(o.add(o.mul(o.mul(r, r), p), r), o.f(1.0))
    ni = b.fptosi(n, o.ty(I32))
    # 2^n in two halves so that n = 128 (x near the top of the range) still works.
    half = b.ashr(ni, o.i(1))
    s1 = o.from_bits(b.shl(b.add(half, o.i(127)), o.i(23)))
    s2 = o.from_bits(b.shl(b.add(b.sub(ni, half), o.i(127)), o.i(23)))
    y = o.mul(o.mul(p, s1), s2)
    y = o.select(o.gt(x, o.f(88.72283)), o.f(float("inf")), y)
    y = o.select(o.lt(x, o.f(-103.97208)), o.f(0.0), y)
    return o.select(o.isnan(x), x, y)


def log(b: ir.IRBuilder, module: ir.Module, x: ir.Value) -> ir.Value:
    o = _Ops(b, module, x)
    tiny = o.lt(x, o.f(1.17549435e-38))
    xs = o.select(tiny, o.mul(x, o.f(8388608.0)), x)  # scale subnormals up by 2^23
    bits = o.bits(xs)
    e = b.sub(b.and_(b.lshr(bits, o.i(23)), o.i(0xFF)), o.i(126))
    e = b.select(tiny, b.sub(e, o.i(23)), e)
    m = o.from_bits(b.or_(b.and_(bits, o.i(0x807FFFFF)), o.i(0x3F000000)))  # [0.5, 1)
    small = o.lt(m, o.f(0.707106781186547524))
    ef = b.sitofp(b.select(small, b.sub(e, o.i(1)), e), o.ty(F32))
    m = o.select(small, o.sub(o.add(m, m), o.f(1.0)), o.sub(m, o.f(1.0)))
    z = o.mul(m, m)
    y = o.mul(o.mul(o.poly(m, [7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1,
                               -1.2420140846e-1, 1.4249322787e-1, -1.6668057665e-1,
                               2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1]), m), z)
    y = o.add(y, o.mul(ef, o.f(LN2_LO)))
    y = o.sub(y, o.mul(z, o.f(0.5)))
    y = o.add(o.add(m, y), o.mul(ef, o.f(LN2_HI)))
    y = o.select(b.fcmp_ordered("==", x, o.f(float("inf"))), x, y)
    y = o.select(b.fcmp_ordered("==", x, o.f(0.0)), o.f(float("-inf")), y)
    y = o.select(o.lt(x, o.f(0.0)), o.f(float("nan")), y)
    return o.select(o.isnan(x), x, y)


def tanh(b: ir.IRBuilder, module: ir.Module, x: ir.Value) -> ir.Value:
    o = _Ops(b, module, x)
    ax = o.intrinsic("fabs", x)
    z = o.mul(x, x)
    small = o.add(o.mul(o.mul(o.poly(z, [-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2,
                                         1.33314422036e-1, -3.33332819422e-1]), z), x), x)
    e = exp(b, module, o.add(ax, ax))
    large = o.sub(o.f(1.0), o.div(o.f(2.0), o.add(e, o.f(1.0))))
    large = o.from_bits(b.or_(o.bits(large), b.and_(o.bits(x), o.i(-0x80000000))))  # copysign
    y = o.select(o.lt(ax, o.f(0.625)), small, large)
    return o.select(o.isnan(x), x, y)


def erf(b: ir.IRBuilder, module: ir.Module, x: ir.Value) -> ir.Value:
    o = _Ops(b, module, x)
    ax = o.intrinsic("fabs", x)
    # |x| < 0.5: the Maclaurin series 2/√π (x − x³/3 + x⁵/10 − x⁷/42 + x⁹/216).
    z = o.mul(x, x)
    series = o.mul(o.mul(x, o.f(1.1283791670955126)),
                   o.poly(z, [1 / 216, -1 / 42, 1 / 10, -1 / 3, 1.0]))
    # Otherwise 1 − t·P(t)·exp(−x²) with t = 1/(1 + p|x|) (Abramowitz–Stegun 7.1.26).
    t = o.div(o.f(1.0), o.add(o.f(1.0), o.mul(ax, o.f(0.3275911))))
    p = o.mul(o.poly(t, [1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592]), t)
    tail = o.sub(o.f(1.0), o.mul(p, exp(b, module, b.fneg(z))))
    tail = o.from_bits(b.or_(o.bits(tail), b.and_(o.bits(x), o.i(-0x80000000))))
    y = o.select(o.lt(ax, o.f(0.5)), series, tail)
    return o.select(o.isnan(x), x, y)


def _sin_cos(b: ir.IRBuilder, module: ir.Module, x: ir.Value, cosine: bool) -> ir.Value:
    """x = k·π/2 + r with |r| ≤ π/4 (three-part Cody–Waite), then the quadrant k
    picks ±sin r or ±cos r. Accurate while |x| stays below about 1e5."""
    o = _Ops(b, module, x)
    k = o.intrinsic("floor", o.add(o.mul(x, o.f(0.6366197723675814)), o.f(0.5)))
    r = o.sub(x, o.mul(k, o.f(1.5703125)))
    r = o.sub(r, o.mul(k, o.f(4.837512969970703125e-4)))
    r = o.sub(r, o.mul(k, o.f(7.54978995489188216e-8)))
    z = o.mul(r, r)
    sin_r = o.add(o.mul(o.mul(o.poly(z, [-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1]), z), r), r)
    cos_r = o.add(o.sub(o.f(1.0), o.mul(z, o.f(0.5))),
                  o.mul(o.mul(z, z), o.poly(z, [2.443315711809948e-5, -1.388731625493765e-3,
                                                4.166664568298827e-2])))
    q = b.and_(b.add(b.fptosi(k, o.ty(I32)), o.i(1 if cosine else 0)), o.i(3))
    odd = b.icmp_signed("!=", b.and_(q, o.i(1)), o.i(0))
    negative = b.icmp_signed("!=", b.and_(q, o.i(2)), o.i(0))
    y = o.select(odd, cos_r, sin_r)
    y = o.select(negative, b.fneg(y), y)
    inf = b.fcmp_ordered("==", o.intrinsic("fabs", x), o.f(float("inf")))
    return o.select(b.or_(inf, o.isnan(x)), o.f(float("nan")), y)


def sin(b: ir.IRBuilder, module: ir.Module, x: ir.Value) -> ir.Value:
    return _sin_cos(b, module, x, cosine=False)


def cos(b: ir.IRBuilder, module: ir.Module, x: ir.Value) -> ir.Value:
    return _sin_cos(b, module, x, cosine=True)


def pow(b: ir.IRBuilder, module: ir.Module, x: ir.Value, y: ir.Value) -> ir.Value:
    """x**y as exp(y·log|x|), with numpy's special cases: a negative base needs an
    integer exponent (odd ones keep the sign), 0**negative is inf, x**0 is 1."""
    o = _Ops(b, module, x)
    ax = o.intrinsic("fabs", x)
    r = exp(b, module, o.mul(y, log(b, module, ax)))
    fy = o.intrinsic("floor", y)
    integral = b.fcmp_ordered("==", fy, y)
    half = o.mul(y, o.f(0.5))
    odd = b.and_(integral, b.fcmp_unordered("!=", o.intrinsic("floor", half), half))
    negative = o.lt(x, o.f(0.0))
    r = o.select(b.and_(negative, odd), b.fneg(r), r)
    r = o.select(b.and_(negative, b.not_(integral)), o.f(float("nan")), r)
    r = o.select(b.fcmp_ordered("==", y, o.f(0.0)), o.f(1.0), r)
    return o.select(b.fcmp_ordered("==", x, o.f(1.0)), o.f(1.0), r)


FUNCTIONS = {"exp": exp, "log": log, "tanh": tanh, "erf": erf, "sin": sin, "cos": cos, "pow": pow}
