"""Nothing silently wrong: index arithmetic, element counts, ndarray subclasses,
verify=False, torch CPU tensors."""
import numpy as np
import pytest

import warpweave as ww


@pytest.mark.parametrize("index,message", [
    (lambda i: i // 0, r"\(i0 // 0\) divides by zero"),
    (lambda i: i % (i - 5), r"\(i0 % \(i0 - 5\)\) divides by zero \(the divisor \(i0 - 5\) ranges over -5..58\)"),
    (lambda i: i * (1 << 62) * 8, r"overflows int64"),
])
def test_bad_index_arithmetic_is_an_error_naming_the_expression(index, message):
    A = ww.placeholder((64,), "float32", name="A")
    with pytest.raises(ww.ShapeError, match=r"compute B: .*" + message):
        ww.compute((64,), lambda i: A[index(i)], name="B")


def test_division_by_a_reduce_axis_that_reaches_zero():
    A = ww.placeholder((8,), "float32", name="A")
    k = ww.reduce_axis(8, name="k")
    with pytest.raises(ww.ShapeError, match="divides by zero"):
        ww.compute((1,), lambda i: ww.sum(A[k // k], axis=k))


def test_element_counts_beyond_int64_are_shape_errors():
    with pytest.raises(ww.ShapeError, match="18446744073709551616 elements"):
        ww.placeholder((1 << 32, 1 << 32), "float32")
    A = ww.placeholder((1 << 31, 1 << 31), "float32", name="A")
    k = ww.reduce_axis(1 << 31)
    with pytest.raises(ww.ShapeError, match="iteration space"):
        ww.compute((1 << 31, 1 << 31), lambda i, j: ww.sum(A[i, k], axis=k))


@pytest.mark.parametrize("make,hint", [
    (lambda: np.matrix([[1.0, 2.0]], dtype=np.float32), r"numpy.matrix.*np.asarray\(x\)"),
    (lambda: np.ma.masked_array(np.ones(3, np.float32), [0, 1, 0]), r"MaskedArray.*x.filled"),
    (lambda: np.ones(3, np.float32).view(np.recarray), r"recarray"),
])
@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_ndarray_subclasses_are_refused(make, hint):
    f = ww.jit(lambda a: a * 2.0, target="cpu")
    with pytest.raises(ww.ArgumentError, match="argument 0 of <lambda> is a .*" + hint):
        f(make())
    A = ww.placeholder(make().shape, "float32", name="A")
    program = ww.build(ww.compute(A.shape, lambda *i: A[i] * 2.0), [A], target="interp")
    with pytest.raises(ww.ArgumentError, match="subclass"):
        program(make())


def test_verify_false_still_proves_bounds():
    A = ww.placeholder((64,), "float32", name="A")
    B = ww.compute((64,), lambda i: A[i + 1000000], name="B")
    with ww.options(verify=False), pytest.raises(ww.VerificationError, match="out-of-bounds load"):
        ww.build(B, [A], target="cpu")
