"""Loads and stores of GIR move nodes in LLVM IR (a mixin of `KernelCodegen`).

Memory accesses in a vector scope of E lanes take one of three forms
(`_access_plan`): "vector" — the offset has stride 1 in the lane variable and the
predicate does not depend on it: one E-lane access; "runs" — for the largest power
of two r < E dividing E such that, writing the lane as a*r + b (a < E/r, b < r),
the simplified offset has stride 1 in b and the predicate does not depend on b
(conjuncts `x < y`, `x <= y`, ... whose threshold falls on a multiple of r count
as independent of b): E/r accesses of r lanes, each at its own base offset under
its own predicate, assembled with (loads) or split by (stores) shufflevector, and
further split into pieces of at most `Target.max_access_bytes`; "gather" —
lane by lane, otherwise.

An access with data indices (`gir.data_indices`) binds each to its operand, clamped
into [0, extent) so that no access leaves the buffer whatever the data hold (a
store whose index is out of range writes nothing). An operand that is one value
for all lanes (defined outside the vector scope, as an embedding's row index is
for the lanes along the row) is a constant of the lane variable, so the plan above
applies unchanged; one that differs per lane makes the access lane by lane. A
combining store (`combine="add"`) adds with the target's atomic add where threads
run at once (`Target.atomic_adds`), else with a plain read-modify-write (lane by
lane unless its lanes are contiguous).
"""
from __future__ import annotations

from llvmlite import ir

from ...errors import CompileError
from ...ir import dtypes as dt
from ...ir import expr as ex
from ...ir import simplify as sx
from ...ir.gir import Node, data_indices, first_data_slot
from .irtypes import I32, I64, I8, lane_mask, mem_type, reg_type


