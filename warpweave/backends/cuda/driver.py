"""A thin, checked layer over the CUDA driver API (`cuda.bindings.driver`).

Every driver call goes through `check`, which turns a failing `CUresult` into a
`warpweave.errors.CudaError` naming the call and the CUDA error. Importing this
module never touches the driver: `available()` probes it (once, never raising)
and everything else initializes it on first use.

Contexts: warpweave uses each device's *primary* context, the one the CUDA
runtime, PyTorch and CuPy use, so device pointers move freely between them.
`ensure_context()` retains it once per process and makes it current once per
thread; every public function here calls it, so callers never have to.

Streams are plain integer handles as the driver sees them: 0 is the legacy
default stream (also `CU_STREAM_LEGACY` = 1), `CU_STREAM_PER_THREAD` = 2 the
per-thread default stream, anything else a `CUstream` from `create_stream()` or
another library (for example `torch.cuda.current_stream().cuda_stream`).

This module covers errors, availability, devices, contexts, PTX linking, memory,
streams and events; loading modules and launching their kernels is `launch`'s job.
"""
from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass

import numpy as np

from ...errors import ArgumentError, CudaError

# cuda-python is optional: warpweave compiles PTX without it, and a machine with
# no driver just reports the CUDA target as unavailable.
try:  # pragma: no cover - depends on the machine
    from cuda.bindings import driver as cu
    _IMPORT_ERROR: str | None = None
except Exception as exc:  # ImportError, or a broken installation
    cu = None
    _IMPORT_ERROR = f"cuda-python is not importable ({type(exc).__name__}: {exc}); install cuda-python"

CU_STREAM_LEGACY = 1
CU_STREAM_PER_THREAD = 2
_LOG_BYTES = 1 << 16  # JIT info and error log buffers


# ---------------------------------------------------------------------- errors
def _error_text(err) -> tuple[str, str]:
    """(name, description) of a CUresult, from the driver when it can say."""
    name = getattr(err, "name", None) or f"CUresult {int(err)}"
    desc = ""
    try:
        r, s = cu.cuGetErrorName(err)
        if not r and s:
            name = s.decode() if isinstance(s, bytes) else str(s)
        r, s = cu.cuGetErrorString(err)
        if not r and s:
            desc = s.decode() if isinstance(s, bytes) else str(s)
    except Exception:
        pass
    return name, desc


def _make_error(err, call: str, detail: str = "") -> CudaError:
    name, desc = _error_text(err)
    msg = f"{call} failed: {name} ({int(err)})"
    if desc:
        msg += f": {desc}"
    if detail:
        msg += f" [{detail}]"
    return CudaError(msg, name=name, code=int(err), call=call)


def check(result, call: str = "CUDA driver call", detail: str = ""):
    """Check the `(CUresult, *values)` tuple a cuda-python call returns.

    Raises `CudaError` (message: the call, the CUDA error name and string, and
    `detail`) unless the result is CUDA_SUCCESS; returns the values: None when
    there are none, the value itself when there is one, else a tuple."""
    err = result[0]
    if err:  # CUresult is an int enum; CUDA_SUCCESS is 0
        raise _make_error(err, call, detail)
    n = len(result)
    if n == 1:
        return None
    if n == 2:
        return result[1]
    return tuple(result[1:])


def _call(fn, *args, detail: str = ""):
    """Call a cuda-python driver function and `check` its result."""
    return check(fn(*args), fn.__name__, detail)


# ---------------------------------------------------------------- availability
_PROBE_LOCK = threading.Lock()
_AVAILABLE: bool | None = None
_REASON = ""


def _probe() -> tuple[bool, str]:
    if cu is None:
        return False, _IMPORT_ERROR or "cuda-python is not installed"
    try:
        err, = cu.cuInit(0)
    except Exception as exc:  # e.g. cuda.pathfinder's DynamicLibNotFoundError: no libcuda
        return False, f"the CUDA driver library could not be loaded ({type(exc).__name__}: {exc})"
    if err:
        name, desc = _error_text(err)
        return False, f"cuInit failed: {name}" + (f": {desc}" if desc else "")
    try:
        err, count = cu.cuDeviceGetCount()
    except Exception as exc:
        return False, f"cuDeviceGetCount raised {type(exc).__name__}: {exc}"
    if err:
        name, desc = _error_text(err)
        return False, f"cuDeviceGetCount failed: {name}" + (f": {desc}" if desc else "")
    if count < 1:
        return False, "the CUDA driver reports no devices"
    return True, ""


