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

The launch hot path (`Function.launch`) makes exactly one cuda-python call: the
argument pointers are written into a per-thread, prebuilt ctypes array of slots
and `cuLaunchKernel` receives the address of a `void**` array pointing at them
(cuda-python takes an int `kernelParams` as that `void**` address).
"""
from __future__ import annotations

import ctypes
import threading
import weakref
from dataclasses import dataclass
from typing import Sequence

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


# -------------------------------------------------------------------- modules
_ELF_MAGIC = b"\x7fELF"
_FATBIN_MAGIC = (0xBA55ED50).to_bytes(4, "little")


def _is_binary_image(image: bytes) -> bool:
    return image[:4] in (_ELF_MAGIC, _FATBIN_MAGIC)


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
    link state is destroyed), ready for `Module` or a disk cache."""
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


class Module:
    """A loaded CUDA module (PTX or cubin image). Keep it alive as long as any of
    its `Function`s is used; `close()` (or garbage collection) unloads it."""

    def __init__(self, image: bytes | str):
        _require()
        ensure_context()
        data = image.encode() if isinstance(image, str) else bytes(image)
        if not _is_binary_image(data) and not data.endswith(b"\0"):
            data += b"\0"  # PTX must be NUL-terminated
        error_log = bytearray(_LOG_BYTES)
        opt = cu.CUjit_option
        options = [opt.CU_JIT_ERROR_LOG_BUFFER, opt.CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES]
        err, handle = cu.cuModuleLoadDataEx(data, len(options), options, [error_log, _LOG_BYTES])
        if err:
            log = _log_text(error_log)
            raise _make_error(err, "cuModuleLoadDataEx", f"log:\n{log}" if log else "")
        self._handle = handle
        # Weak: a Function keeps its Module alive, not the other way round, so an
        # unused module is unloaded as soon as its last Function is dropped.
        self._functions: weakref.WeakValueDictionary[str, Function] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()

    @property
    def handle(self):
        return self._handle

    def function(self, name: str, num_params: int | None = None) -> "Function":
        """The kernel `name` (cached). `num_params`, when given, is checked against
        what the driver reports, or used where the driver cannot say."""
        f = self._functions.get(name)
        if f is None:
            with self._lock:
                f = self._functions.get(name)
                if f is None:
                    if self._handle is None:
                        raise CudaError(f"module is closed; cannot get function {name!r}", call="cuModuleGetFunction")
                    ensure_context()
                    h = _call(cu.cuModuleGetFunction, self._handle, name.encode(), detail=f"function {name!r}")
                    f = Function(self, name, h, num_params)
                    self._functions[name] = f
        if num_params is not None:
            if f.num_params is None:
                f.num_params = int(num_params)
            elif f.num_params != num_params:
                raise ArgumentError(f"kernel {name} takes {f.num_params} parameters, not {num_params}")
        return f

    def close(self) -> None:
        h, self._handle = getattr(self, "_handle", None), None
        if h is None:
            return
        self._functions = weakref.WeakValueDictionary()
        ensure_context()
        _call(cu.cuModuleUnload, h)

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown, or a context already torn down
            pass


