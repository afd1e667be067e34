"""sin and cos as LLVM IR without calls (see `mathlib` for the conventions):
x = n·π/2 + r, Cody–Waite reduction in float32 and in float64 while exact, Payne–Hanek
with the bits of 2/π beyond; fdlibm's kernels (float64) and Cephes' (float32) on r."""
from __future__ import annotations

from types import SimpleNamespace as Table

from llvmlite import ir

from .mathops import F64, FLOAT32, FLOAT64, I32, I64, NAN, PLAIN, Features, Ops


# sin, cos: x = n·π/2 + r, |r| ≤ π/4.
SINCOS = {
    # Three-part Cody–Waite π/2 and Cephes sinf/cosf polynomials: accurate while
    # |x| stays below about 1e5.
    FLOAT32: Table(pio2=[1.5703125, 4.837512969970703125e-4, 7.54978995489188216e-8],
                   sin=[-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1],
                   cos=[2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2]),
    # π/2 in four 22-bit pieces (n·piece exact while |n| < 2^31) and a 53-bit tail,
    # and fdlibm k_sin.c / k_cos.c on r = r_hi + r_lo.
    FLOAT64: Table(pio2=[float.fromhex("0x1.921fb8p+0"), float.fromhex("-0x1.5dde98p-23"),
                         float.fromhex("0x1.846988p-48"), float.fromhex("0x1.8cc518p-72"),
                         float.fromhex("-0x1.fc8f8cbb5bf6cp-97")],
                   exact_below=2.0 ** 31 * 1.5707963267948966,
                   sin=[1.58969099521155010221e-10, -2.50507602534068634195e-08,
                        2.75573137070700676789e-06, -1.98412698298579493134e-04,
                        8.33333333332248946124e-03, -1.66666666666666324348e-01],
                   cos=[-1.13596475577881948265e-11, 2.08757232129817482790e-09,
                        -2.75573143513906633035e-07, 2.48015872894767294178e-05,
                        -1.38888888888741095749e-03, 4.16666666666666019037e-02]),
}
INV_PIO2 = 6.36619772367581382433e-01

# Payne–Hanek: 2/π = Σ_j C_j·2^(−24(j+1)), C_j the 24-bit chunks below (fdlibm's ipio2),
# enough for every double exponent; the table holds two zeros and then C_0, C_1, ….
TWO_OVER_PI_24 = [
    0xA2F983, 0x6E4E44, 0x1529FC, 0x2757D1, 0xF534DD, 0xC0DB62, 0x95993C, 0x439041, 0xFE5163,
    0xABDEBB, 0xC561B7, 0x246E3A, 0x424DD2, 0xE00649, 0x2EEA09, 0xD1921C, 0xFE1DEB, 0x1CB129,
    0xA73EE8, 0x8235F5, 0x2EBB44, 0x84E99C, 0x7026B4, 0x5F7E41, 0x3991D6, 0x398353, 0x39F49C,
    0x845F8B, 0xBDF928, 0x3B1FF8, 0x97FFDE, 0x05980F, 0xEF2F11, 0x8B5A0A, 0x6D1F6D, 0x367ECF,
    0x27CB09, 0xB74F46, 0x3F669E, 0x5FEA2D, 0x7527BA, 0xC7EBE5, 0xF17B3D, 0x0739F7, 0x8A5292,
    0xEA6BFB, 0x5FB11F, 0x8D5D08, 0x560330, 0x46FC7B,
]
PIO2_26 = float.fromhex("0x1.921fb58p+0")  # π/2 to 26 bits
PIO2_26_TAIL = float.fromhex("-0x1.dde973dcb3b3ap-27")  # π/2 − PIO2_26


