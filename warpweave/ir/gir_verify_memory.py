"""The GIR verifier's memory-safety checks: barriers between shared-memory writes and
reads (and where barriers and shuffles may lie), loads and stores inside their
buffers, and the target's resource limits."""
from __future__ import annotations

import numpy as np

from . import expr as ex
from . import simplify as sx
from .gir import WARP_SIZE
from .gir_verify_base import LOADS, SHUFFLE, STORES, SYNC, VerifierBase, data_extents, iteration_grid


class MemoryChecks(VerifierBase):
    """Checks 6-8 of `gir_verify` (see its docstring)."""

    # ------------------------------------------------------------------ 6. barriers
    def check_barriers(self):
        for n in self.nodes.values():
            if n.op != "move.shared.reg":
                continue
            for e in self.inputs[n.id]:
                if e.slot != 0 or e.level != "shared":
                    continue
                w = self.nodes[e.src]
                if w.op.startswith("move.") and w.op.endswith(".shared"):
                    buf = n.attr("buffer")
                    self.add(f"missing barrier between {w.id} (write {w.attr('buffer')}) and "
                             f"{n.id} (read {buf}): put a sync.block on {buf} between them")
        block = self.block
        for n in self.nodes.values():
            if n.op not in (SYNC, SHUFFLE):
                continue
            what = "sync.block" if n.op == SYNC else "shuffle"
            chain = self.chain(n.scope)
            if chain is None:
                continue
            if self.k.target == "gpu":
                if block is None or block.id not in [s.id for s in chain]:
                    self.add(f"{what} {n.id} must lie inside the block scope")
                vec = [s.id for s in chain if s.scope_kind == "vector"]
                if vec:
                    self.add(f"{what} {n.id} lies inside vector scope {vec[-1]}; it must be "
                             f"outside vector scopes")
            if n.attr("pred") is not None:
                self.add(f"{what} {n.id} has a predicate; every thread of the block "
                         f"(warp) must execute it")
            if n.op == SHUFFLE:
                if block is not None and isinstance(block.attr("extent"), int) and \
                        block.attr("extent") % WARP_SIZE:
                    self.add(f"shuffle {n.id} needs whole warps, but the block scope {block.id} "
                             f"has {block.attr('extent')} threads (not a multiple of {WARP_SIZE})")
                mode, lane = n.attr("mode"), n.attr("lane")
                if mode in ("bfly", "down"):
                    if not (isinstance(lane, ex.Const) and lane.dtype.is_int
                            and 0 <= lane.value < WARP_SIZE):
                        shown = ex.to_text(lane) if isinstance(lane, ex.Expr) else repr(lane)
                        self.add(f"shuffle {n.id} ({mode}) needs a constant lane argument in "
                                 f"[0, {WARP_SIZE}), got {shown}")
                elif mode == "idx" and isinstance(lane, ex.Expr) and chain is not None:
                    b = sx.bounds(lane, {s.attr("var"): (0, s.attr("extent") - 1) for s in chain
                                         if isinstance(s.attr("extent"), int)})
                    if b is not None and (b[0] < 0 or b[1] >= WARP_SIZE):
                        self.add(f"shuffle {n.id} (idx) reads source lanes {b[0]}..{b[1]}, "
                                 f"outside [0, {WARP_SIZE})")

    # ------------------------------------------------------------------ 7. bounds
    @staticmethod
    def span(buf) -> int:
        """How many elements from the base an access may reach: [0, span)."""
        if hasattr(buf, "strides"):
            if any(s == 0 for s in buf.shape):
                return 0
            return 1 + sum((s - 1) * max(st, 0) for s, st in zip(buf.shape, buf.strides))
        return buf.size

    def check_bounds(self):
        for n in self.nodes.values():
            if n.op not in LOADS and n.op not in STORES:
                continue
            buf = self.buffer(n.attr("buffer"))
            off, pred = n.attr("offset"), n.attr("pred")
            chain = self.chain(n.scope)
            if buf is None or chain is None or not isinstance(off, ex.Expr) or \
                    not off.dtype.is_int:
                continue
            if pred is not None and not (isinstance(pred, ex.Expr) and pred.dtype.is_bool):
                continue
            extents = {s.attr("var"): s.attr("extent") for s in chain}
            extents.update(data_extents(n))  # a data index ranges over [0, extent)
            if any(not isinstance(v, int) or v < 1 for v in extents.values()):
                continue
            used = ex.free_vars(off) | (ex.free_vars(pred) if pred is not None else frozenset())
            if used - set(extents) or ex.loads(off) or (pred is not None and ex.loads(pred)):
                continue  # reported by the visibility checks
            size = self.span(buf)
            kind = "load" if n.op in LOADS else "store"
            ranges = {v: (0, e - 1) for v, e in extents.items()}
            b = sx.bounds_under(off, pred, ranges)
            if b is not None and b[0] >= 0 and b[1] < size:
                continue
            b = sx.bounds_under_split(off, pred, ranges)
            if b is not None and b[0] >= 0 and b[1] < size:
                continue
            order = [v for v in extents if v in used]
            points = 1
            for v in order:
                points *= extents[v]
            if points > self.lim.max_exhaustive_points:
                rng = f"{b[0]}..{b[1]}" if b is not None else "unknown"
                self.add(f"unproven bounds: {kind} {self.desc(n)} at {ex.to_text(off)} (range "
                         f"{rng}) may leave {buf.name}'s [0, {size}); its iteration space has "
                         f"{points} points, more than the {self.lim.max_exhaustive_points} the "
                         f"verifier evaluates exhaustively")
                continue
            env, full = iteration_grid(order, extents)
            offs = np.broadcast_to(np.asarray(ex.evaluate(off, env)), full)
            mask = (np.broadcast_to(np.asarray(ex.evaluate(pred, env), dtype=bool), full)
                    if pred is not None else np.ones(full, dtype=bool))
            bad = mask & ((offs < 0) | (offs >= size))
            if bad.any():
                first = tuple(int(i) for i in np.argwhere(bad)[0])
                at = ", ".join(f"{v}={i}" for v, i in zip(order, first)) or "every point"
                count = int(bad.sum())
                verb = "reads" if kind == "load" else "writes"
                where = " where its predicate holds" if pred is not None else ""
                self.add(f"out-of-bounds {kind}: {self.desc(n)} {verb} {buf.name}"
                         f"[{int(offs[first])}] at {at}{where} (valid offsets 0..{size - 1}; "
                         f"{count} of {mask.size} points out of bounds; offset "
                         f"{ex.to_text(off)})")

    # ------------------------------------------------------------------ 8. limits
    def check_limits(self):
        lim = self.lim
        for s in self.scopes.values():
            e = s.attr("extent")
            if not isinstance(e, int):
                continue
            if s.scope_kind == "block" and e > lim.max_threads_per_block:
                self.add(f"block scope {s.id} has {e} threads; the limit is "
                         f"{lim.max_threads_per_block} per block")
            if s.scope_kind == "vector" and e > lim.max_vector_elems:
                self.add(f"vector scope {s.id} has {e} elements; the limit is "
                         f"{lim.max_vector_elems}")
        odd = [a.name for a in self.k.shared if not isinstance(a.align, int) or a.align < 1
               or a.align & (a.align - 1)]
        if odd:
            self.add(f"shared allocations {', '.join(odd)} ask an alignment that is not a power of two")
            return
        try:  # the block-wide layout's end, each allocation at its alignment (`Kernel.shared_offsets`)
            last = self.k.shared[-1] if self.k.shared else None
            total = self.k.shared_offsets[last.name] + last.nbytes if last is not None else 0
        except (TypeError, AttributeError, KeyError):
            return
        if total > lim.max_shared_bytes:
            parts = ", ".join(f"{a.name} {a.size * a.dtype.itemsize} B" for a in self.k.shared)
            self.add(f"shared memory: {total} B per block ({parts}) exceeds {lim.arch}'s limit "
                     f"of {lim.max_shared_bytes} B ({lim.max_shared_bytes // 1024} KiB) per block")
