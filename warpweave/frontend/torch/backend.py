"""The torch.compile backend: AOTAutograd, the split between warpweave and PyTorch,
per-shape specialization, reports.

Dynamo hands `backend` a graph of torch calls; AOTAutograd turns it into core-ATen
forward and backward graphs (or one inference graph) with the decompositions of
`decompositions()`; in each of those, misaligned CUDA matrix products are padded where
that measures faster (`pad_matmuls`), and the graph is split by `partition.split_graph`.
Every compiled ATen graph logs one line on the "warpweave.torch" logger (INFO)
and is handed to whoever is collecting reports (`explain`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import logging
import threading
from dataclasses import dataclass, fields

import torch
from torch._decomp import core_aten_decompositions, remove_decompositions
from torch._dynamo.backends.common import aot_autograd
from torch._functorch.aot_autograd import make_boxed_func
from torch._subclasses.fake_tensor import DataDependentOutputException, FakeTensorMode
from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode, ShapeEnv

from ...errors import OptionError
from ...options import current as current_options
from ...options import options as scoped_options
from .conv_decompositions import TABLE as CONVOLUTIONS
from .conv_layout import channels_last_convolutions
from .convert import CONVERTERS
from .cuda_graphs import GraphedCall, mutated_inputs
from .pad_matmuls import pad_matmuls
from .partition import GraphReport, split_graph

aten = torch.ops.aten
logger = logging.getLogger("warpweave.torch")

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
TARGETS = ("auto", "cpu", "interp", "cuda")


@dataclass(frozen=True)
class BackendOptions:
    """What `torch.compile(..., backend="warpweave", options={...})` accepts.

    target: "auto" (cuda for CUDA tensors, cpu for CPU tensors), "cpu", "interp"
        (the GIR interpreter, for CPU tensors; slow) or "cuda".
    mode: PyTorch's mode names; "max-autotune" and "max-autotune-no-cudagraphs" tune
        every group the tuning database lacks before compiling it (`ww.tune`);
        "reduce-overhead" replays each compiled graph's CUDA work from CUDA graphs
        (`cuda_graphs.GraphedCall`: one recording per input signature).
    dump_dir: write every stage of every warpweave compile there (like WARPWEAVE_DUMP).
    strict: raise warpweave.FallbackError where a failure (an operation that does not
        convert, lower or compile; arguments a program cannot take) would make part of
        the graph run in PyTorch; None (the default) takes `ww.options(strict=...)`,
        else WARPWEAVE_STRICT. Without it, such parts run in PyTorch with one
        FallbackWarning per operation and reason.
    """

    target: str = "auto"
    mode: str = "default"
    dump_dir: str | None = None
    strict: bool | None = None

    @classmethod
    def parse(cls, mode: str | None = None, options: dict | None = None) -> "BackendOptions":
        options = dict(options or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise OptionError(f"unknown warpweave option(s) {unknown}; known: {sorted(known)}")
        if mode is not None:
            if options.get("mode", mode) != mode:
                raise OptionError(f"mode={mode!r} and options={{'mode': {options['mode']!r}}} disagree")
            options["mode"] = mode
        parsed = cls(**options)
        if parsed.target not in TARGETS:
            raise OptionError(f"unknown warpweave target {parsed.target!r}; expected one of {TARGETS}")
        if parsed.mode not in MODES:
            raise OptionError(f"unknown mode {parsed.mode!r}; expected one of {MODES}")
        if parsed.strict is None:
            parsed = dataclasses.replace(parsed, strict=current_options().strict)
        return parsed


def _var_mean(x, dim=None, *, correction=None, keepdim=False):
    return (aten.var.correction(x, dim, correction=correction, keepdim=keepdim),
            aten.mean.dim(x, dim, keepdim))


def _weight_norm_interface_backward(grad_w, saved_v, saved_g, saved_norms, dim):
    """The gradients of `_weight_norm_interface` (w = v · g / ‖v‖ over every axis but
    `dim`) as PyTorch's kernels compute them, in float32 for 16-bit floats; PyTorch
    has a decomposition of the forward, none of the backward (wav2vec2's, HuBERT's
    positional convolutions)."""
    dim %= saved_v.dim()
    axes = [k for k in range(saved_v.dim()) if k != dim]
    acc = torch.float32 if saved_g.dtype in (torch.float16, torch.bfloat16) else saved_g.dtype
    gw, v, g, norms = (t.to(acc) for t in (grad_w, saved_v, saved_g, saved_norms))
    per_dir = (gw * v).sum(axes, keepdim=True)
    grad_v = (g / norms) * (gw - v * (per_dir / (norms * norms)))
    grad_g = per_dir / norms
    return grad_v.to(saved_v.dtype), grad_g.to(saved_g.dtype)


@functools.cache
def _decomposition_table() -> dict:
    from torch._inductor.decomposition import decomps_to_exclude, inductor_decompositions

    table = dict(core_aten_decompositions())
    table.update((op, fn) for op, fn in inductor_decompositions.items()
                 if isinstance(op, torch._ops.OpOverload) and op not in CONVERTERS)
    remove_decompositions(table, [*decomps_to_exclude, aten.flip])  # flip: into prims.rev, not ATen
    table[aten.var_mean.correction] = _var_mean
    table[aten._weight_norm_interface_backward.default] = _weight_norm_interface_backward
    table.update(CONVOLUTIONS)
    return table


def decompositions() -> dict:
    """The decompositions PyTorch's own compiler (Inductor) applies: the core ATen
    ones and its own generic ones (batch norm, group norm, ...), less those it removes
    — among them attention's, whose CPU flash-attention decomposition returns values
    its backward does not expect — and var_mean as var and mean, the weight
    norm's backward, which PyTorch leaves whole, and convolutions where warpweave
    compiles part of them (`conv_decompositions`). What warpweave
    converts whole stays whole (softmax, log-softmax, layer norm, gelu: torch_ops
    converts them into their decompositions itself, and where it cannot, PyTorch
    runs its fused kernels rather than the pieces)."""
    return dict(_decomposition_table())


# ----------------------------------------------------------------------------- reports

_graph_numbers = itertools.count()
_collectors: list[list[GraphReport]] = []
_collectors_lock = threading.Lock()


def _publish(report: GraphReport) -> None:
    logger.info(report.summary())
    with _collectors_lock:
        for reports in _collectors:
            reports.append(report)


@contextlib.contextmanager
def collecting_reports():
    """Inside the block, every compiled graph's report is appended to the yielded list
    (from any thread: backward graphs may compile on autograd's threads)."""
    reports: list[GraphReport] = []
    with _collectors_lock:
        _collectors.append(reports)
    try:
        yield reports
    finally:
        with _collectors_lock:  # by identity: nested collectors hold equal lists
            _collectors[:] = [c for c in _collectors if c is not reports]


# ----------------------------------------------------------------------------- compiling

def _compiler(kind: str, options: BackendOptions):
    def compile_graph(gm: torch.fx.GraphModule, example_inputs):
        name = f"{kind}_{next(_graph_numbers)}"
        scoped = {"dump_dir": options.dump_dir} if options.dump_dir else {}
        if options.mode.startswith("max-autotune"):
            scoped["autotune"] = True
        scope = scoped_options(**scoped) if scoped else contextlib.nullcontext()
        mutated = mutated_inputs(gm)
        with scope:
            if options.target in ("auto", "cuda") and current_options().contractions != "warpweave":
                gm = pad_matmuls(gm)  # products PyTorch runs
            if options.target in ("auto", "cuda") and kind == "inference":
                gm = channels_last_convolutions(gm)
            split, report = split_graph(gm, name, options.target, options.strict)
        _publish(report)
        if options.mode == "reduce-overhead":
            return make_boxed_func(GraphedCall(split.forward, mutated, name))
        return make_boxed_func(split.forward)
    return compile_graph


def _aot(options: BackendOptions):
    return aot_autograd(fw_compiler=_compiler("forward", options),
                        bw_compiler=_compiler("backward", options),
                        inference_compiler=_compiler("inference", options),
                        decompositions=decompositions(), keep_inference_input_mutations=True)


def _is_dynamic(gm: torch.fx.GraphModule, example_inputs) -> bool:
    if any(isinstance(x, torch.SymInt) for x in example_inputs):
        return True
    for n in gm.graph.nodes:
        if n.op == "placeholder":
            v = n.meta.get("example_value")
            if isinstance(v, torch.SymInt) or (isinstance(v, torch.Tensor) and any(
                    isinstance(s, torch.SymInt) for s in (*v.shape, *v.stride()))):
                return True
    return False


def _signature(value):
    if isinstance(value, torch.Tensor):
        return (tuple(value.shape), value.stride(), value.dtype, value.device, value.requires_grad)
    return (type(value), value)


class _PerShape:
    """A graph with symbolic shapes, compiled for each concrete input signature when
    it is first called with it (warpweave programs have static shapes). It is traced on
    fake tensors of those shapes with a shape environment, so that values read from
    tensors (`item`: Dynamo's dynamic Python scalars) stay symbolic, runtime scalar
    arguments of the programs. Where the trace needs such a value (code branches on
    it), that graph is compiled with the values of that call as constants, and keyed
    by them."""

    def __init__(self, gm: torch.fx.GraphModule, options: BackendOptions):
        self.gm = gm
        self.options = options
        self.compiled: dict[tuple, object] = {}
        self.by_value: dict[tuple, tuple[int, ...]] = {}  # signature -> positions of scalars

    def __call__(self, *args):
        key = (torch.is_grad_enabled(), *map(_signature, args))
        scalars = self.by_value.get(key)
        if scalars is not None:
            key = (key, *(args[k].item() for k in scalars))
        fn = self.compiled.get(key)
        if fn is None:
            try:
                fn = _aot(self.options)(self.gm, _static_fakes(args))
            except (GuardOnDataDependentSymNode, DataDependentOutputException):  # it needed a value
                scalars = _read_scalars(self.gm)
                if not scalars:
                    raise
                self.by_value[key] = scalars
                key = (key, *(args[k].item() for k in scalars))
                fn = _aot(self.options)(_with_values(self.gm, scalars, args), _static_fakes(args))
            self.compiled[key] = fn
        return fn(*args)


def _static_fakes(args) -> list:
    fake = FakeTensorMode(shape_env=ShapeEnv())
    return [fake.from_tensor(a, static_shapes=True) if isinstance(a, torch.Tensor) else a for a in args]


def _read_scalars(gm: torch.fx.GraphModule) -> tuple[int, ...]:
    """The positions of the graph inputs whose value the graph reads (`x.item()`)."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    return tuple(k for k, n in enumerate(placeholders)
                 if any(u.op == "call_method" and u.target == "item" for u in n.users))


def _with_values(gm: torch.fx.GraphModule, scalars: tuple[int, ...], args) -> torch.fx.GraphModule:
    """A copy of gm with the values of this call's scalars in place of their `item` calls."""
    graph = torch.fx.Graph()
    graph.output(graph.graph_copy(gm.graph, {}))
    copy = torch.fx.GraphModule(gm, graph)
    placeholders = [n for n in copy.graph.nodes if n.op == "placeholder"]
    for k in scalars:
        for user in list(placeholders[k].users):
            if user.op == "call_method" and user.target == "item":
                user.replace_all_uses_with(args[k].item())
                copy.graph.erase_node(user)
    copy.recompile()
    return copy


def backend(gm: torch.fx.GraphModule, example_inputs, mode: str | None = None,
            options: dict | None = None):
    """The torch.compile backend (see warpweave.torch)."""
    parsed = BackendOptions.parse(mode, options)
    if _is_dynamic(gm, example_inputs):
        logger.info("warpweave: the graph has dynamic shapes; warpweave compiles it once per "
                    "concrete input shape, when first called with it")
        return _PerShape(gm, parsed)
    return _aot(parsed)(gm, example_inputs)
