"""Aligned matrix products for the ones PyTorch runs: pad, multiply, slice.

cuBLAS picks slow kernels when a 16-bit matrix's leading dimension is not a multiple
of 16 bytes: GPT-2's logits, [8192, 768] @ [768, 50257] in bfloat16, take 6.7 ms on
the H200 against 0.9 ms for the same product with 50264 columns. Before a graph is
split, `pad_matmuls` rewrites each CUDA `mm`, `addmm` and `bmm` with a misaligned
extent into the product of zero-padded operands followed by a slice of the result —
where a measurement on the device, once per shape, layout and dtype, finds the
padded form (its copies included) faster. Zero padding changes no value of the
sliced result. An operand is padded in its own memory order (a transposed operand
through its base, so the copy never transposes: GPT-2's logits gradient, [8192,
50257], took 2.85 ms to pad transposed on the H200), and the products that read one
tensor share its padded copy. The result is a strided view; its consumers read it in place, and
every value downstream is traced again, since a view of the result now has the
padded strides (a graph with a consumer that cannot take them is left unpadded).
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
from torch._guards import detect_fake_mode
from torch._subclasses.fake_tensor import unset_fake_temporarily
from torch.fx.passes.fake_tensor_prop import FakeTensorProp

aten = torch.ops.aten

ALIGN_BYTES = 16
MIN_FLOPS = 1 << 27  # smaller products cost less than a padding copy's launch
SPEED_UP = 1.1       # padding must win by this much to be taken

Signature = tuple  # (op name, ((shape, stride), ...) of the matrix operands, dtype, bias shape, device)


def _matrices(node: torch.fx.Node) -> tuple[int, int]:
    """Positions of the two matrix operands of `node` (mm, bmm: 0, 1; addmm: 1, 2)."""
    return (1, 2) if node.target is aten.addmm.default else (0, 1)


def _extents(a: torch.Tensor, b: torch.Tensor) -> tuple[int, int, int]:
    return a.shape[-2], b.shape[-1], a.shape[-1]


def padding(m: int, n: int, k: int, dtype: torch.dtype) -> tuple[int, int, int]:
    """Rows to add to each of m, n and k so that every extent is a whole number of
    ALIGN_BYTES (the alignment cuBLAS's fast kernels need for any operand layout)."""
    align = max(1, ALIGN_BYTES // torch.empty((), dtype=dtype).element_size())
    return tuple(-x % align for x in (m, n, k))


def column_major(x: torch.Tensor) -> bool:
    """Whether x's last two axes are laid out transposed (a transposed matrix's view)."""
    return x.dim() >= 2 and x.shape[-2] > 1 and x.stride(-2) == 1 and x.stride(-1) >= x.shape[-2]


def pad_matrix(apply: Callable, x, value: torch.Tensor, rows: int, cols: int):
    """x (whose value is `value`) grown by `rows` and `cols` zeros, built with
    `apply(op, *args)`: a transposed x is padded through its transpose, so that the copy
    keeps x's memory order and x's reader sees the same transposed layout."""
    if not (rows or cols):
        return x
    if not column_major(value):
        return apply(aten.constant_pad_nd.default, x, [0, cols, 0, rows])
    base = apply(aten.transpose.int, x, -2, -1)
    return apply(aten.transpose.int, apply(aten.constant_pad_nd.default, base, [0, rows, 0, cols]), -2, -1)


def _apply(op, *args):
    return op(*args)


def _bias_padding(bias: torch.Tensor, pm: int, pn: int) -> list[int]:
    """constant_pad_nd's pad list growing a bias broadcast to [m, n] to [m + pm, n + pn]."""
    grown = [p if size > 1 else 0 for p, size in zip((pm, pn)[2 - bias.dim():], bias.shape)]
    return [x for p in reversed(grown) for x in (0, p)]


def padded_product(op, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`op` (aten.mm/bmm/addmm) of `a` and `b` through padded operands: the same values."""
    m, n, k = _extents(a, b)
    pm, pn, pk = padding(m, n, k, a.dtype)
    a2, b2 = pad_matrix(_apply, a, a, pm, pk), pad_matrix(_apply, b, b, pk, pn)
    if op is aten.addmm.default:
        pads = _bias_padding(bias, pm, pn)
        out = op(aten.constant_pad_nd.default(bias, pads) if any(pads) else bias, a2, b2)
    else:
        out = op(a2, b2)
    return out[..., :m, :n]


def _time_ms(fn: Callable[[], object], reps: int = 10) -> float:
    for _ in range(3):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


@functools.lru_cache(maxsize=None)
def measured_faster(signature: Signature) -> bool:
    """Whether the padded product beats the plain one on its GPU by SPEED_UP, timed
    on random operands of the signature's shapes, strides and dtype (CUDA events,
    median of 10 after warm-up; cached per signature for the process). Runs outside
    the fake-tensor mode that compiling is traced under."""
    with unset_fake_temporarily(), torch.no_grad(), torch.cuda.device(signature[-1]):
        return _measured_faster(signature)


def _measured_faster(signature: Signature) -> bool:
    name, layouts, dtype, bias_shape, device = signature
    op = getattr(aten, name).default
    gen = torch.Generator(device=device).manual_seed(0)

    def operand(shape, stride):
        x = torch.empty_strided(shape, stride, dtype=dtype, device=device)
        return x.copy_(torch.randn(shape, generator=gen, device=device, dtype=torch.float32))

    try:
        a, b = (operand(*lay) for lay in layouts)
        bias = operand(bias_shape, torch.empty(bias_shape).stride()) if bias_shape is not None else None
        args = (bias, a, b) if bias is not None else (a, b)
        plain = _time_ms(lambda: op(*args))
        padded = _time_ms(lambda: padded_product(op, a, b, bias))
    except torch.cuda.OutOfMemoryError:  # no room to measure: keep the product as it is
        return False
    finally:
        torch.cuda.empty_cache()
    return padded * SPEED_UP < plain


def _signature(node: torch.fx.Node, device: str, min_flops: int) -> Signature | None:
    """The node's signature if padding could help it: a floating-point product of at
    least `min_flops` on `device` with a misaligned extent; else None."""
    if node.op != "call_function" or node.kwargs or \
            node.target not in (aten.mm.default, aten.bmm.default, aten.addmm.default):
        return None
    vals = [arg.meta.get("val") if isinstance(arg, torch.fx.Node) else None for arg in node.args]
    ia, ib = _matrices(node)
    a, b = vals[ia], vals[ib]
    if not all(isinstance(t, torch.Tensor) for t in (a, b)) or a.device.type != device \
            or not a.dtype.is_floating_point or a.dtype != b.dtype:
        return None
    m, n, k = _extents(a, b)
    batch = a.shape[0] if a.dim() == 3 else 1
    if not any(padding(m, n, k, a.dtype)) or 2 * batch * m * n * k < min_flops:
        return None
    bias = vals[0] if node.target is aten.addmm.default else None
    if bias is not None and (not isinstance(bias, torch.Tensor) or bias.dtype != a.dtype):
        return None
    layouts = tuple((tuple(t.shape), tuple(t.stride())) for t in (a, b))
    return (node.target.__name__.split(".")[0], layouts, a.dtype,
            tuple(bias.shape) if bias is not None else None, str(a.device))


def _swaps_last_two(node) -> bool:
    """Whether `node` is a view of its first argument with the last two axes swapped."""
    if not isinstance(node, torch.fx.Node) or node.op != "call_function":
        return False
    if node.target is aten.t.default:
        return node.args[0].meta["val"].dim() == 2
    if node.target is aten.transpose.int:
        rank = node.args[0].meta["val"].dim()
        return sorted(d % rank for d in node.args[1:3]) == [rank - 2, rank - 1]
    if node.target is aten.permute.default:
        rank = node.args[0].meta["val"].dim()
        return list(node.args[1]) == [*range(rank - 2), rank - 1, rank - 2]
    return False


def _rewrite(graph: torch.fx.Graph, node: torch.fx.Node, made: dict) -> None:
    """Replace `node` in `graph` by padding, the product and slices: aten operations
    with their fake values, as the partitioner expects. `made` holds the operations
    already added, (op, args) -> node, which later products reuse (one padded copy of
    a tensor however many products read it)."""
    def call(op, *args):
        if op is aten.transpose.int and _swaps_last_two(args[0]):  # a transpose's transpose
            return args[0].args[0]
        key = (op, tuple(tuple(a) if isinstance(a, list) else a for a in args))
        if key not in made:
            made[key] = graph.call_function(op, args)
            made[key].meta["val"] = op(*(a.meta["val"] if isinstance(a, torch.fx.Node) else a for a in args))
        return made[key]

    ia, ib = _matrices(node)
    a, b = node.args[ia], node.args[ib]
    m, n, k = _extents(a.meta["val"], b.meta["val"])
    pm, pn, pk = padding(m, n, k, a.meta["val"].dtype)
    with graph.inserting_before(node):
        a2 = pad_matrix(call, a, a.meta["val"], pm, pk)
        b2 = pad_matrix(call, b, b.meta["val"], pk, pn)
        if node.target is aten.addmm.default:
            bias = node.args[0]
            pads = _bias_padding(bias.meta["val"], pm, pn)
            bias2 = call(aten.constant_pad_nd.default, bias, pads) if any(pads) else bias
            out = call(node.target, bias2, a2, b2)
        else:
            out = call(node.target, a2, b2)
        rank = len(node.meta["val"].shape)
        if pm:
            out = call(aten.slice.Tensor, out, rank - 2, 0, m)
        if pn:
            out = call(aten.slice.Tensor, out, rank - 1, 0, n)
    node.replace_all_uses_with(out)
    graph.erase_node(node)


def pad_matmuls(gm: torch.fx.GraphModule, faster: Callable[[Signature], bool] = measured_faster,
                device: str = "cuda", min_flops: int = MIN_FLOPS) -> torch.fx.GraphModule:
    """A copy of `gm` in which every product that `faster` says gains from padding
    multiplies zero-padded operands and slices the result; `gm` itself when none does."""
    chosen = [n for n in gm.graph.nodes if (sig := _signature(n, device, min_flops)) is not None and faster(sig)]
    if not chosen:
        return gm
    graph, copies = torch.fx.Graph(), {}
    graph.output(graph.graph_copy(gm.graph, copies))
    made: dict = {}
    for node in chosen:
        _rewrite(graph, copies[node], made)
    graph.eliminate_dead_code()  # the views of operands now read through their bases
    graph.lint()
    padded = torch.fx.GraphModule(gm, graph)
    return padded if retraced(padded) else gm


def retraced(gm: torch.fx.GraphModule) -> bool:
    """Trace every node's fake value again from the placeholders' (downstream views
    of a sliced product have other strides than before); False where a node cannot
    take its new input layout (a `view` that needs contiguous memory)."""
    inputs = [n.meta.get("val") for n in gm.graph.nodes if n.op == "placeholder"]
    mode = detect_fake_mode(inputs)
    if mode is None:
        return False
    try:
        FakeTensorProp(gm, mode).propagate_dont_convert_inputs(*inputs)
    except Exception:  # noqa: BLE001 - a node that cannot be traced so cannot run so either
        return False
    return True
