"""The CPU runtime: results do not depend on how the grid is split across threads."""
import numpy as np

from tests.compiler.test_lower import graph_for
from tests.utils import assert_close, random_array
from warpweave.backends import cpu
from warpweave.compiler import schedule as sch
from warpweave.compiler.lower import lower_op
from warpweave.ir import dtypes as dt
from warpweave.ir.tensor import evaluate


def test_parallel_and_serial_launches_agree(monkeypatch):
    rng = np.random.default_rng()
    g, ops = graph_for(300, 257, dt.float32)
    inputs = {"x": random_array(rng, (300, 257), "float32"), "y": random_array(rng, (257,), "float32")}
    ref = evaluate(g, inputs)
    kernels = [lower_op(op, g, sch.choose(op, "cpu")) for op in ops]
    exe = cpu.CpuExecutable(kernels, [10**6] * len(kernels))  # large work: always parallel
    for threads in ("1", "2", "3"):
        monkeypatch.setenv("WARPWEAVE_NUM_THREADS", threads)
        for op, k in zip(ops, kernels):
            out = np.full(op.shape, np.nan, np.float32)
            bufs = {**inputs, op.name: out}
            exe.launch(k.name, [bufs[p.name].ctypes.data for p in k.params])
            assert_close(out, ref[op.name], "float32", 20.0, what=f"{op.name} threads={threads}")


def test_generated_ir_has_vector_loads_and_noalias():
    g, ops = graph_for(4, 256, dt.float32)
    exe = cpu.CpuExecutable([lower_op(ops[0], g, sch.CpuElementwise(vector=16))], [1])
    assert "noalias" in exe.llvm_ir
    assert "load <16 x float>" in exe.llvm_ir
