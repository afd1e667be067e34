"""`ww.jit` and `ww.build`: the user-facing entry points of the compiler."""
from __future__ import annotations

import functools
import inspect
import sys
import threading
from collections import OrderedDict

import numpy as np

from ..options import Options, compile_key, current
from ..errors import ArgumentError
from ..ir import dtypes as dt
from ..pipeline.autotune import tune_graph
from ..pipeline.compile import compile_graph, resolve_target
from ..program import Program, check_plain_array


class JitFunction:
    """A Python function compiled on first call per (shapes, dtypes, target, and the
    options that change the result); the `jit_cache_size` most recently used programs
    are kept."""

    def __init__(self, fn, target: str | None, tune: bool | dict = False):
        self.fn = fn
        self.target = target
        self.tune = tune  # tune groups the database has no result for, on first compile per shape
        # (specs, target, options' compile key) -> program, least recently used first
        self._programs: OrderedDict[tuple, Program] = OrderedDict()
        self._fast: dict[tuple, Program] = {}  # (requested target, options, (shape, dtype) per arg) -> program
        self._last: tuple | None = None  # (requested target, options, fast_path of the program last called)
        self._lock = threading.Lock()
        functools.update_wrapper(self, fn)

    def _target(self) -> str:
        return resolve_target(self.target or current().target)

    def lower(self, *args) -> Program:
        """Compile for these arguments (without running) and return the Program."""
        from .trace import trace

        self._check_arity(args)
        name = getattr(self.fn, "__name__", "function")
        specs = tuple(spec_of(a, f"argument {k} of {name}") for k, a in enumerate(args))
        opts = current()
        key = (specs, self._target(), compile_key(opts))
        with self._lock:
            program = self._programs.get(key)
            if program is None:
                graph, single = trace(self.fn, specs)
                if self.tune and key[1] in ("cpu", "cuda"):
                    settings = self.tune if isinstance(self.tune, dict) else {}
                    program = tune_graph(graph, single, key[1], name, retune=False, **settings).program
                else:
                    program = compile_graph(graph, single, key[1], name)
                self._programs[key] = program
                while len(self._programs) > opts.jit_cache_size:
                    self._evict(self._programs.popitem(last=False)[1])
            else:
                self._programs.move_to_end(key)
        return program

    def _evict(self, program: Program) -> None:
        for k in [k for k, p in list(self._fast.items()) if p is program]:
            del self._fast[k]

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
        opts = current()
        target = self.target or opts.target
        last = self._last
        if last is not None and last[0] == target and (last[1] is opts or last[1] == opts):
            out = last[2](args)  # the last program's hot path checks shapes and dtypes
            if out is not None:
                return out
        if "torch" in sys.modules and any(_is_torch_cpu(a) for a in args):
            outs = self(*[_torch_to_numpy(a) if _is_torch_cpu(a) else a for a in args])
            return _numpy_to_torch(outs) if isinstance(outs, np.ndarray) else \
                tuple(_numpy_to_torch(o) for o in outs)
        try:  # numpy, PyTorch and CuPy arrays all have .shape and .dtype
            key = (target, opts, *[(a.shape, a.dtype) for a in args])
            program = self._fast.get(key)
        except (AttributeError, TypeError):
            key = program = None
        if program is None:
            program = self.lower(*args)
            if key is not None:
                self._fast[key] = program
        self._last = (target, opts, program.fast_path())
        return program(*args)

    def __repr__(self):
        return f"<warpweave.jit {getattr(self.fn, '__qualname__', self.fn)} target={self.target or 'auto'}>"


def _is_torch_cpu(value) -> bool:
    torch = sys.modules["torch"]
    return isinstance(value, torch.Tensor) and value.device.type == "cpu"


def _torch_to_numpy(t):
    """A numpy view of a PyTorch CPU tensor's memory (bfloat16 through ml_dtypes)."""
    torch = sys.modules["torch"]
    t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(dt.bfloat16.numpy)
    return t.numpy()


def _numpy_to_torch(a):
    torch = sys.modules["torch"]
    if a.dtype == dt.bfloat16.numpy:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


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


def spec_of(value, what: str = "an argument") -> tuple[tuple[int, ...], dt.DType]:
    """(shape, dtype) of a jit argument — a numpy array or scalar, or a CUDA array
    (PyTorch, CuPy, DeviceArray, anything with the CUDA array interface or DLPack)
    — or an ArgumentError saying what came."""
    if isinstance(value, (np.ndarray, np.generic)):
        check_plain_array(value, what)
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
