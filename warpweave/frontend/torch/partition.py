"""Splitting an ATen graph between warpweave and PyTorch.

`split_graph` asks `torch_ops` which nodes warpweave can compute, groups them with
the FX capability-based partitioner, compiles each group into one warpweave
`Program` and calls it (a `WarpweaveCall`) in its place; everything else stays in the
graph and runs in PyTorch. It also returns a `GraphReport` of what went where.
A failure (a node or group that does not convert, lower or compile; arguments a
program cannot take) leaves that part to PyTorch with one FallbackWarning per
operation kinds and reason, or raises FallbackError in strict mode.

Tensors cross the boundary in place: CUDA tensors go to the cuda target as they
are (on PyTorch's current stream), CPU tensors to the cpu target as numpy views of
the same memory. A non-contiguous input is read through its strides (the program
sees the span of memory it covers); outputs have the layout PyTorch records: a
permuted dense layout is computed in that layout and returned as the same permuted
view, a view of a computed tensor is made as that view of it (aliasing included),
and a layout with gaps is copied into. Nothing is ever copied into overlapping memory.
"""
from __future__ import annotations

import operator
import warnings
from dataclasses import dataclass, field

import ml_dtypes
import numpy as np
import torch
from torch.fx.passes.infra.partitioner import CapabilityBasedPartitioner
from torch.fx.passes.operator_support import OperatorSupportBase
from torch.fx.passes.utils.fuser_utils import fuse_by_partitions

from ...errors import FallbackError, FallbackWarning, UnsupportedError
from ...ir import dtypes as dt
from ...ir.tensor import row_major_strides
from ...pipeline.autotune import compile_program
from ...pipeline.parallel import Job, precompile
from ...program import Program
from ..tensor import Tensor
from ..trace import trace
from . import contractions  # noqa: F401 - registers the matrix-product converters
from .input_updates import batch_input_updates
from .convert import EMPTY_OPS, SYMBOLIC_SCALARS, convert_node, node_unsupported_reason, op_name, ww_dtype

aten = torch.ops.aten

# Operations that compute nothing: a group made only of these stays in PyTorch.
VIEW_OPS = frozenset({
    aten.view.default, aten._unsafe_view.default, aten.reshape.default, aten.unsqueeze.default,
    aten.squeeze.default, aten.squeeze.dim, aten.squeeze.dims, aten.permute.default,
    aten.transpose.int, aten.t.default, aten.expand.default, aten.slice.Tensor, aten.select.int,
    aten.split.Tensor, aten.split_with_sizes.default, aten.unbind.int, aten.alias.default,
    aten.detach.default, aten.clone.default, aten.lift_fresh_copy.default, operator.getitem})
CONSTANT_OPS = frozenset({
    aten.full.default, aten.new_full.default, aten.full_like.default, aten.scalar_tensor.default,
    aten.zeros.default, aten.zeros_like.default, aten.new_zeros.default, aten.ones.default,
    aten.ones_like.default, aten.new_ones.default, aten.arange.default, aten.arange.start,
    aten.arange.start_step, *EMPTY_OPS})
# Views whose results are lists, and their getitems: the partitioner keeps them with
# the group of their producer (a group's inputs and outputs are tensors).
_MULTI_OUTPUT = frozenset({aten.split.Tensor, aten.split_with_sizes.default, aten.unbind.int,
                           operator.getitem})
# Views whose result is always their input's memory reinterpreted (reshape may copy,
# detach changes what autograd sees): a chain of them from a tensor is made at run
# time by one reinterpretation of that tensor (see ViewChain).
_ALIASING_VIEWS = VIEW_OPS - {aten.reshape.default, aten.detach.default, aten.clone.default,
                              aten.lift_fresh_copy.default}
