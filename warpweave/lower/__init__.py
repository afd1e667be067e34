"""Lowering: (operation or fusion group, schedule) → GIR kernels."""
