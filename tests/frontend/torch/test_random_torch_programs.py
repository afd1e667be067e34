"""Random torch programs (`fuzz_programs.generate`) compiled with
`torch.compile(fn, backend="warpweave")`, strict: outputs and the gradients of the
float inputs must match the program run eagerly in float64, and nothing may fall
back to PyTorch.

The allowance of an element is the tolerance of the program's least precise float
dtype plus four times eager PyTorch's own distance from the float64 reference there:
a compiled program need not be closer to float64 than eager is in the same dtypes
(a `floor` or a comparison that flips between dtypes, float16 rounding amplified by
an `exp`), but it must not be much further. Run more seeds with
WARPWEAVE_FUZZ_SEEDS=0:500, longer programs with WARPWEAVE_FUZZ_STEPS=12 (a failure
prints the program's source).
"""
from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch", reason="the torch.compile backend needs PyTorch")

from tests.frontend.torch.fuzz_programs import DTYPES, generate  # noqa: E402
from warpweave.frontend.torch.backend import collecting_reports  # noqa: E402

RTOL = {"float64": 1e-10, "float32": 2e-6, "float16": 1e-3, "bfloat16": 8e-3}


def _seeds():
    spec = os.environ.get("WARPWEAVE_FUZZ_SEEDS", "0:20")
    lo, hi = (int(x) for x in spec.split(":"))
    return range(lo, hi)


def _loss(outputs, seed):
    """A weighted sum of the float outputs, in float64, with weights fixed by the seed."""
    g = torch.Generator().manual_seed(seed)
    total = None
    for o in outputs:
        w = torch.randn(o.shape, generator=g, dtype=torch.float64)
        if o.dtype.is_floating_point and o.requires_grad:
            term = (o.double() * w).sum()
            total = term if total is None else total + term
    return total


def _run(fn, inputs, seed):
    """Outputs and the gradients of the float inputs (None where no output needs them)."""
    outputs = fn(*inputs)
    leaves = [x for x in inputs if x.requires_grad]
    loss = _loss(outputs, seed)
    if loss is None or not leaves:
        return [o.detach() for o in outputs], []
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    grads = [torch.zeros_like(x) if gr is None else gr for x, gr in zip(leaves, grads)]
    return [o.detach() for o in outputs], grads


def _scale(tensors) -> float:
    """The largest finite magnitude among `tensors` (1 if none)."""
    finite = [t.detach().double()[torch.isfinite(t)].abs() for t in tensors]
    finite = [t for t in finite if t.numel()]
    return max(t.max().item() for t in finite) if finite else 1.0


def _check(what, got, eager, ref, rtol, source, scale=None):
    """`scale`: the magnitude an absolute error is measured against (the output's own
    largest value; for gradients, the largest of all gradients: a gradient summed over
    a broadcast cancels to about 0 with an error of the terms' size)."""
    assert got.shape == eager.shape and got.dtype == eager.dtype, \
        f"{what}: {got.dtype}{tuple(got.shape)} where eager gives {eager.dtype}{tuple(eager.shape)}\n{source}"
    g, e, r = (t.detach().to(torch.float64) for t in (got, eager, ref))
    if not g.numel():
        return
    scale = _scale([r]) if scale is None else scale
    allowance = rtol * (r.abs() + max(scale, 1e-3)) + 4 * (e - r).abs()
    same_special = (torch.isnan(g) & (torch.isnan(e) | torch.isnan(r))) | ((g == e) | (g == r))
    bad = ~(((g - r).abs() <= allowance) | same_special)
    if bad.any():
        k = bad.nonzero()[0].tolist()
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {g.numel()} elements differ; at {k}: compiled "
            f"{g[tuple(k)].item()!r}, eager {e[tuple(k)].item()!r}, float64 {r[tuple(k)].item()!r} "
            f"(rtol {rtol})\n{source}")


@pytest.mark.parametrize("seed", _seeds())
def test_random_torch_program(seed):
    program = generate(seed, steps=int(os.environ.get("WARPWEAVE_FUZZ_STEPS", "6")))
    source = program.source
    fn, reference = program.function(), program.function(reference=True)

    def leaves(dtype_of=None):
        out = []
        for x in program.inputs:
            y = x.detach().clone()
            if y.is_floating_point():
                y = y.to(dtype_of or y.dtype).requires_grad_()
            out.append(y)
        return out

    torch._dynamo.reset()
    with collecting_reports() as reports:
        got, got_grads = _run(torch.compile(fn, backend="warpweave"), leaves(), seed)
    eager, eager_grads = _run(fn, leaves(), seed)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # an integer times a Python float: float64 too
    try:
        ref, ref_grads = _run(reference, leaves(torch.float64), seed)
    finally:
        torch.set_default_dtype(default)
    fell = [f"{f.op}: {f.reason}" for r in reports for f in r.fallbacks]
    assert not fell, f"fell back to PyTorch: {fell}\n{source}"
    rtol = RTOL[program.precision]
    assert len(got) == len(eager) == len(ref)
    for k, (g, e, r) in enumerate(zip(got, eager, ref)):
        _check(f"seed {seed} output {k}", g, e, r, rtol, source)
    assert len(got_grads) == len(eager_grads) == len(ref_grads), source
    scale = _scale(ref_grads)
    for k, (g, e, r) in enumerate(zip(got_grads, eager_grads, ref_grads)):
        _check(f"seed {seed} gradient {k}", g, e, r, rtol, source, scale)


def test_generator_is_deterministic_and_covers_the_dtypes():
    programs = [generate(s) for s in range(40)]
    assert [p.source for p in programs[:5]] == [generate(s).source for s in range(5)]
    seen = {str(x.dtype).removeprefix("torch.") for p in programs for x in p.inputs}
    assert {"float32", "float64", "float16", "bfloat16", "int64"} <= seen <= set(DTYPES)
    assert any(x.ndim == 0 for p in programs for x in p.inputs)
