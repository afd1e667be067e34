"""`ww.jit` and `ww.build`: the user-facing entry points of the compiler."""
from __future__ import annotations

import functools
import inspect
import threading

import numpy as np

from ..options import Options, current
from ..errors import ArgumentError
from ..ir import dtypes as dt
from ..pipeline.autotune import tune_graph
from ..pipeline.compile import compile_graph, resolve_target
from ..program import Program


class JitFunction:
    """A Python function compiled on first call per (shapes, dtypes, target)."""

    def __init__(self, fn, target: str | None, tune: bool | dict = False):
        self.fn = fn
        self.target = target
        self.tune = tune  # tune groups the database has no result for, on first compile per shape
        self._programs: dict[tuple, Program] = {}
        self._fast: dict[tuple, Program] = {}  # (requested target, (shape, dtype) per arg) -> program
        self._last: tuple | None = None  # (requested target, fast_path of the program last called)
        self._lock = threading.Lock()
        functools.update_wrapper(self, fn)

    def _target(self) -> str:
        return resolve_target(self.target or current().target)

    def lower(self, *args) -> Program:
        """Compile for these arguments (without running) and return the Program."""
        from .trace import trace

        self._check_arity(args)
        specs = tuple(spec_of(a) for a in args)
        key = (specs, self._target())
        with self._lock:
            program = self._programs.get(key)
            if program is None:
                graph, single = trace(self.fn, specs)
                name = getattr(self.fn, "__name__", "program")
                if self.tune and key[1] in ("cpu", "cuda"):
                    settings = self.tune if isinstance(self.tune, dict) else {}
                    program = tune_graph(graph, single, key[1], name, retune=False, **settings).program
                else:
                    program = compile_graph(graph, single, key[1], name)
                self._programs[key] = program
        return program

    def _check_arity(self, args) -> None:
        try:
            sig = inspect.signature(self.fn)
        except (TypeError, ValueError):
            return
        try:
            sig.bind(*args)
        except TypeError as exc:
            name = getattr(self.fn, "__name__", "function")
            raise ArgumentError(f"{name}{sig} was called with {len(args)} arguments: {exc}") from None

    def __call__(self, *args):
        target = self.target or current().target
        last = self._last
        if last is not None and last[0] == target:  # the last program's hot path checks shapes and dtypes
            out = last[1](args)
            if out is not None:
                return out
        try:  # numpy, PyTorch and CuPy arrays all have .shape and .dtype
            key = (target, *[(a.shape, a.dtype) for a in args])
            program = self._fast.get(key)
        except (AttributeError, TypeError):
            key = program = None
        if program is None:
            program = self.lower(*args)
            if key is not None:
                self._fast[key] = program
        self._last = (target, program.fast_path())
        return program(*args)

    def __repr__(self):
        return f"<warpweave.jit {getattr(self.fn, '__qualname__', self.fn)} target={self.target or 'auto'}>"


def jit(fn=None, *, target: str | None = None, tune: bool | dict = False):
    """Compile a numpy-style function: `@ww.jit`, `@ww.jit(target="cpu")` or
    `ww.jit(fn, target=...)`. Targets: "auto" (default), "cpu", "interp", "cuda".
    `tune=True` (or a dict of `ww.tune` settings: budget, strategy, db, ...) tunes, on
    the first call per shape, every group the tuning database has no result for."""
    if target is not None:
        Options(target=target)  # validates the name
    if fn is None:
        return lambda f: JitFunction(f, target, tune)
    return JitFunction(fn, target, tune)


def build(outputs, inputs, target: str | None = None, name: str = "te_program") -> Program:
    """Compile tensor expressions: `outputs` (one or a list) computed from the
    placeholders `inputs`, in argument order."""
    from .te import build_graph

    graph = build_graph(outputs, inputs)
    single = not isinstance(outputs, (list, tuple))
    return compile_graph(graph, single, target or current().target, name)


def spec_of(value) -> tuple[tuple[int, ...], dt.DType]:
    """(shape, dtype) of a jit argument — a numpy array or scalar, or a CUDA array
    (PyTorch, CuPy, DeviceArray, anything with the CUDA array interface or DLPack)
    — or an ArgumentError saying what came."""
    if isinstance(value, (np.ndarray, np.generic)):
        a = np.asarray(value)
        return tuple(int(s) for s in a.shape), dt.dtype(a.dtype)
    if not isinstance(value, (int, float, complex, bool, str, bytes, list, tuple, dict)):
        from ..backends.cuda.arrays import as_cuda_buffer

        b = as_cuda_buffer(value)
        if b is not None:
            return tuple(b.shape), b.dtype
    raise ArgumentError(f"warpweave functions take numpy arrays or CUDA arrays, got "
                        f"{type(value).__name__}"
                        + (f" ({value!r}); wrap scalars as np.float32(x) or np.asarray(x)"
                           if isinstance(value, (int, float, bool)) else ""))
