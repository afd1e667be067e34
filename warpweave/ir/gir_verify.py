"""The GIR verifier: `verify(kernel)` checks a kernel's invariants and returns it.

It raises `VerificationError` listing every problem it found (each names the node
ids, buffers and numbers involved); `check(kernel)` returns that list instead.
The checks, in order (1-5, well-formedness, here; 6-8, memory safety, in
`gir_verify_memory`):

1. structure — ids unique, known ops, edge ends exist, emission order (every
   edge's source and every node's scope come before the node), buffers declared
   once, one `mem.*` node per buffer;
2. scopes — one `parallel.grid` at the root, at most one `parallel.block` directly
   inside it, unique scope variables, extents >= 1, `mem.*` nodes at the root and
   every other node inside the grid; `cpu` kernels have no block scope, shared
   memory, shuffles or barriers;
3. memory levels — each edge's level is what its source produces and what its
   destination takes at that slot (a `global` value flowing into a compute node is
   a level mismatch); each move names the buffer whose state reaches it, at the
   right level;
4. types — edge dtype and per-thread shape match the producer, operand arity and
   slots per op, dtype rules (comparisons give bool, binary operands agree, ...);
5. visibility — a register value flows only into its own scope or an inner one
   (a `compute.reduce` takes a value visible in the scope it reduces over), or,
   when it is defined directly in a vector scope V1, into an *aligned sibling*
   V2 of V1 (a vector scope with the same parent and extent) or a scope inside
   V2 — lane i reads lane i; the expressions in attrs use only the scope
   variables around the node, with the right dtypes;
6. barriers — a shared-memory read is separated from the last write by a
   `sync.block`; barriers and shuffles lie in the block scope, outside vector
   scopes, unpredicated; shuffles need whole warps and a constant lane < 32;
7. bounds — every load and store stays inside its buffer wherever its predicate
   holds (interval arithmetic refined by the predicate's affine conjuncts first,
   then with the variables the predicate bounds in combination rewritten as one
   (`simplify.bounds_under_split`: a flattened k·256 + t, a quotient t // 32), then
   an exhaustive numpy evaluation over the iteration space when that is small
   enough, else "unproven"); a load's data index ranges over [0, extent) — the
   range code generators clamp it into;
8. limits — threads per block, shared bytes per block (the architecture's limit:
   227 KiB on sm_90, dynamic above 48 KiB), vector width (32 elements per thread on
   the GPU, 256 on the CPU: see `Limits.for_target`).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ..errors import VerificationError
from . import dtypes as dt
from . import expr as ex
from .gir import (COMPUTE_OPS, GEMM, L2_PREFETCH_SIZES, LEVELS, MMA, ROLES, SCOPE_KINDS, SHUFFLE_MODES, TC_OPS,
                  Edge, Kernel, Node, first_data_slot)
from .gir_verify_base import LOADS, SHUFFLE, STORES, SYNC, data_extents
from .gir_verify_call import CallChecks
from .gir_verify_memory import MemoryChecks
from .gir_verify_bulk import BulkCopyChecks
from .gir_verify_tc import TensorCoreChecks

__all__ = ["Limits", "verify", "check"]


# Shared memory a block may use on each architecture (with the opt-in above 48 KiB):
# the CUDA programming guide's "maximum amount of shared memory per thread block".
SHARED_BYTES_PER_ARCH = {"sm_80": 163 * 1024, "sm_86": 99 * 1024, "sm_87": 163 * 1024,
                         "sm_89": 99 * 1024, "sm_90": 227 * 1024, "sm_100": 227 * 1024,
                         "sm_120": 99 * 1024}
GPU_ARCH = "sm_90"  # the architecture GPU kernels are verified for (the code generator's default)


@dataclass(frozen=True)
class Limits:
    """Target limits the verifier enforces."""

    max_threads_per_block: int = 1024
    max_shared_bytes: int = SHARED_BYTES_PER_ARCH[GPU_ARCH]
    max_vector_elems: int = 32
    max_exhaustive_points: int = 1 << 22
    arch: str = GPU_ARCH  # what the limits are those of (named in messages)

    @staticmethod
    def for_target(target: str) -> "Limits":
        """The defaults for a kernel's target: CPU vectors may span many SIMD registers
        (LLVM splits them; 256 float32 lanes fill 16 AVX-512 registers); a GPU thread
        keeps at most 32 elements per vector value (a register tile of 32 float32 is
        cheap on sm_90; memory accesses are split into pieces of at most 16 bytes) and
        a block up to sm_90's 227 KiB of shared memory (dynamic above 48 KiB)."""
        return Limits(max_vector_elems=256, arch="cpu") if target == "cpu" else Limits()

    @staticmethod
    def for_arch(arch: str) -> "Limits":
        """GPU limits of a CUDA architecture (`sm_XY`); unknown ones get 48 KiB of shared memory."""
        return Limits(max_shared_bytes=SHARED_BYTES_PER_ARCH.get(arch, 48 * 1024), arch=arch)


