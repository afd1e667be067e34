"""The matrix-product converters (mm, bmm, addmm, baddbmm, mv, addmv, dot) on the cpu
target against eager PyTorch, the `contractions` option, and gradients of a small
Linear + GELU model against eager float64."""
from __future__ import annotations

import types

import pytest

import warpweave as ww
from warpweave.errors import OptionError, UnsupportedError

torch = pytest.importorskip(
    "torch", reason="the torch.compile backend needs PyTorch (.ci/run installs torch==2.13.0, the CPU build)")

import warpweave.torch as wt  # noqa: E402
from warpweave.frontend.torch.backend import collecting_reports  # noqa: E402
from warpweave.frontend.torch.contractions import _enabled  # noqa: E402

from .test_convert import assert_same, split_and_run  # noqa: E402

F = torch.nn.functional

CASES = {  # name: (fn, argument shapes, the ATen op it should produce)
    "mm": (torch.mm, [(7, 5), (5, 3)], "aten.mm.default"),
    "mm-transposed": (lambda a, b: a.t() @ b.t(), [(5, 7), (3, 5)], "aten.mm.default"),
    "bmm": (torch.bmm, [(2, 9, 4), (2, 4, 6)], "aten.bmm.default"),
    "addmm": (torch.addmm, [(6,), (9, 4), (4, 6)], "aten.addmm.default"),
    "addmm-scaled": (lambda c, a, b: torch.addmm(c, a, b, beta=0.5, alpha=2.0), [(9, 6), (9, 4), (4, 6)],
                     "aten.addmm.default"),
    "addmm-beta0": (lambda c, a, b: torch.addmm(c * float("nan"), a, b, beta=0), [(9, 6), (9, 4), (4, 6)],
                    "aten.addmm.default"),
    "baddbmm": (lambda c, a, b: torch.baddbmm(c, a, b, alpha=0.25), [(2, 1, 6), (2, 9, 4), (2, 4, 6)],
                "aten.baddbmm.default"),
    # core ATen decomposes these three into a product and a sum (see the test below)
    "mv": (torch.mv, [(130, 7), (7,)], None),
    "addmv": (torch.addmv, [(130,), (130, 7), (7,)], None),
    "dot": (torch.dot, [(33,), (33,)], None),
    "linear-3d": (F.linear, [(2, 5, 8), (12, 8), (12,)], None),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(CASES))
def test_converters_match_pytorch(name, dtype):
    fn, shapes, op = CASES[name]
    args = [torch.randn(s, dtype=dtype) for s in shapes]
    got, want, report = split_and_run(fn, *args)
    assert_same(got, want)
    assert not report.fallbacks and len(report.programs) == 1, str(report)
    if op is not None:
        assert op in report.programs[0].ops, str(report)


@pytest.mark.parametrize("name", ["mv", "addmv", "dot"])
def test_converters_of_products_core_aten_decomposes(name):
    from torch.fx.experimental.proxy_tensor import make_fx

    from warpweave.frontend.torch.partition import split_graph

    fn, shapes, _ = CASES[name]
    args = [torch.randn(s) for s in shapes]
    gm = make_fx(fn, tracing_mode="fake")(*args)
    split, report = split_graph(gm, "test", "cpu")
    assert_same(split(*args), fn(*args))
    assert report.programs[0].ops == [f"aten.{name}.default"], str(report)


def test_option_keeps_products_in_pytorch():
    a, b = torch.randn(4, 3), torch.randn(3, 5)
    with ww.options(contractions="torch"):
        got, want, report = split_and_run(lambda a, b: torch.relu(a @ b), a, b)
    assert_same(got, want)
    (fallback,) = report.fallbacks
    assert fallback.op == "aten.mm.default" and "contractions='torch'" in fallback.reason
    with pytest.raises(OptionError, match="contractions"):
        with ww.options(contractions="cublas"):
            pass


def test_auto_leaves_gpu_products_to_pytorch():
    on = types.SimpleNamespace
    with ww.options(contractions="auto"):
        _enabled(on(device=torch.device("cpu")))
        with pytest.raises(UnsupportedError, match="on cuda run in PyTorch"):
            _enabled(on(device=torch.device("cuda")))
    with ww.options(contractions="warpweave"):
        _enabled(on(device=torch.device("cuda")))


class LinearGelu(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(24, 40), torch.nn.Linear(40, 8)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


def test_gradients_of_linear_gelu_match_eager_float64():
    torch.manual_seed(0)
    model = LinearGelu()
    reference = LinearGelu().double()
    reference.load_state_dict(model.state_dict())
    x = torch.randn(2, 33, 24)
    compiled = torch.compile(model, backend=wt.backend)
    with collecting_reports() as reports:
        loss = compiled(x).square().mean()
        loss.backward()
    want = reference(x.double()).square().mean()
    want.backward()
    torch.testing.assert_close(loss.double(), want, rtol=1e-5, atol=1e-7)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        scale = q.grad.abs().max()
        assert (p.grad.double() - q.grad).abs().max() <= 1e-5 * scale, name
    assert reports and not any(r.fallbacks for r in reports), [str(r) for r in reports]
    compiled_ops = {op for r in reports for p in r.programs for op in p.ops}
    assert {"aten.addmm.default", "aten.mm.default"} <= compiled_ops, compiled_ops
