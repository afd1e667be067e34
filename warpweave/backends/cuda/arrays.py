"""Device arrays, and using other libraries' CUDA arrays in place.

`DeviceArray` is warpweave's own device array. It exports both protocols:

* DLPack (`__dlpack__` / `__dlpack_device__`): the complete path, bfloat16
  included (`kDLBfloat`). A capsule named "dltensor" (or "dltensor_versioned"
  when the consumer asks for DLPack >= 1.0 through `max_version`) holds a
  `DLManagedTensor` built with ctypes; its deleter drops the reference that
  keeps the array alive. Strides are always given explicitly (in elements).
* `__cuda_array_interface__` version 3: `typestr` is numpy's `dtype.str`;
  `strides` is None when C-contiguous; `stream` is the stream the array was
  last written on (1, the legacy default stream, for warpweave's default
  stream 0), so a consumer orders itself after that work. bfloat16 has no
  standard typestr. We export "<V2", numpy's own spelling for ml_dtypes.bfloat16
  and also what PyTorch (2.11) exports for its bfloat16 tensors: two opaque
  bytes per element. Seen on an H200 with CuPy 14.2: `cupy.asarray` makes a
  "|V2" (void) array with the bytes intact, while `cupy.from_dlpack` makes a
  real bfloat16 array; `torch.as_tensor` rejects "<V2". So bfloat16 consumers
  should use DLPack, which every supported library reads.

`as_cuda_buffer` turns any supported CUDA object (DeviceArray, PyTorch tensor,
CuPy array, CUDA Array Interface, DLPack) into a `CudaBuffer` without copying,
and returns None for host objects (the caller copies those).

Stream convention: stream values are driver handles: 0 is the legacy default
stream (so is 1, `CU_STREAM_LEGACY`), 2 the per-thread default stream.
"""
from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass, field

import numpy as np

from ...errors import ArgumentError, DTypeError
from ...ir import dtypes as dt
from . import driver

# ======================================================================= DLPack
kDLCPU = 1
kDLCUDA = 2
kDLCUDAHost = 3
kDLCUDAManaged = 13

kDLInt = 0
kDLUInt = 1
kDLFloat = 2
kDLBfloat = 4
kDLBool = 6

DLPACK_VERSION = (1, 0)
DLPACK_FLAG_BITMASK_READ_ONLY = 1

# warpweave dtype name -> (DLPack type code, bits)
_DL_CODES = {
    "bool": (kDLBool, 8),
    "int32": (kDLInt, 32),
    "int64": (kDLInt, 64),
    "float16": (kDLFloat, 16),
    "bfloat16": (kDLBfloat, 16),
    "float32": (kDLFloat, 32),
    "float64": (kDLFloat, 64),
}
_DL_DTYPES = {v: dt.BY_NAME[k] for k, v in _DL_CODES.items()}


def dlpack_dtype(d) -> tuple[int, int, int]:
    """(code, bits, lanes) of a warpweave dtype in DLPack."""
    d = dt.dtype(d)
    code, bits = _DL_CODES[d.name]
    return code, bits, 1


def from_dlpack_dtype(code: int, bits: int, lanes: int = 1) -> dt.DType:
    """The warpweave dtype of a DLPack (code, bits, lanes); DTypeError if none."""
    d = _DL_DTYPES.get((int(code), int(bits)))
    if d is None or lanes != 1:
        raise DTypeError(f"DLPack dtype (code={code}, bits={bits}, lanes={lanes}) has no warpweave dtype")
    return d


class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),  # in elements; NULL means C-contiguous
        ("byte_offset", ctypes.c_uint64),
    ]


class DLManagedTensor(ctypes.Structure):
    _fields_ = [
        ("dl_tensor", DLTensor),
        ("manager_ctx", ctypes.c_void_p),
        ("deleter", ctypes.c_void_p),  # void (*)(DLManagedTensor*)
    ]


class DLPackVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class DLManagedTensorVersioned(ctypes.Structure):
    _fields_ = [
        ("version", DLPackVersion),
        ("manager_ctx", ctypes.c_void_p),
        ("deleter", ctypes.c_void_p),  # void (*)(DLManagedTensorVersioned*)
        ("flags", ctypes.c_uint64),
        ("dl_tensor", DLTensor),
    ]


