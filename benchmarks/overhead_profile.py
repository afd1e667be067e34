"""Where the host time of one compiled call goes: each step of the PyTorch hot
path timed alone (20,000 repetitions, µs per step), on the GPU or the CPU.

    PYTHONPATH=$PWD python3 benchmarks/overhead_profile.py [--device cpu]
"""
import argparse
import time

import numpy as np
import torch

import warpweave as ww


def per_call_us(fn, n=20000, sync=None):
    fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    dt = (time.perf_counter() - t0) / n * 1e6
    if sync is not None:
        sync()
    return dt


def cuda_rows() -> dict:
    from warpweave.backends.cuda import driver
    from warpweave.backends.cuda.runtime import _torch_entry_points

    x = torch.randn(32, device="cuda")
    f = ww.jit(lambda v: v + 1.0, target="cuda")
    f(x)
    program = f.lower(x)
    backend = program.runner
    fn = backend._loaded()[0]
    launch = backend.launches[0]
    ptrs = [x.data_ptr(), torch.empty(32, device="cuda").data_ptr()]
    dev = x.device
    sequence = backend._sequence(backend._loaded())
    fast = program.fast_path()
    _, raw_stream, fast_empty = _torch_entry_points(torch)
    s = torch.randn(32, 128, device="cuda")
    softmax = ww.jit(lambda v: ww.softmax(v, axis=-1), target="cuda")
    softmax(s)
    return {
        "ww.jit call": lambda: f(x),
        "Program call": lambda: program(x),
        "Program.fast_path": lambda: fast((x,)),
        "backend.run (general)": lambda: backend.run(program, (x,)),
        "Function.launch": lambda: fn.launch(launch.grid, launch.block, ptrs, 0),
        "LaunchSequence.run": lambda: sequence.run(ptrs, 0),
        "launch_all (native)": lambda: sequence.launch_all(*ptrs, 0),
        "torch.empty": lambda: torch.empty((32,), dtype=torch.float32, device=dev),
        "_empty_strided_cuda": lambda: fast_empty((32,), (1,), torch.float32),
        "current raw stream": lambda: raw_stream(x.get_device()),
        "ensure_context": driver.ensure_context,
        "tensor checks": lambda: (type(x) is torch.Tensor and x.is_cuda and x.get_device() == 0
                                  and x.dtype is torch.float32 and x.shape == (32,) and x.is_contiguous()
                                  and x.data_ptr() % 16 == 0),
        "torch.add (eager)": lambda: torch.add(x, 1.0),
        "softmax [32,128] ww.jit": lambda: softmax(s),
        "softmax [32,128] eager": lambda: torch.softmax(s, -1),
    }


def cpu_rows() -> dict:
    """The CPU path: numpy arguments (the general path) against PyTorch tensors (the
    generated launcher, CpuRunner.torch_call), down to one kernel launch."""
    a = np.random.default_rng(0).standard_normal(32).astype(np.float32)
    x = torch.from_numpy(a)
    f = ww.jit(lambda v: v + 1.0, target="cpu")
    program = f.lower(a)
    fast = program.fast_path()
    exe, kernel = program.runner.exe, program.kernels[0]
    ptrs = [x.data_ptr(), torch.empty(32).data_ptr()]
    s = torch.randn(32, 128)
    import warpweave.torch as wt

    softmax = torch.compile(lambda v: torch.softmax(v * 2.0, -1), backend=wt.backend)
    softmax(s)
    return {
        "ww.jit call (numpy)": lambda: f(a),
        "Program call (numpy)": lambda: program(a),
        "Program call (torch)": lambda: program(x),
        "Program.fast_path": lambda: fast((x,)),
        "CpuExecutable.launch": lambda: exe.launch(kernel.name, ptrs),
        "torch.empty": lambda: torch.empty((32,), dtype=torch.float32),
        "torch.add (eager)": lambda: torch.add(x, 1.0),
        "softmax [32,128] compiled": lambda: softmax(s),
        "softmax [32,128] eager": lambda: torch.softmax(s * 2.0, -1),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    args = ap.parse_args()
    rows = cuda_rows() if args.device == "cuda" else cpu_rows()
    sync = torch.cuda.synchronize if args.device == "cuda" else None
    for name, fn in rows.items():
        print(f"{name:26s} {per_call_us(fn, sync=sync):6.2f} us")


if __name__ == "__main__":
    main()
