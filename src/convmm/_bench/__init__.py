"""The harness behind ``python -m convmm bench``: convmm timed against PyTorch (and SciPy,
and its own GEMM methods) on the layer suite.  Not library API: nothing in convmm imports
it but its command line (``convmm.__main__``), and it may change with any release.

- ``cases``: the case tables: the layer suite (``layers.json``, ``Layer``), the small-layer
  and large-kernel sections, ``--scaling``'s configurations, and the calls that run a case.
- ``measure``: timing and memory: medians of alternating calls, extra memory, the GEMM and
  start-up sections, the two backends (``Host``, ``Gpu``).
- ``workers``: the CPU bench's worker processes, one per library, and their protocol
  (``python -m convmm._bench.workers --worker LIBRARY``).
- ``runs``: the suite run on the CPU (through the workers) or on the GPU (in one process).
- ``reports``: the report's figures, its text, its JSON and its chart.
- ``cli``: the command line, ``add_arguments`` and ``run``, for ``convmm.__main__``.
- ``larger_than_memory``: ``bench --larger-than-memory``, a Zarr volume through convmm on a
  Dask cluster.
"""