# ------------------------------------------------------------------ functions
class Function:
    """A kernel of a loaded `Module`, all of whose parameters are pointers (as
    warpweave's code generator emits them)."""

    def __init__(self, module: Module, name: str, handle, expected_params: int | None = None):
        self.module = module  # keeps the module loaded
        self.name = name
        self._handle = handle
        A = cu.CUfunction_attribute

        def attr(a):
            return int(_call(cu.cuFuncGetAttribute, a, handle, detail=f"kernel {name}"))

        self.num_regs = attr(A.CU_FUNC_ATTRIBUTE_NUM_REGS)
        self.shared_bytes = attr(A.CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES)  # static shared memory
        self.local_bytes = attr(A.CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES)
        self.max_threads_per_block = attr(A.CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK)
        self.num_params = self._param_count(expected_params)
        self._tls = threading.local()
        self._raw = _raw_launcher()
        self._raw_handle = ctypes.c_void_p(int(handle))

    def _param_count(self, expected: int | None = None) -> int | None:
        """The kernel's parameter count, checking that each is 8 bytes (a pointer).

        From `cuFuncGetParamCount` where the driver has it, else by probing
        `cuFuncGetParamInfo` (CUDA 12.4+): the `expected` indices when the caller
        knows the count (no failing call, which sanitizers would report), else up
        to the first index it rejects; None when neither works (then the first
        launch's argument count is trusted)."""
        n = None
        count_fn = getattr(cu, "cuFuncGetParamCount", None)
        if count_fn is not None:
            try:
                res = count_fn(self._handle)
                if not res[0]:
                    n = int(res[1])
            except Exception:  # a driver too old to export the entry point
                pass
        info = getattr(cu, "cuFuncGetParamInfo", None)
        if info is None:
            return n
        sizes = []
        if n is None and expected is not None:
            n = int(expected)
        limit = n if n is not None else 4096  # the PTX limit on parameters is far lower
        for i in range(limit):
            try:
                res = info(self._handle, i)
            except Exception:
                return n
            if res[0]:
                if n is None and res[0] == cu.CUresult.CUDA_ERROR_INVALID_VALUE:
                    break  # past the last parameter
                return n
            sizes.append(int(res[2]))
        for i, size in enumerate(sizes):
            if size != 8:
                raise ArgumentError(f"kernel {self.name}: parameter {i} is {size} bytes; warpweave launches "
                                    "kernels whose parameters are all pointers")
        return len(sizes) if n is None else n

    def _thread_state(self, nargs: int):
        """This thread's argument slots: a uint64 per parameter, and a void* array
        pointing at them whose address goes to cuLaunchKernel."""
        ensure_context()
        n = self.num_params if self.num_params is not None else nargs
        slots = (ctypes.c_uint64 * n)()
        base = ctypes.addressof(slots)
        params = (ctypes.c_void_p * n)(*[base + 8 * i for i in range(n)])
        addr = ctypes.addressof(params) if n else 0
        state = (slots, addr, params)
        self._tls.state = state
        return state

    def launch(self, grid: int, block: int, pointers: Sequence[int], stream: int = 0,
               shared_bytes: int = 0) -> None:
        """Launch on `grid` blocks of `block` threads (1-D) with the given device
        pointers (ints) on `stream`, with `shared_bytes` of dynamic shared memory."""
        try:
            slots, addr, _ = self._tls.state
        except AttributeError:
            slots, addr, _ = self._thread_state(len(pointers))
        try:
            slots[:] = pointers
        except (ValueError, TypeError) as exc:
            raise ArgumentError(f"kernel {self.name} takes {len(slots)} pointer arguments; got "
                                f"{len(pointers)} ({exc})") from None
        if self._raw is not None:  # a native trampoline to the driver: less marshalling
            err = self._raw(self._raw_handle, grid, block, shared_bytes, stream, addr)
            if err:
                err = cu.CUresult(err)
        else:
            err, = _launch(self._handle, grid, 1, 1, block, 1, 1, shared_bytes, stream, addr, 0)
        if err:
            raise _make_error(err, "cuLaunchKernel", f"kernel {self.name}, grid {grid}, block {block}, "
                                                     f"dynamic shared {shared_bytes} B, stream {stream}")

    def set_max_dynamic_shared(self, nbytes: int) -> None:
        """Allow launches with up to `nbytes` of dynamic shared memory (needed above 48 KiB)."""
        ensure_context()
        _call(cu.cuFuncSetAttribute, self._handle,
              cu.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, int(nbytes),
              detail=f"kernel {self.name}, {nbytes} B")

    def __repr__(self):
        return (f"Function({self.name!r}, params={self.num_params}, regs={self.num_regs}, "
                f"shared={self.shared_bytes} B, local={self.local_bytes} B)")


_launch = cu.cuLaunchKernel if cu is not None else None  # one attribute lookup less per launch
_RAW_LAUNCH: list = []


def _raw_launcher():
    """`launch(func, grid, block, shared, stream, params) -> CUresult`: a native
    trampoline around libcuda's cuLaunchKernel (1-D grid and block), compiled once
    with llvmlite so that ctypes converts 6 arguments instead of 11; None where
    libcuda or a JIT is not available (the cuda-python call is used then)."""
    return _built_once(_RAW_LAUNCH, _build_trampoline)