def _payne_hanek(o: Ops, ax):
    """n and r = r_hi + r_lo with ax = n·π/2 + r, for a double ax ≥ 2^30 (any finite one).

    ax = M·2^(e−52) with M = X0·2^48 + X1·2^24 + X2, and 2/π = Σ C_j·2^(−24(j+1)), so
    ax·2/π = Σ X_i·C_j·2^(e−28−24(i+j)). Group s = i + j is an exact double below
    3·2^48; groups of weight ≥ 4 do not matter for n mod 4 and are skipped, the next
    seven are summed (mod 4) in double-double, which leaves r good to about 2^-100."""
    b = o.b
    bits = o.bits(ax)
    e = b.sub(b.lshr(bits, o.i(52)), o.i(1023))
    m = b.or_(b.and_(bits, o.i((1 << 52) - 1)), o.i(1 << 52))
    x = [o.to_float(b.lshr(m, o.i(48))), o.to_float(b.and_(b.lshr(m, o.i(24)), o.i(0xFFFFFF))),
         o.to_float(b.and_(m, o.i(0xFFFFFF)))]
    # first group with weight 2^e0 ≤ 2: s0 = ceil((e − 29)/24), e0 = e − 28 − 24·s0
    s0 = b.select(b.icmp_signed(">", e, o.i(29)), b.sdiv(b.sub(e, o.i(6)), o.i(24)), o.i(0))
    e0 = b.sub(b.sub(e, o.i(28)), b.mul(s0, o.i(24)))
    c = [_table_lookup(o, b.add(s0, o.i(k))) for k in range(9)]  # c[k] = C_{s0+k−2}
    hi = lo = None
    for g in range(7):
        group = o.add(o.add(o.mul(x[0], c[g + 2]), o.mul(x[1], c[g + 1])), o.mul(x[2], c[g]))
        group = o.mul(group, o.pow2(b.sub(e0, o.i(24 * g))))
        if g < 3:
            group = o.sub(group, o.mul(o.floor(o.mul(group, 0.25)), 4.0))
        if hi is None:
            hi, lo = group, o.f(0.0)
        else:
            hi, err = o.two_sum(hi, group)
            lo = o.add(lo, err)
    n = o.round(hi)
    f, f_lo = o.two_sum(o.sub(hi, n), lo)
    # r = (f + f_lo)·π/2 with f = f1 + f2, f1 of 26 bits: f1·PIO2_26 and f2·PIO2_26 are exact
    f1 = o.clear_low(f, 27)
    head = o.mul(f1, PIO2_26)
    rest = o.add(o.add(o.mul(o.sub(f, f1), PIO2_26), o.mul(f, PIO2_26_TAIL)),
                 o.mul(f_lo, 1.5707963267948966))
    r_hi = o.add(head, rest)
    return n, r_hi, o.sub(rest, o.sub(r_hi, head))


def _table_lookup(o: Ops, index):
    """TWO_OVER_PI_24 chunk number index − 2 (0 for −2, −1), per lane."""
    name = "warpweave.mathlib.two_over_pi"
    table = o.module.globals.get(name)
    values = [0.0, 0.0] + [float(c) for c in TWO_OVER_PI_24]
    ty = ir.ArrayType(F64, len(values))
    if table is None:
        table = ir.GlobalVariable(o.module, ty, name)
        table.global_constant = True
        table.linkage = "internal"
        table.initializer = ir.Constant(ty, values)
    b = o.b

    def load(i):
        ptr = b.gep(table, [ir.Constant(I64, 0), i], inbounds=True, source_etype=ty)
        return b.load(ptr, typ=F64)

    if not o.width:
        return load(index)
    out = ir.Constant(o.fty, ir.Undefined)
    for lane in range(o.width):
        li = ir.Constant(I32, lane)
        out = b.insert_element(out, load(b.extract_element(index, li)), li)
    return out


