"""GIR: the instruction-level graph IR in which data movement is explicit.

A `Kernel` holds its parameters (global buffers), shared-memory allocations and a
graph of `Node`s joined by `Edge`s.

Nodes come in three families, named by the prefix of `Node.op`:

* **parallel** — `parallel.grid|block|serial|unroll|vector`: a scope over the
  index variable `attrs["var"]` in `[0, attrs["extent"])`. Scopes nest through
  `Node.scope` (the id of the enclosing scope) and own the nodes whose `scope`
  names them. A kernel has one grid scope at the root; a GPU kernel has one block
  scope directly inside it (thread index; warp = var // 32, lane = var % 32).
  Every value defined inside a vector scope is a vector of its extent per thread.
  **Visibility**: a node may use register values defined in its own scope or in
  the scopes around it, plus one more case, *aligned sibling vector scopes*: a
  value defined directly in a vector scope V1 (its `scope` is V1, not a scope
  inside V1) may be used in a vector scope V2, or in any scope inside V2, when V1
  and V2 are aligned — the same parent scope and the same extent. Lane i of V2
  reads lane i of V1: the value is a per-thread register tile kept between the two
  scopes (e.g. a softmax row: x loaded in V1, m = reduce(max over V1) in the
  parent, then exp(x - m) in V2 and (e / s) in V3). Siblings with other extents or
  parents, and serial/unroll siblings, share nothing; an edge from V1 into V2
  orders V1 before V2 (code generators emit V1's vectors in the parent's block).
* **compute** — arithmetic on register values:
  `compute.const` (attrs value: an `expr.Const`), `compute.index` (attrs expr:
  an int64 expression of scope variables), `compute.<op>` for the unary and binary
  ops of `ir.expr` plus `compute.select` and `compute.cast` (attrs dtype), and
  `compute.reduce` (attrs combiner, over: the id of a child scope, mask: an
  optional bool expression; its input is a value visible in scope `over` — defined
  there, further out, or directly in an aligned sibling of `over` or of a vector
  scope around it — and its result lives in the parent of `over`: the combination
  of the input over all iterations of `over` where mask holds).
* **data movement** — `move.<from>.<to>` and `sync.block`:
  `move.global.reg` / `move.shared.reg` load `buffer[offset]` (attrs buffer,
  offset: an int64 expression in elements, pred: optional bool expression,
  other: the `expr.Const` a lane reads where pred is false; a global load may
  carry l2_prefetch: 64, 128 or 256, a hint that the L2 fetch the whole aligned
  span of that many bytes around each access — a hint only, the meaning is the
  same without it; a load whose address is data — a gather — carries `data`:
  ((var, extent), ...), and slot 1 + j takes an integer register value that
  `offset` names `var` (`data$j`, a name no scope variable has): wherever pred
  holds the value must lie in [0, extent) — the interpreter raises
  IndexOutOfRangeError when it does not, code generators clamp it into that
  range so that no access leaves the buffer, and the verifier proves bounds with
  it ranging over [0, extent));
  in a vector scope, code generators make one wide access where the offset has
  stride 1 in the lane variable and pred does not depend on it, accesses of r
  contiguous lanes each ("runs") where that holds after writing the lane as
  a*r + b (b < r: e.g. j = (v // 4) * 256 + t * 4 + v % 4 is runs of 4), and
  lane-by-lane accesses otherwise; the meaning is always lane by lane;
  `move.reg.global` / `move.reg.shared` store a register value (attrs buffer,
  offset, pred); a global store may carry `data` as a load does (operand slots
  2 + j), where a data index outside [0, extent) makes that store write nothing
  (a scatter's index out of range hits nothing), and `combine: "add"`, which adds
  the value to the element instead of replacing it: iterations that run at once —
  threads, and on the CPU the grid's iterations — may add to one element (code
  generators use atomic adds where threads run at once; a CPU kernel with such a
  store has a grid of one iteration), every add counts, and one thread's adds
  apply in its iteration order; `move.reg.reg` is a warp shuffle (attrs mode: bfly|down|idx,
  lane: an int64 expression — the xor mask, the delta, or the source lane);
  `sync.block` is a barrier over the threads of a block.
  Buffers themselves are nodes: `mem.global` (one per parameter) and
  `mem.shared` (one per allocation), attrs buffer.
* **calls** — `call.gemm`, a matrix product on global buffers, made by one thread
  (CPU kernels: the host BLAS where it has one): for i < m, j < n,
  `c[c_offset + i*cr + j*cc] = sum_{l<k} a[a_offset + i*ar + l*ac] * b[b_offset +
  l*br + j*bc]` with (ar, ac) = a_strides and so on; every operand is converted to
  the node's dtype (the accumulation type) first, the sum to c's dtype last. Attrs
  a, b, c (buffer names), m, n, k and the offsets (int64 expressions of the scope
  variables), the strides (pairs of ints). Slots 0, 1, 2 take the global states of
  a, b and c; the node produces c's next state, as a store does.

Shared allocations of a GPU kernel that total at most `STATIC_SHARED_BYTES` (the
48 KiB a block may declare statically) are declared statically; above that, all of
them are laid out in the block's dynamic shared memory at `Kernel.shared_offsets`
(16-byte aligned), `Kernel.dynamic_shared_bytes` long, which the launch requests
(opting in to the device's larger limit: 227 KiB on sm_90).

Edges are data dependencies `src → dst` carrying the value's memory `level`
(global, shared or reg), its `dtype`, its per-thread `shape` and the operand
`slot` at `dst`. Memory edges (level global or shared) carry a buffer's state:
a load reads the state on its edge, a store produces a new state, and a barrier
passes states through, so "is there a barrier between this write and that read"
is a question about paths in the graph.

Kernels are immutable; passes build new ones (see `KernelBuilder`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from ..errors import IRError
from . import expr as ex
from .dtypes import DType, float32 as F32
from .gir_text import print_kernel

if TYPE_CHECKING:
    import networkx as nx

LEVELS = ("global", "shared", "reg")
ROLES = ("in", "out", "inout", "temp")
SCOPE_KINDS = ("grid", "block", "serial", "unroll", "vector")
SHUFFLE_MODES = ("bfly", "down", "idx")
WARP_SIZE = 32
L2_PREFETCH_SIZES = (64, 128, 256)  # bytes: the hint `l2_prefetch` on a global load
COMPUTE_OPS = ("const", "index", "select", "cast", "reduce") + ex.UNARY_OPS + ex.BINARY_OPS
GEMM = "call.gemm"
GEMM_OPERANDS = ("a", "b", "c")  # the buffer attrs of a gemm node, in slot order


def data_indices(node: "Node") -> tuple[tuple[str, int], ...]:
    """A load's or store's data indices: (variable, extent) for its operand slots after
    the memory state (and a store's value), in order (none for an access whose offset
    is a function of the scope variables alone)."""
    return tuple(node.attr("data") or ())


def first_data_slot(node: "Node") -> int:
    """The operand slot of an access's first data index: 1 for loads, 2 for stores."""
    return 2 if node.op.startswith("move.reg.") else 1


