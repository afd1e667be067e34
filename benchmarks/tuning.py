"""Autotuning: recorded sweeps, strategies compared on them, tuned vs default.

    # record an exhaustive sweep (every point of every group's space) on a device
    python benchmarks/tuning.py record --target cuda --out benchmarks/data/h200_sweep.jsonl
    WARPWEAVE_NUM_THREADS=1 python benchmarks/tuning.py record --target cpu --out benchmarks/data/cpu_sweep.jsonl

    # candidates compile in a pool of processes (--jobs, default one per core) while the
    # worker measures; the sweep of the H200's spaces at three shapes, float32 (2934
    # points), in one call with a deadline (cases that would end past it are left out, and
    # the file is written after every group):
    python benchmarks/tuning.py record --target cuda --cases softmax,layer_norm,row_sum,col_sum \
        --shapes 4096x1000,65536x128,2048x4093 --dtypes float32 --jobs 15 --warmup 2 --repeat 10 \
        --deadline 150 --quiet --out benchmarks/data/h200_sweep.jsonl

    # compare the strategies by simulation on a recorded sweep (no device needed):
    # mean trials to within 3 % and 1 % of each group's best point, and the predictor's
    # leave-shape-out accuracy
    python benchmarks/tuning.py compare --sweep benchmarks/data/h200_sweep.jsonl
    python benchmarks/tuning.py compare --sweep benchmarks/data/h200_sweep.jsonl,benchmarks/data/h200_sweep_2026-12-03.jsonl

    # tuned vs default, measured, over the shape sweep (budget trials per group)
    python benchmarks/tuning.py bench --target cuda --strategy model --budget 24

Cases: softmax, layer norm, row sum and column sum over rows x columns shapes, and
gram (x @ x.T: a rows x rows x cols matrix product; tensor cores where 16-bit), in the
dtypes given (default float32 and bfloat16 on cuda, float32 on cpu). `record` writes
into a fresh database (--db, default next to --out) and exports it as JSON lines;
`warpweave db import` loads such a file into the tuning database compiles read.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import warpweave as ww  # noqa: E402
from warpweave.frontend.jit import spec_of  # noqa: E402
from warpweave.frontend.trace import trace  # noqa: E402
from warpweave.pipeline.autotune import tune_graph  # noqa: E402
from warpweave.tune import predict, simulate  # noqa: E402
from warpweave.tune.compiling import CompilePool  # noqa: E402
from warpweave.tune.database import Database  # noqa: E402
from warpweave.tune.executors import LocalExecutor  # noqa: E402
from warpweave.tune.measure import Settings  # noqa: E402
from warpweave.tune.session import table  # noqa: E402

CASES = {
    "softmax": lambda x: ww.softmax(x, axis=-1),
    "layer_norm": lambda x: ww.layer_norm(x),
    "row_sum": lambda x: x.sum(axis=-1),
    "col_sum": lambda x: x.sum(axis=0),
    "gram": lambda x: x @ x.T,  # rows x rows, k = cols: a tensor-core product in 16-bit dtypes
}
SHAPES = {
    "cuda": [(4096, 1024), (8192, 4096), (16384, 768), (32768, 256), (1024, 32768), (65536, 128)],
    "cpu": [(256, 1000), (512, 512), (1024, 256), (128, 2048), (2048, 128), (64, 4096)],
}
DTYPES = {"cuda": ["float32", "bfloat16"], "cpu": ["float32"]}


def _shape(text: str) -> tuple[int, int]:
    rows, cols = text.split("x")
    return int(rows), int(cols)


def _sweep(args):
    """(case name, shape, dtype) over the requested cases, shapes and dtypes."""
    shapes = [_shape(s) for s in args.shapes.split(",")] if args.shapes else SHAPES[args.target]
    dtypes = args.dtypes.split(",") if args.dtypes else DTYPES[args.target]
    for d in dtypes:  # shape by shape: a sweep cut short still has every case at some shapes
        for shape in shapes:
            for name in args.cases.split(","):
                yield name, shape, d


def _tune(name, shape, dtype, target, **kw):
    x = np.zeros(shape, ww.bfloat16.numpy if dtype == "bfloat16" else np.dtype(dtype))
    graph, single = trace(CASES[name], [spec_of(x)])
    return tune_graph(graph, single, target, name, **kw)


def record(args) -> None:
    """Every point of every group's space, measured; the sweep exported after each group
    (so a run cut short keeps what it measured), and cases left out once the next would
    run past --deadline seconds at the rate measured so far."""
    db_path = args.db or os.path.splitext(args.out)[0] + ".db"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db_path + suffix):
            os.remove(db_path + suffix)
    db = Database(db_path)
    settings = Settings(warmup=args.warmup, repeat=args.repeat)
    start = time.time()
    done, skipped = 0, []
    with LocalExecutor(args.target) as executor, CompilePool(args.jobs) as pool:
        for name, shape, dtype in _sweep(args):
            done += _record_one(args, name, shape, dtype, db, settings, executor, pool, start, done, skipped)
    n = db.export_jsonl(args.out)
    print(f"recorded {n} trials in {time.time() - start:.0f} s: {args.out} (database {db_path})")
    if skipped:
        print(f"left out (past the deadline): {', '.join(skipped)}")


def _record_one(args, name, shape, dtype, db, settings, executor, pool, start, done, skipped) -> int:
    """One case's exhaustive sweep (1), or none when it would end past the deadline (0)."""
    elapsed = time.time() - start
    if args.deadline and done and elapsed * (done + 1) / done > args.deadline:
        skipped.append(f"{name} {shape[0]}x{shape[1]} {dtype}")
        return 0
    t = time.time()
    report = _tune(name, shape, dtype, args.target, strategy="exhaustive", db=db, settings=settings,
                   progress=not args.quiet, executor=executor, pool=pool)
    trials = sum(g.trials for g in report.groups)
    print(table(report.groups), flush=True)
    print(f"  {name} {shape} {dtype}: {trials} trials in {time.time() - t:.1f} s "
          f"({trials / (time.time() - t):.1f} per second)", flush=True)
    db.export_jsonl(args.out)
    return 1


