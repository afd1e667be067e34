"""Loaded CUDA modules, their kernels and launching them (over `driver`).

The launch hot path (`Function.launch`) makes exactly one cuda-python call: the
argument pointers are written into a per-thread, prebuilt ctypes array of slots
and `cuLaunchKernel` receives the address of a `void**` array pointing at them
(cuda-python takes an int `kernelParams` as that `void**` address). Where libcuda
and a native JIT are at hand, a trampoline compiled with llvmlite makes that call
instead, and a `LaunchSequence` launches several kernels in one native call.
"""
from __future__ import annotations

import ctypes
import threading
import weakref
from typing import Sequence

from ...errors import ArgumentError, CudaError, ResourceError
from ...ir.gir import TENSOR_MAP_BYTES
from .driver import _LOG_BYTES, _call, _log_text, _make_error, _require, cu, device, ensure_context

_ELF_MAGIC = b"\x7fELF"
_FATBIN_MAGIC = (0xBA55ED50).to_bytes(4, "little")


def _is_binary_image(image: bytes) -> bool:
    return image[:4] in (_ELF_MAGIC, _FATBIN_MAGIC)


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
            if size not in (8, TENSOR_MAP_BYTES):
                raise ArgumentError(f"kernel {self.name}: parameter {i} is {size} bytes; warpweave launches "
                                    "kernels whose parameters are pointers and tensor maps")
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
               shared_bytes: int = 0, by_reference: Sequence[int] = ()) -> None:
        """Launch on `grid` blocks of `block` threads (1-D) with the given device
        pointers (ints) on `stream`, with `shared_bytes` of dynamic shared memory;
        parameters listed in `by_reference` are given as the host address of their
        value (a tensor map) instead."""
        try:
            slots, addr, params = self._tls.state
        except AttributeError:
            slots, addr, params = self._thread_state(len(pointers))
        try:
            slots[:] = pointers
        except (ValueError, TypeError) as exc:
            raise ArgumentError(f"kernel {self.name} takes {len(slots)} pointer arguments; got "
                                f"{len(pointers)} ({exc})") from None
        for i in by_reference:
            params[i] = pointers[i]
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
        """Allow launches with up to `nbytes` of dynamic shared memory (needed above
        48 KiB); `ResourceError` where the device gives a block less."""
        ensure_context()
        limit = device().max_shared_per_block_optin
        if self.shared_bytes + nbytes > limit:
            raise ResourceError(f"kernel {self.name} needs {self.shared_bytes + nbytes} B of shared "
                                f"memory per block; {device().name} gives a block at most {limit} B")
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

    `launches` holds (function, grid, block, positions, dynamic shared bytes): kernel
    parameter i is `pointers[positions[i]]`, or, where the position is flagged
    `BY_REFERENCE`, the value at that host address (a 128-byte tensor map). The launcher is a builtin function made from native
    code (`_native_sequence_launcher`): Python calls it like any builtin, with no
    ctypes conversions, and it writes the pointer table on its own stack (so one
    sequence serves any number of threads)."""

    class _Launch(ctypes.Structure):
        _fields_ = [("func", ctypes.c_void_p), ("grid", ctypes.c_uint), ("block", ctypes.c_uint),
                    ("shared", ctypes.c_uint), ("nparams", ctypes.c_uint), ("positions", ctypes.c_void_p)]

    def __init__(self, launches: Sequence[tuple["Function", int, int, Sequence[int], int]], table_size: int):
        for fn, grid, block, where, shared in launches:
            if fn.num_params is not None and fn.num_params != len(where):
                raise ArgumentError(f"kernel {fn.name} takes {fn.num_params} pointer arguments; "
                                    f"got {len(where)}")
        self.launches = [(fn, int(grid), int(block), tuple(where), int(shared))
                         for fn, grid, block, where, shared in launches]
        self.table_size = table_size
        self.launch_all = self._native_launcher()

    def _native_launcher(self):
        """The builtin `launch_all(*pointers, stream) -> int` over this sequence's launch
        records (kept alive by it), or None (no libcuda, no JIT, or more pointers
        than the native table holds): `run` then launches kernel by kernel."""
        native = _native_sequence_launcher()
        if native is None or self.table_size > MAX_TABLE or \
                any(len(where) > MAX_TABLE for *_, where, _ in self.launches):
            return None
        positions = [(ctypes.c_uint * max(1, len(where)))(*where) for *_, where, _ in self.launches]
        header = (ctypes.c_uint * 2)(len(self.launches), self.table_size)
        records = (self._Launch * max(1, len(self.launches)))()
        for r, (fn, grid, block, where, shared), pos in zip(records, self.launches, positions):
            r.func, r.grid, r.block, r.shared = fn._raw_handle.value, grid, block, shared
            r.nparams, r.positions = len(where), ctypes.addressof(pos)
        return native(header, records, positions)

    def run(self, pointers: Sequence[int], stream: int = 0) -> None:
        if self.launch_all is None:
            for fn, grid, block, where, shared in self.launches:
                fn.launch(grid, block, [pointers[k & ~BY_REFERENCE] for k in where], stream, shared,
                          [i for i, k in enumerate(where) if k & BY_REFERENCE])
            return
        self.check(self.launch_all(*pointers, stream))

    def check(self, status: int) -> None:
        """Raise for a nonzero status of `launch_all`: -1 for a wrong argument count,
        else (index of the failing launch << 32) | its CUresult."""
        if status == 0:
            return
        if status < 0:
            raise ArgumentError(f"this launch sequence takes {self.table_size} pointers and a stream")
        fn, grid, block, _, _ = self.launches[status >> 32]
        raise _make_error(cu.CUresult(status & 0xFFFFFFFF), "cuLaunchKernel",
                          f"kernel {fn.name}, grid {grid}, block {block}")


MAX_TABLE = 1024  # pointers (and parameters per kernel) a native launch sequence takes
BY_REFERENCE = 1 << 31  # a position's flag: the table holds the parameter's host address

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
            entry = b.gep(table, [b.and_(where, ir.Constant(i64, BY_REFERENCE - 1))], source_etype=i64)
            by_reference = b.icmp_unsigned("!=", b.and_(where, ir.Constant(i64, BY_REFERENCE)), ir.Constant(i64, 0))
            value = b.select(by_reference, b.inttoptr(b.load(entry, typ=i64), ptr), entry)
            b.store(value, b.gep(params, [i], source_etype=ptr))

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
