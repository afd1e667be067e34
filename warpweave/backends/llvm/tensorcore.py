"""Tensor-core GIR nodes → LLVM IR for NVPTX.

`cp.async` is inline PTX (`cp.async.cg|ca.shared.global.L2::128B [dst], [src], bytes,
src-size`: LLVM's intrinsics have no src-size operand, which zero-fills predicated-off
copies; the L2 fetches whole 128-byte lines, as CUTLASS's copies ask);
commit and wait groups, `ldmatrix` and `mma.sync` are NVVM intrinsics. A 2-byte copy
is a plain load and shared store. Fragments are lists of i32 registers (two 16-bit
elements each); an MMA's accumulators live in a float array that LLVM promotes to
registers (every index is a constant). `wgmma` (sm_90a) is inline PTX: per loop
iteration a `wgmma.fence`, one `wgmma.mma_async` per tile point with shared-memory
descriptors for both operands, a commit and a wait whose operands are the
accumulators (so that nothing reads them before the products land).
"""
from __future__ import annotations

from llvmlite import ir

from ...errors import CompileError
from ...ir import dtypes as dt
from ...ir import expr as ex
from ...ir.gir import ASYNC_COMMIT, ASYNC_WAIT, CHUNK, CP_ASYNC, FRAG, LDMATRIX, MMA, PANEL, WGMMA, Node
from .irtypes import I16, I32, I64

F32 = ir.FloatType()
_SHARED = ir.PointerType(addrspace=3)
_GLOBAL = ir.PointerType(addrspace=1)


