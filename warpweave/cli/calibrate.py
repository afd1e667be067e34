"""`warpweave calibrate`: measure the current GPU and save its cost-model profile."""
from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate", help="measure this GPU for the cost model",
        description="measure the current GPU (copy bandwidth, launch latency, arithmetic throughput) "
                    "and save a profile that later compiles on this device use")
    parser.add_argument("--bytes", type=int, default=1 << 30, help="bytes per timed copy (default 1 GiB)")
    parser.set_defaults(func=run)


def run(args) -> int:
    from ..backends.cuda import driver

    if not driver.available():
        print(f"no usable CUDA GPU: {driver.unavailable_reason()}")
        return 1
    from ..calibrate import calibrate

    model, path = calibrate(nbytes=args.bytes)
    print(f"{model.name}: copy bandwidth {model.bandwidth / 1e12:.2f} TB/s, launch {model.launch_s * 1e6:.1f} us, "
          f"{model.ops_per_s / 1e12:.1f} T instructions/s\nsaved to {path}")
    return 0