def _built_once(cache: list, build):
    """`build()` the first time (None where it fails: no libcuda to dlopen, or no
    native JIT; callers then take a slower path), the cached result after."""
    if not cache:
        try:
            cache.append(build())
        except Exception:
            cache.append(None)
    return cache[0]


def _cu_launch_kernel(b, ir):
    """libcuda's cuLaunchKernel as a callee for native code built with `b`."""
    address = ctypes.cast(ctypes.CDLL("libcuda.so.1").cuLaunchKernel, ctypes.c_void_p).value
    i32, ptr = ir.IntType(32), ir.PointerType()
    launch_ty = ir.FunctionType(i32, [ptr, i32, i32, i32, i32, i32, i32, i32, ptr, ptr, ptr])
    return b.inttoptr(ir.Constant(ir.IntType(64), address), launch_ty.as_pointer())


def _jit_address(module, name: str):
    """(engine, address) of the native function `name` of the llvmlite module; the
    code lives as long as the engine."""
    import llvmlite.binding as llvm

    module.triple = llvm.get_process_triple()
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    machine = llvm.Target.from_default_triple().create_target_machine()
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(str(module)), machine)
    engine.finalize_object()
    return engine, engine.get_function_address(name)


def _jit(module, name: str, proto):
    """The native function `name` of the llvmlite module, as a ctypes `proto`."""
    engine, address = _jit_address(module, name)
    fn = proto(address)
    fn._engine = engine  # keep the code alive
    return fn


def _build_trampoline():
    from llvmlite import ir

    i32, ptr = ir.IntType(32), ir.PointerType()
    module = ir.Module("warpweave_launch")
    fn = ir.Function(module, ir.FunctionType(i32, [ptr, i32, i32, i32, ptr, ptr]), "ww_launch")
    b = ir.IRBuilder(fn.append_basic_block())
    f, grid, block, shared, stream, params = fn.args
    one = ir.Constant(i32, 1)
    b.ret(b.call(_cu_launch_kernel(b, ir), [f, grid, one, one, block, one, one, shared, stream, params,
                                            ir.Constant(ptr, None)]))
    u = ctypes.c_uint
    return _jit(module, "ww_launch",
                ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, u, u, u, ctypes.c_void_p, ctypes.c_void_p))


class LaunchSequence:
    """Kernels launched one after another on one stream over a shared table of
    buffer pointers, in one native call: `run(pointers, stream)`, or on the hot path
    `launch_all(*pointers, stream)` with the result checked by `check`.

    `launches` holds (function, grid, block, positions): kernel parameter i is
    `pointers[positions[i]]`. The launcher is a builtin function made from native
    code (`_native_sequence_launcher`): Python calls it like any builtin, with no
    ctypes conversions, and it writes the pointer table on its own stack (so one
    sequence serves any number of threads)."""

    class _Launch(ctypes.Structure):
        _fields_ = [("func", ctypes.c_void_p), ("grid", ctypes.c_uint), ("block", ctypes.c_uint),
                    ("shared", ctypes.c_uint), ("nparams", ctypes.c_uint), ("positions", ctypes.c_void_p)]

    def __init__(self, launches: Sequence[tuple["Function", int, int, Sequence[int]]], table_size: int):
        for fn, grid, block, where in launches:
            if fn.num_params is not None and fn.num_params != len(where):
                raise ArgumentError(f"kernel {fn.name} takes {fn.num_params} pointer arguments; "
                                    f"got {len(where)}")
        self.launches = [(fn, int(grid), int(block), tuple(where)) for fn, grid, block, where in launches]
        self.table_size = table_size
        self.launch_all = self._native_launcher()

    def _native_launcher(self):
        """The builtin `launch_all(*pointers, stream) -> int` over this sequence's launch
        records (kept alive by it), or None (no libcuda, no JIT, or more pointers
        than the native table holds): `run` then launches kernel by kernel."""
        native = _native_sequence_launcher()
        if native is None or self.table_size > MAX_TABLE or \
                any(len(where) > MAX_TABLE for *_, where in self.launches):
            return None
        positions = [(ctypes.c_uint * max(1, len(where)))(*where) for *_, where in self.launches]
        header = (ctypes.c_uint * 2)(len(self.launches), self.table_size)
        records = (self._Launch * max(1, len(self.launches)))()
        for r, (fn, grid, block, where), pos in zip(records, self.launches, positions):
            r.func, r.grid, r.block, r.shared = fn._raw_handle.value, grid, block, 0
            r.nparams, r.positions = len(where), ctypes.addressof(pos)
        return native(header, records, positions)

    def run(self, pointers: Sequence[int], stream: int = 0) -> None:
        if self.launch_all is None:
            for fn, grid, block, where in self.launches:
                fn.launch(grid, block, [pointers[k] for k in where], stream)
            return
        self.check(self.launch_all(*pointers, stream))

    def check(self, status: int) -> None:
        """Raise for a nonzero status of `launch_all`: -1 for a wrong argument count,
        else (index of the failing launch << 32) | its CUresult."""
        if status == 0:
            return
        if status < 0:
            raise ArgumentError(f"this launch sequence takes {self.table_size} pointers and a stream")
        fn, grid, block, _ = self.launches[status >> 32]
        raise _make_error(cu.CUresult(status & 0xFFFFFFFF), "cuLaunchKernel",
                          f"kernel {fn.name}, grid {grid}, block {block}")