# Capsule names. They must outlive every capsule that uses them: module constants.
_NAME = b"dltensor"
_USED_NAME = b"used_dltensor"
_NAME_V = b"dltensor_versioned"
_USED_NAME_V = b"used_dltensor_versioned"

# Our own prototypes of the capsule API (never mutate the shared ctypes.pythonapi
# attributes, which other libraries configure too). PYFUNCTYPE keeps the GIL and
# raises the Python error a failing call sets.
_api = ctypes.pythonapi
_PyCapsule_New = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)(
    ("PyCapsule_New", _api))
_PyCapsule_GetPointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", _api))
_PyCapsule_SetName = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_char_p)(
    ("PyCapsule_SetName", _api))
_PyCapsule_IsValid = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.py_object, ctypes.c_char_p)(
    ("PyCapsule_IsValid", _api))
# Raw-pointer variants for the capsule destructor: the capsule is being deallocated
# there (refcount 0), so it must not pass through a py_object conversion.
_PyCapsule_IsValid_raw = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p)(
    ("PyCapsule_IsValid", _api))
_PyCapsule_GetPointer_raw = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", _api))

# Exported tensors still alive in some consumer: address of the managed struct ->
# what keeps it and the array valid. The deleter removes the entry.
_EXPORTS: dict[int, "_Export"] = {}


class _Export:
    __slots__ = ("managed", "shape", "strides", "owner")

    def __init__(self, managed, shape, strides, owner):
        self.managed = managed
        self.shape = shape
        self.strides = strides
        self.owner = owner


_DELETER_T = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_DESTRUCTOR_T = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def _release_export(addr) -> None:
    if addr:
        _EXPORTS.pop(addr, None)


@_DELETER_T
def _dl_deleter(addr):
    """DLManagedTensor(Versioned)::deleter: drop the reference to the array."""
    _release_export(addr)


@_DESTRUCTOR_T
def _capsule_destructor(capsule):
    """Capsule destructor: a capsule still named "dltensor" was never consumed,
    so its tensor is ours to delete. A consumer renames it "used_dltensor"."""
    if _PyCapsule_IsValid_raw(capsule, _NAME):
        _release_export(_PyCapsule_GetPointer_raw(capsule, _NAME))


@_DESTRUCTOR_T
def _capsule_destructor_versioned(capsule):
    if _PyCapsule_IsValid_raw(capsule, _NAME_V):
        _release_export(_PyCapsule_GetPointer_raw(capsule, _NAME_V))


_TRAMPOLINE_LOCK = threading.Lock()
_TRAMPOLINES: dict[str, int] | None = None
_TRAMPOLINE_ENGINE = None  # keeps the JIT-compiled trampolines alive for the process


