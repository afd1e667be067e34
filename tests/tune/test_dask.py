"""Measuring on a Dask cluster (a local one, in this process): results merge into the
caller's database."""
import pytest

from warpweave.pipeline.autotune import tune_graph
from warpweave.tune.database import Database
from warpweave.tune.executors import DaskExecutor

from .conftest import FAST, softmax, traced

distributed = pytest.importorskip(
    "distributed", reason="the Dask executor needs dask.distributed (the tune and test extras install it)")


def test_tuning_on_a_local_dask_cluster(db_path):
    graph, single = traced(softmax, (16, 64))
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        with DaskExecutor(cluster, "cpu") as executor:
            report = tune_graph(graph, single, "cpu", strategy="random", budget=3, db=db_path,
                                executor=executor, settings=FAST, progress=False)
    assert [(g.trials, g.failed) for g in report.groups] == [(3, 0)]
    trials = Database(db_path).trials()
    assert len(trials) == 3 and {t.status for t in trials} == {"ok"} and {t.strategy for t in trials} == {"random"}
    assert report.program.kernels[0].source == "database"