def data_var(j: int) -> str:
    """The name of a load's j-th data index in its offset expression."""
    return f"data${j}"


def buffers_read(node: "Node") -> tuple[str, ...]:
    """The buffers whose contents `node` reads (loads and calls)."""
    if node.op == GEMM:
        return (node.attr("a"), node.attr("b"))
    return (node.attr("buffer"),) if node.op in ("move.global.reg", "move.shared.reg") else ()


def buffers_written(node: "Node") -> tuple[str, ...]:
    """The buffers whose contents `node` writes (stores and calls)."""
    if node.op == GEMM:
        return (node.attr("c"),)
    return (node.attr("buffer"),) if node.op in ("move.reg.global", "move.reg.shared") else ()


# Tensor-core nodes (ir/gir_verify_tc.py describes and checks them).
CP_ASYNC, LDMATRIX, MMA, FRAG = "move.global.shared", "move.shared.frag", "compute.mma", "compute.frag"
WGMMA = "compute.wgmma"
ASYNC_COMMIT, ASYNC_WAIT = "sync.async_commit", "sync.async_wait"
# Bulk tensor copies (TMA, sm_90) and the shared-memory barriers they complete.
TMA_LOAD = "move.global.shared.tensor"
MBAR_INIT, MBAR_EXPECT, MBAR_WAIT = "sync.mbarrier_init", "sync.mbarrier_expect", "sync.mbarrier_wait"
MBAR_ARRIVE = "sync.mbarrier_arrive"
MBAR_OPS = (MBAR_INIT, MBAR_EXPECT, MBAR_ARRIVE, MBAR_WAIT)
TC_OPS = (CP_ASYNC, LDMATRIX, MMA, WGMMA, FRAG, ASYNC_COMMIT, ASYNC_WAIT, TMA_LOAD) + MBAR_OPS
TMA_SWIZZLES = (32, 64, 128)  # bytes: a tensor map's swizzle span (its box's row bytes)
TMA_MAX_BOX = 256  # elements along any axis of a tensor map's box
TENSOR_MAP_BYTES, TENSOR_MAP_ALIGN = 128, 64  # a tensor map parameter's size and alignment
CHUNK = 8  # 2-byte elements per 16-byte chunk of a tensor-core shared tile
PANEL = 64  # 2-byte elements per row of a panel (128 bytes: the widest wgmma swizzle)
STATIC_SHARED_BYTES = 48 * 1024  # shared memory a block may declare statically
SHARED_ALIGN = 16  # bytes: every shared allocation's alignment


