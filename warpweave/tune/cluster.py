"""A Dask cluster on this host for tuning: a scheduler (or an existing one joined) and
one worker process per GPU, each seeing only its GPU (`CUDA_VISIBLE_DEVICES`) and
declaring one unit of the "GPU" resource that `DaskExecutor` asks for, one task at a
time. `warpweave cluster` runs it from the shell; on a cluster of hosts, run it with
`--scheduler` on every host but the scheduler's.

    with HostCluster(gpus=["0", "1"]) as cluster:
        with DaskExecutor(cluster.address, "cuda") as executor: ...

Processes are started as programs of their own (`python -m distributed.cli...`), in
sessions of their own, so that one worker can be stopped alone (`kill_worker`), as a
lost host would be.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from ..errors import ArgumentError, TargetError


class HostCluster:
    """`gpus`: one entry per worker, the `CUDA_VISIBLE_DEVICES` it gets ("" for a CPU
    worker; the same GPU twice makes two workers share it). `scheduler`: an address to
    join instead of starting one here. `host`: the interface the scheduler listens on."""

    def __init__(self, gpus: list[str], scheduler: str | None = None, host: str = "127.0.0.1",
                 port: int = 0, start_timeout_s: float = 60.0):
        if not gpus:
            raise ArgumentError("a cluster needs at least one worker (gpus=[...])")
        self.gpus = list(gpus)
        self.joined = scheduler
        self.host, self.port = host, port
        self.timeout_s = start_timeout_s
        self.address: str | None = scheduler
        self._dir = tempfile.TemporaryDirectory(prefix="warpweave-cluster-")
        self._scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen | None] = []

    def start(self) -> "HostCluster":
        if self.joined is None:
            self._start_scheduler()
        for n, gpu in enumerate(self.gpus):
            self.workers.append(self._start_worker(n, gpu))
        self._wait_for_workers(len(self.gpus))
        return self

    def _spawn(self, args: list[str], env: dict[str, str], log: str) -> subprocess.Popen:
        out = open(os.path.join(self._dir.name, log), "wb")
        return subprocess.Popen([sys.executable, "-m", *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def _start_scheduler(self) -> None:
        path = os.path.join(self._dir.name, "scheduler.json")
        self._scheduler = self._spawn(
            ["distributed.cli.dask_scheduler", "--host", self.host, "--port", str(self.port),
             "--no-dashboard", "--scheduler-file", path], dict(os.environ), "scheduler.log")
        deadline = time.monotonic() + self.timeout_s
        while not os.path.exists(path):
            if self._scheduler.poll() is not None or time.monotonic() > deadline:
                raise TargetError(f"the Dask scheduler did not start: {self.log('scheduler.log')}")
            time.sleep(0.1)
        time.sleep(0.1)  # the file is written whole, but give the writer its close
        with open(path) as f:
            self.address = json.load(f)["address"]

    def _start_worker(self, n: int, gpu: str) -> subprocess.Popen:
        env = dict(os.environ)
        if gpu:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        return self._spawn(
            ["distributed.cli.dask_worker", self.address, "--nthreads", "1", "--nworkers", "1",
             "--resources", "GPU=1", "--name", f"warpweave-{n}-gpu{gpu or 'none'}", "--no-dashboard",
             "--local-directory", os.path.join(self._dir.name, f"worker{n}")], env, f"worker{n}.log")

    def _wait_for_workers(self, n: int) -> None:
        from distributed import Client

        with Client(self.address, timeout=self.timeout_s) as client:
            try:
                client.wait_for_workers(n, timeout=self.timeout_s)
            except TimeoutError:
                logs = "; ".join(self.log(f"worker{k}.log") for k in range(len(self.workers)))
                raise TargetError(f"only {len(client.scheduler_info()['workers'])} of {n} Dask workers "
                                     f"joined {self.address} in {self.timeout_s:.0f} s: {logs}") from None

    def log(self, name: str) -> str:
        """The last lines a process of this cluster wrote."""
        try:
            with open(os.path.join(self._dir.name, name), "rb") as f:
                return f.read()[-2000:].decode(errors="replace").strip()
        except OSError:
            return "(no log)"

    def kill_worker(self, n: int) -> None:
        """Stop worker `n` at once (SIGKILL to its whole process group), as a lost host."""
        proc = self.workers[n]
        if proc is not None:
            _signal(proc, signal.SIGKILL)
            proc.wait()
        self.workers[n] = None

    def stop(self) -> None:
        procs = [p for p in [*self.workers, self._scheduler] if p is not None]
        for proc in procs:
            _signal(proc, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _signal(proc, signal.SIGKILL)
                proc.wait()
        self.workers, self._scheduler = [], None
        self._dir.cleanup()

    def __enter__(self) -> "HostCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _signal(proc: subprocess.Popen, sig: int) -> None:
    """`sig` to the process group of `proc` (it leads its own session), if it still runs."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
