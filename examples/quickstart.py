"""warpweave quick start: compile softmax and layer norm, run them, check them.

Runs on the default target ("auto": the GPU where one is usable, else the CPU).
Every stage of every compile is written under ./warpweave-dumps.
"""
import os
import time

import numpy as np

import warpweave as ww


@ww.jit
def softmax(x):
    m = x.max(axis=-1, keepdims=True)
    e = ww.exp(x - m)
    return e / e.sum(axis=-1, keepdims=True)


@ww.jit
def layer_norm(x, weight, bias):
    return ww.layer_norm(x, weight, bias, eps=1e-5)


# numpy in the arrays' own dtype: float32 for the timings, float64 for the reference.
def numpy_softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def numpy_layer_norm(x, w, b, eps=1e-5):
    mu = x.mean(axis=-1, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def timed(fn, *args, repeat=20):
    fn(*args)  # compile and warm up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main():
    rng = np.random.default_rng()
    x = rng.standard_normal((1024, 1024)).astype(np.float32)
    w = rng.standard_normal(1024).astype(np.float32)
    b = rng.standard_normal(1024).astype(np.float32)
    dump_dir = os.path.abspath("warpweave-dumps")

    with ww.options(dump_dir=dump_dir):
        y = softmax(x)
        z = layer_norm(x, w, b)
        program = softmax.lower(x)

    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    err_sm = np.abs(y - numpy_softmax(x64)).max()
    err_ln = np.abs(z - numpy_layer_norm(x64, w64, b64)).max()
    assert err_sm < 1e-5 and err_ln < 1e-3, (err_sm, err_ln)

    print(f"target: {program.target}   kernels in softmax: {len(program.kernels)}")
    print(f"softmax    [1024, 1024] float32: max error vs numpy {err_sm:.1e}, "
          f"{timed(softmax, x) * 1e3:.2f} ms (numpy float32 {timed(numpy_softmax, x) * 1e3:.2f} ms)")
    print(f"layer_norm [1024, 1024] float32: max error vs numpy {err_ln:.1e}, "
          f"{timed(layer_norm, x, w, b) * 1e3:.2f} ms "
          f"(numpy float32 {timed(numpy_layer_norm, x, w, b) * 1e3:.2f} ms)")
    print("\nthe kernel groups of softmax:")
    print(program.dump("groups"))
    print(f"\nevery stage, numbered in pipeline order (tensor graph, groups, GIR and Graphviz after "
          f"each pass, LLVM IR), is in\n  {program.dump_dir}")


if __name__ == "__main__":
    main()
