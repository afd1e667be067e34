"""The schedule space: every enumerated point lowers, verifies and computes the right
answer (on the interpreter for GPU points, natively for CPU points) at odd shapes;
a kernel with shared memory fails verification once its barriers are removed; the
group key names the computation, not the program; overrides reach the compile."""
from dataclasses import replace

import numpy as np
import pytest

import warpweave as ww
from tests.utils import assert_close, layer_norm_reference, random_array, softmax_reference
from warpweave.errors import VerificationError
from warpweave.frontend.trace import trace
from warpweave.ir.gir_verify import verify
from warpweave.passes import fuse
from warpweave.passes.cost import device_for
from warpweave.pipeline.compile import compile_graph, compile_group
from warpweave.schedule.space import group_key, space
from warpweave.schedule.templates import GpuRowGroup


def _gelu(x):
    return 0.5 * x * (1 + np.tanh(0.7978845608028654 * (x + 0.044715 * x ** 3)))


# (name, function, input shapes, float64 reference)
CASES = [
    ("softmax", lambda x: ww.softmax(x), [(3, 40)], lambda x: softmax_reference(x)),
    ("layer_norm", lambda x: ww.layer_norm(x), [(5, 24)], lambda x: layer_norm_reference(x)),
    ("softmax_ragged_rows", lambda x: ww.softmax(x), [(3, 263)], lambda x: softmax_reference(x)),
    ("softmax_split_rows", lambda x: ww.softmax(x), [(2, 1031)], lambda x: softmax_reference(x)),
    ("row_sum_odd", lambda x: x.sum(axis=-1), [(4, 37)], lambda x: x.sum(axis=-1)),
    ("column_sum", lambda x: x.sum(axis=0), [(70, 12)], lambda x: x.sum(axis=0)),
    ("middle_sum", lambda x: x.sum(axis=1), [(3, 33, 8)], lambda x: x.sum(axis=1)),
    ("transpose_add", lambda x: x.T + 1.0, [(40, 24)], lambda x: x.T + 1.0),
    ("bias_gelu", lambda x, b: ww.gelu(x + b, approximate="tanh"), [(6, 20), (20,)],
     lambda x, b: _gelu(x + b)),
]


def _groups(fn, shapes, family):
    graph, single = trace(fn, [(s, "float32") for s in shapes])
    graph = fuse.inline_broadcast_producers(graph)
    return graph, single, fuse.plan(graph, device_for(family, 132)).groups


def _sample(points, k, seed):
    """The default point and up to `k - 1` others, chosen at random (fixed seed)."""
    rng = np.random.default_rng(seed)
    rest = points[1:]
    picks = rng.choice(len(rest), size=min(k - 1, len(rest)), replace=False) if rest else []
    return [points[0]] + [rest[i] for i in sorted(picks)]


@pytest.mark.parametrize("target,family,per_group", [("interp", "gpu", 12), ("cpu", "cpu", 3)])
@pytest.mark.parametrize("name,fn,shapes,reference", CASES, ids=[c[0] for c in CASES])
def test_every_sampled_point_is_right(name, fn, shapes, reference, target, family, per_group):
    rng = np.random.default_rng(7)
    args = [random_array(rng, s, "float32") for s in shapes]
    want = reference(*[a.astype(np.float64) for a in args])
    graph, single, groups = _groups(fn, shapes, family)
    for n, group in enumerate(groups):
        points = space(group, graph, family)
        assert points, f"empty space for {group}"
        for point in _sample(points, per_group, seed=n):
            program = compile_graph(graph, single, target, name, {group_key(group, graph): point})
            mine = [k for k in program.kernels if k.ops == group.ops]
            assert mine and all(k.schedule == point and k.source == "override" for k in mine)
            assert_close(program(*args), want, "float32", what=f"{name} under {point}")


def test_default_point_comes_first_and_points_are_distinct():
    for _, fn, shapes, _ in CASES:
        for family in ("gpu", "cpu"):
            graph, _, groups = _groups(fn, shapes, family)
            for group in groups:
                points = space(group, graph, family)
                assert len(set(points)) == len(points)


def test_every_point_of_a_sum_over_a_column_of_width_one_is_right():
    """A loss's sum over its tokens' gathered terms reads `x[:, 0]` of an [n, 1] tensor:
    recomputing the negation inside the serial passes made the sum read a column, and
    the row lowering left its loads outside the passes (2026-12-03: GPT-2's and
    LLaMA's GPU tests). Every point of the space verifies and is right."""
    def fn(m, x):
        return ww.where(m, -x[:, 0], 0.0).sum() / m.astype("float32").sum()

    rng = np.random.default_rng(3)
    m, x = rng.random(6) > 0.3, random_array(rng, (6, 1), "float32")
    m[0] = True
    want = np.where(m, -x[:, 0].astype(np.float64), 0.0).sum() / m.sum()
    graph, single = trace(fn, [((6,), "bool"), ((6, 1), "float32")])
    graph = fuse.inline_broadcast_producers(graph)
    (group,) = [g for g in fuse.plan(graph, device_for("gpu", 132)).groups if g.pattern == "row"]
    points = space(group, graph, "gpu")
    assert any(getattr(p, "passes", 1) > 1 for p in points)
    for point in points:
        program = compile_graph(graph, single, "interp", "loss", {group_key(group, graph): point})
        assert_close(program(m, x), want, "float32", what=f"under {point}")