def _build_trampolines() -> dict[str, int]:
    """Native entry points wrapping the Python callbacks above.

    A consumer may run the capsule destructor or the deleter while a Python
    exception is pending (a C consumer that failed and then drops the capsule,
    as numpy does for a dtype it does not know). Python code, including a ctypes
    callback, cannot run correctly with an exception pending, so each trampoline
    takes the GIL, saves the pending exception (PyErr_Fetch), calls the callback,
    and restores it (PyErr_Restore). Built once with llvmlite, which warpweave
    uses anyway; if that fails the bare callbacks are used (then only the
    pending-exception case degrades)."""
    import llvmlite.binding as llvm
    from llvmlite import ir

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    api = ctypes.pythonapi
    symbols = {
        "PyGILState_Ensure": ctypes.cast(api.PyGILState_Ensure, ctypes.c_void_p).value,
        "PyGILState_Release": ctypes.cast(api.PyGILState_Release, ctypes.c_void_p).value,
        "PyErr_Fetch": ctypes.cast(api.PyErr_Fetch, ctypes.c_void_p).value,
        "PyErr_Restore": ctypes.cast(api.PyErr_Restore, ctypes.c_void_p).value,
        "warpweave_dlpack_py_deleter": ctypes.cast(_dl_deleter, ctypes.c_void_p).value,
        "warpweave_dlpack_py_destructor": ctypes.cast(_capsule_destructor, ctypes.c_void_p).value,
        "warpweave_dlpack_py_destructor_v": ctypes.cast(_capsule_destructor_versioned, ctypes.c_void_p).value,
    }
    for name, addr in symbols.items():
        llvm.add_symbol(name, addr)
    ptr, i32, void = ir.PointerType(), ir.IntType(32), ir.VoidType()
    m = ir.Module(name="warpweave_dlpack")
    m.triple = llvm.get_process_triple()
    ensure = ir.Function(m, ir.FunctionType(i32, []), "PyGILState_Ensure")
    release = ir.Function(m, ir.FunctionType(void, [i32]), "PyGILState_Release")
    fetch = ir.Function(m, ir.FunctionType(void, [ptr, ptr, ptr]), "PyErr_Fetch")
    restore = ir.Function(m, ir.FunctionType(void, [ptr, ptr, ptr]), "PyErr_Restore")
    out = {}
    for py_name, c_name in (("warpweave_dlpack_py_deleter", "warpweave_dlpack_deleter"),
                            ("warpweave_dlpack_py_destructor", "warpweave_dlpack_destructor"),
                            ("warpweave_dlpack_py_destructor_v", "warpweave_dlpack_destructor_v")):
        callback = ir.Function(m, ir.FunctionType(void, [ptr]), py_name)
        fn = ir.Function(m, ir.FunctionType(void, [ptr]), c_name)
        b = ir.IRBuilder(fn.append_basic_block())
        slots = [b.alloca(ptr) for _ in range(3)]
        gil = b.call(ensure, [])
        b.call(fetch, slots)
        b.call(callback, [fn.args[0]])
        b.call(restore, [b.load(s) for s in slots])
        b.call(release, [gil])
        b.ret_void()
        out[c_name] = None
    target = llvm.Target.from_triple(m.triple).create_target_machine(jit=True)
    mod = llvm.parse_assembly(str(m))
    mod.verify()
    engine = llvm.create_mcjit_compiler(mod, target)
    engine.finalize_object()
    for c_name in out:
        out[c_name] = engine.get_function_address(c_name)
        if not out[c_name]:
            raise RuntimeError(f"JIT lost {c_name}")
    global _TRAMPOLINE_ENGINE
    _TRAMPOLINE_ENGINE = engine
    return out


def _entry_points() -> tuple[int, int, int]:
    """(deleter, destructor, versioned destructor) addresses to put in capsules."""
    global _TRAMPOLINES
    if _TRAMPOLINES is None:
        with _TRAMPOLINE_LOCK:
            if _TRAMPOLINES is None:
                try:
                    _TRAMPOLINES = _build_trampolines()
                except Exception:  # pragma: no cover - llvmlite without a native JIT
                    _TRAMPOLINES = {}
    t = _TRAMPOLINES
    if t:
        return t["warpweave_dlpack_deleter"], t["warpweave_dlpack_destructor"], t["warpweave_dlpack_destructor_v"]
    return (ctypes.cast(_dl_deleter, ctypes.c_void_p).value,
            ctypes.cast(_capsule_destructor, ctypes.c_void_p).value,
            ctypes.cast(_capsule_destructor_versioned, ctypes.c_void_p).value)


