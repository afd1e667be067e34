"""Where measurements run: one interface, local worker processes or a Dask cluster.

    executor.run(jobs)  ->  yields (index, Result) as each job finishes

`LocalExecutor` keeps one worker process per device (one for the CPU, one per GPU)
and feeds them jobs in parallel. `DaskExecutor` submits each job to a Dask
distributed cluster; on the cluster's workers a job runs in a worker process of its
own just the same (crash isolation), and on the GPU it asks for one unit of the "GPU"
resource, so start each Dask worker with `--resources GPU=1` per GPU it owns (and
CUDA_VISIBLE_DEVICES naming it). Results come back to the caller, which writes them
into its database.
"""
from __future__ import annotations

import abc
import queue
import threading
from typing import Callable, Iterator

from ..errors import ArgumentError
from .measure import Job, Result, Worker


class Executor(abc.ABC):
    @abc.abstractmethod
    def run(self, jobs: list[Job]) -> Iterator[tuple[int, Result]]:
        """(index into `jobs`, its result) for every job, in the order they finish."""

    def close(self) -> None:
        """Release workers."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LocalExecutor(Executor):
    """Worker processes on this machine: `devices` of them (default: one per GPU on
    cuda, one on cpu). `hook` is for tests only: a picklable callable each worker
    process calls with every job before running it (to inject crashes and hangs)."""

    def __init__(self, target: str, devices: int | None = None,
                 hook: Callable[[Job], None] | None = None):
        if target not in ("cpu", "cuda"):
            raise ArgumentError(f"target {target!r} cannot be tuned (tunable: cpu, cuda)")
        if devices is None:
            devices = 1
            if target == "cuda":
                from ..backends.cuda import driver

                devices = driver.device_count()
        self.workers = [Worker(target, ordinal, hook) for ordinal in range(devices)]

    @property
    def restarts(self) -> int:
        return sum(w.restarts for w in self.workers)

    def run(self, jobs):
        """`jobs` may be any iterable, a generator included: each is taken when a
        worker is free (so measuring overlaps whatever produces them)."""
        if len(self.workers) == 1:
            for n, job in enumerate(jobs):
                yield n, self.workers[0].run(job)
            return
        source = enumerate(jobs)
        lock = threading.Lock()
        done: queue.Queue = queue.Queue()

        def feed(worker: Worker):
            try:
                while True:
                    with lock:
                        item = next(source, None)
                    if item is None:
                        return
                    n, job = item
                    try:
                        done.put((n, worker.run(job)))
                    except Exception as exc:  # noqa: BLE001 - a worker that cannot start
                        done.put((n, Result("failed", error=f"{type(exc).__name__}: {exc}")))
            except BaseException as exc:  # noqa: BLE001 - the job source failed: raised below
                done.put(exc)
            finally:
                done.put(None)

        threads = [threading.Thread(target=feed, args=(w,), daemon=True) for w in self.workers]
        for t in threads:
            t.start()
        running = len(threads)
        while running:
            item = done.get()
            if item is None:
                running -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
        for t in threads:
            t.join()

    def close(self):
        for w in self.workers:
            w.stop()


_REMOTE: dict[tuple, Worker] = {}
_REMOTE_LOCK = threading.Lock()


def measure_remotely(job: Job) -> Result:
    """A Dask task: measure `job` in this Dask worker's measurement process (started on
    first use, one per target; jobs on one Dask worker run one at a time)."""
    key = (job.candidate.target,)
    with _REMOTE_LOCK:
        worker = _REMOTE.get(key)
        if worker is None:
            worker = _REMOTE[key] = Worker(job.candidate.target)
        return worker.run(job)


class DaskExecutor(Executor):
    """Jobs submitted to a Dask distributed cluster: `cluster` is a scheduler address
    ("tcp://host:8786"), a `distributed.Client`, or a cluster object (LocalCluster)."""

    def __init__(self, cluster, target: str):
        from distributed import Client

        if target not in ("cpu", "cuda"):
            raise ArgumentError(f"target {target!r} cannot be tuned (tunable: cpu, cuda)")
        self.target = target
        self._own = not isinstance(cluster, Client)
        self.client = Client(cluster) if self._own else cluster

    def run(self, jobs):
        from distributed import as_completed

        resources = {"GPU": 1} if self.target == "cuda" else None
        futures = {self.client.submit(measure_remotely, job, pure=False, resources=resources): n
                   for n, job in enumerate(jobs)}
        for future in as_completed(futures):
            try:
                result = future.result()
            except Exception as exc:  # noqa: BLE001 - a lost Dask worker: the trial failed
                result = Result("failed", error=f"dask: {type(exc).__name__}: {exc}")
            yield futures[future], result

    def close(self):
        if self._own:
            self.client.close()