_LIST_VIEWS = _MULTI_OUTPUT - {operator.getitem}
# Views a program can take over from PyTorch: one tensor in, one out.
_ABSORBED_VIEWS = _ALIASING_VIEWS - _MULTI_OUTPUT
# Identities that copy when their input is not contiguous (a clone after a transpose)
# or their result has another layout (a clone into channels-last order): such a copy
# is a kernel warpweave runs, gathering through the input's strides.
_COPIES = frozenset({aten.clone.default})
TARGETS_FOR_DEVICE = {"cpu": ("cpu", "interp"), "cuda": ("cuda",)}


def _computes(node) -> bool:
    """Whether `node` moves or computes data (views and constants do not)."""
    if node.target in _COPIES:
        (x,) = node.all_input_nodes
        meta, out = x.meta.get("val"), node.meta.get("val")
        if not isinstance(meta, torch.Tensor):
            return False
        return not meta.is_contiguous() or (
            isinstance(out, torch.Tensor) and not _same_strides(out.shape, out.stride(), meta.stride()))
    return node.target not in VIEW_OPS | CONSTANT_OPS


# ----------------------------------------------------------------------------- reports

@dataclass
class ProgramReport:
    """One warpweave program in a torch graph: the ATen operations it computes."""

    name: str
    target: str
    ops: list[str]
    kernels: int


@dataclass
class Fallback:
    """An ATen operation that runs in PyTorch, and why."""

    node: str
    op: str
    reason: str


@dataclass
class GraphReport:
    """What happened to one ATen graph (forward, backward or inference)."""

    name: str
    ops: int
    programs: list[ProgramReport] = field(default_factory=list)
    fallbacks: list[Fallback] = field(default_factory=list)
    views_in_torch: int = 0  # views, constants, and groups computing from constants alone

    @property
    def kernels(self) -> int:
        return sum(p.kernels for p in self.programs)

    @property
    def compiled_ops(self) -> int:
        return sum(len(p.ops) for p in self.programs)

    def summary(self) -> str:
        """One line: how much compiled, and which operations fell back."""
        fell = _counted(sorted(f.op for f in self.fallbacks)) or "nothing"
        return (f"warpweave: {self.name}: {self.compiled_ops} of {self.ops} ATen ops compiled into "
                f"{len(self.programs)} programs ({self.kernels} kernels); fell back to PyTorch: {fell}")

    def __str__(self) -> str:
        lines = [self.summary().removeprefix("warpweave: ")]
        for p in self.programs:
            lines.append(f"  program {p.name} ({p.target}, {p.kernels} kernels): {_counted(p.ops)}")
        by_reason: dict[tuple[str, str], list[str]] = {}
        for f in self.fallbacks:
            by_reason.setdefault((f.op, f.reason), []).append(f.node)
        for (op, reason), nodes in by_reason.items():
            lines.append(f"  fell back: {op} x{len(nodes)} ({', '.join(nodes)}): {reason}")
        if self.views_in_torch:
            lines.append(f"  {self.views_in_torch} views, constants and operations on constants alone "
                         "stay in PyTorch, with their producers or consumers")
        return "\n".join(lines)


def _counted(names) -> str:
    """'a x2, b' for ['a', 'b', 'a']: names in order of first appearance, with counts."""
    counts: dict[str, int] = {}
    for n in names:
        counts[n] = counts.get(n, 0) + 1
    return ", ".join(n if k == 1 else f"{n} x{k}" for n, k in counts.items())


_warned: set[tuple[str, str]] = set()


def fall_back(ops: list[str], reason: str, strict: bool, cause: BaseException | None = None,
              where: str = "") -> None:
    """The operations `ops` (of the program or group `where`) run in PyTorch after a
    failure: in strict mode raise FallbackError, else warn (a FallbackWarning, once per
    kind of operations and reason)."""
    kinds = ", ".join(dict.fromkeys(ops))
    what = f"{where} ({kinds})" if where else kinds
    message = f"warpweave: {what} runs in PyTorch: {reason}"
    if strict:
        raise FallbackError(f"{message} (strict mode raises where PyTorch would run it; "
                            "set strict=False or WARPWEAVE_STRICT=0 to fall back)") from cause
    if (kinds, reason) not in _warned:
        _warned.add((kinds, reason))
        warnings.warn(message, FallbackWarning, stacklevel=3)


