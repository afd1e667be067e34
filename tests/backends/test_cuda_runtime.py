"""The CUDA runtime layer: the checked driver wrapper, device arrays and interop.

CPU-tier tests (no mark) run anywhere: availability probing without a driver,
DLPack struct layouts, dtype codes, and the DLPack capsule machinery exercised
on host memory with numpy as the other side. GPU tests (`-m gpu`) need a CUDA
device and skip cleanly without one; torch/CuPy interop tests also skip when
those libraries are missing.
"""
import ctypes
import gc
import threading
import time

import numpy as np
import pytest

from tests.lower.test_lower import graph_for, single_kernel_schedule
from tests.utils import assert_close, random_array
from warpweave.backends.cuda import arrays as A
from warpweave.backends.cuda import driver, launch
from warpweave.errors import ArgumentError, CudaError, DTypeError, Error, TargetError
from warpweave.ir import dtypes as dt

# =============================================================== CPU tier
@pytest.mark.skipif(driver.available(), reason="a CUDA driver is present")
def test_unavailable_without_a_driver_never_raises():
    assert driver.available() is False
    assert driver.available() is False  # cached, still no exception
    reason = driver.unavailable_reason()
    assert isinstance(reason, str) and reason
    assert "CUDA" in reason or "cuda" in reason


@pytest.mark.skipif(driver.available(), reason="a CUDA driver is present")
def test_driver_calls_without_a_driver_are_target_errors():
    with pytest.raises(TargetError, match="CUDA is not available"):
        driver.alloc(16)
    with pytest.raises(TargetError):
        driver.device(0)


def test_check_turns_results_into_values_or_cuda_errors():
    cu = pytest.importorskip("cuda.bindings.driver", reason="cuda-python is not installed (the test extra installs it)")
    ok = cu.CUresult.CUDA_SUCCESS
    assert driver.check((ok,)) is None
    assert driver.check((ok, 5)) == 5
    assert driver.check((ok, 1, 2)) == (1, 2)
    with pytest.raises(CudaError) as info:
        driver.check((cu.CUresult.CUDA_ERROR_INVALID_VALUE,), "cuFoo")
    e = info.value
    assert isinstance(e, Error) and isinstance(e, RuntimeError)
    assert e.name == "CUDA_ERROR_INVALID_VALUE" and e.code == 1 and e.call == "cuFoo"
    assert "cuFoo" in str(e) and "CUDA_ERROR_INVALID_VALUE" in str(e)


def test_dlpack_struct_layouts():
    S = ctypes.sizeof
    assert S(A.DLDevice) == 8 and S(A.DLDataType) == 4
    assert S(A.DLTensor) == 48
    offsets = {name: getattr(A.DLTensor, name).offset for name, _ in A.DLTensor._fields_}
    assert offsets == {"data": 0, "device": 8, "ndim": 16, "dtype": 20, "shape": 24, "strides": 32,
                       "byte_offset": 40}
    assert S(A.DLManagedTensor) == 64
    assert A.DLManagedTensor.manager_ctx.offset == 48 and A.DLManagedTensor.deleter.offset == 56
    assert S(A.DLManagedTensorVersioned) == 80
    V = A.DLManagedTensorVersioned
    assert (V.version.offset, V.manager_ctx.offset, V.deleter.offset, V.flags.offset, V.dl_tensor.offset) == \
        (0, 8, 16, 24, 32)


def test_dlpack_dtype_codes_round_trip_for_every_dtype():
    expected = {"bool": (6, 8), "int32": (0, 32), "int64": (0, 64), "float16": (2, 16),
                "bfloat16": (4, 16), "float32": (2, 32), "float64": (2, 64)}
    for d in dt.ALL:
        code, bits, lanes = A.dlpack_dtype(d)
        assert (code, bits) == expected[d.name] and lanes == 1
        assert A.from_dlpack_dtype(code, bits, lanes) is d
    with pytest.raises(DTypeError):
        A.from_dlpack_dtype(A.kDLUInt, 8)
    with pytest.raises(DTypeError):
        A.from_dlpack_dtype(A.kDLFloat, 32, lanes=4)


def test_host_objects_are_not_cuda_buffers():
    assert A.as_cuda_buffer(np.ones(3)) is None
    assert A.as_cuda_buffer(np.float32(2)) is None
    assert A.as_cuda_buffer(3.0) is None
    assert A.as_cuda_buffer([1, 2]) is None

    class HostDLPack:  # a CPU DLPack producer: left alone, never consumed
        def __dlpack_device__(self):
            return (A.kDLCPU, 0)

        def __dlpack__(self, **kw):  # pragma: no cover - must not be called
            raise AssertionError("as_cuda_buffer consumed a host tensor")

    assert A.as_cuda_buffer(HostDLPack()) is None