def make_dlpack_capsule(data: int, device: tuple[int, int], shape, strides_elems, dtype, owner,
                        versioned: bool = False, readonly: bool = False):
    """A DLPack capsule over memory at `data` (kept valid by holding `owner` until
    the consumer calls the deleter, or until the capsule dies unconsumed)."""
    ndim = len(shape)
    code, bits, lanes = dlpack_dtype(dtype)
    shape_arr = (ctypes.c_int64 * max(ndim, 1))(*shape)
    strides_arr = (ctypes.c_int64 * max(ndim, 1))(*strides_elems)
    managed = DLManagedTensorVersioned() if versioned else DLManagedTensor()
    t = managed.dl_tensor
    t.data = data or None
    t.device = DLDevice(device[0], device[1])
    t.ndim = ndim
    t.dtype = DLDataType(code, bits, lanes)
    t.shape = ctypes.cast(shape_arr, ctypes.POINTER(ctypes.c_int64))
    t.strides = ctypes.cast(strides_arr, ctypes.POINTER(ctypes.c_int64))
    t.byte_offset = 0
    deleter, destructor, destructor_v = _entry_points()
    managed.manager_ctx = None
    managed.deleter = deleter
    if versioned:
        managed.version = DLPackVersion(*DLPACK_VERSION)
        managed.flags = DLPACK_FLAG_BITMASK_READ_ONLY if readonly else 0
    addr = ctypes.addressof(managed)
    _EXPORTS[addr] = _Export(managed, shape_arr, strides_arr, owner)
    try:
        if versioned:
            return _PyCapsule_New(addr, _NAME_V, destructor_v)
        return _PyCapsule_New(addr, _NAME, destructor)
    except BaseException:
        _EXPORTS.pop(addr, None)
        raise


class DLPackImport:
    """A consumed DLPack capsule: the producer's tensor stays valid until this
    object is collected, which calls the producer's deleter once."""

    __slots__ = ("addr", "versioned", "_deleter", "source")

    def __init__(self, addr: int, versioned: bool, deleter: int | None, source):
        self.addr = addr
        self.versioned = versioned
        self._deleter = deleter
        self.source = source  # the producing object, kept for reference

    @property
    def managed(self):
        cls = DLManagedTensorVersioned if self.versioned else DLManagedTensor
        return cls.from_address(self.addr)

    @property
    def tensor(self) -> DLTensor:
        return self.managed.dl_tensor

    @property
    def readonly(self) -> bool:
        return self.versioned and bool(self.managed.flags & DLPACK_FLAG_BITMASK_READ_ONLY)

    def release(self) -> None:
        deleter, self._deleter = self._deleter, None
        if deleter:
            _DELETER_T(deleter)(self.addr)

    def __del__(self):
        try:
            self.release()
        except Exception:
            pass


def consume_dlpack_capsule(capsule, source=None) -> DLPackImport:
    """Take ownership of a DLPack capsule ("dltensor" or "dltensor_versioned"):
    read its pointer and rename it "used_..." so its destructor leaves the tensor
    to us, as the DLPack protocol prescribes for consumers."""
    if _PyCapsule_IsValid(capsule, _NAME_V):
        name, used, versioned = _NAME_V, _USED_NAME_V, True
    elif _PyCapsule_IsValid(capsule, _NAME):
        name, used, versioned = _NAME, _USED_NAME, False
    else:
        raise ArgumentError(f"{type(source).__name__}.__dlpack__ returned {capsule!r}, not an unconsumed "
                            "DLPack capsule")
    addr = _PyCapsule_GetPointer(capsule, name)
    if not addr:
        raise ArgumentError("DLPack capsule holds a NULL pointer")
    if _PyCapsule_SetName(capsule, used) != 0:
        raise ArgumentError("could not mark the DLPack capsule consumed")
    if versioned:
        m = DLManagedTensorVersioned.from_address(addr)
        if m.version.major != DLPACK_VERSION[0]:
            # The ABI of a different major version is unknown: hand it back untouched.
            if m.deleter:
                _DELETER_T(m.deleter)(addr)
            raise ArgumentError(f"DLPack major version {m.version.major} is not supported "
                                f"(warpweave reads {DLPACK_VERSION[0]}.x)")
        deleter = m.deleter
    else:
        deleter = DLManagedTensor.from_address(addr).deleter
    return DLPackImport(addr, versioned, deleter, source)


def _c_strides(shape, itemsize: int) -> tuple[int, ...]:
    strides, acc = [], itemsize
    for n in reversed(shape):
        strides.append(acc)
        acc *= max(int(n), 1)
    return tuple(reversed(strides))


def _is_c_contiguous(shape, strides, itemsize: int) -> bool:
    if any(int(n) == 0 for n in shape):
        return True
    acc = itemsize
    for n, s in zip(reversed(shape), reversed(strides)):
        if n != 1 and s != acc:
            return False
        acc *= n
    return True


