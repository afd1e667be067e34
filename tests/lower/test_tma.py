"""wgmma kernels whose stages bulk tensor copies (TMA) fill: lowering, interpreter,
verifier, text, PTX and the launch path's tensor-map parameters, without a GPU."""

import numpy as np
import pytest

from tests.utils import assert_ptxas_accepts
from warpweave.errors import IRError, UnsupportedError
from warpweave.ir import dtypes as dt
from warpweave.ir.gir import MBAR_EXPECT, MBAR_WAIT, TENSOR_MAP_ALIGN, TENSOR_MAP_BYTES, TMA_LOAD, TensorMap, \
    make_kernel, tensor_maps
from warpweave.ir.gir_parse import parse_kernel
from warpweave.ir.gir_verify import check
from warpweave.lower.mma import lower_mma
from warpweave.schedule.mma import GpuMma, legal, tma_loads, wgmma_points

from .test_mma import _gemm, _run


def T(*args, **kw):
    return GpuMma(*args, instr="wgmma", loader="tma", **kw)


# m, n and k multiples of 8 (16-byte strides, as tensor maps need) but of no tile
SHAPE = (200, 136, 88)


@pytest.mark.parametrize("at,bt", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("point", [T(64, 64, 64, 1, 1, 3), T(128, 128, 32, 2, 1, 3), T(128, 128, 16, 1, 1, 2),
                                   T(64, 128, 64, 1, 2, 4, 1, 2)])
def test_every_layout_at_odd_shapes(at, bt, point):
    """K-major boxes and 64-column panels of MN-major operands, tails read as zeros."""
    c, shapes, _ = _gemm(*SHAPE, at, bt)
    assert legal(point, c)
    kernels, got, want = _run(c, shapes, point, seed=int(np.random.default_rng().integers(1 << 30)))
    ops = [n.op for n in kernels[0].nodes]
    assert TMA_LOAD in ops and "move.global.shared" not in ops
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_batched_float16_split_k_three_axis_maps():
    c, shapes, _ = _gemm(40, 48, 200, False, True, batch=(3,), d=dt.float16, out=dt.float16)
    kernels, got, want = _run(c, shapes, T(64, 64, 32, 1, 1, 3, 3))
    assert len(kernels) == 2
    assert {len(m.dims) for m in tensor_maps(kernels[0])} == {3}
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-2)


def test_tensor_maps_need_16_byte_strides_and_wgmma():
    odd, _, _ = _gemm(70, 130, 72, True, False)  # A [k][m] with 70-element rows
    assert not tma_loads(odd) and not legal(T(64, 64, 64, 1, 1, 3), odd)
    c, _, _ = _gemm(*SHAPE)
    assert tma_loads(c)
    assert not legal(GpuMma(64, 64, 32, 2, 2, 3, loader="tma"), c)  # mma.sync: cp.async only
    assert not legal(GpuMma(64, 64, 64, 1, 1, 3, instr="wgmma", loader="dma"), c)
    loaders = {p.loader for p in wgmma_points(c)}
    assert loaders == {"cp.async", "tma"}
    assert all(p.loader == "cp.async" for p in wgmma_points(odd))


def _kernel(point=T(64, 128, 64, 1, 1, 3), args=(*SHAPE, True, False)):
    c, shapes, _ = _gemm(*args)
    (k,) = lower_mma(c, point, shapes)
    assert check(k) == []
    return k


def _with(k, op, **attrs):
    nodes = [n.replace(attrs={**n.attr_map, **attrs}) if n.op == op else n for n in k.nodes]
    return make_kernel(k.name, k.params, k.shared, nodes, k.edges, k.target)


def test_verifier_checks_bytes_issuers_and_boxes():
    from warpweave.ir import expr as ex

    k = _kernel()
    assert any("expects 100 bytes" in p for p in check(_with(k, MBAR_EXPECT, bytes=100)))
    two = ex.binary("lt", ex.Var("t"), ex.as_index(2))
    assert any("more than one thread" in p for p in check(_with(k, TMA_LOAD, pred=two)))
    assert any("swizzle" in p for p in check(_with(k, TMA_LOAD, swizzle=64)))
    assert any("16-byte" in p for p in check(_with(k, TMA_LOAD, base=3)))
    assert any("reaches element" in p for p in check(_with(k, TMA_LOAD, dims=(10**6, 10**6))))


