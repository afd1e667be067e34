"""`warpweave dump` and `warpweave explain`: compile a function from a file for given
shapes and show a stage, or what the compiler made of it."""
from __future__ import annotations

import os
import runpy

from ..errors import ArgumentError
from ..frontend.jit import JitFunction, jit
from ..ir import dtypes as dt
from ..options import TARGETS, options
from ..program import STAGES


def register(subparsers) -> None:
    for name, func, text in (("dump", dump, "print one compile stage of a function"),
                             ("explain", explain, "summarize the kernels a function compiles to")):
        p = subparsers.add_parser(name, help=text, description=f"{text}, e.g. warpweave {name} "
                                  "model.py:softmax --shapes 1024x1024")
        p.add_argument("function", metavar="FILE:FUNC", help="a Python file and a function in it")
        p.add_argument("--shapes", nargs="+", required=True, metavar="SHAPE",
                       help="one shape per argument: 1024x1024 (or 1024,1024; '' for a scalar)")
        p.add_argument("--dtype", default="float32",
                       help="the arguments' dtype, or one per argument separated by commas")
        p.add_argument("--target", default=None, choices=TARGETS, help="default: auto")
        p.add_argument("--no-fuse", action="store_true", help="one kernel per operation")
        if name == "dump":
            p.add_argument("--stage", default="groups", choices=STAGES)
        p.set_defaults(func=func)


def _load(spec: str) -> JitFunction:
    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name:
        raise ArgumentError(f"expected FILE:FUNC (e.g. model.py:softmax), got {spec!r}")
    if not os.path.isfile(path):
        raise ArgumentError(f"no such file: {path}")
    fn = runpy.run_path(path, run_name="__warpweave_cli__").get(name)
    if fn is None or not callable(fn):
        raise ArgumentError(f"{path} defines no function {name!r}")
    return fn if isinstance(fn, JitFunction) else jit(fn)


def _shape(text: str) -> tuple[int, ...]:
    parts = [p for p in text.replace("x", ",").split(",") if p.strip()]
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise ArgumentError(f"bad shape {text!r}: use e.g. 1024x1024") from None


def _program(args):
    import numpy as np

    shapes = [_shape(s) for s in args.shapes]
    dtypes = args.dtype.split(",")
    if len(dtypes) not in (1, len(shapes)):
        raise ArgumentError(f"{len(dtypes)} dtypes for {len(shapes)} arguments")
    dtypes = [dt.dtype(d.strip()) for d in dtypes] * (len(shapes) if len(dtypes) == 1 else 1)
    arrays = [np.zeros(s, d.numpy) for s, d in zip(shapes, dtypes)]
    fn = _load(args.function)
    overrides = {"fuse": False} if args.no_fuse else {}
    if args.target:
        overrides["target"] = args.target
    with options(**overrides):
        return fn.lower(*arrays)


def dump(args) -> int:
    print(_program(args).dump(args.stage))
    return 0


def explain(args) -> int:
    program = _program(args)
    estimate = program.cost_estimate
    print(repr(program))
    print(f"cost model: {estimate.time_us:.1f} us, {estimate.bytes} B of DRAM traffic per call")
    print(program.dump("groups"))
    return 0
