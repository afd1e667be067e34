"""Repeated computations made once (warpweave.passes.cse): batch norm's two sums of
its input become one; outputs stay; values do not change."""
import numpy as np

import warpweave as ww
from warpweave.frontend.te import build_graph
from warpweave.ir.tensor import evaluate
from warpweave.passes.cse import merge_duplicates


def _statistics():
    """The variance's mean and the mean, summed apart as PyTorch decomposes them."""
    X = ww.placeholder((2, 3, 4, 5), "float64", name="X")

    def total(name):
        r, s, t = ww.reduce_axis(2, "r0"), ww.reduce_axis(4, "r1"), ww.reduce_axis(5, "r2")
        return ww.compute((3,), lambda c: ww.sum(X[r, c, s, t], axis=(r, s, t)), name=name)
    a, b = total("a"), total("b")
    centred = ww.compute((2, 3, 4, 5), lambda n, c, h, w: X[n, c, h, w] - a[c] / 40.0, name="centred")
    square = ww.compute((2, 3, 4, 5), lambda n, c, h, w: centred[n, c, h, w] * centred[n, c, h, w], name="sq")
    r, s, t = ww.reduce_axis(2, "r0"), ww.reduce_axis(4, "r1"), ww.reduce_axis(5, "r2")
    var = ww.compute((3,), lambda c: ww.sum(square[r, c, s, t] / 40.0, axis=(r, s, t)), name="var")
    mean = ww.compute((3,), lambda c: b[c] / 40.0, name="mean")
    again = ww.compute((3,), lambda c: b[c] / 40.0, name="again")  # an output equal to another
    return build_graph([var, mean, again], [X])


def test_a_repeated_sum_is_made_once_and_outputs_stay():
    graph = _statistics()
    merged = merge_duplicates(graph)
    assert "b" not in merged.ops and "a" in merged.ops
    assert list(merged.outputs) == list(graph.outputs) and "again" in merged.ops
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    want, got = evaluate(graph, {"X": x}), evaluate(merged, {"X": x})
    for name in graph.outputs:
        np.testing.assert_array_equal(got[name], want[name])
    np.testing.assert_allclose(got["var"], x.var(axis=(0, 2, 3)), rtol=1e-12)


def test_a_graph_without_repeats_is_returned_as_it_is():
    X = ww.placeholder((4,), "float32", name="X")
    y = ww.compute((4,), lambda i: X[i] * 2.0, name="y")
    graph = build_graph([y], [X])
    assert merge_duplicates(graph) is graph
