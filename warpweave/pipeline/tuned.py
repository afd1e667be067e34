"""Tuned schedules for default compiles: the tuning database's winner for a group on
this device, else the predictor's choice from tuned neighbours of the same structure
(`tune.predict`), else nothing (the default schedule).

Only a database that exists is read (a compile never creates one), only for the
cpu and cuda targets, and only for the device this process compiles for; a point is
used only if it is in the group's space.
"""
from __future__ import annotations

import os
import threading

from ..ir.tensor import TensorGraph
from ..options import current
from ..passes.fuse import Group
from ..schedule.space import space
from ..schedule.templates import Schedule
from ..tune.database import Database, DatabaseError
from ..tune.features import describe
from ..tune.predict import Predictor
from ..tune.records import DeviceInfo, cuda_device, host_device, schedule_from_json
from ..errors import ArgumentError
from .cache import tuning_db_path


class TunedSchedules:
    """The database's records for one device, read once per database file version."""

    def __init__(self, db: Database, device: DeviceInfo, stamp: tuple):
        self.db = db
        self.device = device
        self.stamp = stamp  # the database file's identity and version: part of compiled programs' keys
        self.predictor = Predictor(db.trials(target=device.target, device_name=device.name, status="ok"))

    def choose(self, group: Group, graph: TensorGraph, key: str, family: str,
               sm_count: int, arch: str) -> tuple[Schedule, str] | None:
        """(schedule, "database" or "predicted") for the group whose `group_key` is
        `key` (`family`: "gpu" or "cpu"; `arch`: the GPU's architecture), or None."""
        points = space(group, graph, family, sm_count, arch)
        best = self.db.best(key, self.device)
        if best is not None:
            try:
                schedule = schedule_from_json(best.schedule)
            except ArgumentError:
                schedule = None
            if schedule in points:
                return schedule, "database"
        info = describe(group, graph)
        predicted = self.predictor.predict(self.device.target, self.device.name, info.structure, info.shapes,
                                           info.dtypes, points, points[0])
        return (predicted, "predicted") if predicted is not None else None


_LOADED: dict[tuple, TunedSchedules | None] = {}
_LOCK = threading.Lock()


def tuned_schedules(target: str) -> TunedSchedules | None:
    """The tuned schedules for `target` ("cpu" or "cuda") on this machine's device, or
    None when tuning is off, the database does not exist or holds nothing for the device."""
    if not current().tuned or target not in ("cpu", "cuda"):
        return None
    path = tuning_db_path()
    try:
        stamp = os.stat(path).st_mtime_ns
    except OSError:
        return None
    try:  # WAL mode: writes land in the -wal file until a checkpoint
        stamp = (stamp, os.stat(path + "-wal").st_mtime_ns)
    except OSError:
        pass
    if target == "cuda":
        from ..backends.cuda import driver

        if not driver.available():
            return None
        device = cuda_device(driver.current_ordinal())
    else:
        device = host_device()
    key = (path, stamp, device)
    with _LOCK:
        if key not in _LOADED:
            try:
                db = Database(path)
                _LOADED[key] = TunedSchedules(db, device, (path, stamp, device.target, device.name)) if db.has_device(device) else None
            except DatabaseError:
                _LOADED[key] = None
        return _LOADED[key]
