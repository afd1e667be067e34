"""Compiled programs on the GPU: interop with PyTorch, CuPy and device arrays,
the caller's stream, odd layouts, and every GPU template at odd shapes."""
import numpy as np
import pytest

import warpweave as ww
from tests.utils import assert_close
from tests.utils import softmax as _softmax
from tests.utils import softmax_reference as _np_softmax

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("shape", [(1, 1), (3, 1000), (5, 4097), (300, 64), (2, 100000)])
def test_numpy_in_numpy_out(shape):
    x = np.random.default_rng().standard_normal(shape).astype(np.float32)
    out = ww.jit(_softmax, target="cuda")(x)
    assert isinstance(out, np.ndarray)
    assert_close(out, _np_softmax(x), "float32")


def test_auto_target_is_cuda_here():
    x = np.ones((4, 4), np.float32)
    assert ww.jit(_softmax).lower(x).target == "cuda"


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_torch_tensors_in_place_and_on_the_current_stream(dtype):
    torch = pytest.importorskip("torch", reason="PyTorch interop: torch is not installed")
    td = getattr(torch, dtype)
    x = torch.randn(64, 3000, device="cuda", dtype=td)
    b = torch.randn(3000, device="cuda", dtype=td)
    f = ww.jit(lambda v, w: ww.gelu(v + w, approximate="tanh"), target="cuda")
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        y = f(x, b)
    assert isinstance(y, torch.Tensor) and y.is_cuda and y.dtype == td
    s.synchronize()
    ref = torch.nn.functional.gelu(x.double() + b.double(), approximate="tanh")
    assert_close(y.double().cpu().numpy(), ref.cpu().numpy(), dtype)


def test_torch_non_contiguous_and_misaligned_inputs():
    torch = pytest.importorskip("torch", reason="PyTorch interop: torch is not installed")
    base = torch.randn(129, 65, device="cuda")
    x = base[1:, 1:].t()  # non-contiguous, offset by one row and one column
    y = ww.jit(lambda v: v * 2.0 + 1.0, target="cuda")(x)
    torch.testing.assert_close(y, x * 2.0 + 1.0)
    flat = torch.randn(1025, device="cuda")[1:]  # contiguous but 4 bytes off alignment
    torch.testing.assert_close(ww.jit(lambda v: v.sum(), target="cuda")(flat), flat.sum(),
                               rtol=1e-5, atol=1e-4)


def test_device_arrays_and_dlpack_round_trip():
    x = np.random.default_rng().standard_normal((33, 77)).astype(np.float32)
    d = ww.to_device(x)
    out = ww.jit(lambda v: v.max(axis=0), target="cuda")(d)
    assert isinstance(out, ww.DeviceArray)
    np.testing.assert_array_equal(out.numpy(), x.max(axis=0))
    torch = pytest.importorskip("torch", reason="PyTorch interop: torch is not installed")
    t = torch.from_dlpack(out)
    assert t.data_ptr() == out.ptr


def test_cupy_arrays():
    cupy = pytest.importorskip("cupy", reason="CuPy interop: cupy is not installed")
    x = cupy.random.standard_normal((50, 70), dtype=cupy.float32)
    y = ww.jit(lambda v: v.T * 3.0, target="cuda")(x)
    assert isinstance(y, cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(y), cupy.asnumpy(x.T * 3.0), rtol=1e-6)


@pytest.mark.parametrize("shape", [(8192, 4096), (4097, 33), (3, 70001), (1, 1)])
def test_gpu_templates_at_scale(shape):
    torch = pytest.importorskip("torch", reason="PyTorch interop: torch is not installed")
    x = torch.randn(*shape, device="cuda")
    f = ww.jit(lambda v: (v.sum(axis=1), v.max(axis=0), v.T.astype(v.dtype), ww.exp(v) * 0.5),
               target="cuda")
    rs, cm, tr, ex_ = f(x)
    torch.testing.assert_close(rs, x.double().sum(1).float(), rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(cm, x.amax(0))
    torch.testing.assert_close(tr, x.t().contiguous())
    torch.testing.assert_close(ex_, torch.exp(x) * 0.5, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(8192, 4096), (1500, 4100), (2049, 1999), (300, 1999)])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_column_tiles(shape, dtype):
    """Column reductions a block per 32 outputs (the shapes pick GpuColumnTile): rows
    that do not fill the last round, a partial last tile, scalar lanes for odd widths."""
    torch = pytest.importorskip("torch", reason="PyTorch interop: torch is not installed")
    x = torch.randn(*shape, device="cuda", dtype=getattr(torch, dtype))
    f = ww.jit(lambda v: (v.sum(axis=0), (v * v).min(axis=0)), target="cuda")
    assert "GpuColumnTile" in f.lower(x).dump("groups")
    cs, cm = f(x)
    ref = x.double()
    assert_close(cs.double().cpu().numpy(), ref.sum(0).cpu().numpy(), dtype, np.sqrt(shape[0]))
    assert_close(cm.double().cpu().numpy(), (ref * ref).amin(0).cpu().numpy(), dtype)


def test_wrong_device_argument_errors():
    torch = pytest.importorskip("torch", reason="PyTorch interop: torch is not installed")
    f = ww.jit(lambda v: v + 1.0, target="cuda")
    with pytest.raises(ww.DTypeError):
        f(torch.ones(4, device="cuda", dtype=torch.float64).to(torch.complex64))
    with pytest.raises(ww.ShapeError):
        p = f.lower(torch.ones(4, device="cuda"))
        p(torch.ones(5, device="cuda"))
