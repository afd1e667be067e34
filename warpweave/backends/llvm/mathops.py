"""The builder the math functions are written with: IEEE formats, the target
features float32 code may use, and `Ops`, arithmetic on float or double scalars
and vectors with Python numbers widened to constants."""
from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

F32 = ir.FloatType()
F64 = ir.DoubleType()
I32 = ir.IntType(32)
I64 = ir.IntType(64)

LOG2E = 1.4426950408889634
INF = float("inf")
NAN = float("nan")


@dataclass(frozen=True)
class Format:
    """An IEEE binary format: its LLVM float type, the integer type of its bits and
    the sizes of its fields."""

    name: str  # intrinsic suffix
    float: ir.Type
    int: ir.Type
    mantissa: int  # stored mantissa bits
    bias: int

    @property
    def exponent_mask(self) -> int:
        return (1 << (self.int.width - 1 - self.mantissa)) - 1

    @property
    def sign(self) -> int:
        return 1 << (self.int.width - 1)

    @property
    def min_normal(self) -> float:
        return 2.0 ** (1 - self.bias)


FLOAT32 = Format("f32", F32, I32, 23, 127)
FLOAT64 = Format("f64", F64, I64, 52, 1023)
FORMATS = {"float": FLOAT32, "double": FLOAT64}


# ----------------------------------------------------------------------------- builder


@dataclass(frozen=True)
class Features:
    """What a target lets the float32 functions use (float64 code ignores this: its
    double-double steps need every operation rounded as written).

    `contract`: a·b + c may fuse into one fma, rounded once, and `Ops.fma` is one
    (`llvm.fma`: only for targets that have the instruction, else it is a libm call).
    `ldexp`: `llvm.ldexp` is one instruction (x86 AVX-512's vscalefps), so exp scales
    by 2^n in one step; only where 512-bit vectors are legal (LLVM 22 aborts when it
    has to split a vector ldexp, e.g. under "prefer-vector-width"="256" with
    "min-legal-vector-width"="0"). The default, `PLAIN`, is every operation as written
    and the integer scaling."""

    contract: bool = False
    ldexp: bool = False


PLAIN = Features()


