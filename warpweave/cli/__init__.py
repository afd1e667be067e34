"""The `warpweave` command line (also `python -m warpweave`).

Each subcommand group is a module of this package exposing `register(subparsers)`,
which adds its parsers and sets `func(args) -> int` on each; adding a group is one
entry in `GROUPS`.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..errors import Error
from ..version import __version__

GROUPS = ("doctor", "inspect", "cache", "calibrate", "tune", "db", "cluster")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="warpweave", description="the warpweave tensor compiler")
    parser.add_argument("--version", action="version", version=f"warpweave {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log compile stages and their times (the 'warpweave' logger at DEBUG)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in GROUPS:
        importlib.import_module(f"{__name__}.{group}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; the exit status (0 success, 1 a problem found, 2 bad usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if args.verbose:
        logging.basicConfig(format="%(name)s: %(message)s")
        logging.getLogger("warpweave").setLevel(logging.DEBUG)
    try:
        return args.func(args)
    except Error as exc:
        print(f"warpweave {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