# ----------------------------------------------------------------------------- layouts

def _same_strides(shape, a, b) -> bool:
    """Strides that address the same elements (those of size-1 axes do not matter)."""
    return all(x == y for n, x, y in zip(shape, a, b) if n > 1)


def _overlaps(shape, strides) -> bool:
    """Whether two elements of the layout share a memory location."""
    extent = 0  # the span of the axes with smaller strides
    for stride, n in sorted((abs(s), n) for n, s in zip(shape, strides) if n > 1):
        if stride <= extent:
            return True
        extent += (n - 1) * stride
    return False


@dataclass(frozen=True)
class _Input:
    """How a program input is read: as it is (contiguous), through its strides, or as a
    0-d tensor made from a Python scalar (a value PyTorch reads from a tensor at run time)."""

    shape: tuple[int, ...]
    strides: tuple[int, ...]
    dtype: dt.DType
    dense: bool
    scalar: torch.dtype | None = None

    @classmethod
    def of(cls, meta) -> "_Input":
        scalar = SYMBOLIC_SCALARS.get(type(meta))
        if scalar is not None:
            return cls((), (), ww_dtype(scalar), True, scalar)
        return cls(tuple(meta.shape), tuple(meta.stride()), ww_dtype(meta.dtype),
                   meta.is_contiguous() or meta.numel() == 0)

    @property
    def span(self) -> int:
        return 1 + sum((n - 1) * s for n, s in zip(self.shape, self.strides))

    @property
    def spec(self):
        return (self.shape if self.dense else (self.span,)), self.dtype

    def view(self, t: Tensor) -> Tensor:
        return t if self.dense else t.as_strided(self.shape, self.strides)

    def prepare(self, x, device: str = "cpu") -> torch.Tensor | None:
        """x as the program reads it; None where its layout cannot be made (the program
        reads an overlapping layout, and x has other strides)."""
        if self.scalar is not None:
            return torch.tensor(x, dtype=self.scalar, device=device)
        if type(x) is not torch.Tensor or x.requires_grad:  # a plain tensor of the same memory
            x = x.detach()
        if self.dense:
            return x if x.is_contiguous() else x.contiguous()
        if not _same_strides(self.shape, x.stride(), self.strides):
            if _overlaps(self.shape, self.strides):
                return None
            x = torch.empty_strided(self.shape, self.strides, dtype=x.dtype, device=x.device).copy_(x)
        return x.as_strided((self.span,), (1,))


@dataclass(frozen=True)
class _Output:
    """How a program output is laid out as PyTorch records it: C-contiguous (`perm` and
    `strides` None); computed as the permutation `perm` of its axes and returned as the
    inverse permuted view; or computed contiguous and copied into its `strides` (a
    layout with gaps)."""

    perm: tuple[int, ...] | None
    strides: tuple[int, ...] | None = None
    returned: tuple | None = None  # (shape, strides) returned where `perm` is not None

    @classmethod
    def of(cls, meta: torch.Tensor) -> "_Output":
        if meta.is_contiguous() or meta.numel() == 0:
            return cls(None)
        perm = tuple(sorted(range(meta.ndim), key=lambda k: (-meta.stride(k), k)))
        shape = [meta.shape[k] for k in perm]
        if _same_strides(shape, [meta.stride(k) for k in perm], row_major_strides(shape)):
            return cls(perm, returned=(tuple(meta.shape), tuple(meta.stride())))
        if _overlaps(meta.shape, meta.stride()):
            raise UnsupportedError(f"an output with the overlapping layout {tuple(meta.stride())} that "
                                   "is not a view of a tensor the program computes")
        return cls(None, tuple(meta.stride()))

    def arrange(self, t: Tensor) -> Tensor:
        return t if self.perm is None else t.transpose(self.perm)

    def finish(self, y: torch.Tensor) -> torch.Tensor:
        if self.strides is not None:
            return torch.empty_strided(y.shape, self.strides, dtype=y.dtype, device=y.device).copy_(y)
        if self.perm is None:
            return y
        inverse = [0] * len(self.perm)
        for k, p in enumerate(self.perm):
            inverse[p] = k
        return y.permute(inverse)


