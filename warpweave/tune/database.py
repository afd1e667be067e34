"""The tuning database: SQLite in WAL mode, one row per trial (failures included).

    db = Database(path)
    db.add(trials)                       # one transaction; safe with several writers
    db.best(group_key, device)           # the fastest correct schedule measured there
    db.export_jsonl(path); db.import_jsonl(path)

Each row holds the group's content hash and structure, a readable summary, shapes
and dtypes, the schedule record as JSON, the device's identity (name, compute
capability, SM count, driver and CUDA versions), warpweave's version, the strategy,
the status and the time statistics. A row's `uid` is the hash of its record, so
importing a file twice, or merging results from several machines, adds each trial once.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import Iterable

from ..errors import ArgumentError, Error
from .records import DeviceInfo, Trial

SCHEMA_VERSION = 1

_COLUMNS = ("uid", "created", "group_key", "structure", "summary", "shapes", "dtypes", "schedule",
            "target", "device_name", "compute_capability", "sm_count", "driver_version", "cuda_version",
            "version", "strategy", "status", "median_us", "min_us", "runs", "estimate_us", "is_default",
            "error")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY,
    uid TEXT UNIQUE NOT NULL,
    created REAL NOT NULL,
    group_key TEXT NOT NULL, structure TEXT NOT NULL, summary TEXT NOT NULL,
    shapes TEXT NOT NULL, dtypes TEXT NOT NULL, schedule TEXT NOT NULL,
    target TEXT NOT NULL, device_name TEXT NOT NULL, compute_capability TEXT NOT NULL,
    sm_count INTEGER NOT NULL, driver_version TEXT NOT NULL, cuda_version TEXT NOT NULL,
    version TEXT NOT NULL, strategy TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed', 'incorrect', 'timeout')),
    median_us REAL, min_us REAL, runs INTEGER NOT NULL, estimate_us REAL,
    is_default INTEGER NOT NULL, error TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS trials_group ON trials (target, device_name, group_key);
CREATE INDEX IF NOT EXISTS trials_structure ON trials (target, device_name, structure);
PRAGMA user_version = {SCHEMA_VERSION};
"""


class DatabaseError(Error, RuntimeError):
    """The tuning database cannot be opened, read or written."""


def _uid(t: Trial) -> str:
    d = t.to_dict()
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:32]


def _row(t: Trial) -> tuple:
    d = t.device
    return (_uid(t), time.time(), t.group_key, t.structure, t.summary, json.dumps(t.to_dict()["shapes"]),
            json.dumps(list(t.dtypes)), t.schedule, d.target, d.name, d.compute_capability, d.sm_count,
            d.driver_version, d.cuda_version, t.version, t.strategy, t.status, t.median_us, t.min_us,
            t.runs, t.estimate_us, int(t.is_default), t.error)


def _trial(r: sqlite3.Row) -> Trial:
    device = DeviceInfo(r["target"], r["device_name"], r["compute_capability"], r["sm_count"],
                        r["driver_version"], r["cuda_version"])
    return Trial(r["group_key"], r["structure"], r["summary"], tuple(tuple(s) for s in json.loads(r["shapes"])),
                 tuple(json.loads(r["dtypes"])), r["schedule"], device, r["strategy"], r["status"],
                 r["median_us"], r["min_us"], r["runs"], r["estimate_us"], bool(r["is_default"]), r["error"],
                 r["version"])


@dataclass(frozen=True)
class GroupSummary:
    """What the database holds for one group on one device."""

    target: str
    device_name: str
    group_key: str
    summary: str
    shapes: str
    trials: int
    failed: int
    default_us: float | None
    best_us: float | None
    best_schedule: str | None