def compare(args) -> None:
    paths = args.sweep.split(",")
    db = simulate.load(paths[0])
    for path in paths[1:]:  # further recorded sweeps (JSON lines) join the first's in-memory copy
        if not (paths[0].endswith(".jsonl") and path.endswith(".jsonl")):
            raise SystemExit("several sweeps must all be JSON lines files")
        db.import_jsonl(path)
    sweeps = simulate.sweeps(db)
    print(f"{args.sweep}: {len(sweeps)} groups, {db.count()} trials")
    print(simulate.HEADER)
    for c in simulate.compare(sweeps, args.strategies.split(","), seeds=args.seeds):
        print(c.row())
    print(f"default schedule: {simulate.statistics.mean(s.times[s.problem.default] / s.best_us for s in sweeps):.3f}x "
          "the best point on average")
    print(f"\n{'default us':>10} {'best us':>10} {'speed-up':>8} {'space':>6}  group")
    ups = []
    for s in sweeps:
        default = s.times[s.problem.default]
        ups.append(default / s.best_us)
        print(f"{default:10.2f} {s.best_us:10.2f} {ups[-1]:7.3f}x {len(s.problem.space):>6}  {s.trials[0].summary}")
    print(f"tuned over default: geometric mean {float(np.exp(np.mean(np.log(ups)))):.3f}x, "
          f"least {min(ups):.3f}x ({len(ups)} groups)\n")
    for method in ("neighbours", "learned"):
        print(predict.leave_one_out(db.trials(), method))


def bench(args) -> None:
    db = Database(args.db) if args.db else Database(":memory:")
    settings = Settings(warmup=args.warmup, repeat=args.repeat)
    results = []
    for name, shape, dtype in _sweep(args):
        report = _tune(name, shape, dtype, args.target, strategy=args.strategy, budget=args.budget, db=db,
                       settings=settings, progress=not args.quiet, jobs=args.jobs)
        results += report.groups
    print(table(results))
    ups = [r.speedup for r in results if r.speedup]
    if ups:
        print(f"geometric mean speed-up over the default: {float(np.exp(np.mean(np.log(ups)))):.3f}x "
              f"({len(ups)} groups)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for command in ("record", "bench"):
        p = commands.add_parser(command)
        p.add_argument("--target", default="cuda", choices=("cpu", "cuda"))
        p.add_argument("--cases", default=",".join(CASES))
        p.add_argument("--shapes", help="ROWSxCOLS,... (default: the target's sweep)")
        p.add_argument("--dtypes", help="float32,bfloat16,... (default: the target's)")
        p.add_argument("--warmup", type=int, default=3)
        p.add_argument("--repeat", type=int, default=20)
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        p.add_argument("--jobs", type=int, help="processes compiling candidates (default: one per core)")
    commands.choices["record"].add_argument("--out", required=True, help="the sweep's JSON lines file")
    commands.choices["record"].add_argument("--db", help="the database it is recorded in (default: next to "
                                                         "--out, .db; recreated)")
    commands.choices["record"].add_argument("--deadline", type=float, help="seconds: leave out cases that would "
                                                                           "end past it")
    commands.choices["bench"].add_argument("--strategy", default="model")
    commands.choices["bench"].add_argument("--budget", type=int, default=24)
    commands.choices["bench"].add_argument("--db", help="a tuning database to write (default: in memory)")
    p = commands.add_parser("compare")
    p.add_argument("--sweep", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                                                   "cpu_sweep.jsonl"), help="a sweep file, or several, comma-separated")
    p.add_argument("--strategies", default="exhaustive,random,model,learned,bayesian")
    p.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args(argv)
    {"record": record, "compare": compare, "bench": bench}[args.command](args)


if __name__ == "__main__":
    main()
