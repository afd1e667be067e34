"""`warpweave doctor`: what this machine can compile and run, and what to do about
each problem."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile

from ..pipeline.cache import ENV_VAR, cache_dir


def register(subparsers) -> None:
    subparsers.add_parser("doctor", help="check Python, LLVM, CUDA, PyTorch and the cache",
                          description=__doc__).set_defaults(func=run)


def _python():
    ok = sys.version_info >= (3, 10)
    return ok, f"Python {platform.python_version()}", "" if ok else "warpweave needs Python >= 3.10"


def _llvm():
    try:
        import llvmlite
        import llvmlite.binding as llvm

        llvm.initialize_native_target()
        version = ".".join(map(str, llvm.llvm_version_info))
        return True, (f"llvmlite {llvmlite.__version__}, LLVM {version}, host "
                      f"{llvm.get_process_triple()} ({llvm.get_host_cpu_name()})"), ""
    except Exception as exc:  # noqa: BLE001 - a broken install is what doctor reports
        return False, f"llvmlite unusable: {type(exc).__name__}: {exc}", \
            "pip install 'llvmlite>=0.44' (the cpu and cuda targets need it)"


def _ptxas():
    path = shutil.which("ptxas")
    if not path:
        return None, "ptxas not on PATH", ("only the ptx test tier needs it; install the CUDA "
                                           "toolkit and put its bin/ on PATH")
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
        version = out.stdout.strip().splitlines()[-1]
    except (OSError, subprocess.SubprocessError, IndexError) as exc:
        return None, f"ptxas at {path} does not run ({exc})", "reinstall the CUDA toolkit"
    return True, f"ptxas {path}: {version}", ""


def _cuda():
    try:
        import cuda.bindings  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return None, f"cuda-python not importable ({type(exc).__name__})", \
            "pip install 'warpweave[cuda]' to run on NVIDIA GPUs (the cuda target compiles without it)"
    from ..backends.cuda import driver

    if not driver.available():
        return None, f"no usable GPU: {driver.unavailable_reason()}", \
            "install the NVIDIA driver, or use target='cpu' (the default without a GPU)"
    d = driver.device()
    return True, (f"GPU {d.name} ({d.arch}, {d.sm_count} SMs), driver CUDA "
                  f"{driver.driver_version()}"), ""


def _torch():
    try:
        import torch
    except Exception as exc:  # noqa: BLE001
        return None, f"PyTorch not importable ({type(exc).__name__})", \
            "pip install 'warpweave[torch]' for torch.compile(backend='warpweave')"
    cuda = "CUDA available" if torch.cuda.is_available() else "CPU only"
    return True, f"PyTorch {torch.__version__} ({cuda})", ""


def _graphviz():
    path = shutil.which("dot")
    return (True, f"Graphviz dot {path}", "") if path else \
        (None, "Graphviz dot not on PATH", "install graphviz to get .svg beside each .dot dump")


def _cache():
    directory = cache_dir()
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory):
            pass
    except OSError as exc:
        return False, f"compile cache {directory} is not writable ({exc.strerror or exc})", \
            f"set {ENV_VAR} to a writable directory (compiles are cached in memory only until then)"
    return True, f"compile cache {directory} (writable)", ""


CHECKS = (_python, _llvm, _ptxas, _cuda, _torch, _graphviz, _cache)


def run(args) -> int:
    """One line per check: ok, note (optional component missing) or problem, with the fix."""
    failed = False
    for check in CHECKS:
        ok, what, todo = check()
        mark = {True: "ok     ", None: "note   ", False: "PROBLEM"}[ok]
        print(f"{mark} {what}")
        if todo:
            print(f"        -> {todo}")
        failed |= ok is False
    return 1 if failed else 0
