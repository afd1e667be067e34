"""Compiling candidates in parallel: a pool of processes runs a task's compile callable
(picklable, such as `pipeline.autotune.GroupCompiler`) on many schedules at once and
hands each result back as soon as it is ready, so measurement starts on the first
candidate while the rest still compile.

    pool.map(fn, items)  ->  yields (index, result, error) in the order calls finish;
                             error is the exception the call raised, else None

The callable is pickled once per `map`; each process unpickles it once and keeps it
(with whatever it caches) while the same callable keeps coming. A process that dies
(LLVM aborting, a segfault) breaks the pool: the pool is rebuilt and the calls it lost
are retried one at a time, so that the one that crashes again is reported (as a
`CompileCrash`) and the others complete. `jobs=0`, or a callable that does not pickle,
runs in this process, one call at a time.
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import logging
import multiprocessing
import os
import pickle
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

from ..errors import Error
from .measure import Artifact

log = logging.getLogger("warpweave")


@dataclass(frozen=True)
class Compiled:
    """A candidate ready to measure, with the cost model's estimate of its time."""

    artifact: Artifact
    estimate_s: float


class CompileCrash(Error, RuntimeError):
    """The process compiling a candidate died."""


def default_jobs() -> int:
    """Compile processes by default: one per usable CPU core (0, compile here, on one)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores if cores > 1 else 0


_LOADED: dict[str, Callable] = {}  # in a pool process: the callable now in use, by digest


def _call(digest: str, blob: bytes, item):
    fn = _LOADED.get(digest)
    if fn is None:
        _LOADED.clear()
        fn = _LOADED[digest] = pickle.loads(blob)
    return fn(item)


class CompilePool:
    """`jobs` compile processes (fresh interpreters: a forked copy of a process holding a
    CUDA context or threads is unsafe), started on first use and kept until `close`, or
    until they have been idle `idle_s` seconds (they start again when next needed)."""

    def __init__(self, jobs: int | None = None, idle_s: float | None = None):
        self.jobs = default_jobs() if jobs is None else jobs
        self.idle_s = idle_s
        self.crashes = 0
        self._pool: cf.ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._uses = 0  # counts calls for the pool: an idle timer set before one does nothing

    def _executor(self) -> cf.ProcessPoolExecutor:
        with self._lock:
            self._uses += 1
            if self._pool is None:
                self._pool = cf.ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"))
            return self._pool

    def _close_if_idle(self, uses: int) -> None:
        with self._lock:
            if uses != self._uses:
                return
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _restart(self) -> None:
        self.crashes += 1
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def map(self, fn: Callable, items: Iterable) -> Iterator[tuple[int, object, BaseException | None]]:
        items = list(items)
        blob = None
        if self.jobs > 0 and len(items) > 0:
            try:
                blob = pickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
            except (pickle.PicklingError, AttributeError, TypeError) as exc:
                log.debug("compiling in this process: %r does not pickle (%s)", fn, exc)
        if blob is None:
            for n, item in enumerate(items):
                try:
                    yield n, fn(item), None
                except Exception as exc:  # noqa: BLE001 - a candidate that fails to compile
                    yield n, None, exc
            return
        digest = hashlib.sha256(blob).hexdigest()
        try:
            yield from self._map(digest, blob, items)
        finally:
            if self.idle_s is not None:
                timer = threading.Timer(self.idle_s, self._close_if_idle, (self._uses,))
                timer.daemon = True
                timer.start()

    def _map(self, digest: str, blob: bytes, items: list):
        pool = self._executor()
        futures = {pool.submit(_call, digest, blob, item): n for n, item in enumerate(items)}
        lost = []
        for future in cf.as_completed(futures):
            n = futures[future]
            try:
                yield n, future.result(), None
            except cf.process.BrokenProcessPool:
                lost.append(n)
            except Exception as exc:  # noqa: BLE001 - raised by the call, pickled back
                yield n, None, exc
        if lost:
            self._restart()
        for n in sorted(lost):  # one at a time: the call that breaks the pool again is the culprit
            try:
                yield n, self._executor().submit(_call, digest, blob, items[n]).result(), None
            except cf.process.BrokenProcessPool:
                self._restart()
                yield n, None, CompileCrash(f"the process compiling {items[n]!r} died")
            except Exception as exc:  # noqa: BLE001
                yield n, None, exc

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
