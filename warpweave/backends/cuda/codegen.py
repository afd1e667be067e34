"""GIR → PTX: the shared LLVM lowering with the `nvptx64-nvidia-cuda` triple.

Grid and block scopes read `%ctaid.x` and `%tid.x`; shuffles are `shfl.sync`,
barriers `bar.sync`; shared allocations are module globals in address space 3 (or
offsets in the dynamic shared memory, above 48 KiB: see `ir.gir`).
Math runs in float32 or float64 from `backends.llvm.mathlib` (float32 exp through
`ex2.approx`): the NVPTX backend has no libm, and asking it for `llvm.sin` and
friends would abort the process, so only a whitelist of intrinsics is ever
emitted. PTX is produced without a GPU; `ptxas` or the driver turns it into
machine code.
"""
from __future__ import annotations

import re
import threading

import llvmlite.binding as llvm
from llvmlite import ir

from ...errors import CompileError, ResourceError, UnsupportedError
from ...ir import dtypes as dt
from ...ir.gir import TMA_LOAD, WGMMA, Kernel, Node, tensor_map_param, tensor_maps
from ..llvm import bulk, mathlib
from ..llvm.codegen import I16, I32, I64, KernelCodegen, Target, mem_type

TRIPLE = "nvptx64-nvidia-cuda"
DEFAULT_ARCH = "sm_90"
PTX_VERSION = "+ptx80"
MAX_GRID_X = 2**31 - 1
DYNAMIC_SHARED = "warpweave_dynamic_shared"
_LOG2E = 1.4426950408889634
_INTRINSICS = {"sqrt": "llvm.sqrt", "abs": "llvm.fabs", "floor": "llvm.floor", "ceil": "llvm.ceil",
               "trunc": "llvm.trunc", "round": "llvm.rint"}

_INIT_LOCK = threading.Lock()
_INITIALIZED = False


def _init_llvm() -> None:
    global _INITIALIZED
    with _INIT_LOCK:
        if not _INITIALIZED:
            llvm.initialize_all_targets()
            llvm.initialize_all_asmprinters()
            _INITIALIZED = True


def check_arch(arch: str) -> str:
    if not re.fullmatch(r"sm_[0-9]{2,3}a?", arch):
        raise UnsupportedError(f"unknown CUDA architecture {arch!r}; expected a name like 'sm_90'")
    return arch


