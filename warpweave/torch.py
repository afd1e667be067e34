"""warpweave as a torch.compile backend.

    model = torch.compile(model, backend="warpweave")                  # after pip install
    model = torch.compile(model, backend="warpweave", options={"target": "cpu"})
    print(warpweave.torch.explain(model, x))                           # what compiled, what fell back

AOTAutograd turns each graph Dynamo captures into core-ATen forward and backward
graphs (or one inference graph). warpweave compiles the operations it supports —
pointwise math, casts, reductions, views, where/masking, concatenation, softmax,
log-softmax and layer norm through their decompositions — into warpweave
programs, with pooling, padding and small gathers, and on the CPU matrix products;
convolutions, attention, random numbers, gathers over large tables and
anything else it cannot compile run in PyTorch (the FX capability-based
partitioner splits the graph). Every compiled graph logs one line on the
"warpweave.torch" logger naming what fell back; `explain` reports it in full.

Tensors are used in place: CUDA tensors on the cuda target on PyTorch's current
stream, CPU tensors on the cpu target through numpy views of the same memory.

Options (`options={...}`): `target` ("auto", "cpu", "interp", "cuda"), `mode`
(also `torch.compile(mode=...)`: "max-autotune" tunes every group first,
"reduce-overhead" replays each compiled graph from CUDA graphs),
`dump_dir` (write every compile stage there), and `strict`.

Failures never break a model that runs eagerly: an operation that fails to convert,
lower or compile, and arguments a program was not compiled for (dtype, strides,
device), run in PyTorch with one `warpweave.FallbackWarning` per operation and
reason. `strict=True` (or `ww.options(strict=True)`, or `WARPWEAVE_STRICT=1`)
raises `warpweave.FallbackError` instead.

Shapes: warpweave programs have static shapes. With the default `dynamic=None`
or `dynamic=False`, each new input shape is a recompile. When Dynamo hands over a
graph with symbolic shapes (`dynamic=True`, or Dynamo's automatic dynamic shapes
after a shape changed), warpweave specializes it: it compiles the graph once per
concrete input shape, the first time it is called with it, and caches that.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch as _torch

from .frontend.torch.backend import MODES, TARGETS, BackendOptions, backend, collecting_reports
from .frontend.torch.partition import Fallback, GraphReport, ProgramReport

__all__ = ["backend", "explain", "Explanation", "GraphReport", "ProgramReport", "Fallback",
           "BackendOptions", "MODES", "TARGETS"]

_ISOLATES = "isolate_recompiles" in inspect.signature(_torch.compile).parameters


@dataclass
class Explanation:
    """What warpweave did with each ATen graph of a model (see `explain`)."""

    graphs: list[GraphReport]

    @property
    def programs(self) -> list[ProgramReport]:
        return [p for g in self.graphs for p in g.programs]

    @property
    def kernels(self) -> int:
        return sum(g.kernels for g in self.graphs)

    @property
    def fallbacks(self) -> list[Fallback]:
        return [f for g in self.graphs for f in g.fallbacks]

    def __str__(self) -> str:
        head = (f"warpweave compiled {len(self.graphs)} ATen graphs into {len(self.programs)} "
                f"programs ({self.kernels} kernels); {len(self.fallbacks)} ops fell back to PyTorch")
        return "\n".join([head, *(str(g) for g in self.graphs)])


def explain(model, *inputs, target: str = "auto", mode: str | None = None,
            backward: bool = True, strict: bool | None = None) -> Explanation:
    """Compile `model` (a module or function) with warpweave on `inputs`, run it, and
    report every ATen graph: which operations compiled into how many programs and
    kernels, which fell back to PyTorch and why.

    With `backward` (the default), when an output requires grad the backward graph
    is compiled too: gradients of the outputs' sum are taken with `torch.autograd.grad`,
    so no `.grad` attribute changes. Failures that made something run in PyTorch are
    listed too, with their reasons (`strict` as in the backend's options)."""
    options = BackendOptions.parse(mode, {"target": target, "strict": strict})

    def explaining_backend(gm, example_inputs):
        return backend(gm, example_inputs, options={"target": options.target, "mode": options.mode,
                                                    "strict": options.strict})

    isolated = {"isolate_recompiles": True} if _ISOLATES else {}  # explaining never uses up
    with collecting_reports() as reports:                          # the model's recompile limit
        out = _torch.compile(model, backend=explaining_backend, **isolated)(*inputs)
        if backward:
            _differentiate(model, inputs, out)
    return Explanation(list(reports))


def _differentiate(model, inputs, out) -> None:
    outs = [o for o in _torch.utils._pytree.tree_leaves(out)
            if isinstance(o, _torch.Tensor) and o.requires_grad]
    params = list(model.parameters()) if isinstance(model, _torch.nn.Module) else []
    leaves = [t for t in (*params, *_torch.utils._pytree.tree_leaves(inputs))
              if isinstance(t, _torch.Tensor) and t.requires_grad]
    if outs and leaves:
        _torch.autograd.grad([o.sum() for o in outs], leaves, allow_unused=True)
