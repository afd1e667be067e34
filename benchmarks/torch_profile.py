"""Where the GPT-2 block's time goes: GPU kernels of Inductor and warpweave side by side.

    PYTHONPATH=$PWD python3 benchmarks/torch_profile.py [--phase forward|forward+backward]

Profiles a few steps of torch_bench's block under torch.profiler for each engine and
prints the GPU time per kernel name (sum over the profiled steps / steps), largest first;
then the host dispatch time of a whole step for each engine, and the host (wall) time per
step of each warpweave program call, with a synchronize after each one so that its own GPU
work is inside. --cprofile adds the host functions a warpweave step spends most time in.
"""
from __future__ import annotations

import argparse
import collections
import time

import torch
from torch.profiler import ProfilerActivity, profile

import warpweave.torch
from warpweave.frontend.torch.partition import WarpweaveCall
from torch_bench import Block


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--phase", default="forward+backward", choices=("forward", "forward+backward"))
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--cprofile", action="store_true",
                    help="also print the host functions a warpweave step spends most time in")
    args = ap.parse_args()
    torch.manual_seed(0)
    block = Block(768, 12, 1024).to(device="cuda", dtype=torch.bfloat16)
    x = torch.randn(8, 1024, 768, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    grad = torch.randn_like(x)
    for name, model in (("inductor", torch.compile(block)),
                        ("warpweave", torch.compile(block, backend=warpweave.torch.backend))):
        def step():
            if args.phase == "forward":
                with torch.no_grad():
                    model(x)
            else:
                block.zero_grad(set_to_none=True)
                x.grad = None
                model(x).backward(grad)

        for _ in range(3):
            step()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(args.steps):
                step()
            torch.cuda.synchronize()
        rows = [(e.key, e.device_time_total / args.steps, e.count // args.steps)
                for e in prof.key_averages() if e.device_time_total > 0]
        rows.sort(key=lambda r: -r[1])
        total = sum(r[1] for r in rows)
        print(f"\n== {name} {args.phase}: GPU kernel time {total / 1e3:.3f} ms per step")
        for key, us, count in rows[:args.top]:
            print(f"{us:9.1f} us  x{count:<3d} {key[:110]}")
        host_wall(name, step, args.steps)
        if name == "warpweave":
            host_times(step, args.steps)
            if args.cprofile:
                host_functions(step, args.steps, args.top)
                host_pieces(step)


def host_wall(name: str, step, steps: int) -> None:
    """Host wall time of a step's dispatch alone (no synchronize inside)."""
    torch.cuda.synchronize()
    times = []
    for _ in range(steps * 4):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        torch.cuda.synchronize()
    times.sort()
    print(f"== {name}: host dispatch of a whole step {times[len(times) // 2] * 1e6:.1f} us (median)")


def host_functions(step, steps: int, top: int) -> None:
    """cProfile of warpweave steps: the host functions with the most own time."""
    import cProfile
    import pstats

    torch.cuda.synchronize()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        step()
    prof.disable()
    torch.cuda.synchronize()
    rows = [(tt, ct, nc, f"{func} ({file.rsplit('/', 1)[-1]}:{line})")
            for (file, line, func), (_, nc, tt, ct, _) in pstats.Stats(prof).stats.items()]
    rows.sort(key=lambda r: -r[0])
    print("\n== warpweave host functions: own / cumulative us per step, calls per step")
    for tt, ct, nc, name in rows[:top]:
        print(f"{tt / steps * 1e6:9.1f} {ct / steps * 1e6:9.1f} {nc // steps:5d}  {name[:100]}")


def host_pieces(step, reps: int = 200) -> None:
    """Each warpweave program of a step replayed alone on the arguments it got: host
    microseconds (median) of the module call, the program call, its allocations and
    its launch sequence on preallocated buffers."""
    calls = {}
    forward = WarpweaveCall.__call__

    def record(self, *a):
        calls.setdefault(self.program.name, (self, a))
        return forward(self, *a)

    WarpweaveCall.__call__ = record
    try:
        step()
    finally:
        WarpweaveCall.__call__ = forward

    def median_us(fn):
        times = []
        for _ in range(reps):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return sorted(times)[reps // 2] * 1e6

    print("\n== warpweave programs replayed alone: host us of module / program / allocations / launches")
    for name, (module, a) in sorted(calls.items()):
        xs = [layout.prepare(x) for layout, x in zip(module.inputs, a)]
        backend = module.program.runner
        inputs, outputs, sequence, _ = backend._torch_plan(backend._functions)
        allocated = [torch.empty_strided(shape, strides, dtype=d, device="cuda") for shape, strides, d in outputs]
        pointers = [x.data_ptr() for x in xs] + [t.data_ptr() for t in allocated]
        stream = torch.cuda.current_stream().cuda_stream
        empty = torch._C._dynamo.guards._empty_strided_cuda
        print(f"{median_us(lambda: module(*a)):8.1f} {median_us(lambda: module.program(*xs)):8.1f} "
              f"{median_us(lambda: [empty(s, st, d) for s, st, d in outputs]):8.1f} "
              f"{median_us(lambda: sequence.run(pointers, stream)):8.1f}  {name} "
              f"({len(sequence.launches)} kernels)")


def host_times(step, steps: int) -> None:
    """Wall time per warpweave program call (host dispatch, then its GPU work)."""
    spent = collections.defaultdict(float)
    shapes = {}
    forward = WarpweaveCall.__call__

    def timed(self, *a):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = forward(self, *a)
        t1 = time.perf_counter()
        torch.cuda.synchronize()
        spent[self.program.name, "host"] += t1 - t0
        spent[self.program.name, "total"] += time.perf_counter() - t0
        shapes[self.program.name] = (len(a), len(self.program.runner._outputs), len(self.program.kernels))
        return out

    WarpweaveCall.__call__ = timed
    try:
        for _ in range(steps):
            step()
    finally:
        WarpweaveCall.__call__ = forward
    names = sorted({n for n, _ in spent}, key=lambda n: -spent[n, "total"])
    print("\n== warpweave programs: host dispatch / host + GPU, us per step; inputs, buffers "
          "allocated, kernels")
    for n in names:
        print(f"{spent[n, 'host'] / steps * 1e6:9.1f} / {spent[n, 'total'] / steps * 1e6:9.1f}  {n}"
              f"  ({'; '.join(map(str, shapes[n]))})")


if __name__ == "__main__":
    main()
