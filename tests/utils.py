"""Helpers shared by the tests: random inputs, per-dtype comparison with numpy, and
small GIR kernels."""
from __future__ import annotations

import numpy as np

from warpweave.ir import dtypes as dt

# (relative, absolute) tolerances against a float64 reference, per dtype.
TOLERANCE = {
    "float64": (1e-9, 1e-12),
    "float32": (2e-5, 1e-5),
    "float16": (4e-3, 2e-3),
    "bfloat16": (3e-2, 1.5e-2),
}


def random_array(rng: np.random.Generator, shape, dtype, low=-2.0, high=2.0,
                 positive: bool = False) -> np.ndarray:
    """Fresh random values (never all zeros) of a warpweave or numpy dtype; with
    `positive`, numbers are at least 0.25 (ints at least 1), for log, sqrt, division."""
    d = dt.dtype(dtype)
    if d.is_bool:
        return rng.random(shape) < 0.5
    if d.is_int:
        return rng.integers(1 if positive else -50, 50, size=shape).astype(d.numpy)
    if positive:
        low, high = 0.25, max(high, 0.25) + 2.0
    return rng.uniform(low, high, size=shape).astype(d.numpy)


def assert_close(got, ref, dtype, scale: float = 1.0, what: str = "") -> None:
    """Compare `got` with a float64 (or exact) reference under the dtype's tolerance."""
    d = dt.dtype(dtype)
    got = np.asarray(got)
    ref = np.asarray(ref)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    if d.is_bool or d.is_int:
        np.testing.assert_array_equal(got, ref, err_msg=what)
        return
    rtol, atol = TOLERANCE[d.name]
    np.testing.assert_allclose(got.astype(np.float64), ref.astype(np.float64),
                               rtol=rtol * scale, atol=atol * scale, err_msg=what)


def softmax(x):
    """Softmax over the last axis, written with warpweave operations (for ww.jit)."""
    import warpweave as ww

    m = x.max(axis=-1, keepdims=True)
    e = ww.exp(x - m)
    return e / e.sum(axis=-1, keepdims=True)


def layer_norm_reference(x, w=None, b=None, eps=1e-5, axis=-1):
    """Layer norm over `axis` in numpy, in the precision of its inputs (pass float64)."""
    m = x.mean(axis=axis, keepdims=True)
    v = ((x - m) ** 2).mean(axis=axis, keepdims=True)
    y = (x - m) / np.sqrt(v + eps)
    if w is not None:
        y = y * w
    if b is not None:
        y = y + b
    return y


def softmax_reference(x, axis=-1):
    """Softmax in float64 numpy."""
    x = np.asarray(x).astype(np.float64)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax_reference(x, axis=-1):
    """Log-softmax in float64 numpy."""
    x = np.asarray(x).astype(np.float64)
    d = x - x.max(axis=axis, keepdims=True)
    return d - np.log(np.exp(d).sum(axis=axis, keepdims=True))


def assert_ptxas_accepts(ptx: str, arch: str = "sm_90") -> str:
    """Assemble PTX with ptxas (skipping the test where ptxas is absent); returns its
    resource report."""
    import shutil
    import subprocess
    import tempfile

    import pytest

    ptxas = shutil.which("ptxas")
    if ptxas is None:
        pytest.skip("ptxas is not on PATH")
    with tempfile.TemporaryDirectory() as d:
        src = f"{d}/module.ptx"
        with open(src, "w") as f:
            f.write(ptx)
        r = subprocess.run([ptxas, f"-arch={arch}", "-v", src, "-o", f"{d}/module.cubin"],
                           capture_output=True, text=True)
    assert r.returncode == 0, f"ptxas rejected the PTX:\n{r.stderr}\n{ptx[:4000]}"
    return r.stderr


def column_sum_tile(d: dt.DType, rows: int, cols: int):
    """The GIR kernel of c[j] = sum over r of x[r, j] (x: [rows, cols]) as column tiles."""
    from warpweave.schedule import templates as sch
    from warpweave.lower.op import lower_op
    from warpweave.ir import expr as ex
    from warpweave.ir.tensor import ComputeOp, Placeholder, TensorGraph

    j, r = ex.Var("j"), ex.Var("r")
    x = Placeholder("x", (rows, cols), d)
    op = ComputeOp("c", (cols,), d, (j,), ex.Reduce("sum", ex.Load("x", (r, j), d), (r,), (rows,)))
    return lower_op(op, TensorGraph([x, op], ["x"], ["c"]), sch.GpuColumnTile())


def with_l2_prefetch(kernel, size: int):
    """`kernel` with the hint l2_prefetch=size on every global load."""
    from warpweave.ir.gir import make_kernel

    nodes = [n.replace(attrs={**n.attr_map, "l2_prefetch": size}) if n.op == "move.global.reg" else n
             for n in kernel.nodes]
    return make_kernel(kernel.name, kernel.params, kernel.shared, nodes, kernel.edges, kernel.target)
