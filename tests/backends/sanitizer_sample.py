"""Kernels with cross-thread communication, for compute-sanitizer (not a pytest file):

    compute-sanitizer --tool memcheck  python tests/backends/sanitizer_sample.py
    compute-sanitizer --tool racecheck python tests/backends/sanitizer_sample.py

Multi-warp row reductions (shuffles, shared memory, a barrier), tiled transposes
through shared memory (float32 and bfloat16), split and tiled column reductions
(a block per 32 outputs, partials exchanged through shared memory), and a softmax, at
odd shapes; fused row groups with every stitching scheme; every result is checked against PyTorch.
"""
import torch

import warpweave as ww


def main():
    torch.manual_seed(0)
    cases = [
        ("row sum", lambda v: v.sum(axis=1), lambda v: v.sum(1), (37, 3001), torch.float32),
        ("row max", lambda v: v.max(axis=-1), lambda v: v.amax(-1), (5, 1027), torch.bfloat16),
        ("transpose", lambda v: v.T.astype(v.dtype), lambda v: v.t().contiguous(), (70, 33), torch.float32),
        ("transpose", lambda v: v.T.astype(v.dtype), lambda v: v.t().contiguous(), (130, 66), torch.bfloat16),
        ("column sum", lambda v: v.sum(axis=0), lambda v: v.sum(0), (1000, 12), torch.float32),
        ("column tile", lambda v: v.sum(axis=0), lambda v: v.sum(0), (1500, 4100), torch.float32),
        ("column tile", lambda v: v.max(axis=0), lambda v: v.amax(0), (2049, 1999), torch.bfloat16),
        ("softmax", lambda v: ww.softmax(v, axis=-1), lambda v: torch.softmax(v, -1), (9, 777), torch.float32),
        # fused row groups: warp (shuffle) and regional (shared memory + barrier) stitching,
        # register tiles across phases, and two serial passes over rows too long for registers
        ("fused softmax, warp", lambda v: ww.softmax(v), lambda v: torch.softmax(v, -1), (50, 64), torch.float32),
        ("fused layer norm, regional", lambda v: ww.layer_norm(v),
         lambda v: torch.nn.functional.layer_norm(v, v.shape[-1:]), (37, 4096), torch.float32),
        ("fused softmax, bf16", lambda v: ww.softmax(v), lambda v: torch.softmax(v, -1), (8, 4096), torch.bfloat16),
        ("fused softmax, two passes", lambda v: ww.softmax(v), lambda v: torch.softmax(v, -1), (3, 40000),
         torch.float32),
    ]
    for name, wfn, tfn, shape, dtype in cases:
        x = torch.randn(*shape, device="cuda", dtype=dtype)
        got = ww.jit(wfn, target="cuda")(x)
        ref = tfn(x.double()).to(dtype)
        torch.testing.assert_close(got, ref, rtol=2e-2 if dtype == torch.bfloat16 else 1e-4, atol=1e-3)
        print(f"ok {name} {tuple(shape)} {dtype}", flush=True)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
