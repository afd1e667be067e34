"""The fusion suite of issue 4: multi-operation memory-bound kernels (norms, softmaxes,
activations with bias, residual adds, reductions, a transpose, an elementwise chain,
a causally masked softmax and a small softmax for latency), each in float32 and
bfloat16, beside PyTorch eager and torch.compile (Inductor, default mode) in one
process on the same inputs.

Run through gpu_bench.py:

    PYTHONPATH=$PWD python3 benchmarks/gpu_bench.py --suite fusion --out DIR [--write]
    PYTHONPATH=$PWD python3 benchmarks/gpu_bench.py --suite fusion --dry-run    # CPU, small shapes

Per case and dtype it reports:

- bytes: what must move through DRAM — every input read once and every output written
  once (intermediates never count; `moved` names the tensors counted);
- the median time of warpweave, eager and torch.compile (CUDA-event timings of
  CUDA-graph replays after warm-up, gpu_bench.graph_time_ms), each also as a fraction of
  the bandwidth roofline: bytes / measured copy bandwidth / time;
- the speed-up of warpweave over torch.compile (torch.compile time / warpweave time);
- warpweave's kernel count (len(Program.kernels)) and the cost model's estimate
  (`Program.cost_estimate.time_us`, "—" while the compiler has none);
- correctness: warpweave's output against eager run on the inputs upcast to float32
  (relative error ||out - ref|| / ||ref|| per output, the largest reported), with
  per-dtype tolerances. Before the checked call every free block of PyTorch's caching
  allocator (where warpweave's outputs come from) is filled with 0xFF bytes — NaN in
  float32 and bfloat16 — and the check confirms that every output landed in poisoned
  memory ("poisoned" column) and holds no NaN.

The small softmax [32, 128] is launch-bound: besides the graph-replay GPU time it is
timed per single call without a graph (events around one call, so the host's
dispatch time is inside), the latency a caller sees; its summary compares with eager.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import re
import shlex
import statistics
import sys
import time
import traceback
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

import warpweave as ww

TOLERANCE = {"float32": 1e-4, "bfloat16": 1e-2}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
BEGIN, END = "<!-- fusion-bench:begin -->", "<!-- fusion-bench:end -->"
SCALE = 0.125  # softmax scale of the masked case (1/sqrt(64), exact in bfloat16)
LN_EPS, RMS_EPS = 1e-5, 1e-6


# ============================================================================ cases

@dataclasses.dataclass
class Case:
    name: str
    shapes: list[tuple[int, ...]]      # input shapes, in argument order
    torch_fn: Callable                 # the PyTorch version (eager, and torch.compile of it)
    ww_fn: Callable | None = None      # a numpy-style function for ww.jit ...
    ww_build: Callable | None = None   # ... or (shapes, dtype name, target) -> ww.Program (te)
    moved: str = ""                    # which tensors the byte count holds
    large: bool = True                 # counts in the geometric mean over torch.compile

    @property
    def shape_text(self) -> str:
        return "×".join(str(s) for s in self.shapes[0])


def _chain_ww(x, r):
    return ww.relu(0.5 * x + r) * ww.sigmoid(r) - x


def _chain_torch(x, r):
    return torch.relu(0.5 * x + r) * torch.sigmoid(r) - x


def _add_ln_ww(x, r, w, b):
    h = x + r
    return h, ww.layer_norm(h, w, b, eps=LN_EPS)


def _add_ln_torch(x, r, w, b):
    h = x + r
    return h, F.layer_norm(h, (h.shape[-1],), w, b, LN_EPS)


def _masked_softmax_program(shapes, dtype: str, target: str):
    """softmax(where(j <= i, x * scale, -inf), axis=-1) over x[b, i, j], written with
    tensor expressions: the jit frontend has no index-valued op (arange/iota/tril) to
    build the causal mask from. The masked scores keep the input's dtype (as in
    PyTorch); the softmax runs in float32 and casts back, like ww.softmax."""
    (nb, n, m), = shapes
    x = ww.placeholder((nb, n, m), dtype, name="x")
    masked = ww.compute((nb, n, m), lambda b, i, j: ww.where(j <= i, x[b, i, j] * SCALE, -math.inf),
                        name="masked")
    k1 = ww.reduce_axis(m, name="k1")
    mx = ww.compute((nb, n), lambda b, i: ww.max(masked[b, i, k1].astype("float32"), axis=k1),
                    name="rowmax")
    e = ww.compute((nb, n, m), lambda b, i, j: ww.exp(masked[b, i, j].astype("float32") - mx[b, i]),
                   name="exp")
    k2 = ww.reduce_axis(m, name="k2")
    s = ww.compute((nb, n), lambda b, i: ww.sum(e[b, i, k2], axis=k2), name="rowsum")
    y = ww.compute((nb, n, m), lambda b, i, j: (e[b, i, j] / s[b, i]).astype(dtype), name="y")
    return ww.build(y, [x], target=target, name="masked_softmax")


def _masked_softmax_torch_fn(n: int, m: int, device):
    mask = torch.ones(n, m, dtype=torch.bool, device=device).tril()  # j <= i, built once

    def masked_softmax(x):
        return torch.softmax(torch.where(mask, x * SCALE, -math.inf), dim=-1)
    return masked_softmax


def fusion_cases(rows, cols, square, batch, seq, small, device) -> list[Case]:
    """The suite: [rows, cols] cases, a [square, square] transpose, the masked softmax at
    [batch, seq, seq] and the small softmax at `small`."""
    R, C = rows, cols
    x = (R, C)
    return [
        Case("softmax", [x], lambda x: torch.softmax(x, dim=-1),
             lambda x: ww.softmax(x, axis=-1), moved="x → y"),
        Case("log-softmax", [x], lambda x: torch.log_softmax(x, dim=-1),
             lambda x: ww.log_softmax(x, axis=-1), moved="x → y"),
        Case("layer norm (w, b)", [x, (C,), (C,)],
             lambda x, w, b: F.layer_norm(x, (C,), w, b, LN_EPS),
             lambda x, w, b: ww.layer_norm(x, w, b, eps=LN_EPS), moved="x, w, b → y"),
        Case("RMS norm (w)", [x, (C,)], lambda x, w: F.rms_norm(x, (C,), w, RMS_EPS),
             lambda x, w: ww.rms_norm(x, w, eps=RMS_EPS), moved="x, w → y"),
        Case("bias + GELU(tanh)", [x, (C,)], lambda x, b: F.gelu(x + b, approximate="tanh"),
             lambda x, b: ww.gelu(x + b, approximate="tanh"), moved="x, b → y"),
        Case("add + layer norm", [x, x, (C,), (C,)], _add_ln_torch, _add_ln_ww,
             moved="x, r, w, b → h, y"),
        Case("row sum", [x], lambda x: x.sum(dim=1), lambda x: x.sum(axis=1), moved="x → y[R]"),
        Case("column sum", [x], lambda x: x.sum(dim=0), lambda x: x.sum(axis=0), moved="x → y[C]"),
        Case("transpose", [(square, square)], lambda x: x.t().contiguous(),
             lambda x: x.T.astype(x.dtype), moved="x → xᵀ"),
        Case("relu(0.5x+r)·sigmoid(r)−x", [x, x], _chain_torch, _chain_ww, moved="x, r → y"),
        Case("causal softmax (scaled)", [(batch, seq, seq)], _masked_softmax_torch_fn(seq, seq, device),
             ww_build=_masked_softmax_program,
             moved="x → y (the masked half of x counted as read)"),
        Case("small softmax", [small], lambda x: torch.softmax(x, dim=-1),
             lambda x: ww.softmax(x, axis=-1), moved="x → y", large=False),
    ]


# ============================================================================ engines

class CudaEngine:
    """Times on the GPU with gpu_bench's helpers; warpweave gets PyTorch tensors in place."""

    name = "cuda"
    target = "cuda"

    def __init__(self, graph_time_ms, event_time_ms, bandwidth: float):
        self.graph_time_ms = graph_time_ms
        self.event_time_ms = event_time_ms
        self.bandwidth = bandwidth
        self.device = torch.device("cuda")

    def time_ms(self, fn) -> float:
        return self.graph_time_ms(fn)

    def latency_ms(self, fn) -> float:
        """One call between two events, no graph: includes the host's dispatch."""
        return self.event_time_ms(fn, warmup=20, reps=200)

    def sync(self):
        torch.cuda.synchronize()

    to_ww = staticmethod(lambda t: t)
    from_ww = staticmethod(lambda a: a)

    def checked_call(self, call):
        """Run `call` with every free block of the caching allocator filled with 0xFF
        bytes (NaN for float32/bfloat16). Returns (outputs, whether every output lies
        in poisoned memory)."""
        self.sync()
        try:
            ranges = _poison_free_blocks(torch.cuda.current_device())
        except Exception as exc:  # an allocator without snapshots: check unpoisoned
            print(f"warning: could not poison the allocator's free blocks: {exc}", file=sys.stderr)
            return call(), None
        outs = call()
        self.sync()
        ptrs = [o.data_ptr() for o in _as_list(outs)]
        hit = all(any(lo <= p < hi for lo, hi in ranges) for p in ptrs)
        return outs, hit


