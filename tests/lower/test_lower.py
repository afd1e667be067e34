"""Every schedule template, lowered to GIR, agrees with the tensor-graph reference
on the interpreter (GPU and CPU templates) and in native CPU code (CPU templates)."""
import numpy as np
import pytest

from tests.utils import assert_close, random_array
from warpweave.backends.cpu import CpuExecutable
from warpweave.backends.interp import run_kernel
from warpweave.schedule import templates as sch
from warpweave.schedule.choose import choose
from warpweave.lower.kernels import lower
from warpweave.lower.op import _lane_superset, lower_op
from warpweave.ir import dtypes as dt
from warpweave.ir import expr as ex
from warpweave.ir.expr_text import parse_expr
from warpweave.errors import VerificationError
from warpweave.ir.gir import make_kernel
from warpweave.ir.gir_verify import verify
from warpweave.ir.tensor import ComputeOp, Placeholder, TensorGraph, evaluate

i, j, r, q = ex.Var("i"), ex.Var("j"), ex.Var("r"), ex.Var("q")


def graph_for(R, N, d):
    """Elementwise, row reduce, column reduce, transpose and broadcast ops on x[R, N]."""
    x = Placeholder("x", (R, N), d)
    y = Placeholder("y", (N,), d)
    L = lambda *ix: ex.Load("x", ix, d)  # noqa: E731
    cd = dt.compute_dtype(d)
    ops = [
        ComputeOp("ew", (R, N), d, (i, j), ex.binary("mul", ex.unary("exp", L(i, j)), ex.Load("y", (j,), d))),
        ComputeOp("rowsum", (R,), d, (i,), ex.Reduce("sum", L(i, r), (r,), (N,))),
        ComputeOp("rowmax", (R,), d, (i,), ex.Reduce("max", L(i, r), (r,), (N,))),
        ComputeOp("colmin", (N,), d, (j,), ex.Reduce("min", L(r, j), (r,), (R,))),
        ComputeOp("tr", (N, R), d, (i, j), ex.binary("add", L(j, i), ex.Load("y", (i,), d))),
        ComputeOp("total", (), d, (), ex.Reduce("sum", L(r, q), (r, q), (R, N))),
    ]
    del cd
    return TensorGraph([x, y, *ops], ["x", "y"], [o.name for o in ops]), ops


SHAPES = [(1, 1), (3, 5), (4, 1000), (2, 4097), (33, 64), (65, 3)]


def run_interp(kernels, op, inputs):
    """Run one kernel or a list of kernels (allocating their temporaries, poisoned)."""
    kernels = kernels if isinstance(kernels, list) else [kernels]
    bufs = {n: np.ascontiguousarray(a).reshape(-1) for n, a in inputs.items()}
    out = np.full(op.shape, np.nan if op.dtype.is_float else 0, dtype=op.dtype.numpy)
    bufs[op.name] = out.reshape(-1)
    for k in kernels:
        for p in k.params:
            if p.name not in bufs:
                bufs[p.name] = np.full(p.size, np.nan, dtype=p.dtype.numpy)
        run_kernel(k, bufs)
    return out


def single_kernel_schedule(op, family):
    """The default schedule, but one that lowers to a single kernel."""
    s = choose(op, family)
    return sch.GpuColumnReduce() if isinstance(s, sch.GpuSplitColumnReduce) else s


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("d", [dt.float32, dt.float16, dt.bfloat16])
@pytest.mark.parametrize("family", ["gpu", "cpu"])
def test_templates_on_interpreter(shape, d, family):
    rng = np.random.default_rng()
    g, ops = graph_for(*shape, d)
    inputs = {"x": random_array(rng, shape, d), "y": random_array(rng, (shape[1],), d)}
    ref = evaluate(g, inputs)
    for op in ops:
        kernels = [verify(k) for k in lower(op, g, choose(op, family))]
        got = run_interp(kernels, op, inputs)
        scale = max(1.0, float(np.sqrt(np.prod(op.reduce.extents)))) if op.reduce else 1.0
        assert_close(got, ref[op.name], d, scale, what=f"{op.name} {family} {shape}")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("d", [dt.float32, dt.float16, dt.bfloat16, dt.float64])
def test_cpu_templates_native(shape, d):
    rng = np.random.default_rng()
    g, ops = graph_for(*shape, d)
    inputs = {"x": random_array(rng, shape, d), "y": random_array(rng, (shape[1],), d)}
    ref = evaluate(g, inputs)
    kernels = [verify(lower_op(op, g, choose(op, "cpu"))) for op in ops]
    exe = CpuExecutable(kernels, [1] * len(kernels))
    for op, k in zip(ops, kernels):
        out = np.full(op.shape, np.nan, dtype=op.dtype.numpy)
        bufs = {**inputs, op.name: out}
        exe.launch(k.name, [bufs[p.name].ctypes.data for p in k.params])
        scale = max(1.0, float(np.sqrt(np.prod(op.reduce.extents)))) if op.reduce else 1.0
        assert_close(out, ref[op.name], d, scale, what=f"{op.name} cpu {shape}")


