"""The GIR interpreter: runs a kernel with numpy, the reference for what GIR means.

Every node is executed once for all of its iterations at the same time: a value
defined in a scope chain (grid, block, serial, vector, …) is an array with one
axis per scope, outermost first. Nodes run in the kernel's emission order, which
makes every barrier trivially satisfied; the verifier, not the interpreter,
checks that barriers are where they must be. Out-of-bounds accesses raise.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ..errors import IndexOutOfRangeError, IRError
from ..ir import expr as ex
from ..ir.gir import TC_OPS, WARP_SIZE, Kernel, Node, data_indices, first_data_slot

_IDENTITY = {"sum": lambda d: 0, "prod": lambda d: 1,
             "max": lambda d: -np.inf if d.kind == "f" else (False if d.kind == "b" else np.iinfo(d).min),
             "min": lambda d: np.inf if d.kind == "f" else (True if d.kind == "b" else np.iinfo(d).max)}
_COMBINE = {"sum": np.sum, "prod": np.prod, "max": np.max, "min": np.min}


class _State:
    def __init__(self, kernel: Kernel, buffers: Mapping[str, np.ndarray]):
        self.k = kernel
        self.buffers = buffers
        grid = kernel.grid
        self.shared = {s.name: np.full((grid, s.size), np.nan if s.dtype.is_float else 0,
                                       dtype=s.dtype.numpy) for s in kernel.shared}
        self.values: dict[str, np.ndarray] = {}
        self.chains = {sid: kernel.scope_chain(sid) for sid in kernel.scopes}
        self.chains[None] = []
        self.pinned: dict[str, int] = {}  # serial scopes run one iteration at a time (interp_tc)

    def env(self, scope: str | None) -> dict[str, np.ndarray]:
        chain = self.chains[scope]
        out = {}
        for k, s in enumerate(chain):
            shape = [1] * len(chain)
            if s.id in self.pinned:
                out[s.attr("var")] = np.full(shape, self.pinned[s.id], dtype=np.int64)
                continue
            shape[k] = s.attr("extent")
            out[s.attr("var")] = np.arange(s.attr("extent"), dtype=np.int64).reshape(shape)
        return out

    def shape(self, scope: str | None) -> tuple[int, ...]:
        return tuple(1 if s.id in self.pinned else s.attr("extent") for s in self.chains[scope])

    def operand(self, edge_src: str, scope: str | None) -> np.ndarray:
        """The value of `edge_src`, broadcast to the iteration space of `scope`.

        The source's scope chain is a prefix of `scope`'s, position by position, up to
        aligned sibling vector scopes (same parent, same extent): there axis k of the
        value is the lane axis of the sibling, lane i for lane i."""
        v = np.asarray(self.values[edge_src])
        src_scope = self.k.node(edge_src).scope
        src_chain, dst_chain = self.chains[src_scope], self.chains[scope]
        if len(src_chain) > len(dst_chain) or any(
                a.id != b.id and not _aligned(a, b) for a, b in zip(src_chain, dst_chain)):
            raise IRError(f"{edge_src} (in {src_scope}) is not visible in scope {scope}")
        extra = len(dst_chain) - len(src_chain)
        v = v.reshape(v.shape + (1,) * max(0, extra)) if v.ndim else v
        return np.broadcast_to(v, self.shape(scope))

    def expr(self, e: ex.Expr | None, scope: str | None, default=True, extra=None) -> np.ndarray:
        """`e` over the iteration space of `scope`; `extra` binds more variables."""
        if e is None:
            return np.broadcast_to(np.asarray(default), self.shape(scope))
        env = self.env(scope)
        env.update(extra or {})
        return np.broadcast_to(np.asarray(ex.evaluate(e, env)), self.shape(scope))


def _aligned(a: Node, b: Node) -> bool:
    """Sibling vector scopes whose lanes align."""
    return (a.scope_kind == "vector" and b.scope_kind == "vector" and a.scope == b.scope
            and a.attr("extent") == b.attr("extent"))


def run_kernel(kernel: Kernel, buffers: Mapping[str, np.ndarray]) -> None:
    """Execute `kernel` over `buffers` (name → flat numpy array, written in place)."""
    st = _State(kernel, buffers)
    if any(n.op in TC_OPS for n in kernel.nodes):
        from . import interp_tc

        with np.errstate(all="ignore"):
            interp_tc.run(st, _STEP)
        return
    with np.errstate(all="ignore"):
        for node in kernel.nodes:
            if node.family in ("parallel", "mem"):
                continue
            _STEP[node.op.split(".")[0] if node.family == "compute" else node.op](st, node)


def _memory(st: _State, node: Node) -> tuple[np.ndarray, bool]:
    name = node.attr("buffer")
    if name in st.shared:
        return st.shared[name], True
    if name not in st.buffers:
        raise IRError(f"{node.id}: no buffer {name!r} was passed to kernel {st.k.name}")
    return st.buffers[name], False


def _grid_index(st: _State, node: Node) -> np.ndarray:
    shape = st.shape(node.scope)
    return np.broadcast_to(np.arange(shape[0]).reshape((-1,) + (1,) * (len(shape) - 1)), shape)


def _check_bounds(node: Node, offset: np.ndarray, pred: np.ndarray, size: int) -> None:
    bad = pred & ((offset < 0) | (offset >= size))
    if bad.any():
        raise IRError(f"{node.id} {node.op} {node.attr('buffer')}: offset "
                      f"{int(offset[bad].flat[0])} outside [0, {size})")


def _data(st: _State, node: Node, pred: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The values of an access's data indices, and where all of them lie in range;
    for a load, IndexOutOfRangeError where one does not at a point where its
    predicate holds (a store there writes nothing)."""
    values, inside = {}, np.ones(pred.shape, dtype=bool)
    first = first_data_slot(node)
    for e in st.k.operands(node.id):
        if e.slot < first:
            continue
        var, extent = data_indices(node)[e.slot - first]
        v = st.operand(e.src, node.scope).astype(np.int64)
        ok = (v >= 0) & (v < extent)
        bad = pred & ~ok
        if bad.any() and first == 1:
            raise IndexOutOfRangeError(
                f"kernel {st.k.name} ({dict(st.k.meta).get('op', '?')}): {node.id} reads "
                f"{node.attr('buffer')} at data index {int(v[bad].flat[0])}, outside [0, {extent})")
        values[var], inside = np.where(ok, v, 0), inside & ok
    return values, inside


