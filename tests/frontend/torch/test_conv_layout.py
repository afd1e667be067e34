"""CUDA convolutions read channels-last activations (frontend.torch.conv_layout):
the rewritten graph converts each convolution's input that is not channels-last,
keeps the graph's outputs in their layouts, and computes the same values; CPU
graphs are left alone."""
from __future__ import annotations

import pytest

torch = pytest.importorskip(
    "torch", reason="the torch.compile backend needs PyTorch (.ci/run installs torch==2.13.0, the CPU build)")
from torch._subclasses.fake_tensor import FakeTensorMode  # noqa: E402
from torch.fx.experimental.proxy_tensor import make_fx  # noqa: E402

from warpweave.frontend.torch.backend import decompositions  # noqa: E402
from warpweave.frontend.torch.conv_layout import channels_last_convolutions  # noqa: E402

nn, aten = torch.nn, torch.ops.aten


def _stem():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                         nn.Conv2d(8, 8, 1), nn.ReLU()).double().eval()


def _traced(model, device):
    names = list(model.state_dict())

    def fn(x, *state):
        return torch.func.functional_call(model, dict(zip(names, state)), (x,))
    with FakeTensorMode(allow_non_fake_inputs=True):
        fakes = [torch.empty(2, 3, 16, 17, dtype=torch.float64, device=device)] + [
            torch.empty(v.shape, dtype=v.dtype, device=device) for v in model.state_dict().values()]
        return make_fx(fn, decomposition_table=decompositions())(*fakes), fn


def test_cuda_convolutions_read_channels_last_inputs_with_the_same_values():
    model = _stem()
    gm, fn = _traced(model, "cuda")
    laid = channels_last_convolutions(gm)
    assert laid is not gm
    for conv in [n for n in laid.graph.nodes if n.target is aten.convolution.default]:
        for operand in conv.args[:2]:  # cuDNN would copy a 3 x 3 weight in NCHW order per call
            assert operand.meta["val"].is_contiguous(memory_format=torch.channels_last), operand
    (out,) = [n for n in laid.graph.nodes if n.op == "output"]
    (before,) = [n for n in gm.graph.nodes if n.op == "output"]
    leaves = torch.utils._pytree.tree_leaves
    assert [r.meta["val"].stride() for r in leaves(out.args[0])] == \
        [r.meta["val"].stride() for r in leaves(before.args[0])]
    args = [torch.randn(2, 3, 16, 17, dtype=torch.float64)] + [v.clone() for v in model.state_dict().values()]
    torch.testing.assert_close(_on_cpu(laid)(*args), fn(*args), rtol=1e-12, atol=1e-12)


def _on_cpu(gm):
    """The graph with the CUDA tensors it creates made on the CPU: run here."""
    for n in gm.graph.nodes:
        if isinstance(n.kwargs.get("device"), torch.device):
            n.kwargs = {**n.kwargs, "device": torch.device("cpu")}
    gm.recompile()
    return gm


def test_cpu_graphs_are_left_alone():
    gm, _ = _traced(_stem(), "cpu")
    assert channels_last_convolutions(gm) is gm


def test_a_layout_changing_clone_is_a_program_of_its_own():
    """A clone into channels-last order (a convolution weight's conversion) moves data:
    warpweave computes it and returns the converted layout."""
    import warpweave.torch as wt

    def fn(w):
        return w.clone(memory_format=torch.channels_last), w.clone(memory_format=torch.channels_last) + 1

    torch.manual_seed(0)
    args = [torch.randn(5, 3, 3, 4, dtype=torch.float64)]
    explanation = wt.explain(lambda w: fn(w)[0], *args, strict=True)
    assert not explanation.fallbacks and len(explanation.programs) == 1
    for target in ("cpu", "interp"):
        got = torch.compile(fn, backend=wt.backend, options=dict(strict=True, target=target))(*args)
        for g, w in zip(got, fn(*args)):
            assert g.stride() == w.stride()
            torch.testing.assert_close(g, w, rtol=0, atol=0)
