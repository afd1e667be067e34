"""Test-wide hooks: the gpu tier skips, with the driver's reason, where no CUDA GPU is
usable; tests compile into a cache directory of their own, never the user's; the torch
backend runs strict (a fallback after a failure raises; tests that expect one turn
strict off and assert it)."""
import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_compile_cache(tmp_path_factory):
    patch = pytest.MonkeyPatch()
    patch.setenv("WARPWEAVE_CACHE_DIR", str(tmp_path_factory.mktemp("compile-cache")))
    yield
    patch.undo()


@pytest.fixture(autouse=True)
def strict_torch_backend(monkeypatch):
    monkeypatch.setenv("WARPWEAVE_STRICT", "1")


def pytest_runtest_setup(item):
    if item.get_closest_marker("gpu") is None:
        return
    from warpweave.backends.cuda import driver

    if not driver.available():
        pytest.skip(f"needs a usable CUDA GPU: {driver.unavailable_reason()}")