def _load(st: _State, node: Node) -> None:
    mem, shared = _memory(st, node)
    pred = st.expr(node.attr("pred"), node.scope).astype(bool)
    offset = st.expr(node.attr("offset"), node.scope, extra=_data(st, node, pred)[0]).astype(np.int64)
    size = mem.shape[-1]
    _check_bounds(node, offset, pred, size)
    if size == 0:  # nothing to read: every lane is predicated off (checked above)
        vals = np.zeros(offset.shape, dtype=mem.dtype)
    else:
        safe = np.where(pred, offset, 0)
        vals = mem[_grid_index(st, node), safe] if shared else mem[safe]
    other = np.asarray(node.attr("other").value, dtype=node.dtype.numpy)
    st.values[node.id] = np.where(pred, vals, other).astype(node.dtype.numpy)


def _store(st: _State, node: Node) -> None:
    """A store; a combining one adds every iteration's value in iteration order."""
    mem, shared = _memory(st, node)
    pred = st.expr(node.attr("pred"), node.scope).astype(bool)
    data, inside = _data(st, node, pred)
    pred = pred & inside
    offset = st.expr(node.attr("offset"), node.scope, extra=data).astype(np.int64)
    value_edge = next(e for e in st.k.operands(node.id) if e.slot == 1)
    value = st.operand(value_edge.src, node.scope).astype(mem.dtype)
    _check_bounds(node, offset, pred, mem.shape[-1])
    if node.attr("combine") == "add":
        np.add.at(mem, offset[pred], value[pred])
    elif shared:
        mem[_grid_index(st, node)[pred], offset[pred]] = value[pred]
    else:
        mem[offset[pred]] = value[pred]