def _poison_free_blocks(device: int) -> list[tuple[int, int]]:
    """Fill every inactive block of the default pool on `device` with 0xFF and give it
    back; returns the poisoned address ranges. Largest first, so every request is
    served by the block it was sized for."""
    sizes = []
    stream = torch.cuda.current_stream(device).cuda_stream  # blocks serve their own stream only
    for seg in torch.cuda.memory_snapshot():
        if seg.get("device", device) != device or seg.get("stream", 0) != stream:
            continue
        if tuple(seg.get("segment_pool_id", (0, 0)) or (0, 0)) != (0, 0):  # graph pools
            continue
        small_segment = seg.get("segment_type") == "small"
        for blk in seg.get("blocks", []):
            # a leftover under 1 MiB in a large segment serves no request: skip it
            if blk.get("state") == "inactive" and (small_segment or blk["size"] > (1 << 20)):
                sizes.append(blk["size"])
    held = []
    for size in sorted(sizes, reverse=True):
        t = torch.empty(size, dtype=torch.uint8, device=f"cuda:{device}")
        t.fill_(0xFF)
        held.append(t)
    torch.cuda.synchronize()
    return [(t.data_ptr(), t.data_ptr() + t.numel()) for t in held]


class CpuEngine:
    """--dry-run: the harness's logic on the CPU (small shapes, warpweave's cpu target,
    wall-clock medians). Numbers from it mean nothing; outputs are not poisoned."""

    name = "cpu"
    target = "cpu"

    def __init__(self, reps: int = 3):
        self.reps = reps
        self.device = torch.device("cpu")
        self.bandwidth = self._copy_bandwidth()

    def _copy_bandwidth(self) -> float:
        a = torch.empty(1 << 24, dtype=torch.float32).uniform_()
        b = torch.empty_like(a)
        ms = self.time_ms(lambda: b.copy_(a))
        return 2 * a.numel() * 4 / (ms * 1e-3)

    def time_ms(self, fn) -> float:
        fn()
        times = []
        for _ in range(self.reps):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    latency_ms = time_ms

    def sync(self):
        pass

    @staticmethod
    def to_ww(t: torch.Tensor):
        if t.dtype == torch.bfloat16:
            import ml_dtypes

            return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return t.numpy()

    @staticmethod
    def from_ww(a):
        a = np.asarray(a)
        if a.dtype.name == "bfloat16":
            return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
        return torch.from_numpy(np.ascontiguousarray(a))

    def checked_call(self, call):
        return call(), None