def _reinterpreter():
    """`f(base, shape, strides, offset)`: base's memory as that layout, `offset`
    elements past base's own storage offset (PyTorch's C++ entry point Inductor
    uses where it exists: a quarter of the cost of an ATen view call)."""
    fast = getattr(getattr(getattr(torch._C, "_dynamo", None), "guards", None), "_reinterpret_tensor", None)
    if fast is not None:
        return fast
    return lambda base, shape, strides, offset: base.as_strided(shape, strides, base.storage_offset() + offset)


_reinterpret = _reinterpreter()


def _is_aliasing_view(node) -> bool:
    if not (node.op == "call_function" and node.target in _ALIASING_VIEWS):
        return False
    source = node.args[0] if node.args else None
    if not isinstance(source, torch.fx.Node):
        return False
    if node.target is operator.getitem:  # an element of a split's list (not of a program's tuple)
        return source.op == "call_function" and source.target in _LIST_VIEWS
    return not any(isinstance(a, torch.fx.Node) for a in (*node.args[1:], *node.kwargs.values()))


class ViewChain:
    """A tensor made by view operations only from a tensor `base`: at run time one
    reinterpretation of base's memory with the traced layout or, where base does not
    have its traced layout, the views replayed. FX graphs call it as a function."""

    __name__ = "view"

    def __init__(self, ops: tuple, base_layout: tuple, layout: tuple):
        self.__module__ = "warpweave"  # FX code calls it warpweave_view, warpweave_view_1, ...
        self.ops = ops  # (target, args after the tensor, kwargs), first to last
        self.base_layout = base_layout  # (shape, strides) of base when traced
        self.layout = layout  # (shape, strides, storage offset past base's)

    @classmethod
    def of(cls, node: torch.fx.Node) -> "tuple[torch.fx.Node, ViewChain] | None":
        """(base, chain): the nearest node before `node` that is not an aliasing view,
        and the chain from it to node; None where node is not such a view or a layout
        is unknown."""
        ops, value = [], node.meta.get("val")
        while _is_aliasing_view(node):
            ops.append((node.target, tuple(node.args[1:]), dict(node.kwargs)))
            node = node.args[0]
        base = node.meta.get("val")
        if not ops or not isinstance(base, torch.Tensor) or not isinstance(value, torch.Tensor):
            return None
        return node, cls(tuple(reversed(ops)), (tuple(base.shape), tuple(base.stride())),
                         (tuple(value.shape), tuple(value.stride()),
                          value.storage_offset() - base.storage_offset()))

    def __call__(self, base: torch.Tensor) -> torch.Tensor:
        if base.stride() == self.base_layout[1] and base.shape == self.base_layout[0]:
            return _reinterpret(base, *self.layout)
        for target, args, kwargs in self.ops:
            base = target(base, *args, **kwargs)
        return base


def _plain(x: torch.Tensor) -> torch.Tensor:
    """x as a plain, contiguous tensor of its memory (numpy takes no autograd tensors)."""
    if type(x) is not torch.Tensor or x.requires_grad:
        x = x.detach()
    return x if x.is_contiguous() else x.contiguous()


def _to_numpy(x: torch.Tensor) -> np.ndarray:
    if x.dtype == torch.bfloat16:
        return x.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return x.numpy()


def _from_numpy(a: np.ndarray) -> torch.Tensor:
    if a.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(a)


