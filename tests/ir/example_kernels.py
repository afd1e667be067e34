"""Hand-built GIR kernels shared by the IR tests: a GPU row sum with shuffles,
shared memory and a barrier, a CPU kernel with a vector scope, a float16 kernel
with casts, a kernel using every scope kind, and a gather (a load whose index is data)."""
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


def _block_reduce(b, combiner, value, t, partials, threads):
    """Warp butterflies, lane 0 of each warp -> shared `partials`, a barrier, every warp
    reads the partials back and reduces them again: every thread holds the result."""
    d = b._node(value).dtype
    op = {"sum": "add", "max": "max"}[combiner]

    def warp(v):
        for off in (16, 8, 4, 2, 1):
            v = b.compute(op, [v, b.shuffle("bfly", v, ex.Const(off, i64), t)], t, d)
        return v

    value = warp(value)
    warps = threads // 32
    if warps == 1:
        return value
    lane, wid = V("t") % 32, V("t") // 32
    b.store(partials, wid, value, t, pred=eq(lane, 0))
    b.sync([partials], t)
    ident = ex.Const(-float("inf") if combiner == "max" else 0.0, d)
    part = b.load(partials, lane, t, pred=lt(lane, warps), other=ident)
    return warp(part)


def softmax_tile_kernel(R=6, N=300, E=8, threads=64, d=f32):
    """y = softmax(x) over rows of N <= threads * E, one block per row, each thread
    holding a register tile of E elements of its row: lane v of thread t is column
    j = (v // 4) * (threads * 4) + t * 4 + v % 4 (runs of 4 contiguous columns).
    Three aligned sibling vector scopes share the tile: V1 loads x and reduces its max,
    V2 computes e = exp(x - m) from V1's x and reduces its sum, V3 stores e / s."""
    assert N <= threads * E and E % 4 == 0
    b = KernelBuilder("softmax_tile")
    b.add_param(Buffer("x", d, (R, N), (N, 1), "in"))
    b.add_param(Buffer("y", d, (R, N), (N, 1), "out"))
    b.add_shared(SharedAlloc("pmax", f32, max(1, threads // 32)))
    b.add_shared(SharedAlloc("psum", f32, max(1, threads // 32)))
    g = b.scope("grid", "g", R, None)
    t = b.scope("block", "t", threads, g)

    def col(v):
        return (V(v) // 4) * (threads * 4) + V("t") * 4 + V(v) % 4

    v1 = b.scope("vector", "v1", E, t)
    j1 = col("v1")
    x = b.load("x", V("g") * N + j1, v1, pred=lt(j1, N), other=ex.Const(-float("inf"), d))
    if d != f32:
        x = b.compute("cast", [x], v1, f32)
    m = b.reduce("max", x, over=v1)
    m = _block_reduce(b, "max", m, t, "pmax", threads)
    v2 = b.scope("vector", "v2", E, t)
    e = b.compute("exp", [b.compute("sub", [x, m], v2, f32)], v2, f32)  # x: from sibling v1
    s = b.reduce("sum", e, over=v2, mask=lt(col("v2"), N))
    s = _block_reduce(b, "sum", s, t, "psum", threads)
    v3 = b.scope("vector", "v3", E, t)
    j3 = col("v3")
    o = b.compute("div", [e, s], v3, f32)  # e: from sibling v2
    if d != f32:
        o = b.compute("cast", [o], v3, d)
    b.store("y", V("g") * N + j3, o, v3, pred=lt(j3, N))
    return b.build(schedule="softmax-tile")


def softmax_cpu_kernel(R=7, N=48, E=64, rows=2):
    """y = softmax(x) on the CPU: blocks of `rows` rows (R need not be a multiple),
    a serial loop over the rows of a block, and three aligned sibling vector scopes
    inside it holding the row (lane v = column v, N <= E)."""
    b = KernelBuilder("softmax_rows", target="cpu")
    b.add_param(Buffer("x", f32, (R, N), (N, 1), "in"))
    b.add_param(Buffer("y", f32, (R, N), (N, 1), "out"))
    g = b.scope("grid", "g", -(-R // rows), None)
    r = b.scope("serial", "r", rows, g)
    row = V("g") * rows + V("r")
    v1 = b.scope("vector", "v1", E, r)
    ok1 = ex.all_of([lt(V("v1"), N), lt(row, R)])
    x = b.load("x", row * N + V("v1"), v1, pred=ok1, other=ex.Const(-float("inf"), f32))
    m = b.reduce("max", x, over=v1)
    v2 = b.scope("vector", "v2", E, r)
    e = b.compute("exp", [b.compute("sub", [x, m], v2, f32)], v2, f32)
    s = b.reduce("sum", e, over=v2, mask=lt(V("v2"), N))
    v3 = b.scope("vector", "v3", E, r)
    b.store("y", row * N + V("v3"), b.compute("div", [e, s], v3, f32), v3,
            pred=ex.all_of([lt(V("v3"), N), lt(row, R)]))
    return b.build()


def gather_kernel(V_=1000, D=64, N=37, block=64, vec=4, index=dt.int32):
    """out[n, :] = W[ids[n], :] + 1 on the GPU: a block per token, each thread a vector of
    `vec` columns; the row index is data (loaded once per thread, one value for every
    lane), the table's load names it data$0."""
    b = KernelBuilder("gather")
    b.add_param(Buffer("ids", index, (N,), (1,), "in"))
    b.add_param(Buffer("W", f32, (V_, D), (D, 1), "in"))
    b.add_param(Buffer("out", f32, (N, D), (D, 1), "out"))
    g = b.scope("grid", "g", N, None)
    t = b.scope("block", "t", block, g)
    v = b.scope("vector", "v", vec, t)
    col = V("t") * vec + V("v")
    inside = lt(V("t") * vec, D)
    i = b.load("ids", V("g"), t)
    w = b.load("W", V("data$0") * D + col, v, pred=inside, other=ex.Const(0.0, f32), data=[(i, V_)])
    one = b.const(ex.Const(1.0, f32), g)
    b.store("out", V("g") * D + col, b.compute("add", [w, one], v, f32), v, pred=inside)
    return b.build(schedule="gather")


GOOD = {"rowsum": rowsum_kernel, "cpu": cpu_kernel, "half": half_kernel,
        "two_phase": two_phase_kernel, "softmax_tile": softmax_tile_kernel,
        "softmax_cpu": softmax_cpu_kernel, "gather": gather_kernel}
