"""The `warpweave` command: one module per command group, each exposing
`register(subparsers)` that adds its commands with `set_defaults(run=...)`."""
from __future__ import annotations

import argparse
import sys

from ..errors import Error
from . import db, tune

COMMANDS = (tune, db)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="warpweave", description="warpweave, a tensor compiler")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS:
        module.register(subparsers)
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except Error as exc:
        print(f"warpweave {args.command}: {exc}", file=sys.stderr)
        return 1
