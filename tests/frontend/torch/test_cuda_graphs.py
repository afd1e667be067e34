"""mode="reduce-overhead" (frontend/torch/cuda_graphs): replays from CUDA graphs give
eager's values, call after call, through new shapes, moved inputs and in-place updates."""
import pytest

torch = pytest.importorskip("torch", reason="CUDA-graph replay wraps PyTorch callables")
from torch.fx.experimental.proxy_tensor import make_fx  # noqa: E402

import warpweave.torch as wt  # noqa: E402
from warpweave.frontend.torch.cuda_graphs import GraphedCall, mutated_inputs  # noqa: E402


def test_mutated_inputs_are_the_placeholders_written_into():
    def fn(a, b, c):
        a.copy_(b * 2)
        return c + 1

    gm = make_fx(fn)(torch.randn(3), torch.randn(3), torch.randn(3))
    assert mutated_inputs(gm) == frozenset({0})
    assert mutated_inputs(make_fx(lambda a: a * 2)(torch.randn(3))) == frozenset()


def test_cpu_tensors_pass_through_uncaptured():
    calls = []
    graphed = GraphedCall(lambda x: calls.append(1) or x * 2, name="t")
    x = torch.randn(4)
    for _ in range(3):
        torch.testing.assert_close(graphed(x), x * 2)
    assert len(calls) == 3 and not graphed.recorded


class _Net(torch.nn.Module):
    def __init__(self, width=48):
        super().__init__()
        self.fc = torch.nn.Linear(width, width)
        self.norm = torch.nn.LayerNorm(width)

    def forward(self, x):
        return self.norm(torch.nn.functional.gelu(self.fc(x)) + x).softmax(-1)


@pytest.mark.gpu
def test_inference_replays_match_eager_and_results_stay_put(torch_cuda):
    device = torch_cuda
    torch.manual_seed(0)
    net = _Net().to(device).eval()
    compiled = torch.compile(net, backend=wt.backend, mode="reduce-overhead", dynamic=False)
    results = []
    with torch.no_grad():
        for batch in (16, 16, 16, 5, 16, 5, 5):  # a new shape records anew; the old one still replays
            x = torch.randn(batch, 48, device=device)
            got = compiled(x)
            torch.testing.assert_close(got, net(x), rtol=1e-5, atol=1e-5)
            results.append((got, got.clone()))
    for got, snapshot in results:  # later replays never write into an earlier result
        torch.testing.assert_close(got, snapshot, rtol=0, atol=0)


@pytest.mark.gpu
def test_training_steps_give_eager_gradients(torch_cuda):
    device = torch_cuda
    torch.manual_seed(1)
    net = _Net().to(device)
    ref = _Net().to(device)
    ref.load_state_dict(net.state_dict())
    compiled = torch.compile(net, backend=wt.backend, mode="reduce-overhead", dynamic=False)
    for step in range(4):
        x = torch.randn(32, 48, device=device)
        for model, fn in ((net, compiled), (ref, ref)):
            model.zero_grad(set_to_none=True)
            fn(x).pow(2).sum().backward()
        for (name, p), q in zip(net.named_parameters(), ref.parameters()):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-5, msg=f"step {step}: {name}")


@pytest.mark.gpu
def test_running_statistics_update_in_place_on_every_replay(torch_cuda):
    device = torch_cuda
    torch.manual_seed(2)
    net = torch.nn.Sequential(torch.nn.BatchNorm1d(24), torch.nn.ReLU()).to(device).train()
    ref = torch.nn.Sequential(torch.nn.BatchNorm1d(24), torch.nn.ReLU()).to(device).train()
    ref.load_state_dict(net.state_dict())
    compiled = torch.compile(net, backend=wt.backend, mode="reduce-overhead", dynamic=False)
    with torch.no_grad():
        for _ in range(4):
            x = torch.randn(64, 24, device=device) * 3 + 1
            torch.testing.assert_close(compiled(x), ref(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(net[0].running_mean, ref[0].running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net[0].running_var, ref[0].running_var, rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_inputs_that_stay_put_are_read_in_place_and_moved_ones_record_anew(torch_cuda):
    device = torch_cuda
    w = torch.randn(8, device=device)
    x = torch.randn(8, device=device)
    calls = []

    def fn(a, weight):
        calls.append(1)
        return a * weight + 1

    graphed = GraphedCall(fn, name="t")
    for _ in range(4):  # warm, record, replay, replay: new values in the same storage are read
        x.copy_(torch.randn(8, device=device))
        torch.testing.assert_close(graphed(x, w), x * w + 1)
    assert len(calls) == 2 and len(graphed.recorded) == 1
    for _ in range(3):  # both inputs in new storage every call: recorded again, then copied in
        x2, w2 = torch.randn(8, device=device), torch.randn(8, device=device)
        torch.testing.assert_close(graphed(x2, w2), x2 * w2 + 1)
    assert len(calls) <= 4
