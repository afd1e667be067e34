"""The GIR verifier's checks of `call.gemm` nodes: their buffers and the states
reaching them, dtypes, attrs, and that every element the product reads or writes
lies inside its buffer at every point of the scopes around it."""
from __future__ import annotations

import numpy as np

from . import dtypes as dt
from . import expr as ex
from .gir import GEMM, GEMM_OPERANDS
from .gir_verify_base import iteration_grid

_FLOATS = (dt.float16, dt.bfloat16, dt.float32, dt.float64)
# the extents each operand's (row, column) strides walk
_AXES = {"a": ("m", "k"), "b": ("k", "n"), "c": ("m", "n")}


class CallChecks:
    """Mixed into the verifier (needs `VerifierBase` and its `states`)."""

    def check_calls(self):
        for n in self.nodes.values():
            if n.op == GEMM:
                self._check_gemm(n)

    def _check_gemm(self, n):
        name = self.desc(n)
        if self.k.target != "cpu":
            self.add(f"{name} in a {self.k.target} kernel: gemm calls exist on the cpu target")
        chain = self.chain(n.scope) or []
        if any(s.scope_kind == "vector" for s in chain):
            self.add(f"{name} lies in a vector scope; one call is made per point of its scopes")
        if n.dtype not in (dt.float32, dt.float64):
            self.add(f"{name} accumulates in {n.dtype}; a gemm accumulates in float32 or float64")
        exprs = {}
        for key in ("m", "n", "k", *(f"{o}_offset" for o in GEMM_OPERANDS)):
            v = n.attr(key)
            if not isinstance(v, ex.Expr) or v.dtype != dt.INDEX:
                self.add(f"{name}: {key} must be an int64 expression, got {v!r}")
                return
            exprs[key] = v
        edges = {e.slot: e for e in self.inputs[n.id]}
        for slot, key in enumerate(GEMM_OPERANDS):
            buf_name = n.attr(key)
            buf = self.params.get(buf_name)
            if buf is None:
                self.add(f"{name}: {key} names {buf_name!r}, which is not a global param")
                return
            strides = n.attr(f"{key}_strides")
            if not (isinstance(strides, tuple) and len(strides) == 2
                    and all(isinstance(s, int) and not isinstance(s, bool) for s in strides)):
                self.add(f"{name}: {key}_strides must be two ints (rows, columns), got {strides!r}")
                return
            if buf.dtype not in _FLOATS:
                self.add(f"{name}: operand {key} is {buf.dtype} buffer {buf_name}; a gemm takes floats")
            if key == "c" and buf.dtype != n.dtype:
                self.add(f"{name} writes {buf.dtype} buffer {buf_name}; it writes its own dtype "
                         f"{n.dtype}")
            e = edges.get(slot)
            if e is not None and e.level == "global" and buf_name not in self.states(e.src):
                held = ", ".join(sorted(map(str, self.states(e.src)))) or "no buffer"
                self.add(f"{name}: operand {key} names {buf_name} but the state reaching slot "
                         f"{slot} from {e.src} is {held}'s")
        if n.attr("c") in (n.attr("a"), n.attr("b")):
            self.add(f"{name} writes {n.attr('c')}, which it also reads")
        self._gemm_bounds(n, exprs)

    def _gemm_bounds(self, n, exprs):
        """Every point of the scopes around `n` (evaluated exhaustively up to the
        verifier's limit): the lowest and highest element of each operand inside it."""
        chain = self.chain(n.scope)
        if chain is None:
            return
        extents = {s.attr("var"): s.attr("extent") for s in chain}
        used = set().union(*(ex.free_vars(e) for e in exprs.values()))
        if used - set(extents) or any(not isinstance(v, int) or v < 1 for v in extents.values()):
            return  # reported by the visibility checks
        order = [v for v in extents if v in used]
        points = int(np.prod([extents[v] for v in order], dtype=np.int64))
        if points > self.lim.max_exhaustive_points:
            self.add(f"unproven bounds: {self.desc(n)} runs at {points} points, more than the "
                     f"{self.lim.max_exhaustive_points} the verifier evaluates")
            return
        env, full = iteration_grid(order, extents)
        val = {k: np.broadcast_to(np.asarray(ex.evaluate(e, env), dtype=np.int64), full)
               for k, e in exprs.items()}
        for key in ("m", "n", "k"):
            if (val[key] < 0).any():
                self.add(f"{self.desc(n)}: {key} {ex.to_text(exprs[key])} is negative at some point")
                return
        empty = (val["m"] == 0) | (val["n"] == 0)
        for key in GEMM_OPERANDS:
            buf = self.params[n.attr(key)]
            size = self.span(buf)
            lo = hi = val[f"{key}_offset"]
            live = ~empty & (val["k"] > 0) if key != "c" else ~empty
            for stride, extent in zip(n.attr(f"{key}_strides"), _AXES[key]):
                step = stride * np.maximum(val[extent] - 1, 0)
                lo, hi = lo + np.minimum(step, 0), hi + np.maximum(step, 0)
            bad = live & ((lo < 0) | (hi >= size))
            if bad.any():
                first = tuple(int(i) for i in np.argwhere(bad)[0])
                at = ", ".join(f"{v}={i}" for v, i in zip(order, first)) or "every point"
                self.add(f"out-of-bounds gemm: {self.desc(n)} reaches {buf.name}[{int(lo[first])}"
                         f"..{int(hi[first])}] at {at} (valid offsets 0..{size - 1})")
