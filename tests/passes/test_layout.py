"""Intermediates stored in the order of the program's permuted outputs
(warpweave.passes.layout): channels-last programs compute in channels-last order,
with the same values; graphs whose outputs disagree, or keep their innermost axis,
are left alone."""
import numpy as np

import warpweave as ww
from warpweave.frontend.te import build_graph
from warpweave.ir.tensor import evaluate
from warpweave.passes.layout import follow_output_layout


def _channels_last_program(n=2, c=3, h=7, w=5):
    """relu(x·2 + b[c]) and its 3 x 3 window max, both returned channels-last."""
    X = ww.placeholder((n, c, h, w), "float64", name="X")
    B = ww.placeholder((c,), "float64", name="B")
    Y = ww.compute((n, c, h, w), lambda i, j, k, l_: ww.maximum(X[i, j, k, l_] * 2.0 + B[j], 0.0), name="Y")
    r, s = ww.reduce_axis(3), ww.reduce_axis(3)
    P = ww.compute((n, c, h - 2, w - 2), lambda i, j, k, l_: ww.max(Y[i, j, k + r, l_ + s], axis=(r, s)), name="P")
    Y_out = ww.compute((n, h, w, c), lambda i, k, l_, j: Y[i, j, k, l_], name="Y_out")
    P_out = ww.compute((n, h - 2, w - 2, c), lambda i, k, l_, j: P[i, j, k, l_], name="P_out")
    return build_graph([Y_out, P_out], [X, B])


def _values(graph, rng):
    x, b = rng.standard_normal((2, 3, 7, 5)), rng.standard_normal(3)
    got = evaluate(graph, {"X": x, "B": b})
    return [got[o] for o in graph.outputs]


def test_intermediates_follow_the_outputs_channels_last_order():
    graph = _channels_last_program()
    laid = follow_output_layout(graph)
    assert laid["Y"].shape == (2, 7, 5, 3)  # read by the pool and the output: stored channels-last
    assert "P" not in laid.ops and laid["P_out"].reduce is not None  # the output computes the pool
    assert laid["P_out"].kind == "reduction-column"  # a thread per output, channels adjacent
    rng = np.random.default_rng(0)
    want = _values(graph, rng)
    got = _values(laid, np.random.default_rng(0))
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_graphs_whose_outputs_disagree_or_keep_the_innermost_axis_are_left_alone():
    X = ww.placeholder((2, 3, 4, 5), "float64", name="X")
    Y = ww.compute((2, 3, 4, 5), lambda i, j, k, l_: X[i, j, k, l_] * 2.0, name="Y")
    heads = ww.compute((2, 4, 3, 5), lambda i, k, j, l_: Y[i, j, k, l_], name="heads")  # innermost kept
    graph = build_graph([heads], [X])
    assert follow_output_layout(graph) is graph
    last = ww.compute((2, 4, 5, 3), lambda i, k, l_, j: Y[i, j, k, l_], name="last")
    plain = ww.compute((2, 3, 4, 5), lambda i, j, k, l_: Y[i, j, k, l_] + 1.0, name="plain")
    graph = build_graph([last, plain], [X])  # one output channels-last, one not
    assert follow_output_layout(graph) is graph


def test_programs_with_long_rows_along_the_innermost_axis_are_left_alone():
    """A softmax over rows of 40 whose result is returned channels-last keeps its rows
    in memory order."""
    X = ww.placeholder((2, 3, 4, 40), "float64", name="X")
    r = ww.reduce_axis(40)
    S = ww.compute((2, 3, 4), lambda i, j, k: ww.sum(ww.exp(X[i, j, k, r]), axis=r), name="S")
    P = ww.compute((2, 3, 4, 40), lambda i, j, k, l_: ww.exp(X[i, j, k, l_]) / S[i, j, k], name="P")
    out = ww.compute((2, 4, 40, 3), lambda i, k, l_, j: P[i, j, k, l_], name="out")
    graph = build_graph([out], [X])
    assert follow_output_layout(graph) is graph