def swizzle_offset(row, col, row_elems: int, swizzle: bool, panel_rows: int = 0):
    """The element offset of (row, col) in a shared tile of `row_elems`-element rows
    (2-byte elements). Swizzled, a row's 16-byte chunk c lies at chunk
    c ^ ((row // period) % min(chunks, 8)), period = max(1, 8 // chunks): any 8 rows
    that ldmatrix or cp.async touch at once fall into 8 different 16-byte bank
    groups; with rows of 16, 32 or 64 elements this is the hardware's 32, 64 or 128-byte
    swizzle of a 1024-byte aligned tile, which wgmma reads. With `panel_rows`, rows
    wider than `PANEL` are cut into panels of `PANEL` columns, each `panel_rows` rows
    of `PANEL` elements laid out one after another (wgmma's MN-major tiles).
    Works on ints and numpy arrays alike."""
    if panel_rows and row_elems > PANEL:
        return (col // PANEL) * (panel_rows * PANEL) + swizzle_offset(row, col % PANEL, PANEL, swizzle)
    if not swizzle:
        return row * row_elems + col
    chunks = row_elems // CHUNK
    period = max(1, 8 // chunks)
    return row * row_elems + ((col // CHUNK) ^ ((row // period) % min(chunks, 8))) * CHUNK + col % CHUNK


@dataclass(frozen=True)
class Buffer:
    """A global-memory kernel parameter: a dense array with element strides."""

    name: str
    dtype: DType
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    role: str  # "in", "out", "inout", or "temp" (scratch that kernels of one program share)

    @property
    def size(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


@dataclass(frozen=True)
class TensorMap:
    """What a TMA copy's tensor map describes (the kernel receives it as a by-value
    parameter, encoded at launch from `buffer`'s address): the tensor at element
    `base` of global `buffer`, `dims` elements along each axis (innermost first,
    contiguous), `strides` elements between consecutive entries of each outer axis,
    copied `box` elements at a time into shared memory swizzled over `swizzle`-byte
    rows (the box's innermost extent in bytes). Coordinates outside `dims` read zeros."""

    buffer: str
    base: int
    dims: tuple[int, ...]
    strides: tuple[int, ...]
    box: tuple[int, ...]
    swizzle: int

    @classmethod
    def of(cls, node: "Node") -> "TensorMap":
        """The tensor map of a `move.global.shared.tensor` node."""
        return cls(node.attr("buffer"), node.attr("base"), tuple(node.attr("dims")),
                   tuple(node.attr("strides")), tuple(node.attr("box")), node.attr("swizzle"))

    def attrs(self) -> dict[str, Any]:
        return {"buffer": self.buffer, "base": self.base, "dims": self.dims, "strides": self.strides,
                "box": self.box, "swizzle": self.swizzle}


def tensor_maps(kernel: "Kernel") -> list[TensorMap]:
    """The distinct tensor maps of a kernel's TMA copies, in node order: its by-value
    parameters after the buffers (`tensor_map_param` names them)."""
    return list(dict.fromkeys(TensorMap.of(n) for n in kernel.nodes if n.op == TMA_LOAD))


def tensor_map_param(k: int, tmap: TensorMap) -> str:
    return f"tmap{k}.{tmap.buffer}"


@dataclass(frozen=True)
class SharedAlloc:
    """A block's shared-memory array (`size` elements, `align`-byte aligned)."""

    name: str
    dtype: DType
    size: int
    align: int = SHARED_ALIGN

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


@dataclass(frozen=True)
class Node:
    """One GIR node. `attrs` is stored as sorted (key, value) pairs: read it with `attr`."""

    id: str
    op: str
    scope: str | None
    dtype: DType | None = None
    attrs: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self):
        if not isinstance(self.attrs, tuple):
            object.__setattr__(self, "attrs", tuple(sorted(dict(self.attrs).items())))

    @property
    def family(self) -> str:
        return self.op.split(".", 1)[0]

    def attr(self, key: str, default=None):
        for k, v in self.attrs:
            if k == key:
                return v
        return default

    @property
    def attr_map(self) -> dict[str, Any]:
        return dict(self.attrs)

    @property
    def is_scope(self) -> bool:
        return self.family == "parallel"

    @property
    def scope_kind(self) -> str | None:
        return self.op.split(".", 1)[1] if self.is_scope else None

    @property
    def is_move(self) -> bool:
        return self.family == "move"

    def replace(self, **changes) -> "Node":
        values = {"id": self.id, "op": self.op, "scope": self.scope, "dtype": self.dtype,
                  "attrs": self.attr_map}
        if "attrs" in changes:
            changes["attrs"] = tuple(sorted(dict(changes["attrs"]).items()))
        values.update(changes)
        if isinstance(values["attrs"], dict):
            values["attrs"] = tuple(sorted(values["attrs"].items()))
        return Node(**values)


@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    slot: int
    level: str
    dtype: DType
    shape: tuple[int, ...] = ()


@dataclass(frozen=True)
class Kernel:
    """A GIR kernel. `nodes` are listed in a valid emission order (scopes before
    what they own, producers before consumers)."""

    name: str
    params: tuple[Buffer, ...]
    shared: tuple[SharedAlloc, ...]
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    target: str = "gpu"  # "gpu" or "cpu": which family of schedules built it
    meta: tuple[tuple[str, Any], ...] = field(default=(), compare=False)

    # ------------------------------------------------------------------ lookups
    def __getstate__(self):
        """Pickled (the disk cache) without the cached lookups, rebuilt on use."""
        return {k: v for k, v in self.__dict__.items()
                if not isinstance(getattr(Kernel, k, None), cached_property)}

    @cached_property
    def node_map(self) -> dict[str, Node]:
        return {n.id: n for n in self.nodes}

    def node(self, node_id: str) -> Node:
        try:
            return self.node_map[node_id]
        except KeyError:
            raise IRError(f"kernel {self.name} has no node {node_id!r}") from None

    @cached_property
    def graph(self) -> nx.MultiDiGraph:
        import networkx as nx

        g = nx.MultiDiGraph()
        for n in self.nodes:
            g.add_node(n.id, node=n)
        for e in self.edges:
            g.add_edge(e.src, e.dst, edge=e)
        return g

    def inputs(self, node_id: str) -> list[Edge]:
        """Edges into a node, ordered by slot."""
        return sorted((e for e in self.edges if e.dst == node_id), key=lambda e: e.slot)

    @cached_property
    def _in_edges(self) -> dict[str, list[Edge]]:
        out: dict[str, list[Edge]] = {n.id: [] for n in self.nodes}
        for e in self.edges:
            out.setdefault(e.dst, []).append(e)
        for v in out.values():
            v.sort(key=lambda e: e.slot)
        return out

    def operands(self, node_id: str) -> list[Edge]:
        """Edges into a node ordered by slot (cached)."""
        return self._in_edges.get(node_id, [])

    def param(self, name: str) -> Buffer:
        for p in self.params:
            if p.name == name:
                return p
        raise IRError(f"kernel {self.name} has no parameter {name!r}")

    def shared_alloc(self, name: str) -> SharedAlloc:
        for s in self.shared:
            if s.name == name:
                return s
        raise IRError(f"kernel {self.name} has no shared allocation {name!r}")

    # ------------------------------------------------------------------ scopes
    @cached_property
    def scopes(self) -> dict[str, Node]:
        return {n.id: n for n in self.nodes if n.is_scope}

    def scope_chain(self, scope_id: str | None) -> list[Node]:
        """The scopes around (and including) `scope_id`, outermost first."""
        chain = []
        while scope_id is not None:
            s = self.scopes.get(scope_id)
            if s is None:
                raise IRError(f"kernel {self.name}: unknown scope {scope_id!r}")
            chain.append(s)
            scope_id = s.scope
        return chain[::-1]

    def find_scope(self, kind: str) -> Node | None:
        for n in self.nodes:
            if n.op == f"parallel.{kind}":
                return n
        return None

    @property
    def grid(self) -> int:
        g = self.find_scope("grid")
        return g.attr("extent") if g is not None else 1

    @property
    def block(self) -> int:
        b = self.find_scope("block")
        return b.attr("extent") if b is not None else 1

    def ranges(self, scope_id: str | None) -> dict[str, tuple[int, int]]:
        """Inclusive ranges of the scope variables visible in `scope_id`."""
        return {s.attr("var"): (0, s.attr("extent") - 1) for s in self.scope_chain(scope_id)}

    def vector_shape(self, scope_id: str | None) -> tuple[int, ...]:
        return tuple(s.attr("extent") for s in self.scope_chain(scope_id) if s.scope_kind == "vector")

    @property
    def shared_bytes(self) -> int:
        return sum(s.nbytes for s in self.shared)

    @cached_property
    def shared_offsets(self) -> dict[str, int]:
        """Each shared allocation's byte offset in one block-wide layout (each at its
        alignment)."""
        out, end = {}, 0
        for s in self.shared:
            end = -(-end // s.align) * s.align
            out[s.name] = end
            end += s.nbytes
        return out

    @property
    def shared_align(self) -> int:
        """The largest alignment a shared allocation asks (where the layout's base lies)."""
        return max([SHARED_ALIGN] + [s.align for s in self.shared])

    @property
    def dynamic_shared_bytes(self) -> int:
        """Bytes of dynamic shared memory a launch requests: 0 where the allocations
        fit the static 48 KiB, else the end of the layout (`shared_offsets`)."""
        if self.target != "gpu" or not self.shared:
            return 0
        last = self.shared[-1]
        end = self.shared_offsets[last.name] + last.nbytes
        return end if end > STATIC_SHARED_BYTES else 0

    def __str__(self):
        return print_kernel(self)


def scope_var(kernel: Kernel, scope_id: str) -> ex.Var:
    return ex.Var(kernel.scopes[scope_id].attr("var"))


class KernelBuilder:
    """Mutable helper that assembles a `Kernel`. Node ids are `%<n>` in creation order."""

    def __init__(self, name: str, target: str = "gpu"):
        self.name = name
        self.target = target
        self.params: list[Buffer] = []
        self.shared: list[SharedAlloc] = []
        self.nodes: list[Node] = []
        self.edges: list[Edge] = []
        self._scopes: dict[str, Node] = {}
        self._mem: dict[str, str] = {}  # buffer name -> current state node id
        self._count = 0

    # ------------------------------------------------------------------ structure
    def _new(self, op: str, scope: str | None, dtype: DType | None = None, **attrs) -> Node:
        node = Node(f"%{self._count}", op, scope, dtype, tuple(sorted(attrs.items())))
        self._count += 1
        self.nodes.append(node)
        if node.is_scope:
            self._scopes[node.id] = node
        return node

    def scope(self, kind: str, var: str, extent: int, parent: str | None) -> str:
        if kind not in SCOPE_KINDS:
            raise IRError(f"unknown scope kind {kind!r}")
        return self._new(f"parallel.{kind}", parent, var=var, extent=int(extent)).id

    def _chain(self, scope: str | None) -> list[Node]:
        out = []
        while scope is not None:
            out.append(self._scopes[scope])
            scope = self._scopes[scope].scope
        return out[::-1]

    def value_shape(self, scope: str | None) -> tuple[int, ...]:
        return tuple(s.attr("extent") for s in self._chain(scope) if s.scope_kind == "vector")

    def _edge(self, src: Node | str, dst: Node, slot: int, level: str, dtype: DType | None = None):
        src_node = src if isinstance(src, Node) else self._node(src)
        shape = self.value_shape(src_node.scope) if level == "reg" else ()
        self.edges.append(Edge(src_node.id, dst.id, slot, level, dtype or src_node.dtype, shape))

    def _node(self, node_id: str) -> Node:
        for n in reversed(self.nodes):
            if n.id == node_id:
                return n
        raise IRError(f"no node {node_id}")

    # ------------------------------------------------------------------ memory
    def add_param(self, buf: Buffer) -> None:
        self.params.append(buf)
        self._mem[buf.name] = self._new("mem.global", None, buf.dtype, buffer=buf.name).id

    def add_shared(self, alloc: SharedAlloc) -> None:
        self.shared.append(alloc)
        self._mem[alloc.name] = self._new("mem.shared", None, alloc.dtype, buffer=alloc.name).id

    def _dtype_of(self, buffer: str) -> DType:
        for b in (*self.params, *self.shared):
            if b.name == buffer:
                return b.dtype
        raise IRError(f"kernel {self.name} has no buffer {buffer!r}")

    def _level_of(self, buffer: str) -> str:
        return "shared" if any(s.name == buffer for s in self.shared) else "global"

    # ------------------------------------------------------------------ compute
    def const(self, value: ex.Const, scope: str | None) -> str:
        return self._new("compute.const", scope, value.dtype, value=value).id

    def index(self, expr: ex.Expr, scope: str | None) -> str:
        return self._new("compute.index", scope, expr.dtype, expr=expr).id

    def compute(self, op: str, args: Iterable[str], scope: str | None, dtype: DType, **attrs) -> str:
        node = self._new(f"compute.{op}", scope, dtype, **attrs)
        for slot, a in enumerate(args):
            self._edge(a, node, slot, "reg")
        return node.id

    def reduce(self, combiner: str, value: str, over: str, mask: ex.Expr | None = None) -> str:
        parent = self._scopes[over].scope
        node = self._new("compute.reduce", parent, self._node(value).dtype,
                         combiner=combiner, over=over, mask=mask)
        self._edge(value, node, 0, "reg")
        return node.id

    # ------------------------------------------------------------------ movement
    def load(self, buffer: str, offset: ex.Expr, scope: str | None, pred: ex.Expr | None = None,
             other: ex.Const | None = None, data: Iterable[tuple[str, int]] = ()) -> str:
        """A load of `buffer[offset]`; `data` holds (register value, extent) per data
        index, named `data_var(j)` in `offset` (see the module docstring)."""
        level = self._level_of(buffer)
        mem = self._node(self._mem[buffer])
        if other is None:
            other = ex.Const(0, self._dtype_of(buffer))
        data = tuple(data)
        attrs = {"data": tuple((data_var(j), int(n)) for j, (_, n) in enumerate(data))} if data else {}
        node = self._new(f"move.{level}.reg", scope, self._dtype_of(buffer), buffer=buffer,
                         offset=offset, pred=pred, other=other, **attrs)
        self._edge(mem, node, 0, level, self._dtype_of(buffer))
        for j, (value, _) in enumerate(data):
            self._edge(value, node, 1 + j, "reg")
        return node.id

    def store(self, buffer: str, offset: ex.Expr, value: str, scope: str | None,
              pred: ex.Expr | None = None, data: Iterable[tuple[str, int]] = (),
              combine: str | None = None) -> str:
        """A store of `value` at `buffer[offset]`; `data` as for `load`; `combine="add"`
        adds the value to the element (see the module docstring)."""
        level = self._level_of(buffer)
        mem = self._node(self._mem[buffer])
        data = tuple(data)
        attrs = {"data": tuple((data_var(j), int(n)) for j, (_, n) in enumerate(data))} if data else {}
        if combine is not None:
            attrs["combine"] = combine
        node = self._new(f"move.reg.{level}", scope, self._dtype_of(buffer), buffer=buffer,
                         offset=offset, pred=pred, **attrs)
        self._edge(mem, node, 0, level, self._dtype_of(buffer))
        self._edge(value, node, 1, "reg")
        for j, (index, _) in enumerate(data):
            self._edge(index, node, 2 + j, "reg")
        self._mem[buffer] = node.id
        return node.id

    def shuffle(self, mode: str, value: str, lane: ex.Expr, scope: str | None) -> str:
        if mode not in SHUFFLE_MODES:
            raise IRError(f"unknown shuffle mode {mode!r}")
        node = self._new("move.reg.reg", scope, self._node(value).dtype, mode=mode, lane=lane)
        self._edge(value, node, 0, "reg")
        return node.id

    def sync(self, buffers: Iterable[str], scope: str | None) -> str:
        """A block barrier; the listed shared buffers' states pass through it."""
        node = self._new("sync.block", scope, None)
        for slot, b in enumerate(buffers):
            mem = self._node(self._mem[b])
            self._edge(mem, node, slot, "shared", self._dtype_of(b))
            self._mem[b] = node.id
        return node.id

    def gemm(self, dtype: DType, m: ex.Expr, n: ex.Expr, k: ex.Expr,
             operands: Iterable[tuple[str, ex.Expr, tuple[int, int]]], scope: str) -> str:
        """A `call.gemm` (see the module docstring): `operands` holds (buffer, offset,
        (row stride, column stride)) for a, b and c."""
        attrs = {"m": m, "n": n, "k": k}
        operands = list(operands)
        for key, (buf, offset, strides) in zip(GEMM_OPERANDS, operands):
            attrs.update({key: buf, f"{key}_offset": offset,
                          f"{key}_strides": tuple(int(x) for x in strides)})
        node = self._new(GEMM, scope, dtype, **attrs)
        for slot, (buf, _, _) in enumerate(operands):
            self._edge(self._node(self._mem[buf]), node, slot, "global", self._dtype_of(buf))
        self._mem[operands[2][0]] = node.id
        return node.id

    # ------------------------------------------------------------------ tensor cores
    def _state_edge(self, buffer: str, node: Node, slot: int) -> None:
        self._edge(self._node(self._mem[buffer]), node, slot, self._level_of(buffer),
                   self._dtype_of(buffer))

    def cp_async(self, src: str, offset: ex.Expr, dst: str, row: ex.Expr, col: ex.Expr,
                 row_elems: int, swizzle: bool, nbytes: int, scope: str,
                 pred: ex.Expr | None = None, panel_rows: int = 0) -> str:
        """Copy `nbytes` from `src[offset]` to the shared tile `dst` at (row, col) (laid
        out as `swizzle_offset` says); zeros where `pred` is false (cp.async with
        src-size 0; a plain copy for 2 bytes)."""
        node = self._new(CP_ASYNC, scope, self._dtype_of(src), buffer=src, offset=offset, dst=dst,
                         row=row, col=col, row_elems=row_elems, swizzle=swizzle, bytes=nbytes,
                         pred=pred, **({"panel_rows": panel_rows} if panel_rows else {}))
        self._state_edge(src, node, 0)
        self._state_edge(dst, node, 1)
        self._mem[dst] = node.id
        return node.id

    def async_sync(self, op: str, buffers: Iterable[str], scope: str, **attrs) -> str:
        """`sync.async_commit` or `sync.async_wait` (attrs pending): states pass through."""
        node = self._new(op, scope, None, **attrs)
        for slot, b in enumerate(buffers):
            self._state_edge(b, node, slot)
            self._mem[b] = node.id
        return node.id

    def tma_load(self, tmap: TensorMap, coords: Iterable[ex.Expr], dst: str, row: ex.Expr,
                 col: ex.Expr, row_elems: int, panel_rows: int, barrier: str, slot: ex.Expr,
                 scope: str, pred: ex.Expr) -> str:
        """A bulk tensor copy (TMA), issued by the threads where `pred` holds (one): the
        box of `tmap` at `coords` (innermost first) into the shared tile `dst` from
        (row, col) on (`swizzle_offset` with `row_elems`, `panel_rows`; the box's rows
        are the tile's), completing transaction bytes on `barrier[slot]`."""
        node = self._new(TMA_LOAD, scope, None, **tmap.attrs(), coords=tuple(coords), dst=dst, row=row,
                         col=col, row_elems=row_elems, panel_rows=panel_rows, barrier=barrier,
                         slot=slot, pred=pred)
        for k, buffer in enumerate((tmap.buffer, dst, barrier)):
            self._state_edge(buffer, node, k)
        self._mem[dst] = self._mem[barrier] = node.id
        return node.id

    def mbarrier(self, op: str, barrier: str, tiles: Iterable[str], scope: str, **attrs) -> str:
        """`sync.mbarrier_init` (count: arrivals a phase takes; every slot, by the threads
        where `pred` holds), `sync.mbarrier_expect` (slot, bytes, pred: arrive and expect
        that many transaction bytes), `sync.mbarrier_arrive` (slot, pred: the threads
        where it holds, every thread without it, arrive) or `sync.mbarrier_wait` (slot,
        parity, pred: the threads where it holds, every thread without it, wait for
        that phase's completion). The barrier's and the `tiles`' states pass through."""
        node = self._new(op, scope, None, barrier=barrier, **attrs)
        for slot, b in enumerate((barrier, *tiles)):
            self._state_edge(b, node, slot)
            self._mem[b] = node.id
        return node.id

    def ldmatrix(self, buffer: str, row: ex.Expr, col: ex.Expr, row_elems: int, swizzle: bool,
                 trans: bool, tile: tuple[tuple[str, int], ...], shape: tuple[int, ...],
                 scope: str) -> str:
        """ldmatrix.x4 for every point of `tile` (variables the row/col expressions use
        besides the scope variables); the fragments have per-thread `shape`."""
        node = self._new(LDMATRIX, scope, self._dtype_of(buffer), buffer=buffer, row=row, col=col,
                         row_elems=row_elems, swizzle=swizzle, trans=trans, tile=tuple(tile),
                         shape=tuple(shape))
        self._state_edge(buffer, node, 0)
        return node.id

    def mma(self, a: str, b: str, over: str) -> str:
        """m16n8k16 products of fragments a (KK, MI, 8) and b (KK, NI, 4), accumulated
        in float32 over the k steps and over the iterations of scope `over`."""
        na, nb = self._node(a), self._node(b)
        shape = (na.attr("shape")[1], nb.attr("shape")[1], 4)
        node = self._new(MMA, self._scopes[over].scope, F32, over=over,
                         shape=shape)
        for slot, src in enumerate((na, nb)):
            self.edges.append(Edge(src.id, node.id, slot, "reg", src.dtype, src.attr("shape")))
        return node.id

    def wgmma(self, a: dict, b: dict, tile: tuple[tuple[str, int], ...], n: int, over: str,
              pending: int = 0) -> str:
        """wgmma.m64n`n`k16 for every point of `tile` ((kk, k steps), (mi, 64-row slabs)),
        both operands read from shared tiles through descriptors, accumulated in
        float32 over the k steps and the iterations of scope `over`; per thread the
        result has shape (mi, n / 8, 4), as mma.m16n8 accumulators of each warp's 16 rows.
        Each iteration leaves its last `pending` groups of products in flight (all
        are waited for after the loop): their tiles must not be overwritten until then.
        `a` and `b` describe an operand: buffer, row and col (the tile position of its
        first element at each tile point), row_elems, k_rows (the tile is [k][m or n],
        transposed by the instruction; else k runs along its rows) and panel_rows (see
        `swizzle_offset`)."""
        mi = dict(tile)["mi"]
        operands = []
        for name, d in (("a", a), ("b", b)):
            operands += [(f"{name}_{k}", d[k]) for k in ("buffer", "row", "col", "row_elems",
                                                         "k_rows", "panel_rows")]
        node = self._new(WGMMA, self._scopes[over].scope, F32, over=over, tile=tuple(tile), n=n,
                         pending=pending, shape=(mi, n // 8, 4), **dict(operands))
        for slot, d in enumerate((a, b)):
            self._state_edge(d["buffer"], node, slot)
        return node.id

    def frag(self, value: str, index: tuple[ex.Expr, ...], scope: str) -> str:
        """One element of a fragment value (constant indices in unroll scopes)."""
        src = self._node(value)
        node = self._new(FRAG, scope, src.dtype, index=tuple(index))
        self.edges.append(Edge(src.id, node.id, 0, "reg", src.dtype, src.attr("shape")))
        return node.id

    def build(self, **meta) -> Kernel:
        return Kernel(self.name, tuple(self.params), tuple(self.shared), tuple(self.nodes),
                      tuple(self.edges), self.target, tuple(sorted(meta.items())))


def make_kernel(name: str, params: Iterable[Buffer], shared: Iterable[SharedAlloc],
                nodes: Iterable[Node], edges: Iterable[Edge], target: str = "gpu",
                meta: Mapping[str, Any] | None = None) -> Kernel:
    """A kernel from explicit parts (parsers and passes use this)."""
    return Kernel(name, tuple(params), tuple(shared), tuple(nodes), tuple(edges), target,
                  tuple(sorted((meta or {}).items())))