MAX_TABLE = 1024  # pointers (and parameters per kernel) a native launch sequence takes

_NATIVE_SEQUENCE: list = []


def _native_sequence_launcher():
    """`bind(header, records, positions)` -> a builtin `launch_all(*pointers, stream)`
    (see LaunchSequence), or None where libcuda or a JIT is not available."""
    return _built_once(_NATIVE_SEQUENCE, _build_native_sequence_launcher)


class _MethodDef(ctypes.Structure):
    """CPython's PyMethodDef."""
    _fields_ = [("name", ctypes.c_char_p), ("meth", ctypes.c_void_p), ("flags", ctypes.c_int),
                ("doc", ctypes.c_char_p)]


_METH_FASTCALL = 0x80


def _build_native_sequence_launcher():
    """Native code with CPython's fast-call convention, `f(self, args, nargs)`: `self`
    is a tuple (header address, records address, what must outlive the builtin);
    args are the table's pointers and the stream, read with PyLong_AsUnsignedLongLong
    into a stack table; then cuLaunchKernel per record. Returns 0, -1 (wrong argument count), the failing
    launch's (index << 32) | CUresult, or NULL with Python's error set (an argument
    that is no int)."""
    from llvmlite import ir

    i32, i64, ptr = ir.IntType(32), ir.IntType(64), ir.PointerType()
    record = ir.LiteralStructType([ptr, i32, i32, i32, i32, ptr])  # LaunchSequence._Launch
    module = ir.Module("warpweave_launch_all")
    fn = ir.Function(module, ir.FunctionType(ptr, [ptr, ptr, i64]), "ww_launch_all")
    self_, args, nargs = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))

    def api(name, ret, params):
        address = ctypes.cast(getattr(ctypes.pythonapi, name), ctypes.c_void_p).value
        return b.inttoptr(ir.Constant(i64, address), ir.FunctionType(ret, params).as_pointer())

    as_u64 = api("PyLong_AsUnsignedLongLong", i64, [ptr])
    from_i64 = api("PyLong_FromLongLong", ptr, [i64])
    err_occurred = api("PyErr_Occurred", ptr, [])
    item = api("PyTuple_GetItem", ptr, [ptr, i64])
    launch = _cu_launch_kernel(b, ir)
    header = b.inttoptr(b.call(as_u64, [b.call(item, [self_, ir.Constant(i64, 0)])]), ptr)
    records = b.inttoptr(b.call(as_u64, [b.call(item, [self_, ir.Constant(i64, 1)])]), ptr)
    count = b.zext(b.load(header, typ=i32), i64)
    size = b.zext(b.load(b.gep(header, [ir.Constant(i64, 1)], source_etype=i32), typ=i32), i64)
    table = b.alloca(i64, MAX_TABLE)
    params = b.alloca(ptr, MAX_TABLE)
    counters = {name: b.alloca(i64, name=name) for name in ("read", "launch", "params")}

    def ret(value):
        b.ret(b.call(from_i64, [value]))

    def counted_loop(name, stop, body):
        """for (i = 0; i < stop; ++i) body(i), counting in the entry block's slot `name`."""
        counter = counters[name]
        b.store(ir.Constant(i64, 0), counter)
        test, work, after = (fn.append_basic_block(f"{name}.{x}") for x in ("test", "body", "end"))
        b.branch(test)
        b.position_at_end(test)
        i = b.load(counter, typ=i64)
        b.cbranch(b.icmp_signed("<", i, stop), work, after)
        b.position_at_end(work)
        body(i)
        b.store(b.add(i, ir.Constant(i64, 1)), counter)
        b.branch(test)
        b.position_at_end(after)

    def read_int(index):
        """args[index] as an unsigned 64-bit int; returns NULL where Python raised."""
        v = b.call(as_u64, [b.load(b.gep(args, [index], source_etype=ptr), typ=ptr)])
        maybe, fine = fn.append_basic_block("maybe_error"), fn.append_basic_block("fine")
        b.cbranch(b.icmp_signed("==", v, ir.Constant(i64, -1)), maybe, fine)
        b.position_at_end(maybe)
        raised = fn.append_basic_block("raised")
        b.cbranch(b.icmp_unsigned("!=", b.call(err_occurred, []), ir.Constant(ptr, None)), raised, fine)
        b.position_at_end(raised)
        b.ret(ir.Constant(ptr, None))
        b.position_at_end(fine)
        return v

    bad, good = fn.append_basic_block("bad_count"), fn.append_basic_block("good_count")
    b.cbranch(b.icmp_signed("!=", nargs, b.add(size, ir.Constant(i64, 1))), bad, good)
    b.position_at_end(bad)
    ret(ir.Constant(i64, -1))
    b.position_at_end(good)
    counted_loop("read", size, lambda i: b.store(read_int(i), b.gep(table, [i], source_etype=i64)))
    stream = b.inttoptr(read_int(size), ptr)

    def launch_one(k):
        rec = b.gep(records, [k], source_etype=record)

        def field(index, ty):
            return b.load(b.gep(rec, [ir.Constant(i32, 0), ir.Constant(i32, index)], source_etype=record), typ=ty)

        positions = field(5, ptr)

        def point(i):
            where = b.zext(b.load(b.gep(positions, [i], source_etype=i32), typ=i32), i64)
            b.store(b.gep(table, [where], source_etype=i64), b.gep(params, [i], source_etype=ptr))

        counted_loop("params", b.zext(field(4, i32), i64), point)
        one = ir.Constant(i32, 1)
        err = b.call(launch, [field(0, ptr), field(1, i32), one, one, field(2, i32), one, one, field(3, i32),
                              stream, params, ir.Constant(ptr, None)])
        failed, next_ = fn.append_basic_block("failed"), fn.append_basic_block("next")
        b.cbranch(b.icmp_signed("!=", err, ir.Constant(i32, 0)), failed, next_)
        b.position_at_end(failed)
        ret(b.or_(b.shl(k, ir.Constant(i64, 32)), b.zext(err, i64)))
        b.position_at_end(next_)

    counted_loop("launch", count, launch_one)
    ret(ir.Constant(i64, 0))
    engine, address = _jit_address(module, "ww_launch_all")
    method = _MethodDef(b"launch_all", address, _METH_FASTCALL, None)
    new_function = ctypes.pythonapi.PyCFunction_NewEx
    new_function.restype = ctypes.py_object
    new_function.argtypes = [ctypes.c_void_p, ctypes.py_object, ctypes.py_object]

    def bind(header, records, positions):
        """The builtin over these ctypes arrays; it holds them, the method record and
        the native code (through its `self`), so it may outlive everything else."""
        owned = (engine, method, header, records, positions)
        return new_function(ctypes.addressof(method), (ctypes.addressof(header), ctypes.addressof(records),
                                                       owned), None)

    return bind


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
