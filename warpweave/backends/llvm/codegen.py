"""GIR → LLVM IR with llvmlite.ir, shared by the CPU and CUDA backends.

Scopes become structured control flow: serial scopes are loops, unroll scopes are
repeated bodies, vector scopes make every value inside them an LLVM vector (the
scope variable is the vector <0, 1, …, w-1>), and grid and block scopes are
whatever the `Target` makes of them (a loop over a range on the CPU; block and
thread ids on the GPU). A `compute.reduce` keeps an accumulator across the
iterations of the scope it reduces over. Memory accesses with a predicate read a
safe address and select (loads) or branch around (stores).

A vector scope's values are SSA vectors emitted in its parent's basic block, so an
aligned sibling vector scope (same parent, same extent) emitted after it uses them
as they are: lane i for lane i (`_order_items` orders the scope that defines a value
before the sibling that uses it).

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
"""
from __future__ import annotations

import networkx as nx
from llvmlite import ir

from ...errors import CompileError
from ...ir import dtypes as dt
from ...ir import expr as ex
from ...ir.gir import Kernel, Node

I1, I8, I16, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)


def reg_type(d: dt.DType) -> ir.Type:
    """How a value of dtype `d` is held in registers (bfloat16: its 16 bits)."""
    return {"bool": I1, "int32": I32, "int64": I64, "float16": ir.HalfType(),
            "bfloat16": I16, "float32": ir.FloatType(), "float64": ir.DoubleType()}[d.name]


def mem_type(d: dt.DType) -> ir.Type:
    """How an element of dtype `d` is stored in memory (bool: one byte)."""
    return I8 if d.is_bool else reg_type(d)


class Target:
    """What a backend decides about a kernel: its signature and what grid and block
    scopes, shuffles, barriers, shared memory and math functions become."""

    triple = ""
    # Every buffer's base address is a multiple of this many bytes (the runtime
    # guarantees it), so vector accesses at proven offsets may use wide alignment.
    buffer_alignment = 1
    # float32 division may be approximate (a few ulp) instead of correctly rounded.
    approximate_division = False
    # The widest single memory access a "runs" access is split into (None: no cap).
    max_access_bytes: int | None = None
    # Floating-point multiplies and adds may contract into fused multiply-adds.
    contract = False

    def declare(self, module: ir.Module, kernel: Kernel) -> tuple[ir.Function, dict[str, ir.Value]]:
        """The kernel function and a map from buffer names to their pointers."""
        raise NotImplementedError

    def emit_grid(self, cg: "KernelCodegen", scope: Node, body) -> None:
        raise NotImplementedError

    def emit_block(self, cg: "KernelCodegen", scope: Node, body) -> None:
        raise CompileError(f"target {type(self).__name__} has no thread blocks")

    def shared_pointer(self, cg: "KernelCodegen", name: str) -> ir.Value:
        raise CompileError(f"target {type(self).__name__} has no shared memory")

    def shuffle(self, cg: "KernelCodegen", value: ir.Value, mode: str, lane: ir.Value) -> ir.Value:
        raise CompileError(f"target {type(self).__name__} has no warp shuffles")

    def barrier(self, cg: "KernelCodegen") -> None:
        raise CompileError(f"target {type(self).__name__} has no barriers")

    def math(self, cg: "KernelCodegen", op: str, args: list[ir.Value], d: dt.DType) -> ir.Value:
        """A math function on float scalars or vectors."""
        raise NotImplementedError

    def round_to_bfloat16(self, cg: "KernelCodegen", f: ir.Value) -> ir.Value | None:
        """float32 (scalar or vector) rounded to bfloat16 bits with a native instruction,
        or None where the target has none (the codegen then rounds with integer ops)."""
        return None

    def global_load(self, cg: "KernelCodegen", address: ir.Value, ty: ir.Type, align: int | None,
                    l2_prefetch: int | None) -> ir.Value:
        """A `ty` load from a read-only global buffer; `l2_prefetch` (bytes) is a hint a
        target may ignore."""
        return cg.b.load(address, typ=ty, align=align)


