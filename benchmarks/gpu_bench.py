"""warpweave on the GPU beside PyTorch eager and torch.compile, on the same inputs,
in the same process, as fractions of the bandwidth roofline.

    PYTHONPATH=$PWD python benchmarks/gpu_bench.py [--rows 8192 --cols 4096] [--out DIR]
    PYTHONPATH=$PWD python benchmarks/gpu_bench.py --suite fusion --out DIR [--write]
    PYTHONPATH=$PWD python benchmarks/gpu_bench.py --suite fusion --dry-run        # CPU, small shapes
    python benchmarks/gpu_bench.py --suite fusion --from-json DIR/fusion_results.json --write

Suites (--suite): "ops" (the default) — single operations, the per-call overhead and
compile times; "fusion" — the multi-operation cases of the fusion issue (see
fusion_suite.py: softmaxes, norms, bias+GELU, add+layer norm, reductions, transpose, an
elementwise chain, a causally masked softmax, a small softmax for latency); "all" — both.

The roofline of a case is the bytes it must move (each input read once, each output
written once) divided by the device's copy bandwidth, measured here with a large
device-to-device copy (bytes read + bytes written). Kernel times are medians of
CUDA-event timings of CUDA-graph replays (10 calls per graph) after warm-up, so
host overhead, measured separately, stays out of them. Writes results.json and
results.md (ops) and fusion_results.json and fusion_results.md (fusion) into --out.
--write puts the fusion table into RESULTS.md (its fusion-bench section) with the
date, device and command; --from-json does that from a saved run, without a GPU.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

import warpweave as ww


def event_time_ms(fn, warmup=10, reps=50) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def graph_time_ms(fn, calls=10, replays=25) -> float:
    """GPU time per call: `calls` calls captured in a CUDA graph, the replays timed
    with events (median), so host-side launch overhead stays out of the number."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / calls)
    return statistics.median(times)


def copy_bandwidth() -> float:
    """Bytes per second of a 1 GiB device-to-device copy, counting read + write."""
    n = 1 << 28
    a = torch.empty(n, dtype=torch.float32, device="cuda").uniform_()
    b = torch.empty_like(a)
    ms = event_time_ms(lambda: b.copy_(a), warmup=5, reps=20)
    return 2 * a.numel() * 4 / (ms * 1e-3)


def cases(rows, cols):
    def chain(x, r):
        return ww.maximum(0.5 * x + r, 0.0) * ww.sigmoid(r) - x

    def torch_chain(x, r):
        return torch.relu(0.5 * x + r) * torch.sigmoid(r) - x

    # (name, warpweave fn, torch fn, number of inputs, output elements as a fraction of an input)
    return [
        ("copy", lambda x: x.astype(x.dtype), lambda x: x.clone(), 1, 1.0),
        ("add", lambda x, y: x + y, lambda x, y: x + y, 2, 1.0),
        ("x*2+1", lambda x: x * 2.0 + 1.0, lambda x: x * 2.0 + 1.0, 1, 1.0),
        ("exp", lambda x: ww.exp(x), torch.exp, 1, 1.0),
        ("gelu(tanh)", lambda x: ww.gelu(x, approximate="tanh"),
         lambda x: torch.nn.functional.gelu(x, approximate="tanh"), 1, 1.0),
        ("relu(0.5x+r)*sigmoid(r)-x", chain, torch_chain, 2, 1.0),
        ("row sum", lambda x: x.sum(axis=1), lambda x: x.sum(dim=1), 1, 1.0 / cols),
        ("row max", lambda x: x.max(axis=1), lambda x: x.amax(dim=1), 1, 1.0 / cols),
        ("column sum", lambda x: x.sum(axis=0), lambda x: x.sum(dim=0), 1, 1.0 / rows),
        ("transpose", lambda x: x.T.astype(x.dtype), lambda x: x.t().contiguous(), 1, 1.0),
    ]


def check(got, ref, dtype):
    g, r = got.double(), ref.double()
    err = ((g - r).norm() / r.norm().clamp_min(1e-30)).item()
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    assert err < tol, f"relative error {err}"
    return err


