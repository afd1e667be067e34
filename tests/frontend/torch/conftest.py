"""Fixtures of the torch frontend's tests."""
import pytest

import warpweave as ww


@pytest.fixture
def products_in_torch():
    """Matrix products stay in PyTorch (option contractions='torch'): for tests about
    what happens around the operations PyTorch runs."""
    with ww.options(contractions="torch"):
        yield


@pytest.fixture
def torch_cuda():
    """The CUDA device for GPU-tier torch tests. The tier's own hook (tests/conftest.py)
    already skips where the driver finds no GPU; this skips where the GPU is there but
    the installed PyTorch is a CPU build, which cannot hand CUDA tensors to the backend."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip(f"PyTorch {torch.__version__} has no CUDA support; the GPU tier's torch tests "
                    "need a CUDA build")
    return torch.device("cuda")
