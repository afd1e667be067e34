"""A graph's in-place updates of its inputs in one PyTorch call
(frontend.torch.input_updates): the same tensors end with the same values; updates
that another node reads in between are left as they are."""
from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip(
    "torch", reason="the torch.compile backend needs PyTorch (.ci/run installs torch==2.13.0, the CPU build)")
import warpweave.torch as wt  # noqa: E402
from warpweave.frontend.torch.input_updates import batch_input_updates  # noqa: E402

aten, nn = torch.ops.aten, torch.nn


def _graph(read_between: bool) -> torch.fx.GraphModule:
    g = torch.fx.Graph()
    a, b, x = g.placeholder("a"), g.placeholder("b"), g.placeholder("x")
    y = g.call_function(aten.add.Tensor, (x, 1.0))
    g.call_function(aten.copy_.default, (a, y))
    seen = g.call_function(aten.mul.Tensor, (a, 3.0)) if read_between else g.call_function(aten.mul.Tensor, (x, 3.0))
    g.call_function(aten.copy_.default, (b, g.call_function(aten.mul.Tensor, (x, 2.0))))
    g.output((seen,))
    return torch.fx.GraphModule(torch.nn.Module(), g)


@pytest.mark.parametrize("read_between", [False, True])
def test_updates_become_one_call_unless_read_in_between(read_between):
    gm, twin = _graph(read_between), _graph(read_between)
    assert batch_input_updates(gm) == (0 if read_between else 2)
    gm.recompile()
    copies = [n for n in gm.graph.nodes if n.target is aten.copy_.default]
    assert len(copies) == (2 if read_between else 0)
    x = torch.randn(5, dtype=torch.float64)
    a, b = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    a2, b2 = a.clone(), b.clone()
    got, want = gm(a, b, x), twin(a2, b2, x)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close((a, b), (a2, b2), rtol=0, atol=0)


def test_batch_norm_running_statistics_match_eager():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3), nn.BatchNorm2d(8, momentum=None)).double().train()
    twin = copy.deepcopy(model)
    fn = torch.compile(model, backend=wt.backend, options=dict(strict=True))
    for _ in range(3):
        x = torch.randn(2, 3, 10, 11, dtype=torch.float64)
        fn(x).sum().backward()
        twin(x).sum().backward()
    for (name, got), want in zip(model.named_buffers(), twin.buffers()):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=name)


def test_an_update_whose_source_another_update_overwrites_stays_in_order():
    g = torch.fx.Graph()
    a, b, x = g.placeholder("a"), g.placeholder("b"), g.placeholder("x")
    g.call_function(aten.copy_.default, (a, b))  # a takes b's old value ...
    g.call_function(aten.copy_.default, (b, x))  # ... then b changes
    g.output(())
    gm = torch.fx.GraphModule(torch.nn.Module(), g)
    assert batch_input_updates(gm) == 0
