"""Where the GPT-2 block's time goes: GPU kernels of Inductor and warpweave side by side.

    PYTHONPATH=$PWD python3 benchmarks/torch_profile.py [--phase forward|forward+backward]

Profiles a few steps of torch_bench's block under torch.profiler for each engine and
prints the GPU time per kernel name (sum over the profiled steps / steps), largest first;
then the host (wall) time per step of each warpweave program call, with a synchronize
after each one so that its own GPU work is inside.
"""
from __future__ import annotations

import argparse
import collections
import time

import torch
from torch.profiler import ProfilerActivity, profile

import warpweave.torch
from warpweave.compiler.torch_partition import WarpweaveModule
from torch_bench import Block


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--phase", default="forward+backward", choices=("forward", "forward+backward"))
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--top", type=int, default=25)
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
        if name == "warpweave":
            host_times(step, args.steps)


def host_times(step, steps: int) -> None:
    """Wall time per warpweave program call (host dispatch, then its GPU work)."""
    spent = collections.defaultdict(float)
    forward = WarpweaveModule.forward

    def timed(self, *a):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = forward(self, *a)
        t1 = time.perf_counter()
        torch.cuda.synchronize()
        spent[self.program.name, "host"] += t1 - t0
        spent[self.program.name, "total"] += time.perf_counter() - t0
        return out

    WarpweaveModule.forward = timed
    try:
        for _ in range(steps):
            step()
    finally:
        WarpweaveModule.forward = forward
    names = sorted({n for n, _ in spent}, key=lambda n: -spent[n, "total"])
    print("\n== warpweave programs: host dispatch / host + GPU, us per step")
    for n in names:
        print(f"{spent[n, 'host'] / steps * 1e6:9.1f} / {spent[n, 'total'] / steps * 1e6:9.1f}  {n}")


if __name__ == "__main__":
    main()
