"""A Dask cluster of worker processes on this host (`warpweave cluster`): tuning
through it merges into one database, and a worker lost mid-sweep loses no trial."""
import pytest

from warpweave.cli.cluster import worker_gpus
from warpweave.errors import ArgumentError
from warpweave.pipeline.autotune import tune_graph
from warpweave.tune.database import Database
from warpweave.tune.executors import DaskExecutor

from .conftest import FAST, softmax, traced

pytest.importorskip("distributed", reason="the cluster needs dask.distributed (the tune and test extras install it)")

from warpweave.tune.cluster import HostCluster  # noqa: E402


def test_worker_gpus_from_the_command_line():
    assert worker_gpus("0,1", None) == ["0", "1"]
    assert worker_gpus("all", 3) == ["", "", ""]
    with pytest.raises(ArgumentError, match="--gpus"):
        worker_gpus("0,x", None)
    with pytest.raises(ArgumentError, match="at least 1"):
        worker_gpus("all", 0)


class _KillingExecutor(DaskExecutor):
    """Kills the cluster's last worker as the second batch of jobs is under way, once the
    first batch's trials are in the database."""

    def __init__(self, cluster, db_path):
        super().__init__(cluster.address, "cpu")
        self.cluster, self.db_path, self.batches, self.before = cluster, db_path, 0, None

    def run(self, jobs):
        self.batches += 1
        for n, (index, result) in enumerate(super().run(jobs)):
            if self.batches == 2 and n == 0:
                self.before = {(t.group_key, t.schedule) for t in Database(self.db_path).trials()}
                self.cluster.kill_worker(len(self.cluster.workers) - 1)
            yield index, result


def test_a_worker_killed_mid_sweep_loses_no_trial(db_path):
    graph, single = traced(softmax, (64, 200))
    db = Database(db_path)
    with HostCluster(["", ""]) as cluster:
        assert len(cluster.workers) == 2 and cluster.address.startswith("tcp://")
        with _KillingExecutor(cluster, db_path) as executor:
            report = tune_graph(graph, single, "cpu", strategy="exhaustive", db=db, executor=executor,
                                settings=FAST, progress=False)
        assert cluster.workers[-1] is None
    assert cluster.workers == []
    trials = db.trials()
    assert executor.batches >= 2 and executor.before  # killed mid-sweep, after trials were recorded
    assert len(trials) > len(executor.before) + 1  # and trials remained to run after the kill
    assert len(trials) == sum(r.trials for r in report.groups) and {t.status for t in trials} == {"ok"}
    assert executor.before <= {(t.group_key, t.schedule) for t in trials}


def test_a_cluster_that_cannot_start_says_why():
    with pytest.raises(ArgumentError, match="at least one worker"):
        HostCluster([])
