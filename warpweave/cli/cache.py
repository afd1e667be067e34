"""`warpweave cache info|clear`: the on-disk compile cache."""
from __future__ import annotations

import os

from ..pipeline.cache import ENV_VAR, KernelCache, cache_dir


def register(subparsers) -> None:
    parser = subparsers.add_parser("cache", help="show or clear the compile cache",
                                   description=f"the compile cache (${ENV_VAR}, else the user's "
                                               "cache directory)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("info", help="where the cache is, its entries and size").set_defaults(func=info)
    actions.add_parser("clear", help="delete every cache entry").set_defaults(func=clear)


def _entries(directory: str) -> list[str]:
    paths = []
    for dirpath, _, names in os.walk(directory):
        paths += [os.path.join(dirpath, n) for n in names if n.endswith(".bin")]
    return paths


def info(args) -> int:
    directory = cache_dir()
    entries = _entries(directory)
    size = sum(os.path.getsize(p) for p in entries)
    print(f"directory: {directory}" + ("" if os.path.isdir(directory) else " (not created yet)"))
    print(f"entries:   {len(entries)}, {size / (1 << 20):.1f} MiB")
    print(f"set {ENV_VAR} to move it; `warpweave cache clear` empties it")
    return 0


def clear(args) -> int:
    directory = cache_dir()
    count = len(_entries(directory))
    KernelCache(directory).clear()
    left = len(_entries(directory))
    print(f"removed {count - left} entries from {directory}"
          + (f"; {left} could not be removed" if left else ""))
    return 1 if left else 0
