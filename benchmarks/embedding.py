"""A token embedding's forward (issue 14 item 3): GPT-2's 50257 × 768 table gathered by
8 × 1024 token ids, through eager PyTorch, Inductor (GPU only, `dynamic=False`) and
warpweave's torch backend, in one process on the same table and ids.

    PYTHONPATH=$PWD python3 benchmarks/embedding.py --device cpu                # float32
    PYTHONPATH=$PWD python3 benchmarks/embedding.py --device cuda --out $OUT    # bfloat16

CPU: wall time per call; GPU: CUDA events per call; after warm-up, in rounds of 10
calls with the backends interleaved, medians. Each backend's result is compared with
eager's (a gather is exact: equal or not).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

import warpweave.torch


def _time_cpu(fn, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def _time_cuda(fn, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--vocab", type=int, default=50257)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    cuda = args.device == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    torch.manual_seed(0)
    table = torch.randn(args.vocab, args.width, device=args.device, dtype=dtype)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), device=args.device)

    def embed(w, i):
        return torch.nn.functional.embedding(i, w)

    ref = embed(table, ids)
    backends = ["eager", "warpweave"] + (["inductor"] if cuda else [])
    fns, exact = {}, {}
    for name in backends:  # compile and warm up each
        torch._dynamo.reset()
        fns[name] = embed if name == "eager" else torch.compile(
            embed, backend=warpweave.torch.backend if name == "warpweave" else name, dynamic=False)
        with torch.no_grad():
            exact[name] = bool(torch.equal(fns[name](table, ids), ref))
            for _ in range(5):
                fns[name](table, ids)
    timer = _time_cuda if cuda else _time_cpu
    times = {name: [] for name in backends}
    with torch.no_grad():  # rounds of steps, backends interleaved: they share the machine's noise
        for _ in range(max(1, args.steps // 10)):
            for name in backends:
                times[name] += timer(lambda: fns[name](table, ids), 10)
    moved = ids.numel() * args.width * table.element_size() * 2 + ids.numel() * ids.element_size()
    rows = []
    for name in backends:
        ms = statistics.median(times[name])
        rows.append(dict(backend=name, device=args.device, dtype=str(dtype), ms=round(ms, 4),
                         gb_per_s=round(moved / ms / 1e6, 1), exact=exact[name]))
        print(f"{name:10s} {args.device} {str(dtype):15s} {ms:9.4f} ms  {rows[-1]['gb_per_s']:7.1f} GB/s  "
              f"exact={exact[name]}", flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, f"embedding_{args.device}.json"), "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