def test_row_group_points_of_many_short_rows_verify():
    """Chunks beyond a 16-element row are predicated off; the verifier proves their
    loads in bounds for 2^20 rows, too many to enumerate."""
    graph, single = trace(lambda x: ww.layer_norm(x), [((1 << 20, 16), "bfloat16")])
    (group,) = fuse.plan(graph, device_for("gpu", 132)).groups
    points = [p for p in space(group, graph, "gpu") if getattr(p, "chunks", 1) * getattr(p, "row_threads", 1) > 16]
    assert points
    for point in points:
        compile_group(group, graph, "interp", point)


@pytest.mark.parametrize("n", [3000, 3001])
def test_row_group_points_fit_the_row(n):
    """Vector widths divide the row, or take 16 bytes with a lane per element of the
    scalar head and tail; the register tile stays within MAX_TILE; passes cover the
    row exactly once."""
    graph, _, groups = _groups(lambda x: ww.softmax(x), [(8, n)], "gpu")
    (group,) = groups
    points = [p for p in space(group, graph, "gpu") if isinstance(p, GpuRowGroup)]
    assert len(points) > 50
    assert any(n % p.vector for p in points) == bool(n % 4)
    for p in points:
        assert n % p.vector == 0 or (p.vector == 4 and p.row_threads >= 4)
        assert p.vector * p.chunks <= 32 and p.threads % p.row_threads == 0
        assert (p.passes - 1) * p.row_threads * p.vector * p.chunks < n <= \
            p.passes * p.row_threads * p.vector * p.chunks


def _without_barriers(kernel):
    """The kernel with every `sync.block` removed, its buffer states passed straight
    from each write to the reads after it."""
    syncs = {n.id for n in kernel.nodes if n.op == "sync.block"}
    into = {s: [e for e in kernel.edges if e.dst == s] for s in syncs}

    def source(src, buffer):
        while src in syncs:
            src = next(e.src for e in into[src] if kernel.node(e.src).attr("buffer") == buffer)
        return src

    edges = [replace(e, src=source(e.src, kernel.node(e.dst).attr("buffer")))
             for e in kernel.edges if e.dst not in syncs]
    return replace(kernel, nodes=tuple(n for n in kernel.nodes if n.id not in syncs),
                   edges=tuple(edges))


@pytest.mark.parametrize("name,fn,shapes", [
    ("softmax_block_rows", lambda x: ww.softmax(x), [(2, 3000)]),
    ("column_tile", lambda x: x.sum(axis=0), [(4096, 64)]),
    ("transpose", lambda x: x.T + 1.0, [(64, 96)]),
])
def test_removing_barriers_fails_verification(name, fn, shapes):
    """Every point whose kernel shares data through shared memory is rejected by the
    verifier once its barriers are gone."""
    graph, single, groups = _groups(fn, shapes, "gpu")
    checked = 0
    for group in groups:
        # row groups share through shared memory only with more than a warp per row
        for point in [p for p in space(group, graph, "gpu") if getattr(p, "row_threads", 64) > 32]:
            program = compile_graph(graph, single, "interp", name, {group_key(group, graph): point})
            for k in program.kernels:
                if not any(n.op == "sync.block" for n in k.gir.nodes):
                    continue
                verify(k.gir)
                with pytest.raises(VerificationError, match="missing barrier"):
                    verify(_without_barriers(k.gir))
                checked += 1
            if checked >= 6:
                return
    assert checked, f"no point of {name} uses a barrier"


def test_group_key_names_the_computation():
    def key(fn, shapes):
        graph, _, groups = _groups(fn, shapes, "gpu")
        return [group_key(g, graph) for g in groups]

    a = key(lambda x: ww.softmax(x), [(8, 64)])
    b = key(lambda y, x: (y + 1.0, ww.softmax(x))[1], [(3,), (8, 64)])  # other names, same group
    assert a[-1] == b[-1]
    assert key(lambda x: ww.softmax(x), [(8, 65)]) != a
    assert key(lambda x: ww.log_softmax(x), [(8, 64)]) != a


def test_a_gpu_matrix_product_defaults_to_tensor_cores_and_its_space_is_theirs():
    from warpweave.schedule.choose import default_schedule
    from warpweave.schedule.mma import GpuMma
    from warpweave.tune.records import schedule_from_json, schedule_to_json

    graph, single = trace(lambda a, b: a @ b, [((70, 48), "bfloat16"), ((48, 40), "bfloat16")])
    (group,) = fuse.plan(graph, device_for("gpu", 132)).groups
    default = default_schedule(group, graph, "gpu", 132)
    points = space(group, graph, "gpu")
    assert isinstance(default, GpuMma) and points[0] == default
    assert len(points) > 1 and all(isinstance(p, GpuMma) for p in points)
    assert schedule_from_json(schedule_to_json(points[-1])) == points[-1]  # tuning records replay it
    rng = np.random.default_rng(3)
    args = [random_array(rng, s, "bfloat16") for s in ((70, 48), (48, 40))]
    want = args[0].astype(np.float64) @ args[1].astype(np.float64)
    program = compile_graph(graph, single, "interp", "mm", {group_key(group, graph): points[-1]})
    assert_close(program(*args), want, "bfloat16", what=f"mm under {points[-1]}")
    f32, _ = trace(lambda a, b: a @ b, [((70, 48), "float32"), ((48, 40), "float32")])
    (g32,) = fuse.plan(f32, device_for("gpu", 132)).groups
    assert not isinstance(default_schedule(g32, f32, "gpu", 132), GpuMma)  # float32: no tensor cores