def _intrinsic(cg, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    fn = cg.module.globals.get(name)
    return fn if fn is not None else ir.Function(cg.module, ir.FunctionType(ret, args), name)


def _log2(n: int) -> int:
    if n < 1 or n & (n - 1):
        raise CompileError(f"shared tile layout needs a power of two, got {n}")
    return n.bit_length() - 1


def _swizzled(cg, row: ir.Value, col: ir.Value, row_elems: int, swizzle: bool,
              panel_rows: int = 0) -> ir.Value:
    """`gir.swizzle_offset` in LLVM IR (i64)."""
    b = cg.b
    if panel_rows and row_elems > PANEL:
        panel = b.mul(b.lshr(col, ir.Constant(I64, _log2(PANEL))), ir.Constant(I64, panel_rows * PANEL))
        within = _swizzled(cg, row, b.and_(col, ir.Constant(I64, PANEL - 1)), PANEL, swizzle)
        return b.add(panel, within)
    base = b.mul(row, ir.Constant(I64, row_elems))
    if not swizzle:
        return b.add(base, col)
    chunks = row_elems // CHUNK
    period, mask = max(1, 8 // chunks), min(chunks, 8) - 1
    sel = b.and_(b.lshr(row, ir.Constant(I64, _log2(period))), ir.Constant(I64, mask))
    chunk = b.xor(b.lshr(col, ir.Constant(I64, 3)), sel)
    return b.add(base, b.add(b.shl(chunk, ir.Constant(I64, 3)), b.and_(col, ir.Constant(I64, 7))))


def _shared_addr(cg, n: Node, buffer: str, row: ir.Value, col: ir.Value) -> ir.Value:
    off = _swizzled(cg, row, col, n.attr("row_elems"), n.attr("swizzle"), n.attr("panel_rows") or 0)
    return cg.b.gep(cg.target.shared_pointer(cg, buffer), [off], inbounds=True, source_etype=I16)


def emit(cg, n: Node) -> None:
    """Code for a tensor-core node other than the MMA (see `start/update/finish_mma`)."""
    if n.op == CP_ASYNC:
        _cp_async(cg, n)
    elif n.op == ASYNC_COMMIT:
        cg.b.call(_intrinsic(cg, "llvm.nvvm.cp.async.commit.group", ir.VoidType(), []), [])
    elif n.op == ASYNC_WAIT:
        fn = _intrinsic(cg, "llvm.nvvm.cp.async.wait.group", ir.VoidType(), [I32])
        cg.b.call(fn, [ir.Constant(I32, n.attr("pending"))])
        if n.attr("proxy"):  # the landed copies made visible to the async proxy (wgmma)
            _asm(cg, "fence.proxy.async.shared::cta;")
    elif n.op == LDMATRIX:
        cg.values[n.id] = _ldmatrix(cg, n)
    elif n.op == FRAG:
        cg.values[n.id] = _extract(cg, n)
    else:
        raise CompileError(f"{n.id}: cannot generate code for {n.op}")


def _asm(cg, text: str) -> None:
    cg.b.call(ir.InlineAsm(ir.FunctionType(ir.VoidType(), []), text, "~{memory}", side_effect=True), [])


def _cp_async(cg, n: Node) -> None:
    b = cg.b
    nbytes = n.attr("bytes")
    offset = cg.index(n.attr("offset"))
    pred = n.attr("pred")
    p = cg.index(pred) if pred is not None else ir.Constant(ir.IntType(1), 1)
    offset = b.select(p, offset, ir.Constant(I64, 0))
    dst = _shared_addr(cg, n, n.attr("dst"), cg.index(n.attr("row")), cg.index(n.attr("col")))
    src = b.gep(cg._pointer(n.attr("buffer")), [offset], inbounds=True, source_etype=I16)
    if nbytes == 2:
        v = b.select(p, b.load(src, typ=I16, align=2), ir.Constant(I16, 0))
        b.store(v, dst, align=2)
        return
    size = b.select(p, ir.Constant(I32, nbytes), ir.Constant(I32, 0))
    kind = "cg" if nbytes == 16 else "ca"
    asm = ir.InlineAsm(ir.FunctionType(ir.VoidType(), [I32, _GLOBAL, I32]),
                       f"cp.async.{kind}.shared.global.L2::128B [$0], [$1], {nbytes}, $2;",
                       "r,l,r,~{memory}", side_effect=True)
    b.call(asm, [b.ptrtoint(dst, I32), b.addrspacecast(src, _GLOBAL), size])


def _ldmatrix(cg, n: Node) -> list[ir.Value]:
    name = "llvm.nvvm.ldmatrix.sync.aligned.m8n8.x4" + (".trans" if n.attr("trans") else "") + ".b16"
    fn = _intrinsic(cg, name, ir.LiteralStructType([I32] * 4), [_SHARED])
    regs: list[ir.Value] = []

    def at_point() -> None:
        addr = _shared_addr(cg, n, n.attr("buffer"), cg.index(n.attr("row")), cg.index(n.attr("col")))
        out = cg.b.call(fn, [addr])
        regs.extend(cg.b.extract_value(out, j) for j in range(4))

    _each_tile_point(cg, n.attr("tile"), at_point)
    return regs


def _each_tile_point(cg, tile, body) -> None:
    """`body()` at every point of `tile` ((var, extent) pairs, the last fastest), each
    variable bound to its constant in `cg.env` meanwhile."""
    def walk(depth: int) -> None:
        if depth == len(tile):
            body()
            return
        var, extent = tile[depth]
        for i in range(extent):
            cg.env[var] = ir.Constant(I64, i)
            walk(depth + 1)
        del cg.env[var]

    walk(0)


def _const_index(cg, e: ex.Expr, lane: int = 0) -> int:
    env = {}
    for name in ex.free_vars(e):
        v = cg.env.get(name)
        if name == cg._vector_var:
            env[name] = lane
            continue
        if not isinstance(v, ir.Constant):
            raise CompileError(f"a fragment index must be constant (unroll scopes); "
                               f"{ex.to_text(e)} uses {name}")
        env[name] = int(v.constant)
    return int(ex.evaluate(e, env))


def _extract(cg, n: Node) -> ir.Value:
    """Accumulator elements at constant indices (one per lane in a vector scope)."""
    (e,) = cg.k.operands(n.id)
    src = cg.k.node(e.src)
    if src.op not in (MMA, WGMMA):
        raise CompileError(f"{n.id}: only MMA accumulators are read element by element")
    shape = src.attr("shape")
    values = []
    for lane in range(cg.width or 1):
        flat = 0
        for i, extent in zip(n.attr("index"), shape):
            flat = flat * extent + _const_index(cg, i, lane)
        ptr = cg.b.gep(cg.values[src.id], [ir.Constant(I32, 0), ir.Constant(I32, flat)],
                       inbounds=True)
        values.append(cg.b.load(ptr, typ=F32))
    if cg.width is None:
        return values[0]
    out = ir.Constant(ir.VectorType(F32, cg.width), ir.Undefined)
    for lane, v in enumerate(values):
        out = cg.b.insert_element(out, v, ir.Constant(I32, lane))
    return out


# ----------------------------------------------------------------------------- the MMA
def start_mma(cg, r: Node) -> None:  # mma.sync and wgmma alike
    """Zeroed float32 accumulators before the loop of `r`'s scope `over`."""
    count = 1
    for e in r.attr("shape"):
        count *= e
    ty = ir.ArrayType(F32, count)
    acc = cg.alloca(ty, f"acc{r.id[1:]}")
    cg.b.store(ir.Constant(ty, [0.0] * count), acc)
    cg._acc[r.id] = acc


def update_mma(cg, r: Node) -> None:
    """One iteration's products, added into the accumulators."""
    if r.op == WGMMA:
        _update_wgmma(cg, r)
        return
    a_e, b_e = cg.k.operands(r.id)
    a, bfrag = cg.values[a_e.src], cg.values[b_e.src]
    kk, mi, _ = a_e.shape
    ni = b_e.shape[1]
    d = a_e.dtype
    b = cg.b
    acc = cg._acc[r.id]
    if d == dt.bfloat16:
        fn = _intrinsic(cg, "llvm.nvvm.mma.m16n8k16.row.col.bf16", ir.LiteralStructType([F32] * 4),
                        [I32] * 6 + [F32] * 4)
        cast = lambda v: v  # noqa: E731
    elif d == dt.float16:
        h2 = ir.VectorType(ir.HalfType(), 2)
        fn = _intrinsic(cg, "llvm.nvvm.mma.m16n8k16.row.col.f32.f32",
                        ir.LiteralStructType([F32] * 4), [h2] * 6 + [F32] * 4)
        cast = lambda v: b.bitcast(v, h2)  # noqa: E731
    else:
        raise CompileError(f"{r.id}: mma.sync takes bfloat16 or float16, not {d}")
    ptrs = [b.gep(acc, [ir.Constant(I32, 0), ir.Constant(I32, j)], inbounds=True)
            for j in range(mi * ni * 4)]
    c = [b.load(p, typ=F32) for p in ptrs]
    for k in range(kk):
        for i in range(mi):
            for j in range(ni):
                av = [cast(a[(k * mi + i) * 4 + q]) for q in range(4)]
                bv = [cast(bfrag[(k * ni + j) * 2 + q]) for q in range(2)]
                base = (i * ni + j) * 4
                out = b.call(fn, av + bv + c[base:base + 4])
                c[base:base + 4] = [b.extract_value(out, q) for q in range(4)]
    for p, v in zip(ptrs, c):
        b.store(v, p)


def finish_mma(cg, r: Node) -> None:
    """The accumulators after the loop (a wgmma's last groups waited for)."""
    acc = cg._acc[r.id]
    if r.op == WGMMA and r.attr("pending"):
        ptrs = [cg.b.gep(acc, [ir.Constant(I32, 0), ir.Constant(I32, j)], inbounds=True)
                for j in range(acc.allocated_type.count)]
        _wait_wgmma(cg, ptrs, [cg.b.load(p, typ=F32) for p in ptrs], 0)
    cg.values[r.id] = acc


# ----------------------------------------------------------------------------- wgmma
_SWIZZLE_MODE = {128: 1, 64: 2, 32: 3}  # descriptor bits 62-63 by the swizzle's row bytes
# MN-major tiles ([k][m or n] in panels of `PANEL` columns): the descriptor's leading
# byte offset steps from one panel to the next, its stride byte offset from one 8-row
# group of k to the next (1024 bytes: 8 rows of 128)
MN_GROUP_BYTES = 8 * PANEL * 2


def _descriptor(cg, r: Node, side: str) -> ir.Value:
    """The 64-bit shared-memory matrix descriptor of operand `side` ("a" or "b") at the
    current tile point: the unswizzled address of its first element (the hardware
    swizzles addresses of a 1024-byte aligned tile itself), the two strides between
    8 x 16-byte core matrices and the swizzle mode."""
    b = cg.b
    attr = lambda key: r.attr(f"{side}_{key}")  # noqa: E731
    row_elems, panel_rows = attr("row_elems"), attr("panel_rows") or 0
    off = _swizzled(cg, cg.index(attr("row")), cg.index(attr("col")), row_elems, False, panel_rows)
    ptr = b.gep(cg.target.shared_pointer(cg, attr("buffer")), [off], inbounds=True, source_etype=I16)
    addr = b.lshr(b.and_(b.ptrtoint(ptr, I64), ir.Constant(I64, 0x3FFFF)), ir.Constant(I64, 4))
    if not attr("k_rows"):
        row_bytes = 2 * row_elems
        lead, stride, mode = 16, 8 * row_bytes, _SWIZZLE_MODE[row_bytes]
    else:
        lead = panel_rows * PANEL * 2 if panel_rows and row_elems > PANEL else 16
        stride, mode = MN_GROUP_BYTES, 1
    fields = ((lead >> 4) << 16) | ((stride >> 4) << 32) | (mode << 62)
    return b.or_(addr, ir.Constant(I64, fields))


def _update_wgmma(cg, r: Node) -> None:
    b = cg.b
    n = r.attr("n")
    half = n // 2
    kind = {"bfloat16": "bf16", "float16": "f16"}[cg.k.operands(r.id)[0].dtype.name]
    trans = [1 if r.attr(f"{side}_k_rows") else 0 for side in "ab"]
    regs = ", ".join(f"${i}" for i in range(half))
    mma = ir.InlineAsm(
        ir.FunctionType(ir.LiteralStructType([F32] * half), [I64, I64] + [F32] * half),
        f"wgmma.mma_async.sync.aligned.m64n{n}k16.f32.{kind}.{kind} {{{regs}}}, ${half}, "
        f"${half + 1}, 1, 1, 1, {trans[0]}, {trans[1]};",
        ",".join(["=f"] * half + ["l", "l"] + [str(i) for i in range(half)]), side_effect=True)
    acc = cg._acc[r.id]
    total = acc.allocated_type.count
    ptrs = [b.gep(acc, [ir.Constant(I32, 0), ir.Constant(I32, j)], inbounds=True) for j in range(total)]
    c = [b.load(p, typ=F32) for p in ptrs]
    _asm(cg, "wgmma.fence.sync.aligned;")

    def at_point() -> None:
        mi = int(cg.env["mi"].constant)
        out = b.call(mma, [_descriptor(cg, r, "a"), _descriptor(cg, r, "b")] + c[mi * half:(mi + 1) * half])
        c[mi * half:(mi + 1) * half] = [b.extract_value(out, q) for q in range(half)]

    _each_tile_point(cg, r.attr("tile"), at_point)
    _asm(cg, "wgmma.commit_group.sync.aligned;")
    _wait_wgmma(cg, ptrs, c, r.attr("pending") or 0)


def _wait_wgmma(cg, ptrs: list[ir.Value], values: list[ir.Value], pending: int) -> None:
    """wgmma.wait_group `pending`, the accumulators passing through it (so that no read
    of them moves above the wait), stored back to their array."""
    b = cg.b
    n = len(values)
    wait = ir.InlineAsm(ir.FunctionType(ir.LiteralStructType([F32] * n), [F32] * n),
                        f"wgmma.wait_group.sync.aligned {pending};",
                        ",".join(["=f"] * n + [str(i) for i in range(n)]), side_effect=True)
    out = b.call(wait, values)
    for j, p in enumerate(ptrs):
        b.store(b.extract_value(out, j), p)
