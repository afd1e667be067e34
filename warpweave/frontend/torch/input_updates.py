"""A graph's in-place updates of its inputs in one PyTorch call.

AOTAutograd applies a compiled graph's mutations of its inputs — batch norm's running
mean, variance and step count, three per layer — as `copy_` nodes at its end, each a
call into PyTorch and, on a GPU, a kernel launch for a few hundred elements
(ResNet-50's training step: 159 a step). `batch_input_updates` makes each run of such
copies one `torch._foreach_copy_` over all of them: one call, and PyTorch's
multi-tensor kernels on CUDA.
"""
from __future__ import annotations

import torch

aten = torch.ops.aten


def _update(node: torch.fx.Node) -> bool:
    """A `copy_(dst, src)` whose result nothing reads: an update of `dst` in place."""
    return (node.op == "call_function" and node.target is aten.copy_.default and not node.users
            and len(node.args) == 2 and not node.kwargs
            and all(isinstance(a, torch.fx.Node) for a in node.args))


def batch_input_updates(gm: torch.fx.GraphModule) -> int:
    """Replace the in-place updates of `gm` by one `_foreach_copy_` at the last of
    them, where that changes nothing: every destination distinct and no source, none
    read or written between its own update and the last (sources are computed before
    their updates, so before the last).
    Returns how many updates were batched (0: `gm` unchanged); recompiling is the
    caller's."""
    nodes = list(gm.graph.nodes)
    updates = [n for n in nodes if _update(n)]
    if len(updates) < 2:
        return 0
    last = updates[-1]
    where = {n: k for k, n in enumerate(nodes)}
    destinations = [u.args[0] for u in updates]
    if len(set(destinations)) != len(destinations) or set(destinations) & {u.args[1] for u in updates}:
        return 0
    for u in updates:
        between = nodes[where[u] + 1:where[last]]
        if any(u.args[0] in n.all_input_nodes for n in between if n not in updates):
            return 0
    with gm.graph.inserting_after(last):
        gm.graph.call_function(torch._foreach_copy_, (destinations, [u.args[1] for u in updates]))
    for u in updates:
        gm.graph.erase_node(u)
    return len(updates)
