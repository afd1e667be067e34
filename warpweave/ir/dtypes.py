"""Element types: what warpweave stores in buffers and computes in registers.

Storage types are the user-visible dtypes. Arithmetic on float16 and bfloat16
happens in float32 (`compute_dtype`), as on the GPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import sys

import numpy as np

from ..errors import DTypeError


@dataclass(frozen=True)
class DType:
    """An element type: its name, kind (`f` float, `i` signed int, `b` bool) and width."""

    name: str
    kind: str
    bits: int

    @property
    def itemsize(self) -> int:
        return 1 if self.kind == "b" else self.bits // 8

    @property
    def is_float(self) -> bool:
        return self.kind == "f"

    @property
    def is_int(self) -> bool:
        return self.kind == "i"

    @property
    def is_bool(self) -> bool:
        return self.kind == "b"

    @property
    def numpy(self) -> np.dtype:
        d = _TO_NUMPY.get(self.name)
        return d if d is not None else _bfloat16()

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"ww.{self.name}"


bool_ = DType("bool", "b", 1)
int32 = DType("int32", "i", 32)
int64 = DType("int64", "i", 64)
float16 = DType("float16", "f", 16)
bfloat16 = DType("bfloat16", "f", 16)
float32 = DType("float32", "f", 32)
float64 = DType("float64", "f", 64)

ALL = (bool_, int32, int64, float16, bfloat16, float32, float64)
BY_NAME = {d.name: d for d in ALL}
INDEX = int64  # the type of index variables and offsets

_TO_NUMPY = {
    "bool": np.dtype(np.bool_),
    "int32": np.dtype(np.int32),
    "int64": np.dtype(np.int64),
    "float16": np.dtype(np.float16),
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
}
_FROM_NUMPY = {v: BY_NAME[k] for k, v in _TO_NUMPY.items()}


def _bfloat16() -> np.dtype:
    """numpy's bfloat16 (from ml_dtypes, imported on first use: it takes most of a
    second, and a bfloat16 host array means the caller has imported it already)."""
    import ml_dtypes

    d = _TO_NUMPY["bfloat16"] = np.dtype(ml_dtypes.bfloat16)
    _FROM_NUMPY[d] = bfloat16
    return d


def dtype(value) -> DType:
    """The DType for a DType, a name, a numpy dtype or a numpy scalar type."""
    if isinstance(value, DType):
        return value
    if isinstance(value, str) and value in BY_NAME:
        return BY_NAME[value]
    try:
        np_dtype = np.dtype(value)
    except TypeError:
        np_dtype = None
    if np_dtype is not None and np_dtype not in _FROM_NUMPY and "ml_dtypes" in sys.modules:
        _bfloat16()
    if np_dtype is not None and np_dtype in _FROM_NUMPY:
        return _FROM_NUMPY[np_dtype]
    supported = ", ".join(d.name for d in ALL)
    raise DTypeError(f"unsupported dtype {value!r}; warpweave supports {supported}")


def compute_dtype(d: DType) -> DType:
    """The type arithmetic on `d` is carried out in: float32 for the 16-bit floats."""
    return float32 if d in (float16, bfloat16) else d


def result_type(*operands) -> DType:
    """numpy's promotion of DTypes and Python scalars (weakly typed, as in NEP 50)."""
    args = [o.numpy if isinstance(o, DType) else o for o in operands]
    try:
        return dtype(np.result_type(*args))
    except TypeError as exc:
        names = ", ".join(str(o) for o in operands)
        raise DTypeError(f"no common dtype for {names}: {exc}") from None


def python_scalar_dtype(value) -> DType:
    """The dtype a Python scalar takes when it stands alone (numpy's defaults)."""
    if isinstance(value, (bool, np.bool_)):
        return bool_
    if isinstance(value, (int, np.integer)):
        return int64
    if isinstance(value, (float, np.floating)):
        return float64
    raise DTypeError(f"unsupported scalar {value!r} of type {type(value).__name__}")
