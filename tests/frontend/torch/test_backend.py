"""torch.compile with warpweave's backend: outputs and gradients against eager PyTorch,
fallback reporting, registration, layouts, shapes. GPU variants carry `gpu`."""
from __future__ import annotations

import copy
import importlib.metadata
import logging
import math

import pytest

torch = pytest.importorskip(
    "torch", reason="the torch.compile backend needs PyTorch (.ci/run installs torch==2.13.0, the CPU build)")
nn = torch.nn
F = torch.nn.functional

import warpweave.torch as wt  # noqa: E402
from warpweave.frontend.torch.backend import collecting_reports  # noqa: E402
import warpweave as ww  # noqa: E402
from warpweave.frontend.torch.convert import CONVERTERS  # noqa: E402
from warpweave.errors import FallbackError, OptionError  # noqa: E402

# Largest difference from eager allowed, relative to the largest magnitude in eager's result.
TOLERANCE = {torch.float32: 2e-5, torch.bfloat16: 4e-2}
MATMULS = {"aten.mm.default", "aten.addmm.default", "aten.bmm.default"}
# What stays in PyTorch: matrix products.
IN_TORCH = MATMULS
# A GPT's embeddings (gathers), their backward (scatters) and its loss compile too.
GPT_IN_TORCH = IN_TORCH


# ----------------------------------------------------------------------------- models

class MLP(nn.Module):
    def __init__(self, d=32):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class LayerNormResidual(nn.Module):
    def __init__(self, d=32):
        super().__init__()
        self.norm, self.fc = nn.LayerNorm(d), nn.Linear(d, d)

    def forward(self, x):
        return x + F.gelu(self.fc(self.norm(x)))


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(1 + 0.1 * torch.randn(d))

    def forward(self, x):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype) * self.weight


class LlamaMLP(nn.Module):
    """RMSNorm, then a SiLU-gated MLP, with a residual."""

    def __init__(self, d=32, hidden=64):
        super().__init__()
        self.norm = RMSNorm(d)
        self.gate, self.up = nn.Linear(d, hidden, bias=False), nn.Linear(d, hidden, bias=False)
        self.down = nn.Linear(hidden, d, bias=False)

    def forward(self, x):
        h = self.norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class CausalAttention(nn.Module):
    def __init__(self, d=32, heads=4, seq=16):
        super().__init__()
        self.heads, self.qkv, self.proj = heads, nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.register_buffer("mask", torch.tril(torch.ones(seq, seq, dtype=torch.bool)))

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2)
                   for z in self.qkv(x).split(c, dim=2))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(c // self.heads)
        att = att.masked_fill(~self.mask[:t, :t], float("-inf")).softmax(-1)
        return self.proj((att @ v).transpose(1, 2).reshape(b, t, c))


class Block(nn.Module):
    """A pre-norm transformer block: residuals around attention and an MLP, with dropout."""

    def __init__(self, d=32, heads=4, seq=16, dropout=0.1):
        super().__init__()
        self.ln1, self.attn = nn.LayerNorm(d), CausalAttention(d, heads, seq)
        self.ln2, self.mlp, self.drop = nn.LayerNorm(d), MLP(d), nn.Dropout(dropout)

    def forward(self, x):
        x = x + self.drop(self.attn(self.ln1(x)))
        return x + self.drop(self.mlp(self.ln2(x)))


class TinyGPT(nn.Module):
    def __init__(self, vocab=64, d=32, heads=4, seq=16, layers=2):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(seq, d)
        self.blocks = nn.ModuleList(Block(d, heads, seq) for _ in range(layers))
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln(x))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


# ----------------------------------------------------------------------------- helpers

