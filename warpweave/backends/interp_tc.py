"""The interpreter's tensor-core nodes: fragments modelled lane by lane.

`run(state, steps)` executes a kernel that holds tensor-core nodes. Serial scopes
that copy or read tiles, scopes an MMA accumulates over, and loops that commit or
wait for cp.async groups run one iteration at a time (shared-memory stages are reused
across iterations, so the all-iterations-at-once model of `interp` does not hold
there); everything else runs as `interp` runs it. cp.async is asynchronous as on the
GPU: a copy poisons its destination (NaN) when issued and lands only when a
`sync.async_wait` retires its group, so a read left unordered by a missing or too
lenient wait reads NaN. Fragment values are arrays of the node's scope shape followed
by the fragment shape.

The lane layouts are the PTX ISA's: `ldmatrix.x4` — lane l supplies the address of
row l % 8 of matrix l // 8 and receives, of each matrix j, the two elements at row
l // 4, columns 2 (l % 4) + {0, 1} (with `.trans`: rows 2 (l % 4) + {0, 1}, column
l // 4) as register j; `mma.m16n8k16` — A register pair p holds row l // 4 + 8 (p % 2),
columns 2 (l % 4) + {0, 1} + 8 (p // 2); B register pair p rows 2 (l % 4) + {0, 1}
+ 8 p, column l // 4; C element r row l // 4 + 8 (r // 2), column 2 (l % 4) + r % 2.
A TMA copy (`move.global.shared.tensor`) also poisons its box when issued; its data
land when a thread of the block waits (`sync.mbarrier_wait`) for the barrier phase
the copy completes, each barrier slot counting arrivals and transaction bytes as the
hardware does: a wait for a phase that cannot complete any more (too few bytes or
arrivals announced or copied) is reported as the deadlock it would be on the GPU.
Threads arriving on a barrier after their wgmma waits release the groups of products
those waits retired: a wait for that phase proves that no warpgroup still reads them
(the barrier-free pipeline's ordering); without it a group counts as in flight one
iteration longer than its own warpgroup's wait says, as a lagging warpgroup may keep
it running past a block barrier.
`wgmma.m64nNk16` reads its operands from the shared tiles (as the descriptors address
them: `swizzle_offset` of each element) once per warpgroup; warp w of the group
holds rows 16 w .. 16 w + 15 of each 64-row slab, 8 columns at a time as the
m16n8 C fragment.
"""
from __future__ import annotations

import numpy as np

from ..errors import IRError
from ..ir import expr as ex
from ..ir.gir import ASYNC_COMMIT, ASYNC_WAIT, CP_ASYNC, FRAG, LDMATRIX, MBAR_ARRIVE, MBAR_EXPECT, MBAR_INIT, \
    MBAR_OPS, MBAR_WAIT, MMA, TMA_LOAD, WARP_SIZE, WGMMA, TensorMap, swizzle_offset

