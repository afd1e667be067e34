"""`mode="reduce-overhead"`: a compiled graph's launches recorded in a CUDA graph and
replayed, so a step costs one graph launch instead of one host call per kernel.

`GraphedCall(fn, mutated)` wraps the callable of one compiled ATen graph (forward,
backward or inference). Per input signature (shapes, strides, dtypes, devices, grad
mode) the first call runs `fn` as it is (warm-up: compiling, cuBLAS workspaces); the
second records it into a CUDA graph on PyTorch's capture stream and replays it; later
calls replay. Inputs whose storage did not move between those two calls (parameters,
buffers) are read in place, and a later call where one has moved records anew;
the others are copied into the graph's own input buffers before each replay and,
where the graph writes into them (`mutated`), copied back after it. Outputs are
fresh tensors (copies of the graph's), so a result never changes under the caller
when the graph replays again. A graph that cannot be recorded (an operation not
allowed while capturing) runs uncaptured from then on, with one warning.
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

import torch

logger = logging.getLogger("warpweave.torch")

MAX_RECORDINGS = 8  # per signature: inputs read in place that keep moving stop recording


def _signature(args) -> tuple:
    return (torch.is_grad_enabled(), *(
        (tuple(a.shape), a.stride(), a.dtype, a.device) if isinstance(a, torch.Tensor) else (type(a), a)
        for a in args))


def _pointers(args) -> tuple:
    return tuple(a.data_ptr() if isinstance(a, torch.Tensor) else None for a in args)


class _Recording:
    """One CUDA graph of `fn` for one signature and its input and output buffers."""

    def __init__(self, fn: Callable, args: Sequence, in_place: Sequence[bool], mutated: frozenset[int]):
        self.pointers = _pointers(args)
        self.in_place = tuple(in_place)
        self.mutated = mutated
        self.inputs = [a if keep or not isinstance(a, torch.Tensor) else torch.empty_strided(
            a.shape, a.stride(), dtype=a.dtype, device=a.device).copy_(a) for a, keep in zip(args, in_place)]
        self.graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize()
        with torch.cuda.graph(self.graph):
            self.outputs = fn(*self.inputs)

    def valid_for(self, args) -> bool:
        return all(not keep or p == q for keep, p, q in zip(self.in_place, self.pointers, _pointers(args)))

    def replay(self, args):
        for k, (a, buf) in enumerate(zip(args, self.inputs)):
            if not self.in_place[k] and isinstance(a, torch.Tensor):
                buf.copy_(a)
        self.graph.replay()
        for k in self.mutated:
            if not self.in_place[k]:
                args[k].copy_(self.inputs[k])
        return _fresh(self.outputs)


def _fresh(outputs):
    if isinstance(outputs, torch.Tensor):
        return outputs.clone()
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(_fresh(o) for o in outputs)
    return outputs


class GraphedCall:
    """`fn` replayed from CUDA graphs, one per input signature (see the module)."""

    def __init__(self, fn: Callable, mutated: frozenset[int] = frozenset(), name: str = "graph"):
        self.fn = fn
        self.mutated = mutated
        self.name = name
        self.warm: dict[tuple, tuple] = {}          # signature -> pointers at its first call
        self.recorded: dict[tuple, _Recording] = {}
        self.recordings: dict[tuple, int] = {}
        self.disabled: str | None = None

    def __call__(self, *args):
        if self.disabled or not _on_cuda(args) or torch.cuda.is_current_stream_capturing():
            return self.fn(*args)
        key = _signature(args)
        recording = self.recorded.get(key)
        if recording is not None and recording.valid_for(args):
            return recording.replay(args)
        first = self.warm.get(key)
        if first is None or self.recordings.get(key, 0) >= MAX_RECORDINGS:
            self.warm[key] = _pointers(args)
            return self.fn(*args)
        in_place = [p is not None and p == q for p, q in zip(first, _pointers(args))]
        try:
            recording = _Recording(self.fn, args, in_place, self.mutated)
        except Exception as exc:  # noqa: BLE001 - not capturable: run uncaptured, say so once
            self.disabled = f"{type(exc).__name__}: {exc}"
            logger.warning("warpweave: %s runs without a CUDA graph (recording failed: %s)", self.name,
                           self.disabled)
            torch.cuda.synchronize()
            return self.fn(*args)
        self.recorded[key] = recording
        self.recordings[key] = self.recordings.get(key, 0) + 1
        self.warm[key] = _pointers(args)
        return recording.replay(args)


def _on_cuda(args) -> bool:
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    return bool(tensors) and all(a.is_cuda for a in tensors)


def mutated_inputs(gm: torch.fx.GraphModule) -> frozenset[int]:
    """Positions of the graph inputs that the graph writes into (`copy_` into a placeholder)."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    written = {n.args[0] for n in gm.graph.nodes
               if n.op == "call_function" and n.target is torch.ops.aten.copy_.default}
    return frozenset(k for k, p in enumerate(placeholders) if p in written)
