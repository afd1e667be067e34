"""The CPU backend: GIR → LLVM IR (host triple) → native code, run on a thread pool.

Each kernel becomes `void name(i64 begin, i64 end, ptr noalias buf0, …)`, which
runs grid iterations `[begin, end)`; the runtime splits the grid into chunks that
the calling thread and the pool's threads take in turn (ctypes releases the GIL
during each call).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import llvmlite.binding as llvm
from llvmlite import ir

from ..errors import CompileError
from ..options import parse_count
from ..ir import dtypes as dt
from ..ir.gir import Kernel, Node
from . import blas as host_blas
from .llvm import mathlib
from .llvm.gemm import emit_gemm
from .llvm.codegen import I64, KernelCodegen, Target

_INIT_LOCK = threading.Lock()
_INITIALIZED = False


def _init_llvm() -> None:
    global _INITIALIZED
    with _INIT_LOCK:
        if _INITIALIZED:
            return
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        libm = ctypes.util.find_library("m")
        if libm:
            llvm.load_library_permanently(libm)
        _INITIALIZED = True


_INTRINSICS = {"exp": "exp", "log": "log", "sin": "sin", "cos": "cos", "sqrt": "sqrt", "pow": "pow",
               "abs": "fabs", "tanh": "tanh", "floor": "floor", "ceil": "ceil", "trunc": "trunc", "round": "rint"}
_LIBM = {"erf": {"float": "erff", "double": "erf"}}


def _suffix(ty: ir.Type) -> str:
    if isinstance(ty, ir.VectorType):
        return f"v{ty.count}{_suffix(ty.element)}"
    return {"float": "f32", "double": "f64", "half": "f16"}[str(ty)]


@functools.lru_cache(maxsize=1)
def float32_features() -> mathlib.Features:
    """How the float32 math functions are built for the host: fused multiply-adds where
    it has FMA3, exp's scaling by `llvm.ldexp` where that is one instruction (AVX-512F's
    vscalefps; elsewhere LLVM would call ldexpf per lane)."""
    _init_llvm()
    features = set(llvm.get_host_cpu_features().flatten().split(","))
    return mathlib.Features(contract="+fma" in features, ldexp="+avx512f" in features)


class CpuTarget(Target):
    """Kernels for the host CPU: the grid scope is a loop over `[begin, end)`.

    `math` picks the float64 transcendentals: "libm" (the default) calls the C
    library through LLVM's intrinsics; "mathlib" inlines the same straight-line
    code the GPU runs (`backends.llvm.mathlib`), which is how it is tested here.
    float32 always uses the mathlib, which vectorizes, built with the host's
    `float32_features` (fused multiply-adds, AVX-512's ldexp): exp then runs about as
    fast as a copy of its data, erf and the exact GELU at 1.6 and 2.1 times that
    (benchmarks/RESULTS.md, CPU float32 math).

    `blas`: the host BLAS `call.gemm` nodes call ("auto": `blas.find()`; None: none,
    loops instead)."""

    MATH = ("libm", "mathlib")

    def __init__(self, math: str = "libm", blas: host_blas.Blas | None | str = "auto"):
        if math not in self.MATH:
            raise ValueError(f"math must be one of {self.MATH}, not {math!r}")
        _init_llvm()
        self.triple = llvm.get_process_triple()
        self.math_impl = math
        self.float32 = float32_features()
        self.blas = host_blas.find() if blas == "auto" else blas

    def gemm(self, cg: KernelCodegen, node: Node) -> None:
        emit_gemm(cg, node, self.blas)

    def declare(self, module: ir.Module, kernel: Kernel):
        ptr = ir.PointerType()
        fty = ir.FunctionType(ir.VoidType(), [I64, I64] + [ptr] * len(kernel.params))
        fn = ir.Function(module, fty, kernel.name)
        fn.args[0].name, fn.args[1].name = "begin", "end"
        buffers = {}
        for arg, p in zip(fn.args[2:], kernel.params):
            arg.name = p.name
            arg.add_attribute("noalias")
            buffers[p.name] = arg
        return fn, buffers

    def emit_grid(self, cg: KernelCodegen, scope: Node, body) -> None:
        cg.loop(scope.attr("var"), cg.fn.args[0], cg.fn.args[1], None, body)

    def math(self, cg: KernelCodegen, op: str, args, d: dt.DType) -> ir.Value:
        ty = args[0].type
        inline_double = d == dt.float64 and self.math_impl == "mathlib"
        if op in mathlib.FUNCTIONS and d == dt.float32:
            return mathlib.FUNCTIONS[op](cg.b, cg.module, *args, features=self.float32)
        if op in mathlib.FUNCTIONS and inline_double:
            return mathlib.FUNCTIONS[op](cg.b, cg.module, *args)
        if op in _INTRINSICS:
            name = f"llvm.{_INTRINSICS[op]}.{_suffix(ty)}"
            fn = cg.module.globals.get(name) or ir.Function(
                cg.module, ir.FunctionType(ty, [ty] * len(args)), name)
            return cg.b.call(fn, args)
        if op in _LIBM:
            scalar = ty.element if isinstance(ty, ir.VectorType) else ty
            name = _LIBM[op][str(scalar)]
            fn = cg.module.globals.get(name) or ir.Function(
                cg.module, ir.FunctionType(scalar, [scalar]), name)
            if not isinstance(ty, ir.VectorType):
                return cg.b.call(fn, args)
            out = ir.Constant(ty, ir.Undefined)
            for lane in range(ty.count):
                i = ir.Constant(ir.IntType(32), lane)
                out = cg.b.insert_element(out, cg.b.call(fn, [cg.b.extract_element(args[0], i)]), i)
            return out
        raise CompileError(f"no CPU implementation of {op} for {d}")


@dataclass(frozen=True)
class Run:
    """Consecutive kernels that run whole on the calling thread, called through one
    native entry `name(ptr, …)` that takes the distinct buffers `params` they read
    and write and calls each kernel over its whole grid: one call from Python for
    the run instead of one per kernel."""

    name: str
    kernels: tuple[str, ...]
    params: tuple[str, ...]


def runs_on_caller(grid: int, work: int) -> bool:
    """Whether a launch of a kernel of `grid` steps of `work` element operations runs
    on the calling thread whatever the thread count: one grid step, or too little
    work to share (see `CpuExecutable.launch`)."""
    return grid == 1 or grid * work < CpuExecutable.PARALLEL_MIN_WORK


RUN_MAX_PARAMS = 512  # buffers a run's entry takes (ctypes calls take at most 1024 arguments)


def inline_runs(kernels: list[Kernel], works: list[int]) -> list[Run]:
    """The runs of two or more consecutive kernels that run on the calling thread, each
    over at most `RUN_MAX_PARAMS` buffers."""
    runs, current, params = [], [], {}

    def close():
        if len(current) > 1:
            runs.append(Run(f"{current[0].name}__run", tuple(k.name for k in current), tuple(params)))
        current.clear()
        params.clear()

    for k, work in zip(kernels, works):
        if not runs_on_caller(k.grid, work):
            close()
            continue
        if len(params.keys() | {p.name for p in k.params}) > RUN_MAX_PARAMS:
            close()
        current.append(k)
        params.update(dict.fromkeys(p.name for p in k.params))
    close()
    return runs


WIDE_PARAMS = 1000  # buffers past which a kernel also gets a table entry (ctypes: at most 1024 arguments)


def _table_entry(name: str) -> str:
    return f"{name}__table"


def _emit_table_entry(module: ir.Module, k: Kernel) -> None:
    """`<kernel>__table(begin, end, buffers)`: the kernel called with its buffers read
    from an array of pointers, for kernels too wide for a ctypes call."""
    ptr = ir.PointerType()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [I64, I64, ptr]), _table_entry(k.name))
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    table = fn.args[2]
    args = [b.load(b.gep(table, [ir.Constant(I64, j)], source_etype=ptr), typ=ptr) for j in range(len(k.params))]
    b.call(module.get_global(k.name), [fn.args[0], fn.args[1], *args])
    b.ret_void()


def _emit_run(module: ir.Module, run: Run, kernels: dict[str, Kernel]) -> None:
    """The entry of `run`: each kernel called over its grid, never inlined into it."""
    ptr = ir.PointerType()
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ptr] * len(run.params)), run.name)
    where = dict(zip(run.params, fn.args))
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    for name in run.kernels:
        k = kernels[name]
        args = [ir.Constant(I64, 0), ir.Constant(I64, k.grid)] + [where[p.name] for p in k.params]
        b.call(module.get_global(name), args, attrs=("noinline",))
    b.ret_void()


def generate_module(kernels: list[Kernel], name: str = "warpweave", math: str = "libm",
                    blas: host_blas.Blas | None | str = "auto", runs: tuple[Run, ...] = ()) -> ir.Module:
    """One LLVM module holding a function per kernel (`math`, `blas`: see `CpuTarget`)
    and an entry per run of kernels (`runs`)."""
    target = CpuTarget(math, blas)
    module = ir.Module(name=name)
    module.triple = target.triple
    for k in kernels:
        KernelCodegen(k, module, target).generate()
        if len(k.params) > WIDE_PARAMS:
            _emit_table_entry(module, k)
    by_name = {k.name: k for k in kernels}
    for run in runs:
        _emit_run(module, run, by_name)
    return module


def _target_machine() -> llvm.TargetMachine:
    _init_llvm()
    t = llvm.Target.from_triple(llvm.get_process_triple())
    return t.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                   features=llvm.get_host_cpu_features().flatten(), opt=3,
                                   jit=True)


def optimize(ir_text: str) -> llvm.ModuleRef:
    """Parse, verify and optimize (O3) LLVM IR for the host."""
    _init_llvm()
    try:
        mod = llvm.parse_assembly(ir_text)
        mod.verify()
    except RuntimeError as exc:
        raise CompileError(f"LLVM rejected the generated IR: {exc}") from None
    tm = _target_machine()
    mod.triple = tm.triple
    mod.data_layout = str(tm.target_data)
    pb = llvm.create_pass_builder(tm, llvm.PipelineTuningOptions(speed_level=3))
    pb.getModulePassManager().run(mod, pb)
    return mod


def default_threads() -> int:
    """WARPWEAVE_NUM_THREADS, else the CPU count (asked once: it reads the system)."""
    return _threads(os.environ.get("WARPWEAVE_NUM_THREADS"))


@functools.lru_cache(maxsize=8)
def _threads(env: str | None) -> int:
    return parse_count(env, "WARPWEAVE_NUM_THREADS") if env else max(1, os.cpu_count() or 1)


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=default_threads(), thread_name_prefix="warpweave")
        return _POOL


@dataclass
class CpuFunction:
    name: str
    grid: int
    work: int  # element operations per grid iteration, to decide whether to parallelize
    cfunc: object
    chunks: dict[int, list[tuple[int, int]]] = field(default_factory=dict, repr=False)

    def chunked(self, threads: int) -> list[tuple[int, int]]:
        """The grid's chunks for `threads` threads, `CHUNKS_PER_THREAD` each (made once)."""
        found = self.chunks.get(threads)
        if found is None:
            n = min(self.grid, CHUNKS_PER_THREAD * threads)
            edges = [self.grid * k // n for k in range(n + 1)]
            found = self.chunks[threads] = list(zip(edges[:-1], edges[1:]))
        return found


CHUNKS_PER_THREAD = 4  # chunks per thread: a thread the OS delays leaves its chunks to the others


def host_key() -> tuple:
    """What native code depends on besides the kernels: triple, CPU and its features,
    and the host BLAS that gemm calls link to."""
    _init_llvm()
    found = host_blas.find()
    return (llvm.get_process_triple(), llvm.get_host_cpu_name(),
            llvm.get_host_cpu_features().flatten(), found.key if found else None)


@dataclass(frozen=True)
class CpuCode:
    """A compiled module: its LLVM IR, the optimized IR and the host object file."""

    llvm_ir: str
    optimized_ir: str
    object: bytes

    def to_bytes(self) -> bytes:
        parts = [self.llvm_ir.encode(), self.optimized_ir.encode(), self.object]
        return b"".join(len(p).to_bytes(8, "little") + p for p in parts)

    @classmethod
    def from_bytes(cls, blob: bytes) -> "CpuCode":
        parts, pos = [], 0
        for _ in range(3):
            n = int.from_bytes(blob[pos:pos + 8], "little")
            if pos + 8 + n > len(blob):
                raise CompileError("truncated CPU code")
            parts.append(blob[pos + 8:pos + 8 + n])
            pos += 8 + n
        if pos != len(blob) or not parts[2]:
            raise CompileError("malformed CPU code")
        return cls(parts[0].decode(), parts[1].decode(), parts[2])


def compile_code(kernels: list[Kernel], name: str = "warpweave", math: str = "libm",
                 blas: host_blas.Blas | None | str = "auto", runs: tuple[Run, ...] = ()) -> CpuCode:
    """LLVM IR for the kernels (and the entries of `runs`), optimized and compiled to
    a host object file."""
    llvm_ir = str(generate_module(kernels, name, math, blas, runs))
    mod = optimize(llvm_ir)
    return CpuCode(llvm_ir, str(mod), _target_machine().emit_object(mod))


class CpuExecutable:
    """Native code for a list of kernels (compiled here, or `code` from the cache),
    kept alive with its execution engine."""

    PARALLEL_MIN_WORK = 1 << 15

    def __init__(self, kernels: list[Kernel], works: list[int], name: str = "warpweave",
                 math: str = "libm", code: CpuCode | None = None, runs: tuple[Run, ...] = ()):
        """`code`: compiled for these kernels and `runs` (else compiled here)."""
        code = code or compile_code(kernels, name, math, runs=runs)
        self.llvm_ir, self.optimized_ir = code.llvm_ir, code.optimized_ir
        self._load(code.object, [(k.name, k.grid, work, len(k.params)) for k, work in zip(kernels, works)], runs)

    @classmethod
    def from_object(cls, obj: bytes, functions: list[tuple[str, int, int, int]]) -> "CpuExecutable":
        """Load a host object file (`CpuCode.object`) without its kernels' GIR (a tuning
        worker does): `functions` holds (name, grid, work, parameters) per kernel."""
        self = cls.__new__(cls)
        self.llvm_ir = self.optimized_ir = ""
        self._load(obj, functions)
        return self

    def _load(self, obj: bytes, functions: list[tuple[str, int, int, int]], runs: tuple[Run, ...] = ()) -> None:
        tm = _target_machine()
        found = host_blas.find()
        if found is not None:
            host_blas.register(found)
        empty = llvm.parse_assembly(f'target triple = "{tm.triple}"')
        self._engine = llvm.create_mcjit_compiler(empty, tm)
        self._engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        self._engine.finalize_object()
        self.functions: dict[str, CpuFunction] = {}
        for name, grid, work, params in functions:
            wide = params > WIDE_PARAMS
            addr = self._engine.get_function_address(_table_entry(name) if wide else name)
            if not addr:
                raise CompileError(f"kernel {name} is missing from the compiled module")
            if wide:
                table = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)(addr)
                row = ctypes.c_void_p * params

                def cfunc(begin, end, *pointers, table=table, row=row):
                    table(begin, end, row(*pointers))
            else:
                cfunc = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, *([ctypes.c_void_p] * params))(addr)
            self.functions[name] = CpuFunction(name, grid, work, cfunc)
        self.runs: dict[str, tuple[Run, object]] = {}  # first kernel's name -> (run, its entry)
        for run in runs:
            addr = self._engine.get_function_address(run.name)
            if not addr:
                raise CompileError(f"entry {run.name} is missing from the compiled module")
            proto = ctypes.CFUNCTYPE(None, *([ctypes.c_void_p] * len(run.params)))
            self.runs[run.kernels[0]] = (run, proto(addr))

    def launch(self, name: str, pointers: list[int]) -> None:
        """Run kernel `name` on the buffers at `pointers`: on this thread when it is
        small, else shared: this thread and `threads - 1` pool tasks take chunks from
        one counter until none is left, and pool tasks that have not started by then
        are cancelled (on a busy machine this thread does not wait for a pool thread
        to be scheduled, only for chunks already running)."""
        f = self.functions[name]
        threads = default_threads()
        if threads == 1 or runs_on_caller(f.grid, f.work):
            f.cfunc(0, f.grid, *pointers)
            return
        chunks = f.chunked(threads)
        take = itertools.count().__next__  # atomic under the GIL
        cfunc = f.cfunc

        def share():
            while (k := take()) < len(chunks):
                cfunc(*chunks[k], *pointers)

        helpers = [_pool().submit(share) for _ in range(min(threads, len(chunks)) - 1)]
        share()
        for h in helpers:
            if not h.cancel():
                h.result()
