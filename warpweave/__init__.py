"""warpweave: a tensor compiler for memory-bound work."""
from .errors import (ArgumentError, CompileError, DTypeError, Error, IRError, ParseError,
                     ResourceError, ShapeError, TargetError, UnsupportedError, VerificationError)

__version__ = "0.1.0"
