"""Device profiles: shipped models by device name, saved profiles read back, damaged
ones ignored, and (GPU tier) calibration measuring the device the compiler then uses."""
import dataclasses
import json

import numpy as np
import pytest

from warpweave.passes.cost import H100, H200, device_for
from warpweave.pipeline import profiles


def test_shipped_profiles_by_device_name():
    assert device_for("gpu", 132, "NVIDIA H200") is H200
    assert device_for("gpu", 132, "NVIDIA H100 80GB HBM3") is H100
    assert H200.bandwidth > H100.bandwidth
    other = device_for("gpu", 66, "Some GPU")
    assert other.sm_count == 66 and other.bandwidth == pytest.approx(H100.bandwidth / 2)


def test_profile_round_trip_and_damage(tmp_path, monkeypatch):
    monkeypatch.setenv("WARPWEAVE_CACHE_DIR", str(tmp_path))
    path = profiles.profile_path("NVIDIA H200", 132, 1980000)
    assert path.startswith(str(tmp_path)) and path.endswith("nvidia-h200-132sm-1980mhz.json")
    (tmp_path / "devices").mkdir()
    model = dataclasses.replace(H200, name="NVIDIA H200 (calibrated)", bandwidth=4.1e12)
    with open(path, "w") as f:
        json.dump(dataclasses.asdict(model), f)
    assert profiles._read(path) == model
    for junk in ("{", '{"name": 1}', "[]"):
        with open(path, "w") as f:
            f.write(junk)
        assert profiles._read(path) is None


@pytest.mark.gpu
def test_calibrate_measures_this_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("WARPWEAVE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(profiles, "_CALIBRATED", {})
    from warpweave.calibrate import calibrate

    model, path = calibrate(nbytes=1 << 28, reps=5)
    assert 5e11 < model.bandwidth < 2e13 and 0 < model.launch_s < 1e-3 and model.ops_per_s > 1e12
    assert profiles.gpu_model() == model
    import warpweave as ww

    program = ww.jit(lambda x: x * 2.0, target="cuda").lower(np.ones(1024, np.float32))
    assert program.device == model
