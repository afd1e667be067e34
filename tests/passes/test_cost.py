"""The GIR cost model counts what a kernel moves."""
from warpweave.schedule import templates as sch
from warpweave.lower.op import lower_op
from warpweave.ir import dtypes as dt
from warpweave.ir import expr as ex
from warpweave.ir.tensor import ComputeOp, Placeholder, TensorGraph
from warpweave.passes.cost import H100, kernel_cost

i, j = ex.Var("i"), ex.Var("j")


def _triangles(n):
    x, y = Placeholder("x", (n, n), dt.float32), Placeholder("y", (n, n), dt.float32)
    op = ComputeOp("m", (n, n), dt.float32, (i, j),
                   ex.select(ex.binary("le", j, i), ex.Load("x", (i, j), dt.float32),
                             ex.Load("y", (i, j), dt.float32)))
    return op, TensorGraph([x, y, op], ["x", "y"], ["m"])


def test_predicated_loads_count_the_iterations_their_predicate_lets_through():
    """where(j <= i, x, y) reads each element of one triangle: n² elements in all,
    plus at most one 4-lane run per row; counted exactly (small) and sampled (large)."""
    for n in (64, 1024):
        op, g = _triangles(n)
        cost = kernel_cost(lower_op(op, g, sch.GpuElementwise()), H100)
        assert cost.global_write == n * n * 4
        assert n * n * 4 <= cost.global_read * (1.02 if n > 64 else 1.0) <= (n * n + 8 * n) * 4 * 1.02


def test_unpredicated_loads_count_every_iteration():
    n = 64
    x = Placeholder("x", (n, n), dt.float32)
    op = ComputeOp("e", (n, n), dt.float32, (i, j), ex.unary("exp", ex.Load("x", (i, j), dt.float32)))
    cost = kernel_cost(lower_op(op, TensorGraph([x, op], ["x"], ["e"]), sch.GpuElementwise()), H100)
    assert cost.global_read == cost.global_write == n * n * 4
    assert cost.time_s >= n * n * 8 / H100.bandwidth + H100.launch_s


def test_row_sweeps_few_blocks_pull_what_their_sms_can():
    """Eight blocks over eight long rows move what eight SMs pull; 256 blocks reach the
    DRAM bandwidth and pay for their extra launches only in halves."""
    from warpweave.passes.cost import row_sweeps_time

    few = row_sweeps_time(8, 262144, 4, 3, 8, 1, H100)
    many = row_sweeps_time(8, 262144, 4, 3, 256, 3, H100)
    assert few == 3 * 8 * 262144 * 4 / (8 * H100.sm_bandwidth) + H100.launch_s
    assert many == 3 * 8 * 262144 * 4 / H100.bandwidth + 2 * H100.launch_s
    assert many < few / 2
