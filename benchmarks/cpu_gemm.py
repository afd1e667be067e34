"""Matrix products on the CPU: warpweave (contraction groups: the host BLAS per row
tile, the epilogue fused after it) against numpy and eager PyTorch, in one process.

    python benchmarks/cpu_gemm.py [--repeat 15] [--threads 1,2] [--out benchmarks/data/cpu_gemm_2026-12-02.json]

Cases: 256³, 1024³, 1000×1001×999 float32, 1024³ float64, and a GPT-2-MLP-like
[2048, 768] @ [768, 3072] + bias followed by GELU. numpy computes the MLP as matmul,
then bias and GELU in two more passes (erf from scipy when present, else its tanh form);
torch as F.gelu(F.linear(...)). Every time is the median of `--repeat` calls after one
warm-up call, on the same inputs; warpweave and numpy alternate call by call (they share
numpy's BLAS and its threads), torch is timed after them (its OpenMP threads spin after
each call and would slow whatever runs next). warpweave's result is checked against numpy's.
The table is made with 1 thread and with every core (`--threads`): WARPWEAVE_NUM_THREADS,
numpy's BLAS and PyTorch set alike; the machine's load average is recorded.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time

import numpy as np

import warpweave as ww


def median_ms(fns: dict, repeat: int) -> dict:
    """Median milliseconds of each `name: (fn, args)` after one warm-up call each; the
    calls alternate between the functions, so that load from other processes on a
    shared machine falls on all of them alike."""
    times = {name: [] for name in fns}
    for fn, args in fns.values():
        fn(*args)
    for _ in range(repeat):
        for name, (fn, args) in fns.items():
            t0 = time.perf_counter()
            fn(*args)
            times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t) * 1e3) for name, t in times.items()}


def _np_gelu():
    try:
        from scipy.special import erf
    except ImportError:
        return lambda y: 0.5 * y * (1 + np.tanh(np.float32(0.7978845608028654) * (y + np.float32(0.044715) * y ** 3)))
    return lambda y: 0.5 * y * (1 + erf(y * np.float32(0.7071067811865476)))


def cases():
    """(name, flops, warpweave fn, numpy fn, torch fn or None, input shapes, dtype)."""
    gelu = _np_gelu()
    mm = (lambda a, b: a @ b)
    out = []
    for m, n, k, d in [(256, 256, 256, "float32"), (1024, 1024, 1024, "float32"),
                       (1000, 1001, 999, "float32"), (1024, 1024, 1024, "float64")]:
        out.append((f"{m}x{k} @ {k}x{n} {d}", 2 * m * n * k, mm, mm, mm, [(m, k), (k, n)], d))
    m, k, n = 2048, 768, 3072

    def torch_mlp(x, w, b):
        import torch.nn.functional as F
        return F.gelu(F.linear(x, w, b))

    out.append((f"gelu({m}x{k} @ {k}x{n} + bias) float32", 2 * m * n * k,
                lambda x, w, b: ww.gelu(x @ w.T + b), lambda x, w, b: gelu(x @ w.T + b), torch_mlp,
                [(m, k), (n, k), (n,)], "float32"))
    return out


def _blas_threads() -> str:
    from threadpoolctl import threadpool_info

    return ", ".join(f"{i['internal_api']} {i.get('version')} ({i['num_threads']} threads)"
                     for i in threadpool_info())


def run(threads: int, repeat: int, torch) -> list[dict]:
    """The table with `threads` threads everywhere: WARPWEAVE_NUM_THREADS, numpy's BLAS
    and PyTorch's pools (threadpoolctl)."""
    from threadpoolctl import threadpool_limits

    os.environ["WARPWEAVE_NUM_THREADS"] = str(threads)
    rng = np.random.default_rng(0)
    rows = []
    print(f"-- {threads} thread(s): WARPWEAVE_NUM_THREADS={threads}, BLAS and torch limited to {threads}")
    with threadpool_limits(threads):
        if torch is not None:
            torch.set_num_threads(threads)
        for name, flops, ww_fn, np_fn, torch_fn, shapes, d in cases():
            inputs = [rng.standard_normal(s).astype(d) for s in shapes]
            f = ww.jit(ww_fn, target="cpu")
            got, want = f(*inputs), np_fn(*inputs)
            err = float(np.max(np.abs(got - want)) / np.max(np.abs(want)))
            ms = median_ms({"warpweave": (f, inputs), "numpy": (np_fn, inputs)}, repeat)
            if torch is not None and torch_fn is not None:  # its own threads: timed apart
                with torch.no_grad():
                    ms.update(median_ms({"torch_eager": (torch_fn, [torch.from_numpy(a) for a in inputs])},
                                        repeat))
            row = {"case": name, "threads": threads, "dtype": d, "shapes": shapes, "gflop": flops / 1e9,
                   **{f"{k}_ms": v for k, v in ms.items()}, "max_rel_err_vs_numpy": err,
                   "kernels": [f"{k.name}: {k.schedule}" for k in f.lower(*inputs).kernels]}
            row["warpweave_over_numpy"] = row["warpweave_ms"] / row["numpy_ms"]
            rows.append(row)
            extra = f"  torch {row['torch_eager_ms']:8.2f} ms" if "torch_eager_ms" in row else ""
            print(f"{name:42s} warpweave {row['warpweave_ms']:8.2f} ms  numpy {row['numpy_ms']:8.2f} ms"
                  f"{extra}  ratio {row['warpweave_over_numpy']:.2f}  ({flops / row['warpweave_ms'] / 1e6:.1f} "
                  f"GFLOP/s; rel err {err:.1e})", flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--threads", default=f"1,{os.cpu_count()}", help="comma-separated thread counts")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        torch = None
    meta = {"date": datetime.date.today().isoformat(), "host": platform.node(),
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "load_average_before": os.getloadavg(), "blas": _blas_threads(), "numpy": np.__version__,
            "torch": torch.__version__ if torch is not None else None, "repeat": args.repeat,
            "command": "python benchmarks/cpu_gemm.py " + " ".join(
                f"--{k} {v}" for k, v in vars(args).items() if v is not None)}
    rows = [r for t in args.threads.split(",") for r in run(int(t), args.repeat, torch)]
    meta["load_average_after"] = os.getloadavg()
    if args.out:
        with open(args.out, "w") as fh:
            json.dump({"meta": meta, "rows": rows}, fh, indent=1)
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
