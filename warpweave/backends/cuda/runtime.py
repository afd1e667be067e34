"""Running compiled programs on the GPU.

A `CudaProgram` holds the PTX of a program's kernels and, once first called, the
loaded module. Calls take CUDA arrays in place (PyTorch and CuPy tensors,
warpweave DeviceArrays, anything with `__cuda_array_interface__` or
`__dlpack__`) and launch on the caller's stream (PyTorch's or CuPy's current
stream), returning outputs of the same kind; numpy inputs are copied in and the
results copied out. Every buffer a kernel sees is 16-byte aligned and
C-contiguous (the code generator relies on it): other inputs are copied first.
"""
from __future__ import annotations

import functools
import sys
import threading
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ...errors import ArgumentError, TargetError
from ...ir import dtypes as dt
from ...ir.gir import Buffer, Kernel, tensor_map_param, tensor_maps
from ...ir.tensor import TensorGraph, row_major_strides
from . import arrays, driver, launch
from .tensor_maps import TensorMapEncoder


@dataclass(frozen=True)
class _Launch:
    name: str
    grid: int
    block: int
    params: tuple[str, ...]
    shared: int  # bytes of dynamic shared memory (`Kernel.dynamic_shared_bytes`)


@functools.cache
def _torch_entry_points(torch) -> tuple:
    """(current device index, raw current stream by device index, empty(shape,
    strides, dtype) on the current device): PyTorch's entry points without argument
    parsing (those Inductor's generated code calls), looked up once; the last two are
    None where this PyTorch lacks them."""
    guards = getattr(getattr(torch._C, "_dynamo", None), "guards", None)
    return (getattr(torch._C, "_cuda_getDevice", torch.cuda.current_device),
            getattr(torch._C, "_cuda_getCurrentRawStream", None), getattr(guards, "_empty_strided_cuda", None))


WORKSPACE_ALIGN = 256  # bytes: each buffer in a workspace starts on a whole cache sector


