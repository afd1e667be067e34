"""Fixtures of the torch frontend's tests."""
import pytest

import warpweave as ww


@pytest.fixture
def products_in_torch():
    """Matrix products stay in PyTorch (option contractions='torch'): for tests about
    what happens around the operations PyTorch runs."""
    with ww.options(contractions="torch"):
        yield
