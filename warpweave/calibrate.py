"""`warpweave calibrate`: measure the current GPU for the cost model — DRAM copy
bandwidth (device-to-device copies, bytes read plus written), launch latency (a
one-element kernel, host dispatch included) and arithmetic throughput (an erf-heavy
elementwise kernel against the cost model's instruction count) — and save the profile
where every later compile on this device finds it (`pipeline.profiles`)."""
from __future__ import annotations

import dataclasses
import time

import numpy as np

from .backends.cuda import arrays, driver
from .frontend.jit import jit
from .frontend.ops import erf
from .passes.cost import DeviceModel, device_for
from .pipeline.profiles import save_profile


def calibrate(nbytes: int = 1 << 30, reps: int = 20) -> tuple[DeviceModel, str]:
    """Measure the current GPU and save its profile; returns it and where it went."""
    driver.ensure_context()
    dev = driver.device()
    base = device_for("gpu", dev.sm_count, dev.name)
    src, dst = driver.alloc(nbytes), driver.alloc(nbytes)
    start, stop = driver.Event(), driver.Event()
    driver.copy_dtod(dst.ptr, src.ptr, nbytes)
    times = []
    for _ in range(reps):
        start.record()
        driver.copy_dtod(dst.ptr, src.ptr, nbytes)
        stop.record()
        times.append(start.elapsed_ms(stop) * 1e-3)
    bandwidth = 2 * nbytes / float(np.median(times))
    del src, dst

    tiny = jit(lambda x: x + 1.0, target="cuda")
    heavy = jit(lambda x: x * 0.5 * (1.0 + erf(x * 0.7071067811865476)), target="cuda")
    one = arrays.to_device(np.ones(1, np.float32))
    big = arrays.to_device(np.random.default_rng(0).standard_normal(1 << 26).astype(np.float32))
    launch_s = _median_call_s(tiny, one, 200)
    busy_s = _median_call_s(heavy, big, 20)
    instructions = sum(k.cost.instructions for k in heavy.lower(big).kernels)
    ops_per_s = instructions / max(busy_s - launch_s, 1e-9)
    model = dataclasses.replace(base, name=f"{dev.name} (calibrated)", bandwidth=bandwidth,
                                launch_s=launch_s, ops_per_s=max(ops_per_s, base.ops_per_s / 4))
    return model, save_profile(model)


def _median_call_s(fn, arg, reps: int) -> float:
    fn(arg)
    driver.synchronize()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(arg)
        driver.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))