def _shuffle(st: _State, node: Node) -> None:
    chain = st.chains[node.scope]
    axis = next((k for k, s in enumerate(chain) if s.scope_kind == "block"), None)
    if axis is None:
        raise IRError(f"{node.id}: shuffle outside a block scope")
    (src,) = [e.src for e in st.k.operands(node.id)]
    value = st.operand(src, node.scope)
    env = st.env(node.scope)
    t = env[chain[axis].attr("var")]
    lane, base = t % WARP_SIZE, t - t % WARP_SIZE
    arg = st.expr(node.attr("lane"), node.scope).astype(np.int64)
    mode = node.attr("mode")
    if mode == "bfly":
        source = base + (lane ^ arg)
    elif mode == "down":
        source = np.where(lane + arg < WARP_SIZE, t + arg, t)
    else:
        source = base + arg % WARP_SIZE
    source = np.broadcast_to(source, value.shape)
    st.values[node.id] = np.take_along_axis(value, source, axis=axis)


def _gemm(st: _State, node: Node) -> None:
    """A matrix product per point of the node's scopes, in emission order of the points
    (row-major over the scopes; the points of one call never overlap in c)."""
    d = node.dtype.numpy
    at = {key: st.expr(node.attr(key), node.scope).astype(np.int64)
          for key in ("m", "n", "k", "a_offset", "b_offset", "c_offset")}
    missing = [node.attr(key) for key in "abc" if node.attr(key) not in st.buffers]
    if missing:
        raise IRError(f"{node.id}: no buffer {missing[0]!r} was passed to kernel {st.k.name}")
    mats = {key: st.buffers[node.attr(key)] for key in "abc"}
    for point in np.ndindex(*st.shape(node.scope)):
        m, n, k = (int(at[key][point]) for key in ("m", "n", "k"))

        def view(key: str, rows: int, cols: int) -> np.ndarray:
            r, c = node.attr(f"{key}_strides")
            idx = int(at[f"{key}_offset"][point]) + np.arange(rows)[:, None] * r + np.arange(cols) * c
            if idx.size and (idx.min() < 0 or idx.max() >= mats[key].shape[-1]):
                raise IRError(f"{node.id} call.gemm: {key} reaches {node.attr(key)}[{idx.min()}"
                              f"..{idx.max()}] outside [0, {mats[key].shape[-1]})")
            return idx

        ia, ib, ic = view("a", m, k), view("b", k, n), view("c", m, n)
        prod = mats["a"][ia].astype(d) @ mats["b"][ib].astype(d) if k else np.zeros((m, n), d)
        mats["c"][ic] = prod.astype(mats["c"].dtype)


def _compute(st: _State, node: Node) -> None:
    kind = node.op.split(".", 1)[1]
    np_dtype = node.dtype.numpy
    if kind == "const":
        st.values[node.id] = np.asarray(node.attr("value").value, dtype=np_dtype)
        return
    if kind == "index":
        st.values[node.id] = st.expr(node.attr("expr"), node.scope).astype(np_dtype)
        return
    if kind == "reduce":
        _reduce(st, node)
        return
    args = [st.operand(e.src, node.scope) for e in st.k.operands(node.id)]
    if kind == "cast":
        out = args[0].astype(np_dtype)
    elif kind == "select":
        out = np.where(args[0], args[1], args[2])
    elif kind in ex._UNARY_NP:
        out = ex._UNARY_NP[kind](np, args[0])
    else:
        out = ex._BINARY_NP[kind](np, args[0], args[1])
    st.values[node.id] = np.asarray(out).astype(np_dtype, copy=False)


def _reduce(st: _State, node: Node) -> None:
    over = node.attr("over")
    (src,) = [e.src for e in st.k.operands(node.id)]
    value = st.operand(src, over)
    combiner = node.attr("combiner")
    np_dtype = node.dtype.numpy
    if node.attr("mask") is not None:
        mask = st.expr(node.attr("mask"), over).astype(bool)
        value = np.where(mask, value, np.asarray(_IDENTITY[combiner](np_dtype), dtype=np_dtype))
    st.values[node.id] = _COMBINE[combiner](value, axis=-1).astype(np_dtype)


_STEP = {
    "compute": _compute,
    "move.global.reg": _load,
    "move.shared.reg": _load,
    "move.reg.global": _store,
    "move.reg.shared": _store,
    "move.reg.reg": _shuffle,
    "sync.block": lambda st, node: None,
    "call.gemm": _gemm,
}
