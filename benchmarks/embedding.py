"""A token embedding (issue 14 item 3): GPT-2's 50257 × 768 table gathered by 8 × 1024
token ids (`--op forward`), or the table's gradient from the gradient of those rows
(`--op backward`: aten.embedding_dense_backward, a scatter-add), through eager PyTorch,
Inductor (GPU only, `dynamic=False`) and warpweave's torch backend, in one process on
the same data.

    PYTHONPATH=$PWD python3 benchmarks/embedding.py --device cpu                # float32
    PYTHONPATH=$PWD python3 benchmarks/embedding.py --device cuda --out $OUT    # bfloat16

CPU: wall time per call; GPU: CUDA events per call; after warm-up, in rounds of 10
calls with the backends interleaved, medians. Each backend's result is compared with
eager's: the largest difference relative to eager's largest magnitude (a gather is
exact; a scatter-add's sums may add in another order).
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
    ap.add_argument("--op", default="forward", choices=("forward", "backward"))
    args = ap.parse_args()
    cuda = args.device == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    torch.manual_seed(0)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), device=args.device)
    if args.op == "forward":
        data = torch.randn(args.vocab, args.width, device=args.device, dtype=dtype)

        def fn(w, i):
            return torch.nn.functional.embedding(i, w)
    else:
        data = torch.randn(args.batch, args.seq, args.width, device=args.device, dtype=dtype)

        def fn(g, i):
            return torch.ops.aten.embedding_dense_backward(g, i, args.vocab, -1, False)

    ref = fn(data, ids)
    backends = ["eager", "warpweave"] + (["inductor"] if cuda else [])
    fns, error = {}, {}
    for name in backends:  # compile and warm up each
        torch._dynamo.reset()
        fns[name] = fn if name == "eager" else torch.compile(
            fn, backend=warpweave.torch.backend if name == "warpweave" else name, dynamic=False)
        with torch.no_grad():
            got = fns[name](data, ids)
            error[name] = float((got.double() - ref.double()).abs().max() / ref.double().abs().max())
            for _ in range(5):
                fns[name](data, ids)
    timer = _time_cuda if cuda else _time_cpu
    times = {name: [] for name in backends}
    with torch.no_grad():  # rounds of steps, backends interleaved: they share the machine's noise
        for _ in range(max(1, args.steps // 10)):
            for name in backends:
                times[name] += timer(lambda: fns[name](data, ids), 10)
    rows = []
    for name in backends:
        ms = statistics.median(times[name])
        rows.append(dict(op=args.op, backend=name, device=args.device, dtype=str(dtype), ms=round(ms, 4),
                         rel_err=error[name]))
        print(f"{args.op:8s} {name:10s} {args.device} {str(dtype):15s} {ms:9.4f} ms  "
              f"rel.err {error[name]:.1e}", flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, f"embedding_{args.op}_{args.device}.json"), "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
