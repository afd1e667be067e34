"""Tuning on a Dask cluster (issue 19): the sweep's wall time on one GPU and on all of
them, whether GPUs agree on the winners, and what a worker lost mid-sweep costs.

    PYTHONPATH=$PWD python3 benchmarks/cluster_tuning.py --gpus 0,1 --out $OUT/cluster.json
    PYTHONPATH=$PWD python3 benchmarks/cluster_tuning.py --gpus 0,0 ...   # two workers share a GPU
    PYTHONPATH=$PWD python3 benchmarks/cluster_tuning.py --target cpu --gpus ,  # two CPU workers

Runs, each on a fresh `HostCluster` (scheduler + one worker per entry of --gpus) and a
fresh database, tuning the same tasks exhaustively (every point, so winners compare):
  one-a, one-b   a single worker on the first GPU, twice: the run-to-run noise;
  one-<g>        a single worker on each other distinct GPU: do GPUs agree;
  all            one worker per entry of --gpus: the speed-up over one-a;
  kill           like `all`, with the last worker killed once a third of the trials are
                 in: the sweep must finish on the others with every trial recorded.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import warpweave as ww  # noqa: E402
from warpweave.frontend.jit import spec_of  # noqa: E402
from warpweave.frontend.trace import trace  # noqa: E402
from warpweave.pipeline.autotune import tune_graph  # noqa: E402
from warpweave.tune.cluster import HostCluster  # noqa: E402
from warpweave.tune.database import Database  # noqa: E402
from warpweave.tune.executors import DaskExecutor  # noqa: E402
from warpweave.tune.measure import Settings  # noqa: E402

CASES = {
    "softmax": lambda x: ww.softmax(x, axis=-1),
    "layer_norm": lambda x: ww.layer_norm(x),
    "row_sum": lambda x: x.sum(axis=-1),
    "col_sum": lambda x: x.sum(axis=0),
}
SHAPES = {"cuda": [(4096, 1024), (16384, 768), (1024, 32768)], "cpu": [(256, 1000), (512, 512)]}


def tasks(target: str, cases: list[str], dtype: str, shapes: list[tuple[int, int]] | None = None):
    npdt = ww.bfloat16.numpy if dtype == "bfloat16" else np.dtype(dtype)
    for name in cases:
        for shape in shapes or SHAPES[target]:
            yield f"{name} {shape[0]}x{shape[1]} {dtype}", trace(CASES[name], [spec_of(np.zeros(shape, npdt))])


def sweep(label: str, gpus: list[str], args, work, kill_after: int | None = None) -> dict:
    """Tune every task on a fresh cluster of `gpus` into a fresh database; the wall time
    and each trial's (group key, schedule) -> (status, median µs)."""
    path = os.path.join(args.workdir, f"{label}.db")
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    db = Database(path)
    settings = Settings(warmup=args.warmup, repeat=args.repeat)
    killed: dict = {}
    with HostCluster(gpus) as cluster, DaskExecutor(cluster.address, args.target) as executor:
        watcher = None
        if kill_after is not None:
            def watch():
                while db.count() < kill_after:
                    time.sleep(0.05)
                killed["before"] = {(t.group_key, t.schedule) for t in Database(path).trials()}
                cluster.kill_worker(len(gpus) - 1)
                killed["at_s"] = time.perf_counter() - start
            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
        start = time.perf_counter()
        for _, (graph, single) in work:
            tune_graph(graph, single, args.target, strategy="exhaustive", db=db, executor=executor,
                       settings=settings, progress=False)
        wall = time.perf_counter() - start
    trials = {(t.group_key, t.schedule): (t.status, t.median_us) for t in db.trials()}
    out = {"label": label, "gpus": gpus, "wall_s": wall, "trials": len(trials),
           "ok": sum(s == "ok" for s, _ in trials.values())}
    if kill_after is not None:
        before = killed.get("before", set())
        out.update(killed_at_s=killed.get("at_s"), recorded_before_kill=len(before),
                   lost_after_kill=len(before - set(trials)))
    print(json.dumps(out), flush=True)
    out["_trials"] = trials
    return out


