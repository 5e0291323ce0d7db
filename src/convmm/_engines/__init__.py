"""The engines: which method runs a call (``policy``), running it (``dispatch``), and the
CPU (``cpu/``, Numba on NumPy arrays) and CUDA (``cuda/``, numba-cuda on CuPy arrays)
engines side by side, their files named alike: ``engine`` (the drivers), ``kernels``
(patches, col2im, direct kernels) and ``gemm`` (the GEMM and the implicit-GEMM
convolution).  Importing this wing compiles and loads no kernel: the kernels' modules
are imported on an engine's first call.
"""
