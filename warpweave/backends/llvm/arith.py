"""Expressions and arithmetic in LLVM IR (a mixin of `KernelCodegen`): constants,
index expressions, compute ops, combiners and casts (bfloat16 included)."""
from __future__ import annotations

from llvmlite import ir

from ...errors import CompileError
from ...ir import dtypes as dt
from ...ir import expr as ex
from ...ir.gir import Node
from .irtypes import I1, I16, I32, lane_mask, reg_type


class Arithmetic:
    """Register values. Mixed into `KernelCodegen`, whose builder `b`, kernel `k`,
    `target`, vector `width` and variable values `env` it uses."""

    # ------------------------------------------------------------------ values
    def constant(self, value, d: dt.DType) -> ir.Value:
        if d == dt.bfloat16:
            import ml_dtypes
            import numpy as np

            bits = int(np.asarray(value, dtype=ml_dtypes.bfloat16).view(np.uint16))
            return ir.Constant(I16, bits)
        if d.is_bool:
            return ir.Constant(I1, int(bool(value)))
        return ir.Constant(reg_type(d), value)

    def splat(self, v: ir.Value, ty: ir.Type) -> ir.Value:
        if not isinstance(ty, ir.VectorType) or isinstance(v.type, ir.VectorType):
            return v
        if isinstance(v, ir.Constant):
            return ir.Constant(ty, [v.constant] * ty.count)
        undef = ir.Constant(ty, ir.Undefined)
        one = self.b.insert_element(undef, v, ir.Constant(I32, 0))
        return self.b.shuffle_vector(one, undef, ir.Constant(ir.VectorType(I32, ty.count), [0] * ty.count))

    def vec(self, v: ir.Value) -> ir.Value:
        """`v` widened to the current vector width (unchanged outside vector scopes)."""
        if self.width is None or isinstance(v.type, ir.VectorType):
            return v
        return self.splat(v, ir.VectorType(v.type, self.width))

    def index(self, e: ex.Expr) -> ir.Value:
        """An index or predicate expression of the scope variables."""
        memo: dict[ex.Expr, ir.Value] = {}
        b = self.b
        for n in ex.postorder(e):
            c = [memo[x] for x in n.children]
            if len(c) > 1 and any(isinstance(x.type, ir.VectorType) for x in c):
                c = [self.vec(x) for x in c]
            if isinstance(n, ex.Var):
                v = self.env[n.name]
            elif isinstance(n, ex.Const):
                v = ir.Constant(I1 if n.dtype.is_bool else reg_type(n.dtype), int(n.value))
            elif isinstance(n, ex.Binary) and n.op in _INT_BINOPS:
                v = getattr(b, _INT_BINOPS[n.op])(c[0], c[1])
            elif isinstance(n, ex.Binary) and n.op in _ICMP:
                v = b.icmp_signed(_ICMP[n.op], c[0], c[1])
            elif isinstance(n, ex.Binary) and n.op in ("max", "min"):
                v = b.select(b.icmp_signed(">" if n.op == "max" else "<", c[0], c[1]), c[0], c[1])
            elif isinstance(n, ex.Select):
                v = b.select(c[0], c[1], c[2])
            elif isinstance(n, ex.Unary) and n.op == "not":
                v = b.not_(c[0])
            elif isinstance(n, ex.Unary) and n.op == "neg":
                v = b.neg(c[0])
            else:
                raise CompileError(f"{ex.to_text(n)} is not an index expression")
            memo[n] = v
        return memo[e]

    # ------------------------------------------------------------------ arithmetic
    def compute(self, op: str, args: list[ir.Value], n: Node) -> ir.Value:
        b = self.b
        if any(isinstance(a.type, ir.VectorType) for a in args):
            args = [self.vec(a) for a in args]
        d = n.dtype
        if op == "cast":
            src = self.k.node(self.k.operands(n.id)[0].src).dtype
            return self.cast(args[0], src, d)
        if op == "select":
            return b.select(*args)
        src = self.k.node(self.k.operands(n.id)[0].src).dtype
        if op in ex.COMPARE_OPS:
            if src.is_float:
                return b.fcmp_unordered("!=", *args) if op == "ne" else b.fcmp_ordered(_ICMP[op], *args)
            cmp = b.icmp_signed if src.is_int else b.icmp_unsigned
            return cmp(_ICMP[op], *args)
        if op in ("and", "or"):
            return getattr(b, op + "_")(*args)
        if op == "not":
            return b.not_(args[0])
        if d.is_bool and op in ("max", "min"):  # i1 is signed in LLVM: true < false
            return (b.or_ if op == "max" else b.and_)(*args)
        if d.is_float:
            return self._float_op(op, args, d)
        if op in ("max", "min", "abs", "neg") or op in _INT_BINOPS:
            return self._int_op(op, args, d)
        raise CompileError(f"{n.id}: {op} on {d} is not supported")

    def _float_op(self, op: str, args, d: dt.DType) -> ir.Value:
        b = self.b
        if op == "fmod":  # C's fmod, exact (the CPU calls fmod/fmodf; NVPTX expands frem)
            return b.frem(*args)
        if op in _FLOAT_BINOPS:
            inst = getattr(b, _FLOAT_BINOPS[op])(*args)
            if op == "div" and d == dt.float32 and self.target.approximate_division:
                inst.flags.extend(["arcp", "afn"])
            elif op != "div" and self.target.contract:
                inst.flags.append("contract")
            return inst
        if op == "neg":
            return b.fneg(args[0])
        if op in ("max", "min"):  # NaN-propagating, like numpy's maximum/minimum
            x, y = args
            better = b.fcmp_ordered(">" if op == "max" else "<", x, y)
            return b.select(b.or_(better, b.fcmp_unordered("uno", x, x)), x, y)
        one = self.vec(ir.Constant(reg_type(d), 1.0))
        if op == "rsqrt":
            return self._float_op("div", [one, self.target.math(self, "sqrt", args, d)], d)
        if op == "sigmoid":
            e = self.target.math(self, "exp", [b.fneg(args[0])], d)
            return self._float_op("div", [one, b.fadd(one, e)], d)
        return self.target.math(self, op, args, d)

    def _int_op(self, op: str, args, d: dt.DType) -> ir.Value:
        b = self.b
        if op in ("max", "min"):
            cmp = b.icmp_signed(">" if op == "max" else "<", *args)
            return b.select(cmp, *args)
        if op == "neg":
            return b.neg(args[0])
        if op == "abs":
            neg = b.icmp_signed("<", args[0], ir.Constant(args[0].type, None))
            return b.select(neg, b.neg(args[0]), args[0])
        return getattr(b, _INT_BINOPS[op])(*args)

    def combine(self, combiner: str, a: ir.Value, c: ir.Value, d: dt.DType) -> ir.Value:
        op = {"sum": "add", "prod": "mul", "max": "max", "min": "min"}[combiner]
        if d.is_bool:
            return (self.b.or_ if combiner in ("max", "sum") else self.b.and_)(a, c)
        if d.is_float:
            return self._float_op(op, [a, c], d)
        return self._int_op(op, [a, c], d)

    def cast(self, v: ir.Value, src: dt.DType, dst: dt.DType) -> ir.Value:
        b = self.b
        if src == dst:
            return v
        width = v.type.count if isinstance(v.type, ir.VectorType) else None

        def ty(t):
            return ir.VectorType(t, width) if width else t

        f32 = ir.FloatType()
        if src == dt.bfloat16:
            return self.cast(b.bitcast(self._bf16_bits_to_f32(v, width), ty(f32)), dt.float32, dst)
        if dst == dt.bfloat16:
            f = self.cast(v, src, dt.float32)
            native = self.target.round_to_bfloat16(self, f)
            return native if native is not None else self._f32_to_bf16(f, ty)
        if src.is_bool:
            if dst.is_float:
                return b.uitofp(v, ty(reg_type(dst)))
            return b.zext(v, ty(reg_type(dst)))
        if dst.is_bool:
            zero = ir.Constant(v.type, None)
            return b.fcmp_unordered("!=", v, zero) if src.is_float else b.icmp_unsigned("!=", v, zero)
        if src == dt.float64 and dst == dt.float16:
            # not one fptrunc: without a native double→half instruction (AVX512-FP16)
            # LLVM calls __truncdfhf2, which the JIT does not resolve (a call to
            # address 0: the process died). Round to odd to float32, then to nearest
            # even: correctly rounded, as float32 keeps more than 11 + 2 bits
            return b.fptrunc(self._f64_to_f32_odd(v, ty), ty(reg_type(dst)))
        if src.is_float and dst.is_float:
            return (b.fpext if dst.bits > src.bits else b.fptrunc)(v, ty(reg_type(dst)))
        if src.is_int and dst.is_int:
            return (b.sext if dst.bits > src.bits else b.trunc)(v, ty(reg_type(dst)))
        if src.is_int:
            return b.sitofp(v, ty(reg_type(dst)))
        return b.fptosi(v, ty(reg_type(dst)))

    def _f64_to_f32_odd(self, v: ir.Value, ty) -> ir.Value:
        """A double rounded to float32 to odd: the nearest-even result, moved one ulp
        towards `v` where it is inexact and even (NaN and infinities as they are;
        values beyond float32's range become its largest finite value, which still
        rounds to infinity in any narrower format)."""
        b = self.b
        f32 = ir.FloatType()
        near = b.fptrunc(v, ty(f32))
        bits = b.bitcast(near, ty(I32))

        def c(x):
            return self.vec(ir.Constant(I32, x)) if isinstance(v.type, ir.VectorType) else ir.Constant(I32, x)

        wide = b.fpext(near, v.type)
        inexact = b.fcmp_ordered("!=", wide, v)  # false for NaN
        even = b.icmp_unsigned("==", b.and_(bits, c(1)), c(0))
        away = b.fcmp_ordered(">", self._fabs(wide), self._fabs(v))  # |near| > |v|: step down in magnitude
        moved = b.select(away, b.sub(bits, c(1)), b.add(bits, c(1)))
        return b.bitcast(b.select(b.and_(inexact, even), moved, bits), ty(f32))

    def _fabs(self, v: ir.Value) -> ir.Value:
        """|v| through llvm.fabs (any float type, scalar or vector)."""
        t = v.type
        scalar = t.element if isinstance(t, ir.VectorType) else t
        suffix = {"float": "f32", "double": "f64", "half": "f16"}[str(scalar)]
        name = f"llvm.fabs.{'v%d' % t.count if isinstance(t, ir.VectorType) else ''}{suffix}"
        module = self.module
        fn = module.globals.get(name) or ir.Function(module, ir.FunctionType(t, [t]), name)
        return self.b.call(fn, [v])

    def _bf16_bits_to_f32(self, v: ir.Value, width: int | None) -> ir.Value:
        """bfloat16 bits widened to float32 bits (the high half). An even number of lanes
        is read as 32-bit words, two lanes each: the low lane is the word shifted up, the
        high lane the word with its low half cleared (one instruction per lane, where
        widening each 16-bit lane first takes two)."""
        b = self.b
        if not width or width % 2:
            wide = b.zext(v, ir.VectorType(I32, width) if width else I32)
            return b.shl(wide, self.vec(ir.Constant(I32, 16)) if width else ir.Constant(I32, 16))
        words = b.bitcast(v, ir.VectorType(I32, width // 2))
        low = b.shl(words, ir.Constant(words.type, [16] * (width // 2)))
        high = b.and_(words, ir.Constant(words.type, [0xFFFF0000 - (1 << 32)] * (width // 2)))
        return b.shuffle_vector(low, high, lane_mask([k // 2 + (width // 2) * (k % 2) for k in range(width)]))

    def _f32_to_bf16(self, f: ir.Value, ty) -> ir.Value:
        """Round a float32 to bfloat16 bits, to nearest even; NaN stays a quiet NaN."""
        b = self.b

        def c(x):
            return self.vec(ir.Constant(I32, x)) if isinstance(f.type, ir.VectorType) else ir.Constant(I32, x)

        bits = b.bitcast(f, ty(I32))
        lsb = b.and_(b.lshr(bits, c(16)), c(1))
        rounded = b.lshr(b.add(bits, b.add(c(0x7FFF), lsb)), c(16))
        nan = b.fcmp_unordered("uno", f, f)
        quiet = b.or_(b.lshr(bits, c(16)), c(0x40))
        return b.trunc(b.select(nan, quiet, rounded), ty(I16))


_INT_BINOPS = {"add": "add", "sub": "sub", "mul": "mul", "floordiv": "sdiv", "mod": "srem",
               "and": "and_", "or": "or_"}
_FLOAT_BINOPS = {"add": "fadd", "sub": "fsub", "mul": "fmul", "div": "fdiv"}
_ICMP = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}
