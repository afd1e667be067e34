"""ATen matrix products performed on traced tensors: mm, bmm, addmm, baddbmm, mv, dot
and matmul.

Who runs them follows the `contractions` option: "warpweave" converts them, "torch"
leaves them to PyTorch, and "auto" (the default) converts them on the cpu target
(where a contraction group calls the host BLAS with the epilogue fused after it) and
leaves them to PyTorch's cuBLAS on cuda (H200, 2026-12-02: warpweave's tensor-core
kernel ran at 0.34-0.46x cuBLAS on four of five shapes and its fused bias+GELU at
0.50-0.67x Inductor's; benchmarks/RESULTS.md). Like PyTorch, a 16-bit product is
accumulated in float32 and rounded once, after the bias and scaling of addmm and
baddbmm: the operands are widened (the widening folds into the product's loads) and
the result cast to PyTorch's recorded dtype.
"""
from __future__ import annotations

import torch

from ...errors import UnsupportedError
from ...ir import dtypes as dt
from ...options import current
from ..tensor import Tensor, matmul
from .convert import _pointwise, _register, ww_dtype

aten = torch.ops.aten


def _enabled(out) -> None:
    """UnsupportedError (the reason it stays in PyTorch) unless warpweave runs it."""
    mode = current().contractions
    if mode == "torch":
        raise UnsupportedError("matrix products run in PyTorch (option contractions='torch')")
    if mode == "auto" and out.device.type != "cpu":
        raise UnsupportedError(f"matrix products on {out.device.type} run in PyTorch (option "
                               "contractions='auto'; 'warpweave' compiles them)")


def _product(out, a: Tensor, b: Tensor) -> Tensor:
    """a @ b accumulated in the computation dtype of PyTorch's result (float32 for the
    16-bit floats), in that dtype."""
    _enabled(out)
    c = dt.compute_dtype(ww_dtype(out.dtype))
    return matmul(*(x if dt.dtype(x.dtype) == c else x.astype(c) for x in (a, b)))


def _rounded(out, p: Tensor) -> Tensor:
    res = ww_dtype(out.dtype)
    return p if dt.dtype(p.dtype) == res else p.astype(res)


@_register(aten.mm.default, aten.bmm.default, aten.mv.default, aten.dot.default,
           aten.matmul.default)
def _matmul(out, a, b):
    return _rounded(out, _product(out, a, b))


def _scaled_sum(name, out, bias, p, beta, alpha):
    """beta * bias + alpha * p in p's dtype, cast once to PyTorch's result dtype."""
    c = dt.dtype(p.dtype)
    if beta == 0:  # PyTorch ignores the bias then (NaN and infinity included)
        return _pointwise(name, lambda x: x * alpha, out, p, compute=c) if alpha != 1 else _rounded(out, p)

    def fn(x, y):
        x = x if beta == 1 else x * beta
        return x + (y if alpha == 1 else y * alpha)

    return _pointwise(name, fn, out, bias, p, compute=c)


@_register(aten.addmm.default)
def _addmm(out, bias, a, b, *, beta=1, alpha=1):
    return _scaled_sum("addmm", out, bias, _product(out, a, b), beta, alpha)


@_register(aten.baddbmm.default)
def _baddbmm(out, bias, a, b, *, beta=1, alpha=1):
    return _scaled_sum("baddbmm", out, bias, _product(out, a, b), beta, alpha)


@_register(aten.addmv.default)
def _addmv(out, bias, a, v, *, beta=1, alpha=1):
    return _scaled_sum("addmv", out, bias, _product(out, a, v), beta, alpha)
