"""The host BLAS that numpy uses, for `call.gemm` on the CPU.

`find()` locates numpy's bundled OpenBLAS (or a system one) and resolves its CBLAS
`sgemm`/`dgemm` and OpenBLAS's thread-local thread count; generated code calls
them through the fixed symbol names below, which `register()` binds for MCJIT.
Nothing found (or `WARPWEAVE_BLAS=none`) means None: code generation then
emits its own loop nest.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import os
from dataclasses import dataclass

SGEMM = "warpweave.blas.sgemm"
DGEMM = "warpweave.blas.dgemm"
SET_THREADS = "warpweave.blas.set_threads_local"  # int f(int): sets, returns the previous

# (library file patterns under a package directory, CBLAS symbol suffix, integer bits)
_CANDIDATES = (
    ("scipy_cblas_{}64_", 64), ("cblas_{}64_", 64), ("cblas_{}", 32),
)
_THREADS = ("openblas_set_num_threads_local", "scipy_openblas_set_num_threads_local64_")


@dataclass(frozen=True)
class Blas:
    """A resolved BLAS: its file, the gemm symbols' addresses and integer width, and
    the thread-local thread setter's address (0 when the library has none)."""

    path: str
    symbol: str       # the sgemm symbol, for the cache key and dumps
    int_bits: int     # 32 (LP64) or 64 (ILP64) integer arguments
    sgemm: int
    dgemm: int
    set_threads: int

    @property
    def key(self) -> tuple:
        """What generated code depends on (part of the CPU code cache key)."""
        return (os.path.basename(self.path), self.symbol, self.int_bits, bool(self.set_threads))


def numpy_library_files() -> list[str]:
    """The BLAS libraries that numpy's wheel ships (empty for a numpy built elsewhere)."""
    import numpy as np

    root = os.path.dirname(os.path.dirname(np.__file__))
    return [f for pattern in ("numpy.libs/*blas*", "numpy/.dylibs/*blas*", "scipy_openblas*/lib/*blas*.so*")
            for f in sorted(glob.glob(os.path.join(root, pattern)))]


def _library_files():
    """Candidate BLAS files, numpy's own first; the system's (`find_library`, which runs
    ldconfig) only when those are exhausted."""
    yield from numpy_library_files()
    for name in ("openblas", "cblas", "blas"):
        found = ctypes.util.find_library(name)
        if found:
            yield found


def _address(lib, name: str) -> int:
    try:
        return ctypes.cast(getattr(lib, name), ctypes.c_void_p).value or 0
    except AttributeError:
        return 0


@functools.lru_cache(maxsize=1)
def _find() -> Blas | None:
    for path in _library_files():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for pattern, bits in _CANDIDATES:
            s, d = _address(lib, pattern.format("sgemm")), _address(lib, pattern.format("dgemm"))
            if s and d:
                threads = next((a for a in (_address(lib, n) for n in _THREADS) if a), 0)
                return Blas(path, pattern.format("sgemm"), bits, s, d, threads)
    return None


def find() -> Blas | None:
    """The host BLAS, or None (also when `WARPWEAVE_BLAS=none`)."""
    if os.environ.get("WARPWEAVE_BLAS", "").lower() == "none":
        return None
    return _find()


def register(blas: Blas) -> None:
    """Bind the symbols generated code calls (before MCJIT links an object)."""
    import llvmlite.binding as llvm

    llvm.add_symbol(SGEMM, blas.sgemm)
    llvm.add_symbol(DGEMM, blas.dgemm)
    if blas.set_threads:
        llvm.add_symbol(SET_THREADS, blas.set_threads)
