"""Verifier checks for tensor-core nodes, mixed into `gir_verify`'s verifier.

The nodes (built by `KernelBuilder.cp_async`, `async_sync`, `ldmatrix`, `mma`, `frag`):
* `move.global.shared` (cp.async): `bytes` (16, 8 or 4 through cp.async; 2 a plain
  copy) from global `buffer[offset]` into the shared tile `dst` at (`row`, `col`) of a
  layout of `row_elems`-element rows, XOR-swizzled when `swizzle` (see
  `gir.swizzle_offset`); zeros where `pred` is false. Slots: 0 the global state, 1 the
  shared state; it produces the tile's new state.
* `sync.async_commit` closes a group of cp.async copies; `sync.async_wait` (`pending`)
  waits until at most that many groups are in flight. Both pass states through.
* `move.shared.frag` (ldmatrix.x4, `.trans` when `trans`): for every point of `tile`
  ((var, extent) pairs its row/col expressions use besides the scope variables), each
  lane supplies the (row, col) of one 8-element row; the result is a fragment of
  per-thread `shape` (8 16-bit elements per point).
* `compute.mma`: A fragments (kk, mi, 8) times B fragments (kk, ni, 4) by
  mma.m16n8k16, summed in float32 over kk and over the iterations of scope `over`;
  the result, of `shape` (mi, ni, 4), lives in the parent of `over`.
* `compute.wgmma` (sm_90): wgmma.m64nNk16 (N = `n`) at every point of `tile` ((kk, k
  steps), (mi, 64-row slabs)), each operand read by a warpgroup from a shared tile
  (slot 0 A, slot 1 B) through a descriptor: `a_*`/`b_*` give its buffer, the tile
  position (row, col) of its first element, row_elems, k_rows ([k][m or n], transposed
  by the instruction) and panel_rows; summed in float32 over the tile's k steps and the
  iterations of `over`, of per-thread shape (mi, n / 8, 4) in the parent of `over`;
  each iteration leaves `pending` groups of products in flight (the interpreter
  reports a copy into a tile they still read).
* `compute.frag`: one element of a fragment at constant `index`.

Checked here: fragment shapes and dtypes; every ldmatrix reads state that passed a
`sync.async_wait` (or, after TMA copies, a `sync.mbarrier_wait`) and then a
`sync.block` since the last copy; every cp.async is
committed before anything else reads its tile; the first and last global element of
every cp.async inside its buffer where its predicate holds (as loads are checked);
ldmatrix rows 16-byte aligned and inside the tile; every wgmma operand waited for,
fenced to the async proxy (`sync.async_wait` with `proxy`) and behind a barrier, in a
1024-byte aligned tile at a descriptor-addressable position (a whole swizzle row of
16, 32 or 64 elements, or 64-column panels), the same for all threads of a warpgroup
and inside the tile; and bank conflicts: in each 8-lane phase of an ldmatrix (one 8 x 16
byte matrix) the eight rows fall into eight different 16-byte bank groups, evaluated
for every thread of the block and every tile point (the first iterations of serial
scopes, the first blocks of the grid).
"""
from __future__ import annotations

import numpy as np

from . import dtypes as dt
from . import expr as ex
from .gir import ASYNC_COMMIT, ASYNC_WAIT, CP_ASYNC, FRAG, LDMATRIX, MBAR_WAIT, MMA, PANEL, TC_OPS, \
    TMA_LOAD, WARP_SIZE, WGMMA, Node, swizzle_offset

_SAMPLES = 4  # iterations of serial and grid scopes evaluated by the bank-conflict check
_ASYNC = (ASYNC_COMMIT, ASYNC_WAIT)


