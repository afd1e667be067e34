"""The pieces of the torch frontend: ATen converters, graph splitting, layouts, options,
and the trace helpers they use (full, arange, as_strided)."""
from __future__ import annotations

import numpy as np
import pytest

import warpweave as ww
from warpweave.frontend import constructors as tr
from warpweave.errors import DTypeError, OptionError, ShapeError, UnsupportedError

torch = pytest.importorskip(
    "torch", reason="the torch.compile backend needs PyTorch (.ci/run installs torch==2.13.0, the CPU build)")
from torch.fx.experimental.proxy_tensor import make_fx  # noqa: E402

from warpweave.frontend.torch.backend import BackendOptions, decompositions  # noqa: E402
from warpweave.frontend.torch.convert import node_unsupported_reason, ww_dtype  # noqa: E402
from warpweave.frontend.torch.partition import (ViewChain, WarpweaveCall, _Input, _Output,  # noqa: E402
                                                split_graph)

TOLERANCE = {torch.float32: (1e-5, 1e-6), torch.float16: (2e-3, 1e-3), torch.bfloat16: (1.6e-2, 1e-2),
             torch.float64: (1e-12, 1e-12)}


# ----------------------------------------------------------------------------- trace helpers

def test_full_arange_and_as_strided_in_a_trace():
    @ww.jit(target="cpu")
    def f(x):
        window = x.as_strided((3, 2), (1, 3), 1)
        return window + tr.full((3, 2), 0.5, "float32"), tr.arange(2, 9, 3) * 2, \
            tr.arange(0.5, 2.0, 0.5, dtype="float32") + x[0]

    x = np.random.default_rng().standard_normal(12).astype(np.float32)
    window, ints, floats = f(x)
    np.testing.assert_array_equal(window, np.lib.stride_tricks.as_strided(x[1:], (3, 2), (4, 12)) + 0.5)
    np.testing.assert_array_equal(ints, np.arange(2, 9, 3) * 2)
    assert ints.dtype == np.int64
    np.testing.assert_allclose(floats, np.arange(0.5, 2.0, 0.5, dtype=np.float32) + x[0])


def test_trace_helper_errors():
    with pytest.raises(UnsupportedError, match="inside a function being traced"):
        tr.full((2,), 1.0, "float32")
    with pytest.raises(ShapeError, match="reach past"):
        ww.jit(lambda x: x.as_strided((3, 2), (2, 2)), target="cpu").lower(np.zeros(5, np.float32))
    with pytest.raises(ShapeError, match="step must not be zero"):
        ww.jit(lambda x: x + tr.arange(0, 4, 0), target="cpu").lower(np.zeros(4, np.float32))


# ----------------------------------------------------------------------------- ATen graphs

def aten_graph(fn, *args):
    """fn traced to a core-ATen graph (with the backend's decompositions) on fake tensors."""
    return make_fx(fn, tracing_mode="fake", decomposition_table=decompositions())(*args)


def split_and_run(fn, *args, target="cpu"):
    gm = aten_graph(fn, *args)
    split, report = split_graph(gm, "test", target)
    return split(*args), fn(*args), report


def assert_same(got, want):
    for g, w in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want)):
        assert g.dtype == w.dtype and g.shape == w.shape, (g, w)
        rtol, atol = TOLERANCE.get(w.dtype, (0, 0))
        torch.testing.assert_close(g, w, rtol=rtol, atol=atol, equal_nan=True)


