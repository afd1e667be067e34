"""The CUDA backend: PTX code generation (no GPU needed) and the cuda-python runtime."""
