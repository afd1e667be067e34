"""Tensor maps (TMA descriptors) for kernels' by-value parameters.

A `gir.TensorMap` fixes everything but the tensor's address, which is known at a
call: `TensorMapEncoder(tmap, dtype)(pointer)` returns the host address of the
128-byte map the driver encoded (`cuTensorMapEncodeTiled`) for a buffer at `pointer`,
which `cuLaunchKernel` copies into the parameter. Maps are cached by address (a
caching allocator hands the same addresses out again), in two generations so that an
address returned is never freed before the launch that follows it.
"""
from __future__ import annotations

import ctypes
import threading

from ...errors import CudaError
from ...ir import dtypes as dt
from ...ir.gir import TENSOR_MAP_ALIGN, TENSOR_MAP_BYTES, TensorMap

_DATA_TYPES = {"float16": 6, "bfloat16": 9}  # CUtensorMapDataType
_SWIZZLES = {32: 1, 64: 2, 128: 3}  # CUtensorMapSwizzle
_L2_PROMOTION_256B = 3  # CUtensorMapL2promotion
_GENERATION = 256  # maps a generation of the cache holds
_ENCODE: list = []
_ENCODE_LOCK = threading.Lock()


def _encode_function():
    """libcuda's cuTensorMapEncodeTiled through ctypes (raises CudaError without it)."""
    with _ENCODE_LOCK:
        if not _ENCODE:
            try:
                fn = ctypes.CDLL("libcuda.so.1").cuTensorMapEncodeTiled
            except (OSError, AttributeError) as exc:
                raise CudaError(f"this driver cannot encode tensor maps (TMA): {exc}",
                                call="cuTensorMapEncodeTiled") from None
            u32, u64p, u32p = ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(ctypes.c_uint32)
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.c_void_p, ctypes.c_int, u32, ctypes.c_void_p, u64p, u64p, u32p, u32p,
                           ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int]
            _ENCODE.append(fn)
    return _ENCODE[0]


class TensorMapEncoder:
    """`encoder(pointer)`: the host address of `tmap` encoded for a buffer at `pointer`."""

    def __init__(self, tmap: TensorMap, dtype: dt.DType):
        if dtype.name not in _DATA_TYPES or tmap.swizzle not in _SWIZZLES:
            raise CudaError(f"no tensor map for {dtype} with a {tmap.swizzle}-byte swizzle",
                            call="cuTensorMapEncodeTiled")
        rank = len(tmap.dims)
        self.tmap, self.dtype = tmap, dtype
        self._args = (_DATA_TYPES[dtype.name], rank, (ctypes.c_uint64 * rank)(*tmap.dims),
                      (ctypes.c_uint64 * max(1, rank - 1))(*(s * dtype.itemsize for s in tmap.strides)),
                      (ctypes.c_uint32 * rank)(*tmap.box), (ctypes.c_uint32 * rank)(*([1] * rank)))
        self._offset = tmap.base * dtype.itemsize
        self._maps: dict[int, int] = {}
        self._older: dict[int, int] = {}
        self._storage: list = []
        self._older_storage: list = []
        self._lock = threading.Lock()

    def __call__(self, pointer: int) -> int:
        address = self._maps.get(pointer)
        return address if address is not None else self._encode(pointer)

    def _encode(self, pointer: int) -> int:
        with self._lock:
            if len(self._maps) >= _GENERATION:  # the older generation goes, this one ages
                self._older, self._older_storage = self._maps, self._storage
                self._maps, self._storage = {}, []
            address = self._older.get(pointer)
            if address is None:
                raw = ctypes.create_string_buffer(TENSOR_MAP_BYTES + TENSOR_MAP_ALIGN)
                address = -(-ctypes.addressof(raw) // TENSOR_MAP_ALIGN) * TENSOR_MAP_ALIGN
                data_type, rank, dims, strides, box, ones = self._args
                err = _encode_function()(address, data_type, rank, pointer + self._offset, dims, strides, box,
                                         ones, 0, _SWIZZLES[self.tmap.swizzle], _L2_PROMOTION_256B, 0)
                if err:
                    raise CudaError(f"cuTensorMapEncodeTiled failed (CUresult {err}) for {self.tmap} "
                                    f"({self.dtype}) at address {pointer:#x}", call="cuTensorMapEncodeTiled")
                self._storage.append(raw)
            else:
                self._storage.append(_raw_of(self._older_storage, address))
            self._maps[pointer] = address
            return address


def _raw_of(storage: list, address: int):
    """The buffer of `storage` holding `address`."""
    return next(r for r in storage if ctypes.addressof(r) <= address < ctypes.addressof(r) + ctypes.sizeof(r))
