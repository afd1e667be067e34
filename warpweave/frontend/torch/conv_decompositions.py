"""Convolutions decomposed where that lets warpweave compile their work.

- A CUDA convolution's bias becomes an addition after it, which fuses into the
  program that reads the result: cuDNN adds it in a kernel of its own (ConvNeXt-T
  inference on the H200, 2026-12-03: 22 bias additions, 0.46 of 6.7 ms).
- A pointwise (1 × 1, stride 1, no padding, one group) convolution on the CPU is a
  matrix product over the pixels, `W[o, c] · x[n, c, p]`, and so is its backward: the
  host BLAS runs it, with what follows fused into the product's program, where
  PyTorch's CPU kernels take a slow path for small channel counts (a tiny ResNet's
  1 × 1 convolutions and their backwards, `_slow_conv2d_*`). As Inductor does.

Each returns NotImplemented where it does not apply: the convolution stays whole.
"""
from __future__ import annotations

import torch

aten = torch.ops.aten


def _pointwise(x, weight, stride, padding, dilation, transposed, groups) -> bool:
    return (x.device.type == "cpu" and not transposed and groups == 1 and x.dim() == 4
            and tuple(weight.shape[2:]) == (1, 1) and all(s == 1 for s in stride)
            and all(p == 0 for p in padding))


def convolution(x, weight, bias, stride, padding, dilation, transposed, output_padding, groups):
    """aten.convolution as a matrix product (CPU, pointwise) or without its bias (CUDA)."""
    if _pointwise(x, weight, stride, padding, dilation, transposed, groups):
        n, c, h, w = x.shape
        y = aten.matmul.default(weight.reshape(weight.shape[0], c), x.reshape(n, c, h * w))
        y = y.reshape(n, weight.shape[0], h, w)
        return y if bias is None else y + bias.reshape(1, -1, 1, 1)
    if bias is None or x.device.type != "cuda":
        return NotImplemented
    y = aten.convolution.default(x, weight, None, stride, padding, dilation, transposed, output_padding, groups)
    return y + bias.reshape([1, -1] + [1] * (y.dim() - 2))


def convolution_backward(grad, x, weight, bias_sizes, stride, padding, dilation, transposed, output_padding,
                         groups, output_mask):
    """The gradients of a pointwise CPU convolution as matrix products: input
    `Wᵀ · g`, weight `Σₙ g[n] · x[n]ᵀ`, bias `Σ g`."""
    if not _pointwise(x, weight, stride, padding, dilation, transposed, groups):
        return NotImplemented
    n, c, h, w = x.shape
    o = weight.shape[0]
    g = grad.reshape(n, o, h * w)
    grad_x = grad_w = grad_b = None
    if output_mask[0]:
        grad_x = aten.matmul.default(weight.reshape(o, c).t(), g).reshape(x.shape)
    if output_mask[1]:
        grad_w = aten.matmul.default(g, x.reshape(n, c, h * w).transpose(1, 2)).sum(0).reshape(weight.shape)
    if output_mask[2]:
        grad_b = grad.sum((0, 2, 3))
    return grad_x, grad_w, grad_b


TABLE = {aten.convolution.default: convolution, aten.convolution_backward.default: convolution_backward}