def _as_list(outs) -> list:
    return list(outs) if isinstance(outs, (tuple, list)) else [outs]


# ============================================================================ running

def _cost_estimate(program):
    est = getattr(program, "cost_estimate", None)
    if callable(est) and not hasattr(est, "time_us"):
        est = est()
    if est is None:
        return None, None
    t = getattr(est, "time_us", None)
    b = getattr(est, "bytes", None)
    return (float(t) if t is not None else None), (int(b) if b is not None else None)


def _rel_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    if tuple(got.shape) != tuple(ref.shape):
        raise ValueError(f"shape {tuple(got.shape)}, expected {tuple(ref.shape)}")
    g, r = got.double(), ref.double()
    if torch.isnan(g).any():
        return math.nan  # unwritten (poisoned) or NaN results
    return ((g - r).norm() / r.norm().clamp_min(1e-30)).item()


def run_case(case: Case, dtype_name: str, engine, compile_backend: str = "inductor") -> dict:
    dtype = DTYPES[dtype_name]
    row = dict(case=case.name, dtype=dtype_name, shape=case.shape_text, moved=case.moved,
               large=case.large, tolerance=TOLERANCE[dtype_name])
    inputs = [torch.randn(s, device=engine.device, dtype=dtype) for s in case.shapes]  # fresh per case
    # bytes that must move: each input read once, each output written once
    eager_out = _as_list(case.torch_fn(*inputs))
    row["bytes"] = sum(t.numel() * t.element_size() for t in inputs + eager_out)
    ref = _as_list(case.torch_fn(*[t.float() for t in inputs]))  # eager, float32 reference
    row["eager_rel_error"] = max(_rel_error(o, r) for o, r in zip(eager_out, ref))
    del eager_out

    # warpweave: compile (and time the compile), count kernels, check, time
    ww_inputs = [engine.to_ww(t) for t in inputs]
    t0 = time.perf_counter()
    if case.ww_build is not None:
        program = case.ww_build(case.shapes, dtype_name, engine.target)
        fn = program
    else:
        fn = ww.jit(case.ww_fn, target=engine.target)
        program = fn.lower(*ww_inputs)
    if engine.name == "cpu":
        ww_call = lambda: [engine.from_ww(a) for a in _as_list(fn(*ww_inputs))]  # noqa: E731
    else:
        ww_call = lambda: fn(*ww_inputs)  # noqa: E731
    _as_list(ww_call())  # first run: driver load
    engine.sync()
    row["ww_compile_s"] = time.perf_counter() - t0
    row["kernels"] = len(program.kernels)
    row["est_us"], row["est_bytes"] = _cost_estimate(program)
    outs, poisoned = engine.checked_call(ww_call)
    outs = _as_list(outs)
    row["poisoned"] = poisoned
    if len(outs) != len(ref):
        raise ValueError(f"warpweave returned {len(outs)} outputs, eager {len(ref)}")
    errs = [_rel_error(o, r) for o, r in zip(outs, ref)]
    row["rel_error"] = math.nan if any(math.isnan(e) for e in errs) else max(errs)
    row["ok"] = bool(row["rel_error"] <= row["tolerance"])  # NaN fails
    del outs

    # torch.compile: a fresh Dynamo state per case, so no case sees another's guards
    # or automatic dynamic shapes (each compile is as if alone in its process)
    torch._dynamo.reset()
    compiled = torch.compile(case.torch_fn, backend=compile_backend, dynamic=False)
    t0 = time.perf_counter()
    compiled(*inputs)
    engine.sync()
    row["compile_compile_s"] = time.perf_counter() - t0

    bw = engine.bandwidth
    for key, f in (("ww", ww_call), ("eager", lambda: case.torch_fn(*inputs)),
                   ("compile", lambda: compiled(*inputs))):
        ms = engine.time_ms(f)
        row[f"{key}_us"] = ms * 1e3
        row[f"{key}_frac"] = row["bytes"] / bw / (ms * 1e-3)
        if not case.large:
            row[f"{key}_latency_us"] = engine.latency_ms(f) * 1e3
    row["speedup_vs_compile"] = row["compile_us"] / row["ww_us"]
    row["speedup_vs_eager"] = row["eager_us"] / row["ww_us"]
    if not case.large:
        row["latency_speedup_vs_eager"] = row["eager_latency_us"] / row["ww_latency_us"]
    return row