_LANE = np.arange(WARP_SIZE)
# (lane, register) -> (row, col) of the m16n8k16 fragments
_A_ROW = (_LANE[:, None] // 4) + 8 * ((np.arange(8)[None, :] // 2) % 2)
_A_COL = 2 * (_LANE[:, None] % 4) + np.arange(8)[None, :] % 2 + 8 * (np.arange(8)[None, :] // 4)
_B_ROW = 2 * (_LANE[:, None] % 4) + np.arange(4)[None, :] % 2 + 8 * (np.arange(4)[None, :] // 2)
_B_COL = np.broadcast_to(_LANE[:, None] // 4, (WARP_SIZE, 4))
_C_ROW = (_LANE[:, None] // 4) + 8 * (np.arange(4)[None, :] // 2)
_C_COL = 2 * (_LANE[:, None] % 4) + np.arange(4)[None, :] % 2


def run(st, steps) -> None:
    """Execute `st.k` (an `interp._State`) with `steps`, the interpreter's node table."""
    k = st.k
    st.async_open, st.async_groups = [], []  # copies of the open group; committed groups
    st.wgmma_flight = {}  # per wgmma: the shared reads of its groups still in flight
    st.barriers = {}  # per mbarrier array: its _Barriers
    stepped = _stepped_scopes(k)
    nodes = [n for n in k.nodes if n.family not in ("parallel", "mem")]
    _run_nodes(st, steps, nodes, stepped)


def _stepped_scopes(k) -> set[str]:
    """Serial scopes that copy or read tiles, scopes that an MMA sums over, and loops
    (serial or unrolled) that commit or wait for groups: one group per iteration."""
    out = {n.attr("over") for n in k.nodes if n.op in (MMA, WGMMA)}
    for n in k.nodes:
        if n.op in (CP_ASYNC, LDMATRIX):
            out |= {s.id for s in k.scope_chain(n.scope) if s.scope_kind == "serial"}
        if n.op in (ASYNC_COMMIT, ASYNC_WAIT, TMA_LOAD) or n.op in MBAR_OPS:
            out |= {s.id for s in k.scope_chain(n.scope) if s.scope_kind in ("serial", "unroll")}
    return out


def _home(st, node, stepped: set[str], inside: set[str]) -> str | None:
    """The outermost stepped scope, not yet entered, that `node` runs in."""
    scope = node.attr("over") if node.op in (MMA, WGMMA) else node.scope
    for s in st.chains[scope]:
        if s.id in stepped and s.id not in inside:
            return s.id
    return None


def _run_nodes(st, steps, nodes, stepped, inside=frozenset()) -> None:
    i = 0
    while i < len(nodes):
        home = _home(st, nodes[i], stepped, inside)
        if home is None:
            _step(st, steps, nodes[i])
            i += 1
            continue
        j = i
        while j < len(nodes) and _home(st, nodes[j], stepped, inside) == home:
            j += 1
        for t in range(st.k.scopes[home].attr("extent")):
            st.pinned[home] = t
            _run_nodes(st, steps, nodes[i:j], stepped, inside | {home})
        del st.pinned[home]
        i = j


def _step(st, steps, node) -> None:
    tc = _TC.get(node.op)
    if tc is not None:
        tc(st, node)
    else:
        steps[node.op.split(".")[0] if node.family == "compute" else node.op](st, node)


def _block_axis(st, scope) -> int:
    for a, s in enumerate(st.chains[scope]):
        if s.scope_kind == "block":
            return a
    raise IRError(f"tensor-core node in scope {scope} outside a block scope")


def _frag(st, src: str, scope, nfrag: int) -> np.ndarray:
    """Fragment value `src` broadcast to `scope`'s iteration shape (fragment axes last)."""
    v = st.values[src]
    src_scope = st.k.node(src).scope
    extra = len(st.chains[scope]) - len(st.chains[src_scope])
    if extra < 0:
        raise IRError(f"fragment {src} is not visible in scope {scope}")
    lead, tail = v.shape[:v.ndim - nfrag], v.shape[v.ndim - nfrag:]
    v = v.reshape(lead + (1,) * extra + tail)
    return np.broadcast_to(v, st.shape(scope) + tail)


def _check_not_in_flight(st, node, dst, g, where) -> None:
    """A copy into a tile that a wgmma group still in flight reads is a race."""
    flat = (g * dst.shape[-1] + where).ravel()
    for reads in (r for groups in st.wgmma_flight.values() for r in groups):
        hit = reads.get(node.attr("dst"))
        if hit is not None and np.isin(flat, hit).any():
            raise IRError(f"{node.id} {'TMA' if node.op == TMA_LOAD else 'cp.async'} overwrites "
                          f"{node.attr('dst')} while a wgmma group "
                          f"in flight still reads it (wait for it, or copy further ahead)")


def _cp_async(st, node) -> None:
    src = st.buffers[node.attr("buffer")]
    dst = st.shared[node.attr("dst")]
    scope = node.scope
    offset = st.expr(node.attr("offset"), scope).astype(np.int64)
    pred = st.expr(node.attr("pred"), scope).astype(bool)
    row = st.expr(node.attr("row"), scope).astype(np.int64)
    col = st.expr(node.attr("col"), scope).astype(np.int64)
    g = np.broadcast_to(np.arange(st.shape(scope)[0]).reshape((-1,) + (1,) * (row.ndim - 1)),
                        row.shape)
    n = node.attr("bytes") // node.dtype.itemsize
    for j in range(n):
        off = offset + j
        if (pred & ((off < 0) | (off >= src.shape[-1]))).any():
            raise IRError(f"{node.id} cp.async {node.attr('buffer')}: offset "
                          f"{int(off[pred & ((off < 0) | (off >= src.shape[-1]))].flat[0])} "
                          f"outside [0, {src.shape[-1]})")
        where = swizzle_offset(row, col + j, node.attr("row_elems"), node.attr("swizzle"),
                               node.attr("panel_rows") or 0)
        if ((where < 0) | (where >= dst.shape[-1])).any():
            raise IRError(f"{node.id} cp.async into {node.attr('dst')}: shared offset outside "
                          f"[0, {dst.shape[-1]})")
        _check_not_in_flight(st, node, dst, g, where)
        vals = np.where(pred, src[np.where(pred, off, 0)], 0).astype(dst.dtype)
        if node.attr("bytes") == 2:  # a plain copy: synchronous
            dst[g, where] = vals
        else:
            dst[g, where] = np.nan
            st.async_open.append((dst, g, where, vals))


def _at_tile_points(st, scope, tile, exprs) -> list[np.ndarray]:
    """`exprs` evaluated at every point of `scope` and then of `tile` (its axes last)."""
    chain_len = len(st.chains[scope])
    env = {name: v.reshape(v.shape + (1,) * len(tile)) for name, v in st.env(scope).items()}
    for a, (name, extent) in enumerate(tile):
        shape = [1] * (chain_len + len(tile))
        shape[chain_len + a] = extent
        env[name] = np.arange(extent, dtype=np.int64).reshape(shape)
    full = st.shape(scope) + tuple(e for _, e in tile)
    return [np.broadcast_to(ex.evaluate(e, env), full).astype(np.int64) for e in exprs]


def _ldmatrix(st, node) -> None:
    scope = node.scope
    mem = st.shared[node.attr("buffer")]
    tile = node.attr("tile")
    row, col = _at_tile_points(st, scope, tile, (node.attr("row"), node.attr("col")))
    full = row.shape
    addr = swizzle_offset(row, col, node.attr("row_elems"), node.attr("swizzle"))
    bax = _block_axis(st, scope)
    threads = full[bax]
    t = np.arange(threads)
    lane, base = t % WARP_SIZE, t - t % WARP_SIZE
    j = np.arange(4)[None, :, None]
    e = np.arange(2)[None, None, :]
    if node.attr("trans"):
        source = base[:, None, None] + 8 * j + 2 * (lane[:, None, None] % 4) + e
        within = np.broadcast_to(lane[:, None, None] // 4, source.shape)
    else:
        source = np.broadcast_to(base[:, None, None] + 8 * j + lane[:, None, None] // 4,
                                 (threads, 4, 2))
        within = np.broadcast_to(2 * (lane[:, None, None] % 4) + e, source.shape)
    rows = np.take(addr, source, axis=bax)  # full[:bax] + (T, 4, 2) + full[bax+1:]
    rows = rows + within.reshape((1,) * bax + within.shape + (1,) * (len(full) - bax - 1))
    rows = np.moveaxis(rows, (bax + 1, bax + 2), (-2, -1))
    if ((rows < 0) | (rows >= mem.shape[-1])).any():
        raise IRError(f"{node.id} ldmatrix {node.attr('buffer')}: offset outside "
                      f"[0, {mem.shape[-1]})")
    g = np.arange(full[0]).reshape((-1,) + (1,) * (rows.ndim - 1))
    vals = mem[g, rows]
    st.values[node.id] = vals.reshape(st.shape(scope) + tuple(node.attr("shape")))


def _mma(st, node) -> None:
    over = node.attr("over")
    a_e, b_e = st.k.operands(node.id)
    a = _frag(st, a_e.src, over, 3).astype(np.float64)
    b = _frag(st, b_e.src, over, 3).astype(np.float64)
    bax = _block_axis(st, over)
    lead = a.shape[:-3]
    warps = lead[bax] // WARP_SIZE
    kk, mi = a.shape[-3:-1]
    ni = b.shape[-2]
    # lanes next to the fragment axes: (..., warp, kk, x, lane, reg)
    a = np.moveaxis(a.reshape(lead[:bax] + (warps, WARP_SIZE) + lead[bax + 1:] + (kk, mi, 8)),
                    bax + 1, -2)
    b = np.moveaxis(b.reshape(lead[:bax] + (warps, WARP_SIZE) + lead[bax + 1:] + (kk, ni, 4)),
                    bax + 1, -2)
    am = np.zeros(a.shape[:-2] + (16, 16))
    am[..., _A_ROW, _A_COL] = a
    bm = np.zeros(b.shape[:-2] + (16, 8))
    bm[..., _B_ROW, _B_COL] = b
    c = np.einsum("...kiab,...kjbc->...ijac", am, bm)  # (..., warp, mi, ni, 16, 8)
    frag = c[..., _C_ROW, _C_COL]  # (..., warp, mi, ni, lane, 4)
    frag = np.moveaxis(frag, -2, bax + 1).reshape(lead + (mi, ni, 4))
    frag = frag.reshape(lead[:-1] + (mi, ni, 4)).astype(np.float32)  # drop the pinned axis
    prev = st.values.get(node.id)
    first = st.pinned[over] == 0
    st.values[node.id] = frag if first or prev is None else (prev + frag).astype(np.float32)


def _wgmma_operand(st, node, side: str, rows: int, groups: np.ndarray, bax: int,
                   reads: dict) -> np.ndarray:
    """Operand `side` as each warpgroup reads it: (..., tile points, rows, 16), element
    (i, k) of an m or n row i and a k step's column k; the (block, offset) pairs read
    are added to `reads` (by buffer, as flat offsets)."""
    attr = lambda key: node.attr(f"{side}_{key}")  # noqa: E731
    over = node.attr("over")
    row, col = _at_tile_points(st, over, node.attr("tile"), (attr("row"), attr("col")))
    row, col = np.take(row, groups, axis=bax), np.take(col, groups, axis=bax)
    i, k = np.arange(rows)[:, None], np.arange(16)[None, :]
    r, c = ((row[..., None, None] + k, col[..., None, None] + i) if attr("k_rows")
            else (row[..., None, None] + i, col[..., None, None] + k))
    addr = swizzle_offset(r, c, attr("row_elems"), True, attr("panel_rows") or 0)
    mem = st.shared[attr("buffer")]
    if ((addr < 0) | (addr >= mem.shape[-1])).any():
        raise IRError(f"{node.id} wgmma reads {attr('buffer')} outside [0, {mem.shape[-1]})")
    g = np.arange(addr.shape[0]).reshape((-1,) + (1,) * (addr.ndim - 1))
    flat = np.unique((g * mem.shape[-1] + addr).ravel())
    reads[attr("buffer")] = np.union1d(reads.get(attr("buffer"), flat[:0]), flat)
    return mem[g, addr].astype(np.float64)


def _wgmma(st, node) -> None:
    over = node.attr("over")
    lead = st.shape(over)
    bax = _block_axis(st, over)
    threads, group = lead[bax], 4 * WARP_SIZE
    firsts = np.arange(0, threads, group)  # each warpgroup's first thread reads for it
    reads: dict[str, np.ndarray] = {}
    a = _wgmma_operand(st, node, "a", 64, firsts, bax, reads)
    b = _wgmma_operand(st, node, "b", node.attr("n"), firsts, bax, reads)
    # this group and the `pending` before it may still read their tiles (a copy issued
    # in this iteration lands before this group's reads on the GPU: it must miss both)
    flight = [] if st.pinned[over] == 0 else st.wgmma_flight.get(node.id, [])
    st.wgmma_flight[node.id] = (flight + [reads])[-(node.attr("pending") or 0) - 1:]
    d = np.einsum("...kimx,...kinx->...imn", a, b)  # lead (groups on bax) + (mi, 64, n)
    d = np.moveaxis(np.take(d, np.arange(threads) // group, axis=bax), bax, -4)
    t = np.arange(threads)[:, None, None, None]
    mi = np.arange(d.shape[-3])[None, :, None, None]
    j = np.arange(node.attr("n") // 8)[None, None, :, None]
    r = np.arange(4)[None, None, None, :]
    lane = t % WARP_SIZE
    frag = d[..., t, mi, 16 * ((t // WARP_SIZE) % 4) + _C_ROW[lane, r], 8 * j + _C_COL[lane, r]]
    frag = np.moveaxis(frag, -4, bax)  # lead + (mi, ni, 4)
    frag = frag.reshape(lead[:-1] + frag.shape[-3:]).astype(np.float32)  # drop the pinned axis
    prev = st.values.get(node.id)
    st.values[node.id] = frag if st.pinned[over] == 0 or prev is None else (prev + frag).astype(np.float32)


def _extract(st, node) -> None:
    (e,) = st.k.operands(node.id)
    shape = tuple(st.k.node(e.src).attr("shape"))
    v = _frag(st, e.src, node.scope, len(shape))
    idx = [st.expr(i, node.scope).astype(np.int64) for i in node.attr("index")]
    flat = np.ravel_multi_index(idx, shape)
    v = v.reshape(v.shape[:v.ndim - len(shape)] + (-1,))
    st.values[node.id] = np.take_along_axis(v, flat[..., None], axis=-1)[..., 0]


def _commit(st, node) -> None:
    st.async_groups.append(st.async_open)
    st.async_open = []


def _wait(st, node) -> None:
    while len(st.async_groups) > node.attr("pending"):
        for dst, g, where, vals in st.async_groups.pop(0):
            dst[g, where] = vals


class _Barriers:
    """One shared array of mbarriers, per block and slot: completed phases, arrivals
    and transaction bytes of the current phase, and the copies that complete it."""

    def __init__(self, grid: int, slots: int, count: int):
        self.count = count
        self.phase = np.zeros((grid, slots), np.int64)
        self.arrived = np.zeros((grid, slots), np.int64)
        self.tx = np.zeros((grid, slots), np.int64)
        self.pending: list[tuple] = []  # (block, slot, phase it completes, dst, positions, values)

        self.releases: list[tuple] = []  # (block, slot, phase, wgmma groups its completion retires)

    def settle(self) -> None:
        done = (self.arrived == self.count) & (self.tx == 0)
        self.phase += done
        self.arrived[done] = 0


def _barriers(st, node) -> "_Barriers":
    bars = st.barriers.get(node.attr("barrier"))
    if bars is None:
        raise IRError(f"{node.id} uses barrier {node.attr('barrier')} before sync.mbarrier_init")
    return bars


def _issuers(st, node) -> tuple[np.ndarray, tuple]:
    """(block index, index tuple into the scope's space) of the points whose pred holds
    (every point without one)."""
    pred = st.expr(node.attr("pred"), node.scope).astype(bool)
    points = np.nonzero(pred)
    return points[0], points


def _mbar_init(st, node) -> None:
    alloc = st.k.shared_alloc(node.attr("barrier"))
    blocks, _ = _issuers(st, node)
    if len(np.unique(blocks)) != st.k.grid or len(blocks) != st.k.grid:
        raise IRError(f"{node.id}: every block initialises its barriers once (pred held "
                      f"{len(blocks)} times over {st.k.grid} blocks)")
    st.barriers[node.attr("barrier")] = _Barriers(st.k.grid, alloc.size, node.attr("count"))


def _mbar_expect(st, node) -> None:
    bars = _barriers(st, node)
    blocks, points = _issuers(st, node)
    slot = st.expr(node.attr("slot"), node.scope).astype(np.int64)[points]
    np.add.at(bars.arrived, (blocks, slot), 1)
    np.add.at(bars.tx, (blocks, slot), node.attr("bytes"))
    bars.settle()


def _mbar_arrive(st, node) -> None:
    bars = _barriers(st, node)
    blocks, points = _issuers(st, node)
    slot = st.expr(node.attr("slot"), node.scope).astype(np.int64)[points]
    retired = [g for node_id, groups in st.wgmma_flight.items()
               for g in groups[:max(0, len(groups) - (st.k.node(node_id).attr("pending") or 0))]]
    if retired:
        bars.releases.append((blocks, slot, bars.phase[blocks, slot].copy(), retired))
    np.add.at(bars.arrived, (blocks, slot), 1)
    bars.settle()


def _tma(st, node) -> None:
    m = TensorMap.of(node)
    bars = _barriers(st, node)
    blocks, points = _issuers(st, node)
    src, dst = st.buffers[m.buffer], st.shared[node.attr("dst")]
    at = lambda key: st.expr(node.attr(key), node.scope).astype(np.int64)[points]  # noqa: E731
    coords = [st.expr(c, node.scope).astype(np.int64)[points] for c in node.attr("coords")]
    slot, row, col = at("slot"), at("row"), at("col")
    # (issuing point, box row, box column): the outer axes' boxes are one entry long
    r = np.arange(m.box[1])[None, :, None]
    j = np.arange(m.box[0])[None, None, :]
    inner, outer = coords[0][:, None, None] + j, coords[1][:, None, None] + r
    valid = (inner < m.dims[0]) & (outer < m.dims[1]) & (inner >= 0) & (outer >= 0)
    offset = m.base + inner + outer * m.strides[0]
    for c, d, stride in zip(coords[2:], m.dims[2:], m.strides[1:]):
        c = c[:, None, None]
        valid &= (c >= 0) & (c < d)
        offset = offset + c * stride
    vals = np.where(valid, src[np.where(valid, offset, 0)], 0).astype(dst.dtype)
    where = swizzle_offset(row[:, None, None] + r, col[:, None, None] + j, node.attr("row_elems"),
                           True, node.attr("panel_rows") or 0)
    if ((where < 0) | (where >= dst.shape[-1])).any():
        raise IRError(f"{node.id} TMA into {node.attr('dst')}: shared offset outside [0, {dst.shape[-1]})")
    g = np.broadcast_to(blocks[:, None, None], where.shape)
    _check_not_in_flight(st, node, dst, g, where)
    dst[g, where] = np.nan
    bars.pending.append((blocks, slot, bars.phase[blocks, slot].copy(), dst, g, where, vals))
    np.add.at(bars.tx, (blocks, slot), -int(np.prod(m.box)) * src.dtype.itemsize)
    bars.settle()


def _mbar_wait(st, node) -> None:
    bars = _barriers(st, node)
    _, points = _issuers(st, node)
    slot = st.expr(node.attr("slot"), node.scope).astype(np.int64)
    parity = st.expr(node.attr("parity"), node.scope).astype(np.int64)
    g = np.broadcast_to(np.arange(slot.shape[0]).reshape((-1,) + (1,) * (slot.ndim - 1)), slot.shape)
    g, slot, parity = g[points], slot[points], parity[points]
    stuck = bars.phase[g, slot] % 2 == parity % 2
    if stuck.any():
        b, s = int(g[stuck].flat[0]), int(slot[stuck].flat[0])
        raise IRError(f"{node.id} waits on {node.attr('barrier')}[{s}] (block {b}) for a phase that "
                      f"never completes: {bars.arrived[b, s]} of {bars.count} arrivals, "
                      f"{bars.tx[b, s]} transaction bytes outstanding")
    waited = np.zeros(bars.phase.shape, bool)
    waited[g, slot] = True
    keep = []
    for entry in bars.pending:
        blocks, slots, phase, dst, eg, where, vals = entry
        lands = waited[blocks, slots] & (phase < bars.phase[blocks, slots])
        if lands.any():
            dst[eg[lands], where[lands]] = vals[lands]
        if not lands.all():
            keep.append((blocks[~lands], slots[~lands], phase[~lands], dst, eg[~lands], where[~lands],
                         vals[~lands]))
    bars.pending = keep
    released = []
    for blocks, slots, phase, groups in bars.releases:
        if (waited[blocks, slots] & (phase < bars.phase[blocks, slots])).all():
            for flight in st.wgmma_flight.values():
                flight[:] = [x for x in flight if all(x is not y for y in groups)]
        else:
            released.append((blocks, slots, phase, groups))
    bars.releases = released


_TC = {CP_ASYNC: _cp_async, LDMATRIX: _ldmatrix, MMA: _mma, WGMMA: _wgmma, FRAG: _extract,
       ASYNC_COMMIT: _commit, ASYNC_WAIT: _wait, TMA_LOAD: _tma, MBAR_INIT: _mbar_init,
       MBAR_EXPECT: _mbar_expect, MBAR_ARRIVE: _mbar_arrive, MBAR_WAIT: _mbar_wait}
