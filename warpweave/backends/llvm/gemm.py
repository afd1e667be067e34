"""LLVM code for `call.gemm` on the CPU: a CBLAS call into the host BLAS where the
operands are float32 or float64 matrices it can describe (one unit stride each),
else a loop nest over blocks of l, then i, l, j, that converts operands as it reads
them (the innermost loop walks rows of b and of four rows of c at once, which LLVM
vectorizes; a block of b's rows stays in cache across the rows of a).

The call runs with one BLAS thread (restoring the caller's setting after) inside a
kernel whose grid has several steps (the grid steps already share the cores), and for
a product of fewer than `BLAS_THREADS_MIN_WORK` multiply-adds: waking the BLAS's
threads costs more than sharing such a product saves, and on a machine whose cores
are busy (PyTorch's own threads spinning, other processes) a wake-up waits for a
time slice, milliseconds against a product of microseconds.
"""
from __future__ import annotations

from llvmlite import ir

from ...ir import dtypes as dt
from ...ir import simplify as sx
from ...ir.gir import GEMM_OPERANDS, Node
from ..blas import DGEMM, SET_THREADS, SGEMM, Blas
from .irtypes import I32, I64, mem_type, reg_type

ROW_MAJOR, COL_MAJOR, NO_TRANS, TRANS = 101, 102, 111, 112
K_BLOCK = 64  # rows of b one sweep over a's rows reuses (64 x 1024 float32: 256 KB, in L2)
M_TILE = 4    # rows of c updated together: each element of b loaded once for all four
BLAS_THREADS_MIN_WORK = 1 << 24  # m·n·k from which the BLAS's own threads share a product
_EXTENTS = {"a": ("m", "k"), "b": ("k", "n"), "c": ("m", "n")}


def blas_layout(strides: tuple[int, int], rows: int, cols: int) -> tuple[bool, int] | None:
    """(column-major?, leading dimension) of a matrix with these element strides and
    at most `rows` × `cols` elements, as BLAS takes it; None when it cannot."""
    r, c = strides
    if c == 1 and (r >= max(1, cols) or rows <= 1):
        return False, max(r, cols, 1)
    if r == 1 and (c >= max(1, rows) or cols <= 1):
        return True, max(c, rows, 1)
    if cols <= 1 and r >= 1:
        return False, r
    if rows <= 1 and c >= 1:
        return True, c
    return None


def emit_gemm(cg, n: Node, blas: Blas | None) -> None:
    """Emit node `n` into the kernel codegen `cg` (a `KernelCodegen`)."""
    ranges = cg.k.ranges(n.scope)
    bound = {key: (sx.bounds(n.attr(key), ranges) or (0, 1 << 62))[1] for key in ("m", "n", "k")}
    dtypes = {key: cg._buffer_dtype(n.attr(key)) for key in GEMM_OPERANDS}
    layouts = {key: blas_layout(n.attr(f"{key}_strides"), bound[_EXTENTS[key][0]], bound[_EXTENTS[key][1]])
               for key in GEMM_OPERANDS}
    ptrs = {}
    for key in GEMM_OPERANDS:
        base = cg._pointer(n.attr(key))
        ptrs[key] = cg.b.gep(base, [cg.index(n.attr(f"{key}_offset"))], source_etype=mem_type(dtypes[key]))
    m, nn, k = (cg.index(n.attr(key)) for key in ("m", "n", "k"))
    if blas is not None and all(d == n.dtype for d in dtypes.values()) and None not in layouts.values():
        threaded = cg.k.grid == 1 and bound["m"] * bound["n"] * bound["k"] >= BLAS_THREADS_MIN_WORK
        _blas_call(cg, n, blas, layouts, ptrs, m, nn, k, threaded)
    else:
        _loops(cg, n, dtypes, ptrs, m, nn, k)


def _declare(module: ir.Module, name: str, ty: ir.FunctionType) -> ir.Function:
    return module.globals.get(name) or ir.Function(module, ty, name)


