"""Few output tiles over a long k: the default, cuBLAS, and wgmma and mma.sync points
with split-K, timed as benchmarks/gemm.py times (CUDA-graph replays, µs).

    PYTHONPATH=$PWD python3 benchmarks/gemm_split.py
"""
import os
import sys

import torch

import warpweave as ww
from warpweave.pipeline.compile import compile_graph
from warpweave.schedule.mma import GpuMma
from warpweave.schedule.space import group_key

sys.path.insert(0, os.path.dirname(__file__))
from gpu_bench import graph_time_ms  # noqa: E402



def W(*args):
    return GpuMma(*args, instr="wgmma")


for m, n, k in ((512, 512, 4096), (256, 1024, 8192), (1024, 768, 3072)):
    a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
    f = ww.jit(lambda x, y: x @ y, target="cuda")
    p = f.lower(a, b)
    key = group_key(p.plan.groups[0], p.graph)
    ref = a.float() @ b.float()
    row = {"default": (repr(p.kernels[0].schedule)[7:60], graph_time_ms(lambda: f(a, b), replays=10)),
           "cublas": ("", graph_time_ms(lambda: a @ b, replays=10))}
    for s in (W(128, 128, 64, 2, 1, 4, 1), W(128, 128, 64, 2, 1, 4, 2), W(128, 128, 64, 2, 1, 4, 4),
              W(64, 128, 64, 1, 1, 4, 2), W(64, 128, 64, 1, 1, 4, 4), W(64, 128, 64, 1, 1, 4, 8),
              GpuMma(64, 64, 32, 2, 2, 4, 4), GpuMma(64, 64, 32, 2, 2, 4, 2)):
        q = compile_graph(p.traced, True, "cuda", "pt", {key: s})
        err = ((q(a, b).float() - ref).abs().max() / ref.abs().max()).item()
        row[f"{s.instr} {s.block_m}x{s.block_n} split {s.split_k}"] = (f"err {err:.1e}", graph_time_ms(lambda: q(a, b), replays=10))
    print(m, n, k, {k_: (v[0], round(v[1] * 1e3, 1)) for k_, v in row.items()}, flush=True)