class WarpweaveCall:
    """Runs one warpweave Program in place of a group of nodes of a torch graph (FX
    graphs call it as a function named after the program). Results that are only views
    of an argument or of a computed tensor are made as such views, with the layout and
    aliasing PyTorch records. Arguments the program cannot take (another dtype or
    device, a layout it cannot read) run the group's nodes in PyTorch instead, or raise
    FallbackError in strict mode."""

    def __init__(self, program: Program, inputs: list[_Input], outputs: list[_Output],
                 results: list[tuple[str, int, ViewChain | None]], single: bool,
                 module: torch.fx.GraphModule, ops: list[str], report: GraphReport | None = None,
                 strict: bool = False):
        self.program = program
        self.inputs = inputs
        self.outputs = outputs  # of the computed tensors, in order
        self.results = results  # ("input" or "output", position, view chain or None) per result
        self.single = single
        self.module = module  # the group's nodes, run in PyTorch where the program cannot run
        self.ops = ops
        self.report = report
        self.strict = strict
        self.__name__, self.__module__ = program.name, "warpweave"  # what FX code calls it
        self._host = program.target != "cuda"
        # The CUDA runtime takes dense tensors as they are (and copies what is not).
        self._device = "cpu" if self._host else "cuda"
        # Dense tensors go to the hot path as they are; the others are made first.
        self._prepared = [k for k, layout in enumerate(inputs) if not layout.dense or layout.scalar is not None]
        self._fast = program.fast_path() if self._host else None
        # Strided tensors of the traced layouts go to a hot path of their own as they are
        # (no view of their span made per call); on CUDA it allocates permuted outputs
        # in their returned layouts (no view made of them either). Made on the first call.
        self._layouts = None
        if self._prepared and all(layout.scalar is None for layout in inputs):
            self._layouts = tuple(None if layout.dense else (layout.shape, layout.strides) for layout in inputs)
        self._out_layouts = None
        if not self._host and any(o.returned for o in outputs) and all(i.scalar is None for i in inputs):
            self._out_layouts = tuple(o.returned for o in outputs)
        self._strided = None
        self._returns_laid_out = False  # whether the strided path returns outputs in their layouts
        self._as_computed = (results == [("output", k, None) for k in range(len(outputs))]
                             and all(o.perm is None and o.strides is None for o in outputs))
        self._fell_back: set[str] = set()

    @property
    def aliases(self) -> dict[int, tuple[int, ViewChain]]:
        """Result position -> (argument position, chain) for the results that view an argument."""
        return {j: (k, chain) for j, (source, k, chain) in enumerate(self.results) if source == "input"}

    def __call__(self, *args):
        try:
            results, laid_out = self._run(args)
        except Exception as exc:  # noqa: BLE001 - whatever the cause, PyTorch can run the group
            return self._fall_back(args, exc)
        if self._as_computed:
            return results[0] if self.single else results
        made = [r if laid_out and layout.returned else layout.finish(r) for layout, r in zip(self.outputs, results)]
        outs = [(args if source == "input" else made)[k] if chain is None
                else chain((args if source == "input" else made)[k]) if source == "input"
                else _reinterpret(made[k], *chain.layout)  # made with its traced layout
                for source, k, chain in self.results]
        return outs[0] if self.single else tuple(outs)

    def _run(self, args) -> tuple[list, bool]:
        """The program's results for `args`, and whether its permuted ones have their
        returned layouts already (else `finish` gives them, as it copies the others)."""
        if self._strided is None and (self._layouts or self._out_layouts):
            laid_out = self._out_layouts and self.program.fast_path(self._layouts, self._out_layouts)
            self._returns_laid_out = laid_out is not None
            self._strided = laid_out or self.program.fast_path(self._layouts)
        if self._strided is not None:
            results = self._strided(args)
            if results is not None:
                return results, self._returns_laid_out
        xs = args
        if self._prepared:
            xs = list(args)
            for k in self._prepared:
                xs[k] = self.inputs[k].prepare(args[k], self._device)
                if xs[k] is None:
                    raise UnsupportedError(
                        f"argument {k} has strides {tuple(args[k].stride())}; the program reads the "
                        f"overlapping layout {self.inputs[k].strides} it was compiled for")
        if self._host:
            results = self._fast(xs)
            if results is not None:
                return results, False
            return [_from_numpy(r) for r in self.program(*(_to_numpy(_plain(x)) for x in xs))], False
        return self.program(*xs), False

    def _fall_back(self, args, exc: Exception):
        reason = f"at run time ({type(exc).__name__}: {exc})"
        kinds = list(dict.fromkeys(self.ops))
        fall_back(kinds, reason, self.strict, exc, f"program {self.__name__}")
        if reason not in self._fell_back and self.report is not None:
            self._fell_back.add(reason)
            self.report.fallbacks.extend(Fallback(self.__name__, op, reason) for op in kinds)
        return self.module(*args)


