"""Randomly generated programs — elementwise chains, broadcasts, reductions with
keepdims, transposes, `where` — compiled for each target and compared with numpy
in float64 on fresh random inputs."""
from __future__ import annotations

import types

import numpy as np
import pytest

import warpweave as ww
from tests.utils import assert_close

NUMPY = types.SimpleNamespace(
    exp=np.exp, tanh=np.tanh, abs=np.abs, sqrt=np.sqrt, maximum=np.maximum, minimum=np.minimum,
    where=np.where, sigmoid=lambda x: 1.0 / (1.0 + np.exp(-x)))
WARPWEAVE = types.SimpleNamespace(
    exp=ww.exp, tanh=ww.tanh, abs=ww.abs, sqrt=ww.sqrt, maximum=ww.maximum, minimum=ww.minimum,
    where=ww.where, sigmoid=ww.sigmoid)

UNARY = {
    "tanh": lambda m, a: m.tanh(a),
    "sigmoid": lambda m, a: m.sigmoid(a),
    "softexp": lambda m, a: m.exp(m.tanh(a)),
    "sqrtabs": lambda m, a: m.sqrt(m.abs(a) + 1.0),
    "affine": lambda m, a: a * 0.5 - 0.25,
    "neg": lambda m, a: -a,
}
BINARY = {
    "add": lambda m, a, b: a + b,
    "sub": lambda m, a, b: a - b,
    "mul": lambda m, a, b: a * b,
    "max": lambda m, a, b: m.maximum(a, b),
    "min": lambda m, a, b: m.minimum(a, b),
    "where": lambda m, a, b: m.where(a > b, a, b * 0.5),
}


class Generated:
    """A random program over inputs of shape (R, C), (C,) and (R, 1); every step
    keeps values broadcast-compatible with (R, C) or its transpose."""

    def __init__(self, rng: np.random.Generator, steps: int):
        self.steps = []
        shapes = ["rc", "c", "r1"]  # symbolic shapes of live values
        for _ in range(steps):
            kind = rng.choice(["unary", "binary", "binary", "reduce", "transpose"])
            n = len(shapes)
            if kind == "unary":
                a = int(rng.integers(n))
                self.steps.append(("unary", str(rng.choice(sorted(UNARY))), a))
                shapes.append(shapes[a])
            elif kind == "binary":
                a = int(rng.integers(n))
                same = [k for k, s in enumerate(shapes) if _compatible(s, shapes[a])]
                b = int(rng.choice(same))
                self.steps.append(("binary", str(rng.choice(sorted(BINARY))), a, b))
                shapes.append(_broadcast(shapes[a], shapes[b]))
            elif kind == "reduce":
                cands = [k for k, s in enumerate(shapes) if s in ("rc", "cr")]
                a = int(rng.choice(cands))
                axis = int(rng.choice([0, 1, -1]))
                fn = str(rng.choice(["sum", "max", "min", "mean"]))
                self.steps.append(("reduce", fn, a, axis))
                s = shapes[a]
                kept = list(s)
                kept[axis] = "1"
                shapes.append("".join(kept))
            else:
                cands = [k for k, s in enumerate(shapes) if s in ("rc", "cr")]
                a = int(rng.choice(cands))
                self.steps.append(("transpose", a))
                shapes.append(shapes[a][::-1])
        self.outputs = [len(shapes) - 1] + ([int(rng.integers(3, len(shapes)))] if len(shapes) > 4 else [])

    def run(self, m, x, y, z):
        vals = [x, y, z]
        for step in self.steps:
            if step[0] == "unary":
                vals.append(UNARY[step[1]](m, vals[step[2]]))
            elif step[0] == "binary":
                vals.append(BINARY[step[1]](m, vals[step[2]], vals[step[3]]))
            elif step[0] == "reduce":
                vals.append(getattr(vals[step[2]], step[1])(axis=step[3], keepdims=True))
            else:
                vals.append(vals[step[1]].T)
        return tuple(vals[k] for k in self.outputs)

    def __repr__(self):
        return f"Generated({self.steps}, outputs={self.outputs})"


def _compatible(s, t):
    dims = {"rc": ("r", "c"), "cr": ("c", "r"), "c": (None, "c"), "r1": ("r", None), "1c": (None, "c"),
            "r": (None, "r"), "11": (None, None), "c1": ("c", None), "1r": (None, "r")}
    a, b = dims[s], dims[t]
    ok = all(p is None or q is None or p == q for p, q in zip(a, b))
    return ok and _broadcast(s, t) in dims  # e.g. r1 with 1r would be (R, R): not tracked


def _broadcast(s, t):
    dims = {"rc": ("r", "c"), "cr": ("c", "r"), "c": ("1", "c"), "r1": ("r", "1"), "1c": ("1", "c"),
            "r": ("1", "r"), "11": ("1", "1"), "c1": ("c", "1"), "1r": ("1", "r")}
    out = "".join(p if p != "1" else q for p, q in zip(dims[s], dims[t]))
    return out


@pytest.mark.parametrize("target", ["interp", "cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("seed", range(12))
def test_random_program(target, seed):
    rng = np.random.default_rng([seed, np.random.SeedSequence().entropy % (1 << 32)])
    program = Generated(rng, steps=int(rng.integers(3, 9)))
    R, C = (int(v) for v in rng.choice([1, 3, 17, 33, 64], size=2))
    x = rng.uniform(-2, 2, (R, C)).astype(np.float32)
    y = rng.uniform(-2, 2, (C,)).astype(np.float32)
    z = rng.uniform(-2, 2, (R, 1)).astype(np.float32)

    def fn(a, b, c):
        return program.run(WARPWEAVE, a, b, c)

    got = ww.jit(fn, target=target)(x, y, z)
    ref = program.run(NUMPY, x.astype(np.float64), y.astype(np.float64), z.astype(np.float64))
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g.dtype == np.float32, program
        assert_close(g, r, "float32", scale=20.0, what=repr(program))