def geomean(xs) -> float | None:
    xs = [x for x in xs if x and x > 0 and math.isfinite(x)]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def summarize(rows: list[dict]) -> dict:
    good = [r for r in rows if "error" not in r]
    large = [r for r in good if r["large"]]
    small = [r for r in good if not r["large"]]
    out = dict(
        large_cases_timed=len(large), large_cases=sum(1 for r in rows if r["large"]),
        geomean_vs_compile_large=geomean(r["speedup_vs_compile"] for r in large),
        geomean_vs_eager_large=geomean(r["speedup_vs_eager"] for r in large),
        geomean_frac_ww_large=geomean(r["ww_frac"] for r in large),
        geomean_frac_compile_large=geomean(r["compile_frac"] for r in large),
        small_latency_vs_eager=geomean(r["latency_speedup_vs_eager"] for r in small),
        small_gpu_time_vs_eager=geomean(r["speedup_vs_eager"] for r in small),
        failed_correctness=[f"{r['case']} {r['dtype']}" for r in good if not r["ok"]],
        errors=[f"{r['case']} {r['dtype']}: {r['error']}" for r in rows if "error" in r],
    )
    for d in DTYPES:
        out[f"geomean_vs_compile_large_{d}"] = geomean(r["speedup_vs_compile"] for r in large
                                                       if r["dtype"] == d)
        errs = [(r["rel_error"], r["eager_rel_error"]) for r in good if r["dtype"] == d]
        if errs:  # eager's own error against the same reference: what the dtype costs
            out[f"max_rel_error_{d}"] = max(e for e, _ in errs)
            out[f"max_eager_rel_error_{d}"] = max(e for _, e in errs)
    return out