class TensorCoreChecks:
    """Overrides of the verifier's per-op hooks for the tensor-core nodes."""

    def is_value_producer(self, n: Node) -> bool:
        return n.op == LDMATRIX or super().is_value_producer(n)

    def produced_level(self, n: Node):
        if n.op in (CP_ASYNC, *_ASYNC):
            return "shared"
        return super().produced_level(n)

    def accepted_level(self, n: Node, slot: int):
        if n.op == CP_ASYNC:
            return ("global", "shared")[slot] if slot < 2 else None
        if n.op in (LDMATRIX, WGMMA, *_ASYNC):
            return "shared"
        return super().accepted_level(n, slot)

    def expected_arity(self, n: Node):
        arity = {CP_ASYNC: (2, 2), LDMATRIX: (1, 1), MMA: (2, 2), WGMMA: (2, 2), FRAG: (1, 1),
                 ASYNC_COMMIT: (1, None), ASYNC_WAIT: (1, None)}
        return arity[n.op] if n.op in arity else super().expected_arity(n)

    def states(self, nid: str, _stack=None) -> frozenset:
        n = self.nodes.get(nid)
        if n is not None and n.op == CP_ASYNC:
            return frozenset([n.attr("dst")])
        if n is not None and n.op in _ASYNC:
            return self.states_through(nid, _stack)
        return super().states(nid, _stack)

    def states_through(self, nid: str, _stack=None) -> frozenset:
        """The states a node passes through: those of all its inputs."""
        out = set()
        for e in self.inputs.get(nid, []):
            out |= self.states(e.src, _stack)
        return frozenset(out)

    def value_shape(self, n: Node):
        if n.op in (LDMATRIX, MMA, WGMMA):
            return tuple(n.attr("shape") or ())
        return super().value_shape(n)

    def type_rules(self, n: Node, ins):
        if n.op in TC_OPS:
            return
        super().type_rules(n, ins)

    def expr_attrs(self, n: Node):
        out = super().expr_attrs(n)
        if n.op == LDMATRIX:  # row and col also use the tile variables: checked below
            out = [x for x in out if x[0] not in ("row", "col")]
        if n.op == WGMMA:  # the operands' positions: the tile's and `over`'s variables
            out = [x for x in out if x[0] not in ("a_row", "a_col", "b_row", "b_col")]
        return out

    def check_bounds(self):
        """Loads and stores (the verifier's own check), then the global end of every
        cp.async: its first and last element, checked as loads are."""
        super().check_bounds()
        real, ends = self.nodes, {}
        for n in real.values():
            if n.op == CP_ASYNC and isinstance(n.attr("offset"), ex.Expr):
                last = n.attr("offset") + (n.attr("bytes") // n.dtype.itemsize - 1)
                for key, off in (("first", n.attr("offset")), ("last", last)):
                    ends[f"{n.id} ({key} element of cp.async)"] = Node(
                        f"{n.id} ({key} element of cp.async)", "move.global.reg", n.scope, n.dtype,
                        (("buffer", n.attr("buffer")), ("offset", off), ("pred", n.attr("pred"))))
        self.nodes = ends  # the check walks self.nodes; scopes come from self.scopes
        try:
            super().check_bounds()
        finally:
            self.nodes = real

    # ------------------------------------------------------------------ the checks
    def check_tensor_cores(self):
        for n in self.nodes.values():
            if n.op == CP_ASYNC:
                self._check_cp_async(n)
            elif n.op == LDMATRIX:
                self._check_ldmatrix(n)
            elif n.op == MMA:
                self._check_mma(n)
            elif n.op == WGMMA:
                self._check_wgmma(n)
            elif n.op == FRAG:
                (e,) = self.inputs[n.id] or (None,)
                src = self.nodes.get(e.src) if e else None
                if src is not None and len(n.attr("index") or ()) != len(src.attr("shape") or ()):
                    self.add(f"{self.desc(n)} indexes a fragment of shape "
                             f"{list(src.attr('shape') or ())} with {len(n.attr('index') or ())} "
                             f"indices")

    def _check_cp_async(self, n: Node):
        if n.attr("bytes") not in (2, 4, 8, 16):
            self.add(f"{self.desc(n)} copies {n.attr('bytes')} bytes; cp.async copies 4, 8 or "
                     f"16 (2: a plain copy)")
        dst = self.buffer(n.attr("dst"))
        if dst is None or n.attr("dst") not in self.allocs:
            self.add(f"{self.desc(n)} copies into {n.attr('dst')!r}, not a shared allocation")
        elif dst.dtype != n.dtype or n.dtype.itemsize != 2:
            self.add(f"{self.desc(n)} copies {n.dtype} into {dst.name} of {dst.dtype}; tensor-core "
                     f"tiles hold one 16-bit dtype")
        consumers = [e.dst for e in self.good_edges if e.src == n.id and e.level == "shared"]
        for c in consumers:
            if self.nodes[c].op not in (CP_ASYNC, ASYNC_COMMIT):
                self.add(f"{self.desc(n)}: its copy reaches {self.desc(c)} before a "
                         f"sync.async_commit closes its group")

    def _check_mma(self, n: Node):
        ins = self.inputs[n.id]
        if len(ins) != 2:
            return
        a, b = ins
        if a.dtype != b.dtype or a.dtype not in (dt.bfloat16, dt.float16):
            self.add(f"{self.desc(n)} multiplies {a.dtype} by {b.dtype}; mma.m16n8k16 takes two "
                     f"bfloat16 or two float16 fragments")
        if len(a.shape) != 3 or len(b.shape) != 3 or a.shape[2] != 8 or b.shape[2] != 4 \
                or a.shape[0] != b.shape[0]:
            self.add(f"{self.desc(n)}: fragments of shapes {list(a.shape)} and {list(b.shape)}; "
                     f"expected (kk, mi, 8) and (kk, ni, 4)")
        elif tuple(n.attr("shape") or ()) != (a.shape[1], b.shape[1], 4) or n.dtype != dt.float32:
            self.add(f"{self.desc(n)} has shape {n.attr('shape')} and dtype {n.dtype}; its "
                     f"operands make ({a.shape[1]}, {b.shape[1]}, 4) float32")
        self._check_over(n)

    def _check_over(self, n: Node) -> bool:
        """An accumulation lies in the parent of the scope it sums over."""
        over = self.scopes.get(n.attr("over"))
        if over is None or over.scope != n.scope:
            self.add(f"{self.desc(n)} must lie in the parent of the scope it sums over "
                     f"({n.attr('over')})")
            return False
        return True

    def _check_ldmatrix(self, n: Node):
        tile = n.attr("tile") or ()
        points = 1
        for _, e in tile:
            points *= e
        if points * 8 != int(np.prod(n.attr("shape") or (0,))):
            self.add(f"{self.desc(n)}: {points} ldmatrix.x4 give {points * 8} elements per "
                     f"thread, not a fragment of shape {list(n.attr('shape') or ())}")
        self._check_waited(n)
        self._check_banks(n, tile)

    def _check_waited(self, n: Node, e=None, buffer: str | None = None, proxy: bool = False):
        """Back along the state: a block barrier first, then an async wait (fencing the
        copies to the async proxy where `proxy`), before any copy."""
        if e is None:
            (e,) = self.inputs[n.id] or (None,)
        buffer = buffer or n.attr("buffer")
        src = self.nodes.get(e.src) if e else None
        if src is not None and src.op == MBAR_WAIT and src.attr("pred") is None:
            return  # every thread waited for the TMA copies: they are visible to it
        if src is None or src.op != "sync.block":
            self.add(f"{self.desc(n)} reads {buffer} without a sync.block since its last write")
            return
        frontier, waited = [src.id], False
        while frontier:
            cur = self.nodes[frontier.pop()]
            if cur.op == MBAR_WAIT:  # TMA copies land through the async proxy itself
                continue
            if cur.op == ASYNC_WAIT:
                waited = True
                if proxy and not cur.attr("proxy"):
                    self.add(f"{self.desc(n)} reads {buffer} through the async proxy, but "
                             f"{self.desc(cur)} does not fence the copies to it (proxy)")
                continue
            if cur.op in (CP_ASYNC, TMA_LOAD) or (cur.op == ASYNC_COMMIT and not waited):
                kind, wait = (("TMA", "sync.mbarrier_wait") if cur.op == TMA_LOAD
                              else ("cp.async", "sync.async_wait"))
                self.add(f"{self.desc(n)} reads {buffer} copied by {kind} with no "
                         f"{wait} between the copy and the read")
                return
            frontier += [x.src for x in self.inputs.get(cur.id, []) if x.level == "shared"]

    def _sampled(self, scope: str, tile, exprs):
        """(`exprs` at sampled points of `scope`'s chain and every `tile` point, the axes
        as (var, extent, kind)); None where the chain has no block scope."""
        chain = self.chain(scope)
        if chain is None or not any(s.scope_kind == "block" for s in chain):
            return None
        env, shape = {}, []
        axes = [(s.attr("var"), s.attr("extent"), s.scope_kind) for s in chain]
        axes += [(v, e, "tile") for v, e in tile]
        for k, (var, extent, kind) in enumerate(axes):
            size = min(extent, _SAMPLES) if kind in ("grid", "serial") else extent
            idx = [1] * len(axes)
            idx[k] = size
            env[var] = np.arange(size, dtype=np.int64).reshape(idx)
            shape.append(size)
        return [np.broadcast_to(ex.evaluate(e, env), shape) for e in exprs], axes

    def _check_wgmma(self, n: Node):
        ins = self.inputs[n.id]
        tile = dict(n.attr("tile") or ())
        width = n.attr("n")
        order = tuple(v for v, _ in n.attr("tile") or ())
        if order != ("kk", "mi") or not isinstance(width, int) or width % 8 or not 8 <= width <= 256:
            self.add(f"{self.desc(n)}: tile {n.attr('tile')} and n {width}; expected points "
                     f"(kk, mi) and n a multiple of 8 up to 256")
            return
        if n.attr("pending") not in range(8):
            self.add(f"{self.desc(n)} leaves {n.attr('pending')!r} groups in flight; "
                     f"wgmma.wait_group takes 0 to 7")
        if tuple(n.attr("shape") or ()) != (tile["mi"], width // 8, 4) or n.dtype != dt.float32:
            self.add(f"{self.desc(n)} has shape {n.attr('shape')} and dtype {n.dtype}; wgmma "
                     f"m64n{width} gives ({tile['mi']}, {width // 8}, 4) float32")
        if not self._check_over(n):
            return
        if len(ins) != 2 or ins[0].dtype != ins[1].dtype or ins[0].dtype not in (dt.bfloat16, dt.float16):
            self.add(f"{self.desc(n)} multiplies {[e.dtype for e in ins]}; wgmma takes two "
                     f"bfloat16 or two float16 tiles")
            return
        for e, side, rows in zip(ins, "ab", (64, width)):
            self._check_waited(n, e, n.attr(f"{side}_buffer"), proxy=True)
            self._check_descriptor(n, side, rows)

    def _check_descriptor(self, n: Node, side: str, extent: int):
        """Operand `side`'s tile position, at sampled points, is one a descriptor reaches."""
        attr = lambda key: n.attr(f"{side}_{key}")  # noqa: E731
        alloc = self.allocs.get(attr("buffer"))
        row_elems, panel, k_rows = attr("row_elems"), attr("panel_rows") or 0, attr("k_rows")
        if alloc is None or alloc.align % 1024:
            self.add(f"{self.desc(n)}: wgmma reads {attr('buffer')!r}, which is not a 1024-byte "
                     f"aligned shared allocation")
            return
        paneled = k_rows and row_elems > PANEL
        if (not k_rows and row_elems not in (16, 32, 64)) or (k_rows and row_elems % PANEL) \
                or (paneled and (not panel or panel % 8)):
            self.add(f"{self.desc(n)}: a {'[k][m or n]' if k_rows else '[m or n][k]'} tile of "
                     f"{row_elems}-element rows{f' in panels of {panel} rows' if paneled else ''} "
                     f"has no wgmma descriptor (rows of 16, 32 or 64 k; or 64-column panels of "
                     f"a multiple of 8 rows, each on the 1024-byte swizzle grid)")
            return
        sampled = self._sampled(n.attr("over"), n.attr("tile"), (attr("row"), attr("col")))
        if sampled is None:
            self.add(f"{self.desc(n)} needs a block scope")
            return
        (row, col), axes = sampled
        bax = next(k for k, a in enumerate(axes) if a[2] == "block")
        group = 4 * WARP_SIZE
        if axes[bax][1] % group:
            self.add(f"{self.desc(n)} needs whole warpgroups; the block has {axes[bax][1]} threads")
            return
        for what, v in (("row", row), ("col", col)):
            grouped = np.moveaxis(v, bax, -1).reshape(v.shape[:bax] + v.shape[bax + 1:] + (-1, group))
            if (grouped != grouped[..., :1]).any():
                self.add(f"{self.desc(n)}: operand {side}'s {what} differs within a warpgroup")
                return
        # k rows: groups of 8 k rows, whole panels of m or n; else whole 8-row groups, a k step
        lead, step = (8, PANEL if row_elems > PANEL else row_elems) if k_rows else (8, 16)
        span_rows, span_cols = (16, extent) if k_rows else (extent, 16)
        if (row % lead).any() or (col % step).any() or (col + span_cols > row_elems).any() \
                or (k_rows and extent > PANEL and extent % PANEL):
            self.add(f"{self.desc(n)}: operand {side} starts at a position no descriptor "
                     f"reaches (rows in steps of {lead}, columns of {step}, inside "
                     f"{row_elems}-element rows)")
            return
        # the swizzle permutes within a row (of a panel): the read ends with the last row's end
        width = PANEL if paneled else row_elems
        last = swizzle_offset(row + span_rows - 1, col + span_cols - 1, row_elems, False, panel)
        end = (last // width + 1) * width
        if (row < 0).any() or (col < 0).any() or (end > alloc.size).any():
            self.add(f"{self.desc(n)}: operand {side} reads past {alloc.name} ({alloc.size} elements)")

    def _check_banks(self, n: Node, tile):
        alloc = self.allocs.get(n.attr("buffer"))
        sampled = self._sampled(n.scope, tile, (n.attr("row"), n.attr("col")))
        if sampled is None or alloc is None:
            self.add(f"{self.desc(n)} needs a block scope and a shared buffer")
            return
        (row, col), axes = sampled
        shape = row.shape
        addr = swizzle_offset(row, col, n.attr("row_elems"), n.attr("swizzle"))
        if (addr % 8).any() or (addr < 0).any() or (addr + 8 > alloc.size).any():
            self.add(f"{self.desc(n)}: ldmatrix rows must be 16-byte aligned inside "
                     f"{alloc.name} ({alloc.size} elements)")
            return
        bax = next(k for k, a in enumerate(axes) if a[2] == "block")
        threads = shape[bax]
        if threads % WARP_SIZE:
            self.add(f"{self.desc(n)} needs whole warps; the block has {threads} threads")
            return
        groups = np.moveaxis((addr // 8) % 8, bax, -1)
        groups = groups.reshape(groups.shape[:-1] + (threads // 8, 8))
        distinct = np.sort(groups, axis=-1)
        if (np.diff(distinct, axis=-1) == 0).any():
            self.add(f"{self.desc(n)}: bank conflict: the 8 rows of an ldmatrix phase share a "
                     f"16-byte bank group in {alloc.name} (swizzle {n.attr('swizzle')})")