def bench_ops(rows, cols, bandwidth, results):
    for dtype in (torch.float32, torch.bfloat16):
        for name, wfn, tfn, nin, out_frac in cases(rows, cols):
            inputs = [torch.randn(rows, cols, device="cuda", dtype=dtype) for _ in range(nin)]
            jitted = ww.jit(wfn, target="cuda")
            compiled = torch.compile(tfn)
            ref = tfn(*[x.double() for x in inputs]).to(dtype)
            out = jitted(*inputs)
            err = check(out, ref, dtype)
            kernels = len(jitted.lower(*inputs).kernels)
            nbytes = sum(x.numel() * x.element_size() for x in inputs) + \
                int(rows * cols * out_frac) * inputs[0].element_size()
            t_ww = graph_time_ms(lambda: jitted(*inputs))
            t_eager = graph_time_ms(lambda: tfn(*inputs))
            t_tc = graph_time_ms(lambda: compiled(*inputs))
            roof_ms = nbytes / bandwidth * 1e3
            results.append(dict(case=name, dtype=str(dtype).replace("torch.", ""), kernels=kernels,
                                bytes=nbytes, warpweave_ms=t_ww, eager_ms=t_eager, compile_ms=t_tc,
                                roofline_ms=roof_ms, warpweave_frac=roof_ms / t_ww,
                                eager_frac=roof_ms / t_eager, compile_frac=roof_ms / t_tc,
                                rel_error=err))
            r = results[-1]
            print(f"{r['case']:28s} {r['dtype']:9s} ww {t_ww:7.3f} ms ({r['warpweave_frac']:5.1%})  "
                  f"eager {t_eager:7.3f} ({r['eager_frac']:5.1%})  compile {t_tc:7.3f} "
                  f"({r['compile_frac']:5.1%})  kernels={kernels} err={err:.1e}", flush=True)


def bench_overhead():
    """Host time per call of a compiled one-kernel program on a tiny tensor."""
    x = torch.randn(32, device="cuda")
    f = ww.jit(lambda v: v + 1.0, target="cuda")
    f(x)
    torch.cuda.synchronize()
    n = 20000
    t0 = time.perf_counter()
    for _ in range(n):
        f(x)
    per_call = (time.perf_counter() - t0) / n
    torch.cuda.synchronize()
    program = f.lower(x)
    t0 = time.perf_counter()
    for _ in range(n):
        program(x)
    per_program_call = (time.perf_counter() - t0) / n
    torch.cuda.synchronize()
    eager_t0 = time.perf_counter()
    for _ in range(n):
        torch.add(x, 1.0)
    eager = (time.perf_counter() - eager_t0) / n
    torch.cuda.synchronize()
    return dict(jit_call_us=per_call * 1e6, program_call_us=per_program_call * 1e6,
                torch_eager_add_us=eager * 1e6)


def bench_compile_times():
    """Cold compile of one kernel (trace, lower, LLVM, PTX, driver load) and a warm
    disk-cache hit (a fresh process state, the cache directory populated)."""
    from warpweave.pipeline import cache as cache_mod

    x = torch.randn(4096, 4096, device="cuda")
    out = {}
    with tempfile.TemporaryDirectory() as d:
        os.environ["WARPWEAVE_CACHE_DIR"] = d
        cold, warm = [], []
        for k in range(5):
            scale = 1.0 + k  # a new program each time: nothing in memory
            f = ww.jit(lambda v, s=scale: v * s, target="cuda")  # one kernel
            t0 = time.perf_counter()
            f(x)
            torch.cuda.synchronize()
            cold.append(time.perf_counter() - t0)
            cache_mod.default_cache()._memory.clear()  # forget the in-process layer
            g = ww.jit(lambda v, s=scale: v * s, target="cuda")
            t0 = time.perf_counter()
            g(x)
            torch.cuda.synchronize()
            warm.append(time.perf_counter() - t0)
        out["cold_compile_ms"] = statistics.median(cold) * 1e3
        out["warm_cache_ms"] = statistics.median(warm) * 1e3
    return out