def winners(trials: dict) -> dict:
    best: dict = {}
    for (key, schedule), (status, us) in trials.items():
        if status == "ok" and (key not in best or us < best[key][1]):
            best[key] = (schedule, us)
    return best


def noise(a: dict, b: dict) -> list[float]:
    """|t_a / t_b - 1| for every point measured ok in both runs."""
    return [abs(a[k][1] / b[k][1] - 1) for k in a.keys() & b.keys() if a[k][0] == b[k][0] == "ok"]


def agreement(a: dict, b: dict) -> dict:
    """Per group: the same winner, or b's winner's time in run a over a's best."""
    wa, wb = winners(a), winners(b)
    same = sum(wa[k][0] == wb[k][0] for k in wa.keys() & wb.keys())
    gaps = [a[(k, wb[k][0])][1] / wa[k][1] - 1 for k in wa.keys() & wb.keys()
            if a.get((k, wb[k][0]), ("", 0))[0] == "ok"]
    return {"groups": len(wa.keys() & wb.keys()), "same_winner": same,
            "max_gap": max(gaps, default=0.0), "median_gap": statistics.median(gaps) if gaps else 0.0}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="cuda", choices=("cpu", "cuda"))
    parser.add_argument("--gpus", default="0,1", help="CUDA_VISIBLE_DEVICES per worker, comma-separated")
    parser.add_argument("--cases", default="softmax,layer_norm,row_sum")
    parser.add_argument("--shapes", default=None, help="ROWSxCOLS,... (default: the target's list)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--runs", default="one,all,kill", help="which runs: one (one-a, one-b, one-<g>), all, kill")
    parser.add_argument("--workdir", default=".", help="where the databases go")
    parser.add_argument("--out", required=True, help="JSON summary")
    args = parser.parse_args(argv)
    gpus = args.gpus.split(",")
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")] if args.shapes else None
    work = list(tasks(args.target, args.cases.split(","), args.dtype, shapes))
    runs = set(args.runs.split(","))
    results, summary = {}, {"target": args.target, "gpus": gpus, "tasks": [w[0] for w in work],
                            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if "one" in runs:
        results["one-a"] = sweep("one-a", gpus[:1], args, work)
        results["one-b"] = sweep("one-b", gpus[:1], args, work)
        for g in dict.fromkeys(gpus[1:]):
            if g != gpus[0]:
                results[f"one-{g}"] = sweep(f"one-{g}", [g], args, work)
        diffs = noise(results["one-a"]["_trials"], results["one-b"]["_trials"])
        summary["noise"] = {"points": len(diffs), "median": statistics.median(diffs) if diffs else None,
                            "p90": float(np.percentile(diffs, 90)) if diffs else None}
        summary["agreement_repeat"] = agreement(results["one-a"]["_trials"], results["one-b"]["_trials"])
        for label in results:
            if label not in ("one-a", "one-b"):
                summary[f"agreement_{label}"] = agreement(results["one-a"]["_trials"], results[label]["_trials"])
    if "all" in runs:
        results["all"] = sweep("all", gpus, args, work)
        summary["agreement_all"] = agreement(results.get("one-a", results["all"])["_trials"],
                                             results["all"]["_trials"])
        if "one-a" in results:
            summary["speedup"] = results["one-a"]["wall_s"] / results["all"]["wall_s"]
    if "kill" in runs and len(gpus) > 1:
        total = results.get("all", results.get("one-a", {})).get("trials") or 30
        results["kill"] = sweep("kill", gpus, args, work, kill_after=max(1, total // 3))
    summary["runs"] = {k: {f: v for f, v in r.items() if not f.startswith("_")} for k, r in results.items()}
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=1)
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=1))


if __name__ == "__main__":
    main()
