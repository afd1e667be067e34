"""One typed options registry, with environment overrides and scoped changes.

    with ww.options(dump_dir="dumps", verify=False):
        ...

Environment: WARPWEAVE_TARGET, WARPWEAVE_DUMP, WARPWEAVE_VERIFY (0/1), WARPWEAVE_CUDA_ARCH,
WARPWEAVE_FUSE (0/1), WARPWEAVE_TUNING_DB (the tuning database's path), WARPWEAVE_TUNED (0/1), WARPWEAVE_AUTOTUNE (0/1).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from dataclasses import dataclass

from .errors import ArgumentError

TARGETS = ("auto", "interp", "cpu", "cuda")


@dataclass(frozen=True)
class Options:
    target: str = "auto"          # default target of ww.jit / ww.build
    dump_dir: str | None = None   # write every stage of every compile here
    verify: bool = True           # run the GIR verifier after every pass
    cuda_arch: str | None = None  # e.g. "sm_90"; default: the device's, else sm_90
    fuse: bool = True             # plan fusion groups (off: one kernel per operation)
    tuning_db: str | None = None  # the tuning database; default: tuning.db in the cache directory
    tuned: bool = True            # compiles take the database's (or the predictor's) schedules
    autotune: bool = False        # frontends tune groups the database lacks before compiling

    def __post_init__(self):
        if self.target not in TARGETS:
            raise ArgumentError(f"unknown target {self.target!r}; expected one of {TARGETS}")


_ENV = ("WARPWEAVE_TARGET", "WARPWEAVE_DUMP", "WARPWEAVE_VERIFY", "WARPWEAVE_CUDA_ARCH", "WARPWEAVE_FUSE",
        "WARPWEAVE_TUNING_DB", "WARPWEAVE_TUNED", "WARPWEAVE_AUTOTUNE")
_env_cache: dict[tuple, Options] = {}


def _from_env() -> Options:
    key = tuple(os.environ.get(k) for k in _ENV)
    opts = _env_cache.get(key)
    if opts is None:
        opts = _env_cache[key] = _read_env()
    return opts


def _flag(name: str) -> bool:
    return os.environ.get(name, "1").strip().lower() not in ("0", "false", "no")


def _read_env() -> Options:
    return Options(target=os.environ.get("WARPWEAVE_TARGET", "auto") or "auto",
                   dump_dir=os.environ.get("WARPWEAVE_DUMP") or None, verify=_flag("WARPWEAVE_VERIFY"),
                   cuda_arch=os.environ.get("WARPWEAVE_CUDA_ARCH") or None, fuse=_flag("WARPWEAVE_FUSE"),
                   tuning_db=os.environ.get("WARPWEAVE_TUNING_DB") or None, tuned=_flag("WARPWEAVE_TUNED"),
                   autotune=os.environ.get("WARPWEAVE_AUTOTUNE", "0").strip().lower() in ("1", "true", "yes"))


_local = threading.local()


def current() -> Options:
    """The options in force: the innermost `options(...)` block, else the environment."""
    stack = getattr(_local, "stack", None)
    return stack[-1] if stack else _from_env()


@contextlib.contextmanager
def options(**overrides):
    """Change options inside a `with` block (per thread)."""
    fields = {f.name for f in dataclasses.fields(Options)}
    unknown = set(overrides) - fields
    if unknown:
        raise ArgumentError(f"unknown options {sorted(unknown)}; known: {sorted(fields)}")
    new = dataclasses.replace(current(), **overrides)
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    stack.append(new)
    try:
        yield new
    finally:
        stack.pop()