@dataclass(frozen=True)
class TracedGroup:
    """A group (a graph module of ATen nodes) traced into a tensor graph, and how its
    program's inputs and results map onto the group's placeholders and outputs."""
    graph: object  # TensorGraph
    inputs: list
    outputs: list
    results: list
    single: bool
    sub: torch.fx.GraphModule
    ops: list[str]

    def call(self, target: str, name: str, report: GraphReport | None = None,
             strict: bool = False) -> WarpweaveCall:
        """The group's program compiled for `target`, as a call that replaces it."""
        return WarpweaveCall(compile_program(self.graph, False, target, name), self.inputs, self.outputs,
                             self.results, self.single, self.sub, self.ops, report, strict)


def trace_group(sub: torch.fx.GraphModule, ops: list[str] | None = None) -> TracedGroup:
    """Trace a group (a graph module of ATen nodes) into a tensor graph."""
    placeholders = [n for n in sub.graph.nodes if n.op == "placeholder"]
    returned = sub.graph.output_node().args[0]
    single = not isinstance(returned, (tuple, list))
    nodes = [returned] if single else list(returned)
    inputs = [_Input.of(n.meta["val"]) for n in placeholders]
    position = {n: k for k, n in enumerate(placeholders)}
    chains = [ViewChain.of(n) for n in nodes]
    of_inputs = [c is not None and c[0] in position for c in chains]
    if all(of_inputs):  # nothing else to compute: compute these
        chains, of_inputs = [None] * len(nodes), [False] * len(nodes)
    computed: list[torch.fx.Node] = []
    results = []
    for n, found, of_input in zip(nodes, chains, of_inputs):
        if of_input:
            results.append(("input", position[found[0]], found[1]))
            continue
        base, chain = found if found is not None else (n, None)  # a view of a computed tensor:
        if base not in computed:                                  # compute that tensor
            computed.append(base)
        results.append(("output", computed.index(base), chain))
    outputs = [_Output.of(n.meta["val"]) for n in computed]

    def run(*tensors):
        env = {n: layout.view(t) for n, layout, t in zip(placeholders, inputs, tensors)}
        for node in sub.graph.nodes:
            if node.op == "call_function":
                env[node] = convert_node(node, env)
        return [layout.arrange(env[n]) for n, layout in zip(computed, outputs)]

    graph, _ = trace(run, [layout.spec for layout in inputs])
    ops = ops if ops is not None else [op_name(n.target) for n in sub.graph.nodes if n.op == "call_function"]
    return TracedGroup(graph, inputs, outputs, results, single, sub, ops)


def build_call(sub: torch.fx.GraphModule, target: str, name: str, ops: list[str] | None = None,
               report: GraphReport | None = None, strict: bool = False) -> WarpweaveCall:
    """Trace a group (a graph module of ATen nodes) and compile it into a call."""
    return trace_group(sub, ops).call(target, name, report, strict)