class Database:
    """A tuning database at `path` (created with its directory when missing;
    ":memory:" for one in memory). Connections are per thread."""

    def __init__(self, path: str):
        self.path = path
        if path != ":memory:":
            directory = os.path.dirname(os.path.abspath(path))
            try:
                os.makedirs(directory, exist_ok=True)
            except OSError as exc:
                raise DatabaseError(f"cannot create the tuning database's directory {directory}: {exc}; "
                                    "set WARPWEAVE_TUNING_DB to a writable path") from None
        self._local = threading.local()
        self._memory = sqlite3.connect(":memory:", check_same_thread=False) if path == ":memory:" else None
        self._lock = threading.Lock()
        with self._transaction() as c:
            c.executescript(_SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        if self._memory is not None:
            self._memory.row_factory = sqlite3.Row
            return self._memory
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=60)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.Error as exc:
                raise DatabaseError(f"cannot open the tuning database {self.path}: {exc}") from None
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
        return conn

    def _transaction(self):
        db = self

        class _Tx:
            def __enter__(self):
                db._lock.acquire()
                self.conn = db._connection()
                return self.conn

            def __exit__(self, kind, exc, tb):
                try:
                    if kind is None:
                        self.conn.commit()
                    else:
                        self.conn.rollback()
                finally:
                    db._lock.release()
                if isinstance(exc, sqlite3.Error):
                    raise DatabaseError(f"tuning database {db.path}: {exc}") from exc
                return False

        return _Tx()

    # ------------------------------------------------------------------ writing
    def add(self, trials: Iterable[Trial]) -> int:
        """Insert trials in one transaction; returns how many were new."""
        rows = [_row(t) for t in trials]
        with self._transaction() as c:
            before = c.total_changes
            c.executemany(f"INSERT OR IGNORE INTO trials ({', '.join(_COLUMNS)}) "
                          f"VALUES ({', '.join('?' * len(_COLUMNS))})", rows)
            return c.total_changes - before

    def clear(self, target: str | None = None, device_name: str | None = None) -> int:
        """Delete every trial (or those of one target / device); returns how many."""
        where, args = self._where(target=target, device_name=device_name)
        with self._transaction() as c:
            return c.execute(f"DELETE FROM trials{where}", args).rowcount

    # ------------------------------------------------------------------ reading
    @staticmethod
    def _where(**filters) -> tuple[str, list]:
        parts, args = [], []
        for column, value in filters.items():
            if value is not None:
                parts.append(f"{column} = ?")
                args.append(value)
        return (" WHERE " + " AND ".join(parts) if parts else ""), args

    def trials(self, *, group_key: str | None = None, structure: str | None = None,
               target: str | None = None, device_name: str | None = None,
               status: str | None = None) -> list[Trial]:
        """Trials matching every given filter, oldest first."""
        where, args = self._where(group_key=group_key, structure=structure, target=target,
                                  device_name=device_name, status=status)
        with self._transaction() as c:
            return [_trial(r) for r in c.execute(f"SELECT * FROM trials{where} ORDER BY id", args)]

    def best(self, group_key: str, device: DeviceInfo) -> Trial | None:
        """The correct trial with the lowest median time for the group on this device."""
        with self._transaction() as c:
            r = c.execute("SELECT * FROM trials WHERE target = ? AND device_name = ? AND group_key = ? "
                          "AND status = 'ok' ORDER BY median_us LIMIT 1",
                          (device.target, device.name, group_key)).fetchone()
        return None if r is None else _trial(r)

    def has_device(self, device: DeviceInfo) -> bool:
        """Whether any correct trial was measured on this device."""
        with self._transaction() as c:
            return c.execute("SELECT 1 FROM trials WHERE target = ? AND device_name = ? AND status = 'ok' "
                             "LIMIT 1", (device.target, device.name)).fetchone() is not None

    def count(self) -> int:
        with self._transaction() as c:
            return c.execute("SELECT COUNT(*) FROM trials").fetchone()[0]

    def groups(self) -> list[GroupSummary]:
        """One summary per (device, group): trials, failures, default and best times."""
        with self._transaction() as c:
            rows = c.execute(
                "SELECT target, device_name, group_key, MIN(summary) AS summary, MIN(shapes) AS shapes, "
                "COUNT(*) AS n, SUM(status != 'ok') AS failed, "
                "MIN(CASE WHEN is_default AND status = 'ok' THEN median_us END) AS default_us, "
                "MIN(CASE WHEN status = 'ok' THEN median_us END) AS best_us "
                "FROM trials GROUP BY target, device_name, group_key ORDER BY target, device_name, summary"
            ).fetchall()
            out = []
            for r in rows:
                best = c.execute("SELECT schedule FROM trials WHERE target = ? AND device_name = ? AND "
                                 "group_key = ? AND status = 'ok' ORDER BY median_us LIMIT 1",
                                 (r["target"], r["device_name"], r["group_key"])).fetchone()
                out.append(GroupSummary(r["target"], r["device_name"], r["group_key"], r["summary"], r["shapes"],
                                        r["n"], r["failed"], r["default_us"], r["best_us"],
                                        best["schedule"] if best else None))
        return out

    # ------------------------------------------------------------------ files
    def export_jsonl(self, path: str, **filters) -> int:
        """Write the matching trials as JSON lines (one record per line); returns how many."""
        trials = self.trials(**filters)
        try:
            with open(path, "w") as f:
                for t in trials:
                    f.write(json.dumps(t.to_dict(), sort_keys=True) + "\n")
        except OSError as exc:
            raise DatabaseError(f"cannot write {path}: {exc}") from None
        return len(trials)

    def import_jsonl(self, path: str) -> int:
        """Add the trials of a JSON lines file (those already here are skipped); returns
        how many were new."""
        trials = []
        try:
            with open(path) as f:
                lines = f.readlines()
        except OSError as exc:
            raise DatabaseError(f"cannot read {path}: {exc}") from None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                trials.append(Trial.from_dict(json.loads(line)))
            except (ValueError, TypeError, KeyError, ArgumentError) as exc:
                raise DatabaseError(f"{path}, line {n}: not a tuning record ({exc})") from None
        return self.add(trials)

    def close(self) -> None:
        conn = self._memory or getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
