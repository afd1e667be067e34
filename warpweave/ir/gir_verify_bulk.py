"""Verifier checks for bulk tensor copies (TMA) and shared-memory barriers, mixed into
`gir_verify`'s verifier before the tensor-core checks.

The nodes (built by `KernelBuilder.tma_load` and `mbarrier`):
* `move.global.shared.tensor` (cp.async.bulk.tensor): the box of a tensor map (attrs
  buffer, base, dims, strides, box, swizzle: see `gir.TensorMap`) at `coords` into the
  shared tile `dst` from (`row`, `col`) (laid out as `gir.swizzle_offset` says with
  `row_elems` and `panel_rows`), issued by the thread where `pred` holds; it completes
  the box's bytes on `barrier[slot]`. Slots: 0 the global state, 1 the tile's, 2 the
  barrier's; it produces the new states of both.
* `sync.mbarrier_init` (count, pred), `sync.mbarrier_expect` (slot, bytes, pred),
  `sync.mbarrier_arrive` (slot, pred), `sync.mbarrier_wait` (slot, parity, pred; no
  pred: every thread): slot 0 the barrier's state, then tiles' states, all passing
  through.

Checked here: the tensor map (16-bit elements, a box row of 32, 64 or 128 bytes that
is its swizzle span, at most 256 elements an axis, one entry along the batch axes,
16-byte strides and base, every element it maps inside its buffer); the destination
(an aligned tile of that dtype, the box one stage of whole swizzle rows or one
64-column panel inside it, at sampled points); the barrier (a shared array of 8-byte
words, slots inside it); that at most one thread of a block issues each copy, expect
and init; and that each expect announces exactly the bytes of the copies completing
on its barrier slot in its scope. Reads of a tile behind a `sync.mbarrier_wait` count
as waited for, with no block barrier needed (`TensorCoreChecks._check_waited`): the
copies' data are visible to every thread that waited.
"""
from __future__ import annotations

import numpy as np

from .gir import MBAR_EXPECT, MBAR_INIT, MBAR_OPS, PANEL, TMA_LOAD, TMA_MAX_BOX, TMA_SWIZZLES, Node, \
    TensorMap

MAX_EXPECT_BYTES = 2**20 - 1  # transaction bytes one mbarrier phase may count


