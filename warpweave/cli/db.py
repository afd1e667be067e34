"""`warpweave db show|export|import|clear`: look at and move the tuning database."""
from __future__ import annotations

import argparse

from ..pipeline.cache import tuning_db_path
from ..tune.database import Database
from ..tune.records import schedule_from_json


def register(subparsers) -> None:
    parser = subparsers.add_parser("db", help="the tuning database: show, export, import, clear")
    commands = parser.add_subparsers(dest="db_command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", help="the database (default: WARPWEAVE_TUNING_DB, else tuning.db in the "
                                     "cache directory)")
    show = commands.add_parser("show", parents=[common], help="one line per tuned group and device")
    show.set_defaults(func=_show)
    export = commands.add_parser("export", parents=[common], help="write every trial as JSON lines")
    export.add_argument("path")
    export.add_argument("--device", help="only this device's trials (its name)")
    export.set_defaults(func=_export)
    imp = commands.add_parser("import", parents=[common], help="add the trials of a JSON lines file")
    imp.add_argument("path")
    imp.set_defaults(func=_import)
    clear = commands.add_parser("clear", parents=[common], help="delete trials")
    clear.add_argument("--device", help="only this device's trials (its name)")
    clear.set_defaults(func=_clear)


def _open(args) -> Database:
    return Database(args.db or tuning_db_path())


def _show(args) -> int:
    db = _open(args)
    groups = db.groups()
    print(f"{db.path}: {db.count()} trials, {len(groups)} groups")
    for g in groups:
        speedup = f"{g.default_us / g.best_us:.2f}x" if g.default_us and g.best_us else "-"
        best = schedule_from_json(g.best_schedule) if g.best_schedule else "-"
        default = f"{g.default_us:.1f}" if g.default_us else "-"
        tuned = f"{g.best_us:.1f}" if g.best_us else "-"
        print(f"[{g.target} {g.device_name}] {g.summary}\n    {g.trials} trials ({g.failed} failed), "
              f"default {default} us, best {tuned} us ({speedup}): {best}")
    return 0


def _export(args) -> int:
    n = _open(args).export_jsonl(args.path, device_name=args.device)
    print(f"exported {n} trials to {args.path}")
    return 0


def _import(args) -> int:
    n = _open(args).import_jsonl(args.path)
    print(f"imported {n} new trials from {args.path}")
    return 0


def _clear(args) -> int:
    n = _open(args).clear(device_name=args.device)
    print(f"deleted {n} trials")
    return 0