class _HostExporter:
    """Exports a numpy array through warpweave's capsule builder (host memory,
    so numpy can be the consumer without a GPU)."""

    def __init__(self, arr):
        self.arr = arr

    def __dlpack_device__(self):
        return (A.kDLCPU, 0)

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        a = self.arr
        return A.make_dlpack_capsule(a.ctypes.data, (A.kDLCPU, 0), a.shape,
                                     tuple(s // a.itemsize for s in a.strides), dt.dtype(a.dtype), a,
                                     versioned=max_version is not None and max_version[0] >= 1)


@pytest.mark.parametrize("d", dt.ALL, ids=lambda d: d.name)
def test_exported_capsules_are_consumed_without_copy_and_released(d):
    rng = np.random.default_rng(0)
    a = random_array(rng, (3, 5), d)[:, ::2]  # strided
    exporter = _HostExporter(a)
    before = len(A._EXPORTS)
    if d is dt.bfloat16:
        # numpy has no kDLBfloat: it fails, then drops our capsule with its error
        # pending. The native trampoline keeps that error intact and still releases.
        with pytest.raises((RuntimeError, BufferError), match="[Uu]nsupported"):
            np.from_dlpack(exporter)
        gc.collect()
        assert len(A._EXPORTS) == before
        return
    b = np.from_dlpack(exporter)
    assert b.ctypes.data == a.ctypes.data and b.strides == a.strides
    np.testing.assert_array_equal(b, a)
    assert len(A._EXPORTS) == before + 1
    del b
    gc.collect()
    assert len(A._EXPORTS) == before  # the consumer called our deleter


@pytest.mark.parametrize("versioned", [False, True])
def test_unconsumed_capsules_release_their_tensor(versioned):
    a = np.arange(4.0)
    before = len(A._EXPORTS)
    cap = _HostExporter(a).__dlpack__(max_version=(1, 0) if versioned else None)
    assert len(A._EXPORTS) == before + 1
    del cap
    gc.collect()
    assert len(A._EXPORTS) == before


@pytest.mark.parametrize("max_version", [None, (1, 0)])
def test_consuming_a_foreign_capsule_reads_the_tensor(max_version):
    a = np.arange(12, dtype=np.int64).reshape(3, 4)[:, ::2]
    cap = a.__dlpack__(max_version=max_version) if max_version else a.__dlpack__()
    imp = A.consume_dlpack_capsule(cap, a)
    t = imp.tensor
    assert t.data == a.ctypes.data and t.ndim == 2
    assert [t.shape[i] for i in range(2)] == [3, 2]
    assert [t.strides[i] for i in range(2)] == [4, 2]
    assert A.from_dlpack_dtype(t.dtype.code, t.dtype.bits, t.dtype.lanes) is dt.int64
    with pytest.raises(ArgumentError):  # the capsule is marked used
        A.consume_dlpack_capsule(cap, a)
    imp.release()
    imp.release()  # idempotent


def test_cuda_buffer_layout_properties():
    b = A.CudaBuffer(4096, (2, 3), (12, 4), dt.float32, None, None)
    assert b.contiguous and b.aligned() and b.aligned(256) and b.size == 6 and b.nbytes == 24
    t = A.CudaBuffer(4100, (3, 2), (4, 12), dt.float32, None, None)
    assert not t.contiguous and not t.aligned(16) and t.aligned(4)
    assert A.CudaBuffer(0, (1, 3), (999, 4), dt.float32, None, None).contiguous  # size-1 dims don't count
    assert A.CudaBuffer(0, (0, 3), (7, 5), dt.float32, None, None).contiguous  # empty
    assert A.CudaBuffer(0, (), (), dt.float32, None, None).contiguous


# =============================================================== GPU tier
gpu = pytest.mark.gpu


@gpu
def test_device_properties():
    d = driver.device()
    assert d.ordinal == 0 and d.name
    assert d.arch == f"sm_{d.compute_capability[0]}{d.compute_capability[1]}"
    assert d.sm_count > 0 and d.warp_size == 32 and d.max_threads_per_block >= 1024
    assert d.max_shared_per_block_optin >= d.max_shared_per_block >= 48 * 1024
    assert driver.device(0) is d  # cached


@gpu
@pytest.mark.parametrize("d", dt.ALL, ids=lambda d: d.name)
@pytest.mark.parametrize("shape", [(), (0,), (3, 0), (1,), (7, 33), (2, 3, 4)])
def test_to_device_and_back(d, shape):
    rng = np.random.default_rng(1)
    host = random_array(rng, shape, d)
    arr = A.to_device(host)
    assert arr.shape == shape and arr.dtype == d.numpy and arr.ww_dtype is d
    assert arr.nbytes == host.nbytes and arr.size == host.size and arr.ndim == len(shape)
    if host.size == 0:
        assert arr.ptr == 0  # (numpy's strides for empty arrays differ between versions)
    else:
        assert arr.strides == host.strides
    back = arr.numpy()
    assert back.dtype == host.dtype and back.shape == host.shape
    np.testing.assert_array_equal(back, host)
    assert "DeviceArray" in repr(arr) and d.name in repr(arr)


@gpu
def test_strided_views_copy_back_correctly():
    host = np.arange(24, dtype=np.float32).reshape(4, 6)
    arr = A.to_device(host)
    t = A.DeviceArray.from_pointer(arr.ptr, (6, 4), np.float32, strides=(4, 24), owner=arr)
    assert not t.is_c_contiguous and t.__cuda_array_interface__["strides"] == (4, 24)
    np.testing.assert_array_equal(t.numpy(), host.T)
    rev = A.DeviceArray.from_pointer(arr.ptr + 5 * 4, (6,), np.float32, strides=(-4,), owner=arr)
    np.testing.assert_array_equal(rev.numpy(), host[0, ::-1])


@gpu
def test_memory_primitives():
    z = driver.alloc(0)
    assert z.ptr == 0 and z.nbytes == 0
    a = driver.alloc(256)
    b = driver.alloc(256)
    assert a.ptr % 256 == 0
    driver.memset_d8(a.ptr, 0x3F, 256)
    driver.copy_dtod(b.ptr, a.ptr, 256)
    out = np.zeros(256, np.uint8)
    driver.copy_dtoh(out, b.ptr)
    assert (out == 0x3F).all()
    with pytest.raises(ArgumentError, match="C-contiguous"):
        driver.copy_dtoh(np.zeros((4, 4), np.uint8)[:, ::2], b.ptr)
    a.free()
    a.free()  # idempotent
    assert a.ptr == 0


@gpu
def test_driver_errors_name_the_cuda_error():
    with pytest.raises(CudaError) as info:
        driver.alloc(1 << 62)  # far beyond any GPU
    assert info.value.name == "CUDA_ERROR_OUT_OF_MEMORY"
    assert "cuMemAlloc" in str(info.value) and "CUDA_ERROR_OUT_OF_MEMORY" in str(info.value)


# -------------------------------------------------------------- kernels
def _kernels(shape, d):
    from warpweave.backends.cuda.codegen import compile_ptx
    from warpweave.lower.op import lower_op

    g, ops = graph_for(*shape, d)
    kernels = [lower_op(op, g, single_kernel_schedule(op, "gpu")) for op in ops]
    _, ptx = compile_ptx(kernels, driver.device().arch)
    return g, ops, kernels, ptx


def _run_and_compare(module, g, ops, kernels, shape, d, stream=0):
    from warpweave.ir.tensor import evaluate

    rng = np.random.default_rng(2)
    inputs = {"x": random_array(rng, shape, d), "y": random_array(rng, (shape[1],), d)}
    ref = evaluate(g, inputs)
    dev = {n: A.to_device(v, stream) for n, v in inputs.items()}  # copies ordered on `stream`
    for op, k in zip(ops, kernels):
        out = A.to_device(np.full(op.shape, np.nan if op.dtype.is_float else 0, op.dtype.numpy), stream)
        bufs = {**dev, op.name: out}
        fn = module.function(k.name, len(k.params))
        assert fn.num_params == len(k.params)
        fn.launch(k.grid, k.block, [bufs[p.name].ptr for p in k.params], stream)
        driver.synchronize(stream)
        scale = max(1.0, float(np.sqrt(np.prod(op.reduce.extents)))) if op.reduce else 1.0
        assert_close(out.numpy(), ref[op.name], d, scale, what=f"{op.name} cuda {shape}")


@gpu
@pytest.mark.parametrize("d", [dt.float32, dt.float16, dt.bfloat16], ids=lambda d: d.name)
@pytest.mark.parametrize("shape", [(1, 1), (33, 4097), (65, 3)])
def test_gir_kernels_run_from_ptx(shape, d):
    g, ops, kernels, ptx = _kernels(shape, d)
    module = launch.Module(ptx)
    _run_and_compare(module, g, ops, kernels, shape, d)
    f = module.function(kernels[0].name)
    assert f.num_regs > 0 and f.local_bytes >= 0 and f.shared_bytes >= 0
    assert module.function(kernels[0].name) is f  # cached


@gpu
def test_link_ptx_produces_a_cubin_that_loads_and_runs():
    g, ops, kernels, ptx = _kernels((33, 300), dt.float32)
    cubin = driver.link_ptx(ptx)
    assert cubin[:4] == b"\x7fELF"
    module = launch.Module(cubin)
    _run_and_compare(module, g, ops, kernels, (33, 300), dt.float32)
    module.close()
    module.close()


@gpu
def test_bad_ptx_reports_the_jit_log():
    bad = ".version 8.0\n.target sm_90\n.address_size 64\n.visible .entry k() { bogus.instr; ret; }\n"
    with pytest.raises(CudaError) as info:
        driver.link_ptx(bad)
    assert "CUDA_ERROR" in info.value.name and "bogus" in str(info.value)
    with pytest.raises(CudaError):
        launch.Module(bad)


@gpu
def test_launch_errors_are_cuda_errors():
    g, ops, kernels, ptx = _kernels((4, 64), dt.float32)
    k = kernels[0]
    f = launch.Module(ptx).function(k.name)
    bufs = {"x": A.empty((4, 64), np.float32), "y": A.empty((64,), np.float32),
            k.params[-1].name: A.empty((4, 64), np.float32)}
    ptrs = [bufs[p.name].ptr for p in k.params]
    with pytest.raises(CudaError) as info:
        f.launch(1, 4096, ptrs)
    assert info.value.name == "CUDA_ERROR_INVALID_VALUE"
    assert "CUDA_ERROR_INVALID_VALUE" in str(info.value) and k.name in str(info.value)
    with pytest.raises(ArgumentError, match="pointer arguments"):
        f.launch(1, 32, ptrs[:1])
    with pytest.raises(CudaError, match="CUDA_ERROR_NOT_FOUND"):
        launch.Module(ptx).function("no_such_kernel")
    if f.num_params is not None:  # the driver reports parameter counts (CUDA 12.4+)
        assert f.num_params == len(k.params)
        with pytest.raises(ArgumentError, match="parameters"):
            f.module.function(k.name, len(k.params) + 1)


@gpu
def test_launch_overhead_is_small():
    g, ops, kernels, ptx = _kernels((1, 32), dt.float32)
    k = kernels[0]
    f = launch.Module(ptx).function(k.name)
    bufs = {"x": A.empty((1, 32), np.float32), "y": A.empty((32,), np.float32), k.params[-1].name:
            A.empty((1, 32), np.float32)}
    ptrs = [bufs[p.name].ptr for p in k.params]
    for _ in range(100):
        f.launch(k.grid, k.block, ptrs)
    driver.synchronize()
    n = 10000
    t0 = time.perf_counter()
    for _ in range(n):
        f.launch(k.grid, k.block, ptrs)
    t1 = time.perf_counter()
    driver.synchronize()
    per_launch_us = (t1 - t0) / n * 1e6
    print(f"\nFunction.launch: {per_launch_us:.2f} us per launch over {n} launches")
    assert per_launch_us < 20


@gpu
def test_launches_from_many_threads_and_streams():
    shape, d = (8, 256), dt.float32
    g, ops, kernels, ptx = _kernels(shape, d)
    module = launch.Module(ptx)
    errors = []

    def work():
        try:
            s = driver.create_stream(non_blocking=True)
            for _ in range(3):
                _run_and_compare(module, g, ops[:2], kernels[:2], shape, d, stream=s.handle)
            s.destroy()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


@gpu
def test_events_time_work():
    a, b = driver.Event(), driver.Event()
    buf = driver.alloc(1 << 24)
    a.record()
    for _ in range(10):
        driver.memset_d8(buf.ptr, 1, buf.nbytes)
    b.record()
    ms = a.elapsed_ms(b)
    assert ms > 0
    s = driver.create_stream()
    e = driver.Event(timing=False).record(s.handle)
    e.wait(0)
    e.synchronize()
    driver.destroy_stream(s)


# -------------------------------------------------------------- interop
@gpu
def test_cuda_array_interface_export():
    arr = A.to_device(np.arange(6, dtype=np.float32).reshape(2, 3))
    cai = arr.__cuda_array_interface__
    assert cai["version"] == 3 and cai["shape"] == (2, 3) and cai["typestr"] == "<f4"
    assert cai["data"] == (arr.ptr, False) and cai["strides"] is None and cai["stream"] == 1
    assert A.to_device(np.zeros(2, dt.bfloat16.numpy)).__cuda_array_interface__["typestr"] == "<V2"
    buf = A.as_cuda_buffer(arr)
    assert buf.ptr == arr.ptr and buf.dtype is dt.float32 and buf.contiguous and buf.owner is arr


@gpu
def test_foreign_cuda_array_interface_is_used_in_place():
    arr = A.to_device(np.arange(6, dtype=np.int32))

    class Foreign:
        def __init__(self, stream):
            self.__cuda_array_interface__ = {"shape": (6,), "typestr": "<i4", "data": (arr.ptr, True),
                                             "version": 3, "strides": None, "stream": stream}

    buf = A.as_cuda_buffer(Foreign(1))
    assert buf.ptr == arr.ptr and buf.dtype is dt.int32 and buf.readonly and buf.stream == 1
    assert A.as_cuda_buffer(Foreign(None)).stream is None
    with pytest.raises(ArgumentError, match="stream 0"):
        A.as_cuda_buffer(Foreign(0))

    class Complex:
        __cuda_array_interface__ = {"shape": (3,), "typestr": "<c8", "data": (arr.ptr, False), "version": 3}

    with pytest.raises(DTypeError, match="complex64"):
        A.as_cuda_buffer(Complex())


@gpu
@pytest.mark.parametrize("d", dt.ALL, ids=lambda d: d.name)
def test_dlpack_export_to_torch_shares_memory(d):
    torch = pytest.importorskip("torch", reason="PyTorch interop: torch is not installed")
    host = random_array(np.random.default_rng(3), (5, 7), d)
    arr = A.to_device(host)
    before = len(A._EXPORTS)
    t = torch.from_dlpack(arr)
    assert t.is_cuda and t.data_ptr() == arr.ptr and tuple(t.shape) == (5, 7)
    assert t.dtype == A._torch_dtype_of(d)
    got = t.cpu().float().numpy() if d is dt.bfloat16 else t.cpu().numpy()
    np.testing.assert_array_equal(got, host.astype(np.float32) if d is dt.bfloat16 else host)
    del arr
    gc.collect()
    # The memory is still alive: the export holds the array.
    assert np.array_equal(t.cpu().float().numpy(), host.astype(np.float32))
    torch.cuda.synchronize()
    del t
    gc.collect()
    assert len(A._EXPORTS) == before


@gpu
def test_dlpack_export_of_empty_and_0d_arrays_to_torch():
    torch = pytest.importorskip("torch", reason="PyTorch interop: torch is not installed")
    for host in (np.float32(3.5) * np.ones((), np.float32), np.zeros((0, 4), np.float32)):
        t = torch.from_dlpack(A.to_device(host))
        assert tuple(t.shape) == host.shape
        np.testing.assert_array_equal(t.cpu().numpy(), host)


@gpu
def test_dlpack_export_to_cupy_and_cuda_array_interface_to_cupy():
    cupy = pytest.importorskip("cupy", reason="CuPy interop: cupy is not installed")
    for d in dt.ALL:
        host = random_array(np.random.default_rng(4), (4, 9), d)
        arr = A.to_device(host)
        bits = host.view(np.uint16) if d is dt.bfloat16 else host
        try:
            c = cupy.from_dlpack(arr)
        except Exception as exc:  # an older CuPy without bfloat16
            assert d is dt.bfloat16, exc
        else:
            assert c.data.ptr == arr.ptr
            got = cupy.asnumpy(c)
            np.testing.assert_array_equal(got.view(np.uint16) if d is dt.bfloat16 else got, bits)
        c2 = cupy.asarray(arr)  # through __cuda_array_interface__
        assert c2.data.ptr == arr.ptr
        got = cupy.asnumpy(c2)
        if d is dt.bfloat16:  # "<V2": opaque 2-byte elements, bytes intact
            assert got.dtype.kind == "V" and got.dtype.itemsize == 2
            got = got.view(np.uint16)
        np.testing.assert_array_equal(got, bits)


@gpu
def test_torch_tensors_are_used_in_place():
    torch = pytest.importorskip("torch", reason="PyTorch interop: torch is not installed")
    t = torch.arange(12, dtype=torch.float32, device="cuda").reshape(3, 4)
    buf = A.as_cuda_buffer(t)
    assert buf.ptr == t.data_ptr() and buf.shape == (3, 4) and buf.strides_bytes == (16, 4)
    assert buf.dtype is dt.float32 and buf.owner is t and buf.stream == torch.cuda.current_stream().cuda_stream
    tt = A.as_cuda_buffer(t.t())
    assert tt.strides_bytes == (4, 16) and not tt.contiguous
    for tdt, d in ((torch.bfloat16, dt.bfloat16), (torch.bool, dt.bool_), (torch.int64, dt.int64)):
        assert A.as_cuda_buffer(torch.zeros(3, dtype=tdt, device="cuda")).dtype is d
    assert A.as_cuda_buffer(torch.zeros(3)) is None  # host tensor: the caller copies
    with pytest.raises(DTypeError, match="uint8"):
        A.as_cuda_buffer(torch.zeros(3, dtype=torch.uint8, device="cuda"))
    out = A.allocate_like(buf, (2, 5), dt.bfloat16)
    assert isinstance(out, torch.Tensor) and out.is_cuda and out.dtype == torch.bfloat16 and tuple(out.shape) == (2, 5)

    class OnlyDLPack:  # forces the generic DLPack import path
        def __init__(self, t):
            self.t = t

        def __dlpack__(self, **kw):
            return self.t.__dlpack__(**kw)

        def __dlpack_device__(self):
            return self.t.__dlpack_device__()

    src = torch.arange(10, dtype=torch.bfloat16, device="cuda")[::2]
    buf = A.as_cuda_buffer(OnlyDLPack(src))
    assert buf.ptr == src.data_ptr() and buf.shape == (5,) and buf.strides_bytes == (4,)
    assert buf.dtype is dt.bfloat16 and buf.keepalive is not None and buf.stream is None
    del buf
    gc.collect()


@gpu
def test_cupy_arrays_are_used_in_place():
    cupy = pytest.importorskip("cupy", reason="CuPy interop: cupy is not installed")
    c = cupy.arange(12, dtype=cupy.float32).reshape(3, 4)
    buf = A.as_cuda_buffer(c)
    assert buf.ptr == c.data.ptr and buf.strides_bytes == (16, 4) and buf.dtype is dt.float32
    assert buf.stream == cupy.cuda.get_current_stream().ptr
    with pytest.raises(DTypeError, match="complex"):
        A.as_cuda_buffer(cupy.zeros(3, dtype=cupy.complex64))
    out = A.allocate_like(buf, (4,), dt.int32)
    assert isinstance(out, cupy.ndarray) and out.dtype == np.int32
    assert isinstance(A.allocate_like(A.as_cuda_buffer(A.empty(3, np.float32)), (2,), dt.float32), A.DeviceArray)


@gpu
def test_dlpack_stream_ordering_arguments():
    arr = A.to_device(np.ones(4, np.float32))
    s = driver.create_stream(non_blocking=True)
    for stream in (None, 1, 2, -1, s.handle):
        cap = arr.__dlpack__(stream=stream)
        del cap
    with pytest.raises(ValueError):
        arr.__dlpack__(stream=0)
    with pytest.raises(BufferError):
        arr.__dlpack__(dl_device=(A.kDLCPU, 0))
    cap = arr.__dlpack__(copy=True, max_version=(1, 0))
    imp = A.consume_dlpack_capsule(cap)
    assert imp.versioned and imp.tensor.data != arr.ptr
    imp.release()
    s.destroy()


def test_launch_trampoline_forwards_every_argument(monkeypatch):
    """The native launch trampoline passes a 1-D launch through to cuLaunchKernel."""
    import ctypes

    seen = []
    u, p = ctypes.c_uint, ctypes.c_void_p
    proto = ctypes.CFUNCTYPE(ctypes.c_int, p, u, u, u, u, u, u, u, p, p, p)

    def fake_launch(*args):
        seen.append(args)
        return 7

    fake = proto(fake_launch)

    class FakeLib:
        cuLaunchKernel = fake

    monkeypatch.setattr(launch.ctypes, "CDLL", lambda name: FakeLib())
    trampoline = launch._build_trampoline()
    assert trampoline(0x1234, 1000, 256, 48, 0x5678, 0x9ABC) == 7
    assert seen == [(0x1234, 1000, 1, 1, 256, 1, 1, 48, 0x5678, 0x9ABC, None)]


def test_launch_sequence_runs_every_kernel_in_one_native_call(monkeypatch):
    """LaunchSequence writes the pointer table once and the native loop launches each
    kernel with its own parameters, stopping at the first error, which names the kernel."""
    import ctypes
    from types import SimpleNamespace

    seen = []
    u, p = ctypes.c_uint, ctypes.c_void_p
    proto = ctypes.CFUNCTYPE(ctypes.c_int, p, u, u, u, u, u, u, u, p, p, p)

    def fake_launch(func, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
        args = ctypes.cast(params, ctypes.POINTER(ctypes.c_void_p))
        pointers = [ctypes.cast(args[k], ctypes.POINTER(ctypes.c_uint64))[0] for k in range(2)]
        seen.append((func, gx, bx, shared, stream, pointers))
        return 1 if func == 0x3000 else 0  # CUDA_ERROR_INVALID_VALUE from the third kernel

    fake = proto(fake_launch)
    monkeypatch.setattr(launch.ctypes, "CDLL", lambda name: SimpleNamespace(cuLaunchKernel=fake))
    monkeypatch.setattr(launch, "_NATIVE_SEQUENCE", [launch._build_native_sequence_launcher()])

    def function(name, handle):
        return SimpleNamespace(name=name, num_params=2, _raw_handle=ctypes.c_void_p(handle))

    seq = launch.LaunchSequence([(function("a", 0x1000), 10, 128, (0, 2), 0),
                                 (function("b", 0x2000), 20, 256, (2, 1), 98304)], 3)
    seq.run([111, 222, 333], 0x77)
    assert seen == [(0x1000, 10, 128, 0, 0x77, [111, 333]), (0x2000, 20, 256, 98304, 0x77, [333, 222])]
    seen.clear()
    seq.run([4, 5, 6], 0x77)  # the table is rewritten per call
    assert [s[-1] for s in seen] == [[4, 6], [6, 5]]
    bad = launch.LaunchSequence([(function("a", 0x1000), 1, 32, (0, 1), 0),
                                 (function("c", 0x3000), 7, 64, (1, 0), 0)], 2)
    with pytest.raises(CudaError, match="kernel c, grid 7, block 64") as info:
        bad.run([1, 2])
    assert info.value.name == "CUDA_ERROR_INVALID_VALUE"
    with pytest.raises(ArgumentError, match="takes 2 pointer arguments"):
        launch.LaunchSequence([(function("a", 0x1000), 1, 32, (0,), 0)], 1)
    seen.clear()
    with pytest.raises(ArgumentError, match="takes 3 pointers and a stream"):
        seq.run([1, 2], 0)
    with pytest.raises(TypeError):  # Python's own error, from the native argument reader
        seq.run([1, "2", 3], 0)
    with pytest.raises(OverflowError):
        seq.run([1, -2, 3], 0)
    assert seen == []  # nothing launched on bad arguments
    # the table lives on the native stack: threads share one sequence
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda k: seq.run([k, k + 1, k + 2], 0), range(200)))
    assert sorted(s[-1] for s in seen if s[0] == 0x1000) == sorted([k, k + 2] for k in range(200))
    # more pointers than the native table holds: kernel by kernel through Function.launch
    wide = launch.LaunchSequence([(SimpleNamespace(name="w", num_params=1), 1, 32, (launch.MAX_TABLE,), 0)],
                                 launch.MAX_TABLE + 1)
    assert wide.launch_all is None


