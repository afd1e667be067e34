"""`warpweave tune FILE.py:FUNCTION --arg 1024x4096:float32 ...`: tune a numpy-style
function's schedules for those argument shapes and dtypes."""
from __future__ import annotations

import runpy

import numpy as np

from ..errors import ArgumentError
from ..frontend.tuning import tune
from ..ir import dtypes as dt
from ..tune.measure import Settings
from ..tune.strategies import STRATEGIES


def register(subparsers) -> None:
    parser = subparsers.add_parser("tune", help="measure schedules and record the best in the tuning database")
    parser.add_argument("function", help="FILE.py:NAME, a function of numpy-style arrays (or a ww.jit one)")
    parser.add_argument("--arg", action="append", default=[], metavar="SHAPE:DTYPE",
                        help="one per argument, in order: e.g. 1024x4096:float32 (a scalar: :float32)")
    parser.add_argument("--target", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--strategy", default="model", choices=sorted(STRATEGIES))
    parser.add_argument("--budget", type=int, help="trials per group (default: the whole space)")
    parser.add_argument("--db", help="the tuning database (default: WARPWEAVE_TUNING_DB, else the cache's)")
    parser.add_argument("--dask", metavar="ADDRESS", help="measure on a Dask cluster (scheduler address)")
    parser.add_argument("--repeat", type=int, default=Settings.repeat, help="timed runs per candidate")
    parser.add_argument("--timeout", type=float, default=Settings.timeout_s, help="seconds per candidate")
    parser.add_argument("--jobs", type=int, help="processes compiling candidates (default: one per CPU core; "
                                                 "0: compile in this process)")
    parser.set_defaults(func=_run)


def parse_arg(text: str) -> np.ndarray:
    """'1024x4096:float32' -> an array of that shape and dtype (its values are unused)."""
    shape_text, _, dtype = text.partition(":")
    try:
        shape = tuple(int(n) for n in shape_text.split("x")) if shape_text else ()
    except ValueError:
        raise ArgumentError(f"--arg {text!r}: expected SHAPE:DTYPE such as 1024x4096:float32") from None
    return np.zeros(shape, dt.dtype(dtype or "float32").numpy)


def _load(spec: str):
    path, _, name = spec.rpartition(":")
    if not path or not name:
        raise ArgumentError(f"{spec!r}: expected FILE.py:FUNCTION")
    namespace = runpy.run_path(path, run_name="__warpweave_tune__")
    fn = namespace.get(name)
    if not callable(fn):
        raise ArgumentError(f"{path} defines no function {name!r}")
    return fn


def _run(args) -> int:
    fn = _load(args.function)
    executor = None
    if args.dask:
        from ..pipeline.compile import resolve_target
        from ..tune.executors import DaskExecutor

        executor = DaskExecutor(args.dask, resolve_target(args.target))
    try:
        report = tune(fn, *[parse_arg(a) for a in args.arg], target=args.target, budget=args.budget,
                      strategy=args.strategy, db=args.db, executor=executor,
                      settings=Settings(repeat=args.repeat, timeout_s=args.timeout), jobs=args.jobs)
    finally:
        if executor is not None:
            executor.close()
    print(report)
    return 0