class CudaTarget(Target):
    """Kernels for NVIDIA GPUs through LLVM's NVPTX backend."""

    triple = TRIPLE
    buffer_alignment = 16  # the runtime launches only on 16-byte aligned buffers
    approximate_division = True  # float32 x/y as div.full.f32 (within 2 ulp), not IEEE div.rn
    max_access_bytes = 16  # ld/st.v4.b32 at most: "runs" accesses are split into 16-byte pieces
    contract = True  # a·b + c as fma.rn.f32 (one rounding), as nvcc and Triton do by default
    atomic_adds = True  # a combining store is atom.global.add (red.global.add when unused)

    def __init__(self, arch: str = DEFAULT_ARCH):
        _init_llvm()
        self.arch = check_arch(arch)
        self._shared: dict[tuple[str, str], ir.Value] = {}

    def _intrinsic(self, module: ir.Module, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
        fn = module.globals.get(name)
        return fn if fn is not None else ir.Function(module, ir.FunctionType(ret, args), name)

    def declare(self, module: ir.Module, kernel: Kernel):
        """The kernel's function: a pointer per buffer, then its tensor maps by value."""
        maps = [tensor_map_param(k, m) for k, m in enumerate(tensor_maps(kernel))]
        fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [ir.PointerType()] * len(kernel.params)
                                                 + [bulk.TENSOR_MAP_TYPE] * len(maps)), kernel.name)
        buffers = {}
        for arg, p in zip(fn.args, kernel.params):
            arg.name = p.name
            arg.add_attribute("noalias")
            buffers[p.name] = arg
        for arg, name in zip(fn.args[len(kernel.params):], maps):
            arg.name, buffers[name] = name, arg
        annotations = module.get_named_metadata("nvvm.annotations") if "nvvm.annotations" in \
            module.namedmetadata else module.add_named_metadata("nvvm.annotations")
        annotations.add(module.add_metadata([fn, "kernel", ir.IntType(32)(1)]))
        annotations.add(module.add_metadata([fn, "maxntidx", ir.IntType(32)(kernel.block)]))
        bulk.declare_tensor_maps(module, fn, len(kernel.params))
        return fn, buffers

    def _special_register(self, cg: KernelCodegen, name: str) -> ir.Value:
        fn = self._intrinsic(cg.module, f"llvm.nvvm.read.ptx.sreg.{name}", I32, [])
        return cg.b.zext(cg.b.call(fn, []), I64)

    def emit_grid(self, cg: KernelCodegen, scope: Node, body) -> None:
        if scope.attr("extent") > MAX_GRID_X:
            raise ResourceError(f"kernel {cg.k.name}: a grid of {scope.attr('extent')} blocks "
                                f"exceeds the CUDA limit of {MAX_GRID_X}")
        cg.env[scope.attr("var")] = self._special_register(cg, "ctaid.x")
        body()

    def emit_block(self, cg: KernelCodegen, scope: Node, body) -> None:
        cg.env[scope.attr("var")] = self._special_register(cg, "tid.x")
        body()

    def shared_pointer(self, cg: KernelCodegen, name: str) -> ir.Value:
        """A static array per allocation, or (`Kernel.dynamic_shared_bytes` > 0) its
        offset in the block's dynamic shared memory, an `extern .shared` array."""
        key = (cg.k.name, name)
        if key not in self._shared:
            if cg.k.dynamic_shared_bytes:
                with cg.b.goto_block(cg.entry):  # dominates every use
                    self._shared[key] = cg.b.gep(self._dynamic_base(cg.module, cg.k.shared_align),
                                                 [ir.Constant(I64, cg.k.shared_offsets[name])],
                                                 inbounds=True, source_etype=ir.IntType(8))
                return self._shared[key]
            alloc = cg.k.shared_alloc(name)
            ty = ir.ArrayType(mem_type(alloc.dtype), alloc.size)
            gv = ir.GlobalVariable(cg.module, ty, f"{cg.k.name}.{name}", addrspace=3)
            gv.linkage = "internal"
            gv.align = alloc.align
            gv.initializer = ir.Constant(ty, ir.Undefined)
            gv.type = ir.PointerType(addrspace=3)  # opaque (as printed): accesses of any width
            self._shared[key] = gv
        return self._shared[key]

    @staticmethod
    def _dynamic_base(module: ir.Module, align: int) -> ir.Value:
        """The module's `extern .shared .align A .b8 []`: the dynamic shared memory, at
        the largest alignment a kernel's layout asks."""
        gv = module.globals.get(DYNAMIC_SHARED)
        if gv is None:
            gv = ir.GlobalVariable(module, ir.ArrayType(ir.IntType(8), 0), DYNAMIC_SHARED, addrspace=3)
            gv.linkage = "external"
            gv.align = align
            gv.type = ir.PointerType(addrspace=3)
        gv.align = max(gv.align, align)
        return gv

    def shuffle(self, cg: KernelCodegen, value: ir.Value, mode: str, lane: ir.Value) -> ir.Value:
        b = cg.b
        lane32 = b.trunc(lane, I32)
        ty = value.type

        def shfl(v32: ir.Value) -> ir.Value:
            fn = self._intrinsic(cg.module, f"llvm.nvvm.shfl.sync.{mode}.i32", I32, [I32, I32, I32, I32])
            return b.call(fn, [ir.Constant(I32, -1), v32, lane32, ir.Constant(I32, 31)])

        if isinstance(ty, ir.FloatType):
            return b.bitcast(shfl(b.bitcast(value, I32)), ty)
        if isinstance(ty, ir.HalfType):
            return b.bitcast(b.trunc(shfl(b.zext(b.bitcast(value, I16), I32)), I16), ty)
        if isinstance(ty, ir.IntType) and ty.width <= 32:
            return shfl(value) if ty.width == 32 else b.trunc(shfl(b.zext(value, I32)), ty)
        if isinstance(ty, (ir.DoubleType, ir.IntType)):  # 64 bits: two 32-bit shuffles
            bits = b.bitcast(value, I64) if isinstance(ty, ir.DoubleType) else value
            lo = shfl(b.trunc(bits, I32))
            hi = shfl(b.trunc(b.lshr(bits, ir.Constant(I64, 32)), I32))
            out = b.or_(b.zext(lo, I64), b.shl(b.zext(hi, I64), ir.Constant(I64, 32)))
            return b.bitcast(out, ty) if isinstance(ty, ir.DoubleType) else out
        raise CompileError(f"cannot shuffle a value of type {ty}")

    def global_load(self, cg: KernelCodegen, address: ir.Value, ty: ir.Type, align: int | None,
                    l2_prefetch: int | None) -> ir.Value:
        """`ld.global.nc.L2::<n>B` (inline PTX: LLVM has no prefetch-size qualifier) for
        4-, 8- and 16-byte accesses aligned to their size; a plain load otherwise."""
        nbytes = _bits(ty) // 8
        if l2_prefetch is None or nbytes not in (4, 8, 16) or (align or 1) < nbytes:
            return cg.b.load(address, typ=ty, align=align)
        words = nbytes // 4
        regs = ", ".join(f"${k}" for k in range(words))
        shape = "" if words == 1 else f".v{words}"
        text = f"ld.global.nc.L2::{l2_prefetch}B{shape}.b32 {regs if words == 1 else '{' + regs + '}'}, [${words}];"
        ret = I32 if words == 1 else ir.LiteralStructType([I32] * words)
        global_ptr = ir.PointerType(addrspace=1)
        asm = ir.InlineAsm(ir.FunctionType(ret, [global_ptr]), text, ",".join(["=r"] * words + ["l"]))
        raw = cg.b.call(asm, [cg.b.addrspacecast(address, global_ptr)])
        if words > 1:
            vector = ir.Constant(ir.VectorType(I32, words), ir.Undefined)
            for k in range(words):
                vector = cg.b.insert_element(vector, cg.b.extract_value(raw, k), ir.Constant(I32, k))
            raw = vector
        return cg.b.bitcast(raw, ty)

    def barrier(self, cg: KernelCodegen) -> None:
        fn = self._intrinsic(cg.module, "llvm.nvvm.barrier.cta.sync.aligned.all", ir.VoidType(), [I32])
        cg.b.call(fn, [ir.Constant(I32, 0)])

    def math(self, cg: KernelCodegen, op: str, args, d: dt.DType) -> ir.Value:
        """float32 and float64 math: sqrt, abs and rounding through NVPTX's intrinsics, float32 exp
        through `ex2.approx`, everything else from the mathlib (float64 always)."""
        if d not in (dt.float32, dt.float64):
            raise UnsupportedError(f"{op} on {d} is not available on the cuda target "
                                   "(math functions take float32 or float64 there)")
        b = cg.b
        if op in _INTRINSICS:  # one instruction each (sqrt.rn, abs, cvt.rmi/rpi/rzi/rni)
            return self._elementwise_intrinsic(cg, _INTRINSICS[op], args[0])
        if op == "exp" and d == dt.float32:
            scaled = b.fmul(args[0], cg.vec(ir.Constant(ir.FloatType(), _LOG2E)))
            return self._elementwise_intrinsic(cg, "llvm.nvvm.ex2.approx", scaled, suffix=False)
        if op == "tanh" and d == dt.float32:
            return mathlib.tanh_with(
                b, cg.module, args[0],
                exp2=lambda v: self._elementwise_intrinsic(cg, "llvm.nvvm.ex2.approx", v, suffix=False),
                reciprocal=lambda v: self._elementwise_intrinsic(cg, "llvm.nvvm.rcp.approx.ftz", v,
                                                                 suffix=False))
        if op == "erf" and d == dt.float32:
            return mathlib.erf_with(
                b, cg.module, args[0],
                exp2=lambda v: self._elementwise_intrinsic(cg, "llvm.nvvm.ex2.approx", v, suffix=False))
        if op in mathlib.FUNCTIONS:
            return mathlib.FUNCTIONS[op](b, cg.module, *args)
        raise UnsupportedError(f"no cuda implementation of {op} on {d}")

    def round_to_bfloat16(self, cg: KernelCodegen, f: ir.Value) -> ir.Value:
        """`cvt.rn.bf16x2.f32` (sm_80 and later): two lanes per instruction, packed as
        the 32-bit word they are stored as (odd widths lane by lane, `cvt.rn.bf16.f32`),
        where the integer rounding takes eight instructions per lane."""
        b = cg.b
        one = ir.InlineAsm(ir.FunctionType(I16, [ir.FloatType()]), "cvt.rn.bf16.f32 $0, $1;", "=h,f")
        if not isinstance(f.type, ir.VectorType):
            return b.call(one, [f])
        n = f.type.count
        lanes = [b.extract_element(f, ir.Constant(I32, k)) for k in range(n)]
        if n % 2:
            out = ir.Constant(ir.VectorType(I16, n), ir.Undefined)
            for k, lane in enumerate(lanes):
                out = b.insert_element(out, b.call(one, [lane]), ir.Constant(I32, k))
            return out
        pair = ir.InlineAsm(ir.FunctionType(I32, [ir.FloatType(), ir.FloatType()]),
                            "cvt.rn.bf16x2.f32 $0, $1, $2;", "=r,f,f")  # $1 to the high half
        words = ir.Constant(ir.VectorType(I32, n // 2), ir.Undefined)
        for k in range(n // 2):
            words = b.insert_element(words, b.call(pair, [lanes[2 * k + 1], lanes[2 * k]]), ir.Constant(I32, k))
        return b.bitcast(words, ir.VectorType(I16, n))

    def _elementwise_intrinsic(self, cg: KernelCodegen, name: str, x: ir.Value, suffix: bool = True):
        """A float32 or float64 intrinsic, applied lane by lane to vectors (NVPTX has no
        vector math)."""
        scalar = x.type.element if isinstance(x.type, ir.VectorType) else x.type
        short = {"float": "f32", "double": "f64"}[str(scalar)]
        fn = self._intrinsic(cg.module, f"{name}.{short}" if suffix else f"{name}.f", scalar, [scalar])
        if not isinstance(x.type, ir.VectorType):
            return cg.b.call(fn, [x])
        out = ir.Constant(x.type, ir.Undefined)
        for lane in range(x.type.count):
            i = ir.Constant(I32, lane)
            out = cg.b.insert_element(out, cg.b.call(fn, [cg.b.extract_element(x, i)]), i)
        return out


def _bits(ty: ir.Type) -> int:
    """The width in bits of a scalar or vector LLVM type."""
    if isinstance(ty, ir.VectorType):
        return ty.count * _bits(ty.element)
    if isinstance(ty, ir.IntType):
        return ty.width
    return {ir.HalfType: 16, ir.FloatType: 32, ir.DoubleType: 64}.get(type(ty), 0)


def target_machine(arch: str) -> llvm.TargetMachine:
    _init_llvm()
    return llvm.Target.from_triple(TRIPLE).create_target_machine(cpu=check_arch(arch),
                                                                 features=PTX_VERSION, opt=3)


def generate_module(kernels: list[Kernel], arch: str = DEFAULT_ARCH, name: str = "warpweave") -> ir.Module:
    target = CudaTarget(arch)
    module = ir.Module(name=name)
    module.triple = TRIPLE
    module.data_layout = str(target_machine(arch).target_data)
    for k in kernels:
        if k.target != "gpu":
            raise CompileError(f"kernel {k.name} was scheduled for {k.target}, not the GPU")
        KernelCodegen(k, module, target).generate()
    return module


def module_arch(kernels: list[Kernel], arch: str) -> str:
    """`arch`, or its architecture-specific variant (sm_90 → sm_90a) where a kernel uses
    instructions only that variant has (wgmma)."""
    if arch == "sm_90" and any(n.op == WGMMA for k in kernels for n in k.nodes):
        return "sm_90a"
    if arch != "sm_90a" and any(n.op == WGMMA for k in kernels for n in k.nodes):
        raise UnsupportedError(f"wgmma needs an sm_90 GPU (PTX target sm_90a), not {arch}")
    if int(re.sub(r"\D", "", arch)) < 90 and any(n.op == TMA_LOAD for k in kernels for n in k.nodes):
        raise UnsupportedError(f"bulk tensor copies (TMA) need an sm_90 GPU or newer, not {arch}")
    return arch


def compile_ptx(kernels: list[Kernel], arch: str = DEFAULT_ARCH, name: str = "warpweave") -> tuple[str, str]:
    """(LLVM IR, PTX) for a list of GPU kernels; needs no GPU and no driver. Kernels
    with wgmma are compiled for sm_90a (`module_arch`)."""
    arch = module_arch(kernels, arch)
    module = generate_module(kernels, arch, name)
    ir_text = str(module)
    tm = target_machine(arch)
    try:
        mod = llvm.parse_assembly(ir_text)
        mod.verify()
    except RuntimeError as exc:
        raise CompileError(f"LLVM rejected the generated IR: {exc}") from None
    pb = llvm.create_pass_builder(tm, llvm.PipelineTuningOptions(speed_level=3))
    pb.getModulePassManager().run(mod, pb)
    return ir_text, tm.emit_assembly(mod)
