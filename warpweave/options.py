"""One typed options registry, with environment overrides and scoped changes.

    with ww.options(dump_dir="dumps", verify=False):
        ...

Every option has one environment variable (`ENV`); values from either place go
through the same parsers, so `fuse="no"`, `WARPWEAVE_FUSE=off` and `fuse=False`
mean the same and anything unrecognised is an `OptionError` naming the option (or
variable) and the value. Flags take 0/1/true/false/on/off/yes/no, any case.

`compile_key(options)` is the part of the options that changes what a compile
produces (or writes): ww.jit keys its compiled programs on it, so a change of
options is never silently ignored.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import threading
from dataclasses import dataclass

from .errors import ArgumentError, OptionError

TARGETS = ("auto", "interp", "cpu", "cuda")
_TRUE = ("1", "true", "on", "yes")
_FALSE = ("0", "false", "off", "no")


def parse_flag(value, source: str) -> bool:
    """A boolean option from a bool, 0/1, or a string in 0/1/true/false/on/off/yes/no
    (any case); `source` names the option or environment variable in the error."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise OptionError(f"{source}={value!r} is not a flag; use one of "
                      f"{'/'.join(_TRUE)} or {'/'.join(_FALSE)}")


def _parse_target(value, source: str) -> str:
    if isinstance(value, str) and value.strip().lower() in TARGETS:
        return value.strip().lower()
    raise OptionError(f"unknown target {value!r} ({source}); expected one of {TARGETS}")


def _parse_path(value, source: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    raise OptionError(f"{source}={value!r} must be a directory path")


def _parse_arch(value, source: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str) and re.fullmatch(r"sm_[0-9]{2,3}a?", value.strip()):
        return value.strip()
    raise OptionError(f"{source}={value!r} is not a CUDA architecture; use e.g. 'sm_90'")


CONTRACTIONS = ("auto", "warpweave", "torch")


def _parse_contractions(value, source: str) -> str:
    if isinstance(value, str) and value.strip().lower() in CONTRACTIONS:
        return value.strip().lower()
    raise OptionError(f"{source}={value!r}: expected one of {CONTRACTIONS}")


def parse_count(value, source: str) -> int:
    """A positive integer option (or environment variable `source`)."""
    try:
        size = int(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        size = 0
    if isinstance(value, bool) or size < 1:
        raise OptionError(f"{source}={value!r} must be a positive integer")
    return size


def _parse_workers(value, source: str) -> int:
    """A process count: 0 (one per core, up to 8) or a positive integer (1: none)."""
    return 0 if value in (0, "0") else parse_count(value, source)


# field -> (environment variable, parser, changes the compiled result)
_REGISTRY = {
    "target": ("WARPWEAVE_TARGET", _parse_target, False),  # ww.jit keys on the resolved target
    "dump_dir": ("WARPWEAVE_DUMP", _parse_path, True),       # a new dump dir is a new compile
    "verify": ("WARPWEAVE_VERIFY", parse_flag, True),
    "cuda_arch": ("WARPWEAVE_CUDA_ARCH", _parse_arch, True),
    "fuse": ("WARPWEAVE_FUSE", parse_flag, True),
    "jit_cache_size": ("WARPWEAVE_JIT_CACHE_SIZE", parse_count, False),
    "strict": ("WARPWEAVE_STRICT", parse_flag, False),  # torch backend: raise instead of falling back
    "tuning_db": ("WARPWEAVE_TUNING_DB", _parse_path, True),
    "tuned": ("WARPWEAVE_TUNED", parse_flag, True),
    "autotune": ("WARPWEAVE_AUTOTUNE", parse_flag, True),
    "contractions": ("WARPWEAVE_CONTRACTIONS", _parse_contractions, False),  # torch backend: who runs mm
    "compile_workers": ("WARPWEAVE_COMPILE_WORKERS", _parse_workers, False),
}
ENV = {field: env for field, (env, _, _) in _REGISTRY.items()}


@dataclass(frozen=True)
class Options:
    target: str = "auto"          # default target of ww.jit / ww.build
    dump_dir: str | None = None   # write every stage of every compile here
    verify: bool = True           # run the GIR verifier after every pass (bounds are always proven)
    cuda_arch: str | None = None  # e.g. "sm_90"; default: the device's, else sm_90
    fuse: bool = True             # plan fusion groups (off: one kernel per operation)
    jit_cache_size: int = 64      # compiled programs each ww.jit function keeps (least recently used go)
    strict: bool = False          # torch backend: raise where it would fall back after a failure
    tuning_db: str | None = None  # the tuning database; default: tuning.db in the cache directory
    tuned: bool = True            # compiles take the database's (or the predictor's) schedules
    autotune: bool = False        # frontends tune the groups the database lacks before compiling
    contractions: str = "auto"    # torch backend: matrix products in "warpweave", "torch", or "auto"
    #                               (warpweave on the cpu target, PyTorch on cuda)
    compile_workers: int = 0      # processes that build a graph's programs side by side
    #                               (0: one per core, at most 8; 1: build them in this process)

    def __post_init__(self):
        for field, (_, parse, _) in _REGISTRY.items():
            object.__setattr__(self, field, parse(getattr(self, field), f"option {field!r}"))


def compile_key(opts: Options) -> tuple:
    """The options that change what a compile produces or writes, as a hashable tuple."""
    return tuple(getattr(opts, f) for f, (_, _, keyed) in _REGISTRY.items() if keyed)


_env_cache: dict[tuple, Options] = {}


def _from_env() -> Options:
    key = tuple(os.environ.get(env) for env in ENV.values())
    opts = _env_cache.get(key)
    if opts is None:
        opts = _env_cache[key] = _read_env()
    return opts


def _read_env() -> Options:
    values = {}
    for field, (env, parse, _) in _REGISTRY.items():
        raw = os.environ.get(env)
        if raw is not None and raw.strip() != "":
            values[field] = parse(raw, env)
    return Options(**values)


_local = threading.local()


def current() -> Options:
    """The options in force: the innermost `options(...)` block, else the environment."""
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else _from_env()


@contextlib.contextmanager
def options(**overrides):
    """Change options inside a `with` block (per thread)."""
    unknown = set(overrides) - set(_REGISTRY)
    if unknown:
        raise ArgumentError(f"unknown options {sorted(unknown)}; known: {sorted(_REGISTRY)}")
    new = dataclasses.replace(current(), **overrides)
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(new)
    try:
        yield new
    finally:
        stack.pop()