def _workspace_layout(buffers: list[tuple[str, tuple[int, ...], dt.DType]]) -> tuple[dict[str, int], int]:
    """({name: byte offset}, total bytes) of `buffers` laid end to end in one allocation,
    each `WORKSPACE_ALIGN`-aligned."""
    offsets, end = {}, 0
    for name, shape, d in buffers:
        offsets[name] = end
        nbytes = int(np.prod(shape, dtype=np.int64)) * d.itemsize
        end += -(-nbytes // WORKSPACE_ALIGN) * WORKSPACE_ALIGN
    return offsets, end


def _pointer(obj) -> int:
    """The device address of an array we allocated (torch, CuPy or DeviceArray)."""
    if isinstance(obj, arrays.DeviceArray):
        return obj.ptr
    if hasattr(obj, "data_ptr"):
        return obj.data_ptr()
    return obj.data.ptr


class CudaProgram:
    """The CUDA side of a compiled program: `stages`/`files` for dumps, `run` to call it.

    `load_image()` returns the module image (a cubin, typically from the disk
    cache); it runs on the first call, so compiling needs no GPU."""

    def __init__(self, graph: TensorGraph, kernels: list[tuple[str, Kernel]], temps: list[Buffer],
                 llvm_ir: str, ptx: str, load_image: Callable[[], bytes], single: bool):
        self.graph = graph
        # a kernel's parameters: its buffers, then its tensor maps (by value)
        self.launches = [_Launch(name, k.grid, k.block, tuple(p.name for p in k.params) + tuple(
            tensor_map_param(j, m) for j, m in enumerate(tensor_maps(k))), k.dynamic_shared_bytes)
            for name, k in kernels]
        dtypes = {p.name: p.dtype for _, k in kernels for p in k.params}
        maps = list(dict.fromkeys(m for _, k in kernels for m in tensor_maps(k)))
        self._maps = {tensor_map_param(j, m): maps.index(m) for _, k in kernels
                      for j, m in enumerate(tensor_maps(k))}  # kernel parameter -> program map
        self._encoders = [TensorMapEncoder(m, dtypes[m.buffer]) for m in maps]
        self.stages = {"llvm": llvm_ir, "ptx": ptx}
        self.files = {"llvm.ll": llvm_ir, "module.ptx": ptx}
        self._load_image = load_image
        self._functions: list | None = None
        self._module = None
        self._lock = threading.Lock()
        # Every buffer a call allocates: the graph's tensors that leave a kernel (fused
        # intermediates live in registers or shared memory), then kernels' temporaries.
        used = {p.name for _, k in kernels for p in k.params} | set(graph.outputs)
        self._outputs = [(op.name, tuple(op.shape), op.dtype) for op in graph.compute_ops
                         if op.name in used] + [(t.name, tuple(t.shape), t.dtype) for t in temps]
        self._output_index = {name: k for k, (name, _, _) in enumerate(self._outputs)}
        # The hot path allocates what the program returns one tensor each, and the rest
        # (what passes between its kernels) as one workspace: offset of each, and its size.
        self._workspace, self._workspace_bytes = _workspace_layout(
            [(name, shape, d) for name, shape, d in self._outputs if name not in set(graph.outputs)])
        self._inputs = [(tuple(graph[n].shape), graph[n].dtype) for n in graph.inputs]
        self._launch_sequence: launch.LaunchSequence | None = None
        self.single = single
        if self._inputs:
            self._launcher = self.stages["launcher"] = self.files["launcher.py"] = self._launcher_source(single)

    def _loaded(self) -> list:
        if self._functions is None:
            with self._lock:
                if self._functions is None:
                    if not driver.available():
                        raise TargetError(f"cannot run a cuda program here: {driver.unavailable_reason()} "
                                          "(lowering and dump('ptx') work without a GPU)")
                    driver.ensure_context()
                    self._module = launch.Module(self._load_image())
                    functions = [self._module.function(l.name, len(l.params)) for l in self.launches]
                    for l, fn in zip(self.launches, functions):
                        if l.shared:
                            fn.set_max_dynamic_shared(l.shared)
                    self._functions = functions
        return self._functions

    def run(self, program, args) -> list:
        functions = self._functions or self._loaded()
        program.check_arg_count(args)
        driver.ensure_context()
        buffers: dict[str, int] = {}
        keep: list = []  # everything whose memory the launches use
        template = None
        stream = 0
        host_inputs = []
        for k, (name, a) in enumerate(zip(self.graph.inputs, args)):
            b = arrays.as_cuda_buffer(a)
            if b is None:
                if not isinstance(a, (np.ndarray, np.generic)):
                    raise ArgumentError(f"argument {k} of {program.name} must be a CUDA array or a "
                                        f"numpy array, got {type(a).__name__}")
                h = np.asarray(a, order="C")  # keeps 0-d arrays 0-d
                program.check_arg(k, tuple(h.shape), dt.dtype(h.dtype))
                host_inputs.append((name, h))
                continue
            program.check_arg(k, tuple(b.shape), b.dtype)
            if template is None:
                template, stream = b, (b.stream or 0)
            if not (b.contiguous and b.aligned(16)):
                b = self._dense_copy(b, stream)
            buffers[name] = b.ptr
            keep.append(b)
        for name, h in host_inputs:
            d = arrays.to_device(h, stream)
            buffers[name] = d.ptr
            keep.append(d)
        results = {}
        for name, shape, dtype in self._outputs:
            out = arrays.allocate_like(template, shape, dtype) if template is not None \
                else arrays.empty(shape, dtype, stream)
            results[name] = out
            buffers[name] = _pointer(out)
        table = [buffers[n] for n in self.graph.inputs] + [buffers[n] for n, _, _ in self._outputs]
        table += [encode(buffers[encode.tmap.buffer]) for encode in self._encoders]
        self._sequence(functions).run(table, stream)
        outs = [results[n] for n in self.graph.outputs]
        if template is None:
            return [o.numpy() for o in outs]
        return outs

    def _sequence(self, functions) -> launch.LaunchSequence:
        """Every launch of a call over one pointer table: [inputs..., allocations...]."""
        if self._launch_sequence is None:
            position = {n: k for k, n in enumerate(self.graph.inputs)}
            position.update((name, len(self._inputs) + k) for k, (name, _, _) in enumerate(self._outputs))
            first_map = len(self._inputs) + len(self._outputs)
            position.update((name, launch.BY_REFERENCE | (first_map + k)) for name, k in self._maps.items())
            self._launch_sequence = launch.LaunchSequence(
                [(fn, l.grid, l.block, [position[p] for p in l.params], l.shared)
                 for l, fn in zip(self.launches, functions)],
                first_map + len(self._encoders))
        return self._launch_sequence

    def torch_call(self, layouts: tuple | None = None, out_layouts: tuple | None = None) -> Callable | None:
        """The PyTorch hot path, `call(args)`: the outputs (one, or a tuple) for
        contiguous, 16-byte aligned PyTorch CUDA tensors (or parameters) of the
        compiled shapes and dtypes on the current device — or, where `layouts[k]` is
        (shape, strides), a tensor of that layout for input k, whose memory span the
        program reads (a channels-last activation); None for anything else (the
        general path, `run`, takes those and reports errors). Where
        `out_layouts[k]` is (shape, strides), output k is allocated with that layout,
        a permutation of its computed (row-major) one over the same memory, and
        returned so: no view made per call. It is Python generated for this
        program (dumped as the stage "launcher"), so that a call runs no loops. None
        where torch is not imported, this PyTorch or driver lacks the entry points,
        or an output layout is not a permutation of the computed one."""
        torch = sys.modules.get("torch")
        if torch is None or "launcher" not in self.stages:
            return None
        layouts = layouts if layouts and any(layouts) else None
        allocated = self._allocation_layouts(out_layouts)
        if allocated is None:
            return None
        current_device, raw_stream, empty = _torch_entry_points(torch)
        if raw_stream is None or empty is None:
            return None
        sequence = self._sequence(self._functions or self._loaded())
        if sequence.launch_all is None:
            return None
        namespace = {"PLAIN": (torch.Tensor, torch.nn.Parameter), "launch_all": sequence.launch_all,
                     "check": sequence.check, "ensure_context": driver.ensure_context,
                     "current_device": current_device, "raw_stream": raw_stream, "empty": empty}
        for k, (shape, d) in enumerate(self._inputs):
            layout = layouts[k] if layouts else None
            namespace[f"SHAPE{k}"] = torch.Size(layout[0] if layout else shape)
            namespace[f"DTYPE{k}"], namespace[f"STRIDES{k}"] = arrays._torch_dtype_of(d), layout and tuple(layout[1])
        for k, (name, shape, d) in enumerate(self._outputs):
            shape, strides = allocated.get(name, (shape, row_major_strides(shape)))
            namespace.update({f"OUT{k}_SHAPE": shape, f"OUT{k}_STRIDES": strides,
                              f"OUT{k}_DTYPE": arrays._torch_dtype_of(d)})
        namespace.update(WS_SHAPE=(self._workspace_bytes,), WS_STRIDES=(1,), WS_DTYPE=torch.uint8)
        namespace.update((f"ENCODE{j}", encode) for j, encode in enumerate(self._encoders))
        # the stage shows the launcher made last; each request gets the one for its layouts
        source = self.stages["launcher"] = (self._launcher_source(self.single, layouts) if layouts or allocated
                                            else self._launcher)
        exec(compile(source, "<warpweave launcher>", "exec"), namespace)
        return namespace["call"]

    def _allocation_layouts(self, out_layouts: tuple | None) -> dict | None:
        """{output name: (shape, strides)} of the outputs `out_layouts` asks for in
        another order ({} for none); None where one is not a permutation of its
        computed row-major layout (the strides of size-1 axes aside), or one tensor is
        asked for in two layouts."""
        allocated: dict = {}
        plain = set()
        for name, layout in zip(self.graph.outputs, out_layouts or ()):
            if layout is None:
                plain.add(name)
                continue
            shape, strides = tuple(layout[0]), tuple(layout[1])
            order = sorted(range(len(shape)), key=lambda k: (-strides[k], k))
            computed = tuple(self.graph[name].shape)
            dense = row_major_strides(computed)
            if (tuple(shape[k] for k in order) != computed
                    or any(n > 1 and strides[k] != d for k, n, d in zip(order, computed, dense))
                    or allocated.setdefault(name, (shape, strides)) != (shape, strides)):
                return None
        return None if plain & allocated.keys() else allocated

    def _launcher_source(self, single: bool, layouts: tuple | None = None) -> str:
        """The Python source of `torch_call`'s function (names in capitals and the
        entry points are bound when it is made); `layouts`: see `torch_call`."""
        n_in, n_out = len(self._inputs), len(self._outputs)
        xs = [f"x{k}" for k in range(n_in)]
        same_device = "".join(f" or x{k}.get_device() != index" for k in range(1, n_in))
        ps = [f"p{k}" for k in range(n_in)]
        results = [self._output_index[n] for n in self.graph.outputs]
        returned = f"y{results[0]}" if single else "(" + "".join(f"y{k}, " for k in results) + ")"
        lines = [
            "def call(args):",
            f"    if len(args) != {n_in}:",
            "        return None",
            f"    {', '.join(xs)}, = args",
            *[line for k, x in enumerate(xs) for line in (
                f"    if type({x}) not in PLAIN or {x}.dtype is not DTYPE{k} or {x}.shape != SHAPE{k} or "
                + (f"{x}.stride() != STRIDES{k}:" if layouts and layouts[k] else f"not {x}.is_contiguous():"),
                "        return None")],
            "    index = x0.get_device()  # -1 on the CPU",
            f"    if index < 0{same_device}:",
            "        return None",
            f"    {', '.join(ps)}, = {', '.join(f'{x}.data_ptr()' for x in xs)},",
            f"    if ({' | '.join(ps)}) % 16:",
            "        return None",
            "    ensure_context()",
            "    if current_device() != index:",
            "        return None",
            *[f"    y{k} = empty(OUT{k}_SHAPE, OUT{k}_STRIDES, OUT{k}_DTYPE)" for k in range(n_out)
              if self._outputs[k][0] not in self._workspace],
            *(["    ws = empty(WS_SHAPE, WS_STRIDES, WS_DTYPE)  # what passes between kernels",
               "    w = ws.data_ptr()"] if self._workspace else []),
            f"    status = launch_all({''.join(f'{p}, ' for p in ps)}"
            f"{''.join(self._pointer_source(k) + ', ' for k in range(n_out))}"
            f"{''.join(self._map_source(j, ps) + ', ' for j in range(len(self._encoders)))}raw_stream(index))",
            "    if status:",
            "        check(status)",
            f"    return {returned}",
        ]
        return "\n".join(lines) + "\n"

    def _map_source(self, j: int, inputs: list[str]) -> str:
        """The launcher's expression for tensor map j's host address."""
        name = self._encoders[j].tmap.buffer
        if name in self.graph.inputs:
            return f"ENCODE{j}({inputs[self.graph.inputs.index(name)]})"
        return f"ENCODE{j}({self._pointer_source(self._output_index[name])})"

    def _pointer_source(self, k: int) -> str:
        """The launcher's expression for allocation k's address."""
        offset = self._workspace.get(self._outputs[k][0])
        if offset is None:
            return f"y{k}.data_ptr()"
        return f"w + {offset}" if offset else "w"

    @staticmethod
    def _dense_copy(b: arrays.CudaBuffer, stream: int) -> arrays.CudaBuffer:
        """A C-contiguous, 16-byte aligned copy of a CUDA input."""
        if not b.contiguous:
            owner = b.owner
            if hasattr(owner, "contiguous") and callable(owner.contiguous):  # torch
                dense = owner.contiguous()
            elif (type(owner).__module__ or "").startswith("cupy"):
                import cupy

                dense = cupy.ascontiguousarray(owner)
            else:
                raise ArgumentError(f"a non-contiguous {type(owner).__name__} of shape {b.shape} "
                                    f"(strides {b.strides_bytes} bytes): pass a C-contiguous array")
            b = arrays.as_cuda_buffer(dense)
            if b.aligned(16):
                return b
        copy = arrays.empty(b.shape, b.dtype, stream)
        driver.copy_dtod(copy.ptr, b.ptr, b.nbytes, stream)
        return arrays.as_cuda_buffer(copy)