def available() -> bool:
    """True when cuda-python imports, `cuInit` succeeds and there is a device.
    The probe runs once per process; this never raises."""
    global _AVAILABLE, _REASON
    if _AVAILABLE is None:
        with _PROBE_LOCK:
            if _AVAILABLE is None:
                try:
                    ok, why = _probe()
                except BaseException as exc:  # noqa: BLE001 - the contract is "never raises"
                    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                        raise
                    ok, why = False, f"probing the CUDA driver raised {type(exc).__name__}: {exc}"
                _REASON = why
                _AVAILABLE = ok
    return _AVAILABLE


def unavailable_reason() -> str:
    """Why `available()` is False ("" when it is True)."""
    available()
    return _REASON


def _require() -> None:
    if not available():
        from ...errors import TargetError

        raise TargetError(f"CUDA is not available: {_REASON}")


# -------------------------------------------------------------------- devices
@dataclass(frozen=True)
class Device:
    """What warpweave needs to know about a GPU."""

    ordinal: int
    name: str
    arch: str  # e.g. "sm_90"
    compute_capability: tuple[int, int]
    sm_count: int
    clock_khz: int  # the SM clock CUDA reports (peak)
    max_threads_per_block: int
    max_shared_per_block: int  # bytes a block gets without opting in
    max_shared_per_block_optin: int  # bytes a block can get with set_max_dynamic_shared
    warp_size: int
    total_memory: int  # bytes


_DEVICES: dict[int, Device] = {}
_DEVICE_HANDLES: dict[int, object] = {}


def device_count() -> int:
    _require()
    return _call(cu.cuDeviceGetCount)


def _device_handle(ordinal: int):
    h = _DEVICE_HANDLES.get(ordinal)
    if h is None:
        _require()
        count = _call(cu.cuDeviceGetCount)
        if not 0 <= ordinal < count:
            raise ArgumentError(f"CUDA device {ordinal} does not exist (this machine has {count})")
        h = _call(cu.cuDeviceGet, ordinal)
        _DEVICE_HANDLES[ordinal] = h
    return h


