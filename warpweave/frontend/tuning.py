"""`ww.tune`: measured search over each fusion group's schedule space; the results go
into the tuning database, which later compiles on the same device read by themselves.

    report = ww.tune(fn, x, b, target="cuda", budget=32, strategy="model")
    print(report)             # per group: default vs tuned time, speed-up, trials
    report.program(x, b)      # compiled with the tuned schedules
"""
from __future__ import annotations

from ..pipeline.autotune import TuneReport, tune_graph
from ..tune.database import Database
from ..tune.executors import Executor
from ..tune.measure import Settings
from .jit import JitFunction, spec_of
from .trace import trace


def tune(fn, *example_args, target: str = "auto", budget: int | None = None, strategy: str = "model",
         db: str | Database | None = None, executor: Executor | None = None,
         settings: Settings | None = None, progress: bool = True, jobs: int | None = None) -> TuneReport:
    """Tune the schedules of `fn` (a numpy-style function, or a `ww.jit` function) for
    these example arguments' shapes and dtypes on `target`.

    budget: trials per group (the default schedule's included; None: the whole space).
    strategy: "model" (cost-model ranked, the default), "learned", "bayesian",
        "random" or "exhaustive".
    db: the tuning database (a path or a `tune.database.Database`; default: the
        `tuning_db` option / WARPWEAVE_TUNING_DB, else tuning.db in the cache directory).
    executor: where candidates run (default: local worker processes, one per device;
        `tune.executors.DaskExecutor` for a cluster).
    settings: how candidates are timed (`tune.measure.Settings`).
    jobs: processes compiling candidates in parallel (default: one per CPU core; 0:
        compile in this process)."""
    fn = fn.fn if isinstance(fn, JitFunction) else fn
    graph, single = trace(fn, tuple(spec_of(a) for a in example_args))
    return tune_graph(graph, single, target, getattr(fn, "__name__", "program"), budget=budget,
                      strategy=strategy, db=db, executor=executor, settings=settings, progress=progress,
                      jobs=jobs)
