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


@pytest.mark.gpu
def test_the_worker_launches_tensor_map_parameters():
    """A candidate whose stages TMA fills runs in the measurement worker's launcher
    (kernel by kernel, the maps passed by reference) and computes the product."""
    from warpweave.backends.cuda import driver
    from warpweave.backends.cuda.codegen import compile_ptx
    from warpweave.lower.mma import lower_mma
    from warpweave.schedule.mma import GpuMma
    from warpweave.tune.measure import Settings, _CudaBench, make_artifact, make_inputs

    from ..lower.test_mma import _gemm

    if not driver.available() or driver.device().compute_capability != (9, 0):
        pytest.skip("TMA and wgmma need an sm_90 GPU")
    c, shapes, _ = _gemm(200, 136, 88, True, False)
    kernels = lower_mma(c, GpuMma(64, 128, 64, 1, 1, 3, instr="wgmma", loader="tma"), shapes)
    artifact = make_artifact("cuda", kernels, [1] * len(kernels), {"a", "b"}, {"out"},
                             compile_ptx(kernels, "sm_90")[1].encode())
    assert [len(l.maps) for l in artifact.launches] == [2]
    inputs = make_inputs(artifact, seed=3)
    outputs, _ = _CudaBench(0).run(artifact, inputs, Settings(warmup=0, repeat=1), timed=False)
    a = inputs["a"].astype(np.float64).reshape(shapes["a"]).T
    want = a @ inputs["b"].astype(np.float64).reshape(shapes["b"])
    np.testing.assert_allclose(outputs["out"].reshape(want.shape), want, rtol=1e-5, atol=1e-4)