@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test starts without Dynamo's memory of earlier shapes (which would make
    its graphs dynamic) and earlier compiles."""
    torch._dynamo.reset()
    yield


def _leaves(model, inputs):
    return [*model.parameters(), *(x for x in inputs if x.requires_grad)]


def assert_matches(got, want, dtype, what):
    assert got.shape == want.shape and got.dtype == want.dtype, what
    scale = max(want.detach().abs().max().item(), 1e-3) if want.numel() else 1.0
    torch.testing.assert_close(got, want, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype] * scale,
                               msg=lambda m: f"{what}: {m}")


def compare_with_eager(model, inputs, dtype, device="cpu", allowed=IN_TORCH, backward=True):
    """Run `model` compiled by warpweave and eagerly on the same fresh inputs; outputs
    and gradients must agree, and only `allowed` ops may fall back. Returns the reports."""
    model = model.to(device=device, dtype=dtype)
    inputs = [x.to(device=device, dtype=dtype).requires_grad_(backward) if x.is_floating_point()
              else x.to(device) for x in inputs]
    with collecting_reports() as reports:
        compiled = torch.compile(model, backend=wt.backend)
        got = compiled(*inputs)
        got_grads = torch.autograd.grad(got.sum(), _leaves(model, inputs)) if backward else []
    want = model(*inputs)
    want_grads = torch.autograd.grad(want.sum(), _leaves(model, inputs)) if backward else []
    name = type(model).__name__
    assert_matches(got, want, dtype, f"{name} output")
    for k, (g, w) in enumerate(zip(got_grads, want_grads)):
        assert_matches(g, w, dtype, f"{name} gradient {k}")
    kinds = sorted(r.name.split("_")[0] for r in reports)
    assert kinds == (["backward", "forward"] if backward else ["inference"]), kinds
    assert all(r.programs for r in reports), [str(r) for r in reports]
    fell = {f.op for r in reports for f in r.fallbacks}
    assert fell <= allowed, [str(r) for r in reports]
    return reports


def _cuda_usable() -> bool:
    if not torch.cuda.is_available():
        return False
    from warpweave.backends.cuda import driver

    return driver.available()


requires_cuda = pytest.mark.skipif(not _cuda_usable(), reason="needs a CUDA GPU usable by PyTorch and warpweave")

MODULES = [(MLP, (4, 8, 32)), (LayerNormResidual, (4, 8, 32)), (LlamaMLP, (4, 8, 32)),
           (CausalAttention, (2, 16, 32)), (Block, (2, 16, 32))]


# ----------------------------------------------------------------------------- CPU tier

@pytest.mark.parametrize("cls,shape", MODULES, ids=[c.__name__ for c, _ in MODULES])
def test_modules_match_eager_float32(cls, shape):
    compare_with_eager(cls().eval(), [torch.randn(shape)], torch.float32)


@pytest.mark.parametrize("cls,shape", [MODULES[2], MODULES[4]], ids=["LlamaMLP", "Block"])
def test_modules_match_eager_bfloat16(cls, shape):
    compare_with_eager(cls().eval(), [torch.randn(shape)], torch.bfloat16)


@pytest.mark.usefixtures("products_in_torch")
def test_tiny_gpt_forward_and_backward():
    idx, targets = torch.randint(0, 64, (2, 16)), torch.randint(0, 64, (2, 16))
    reports = compare_with_eager(TinyGPT().eval(), [idx, targets], torch.float32, allowed=GPT_IN_TORCH)
    assert sum(len(r.programs) for r in reports) >= 8


def test_inference_graph_under_no_grad():
    with torch.no_grad():
        compare_with_eager(Block().eval(), [torch.randn(2, 16, 32)], torch.float32, backward=False)


def test_no_grad_on_tensors_that_require_grad():
    x = torch.randn(4, 5, requires_grad=True)
    with torch.no_grad():
        out = _compiled_fully(lambda v: torch.exp(v) + 1, x)
    torch.testing.assert_close(out, torch.exp(x.detach()) + 1)
    assert not out.requires_grad


@pytest.mark.usefixtures("products_in_torch")
def test_explain_names_what_fell_back_and_why():
    model = Block(dropout=0.5).train()  # dropout in training mode draws random numbers
    x = torch.randn(2, 16, 32, requires_grad=True)
    explanation = wt.explain(model, x)
    assert [g.name.split("_")[0] for g in explanation.graphs] == ["forward", "backward"]
    reasons = {f.op: f.reason for f in explanation.fallbacks}
    assert "random numbers" in reasons["aten.native_dropout.default"]
    assert "matrix products" in reasons["aten.bmm.default"]
    assert set(reasons) <= IN_TORCH | {"aten.native_dropout.default"}
    assert explanation.kernels >= len(explanation.programs) > 0
    compiled_ops = {op for p in explanation.programs for op in p.ops}
    # softmax and layer norm whole in the forward graph; their backwards as decompositions
    assert {"aten._softmax.default", "aten.native_layer_norm.default", "aten.gelu.default",
            "aten.sum.dim_IntList", "aten.mul.Tensor"} <= compiled_ops
    text = str(explanation)
    assert "fell back: " in text and "native_dropout" in text and "program forward_" in text
    assert all(p.target == "cpu" for p in explanation.programs)
    assert model.attn.qkv.weight.grad is None  # explaining touched no gradients


@pytest.mark.usefixtures("products_in_torch")
def test_one_log_line_per_graph_naming_the_fallbacks(caplog):
    model, x = MLP(), torch.randn(4, 32, requires_grad=True)
    with caplog.at_level(logging.INFO, logger="warpweave.torch"):
        torch.compile(model, backend=wt.backend)(x).sum().backward()
    lines = [r.getMessage() for r in caplog.records if r.name == "warpweave.torch"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("warpweave: forward_") and lines[1].startswith("warpweave: backward_")
    assert "fell back to PyTorch: aten.addmm.default x2" in lines[0]
    assert "aten.mm.default x" in lines[1]


def test_backend_is_registered_as_an_entry_point():
    points = importlib.metadata.entry_points(group="torch_dynamo_backends")
    assert points["warpweave"].value == "warpweave.torch:backend"
    assert points["warpweave"].load() is wt.backend
    assert "warpweave" in torch._dynamo.list_backends()
    x = torch.randn(4, 3)
    with collecting_reports() as reports:
        out = torch.compile(lambda v: torch.sigmoid(v) * 3, backend="warpweave")(x)
    torch.testing.assert_close(out, torch.sigmoid(x) * 3)
    assert len(reports) == 1 and reports[0].programs


def test_options_target_and_mode(caplog):
    def fn(x):
        return torch.tanh(x) * 2

    x = torch.randn(5, 7)
    with collecting_reports() as reports:
        out = torch.compile(fn, backend=wt.backend, options={"target": "interp"})(x)
    torch.testing.assert_close(out, fn(x))
    assert [p.target for r in reports for p in r.programs] == ["interp"]
    with caplog.at_level(logging.WARNING, logger="warpweave.torch"):  # CUDA graphs: CPU tensors run as they are
        out = torch.compile(fn, backend=wt.backend, mode="reduce-overhead")(x)
    torch.testing.assert_close(out, fn(x))
    assert not caplog.records  # max-autotune: tests/tune


def test_dump_dir_option_writes_every_stage(tmp_path):
    x = torch.randn(6, 5)
    torch.compile(lambda v: torch.exp(v).sum(-1), backend=wt.backend, options={"dump_dir": str(tmp_path)})(x)
    (program,) = tmp_path.iterdir()
    assert program.name.startswith("inference_") and (program / "00-tensor.txt").exists()
    assert len(list(program.glob("*-llvm.ll"))) == 1


def test_cuda_target_for_cpu_tensors_falls_back_with_the_reason():
    explanation = wt.explain(lambda x: torch.exp(x) + 1, torch.randn(3), target="cuda")
    assert not explanation.programs
    assert all("cannot run on warpweave target 'cuda'" in f.reason for f in explanation.fallbacks)


def test_unknown_options_are_refused():
    with pytest.raises(Exception) as info:
        torch.compile(lambda x: x + 1, backend=wt.backend, options={"targt": "cpu"})(torch.randn(2))
    cause = getattr(info.value, "inner_exception", info.value)  # Dynamo wraps what backends raise
    assert isinstance(cause, OptionError) and "targt" in str(cause) and "target" in str(cause)
    with pytest.raises(OptionError, match="unknown mode"):
        wt.BackendOptions.parse("fastest", None)


def _compiled_fully(fn, *args):
    """fn compiled by warpweave (as one program, nothing falling back) and run on args."""
    with collecting_reports() as reports:
        out = torch.compile(fn, backend=wt.backend)(*args)
    assert len(reports) == 1 and len(reports[0].programs) == 1 and not reports[0].fallbacks, \
        [str(r) for r in reports]
    return out


def test_noncontiguous_and_expanded_inputs():
    def fn(x, y, b):
        return torch.sigmoid(x) * y + b

    x = torch.randn(8, 6).t()                 # transposed
    y = torch.randn(6, 16)[:, 1::2]           # strided slice with an offset
    b = torch.randn(8).expand(6, 8)           # stride 0
    torch.testing.assert_close(_compiled_fully(fn, x, y, b), fn(x, y, b))


def test_views_a_program_reads_join_it(monkeypatch):
    """Views of tensors from outside that a program reads (a transposed weight, a
    reshape) are computed in the program, which takes the tensors themselves: no view
    made and no strided layout prepared per call, also where the view is returned too."""
    from warpweave.frontend.torch import partition

    calls, real = [], partition.TracedGroup.call

    def call(*args, **kwargs):
        calls.append(real(*args, **kwargs))
        return calls[-1]

    monkeypatch.setattr(partition.TracedGroup, "call", call)

    def fn(x, w):
        wt_ = w.t()
        return torch.sigmoid(x.view(4, 6) * 2), (wt_ * 3).sum(0), wt_

    x, w = torch.randn(24), torch.randn(5, 7)
    got = _compiled_fully(fn, x, w)
    for g, want in zip(got, fn(x, w)):
        torch.testing.assert_close(g, want)
    assert calls and all(layout.dense for c in calls for layout in c.inputs), [c.inputs for c in calls]


@pytest.mark.usefixtures("products_in_torch")
def test_copies_of_transposed_views_compile():
    """`.contiguous()` of a transposed view between two matrix products is a real copy:
    warpweave runs it (a tiled transpose), not PyTorch, and a copy of something
    already contiguous stays a view."""
    def fn(a, b):
        t = (a @ b).transpose(-2, -1).contiguous()
        return t @ b.transpose(-2, -1).contiguous(), (a @ b).contiguous() @ b.transpose(-2, -1)

    a, b = torch.randn(2, 40, 24), torch.randn(2, 24, 40)
    with collecting_reports() as reports:
        got = torch.compile(fn, backend=wt.backend)(a, b)
    for g, w in zip(got, fn(a, b)):
        torch.testing.assert_close(g, w)
    programs = [p for r in reports for p in r.programs]
    assert sum(p.ops.count("aten.clone.default") for p in programs) == 2, [str(r) for r in reports]
    assert {f.op for r in reports for f in r.fallbacks} <= {"aten.bmm.default", "aten.mm.default"}


def test_strided_inputs_reach_the_kernels_as_they_are(monkeypatch):
    """On the CPU, inputs of the traced strides (transposed, sliced, expanded) go to the
    kernels as they are: nothing is prepared per call."""
    from warpweave.frontend.torch import partition

    def fn(x, y, b):
        return torch.sigmoid(x) * y + b

    x, y, b = torch.randn(8, 6).t(), torch.randn(6, 16)[:, 1::2], torch.randn(8).expand(6, 8)
    compiled = torch.compile(fn, backend=wt.backend)
    torch.testing.assert_close(compiled(x, y, b), fn(x, y, b))

    def prepare(*args):
        raise AssertionError("an input was prepared")

    monkeypatch.setattr(partition._Input, "prepare", prepare)
    x, y = torch.randn(8, 6).t(), torch.randn(6, 16)[:, 1::2]
    torch.testing.assert_close(compiled(x, y, b), fn(x, y, b))


def test_output_keeps_eager_strides():
    def fn(x):
        return x.t() * 2 + 1  # eager keeps the transposed layout of x.t()

    x = torch.randn(3, 5)
    got, want = _compiled_fully(fn, x), fn(x)
    torch.testing.assert_close(got, want)
    assert got.stride() == want.stride() == (1, 5)


def test_zero_dim_tensors():
    def scaled(x, s):
        return x * s + torch.exp(s)

    x, s = torch.randn(5), torch.tensor(0.5)
    torch.testing.assert_close(_compiled_fully(scaled, x, s), scaled(x, s))
    a, b = torch.tensor(3.0), torch.tensor(2.0)
    torch.testing.assert_close(torch.compile(scaled, backend=wt.backend)(a, b), scaled(a, b))


def test_in_place_updates_of_inputs():
    def fn(x):
        x.mul_(2).add_(1)
        return x.relu()

    x = torch.randn(7)
    expected = x * 2 + 1
    with collecting_reports() as reports:
        out = torch.compile(fn, backend=wt.backend)(x)
    torch.testing.assert_close(x, expected)
    torch.testing.assert_close(out, expected.relu())
    assert reports[0].programs
    assert {f.op for f in reports[0].fallbacks} <= {"aten.copy_.default"}


def test_dtypes_promote_as_in_pytorch():
    def fn(i, h, s):
        return i + 1.5, h * s, (i > 2).sum(), i / 4, torch.where(i > 1, h, 0.25), h.float().mean()

    i, h, s = torch.arange(6, dtype=torch.int32), torch.randn(6, dtype=torch.float16), torch.tensor(3.0)
    got, want = _compiled_fully(fn, i, h, s), fn(i, h, s)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        torch.testing.assert_close(g, w)


def test_recompiles_for_each_new_shape():
    def fn(x):
        return F.softmax(x, -1) * 2

    compiled = torch.compile(fn, backend=wt.backend)
    for shape, compiles in [((4, 8), True), ((5, 8), True), ((5, 8), False), ((3, 2), True),
                            ((3, 2), False)]:
        x = torch.randn(shape)
        with collecting_reports() as reports:
            torch.testing.assert_close(compiled(x), fn(x))
        assert bool(reports) == compiles, (shape, [str(r) for r in reports])


def test_dynamic_shapes_are_specialized_per_shape(caplog):
    def fn(x):
        return torch.tanh(x).sum(-1)

    with caplog.at_level(logging.INFO, logger="warpweave.torch"):
        compiled = torch.compile(fn, backend=wt.backend, dynamic=True)
        for n in (3, 6):
            x = torch.randn(n, 4)
            torch.testing.assert_close(compiled(x), fn(x))
    assert any("dynamic shapes" in r.getMessage() for r in caplog.records)


# ----------------------------------------------------------------------------- regressions (issue 14)

ATTENTION = {"aten._scaled_dot_product_flash_attention_for_cpu.default",
             "aten._scaled_dot_product_flash_attention_for_cpu_backward.default"}


class SDPAttention(nn.Module):
    """Causal scaled-dot-product attention over a learned q/k/v projection, with a residual."""

    def __init__(self, d=32, heads=4):
        super().__init__()
        self.heads, self.qkv = heads, nn.Linear(d, 3 * d)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        return x + F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, c)


def compare_with_float64(model, inputs, dtype, allowed):
    """compare_with_eager, and the compiled outputs and gradients against the model
    run eagerly in float64 (within `dtype`'s tolerance)."""
    reference = copy.deepcopy(model).double()
    reports = compare_with_eager(model, inputs, dtype, allowed=allowed)
    model = model.to(dtype)
    xs = [x.to(dtype).requires_grad_() for x in inputs]
    refs = [x.detach().double().requires_grad_() for x in xs]
    got = torch.compile(model, backend=wt.backend)(*xs)
    want = reference(*refs)
    assert_matches(got.double(), want, dtype, "output against float64")
    got_grads = torch.autograd.grad(got.sum(), _leaves(model, xs))
    want_grads = torch.autograd.grad(want.sum(), _leaves(reference, refs))
    for k, (g, w) in enumerate(zip(got_grads, want_grads)):
        assert_matches(g.double(), w, dtype, f"gradient {k} against float64")
    return reports


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_sdpa_gradients_match_eager(dtype):
    """The CPU flash-attention decomposition returned the attention weights where its
    backward expects the logsumexp (NaN or wrong gradients): attention stays in PyTorch,
    as Inductor keeps it."""
    torch.manual_seed(0)
    reports = compare_with_float64(SDPAttention(), [torch.randn(2, 16, 32)], dtype,
                                   allowed=IN_TORCH | ATTENTION)
    fell = {f.op for r in reports for f in r.fallbacks}
    assert ATTENTION <= fell, fell


def test_decompositions_follow_inductor():
    from torch._inductor.decomposition import select_decomp_table

    from warpweave.frontend.torch.backend import decompositions

    ours, aten = decompositions(), torch.ops.aten
    attention = aten._scaled_dot_product_flash_attention_for_cpu.default
    assert attention not in ours and attention not in select_decomp_table()
    assert aten.silu.default not in ours and aten.addcmul.default not in ours  # Inductor's lowerings
    assert aten.silu_backward.default in ours and aten.gelu_backward.default in ours


@pytest.mark.parametrize("transposed", [False, True])
def test_a_cuda_convolutions_bias_is_an_addition_after_it(transposed):
    """On CUDA the bias leaves the convolution (cuDNN adds it in a kernel of its own) as
    an addition over the output channels that fuses into the next program; the traced
    graph computes the same values (checked by running it on CPU tensors); on the CPU
    the convolution keeps it."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx

    from warpweave.frontend.torch.backend import decompositions

    aten = torch.ops.aten
    conv = F.conv_transpose2d if transposed else F.conv2d
    shapes = [(2, 6, 7, 5), (6, 2, 3, 3) if transposed else (4, 3, 3, 3), (4,)]

    def fn(x, w, b):
        return conv(x, w, b, stride=2, groups=2)

    def traced(device):
        with FakeTensorMode():
            fakes = [torch.empty(s, device=device) for s in shapes]
            return make_fx(fn, decomposition_table=decompositions())(*fakes)

    cuda, cpu = traced("cuda"), traced("cpu")
    (conv_node,) = [n for n in cuda.graph.nodes if n.target is aten.convolution.default]
    assert conv_node.args[2] is None and any(n.target is aten.add.Tensor for n in cuda.graph.nodes)
    (conv_node,) = [n for n in cpu.graph.nodes if n.target is aten.convolution.default]
    assert conv_node.args[2] is not None
    args = [torch.randn(s, dtype=torch.float64) for s in shapes]
    torch.testing.assert_close(cuda(*args), fn(*args), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", ["batch_norm_statistics", "channels_last_pool"])
def test_large_gpu_programs_verify_without_exhaustive_evaluation(case):
    """ResNet-50 on the H200 fell back to PyTorch (2026-12-03): its batch-norm
    statistics over [8, 256, 56, 56] and a channels-last max pool compiled GPU kernels
    whose bounds the verifier could not prove short of evaluating more points than it
    may. Compiled here for the GPU (the interpreter target; nothing runs), strictly."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.proxy_tensor import make_fx

    from warpweave.frontend.torch.backend import decompositions
    from warpweave.frontend.torch.partition import split_graph

    if case == "batch_norm_statistics":
        shapes = [(8, 256, 56, 56), (256,), (256,)]

        def fn(x, w, b):
            return F.relu(F.batch_norm(x, None, None, w, b, training=True))
    else:
        shapes = [(64, 64, 112, 112)] + [(64,)] * 4

        def fn(x, m, v, w, b):
            return F.max_pool2d(F.relu(F.batch_norm(x, m, v, w, b, training=False)), 3, 2, 1)
    with FakeTensorMode():
        args = [torch.empty(s, dtype=torch.bfloat16) for s in shapes]
        args[0] = args[0].contiguous(memory_format=torch.channels_last) if case == "channels_last_pool" else args[0]
        gm = make_fx(fn, decomposition_table=decompositions())(*args)
    _, report = split_graph(gm, case, "interp", strict=True)
    assert report.programs and not report.fallbacks


@pytest.mark.parametrize("target", ["cpu", "interp"])
def test_channels_last_programs_match_eager(target):
    """Channels-last activations through batch norm, ReLU, a max pool and a residual:
    the program computes in channels-last order (passes.layout) and returns eager's
    values with eager's strides."""
    def fn(x, mean, var, w, b, skip):
        y = F.relu(F.batch_norm(x, mean, var, w, b, training=False))
        return F.max_pool2d(y, 3, 2, 1), (y + skip).relu()

    torch.manual_seed(0)
    shapes = [(2, 8, 9, 11)] + [(8,)] * 4 + [(2, 8, 9, 11)]
    args = [torch.randn(s, dtype=torch.float64) for s in shapes]
    args[2] = args[2].abs() + 0.5
    for k in (0, 5):
        args[k] = args[k].contiguous(memory_format=torch.channels_last)
    got = torch.compile(fn, backend=wt.backend, options=dict(strict=True, target=target))(*args)
    for g, w in zip(got, fn(*args)):
        assert g.stride() == w.stride()
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_mixed_precision_batch_norm_training():
    """bfloat16 activations with float32 batch-norm statistics (autocast): the backward
    read the saved mean as bfloat16 (PyTorch's meta function records it so; its CPU
    kernel returns float32). Batch norm now decomposes as Inductor decomposes it, into
    operations whose dtypes PyTorch's records and its kernels agree on."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8)).train()
    twin = copy.deepcopy(model)
    x, weights = torch.randn(2, 3, 8, 8), torch.randn(2, 8, 6, 6)
    outs = []
    with collecting_reports() as reports:
        for m, fn in ((model, torch.compile(model, backend=wt.backend)), (twin, twin)):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = fn(x)
            (out.float() * weights).sum().backward()
            outs.append(out)
    assert outs[0].dtype == outs[1].dtype == torch.bfloat16
    assert_matches(outs[0], outs[1], torch.bfloat16, "output")
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert_matches(p.grad, q.grad, torch.bfloat16, f"gradient of {name}")
    for (name, b), c in zip(model.named_buffers(), twin.buffers()):
        assert_matches(b, c, torch.bfloat16, name)
    fell = {f.op for r in reports for f in r.fallbacks}
    assert fell == {"aten.convolution.default", "aten.convolution_backward.default", "aten.copy_.default"}, fell


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_dynamic_python_scalars_are_runtime_arguments(dtype):
    """Under dynamic=True Dynamo passes a Python float as a symbolic scalar (read from a
    0-d tensor with `item`): tracing it failed (DataDependentOutputException). It is now
    a runtime argument of the program: a new value neither recompiles nor is ignored."""
    def fn(x, s):
        return (x * s).relu() + s

    compiled = torch.compile(fn, backend=wt.backend, dynamic=True)
    with collecting_reports() as reports:
        for shape, s in [((4, 5), 2.5), ((4, 5), -1.5), ((7, 3), 0.75)]:
            x = torch.randn(shape, dtype=dtype)
            assert_matches(compiled(x, s), fn(x, s), dtype, f"{shape}, {s}")
    assert len(reports) == 2 and all(r.programs for r in reports), [str(r) for r in reports]
    fell = {f.op for r in reports for f in r.fallbacks}
    assert fell <= {"aten._local_scalar_dense.default"}, fell


def test_values_read_from_tensors_are_runtime_scalars():
    def fn(x, t):
        s = t.item()  # a graph break: the second graph takes s as a symbolic float
        return (x * s).exp() + s

    compiled = torch.compile(fn, backend=wt.backend, dynamic=True)
    with collecting_reports() as reports:
        for s in (0.5, -2.0):
            x, t = torch.randn(4, 5), torch.tensor(s)
            assert_matches(compiled(x, t), fn(x, t), torch.float32, str(s))
    assert sum(len(r.programs) for r in reports) == 1, [str(r) for r in reports]


def test_fused_16_bit_intermediate_has_one_precision():
    """sin(x)·o in bfloat16 feeds layer norm's mean (in the same thread: it skipped the
    rounding) and its centering (re-read: rounded); on nearly constant rows the mixture
    gave 0.9 where eager gives 0. Every consumer now reads the rounded value, as eager."""
    def fn(x, o, z):
        return F.layer_norm(torch.sin(x) * o, (16,)) + z

    torch.manual_seed(0)
    compiled = torch.compile(fn, backend=wt.backend)
    for shape in [(64, 16), (8, 32, 16)]:
        rows = torch.randn(*shape[:-1], 1)
        x = (rows + 1e-3 * torch.randn(shape)).bfloat16()  # nearly constant rows: ill-conditioned,
        o, z = (1 + 1e-3 * torch.randn(shape)).bfloat16(), torch.randn(shape).bfloat16()  # as rounded
        assert_matches(compiled(x, o, z), fn(x, o, z), torch.bfloat16, f"{shape} against eager")
        x, o = torch.randn(shape).bfloat16(), torch.randn(shape).bfloat16()  # well-conditioned
        got = compiled(x, o, z)
        assert_matches(got, fn(x, o, z), torch.bfloat16, f"{shape}, random, against eager")
        assert_matches(got.double(), fn(x.double(), o.double(), z.double()), torch.bfloat16,
                       f"{shape}, random, against float64")


# ----------------------------------------------------------------------------- failures, strict mode

def _raising(*args, **kwargs):
    raise RuntimeError("injected failure")


def _fallback_error(info) -> FallbackError | None:
    """The FallbackError among an exception's causes (Dynamo wraps what backends raise)."""
    exc = info.value
    while exc is not None and not isinstance(exc, FallbackError):
        exc = exc.__cause__ or getattr(exc, "inner_exception", None)
    return exc


