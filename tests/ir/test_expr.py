import math

import numpy as np
import pytest

from warpweave.errors import DTypeError, IRError
from warpweave.ir import dtypes as dt
from warpweave.ir import expr as ex
from warpweave.ir import simplify as sx

b, t, v = ex.Var("b"), ex.Var("t"), ex.Var("v")
RANGES = {"b": (0, 99), "t": (0, 255), "v": (0, 3)}


def test_structural_equality_and_hash():
    e1 = (t * 4 + v) // 8
    e2 = (ex.Var("t") * 4 + ex.Var("v")) // 8
    assert e1 == e2 and hash(e1) == hash(e2)
    assert e1 != (t * 4 + v) // 4
    assert {e1: 1}[e2] == 1
    assert ex.Const(0.0, dt.float32) != ex.Const(-0.0, dt.float32)
    assert ex.Const(math.nan, dt.float32) == ex.Const(math.nan, dt.float32)


def test_immutable():
    with pytest.raises(AttributeError):
        t.name = "u"


def test_dtype_rules():
    f = ex.Var("x", dt.float32)
    with pytest.raises(DTypeError):
        ex.Binary("add", f, t)
    with pytest.raises(DTypeError):
        ex.unary("exp", t)
    assert ex.binary("lt", t, 3).dtype == dt.bool_
    with pytest.raises(IRError):
        ex.Unary("nope", f)