def run_suite(engine, *, rows=8192, cols=4096, square=8192, batch=64, seq=1024, small=(32, 128),
              dtypes=("float32", "bfloat16"), only=None, compile_backend="inductor",
              on_row=None) -> list[dict]:
    """Every case in every dtype; `on_row(rows so far)` after each (to save partial runs)."""
    cases = fusion_cases(rows, cols, square, batch, seq, small, engine.device)
    if only:
        wanted = [w.strip().lower() for w in only.split(",")]
        cases = [c for c in cases if any(w in c.name.lower() for w in wanted)]
    results = []
    for dtype_name in dtypes:
        for case in cases:
            torch.manual_seed(len(results))
            try:
                row = run_case(case, dtype_name, engine, compile_backend)
            except Exception as exc:  # keep going: one broken case must not cost the run
                traceback.print_exc()
                row = dict(case=case.name, dtype=dtype_name, shape=case.shape_text, moved=case.moved,
                           large=case.large, error=f"{type(exc).__name__}: {exc}"[:300])
            results.append(row)
            print(_progress_line(row), flush=True)
            if on_row is not None:
                on_row(results)
    return results


# ============================================================================ reporting

def _progress_line(r: dict) -> str:
    if "error" in r:
        return f"{r['case']:28s} {r['dtype']:9s} ERROR {r['error']}"
    return (f"{r['case']:28s} {r['dtype']:9s} ww {r['ww_us']:9.1f} µs ({r['ww_frac']:5.1%})  "
            f"eager {r['eager_us']:9.1f} ({r['eager_frac']:5.1%})  compile {r['compile_us']:9.1f} "
            f"({r['compile_frac']:5.1%})  kernels={r['kernels']} err={r['rel_error']:.1e}"
            f"{'' if r['ok'] else ' FAIL'}")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f}" if n >= 1e5 else f"{n / 1e6:.3f}"


