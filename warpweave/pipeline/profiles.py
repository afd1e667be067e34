"""Device profiles: the cost model's numbers for the GPU in use — measured on it by
`calibrate` and kept in the cache directory, keyed by device name, SM count and
clocks — else a shipped profile (H100, H200), else an H100 scaled by SM count."""
from __future__ import annotations

import dataclasses
import json
import os
import re

from ..passes.cost import DeviceModel, device_for
from .cache import cache_dir

_CALIBRATED: dict[str, DeviceModel | None] = {}


def profile_path(name: str, sm_count: int, clock_khz: int) -> str:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
    return os.path.join(cache_dir(), "devices", f"{slug}-{sm_count}sm-{clock_khz // 1000}mhz.json")


def gpu_model() -> DeviceModel:
    """The model of the current GPU: its calibrated profile where one was measured,
    else `device_for`'s shipped or scaled one."""
    from ..backends.cuda import driver

    dev = driver.device()
    path = profile_path(dev.name, dev.sm_count, dev.clock_khz)
    if path not in _CALIBRATED:
        _CALIBRATED[path] = _read(path)
    return _CALIBRATED[path] or device_for("gpu", dev.sm_count, dev.name)


def _read(path: str) -> DeviceModel | None:
    """A saved profile, or None where there is none or it cannot be read."""
    try:
        with open(path) as f:
            return DeviceModel(**json.load(f))
    except (OSError, ValueError, TypeError):
        return None


def save_profile(model: DeviceModel) -> str:
    """Write a measured profile of the current GPU (atomically); returns its path."""
    from ..backends.cuda import driver

    dev = driver.device()
    path = profile_path(dev.name, dev.sm_count, dev.clock_khz)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(dataclasses.asdict(model), f, indent=1)
    os.replace(tmp, path)
    _CALIBRATED[path] = model
    return path
