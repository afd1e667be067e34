"""torch.compile(mode="max-autotune") tunes every group the database lacks."""
import numpy as np
import pytest

from warpweave.tune.database import Database

torch = pytest.importorskip(
    "torch", reason="the torch.compile backend needs PyTorch (.ci/run installs torch==2.13.0, the CPU build)")


def test_max_autotune_fills_the_database(db_path, monkeypatch):
    monkeypatch.setenv("WARPWEAVE_TUNING_DB", db_path)
    x = torch.randn(8, 48)
    fn = torch.compile(lambda t: torch.softmax(t, dim=-1), backend="warpweave",
                       options={"target": "cpu", "mode": "max-autotune"})
    np.testing.assert_allclose(fn(x).numpy(), torch.softmax(x, dim=-1).numpy(), rtol=1e-5, atol=1e-6)
    trials = Database(db_path).trials()
    assert trials and {t.status for t in trials} == {"ok"} and {t.strategy for t in trials} == {"model"}
