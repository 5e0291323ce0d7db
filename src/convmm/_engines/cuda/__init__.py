"""The CUDA engine: numba-cuda kernels (``kernels``, ``gemm``) on CuPy's stream, driven by
``engine``."""