MEMS = ("mem.global", "mem.shared")
KNOWN_OPS = frozenset(
    [f"parallel.{k}" for k in SCOPE_KINDS] + [f"compute.{op}" for op in COMPUTE_OPS]
    + list(LOADS) + list(STORES) + [SHUFFLE, SYNC, GEMM] + list(MEMS) + list(TC_OPS))
VALUE_PRODUCERS_MOVES = (*LOADS, SHUFFLE)

_ARITY = {"const": 0, "index": 0, "select": 3, "cast": 1, "reduce": 1,
          **{op: 1 for op in ex.UNARY_OPS}, **{op: 2 for op in ex.BINARY_OPS}}


def verify(kernel: Kernel, limits: Limits | None = None) -> Kernel:
    """`kernel`, if it passes every check; else `VerificationError` listing the problems."""
    problems = check(kernel, limits)
    if problems:
        n = len(problems)
        err = VerificationError(
            f"GIR kernel {kernel.name!r} failed verification ({n} problem{'s' * (n != 1)}):\n"
            + "\n".join(f"  - {p}" for p in problems))
        err.problems = problems
        raise err
    return kernel


def check(kernel: Kernel, limits: Limits | None = None) -> list[str]:
    """Every problem `verify` would report, as a list of messages (empty: valid)."""
    return _TcVerifier(kernel, limits or Limits.for_target(kernel.target)).run()


def _level_of_move_end(op: str, end: int) -> str | None:
    """For `move.<from>.<to>`: the level of its source (end 0) or destination (end 1)."""
    parts = op.split(".")
    return parts[1 + end] if len(parts) == 3 else None


