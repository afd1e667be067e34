"""warpweave: a tensor compiler for memory-bound work.

    @ww.jit
    def f(x, b):
        return ww.gelu(x + b, approximate="tanh")

See README.md for a tour and docs/architecture.md for how the compiler is built.
"""
from .errors import (ArgumentError, CompileError, DTypeError, Error, FallbackError, FallbackWarning,
                     IndexOutOfRangeError,
                     IRError, OptionError, ParseError, ResourceError, ShapeError, StitchError, TargetError,
                     UnsupportedError, VerificationError)

from .version import __version__

# Element types.
from .ir.dtypes import bfloat16, bool_, float16, float32, float64, int32, int64
# The function library (on traced tensors and on tensor-expression values).
from .frontend.ops import (abs, cos, erf, exp, gelu, layer_norm, log, log_softmax, matmul, maximum,
                           minimum, relu, rms_norm, rsqrt, sigmoid, sin, softmax, sqrt, take, tanh, where)
from .frontend.ops import (arccos, arccosh, arcsin, arcsinh, arctan, arctan2, arctanh, copysign, cosh, exp2,
                           digamma, expm1, fmod, hypot, isfinite, isinf, isnan, lgamma, log1p, log2, signbit, sinh, tan)
# Tensor expressions (sum/max/min are also the reducers inside ww.compute).
from .frontend.te import compute, max, min, placeholder, reduce_axis, sum
# Compiling and running.
from .program import KernelInfo, Program
from .frontend.jit import JitFunction, build, jit
from .frontend.tuning import tune
from .options import Options, options

_CUDA_NAMES = {"to_device": "to_device", "DeviceArray": "DeviceArray"}


def __getattr__(name):
    """CUDA arrays load on first use, so importing warpweave never imports cuda-python."""
    if name in _CUDA_NAMES:
        from .backends.cuda import arrays

        return getattr(arrays, _CUDA_NAMES[name])
    raise AttributeError(f"module 'warpweave' has no attribute {name!r}")
