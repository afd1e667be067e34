"""Measuring candidates: artifacts compiled in the parent, run in a worker process.

An `Artifact` is what a worker needs to run one group's kernels and nothing more:
native object code (cpu) or a cubin (cuda), the launch list, and the buffers with
their shapes and dtypes. The worker makes the inputs from those (seeded, so every
candidate of a group sees the same ones), runs the default schedule's artifact once
as the reference, and for every candidate checks the outputs against it before
timing: warm-up runs, then `repeat` runs with the caches flushed between them (CUDA
events on the GPU), reporting the median and the minimum.

`Worker` owns one worker process (a fresh interpreter; on the GPU one per device). A job that
crashes the process, hits an illegal address or a launch failure, or runs past its
timeout comes back as a failed or timed-out result; the process is restarted on the
next job.
"""
from __future__ import annotations

import subprocess
import traceback
from multiprocessing.connection import Connection
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import CudaError, Error
from ..ir import dtypes as dt
from ..ir.gir import Kernel, TensorMap, tensor_maps
from .child import start_child, stop_child


@dataclass(frozen=True)
class BufferSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str
    role: str  # "in" (generated), "out" (checked), "scratch"


@dataclass(frozen=True)
class LaunchSpec:
    name: str
    grid: int
    block: int
    params: tuple[str, ...]
    work: int  # element operations per grid step (the CPU runner's split decision)
    shared: int = 0  # bytes of dynamic shared memory (GPU kernels above 48 KiB)
    maps: tuple[TensorMap, ...] = ()  # by-value tensor maps, the parameters after the buffers


@dataclass(frozen=True)
class Artifact:
    """One group's kernels compiled for a target, ready to run in another process."""

    target: str                    # "cpu" or "cuda"
    image: bytes                   # object code (cpu) or cubin / PTX (cuda)
    launches: tuple[LaunchSpec, ...]
    buffers: tuple[BufferSpec, ...]

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.buffers if b.role == "out")


def make_artifact(target: str, kernels: list[Kernel], works: list[int], inputs, outputs,
                  image: bytes) -> Artifact:
    """The `Artifact` of one group's final GIR kernels (in launch order) compiled into
    `image` (the caller compiles). `inputs`: buffers the group reads from outside;
    `outputs`: those it must write."""
    if target not in ("cpu", "cuda"):
        raise Error(f"target {target!r} cannot be tuned (tunable: cpu, cuda)")
    buffers: dict[str, BufferSpec] = {}
    for k in kernels:
        for p in k.params:
            role = "in" if p.name in inputs else "out" if p.name in outputs else "scratch"
            buffers.setdefault(p.name, BufferSpec(p.name, tuple(p.shape), str(p.dtype), role))
    launches = tuple(LaunchSpec(k.name, k.grid, k.block, tuple(p.name for p in k.params), w,
                                k.dynamic_shared_bytes, tuple(tensor_maps(k)))
                     for k, w in zip(kernels, works))
    return Artifact(target, image, launches, tuple(buffers.values()))


@dataclass(frozen=True)
class Settings:
    """How a candidate is timed."""

    warmup: int = 3
    repeat: int = 20
    timeout_s: float = 30.0        # per job, compile excluded
    flush_bytes: int | None = None  # written between runs to evict the caches; default:
    #                                 32 MiB on the CPU, 256 MiB on the GPU (L2)
    seed: int = 0


@dataclass(frozen=True)
class Job:
    """One candidate to measure: `task` names the group (the worker keeps the
    reference outputs per task), `schedule` is the candidate's record as JSON."""

    task: str
    reference: Artifact
    candidate: Artifact
    schedule: str
    settings: Settings = field(default_factory=Settings)


@dataclass(frozen=True)
class Result:
    status: str                    # "ok", "failed", "incorrect" or "timeout"
    median_us: float | None = None
    min_us: float | None = None
    runs: int = 0
    error: str = ""


_TOLERANCE = {2: 2e-2, 4: 1e-4, 8: 1e-10}


def make_inputs(artifact: Artifact, seed: int) -> dict[str, np.ndarray]:
    """Every input buffer, filled from a seeded generator by dtype."""
    rng = np.random.default_rng(seed)
    out = {}
    for b in artifact.buffers:
        if b.role != "in":
            continue
        d = dt.dtype(b.dtype)
        if d == dt.bool_:
            a = rng.random(b.shape) < 0.5
        elif d.is_float:
            a = rng.standard_normal(b.shape, dtype=np.float32)
        else:
            a = rng.integers(-8, 8, b.shape)
        out[b.name] = np.ascontiguousarray(a.astype(d.numpy))
    return out


