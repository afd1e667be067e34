"""Random small torch programs for the torch.compile backend's fuzz test.

`generate(seed)` builds one program as Python source — a function of a few input
tensors whose shapes broadcast against one base shape (odd sizes, size-1 axes, 0-d
tensors), made of elementwise unary and binary operations (with type promotion
between float64, float32, float16, bfloat16, int64, int32 and bool), comparisons and
`where`, reductions over random axes with and without keepdim, softmax and
log_softmax, layer_norm, views (permute, transpose, reshape, slices with steps,
narrow, expand, squeeze and unsqueeze), casts, occasional matrix products and Python
scalars. Each operation's domain is guarded in the source (`log(|x| + 0.5)`), so the
values stay finite where the operation is smooth; the discontinuous ones (sign, floor,
copysign) are shifted off 0, where a value that is 0 in exact arithmetic (the mean of
a layer_norm) has a sign decided by rounding; and off NaN, whose sign bit warpweave
does not see (the variance of one element is NaN).

The source is kept so that a failing seed prints a program one can read and rerun.
Casts go through `C(x, "float16")`: `Program.reference()` rebuilds the function with
every float dtype mapped to float64, so the same program runs as the float64
reference.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

FLOATS = ("float64", "float32", "float16", "bfloat16")
INTS = ("int64", "int32")
DTYPES = {name: getattr(torch, name) for name in FLOATS + INTS + ("bool",)}
# rank of precision, lowest first: a program's tolerance is that of its least precise float
PRECISION = ("bfloat16", "float16", "float32", "float64")

# name: (source with {a}, the dtypes it takes: "f" floats, "i" integers, "b" bools)
UNARY = {
    "exp": ("torch.exp({a}.clamp(-8, 8))", "f"),
    "log": ("torch.log({a}.abs() + 0.5)", "f"),
    "sqrt": ("torch.sqrt({a}.abs() + 0.25)", "f"),
    "rsqrt": ("torch.rsqrt({a}.abs() + 0.5)", "f"),
    "reciprocal": ("torch.reciprocal({a}.abs() + 0.5)", "f"),
    "tanh": ("torch.tanh({a})", "f"),
    "sigmoid": ("torch.sigmoid({a})", "f"),
    "sin": ("torch.sin({a})", "f"),
    "cos": ("torch.cos({a})", "f"),
    "erf": ("torch.erf({a})", "f"),
    "relu": ("torch.relu({a})", "fi"),
    "gelu": ("F.gelu({a})", "f"),
    "gelu_tanh": ("F.gelu({a}, approximate='tanh')", "f"),
    "silu": ("F.silu({a})", "f"),
    "softplus": ("F.softplus({a})", "f"),
    "leaky_relu": ("F.leaky_relu({a}, 0.1)", "f"),
    "hardtanh": ("F.hardtanh({a})", "f"),
    "square": ("{a} * {a}", "fi"),
    "neg": ("-{a}", "fi"),
    "abs": ("torch.abs({a})", "fi"),
    "affine": ("{a} * 0.75 - 0.5", "fi"),
    "scale_int": ("{a} * 3 + 1", "fi"),
    "rdiv": ("2.0 / ({a}.abs() + 1)", "fi"),
    "floor": ("torch.floor({a} * 4 + 0.375)", "f"),
    "round": ("torch.round({a} * 4 + 0.25)", "f"),
    "sign": ("torch.sign({a} - 0.375)", "fi"),
    "clamp": ("{a}.clamp(-0.5, 0.75)", "fi"),
    "pow_int": ("{a} ** 3", "fi"),
    "pow_half": ("({a}.abs() + 0.25) ** 0.5", "f"),
    "pow_frac": ("({a}.abs() + 0.25) ** -1.5", "f"),
    "cumsum": ("torch.cumsum({a}, dim=-1)", "fi"),
    # the functions warpweave compiles since the fuzz work (convert_math)
    "expm1": ("torch.expm1({a}.clamp(-8, 8))", "f"),
    "log1p": ("torch.log1p({a}.abs())", "f"),
    "log2": ("torch.log2({a}.abs() + 0.5)", "f"),
    "exp2": ("torch.exp2({a}.clamp(-12, 12))", "f"),
    "tan": ("torch.tan({a}.clamp(-1.3, 1.3))", "f"),
    "sinh": ("torch.sinh({a}.clamp(-6, 6))", "f"),
    "cosh": ("torch.cosh({a}.clamp(-6, 6))", "f"),
    "asin": ("torch.asin(torch.tanh({a}) * 0.98)", "f"),
    "acos": ("torch.acos(torch.tanh({a}) * 0.98)", "f"),
    "atan": ("torch.atan({a} * 2)", "f"),
    "asinh": ("torch.asinh({a} * 3)", "f"),
    "acosh": ("torch.acosh({a}.abs() + 1.25)", "f"),
    "atanh": ("torch.atanh(torch.tanh({a}) * 0.9)", "f"),
    "isnan": ("torch.isnan({a})", "fi"),
    "isfinite": ("torch.isfinite({a} * 1e38)", "f"),
    "signbit": ("torch.signbit(torch.where(torch.isnan({a}), 1.0, {a}) - 0.375)", "fi"),
    "not": ("~{a}", "ib"),
    "logical_not": ("torch.logical_not({a})", "fib"),
    "elu": ("F.elu({a})", "f"),
    "lgamma": ("torch.lgamma({a}.abs() + 0.5)", "f"),
}
BINARY = {
    "add": ("{a} + {b}", "fi"),
    "sub": ("{a} - {b}", "fi"),
    "mul": ("{a} * {b}", "fi"),
    "div": ("{a} / ({b}.abs() + 0.5)", "fi"),
    "maximum": ("torch.maximum({a}, {b})", "fi"),
    "minimum": ("torch.minimum({a}, {b})", "fi"),
    "pow": ("torch.pow({a}.abs() + 0.5, {b}.clamp(-2.5, 2.5))", "f"),
    "where": ("torch.where({a} > {b}, {a}, {b} * 0.5)", "fi"),
    "where_scalar": ("torch.where({a} < 0.25, {a}, 1.5)", "fi"),
    "gt": ("{a} > {b}", "fi"),
    "le": ("{a} <= {b}", "fi"),
    "eq": ("{a} == {b}", "ib"),
    "and": ("{a} & {b}", "ib"),
    "or": ("{a} | {b}", "ib"),
    "xor": ("{a} ^ {b}", "ib"),
    "logical_and": ("torch.logical_and({a}, {b})", "fib"),
    "logical_or": ("torch.logical_or({a}, {b})", "fib"),
    "atan2": ("torch.atan2({a}, {b})", "f"),
    "hypot": ("torch.hypot({a}, {b})", "f"),
    "copysign": ("torch.copysign({a}, torch.where(torch.isnan({b}), 1.0, {b}) + 0.375)", "f"),
    # rounding divisions and remainders jump where the quotient is an integer: in
    # 16-bit floats eager's rounded intermediates cross those points, so they widen
    "fmod": ("torch.fmod(W({a}), W({b}).abs() + 0.75)", "fi"),
    "remainder": ("torch.remainder(W({a}), W({b}).abs() + 0.75)", "fi"),
    # PyTorch has no derivative of floor_divide: its operands are detached
    "floor_divide": ("torch.floor_divide(W({a}).detach(), torch.as_tensor(W({b})).detach().abs() + 1)", "fi"),
    "div_trunc": ("torch.div(W({a}), W({b}).abs() + 1, rounding_mode='trunc')", "fi"),
    "div_floor": ("torch.div(W({a}), W({b}).abs() + 1, rounding_mode='floor')", "fi"),
}
REDUCE = {
    "sum": ("{a}.sum(dim={dims}, keepdim={keep})", "fi"),
    "mean": ("{a}.mean(dim={dims}, keepdim={keep})", "f"),
    "amax": ("{a}.amax(dim={dims}, keepdim={keep})", "fi"),
    "amin": ("{a}.amin(dim={dims}, keepdim={keep})", "fi"),
    "var": ("{a}.var(dim={dims}, keepdim={keep})", "f"),
    "logsumexp": ("torch.logsumexp({a}, dim={dims}, keepdim={keep})", "f"),
    "prod": ("torch.prod({a}.clamp(-1.5, 1.5), dim={dim}, keepdim={keep})", "fi"),
    # std as a norm uses it: of constant rows (a log_softmax over one element) a float32
    # std is an ulp of the data where eager's happens to be 0, and sqrt makes that 1e-7
    "std": ("torch.sqrt({a}.var(dim={dims}, keepdim={keep}) + 1e-3)", "f"),
    "max_dim": ("{a}.max(dim={dim}, keepdim={keep}).values", "fi"),
    "argmax": ("{a}.argmax(dim={dim}, keepdim={keep})", "fi"),
    "sum_all": ("{a}.sum()", "fi"),
    "mean_all": ("{a}.mean()", "f"),
    "softmax": ("torch.softmax({a}, dim={dim})", "f"),
    "log_softmax": ("torch.log_softmax({a}, dim={dim})", "f"),
}


@dataclass
class Value:
    name: str
    sample: torch.Tensor  # the program's value on the generation inputs (its shape and dtype)

    @property
    def kind(self) -> str:
        d = self.sample.dtype
        return "b" if d == torch.bool else ("f" if d.is_floating_point else "i")


@dataclass
class Program:
    seed: int
    source: str
    inputs: list[torch.Tensor]
    floats: set = field(default_factory=set)  # the float dtypes the program computes in

    def function(self, reference: bool = False):
        """The program as a function; with `reference`, every float dtype is float64."""
        def cast(x, d):
            if reference and d in FLOATS:
                d = "float64"
            return x.to(DTYPES[d])
        scope = {"torch": torch, "F": F, "C": cast, "W": _widen, "math": math}
        exec(compile(self.source, f"<fuzz program {self.seed}>", "exec"), scope)
        return scope["program"]

    @property
    def precision(self) -> str:
        return min(self.floats, key=PRECISION.index) if self.floats else "float64"


class _Generator:
    def __init__(self, seed: int, ops: set | None):
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.ops = ops
        self.values: list[Value] = []
        self.inputs: list[Value] = []
        self.lines: list[str] = []
        self.floats: set = set()
        while True:  # odd sizes and size-1 axes; now and then a longer row (vector remainders)
            self.base = tuple(int(s) for s in self.rng.choice([1, 2, 3, 5, 7, 8, 13, 33, 67],
                                                              size=self.rng.integers(1, 4)))
            if math.prod(self.base) <= 1024:
                break

    def pick(self, items):
        return items[int(self.rng.integers(len(items)))]

    def allowed(self, table):
        return sorted(k for k in table if self.ops is None or k in self.ops)

    # ------------------------------------------------------------ inputs and values
    def new_input(self, shape=None, dtype=None) -> Value:
        if shape is None:  # a broadcast-compatible piece of the base shape
            r = self.rng.random()
            if r < 0.1:
                shape = ()
            else:
                k = int(self.rng.integers(0, len(self.base) + 1))
                shape = tuple(1 if self.rng.random() < 0.25 else s for s in self.base[k:])
        if dtype is None:
            dtype = self.pick(["float32"] * 4 + ["float64", "float64", "float16", "bfloat16", "int64", "int32"])
        g = torch.Generator().manual_seed(int(self.rng.integers(1 << 31)))
        if dtype in FLOATS:
            t = torch.randn(shape, generator=g, dtype=torch.float64).to(DTYPES[dtype])
            self.floats.add(dtype)
        else:
            t = torch.randint(-5, 6, shape, generator=g).to(DTYPES[dtype])
        v = Value(f"x{len(self.inputs)}", t)
        self.inputs.append(v)
        self.values.append(v)
        return v

    def emit(self, src: str) -> Value | None:
        scope = {"torch": torch, "F": F, "C": lambda x, d: x.to(DTYPES[d]), "W": _widen, "math": math}
        scope.update({v.name: v.sample for v in self.values})
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # var of one element: NaN, as compiled
                sample = eval(src, scope)
        except (RuntimeError, TypeError, IndexError, ValueError, AttributeError):
            return None  # not defined on these operands (a dtype PyTorch refuses): try another
        if not isinstance(sample, torch.Tensor) or sample.numel() > 4096:
            return None
        v = Value(f"v{len(self.lines)}", sample)
        self.lines.append(f"    {v.name} = {src}")
        self.values.append(v)
        if sample.dtype.is_floating_point:
            self.floats.add(str(sample.dtype).removeprefix("torch."))
        return v

    def operand(self, kinds: str) -> Value | None:
        cands = [v for v in self.values if v.kind in kinds]
        if not cands:
            return None
        # prefer recent values: chains, not a forest of one-step programs
        w = np.arange(1, len(cands) + 1, dtype=float) ** 2
        return cands[int(self.rng.choice(len(cands), p=w / w.sum()))]

    def partner(self, a: Value, kinds: str) -> str:
        """A second operand broadcasting against `a`: a value, a new input or a scalar."""
        r = self.rng.random()
        if r < 0.15:
            return self.pick(["(2.5)", "(-1.25)", "(3)", "(0.5)"])
        fits = [v for v in self.values if v is not a and v.kind in kinds and _broadcasts(v.sample.shape, a.sample.shape)]
        if fits and r < 0.7:
            return self.pick(fits).name
        shape = tuple(1 if self.rng.random() < 0.3 else s for s in a.sample.shape[int(self.rng.integers(0, a.sample.ndim + 1)):])
        return self.new_input(shape, None if "f" in kinds else self.pick(list(INTS))).name

    # ------------------------------------------------------------ steps
    def step(self) -> None:
        kind = self.pick(["unary"] * 4 + ["binary"] * 4 + ["reduce"] * 2 + ["view"] * 2 + ["cast", "norm", "matmul"])
        getattr(self, "_" + kind)()

    def _unary(self):
        name = self.pick(self.allowed(UNARY))
        src, kinds = UNARY[name]
        a = self.operand(kinds)
        if a is not None:
            self.emit(src.format(a=a.name))

    def _binary(self):
        name = self.pick(self.allowed(BINARY))
        src, kinds = BINARY[name]
        a = self.operand(kinds)
        if a is None:
            return
        b = self.partner(a, kinds)
        if self.rng.random() < 0.3:
            a_name, b = b, a.name  # the scalar or the new operand first
            if not _is_number(a_name):
                self.emit(src.format(a=a_name, b=b))
                return
        self.emit(src.format(a=a.name, b=b))

    def _reduce(self):
        name = self.pick(self.allowed(REDUCE))
        src, kinds = REDUCE[name]
        a = self.operand(kinds)
        if a is None:
            return
        nd = a.sample.ndim
        dim = int(self.rng.integers(-max(nd, 1), max(nd, 1)))
        if nd == 0:
            dims = self.pick(["0", "-1", "()"]) if name in ("sum", "mean", "amax", "amin") else "0"
        else:
            k = int(self.rng.integers(1, nd + 1))
            axes = sorted(self.rng.choice(nd, size=k, replace=False).tolist())
            dims = str(tuple(int(x) - (nd if self.rng.random() < 0.3 else 0) for x in axes))
        keep = bool(self.rng.random() < 0.5)
        self.emit(src.format(a=a.name, dims=dims, dim=dim, keep=keep))

    def _norm(self):
        a = self.operand("f")
        if a is None or a.sample.ndim == 0:
            return
        k = int(self.rng.integers(1, a.sample.ndim + 1))
        shape = tuple(a.sample.shape[-k:])
        if self.rng.random() < 0.5:
            # eps 1e-3: a row of equal values (an expand) has variance 0, and its gradient
            # cancels terms of size g/sqrt(eps) to 0, leaving rounding noise of that size
            self.emit(f"F.layer_norm({a.name}, {shape}, eps=1e-3)")
        else:
            w = self.new_input(shape, str(a.sample.dtype).removeprefix("torch."))
            bias = self.new_input(shape, w.sample.dtype.__str__().removeprefix("torch."))
            self.emit(f"F.layer_norm({a.name}, {shape}, {w.name}, {bias.name}, eps=1e-3)")

    def _view(self):
        a = self.operand("fib")
        if a is None:
            return
        s, nd = a.sample.shape, a.sample.ndim
        options = ["unsqueeze", "reshape"]
        if nd >= 1:
            options += ["slice", "narrow", "flip_axes", "squeeze", "expand"]
        if nd >= 2:
            options += ["permute", "transpose", "flatten"]
        op = self.pick(options)
        if op == "unsqueeze":
            src = f"{a.name}.unsqueeze({int(self.rng.integers(-nd - 1, nd + 1))})"
        elif op == "reshape":
            src = f"{a.name}.reshape(-1)" if nd != 1 or self.rng.random() < 0.5 else f"{a.name}.reshape(1, -1, 1)"
        elif op == "slice":
            d = int(self.rng.integers(nd))
            start, step = int(self.rng.integers(0, max(1, s[d] // 2 + 1))), int(self.rng.integers(1, 3))
            src = f"{a.name}[{':, ' * d}{start}::{step}]"
        elif op == "narrow":
            d = int(self.rng.integers(nd))
            start = int(self.rng.integers(0, s[d]))
            src = f"{a.name}.narrow({d}, {start}, {int(self.rng.integers(1, s[d] - start + 1))})"
        elif op == "flip_axes":
            src = f"{a.name}.movedim(0, -1)"
        elif op == "squeeze":
            src = f"{a.name}.squeeze()"
        elif op == "expand":
            ones = [k for k, n in enumerate(s) if n == 1]
            if not ones:
                src = f"{a.name}.expand(3, *{a.name}.shape)"
            else:
                src = f"{a.name}.expand({tuple(3 if k in ones else n for k, n in enumerate(s))})"
        elif op == "permute":
            src = f"{a.name}.permute{tuple(int(x) for x in self.rng.permutation(nd))}"
        elif op == "transpose":
            i, j = self.rng.choice(nd, size=2, replace=False)
            src = f"{a.name}.transpose({int(i)}, {int(j)})"
        else:
            src = f"{a.name}.flatten({int(self.rng.integers(0, nd - 1))})"
        if self.rng.random() < 0.3:
            src = f"({src}).contiguous()"
        self.emit(src)

    def _cast(self):
        a = self.operand("fib")
        if a is not None:
            self.emit(f"C({a.name}, {self.pick(list(FLOATS) + list(INTS) + ['float32', 'bool'])!r})")

    def _matmul(self):
        a = self.operand("f")
        if a is None or a.sample.ndim not in (1, 2, 3):
            return
        k = a.sample.shape[-1]
        n = int(self.pick([1, 3, 6]))
        dtype = str(a.sample.dtype).removeprefix("torch.")
        b = self.new_input((k, n) if a.sample.ndim > 1 or self.rng.random() < 0.5 else (k,), dtype)
        self.emit(f"{a.name} @ {b.name}")

    # ------------------------------------------------------------ the program
    def build(self, steps: int) -> Program:
        for _ in range(int(self.rng.integers(1, 3))):
            self.new_input(self.base if not self.inputs else None, "float32" if not self.inputs else None)
        while len(self.lines) < steps:
            self.step()
        computed = [v for v in self.values if v.name.startswith("v")]
        outs = [computed[-1]] + [v for v in computed[:-1] if self.rng.random() < 0.25][:2]
        args = ", ".join(v.name for v in self.inputs)
        source = "\n".join([f"def program({args}):", *self.lines,
                            f"    return ({', '.join(v.name for v in outs)},)"]) + "\n"
        return Program(self.seed, source, [v.sample for v in self.inputs], self.floats)


def generate(seed: int, steps: int = 6, ops: set | None = None) -> Program:
    """The program of `seed`: `steps` operations (views and casts count), drawn from
    `ops` (names in UNARY, BINARY, REDUCE; all when None)."""
    return _Generator(seed, ops).build(steps)


def _widen(x):
    """16-bit float tensors as float32; anything else as it is."""
    if isinstance(x, torch.Tensor) and x.dtype in (torch.float16, torch.bfloat16):
        return x.float()
    return x


def _broadcasts(a, b) -> bool:
    return all(x == y or x == 1 or y == 1 for x, y in zip(reversed(a), reversed(b)))


def _is_number(s: str) -> bool:
    try:
        float(s.strip("()"))
        return True
    except ValueError:
        return False
