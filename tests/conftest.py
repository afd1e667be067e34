"""Test-wide hooks: the gpu tier skips, with the driver's reason, where no CUDA GPU is usable."""
import pytest


def pytest_runtest_setup(item):
    if item.get_closest_marker("gpu") is None:
        return
    from warpweave.backends.cuda import driver

    if not driver.available():
        pytest.skip(f"needs a usable CUDA GPU: {driver.unavailable_reason()}")
