"""Bulk tensor copies (TMA) and shared-memory barriers → LLVM IR for NVPTX (sm_90).

All inline PTX: `mbarrier.init`, `mbarrier.arrive.expect_tx`, `mbarrier.arrive`, a
`mbarrier.try_wait.parity` loop, and `cp.async.bulk.tensor.Nd.shared::cluster.global.tile.mbarrier::complete_tx::bytes`
whose tensor map is a by-value kernel parameter (`.param .align 64 .b8 [128]`, a
grid constant, so its generic address is taken in place: `cvta.param`). After the
barriers' initialisation a `fence.mbarrier_init` makes them visible to the async proxy
that the copies complete them through.
"""
from __future__ import annotations

from llvmlite import ir

from ...errors import CompileError
from ...ir.gir import MBAR_ARRIVE, MBAR_EXPECT, MBAR_INIT, MBAR_WAIT, TENSOR_MAP_ALIGN, TENSOR_MAP_BYTES, TMA_LOAD, \
    Node, TensorMap, tensor_map_param, tensor_maps
from .irtypes import I16, I32, I64
from .tensorcore import _swizzled



def _asm(cg, text: str, constraints: str, args: list[ir.Value], ret: ir.Type = ir.VoidType()):
    fn = ir.FunctionType(ret, [a.type for a in args])
    clobbers = f"{constraints},~{{memory}}" if constraints else "~{memory}"
    return cg.b.call(ir.InlineAsm(fn, text, clobbers, side_effect=True), args)


def _shared32(cg, ptr: ir.Value) -> ir.Value:
    return cg.b.ptrtoint(ptr, I32)


def _barrier(cg, n: Node) -> ir.Value:
    """The shared address (32-bit) of barrier `slot` of the node's barrier array."""
    base = cg.target.shared_pointer(cg, n.attr("barrier"))
    if n.op == MBAR_INIT:
        return base
    ptr = cg.b.gep(base, [cg.index(n.attr("slot"))], inbounds=True, source_etype=I64)
    return _shared32(cg, ptr)


def _issued(cg, n: Node, body) -> None:
    """`body()` on the threads where the node's pred holds (every thread without one)."""
    if n.attr("pred") is None:
        body()
        return
    with cg.b.if_then(cg.index(n.attr("pred"))):
        body()


def emit(cg, n: Node) -> None:
    if n.op == MBAR_INIT:
        _issued(cg, n, lambda: _init(cg, n))
    elif n.op == MBAR_EXPECT:
        _issued(cg, n, lambda: _asm(cg, "mbarrier.arrive.expect_tx.shared::cta.b64 _, [$0], $1;", "r,r",
                                    [_barrier(cg, n), ir.Constant(I32, n.attr("bytes"))]))
    elif n.op == MBAR_ARRIVE:
        _issued(cg, n, lambda: _asm(cg, "mbarrier.arrive.shared::cta.b64 _, [$0];", "r", [_barrier(cg, n)]))
    elif n.op == MBAR_WAIT:
        _issued(cg, n, lambda: _wait(cg, n))
    elif n.op == TMA_LOAD:
        _issued(cg, n, lambda: _tma(cg, n))
    else:
        raise CompileError(f"{n.id}: cannot generate code for {n.op}")


def _init(cg, n: Node) -> None:
    base = cg.target.shared_pointer(cg, n.attr("barrier"))
    for slot in range(cg.k.shared_alloc(n.attr("barrier")).size):
        ptr = cg.b.gep(base, [ir.Constant(I64, slot)], inbounds=True, source_etype=I64)
        _asm(cg, "mbarrier.init.shared::cta.b64 [$0], $1;", "r,r",
             [_shared32(cg, ptr), ir.Constant(I32, n.attr("count"))])
    _asm(cg, "fence.mbarrier_init.release.cluster;", "", [])


def _wait(cg, n: Node) -> None:
    b = cg.b
    bar, parity = _barrier(cg, n), b.trunc(cg.index(n.attr("parity")), I32)
    test = b.append_basic_block("mbar.wait")
    done = b.append_basic_block("mbar.done")
    b.branch(test)
    b.position_at_end(test)
    ready = _asm(cg, "{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [$1], $2; "
                     "selp.u32 $0, 1, 0, p; }", "=r,r,r", [bar, parity], I32)
    b.cbranch(b.icmp_unsigned("!=", ready, ir.Constant(I32, 0)), done, test)
    b.position_at_end(done)


def _tma(cg, n: Node) -> None:
    b = cg.b
    rank = len(n.attr("dims"))
    row, col = cg.index(n.attr("row")), cg.index(n.attr("col"))
    off = _swizzled(cg, row, col, n.attr("row_elems"), False, n.attr("panel_rows") or 0)
    dst = b.gep(cg.target.shared_pointer(cg, n.attr("dst")), [off], inbounds=True, source_etype=I16)
    m = TensorMap.of(n)
    tmap = b.ptrtoint(cg.buffers[tensor_map_param(tensor_maps(cg.k).index(m), m)], I64)
    coords = [b.trunc(cg.index(c), I32) for c in n.attr("coords")]
    places = ", ".join(f"${3 + k}" for k in range(rank))
    _asm(cg, f"cp.async.bulk.tensor.{rank}d.shared::cluster.global.tile.mbarrier::complete_tx::bytes "
             f"[$0], [$1, {{{places}}}], [$2];", ",".join(["r", "l", "r"] + ["r"] * rank),
         [_shared32(cg, dst), tmap, _barrier(cg, n)] + coords)


def declare_tensor_maps(module: ir.Module, fn: ir.Function, first: int) -> None:
    """Mark kernel parameters `first`.. (by-value tensor maps) as grid constants."""
    annotations = module.get_named_metadata("nvvm.annotations")
    indices = [ir.IntType(32)(k + 1) for k in range(first, len(fn.args))]
    if indices:
        annotations.add(module.add_metadata([fn, "grid_constant", module.add_metadata(indices)]))
    for arg in fn.args[first:]:
        arg.add_attribute("byval")
        arg.attributes.align = TENSOR_MAP_ALIGN


TENSOR_MAP_TYPE = ir.PointerType(ir.ArrayType(ir.IntType(8), TENSOR_MAP_BYTES))  # typed: byval names it