class KernelCodegen:
    """Lowers one GIR kernel into a function of an LLVM module."""

    def __init__(self, kernel: Kernel, module: ir.Module, target: Target):
        self.k = kernel
        self.module = module
        self.target = target
        self.fn, self.buffers = target.declare(module, kernel)
        self.entry = self.fn.append_basic_block("entry")
        body = self.fn.append_basic_block("body")
        self.b = ir.IRBuilder(body)
        self.values: dict[str, ir.Value] = {}
        self.env: dict[str, ir.Value] = {}
        self.width: int | None = None
        self.ranges: dict[str, tuple[int, int]] = {}
        self._vector_var: str | None = None
        self._items = self._order_items()
        self._reduces: dict[str, list[Node]] = {}
        for n in kernel.nodes:
            if n.op == "compute.reduce":
                self._reduces.setdefault(n.attr("over"), []).append(n)
        self._acc: dict[str, ir.Value] = {}
        self._plans: dict[tuple, tuple[str, list | None]] = {}

    # ------------------------------------------------------------------ structure
    def _order_items(self) -> dict[str | None, list[str]]:
        """For each scope, its own nodes and child scopes in a dependency order."""
        k = self.k
        pos = {n.id: i for i, n in enumerate(k.nodes)}
        chains = {n.id: [s.id for s in k.scope_chain(n.scope)] + ([n.id] if n.is_scope else [])
                  for n in k.nodes}
        levels: dict[str | None, nx.DiGraph] = {}
        for n in k.nodes:
            if n.family == "mem":
                continue
            parent = n.scope
            levels.setdefault(parent, nx.DiGraph()).add_node(n.id)
        # a reduction's input is read while its `over` scope runs: order it before that scope
        reads = [(e.src, e.dst) for e in k.edges]
        reads += [(e.src, n.attr("over")) for n in k.nodes if n.op == "compute.reduce"
                  for e in k.operands(n.id)]
        for src, dst in reads:
            a, b = chains[src], chains[dst]
            if not a or not b:
                continue
            common = 0
            while common < min(len(a), len(b)) and a[common] == b[common]:
                common += 1
            parent = a[common - 1] if common else None
            if common < len(a) and common < len(b):
                levels.setdefault(parent, nx.DiGraph()).add_edge(a[common], b[common])
            elif common < len(b) and common == len(a) and not k.node(src).is_scope:
                levels.setdefault(parent, nx.DiGraph()).add_edge(src, b[common])
            elif common < len(a) and common == len(b) and not k.node(dst).is_scope:
                levels.setdefault(parent, nx.DiGraph()).add_edge(a[common], dst)
        out = {}
        for parent, g in levels.items():
            try:
                out[parent] = list(nx.lexicographical_topological_sort(g, key=lambda x: pos[x]))
            except nx.NetworkXUnfeasible:
                raise CompileError(f"kernel {k.name}: scope {parent} has a dependency cycle "
                                   "between its nodes and child scopes") from None
        return out

    def generate(self) -> ir.Function:
        roots = [i for i in self._items.get(None, []) if self.k.node(i).is_scope]
        if len(roots) != 1 or self.k.node(roots[0]).scope_kind != "grid":
            raise CompileError(f"kernel {self.k.name} needs exactly one grid scope at its root")
        self._emit_item(roots[0])
        self.b.ret_void()
        with self.b.goto_block(self.entry):
            self.b.branch(self.fn.basic_blocks[1])
        return self.fn

    def emit_items(self, scope_id: str) -> None:
        for item in self._items.get(scope_id, []):
            self._emit_item(item)

    def _emit_item(self, node_id: str) -> None:
        node = self.k.node(node_id)
        if node.is_scope:
            self._emit_scope(node)
        else:
            self._emit_node(node)

    def _emit_scope(self, s: Node) -> None:
        kind, var, extent = s.scope_kind, s.attr("var"), s.attr("extent")
        self.ranges[var] = (0, extent - 1)
        if kind == "grid":
            self.target.emit_grid(self, s, lambda: self._body(s))
        elif kind == "block":
            self.target.emit_block(self, s, lambda: self._body(s))
        elif kind == "serial":
            self.loop(var, ir.Constant(I64, 0), ir.Constant(I64, extent), s)
        elif kind == "unroll":
            self._start_reduces(s)
            for i in range(extent):
                self.env[var] = ir.Constant(I64, i)
                self._body(s)
            self._finish_reduces(s)
        elif kind == "vector":
            if self.width is not None:
                raise CompileError(f"kernel {self.k.name}: nested vector scopes {s.id}")
            self.width, self._vector_var = extent, var
            self.env[var] = ir.Constant(ir.VectorType(I64, extent), list(range(extent)))
            self._start_reduces(s)
            self.emit_items(s.id)
            self._finish_reduces(s, vector=True)
            self.width, self._vector_var = None, None
        else:
            raise CompileError(f"unknown scope kind {kind!r}")

    def _body(self, s: Node) -> None:
        """A scope's items, then the accumulator updates of reductions over it."""
        self.emit_items(s.id)
        for r in self._reduces.get(s.id, []):
            if s.scope_kind in ("grid", "block"):
                raise CompileError(f"{r.id}: reduction over a {s.scope_kind} scope must be "
                                   "expressed with shuffles and shared memory")
            self._update_reduce(r)

    def loop(self, var: str, start: ir.Value, stop: ir.Value, scope: Node | None, body=None) -> None:
        """`for var in [start, stop)`; the body is `scope`'s items or `body()`."""
        counter = self.alloca(I64, f"{var}.addr")
        self.b.store(start, counter)
        if scope is not None:
            self._start_reduces(scope)
        head = self.fn.append_basic_block(f"{var}.head")
        loop = self.fn.append_basic_block(f"{var}.body")
        done = self.fn.append_basic_block(f"{var}.done")
        self.b.branch(head)
        self.b.position_at_end(head)
        i = self.b.load(counter, name=var, typ=I64)
        self.b.cbranch(self.b.icmp_signed("<", i, stop), loop, done)
        self.b.position_at_end(loop)
        self.env[var] = i
        if body is not None:
            body()
        else:
            self._body(scope)
        self.b.store(self.b.add(self.b.load(counter, typ=I64), ir.Constant(I64, 1)), counter)
        self.b.branch(head)
        self.b.position_at_end(done)
        if scope is not None:
            self._finish_reduces(scope)

    def alloca(self, ty: ir.Type, name: str = "") -> ir.Value:
        with self.b.goto_block(self.entry):
            return self.b.alloca(ty, name=name)

    # ------------------------------------------------------------------ reductions
    def _start_reduces(self, s: Node) -> None:
        if s.scope_kind == "vector":
            return
        for r in self._reduces.get(s.id, []):
            ty = self._type_in(r, self._width_of_scope(r.scope))
            acc = self.alloca(ty, f"acc{r.id[1:]}")
            self.b.store(self.splat(self.constant(_identity(r), r.dtype), ty), acc)
            self._acc[r.id] = acc

    def _width_of_scope(self, scope_id: str | None) -> int | None:
        shape = self.k.vector_shape(scope_id)
        return shape[0] if shape else None

    def _type_in(self, node: Node, width: int | None) -> ir.Type:
        t = reg_type(node.dtype)
        return ir.VectorType(t, width) if width else t

    def _masked_operand(self, r: Node) -> ir.Value:
        (edge,) = self.k.operands(r.id)
        v = self.vec(self.values[edge.src])
        mask = r.attr("mask")
        if mask is not None:
            v = self.b.select(self.index(mask), v, self.vec(self.constant(_identity(r), r.dtype)))
        return v

    def _update_reduce(self, r: Node) -> None:
        acc = self._acc[r.id]
        v = self._masked_operand(r)
        old = self.b.load(acc, typ=acc.allocated_type)
        self.b.store(self.combine(r.attr("combiner"), old, v, r.dtype), acc)

    def _finish_reduces(self, s: Node, vector: bool = False) -> None:
        for r in self._reduces.get(s.id, []):
            if vector:
                v = self._masked_operand(r)
                self.values[r.id] = self._horizontal(r.attr("combiner"), v, r.dtype)
            else:
                acc = self._acc[r.id]
                self.values[r.id] = self.b.load(acc, typ=acc.allocated_type)

    def _horizontal(self, combiner: str, v: ir.Value, d: dt.DType) -> ir.Value:
        n = v.type.count
        while n > 1 and n % 2 == 0:
            half = n // 2
            lo = self.b.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, half), list(range(half))))
            hi = self.b.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, half), list(range(half, n))))
            v, n = self.combine(combiner, lo, hi, d), half
        out = self.b.extract_element(v, ir.Constant(I32, 0)) if isinstance(v.type, ir.VectorType) else v
        for i in range(1, n):
            out = self.combine(combiner, out, self.b.extract_element(v, ir.Constant(I32, i)), d)
        return out

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

    # ------------------------------------------------------------------ nodes
    def _emit_node(self, n: Node) -> None:
        kind = n.op
        if kind == "compute.reduce":
            if n.id not in self.values:
                raise CompileError(f"{n.id}: reduction emitted before its scope {n.attr('over')}")
            return
        if kind == "compute.const":
            self.values[n.id] = self.constant(n.attr("value").value, n.dtype)
        elif kind == "compute.index":
            self.values[n.id] = self.index(n.attr("expr"))
        elif n.family == "compute":
            args = [self.values[e.src] for e in self.k.operands(n.id)]
            self.values[n.id] = self.compute(n.op.split(".", 1)[1], args, n)
        elif kind in ("move.global.reg", "move.shared.reg"):
            self.values[n.id] = self._load(n)
        elif kind in ("move.reg.global", "move.reg.shared"):
            self._store(n)
        elif kind == "move.reg.reg":
            (edge,) = self.k.operands(n.id)
            self.values[n.id] = self.target.shuffle(self, self.values[edge.src], n.attr("mode"),
                                                    self.index(n.attr("lane")))
        elif kind == "sync.block":
            self.target.barrier(self)
        else:
            raise CompileError(f"{n.id}: cannot generate code for {n.op}")

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

    def _load(self, n: Node) -> ir.Value:
        d = self._buffer_dtype(n.attr("buffer"))
        ptr, mty = self._pointer(n.attr("buffer")), mem_type(d)
        offset, pred = n.attr("offset"), n.attr("pred")
        other = self.constant(n.attr("other").value, d)
        b = self.b
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
            wide = b.shuffle_vector(v, v, _mask([i - start if i in lanes else 0
                                                  for i in range(width)]))
            out = wide if out is None else b.shuffle_vector(
                out, wide, _mask([width + i if i in lanes else i for i in range(width)]))
        return out

    def _split(self, value: ir.Value, start: int, lanes: int) -> ir.Value:
        """Lanes [start, start + lanes) of a vector."""
        if lanes == value.type.count:
            return value
        return self.b.shuffle_vector(value, value, _mask(list(range(start, start + lanes))))

    def _alignment(self, base: ex.Expr, d: dt.DType, lanes: int | None = None) -> int:
        """The alignment in bytes of a `lanes`-lane access (default: the vector width)
        at element offset `base`."""
        whole = (lanes or self.width) * d.itemsize
        if self.target.buffer_alignment < 2 or whole & (whole - 1):
            return d.itemsize
        cap = min(whole, self.target.buffer_alignment)
        return max(d.itemsize, min(cap, ex.divisor(base, cap) * d.itemsize))

    def _access_mode(self, offset: ex.Expr, pred: ex.Expr | None, d: dt.DType | None = None) -> str:
        """scalar (outside vector scopes or lane-invariant), vector (contiguous lanes,
        lane-invariant predicate), runs (contiguous runs of lanes, run-invariant
        predicates: see the module docstring) or gather (anything else)."""
        return self._access_plan(offset, pred, d)[0]

    def _access_plan(self, offset: ex.Expr, pred: ex.Expr | None,
                     d: dt.DType | None = None) -> tuple[str, list | None]:
        """(mode, pieces): for "runs", the accesses as (first lane, lanes, base offset,
        predicate or None) in lane order; None for the other modes."""
        v = self._vector_var
        if v is None:
            return "scalar", None
        lane_pred = pred is not None and v in ex.free_vars(pred)
        if v not in ex.free_vars(offset) and not lane_pred:
            return "scalar", None
        if not lane_pred and ex.stride(offset, v, self.ranges) == 1:
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
        off = ex.simplify(ex.substitute(offset, {v: lane}), ranges)
        if ex.stride(off, b_name, ranges) != 1:
            return None
        p = None
        if pred is not None:
            p = ex.simplify(ex.substitute(pred, {v: lane}), ranges)
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
            pk = None if p is None else ex.simplify(
                ex.substitute(p, {a_name: ex.Const(k, index)}), ranges)
            for q in range(0, r, piece):
                base = ex.simplify(ex.substitute(off, {a_name: ex.Const(k, index),
                                                       b_name: ex.Const(q, index)}), ranges)
                pieces.append((k * r + q, piece, base, pk))
        return pieces

    def _store(self, n: Node) -> None:
        name = n.attr("buffer")
        d = self._buffer_dtype(name)
        ptr = self._pointer(name)
        value = next(self.values[e.src] for e in self.k.operands(n.id) if e.slot == 1)
        offset, pred = n.attr("offset"), n.attr("pred")
        b = self.b
        mode, pieces = self._access_plan(offset, pred, d)
        if mode == "scalar" and isinstance(value.type, ir.VectorType):
            mode = "gather"
        if mode == "runs":
            value = self.vec(value)
            for start, lanes, base_expr, p in pieces:
                if _is_false(p):
                    continue
                part = self._to_mem(self._split(value, start, lanes), d)
                addr = self._addr(ptr, self.index(base_expr), mem_type(d))
                align = self._alignment(base_expr, d, lanes)
                if p is None or _is_true(p):
                    b.store(part, addr, align=align)
                else:
                    with b.if_then(self.index(p)):
                        b.store(part, addr, align=align)
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
            if pred is None:
                b.store(self._to_mem(value, d), addr, align=align)
            else:
                with b.if_then(self.index(pred)):
                    b.store(self._to_mem(value, d), addr, align=align)
            return
        value, offs = self.vec(value), self.vec(self.index(offset))
        preds = self.vec(self.index(pred)) if pred is not None else None
        for lane in range(self.width):
            li = ir.Constant(I32, lane)
            addr = self._addr(ptr, b.extract_element(offs, li), mem_type(d))
            elem = self._to_mem(b.extract_element(value, li), d)
            if preds is None:
                b.store(elem, addr)
            else:
                with b.if_then(b.extract_element(preds, li)):
                    b.store(elem, addr)

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
        if src.is_float and dst.is_float:
            return (b.fpext if dst.bits > src.bits else b.fptrunc)(v, ty(reg_type(dst)))
        if src.is_int and dst.is_int:
            return (b.sext if dst.bits > src.bits else b.trunc)(v, ty(reg_type(dst)))
        if src.is_int:
            return b.sitofp(v, ty(reg_type(dst)))
        return b.fptosi(v, ty(reg_type(dst)))

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
        return b.shuffle_vector(low, high, _mask([k // 2 + (width // 2) * (k % 2) for k in range(width)]))

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


def _mask(lanes: list[int]) -> ir.Constant:
    return ir.Constant(ir.VectorType(I32, len(lanes)), lanes)


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
    for c in ex.conjuncts(p):
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
        e = ex.simplify(e, ranges)
        s = ex.stride(e, lane, ranges)
        if s == -1:  # e < 0  <=>  -e - 1 >= 0: the same question about -e - 1
            e = ex.simplify(ex.binary("sub", ex.unary("neg", e), ex.Const(1, index)), ranges)
            s = ex.stride(e, lane, ranges)
        if s != 1:
            return None
        base = ex.simplify(ex.substitute(e, zero), ranges)
        if ex.divisor(base, r) < r:
            return None
        out.append(ex.simplify(ex.substitute(c, zero), ranges))
    return ex.all_of(out)


def _identity(r: Node):
    import math

    combiner, d = r.attr("combiner"), r.dtype
    if combiner == "sum":
        return 0
    if combiner == "prod":
        return 1
    if d.is_bool:
        return combiner == "min"
    if d.is_float:
        return -math.inf if combiner == "max" else math.inf
    import numpy as np

    info = np.iinfo(d.numpy)
    return info.min if combiner == "max" else info.max


_INT_BINOPS = {"add": "add", "sub": "sub", "mul": "mul", "floordiv": "sdiv", "mod": "srem",
               "and": "and_", "or": "or_"}
_FLOAT_BINOPS = {"add": "fadd", "sub": "fsub", "mul": "fmul", "div": "fdiv"}
_ICMP = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}