def test_a_failing_conversion_falls_back_with_one_warning(monkeypatch):
    """An op whose converter breaks runs in PyTorch: one warning naming it and the
    reason (however often it is compiled), listed by explain(); strict mode raises."""
    monkeypatch.setitem(CONVERTERS, torch.ops.aten.tanh.default, _raising)

    def fn(x):
        return torch.tanh(x * 2) + 1

    with ww.options(strict=False), pytest.warns(ww.FallbackWarning) as caught:
        for shape in [(4, 8), (5, 8)]:
            x = torch.randn(shape)
            torch.testing.assert_close(torch.compile(fn, backend=wt.backend)(x), fn(x))
        explanation = wt.explain(fn, torch.randn(3, 8))
    messages = [str(w.message) for w in caught if issubclass(w.category, ww.FallbackWarning)]
    assert len(messages) == 1 and "aten.tanh.default" in messages[0] and "injected failure" in messages[0]
    (fallback,) = explanation.fallbacks
    assert fallback.op == "aten.tanh.default" and "conversion failed" in fallback.reason
    assert {op for p in explanation.programs for op in p.ops} == {"aten.mul.Tensor", "aten.add.Tensor"}
    torch._dynamo.reset()  # forget the compiles above
    with pytest.raises(Exception) as info:  # the suite runs strict (WARPWEAVE_STRICT=1)
        torch.compile(fn, backend=wt.backend)(torch.randn(6, 8))
    assert _fallback_error(info) is not None and "injected failure" in str(_fallback_error(info))
    torch._dynamo.reset()
    with pytest.raises(Exception) as info:
        torch.compile(fn, backend=wt.backend, options={"strict": True})(torch.randn(7, 8))
    assert _fallback_error(info) is not None