def _reduce_pio2(o: Ops, x):
    """(n, r_hi, r_lo) with x = n·π/2 + r_hi + r_lo, |r| ≲ π/4 (r_lo is None for float32)."""
    b = o.b
    c = SINCOS[o.fmt]
    n = o.round(o.mul(x, INV_PIO2))
    if not o.double:
        r = x
        for part in c.pio2:
            r = o.sub(r, o.mul(n, part))
        return n, r, None
    # Cody–Waite in double-double: every n·part is exact while |n| < 2^31, the first
    # difference by Sterbenz, the others through two_sum.
    p1, p2, p3, p4, tail = c.pio2
    hi, lo = o.two_sum(o.sub(x, o.mul(n, p1)), o.mul(n, -p2))
    for part in (p3, p4):
        hi, err = o.two_sum(hi, o.mul(n, -part))
        lo = o.add(lo, err)
    r_hi, r_lo = o.two_sum(hi, o.sub(lo, o.mul(n, tail)))
    # beyond 2^31·π/2, Payne–Hanek, only when some lane needs it
    big = o.ge(o.fabs(x), c.exact_below)
    start = b.block
    with b.if_then(o.any(big), likely=False):
        ax = o.select(big, o.fabs(x), c.exact_below)
        pn, ph, pl = _payne_hanek(o, ax)
        negative = o.lt(x, 0.0)
        merged = [o.select(big, o.select(negative, o.neg(new), new), old)
                  for new, old in ((pn, n), (ph, r_hi), (pl, r_lo))]
        slow = b.block
    out = []
    for new, old in zip(merged, (n, r_hi, r_lo)):
        phi = b.phi(o.fty)
        phi.add_incoming(old, start)
        phi.add_incoming(new, slow)
        out.append(phi)
    return tuple(out)


def _sin_cos(b: ir.IRBuilder, module: ir.Module, x: ir.Value, cosine: bool,
             features: Features = PLAIN) -> ir.Value:
    """x = n·π/2 + r, then the quadrant n mod 4 picks ±sin r or ±cos r."""
    o = Ops(b, module, x, features=features)
    c = SINCOS[o.fmt]
    finite = o.isfinite(x)
    n, r, r_lo = _reduce_pio2(o, o.select(finite, x, 0.0))
    z = o.mul(r, r)
    if not o.double:
        sin_r = o.add(o.mul(o.mul(o.poly(z, c.sin), z), r), r)
        cos_r = o.add(o.sub(1.0, o.mul(z, 0.5)), o.mul(o.mul(z, z), o.poly(z, c.cos)))
    else:
        # fdlibm k_sin.c: sin(r + r_lo) = r + (S1·r³ + (r²·(R·r³ − r_lo/2) + r_lo))
        s1, s = c.sin[-1], c.sin[:-1]
        v = o.mul(z, r)
        poly = o.poly(z, s)
        sin_r = o.sub(r, o.sub(o.sub(o.mul(z, o.sub(o.mul(r_lo, 0.5), o.mul(v, poly))), r_lo),
                               o.mul(v, s1)))
        # fdlibm k_cos.c: cos(r + r_lo) = w + (((1 − w) − r²/2) + (r²·R − r·r_lo)), w = 1 − r²/2
        rc = o.mul(z, o.poly(z, c.cos))
        hz = o.mul(z, 0.5)
        w = o.sub(1.0, hz)
        cos_r = o.add(w, o.add(o.sub(o.sub(1.0, w), hz), o.sub(o.mul(z, rc), o.mul(r, r_lo))))
    q = o.to_int(o.sub(n, o.mul(o.floor(o.mul(n, 0.25)), 4.0)))  # n mod 4, exact
    q = b.and_(b.add(q, o.i(1 if cosine else 0)), o.i(3))
    odd = b.icmp_signed("!=", b.and_(q, o.i(1)), o.i(0))
    negative = b.icmp_signed("!=", b.and_(q, o.i(2)), o.i(0))
    y = o.select(odd, cos_r, sin_r)
    y = o.select(negative, o.neg(y), y)
    y = o.select(finite, y, NAN)
    return y if cosine else o.select(o.eq(x, 0.0), x, y)


def sin(b: ir.IRBuilder, module: ir.Module, x: ir.Value, features: Features = PLAIN) -> ir.Value:
    return _sin_cos(b, module, x, cosine=False, features=features)


def cos(b: ir.IRBuilder, module: ir.Module, x: ir.Value, features: Features = PLAIN) -> ir.Value:
    return _sin_cos(b, module, x, cosine=True, features=features)