class Ops:
    """Arithmetic on a float or double scalar or vector; Python numbers are widened
    to constants of that type."""

    def __init__(self, b: ir.IRBuilder, module: ir.Module, like: ir.Value, contract: bool = False,
                 features: Features = PLAIN):
        self.b = b
        self.module = module
        t = like.type
        self.width = t.count if isinstance(t, ir.VectorType) else None
        scalar = t.element if self.width else t
        if str(scalar) not in FORMATS:
            raise TypeError(f"mathlib works on float and double values, not {t}")
        self.fmt = FORMATS[str(scalar)]
        self.double = self.fmt is FLOAT64
        if self.double:
            features = PLAIN
        self.features = features
        contract = contract or features.contract
        self.flags = ["contract"] if contract else []  # a·b + c may become one fma
        self.fty = self.ty(self.fmt.float)
        self.ity = self.ty(self.fmt.int)

    def ty(self, t: ir.Type) -> ir.Type:
        return ir.VectorType(t, self.width) if self.width else t

    def _const(self, t: ir.Type, c) -> ir.Value:
        return ir.Constant(self.ty(t), [c] * self.width) if self.width else ir.Constant(t, c)

    def f(self, c) -> ir.Value:
        return c if isinstance(c, ir.Value) else self._const(self.fmt.float, float(c))

    def i(self, c) -> ir.Value:
        """An integer of the format's width; bit patterns may be given unsigned."""
        if isinstance(c, ir.Value):
            return c
        w = self.fmt.int.width
        c &= (1 << w) - 1
        return self._const(self.fmt.int, c - (1 << w) if c >> (w - 1) else c)

    # float arithmetic
    def _flagged(self, inst):
        inst.flags.extend(self.flags)
        return inst

    def add(self, a, c):
        return self._flagged(self.b.fadd(self.f(a), self.f(c)))

    def sub(self, a, c):
        return self._flagged(self.b.fsub(self.f(a), self.f(c)))

    def mul(self, a, c):
        return self._flagged(self.b.fmul(self.f(a), self.f(c)))

    def div(self, a, c):
        return self.b.fdiv(self.f(a), self.f(c))

    def neg(self, a):
        return self.b.fneg(a)

    def poly(self, x, coeffs):
        """Horner: coeffs[0]·x^n + … + coeffs[n] (numbers or values)."""
        acc = self.f(coeffs[0])
        for c in coeffs[1:]:
            acc = self.add(self.mul(acc, x), c)
        return acc

    def two_sum(self, a, c):
        """(s, e) with s = fl(a + c) and s + e = a + c exactly (Knuth)."""
        s = self.add(a, c)
        cc = self.sub(s, a)
        return s, self.add(self.sub(a, self.sub(s, cc)), self.sub(c, cc))

    # comparisons (ordered: false on NaN) and selection
    def lt(self, a, c):
        return self.b.fcmp_ordered("<", self.f(a), self.f(c))

    def le(self, a, c):
        return self.b.fcmp_ordered("<=", self.f(a), self.f(c))

    def gt(self, a, c):
        return self.b.fcmp_ordered(">", self.f(a), self.f(c))

    def ge(self, a, c):
        return self.b.fcmp_ordered(">=", self.f(a), self.f(c))

    def eq(self, a, c):
        return self.b.fcmp_ordered("==", self.f(a), self.f(c))

    def isnan(self, a):
        return self.b.fcmp_unordered("uno", a, a)

    def isfinite(self, a):
        return self.lt(self.fabs(a), INF)

    def select(self, cond, a, c):
        return self.b.select(cond, self.f(a), self.f(c))

    def clamp(self, a, lo, hi):
        """a clamped to [lo, hi], NaN kept (one minps and one maxps on x86)."""
        a = self.select(self.lt(hi, a), hi, a)
        return self.select(self.gt(lo, a), lo, a)

    def any(self, cond):
        """Whether any lane of an i1 scalar or vector is set."""
        if not self.width:
            return cond
        out = self.b.extract_element(cond, ir.Constant(I32, 0))
        for lane in range(1, self.width):
            out = self.b.or_(out, self.b.extract_element(cond, ir.Constant(I32, lane)))
        return out

    # intrinsics
    def intrinsic(self, name: str, *args):
        suffix = f"v{self.width}{self.fmt.name}" if self.width else self.fmt.name
        full = f"llvm.{name}.{suffix}"
        fn = self.module.globals.get(full)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(self.fty, [self.fty] * len(args)), full)
        return self.b.call(fn, list(args))

    def fabs(self, a):
        return self.intrinsic("fabs", a)

    def fma(self, a, c, d):
        """a·c + d rounded once where the target fuses (`Features.contract`: LLVM leaves
        a product with two uses unfused, so this asks for the fma itself), else twice."""
        if not self.features.contract:
            return self.add(self.mul(a, c), d)
        return self.intrinsic("fma", self.f(a), self.f(c), self.f(d))

    def floor(self, a):
        return self.intrinsic("floor", a)

    def round(self, a):
        """The nearest integer (halves up), as a float."""
        return self.floor(self.add(a, 0.5))

    # bits
    def bits(self, a):
        return self.b.bitcast(a, self.ity)

    def from_bits(self, a):
        return self.b.bitcast(a, self.fty)

    def to_int(self, a):
        return self.b.fptosi(a, self.ity)

    def to_float(self, a):
        return self.b.sitofp(a, self.fty)

    def signbit(self, a):
        return self.b.icmp_signed("<", self.bits(a), self.i(0))

    def copysign(self, mag, sign):
        fmt = self.fmt
        keep = self.b.and_(self.bits(mag), self.i(~fmt.sign))
        return self.from_bits(self.b.or_(keep, self.b.and_(self.bits(sign), self.i(fmt.sign))))

    def clear_low(self, a, n: int):
        """`a` with its lowest `n` mantissa bits zeroed (an exact high part)."""
        return self.from_bits(self.b.and_(self.bits(a), self.i(~((1 << n) - 1))))

    def pow2(self, k):
        """2^k for an integer k (format's int type) in the normal exponent range."""
        biased = self.b.add(k, self.i(self.fmt.bias))
        return self.from_bits(self.b.shl(biased, self.i(self.fmt.mantissa)))

    def ldexp(self, y, n):
        """y·2^n for an integral float n, in two halves so that 2^n itself need not be
        representable (n up to the format's max exponent + 1, down to its subnormals)."""
        k = self.to_int(n)
        half = self.b.ashr(k, self.i(1))
        return self.mul(self.mul(y, self.pow2(half)), self.pow2(self.b.sub(k, half)))


def finish_special(o: Ops, x, y, zero_keeps_sign: bool = False):
    """NaN in gives NaN out (and ±0 gives ±0 for the odd functions)."""
    if zero_keeps_sign:
        y = o.select(o.eq(x, 0.0), x, y)
    return o.select(o.isnan(x), x, y)