# ================================================================ DeviceArray
class DeviceArray:
    """An n-d array in CUDA device memory: owns an `Allocation`, or wraps a
    foreign pointer whose `owner` it keeps alive. `strides` are in bytes."""

    def __init__(self, shape, dtype, *, ptr: int | None = None, strides=None, owner=None,
                 ordinal: int | None = None, stream: int = 0):
        self.shape = tuple(int(n) for n in shape)
        if any(n < 0 for n in self.shape):
            raise ArgumentError(f"negative dimension in shape {self.shape}")
        self.dtype = dt.dtype(dtype).numpy
        self.strides = tuple(int(s) for s in strides) if strides is not None else \
            _c_strides(self.shape, self.dtype.itemsize)
        if len(self.strides) != len(self.shape):
            raise ArgumentError(f"strides {self.strides} do not match shape {self.shape}")
        self.stream = int(stream)  # the stream this array's contents were last written on
        if ptr is None:
            self.allocation = driver.alloc(self.nbytes)
            self.ptr = self.allocation.ptr
            self.owner = self.allocation
            self.ordinal = self.allocation.ordinal
        else:
            self.allocation = None
            self.ptr = int(ptr)
            self.owner = owner
            self.ordinal = driver.current_ordinal() if ordinal is None else int(ordinal)

    @classmethod
    def from_pointer(cls, ptr: int, shape, dtype, strides=None, owner=None, ordinal=None,
                     stream: int = 0) -> "DeviceArray":
        """Wrap device memory someone else owns; `owner` is kept alive with the array."""
        return cls(shape, dtype, ptr=ptr, strides=strides, owner=owner, ordinal=ordinal, stream=stream)

    # --------------------------------------------------------------- properties
    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def ww_dtype(self) -> dt.DType:
        return dt.dtype(self.dtype)

    @property
    def is_c_contiguous(self) -> bool:
        return _is_c_contiguous(self.shape, self.strides, self.itemsize)

    def __repr__(self):
        return (f"DeviceArray(shape={self.shape}, dtype={self.ww_dtype}, ptr=0x{self.ptr:x}, "
                f"device=cuda:{self.ordinal})")

    # ---------------------------------------------------------------- copying
    def numpy(self) -> np.ndarray:
        """A host copy (waits for the copy, and for earlier work on `self.stream`)."""
        out = np.empty(self.shape, dtype=self.dtype)
        if self.size == 0:
            return out
        if self.is_c_contiguous:
            driver.copy_dtoh(out, self.ptr, self.stream)
            return out
        # Strided: copy the byte span the array covers, then gather on the host.
        lo = sum(min(0, (n - 1) * s) for n, s in zip(self.shape, self.strides))
        hi = sum(max(0, (n - 1) * s) for n, s in zip(self.shape, self.strides)) + self.itemsize
        span = np.empty(hi - lo, dtype=np.uint8)
        driver.copy_dtoh(span, self.ptr + lo, self.stream)
        host = np.ndarray(self.shape, dtype=self.dtype, buffer=span, offset=-lo, strides=self.strides)
        out[...] = host
        return out

    def copy(self, stream: int | None = None) -> "DeviceArray":
        """A new C-contiguous device copy (of a C-contiguous array)."""
        if not self.is_c_contiguous:
            raise ArgumentError("DeviceArray.copy needs a C-contiguous array")
        s = self.stream if stream is None else int(stream)
        if s != self.stream:
            driver.stream_wait(s, self.stream)
        out = DeviceArray(self.shape, self.dtype, stream=s)
        driver.copy_dtod(out.ptr, self.ptr, self.nbytes, s)
        return out

    # ------------------------------------------------- CUDA Array Interface v3
    @property
    def __cuda_array_interface__(self) -> dict:
        return {
            "shape": self.shape,
            "typestr": self.dtype.str,  # "<V2" for bfloat16 (see the module docstring)
            "data": (self.ptr, False),
            "version": 3,
            "strides": None if self.is_c_contiguous else self.strides,
            "stream": driver.CU_STREAM_LEGACY if self.stream in (0, driver.CU_STREAM_LEGACY) else self.stream,
        }

    # ------------------------------------------------------------------ DLPack
    def __dlpack_device__(self) -> tuple[int, int]:
        return (kDLCUDA, self.ordinal)

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        """Export as a DLPack capsule. `stream` is the consumer's stream per the
        DLPack spec: None or 1 the legacy default stream, 2 the per-thread default
        stream, -1 no synchronization, another int a CUstream handle; 0 is
        disallowed. The consumer's stream is made to wait for this array's stream."""
        if dl_device is not None and tuple(int(v) for v in dl_device) != (kDLCUDA, self.ordinal):
            raise BufferError(f"DeviceArray on cuda:{self.ordinal} cannot be exported to device {dl_device} "
                              "without a copy across devices")
        if stream is not None and not isinstance(stream, int):
            raise TypeError(f"stream must be an int or None, not {type(stream).__name__}")
        if stream == 0:
            raise ValueError("stream 0 is ambiguous for CUDA in DLPack; use 1 (legacy default) or 2 (per-thread)")
        src = self
        if copy:
            src = self.copy()
        if stream != -1:
            consumer = driver.CU_STREAM_LEGACY if stream is None else stream
            if not driver._same_stream(consumer, src.stream):
                driver.stream_wait(consumer, src.stream)
        itemsize = src.itemsize
        if any(s % itemsize for s in src.strides):
            raise BufferError(f"strides {src.strides} are not multiples of the item size {itemsize}")
        versioned = max_version is not None and int(tuple(max_version)[0]) >= 1
        return make_dlpack_capsule(src.ptr, (kDLCUDA, src.ordinal), src.shape,
                                   tuple(s // itemsize for s in src.strides), src.ww_dtype, src,
                                   versioned=versioned)


def to_device(array, stream: int = 0) -> DeviceArray:
    """A new C-contiguous device array holding a copy of a host array."""
    host = np.asarray(array, order="C")  # keeps 0-d arrays 0-d
    d = dt.dtype(host.dtype)  # DTypeError for a dtype warpweave lacks
    out = DeviceArray(host.shape, d, stream=stream)
    driver.copy_htod(out.ptr, host, stream)
    return out


def empty(shape, dtype, stream: int = 0) -> DeviceArray:
    """A new, uninitialized C-contiguous device array."""
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    return DeviceArray(shape, dtype, stream=stream)


# ============================================================ foreign arrays
@dataclass(frozen=True)
class CudaBuffer:
    """A CUDA array used in place: where it is, its layout, and the stream its
    producer wants later work ordered against (a driver stream handle; None when
    no ordering is needed)."""

    ptr: int
    shape: tuple[int, ...]
    strides_bytes: tuple[int, ...]
    dtype: dt.DType
    stream: int | None
    owner: object  # the original object
    device: int = 0
    readonly: bool = False
    keepalive: object = field(default=None, repr=False, compare=False)  # e.g. a consumed DLPack tensor

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def contiguous(self) -> bool:
        """C-contiguous (strides of size-1 dimensions do not matter)."""
        return _is_c_contiguous(self.shape, self.strides_bytes, self.dtype.itemsize)

    def aligned(self, n: int = 16) -> bool:
        """Whether the data pointer is a multiple of `n` bytes."""
        return self.ptr % n == 0


_TORCH_DTYPES: dict | None = None  # torch dtype -> warpweave dtype name


def _torch_maps():
    global _TORCH_DTYPES
    if _TORCH_DTYPES is None:
        import torch

        _TORCH_DTYPES = {
            torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
            torch.float64: "float64", torch.int32: "int32", torch.int64: "int64", torch.bool: "bool",
        }
    return _TORCH_DTYPES


def _torch_dtype_of(d: dt.DType):
    for k, v in _torch_maps().items():
        if v == d.name:
            return k
    raise DTypeError(f"no torch dtype for {d}")  # pragma: no cover - the map covers every dtype


def _describe(obj) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _check_device(obj, ordinal: int, dtype_text: str) -> None:
    cur = driver.current_ordinal()
    if ordinal != cur:
        raise ArgumentError(f"{_describe(obj)} (dtype {dtype_text}) is on cuda:{ordinal}, but warpweave "
                            f"runs on cuda:{cur}; move it to cuda:{cur}")


def _dtype_or_error(obj, value, device_text: str) -> dt.DType:
    try:
        return dt.dtype(value)
    except DTypeError:
        supported = ", ".join(d.name for d in dt.ALL)
        raise DTypeError(f"{_describe(obj)} on {device_text} has dtype {value}, which warpweave does not "
                         f"support (supported: {supported})") from None


def _from_torch(obj) -> CudaBuffer | None:
    if not obj.is_cuda:
        return None
    import torch

    ordinal = obj.device.index if obj.device.index is not None else torch.cuda.current_device()
    name = _torch_maps().get(obj.dtype)
    if name is None:
        supported = ", ".join(d.name for d in dt.ALL)
        raise DTypeError(f"{_describe(obj)} on cuda:{ordinal} has dtype {obj.dtype}, which warpweave does "
                         f"not support (supported: {supported})")
    d = dt.BY_NAME[name]
    _check_device(obj, ordinal, str(obj.dtype))
    es = obj.element_size()
    strides = tuple(int(s) * es for s in obj.stride())
    stream = int(torch.cuda.current_stream(obj.device).cuda_stream)
    return CudaBuffer(int(obj.data_ptr()), tuple(int(n) for n in obj.shape), strides, d, stream, obj, ordinal)


def _from_cupy(obj) -> CudaBuffer | None:
    import cupy

    ordinal = int(obj.device.id)
    d = _dtype_or_error(obj, obj.dtype, f"cuda:{ordinal}")
    _check_device(obj, ordinal, str(obj.dtype))
    stream = int(cupy.cuda.get_current_stream().ptr)
    return CudaBuffer(int(obj.data.ptr), tuple(int(n) for n in obj.shape),
                      tuple(int(s) for s in obj.strides), d, stream, obj, ordinal)


def _from_cai(obj, cai: dict) -> CudaBuffer:
    try:
        shape = tuple(int(n) for n in cai["shape"])
        typestr = cai["typestr"]
        ptr, readonly = cai["data"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ArgumentError(f"{_describe(obj)} has a malformed __cuda_array_interface__ ({exc})") from None
    ptr = int(ptr or 0)
    if cai.get("mask") is not None:
        raise ArgumentError(f"{_describe(obj)}: masked CUDA arrays are not supported")
    try:
        np_dtype = np.dtype(typestr)
    except TypeError:
        raise ArgumentError(f"{_describe(obj)} has an unknown typestr {typestr!r}") from None
    d = _dtype_or_error(obj, typestr if np_dtype.kind == "V" else np_dtype, "a CUDA device")
    strides = cai.get("strides")
    strides = _c_strides(shape, d.itemsize) if strides is None else tuple(int(s) for s in strides)
    if "stream" in cai and cai["stream"] is not None:
        stream = int(cai["stream"])
        if stream == 0:
            raise ArgumentError(f"{_describe(obj)}: stream 0 is disallowed by the CUDA Array Interface")
    else:
        stream = None
    ordinal = driver.pointer_ordinal(ptr) if ptr else driver.current_ordinal()
    _check_device(obj, ordinal, typestr)
    return CudaBuffer(ptr, shape, strides, d, stream, obj, ordinal, bool(readonly))


def _from_dlpack(obj, consumer_stream: int | None) -> CudaBuffer | None:
    dev_type, dev_id = (int(v) for v in obj.__dlpack_device__())
    if dev_type not in (kDLCUDA, kDLCUDAManaged):
        if dev_type in (kDLCPU, kDLCUDAHost):
            return None
        raise ArgumentError(f"{_describe(obj)} is on DLPack device type {dev_type} (id {dev_id}), not CUDA")
    _check_device(obj, dev_id, "see DLPack")
    # DLPack: the consumer names the stream it will use; the producer orders its
    # work before it. 1 is the legacy default stream (our stream 0).
    s = driver.CU_STREAM_LEGACY if consumer_stream in (None, 0) else int(consumer_stream)
    try:
        capsule = obj.__dlpack__(stream=s, max_version=DLPACK_VERSION)
    except TypeError:  # a producer older than DLPack 1.0's max_version keyword
        capsule = obj.__dlpack__(stream=s)
    imp = consume_dlpack_capsule(capsule, obj)
    try:
        t = imp.tensor
        code, bits, lanes = t.dtype.code, t.dtype.bits, t.dtype.lanes
        try:
            d = from_dlpack_dtype(code, bits, lanes)
        except DTypeError:
            raise DTypeError(f"{_describe(obj)} on cuda:{dev_id} has DLPack dtype (code={code}, bits={bits}, "
                             f"lanes={lanes}), which warpweave does not support") from None
        ndim = int(t.ndim)
        shape = tuple(int(t.shape[i]) for i in range(ndim))
        if t.strides:
            strides = tuple(int(t.strides[i]) * d.itemsize for i in range(ndim))
        else:
            strides = _c_strides(shape, d.itemsize)
        ptr = int(t.data or 0) + int(t.byte_offset)
        readonly = imp.readonly
    except BaseException:
        imp.release()
        raise
    return CudaBuffer(ptr, shape, strides, d, None, obj, dev_id, readonly, keepalive=imp)


def as_cuda_buffer(obj, consumer_stream: int | None = None) -> CudaBuffer | None:
    """The CUDA memory behind `obj`, used in place (no copy), or None for host
    objects (numpy arrays, CPU tensors, scalars), which the caller copies.

    Accepts, in order: DeviceArray; PyTorch CUDA tensors (torch is only touched
    when the object comes from torch); CuPy arrays; objects with
    `__cuda_array_interface__`; objects whose `__dlpack__` device is CUDA.
    `consumer_stream` is the stream warpweave will use the buffer on (for
    DLPack producers, which order their own work before it). Raises
    ArgumentError for CUDA objects warpweave cannot use."""
    if isinstance(obj, DeviceArray):
        d = _dtype_or_error(obj, obj.dtype, f"cuda:{obj.ordinal}")
        _check_device(obj, obj.ordinal, str(obj.dtype))
        return CudaBuffer(obj.ptr, obj.shape, obj.strides, d, obj.stream, obj, obj.ordinal)
    if isinstance(obj, (np.ndarray, np.generic, int, float, bool, complex)):
        return None
    module = type(obj).__module__ or ""
    if module.startswith("torch") and hasattr(obj, "data_ptr") and hasattr(obj, "is_cuda"):
        return _from_torch(obj)
    if module.startswith("cupy") and hasattr(obj, "data") and hasattr(obj, "device"):
        return _from_cupy(obj)
    try:
        cai = obj.__cuda_array_interface__
    except AttributeError:
        cai = None
    if cai is not None:
        return _from_cai(obj, cai)
    if hasattr(obj, "__dlpack__") and hasattr(obj, "__dlpack_device__"):
        return _from_dlpack(obj, consumer_stream)
    return None


def allocate_like(template, shape, dtype):
    """A new contiguous device array of the same kind as `template`'s owner
    (a CudaBuffer, or the object itself): a torch tensor on the same device for
    torch inputs, a CuPy array for CuPy (a DeviceArray where CuPy lacks the
    dtype), a DeviceArray otherwise."""
    owner = template.owner if isinstance(template, CudaBuffer) else template
    d = dt.dtype(dtype)
    shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(n) for n in shape)
    module = type(owner).__module__ or ""
    if module.startswith("torch") and hasattr(owner, "data_ptr") and getattr(owner, "is_cuda", False):
        import torch

        return torch.empty(shape, dtype=_torch_dtype_of(d), device=owner.device)
    if module.startswith("cupy") and hasattr(owner, "device"):
        import cupy

        try:
            with cupy.cuda.Device(int(owner.device.id)):
                return cupy.empty(shape, dtype=d.numpy)
        except (TypeError, ValueError):  # a dtype this CuPy does not know (bfloat16)
            pass
    return empty(shape, d)