def _us(x) -> str:
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def _fmt(x, spec, none="—"):
    return none if x is None else format(x, spec)


LEGEND = """\
Columns: **bytes** — what must move through DRAM: every input read once and every output
written once (the tensors counted are named in *moved*; intermediates never count; the
causal softmax counts all of x as read, though a kernel can skip its masked half: warpweave's
does, hence its fraction above 100%).
**kernels** — warpweave's `len(Program.kernels)`. Times are GPU µs per call, medians of
CUDA-event timings of CUDA-graph replays (10 calls per graph, 25 replays) after warm-up;
in parentheses the fraction of the bandwidth roofline, bytes ÷ measured copy bandwidth ÷
time. **vs compile** — torch.compile time ÷ warpweave time (> 1: warpweave faster).
**est. µs** — the cost model's estimate (`Program.cost_estimate.time_us`; — where the
compiler has none). **rel. err** — ‖warpweave − ref‖ / ‖ref‖ against eager on the inputs
upcast to float32 (the largest over outputs; tolerance 1e-4 float32, 1e-2 bfloat16), checked
on a call whose outputs came from allocator memory filled with NaN first (**poisoned**:
every output confirmed to lie in poisoned memory). The small softmax's *latency* is one call
without a graph between two events (host dispatch included)."""


def markdown(rows: list[dict], summary: dict) -> str:
    lines = ["| case | dtype | shape | moved | bytes (MB) | kernels | warpweave µs (roofline) | "
             "eager µs (roofline) | torch.compile µs (roofline) | vs compile | est. µs | rel. err | poisoned |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            msg = r["error"].replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {r['case']} | {r['dtype']} | {r['shape']} | {r['moved']} | | | "
                         f"**error**: {msg} | | | | | | |")
            continue
        poisoned = {True: "yes", False: "no", None: "n/a"}[r["poisoned"]]
        err = "NaN" if math.isnan(r["rel_error"]) else f"{r['rel_error']:.1e}"
        if not r["ok"]:
            err = f"**{err} FAIL**"
        lines.append(
            f"| {r['case']} | {r['dtype']} | {r['shape']} | {r['moved']} | {_mb(r['bytes'])} | "
            f"{r['kernels']} | {_us(r['ww_us'])} ({r['ww_frac']:.0%}) | "
            f"{_us(r['eager_us'])} ({r['eager_frac']:.0%}) | {_us(r['compile_us'])} ({r['compile_frac']:.0%}) | "
            f"{r['speedup_vs_compile']:.2f}× | {_fmt(r['est_us'], '.1f')} | {err} | {poisoned} |")
    s = summary
    lines.append("")
    per = ", ".join(f"{d} {s[f'geomean_vs_compile_large_{d}']:.2f}×" for d in DTYPES
                    if s.get(f"geomean_vs_compile_large_{d}") is not None)
    lines.append(f"- Geometric-mean speed-up over torch.compile, large cases "
                 f"({s['large_cases_timed']} of {s['large_cases']} ran): "
                 f"**{_fmt(s['geomean_vs_compile_large'], '.2f')}×** ({per}); over eager "
                 f"{_fmt(s['geomean_vs_eager_large'], '.2f')}×. Geometric-mean roofline fraction: warpweave "
                 f"{_fmt(s['geomean_frac_ww_large'], '.0%')}, torch.compile "
                 f"{_fmt(s['geomean_frac_compile_large'], '.0%')}.")
    small = [r for r in rows if not r["large"] and "error" not in r]
    if small:
        lat = "; ".join(f"{r['dtype']}: warpweave {r['ww_latency_us']:.1f}, eager {r['eager_latency_us']:.1f}, "
                        f"torch.compile {r['compile_latency_us']:.1f}" for r in small)
        lines.append(f"- Small softmax, latency per call (µs, no graph; {lat}): speed-up over eager "
                     f"**{_fmt(s['small_latency_vs_eager'], '.2f')}×** (geometric mean over dtypes; on GPU "
                     f"time alone {_fmt(s['small_gpu_time_vs_eager'], '.2f')}×).")
    errs = [f"{d} warpweave ≤ {s[f'max_rel_error_{d}']:.1e}"
            + (f", eager {d} ≤ {s[f'max_eager_rel_error_{d}']:.1e}" if s[f"max_eager_rel_error_{d}"] else "")
            for d in DTYPES if s.get(f"max_rel_error_{d}") is not None]
    if errs:
        lines.append(f"- Largest relative error against the float32 eager reference: {'; '.join(errs)}.")
    if s["failed_correctness"]:
        lines.append(f"- Failed correctness: {', '.join(s['failed_correctness'])}.")
    if s["errors"]:
        lines.append(f"- Could not run: {'; '.join(s['errors'])}.")
    return "\n".join(lines)


