"""Tensor-core GEMM kernels on the GPU at odd shapes, against float64 references."""
import numpy as np
import pytest

import warpweave as ww
from warpweave.schedule.mma import GpuMma

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch", reason="the GPU tier compares against PyTorch tensors")


def _check(fn, *args, ref, dtype, tensor_cores=True):
    f = ww.jit(fn, target="cuda")
    assert any(isinstance(k.schedule, GpuMma) for k in f.lower(*args).kernels) == tensor_cores
    got = f(*args).double().cpu().numpy()
    want = ref.double().cpu().numpy()
    scale = np.abs(want).max() + 1
    tol = 2 ** -7 if dtype == torch.bfloat16 else 2 ** -10
    assert np.abs(got - want).max() <= tol * scale, (np.abs(got - want).max(), scale)


@pytest.mark.parametrize("m,n,k", [(33, 17, 40), (1, 8, 16), (130, 70, 200), (257, 1000, 136)])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_mm_odd_shapes(m, n, k, dtype):
    td = getattr(torch, dtype)
    a = torch.randn(m, k, device="cuda", dtype=td)
    b = torch.randn(k, n, device="cuda", dtype=td)
    # a single row is a vector-matrix product: a memory-bound reduction, not tensor-core work
    _check(lambda x, y: x @ y, a, b, ref=a.double() @ b.double(), dtype=td, tensor_cores=min(m, n) > 1)


@pytest.mark.parametrize("ta,tb", [(True, False), (False, True), (True, True)])
def test_mm_transposed(ta, tb):
    a = torch.randn(72, 130, device="cuda", dtype=torch.bfloat16)  # a^T is 130 x 72
    b = torch.randn(72, 264, device="cuda", dtype=torch.bfloat16)
    x = a if ta else a.t().contiguous()
    y = b.t().contiguous() if tb else b

    def fn(p, q):
        return (p.T if ta else p) @ (q.T if tb else q)

    _check(fn, x, y, ref=a.double().t() @ b.double(), dtype=torch.bfloat16)


