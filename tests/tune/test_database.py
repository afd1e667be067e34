import subprocess
import sys

import pytest

from warpweave.errors import ArgumentError
from warpweave.schedule.templates import CpuRowGroup, GpuRowGroup
from warpweave.tune.database import Database, DatabaseError
from warpweave.tune.records import DeviceInfo, Trial, schedule_from_json, schedule_to_json

CPU = DeviceInfo("cpu", "test cpu", sm_count=2)
GPU = DeviceInfo("cuda", "NVIDIA H200", "9.0", 132, "13000", "13.0.0")


def trial(vector=4, median=10.0, status="ok", key="g1", device=CPU, default=False):
    return Trial(key, "s1", "row[softmax] float32[8, 16]", ((8, 16), (8, 16)), ("float32", "float32"),
                 schedule_to_json(CpuRowGroup(vector=vector)), device, "exhaustive", status,
                 median if status == "ok" else None, median if status == "ok" else None, 3, 5.0, default,
                 "" if status == "ok" else "boom")


def test_schedule_json_round_trip():
    s = GpuRowGroup(threads=128, row_threads=64, vector=4, chunks=2, passes=3)
    assert schedule_from_json(schedule_to_json(s)) == s
    with pytest.raises(ArgumentError, match="unknown schedule template 'Nope'"):
        schedule_from_json('{"template": "Nope", "params": {}}')


def test_best_skips_failures_and_other_devices(db_path):
    db = Database(db_path)
    db.add([trial(4, 10.0, default=True), trial(8, 7.0), trial(16, status="failed"), trial(32, 1.0, device=GPU)])
    best = db.best("g1", CPU)
    assert schedule_from_json(best.schedule) == CpuRowGroup(vector=8) and best.median_us == 7.0
    assert db.best("g2", CPU) is None
    assert len(db.trials(status="failed")) == 1 and db.count() == 4
    [summary] = [g for g in db.groups() if g.target == "cpu"]
    assert (summary.trials, summary.failed, summary.default_us, summary.best_us) == (3, 1, 10.0, 7.0)
    assert db.clear(device_name="NVIDIA H200") == 1 and db.count() == 3


def test_export_import_round_trip(tmp_path, db_path):
    db = Database(db_path)
    trials = [trial(4, 10.0, default=True), trial(8, 7.0), trial(16, status="timeout"), trial(8, 2.0, device=GPU)]
    db.add(trials)
    path = str(tmp_path / "out.jsonl")
    assert db.export_jsonl(path) == 4
    other = Database(str(tmp_path / "other.db"))
    assert other.import_jsonl(path) == 4
    assert other.trials() == trials
    assert other.import_jsonl(path) == 0  # each trial once
    (tmp_path / "bad.jsonl").write_text('{"group_key": 1}\n')
    with pytest.raises(DatabaseError, match="bad.jsonl, line 1: not a tuning record"):
        other.import_jsonl(str(tmp_path / "bad.jsonl"))


WRITER = """
import sys
from tests.tune.test_database import trial
from warpweave.tune.database import Database
db = Database(sys.argv[1])
for n in range(60):
    db.add([trial(vector=4, median=float(n), key=sys.argv[2])])
"""


def test_two_processes_write_concurrently(db_path):
    Database(db_path)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, db_path, key]) for key in ("a", "b")]
    assert [p.wait(60) for p in procs] == [0, 0]
    db = Database(db_path)
    assert len(db.trials(group_key="a")) == 60 and len(db.trials(group_key="b")) == 60
    assert db._connection().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