def _call_directly(gm: torch.fx.GraphModule, calls: dict[str, WarpweaveCall]) -> None:
    """Nodes that call compiled group submodules call their programs instead (no
    nn.Module dispatch), and the submodules go."""
    for node in list(gm.graph.nodes):
        call = calls.get(node.target) if node.op == "call_module" else None
        if call is not None:
            with gm.graph.inserting_before(node):
                made = gm.graph.call_function(call, node.args, node.kwargs)
            made.meta = dict(node.meta)
            node.replace_all_uses_with(made)
            gm.graph.erase_node(node)
            delattr(gm, node.target)


def reinterpret_views(gm: torch.fx.GraphModule) -> None:
    """Every chain of views left to PyTorch becomes one reinterpretation of the
    tensor it starts from (a ViewChain call), in place; links no one uses are removed."""
    graph = gm.graph
    for node in list(graph.nodes):
        if not _is_aliasing_view(node) or (node.users and all(map(_is_aliasing_view, node.users))):
            continue  # not a view, or an inner link of longer chains
        found = ViewChain.of(node)
        if found is None:
            continue
        with graph.inserting_before(node):
            made = graph.call_function(found[1], (found[0],))
        made.meta = dict(node.meta)
        node.replace_all_uses_with(made)
    for node in reversed(list(graph.nodes)):
        if _is_aliasing_view(node) and not node.users:
            graph.erase_node(node)


# ----------------------------------------------------------------------------- splitting

class _Support(OperatorSupportBase):
    def __init__(self, reasons: dict):
        self.reasons = reasons

    def is_node_supported(self, submodules, node) -> bool:
        return node in self.reasons and self.reasons[node] is None


def _tensors(value):
    values = value if isinstance(value, (list, tuple)) else [value]
    return [v for v in values if isinstance(v, torch.Tensor)]


def _graph_device(gm) -> torch.device:
    """The device a graph computes on: its first non-CPU tensor's, else the CPU."""
    for n in gm.graph.nodes:
        for v in _tensors(n.meta.get("val")):
            if v.device.type != "cpu":
                return v.device
    return torch.device("cpu")


def _target(device: torch.device, requested: str) -> tuple[str | None, str | None]:
    """(target, None), or (None, why nothing can compile) for tensors on `device`."""
    allowed = TARGETS_FOR_DEVICE.get(device.type, ())
    if requested == "auto" and allowed:
        return allowed[0], None
    if requested in allowed:
        return requested, None
    return None, (f"tensors on {device} cannot run on warpweave target {requested!r}"
                  + (f" (use {' or '.join(map(repr, allowed))})" if allowed else ""))


def _reason(node, device, reasons, strict: bool) -> str | None:
    if node.target is operator.getitem:
        return reasons.get(node.args[0], "reads a value PyTorch computes")
    for n in (*node.all_input_nodes, node):
        for v in _tensors(n.meta.get("val")):
            if v.device != device:
                return f"has a tensor on {v.device}; this graph runs on {device}"
    try:
        return node_unsupported_reason(node)
    except Exception as exc:  # noqa: BLE001 - a failure, not a known limit: say so, run it in PyTorch
        reason = f"conversion failed ({type(exc).__name__}: {exc})"
        fall_back([op_name(node.target)], reason, strict, exc)
        return reason


def _absorb_input_views(gm: torch.fx.GraphModule, partitions, reasons: dict) -> None:
    """Views (chains of them) that a partition reads from outside join it, so that
    its program reads the viewed tensor through index arithmetic instead of PyTorch
    making the view, and the program's call preparing its strided layout, on every
    call. A view that others read too stays for them, and the partition takes a
    copy of it (views cost nothing inside a program)."""
    owner = {n: p for p in partitions for n in p.nodes}
    for p in partitions:
        stack = list(p.nodes)
        while stack:
            node = stack.pop()
            for view in node.all_input_nodes:
                if view in owner or not _is_aliasing_view(view) or view.target not in _ABSORBED_VIEWS \
                        or reasons.get(view, "") is not None:
                    continue
                if any(owner.get(u) is not p for u in view.users):  # read elsewhere: a copy for p
                    with gm.graph.inserting_after(view):
                        copy = gm.graph.call_function(view.target, view.args, view.kwargs)
                    copy.meta = dict(view.meta)
                    reasons[copy] = None
                    for u in [u for u in view.users if owner.get(u) is p]:
                        u.replace_input_with(view, copy)
                    view = copy
                p.add_node(view)
                owner[view] = p
                stack.append(view)


