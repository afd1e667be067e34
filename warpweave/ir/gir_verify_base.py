"""What the GIR verifier's checks share: the op groups they test for and the kernel
indexed for checking (nodes by id and emission position, scopes, declared buffers,
edges by destination), with the helpers that describe nodes and walk scope chains."""
from __future__ import annotations

import numpy as np

from .gir import Edge, Kernel, Node, buffers_written

LOADS = ("move.global.reg", "move.shared.reg")
STORES = ("move.reg.global", "move.reg.shared")
SHUFFLE = "move.reg.reg"
SYNC = "sync.block"


def data_extents(n: Node) -> dict:
    """{variable: extent} of a load's or store's data indices, in slot order (none
    where its `data` attr is malformed, which the type checks report)."""
    data = n.attr("data")
    if (n.op in LOADS or n.op in STORES) and isinstance(data, tuple) and all(
            isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], str) for x in data):
        return dict(data)
    return {}


def iteration_grid(order: list[str], extents: dict[str, int]) -> tuple[dict, tuple[int, ...]]:
    """Every point of the iteration space of the variables `order` (extents given):
    ({variable: an int64 array broadcastable over the space}, the space's shape), for
    evaluating index expressions at all points at once."""
    env = {}
    for axis, v in enumerate(order):
        shape = [1] * len(order)
        shape[axis] = extents[v]
        env[v] = np.arange(extents[v], dtype=np.int64).reshape(shape)
    return env, tuple(extents[v] for v in order)


class VerifierBase:
    """A kernel indexed for checking; `add` records a problem. `limits` is a
    `gir_verify.Limits`."""

    def __init__(self, kernel: Kernel, limits):
        self.k = kernel
        self.written = {b for n in kernel.nodes for b in buffers_written(n)}
        self.lim = limits
        self.problems: list[str] = []
        self.nodes: dict[str, Node] = {}
        self.pos: dict[str, int] = {}
        for i, n in enumerate(kernel.nodes):
            if n.id not in self.nodes:
                self.nodes[n.id] = n
                self.pos[n.id] = i
        self.scopes = {nid: n for nid, n in self.nodes.items() if n.is_scope}
        self.params = {}
        for b in kernel.params:
            self.params.setdefault(b.name, b)
        self.allocs = {}
        for s in kernel.shared:
            self.allocs.setdefault(s.name, s)
        self.good_edges: list[Edge] = []
        self.inputs: dict[str, list[Edge]] = {nid: [] for nid in self.nodes}
        self.block = None
        self._states: dict[str, frozenset] = {}

    def add(self, msg: str):
        self.problems.append(msg)

    # ------------------------------------------------------------------ helpers
    def desc(self, n: Node | str) -> str:
        if isinstance(n, str):
            n = self.nodes.get(n, n)
            if isinstance(n, str):
                return n
        if n.is_scope:
            return f"{n.id} ({n.op} {n.attr('var')} < {n.attr('extent')})"
        buf = n.attr("buffer")
        return f"{n.id} ({n.op}{' ' + str(buf) if buf is not None else ''})"

    def chain(self, scope_id) -> list[Node] | None:
        out, seen = [], set()
        while scope_id is not None:
            s = self.scopes.get(scope_id) if isinstance(scope_id, str) else None
            if s is None or scope_id in seen:
                return None
            seen.add(scope_id)
            out.append(s)
            scope_id = s.scope
        return out[::-1]

    def buffer(self, name):
        return self.params.get(name) or self.allocs.get(name)

