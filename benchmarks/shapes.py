"""The shape sweep of issue 15: memory-bound ops at shapes outside the development suite
(rows from 1 to 10^6, widths from 1 to 256K, odd and prime widths), float32 and
bfloat16, warpweave beside eager and torch.compile (Inductor, `dynamic=False`, a fresh
Dynamo state per case) in one process, with the fraction of the bandwidth roofline and
the cost model's estimate beside each. Harness, timing, poisoning and the table come
from fusion_suite.py.

    PYTHONPATH=$PWD python3 benchmarks/shapes.py --out $OUT [--part 1/2] [--write]
    PYTHONPATH=$PWD python3 benchmarks/shapes.py --dry-run          # CPU, tiny shapes
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fusion_suite as fs  # noqa: E402
import gpu_bench  # noqa: E402

import warpweave as ww  # noqa: E402

BEGIN, END = "<!-- shape-sweep:begin -->", "<!-- shape-sweep:end -->"
EPS = 1e-5
B1, B2, LR = 0.9, 0.999, 1e-3


def _ln_bwd(x, w, dy, lib):
    """d(layer_norm(x) * w)/dx given dy, by the usual formula (eps 1e-5)."""
    mu = x.mean(-1, keepdims=True) if lib is ww else x.mean(-1, keepdim=True)
    xc = x - mu
    var = (xc * xc).mean(-1, keepdims=True) if lib is ww else (xc * xc).mean(-1, keepdim=True)
    rstd = ww.rsqrt(var + EPS) if lib is ww else torch.rsqrt(var + EPS)
    xhat = xc * rstd
    g = dy * w
    mean = (lambda t: t.mean(-1, keepdims=True)) if lib is ww else (lambda t: t.mean(-1, keepdim=True))
    return rstd * (g - mean(g) - xhat * mean(g * xhat))


def _ln_wgrad(x, mu, rstd, dy, lib):
    """Weight gradient of a layer norm: sum over the two leading axes of dy * x̂."""
    xhat = (x - mu) * rstd
    return (dy * xhat).sum(axis=(0, 1)) if lib is ww else (dy * xhat).sum(dim=(0, 1))


def _adam(p, g, m, v, lib):
    """One Adam step (v is read through abs: the random inputs stand for a second moment)."""
    m2 = B1 * m + (1 - B1) * g
    v2 = B2 * (ww.abs(v) if lib is ww else v.abs()) + (1 - B2) * g * g
    root = ww.sqrt(v2) if lib is ww else torch.sqrt(v2)
    return p - LR * m2 / (root + 1e-8), m2, v2


def _rms(x, w, lib):
    ms = (x * x).mean(-1, keepdims=True) if lib is ww else (x * x).mean(-1, keepdim=True)
    return x * (ww.rsqrt(ms + 1e-6) if lib is ww else torch.rsqrt(ms + 1e-6)) * w


def sweep_cases(scale: float = 1.0) -> list[fs.Case]:
    """The sweep; `scale` shrinks every large extent (the dry run uses tiny shapes)."""
    def s(n):  # scale an extent, keeping odd and prime widths odd-ish and non-zero
        return max(1, int(n * scale)) | (n & 1)

    C = fs.Case
    sm, lsm = (lambda x: torch.softmax(x, -1)), (lambda x: torch.log_softmax(x, -1))
    cases = []
    for rows, width in [(1024, 50257), (4096, 1000), (65536, 128), (8, 262144), (s(1000000), 8),
                        (32768, 1), (2048, 4093), (1, 65536)]:
        cases.append(C("softmax", [(s(rows) if rows > 1 else 1, s(width))], sm, lambda x: ww.softmax(x),
                       moved="x → y"))
    for rows, width in [(1024, 32000), (8192, 1000), (4096, 30522)]:
        cases.append(C("log-softmax", [(s(rows), s(width))], lsm, lambda x: ww.log_softmax(x),
                       moved="x → y"))
    for rows, width in [(1024, 12288), (16384, 768), (4096, 4095), (s(1000000), 16), (8192, 1)]:
        r, w = s(rows), s(width)
        cases.append(C("layer norm (w, b)", [(r, w), (w,), (w,)],
                       lambda x, a, b: F.layer_norm(x, (x.shape[-1],), a, b, EPS),
                       lambda x, a, b: ww.layer_norm(x, a, b, eps=EPS), moved="x, w, b → y"))
    for rows, width in [(8192, 4096), (2048, 5120), (100000, 96)]:
        r, w = s(rows), s(width)
        cases.append(C("RMS norm (w)", [(r, w), (w,)], lambda x, a: _rms(x, a, torch),
                       lambda x, a: _rms(x, a, ww), moved="x, w → y"))
    for rows, width in [(16384, 768), (4096, 4096)]:
        r, w = s(rows), s(width)
        cases.append(C("layer norm backward dx", [(r, w), (w,), (r, w)], lambda x, a, d: _ln_bwd(x, a, d, torch),
                       lambda x, a, d: _ln_bwd(x, a, d, ww), moved="x, w, dy → dx"))
    b, t, c = s(32), 512, 768
    cases.append(C("layer norm weight grad", [(b, t, c), (b, t, 1), (b, t, 1), (b, t, c)],
                   lambda x, m, r, d: _ln_wgrad(x, m, r, d, torch), lambda x, m, r, d: _ln_wgrad(x, m, r, d, ww),
                   moved="x, μ, rstd, dy → dw[C]"))
    for rows, width in [(8192, 4096), (s(1000003), 7), (4096, 100003)]:
        cases.append(C("row sum", [(s(rows), s(width))], lambda x: x.sum(-1), lambda x: x.sum(axis=-1),
                       moved="x → y[R]"))
    for rows, width in [(100000, 64), (8192, 4096), (1000, 50000)]:
        cases.append(C("column sum", [(s(rows), s(width))], lambda x: x.sum(0), lambda x: x.sum(axis=0),
                       moved="x → y[C]"))
    cases.append(C("middle-axis sum", [(s(64), 512, 768)], lambda x: x.sum(1), lambda x: x.sum(axis=1),
                   moved="x → y[B, C]"))
    cases.append(C("two-axis sum (0, 2)", [(s(64), 256, 256)], lambda x: x.sum((0, 2)),
                   lambda x: x.sum(axis=(0, 2)), moved="x → y[T]"))
    cases.append(C("transpose", [(s(8192), s(8192))], lambda x: x.t().contiguous(),
                   lambda x: x.T.astype(x.dtype), moved="x → xᵀ"))
    cases.append(C("transpose (odd)", [(s(5000), s(3001))], lambda x: x.t().contiguous(),
                   lambda x: x.T.astype(x.dtype), moved="x → xᵀ"))
    cases.append(C("permute 0213", [(s(32), 512, 16, 64)], lambda x: x.permute(0, 2, 1, 3).contiguous(),
                   lambda x: x.transpose(0, 2, 1, 3).astype(x.dtype), moved="x → y"))
    cases.append(C("bias add (broadcast column)", [(s(16384), s(4096)), (s(4096),)], lambda x, b: x + b,
                   lambda x, b: x + b, moved="x, b → y"))
    cases.append(C("row scale (broadcast row)", [(s(16384), s(4096)), (s(16384), 1)], lambda x, r: x * r,
                   lambda x, r: x * r, moved="x, r → y"))
    for approx in ("none", "tanh"):
        cases.append(C(f"GELU ({approx})", [(s(8192), s(8192))],
                       lambda x, a=approx: F.gelu(x, approximate=a),
                       lambda x, a=approx: ww.gelu(x, approximate=a), moved="x → y"))
    cases.append(C("GELU (none), odd", [(s(3001), s(5003))], lambda x: F.gelu(x),
                   lambda x: ww.gelu(x), moved="x → y"))
    n = s(1 << 26)
    cases.append(C("Adam step", [(n,), (n,), (n,), (n,)], lambda p, g, m, v: _adam(p, g, m, v, torch),
                   lambda p, g, m, v: _adam(p, g, m, v, ww), moved="p, g, m, v → p, m, v"))
    cases.append(C("SiLU · gate", [(s(8192), s(11008)), (s(8192), s(11008))],
                   lambda a, b: F.silu(a) * b, lambda a, b: a * ww.sigmoid(a) * b, moved="a, b → y"))
    return cases


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--part", default="1/1", help="k/n: run the k-th of n slices of the cases")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes: tests the harness only")
    ap.add_argument("--only", default=None, help="comma-separated substrings of case names")
    ap.add_argument("--shapes", default=None, help="semicolon-separated case:shape pairs to keep, "
                    "e.g. 'softmax:8×262144' (a shape as the table writes it, × or x)")
    ap.add_argument("--write", default=None, help="merge these fusion_results-style JSON files into RESULTS.md")
    args = ap.parse_args()
    if args.write:
        return write_results(args.write.split(","))
    k, n = (int(v) for v in args.part.split("/"))
    if args.dry_run:
        engine = fs.CpuEngine()
        cases = sweep_cases(scale=1e-3)
        meta = fs.stamp(dict(device="CPU (dry run)", sms="-", copy_bandwidth_tbs=engine.bandwidth / 1e12,
                             torch=torch.__version__))
    else:
        torch.manual_seed(0)
        props = torch.cuda.get_device_properties(0)
        bw = gpu_bench.copy_bandwidth()
        engine = fs.CudaEngine(gpu_bench.graph_time_ms, gpu_bench.event_time_ms, bw)
        cases = sweep_cases()
        meta = fs.stamp(dict(device=props.name, sms=props.multi_processor_count,
                             copy_bandwidth_tbs=bw / 1e12, torch=torch.__version__))
    if args.only:
        wanted = [w.strip().lower() for w in args.only.split(",")]
        cases = [c for c in cases if any(w in c.name.lower() for w in wanted)]
    if args.shapes:
        pairs = [(n, sh.replace("x", "×")) for n, sh in (p.split(":") for p in args.shapes.split(";"))]
        cases = [c for c in cases if any(c.name == n and " ; ".join("×".join(map(str, s)) for s in c.shapes)
                                         .split(" ; ")[0] == sh for n, sh in pairs)]
    jobs = [(c, d) for d in args.dtypes.split(",") for c in cases]
    jobs = jobs[(k - 1) * len(jobs) // n: k * len(jobs) // n]
    meta.update(command=fs.command_line(), warpweave_commit=fs.source_commit(), part=args.part)
    rows = []
    for case, dtype in jobs:
        torch.manual_seed(len(rows))
        try:
            row = fs.run_case(case, dtype, engine)
        except Exception as exc:  # one broken case must not cost the run
            traceback.print_exc()
            row = dict(case=case.name, dtype=dtype, shape=case.shape_text, moved=case.moved,
                       large=True, error=f"{type(exc).__name__}: {exc}"[:300])
        row["shape"] = " ; ".join("×".join(map(str, s)) for s in case.shapes)
        rows.append(row)
        print(fs._progress_line(row), flush=True)
        fs.write_outputs(args.out, meta, rows, fs.summarize(rows))
    os.replace(os.path.join(args.out, "fusion_results.json"), os.path.join(args.out, f"shapes_{k}of{n}.json"))
    print(fs.markdown(rows, fs.summarize(rows)))


def write_results(paths: list[str]) -> None:
    """Merge saved parts into the shape-sweep section of RESULTS.md."""
    rows, metas = [], []
    for p in paths:
        with open(p) as f:
            saved = json.load(f)
        rows += saved["cases"]
        metas.append(saved["meta"])
    meta = metas[0]
    summary = fs.summarize(rows)
    good = [r for r in rows if "error" not in r]
    below = [f"{r['case']} {r['dtype']} {r['shape']} ({r['speedup_vs_compile']:.2f}×)"
             for r in good if r["speedup_vs_compile"] < 0.95]
    big = [r for r in good if r["bytes"] >= 64e6]
    under90 = [f"{r['case']} {r['dtype']} {r['shape']} ({r['ww_frac']:.0%})" for r in big if r["ww_frac"] < 0.9]
    head = [
        "## Shape sweep (issue 15): memory-bound ops outside the development suite", "",
        f"Date: {meta['date']}. Device: {meta['device']} ({meta['sms']} SMs), PyTorch {meta['torch']}; "
        f"measured copy bandwidth {meta['copy_bandwidth_tbs']:.2f} TB/s. warpweave at "
        f"{meta.get('warpweave_commit') or '?'}. Command (device machine, in parts): "
        f"`{meta['command']}`, then `python benchmarks/shapes.py --write <parts>`. torch.compile is "
        "Inductor, default mode, `dynamic=False` semantics (a fresh Dynamo state per case).", "",
        fs.markdown(rows, summary), "",
        f"- Cases below 0.95× torch.compile ({len(below)} of {len(good)}): {'; '.join(below) or 'none'}.",
        f"- Cases moving ≥ 64 MB below 90 % of the roofline ({len(under90)} of {len(big)}): "
        f"{'; '.join(under90) or 'none'}.", "", fs.LEGEND]
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")
    fs.write_results_md(path, "\n".join(head), BEGIN, END)
    print(f"wrote the shape-sweep section of {path}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
