"""The `torch.compile` backend: FX/ATen conversion to tensor graphs, graph partitioning with fallback to PyTorch, and the Dynamo entry point. Public entry point: `warpweave.torch`."""
from . import convert_index, convert_math, convert_misc, convert_pool  # noqa: F401 - they register their converters
