"""bfloat16 matrix products: warpweave's tensor-core kernels (mma.sync, wgmma) beside torch.mm
(cuBLAS) and torch.compile(dynamic=False), on the same inputs in the same process.

    PYTHONPATH=$PWD python benchmarks/gemm.py [--out DIR] [--quick]

Times are medians of CUDA-event timings of CUDA-graph replays (10 calls per graph)
after warm-up (see gpu_bench.graph_time_ms); TFLOP/s counts 2 m n k per product.
Every product is also timed under the other candidates of the default's cost model
(`schedule.mma._CANDIDATES`) and the previous default (compile_graph(schedules=...)),
which shows whether `mma_time` ranks them right. The fused cases time
gelu(a @ b + bias) as one warpweave kernel against PyTorch eager (cuBLAS, then the
bias and GELU kernels) and torch.compile (Inductor: cuBLAS, then one fused kernel).
Writes <device>_gemm_<date>.json into --out (on an H200: h200_gemm_<date>.json, the
name benchmarks/data/ keeps), rewritten after every row.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from dataclasses import replace

import torch

import warpweave as ww
from warpweave.pipeline.compile import compile_graph
from warpweave.schedule.mma import _CANDIDATES, GpuMma
from warpweave.schedule.space import group_key

sys.path.insert(0, os.path.dirname(__file__))
from gpu_bench import graph_time_ms  # noqa: E402

CASES = [("4096^3", (), 4096, 4096, 4096), ("8192x768x3072", (), 8192, 3072, 768),
         ("8192x3072x768", (), 8192, 768, 3072), ("1999x1001x2056", (), 1999, 2056, 1001),
         ("bmm 32x512x512x64", (32,), 512, 512, 64)]
FUSED = [("gelu(8192x768 @ 768x3072 + b)", 8192, 3072, 768),
         ("gelu(8192x3072 @ 3072x768 + b)", 8192, 768, 3072),
         ("gelu(4096^3 + b)", 4096, 4096, 4096)]
PREVIOUS_DEFAULT = GpuMma(128, 128, 32, 2, 2, 3)
WGMMA_POINTS = [GpuMma(bm, bn, 64, wm, 1, st, 1, 8, "wgmma")
                for bm, bn, wm, st in ((128, 256, 2, 3), (128, 256, 2, 4), (256, 128, 2, 3), (256, 128, 2, 4),
                                       (128, 128, 2, 3), (128, 128, 2, 4), (128, 128, 2, 5), (128, 128, 1, 4),
                                       (64, 256, 1, 4), (128, 64, 2, 4), (64, 128, 1, 4), (64, 128, 1, 3),
                                       (64, 64, 1, 4), (128, 256, 2, 2))]


def mm(a, b):
    return a @ b


def ww_bias_gelu(a, b, bias):
    return ww.gelu(a @ b + bias)


def torch_bias_gelu(a, b, bias):
    return torch.nn.functional.gelu(a @ b + bias)


def _points(default: GpuMma, pipeline: bool) -> list[GpuMma]:
    """The cost model's other candidates (in the default's tile order), the previous
    default, and the default in row-major tile order; with `pipeline`, instead
    128 x 128 tiles of 2 x 2 warps at 3 to 5 stages in both tile orders."""
    if pipeline:
        points = [replace(PREVIOUS_DEFAULT, stages=n, raster=r) for n in (3, 4, 5) for r in (1, 8)]
    else:
        points = [replace(p, raster=default.raster) for p in _CANDIDATES] + [PREVIOUS_DEFAULT]
        points.append(replace(default, raster=1))
    return list(dict.fromkeys(p for p in points if p != default))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=".")
    ap.add_argument("--quick", action="store_true", help="fewer replays")
    ap.add_argument("--wgmma", action="store_true",
                    help="time the wgmma points of WGMMA_POINTS (and check each point's result) "
                         "instead of the mma.sync candidates; skip the fused cases")
    ap.add_argument("--tma", action="store_true",
                    help="with --wgmma, also time each point with its stages filled by TMA")
    ap.add_argument("--cases", help="comma-separated labels of CASES to run (default: all)")
    ap.add_argument("--pipeline", action="store_true",
                    help="time 128 x 128 tiles at 3-5 stages in both tile orders instead of the "
                         "candidates; skip torch.compile and the fused cases")
    args = ap.parse_args()
    replays = 10 if args.quick else 25
    today, device = datetime.date.today().isoformat(), torch.cuda.get_device_name()
    result = {"date": today, "device": device,
              "torch": torch.__version__, "command": "python benchmarks/gemm.py " +
              " ".join(sys.argv[1:]), "rows": [], "fused": []}
    os.makedirs(args.out, exist_ok=True)
    slug = "h200" if "H200" in device else "".join(ch for ch in device.lower() if ch.isalnum())
    path = os.path.join(args.out, f"{slug}_gemm_{today}.json")

    def save(kind, row):
        print(json.dumps(row), flush=True)
        result[kind].append(row)
        with open(path, "w") as fh:
            json.dump(result, fh, indent=1)

    chosen = set(args.cases.split(",")) if args.cases else {c[0] for c in CASES}
    for label, batch, m, n, k in [c for c in CASES if c[0] in chosen]:
        a = torch.randn(*batch, m, k, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(*batch, k, n, device="cuda", dtype=torch.bfloat16)
        flops = 2 * m * n * k * (batch[0] if batch else 1)
        f = ww.jit(mm, target="cuda")
        program = f.lower(a, b)
        ref = torch.matmul(a.float(), b.float())
        err = ((f(a, b).float() - ref).abs().max() / ref.abs().max()).item()
        default = program.kernels[0].schedule
        row = {"case": label, "m": m, "n": n, "k": k, "batch": list(batch),
               "warpweave_schedule": repr(default), "max_rel_err": err}
        timed = [("warpweave", lambda: f(a, b)), ("cublas", lambda: torch.matmul(a, b))]
        if not args.pipeline:
            compiled = torch.compile(mm, dynamic=False)
            timed.append(("torch_compile", lambda: compiled(a, b)))
        for name, fn in timed:
            ms = graph_time_ms(fn, replays=replays)
            row[name + "_ms"] = ms
            row[name + "_tflops"] = flops / ms / 1e9
        key = group_key(program.plan.groups[0], program.graph)
        row["points"] = {}
        wgmma = WGMMA_POINTS + ([replace(p, loader="tma") for p in WGMMA_POINTS] if args.tma else [])
        for point in wgmma if args.wgmma else _points(default, args.pipeline):
            try:
                p = compile_graph(program.traced, True, "cuda", "mma_point", {key: point})
            except ww.Error as exc:  # not a legal point for this product's layouts
                row["points"][repr(point)] = {"error": str(exc)[:200]}
                continue
            point_err = ((p(a, b).float() - ref).abs().max() / ref.abs().max()).item()
            ms = graph_time_ms(lambda: p(a, b), replays=replays)
            row["points"][repr(point)] = {"ms": ms, "tflops": flops / ms / 1e9, "max_rel_err": point_err}
        row["fraction_of_cublas"] = row["cublas_ms"] / row["warpweave_ms"]
        save("rows", row)
    for label, m, n, k in [] if args.pipeline or args.wgmma else FUSED:
        a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
        bias = torch.randn(n, device="cuda", dtype=torch.bfloat16)
        f = ww.jit(ww_bias_gelu, target="cuda")
        kernels = f.lower(a, b, bias).kernels
        ref = torch_bias_gelu(a.double(), b.double(), bias.double())
        err = ((f(a, b, bias).double() - ref).abs().max() / ref.abs().max()).item()
        compiled = torch.compile(torch_bias_gelu, dynamic=False)
        row = {"case": label, "m": m, "n": n, "k": k, "warpweave_kernels": len(kernels),
               "warpweave_schedule": repr(kernels[0].schedule), "max_rel_err": err}
        for name, fn in (("warpweave", lambda: f(a, b, bias)),
                         ("torch_eager", lambda: torch_bias_gelu(a, b, bias)),
                         ("torch_compile", lambda: compiled(a, b, bias))):
            row[name + "_ms"] = graph_time_ms(fn, replays=replays)
        row["fraction_of_torch_compile"] = row["torch_compile_ms"] / row["warpweave_ms"]
        save("fused", row)


if __name__ == "__main__":
    main()