def test_a_group_that_fails_to_compile_runs_in_pytorch(monkeypatch):
    """A group that converts op by op but fails to lower or compile as a whole runs in
    PyTorch, named with its ops and the reason."""
    import warpweave.frontend.torch.partition as partition

    monkeypatch.setattr(partition, "compile_program", _raising)
    model, x = MLP(), torch.randn(4, 32, requires_grad=True)
    with pytest.warns(ww.FallbackWarning, match="injected failure"):
        explanation = wt.explain(model, x, strict=False)
    assert not explanation.programs
    reasons = {f.op: f.reason for f in explanation.fallbacks}
    assert "compile failed" in reasons["aten.gelu.default"] and "injected" in reasons["aten.gelu.default"]
    out = torch.compile(model, backend=wt.backend, options={"strict": False})(x)
    torch.testing.assert_close(out, model(x))
    torch._dynamo.reset()
    with pytest.raises(Exception) as info:
        torch.compile(model, backend=wt.backend)(torch.randn(5, 32))
    assert _fallback_error(info) is not None


def test_strict_from_the_environment_and_options(monkeypatch):
    from warpweave.options import current

    assert current().strict  # conftest
    monkeypatch.setenv("WARPWEAVE_STRICT", "0")
    assert not current().strict and not wt.BackendOptions.parse(None, None).strict
    with ww.options(strict=True):
        assert wt.BackendOptions.parse(None, None).strict
    assert not wt.BackendOptions.parse(None, {"strict": False}).strict


