"""Building many programs at once. A model's graph splits into dozens of programs;
`precompile` builds the distinct ones the disk cache lacks in worker processes, side by
side, so that the compiles that follow in this process are cache hits. It changes no
result: a worker runs the same `compile_graph` under the same options and writes the
same cache entries, and whatever fails or crashes there is left for this process's own
compile to meet and report."""
from __future__ import annotations

import atexit
import dataclasses
import functools
import logging
import os
import pickle
import queue
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Sequence

from ..ir.tensor import TensorGraph
from ..options import Options, current
from .cache import cache_dir, default_cache

log = logging.getLogger(__name__)

MAX_AUTO_WORKERS = 8


@dataclass(frozen=True)
class Job:
    """One program to build: `compile_graph(graph, single, target, name)`."""
    graph: TensorGraph
    single: bool
    target: str
    name: str


def workers(opts: Options) -> int:
    """Worker processes `opts` allows: `compile_workers`, or one per usable core (up to 8)."""
    if opts.compile_workers:
        return opts.compile_workers
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return min(MAX_AUTO_WORKERS, cores)


def precompile(jobs: Sequence[Job]) -> int:
    """Build the programs of `jobs` missing from the disk cache (each distinct one once)
    in worker processes and this one; returns how many were built. Does nothing where fewer
    than two are missing, one worker is allowed, the cache keeps nothing on disk, or the
    compile dumps its stages or tunes (those compile here, as they always have)."""
    from .compile import program_key, resolve_target, tuned_schedules

    opts = current()
    allowed = workers(opts)
    cache = default_cache()
    if allowed < 2 or opts.dump_dir or opts.autotune or not cache.disk_enabled:
        return 0
    missing: dict[str, Job] = {}
    for job in jobs:
        target = resolve_target(job.target)
        key = program_key(job.graph, job.single, target, tuned=tuned_schedules(target))
        if key not in missing and cache.get(key) is None:
            missing[key] = dataclasses.replace(job, target=target)
    if len(missing) < 2:
        return 0
    todo: queue.Queue = queue.Queue()
    for job in missing.values():
        todo.put(job)
    built: list[Job] = []
    message = functools.partial(_message, opts=opts, directory=cache_dir())
    threads = [threading.Thread(target=_feed, args=(w, todo, built, message), daemon=True)
               for w in _workers(min(allowed, len(missing)) - 1)]
    for t in threads:
        t.start()
    _drain(todo, built)  # this process takes jobs too, while the workers start
    for t in threads:
        t.join()
    _drain(todo, built)  # what a worker that died had taken
    return len(built)


def _drain(todo: queue.Queue, built: list) -> None:
    """Compile jobs here until none are left."""
    from .compile import compile_graph

    while True:
        try:
            job = todo.get_nowait()
        except queue.Empty:
            return
        try:
            compile_graph(job.graph, job.single, job.target, job.name)
            built.append(job)
        except Exception as exc:  # noqa: BLE001 - the compile that follows meets it again and reports it
            log.debug("%s: compile failed (%s); left for its own compile", job.name, exc)


def _message(job: Job, opts: Options, directory: str) -> bytes:
    return pickle.dumps((job, opts, directory), protocol=pickle.HIGHEST_PROTOCOL)


def _feed(worker: "_Worker", todo: queue.Queue, built: list, message) -> None:
    """Hand `worker` jobs until none are left or it dies."""
    while True:
        try:
            job = todo.get_nowait()
        except queue.Empty:
            return
        ok = worker.run(message(job))
        if ok is None:
            log.debug("a compile worker died on %s; it compiles here", job.name)
            todo.put(job)
            return
        if ok:
            built.append(job)


class _Worker:
    """A process running `compile_worker`: one pickled job in, one status byte out."""

    def __init__(self):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))  # imports as here
        self.process = subprocess.Popen([sys.executable, "-m", "warpweave.pipeline.compile_worker"],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def run(self, message: bytes) -> bool | None:
        """Whether the job compiled (None: the worker is gone)."""
        try:
            self.process.stdin.write(len(message).to_bytes(8, "little") + message)
            self.process.stdin.flush()
            status = self.process.stdout.read(1)
        except OSError:
            return None
        return {b"1": True, b"0": False}.get(status)

    def close(self) -> None:
        try:
            self.process.stdin.close()
        except OSError:
            pass


_lock = threading.Lock()
_pool: list[_Worker] = []


def _workers(size: int) -> list[_Worker]:
    """`size` live workers, started on first need and kept for later compiles."""
    with _lock:
        _pool[:] = [w for w in _pool if w.alive]
        while len(_pool) < size:
            _pool.append(_Worker())
        return _pool[:size]


@atexit.register
def _close() -> None:
    with _lock:
        for w in _pool:
            w.close()
        _pool.clear()
