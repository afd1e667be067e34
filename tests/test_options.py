"""The options registry: one flag parser for options and environment variables, the
compile key ww.jit caches on, and the bounded per-function program cache."""
import numpy as np
import pytest

import warpweave as ww
from warpweave.options import ENV, Options, compile_key, current, parse_flag
from tests.utils import softmax as _softmax


@pytest.fixture
def x():
    return np.random.default_rng(0).standard_normal((6, 50)).astype(np.float32)


@pytest.mark.parametrize("text,value", [("1", True), ("TRUE", True), (" on ", True), ("Yes", True),
                                        ("0", False), ("false", False), ("OFF", False), ("no", False)])
def test_one_parser_for_flags(text, value, monkeypatch):
    assert parse_flag(text, "x") is value
    with ww.options(fuse=text) as o:
        assert o.fuse is value
    monkeypatch.setenv("WARPWEAVE_FUSE", text)
    assert current().fuse is value


@pytest.mark.parametrize("bad", ["maybe", "2", "", 2, 0.5, None])
def test_bad_flags_name_the_option_and_the_value(bad, monkeypatch):
    with pytest.raises(ww.OptionError, match=r"option 'fuse'=.* is not a flag"):
        with ww.options(fuse=bad):
            pass
    if isinstance(bad, str) and bad:
        monkeypatch.setenv("WARPWEAVE_VERIFY", bad)
        with pytest.raises(ww.OptionError, match=f"WARPWEAVE_VERIFY='{bad}' is not a flag"):
            current()


def test_other_options_are_validated(monkeypatch):
    for field, value in [("target", "tpu"), ("cuda_arch", "ampere"), ("jit_cache_size", 0)]:
        with pytest.raises(ww.OptionError, match=repr(value)):
            Options(**{field: value})
    monkeypatch.setenv("WARPWEAVE_JIT_CACHE_SIZE", "lots")
    with pytest.raises(ww.OptionError, match="WARPWEAVE_JIT_CACHE_SIZE='lots'"):
        current()
    monkeypatch.setenv("WARPWEAVE_JIT_CACHE_SIZE", "3")
    assert current().jit_cache_size == 3
    assert set(ENV.values()) >= {"WARPWEAVE_FUSE", "WARPWEAVE_DUMP", "WARPWEAVE_JIT_CACHE_SIZE"}


def test_options_that_change_the_result_are_in_the_compile_key():
    base = compile_key(Options())
    for change in [dict(fuse=False), dict(verify=False), dict(dump_dir="d"), dict(cuda_arch="sm_80")]:
        assert compile_key(Options(**change)) != base, change
    assert compile_key(Options(jit_cache_size=2)) == base


def test_jit_recompiles_when_options_change(x, tmp_path):
    f = ww.jit(_softmax, target="cpu")
    fused = f.lower(x)
    y = f(x)
    with ww.options(fuse="no", dump_dir=str(tmp_path)):
        unfused = f.lower(x)
        assert len(unfused.kernels) > len(fused.kernels) and unfused.dump_dir
        np.testing.assert_allclose(f(x), y, rtol=1e-6)
        assert f._fast[("cpu", current(), (x.shape, x.dtype))] is unfused
    assert f.lower(x) is fused


def test_environment_flag_turns_fusion_off(x, monkeypatch):
    monkeypatch.setenv("WARPWEAVE_FUSE", "off")
    assert len(ww.jit(_softmax, target="cpu").lower(x).kernels) > 1


def test_in_process_cache_is_least_recently_used(x):
    f = ww.jit(lambda a: a * 2.0, target="interp")
    with ww.options(jit_cache_size=2):
        first = f.lower(x[:1])
        f.lower(x[:2])
        assert f.lower(x[:1]) is first  # now the most recently used
        f.lower(x[:3])  # evicts x[:2]
        assert len(f._programs) == 2 and f.lower(x[:1]) is first
        for n in range(1, 5):
            f(x[:n])
        assert len(f._programs) == 2 and set(f._fast.values()) <= set(f._programs.values())


def test_thread_count_from_the_environment_is_validated(monkeypatch):
    from warpweave.backends import cpu

    monkeypatch.setenv("WARPWEAVE_NUM_THREADS", "3")
    assert cpu.default_threads() == 3
    monkeypatch.setenv("WARPWEAVE_NUM_THREADS", "many")
    with pytest.raises(ww.OptionError, match="WARPWEAVE_NUM_THREADS='many'"):
        cpu.default_threads()