# ----------------------------------------------------------------------------- GPU tier

@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("cls,shape", MODULES, ids=[c.__name__ for c, _ in MODULES])
def test_modules_match_eager_cuda(cls, shape, dtype):
    reports = compare_with_eager(cls().eval(), [torch.randn(shape)], dtype, device="cuda")
    assert {p.target for r in reports for p in r.programs} == {"cuda"}


@pytest.mark.gpu
@requires_cuda
def test_tiny_gpt_cuda():
    idx, targets = torch.randint(0, 64, (2, 16)), torch.randint(0, 64, (2, 16))
    compare_with_eager(TinyGPT().eval(), [idx.cuda(), targets.cuda()], torch.float32, device="cuda",
                       allowed=GPT_IN_TORCH)


@pytest.mark.gpu
@requires_cuda
def test_cuda_inputs_in_place_and_on_the_current_stream():
    def fn(x, y, b):
        return torch.sigmoid(x) * y + b

    x = torch.randn(64, 48, device="cuda").t()
    y = torch.randn(48, 128, device="cuda")[:, ::2]
    b = torch.randn(64, device="cuda").expand(48, 64)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        out = _compiled_fully(fn, x, y, b)
    stream.synchronize()
    torch.testing.assert_close(out, fn(x, y, b))
    assert out.device == x.device


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_channels_last_convolution_nets_on_cuda(dtype, monkeypatch):
    """CUDA inference convolutions read channels-last activations (conv_layout); the
    programs between them compute in that order and take the activations through the
    strided hot path as they are (no view made per call): eager's values and layout."""
    from warpweave.frontend.torch import partition

    # float32 convolutions in full precision: TF32's rounding differs between cuDNN's
    # NCHW (eager) and NHWC (compiled) algorithms by ~1e-3
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.MaxPool2d(3, 2, 1), nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16),
                          nn.ReLU()).to("cuda", dtype).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(4, 3, 32, 33, device="cuda", dtype=dtype)
    fn = torch.compile(model, backend=wt.backend, options=dict(strict=True), dynamic=False)
    with torch.no_grad():
        first, want = fn(x), model(x)
        def no_views(*_):
            raise AssertionError("an argument was viewed: the strided hot path did not take it")
        monkeypatch.setattr(partition._Input, "prepare", no_views)
        again = fn(x)
    assert again.stride() == want.stride()
    for got in (first, again):
        assert_matches(got.double(), want.double(), dtype, "output")