def test_bmm():
    a = torch.randn(5, 33, 48, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(5, 48, 65, device="cuda", dtype=torch.bfloat16)
    _check(lambda x, y: x @ y, a, b, ref=a.double() @ b.double(), dtype=torch.bfloat16)


def test_split_k():
    from warpweave.pipeline.compile import compile_graph
    from warpweave.schedule.space import group_key

    a = torch.randn(100, 3000, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(3000, 72, device="cuda", dtype=torch.bfloat16)
    p = ww.jit(lambda x, y: x @ y, target="cuda").lower(a, b)
    point = GpuMma(64, 64, 32, 2, 2, 3, 4)
    split = compile_graph(p.traced, True, "cuda", "split",
                          {group_key(p.plan.groups[0], p.graph): point})
    got, want = split(a, b).double().cpu().numpy(), (a.double() @ b.double()).cpu().numpy()
    assert np.abs(got - want).max() <= 2 ** -7 * (np.abs(want).max() + 1)


@pytest.mark.parametrize("point", [GpuMma(128, 256, 32, 2, 4, 4, 1, 8), GpuMma(256, 128, 32, 4, 2, 5, 1, 4),
                                   GpuMma(128, 128, 64, 2, 4, 3, 1, 3)])
def test_dynamic_shared_memory_points(point):
    """Points above 48 KiB of shared memory (dynamic, opted in at load) at odd shapes."""
    from warpweave.pipeline.compile import compile_graph
    from warpweave.schedule.space import group_key

    a = torch.randn(1037, 300, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(520, 300, device="cuda", dtype=torch.bfloat16)
    p = ww.jit(lambda x, y: x @ y.T, target="cuda").lower(a, b)
    q = compile_graph(p.traced, True, "cuda", "dyn", {group_key(p.plan.groups[0], p.graph): point})
    assert q.kernels[0].gir.dynamic_shared_bytes == point.shared_bytes() > 48 * 1024
    got, want = q(a, b).double().cpu().numpy(), (a.double() @ b.double().T).cpu().numpy()
    assert np.abs(got - want).max() <= 2 ** -7 * (np.abs(want).max() + 1)


@pytest.mark.parametrize("m,n,k", [(257, 1000, 136), (130, 70, 200), (1024, 3072, 768)])
def test_fused_bias_gelu_residual_is_one_kernel(m, n, k):
    a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
    bias = torch.randn(n, device="cuda", dtype=torch.bfloat16)
    r = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
    f = ww.jit(lambda x, y, c, d: ww.gelu(x @ y + c) + d, target="cuda")
    assert [type(x.schedule) for x in f.lower(a, b, bias, r).kernels] == [GpuMma]
    want = torch.nn.functional.gelu(a.double() @ b.double() + bias.double()) + r.double()
    got = f(a, b, bias, r).double()
    assert (got - want).abs().max().item() <= 2 ** -6 * (want.abs().max().item() + 1)


def _run_point(fn, point, *args):
    """`fn` compiled with its product under `point` (the first group), and its kernels."""
    from warpweave.pipeline.compile import compile_graph
    from warpweave.schedule.space import group_key

    p = ww.jit(fn, target="cuda").lower(*args)
    q = compile_graph(p.traced, True, "cuda", "point", {group_key(p.plan.groups[0], p.graph): point})
    return q(*args), q.kernels


WG = dict(instr="wgmma")


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("point", [GpuMma(128, 128, 64, 2, 1, 3, **WG), GpuMma(64, 256, 64, 1, 2, 4, **WG),
                                   GpuMma(128, 128, 32, 1, 1, 2, **WG), GpuMma(64, 128, 16, 1, 1, 3, **WG)])
def test_wgmma_layouts_at_odd_shapes(ta, tb, point):
    """wgmma reads K-major tiles and MN-major panels (either operand transposed) at
    shapes no tile divides; sm_90 only."""
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("wgmma needs an sm_90 GPU")
    a = torch.randn(333, 200, device="cuda", dtype=torch.bfloat16)  # 333 x 200 (m x k)
    b = torch.randn(200, 517, device="cuda", dtype=torch.bfloat16)  # 200 x 517 (k x n)
    x = a.t().contiguous() if ta else a
    y = b.t().contiguous() if tb else b

    def fn(p, q):
        return (p.T if ta else p) @ (q.T if tb else q)

    got, kernels = _run_point(fn, point, x, y)
    assert "wgmma" in repr(kernels[0].schedule)
    want = a.double() @ b.double()
    assert (got.double() - want).abs().max().item() <= 2 ** -7 * (want.abs().max().item() + 1)


@pytest.mark.parametrize("point", [GpuMma(128, 128, 64, 2, 1, 3, 3, **WG), GpuMma(128, 256, 64, 2, 1, 3, 1, 8, **WG)])
def test_wgmma_epilogue_split_k_and_float16(point):
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("wgmma needs an sm_90 GPU")
    a = torch.randn(1037, 1000, device="cuda", dtype=torch.float16)
    b = torch.randn(1000, 770, device="cuda", dtype=torch.float16)
    bias = torch.randn(770, device="cuda", dtype=torch.float16)
    got, kernels = _run_point(lambda x, y, c: ww.gelu(x @ y + c), point, a, b, bias)
    assert len(kernels) == (2 if point.split_k > 1 else 1)
    want = torch.nn.functional.gelu(a.double() @ b.double() + bias.double())
    assert (got.double() - want).abs().max().item() <= 2 ** -9 * (want.abs().max().item() + 1)


@pytest.mark.parametrize("m,n,k", [(512, 512, 4096), (100, 72, 3000), (1037, 770, 1000)])
def test_default_products_of_few_tiles(m, n, k):
    """The default for few output tiles over a long k (split wgmma on sm_90), and a
    grouped tile order with a short last group, at odd shapes."""
    a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
    f = ww.jit(lambda x, y: x @ y, target="cuda")
    kernels = f.lower(a, b).kernels
    if torch.cuda.get_device_capability() == (9, 0):
        assert kernels[0].schedule.instr == "wgmma"
    want = a.double() @ b.double()
    assert (f(a, b).double() - want).abs().max().item() <= 2 ** -7 * (want.abs().max().item() + 1)


TMA = dict(instr="wgmma", loader="tma")


@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("point", [GpuMma(128, 256, 64, 2, 1, 4, 1, 8, **TMA), GpuMma(128, 128, 32, 1, 1, 2, **TMA),
                                   GpuMma(64, 128, 16, 1, 1, 3, **TMA)])
def test_tma_loads_at_odd_shapes(ta, tb, point):
    """Stages filled by bulk tensor copies, K-major and MN-major, at shapes no tile
    divides (the copies read zeros past each edge); sm_90 only."""
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("TMA and wgmma need an sm_90 GPU")
    a = torch.randn(344, 200, device="cuda", dtype=torch.bfloat16)  # m x k
    b = torch.randn(200, 520, device="cuda", dtype=torch.bfloat16)  # k x n
    x = a.t().contiguous() if ta else a
    y = b.t().contiguous() if tb else b

    def fn(p, q):
        return (p.T if ta else p) @ (q.T if tb else q)

    got, kernels = _run_point(fn, point, x, y)
    assert kernels[0].schedule.loader == "tma"
    want = a.double() @ b.double()
    assert (got.double() - want).abs().max().item() <= 2 ** -7 * (want.abs().max().item() + 1)


@pytest.mark.parametrize("point", [GpuMma(128, 128, 64, 2, 1, 3, 3, **TMA), GpuMma(64, 128, 64, 1, 1, 4, **TMA)])
def test_tma_batched_sliced_split_k_epilogue(point):
    """A batched product of a sliced operand (a tensor map at an offset, three axes),
    split over k, with a fused bias and GELU, in float16."""
    if torch.cuda.get_device_capability() != (9, 0):
        pytest.skip("TMA and wgmma need an sm_90 GPU")
    a = torch.randn(3, 136, 1000, device="cuda", dtype=torch.float16)
    whole = torch.randn(3, 1000, 392, device="cuda", dtype=torch.float16)
    bias = torch.randn(264, device="cuda", dtype=torch.float16)
    fn = lambda x, w, c: ww.gelu(x @ w[:, :, 128:] + c)  # noqa: E731
    got, kernels = _run_point(fn, point, a, whole, bias)
    assert kernels[0].schedule.loader == "tma"
    want = torch.nn.functional.gelu(a.double() @ whole[:, :, 128:].double() + bias.double())
    assert (got.double() - want).abs().max().item() <= 2 ** -9 * (want.abs().max().item() + 1)
