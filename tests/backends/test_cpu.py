"""The CPU runtime: results do not depend on how the grid is split across threads."""
import numpy as np

from tests.lower.test_lower import graph_for
from tests.utils import assert_close, random_array
from warpweave.backends import cpu
from warpweave.schedule import templates as sch
from warpweave.schedule.choose import choose
from warpweave.lower.op import lower_op
from warpweave.ir import dtypes as dt
from warpweave.ir.tensor import evaluate


def test_parallel_and_serial_launches_agree(monkeypatch):
    rng = np.random.default_rng()
    g, ops = graph_for(300, 257, dt.float32)
    inputs = {"x": random_array(rng, (300, 257), "float32"), "y": random_array(rng, (257,), "float32")}
    ref = evaluate(g, inputs)
    kernels = [lower_op(op, g, choose(op, "cpu")) for op in ops]
    exe = cpu.CpuExecutable(kernels, [10**6] * len(kernels))  # large work: always parallel
    for threads in ("1", "2", "3"):
        monkeypatch.setenv("WARPWEAVE_NUM_THREADS", threads)
        for op, k in zip(ops, kernels):
            out = np.full(op.shape, np.nan, np.float32)
            bufs = {**inputs, op.name: out}
            exe.launch(k.name, [bufs[p.name].ctypes.data for p in k.params])
            assert_close(out, ref[op.name], "float32", 20.0, what=f"{op.name} threads={threads}")


def test_a_launch_does_not_wait_for_busy_pool_threads(monkeypatch):
    """The calling thread takes chunks too: with every pool thread busy elsewhere, a
    parallel launch finishes on the caller alone (the pool's tasks are cancelled)."""
    import threading

    monkeypatch.setenv("WARPWEAVE_NUM_THREADS", "2")
    rng = np.random.default_rng()
    g, ops = graph_for(300, 257, dt.float32)
    x = random_array(rng, (300, 257), "float32")
    op = next(o for o in ops if o.reduce is None)
    k = lower_op(op, g, choose(op, "cpu"))
    exe = cpu.CpuExecutable([k], [10**6])
    bufs = {"x": x, "y": random_array(rng, (257,), "float32"), op.name: np.full(op.shape, np.nan, np.float32)}
    release = threading.Event()
    pool = cpu._pool()
    blockers = [pool.submit(release.wait, 60) for _ in range(pool._max_workers)]
    try:
        done = threading.Event()
        caller = threading.Thread(target=lambda: (exe.launch(k.name, [bufs[p.name].ctypes.data for p in k.params]),
                                                  done.set()))
        caller.start()
        assert done.wait(20), "the launch waited for a pool thread"
    finally:
        release.set()
        for b in blockers:
            b.result()
    ref = evaluate(g, {"x": bufs["x"], "y": bufs["y"]})[op.name]
    assert_close(bufs[op.name], ref, "float32", 20.0)


def test_generated_ir_has_vector_loads_and_noalias():
    g, ops = graph_for(4, 256, dt.float32)
    exe = cpu.CpuExecutable([lower_op(ops[0], g, sch.CpuElementwise(vector=16))], [1])
    assert "noalias" in exe.llvm_ir
    assert "load <16 x float>" in exe.llvm_ir


def test_bool_max_and_min_nodes():
    """compute.max/min on bool are or/and (LLVM's i1 is signed: a signed compare
    would rank true below false)."""
    from warpweave.ir import expr as ex
    from warpweave.ir.gir import Buffer, KernelBuilder

    b = KernelBuilder("boolmax", "cpu")
    for name in ("a", "b"):
        b.add_param(Buffer(name, dt.bool_, (4,), (1,), "in"))
    for name in ("mx", "mn"):
        b.add_param(Buffer(name, dt.bool_, (4,), (1,), "out"))
    g = b.scope("grid", "g", 4, None)
    i = ex.Var("g")
    x, y = b.load("a", i, g), b.load("b", i, g)
    b.store("mx", i, b.compute("max", [x, y], g, dt.bool_), g)
    b.store("mn", i, b.compute("min", [x, y], g, dt.bool_), g)
    k = b.build()
    a, c = np.array([True, False, True, False]), np.array([True, True, False, False])
    mx, mn = np.zeros(4, bool), np.ones(4, bool)
    cpu.CpuExecutable([k], [1]).launch("boolmax", [a.ctypes.data, c.ctypes.data, mx.ctypes.data, mn.ctypes.data])
    np.testing.assert_array_equal(mx, a | c)
    np.testing.assert_array_equal(mn, a & c)


def test_runs_of_small_kernels_take_a_bounded_number_of_buffers():
    """Consecutive small kernels run from one native entry, which ctypes calls with one
    argument per buffer (at most 1024): a long run of kernels over many buffers (an
    unrolled recurrence's backward) is cut into runs of at most RUN_MAX_PARAMS."""
    from types import SimpleNamespace

    from warpweave.backends.cpu import RUN_MAX_PARAMS, inline_runs

    kernels = [SimpleNamespace(name=f"k{i}", grid=1, params=[SimpleNamespace(name=f"b{i}_{j}") for j in range(3)]
                               + [SimpleNamespace(name="shared")]) for i in range(400)]
    runs = inline_runs(kernels, [1] * len(kernels))
    assert len(runs) > 1 and all(len(r.params) <= RUN_MAX_PARAMS for r in runs)
    assert [k for r in runs for k in r.kernels] == [k.name for k in kernels]  # every kernel, in order
    for r in runs:
        want = dict.fromkeys(p.name for k in kernels if k.name in r.kernels for p in k.params)
        assert r.params == tuple(want)


def test_a_kernel_over_more_buffers_than_a_ctypes_call_takes():
    """A kernel over 1012 buffers (past ctypes' 1024-argument calls with its grid
    bounds) is called through its table entry: here an elementwise kernel with 1010
    unused buffers before its own, so that its own come last in the table."""
    from warpweave.backends.cpu import WIDE_PARAMS
    from warpweave.ir.gir import Buffer, make_kernel

    rng = np.random.default_rng()
    g, ops = graph_for(30, 17, dt.float32)
    op = next(o for o in ops if o.reduce is None)
    k = lower_op(op, g, choose(op, "cpu"))
    extra = [Buffer(f"unused{j}", dt.float32, (1,), (1,), "in") for j in range(1010)]
    wide = make_kernel(k.name, extra + list(k.params), k.shared, k.nodes, k.edges, k.target)
    assert len(wide.params) > WIDE_PARAMS
    exe = cpu.CpuExecutable([wide], [1])
    inputs = {"x": random_array(rng, (30, 17), "float32"), "y": random_array(rng, (17,), "float32")}
    out = np.full(op.shape, np.nan, np.float32)
    bufs = {**inputs, op.name: out, **{b.name: np.zeros(1, np.float32) for b in extra}}
    exe.launch(wide.name, [bufs[p.name].ctypes.data for p in wide.params])
    assert_close(out, evaluate(g, inputs)[op.name], "float32", 20.0)
