"""The command line: doctor, dump, explain, cache (through main() and as a module)."""
import os
import subprocess
import sys

import pytest

from warpweave.cli import GROUPS, main
from warpweave.pipeline import cache as C

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "examples", "quickstart.py")


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(C.ENV_VAR, str(tmp_path / "cache"))
    monkeypatch.setattr(C, "_default", {})
    return tmp_path / "cache"


def test_python_dash_m_and_help():
    out = subprocess.run([sys.executable, "-m", "warpweave", "--help"], cwd=ROOT, capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    assert out.returncode == 0
    for group in ("doctor", "dump", "explain", "cache", "calibrate", "tune", "db", "cluster"):
        assert group in out.stdout
    assert GROUPS == ("doctor", "inspect", "cache", "calibrate", "tune", "db", "cluster")


def test_doctor_reports_each_component(capsys, cache_dir):
    assert main(["doctor"]) == 0
    text = capsys.readouterr().out
    for what in ("Python", "llvmlite", "ptxas", "PyTorch", "compile cache"):
        assert what in text
    assert "writable" in text


def test_doctor_says_what_to_do_about_an_unwritable_cache(capsys, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(C.ENV_VAR, str(blocker / "cache"))
    assert main(["doctor"]) == 1
    assert "PROBLEM compile cache" in capsys.readouterr().out


def test_dump_and_explain(capsys, cache_dir):
    assert main(["dump", f"{QUICKSTART}:softmax", "--shapes", "8x32", "--target", "cpu",
                 "--stage", "tensor"]) == 0
    assert "placeholder([8, 32], float32)" in capsys.readouterr().out
    assert main(["dump", f"{QUICKSTART}:softmax", "--shapes", "8,32", "--target", "cpu",
                 "--stage", "llvm"]) == 0
    assert "define void @softmax" in capsys.readouterr().out
    assert main(["explain", f"{QUICKSTART}:layer_norm", "--shapes", "8x32", "32", "32",
                 "--target", "interp", "--no-fuse"]) == 0
    text = capsys.readouterr().out
    assert "<warpweave.Program layer_norm(float32[8, 32], float32[32], float32[32]) target=interp" in text
    assert "cost model:" in text and "group 1" in text


def test_bad_arguments_are_reported_not_raised(capsys):
    assert main(["dump", "nowhere.py:f", "--shapes", "3"]) == 1
    assert "no such file: nowhere.py" in capsys.readouterr().err
    assert main(["dump", f"{QUICKSTART}:missing", "--shapes", "3"]) == 1
    assert "defines no function 'missing'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["dump", f"{QUICKSTART}:softmax", "--shapes", "3", "--stage", "nope"])


def test_cache_info_and_clear(capsys, cache_dir):
    C.default_cache().put(C.make_key("cli"), b"x")
    assert main(["cache", "info"]) == 0
    assert f"directory: {cache_dir}" in capsys.readouterr().out
    assert main(["cache", "clear"]) == 0
    assert "removed 1 entries" in capsys.readouterr().out
    assert main(["cache", "info"]) == 0
    assert "entries:   0" in capsys.readouterr().out


def test_calibrate_without_a_gpu_says_so(capsys, monkeypatch):
    """The no-GPU branch, on any machine (tests/pipeline/test_profiles.py calibrates a
    real GPU in the gpu tier)."""
    from warpweave.backends.cuda import driver

    monkeypatch.setattr(driver, "available", lambda: False)
    monkeypatch.setattr(driver, "unavailable_reason", lambda: "no driver (test)")
    assert main(["calibrate"]) == 1
    assert "no usable CUDA GPU: no driver (test)" in capsys.readouterr().out