def compare(name: str, got: np.ndarray, want: np.ndarray) -> str:
    """'' when `got` matches the reference within the dtype's tolerance, else why not.
    Floats of up to 4 bytes compare in float32 (a tenth of the time of float64 on large
    outputs, and exact enough for tolerances of 1e-4 and up)."""
    if got.dtype.kind in "biu":
        bad = np.count_nonzero(got != want)
    else:
        wide = np.float64 if got.dtype.itemsize > 4 else np.float32
        g, w = got.astype(wide, copy=False), want.astype(wide, copy=False)
        tol = _TOLERANCE.get(got.dtype.itemsize, 1e-4)
        scale = float(np.nanmax(np.abs(w), initial=0.0)) if w.size else 0.0
        with np.errstate(invalid="ignore", over="ignore"):
            close = np.abs(g - w) <= tol * max(1.0, scale) + tol * np.abs(w)
        close |= (g == w) | (np.isnan(g) & np.isnan(w))
        bad = close.size - np.count_nonzero(close)
    return f"{name}: {bad} of {got.size} elements differ from the default schedule's" if bad else ""


# ----------------------------------------------------------------------------- in the worker

class _CpuBench:
    """Runs artifacts on the host CPU (object code loaded into MCJIT)."""

    def __init__(self, ordinal: int):
        self._flush: np.ndarray | None = None

    def load(self, artifact: Artifact):
        from ..backends.cpu import CpuExecutable

        return CpuExecutable.from_object(artifact.image, [(l.name, l.grid, l.work, len(l.params))
                                                          for l in artifact.launches])

    def run(self, artifact: Artifact, inputs: dict[str, np.ndarray], settings: Settings,
            timed: bool) -> tuple[dict[str, np.ndarray], list[float]]:
        import time

        exe = self.load(artifact)
        buffers = dict(inputs)
        buffers.update((b.name, _poisoned(b)) for b in artifact.buffers if b.role != "in")
        calls = [(l.name, [buffers[p].ctypes.data for p in l.params]) for l in artifact.launches]

        def once():
            for name, pointers in calls:
                exe.launch(name, pointers)

        once()
        outputs = {n: buffers[n].copy() for n in artifact.outputs}
        times = []
        if timed:
            flush = settings.flush_bytes or (32 << 20)
            if self._flush is None or self._flush.nbytes != flush:
                self._flush = np.empty(flush // 8, np.float64)
            for k in range(settings.warmup + settings.repeat):
                self._flush.fill(k)
                start = time.perf_counter_ns()
                once()
                if k >= settings.warmup:
                    times.append((time.perf_counter_ns() - start) / 1e3)
        return outputs, times


def _poisoned(b: BufferSpec) -> np.ndarray:
    """A buffer of NaNs (floats) or 0x5A (integers): an element a kernel skips is caught."""
    d = dt.dtype(b.dtype)
    return np.full(b.shape, np.nan if d.is_float else 0x5A, d.numpy)


class _CudaBench:
    """Runs artifacts on one GPU: CUDA events, the L2 flushed by a memset between runs."""

    def __init__(self, ordinal: int):
        from ..backends.cuda import driver

        self.driver = driver
        driver.ensure_context(ordinal)
        self._flush = None
        self._inputs: tuple = (None, {})  # (the host inputs, their device copies)

    def run(self, artifact: Artifact, inputs: dict[str, np.ndarray], settings: Settings,
            timed: bool) -> tuple[dict[str, np.ndarray], list[float]]:
        from ..backends.cuda import launch
        from ..backends.cuda.tensor_maps import TensorMapEncoder

        drv = self.driver
        module = launch.Module(artifact.image)
        if self._inputs[0] is not inputs:  # a new group: its inputs go to the device once
            self._inputs = (inputs, {})
            for name, a in inputs.items():
                self._inputs[1][name] = drv.alloc(max(1, a.nbytes))
                drv.copy_htod(self._inputs[1][name].ptr, a)
        allocations = dict(self._inputs[1])
        for b in artifact.buffers:
            if b.role != "in":
                nbytes = max(1, int(np.prod(b.shape, dtype=np.int64)) * dt.dtype(b.dtype).itemsize)
                allocations[b.name] = drv.alloc(nbytes)
                drv.memset_d8(allocations[b.name].ptr, 0xFF, nbytes)
        dtypes = {b.name: dt.dtype(b.dtype) for b in artifact.buffers}
        encoders = {m: TensorMapEncoder(m, dtypes[m.buffer]) for l in artifact.launches for m in l.maps}
        calls = [(module.function(l.name, len(l.params) + len(l.maps)), l.grid, l.block,
                  [allocations[p].ptr for p in l.params]
                  + [encoders[m](allocations[m.buffer].ptr) for m in l.maps],  # the encoders hold the maps
                  l.shared, range(len(l.params), len(l.params) + len(l.maps))) for l in artifact.launches]
        for fn, *_, shared, _ in calls:
            if shared:
                fn.set_max_dynamic_shared(shared)

        def once():
            for fn, grid, block, pointers, shared, maps in calls:
                fn.launch(grid, block, pointers, 0, shared, maps)

        once()
        drv.synchronize_device()
        outputs = {}
        for b in artifact.buffers:
            if b.role == "out":
                host = np.empty(b.shape, dt.dtype(b.dtype).numpy)
                drv.copy_dtoh(host, allocations[b.name].ptr)
                outputs[b.name] = host
        times = []
        if timed:
            flush = settings.flush_bytes or (256 << 20)
            if self._flush is None or self._flush.nbytes != flush:
                self._flush = drv.alloc(flush)
            for _ in range(settings.warmup):
                once()
            events = [(drv.Event(), drv.Event()) for _ in range(settings.repeat)]
            for start, end in events:  # queued back to back; read once all have run
                drv.memset_d8(self._flush.ptr, 0, flush)
                start.record()
                once()
                end.record()
            times = [start.elapsed_ms(end) * 1e3 for start, end in events]
        module.close()
        return outputs, times


def _measure(bench, job: Job, references: dict) -> Result:
    settings = job.settings
    if job.task not in references:
        inputs = make_inputs(job.reference, settings.seed)
        outputs, _ = bench.run(job.reference, inputs, settings, timed=True)  # timed: warms the worker up
        references.clear()  # one group at a time: keep memory bounded
        references[job.task] = (inputs, outputs)
    inputs, want = references[job.task]
    got, times = bench.run(job.candidate, inputs, settings, timed=True)
    problems = [p for p in (compare(n, got[n], want[n]) for n in want) if p]
    if problems:
        return Result("incorrect", error="; ".join(problems))
    return Result("ok", float(np.median(times)), float(np.min(times)), len(times))


def serve(read_fd: int, write_fd: int) -> None:
    """The worker process's main loop (`python -c` runs it, see `Worker`): the first
    message is (target, device ordinal, hook); then receive jobs and send results
    until None arrives. `hook` (tests only: fault injection) is called with each job
    before it runs."""
    inbox, outbox = Connection(read_fd, writable=False), Connection(write_fd, readable=False)
    target, ordinal, hook = inbox.recv()
    references: dict = {}
    try:
        bench = (_CudaBench if target == "cuda" else _CpuBench)(ordinal)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
        outbox.send(f"{type(exc).__name__}: {exc}")
        return
    outbox.send("ready")
    while True:
        try:
            job = inbox.recv()
        except EOFError:  # the parent went away
            return
        if job is None:
            return
        poisoned = False
        try:
            if hook is not None:
                hook(job)
            result = _measure(bench, job, references)
        except CudaError as exc:  # an illegal address or a failed launch poisons the context
            result, poisoned = Result("failed", error=f"{exc}"), True
        except Exception as exc:  # noqa: BLE001 - any failure of one candidate is a failed trial
            result = Result("failed", error="".join(traceback.format_exception_only(exc)).strip())
        outbox.send(result)
        if poisoned:
            return


class WorkerError(Error, RuntimeError):
    """A measurement worker could not start."""


class Worker:
    """One worker process for `target` (on device `ordinal`), started on first use and
    restarted after a crash or a timeout."""

    START_TIMEOUT_S = 120.0

    def __init__(self, target: str, ordinal: int = 0, hook: Callable[[Job], None] | None = None):
        self.target = target
        self.ordinal = ordinal
        self.hook = hook
        self.restarts = 0  # after a crash or a timeout
        self._process: subprocess.Popen | None = None
        self._send = self._recv = None

    def _start(self) -> None:
        self._process, self._send, self._recv = start_child("warpweave.tune.measure")
        hello = None
        try:
            self._send.send((self.target, self.ordinal, self.hook))
            if self._recv.poll(self.START_TIMEOUT_S):
                hello = self._recv.recv()
        except (EOFError, OSError):
            pass
        if hello != "ready":
            code = self._process.poll()
            self.stop()
            raise WorkerError(f"the {self.target} measurement worker failed to start: "
                              + (hello or (f"it exited with code {code}" if code is not None else
                                           f"no answer within {self.START_TIMEOUT_S:.0f} s")))

    def run(self, job: Job) -> Result:
        if self._process is None or self._process.poll() is not None:
            if self._process is not None:
                self.stop()
                self.restarts += 1
            self._start()
        try:
            self._send.send(job)
            ready = self._recv.poll(job.settings.timeout_s)
        except (EOFError, OSError):
            ready = True
        if not ready:
            self.stop()
            self.restarts += 1
            return Result("timeout", error=f"no result within {job.settings.timeout_s:g} s; worker restarted")
        try:
            return self._recv.recv()
        except (EOFError, OSError):
            code = self._process.wait(5)
            self.stop()
            self.restarts += 1
            return Result("failed", error=f"the worker process died (exit code {code}); restarted")

    def stop(self) -> None:
        """End the worker process (asked politely, then killed)."""
        if self._process is not None:
            stop_child(self._process, self._send, self._recv, wait_s=2)
        self._process = self._send = self._recv = None