def write_outputs(out_dir: str, meta: dict, rows: list[dict], summary: dict) -> str:
    md = markdown(rows, summary)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "fusion_results.json"), "w") as f:
        json.dump(dict(meta=meta, cases=rows, summary=summary), f, indent=1, allow_nan=True)
    with open(os.path.join(out_dir, "fusion_results.md"), "w") as f:
        f.write(md + "\n\n" + LEGEND + "\n")
    return md


def section(meta: dict, rows: list[dict], summary: dict, note: str | None) -> str:
    head = ["## Fusion suite (issue 4): multi-operation kernels vs PyTorch eager and torch.compile", ""]
    if note:
        head += [note, ""]
    head += [f"Date: {meta['date']}. Device: {meta['device']} ({meta.get('sms', '?')} SMs), PyTorch "
             f"{meta['torch']}; measured device-to-device copy bandwidth {meta['copy_bandwidth_tbs']:.2f} TB/s "
             f"(bytes read + written). Command (on the device machine): `{meta['command']}`. Each case "
             f"draws fresh random inputs; warpweave, eager and torch.compile (Inductor, default mode, a "
             f"fresh Dynamo state per case) run in one process on the same tensors.", ""]
    return "\n".join(head) + "\n" + markdown(rows, summary) + "\n\n" + LEGEND


def write_results_md(path: str, text: str, begin: str = BEGIN, end: str = END) -> None:
    """Replace a section of RESULTS.md (between its markers; the fusion suite's by
    default), or append one."""
    with open(path) as f:
        doc = f.read()
    block = f"{begin}\n{text}\n{end}"
    if begin in doc and end in doc:
        doc = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: block, doc, count=1, flags=re.S)
    else:
        doc = doc.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(doc)


def command_line(argv=None) -> str:
    """The command as it was run, with --out shown as $OUT when it is the device's $OUT."""
    argv = list(sys.argv if argv is None else argv)
    out_env = os.environ.get("OUT")
    shown = ["$OUT" if out_env and a == out_env else shlex.quote(a) for a in argv[1:]]
    script = os.path.relpath(argv[0]) if argv else "benchmarks/gpu_bench.py"
    return " ".join(["PYTHONPATH=$PWD python3", script, *shown])


def stamp(meta: dict) -> dict:
    meta.setdefault("date", str(datetime.date.today()))
    return meta


def source_commit() -> str | None:
    """The warpweave commit measured: $WARPWEAVE_COMMIT (set where the tree has no .git),
    else `git rev-parse HEAD` of the checkout warpweave was imported from."""
    if os.environ.get("WARPWEAVE_COMMIT"):
        return os.environ["WARPWEAVE_COMMIT"]
    import subprocess

    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(ww.__file__)))
        return subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip() or None
    except Exception:
        return None
