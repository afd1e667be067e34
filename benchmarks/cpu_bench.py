"""CPU backend vs numpy on [4096, 4096] float32 elementwise chains and row reductions.

    python benchmarks/cpu_bench.py [--size 4096] [--repeat 15] [--write]

Both run in this process on the same inputs; times are medians after warm-up.
With --write, the table is written into benchmarks/RESULTS.md (between markers).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import numpy as np

import warpweave as ww


def cases():
    """(name, warpweave function, numpy function, number of inputs)."""
    def chain(x, r):
        return ww.maximum(0.5 * x + r, 0.0) * ww.sigmoid(r) - x

    def np_chain(x, r):
        return np.maximum(0.5 * x + r, 0.0) * (1.0 / (1.0 + np.exp(-r))) - x

    def gelu_tanh(x):
        return ww.gelu(x, approximate="tanh")

    def np_gelu_tanh(x):
        return 0.5 * x * (1.0 + np.tanh(np.float32(0.7978845608028654) * (x + np.float32(0.044715) * x * x * x)))

    def scale_shift(x, r):
        return x * 2.0 + r

    def np_scale_shift(x, r):
        return x * np.float32(2.0) + r

    return [
        ("x*2 + r", scale_shift, np_scale_shift, 2),
        ("relu(0.5x+r)*sigmoid(r) - x", chain, np_chain, 2),
        ("gelu(tanh)", gelu_tanh, np_gelu_tanh, 1),
        ("exp(x)", lambda x: ww.exp(x), np.exp, 1),
        ("row sum", lambda x: x.sum(axis=1), lambda x: x.sum(axis=1), 1),
        ("row max", lambda x: x.max(axis=1), lambda x: x.max(axis=1), 1),
        ("row mean", lambda x: x.mean(axis=1), lambda x: x.mean(axis=1), 1),
        ("column sum", lambda x: x.sum(axis=0), lambda x: x.sum(axis=0), 1),
        ("softmax (rows)", lambda x: ww.softmax(x, axis=-1),
         lambda x: (lambda e: e / e.sum(-1, keepdims=True))(np.exp(x - x.max(-1, keepdims=True))), 1),
    ]


def median_time(fn, args, repeat):
    fn(*args)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    n = args.size
    rng = np.random.default_rng()
    inputs = [rng.standard_normal((n, n)).astype(np.float32) for _ in range(2)]
    rows = []
    for name, wfn, nfn, nargs in cases():
        jitted = ww.jit(wfn, target="cpu")
        a = inputs[:nargs]
        got = jitted(*a)
        ref = nfn(*[x.astype(np.float64) for x in a])
        err = float(np.max(np.abs(got - ref) / (1 + np.abs(ref))))
        kernels = len(jitted.lower(*a).kernels)
        tw, tn = median_time(jitted, a, args.repeat), median_time(nfn, a, args.repeat)
        rows.append((name, kernels, tw * 1e3, tn * 1e3, tn / tw, err))
    header = ("| case | kernels | warpweave cpu (ms) | numpy (ms) | speed-up | max rel. error |\n"
              "|---|---|---|---|---|---|")
    lines = [f"| {r[0]} | {r[1]} | {r[2]:.2f} | {r[3]:.2f} | {r[4]:.2f}× | {r[5]:.1e} |" for r in rows]
    geo = float(np.exp(np.mean(np.log([r[4] for r in rows]))))
    table = "\n".join([header, *lines]) + f"\n\nGeometric mean speed-up over numpy: {geo:.2f}×"
    print(table)
    if args.write:
        write_results(table, n, args.repeat)


def write_results(table: str, n: int, repeat: int) -> None:
    path = os.path.join(os.path.dirname(__file__), "RESULTS.md")
    start, end = "<!-- cpu-bench:start -->", "<!-- cpu-bench:end -->"
    text = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
    threads = os.environ.get("WARPWEAVE_NUM_THREADS", str(os.cpu_count()))
    block = (f"{start}\n## CPU backend vs numpy, [{n}, {n}] float32\n\n"
             f"Date: {datetime.date.today()}. Machine: {platform.machine()}, {os.cpu_count()} cores "
             f"({platform.processor() or platform.platform()}), {threads} warpweave threads, "
             f"numpy {np.__version__}. Command: `python benchmarks/cpu_bench.py --size {n} "
             f"--repeat {repeat} --write`. Medians of {repeat} runs after warm-up, same process "
             f"and inputs.\n\n{table}\n{end}")
    if start in text and end in text:
        text = text[:text.index(start)] + block + text[text.index(end) + len(end):]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
