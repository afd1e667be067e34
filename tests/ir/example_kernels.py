"""Hand-built GIR kernels shared by the IR tests: a GPU row sum with shuffles,
shared memory and a barrier, a CPU kernel with a vector scope, a float16 kernel
with casts, and a kernel using every scope kind."""
from warpweave.ir import dtypes as dt
from warpweave.ir import expr as ex
from warpweave.ir.gir import Buffer, KernelBuilder, SharedAlloc

f16, f32, i64 = dt.float16, dt.float32, dt.int64

V = ex.Var


def lt(a, b):
    return ex.binary("lt", a, b)


def eq(a, b):
    return ex.binary("eq", a, b)


# ----------------------------------------------------------------------------- example kernels

def rowsum_kernel(R=64, N=1000, block=128, sync=True):
    """out[r] = sum(x[r, :]): grid over rows, 128 threads, a serial loop with a masked
    reduce, warp butterflies, lane 0 of each warp -> shared red[warp], a barrier, warp 0
    reads red back, butterflies again, thread 0 stores."""
    b = KernelBuilder("rowsum")
    b.add_param(Buffer("x", f32, (R, N), (N, 1), "in"))
    b.add_param(Buffer("out", f32, (R,), (1,), "out"))
    b.add_shared(SharedAlloc("red", f32, block // 32))
    g = b.scope("grid", "g", R, None)
    t = b.scope("block", "t", block, g)
    G, T = V("g"), V("t")
    i = b.scope("serial", "i", -(-N // block), t)
    col = V("i") * block + T
    x = b.load("x", G * N + col, i, pred=lt(col, N), other=ex.Const(0.0, f32))
    acc = b.reduce("sum", x, over=i, mask=lt(col, N))
    lane, warp = T % 32, T // 32

    def warp_sum(v):
        for d in (16, 8, 4, 2, 1):
            s = b.shuffle("bfly", v, ex.Const(d, i64), t)
            v = b.compute("add", [v, s], t, f32)
        return v

    v = warp_sum(acc)
    b.store("red", warp, v, t, pred=eq(lane, 0))
    if sync:
        b.sync(["red"], t)
    r = b.load("red", lane, t, pred=lt(lane, block // 32), other=ex.Const(0.0, f32))
    r = warp_sum(r)
    b.store("out", G, r, t, pred=eq(T, 0))
    return b.build(schedule="row-reduce", rows=R)


def cpu_kernel(n=1024, vec=4, inner=16):
    """out = exp(2.5 * x + y) on the CPU: grid, serial loop, vector scope of 4."""
    b = KernelBuilder("axpy_exp", target="cpu")
    for name, role in (("x", "in"), ("y", "in"), ("out", "out")):
        b.add_param(Buffer(name, f32, (n,), (1,), role))
    per = vec * inner
    g = b.scope("grid", "g", n // per, None)
    j = b.scope("serial", "j", inner, g)
    v = b.scope("vector", "v", vec, j)
    off = V("g") * per + V("j") * vec + V("v")
    a = b.const(ex.Const(2.5, f32), g)  # emitted after j opened: the text form must reopen j
    x = b.load("x", off, v)
    y = b.load("y", off, v)
    s = b.compute("add", [b.compute("mul", [a, x], v, f32), y], v, f32)
    b.store("out", off, b.compute("exp", [s], v, f32), v)
    return b.build()


def half_kernel(n=4000, block=256):
    """o = float16(max(2 * float32(h), 0) + index) with casts around float16 storage."""
    b = KernelBuilder("scale_half")
    b.add_param(Buffer("h", f16, (n,), (1,), "in"))
    b.add_param(Buffer("o", f16, (n,), (1,), "out"))
    g = b.scope("grid", "g", -(-n // block), None)
    t = b.scope("block", "t", block, g)
    idx = V("g") * block + V("t")
    ok = lt(idx, n)
    h = b.load("h", idx, t, pred=ok, other=ex.Const(-0.0, f16))
    hf = b.compute("cast", [h], t, f32)
    m = b.compute("mul", [hf, b.const(ex.Const(2.0, f32), t)], t, f32)
    neg = b.compute("lt", [m, b.const(ex.Const(0.0, f32), t)], t, dt.bool_)
    sel = b.compute("select", [neg, b.const(ex.Const(0.0, f32), t), m], t, f32)
    iof = b.compute("cast", [b.index(idx, t)], t, f32)
    back = b.compute("cast", [b.compute("add", [sel, iof], t, f32)], t, f16)
    b.store("o", idx, back, t, pred=ok)
    return b.build(note="casts")


def two_phase_kernel(block=64, inner=16):
    """A block stages x through shared memory in a serial loop (write, barrier, read
    reversed), with a vector scope — a GPU kernel using every scope kind."""
    n = block * inner
    b = KernelBuilder("stage_reverse")
    b.add_param(Buffer("x", f32, (n,), (1,), "in"))
    b.add_param(Buffer("y", f32, (n,), (1,), "out"))
    b.add_shared(SharedAlloc("tile", f32, block))
    g = b.scope("grid", "g", 1, None)
    t = b.scope("block", "t", block, g)
    i = b.scope("unroll", "i", inner, t)
    x = b.load("x", V("i") * block + V("t"), i)
    b.store("tile", V("t"), x, i)
    b.sync(["tile"], i)
    r = b.load("tile", (block - 1) - V("t"), i)
    b.sync(["tile"], i)
    w = b.scope("vector", "w", 1, i)
    c = b.compute("neg", [r], w, f32)
    b.store("y", V("i") * block + V("t") + V("w"), c, w)
    return b.build()


GOOD = {"rowsum": rowsum_kernel, "cpu": cpu_kernel, "half": half_kernel,
        "two_phase": two_phase_kernel}