class MemoryAccess:
    """Move nodes to and from global and shared memory. Mixed into `KernelCodegen`,
    whose builder `b`, kernel `k`, `target`, vector `width` and scope `ranges` it uses."""

    def _pointer(self, name: str) -> ir.Value:
        if name in self.buffers:
            return self.buffers[name]
        return self.target.shared_pointer(self, name)

    def _buffer_dtype(self, name: str) -> dt.DType:
        for p in (*self.k.params, *self.k.shared):
            if p.name == name:
                return p.dtype
        raise CompileError(f"kernel {self.k.name} has no buffer {name!r}")

    def _to_reg(self, v: ir.Value, d: dt.DType) -> ir.Value:
        if d.is_bool:
            zero = ir.Constant(v.type, None)
            return self.b.icmp_unsigned("!=", v, zero)
        return v

    def _to_mem(self, v: ir.Value, d: dt.DType) -> ir.Value:
        if d.is_bool:
            ty = ir.VectorType(I8, v.type.count) if isinstance(v.type, ir.VectorType) else I8
            return self.b.zext(v, ty)
        return v

    def _addr(self, ptr: ir.Value, offset: ir.Value, elem: ir.Type) -> ir.Value:
        return self.b.gep(ptr, [offset], inbounds=True, source_etype=elem)

    def _bind_data(self, n: Node) -> tuple[bool, ir.Value | None]:
        """Bind an access's data indices in `env`, each clamped into [0, extent):
        (whether one of them differs between vector lanes, where all of them lie in
        range — an i1 or a vector of them, None without data indices)."""
        per_lane, inside = False, None
        first = first_data_slot(n)
        for e in self.k.operands(n.id):
            if e.slot < first:
                continue
            var, extent = data_indices(n)[e.slot - first]
            v = self.values[e.src]
            src = self.k.node(e.src).dtype
            if src != dt.INDEX:
                v = self.cast(v, src, dt.INDEX)
            per_lane |= isinstance(v.type, ir.VectorType)
            low, high = ir.Constant(I64, 0), ir.Constant(I64, extent - 1)
            if isinstance(v.type, ir.VectorType):
                low, high = self.splat(low, v.type), self.splat(high, v.type)
            under, over = self.b.icmp_signed("<", v, low), self.b.icmp_signed(">", v, high)
            ok = self.b.not_(self.b.or_(under, over))
            inside = self._and(inside, ok)
            self.env[var] = self.b.select(over, high, self.b.select(under, low, v))
        return per_lane, inside

    def _load(self, n: Node) -> ir.Value:
        d = self._buffer_dtype(n.attr("buffer"))
        ptr, mty = self._pointer(n.attr("buffer")), mem_type(d)
        offset, pred = n.attr("offset"), n.attr("pred")
        other = self.constant(n.attr("other").value, d)
        b = self.b
        if self._bind_data(n)[0] and self._vector_var is not None:
            mode, pieces = "gather", None
        else:
            mode, pieces = self._access_plan(offset, pred, d)
        hint = n.attr("l2_prefetch")
        if mode == "runs":
            return self._load_runs(ptr, d, other, pieces, hint)
        if mode == "vector":
            base_expr = ex.substitute(offset, {self._vector_var: ex.Const(0, dt.INDEX)})
            base = self.index(base_expr)
            if pred is not None:
                base = b.select(self.index(pred), base, ir.Constant(I64, 0))
            vty = ir.VectorType(mty, self.width)
            v = self._global_load(ptr, base, vty, self._alignment(base_expr, d), hint)
            v = self._to_reg(v, d)
            if pred is not None:
                v = b.select(self.index(pred), v, self.vec(other))
            return v
        if mode == "scalar":
            off = self.index(offset)
            if pred is not None:
                p = self.index(pred)
                off = b.select(p, off, ir.Constant(I64, 0))
            v = self._to_reg(self._global_load(ptr, off, mty, d.itemsize, hint), d)
            if pred is not None:
                v = b.select(p, v, other)
            return v
        offs = self.vec(self.index(offset))
        preds = self.vec(self.index(pred)) if pred is not None else None
        out = ir.Constant(ir.VectorType(reg_type(d), self.width), ir.Undefined)
        for lane in range(self.width):
            li = ir.Constant(I32, lane)
            off = b.extract_element(offs, li)
            if preds is not None:
                off = b.select(b.extract_element(preds, li), off, ir.Constant(I64, 0))
            out = b.insert_element(out, self._to_reg(b.load(self._addr(ptr, off, mty), typ=mty), d), li)
        if preds is not None:
            out = b.select(preds, out, self.vec(other))
        return out

    def _load_runs(self, ptr: ir.Value, d: dt.DType, other: ir.Value, pieces: list,
                   hint: int | None) -> ir.Value:
        """A vector load as `pieces` (start lane, lanes, base offset, predicate) of
        contiguous lanes, assembled into one `width`-lane vector."""
        b, mty = self.b, mem_type(d)
        parts = []
        for start, lanes, base_expr, p in pieces:
            rty = ir.VectorType(reg_type(d), lanes)
            if _is_false(p):
                parts.append((start, self.splat(other, rty)))
                continue
            cond = None if p is None or _is_true(p) else self.index(p)
            base = self.index(base_expr)
            if cond is not None:
                base = b.select(cond, base, ir.Constant(I64, 0))
            v = self._global_load(ptr, base, ir.VectorType(mty, lanes),
                                  self._alignment(base_expr, d, lanes), hint)
            v = self._to_reg(v, d)
            if cond is not None:
                v = b.select(cond, v, self.splat(other, rty))
            parts.append((start, v))
        return self._assemble(parts)

    def _global_load(self, ptr: ir.Value, offset: ir.Value, ty: ir.Type, align: int | None,
                     hint: int | None) -> ir.Value:
        """A load at element `offset` of `ptr`: through the target where the load carries
        an L2 prefetch hint (only global loads of read-only buffers do), else plain."""
        address = self._addr(ptr, offset, ty.element if isinstance(ty, ir.VectorType) else ty)
        if hint is None:
            return self.b.load(address, typ=ty, align=align)
        return self.target.global_load(self, address, ty, align, hint)

    def _assemble(self, parts: list[tuple[int, ir.Value]]) -> ir.Value:
        """One `width`-lane vector from vectors holding lanes [start, start + count)."""
        b, width = self.b, self.width
        out = None
        for start, v in parts:
            n = v.type.count
            if n == width:
                return v
            lanes = range(start, start + n)
            wide = b.shuffle_vector(v, v, lane_mask([i - start if i in lanes else 0
                                                  for i in range(width)]))
            out = wide if out is None else b.shuffle_vector(
                out, wide, lane_mask([width + i if i in lanes else i for i in range(width)]))
        return out

    def _split(self, value: ir.Value, start: int, lanes: int) -> ir.Value:
        """Lanes [start, start + lanes) of a vector."""
        if lanes == value.type.count:
            return value
        return self.b.shuffle_vector(value, value, lane_mask(list(range(start, start + lanes))))

    def _alignment(self, base: ex.Expr, d: dt.DType, lanes: int | None = None) -> int:
        """The alignment in bytes of a `lanes`-lane access (default: the vector width)
        at element offset `base`."""
        whole = (lanes or self.width) * d.itemsize
        if self.target.buffer_alignment < 2 or whole & (whole - 1):
            return d.itemsize
        cap = min(whole, self.target.buffer_alignment)
        return max(d.itemsize, min(cap, sx.divisor(base, cap) * d.itemsize))

    def _access_plan(self, offset: ex.Expr, pred: ex.Expr | None,
                     d: dt.DType | None = None) -> tuple[str, list | None]:
        """(mode, pieces). mode: scalar (outside vector scopes or lane-invariant), vector
        (contiguous lanes, lane-invariant predicate), runs (contiguous runs of lanes,
        run-invariant predicates: see the module docstring) or gather (anything else);
        pieces: for "runs", the accesses as (first lane, lanes, base offset, predicate or
        None) in lane order; None for the other modes."""
        v = self._vector_var
        if v is None:
            return "scalar", None
        lane_pred = pred is not None and v in ex.free_vars(pred)
        if v not in ex.free_vars(offset) and not lane_pred:
            return "scalar", None
        if not lane_pred and sx.stride(offset, v, self.ranges) == 1:
            return "vector", None
        key = (offset, pred, v, self.width, d.itemsize if d is not None else 1)
        if key not in self._plans:
            pieces = None
            r = 1 << max(0, (self.width - 1).bit_length() - 1)  # largest power of two < width
            while r >= 2 and pieces is None:
                if self.width % r == 0:
                    pieces = self._runs(offset, pred, r, d.itemsize if d is not None else 1)
                r //= 2
            self._plans[key] = ("runs", pieces) if pieces is not None else ("gather", None)
        return self._plans[key]

    def _runs(self, offset: ex.Expr, pred: ex.Expr | None, r: int, itemsize: int) -> list | None:
        """The pieces of a "runs" access with runs of `r` lanes, or None."""
        v, width = self._vector_var, self.width
        a_name, b_name = f"{v}$run", f"{v}$lane"
        ranges = {k: rg for k, rg in self.ranges.items() if k != v}
        ranges[a_name], ranges[b_name] = (0, width // r - 1), (0, r - 1)
        lane = ex.Var(a_name) * r + ex.Var(b_name)
        off = sx.simplify(ex.substitute(offset, {v: lane}), ranges)
        if sx.stride(off, b_name, ranges) != 1:
            return None
        p = None
        if pred is not None:
            p = sx.simplify(ex.substitute(pred, {v: lane}), ranges)
            if b_name in ex.free_vars(p):
                p = _uniform_over_run(p, b_name, r, ranges)
                if p is None:
                    return None
        piece = r
        cap = self.target.max_access_bytes
        while cap and piece > 1 and piece * itemsize > cap:
            piece //= 2
        index = dt.INDEX
        pieces = []
        for k in range(width // r):
            pk = None if p is None else sx.simplify(
                ex.substitute(p, {a_name: ex.Const(k, index)}), ranges)
            for q in range(0, r, piece):
                base = sx.simplify(ex.substitute(off, {a_name: ex.Const(k, index),
                                                       b_name: ex.Const(q, index)}), ranges)
                pieces.append((k * r + q, piece, base, pk))
        return pieces

    def _write(self, value: ir.Value, addr: ir.Value, d: dt.DType, align: int, combine: bool) -> None:
        """Store `value` (a scalar or contiguous lanes) at `addr`, or add it there."""
        b = self.b
        if not combine:
            b.store(self._to_mem(value, d), addr, align=align)
            return
        if self.target.atomic_adds:
            lanes = value.type.count if isinstance(value.type, ir.VectorType) else None
            for lane in range(lanes or 1):
                v = value if lanes is None else b.extract_element(value, ir.Constant(I32, lane))
                at = addr if lanes is None else b.gep(addr, [ir.Constant(I64, lane)], inbounds=True,
                                                      source_etype=mem_type(d))
                b.atomic_rmw("fadd" if d.is_float else "add", at, v, "monotonic")
            return
        old = b.load(addr, typ=value.type, align=align)
        b.store(b.fadd(old, value) if d.is_float else b.add(old, value), addr, align=align)

    def _guarded(self, cond: ir.Value | None, emit) -> None:
        if cond is None:
            emit()
        else:
            with self.b.if_then(cond):
                emit()

    def _store(self, n: Node) -> None:
        name = n.attr("buffer")
        d = self._buffer_dtype(name)
        ptr = self._pointer(name)
        value = next(self.values[e.src] for e in self.k.operands(n.id) if e.slot == 1)
        offset, pred = n.attr("offset"), n.attr("pred")
        combine = n.attr("combine") == "add"
        b = self.b
        per_lane, inside = self._bind_data(n)
        mode, pieces = self._access_plan(offset, pred, d)
        if mode == "scalar" and isinstance(value.type, ir.VectorType) or \
                self._vector_var is not None and (per_lane or combine and mode == "runs"):
            mode = "gather"
        if mode == "runs":
            value = self.vec(value)
            for start, lanes, base_expr, p in pieces:
                if _is_false(p):
                    continue
                part = self._split(value, start, lanes)
                addr = self._addr(ptr, self.index(base_expr), mem_type(d))
                cond = self._and(None if p is None or _is_true(p) else self.index(p), inside)
                self._guarded(cond, lambda: self._write(part, addr, d, self._alignment(base_expr, d, lanes),
                                                        combine))
            return
        if mode in ("scalar", "vector"):
            align = d.itemsize
            if mode == "vector":
                value = self.vec(value)
                base_expr = ex.substitute(offset, {self._vector_var: ex.Const(0, dt.INDEX)})
                addr = self._addr(ptr, self.index(base_expr), mem_type(d))
                align = self._alignment(base_expr, d)
            else:
                addr = self._addr(ptr, self.index(offset), mem_type(d))
            cond = self._and(self.index(pred) if pred is not None else None, inside)
            self._guarded(cond, lambda: self._write(value, addr, d, align, combine))
            return
        value, offs = self.vec(value), self.vec(self.index(offset))
        preds = self._and(self.vec(self.index(pred)) if pred is not None else None,
                          self.vec(inside) if inside is not None else None)
        for lane in range(self.width):
            li = ir.Constant(I32, lane)
            addr = self._addr(ptr, b.extract_element(offs, li), mem_type(d))
            elem = b.extract_element(value, li)
            self._guarded(None if preds is None else b.extract_element(preds, li),
                          lambda: self._write(elem, addr, d, d.itemsize, combine))

    def _and(self, a: ir.Value | None, b: ir.Value | None) -> ir.Value | None:
        if a is None or b is None:
            return a if b is None else b
        if isinstance(a.type, ir.VectorType) or isinstance(b.type, ir.VectorType):
            a, b = self.vec(a), self.vec(b)
        return self.b.and_(a, b)


def _is_true(p: ex.Expr | None) -> bool:
    return isinstance(p, ex.Const) and bool(p.value)


def _is_false(p: ex.Expr | None) -> bool:
    return isinstance(p, ex.Const) and not bool(p.value)


_FLIP = {"lt": "gt", "le": "ge", "gt": "lt", "ge": "le"}


def _uniform_over_run(p: ex.Expr, lane: str, r: int, ranges) -> ex.Expr | None:
    """`p` with the run lane variable `lane` (in [0, r)) eliminated, when every
    conjunct that uses it holds for all lanes of a run or for none; else None.

    A conjunct `x < y` (or <=, >, >=) qualifies when, written as `e < 0` or `e >= 0`
    with e = base + lane (stride 1 in the lane), `base` is a multiple of r: a run
    [base, base + r) of consecutive integers then never straddles 0. Such a conjunct
    equals itself at lane 0."""
    out = []
    index = dt.INDEX
    zero = {lane: ex.Const(0, index)}
    for c in sx.conjuncts(p):
        if lane not in ex.free_vars(c):
            out.append(c)
            continue
        if not (isinstance(c, ex.Binary) and c.op in _FLIP and c.a.dtype.is_int):
            return None
        x, y, op = c.a, c.b, c.op
        if op in ("gt", "ge"):  # x > y  <=>  y < x ;  x >= y  <=>  y <= x
            x, y, op = y, x, _FLIP[op]
        # now x < y (e = x - y < 0) or x <= y (e = x - y - 1 < 0)
        e = ex.binary("sub", x, y)
        if op == "le":
            e = ex.binary("sub", e, ex.Const(1, index))
        e = sx.simplify(e, ranges)
        s = sx.stride(e, lane, ranges)
        if s == -1:  # e < 0  <=>  -e - 1 >= 0: the same question about -e - 1
            e = sx.simplify(ex.binary("sub", ex.unary("neg", e), ex.Const(1, index)), ranges)
            s = sx.stride(e, lane, ranges)
        if s != 1:
            return None
        base = sx.simplify(ex.substitute(e, zero), ranges)
        if sx.divisor(base, r) < r:
            return None
        out.append(sx.simplify(ex.substitute(c, zero), ranges))
    return ex.all_of(out)

