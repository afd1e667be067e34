"""Shared fixtures of the tuning tests: a small CPU tuning setup."""
import numpy as np
import pytest

import warpweave as ww
from warpweave.frontend.jit import spec_of
from warpweave.frontend.trace import trace
from warpweave.tune.measure import Settings

FAST = Settings(warmup=1, repeat=3, timeout_s=20.0, flush_bytes=1 << 20)


def softmax(x):
    return ww.softmax(x, axis=-1)


def traced(fn, *shapes):
    return trace(fn, [spec_of(np.zeros(s, np.float32)) for s in shapes])


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "tuning.db")
