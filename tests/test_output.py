"""Honest, readable output: one estimate per kernel, short reprs, the quickstart's
baseline, PyTorch CPU tensors through ww.jit."""
import os
import re
import sys

import numpy as np
import pytest

import warpweave as ww
from tests.utils import softmax as _softmax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def program():
    with ww.options(fuse=False):
        return ww.jit(_softmax, target="cpu").lower(np.ones((64, 256), np.float32))


def test_one_time_estimate_per_kernel(program):
    text = program.dump("groups")
    estimates = re.findall(r"([0-9.]+) us", text)
    assert len(estimates) == len(program.kernels) > 1
    assert [float(e) for e in estimates] == [round(k.cost.time_s * 1e6, 1) for k in program.kernels]


def test_reprs_are_short_and_readable(program):
    assert repr(program).startswith("<warpweave.Program softmax(float32[64, 256]) target=cpu kernels=")
    lines = repr(program.kernels).splitlines()
    assert len(lines) == len(program.kernels)
    assert all(len(line) < 200 and "KernelInfo" in line for line in lines)
    assert repr(program.kernels[0]).startswith(f"<KernelInfo {program.kernels[0].name} ops=[")


def test_quickstart_baseline_is_float32_numpy():
    source = open(os.path.join(ROOT, "examples", "quickstart.py")).read()
    assert "numpy float32" in source
    timing = source[source.index("def numpy_softmax"):source.index("def timed")]
    assert "astype" not in timing


def test_pytorch_cpu_tensors_go_in_and_come_out():
    torch = pytest.importorskip("torch", reason="PyTorch interop: .ci/run installs torch==2.13.0, the CPU build")
    f = ww.jit(lambda x, b: (ww.relu(x + b), (x * b).sum()), target="cpu")
    x, b = torch.randn(4, 8, requires_grad=True), torch.randn(8)
    y, s = f(x, b)
    assert isinstance(y, torch.Tensor) and isinstance(s, torch.Tensor)
    torch.testing.assert_close(y, torch.relu(x + b).detach())
    torch.testing.assert_close(s, (x * b).sum().detach(), rtol=1e-5, atol=1e-5)
    z = ww.jit(lambda x: x * 2.0, target="cpu")(x.detach().to(torch.bfloat16))
    assert z.dtype == torch.bfloat16
    torch.testing.assert_close(z, (x.detach() * 2).to(torch.bfloat16))


def test_svg_beside_each_dot_where_graphviz_is_installed(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "dot"  # stands in for Graphviz: `dot -Tsvg IN -o OUT`
    fake.write_text(f"#!{sys.executable}\nimport sys\nopen(sys.argv[4], 'w').write('<svg/>')\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    with ww.options(dump_dir=str(tmp_path / "dumps")):
        program = ww.jit(_softmax, target="interp").lower(np.ones((2, 16), np.float32))
    files = os.listdir(program.dump_dir)
    dots = sorted(f[:-4] for f in files if f.endswith(".dot"))
    assert dots and dots == sorted(f[:-4] for f in files if f.endswith(".svg"))
