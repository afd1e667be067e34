"""Host cost per step with and without CUDA graphs (issue 14 item 4): a small GPT-2
(latency-bound: batch 1, short sequence) through eager, Inductor and warpweave, each
in mode "default" and "reduce-overhead", in one process on the same weights and input.

    PYTHONPATH=$PWD python3 benchmarks/reduce_overhead.py --out $OUT

Step time: median wall time of synchronised steps after warm-up (the host's cost is
what reduce-overhead removes, so wall time, not kernel time, is the measure).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

import warpweave.torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    args = ap.parse_args()
    import transformers as tf

    torch.manual_seed(0)
    cfg = tf.GPT2Config(n_layer=args.layers, n_embd=args.width, n_head=4, vocab_size=1024)
    model = tf.GPT2LMHeadModel(cfg).cuda().eval()
    ids = torch.randint(0, 1024, (1, args.seq), device="cuda")
    with torch.no_grad():
        ref = model(input_ids=ids).logits
    rows = []
    for backend in ("eager", "inductor", "warpweave"):
        for mode in ("default", "reduce-overhead"):
            if backend == "eager" and mode != "default":
                continue
            torch._dynamo.reset()
            fn = model if backend == "eager" else torch.compile(
                model, backend=warpweave.torch.backend if backend == "warpweave" else backend,
                mode=mode, dynamic=False)
            times = []
            with torch.no_grad():
                for step in range(args.steps + 5):
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    out = fn(input_ids=ids).logits
                    torch.cuda.synchronize()
                    if step >= 5:
                        times.append((time.perf_counter() - t0) * 1e3)
            err = float((out.double() - ref.double()).norm() / ref.double().norm())
            rows.append(dict(backend=backend, mode=mode, step_ms=round(statistics.median(times), 4), rel_err=err))
            print(f"{backend:10s} {mode:16s} {rows[-1]['step_ms']:8.3f} ms/step  rel.err {err:.1e}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "reduce_overhead.json"), "w") as f:
        json.dump(dict(device=torch.cuda.get_device_name(), torch=torch.__version__, args=vars(args), rows=rows),
                  f, indent=1)


if __name__ == "__main__":
    main()