class _Verifier(MemoryChecks, CallChecks):
    """Checks 1-5 (structure, scopes, levels and buffers, types, visibility) here,
    6-8 (barriers, bounds, limits) in `MemoryChecks`."""

    def run(self) -> list[str]:
        for step in (self.check_structure, self.check_scopes, self.check_levels,
                     self.check_buffers, self.check_types, self.check_visibility,
                     self.check_barriers, self.check_bounds, self.check_limits, self.check_calls,
                     self.check_tensor_cores):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - a malformed kernel must not crash the report
                self.add(f"verifier could not finish {step.__name__[6:]} checks on this "
                         f"malformed kernel: {type(exc).__name__}: {exc}")
        return self.problems

    # ------------------------------------------------------------------ helpers
    def chain_ids(self, scope_id) -> list[str] | None:
        c = self.chain(scope_id)
        return None if c is None else [s.id for s in c]

    def vector_shape(self, scope_id) -> tuple[int, ...] | None:
        c = self.chain(scope_id)
        if c is None:
            return None
        return tuple(s.attr("extent") for s in c if s.scope_kind == "vector")

    def value_shape(self, n: Node) -> tuple[int, ...] | None:
        return self.vector_shape(n.scope)

    def is_value_producer(self, n: Node) -> bool:
        return n.family == "compute" or n.op in VALUE_PRODUCERS_MOVES

    # ------------------------------------------------------------------ 1. structure
    def check_structure(self):
        k = self.k
        if k.target not in ("gpu", "cpu"):
            self.add(f"unknown target {k.target!r}: expected 'gpu' or 'cpu'")
        for nid, count in Counter(n.id for n in k.nodes).items():
            if count > 1:
                self.add(f"node id {nid} is used by {count} nodes")
        for n in k.nodes:
            if n.op not in KNOWN_OPS:
                self.add(f"node {n.id} has unknown op {n.op!r}")
            if self.is_value_producer(n) and not isinstance(n.dtype, dt.DType):
                self.add(f"{self.desc(n)} produces a value but has no dtype")
        names = Counter([b.name for b in k.params] + [s.name for s in k.shared])
        for name, count in names.items():
            if count > 1:
                self.add(f"buffer name {name!r} is declared {count} times (params and shared "
                         f"allocations share one namespace)")
        for b in k.params:
            if len(b.shape) != len(b.strides):
                self.add(f"param {b.name}: shape {list(b.shape)} and strides {list(b.strides)} "
                         f"differ in rank")
            if any(s < 0 for s in b.shape):
                self.add(f"param {b.name}: negative extent in shape {list(b.shape)}")
            if b.role not in ROLES:
                self.add(f"param {b.name}: role {b.role!r} is not one of {', '.join(ROLES)}")
        for s in k.shared:
            if not isinstance(s.size, int) or s.size < 1:
                self.add(f"shared allocation {s.name} has size {s.size!r}; expected >= 1")
        for n in k.nodes:
            if n.scope is None:
                continue
            s = self.nodes.get(n.scope) if isinstance(n.scope, str) else None
            if s is None:
                self.add(f"{self.desc(n)} lies in scope {n.scope}, which does not exist")
            elif not s.is_scope:
                self.add(f"{self.desc(n)} lies in {self.desc(s)}, which is not a parallel scope")
            elif self.pos[s.id] >= self.pos.get(n.id, -1):
                self.add(f"emission order: {self.desc(n)} comes before its scope {s.id}")
        for e in k.edges:
            ok = True
            for end, role in ((e.src, "source"), (e.dst, "destination")):
                if end not in self.nodes:
                    self.add(f"edge {e.src} -> {e.dst}: its {role} {end} does not exist")
                    ok = False
            if e.level not in LEVELS:
                self.add(f"edge {e.src} -> {e.dst}: unknown memory level {e.level!r} "
                         f"(expected one of {', '.join(LEVELS)})")
                ok = False
            if not isinstance(e.slot, int) or e.slot < 0:
                self.add(f"edge {e.src} -> {e.dst}: bad slot {e.slot!r}")
                ok = False
            if ok and self.pos[e.src] >= self.pos[e.dst]:
                self.add(f"emission order: {e.src} is used by {e.dst} but comes after it "
                         f"(nodes must be listed producers first)")
            if ok:
                self.good_edges.append(e)
                self.inputs[e.dst].append(e)
        for v in self.inputs.values():
            v.sort(key=lambda e: e.slot)
        for mem_op, decls, what in (("mem.global", self.params, "param"),
                                    ("mem.shared", self.allocs, "shared allocation")):
            seen = Counter(n.attr("buffer") for n in self.nodes.values() if n.op == mem_op)
            for name in decls:
                if seen.get(name, 0) != 1:
                    self.add(f"{what} {name} needs exactly one {mem_op} node; found "
                             f"{seen.get(name, 0)}")
            for n in self.nodes.values():
                if n.op != mem_op:
                    continue
                buf = n.attr("buffer")
                if buf not in decls:
                    self.add(f"{self.desc(n)} names {buf!r}, which is not a declared {what}")
                elif n.dtype != decls[buf].dtype:
                    self.add(f"{self.desc(n)} has dtype {n.dtype} but {what} {buf} is "
                             f"{decls[buf].dtype}")

    # ------------------------------------------------------------------ 2. scopes
    def check_scopes(self):
        k = self.k
        grids = [n for n in self.scopes.values() if n.scope_kind == "grid"]
        blocks = [n for n in self.scopes.values() if n.scope_kind == "block"]
        if not grids:
            self.add("the kernel has no parallel.grid scope (exactly one is needed, at the root)")
        elif len(grids) > 1:
            self.add(f"the kernel has {len(grids)} parallel.grid scopes "
                     f"({', '.join(g.id for g in grids)}); exactly one is allowed")
        grid = grids[0] if grids else None
        if grid is not None and grid.scope is not None:
            self.add(f"grid scope {grid.id} must be at the root, not inside {grid.scope}")
        if len(blocks) > 1:
            self.add(f"the kernel has {len(blocks)} parallel.block scopes "
                     f"({', '.join(b.id for b in blocks)}); at most one is allowed")
        for b in blocks:
            if grid is not None and b.scope != grid.id:
                self.add(f"block scope {b.id} must lie directly inside the grid scope {grid.id}, "
                         f"not in {b.scope}")
        self.block = blocks[0] if len(blocks) == 1 else None
        owners: dict[str, list[str]] = {}
        for s in self.scopes.values():
            if s.scope_kind not in SCOPE_KINDS:
                self.add(f"{s.id} has unknown scope kind {s.op!r}")
            var, extent = s.attr("var"), s.attr("extent")
            if not isinstance(var, str) or not var:
                self.add(f"scope {s.id} ({s.op}) has no variable name (attr var: {var!r})")
            else:
                owners.setdefault(var, []).append(s.id)
            if not isinstance(extent, int) or isinstance(extent, bool) or extent < 1:
                self.add(f"scope {self.desc(s)} has extent {extent!r}; expected an int >= 1")
            if s.scope_kind != "grid":
                c = self.chain(s.scope)
                if c is not None and (not c or c[0].scope_kind != "grid"):
                    self.add(f"scope {self.desc(s)} is not inside the grid scope")
        for var, ids in owners.items():
            if len(ids) > 1:
                self.add(f"scope variable {var!r} is bound by {len(ids)} scopes "
                         f"({', '.join(ids)}); scope variables must be unique")
        if k.target == "cpu":
            for b in blocks:
                self.add(f"cpu kernel has a block scope {b.id}: CPU schedules use serial and "
                         f"vector scopes inside the grid")
            for s in k.shared:
                self.add(f"cpu kernel allocates shared memory {s.name}")
            for n in self.nodes.values():
                if n.op in (SHUFFLE, SYNC) or n.op in ("mem.shared", "move.shared.reg",
                                                       "move.reg.shared"):
                    self.add(f"cpu kernel has {self.desc(n)}: shuffles, barriers and shared "
                             f"memory exist only on the gpu target")
        for n in self.nodes.values():
            if n.is_scope:
                continue
            if n.family == "mem":
                if n.scope is not None:
                    self.add(f"{self.desc(n)} must lie at the root (scope None), not in {n.scope}")
                continue
            c = self.chain(n.scope)
            if c is None:
                continue  # reported by the structure checks
            if not c or c[0].scope_kind != "grid":
                where = "at the root" if not c else f"in {c[-1].id}, outside the grid"
                self.add(f"{self.desc(n)} lies {where}; every non-mem node must be inside "
                         f"the grid scope")

    # ------------------------------------------------------------------ 3. levels
    def produced_level(self, n: Node) -> str | None:
        if self.is_value_producer(n):
            return "reg"
        if n.op in ("mem.global", "move.reg.global", GEMM):
            return "global"
        if n.op in ("mem.shared", "move.reg.shared", SYNC):
            return "shared"
        return None

    def accepted_level(self, n: Node, slot: int) -> str | None:
        if n.family == "compute" or n.op == SHUFFLE:
            return "reg"
        if n.op in LOADS:
            if slot == 0:
                return _level_of_move_end(n.op, 0)
            return "reg" if isinstance(slot, int) and slot <= len(data_extents(n)) else None
        if n.op in STORES:
            if slot == 0:
                return _level_of_move_end(n.op, 1)
            return "reg" if isinstance(slot, int) and 1 <= slot <= 1 + len(data_extents(n)) else None
        if n.op == SYNC:
            return "shared"
        if n.op == GEMM:
            return "global" if slot < 3 else None
        return None

    def check_levels(self):
        for e in self.good_edges:
            src, dst = self.nodes[e.src], self.nodes[e.dst]
            prod = self.produced_level(src)
            acc = self.accepted_level(dst, e.slot)
            if prod is None:
                self.add(f"edge {e.src} -> {e.dst}: {self.desc(src)} produces no value or "
                         f"memory state")
                continue
            if acc is None:
                self.add(f"edge {e.src} -> {e.dst}: {self.desc(dst)} takes no input at slot "
                         f"{e.slot}")
                continue
            if prod != acc:
                what = {"reg": "a register value"}
                hint = ""
                if acc == "reg":
                    hint = f" (load it into registers with move.{prod}.reg first)"
                self.add(f"level mismatch: {self.desc(src)} produces "
                         f"{what.get(prod, prod + ' memory')} but {self.desc(dst)} takes "
                         f"{what.get(acc, acc + ' memory')} at slot {e.slot}; the edge says "
                         f"{e.level}{hint}")
            elif e.level != prod:
                self.add(f"level mismatch: edge {e.src} -> {e.dst} is marked {e.level} but "
                         f"carries a {prod} value from {self.desc(src)}")

    # ------------------------------------------------------------------ buffers
    def states(self, nid: str, _stack=None) -> frozenset:
        """The buffers whose state the memory value produced by `nid` can hold."""
        if nid in self._states:
            return self._states[nid]
        n = self.nodes.get(nid)
        out: frozenset = frozenset()
        if n is None:
            pass
        elif n.family == "mem" or n.op in STORES or n.op == GEMM:
            buf = n.attr("c" if n.op == GEMM else "buffer")
            out = frozenset([buf]) if isinstance(buf, str) else frozenset()
        elif n.op == SYNC:
            stack = _stack or set()
            if nid not in stack:
                stack.add(nid)
                acc = set()
                for e in self.inputs.get(nid, []):
                    if e.level in ("global", "shared"):
                        acc |= self.states(e.src, stack)
                out = frozenset(acc)
        self._states[nid] = out
        return out

    def check_buffers(self):
        for n in self.nodes.values():
            if n.op not in LOADS and n.op not in STORES:
                continue
            level = _level_of_move_end(n.op, 0 if n.op in LOADS else 1)
            name = n.attr("buffer")
            decl = self.params.get(name) if level == "global" else self.allocs.get(name)
            if decl is None:
                other = self.allocs.get(name) if level == "global" else self.params.get(name)
                if other is not None:
                    kind = "a shared allocation" if level == "global" else "a global param"
                    self.add(f"{self.desc(n)} accesses {name} as {level} memory but {name} is "
                             f"{kind}")
                else:
                    self.add(f"{self.desc(n)} names buffer {name!r}, which the kernel does not "
                             f"declare")
                continue
            mem_edges = [e for e in self.inputs[n.id] if e.slot == 0]
            for e in mem_edges:
                if e.level != level:
                    continue  # reported as a level mismatch
                held = self.states(e.src)
                if name not in held:
                    have = ", ".join(sorted(map(str, held))) or "no buffer"
                    self.add(f"{self.desc(n)} names buffer {name} but the {level} memory state "
                             f"reaching it from {e.src} is {have}'s")
            if n.dtype != decl.dtype:
                self.add(f"{self.desc(n)} has dtype {n.dtype} but buffer {name} holds "
                         f"{decl.dtype}")
            if n.op in STORES:
                for e in self.inputs[n.id]:
                    if e.slot == 1 and e.dtype != decl.dtype:
                        self.add(f"{self.desc(n)} stores a {e.dtype} value from {e.src} into "
                                 f"{decl.dtype} buffer {name}: cast it first")

    # ------------------------------------------------------------------ 4. types
    def expected_arity(self, n: Node) -> tuple[int, int | None] | None:
        if n.is_scope or n.family == "mem":
            return 0, 0
        if n.family == "compute":
            op = n.op.split(".", 1)[1]
            a = _ARITY.get(op)
            return None if a is None else (a, a)
        if n.op in LOADS:
            count = 1 + len(data_extents(n))
            return count, count
        if n.op == SHUFFLE:
            return 1, 1
        if n.op in STORES:
            count = 2 + len(data_extents(n))
            return count, count
        if n.op == SYNC:
            return 1, None
        if n.op == GEMM:
            return 3, 3
        return None

    def check_types(self):
        for e in self.good_edges:
            src = self.nodes[e.src]
            if e.level == "reg":
                if src.dtype is not None and e.dtype != src.dtype:
                    self.add(f"edge {e.src} -> {e.dst} says {e.dtype} but {self.desc(src)} "
                             f"produces {src.dtype}")
                shape = self.value_shape(src)
                if shape is not None and tuple(e.shape) != shape:
                    self.add(f"edge {e.src} -> {e.dst} has per-thread shape {list(e.shape)} but "
                             f"{e.src} is a value of shape {list(shape)} (its vector scopes)")
            else:
                if tuple(e.shape) != ():
                    self.add(f"memory edge {e.src} -> {e.dst} has shape {list(e.shape)}; "
                             f"memory states have shape []")
                if src.dtype is not None and e.dtype != src.dtype:
                    self.add(f"memory edge {e.src} -> {e.dst} says {e.dtype} but "
                             f"{self.desc(src)} holds {src.dtype}")
                elif src.op == SYNC:
                    dtypes = {self.buffer(b).dtype for b in self.states(src.id) if self.buffer(b)}
                    if dtypes and e.dtype not in dtypes:
                        self.add(f"memory edge {e.src} -> {e.dst} says {e.dtype} but the "
                                 f"buffers passing through {e.src} hold "
                                 f"{', '.join(sorted(map(str, dtypes)))}")
        for n in self.nodes.values():
            ins = self.inputs[n.id]
            arity = self.expected_arity(n)
            slots = [e.slot for e in ins]
            if arity is not None:
                lo, hi = arity
                if len(ins) < lo or (hi is not None and len(ins) > hi):
                    want = f"{lo}" if lo == hi else f"at least {lo}" if hi is None else f"{lo}-{hi}"
                    self.add(f"{self.desc(n)} has {len(ins)} operand{'s' * (len(ins) != 1)}; "
                             f"it takes {want}")
                elif slots != list(range(len(ins))):
                    self.add(f"{self.desc(n)} has operands in slots {slots}; expected slots "
                             f"0..{len(ins) - 1}, each once")
                    continue
                else:
                    self.type_rules(n, ins)

    def type_rules(self, n: Node, ins: list[Edge]):
        d = n.dtype
        tys = [e.dtype for e in ins]
        name = self.desc(n)
        if n.family == "compute":
            op = n.op.split(".", 1)[1]
            if op == "const":
                v = n.attr("value")
                if not isinstance(v, ex.Const):
                    self.add(f"{name}: attr value must be an expr.Const, got {v!r}")
                elif v.dtype != d:
                    self.add(f"{name}: constant {ex.to_text(v)} has dtype {v.dtype}, node says {d}")
            elif op == "index":
                e = n.attr("expr")
                if not isinstance(e, ex.Expr):
                    self.add(f"{name}: attr expr must be an index expression, got {e!r}")
                elif e.dtype != d or not (e.dtype.is_int or e.dtype.is_bool):
                    self.add(f"{name}: index expression {ex.to_text(e)} is {e.dtype}; "
                             f"node says {d}")
            elif op in ex.UNARY_OPS:
                a = tys[0]
                if op == "not" and not a.is_bool:
                    self.add(f"{name}: 'not' needs a bool operand, got {a}")
                elif op in ex.FLOAT_ONLY and not a.is_float:
                    self.add(f"{name}: {op} needs a float operand, got {a}")
                if d != a:
                    self.add(f"{name}: result dtype {d} differs from its operand's {a}")
            elif op in ex.BINARY_OPS:
                a, b = tys
                if a != b:
                    self.add(f"{name}: operands differ in dtype: {a} ({ins[0].src}) and "
                             f"{b} ({ins[1].src})")
                if op in ex.COMPARE_OPS:
                    if d != dt.bool_:
                        self.add(f"{name}: a comparison produces bool, node says {d}")
                else:
                    if op in ex.LOGIC_OPS and a.is_float:
                        self.add(f"{name}: {op} needs bool or integer operands, got {a}")
                    if op in ex.FLOAT_ONLY and not a.is_float:
                        self.add(f"{name}: {op} needs float operands, got {a}")
                    if op in ("floordiv", "mod") and not a.is_int:
                        self.add(f"{name}: {op} needs integer operands, got {a}")
                    if d != a:
                        self.add(f"{name}: result dtype {d} differs from its operands' {a}")
            elif op == "select":
                c, a, b = tys
                if not c.is_bool:
                    self.add(f"{name}: the condition ({ins[0].src}) must be bool, got {c}")
                if a != b or d != a:
                    self.add(f"{name}: branches {ins[1].src} ({a}) and {ins[2].src} ({b}) and "
                             f"the result ({d}) must share one dtype")
            elif op == "cast":
                want = n.attr("dtype")
                if want is not None and want != d:
                    self.add(f"{name}: attr dtype {want} differs from the node's dtype {d}")
            elif op == "reduce":
                comb = n.attr("combiner")
                if comb not in ex.COMBINERS:
                    self.add(f"{name}: unknown combiner {comb!r}; expected one of "
                             f"{', '.join(ex.COMBINERS)}")
                if d != tys[0]:
                    self.add(f"{name}: result dtype {d} differs from its input's {tys[0]}")
        elif n.op in LOADS:
            other, pred = n.attr("other"), n.attr("pred")
            if other is not None and (not isinstance(other, ex.Const) or other.dtype != d):
                self.add(f"{name}: 'other' must be a {d} constant, got "
                         f"{ex.to_text(other) if isinstance(other, ex.Expr) else repr(other)}")
            if pred is not None and other is None:
                self.add(f"{name}: a predicated load needs 'other' (the value where pred is false)")
            hint = n.attr("l2_prefetch")
            if hint is not None and (n.op != "move.global.reg" or hint not in L2_PREFETCH_SIZES):
                self.add(f"{name}: l2_prefetch {hint!r} must be one of {L2_PREFETCH_SIZES} on a "
                         f"global load")
            elif hint is not None and n.attr("buffer") in self.written:
                self.add(f"{name}: l2_prefetch on {n.attr('buffer')}, which the kernel writes "
                         f"(the hint reads through the non-coherent path: read-only buffers only)")
            self.data_rules(n, ins)
        elif n.op in STORES:
            self.data_rules(n, ins)
            self.combine_rules(n)
        elif n.op == SHUFFLE:
            if n.attr("mode") not in SHUFFLE_MODES:
                self.add(f"{name}: unknown shuffle mode {n.attr('mode')!r}; expected one of "
                         f"{', '.join(SHUFFLE_MODES)}")
            if d != tys[0]:
                self.add(f"{name}: result dtype {d} differs from its input's {tys[0]}")

    def data_rules(self, n: Node, ins: list[Edge]):
        """A load's or store's data indices: well-formed (variable, extent) pairs whose
        variables no scope declares, each fed by an integer register value."""
        data = n.attr("data")
        if data is None:
            return
        if not isinstance(data, tuple) or not data or not all(
                isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str)
                and type(x[1]) is int and x[1] >= 1 for x in data):
            self.add(f"{self.desc(n)}: data must be a non-empty tuple of (variable, extent >= 1) "
                     f"pairs, got {data!r}")
            return
        scope_vars = {s.attr("var") for s in self.scopes.values()}
        names = [v for v, _ in data]
        clash = sorted(set(names) & scope_vars)
        if clash or len(set(names)) != len(names):
            self.add(f"{self.desc(n)}: data variables {', '.join(names)} must be distinct and "
                     f"differ from every scope variable{' (' + ', '.join(clash) + ')' if clash else ''}")
        first = first_data_slot(n)
        for e in ins[first:]:
            if not e.dtype.is_int:
                self.add(f"{self.desc(n)}: data index {e.slot - first} from {e.src} is {e.dtype}; "
                         f"it must be an integer")
        if n.attr("pred") is not None and set(names) & ex.free_vars(n.attr("pred")):
            self.add(f"{self.desc(n)}: its predicate uses a data variable; only the offset may")

    def combine_rules(self, n: Node):
        """A combining store: `combine="add"` on a global store of numbers; on the CPU,
        where the grid's iterations run at once and adds are plain, a grid of one."""
        combine = n.attr("combine")
        if combine is None:
            return
        if combine != "add" or n.op != "move.reg.global" or n.dtype is None or n.dtype.is_bool \
                or n.dtype.itemsize < 4:
            self.add(f"{self.desc(n)}: combine {combine!r} must be \"add\" on a global store of 32- or "
                     f"64-bit numbers (16-bit sums accumulate in float32)")
        elif self.k.target == "cpu" and self.k.grid != 1:
            self.add(f"{self.desc(n)}: a CPU kernel that adds into memory runs its grid of "
                     f"{self.k.grid} iterations at once without atomics; it needs a grid of one")

    # ------------------------------------------------------------------ 5. visibility
    def expr_attrs(self, n: Node):
        """(key, expr, scope whose variables it may use, required dtype kind) per Expr attr."""
        out = []
        for key, v in n.attrs:
            if not isinstance(v, ex.Expr):
                continue
            scope = n.scope
            if n.op == "compute.reduce" and key == "mask":
                over = n.attr("over")
                scope = over if over in self.scopes else None
                if scope is None:
                    continue
            out.append((key, v, scope))
        return out

    def sibling_problem(self, src: Node, use_chain: list[str]) -> str | None:
        """For a register value `src` used in a scope whose chain is `use_chain` (not
        inside src's scope): None when the use is allowed by the aligned-sibling rule
        (src lies directly in a vector scope V1, and `use_chain` holds a vector scope V2
        with V1's parent and extent), else a hint ("" or "; ...") for the message."""
        s1 = self.scopes.get(src.scope)
        if s1 is None:
            return ""
        used = [self.scopes[c] for c in use_chain if c in self.scopes and c != s1.id]
        vec2 = [s for s in used if s.scope_kind == "vector"]
        if s1.scope_kind == "vector" and vec2:
            for s2 in vec2:
                if s2.scope != s1.scope:
                    continue
                e1, e2 = s1.attr("extent"), s2.attr("extent")
                if e1 == e2:
                    return None
                return (f"; sibling vector scopes {s1.id} and {s2.id} share values only when "
                        f"they are aligned (same extent), but {s1.id} has {e1} lanes and "
                        f"{s2.id} has {e2}")
            s2 = vec2[-1]
            return (f"; aligned sibling vector scopes must have the same parent, but {s1.id} "
                    f"lies in {s1.scope} and {s2.id} in {s2.scope}")
        siblings = [s for s in used if s.scope == s1.scope]
        if siblings:
            bad = s1 if s1.scope_kind != "vector" else siblings[0]
            return (f"; only vector scopes share values with their siblings (lane i reads lane "
                    f"i), but {self.desc(bad)} is a {bad.scope_kind} scope")
        outer = self.chain(s1.scope) or []
        src_chain = [c.id for c in outer] + [s1.id]
        for v1 in outer:
            if v1.scope_kind != "vector":
                continue
            if any(c in self.scopes and c not in src_chain and self.scopes[c].scope == v1.scope
                   and self.scopes[c].scope_kind == "vector" for c in use_chain):
                return (f"; only values defined directly in vector scope {v1.id} (not in "
                        f"scopes inside it) are visible in its aligned siblings")
        return ""

    def check_visibility(self):
        for e in self.good_edges:
            if e.level != "reg":
                continue
            src, dst = self.nodes[e.src], self.nodes[e.dst]
            src_chain = self.chain_ids(src.scope)
            dst_chain = self.chain_ids(dst.scope)
            if src_chain is None or dst_chain is None:
                continue
            if dst.op in ("compute.reduce", MMA):
                over = dst.attr("over")
                over_chain = self.chain_ids(over) if over in self.scopes else None
                if over_chain is not None and src.scope is not None and src.scope not in over_chain:
                    why = self.sibling_problem(src, over_chain)
                    if why is None:
                        continue
                    self.add(f"value {self.desc(src)} is used outside its scope: "
                             f"{self.desc(dst)} reduces over {over}, but {e.src} lives in "
                             f"{src.scope}, which is not {over} or a scope around it{why}")
                continue
            if src.scope is not None and src.scope not in dst_chain:
                why = self.sibling_problem(src, dst_chain)
                if why is None:
                    continue
                self.add(f"value {self.desc(src)} is used outside its scope: it lives in "
                         f"{self.desc(src.scope)} but {self.desc(dst)} is in "
                         f"{self.desc(dst.scope) if dst.scope else 'the root'}, which is not "
                         f"inside it{why}")
        for n in self.nodes.values():
            if n.op == "compute.reduce":
                over = n.attr("over")
                s = self.scopes.get(over) if isinstance(over, str) else None
                if s is None:
                    self.add(f"{self.desc(n)}: 'over' must name a scope, got {over!r}")
                else:
                    if s.scope != n.scope:
                        self.add(f"{self.desc(n)} lies in {n.scope} but reduces over {over}, "
                                 f"whose parent is {s.scope}; a reduce lies in the parent of its "
                                 f"'over' scope")
                    if s.scope_kind in ("grid", "block"):
                        self.add(f"{self.desc(n)} reduces over the {s.scope_kind} scope {over}: "
                                 f"cross-thread reductions are spelled with shuffles, shared "
                                 f"memory and barriers")
            for key, e, scope in self.expr_attrs(n):
                chain = self.chain(scope)
                if chain is None:
                    continue
                visible = {s.attr("var") for s in chain if isinstance(s.attr("var"), str)}
                data = set(data_extents(n)) if key == "offset" else set()
                bad = sorted(ex.free_vars(e) - visible - data)
                if bad:
                    self.add(f"{self.desc(n)}: {key} {ex.to_text(e)} uses "
                             f"{', '.join(bad)}, which {'is' if len(bad) == 1 else 'are'} not a "
                             f"variable of the scopes around it (visible: "
                             f"{', '.join(sorted(visible)) or 'none'})")
                wrong = sorted({v.name for v in ex.postorder(e) if isinstance(v, ex.Var)
                                and v.dtype != dt.INDEX and v.name in visible})
                if wrong:
                    self.add(f"{self.desc(n)}: {key} uses scope variables {', '.join(wrong)} with "
                             f"a dtype other than int64")
                if ex.loads(e):
                    self.add(f"{self.desc(n)}: {key} {ex.to_text(e)} loads from a tensor; GIR "
                             f"reads memory only through move nodes")
            index_key = "offset" if n.op in LOADS or n.op in STORES else \
                "lane" if n.op == SHUFFLE else None
            if index_key is not None:
                key, v = index_key, n.attr(index_key)
                if not isinstance(v, ex.Expr):
                    self.add(f"{self.desc(n)}: {key} must be an int64 expression, got {v!r}")
                elif v.dtype != dt.INDEX:
                    self.add(f"{self.desc(n)}: {key} {ex.to_text(v)} is {v.dtype}; "
                             f"expected int64")
            for key in ("pred", "mask"):
                v = n.attr(key)
                if v is None:
                    continue
                if not isinstance(v, ex.Expr) or not v.dtype.is_bool:
                    shown = ex.to_text(v) if isinstance(v, ex.Expr) else repr(v)
                    self.add(f"{self.desc(n)}: {key} {shown} must be a bool expression")


class _TcVerifier(BulkCopyChecks, TensorCoreChecks, _Verifier):
    """The verifier with the tensor-core and bulk-copy nodes' hooks and checks
    (`gir_verify_tc`, `gir_verify_bulk`)."""