def _pointwise(x, y):
    return (x + y * 2, x - 1.5, x * y, x / y, torch.exp(x), torch.log(y.abs() + 1), torch.tanh(x),
            torch.sqrt(y.abs()), torch.rsqrt(y.abs() + 1), torch.sin(x), torch.cos(x), torch.erf(x),
            torch.sigmoid(x), torch.abs(x), -x, torch.reciprocal(y), x ** 2, y.abs() ** 0.5,
            y.abs() ** 3.5, torch.maximum(x, y), torch.minimum(x, y), torch.clamp(x, -0.5, 0.5),
            torch.relu(x), torch.nn.functional.gelu(x), torch.nn.functional.gelu(x, approximate="tanh"),
            torch.nn.functional.silu(x), torch.nn.functional.leaky_relu(x, 0.2),
            torch.nn.functional.hardtanh(x), x.to(torch.float32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_pointwise_ops_match_pytorch(dtype):
    x, y = torch.randn(4, 6, dtype=dtype), torch.randn(6, dtype=dtype) + 3
    got, want, report = split_and_run(_pointwise, x, y)
    assert_same(got, want)
    assert len(report.programs) == 1 and not report.fallbacks, str(report)


def test_comparisons_logic_where_and_promotion():
    def fn(i, x, m, s):
        return (i + 1.5, i / 4, x * s, i * x, x > s, i <= 2, i == i.flip(0), x != 0, m & (i > 1),
                m | (x < 0), m ^ m.flip(0), ~m, torch.logical_not(x), torch.logical_and(i, x),
                torch.where(m, x, -1.0), torch.where(m, i, 7), x.masked_fill(m, float("-inf")),
                m.to(torch.float16), x.to(torch.int32), x.to(torch.bool), i.to(torch.float64))

    i = torch.arange(-3, 5, dtype=torch.int32)
    x, m, s = torch.randn(8) * 3, torch.rand(8) > 0.5, torch.tensor(0.25, dtype=torch.float64)
    got, want, report = split_and_run(fn, i, x, m, s)
    assert_same(got, want)
    assert {f.op for f in report.fallbacks} <= {"aten.flip.default"}, str(report)


def test_reductions_views_and_constants():
    def fn(x, b):
        return (x.sum(), x.sum((0, 2), keepdim=True), x.mean(-1), x.amax(1), x.amin((0, 1)), x.max(), x.min(),
                x.var(-1), x.var(0, correction=0), x.std(1), (x > 0).sum(-1), x.logsumexp(-1),
                x.softmax(-1), x.log_softmax(1), torch.nn.functional.layer_norm(x, (5,), b, b),
                x.permute(2, 0, 1) * 2, x[:, 1:3, ::2] + 1, x[1].t() - 1, x.unsqueeze(1).expand(3, 2, 4, 5) * b,
                x.reshape(12, 5) / 3, *(s + 0 for s in x.split([1, 3], dim=1)), x.unbind(0)[2] * 1,
                torch.full((2, 3), 7.0) + x[0, 0, 0], torch.arange(5) * b, torch.zeros_like(b) + b)

    x, b = torch.randn(3, 4, 5), torch.randn(5)
    got, want, report = split_and_run(fn, x, b)
    assert_same(got, want)
    assert not report.fallbacks, str(report)


def test_zero_dim_and_noncontiguous_inputs():
    def fn(x, s, t):
        return x * s + t, (x * s).sum(), s + 1

    x, s, t = torch.randn(4, 6).t(), torch.tensor(2.5), torch.randn(8)[::2].expand(6, 4)
    got, want, report = split_and_run(fn, x, s, t)
    assert_same(got, want)
    assert len(report.programs) == 1 and not report.fallbacks


@pytest.mark.usefixtures("products_in_torch")
def test_fallback_reasons():
    def fn(x, w, q):
        return torch.floor(x @ w), torch.topk(x, 2).values, torch.special.zeta(x, x), q * 2

    x, w, q = torch.randn(4, 4), torch.randn(4, 4), torch.ones(4, dtype=torch.int8)
    gm = aten_graph(fn, x, w, q)
    reasons = {n.target.__name__: node_unsupported_reason(n) for n in gm.graph.nodes
               if n.op == "call_function"}
    assert "matrix products" in reasons["mm.default"]
    assert reasons["floor.default"] is None and "no warpweave conversion" in reasons["special_zeta.default"]
    assert "top-k" in reasons["topk.default"]
    assert "torch.int8 is not a warpweave dtype" in reasons["mul.Tensor"]
    split, report = split_graph(gm, "test", "cpu")
    assert_same(split(x, w, q), fn(x, w, q))
    assert {f.op for f in report.fallbacks} == {"aten.mm.default", "aten.topk.default",
                                                 "aten.special_zeta.default", "aten.mul.Tensor"}
    assert report.summary().endswith("fell back to PyTorch: aten.mm.default, "
                                     "aten.mul.Tensor, aten.special_zeta.default, aten.topk.default")
    assert "fell back: aten.mm.default x1 (mm): matrix products" in str(report)


@pytest.mark.usefixtures("products_in_torch")
def test_groups_split_around_matrix_products():
    def fn(x, w):
        h = torch.relu(x * 2) @ w
        return torch.tanh(h) + 1

    x, w = torch.randn(8, 16), torch.randn(16, 4)
    got, want, report = split_and_run(fn, x, w)
    assert_same(got, want)
    assert len(report.programs) == 2
    assert [f.op for f in report.fallbacks] == ["aten.mm.default"]


def test_interp_target_and_a_target_that_does_not_fit():
    def fn(x):
        return torch.exp(x) - 1

    x = torch.randn(3, 3)
    got, want, report = split_and_run(fn, x, target="interp")
    assert_same(got, want)
    assert [p.target for p in report.programs] == ["interp"]
    got, want, report = split_and_run(fn, x, target="cuda")
    assert_same(got, want)
    assert not report.programs and "cannot run on warpweave target 'cuda'" in report.fallbacks[0].reason


@pytest.mark.usefixtures("products_in_torch")
def test_concatenation_compiles_with_its_producers():
    """The q/k/v gradients of attention: three transposed products concatenated (one
    program with the transposes), and cat's dtype promotion and empty 1-D pieces."""
    def fn(a, b, c, w, h, e):
        q, k, v = ((x @ w).transpose(1, 2).reshape(2, 5, 12) for x in (a, b, c))
        return torch.cat([q, k, v], 2) @ torch.ones(36, 3), torch.cat([h, w[0], e]), torch.cat([a[0], e])

    a, b, c = (torch.randn(2, 3, 5, 4) for _ in range(3))
    w, h, e = torch.randn(4, 4), torch.randn(3, dtype=torch.bfloat16), torch.randn(0)
    got, want, report = split_and_run(fn, a, b, c, w, h, e)
    assert_same(got, want)
    assert sum(p.ops.count("aten.cat.default") for p in report.programs) == 3, str(report)
    assert {f.op for f in report.fallbacks} == {"aten.mm.default"}, str(report)
    (qkv,) = [p for p in report.programs if "aten.clone.default" in p.ops]
    assert "aten.cat.default" in qkv.ops, str(report)


@pytest.mark.usefixtures("products_in_torch")
def test_views_left_to_pytorch_are_single_reinterpretations():
    def fn(x, w, u):
        h = (x * 2).view(4, 3, 8).transpose(0, 1).reshape(3, 32)  # a copy: warpweave's
        return h.view(3, 4, 8).permute(2, 0, 1)[1:].unsqueeze(0) @ w, x.t()[::2] @ u

    x, w, u = torch.randn(12, 8), torch.randn(4, 5), torch.randn(12, 5)
    gm = aten_graph(fn, x, w, u)
    split, report = split_graph(gm, "test", "cpu")
    assert_same(split(x, w, u), fn(x, w, u))
    views = [n for n in split.graph.nodes if n.op == "call_function" and n.target.__class__ is ViewChain]
    left = [n.target for n in split.graph.nodes if n.op == "call_function"
            and not isinstance(n.target, (ViewChain, WarpweaveCall))]
    assert views and sorted(t.__name__ for t in left) == ["bmm.default", "mm.default"], left
    assert max(len(n.target.ops) for n in views) >= 3  # view, permute, slice, unsqueeze: one call


def test_view_chains_replay_where_the_base_layout_differs():
    gm = aten_graph(lambda x: x.t()[1:].unsqueeze(0) @ torch.ones(2, 5), torch.randn(2, 4))
    node = next(n for n in gm.graph.nodes if n.op == "call_function" and "unsqueeze" in str(n.target))
    base, chain = ViewChain.of(node)
    assert base.op == "placeholder" and len(chain.ops) == 3
    x = torch.randn(2, 4)
    made = chain(x)
    assert made.data_ptr() == x[:, 1:].data_ptr() and torch.equal(made, x.t()[1:].unsqueeze(0))
    other = torch.randn(4, 2).t()  # the same shape in another layout: the views are replayed
    assert torch.equal(chain(other), other.t()[1:].unsqueeze(0))


@pytest.mark.usefixtures("products_in_torch")
def test_outputs_that_view_an_input_are_views_of_the_argument():
    """A split's piece that a matrix product reads is not copied by the program that
    computes from the other pieces (as the q/k/v split of an attention block)."""
    def fn(h, w):
        q, k, v = (h @ w).split(4, -1)
        return (q * k).softmax(-1), v.transpose(0, 1) @ h

    h, w = torch.randn(6, 5), torch.randn(5, 12)
    gm = aten_graph(fn, h, w)
    split, report = split_graph(gm, "test", "cpu")
    assert_same(split(h, w), fn(h, w))
    (call,) = [n.target for n in split.graph.nodes if isinstance(n.target, WarpweaveCall)]
    assert list(call.aliases) and len(call.program.graph.outputs) == 1
    made = call(torch.randn(6, 12))
    assert made[list(call.aliases)[0]].stride() == (12, 1)


@pytest.mark.usefixtures("products_in_torch")
def test_views_of_computed_tensors_keep_their_layout_between_programs():
    """An expanded view of a computed tensor, read by the group that computes it and
    by a later program, comes back as that expanded view of the computed tensor (it came
    back contiguous, and the later program copied it into overlapping memory)."""
    def fn(x, w):
        e = torch.sin(x).unsqueeze(0).expand(3, 8, 8)
        return torch.bmm(e * 2, w) + e, e

    x, w = torch.randn(8, 8), torch.randn(3, 8, 8)
    got, want, report = split_and_run(fn, x, w)
    assert_same(got, want)
    assert got[1].stride() == want[1].stride() == (0, 8, 1)
    assert len(report.programs) == 2 and {f.op for f in report.fallbacks} == {"aten.bmm.default"}


def test_arguments_a_program_cannot_take_run_in_pytorch(monkeypatch):
    """A program compiled for an expanded input, given a tensor of other strides (it
    cannot copy into overlapping memory) or another dtype, runs its nodes in PyTorch with
    one warning, recorded in the report; strict mode raises."""
    x = torch.randn(4, 1).expand(4, 6)
    gm = aten_graph(lambda v: torch.exp(v) * 2, x)
    split, report = split_graph(gm, "test", "cpu", strict=False)
    (call,) = [n.target for n in split.graph.nodes if isinstance(n.target, WarpweaveCall)]
    dense = torch.randn(4, 6)
    with pytest.warns(ww.FallbackWarning, match="overlapping layout") as caught:
        torch.testing.assert_close(split(dense), torch.exp(dense) * 2)
        torch.testing.assert_close(split(dense), torch.exp(dense) * 2)
    assert len(caught) == 1
    wide = torch.randn(4, 1, dtype=torch.float64).expand(4, 6)
    with pytest.warns(ww.FallbackWarning, match="dtype"):
        torch.testing.assert_close(split(wide), torch.exp(wide) * 2)
    assert {f.op for f in report.fallbacks} == {"aten.exp.default", "aten.mul.Tensor"}
    assert all(f.node == call.__name__ and "at run time" in f.reason for f in report.fallbacks)
    call.strict = True
    with pytest.raises(ww.FallbackError, match="overlapping layout"):
        split(dense)


# ----------------------------------------------------------------------------- layouts, options

def test_input_layouts():
    dense = _Input.of(torch.empty(3, 4))
    assert dense.dense and dense.spec == ((3, 4), ww.float32)
    strided = _Input.of(torch.empty(4, 6)[:, ::2].t())
    assert not strided.dense and strided.spec == ((1 + 2 * 2 + 3 * 6,), ww.float32)
    x = torch.randn(4, 6)[:, ::2].t()
    flat = strided.prepare(x)
    assert flat.shape == (strided.span,) and flat.data_ptr() == x.data_ptr()
    other = torch.randn(3, 4)  # the strides compiled for do not match: a copy with them
    assert torch.equal(strided.prepare(other).as_strided(strided.shape, strided.strides), other)
    expanded = _Input.of(torch.empty(4).expand(3, 4))  # never a copy into overlapping memory
    assert expanded.prepare(torch.randn(3, 4)) is None
    assert expanded.prepare(torch.randn(4).expand(3, 4)) is not None


def test_output_layouts():
    assert _Output.of(torch.empty(3, 4)).perm is None
    permuted = torch.empty(2, 3, 4).permute(2, 0, 1)
    layout = _Output.of(permuted)
    assert layout.perm == (1, 2, 0)
    assert layout.finish(torch.empty(2, 3, 4)).stride() == permuted.stride()
    gapped = _Output.of(torch.empty(3, 8)[:, ::2])
    assert gapped.strides == (8, 2) and gapped.finish(torch.ones(3, 4)).stride() == (8, 2)
    with pytest.raises(UnsupportedError, match="overlapping layout"):  # only as a view it computes
        _Output.of(torch.empty(4).expand(3, 4))


def test_backend_options():
    with ww.options(strict=False):
        assert BackendOptions.parse(None, {"target": "cpu"}) == BackendOptions(target="cpu", strict=False)
        assert BackendOptions.parse(None, {"strict": True}).strict is True
    with ww.options(strict=True):
        assert BackendOptions.parse(None, None).strict is True
    assert BackendOptions.parse("max-autotune", None).mode == "max-autotune"
    with pytest.raises(OptionError, match="unknown warpweave target"):
        BackendOptions.parse(None, {"target": "tpu"})
    with pytest.raises(OptionError, match="disagree"):
        BackendOptions.parse("default", {"mode": "reduce-overhead"})
    with pytest.raises(OptionError, match=r"known: \['dump_dir', 'mode', 'strict', 'target'\]"):
        BackendOptions.parse(None, {"fast": True})


def test_dtype_map():
    assert ww_dtype(torch.bfloat16) == ww.bfloat16 and ww_dtype(torch.bool) == ww.bool_
    with pytest.raises(DTypeError, match="torch.complex64 is not a warpweave dtype"):
        ww_dtype(torch.complex64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_ops_inductor_keeps_whole(dtype):
    """What the backend's decompositions leave whole (as Inductor does) converts."""
    def fn(x, y, w, g, s, r):
        return (torch.nn.functional.silu(x), torch.nn.functional.glu(x, -1), torch.addcmul(x, y, x, value=0.5),
                torch.addcdiv(x, y, y.abs() + 1, value=-2), torch.lerp(x, y, 0.3), torch.lerp(x, y, 0.7),
                torch.lerp(x, y, w), torch.clamp_min(x, 0.1), x.sum(),
                torch.ops.aten._softmax_backward_data(g, x.softmax(-1), -1, x.dtype),
                torch.slice_scatter(x, s, 1, 2, 5), torch.select_scatter(x, r, 1, -1))

    x, y, w, g = (torch.randn(4, 6, dtype=dtype) for _ in range(4))
    s, r = torch.randn(4, 3, dtype=dtype), torch.randn(4, dtype=dtype)
    got, want, report = split_and_run(fn, x, y, w, g, s, r)
    assert_same(got, want)
    assert len(report.programs) == 1 and not report.fallbacks, str(report)


def test_trial_conversions_are_remembered_per_signature_and_options(monkeypatch):
    """Nodes repeated layer after layer are traced once; another signature or other
    options (which converters read) trace again, and a failure is never remembered."""
    from warpweave.frontend.torch import convert
    from warpweave.options import options as scoped

    gm = aten_graph(lambda a, b, c: ((a @ b).relu() @ c).relu(), torch.randn(4, 8), torch.randn(8, 8),
                    torch.randn(8, 8))
    mms = [n for n in gm.graph.nodes if n.op == "call_function" and n.target is torch.ops.aten.mm.default]
    traced = []
    real = convert._trial_conversion
    monkeypatch.setattr(convert, "_trial_conversion", lambda *a: traced.append(a[0]) or real(*a))
    monkeypatch.setattr(convert, "_CONVERTED", set())
    with scoped(contractions="warpweave"):
        assert [node_unsupported_reason(n) for n in mms] == [None, None]
        assert traced == mms[:1]
    with scoped(contractions="torch"):
        assert all("contractions='torch'" in node_unsupported_reason(n) for n in mms)
        assert all("contractions='torch'" in node_unsupported_reason(n) for n in mms)
    assert len(traced) == 1 + 2 * 2  # failures are traced every time


@pytest.mark.parametrize("case", ["repeat", "repeat new axes", "slice_scatter step 2", "slice_scatter negative",
                                  "slice_scatter empty", "select_scatter"])
def test_tiling_and_strided_slice_scatters_compile(case):
    """repeat (BLOOM's alibi) and slice_scatter with a step (GPT-J's rotary every two
    channels): each output element reads one input element by its position."""
    x, y = torch.randn(6, 9, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    fn, args = {
        "repeat": (lambda x: x.repeat(2, 3) * 2, (x,)),
        "repeat new axes": (lambda x: x.repeat(2, 1, 3) + 1, (x,)),
        "slice_scatter step 2": (lambda x, y: torch.slice_scatter(x, y, dim=1, start=1, step=2) * 1.5, (x, y)),
        "slice_scatter negative": (lambda x, y: torch.slice_scatter(x, x[:2] * 3, dim=0, start=-6, end=-1, step=3)
                                   - 1, (x, y)),
        "slice_scatter empty": (lambda x, y: torch.slice_scatter(x, y[:, :0], dim=1, start=9, step=2) + 1, (x, y)),
        "select_scatter": (lambda x, y: torch.select_scatter(x, y[:, 0], 1, -2) + 1, (x, y)),
    }[case]
    got, want, report = split_and_run(fn, *args)
    assert not report.fallbacks, report.fallbacks
    assert_same(got, want)


@pytest.mark.parametrize("target", ["cpu", "interp"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.int64])
def test_rounding_and_sign(target, dtype):
    """floor, ceil, trunc, round (half to even), sign and division rounded toward zero
    (DeBERTa's relative positions): PyTorch's values exactly, halves and signed zeros
    included; integers come back as they are."""
    x = torch.randn(7, 33, dtype=torch.float64) * 6
    x[0, :9] = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, -0.0, 3.0, float("nan")])
    x = x.to(dtype) if dtype.is_floating_point else x.round().to(dtype)
    y = torch.randn(7, 33, dtype=torch.float64).abs().add(0.5).to(dtype) if dtype.is_floating_point \
        else torch.full((7, 33), 3, dtype=dtype)

    def fn(x, y):
        out = (torch.floor(x), torch.ceil(x), torch.trunc(x), torch.round(x), torch.sign(x) * 2)
        return out + ((torch.div(x, y, rounding_mode="trunc"),) if dtype.is_floating_point else ())
    got, want, report = split_and_run(fn, x, y, target=target)
    assert not report.fallbacks, report.fallbacks
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        torch.testing.assert_close(g, w, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("target", ["cpu", "interp"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64])
def test_argmax_argmin_and_max_with_indices(target, dtype):
    """The first extreme position along an axis (or of all elements), ties and NaNs as
    PyTorch resolves them, with values where max/min return both."""
    x = (torch.randn(5, 7, 9, dtype=torch.float64) * 4).to(dtype)
    x[2, :, 4] = x[2, 0, 4]  # a tie along axis 1
    x[0, 0, :] = x[0, 0, 0]  # a tie along axis 2
    if dtype.is_floating_point:
        x[1, 2, 3] = float("nan")

    def fn(x):
        return (torch.argmax(x, 1), torch.argmin(x, -1, keepdim=True), torch.argmax(x), torch.argmin(x, keepdim=True),
                torch.max(x, 2), torch.min(x, 0, keepdim=True))
    got, want, report = split_and_run(fn, x, target=target)
    assert not report.fallbacks, report.fallbacks
    for g, w in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want)):
        assert g.dtype == w.dtype and g.shape == w.shape
        torch.testing.assert_close(g, w, rtol=0, atol=0, equal_nan=True)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_argmax_and_rounding_on_the_gpu(torch_cuda, dtype):
    """argmax over a vocabulary-wide row (ties and NaN included) and the rounding
    instructions, on the GPU against PyTorch's own CUDA kernels."""
    x = (torch.randn(37, 50257, device=torch_cuda, dtype=torch.float64) * 4).to(dtype)
    x[3, 100:200] = x[3].max() + 1  # a tie
    x[5, 7] = float("nan")

    def fn(x):
        return (torch.argmax(x, -1), torch.max(x, 0), torch.floor(x), torch.ceil(x), torch.trunc(x),
                torch.round(x), torch.sign(x))
    got, want, report = split_and_run(fn, x, target="cuda")
    assert report.programs and not report.fallbacks, report.fallbacks
    for g, w in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want)):
        assert g.dtype == w.dtype and g.shape == w.shape
        torch.testing.assert_close(g, w, rtol=0, atol=0, equal_nan=True)
