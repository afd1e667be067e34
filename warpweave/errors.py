"""The errors warpweave raises. Every one is a `warpweave.Error`."""


class Error(Exception):
    """Base class of every error warpweave raises on purpose."""


class ShapeError(Error, ValueError):
    """Shapes that do not fit together (broadcasting, reshape, matmul, reductions)."""


class IndexOutOfRangeError(ShapeError, IndexError):
    """An integer index outside its axis (also an IndexError, like numpy's, so that
    iteration protocols stop on it)."""


class DTypeError(Error, TypeError):
    """A dtype that the operation or the target does not support."""


class UnsupportedError(Error, NotImplementedError):
    """An operation, argument or construct warpweave cannot compile."""


class OptionError(UnsupportedError, ValueError):
    """An option value a function does not know (e.g. gelu's `approximate`)."""


class ArgumentError(Error, TypeError):
    """A compiled program was called with the wrong number or kind of arguments."""


class IRError(Error):
    """A malformed IR object (raised by constructors, parsers and verifiers)."""


class VerificationError(IRError):
    """A GIR kernel or tensor graph broke an invariant checked by the verifier."""


class ParseError(IRError):
    """The text form of an IR object could not be read back."""


class TargetError(Error, RuntimeError):
    """A target that is unknown or not usable on this machine."""


class CompileError(Error, RuntimeError):
    """Code generation failed (LLVM, PTX, or the driver rejected a module)."""


class StitchError(CompileError):
    """A fused kernel has a round trip the stitcher cannot prove local, warp or
    regional; the driver then compiles that group's operations separately."""


class ResourceError(Error):
    """A kernel exceeds a limit of its target (threads, registers, shared memory)."""


class CudaError(Error, RuntimeError):
    """A CUDA driver call failed. `.name` holds the CUDA error name (for example
    "CUDA_ERROR_INVALID_VALUE"), `.code` its number and `.call` the driver function."""

    def __init__(self, message: str, name: str = "", code: int | None = None, call: str = ""):
        super().__init__(message)
        self.name = name
        self.code = code
        self.call = call

    def __reduce__(self):
        return (type(self), (str(self), self.name, self.code, self.call))


class FallbackError(Error, RuntimeError):
    """In strict mode (`strict=True`, `WARPWEAVE_STRICT=1`), raised where the torch
    backend would otherwise run part of a graph in PyTorch after a failure."""


class FallbackWarning(UserWarning):
    """The torch backend ran part of a graph in PyTorch after a failure (warned once
    per operation and reason)."""
