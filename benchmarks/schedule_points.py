"""warpweave alone at given schedule points of the shape sweep's cases: each job is a
case and dtype at its default schedule or at a schedule record given by its repr. Jobs
compile first in parallel worker processes (filling the disk cache), then run one by
one in this process: checked against eager on float32 inputs, timed as the sweep times
(CUDA-graph replays, medians; `gpu_bench.graph_time_ms`). The tuner's records serve the
same purpose for one group; this serves comparing a few points across cases in one run.

    PYTHONPATH=$PWD python3 benchmarks/schedule_points.py --jobs JOBS.json --out OUT.json

JOBS.json: a list of {"case", "shape", "dtype", "point"} ("shape": the first input's
shape as the sweep writes it, e.g. "4096×30522"; "point": a repr such as
"GpuRowGroup(threads=512, row_threads=512, vector=8, chunks=4, passes=2)", or null for
the default); an earlier OUT.json serves as JOBS.json.
"""
import argparse
import json
import multiprocessing as mp
import os
import re
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _cases():
    import shapes
    return {(c.name, "×".join(map(str, c.shapes[0]))): c for c in shapes.sweep_cases()}


def _point(text: str):
    """The schedule record a repr such as "GpuRowGroup(threads=256, vector=8)" names
    (integer parameters only)."""
    from warpweave.tune.records import TEMPLATES

    m = re.fullmatch(r"\s*(\w+)\((.*)\)\s*", text)
    if m is None or m.group(1) not in TEMPLATES:
        raise ValueError(f"not a schedule record: {text!r}")
    params = dict(kv.split("=") for kv in m.group(2).replace(" ", "").split(",") if kv)
    return TEMPLATES[m.group(1)](**{k: int(v) for k, v in params.items()})


def _compile(job):
    """(case, shape, dtype, point or None) -> the Program (cached on disk)."""
    from warpweave.frontend.trace import trace
    from warpweave.passes import fuse
    from warpweave.pipeline.compile import compile_graph
    from warpweave.pipeline.profiles import gpu_model
    from warpweave.schedule.space import group_key

    name, shape, dtype, point = job
    case = _cases()[(name, shape)]
    graph, single = trace(case.ww_fn, [(s, dtype) for s in case.shapes])
    schedules = None
    if point is not None:
        inlined = fuse.inline_broadcast_producers(graph)
        groups = fuse.plan(inlined, gpu_model()).groups
        schedules = {group_key(g, inlined): _point(point) for g in groups}
    return compile_graph(graph, single, "cuda", "case", schedules)


def _warm(job):
    try:
        _compile(job)
        return None
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}"[:300]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", required=True, help="a JSON list of {case, shape, dtype, point}")
    ap.add_argument("--out", required=True)
    ap.add_argument("--workers", type=int, default=12, help="parallel compile processes")
    args = ap.parse_args()
    with open(args.jobs) as f:
        jobs = [(j["case"], j["shape"], j["dtype"], j.get("point")) for j in json.load(f)]
    t0 = time.time()
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=mp.get_context("spawn")) as pool:
        warm = list(pool.map(_warm, jobs))
    print(f"compiled {len(jobs)} jobs in {time.time() - t0:.1f} s", flush=True)
    import fusion_suite as fs
    import gpu_bench
    import torch
    cases = _cases()
    rows = []
    for job, err in zip(jobs, warm):
        name, shape, dtype, point = job
        row = dict(case=name, shape=shape, dtype=dtype, point=point)
        try:
            if err:
                raise RuntimeError(err)
            case = cases[(name, shape)]
            torch.manual_seed(0)
            tdt = fs.DTYPES[dtype]
            inputs = [torch.randn(s, device="cuda", dtype=tdt) for s in case.shapes]
            program = _compile(job)
            row["schedules"] = [repr(k.schedule) for k in program.kernels]
            row["est_us"], _ = fs._cost_estimate(program)
            ref = fs._as_list(case.torch_fn(*[t.float() for t in inputs]))
            out = fs._as_list(program(*inputs))
            row["rel_error"] = max(fs._rel_error(o, r) for o, r in zip(out, ref))
            row["ww_us"] = gpu_bench.graph_time_ms(lambda: program(*inputs)) * 1e3
            row["bytes"] = sum(t.numel() * t.element_size() for t in inputs + out)
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
        rows.append(row)
        print(json.dumps(row), flush=True)
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