class BulkCopyChecks:
    """Overrides of the verifier's per-op hooks for TMA copies and mbarriers."""

    def produced_level(self, n: Node):
        if n.op == TMA_LOAD or n.op in MBAR_OPS:
            return "shared"
        return super().produced_level(n)

    def accepted_level(self, n: Node, slot: int):
        if n.op == TMA_LOAD:
            return ("global", "shared", "shared")[slot] if slot < 3 else None
        if n.op in MBAR_OPS:
            return "shared"
        return super().accepted_level(n, slot)

    def expected_arity(self, n: Node):
        if n.op == TMA_LOAD:
            return 3, 3
        if n.op in MBAR_OPS:
            return 1, None
        return super().expected_arity(n)

    def states(self, nid: str, _stack=None) -> frozenset:
        n = self.nodes.get(nid)
        if n is not None and n.op == TMA_LOAD:
            return frozenset([n.attr("dst"), n.attr("barrier")])
        if n is not None and n.op in MBAR_OPS:
            return self.states_through(nid, _stack)  # TensorCoreChecks'
        return super().states(nid, _stack)

    def check_tensor_cores(self):
        super().check_tensor_cores()
        announced: dict[tuple, list[Node]] = {}
        copied: dict[tuple, int] = {}
        for n in self.nodes.values():
            if n.op == TMA_LOAD:
                nbytes = self._check_tma(n)
                key = (n.scope, n.attr("barrier"), str(n.attr("slot")))
                copied[key] = copied.get(key, 0) + nbytes
            elif n.op in MBAR_OPS:
                self._check_barrier(n)
                if n.op == MBAR_EXPECT:
                    announced.setdefault((n.scope, n.attr("barrier"), str(n.attr("slot"))), []).append(n)
        for key, expects in announced.items():
            for n in expects:
                if n.attr("bytes") != copied.get(key, 0):
                    self.add(f"{self.desc(n)} expects {n.attr('bytes')} bytes on {key[1]}[{key[2]}]; "
                             f"the copies completing there in its scope bring {copied.get(key, 0)}")
        for key, nbytes in copied.items():
            if key not in announced:
                self.add(f"TMA copies of {nbytes} bytes complete on {key[1]}[{key[2]}] in scope "
                         f"{key[0]}, where no sync.mbarrier_expect announces them")

    # ------------------------------------------------------------------ the checks
    def _check_tma(self, n: Node) -> int:
        """Checks one copy; returns the bytes its box brings (0 where malformed)."""
        try:
            m = TensorMap.of(n)
            rank = len(m.dims)
        except (TypeError, ValueError):
            self.add(f"{self.desc(n)} has a malformed tensor map")
            return 0
        buf, dst = self.params.get(m.buffer), self.allocs.get(n.attr("dst"))
        if buf is None or dst is None:
            self.add(f"{self.desc(n)} copies {m.buffer!r} into {n.attr('dst')!r}: it needs a global "
                     f"parameter and a shared allocation")
            return 0
        size = buf.dtype.itemsize
        if size != 2 or dst.dtype != buf.dtype:
            self.add(f"{self.desc(n)} copies {buf.dtype} into {dst.name} of {dst.dtype}; TMA tiles "
                     f"here hold one 16-bit dtype")
            return 0
        coords = n.attr("coords") or ()
        if not 2 <= rank <= 5 or len(m.box) != rank or len(m.strides) != rank - 1 or len(coords) != rank:
            self.add(f"{self.desc(n)}: a tensor map of dims {m.dims}, strides {m.strides} and box "
                     f"{m.box} at {len(coords)} coordinates; expected 2 to 5 axes throughout")
            return 0
        if m.box[0] * size != m.swizzle or m.swizzle not in TMA_SWIZZLES \
                or any(not 1 <= x <= TMA_MAX_BOX for x in m.box) or any(x != 1 for x in m.box[2:]):
            self.add(f"{self.desc(n)}: box {m.box} with a {m.swizzle}-byte swizzle; a box row must "
                     f"be the swizzle span ({', '.join(map(str, TMA_SWIZZLES))} bytes), at most "
                     f"{TMA_MAX_BOX} elements an axis and one along the others")
            return 0
        if (m.base * size) % 16 or any((st * size) % 16 for st in m.strides) or m.base < 0 \
                or min(m.dims) < 1:
            self.add(f"{self.desc(n)}: base {m.base} and strides {m.strides} ({buf.dtype}) must "
                     f"lie on 16-byte boundaries")
            return 0
        last = m.base + (m.dims[0] - 1) + sum((d - 1) * st for d, st in zip(m.dims[1:], m.strides))
        if last >= buf.size:
            self.add(f"{self.desc(n)}: the tensor map reaches element {last} of {m.buffer} "
                     f"({buf.size} elements)")
        self._check_one_thread(n)
        self._check_destination(n, m, dst)
        return int(np.prod(m.box)) * size

    def _check_destination(self, n: Node, m: TensorMap, dst):
        row_elems, panel = n.attr("row_elems"), n.attr("panel_rows") or 0
        if dst.align % (8 * m.swizzle) or m.box[0] != min(row_elems, PANEL) \
                or bool(panel) != (row_elems > PANEL):
            self.add(f"{self.desc(n)}: a box of {m.box[0]} elements a row into {dst.name} "
                     f"({dst.align}-byte aligned, rows of {row_elems}, panels of {panel} rows); "
                     f"the box is one swizzle row or 64-column panel on its swizzle grid")
            return
        sampled = self._sampled(n.scope, (), (n.attr("row"), n.attr("col"),
                                              *(n.attr("coords") or ())))
        if sampled is None:
            self.add(f"{self.desc(n)} needs a block scope")
            return
        (row, col, *_), _ = sampled
        rows = m.box[1]
        end = row + rows <= panel if panel else (row + rows) * row_elems <= dst.size
        in_panels = (col // PANEL + 1) * panel * PANEL <= dst.size if panel else col == 0
        if (row % 8).any() or (col % m.box[0]).any() or (row < 0).any() or (col < 0).any() \
                or not np.all(end) or not np.all(in_panels):
            self.add(f"{self.desc(n)}: its box of {rows} rows lands at rows {int(row.min())}.. "
                     f"columns {int(col.min())}.. of {dst.name}: not whole swizzle rows inside "
                     f"the tile")

    def _check_barrier(self, n: Node):
        alloc = self.allocs.get(n.attr("barrier"))
        if alloc is None or alloc.dtype.itemsize != 8 or alloc.align % 8:
            self.add(f"{self.desc(n)}: barrier {n.attr('barrier')!r} must be a shared array of "
                     f"8-byte words")
            return
        if n.op == MBAR_INIT:
            if not isinstance(n.attr("count"), int) or n.attr("count") < 1:
                self.add(f"{self.desc(n)} initialises its barrier for {n.attr('count')!r} arrivals")
            self._check_one_thread(n)
            return
        if n.op == MBAR_EXPECT:
            if not isinstance(n.attr("bytes"), int) or not 0 < n.attr("bytes") <= MAX_EXPECT_BYTES:
                self.add(f"{self.desc(n)} expects {n.attr('bytes')!r} bytes; a phase counts 1 to "
                         f"{MAX_EXPECT_BYTES}")
            self._check_one_thread(n)
        sampled = self._sampled(n.scope, (), (n.attr("slot"),))
        if sampled is not None and ((sampled[0][0] < 0) | (sampled[0][0] >= alloc.size)).any():
            self.add(f"{self.desc(n)}: slot outside {alloc.name} ({alloc.size} barriers)")

    def _check_one_thread(self, n: Node):
        """`pred` holds for at most one thread of the block at every sampled point."""
        sampled = self._sampled(n.scope, (), (n.attr("pred"),))
        if sampled is None:
            self.add(f"{self.desc(n)} needs a block scope")
            return
        (pred,), axes = sampled
        bax = next(k for k, a in enumerate(axes) if a[2] == "block")
        if (np.asarray(pred, dtype=bool).sum(axis=bax) > 1).any():
            self.add(f"{self.desc(n)}: more than one thread of a block issues it (pred "
                     f"{n.attr('pred')})")
