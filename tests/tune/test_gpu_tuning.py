"""Real tuning on the GPU: candidates compiled in a pool of processes (each linking its
cubins with the driver) and measured in the worker give the trials compiling here gives,
and later compiles take the winner."""
import numpy as np
import pytest

import warpweave as ww
from warpweave.tune.database import Database

from .conftest import FAST, softmax


@pytest.mark.gpu
def test_cuda_tuning_in_a_compile_pool_matches_compiling_here(tmp_path):
    x = np.random.default_rng(0).standard_normal((512, 1000)).astype(np.float32)
    statuses = {}
    for jobs in (0, 2):
        db_path = str(tmp_path / f"{jobs}.db")
        report = ww.tune(softmax, x, target="cuda", strategy="exhaustive", budget=6, db=db_path, settings=FAST,
                         progress=False, jobs=jobs)
        [group] = report.groups
        trials = Database(db_path).trials()
        statuses[jobs] = [(t.schedule, t.status, t.is_default) for t in trials]
        assert group.trials == len(trials) == 6 and group.failed == 0 and group.best_us <= group.default_us
        assert all(t.median_us > 0 and t.estimate_us > 0 for t in trials)
        assert [k.source for k in report.program.kernels] == ["database"]
        got = np.asarray(report.program(x))
        np.testing.assert_allclose(got, np.exp(x) / np.exp(x).sum(-1, keepdims=True), rtol=1e-5, atol=1e-7)
    assert statuses[0] == statuses[2]
