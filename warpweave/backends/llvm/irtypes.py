"""How GIR values are typed in LLVM IR: integer types, the register and memory types
of each dtype, and shufflevector lane masks."""
from __future__ import annotations

from llvmlite import ir

from ...ir import dtypes as dt

I1, I8, I16, I32, I64 = ir.IntType(1), ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)


def reg_type(d: dt.DType) -> ir.Type:
    """How a value of dtype `d` is held in registers (bfloat16: its 16 bits)."""
    return {"bool": I1, "int32": I32, "int64": I64, "float16": ir.HalfType(),
            "bfloat16": I16, "float32": ir.FloatType(), "float64": ir.DoubleType()}[d.name]


def mem_type(d: dt.DType) -> ir.Type:
    """How an element of dtype `d` is stored in memory (bool: one byte)."""
    return I8 if d.is_bool else reg_type(d)


def lane_mask(lanes: list[int]) -> ir.Constant:
    """A shufflevector mask picking `lanes`."""
    return ir.Constant(ir.VectorType(I32, len(lanes)), lanes)