def bench_ops_suite(args, props, bw):
    results = []
    if not args.skip_ops:
        bench_ops(args.rows, args.cols, bw, results)
    overhead = bench_overhead()
    print("per-call overhead:", overhead)
    compile_times = bench_compile_times()
    print("compile:", compile_times)
    meta = dict(date=str(datetime.date.today()), device=props.name, sms=props.multi_processor_count,
                copy_bandwidth_tbs=bw / 1e12, torch=torch.__version__, rows=args.rows, cols=args.cols)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(dict(meta=meta, ops=results, overhead=overhead, compile=compile_times), f, indent=1)
    lines = ["| case | dtype | kernels | warpweave ms (roofline) | eager ms (roofline) | "
             "torch.compile ms (roofline) | vs torch.compile |", "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['case']} | {r['dtype']} | {r['kernels']} | {r['warpweave_ms']:.3f} "
                     f"({r['warpweave_frac']:.0%}) | {r['eager_ms']:.3f} ({r['eager_frac']:.0%}) | "
                     f"{r['compile_ms']:.3f} ({r['compile_frac']:.0%}) | "
                     f"{r['compile_ms'] / r['warpweave_ms']:.2f}× |")
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def bench_fusion_suite(args, engine, meta):
    """The fusion suite (fusion_suite.py) on `engine`; writes fusion_results.{json,md}
    into --out and, with --write, the fusion section of RESULTS.md."""
    import fusion_suite as fs

    if args.dry_run:  # the harness's logic at small shapes (CPU)
        shapes = dict(rows=256, cols=512, square=256, batch=4, seq=64, small=(32, 128))
    else:
        shapes = dict(rows=args.rows, cols=args.cols, square=args.square, batch=args.batch,
                      seq=args.seq, small=(32, 128))
    meta.update(shapes, small=list(shapes["small"]), suite="fusion", command=fs.command_line(),
                compile_backend=args.compile_backend, warpweave_commit=fs.source_commit())
    rows = fs.run_suite(engine, dtypes=tuple(args.dtypes.split(",")), only=args.only,
                        compile_backend=args.compile_backend, **shapes,
                        on_row=lambda done: fs.write_outputs(args.out, meta, done, fs.summarize(done)))
    summary = fs.summarize(rows)
    md = fs.write_outputs(args.out, meta, rows, summary)
    print(md)
    if args.write:
        fs.write_results_md(args.results_md, fs.section(meta, rows, summary, args.note))
        print(f"wrote the fusion section of {args.results_md}")
    return rows, summary


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", choices=("ops", "fusion", "all"), default="ops",
                    help="ops: single operations, overhead, compile times (the default); "
                         "fusion: the fusion issue's cases; all: both")
    ap.add_argument("--rows", type=int, default=8192)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--square", type=int, default=8192, help="fusion: the transpose is [square, square]")
    ap.add_argument("--batch", type=int, default=64, help="fusion: causal softmax [batch, seq, seq]")
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--skip-ops", action="store_true")
    ap.add_argument("--dtypes", default="float32,bfloat16", help="fusion: dtypes to run")
    ap.add_argument("--only", default=None, help="fusion: comma-separated substrings of case names")
    ap.add_argument("--compile-backend", default="inductor",
                    help="fusion: torch.compile backend (inductor; 'eager' only to test the harness)")
    ap.add_argument("--dry-run", action="store_true",
                    help="fusion on the CPU at small shapes: tests the harness, its numbers mean nothing")
    ap.add_argument("--write", action="store_true", help="fusion: update RESULTS.md's fusion section")
    ap.add_argument("--note", default=None, help="fusion: a line put under the RESULTS.md heading")
    ap.add_argument("--results-md", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                         "RESULTS.md"))
    ap.add_argument("--from-json", default=None,
                    help="fusion: render (and with --write record) a saved fusion_results.json")
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import fusion_suite as fs

    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        summary = fs.summarize(saved["cases"])
        print(fs.markdown(saved["cases"], summary))
        if args.write:
            fs.write_results_md(args.results_md, fs.section(saved["meta"], saved["cases"], summary, args.note))
            print(f"wrote the fusion section of {args.results_md}")
        return
    if args.dry_run:
        if args.suite != "fusion":
            ap.error("--dry-run runs the fusion suite only: pass --suite fusion")
        engine = fs.CpuEngine()
        meta = fs.stamp(dict(device="CPU (dry run)", sms="-", copy_bandwidth_tbs=engine.bandwidth / 1e12,
                             torch=torch.__version__))
        bench_fusion_suite(args, engine, meta)
        return
    torch.manual_seed(0)
    props = torch.cuda.get_device_properties(0)
    bw = copy_bandwidth()
    print(f"device {props.name}, {props.multi_processor_count} SMs; copy bandwidth {bw / 1e12:.3f} TB/s")
    if args.suite in ("ops", "all"):
        bench_ops_suite(args, props, bw)
    if args.suite in ("fusion", "all"):
        engine = fs.CudaEngine(graph_time_ms, event_time_ms, bw)
        meta = fs.stamp(dict(device=props.name, sms=props.multi_processor_count,
                             copy_bandwidth_tbs=bw / 1e12, torch=torch.__version__))
        bench_fusion_suite(args, engine, meta)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
