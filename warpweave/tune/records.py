"""What a trial records: the schedule as replayable JSON, the device it ran on, and
the measured times or the reason it failed."""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
import typing
from dataclasses import dataclass, field

from ..errors import ArgumentError
from ..schedule import templates
from ..version import __version__

TEMPLATES = {cls.__name__: cls for cls in typing.get_args(templates.Schedule)}
STATUSES = ("ok", "failed", "incorrect", "timeout")


def schedule_to_json(schedule: templates.Schedule) -> str:
    """`{"template": name, "params": {...}}` with sorted keys (equal schedules, equal text)."""
    return json.dumps({"template": type(schedule).__name__, "params": dataclasses.asdict(schedule)},
                      sort_keys=True)


def schedule_from_json(text: str) -> templates.Schedule:
    """The schedule record `schedule_to_json` wrote; an ArgumentError for an unknown template."""
    data = json.loads(text)
    cls = TEMPLATES.get(data.get("template"))
    if cls is None:
        raise ArgumentError(f"unknown schedule template {data.get('template')!r} in a tuning record; "
                            f"this warpweave knows {sorted(TEMPLATES)}")
    return cls(**data["params"])


@dataclass(frozen=True)
class DeviceInfo:
    """The identity of the machine a trial ran on; records are looked up by
    (`target`, `name`)."""

    target: str                    # "cpu" or "cuda"
    name: str
    compute_capability: str = ""   # e.g. "9.0" (cuda)
    sm_count: int = 0              # SMs (cuda) or logical cores (cpu)
    driver_version: str = ""
    cuda_version: str = ""


@functools.cache
def host_device() -> DeviceInfo:
    """The CPU this process runs on."""
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return DeviceInfo("cpu", name, sm_count=os.cpu_count() or 1)


def cuda_device(ordinal: int = 0) -> DeviceInfo:
    """CUDA device `ordinal` as the driver reports it."""
    from ..backends.cuda import driver

    d = driver.device(ordinal)
    try:
        from cuda import bindings
        cuda_version = bindings.__version__
    except (ImportError, AttributeError):
        cuda_version = ""
    return DeviceInfo("cuda", d.name, f"{d.compute_capability[0]}.{d.compute_capability[1]}", d.sm_count,
                      str(driver.driver_version()), cuda_version)


@dataclass(frozen=True)
class Trial:
    """One measured (or failed) point of one group's schedule space."""

    group_key: str                 # content hash of the group's ops, shapes and dtypes
    structure: str                 # hash of the group's ops without shapes (`features.structure_key`)
    summary: str                   # readable: the group's pattern and ops
    shapes: tuple                  # the group's input and output shapes
    dtypes: tuple
    schedule: str                  # schedule_to_json
    device: DeviceInfo
    strategy: str
    status: str                    # one of STATUSES
    median_us: float | None = None
    min_us: float | None = None
    runs: int = 0
    estimate_us: float | None = None  # the cost model's estimate
    is_default: bool = False       # the default compile's schedule
    error: str = ""
    version: str = field(default=__version__)

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ArgumentError(f"trial status {self.status!r}; expected one of {STATUSES}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["shapes"] = [list(s) for s in self.shapes]
        d["dtypes"] = list(self.dtypes)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Trial":
        d = dict(d)
        d["device"] = DeviceInfo(**d["device"])
        d["shapes"] = tuple(tuple(s) for s in d["shapes"])
        d["dtypes"] = tuple(d["dtypes"])
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ArgumentError(f"a tuning record has unknown fields {sorted(unknown)}")
        return cls(**d)