def test_nested_report_collectors_each_keep_their_reports():
    """A collector inside another ends without taking the outer one's place: reports
    compiled after the inner block still reach the outer list."""
    with collecting_reports() as outer:
        with collecting_reports() as inner:
            torch.compile(lambda x: x.exp() + 1, backend="warpweave", dynamic=False)(torch.randn(5))
        assert len(inner) == len(outer) == 1
        torch.compile(lambda x: x.sin() * 2, backend="warpweave", dynamic=False)(torch.randn(6))
    assert len(outer) == 2 and len(inner) == 1


@pytest.mark.parametrize("tokens,vocab", [(6, 10), (15, 96), (31, 1000)])
def test_a_short_loss_on_the_gpu_schedules(tokens, vocab):
    """Cross-entropy over fewer tokens than a warp (GPT-2 and LLaMA's GPU tests,
    2026-12-03): the tokens' sum takes a thread of its own, and the gathered terms in
    the row it holds verify and match eager (the interpreter runs the GPU schedules)."""
    def fn(logits, y):
        return F.cross_entropy(logits.float(), y, ignore_index=-100)

    torch.manual_seed(tokens)
    x, y = torch.randn(tokens, vocab, dtype=torch.float64), torch.randint(0, vocab, (tokens,))
    y[0] = -100
    got = torch.compile(fn, backend=wt.backend, options=dict(strict=True, target="interp"))(x, y)
    torch.testing.assert_close(got, fn(x, y), rtol=1e-12, atol=1e-12)
