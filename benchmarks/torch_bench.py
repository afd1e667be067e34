"""A GPT-2-small transformer block through torch.compile: warpweave beside PyTorch
eager and Inductor, in one process, on the same weights and inputs.

    PYTHONPATH=$PWD python benchmarks/torch_bench.py --out DIR [--write]    # on a CUDA GPU
    python benchmarks/torch_bench.py --dry-run --out DIR                      # CPU, small shapes
    python benchmarks/torch_bench.py --from-json DIR/torch_results.json --write

The block (pre-norm: layer norm, causal softmax attention written out, projection,
residual; layer norm, MLP with tanh-GELU, residual) has hidden size 768 and 12 heads
and runs on batch 8 x sequence 1024 in bfloat16 with random weights. Two phases:
"forward" (under no_grad, an inference graph) and "forward+backward" (the output's
backward with a fixed random gradient; gradients set to None between steps).
Times are medians of CUDA-event timings of whole steps after warm-up (host overhead
included: that is what a model pays). Compile times are the first call's wall time.
Writes torch_results.json and torch_results.md into --out; --write puts the table
into RESULTS.md (its torch-bench section) with the date, device and command.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

import warpweave.torch
from warpweave.frontend.torch.backend import collecting_reports

ENGINES = ("eager", "inductor", "warpweave")
PHASES = ("forward", "forward+backward")
MARKERS = ("<!-- torch-bench:start -->", "<!-- torch-bench:end -->")


class Block(nn.Module):
    def __init__(self, width: int, heads: int, seq: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc, self.out = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)
        self.register_buffer("causal", torch.tril(torch.ones(seq, seq, dtype=torch.bool)))

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2)
                   for z in self.qkv(self.ln1(x)).split(c, 2))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(c // self.heads)
        weights = scores.masked_fill(~self.causal[:t, :t], float("-inf")).softmax(-1)
        x = x + self.proj((weights @ v).transpose(1, 2).reshape(b, t, c))
        return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))


class Timer:
    """Median milliseconds of a step: CUDA events on the GPU, wall time on the CPU."""

    def __init__(self, device: str, warmup: int, reps: int):
        self.cuda = device == "cuda"
        self.warmup, self.reps = warmup, reps

    def __call__(self, step) -> float:
        for _ in range(self.warmup):
            step()
        self.sync()
        times = []
        for _ in range(self.reps):
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                step()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                step()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()


def steps(model, x, grad):
    def forward():
        with torch.no_grad():
            return model(x)

    def forward_backward():
        for p in (*model.parameters(), x):
            p.grad = None
        out = model(x)
        out.backward(grad)
        return out

    return {"forward": forward, "forward+backward": forward_backward}


def relative_error(got, ref) -> float:
    g, r = got.double(), ref.double()
    return ((g - r).norm() / r.norm().clamp_min(1e-30)).item()


def run(args) -> dict:
    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("torch_bench: no CUDA GPU here (use --dry-run to try the script on the CPU)")
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    block = Block(args.width, args.heads, args.seq).to(device=device, dtype=dtype)
    x = torch.randn(args.batch, args.seq, args.width, device=device, dtype=dtype, requires_grad=True)
    grad = torch.randn_like(x)
    timer = Timer(device, args.warmup, args.reps)
    models = {"eager": block, "inductor": torch.compile(block),
              "warpweave": torch.compile(block, backend=warpweave.torch.backend)}
    rows, checks, reports = [], {}, []
    reference = {}
    for phase in PHASES:
        for engine in ENGINES:
            step = steps(models[engine], x, grad)[phase]
            with collecting_reports() as compiled:
                t0 = time.perf_counter()
                out = step()
                timer.sync()
                first = time.perf_counter() - t0
            grads = [p.grad.clone() for p in block.parameters()] if phase != "forward" else []
            if engine == "eager":
                reference[phase] = (out.detach().clone(), grads)
            else:
                ref_out, ref_grads = reference[phase]
                errors = [relative_error(out, ref_out)] + [relative_error(g, r) for g, r in zip(grads, ref_grads)]
                checks[f"{engine} {phase}"] = max(errors)
            if engine == "warpweave":
                reports += compiled
            ms = timer(step)
            rows.append(dict(phase=phase, engine=engine, ms=ms, first_call_s=first))
            print(f"{phase:17s} {engine:9s} {ms:9.3f} ms   first call {first:6.2f} s", flush=True)
    props = torch.cuda.get_device_properties(0) if device == "cuda" else None
    meta = dict(date=datetime.date.today().isoformat(), torch=torch.__version__,
                device=props.name if props else "cpu (dry run)", dtype=args.dtype,
                shape=[args.batch, args.seq, args.width], heads=args.heads,
                command="PYTHONPATH=$PWD python3 benchmarks/torch_bench.py --out $OUT"
                + (" --dry-run" if args.dry_run else ""))
    failures = sorted({f"{r.name}: {f.reason}" for r in reports for f in r.fallbacks
                       if f.reason.startswith("compile failed")})
    return dict(meta=meta, rows=rows, max_relative_error=checks,
                warpweave_graphs=[r.summary() for r in reports], compile_failures=failures)


def table(results: dict) -> str:
    meta, rows = results["meta"], results["rows"]
    ms = {(r["phase"], r["engine"]): r for r in rows}
    b, t, c = meta["shape"]
    lines = [
        "## torch.compile: a GPT-2-small transformer block, warpweave beside eager and Inductor",
        "",
        f"Date: {meta['date']}. Device: {meta['device']}, PyTorch {meta['torch']}. Command: "
        f"`{meta['command']}`. Block: hidden {c}, {meta['heads']} heads, batch {b} x sequence {t}, "
        f"{meta['dtype']}, random weights; attention written out (causal mask, softmax). Medians of "
        "CUDA-event timings of whole steps after warm-up (host overhead included); first call = "
        "compile + run.",
        "",
        "| phase | eager ms | Inductor ms | warpweave ms | warpweave vs eager | warpweave vs Inductor "
        "| first call: Inductor s / warpweave s | max rel. error (warpweave) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for phase in PHASES:
        e, i, w = (ms[(phase, k)] for k in ENGINES)
        err = results["max_relative_error"].get(f"warpweave {phase}", float("nan"))
        lines.append(f"| {phase} | {e['ms']:.3f} | {i['ms']:.3f} | {w['ms']:.3f} | "
                     f"{e['ms'] / w['ms']:.2f}× | {i['ms'] / w['ms']:.2f}× | "
                     f"{i['first_call_s']:.1f} / {w['first_call_s']:.1f} | {err:.1e} |")
    lines += ["", "What warpweave compiled (one line per ATen graph):", ""]
    lines += [f"- {line.removeprefix('warpweave: ')}" for line in results["warpweave_graphs"]]
    if results.get("compile_failures"):
        lines += ["", "Groups that failed to compile (they ran in PyTorch):", ""]
        lines += [f"- {line}" for line in results["compile_failures"]]
    return "\n".join(lines) + "\n"


def write_results_md(section: str) -> None:
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
    with open(path) as f:
        text = f.read()
    block = f"{MARKERS[0]}\n{section}{MARKERS[1]}"
    if MARKERS[0] in text and MARKERS[1] in text:
        head, rest = text.split(MARKERS[0], 1)
        text = head + block + rest.split(MARKERS[1], 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--dry-run", action="store_true",
                    help="on the CPU with small shapes (batch 2, seq 32, hidden 64, 4 heads, float32)")
    ap.add_argument("--write", action="store_true", help="put the table into RESULTS.md")
    ap.add_argument("--from-json", default=None, help="render (and with --write record) a saved run")
    args = ap.parse_args()
    if args.from_json:
        with open(args.from_json) as f:
            results = json.load(f)
    else:
        if args.dry_run:
            args.batch, args.seq, args.width, args.heads, args.dtype = 2, 32, 64, 4, "float32"
            args.warmup, args.reps = 1, 3
        results = run(args)
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "torch_results.json"), "w") as f:
            json.dump(results, f, indent=1)
    section = table(results)
    if not args.from_json:
        with open(os.path.join(args.out, "torch_results.md"), "w") as f:
            f.write(section)
    print(section)
    if args.write:
        write_results_md(section)


if __name__ == "__main__":
    main()