def device(ordinal: int | None = None) -> Device:
    """The properties of CUDA device `ordinal` (default: the current one), cached."""
    if ordinal is None:
        ordinal = current_ordinal()
    d = _DEVICES.get(ordinal)
    if d is not None:
        return d
    h = _device_handle(ordinal)
    A = cu.CUdevice_attribute

    def attr(a):
        return int(_call(cu.cuDeviceGetAttribute, a, h))

    raw = _call(cu.cuDeviceGetName, 256, h)
    name = bytes(raw).split(b"\0", 1)[0].decode(errors="replace")
    major = attr(A.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
    minor = attr(A.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)
    d = Device(
        ordinal=ordinal,
        name=name,
        arch=f"sm_{major}{minor}",
        compute_capability=(major, minor),
        sm_count=attr(A.CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT),
        clock_khz=attr(A.CU_DEVICE_ATTRIBUTE_CLOCK_RATE),
        max_threads_per_block=attr(A.CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK),
        max_shared_per_block=attr(A.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK),
        max_shared_per_block_optin=attr(A.CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN),
        warp_size=attr(A.CU_DEVICE_ATTRIBUTE_WARP_SIZE),
        total_memory=int(_call(cu.cuDeviceTotalMem, h)),
    )
    _DEVICES[ordinal] = d
    return d


# ------------------------------------------------------------------- contexts
_CTX_LOCK = threading.Lock()
_PRIMARY: dict[int, object] = {}  # ordinal -> retained primary CUcontext (never released)
_TLS = threading.local()  # .ordinal: the device whose primary context is current here
_DEFAULT_ORDINAL = 0


def ensure_context(ordinal: int | None = None) -> None:
    """Retain device `ordinal`'s primary context (once per process) and make it
    current in the calling thread (once per thread). Cheap when already done.

    With `ordinal` None, the thread keeps whichever warpweave device it has, or
    takes the process default (device 0). The primary context stays retained for
    the life of the process, as the CUDA runtime does it."""
    cur = getattr(_TLS, "ordinal", None)
    if ordinal is None:
        if cur is not None:
            return
        ordinal = _DEFAULT_ORDINAL
    elif cur == ordinal:
        return
    ctx = _PRIMARY.get(ordinal)
    if ctx is None:
        with _CTX_LOCK:
            ctx = _PRIMARY.get(ordinal)
            if ctx is None:
                ctx = _call(cu.cuDevicePrimaryCtxRetain, _device_handle(ordinal))
                _PRIMARY[ordinal] = ctx
    _call(cu.cuCtxSetCurrent, ctx)
    _TLS.ordinal = ordinal


def driver_version() -> int:
    """The CUDA driver's version number (e.g. 13000), part of cached cubins' keys."""
    ensure_context()
    return int(_call(cu.cuDriverGetVersion))


def current_ordinal() -> int:
    """The device whose context warpweave made current in this thread (default 0)."""
    cur = getattr(_TLS, "ordinal", None)
    return _DEFAULT_ORDINAL if cur is None else cur


# ------------------------------------------------------------- PTX linking
def _log_text(buf: bytearray) -> str:
    return bytes(buf).split(b"\0", 1)[0].decode(errors="replace").strip()


def _jit_target(arch: str):
    """The `CUjit_target` for an architecture name like "sm_90" or "sm_90a"."""
    from .codegen import check_arch

    digits = check_arch(arch)[3:]
    suffix = ""
    if digits.endswith("a"):
        digits, suffix = digits[:-1], "A"
    member = f"CU_TARGET_COMPUTE_{digits}{suffix}"
    try:
        return getattr(cu.CUjit_target, member)
    except AttributeError:
        raise ArgumentError(f"this cuda-python has no JIT target {member} for {arch}") from None


def link_ptx(ptx: str | bytes, arch: str | None = None) -> bytes:
    """Compile PTX to a cubin for `arch` (default: the current device's) with the
    driver's JIT linker, and return the cubin's bytes (copied out before the
    link state is destroyed), ready for `launch.Module` or a disk cache."""
    _require()
    ensure_context()
    if arch is None:
        arch = device().arch
    target = _jit_target(arch)
    data = ptx.encode() if isinstance(ptx, str) else bytes(ptx)
    if not data.endswith(b"\0"):
        data += b"\0"  # the driver reads PTX as a NUL-terminated string
    info_log = bytearray(_LOG_BYTES)
    error_log = bytearray(_LOG_BYTES)
    opt = cu.CUjit_option
    options = [opt.CU_JIT_INFO_LOG_BUFFER, opt.CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES,
               opt.CU_JIT_ERROR_LOG_BUFFER, opt.CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
               opt.CU_JIT_TARGET]
    # cuda-python passes a bytearray's own buffer as the char* log buffer, and keeps
    # the option-value array alive inside the CUlinkState (the driver writes the
    # filled log sizes back into it); we keep the bytearrays alive until destroy.
    values = [info_log, _LOG_BYTES, error_log, _LOG_BYTES, target]
    state = _call(cu.cuLinkCreate, len(options), options, values)
    try:
        call = "cuLinkAddData"
        err, = cu.cuLinkAddData(state, cu.CUjitInputType.CU_JIT_INPUT_PTX, data, len(data),
                                b"warpweave.ptx", 0, None, None)
        if not err:
            call = "cuLinkComplete"
            err, cubin_ptr, cubin_size = cu.cuLinkComplete(state)
        if err:
            log = _log_text(error_log) or _log_text(info_log)
            raise _make_error(err, call, f"JIT of PTX for {arch}; log:\n{log}" if log else f"JIT of PTX for {arch}")
        if not cubin_ptr or not cubin_size:
            raise CudaError(f"cuLinkComplete returned an empty image for {arch}", call="cuLinkComplete")
        cubin = ctypes.string_at(int(cubin_ptr), int(cubin_size))  # owned by `state`: copy it now
    finally:
        destroyed = cu.cuLinkDestroy(state)
        del state
    check(destroyed, "cuLinkDestroy")
    del info_log, error_log, values
    return cubin


# --------------------------------------------------------------------- memory
class Allocation:
    """Device memory from `cuMemAlloc`, freed with `cuMemFree` when collected
    (or by `free()`). A zero-byte allocation has pointer 0 and owns nothing."""

    __slots__ = ("ptr", "nbytes", "ordinal", "__weakref__")

    def __init__(self, ptr: int, nbytes: int, ordinal: int):
        self.ptr = ptr
        self.nbytes = nbytes
        self.ordinal = ordinal

    def free(self) -> None:
        ptr, self.ptr = self.ptr, 0
        if ptr:
            ensure_context(self.ordinal)
            _call(cu.cuMemFree, ptr)

    def __del__(self):
        try:
            self.free()
        except Exception:  # interpreter shutdown
            pass

    def __repr__(self):
        return f"Allocation(ptr=0x{self.ptr:x}, nbytes={self.nbytes}, device={self.ordinal})"


def alloc(nbytes: int) -> Allocation:
    """`nbytes` of device memory on the current device (256-byte aligned)."""
    nbytes = int(nbytes)
    if nbytes < 0:
        raise ArgumentError(f"cannot allocate {nbytes} bytes")
    _require()
    ensure_context()
    ordinal = current_ordinal()
    if nbytes == 0:
        return Allocation(0, 0, ordinal)
    ptr = int(_call(cu.cuMemAlloc, nbytes, detail=f"{nbytes} bytes"))
    return Allocation(ptr, nbytes, ordinal)


def _host_buffer(host: np.ndarray, writable: bool) -> tuple[int, int]:
    if not isinstance(host, np.ndarray):
        raise ArgumentError(f"expected a numpy array, got {type(host).__name__}")
    if not host.flags.c_contiguous:
        raise ArgumentError("host arrays for device copies must be C-contiguous")
    if writable and not host.flags.writeable:
        raise ArgumentError("the host array to copy into is read-only")
    return host.ctypes.data, host.nbytes


def copy_htod(dst_ptr: int, host: np.ndarray, stream: int = 0) -> None:
    """Copy a C-contiguous host array to device memory at `dst_ptr`, ordered on
    `stream`. The host array may be reused as soon as this returns (pageable
    memory is staged by the driver before the call returns)."""
    src, n = _host_buffer(host, writable=False)
    if n == 0:
        return
    ensure_context()
    _call(cu.cuMemcpyHtoDAsync, int(dst_ptr), src, n, int(stream), detail=f"{n} bytes")


def copy_dtoh(host: np.ndarray, src_ptr: int, stream: int = 0) -> None:
    """Copy device memory at `src_ptr` into a C-contiguous host array, ordered on
    `stream`, and wait for it."""
    dst, n = _host_buffer(host, writable=True)
    if n == 0:
        return
    ensure_context()
    _call(cu.cuMemcpyDtoHAsync, dst, int(src_ptr), n, int(stream), detail=f"{n} bytes")
    _call(cu.cuStreamSynchronize, int(stream))


def copy_dtod(dst: int, src: int, nbytes: int, stream: int = 0) -> None:
    if nbytes == 0:
        return
    ensure_context()
    _call(cu.cuMemcpyDtoDAsync, int(dst), int(src), int(nbytes), int(stream), detail=f"{nbytes} bytes")


def memset_d8(ptr: int, value: int, nbytes: int, stream: int = 0) -> None:
    if nbytes == 0:
        return
    ensure_context()
    _call(cu.cuMemsetD8Async, int(ptr), int(value) & 0xFF, int(nbytes), int(stream))


def pointer_ordinal(ptr: int) -> int:
    """The ordinal of the device that owns device pointer `ptr`."""
    ensure_context()
    return int(_call(cu.cuPointerGetAttribute,
                     cu.CUpointer_attribute.CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, int(ptr)))


# ------------------------------------------------------------ streams, events
def synchronize(stream: int = 0) -> None:
    """Wait for the work queued on `stream` (0: the legacy default stream)."""
    ensure_context()
    _call(cu.cuStreamSynchronize, int(stream))


def synchronize_device() -> None:
    """Wait for all work in the current context."""
    ensure_context()
    _call(cu.cuCtxSynchronize)


class Stream:
    """A stream created by warpweave; `int(stream)` / `.handle` is the driver handle."""

    def __init__(self, non_blocking: bool = False):
        _require()
        ensure_context()
        self.ordinal = current_ordinal()
        flags = cu.CUstream_flags.CU_STREAM_NON_BLOCKING if non_blocking else cu.CUstream_flags.CU_STREAM_DEFAULT
        self._stream = _call(cu.cuStreamCreate, int(flags))
        self.handle = int(self._stream)

    def __int__(self):
        return self.handle

    __index__ = __int__

    def synchronize(self) -> None:
        synchronize(self.handle)

    def destroy(self) -> None:
        s, self._stream = getattr(self, "_stream", None), None
        if s is not None:
            self.handle = 0
            ensure_context(self.ordinal)
            _call(cu.cuStreamDestroy, s)

    def __del__(self):
        try:
            self.destroy()
        except Exception:
            pass

    def __repr__(self):
        return f"Stream(0x{self.handle:x})"


def create_stream(non_blocking: bool = False) -> Stream:
    return Stream(non_blocking)


def destroy_stream(stream: Stream) -> None:
    stream.destroy()


class Event:
    """A CUDA event, for timing (`elapsed_ms`) and for ordering streams (`wait`)."""

    def __init__(self, timing: bool = True):
        _require()
        ensure_context()
        self.ordinal = current_ordinal()
        flags = cu.CUevent_flags.CU_EVENT_DEFAULT if timing else cu.CUevent_flags.CU_EVENT_DISABLE_TIMING
        self._event = _call(cu.cuEventCreate, int(flags))

    def record(self, stream: int = 0) -> "Event":
        ensure_context(self.ordinal)
        _call(cu.cuEventRecord, self._event, int(stream))
        return self

    def wait(self, stream: int) -> None:
        """Make later work on `stream` wait for this event."""
        ensure_context(self.ordinal)
        _call(cu.cuStreamWaitEvent, int(stream), self._event, 0)

    def synchronize(self) -> None:
        ensure_context(self.ordinal)
        _call(cu.cuEventSynchronize, self._event)

    def elapsed_ms(self, other: "Event") -> float:
        """Milliseconds from this event to `other` (both recorded; waits for `other`)."""
        ensure_context(self.ordinal)
        _call(cu.cuEventSynchronize, other._event)
        return float(_call(cu.cuEventElapsedTime, self._event, other._event))

    def destroy(self) -> None:
        e, self._event = getattr(self, "_event", None), None
        if e is not None:
            ensure_context(self.ordinal)
            _call(cu.cuEventDestroy, e)

    def __del__(self):
        try:
            self.destroy()
        except Exception:
            pass


def stream_wait(consumer: int, producer: int) -> None:
    """Order later work on stream `consumer` after the work already queued on
    `producer` (an event recorded on one, waited on by the other). Nothing to do
    when they are the same stream."""
    consumer, producer = int(consumer), int(producer)
    if _same_stream(consumer, producer):
        return
    ensure_context()
    ev = _call(cu.cuEventCreate, int(cu.CUevent_flags.CU_EVENT_DISABLE_TIMING))
    try:
        _call(cu.cuEventRecord, ev, producer)
        _call(cu.cuStreamWaitEvent, consumer, ev, 0)
    finally:
        # Safe right away: the wait captured the event's state when it was enqueued,
        # and the driver frees the event once the device has completed it.
        _call(cu.cuEventDestroy, ev)


def _same_stream(a: int, b: int) -> bool:
    legacy = (0, CU_STREAM_LEGACY)
    return a == b or (a in legacy and b in legacy)