def _blas_call(cg, n: Node, blas: Blas, layouts, ptrs, m, nn, k, threaded: bool) -> None:
    """The CBLAS call; on one BLAS thread unless `threaded`."""
    b = cg.b
    it = ir.IntType(blas.int_bits)
    ft = reg_type(n.dtype)
    ptr = ir.PointerType()
    fty = ir.FunctionType(ir.VoidType(), [I32, I32, I32, it, it, it, ft, ptr, it, ptr, it, ft, ptr, it])
    gemm = _declare(cg.module, SGEMM if n.dtype == dt.float32 else DGEMM, fty)
    col_major = layouts["c"][0]  # c's own order; a and b are transposed where theirs differs
    trans = [ir.Constant(I32, TRANS if layouts[key][0] != col_major else NO_TRANS) for key in "ab"]
    ld = {key: ir.Constant(it, layouts[key][1]) for key in GEMM_OPERANDS}
    args = [ir.Constant(I32, COL_MAJOR if col_major else ROW_MAJOR), *trans,
            b.trunc(m, it) if it != I64 else m, b.trunc(nn, it) if it != I64 else nn,
            b.trunc(k, it) if it != I64 else k, ir.Constant(ft, 1.0), ptrs["a"], ld["a"],
            ptrs["b"], ld["b"], ir.Constant(ft, 0.0), ptrs["c"], ld["c"]]
    if blas.set_threads and not threaded:
        threads = _declare(cg.module, SET_THREADS, ir.FunctionType(I32, [I32]))
        previous = b.call(threads, [ir.Constant(I32, 1)])
        b.call(gemm, args)
        b.call(threads, [previous])
    else:
        b.call(gemm, args)


def _loops(cg, n: Node, dtypes, ptrs, m, nn, k) -> None:
    """c = 0, then c[i, j] += a[i, l] * b[l, j] over blocks of `K_BLOCK` l, then
    `M_TILE` rows i at a time (and the rest one by one), l, j; c holds the accumulator."""
    b = cg.b
    acc = n.dtype
    stride = {f"{key}{axis}": ir.Constant(I64, s) for key in GEMM_OPERANDS
              for axis, s in zip("rc", n.attr(f"{key}_strides"))}

    def at(key: str, i, j):
        off = b.add(b.mul(i, stride[f"{key}r"]), b.mul(j, stride[f"{key}c"]))
        return b.gep(ptrs[key], [off], source_etype=mem_type(dtypes[key]))

    def read(key: str, i, j):
        return cg.cast(b.load(at(key, i, j), typ=mem_type(dtypes[key])), dtypes[key], acc)

    zero = ir.Constant(reg_type(acc), 0.0)
    env = cg.env
    i0, block = ir.Constant(I64, 0), ir.Constant(I64, K_BLOCK)

    def zero_row():
        i = env["gemm.i"]
        cg.loop("gemm.z", i0, nn, None, lambda: b.store(zero, at("c", i, env["gemm.z"])))

    def k_block():
        start = b.mul(env["gemm.lb"], block)
        end = b.add(start, block)
        stop = b.select(b.icmp_signed("<", end, k), end, k)

        def rows(first, count: int):
            """Rows first .. first + count - 1 of c take each element of b once."""
            def term():
                l = env["gemm.l"]
                xs = [read("a", b.add(first, ir.Constant(I64, r)), l) for r in range(count)]

                def update():
                    j = env["gemm.j"]
                    y = read("b", l, j)
                    for r, x in enumerate(xs):
                        p = at("c", b.add(first, ir.Constant(I64, r)), j)
                        b.store(b.fadd(b.load(p, typ=reg_type(acc)), b.fmul(x, y)), p)

                cg.loop("gemm.j", i0, nn, None, update)

            cg.loop("gemm.l", start, stop, None, term)

        tiles = b.sdiv(m, ir.Constant(I64, M_TILE))
        cg.loop("gemm.it", i0, tiles, None, lambda: rows(b.mul(env["gemm.it"], ir.Constant(I64, M_TILE)), M_TILE))
        cg.loop("gemm.i", b.mul(tiles, ir.Constant(I64, M_TILE)), m, None, lambda: rows(env["gemm.i"], 1))

    cg.loop("gemm.i", i0, m, None, zero_row)
    blocks = b.sdiv(b.add(k, ir.Constant(I64, K_BLOCK - 1)), block)
    cg.loop("gemm.lb", i0, blocks, None, k_block)
