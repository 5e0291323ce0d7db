"""The CPU engine: Numba kernels (``kernels``, ``gemm``, ``microkernel``) on worker threads
(``threads``), driven by ``engine``."""