def split_graph(gm: torch.fx.GraphModule, name: str, requested_target: str, strict: bool = False
                ) -> tuple[torch.fx.GraphModule, GraphReport]:
    """Compile what warpweave can of an ATen graph (in place) and report it. What fails
    to convert, lower or compile runs in PyTorch with a FallbackWarning (FallbackError
    in `strict` mode)."""
    device = _graph_device(gm)
    target, why = _target(device, requested_target)
    nodes = [n for n in gm.graph.nodes if n.op == "call_function"]
    reasons: dict = {}
    for n in nodes:
        reasons[n] = why or _reason(n, device, reasons, strict)
    partitioner = CapabilityBasedPartitioner(
        gm, _Support(reasons), allows_single_node_partition=True,
        non_compute_ops=[torch.fx.node._get_qualified_name(t) for t in VIEW_OPS - _MULTI_OUTPUT - _COPIES])
    partitions = partitioner.propose_partitions()
    partitioner.remove_bookend_non_compute_ops(partitions)
    _absorb_input_views(gm, partitions, reasons)
    groups, constant = [], set()  # constant: nodes of groups with no tensor input, left to PyTorch
    for p in partitions:
        members = list(p.nodes)
        if not any(_computes(n) for n in members) or all(
                i in p.nodes for n in members for i in n.all_input_nodes):
            constant.update(members)
        else:
            groups.append(members)
    report = GraphReport(name, len(nodes))
    group_of = {n: k for k, members in enumerate(groups) for n in members}
    described = {n: (n.name, op_name(n.target)) for n in nodes}
    fuse_by_partitions(gm, [dict.fromkeys(m) for m in groups], prefix="warpweave_")
    failed: dict[int, str] = {}
    traced: dict[int, TracedGroup] = {}
    for k, members in enumerate(groups):
        ops = [described[n][1] for n in members if n in described]  # not the copies of views
        try:
            traced[k] = trace_group(getattr(gm, f"warpweave_{k}"), ops)
        except Exception as exc:  # noqa: BLE001 - the group runs in PyTorch instead: say why, keep going
            failed[k] = f"compile failed ({type(exc).__name__}: {exc})"
            fall_back(ops, failed[k], strict, exc, f"group {name}_{k}")
    precompile([Job(t.graph, False, target, f"{name}_{k}") for k, t in traced.items()])
    calls = {}
    for k, group in traced.items():
        sub_name = f"warpweave_{k}"
        try:
            calls[sub_name] = group.call(target, f"{name}_{k}", report, strict)
        except Exception as exc:  # noqa: BLE001 - the group runs in PyTorch instead: say why, keep going
            failed[k] = f"compile failed ({type(exc).__name__}: {exc})"
            fall_back(group.ops, failed[k], strict, exc, f"group {name}_{k}")
            continue
        report.programs.append(ProgramReport(f"{name}_{k}", target, group.ops, len(calls[sub_name].program.kernels)))
    _call_directly(gm, calls)
    reinterpret_views(gm)
    for n in nodes:
        k = group_of.get(n)
        if k is not None and k not in failed:
            continue
        if k is None and (n.target in VIEW_OPS | CONSTANT_OPS or n in constant):
            report.views_in_torch += 1
            continue
        node_name, op = described[n]
        report.fallbacks.append(Fallback(node_name, op, failed[k] if k is not None else reasons[n]))
    batch_input_updates(gm)
    gm.recompile()
    return gm, report
