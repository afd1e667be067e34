"""Host dispatch cost of one small warpweave call, piece by piece, beside eager.

    PYTHONPATH=$PWD python3 benchmarks/dispatch_profile.py

Times are wall-clock microseconds per call, medians of 7 rounds of 2,000 calls with
one synchronize per round (the GPU work is a few microseconds and overlaps), on a
[32, 128] float32 softmax.
"""
from __future__ import annotations

import statistics
import time

import torch

import warpweave as ww


def per_call_us(fn, calls=2000, rounds=7) -> float:
    for _ in range(200):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) / calls * 1e6)
    return statistics.median(times)


def main():
    x = torch.randn(32, 128, device="cuda")
    f = ww.jit(lambda x: ww.softmax(x, axis=-1), target="cuda")
    program = f.lower(x)
    backend = program._backend
    functions = backend._loaded()
    inputs, outputs, launches, results = backend._torch_plan(functions)
    fn, grid, block, where = launches[0]
    y = torch.empty(32, 128, device="cuda")
    stream = torch.cuda.current_stream().cuda_stream
    ptrs = [x.data_ptr(), y.data_ptr()]
    rows = [
        ("eager torch.softmax", lambda: torch.softmax(x, -1)),
        ("warpweave jit call", lambda: f(x)),
        ("warpweave Program call", lambda: program(x)),
        ("backend._run_torch", lambda: backend._run_torch((x,), functions)),
        ("torch.empty", lambda: torch.empty((32, 128), dtype=torch.float32, device=x.device)),
        ("launch only", lambda: fn.launch(grid, block, [ptrs[k] for k in range(len(where))], stream)),
        ("current raw stream", lambda: torch._C._cuda_getCurrentRawStream(0)),
    ]
    print(f"{len(program.kernels)} kernel(s): {[k.name for k in program.kernels]}")
    for name, call in rows:
        print(f"{name:28s} {per_call_us(call):7.2f} us/call")


if __name__ == "__main__":
    main()