def test_a_read_without_the_barrier_wait_is_refused():
    """The wait removed (made a plain barrier): the verifier sees a TMA tile read with
    no mbarrier wait after the copy."""
    k = _kernel()
    nodes = [n.replace(op="sync.block", attrs={}) if n.op == MBAR_WAIT else n for n in k.nodes]
    bad = make_kernel(k.name, k.params, k.shared, nodes, k.edges, k.target)
    assert any("copied by TMA with no sync.mbarrier_wait" in p for p in check(bad))


def test_interpreter_reports_a_wait_that_never_completes():
    """A wait for the wrong phase (the parity flipped) would hang on the GPU."""
    from warpweave.backends.interp import run_kernel
    from warpweave.ir import expr as ex

    c, shapes, _ = _gemm(*SHAPE, True, False)
    point = T(64, 128, 64, 1, 1, 3)
    (k,) = lower_mma(c, point, shapes)
    wait = next(n for n in k.nodes if n.op == MBAR_WAIT)
    flipped = _with(k, MBAR_WAIT, parity=ex.as_index(1) - wait.attr("parity"))
    assert check(flipped) == []  # only running it shows the deadlock
    buffers = {"a": np.ones(int(np.prod(shapes["a"])), np.float32).astype("bfloat16"),
               "b": np.ones(int(np.prod(shapes["b"])), np.float32).astype("bfloat16"),
               "out": np.full(int(np.prod(shapes["out"])), np.nan, np.float32)}
    import ml_dtypes

    buffers = {name: v.astype(ml_dtypes.bfloat16) if name != "out" else v for name, v in buffers.items()}
    with pytest.raises(IRError, match="never completes"):
        run_kernel(flipped, buffers)


def test_text_round_trip():
    k = _kernel()
    text = str(k)
    assert TMA_LOAD in text and "sync.mbarrier_wait" in text
    assert parse_kernel(text) == k
    m = tensor_maps(k)[0]
    assert isinstance(m, TensorMap) and m.swizzle == 128 and m.box == (64, 64)


def test_ptxas_assembles_tma_kernels():
    from warpweave.backends.cuda.codegen import compile_ptx, module_arch

    kernels = []
    for i, (args, s) in enumerate([((*SHAPE, True, False), T(128, 256, 64, 2, 1, 4, 1, 8)),
                                   ((40, 48, 200, False, True, (3,), dt.float16, dt.float16),
                                    T(64, 64, 32, 1, 1, 3, 2))]):
        c, shapes, _ = _gemm(*args)
        kernels += lower_mma(c, s, shapes, f"tma{i}")
    with pytest.raises(UnsupportedError, match="sm_90"):
        module_arch(kernels, "sm_80")
    ptx = compile_ptx(kernels, "sm_90")[1]
    assert ".param .align 64 .b8" in ptx and "cvta.param.u64" in ptx
    assert "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes" in ptx
    assert "cp.async.bulk.tensor.3d" in ptx and "mbarrier.try_wait.parity.shared::cta.b64" in ptx
    assert "mbarrier.arrive.expect_tx.shared::cta.b64" in ptx and "fence.mbarrier_init" in ptx
    assert_ptxas_accepts(ptx, "sm_90a")


