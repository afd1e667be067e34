"""`warpweave cluster`: a Dask scheduler and one tuning worker per GPU on this host
(or, with `--scheduler`, workers joining a scheduler elsewhere), running until
interrupted. Point `warpweave tune --dask ADDRESS` at the address it prints."""
from __future__ import annotations

import signal
import threading

from ..errors import ArgumentError
from ..tune.cluster import HostCluster


def register(subparsers) -> None:
    parser = subparsers.add_parser("cluster", help="run a Dask scheduler and a tuning worker per GPU")
    parser.add_argument("--gpus", default="all",
                        help="'all' (default), or the GPUs to give workers, e.g. 0,1 (one worker each)")
    parser.add_argument("--cpu-workers", type=int, metavar="N",
                        help="N workers with no GPU instead (for tuning the cpu target)")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="join this scheduler instead of starting one")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface the scheduler listens on (0.0.0.0 for workers on other hosts)")
    parser.add_argument("--port", type=int, default=8786)
    parser.set_defaults(func=_run)


def worker_gpus(gpus: str, cpu_workers: int | None) -> list[str]:
    """The CUDA_VISIBLE_DEVICES of each worker ('' for a CPU worker)."""
    if cpu_workers is not None:
        if cpu_workers < 1:
            raise ArgumentError(f"--cpu-workers must be at least 1, got {cpu_workers}")
        return [""] * cpu_workers
    if gpus == "all":
        from ..backends.cuda import driver

        count = driver.device_count()
        if count == 0:
            raise ArgumentError("no GPU is usable here: name GPUs with --gpus, or use --cpu-workers N")
        return [str(n) for n in range(count)]
    names = [g.strip() for g in gpus.split(",")]
    if not all(g.isdigit() for g in names):
        raise ArgumentError(f"--gpus {gpus!r}: expected 'all' or GPU ordinals such as 0,1")
    return names


def _run(args) -> int:
    cluster = HostCluster(worker_gpus(args.gpus, args.cpu_workers), scheduler=args.scheduler,
                          host=args.host, port=args.port)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with cluster:
        print(f"scheduler {cluster.address}; {len(cluster.gpus)} worker(s), GPUs "
              f"{', '.join(g or '-' for g in cluster.gpus)}. Tune with: warpweave tune ... --dask "
              f"{cluster.address}   (Ctrl-C stops)", flush=True)
        stop.wait()
    return 0
