"""The CPU hot path of compiled torch graphs (CpuRunner.torch_call): PyTorch CPU tensors
straight to the kernels, no numpy; anything it does not take goes the general way."""
from __future__ import annotations

import re
import threading

import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="the torch.compile backend needs PyTorch (.ci/run installs torch==2.13.0, the CPU build)")

import warpweave as ww  # noqa: E402


def softmax_program(shape, dtype="float32"):
    f = ww.jit(lambda x, y: (ww.softmax(x * 2.0, axis=-1) + y, x.sum(axis=0)), target="cpu")
    spec = np.zeros(shape, dtype)
    return f.lower(spec, spec)


@pytest.mark.parametrize("rows, direct", [(5, True), (200, False)])
def test_torch_tensors_take_the_generated_launcher(rows, direct):
    """Small kernels run on this thread, consecutive ones through one native entry;
    larger ones through the executable's launch, which may share them over the
    thread pool."""
    program = softmax_program((rows, 257))
    x, y = torch.randn(rows, 257), torch.randn(rows, 257)
    got = program(x, y)
    assert all(type(t) is torch.Tensor for t in got)
    torch.testing.assert_close(got[0], torch.softmax(x * 2, -1) + y)
    torch.testing.assert_close(got[1], x.sum(0))
    launcher = program.dump("launcher")
    assert "def call(args):" in launcher and ("R_" in launcher) == direct and ("launch(" in launcher) != direct
    again = program(x, y)  # fresh outputs on every call
    assert again[0].data_ptr() != got[0].data_ptr()


def test_small_kernels_take_one_native_call():
    """A program of many small kernels (the bias gradients of a backward graph: a
    column sum each) calls them all through one native entry."""
    n = 6
    f = ww.jit(lambda *xs: tuple(x.sum(axis=0) for x in xs), target="cpu")
    program = f.lower(*(np.zeros((16, 8 + k), np.float32) for k in range(n)))
    assert len(program.kernels) == n
    xs = [torch.randn(16, 8 + k) for k in range(n)]
    got = program(*xs)
    for x, y in zip(xs, got):
        torch.testing.assert_close(y, x.sum(0))
    launcher = program.dump("launcher")
    calls = re.findall(r"^ +(K\d+|R_\w+|launch)\(", launcher, re.MULTILINE)
    assert len(calls) == 1 and calls[0].startswith("R_"), launcher


def test_other_arguments_take_the_general_path():
    program = softmax_program((4, 6))
    fast = program.fast_path()
    x = torch.randn(6, 4)
    assert fast((x.t(), x.t())) is None  # not contiguous
    assert fast((x.double().reshape(4, 6), x.reshape(4, 6))) is None  # another dtype
    assert fast((torch.randn(4, 7), torch.randn(4, 7))) is None  # another shape
    assert fast((x.reshape(4, 6),)) is None
    xs = np.random.default_rng().standard_normal((4, 6)).astype(np.float32)
    got = program(xs, xs)  # numpy: the general path, numpy results
    assert isinstance(got[0], np.ndarray)
    np.testing.assert_allclose(got[1], xs.sum(0), rtol=1e-6)


def test_threads_have_their_own_intermediates():
    program = softmax_program((64, 257))
    inputs = [(torch.randn(64, 257), torch.randn(64, 257)) for _ in range(4)]
    errors = []

    def work(x, y):
        for _ in range(20):
            got = program(x, y)
            if not torch.allclose(got[0], torch.softmax(x * 2, -1) + y, atol=1e-6):
                errors.append("mismatch")

    threads = [threading.Thread(target=work, args=xy) for xy in inputs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@pytest.mark.gpu
def test_cuda_strided_and_plain_hot_paths_side_by_side():
    """A CUDA program's launcher for strided inputs (a channels-last activation read as
    its memory span) and its plain launcher are made apart: making the strided one
    first left the plain path comparing strides with None, so every contiguous call
    took the general path."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU usable by PyTorch")
    x = torch.randn(2, 3, 4, 5, device="cuda").contiguous(memory_format=torch.channels_last)
    program = ww.jit(lambda v: v * 2.0 + 1.0, target="cuda").lower(np.zeros(x.numel(), np.float32))
    strided = program.fast_path(((tuple(x.shape), tuple(x.stride())),))
    got = strided((x,))
    assert got is not None and "stride()" in program.dump("launcher")
    flat = x.permute(0, 2, 3, 1).reshape(-1)
    torch.testing.assert_close(got[0] if isinstance(got, tuple) else got, flat * 2 + 1)
    plain = program.fast_path()
    assert plain((flat,)) is not None
    assert strided((flat,)) is None  # a 1-D tensor is not of the strided layout


def _nhwc_program():
    """A program computing [2, 4, 5, 3] (NHWC order of an NCHW [2, 3, 4, 5] result)."""
    return ww.jit(lambda v: v * 2.0 + 1.0, target="cuda").lower(np.zeros((2, 4, 5, 3), np.float32))


def test_cuda_outputs_are_allocated_in_their_returned_layouts_only_when_they_permute_the_computed_one():
    """The CUDA launcher may allocate an output as the channels-last tensor it returns
    (same memory as the NHWC result it computes) — only for a permutation of that
    layout (size-1 axes' strides aside), and not for one tensor asked for twice."""
    runner = _nhwc_program().runner
    channels_last = ((2, 3, 4, 5), (60, 1, 15, 3))
    (name,) = runner.graph.outputs
    assert runner._allocation_layouts((channels_last,)) == {name: channels_last}
    assert runner._allocation_layouts((None,)) == {}
    assert runner._allocation_layouts((((2, 3, 4, 5), (60, 20, 5, 1)),)) is None  # not the memory it computes
    assert runner._allocation_layouts((((2, 4, 5, 3), (60, 15, 3, 2)),)) is None  # gaps
    one = _nhwc_program_one()
    assert one.runner._allocation_layouts((((1, 3, 1, 5), (15, 1, 99, 3)),)) is not None  # size-1 axes


def _nhwc_program_one():
    return ww.jit(lambda v: v * 2.0, target="cuda").lower(np.zeros((1, 1, 5, 3), np.float32))


@pytest.mark.gpu
def test_cuda_channels_last_results_come_back_without_a_view_per_call():
    """A torch graph whose result is channels-last: its program's launcher allocates it
    channels-last (no permuted view made per call), values and strides as eager's."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU usable by PyTorch")
    import warpweave.torch as wt

    def fn(x, skip):
        return (x * 2.0 + skip).relu(), x.sum(dim=(2, 3))

    x = torch.randn(2, 3, 4, 5, device="cuda").contiguous(memory_format=torch.channels_last)
    skip = torch.randn(2, 3, 4, 5, device="cuda").contiguous(memory_format=torch.channels_last)
    compiled = torch.compile(fn, backend=wt.backend, options=dict(strict=True))
    for _ in range(2):  # the first call makes the path, the second takes it
        got = compiled(x, skip)
        for g, w in zip(got, fn(x, skip)):
            assert g.stride() == w.stride()
            torch.testing.assert_close(g, w)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        compiled(x, skip)
    assert not [e.key for e in prof.key_averages() if e.key in ("aten::permute", "aten::as_strided")]