def test_the_generated_torch_launcher_checks_every_input_and_launches_once():
    """The hot path's Python source (stage "launcher"), run against stand-ins for
    PyTorch tensors and entry points: pointers in table order, outputs in the
    program's order, None (the general path) for anything it does not check."""
    import warpweave as ww

    program = ww.jit(lambda a, b: (a * b, a + b), target="cuda").lower(
        np.ones((4, 8), np.float32), np.ones((8,), np.float32))
    source = program.dump("launcher")

    class Tensor:
        def __init__(self, shape, dtype="f32", ptr=0x1000, device=0, contiguous=True):
            self.shape, self.dtype, self.ptr, self.device, self.contiguous = shape, dtype, ptr, device, contiguous

        def get_device(self):
            return self.device

        def data_ptr(self):
            return self.ptr

        def is_contiguous(self):
            return self.contiguous

    launched, made = [], []

    def empty(shape, strides, dtype):
        made.append(Tensor(shape, dtype, ptr=0x9000 + 0x100 * len(made)))
        return made[-1]

    namespace = {"PLAIN": (Tensor,), "SHAPE0": (4, 8), "DTYPE0": "f32", "SHAPE1": (8,), "DTYPE1": "f32",
                 "launch_all": lambda *a: launched.append(a) or 0, "check": None,
                 "ensure_context": lambda: None, "current_device": lambda: 0, "raw_stream": lambda i: 0x77,
                 "empty": empty}
    backend = program.runner
    for k, (_, shape, _) in enumerate(backend._outputs):
        namespace.update({f"OUT{k}_SHAPE": shape, f"OUT{k}_STRIDES": None, f"OUT{k}_DTYPE": "f32"})
    exec(source, namespace)
    call = namespace["call"]
    a, b = Tensor((4, 8), ptr=0x1000), Tensor((8,), ptr=0x2000)
    outs = call((a, b))
    assert len(launched) == 1 and launched[0][:2] == (0x1000, 0x2000) and launched[0][-1] == 0x77
    assert launched[0][2:-1] == tuple(t.ptr for t in made)
    names = [n for n, _, _ in backend._outputs]
    assert [made.index(o) for o in outs] == [names.index(n) for n in program.graph.outputs]
    launched.clear()
    for bad in [(a,), (a, b, b), (a, Tensor((8,), "bf16")), (a, Tensor((9,))), (Tensor((4, 8), device=-1), b),
                (a, Tensor((8,), device=1)), (a, Tensor((8,), ptr=0x2004)), (a, Tensor((8,), contiguous=False))]:
        assert call(bad) is None
    namespace["current_device"] = lambda: 1
    assert call((a, b)) is None
    assert launched == []