def test_the_launcher_passes_tensor_maps_by_reference(monkeypatch):
    """A TMA program's hot path encodes each operand's map (cached by address) and
    hands launch_all its host address; the native launch loop passes that address as
    the parameter (flagged BY_REFERENCE), and a pointer's slot address otherwise."""
    import ctypes
    from types import SimpleNamespace

    import ml_dtypes

    import warpweave as ww
    from warpweave.backends.cuda import launch
    from warpweave.pipeline.compile import compile_graph
    from warpweave.schedule.space import group_key

    a, b = np.ones((200, 88), ml_dtypes.bfloat16), np.ones((88, 136), ml_dtypes.bfloat16)
    p = ww.jit(lambda x, y: x @ y, target="cuda").lower(a, b)
    q = compile_graph(p.traced, True, "cuda", "tma", {group_key(p.plan.groups[0], p.graph): T(128, 128, 64, 2, 1, 3)})
    runner = q.runner
    assert runner._maps == {"tmap0.arg0": 0, "tmap1.arg1": 1}
    assert [e.tmap.buffer for e in runner._encoders] == ["arg0", "arg1"]
    assert "launch_all(p0, p1, y0.data_ptr(), ENCODE0(p0), ENCODE1(p1), raw_stream(index))" in \
        runner._launcher_source(True)

    seen = []
    u, vp = ctypes.c_uint, ctypes.c_void_p
    proto = ctypes.CFUNCTYPE(ctypes.c_int, vp, u, u, u, u, u, u, u, vp, vp, vp)

    def fake_launch(func, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
        args = ctypes.cast(params, ctypes.POINTER(ctypes.c_void_p))
        seen.append((ctypes.cast(args[0], ctypes.POINTER(ctypes.c_uint64))[0], args[1]))
        return 0

    fake = proto(fake_launch)
    monkeypatch.setattr(launch.ctypes, "CDLL", lambda name: SimpleNamespace(cuLaunchKernel=fake))
    monkeypatch.setattr(launch, "_NATIVE_SEQUENCE", [launch._build_native_sequence_launcher()])
    fn = SimpleNamespace(name="k", num_params=2, _raw_handle=ctypes.c_void_p(0x1000))
    seq = launch.LaunchSequence([(fn, 1, 128, (0, launch.BY_REFERENCE | 1), 0)], 2)
    tensor_map = ctypes.create_string_buffer(128)
    seq.run([0xABC0, ctypes.addressof(tensor_map)], 0)
    assert seen == [(0xABC0, ctypes.addressof(tensor_map))]


def test_tensor_maps_are_encoded_once_per_address(monkeypatch):
    """The encoder asks the driver once per buffer address, 64-byte aligned, and keeps
    an address it returned alive for a whole generation after the cache turns over."""
    import ctypes

    from warpweave.backends.cuda import tensor_maps as tm

    calls = []

    def encode(address, data_type, rank, pointer, dims, strides, box, ones, *rest):
        calls.append((address, data_type, rank, pointer, list(dims[:rank]), list(strides[:rank - 1]),
                      list(box[:rank]), rest))
        ctypes.memset(address, len(calls), TENSOR_MAP_BYTES)
        return 0

    monkeypatch.setattr(tm, "_ENCODE", [encode])
    m = TensorMap("a", 8, (88, 200), (88,), (64, 128), 128)
    enc = tm.TensorMapEncoder(m, dt.bfloat16)
    first = enc(0x10000)
    assert first % TENSOR_MAP_ALIGN == 0 and enc(0x10000) == first and len(calls) == 1
    assert calls[0][1:] == (9, 2, 0x10000 + 16, [88, 200], [176], [64, 128], (0, 3, 3, 0))
    for k in range(tm._GENERATION):
        enc(0x20000 + 256 * k)
    assert enc(0x10000) == first and ctypes.string_at(first, 1) == b"\x01"  # kept from the older generation
    with pytest.raises(Exception, match="float32"):
        tm.TensorMapEncoder(m, dt.float32)


def test_refilling_a_stage_needs_every_warpgroup_done_with_it():
    """Thread 0's wait on the stage's `empty` barrier removed (its pred never holds):
    the copy refilling the stage may overwrite products still in flight."""
    from warpweave.backends.interp import run_kernel
    from warpweave.ir import expr as ex

    c, shapes, _ = _gemm(*SHAPE, True, False)
    (k,) = lower_mma(c, T(128, 128, 16, 2, 1, 2), shapes)
    never = ex.binary("lt", ex.Var("t"), ex.as_index(0))
    nodes = [n.replace(attrs={**n.attr_map, "pred": never})
             if n.op == MBAR_WAIT and n.attr("barrier") == "stage_empty" else n for n in k.nodes]
    bad = make_kernel(k.name, k.params, k.shared, nodes, k.edges, k.target)
    assert check(bad) == []
    import ml_dtypes

    rng = np.random.default_rng(0)
    buffers = {name: rng.standard_normal(int(np.prod(shapes[name]))).astype(ml_dtypes.bfloat16) for name in "ab"}
    buffers["out"] = np.full(int(np.prod(shapes["out"])), np.nan, np.float32)
    with pytest.raises(IRError, match="in flight"):
        run_kernel(bad, buffers)
