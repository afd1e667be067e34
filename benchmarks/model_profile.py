"""Where a real model's step time goes: GPU time per kernel family for Inductor and
warpweave side by side, and the host's share (issue 14's "what the profile says").

    PYTHONPATH=$PWD python3 benchmarks/model_profile.py --models gpt2,bert --phase infer --out $OUT

Builds each model as benchmarks/models.py does (same configs, bfloat16, dropout off),
compiles it with each backend (`dynamic=False`), warms up, then profiles `--steps`
steps under torch.profiler. Per backend: wall time per step (CUDA-synchronised),
GPU kernel time per step, kernels per step, and the kernels grouped by name (first
60 characters), largest GPU time first. Writes the table as JSON to --out.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import time

import torch
from torch.profiler import ProfilerActivity, profile

import warpweave.torch
from models import build


def _step_fn(model, inputs, loss_fn, phase):
    if phase == "infer":
        def step():
            with torch.no_grad():
                model(**inputs)
    else:
        def step():
            model.zero_grad(set_to_none=True)
            loss_fn(model(**inputs)).backward()
    return step


def profile_backend(compiled, step, steps: int, top: int) -> dict:
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    wall_ms = (time.perf_counter() - t0) / steps * 1e3
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    kernels = collections.defaultdict(lambda: [0.0, 0])
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            k = kernels[ev.name[:60]]
            k[0] += ev.device_time_total / steps / 1e3
            k[1] += 1
    gpu_ms = sum(v[0] for v in kernels.values())
    rows = sorted(((n, round(t, 4), c // steps) for n, (t, c) in kernels.items()), key=lambda r: -r[1])
    return dict(wall_ms=round(wall_ms, 3), gpu_ms=round(gpu_ms, 3),
                kernels_per_step=sum(c for _, _, c in rows), top=rows[:top])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="gpt2")
    ap.add_argument("--phase", default="infer", choices=("infer", "train"))
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    result = {}
    for name in args.models.split(","):
        torch.manual_seed(0)
        model, make_inputs, loss_fn = build(name, small=False)
        model = model.to(device="cuda", dtype=torch.bfloat16).train(args.phase == "train")
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        inputs = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in make_inputs("cuda").items()}
        for backend in ("inductor", "warpweave"):
            torch._dynamo.reset()
            compiled = torch.compile(model, backend=warpweave.torch.backend if backend == "warpweave" else backend,
                                     dynamic=False)
            res = profile_backend(compiled, _step_fn(compiled, inputs, loss_fn, args.phase), args.steps, args.top)
            result[f"{name} {args.phase} {backend}"] = res
            print(f"== {name} {args.phase} {backend}: wall {res['wall_ms']} ms/step, GPU {res['gpu_ms']} ms, "
                  f"{res['kernels_per_step']} kernels/step", flush=True)
            for n, t, c in res["top"]:
                print(f"   {t:9.3f} ms  x{c:<4d} {n}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"profile_{args.phase}.json"), "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