def test_the_generated_torch_launcher_allocates_what_passes_between_kernels_once():
    """Buffers that pass between a program's kernels share one workspace allocation:
    each at an aligned offset of its own, none overlapping; what the program returns
    is allocated a tensor each."""
    import warpweave as ww
    from warpweave.backends.cuda.runtime import WORKSPACE_ALIGN

    program = ww.jit(lambda a, b: (a - a.sum(axis=0)) * ww.softmax(b.T).sum(axis=0), target="cuda").lower(
        np.ones((40, 8), np.float32), np.ones((8, 40), np.float32))
    backend = program.runner
    names = [n for n, _, _ in backend._outputs]
    inner = [n for n in names if n not in program.graph.outputs]
    assert len(program.kernels) > 1 and inner and set(backend._workspace) == set(inner)

    made, launched = [], []

    class Tensor:
        def __init__(self, shape, ptr):
            self.shape, self.ptr = shape, ptr

        def data_ptr(self):
            return self.ptr

    def empty(shape, strides, dtype):
        made.append((shape, dtype, Tensor(shape, 0x100000 * (len(made) + 1))))
        return made[-1][2]

    namespace = {"PLAIN": (), "launch_all": lambda *a: launched.append(a) or 0, "check": None,
                 "ensure_context": lambda: None, "current_device": lambda: 0, "raw_stream": lambda i: 0x77,
                 "empty": empty, "WS_SHAPE": (backend._workspace_bytes,), "WS_STRIDES": (1,), "WS_DTYPE": "u8"}
    for k, (_, shape, _) in enumerate(backend._outputs):
        namespace.update({f"OUT{k}_SHAPE": shape, f"OUT{k}_STRIDES": None, f"OUT{k}_DTYPE": "f32"})
    source = program.dump("launcher")
    body = source[source.index("    ensure_context()"):]  # past the argument checks
    exec("def call(p0, p1, index=0):\n" + body, namespace)
    namespace["call"](0x1000, 0x2000)
    (args,) = launched
    assert [shape for shape, _, _ in made].count((backend._workspace_bytes,)) == 1
    assert len(made) == len(names) - len(inner) + 1
    workspace = next(t.ptr for shape, d, t in made if d == "u8")
    spans = sorted((args[2 + names.index(n)] - workspace, backend._workspace[n]) for n in inner)
    sizes = {n: int(np.prod(s)) * d.itemsize for n, s, d in backend._outputs}
    ends = [off + sizes[n] for n, off in backend._workspace.items()]
    assert all(got == off and off % WORKSPACE_ALIGN == 0 for got, off in spans)
    assert max(ends) <= backend._workspace_bytes
    ordered = sorted((off, off + sizes[n]) for n, off in backend._workspace.items())
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(ordered, ordered[1:]))
