"""Convolutions in channels-last order on CUDA.

cuDNN's fast convolution kernels read and write channels-last (NHWC) activations;
given contiguous (NCHW) ones it transposes the input and the result around every
convolution (ResNet-50 inference, batch 64, bfloat16, on the H200, 2026-12-03: 69
transposes, 1.07 of 4.5 ms of GPU time). Before an inference graph is split,
`channels_last_convolutions` makes the input of each CUDA convolution over images
channels-last where it is not, and traces the graph again: the convolution's result
is then channels-last too, PyTorch's layout rules carry that order through the
operations after it, and warpweave's programs compute in it (`passes.layout`) — so
only the graph's own inputs are converted, once. Their weights are made
channels-last too (cuDNN would copy each one whose kernel is wider than 1 × 1 inside
the convolution call, at an ATen copy's host cost): the conversions are copies that
join the programs before them. The graph's outputs keep the
layout they had (a contiguous output is copied back into contiguous order). As
Inductor's layout optimisation does; training graphs are left as they are (their
saved activations' layouts are fixed when the backward is traced).
"""
from __future__ import annotations

import torch

from .pad_matmuls import retraced

aten = torch.ops.aten


def _channels_last(value) -> bool:
    return isinstance(value, torch.Tensor) and value.is_contiguous(memory_format=torch.channels_last)


def _image_convolution(node: torch.fx.Node) -> bool:
    if node.op != "call_function" or node.target is not aten.convolution.default:
        return False
    x = node.args[0].meta.get("val") if isinstance(node.args[0], torch.fx.Node) else None
    return isinstance(x, torch.Tensor) and x.dim() == 4 and x.device.type == "cuda"


def channels_last_convolutions(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A copy of `gm` whose CUDA 2-D convolutions read channels-last inputs and
    weights, outputs in their original layouts; `gm` itself where there is nothing to
    convert or the converted graph cannot be traced."""
    convs = [n for n in gm.graph.nodes if _image_convolution(n) and not all(
        _channels_last(a.meta.get("val")) for a in n.args[:2] if isinstance(a, torch.fx.Node))]
    if not convs:
        return gm
    graph, copies = torch.fx.Graph(), {}
    graph.output(graph.graph_copy(gm.graph, copies))
    converted = []
    for node in convs:
        conv = copies[node]
        for k in (0, 1):  # the activation, then the weight
            with graph.inserting_before(conv):
                converted.append(graph.call_function(aten.clone.default, (conv.args[k],),
                                                     {"memory_format": torch.channels_last}))
            conv.update_arg(k, converted[-1])
    (out,) = [n for n in graph.nodes if n.op == "output"]
    results = out.args[0] if isinstance(out.args[0], (list, tuple)) else [out.args[0]]
    originals = {copies[n]: n.meta.get("val") for n in gm.graph.nodes if n in copies}
    if not retraced(torch.fx.GraphModule(gm, graph)):
        return gm
    for node in converted:  # the tensor is channels-last already: the conversion is a no-op
        if _channels_last(node.args[0].meta["val"]):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    restored: dict = {}
    for node in results:
        if not isinstance(node, torch.fx.Node) or node in restored:
            continue
        before, now = originals.get(node), node.meta.get("val")
        if not isinstance(before, torch.Tensor) or not isinstance(now, torch.Tensor) or before.stride() == now.stride():
            continue
        if not before.is_contiguous():
            return gm  # an output in a layout of its own: left as PyTorch lays it out
        with graph.inserting_before(out):
            restored[node] = graph.call_function(aten.clone.default, (node,), {"memory_format": torch.contiguous_format})
    if restored:
        out.args = (torch.fx.node.map_arg(out.args[0], lambda n: restored.get(n, n)),)
    graph.lint()
    result = torch.fx.GraphModule(gm, graph)
    return result if retraced(result) else gm
