"""Frontends: numpy-style tracing and its op library, tensor expressions, `jit`, and the
PyTorch backend (`frontend.torch`). Each builds a tensor graph (`warpweave.ir.tensor`)
and hands it to the pipeline."""
from . import numpy_api  # noqa: F401  (registers numpy's protocols on traced tensors)
