"""What a user finds around the compiler: a light import, logging, typing marker, docs."""
import logging
import os
import subprocess
import sys

import numpy as np

import warpweave as ww
from tests.utils import softmax as _softmax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_loads_no_heavy_dependency():
    heavy = ("ml_dtypes", "networkx", "cuda", "llvmlite.binding", "torch")
    code = f"import sys, warpweave; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=ROOT), timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def test_compile_stages_are_logged_at_debug(caplog, tmp_path):
    x = np.ones((3, 20), np.float32)
    with caplog.at_level(logging.DEBUG, logger="warpweave"), ww.options(dump_dir=str(tmp_path)):
        ww.jit(_softmax, target="cpu").lower(x)
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "warpweave")
    for stage in ("fusion plan in", "lowering and GIR passes in", "cpu code in", "compiled for cpu in"):
        assert stage in text, text


def test_distribution_files():
    for name in ("LICENSE", "CHANGELOG.md", "docs/user-guide.md", "warpweave/py.typed"):
        assert os.path.isfile(os.path.join(ROOT, name)), name
    assert "Apache License" in open(os.path.join(ROOT, "LICENSE")).read()
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert "docs/user-guide.md" in readme and "docs/architecture.md" in readme
    assert 'warpweave = "warpweave.cli:main"' in open(os.path.join(ROOT, "pyproject.toml")).read()