def test_gpu_row_reduce_uses_shuffles_shared_memory_and_a_barrier():
    g, ops = graph_for(8, 1000, dt.float32)
    k = lower_op(ops[1], g, single_kernel_schedule(ops[1], "gpu"))
    kinds = [n.op for n in k.nodes]
    assert kinds.count("move.reg.reg") == 10  # two 5-step butterfly trees
    assert "sync.block" in kinds and "move.reg.shared" in kinds and "move.shared.reg" in kinds
    assert k.grid == 8 and k.block == 128  # 1000 elements: 128 threads × 4 lanes, 2 steps


def test_gpu_transpose_stages_through_padded_shared_memory():
    g, ops = graph_for(64, 96, dt.float32)
    k = lower_op(ops[4], g, sch.GpuTranspose())
    (tile,) = k.shared
    assert tile.size == 32 * 33
    assert sum(n.op == "move.global.reg" for n in k.nodes) == 2  # x staged, y direct


def test_cpu_elementwise_vectorizes_and_has_a_scalar_tail():
    g, ops = graph_for(2, 1000, dt.float32)
    k = lower_op(ops[0], g, sch.CpuElementwise(vector=16))
    vectors = [n for n in k.nodes if n.op == "parallel.vector"]
    assert [v.attr("extent") for v in vectors] == [16]
    serial = sorted(n.attr("extent") for n in k.nodes if n.op == "parallel.serial")
    assert serial == [1000 % 16, 1000 // 16]


def test_loop_invariant_loads_are_placed_outside_the_loop():
    """y[j] in a row-broadcast op does not depend on the row: it sits in the vector scope,
    and a row reduction's input value sits in the innermost loop."""
    g, ops = graph_for(4, 64, dt.float32)
    k = lower_op(ops[0], g, sch.CpuElementwise(vector=16))
    loads = {n.attr("buffer"): n for n in k.nodes if n.op == "move.global.reg"}
    assert k.node(loads["y"].scope).scope_kind == "vector"


def test_empty_output_has_no_kernel():
    x = Placeholder("x", (0, 4), dt.float32)
    op = ComputeOp("e", (0, 4), dt.float32, (i, j), ex.Load("x", (i, j), dt.float32))
    g = TensorGraph([x, op], ["x"], ["e"])
    assert lower_op(op, g, choose(op, "cpu")) is None


@pytest.mark.parametrize("shape", [(4097, 3), (1000, 64), (256, 4), (99, 5)])
def test_split_column_reduction_on_the_interpreter(shape):
    """Few outputs, long columns: partial reductions over row slices, then a combine."""
    rng = np.random.default_rng()
    g, ops = graph_for(*shape, dt.float32)
    inputs = {"x": random_array(rng, shape, "float32"), "y": random_array(rng, (shape[1],), "float32")}
    ref = evaluate(g, inputs)
    op = ops[3]  # column min
    for schedule in (sch.GpuSplitColumnReduce(splits=7), sch.GpuSplitColumnReduce(splits=3, vector=1)):
        if shape[1] % schedule.vector:
            continue
        kernels = [verify(k) for k in lower(op, g, schedule)]
        assert len(kernels) == 2 and kernels[0].params[-1].role == "temp"
        assert_close(run_interp(kernels, op, inputs), ref[op.name], "float32")


def test_column_reduction_schedules_follow_the_output_count():
    g, ops = graph_for(8192, 4096, dt.float32)
    assert choose(ops[3], "gpu") == sch.GpuColumnTile(vector=4)  # 128 tiles of 32 outputs
    s24 = choose(graph_for(8192, 768, dt.float32)[1][3], "gpu")  # 24 tiles pull less than a split
    assert isinstance(s24, sch.GpuSplitColumnReduce) and s24.splits >= 132
    g1, ops1 = graph_for(8192, 256, dt.float32)
    s = choose(ops1[3], "gpu")
    assert isinstance(s, sch.GpuSplitColumnReduce) and s.splits >= 2 * 132  # one column tile of 1024
    g2, ops2 = graph_for(64, 100000, dt.float32)
    assert isinstance(choose(ops2[3], "gpu"), sch.GpuColumnReduce)  # enough outputs already
    g3, ops3 = graph_for(512, 4096, dt.float32)
    assert isinstance(choose(ops3[3], "gpu"), sch.GpuSplitColumnReduce)  # too few rows per tile


@pytest.mark.parametrize("shape", [(1, 64), (3, 33), (1000, 100), (4097, 3), (300, 4)])
@pytest.mark.parametrize("d", [dt.float32, dt.bfloat16])
def test_column_tile_on_the_interpreter(shape, d):
    """A block per 32 outputs: rows strided over the block's threads, partials combined
    through shared memory by a warp per output (min, and a sum with a broadcast operand)."""
    rng = np.random.default_rng()
    x = Placeholder("x", shape, d)
    y = Placeholder("y", (shape[0],), d)
    L = ex.Load("x", (r, j), d)
    ops = [ComputeOp("colmin", (shape[1],), d, (j,), ex.Reduce("min", L, (r,), (shape[0],))),
           ComputeOp("colsum", (shape[1],), d, (j,),
                     ex.Reduce("sum", ex.binary("mul", L, ex.Load("y", (r,), d)), (r,), (shape[0],)))]
    g = TensorGraph([x, y, *ops], ["x", "y"], ["colmin", "colsum"])
    inputs = {"x": random_array(rng, shape, d), "y": random_array(rng, (shape[0],), d)}
    ref = evaluate(g, inputs)
    for op in ops:
        for schedule in (sch.GpuColumnTile(vector=4, unroll=2), sch.GpuColumnTile(vector=1, unroll=3)):
            if shape[1] % schedule.vector:
                continue
            (k,) = [verify(k) for k in lower(op, g, schedule)]
            assert k.block == 1024 and k.grid == -(-shape[1] // 32)
            assert_close(run_interp(k, op, inputs), ref[op.name], d, max(1.0, np.sqrt(shape[0])),
                         what=f"{op.name} {schedule} {shape}")


def test_column_tile_needs_its_barrier():
    g, ops = graph_for(2000, 64, dt.float32)
    k = verify(lower_op(ops[3], g, sch.GpuColumnTile()))
    bar = next(n for n in k.nodes if n.op == "sync.block")
    (into,) = [e for e in k.edges if e.dst == bar.id]
    edges = [e.__class__(into.src if e.src == bar.id else e.src, e.dst, e.slot, e.level, e.dtype, e.shape)
             for e in k.edges if e.dst != bar.id]
    broken = make_kernel(k.name, k.params, k.shared, [n for n in k.nodes if n.id != bar.id], edges,
                         k.target, dict(k.meta))
    with pytest.raises(VerificationError, match="missing barrier"):
        verify(broken)


def _truth(e, env):
    return np.asarray(ex.evaluate(e, env))


@pytest.mark.parametrize("lane", [
    "t * 4 + v",                                  # one 4-lane vector
    "(v // 4) * 16 + v % 4 + t * 4",              # runs of 4 lanes
    "t * 4 + (3 - v)",                            # lanes in reverse
])
@pytest.mark.parametrize("cond", [
    "le(j, i)", "gt(j, i + 3)", "not(lt(j, 5))", "and(ge(j, i - 2), lt(j, 9))", "or(lt(j, 2), ge(j, i))",
    "not(and(ge(j, 3), lt(j, i)))",
])
def test_lane_superset_holds_wherever_some_lane_of_its_run_holds(lane, cond):
    """cond ⇒ superset on every lane, the superset is the same on all lanes of a run,
    and it rules some runs out."""
    extent = 16 if "//" in lane else 4
    run = 4
    ranges = {"t": (0, 7), "i": (0, 40), "v": (0, extent - 1)}
    c = ex.substitute(parse_expr(cond), {"j": parse_expr(lane)})
    got = _lane_superset(c, "v", extent, ranges)
    assert got is not None
    t, i_, v = np.meshgrid(np.arange(8), np.arange(41), np.arange(extent), indexing="ij")
    env = {"t": t, "i": i_, "v": v}
    exact = np.broadcast_to(_truth(c, env), v.shape)
    sup = np.broadcast_to(_truth(got, env), v.shape)
    assert not (exact & ~sup).any()  # never drops a lane that is needed
    runs = sup.reshape(8, 41, extent // run, run)
    assert (runs == runs[..., :1]).all()  # one value per run: wide accesses stay wide
    assert (~sup).any()


def test_index_select_predicates_the_loads_of_each_branch():
    """where(j <= i, x, y): the kernel reads x only on and below the diagonal, y only
    above it (in whole 4-lane runs), and computes the same values."""
    rng = np.random.default_rng()
    n = 64
    x, y = Placeholder("x", (n, n), dt.float32), Placeholder("y", (n, n), dt.float32)
    op = ComputeOp("m", (n, n), dt.float32, (i, j),
                   ex.select(ex.binary("le", j, i), ex.Load("x", (i, j), dt.float32),
                             ex.Load("y", (i, j), dt.float32)))
    g = TensorGraph([x, y, op], ["x", "y"], ["m"])
    k = verify(lower_op(op, g, sch.GpuElementwise(threads=32, vector=4)))
    grid = dict(zip("gtv", np.meshgrid(np.arange(k.grid), np.arange(32), np.arange(4), indexing="ij")))
    row, col = np.divmod(np.arange(n * n), n)
    for load in (nd for nd in k.nodes if nd.op == "move.global.reg"):
        pred = load.attr("pred")
        assert pred is not None and "v" not in ex.free_vars(pred)
        read = np.zeros(n * n, bool)
        read[_truth(load.attr("offset"), grid)[np.broadcast_to(_truth(pred, grid), grid["v"].shape)]] = True
        needed = col <= row if load.attr("buffer") == "x" else col > row
        assert (read >= needed).all() and not (read & (np.abs(col - row) > 4) & ~needed).any()
    a, b = random_array(rng, (n, n), "float32"), random_array(rng, (n, n), "float32")
    np.testing.assert_array_equal(run_interp(k, op, {"x": a, "y": b}), np.where(np.tri(n, dtype=bool), a, b))
