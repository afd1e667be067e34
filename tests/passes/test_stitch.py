"""Each stitching scheme on a real group kernel, and what breaks when its exchange is wrong."""
import numpy as np
import pytest

import warpweave as ww
from warpweave.backends.interp import run_kernel
from warpweave.schedule import templates as sch
from warpweave.lower.group import lower_group
from warpweave.frontend.trace import trace
from warpweave.errors import VerificationError
from warpweave.ir import dtypes as dt
from warpweave.ir import simplify as sx
from warpweave.ir.gir import make_kernel
from warpweave.ir.gir_verify import verify
from warpweave.passes import fuse
from warpweave.passes.cleanup import eliminate_dead_nodes, simplify_exprs
from warpweave.passes.cost import H100
from warpweave.passes.movement import forward_loads
from warpweave.passes.stitch import stitch
from tests.utils import assert_close, random_array, softmax, softmax_reference


def _group_kernel(fn, shape, schedule):
    graph, _ = trace(fn, [(shape, dt.float32)])
    graph = fuse.inline_broadcast_producers(graph)
    (group,) = fuse.plan(graph, H100).groups
    return graph, lower_group(group, graph, schedule, "k")


def _stitched(kernel):
    return eliminate_dead_nodes(forward_loads(stitch(simplify_exprs(kernel))))


def _schemes(kernel):
    return {d.split(":")[-1] for d in dict(kernel.meta)["stitched"].split()}


def _run(graph, kernel, x):
    buffers = {p.name: np.full(p.size, np.nan, dtype=p.dtype.numpy) for p in kernel.params}
    buffers[graph.inputs[0]] = x.reshape(-1).copy()
    run_kernel(kernel, buffers)
    return buffers[graph.outputs[0]].reshape(x.shape)


def test_regional_scheme_needs_its_barrier():
    """A row of 1024 over 256 threads: the row maximum crosses warps through shared memory."""
    graph, k = _group_kernel(softmax, (6, 1024), sch.GpuRowGroup(256, 256, 4, 1, 1))
    k = _stitched(k)
    assert "regional" in _schemes(k) and k.shared
    x = random_array(np.random.default_rng(), (6, 1024), "float32")
    assert_close(_run(graph, k, x), softmax_reference(x), "float32")
    # drop the barrier the stitcher placed after the shared-memory write: the verifier objects
    tile = next(s.name for s in k.shared if s.name.endswith("_tile"))
    put = next(n for n in k.nodes if n.op == "move.reg.shared" and n.attr("buffer") == tile)
    bar = next(e.dst for e in k.edges if e.src == put.id and k.node(e.dst).op == "sync.block")
    edges = [e.__class__(put.id if e.src == bar else e.src, e.dst, e.slot, e.level, e.dtype, e.shape)
             for e in k.edges if e.dst != bar]
    broken = make_kernel(k.name, k.params, k.shared, [n for n in k.nodes if n.id != bar], edges,
                         k.target, dict(k.meta))
    with pytest.raises(VerificationError, match="barrier"):
        verify(broken)


def test_warp_scheme_shuffles_from_the_row_leader():
    """Rows of 64 over 16 threads: the row values move by shuffles within the warp."""
    graph, k = _group_kernel(softmax, (20, 64), sch.GpuRowGroup(64, 16, 4, 1, 1))
    k = _stitched(k)
    assert _schemes(k) == {"warp", "local"}
    assert not any(s.name.endswith("_tile") for s in k.shared)
    x = random_array(np.random.default_rng(), (20, 64), "float32")
    assert_close(_run(graph, k, x), softmax_reference(x), "float32")
    # a shuffle from the wrong lane reads another row's maximum: the result is wrong
    wrong = [n.replace(attrs={**n.attr_map, "lane": sx.simplify(n.attr("lane") + 16)})
             if n.op == "move.reg.reg" and n.attr("mode") == "idx" else n for n in k.nodes]
    bad = make_kernel(k.name, k.params, k.shared, wrong, k.edges, k.target, dict(k.meta))
    assert not np.allclose(_run(graph, bad, x), softmax_reference(x), atol=1e-3)


def test_local_scheme_removes_every_round_trip():
    fn = lambda x: ww.relu(0.5 * x + 1.0) * ww.sigmoid(x) - x  # noqa: E731
    graph, k = _group_kernel(fn, (33, 40), sch.GpuElementwise(128, 4))
    k = _stitched(k)
    assert _schemes(k) == {"local"}
    assert [p.role for p in k.params] == ["in", "out"]
    assert sum(n.op == "move.global.reg" for n in k.nodes) == 1
    x = random_array(np.random.default_rng(), (33, 40), "float32")
    ref = np.maximum(0.5 * x + 1, 0) / (1 + np.exp(-x.astype(np.float64))) - x
    assert_close(_run(graph, k, x), ref, "float32")


def test_no_intermediate_round_trip_when_a_row_outgrows_registers():
    """Three passes over each row: later phases recompute the row's elementwise
    intermediates from the input; only the output is written to DRAM."""
    graph, k = _group_kernel(softmax, (3, 600), sch.GpuRowGroup(64, 64, 4, 1, 3))
    k = _stitched(k)
    assert "global" not in _schemes(k)
    written = {n.attr("buffer") for n in k.nodes if n.op == "move.reg.global"}
    assert written == set(graph.outputs)
    x = random_array(np.random.default_rng(), (3, 600), "float32")
    assert_close(_run(graph, k, x), softmax_reference(x), "float32")


def test_sibling_vector_scopes_carry_the_register_tile():
    """The phases of a row group read x once: later phases use the first phase's tile."""
    graph, k = _group_kernel(softmax, (4, 512), sch.GpuRowGroup(128, 128, 4, 1, 1))
    loads = [n for n in _stitched(k).nodes if n.op == "move.global.reg"]
    assert len(loads) == 1
