"""Compiling candidates in parallel: a pool of processes runs a task's compile callable
(picklable, such as `pipeline.autotune.GroupCompiler`) on many schedules at once and
hands each result back as soon as it is ready, so measurement starts on the first
candidate while the rest still compile.

    pool.map(fn, items)  ->  yields (index, result, error) in the order calls finish;
                             error is the exception the call raised, else None

The callable is pickled once per `map`; each process unpickles it once and keeps it
while the same callable keeps coming. A process that dies (LLVM aborting, a segfault)
is reported as a `CompileCrash` of the item it was compiling and is restarted for the
next. `jobs=0`, a callable that does not pickle, or one defined in `__main__` (the
processes do not import the caller's script) runs in this process, one call at a time.
"""
from __future__ import annotations

import hashlib
import logging
import os
import pickle
import queue
import subprocess
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Callable, Iterable, Iterator

from ..errors import Error
from .child import start_child, stop_child
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


def serve(read_fd: int, write_fd: int) -> None:
    """A compile process's main loop (`python -c` runs it, see `_Process`): receive
    (digest, pickled callable, item), send back ("ok", result) or ("error", exception),
    until None arrives. The callable is unpickled once per digest."""
    inbox, outbox = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    loaded: tuple = ("", None)
    while True:
        try:
            message = inbox.recv()
        except EOFError:  # the parent went away
            return
        if message is None:
            return
        digest, blob, item = message
        try:
            if loaded[0] != digest:
                loaded = (digest, pickle.loads(blob))
            reply = ("ok", loaded[1](item))
        except Exception as exc:  # noqa: BLE001 - sent back: the caller's failed candidate
            reply = ("error", exc)
        try:
            outbox.send(reply)
        except Exception as exc:  # noqa: BLE001 - a result or an exception that does not pickle
            outbox.send(("error", Error(f"{type(exc).__name__}: {exc}")))


class _Process:
    """One compile process (`child.start_child`), started on first use and after it died."""

    def __init__(self):
        self._process: subprocess.Popen | None = None
        self._send = self._recv = None
        self._lock = threading.Lock()  # one call at a time, whichever thread asks

    def _start(self) -> None:
        self._process, self._send, self._recv = start_child("warpweave.tune.compiling")

    def call(self, digest: str, blob: bytes, item):
        """(result, None) or (None, the exception the call raised, or `CompileCrash`)."""
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._stop()
                self._start()
            try:
                self._send.send((digest, blob, item))
                status, value = self._recv.recv()
            except (EOFError, OSError):
                code = self._process.wait()
                self._stop()
                return None, CompileCrash(f"the process compiling {item!r} died (exit code {code})")
        return (value, None) if status == "ok" else (None, value)

    def stop(self) -> None:
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        if self._process is not None:
            stop_child(self._process, self._send, self._recv, wait_s=5)
        self._process = self._send = self._recv = None


class CompilePool:
    """`jobs` compile processes, started on first use and kept until `close`, or until
    they have been idle `idle_s` seconds (they start again when next needed). A process
    that dies is reported as a `CompileCrash` of the item it was compiling, and replaced."""

    def __init__(self, jobs: int | None = None, idle_s: float | None = None):
        self.jobs = default_jobs() if jobs is None else jobs
        self.idle_s = idle_s
        self._processes = [_Process() for _ in range(self.jobs)]
        self.crashes = 0
        self._lock = threading.Lock()
        self._uses = 0  # counts calls for the pool: an idle timer set before one does nothing

    def map(self, fn: Callable, items: Iterable) -> Iterator[tuple[int, object, BaseException | None]]:
        items = list(items)
        blob = None
        if self.jobs > 0 and len(items) > 0:
            try:
                blob = pickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
            except (pickle.PicklingError, AttributeError, TypeError) as exc:
                log.debug("compiling in this process: %r does not pickle (%s)", fn, exc)
        if blob is None or getattr(type(fn), "__module__", None) == "__main__":
            for n, item in enumerate(items):
                try:
                    yield n, fn(item), None
                except Exception as exc:  # noqa: BLE001 - a candidate that fails to compile
                    yield n, None, exc
            return
        digest = hashlib.sha256(blob).hexdigest()
        with self._lock:
            self._uses += 1
        try:
            yield from self._map(digest, blob, items)
        finally:
            if self.idle_s is not None:
                timer = threading.Timer(self.idle_s, self._close_if_idle, (self._uses,))
                timer.daemon = True
                timer.start()

    def _map(self, digest: str, blob: bytes, items: list):
        todo: queue.Queue = queue.Queue()
        for item in enumerate(items):
            todo.put(item)
        done: queue.Queue = queue.Queue()

        def feed(process: _Process):
            while True:
                try:
                    n, item = todo.get_nowait()
                except queue.Empty:
                    return
                result, error = process.call(digest, blob, item)
                if isinstance(error, CompileCrash):
                    with self._lock:
                        self.crashes += 1
                done.put((n, result, error))

        threads = [threading.Thread(target=feed, args=(p,), daemon=True)
                   for p in self._processes[:min(self.jobs, len(items))]]
        for t in threads:
            t.start()
        for _ in items:
            yield done.get()
        for t in threads:
            t.join()

    def _close_if_idle(self, uses: int) -> None:
        with self._lock:  # a map starting now waits until its processes are closed
            if uses == self._uses:
                self.close()

    def close(self) -> None:
        for p in self._processes:
            p.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