def test_simplify_folds_and_normalizes():
    assert sx.simplify(t - t + 3) == ex.Const(3, dt.INDEX)
    assert sx.simplify(ex.const(2.0, dt.float32) * ex.const(3.0, dt.float32)) == ex.Const(6.0, dt.float32)
    assert sx.simplify((t * 8 + v) // 8, RANGES) == t
    assert sx.simplify((t * 8 + v) % 8, RANGES) == v
    flat = (b * 256 + t) * 4 + v
    assert sx.simplify(flat // 4096, RANGES) == b // 4


def test_simplify_merges_unflatten_then_relinearize():
    f = b * 256 + t
    assert sx.simplify((f // 3) * 3 + f % 3) == sx.simplify(f)
    assert sx.simplify(((f // 7) * 7 + f % 7) * 2 + 1) == sx.simplify(f * 2 + 1)


@pytest.mark.parametrize("vector", [1, 4, 8])
def test_simplify_merges_a_four_axis_unflatten_into_the_flat_index(vector):
    """A contiguous [64, 12, 197, 197] tensor read through its four axes indexes
    memory at the flat position again, whatever the ranges made of `q // 465708`;
    the bounds check then proves the access in range."""
    g = ex.Var("g")
    q = g * (256 * vector) + t * vector + v
    index = ((q // 197) % 197) * 197 + ((q // 38809) % 12) * 38809 + q % 197 + (q // 465708) * 465708
    ranges = {"g": (0, 29805568 // (256 * vector)), "t": (0, 255), "v": (0, vector - 1)}
    assert sx.simplify(index, ranges) == sx.simplify(q, ranges)
    assert sx.bounds_under(index, ex.binary("lt", q, 29805312), ranges) == (0, 29805311)
    rng = np.random.default_rng(0)
    env = {"g": rng.integers(0, 29000, 1000), "t": rng.integers(0, 256, 1000), "v": rng.integers(0, vector, 1000)}
    np.testing.assert_array_equal(ex.evaluate(index, env), ex.evaluate(q, env))


def test_bounds_under_a_predicate():
    """An access guarded by `k·256 + t < 4097` stays inside a 4096×4097 buffer."""
    k = ex.Var("k")
    ranges = {"g": (0, 4095), "k": (0, 16), "t": (0, 255)}
    g = ex.Var("g")
    offset = g * 4097 + k * 256 + t
    pred = ex.binary("lt", k * 256 + t, 4097)
    assert sx.bounds(offset, ranges)[1] >= 4096 * 4097
    assert sx.bounds_under(offset, pred, ranges) == (0, 4096 * 4097 - 1)
    both = ex.Binary("and", ex.binary("lt", t % 32 + g * 32, 100), ex.binary("lt", k * 2 + t // 32, 30))
    off = (k * 2 + t // 32) * 100 + t % 32 + g * 32  # a tile of a transpose: rows * 100 + column
    assert sx.bounds_under(off, both, ranges) == (0, 29 * 100 + 99)
    # `t·4 < 768` leaves t·4 ≤ 764 (a multiple of 4), so the vector lane v < 4 fits
    v = ex.Var("v")
    lanes = {**ranges, "v": (0, 3)}
    assert sx.bounds_under(k * 768 + t * 4 + v, ex.binary("lt", t * 4, 768), lanes) == (0, 16 * 768 + 767)


def test_bounds_under_split_flattened_index_and_overhanging_tile():
    """Two accesses whose plain bounds overshoot (H200, 2026-12-03: ResNet-50's batch
    norm statistics and a channels-last max pool fell back to PyTorch): a flattened
    k·256 + t split by // and % (a statistic over [8, 256, 56, 56] in 4-lane vectors),
    and a transpose tile of 64 rows over 56 (t // 32 + 8q < 56)."""
    k, g, q = ex.Var("k"), ex.Var("g"), ex.Var("q")
    f = k * 256 + t
    off = (f % 784) * 4 + (f // 784) * 802816 + g * 3136 + v
    ranges = {"k": (0, 24), "t": (0, 255), "g": (0, 255), "v": (0, 3)}
    pred = ex.binary("lt", (k * 256 + t) * 4, 25088)
    assert sx.bounds_under(off, pred, ranges)[1] >= 8 * 256 * 3136
    assert sx.bounds_under_split(off, pred, ranges) == (0, 8 * 256 * 3136 - 1)
    tile = g * 3584 + q * 512 + t * 2 + v
    ranges = {"g": (0, 3583), "q": (0, 7), "t": (0, 255), "v": (0, 1)}
    rows = ex.binary("lt", t // 32 + q * 8, 56)
    assert sx.bounds_under(tile, rows, ranges)[1] >= 3584 * 3584
    assert sx.bounds_under_split(tile, rows, ranges) == (0, 3584 * 3584 - 1)


def test_bounds_under_split_through_a_remainder():
    """A row group of 16-element rows, 16 threads a row, two chunks a pass: element
    g·128 + t + 16 v where (t % 16) + 16 v < 16 (H200 sweep, 2026-12-03: 16 points of a
    [2^20, 16] layer norm's space failed verification on this)."""
    g, c = ex.Var("g"), ex.Var("c")
    off = g * 128 + t + c * 16
    ranges = {"g": (0, 8191), "t": (0, 127), "c": (0, 1)}
    pred = ex.binary("lt", t % 16 + c * 16, 16)
    assert sx.bounds_under(off, pred, ranges)[1] >= 8192 * 128
    assert sx.bounds_under_split(off, pred, ranges) == (0, 8192 * 128 - 1)


@pytest.mark.parametrize("seed", range(40))
def test_bounds_under_split_contains_every_point_the_predicate_admits(seed):
    """Random flattened, split and tiled accesses under random predicates: the bounds
    hold every value the access takes where its predicate holds (exhaustively)."""
    rng = np.random.default_rng(seed)
    k, q = ex.Var("k"), ex.Var("q")
    ranges = {"k": (0, int(rng.integers(1, 9))), "q": (0, int(rng.integers(0, 4))),
              "t": (0, int(rng.choice([31, 63, 127]))), "v": (0, int(rng.choice([0, 1, 3])))}
    block, m = int(rng.choice([16, 32, 64])), int(rng.integers(3, 90))
    flat = k * block + t
    candidates = [(flat % m) * int(rng.integers(1, 5)) + (flat // m) * int(rng.integers(50, 400)) + v,
                  q * int(rng.integers(1, 300)) + t * int(rng.integers(1, 4)) + v + k * 7,
                  (t // 32) * int(rng.integers(1, 90)) + t % 32 + q * 5 - k]
    preds = [ex.binary("lt", flat * int(rng.integers(1, 5)), int(rng.integers(1, 1200))),
             ex.binary("le", t // 32 + q * int(rng.integers(1, 9)), int(rng.integers(0, 12))),
             ex.Binary("and", ex.binary("lt", flat, int(rng.integers(1, 700))),
                       ex.binary("lt", t // 16 + k, int(rng.integers(1, 20))))]
    names = list(ranges)
    grids = np.meshgrid(*[np.arange(lo, hi + 1) for lo, hi in ranges.values()], indexing="ij")
    env = dict(zip(names, grids))
    for off in candidates:
        for pred in preds:
            values = np.broadcast_to(ex.evaluate(off, env), grids[0].shape)
            holds = np.broadcast_to(ex.evaluate(pred, env), grids[0].shape)
            got = sx.bounds_under_split(off, pred, ranges)
            if holds.any():
                assert got is not None
                assert got[0] <= values[holds].min() and values[holds].max() <= got[1], \
                    (ex.to_text(off), ex.to_text(pred), got)


def test_divisor():
    assert sx.divisor((b * 256 + t) * 4, 16) == 4
    assert sx.divisor(((b * 256 + t) * 4) % 4096 + b * 8192, 16) == 4
    assert sx.divisor(t * 4 + 2, 16) == 2
    assert sx.divisor(t + 1, 16) == 1


def test_simplify_decides_comparisons_from_ranges():
    flat = (b * 256 + t) * 4 + v
    assert sx.simplify(ex.binary("lt", flat, 100 * 1024), RANGES) == ex.Const(True, dt.bool_)
    assert sx.simplify(ex.binary("ge", flat, 0), RANGES) == ex.Const(True, dt.bool_)
    undecided = sx.simplify(ex.binary("lt", flat, 1000), RANGES)
    assert not isinstance(undecided, ex.Const)


def test_stride_and_affine():
    flat = (b * 256 + t) * 4 + v
    assert sx.stride(flat % 4096, "v", RANGES) == 1
    assert sx.stride(flat // 4096, "v", RANGES) == 0
    assert sx.stride(flat, "t", RANGES) == 4
    coeffs, rest = sx.affine(flat * 2 + 7, ["t", "v"], RANGES)
    assert coeffs == {"t": 8, "v": 2}
    assert sx.simplify(rest - (b * 2048 + 7)) == ex.Const(0, dt.INDEX)
    assert sx.affine((t * t), ["t"]) is None


@pytest.mark.parametrize("seed", range(5))
def test_simplify_preserves_value(seed):
    """Random index expressions evaluate the same before and after simplification."""
    rng = np.random.default_rng(seed)
    env = {"b": rng.integers(0, 100, 64), "t": rng.integers(0, 256, 64), "v": rng.integers(0, 4, 64)}
    leaves = [b, t, v]
    for _ in range(30):
        e = leaves[rng.integers(3)]
        for _ in range(rng.integers(1, 6)):
            k = int(rng.integers(1, 40))
            op = rng.choice(["add", "mul", "floordiv", "mod", "sub_pos"])
            if op == "add":
                e = e + leaves[rng.integers(3)] * k
            elif op == "mul":
                e = e * k
            elif op == "floordiv":
                e = e // k
            elif op == "mod":
                e = e % k
            else:
                e = (e + k) - k
        s = sx.simplify(e, RANGES)
        np.testing.assert_array_equal(np.broadcast_to(ex.evaluate(e, env), (64,)),
                                      np.broadcast_to(ex.evaluate(s, env), (64,)), err_msg=str(e))


def test_bounds():
    assert sx.bounds((t * 4 + v) % 16, RANGES) == (0, 15)
    assert sx.bounds(t * 4 + v, RANGES) == (0, 1023)
    assert sx.bounds(t + ex.Var("unknown"), RANGES) is None


def test_bounds_of_a_division_by_a_positive_range():
    """A grouped tile order divides by min(rows left, group): sound bounds, checked on
    every point; a divisor that may be zero or negative stays unbounded."""
    g = ex.Var("g")
    rows = ex.binary("min", ex.as_index(17) - (g // 104) * 8, ex.as_index(8))
    ranges = {"g": (0, 220)}
    for e in ((g % 104) // rows, (g % 104) % rows):
        lo, hi = sx.bounds(e, ranges)
        values = ex.evaluate(e, {"g": np.arange(221)})
        assert lo <= values.min() and values.max() <= hi
    assert sx.bounds((g % 104) // rows, ranges) == (0, 103)
    assert sx.bounds(g // (g % 3), ranges) is None


def test_substitute_and_free_vars():
    e = ex.Load("x", (t + 1, v), dt.float32)
    s = ex.substitute(e, {"t": b * 2})
    assert ex.free_vars(s) == {"b", "v"}
    r = ex.Reduce("sum", ex.Load("x", (t, ex.Var("k")), dt.float32), (ex.Var("k"),), (8,))
    assert ex.free_vars(r) == {"t"}


def test_text():
    e = ex.select(ex.binary("lt", t, 3), ex.Var("x", dt.float32), ex.const(1.5, dt.float32))
    assert ex.to_text(e) == "select(lt(t, 3), x:float32, 1.5:float32)"
    assert ex.to_text((t + 1) * 2) == "((t + 1) * 2)"


def test_equal_trees_of_shared_subexpressions_compare_in_linear_time(monkeypatch):
    """Two distinct but equal expressions, each a chain of 40 doublings of one shared
    sub-expression (an unrolled recurrence's shape: 2^40 paths), compare by a number
    of key comparisons linear in the depth: equal sub-expressions are joined once found."""
    from warpweave.ir import expr as ex

    x, y = ex.Var("x"), ex.Var("x")
    for _ in range(40):
        x, y = ex.binary("add", x, x), ex.binary("add", y, y)
    calls = []
    key = ex.Binary._key
    monkeypatch.setattr(ex.Binary, "_key", lambda self: calls.append(1) or key(self))
    assert x == y and x is not y
    assert len(calls) <= 4 * 41  # a hash and a comparison of each node, on both sides
    assert x != ex.binary("add", y, ex.as_index(1)) and hash(x) == hash(y)
    calls.clear()
    assert ex.binary("mul", x, y) == ex.binary("mul", y, x) and len(calls) <= 4  # already joined


def test_expressions_pickle_without_recursion():
    """Deep chains (an unrolled recurrence's) and reductions (whose axes are no
    children) round-trip through pickle, equal and with equal hashes."""
    import pickle

    from warpweave.ir import dtypes as dt
    from warpweave.ir import expr as ex

    x = ex.Var("x")
    for _ in range(3000):
        x = ex.binary("add", ex.binary("mul", x, ex.as_index(3)), ex.as_index(1))
    back = pickle.loads(pickle.dumps(x))
    assert back == x and back is not x and hash(back) == hash(x)
    load = ex.Load("t", (ex.Var("i"), ex.Var("r0")), dt.float32)
    red = ex.Reduce("sum", load, (ex.Var("r0"),), (7,))
    again = pickle.loads(pickle.dumps(red))
    assert again == red and again.axes == red.axes and again.extents == (7,)
