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

Expressions and arithmetic are emitted by `arith.Arithmetic`, loads and stores by
`access.MemoryAccess`; `KernelCodegen` combines them with the control flow.
"""
from __future__ import annotations

from llvmlite import ir

from ...errors import CompileError
from ...ir import dtypes as dt
from ...ir.gir import MBAR_OPS, MMA, TC_OPS, TMA_LOAD, WGMMA, Kernel, Node
from . import bulk, tensorcore
from .access import MemoryAccess
from .arith import Arithmetic
from .irtypes import I16, I32, I64, mem_type, reg_type

__all__ = ["KernelCodegen", "Target", "reg_type", "mem_type", "I16", "I32", "I64"]


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
    # Threads run at once: a combining store adds atomically (else read, add, write).
    atomic_adds = False

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

    def gemm(self, cg: "KernelCodegen", node: Node) -> None:
        """A `call.gemm` node."""
        raise CompileError(f"target {type(self).__name__} has no gemm calls")

    def global_load(self, cg: "KernelCodegen", address: ir.Value, ty: ir.Type, align: int | None,
                    l2_prefetch: int | None) -> ir.Value:
        """A `ty` load from a read-only global buffer; `l2_prefetch` (bytes) is a hint a
        target may ignore."""
        return cg.b.load(address, typ=ty, align=align)


class KernelCodegen(Arithmetic, MemoryAccess):
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
            if n.op in ("compute.reduce", MMA, WGMMA):
                self._reduces.setdefault(n.attr("over"), []).append(n)
        self._acc: dict[str, ir.Value] = {}
        self._plans: dict[tuple, tuple[str, list | None]] = {}


    # ------------------------------------------------------------------ structure
    def _order_items(self) -> dict[str | None, list[str]]:
        """For each scope, its own nodes and child scopes in a dependency order."""
        import networkx as nx  # on first code generation, not when a cached module loads

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
        reads += [(e.src, n.attr("over")) for n in k.nodes if n.op in ("compute.reduce", MMA, WGMMA)
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
            if r.op in (MMA, WGMMA):
                tensorcore.start_mma(self, r)
                continue
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
        if r.op in (MMA, WGMMA):
            tensorcore.update_mma(self, r)
            return
        acc = self._acc[r.id]
        v = self._masked_operand(r)
        old = self.b.load(acc, typ=acc.allocated_type)
        self.b.store(self.combine(r.attr("combiner"), old, v, r.dtype), acc)

    def _finish_reduces(self, s: Node, vector: bool = False) -> None:
        for r in self._reduces.get(s.id, []):
            if r.op in (MMA, WGMMA):
                tensorcore.finish_mma(self, r)
            elif vector:
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

    # ------------------------------------------------------------------ nodes
    def _emit_node(self, n: Node) -> None:
        kind = n.op
        if kind in ("compute.reduce", MMA, WGMMA):
            if n.id not in self.values:
                raise CompileError(f"{n.id}: reduction emitted before its scope {n.attr('over')}")
            return
        if kind == "compute.const":
            self.values[n.id] = self.constant(n.attr("value").value, n.dtype)
        elif kind == "compute.index":
            self.values[n.id] = self.index(n.attr("expr"))
        elif kind == TMA_LOAD or kind in MBAR_OPS:
            bulk.emit(self, n)
        elif kind in TC_OPS:
            tensorcore.emit(self, n)
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
        elif kind == "call.gemm":
            self.target.gemm(self, n)
        else:
            raise CompileError(f"{n.id}: cannot generate code for {n.op}")


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
