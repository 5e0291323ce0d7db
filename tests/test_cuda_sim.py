"""The CUDA engine's kernels under the CUDA simulator, against the NumPy path.

Run as its own pytest invocation, since the simulator must be chosen before
numba is first imported (``.ci/run`` does this)::

    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/test_cuda_sim.py

NumPy arrays stand in for CuPy's (``_engine.NUMPY_ON_CUDA``), and the kernels
are built with tiny tiles (``_cuda_kernels.SMALL_TILES``: 16 threads per GEMM
block, 8 per element-wise block), so that every launch spans several blocks
and ends in partial tiles.  The simulator runs each thread in Python: shapes
stay tiny.
"""

import os

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    os.environ.get("NUMBA_ENABLE_CUDASIM") != "1",
    reason="the CUDA simulator tests run with NUMBA_ENABLE_CUDASIM=1 (a separate pytest run)")

import convmm  # noqa: E402
from convmm import _engine  # noqa: E402
from helpers import assert_close, make_conv_inputs, random_array, random_config  # noqa: E402
from test_reference import _transpose_case  # noqa: E402

METHODS = ["tiled_blas", "implicit_gemm", "direct"]
MAX_OUTPUTS = 400     # samples of a case's output, to keep the simulator quick


@pytest.fixture
def on_cuda(monkeypatch):
    """NumPy arrays through the CUDA engine, with tiny tiles."""
    pytest.importorskip("numba_cuda")
    from convmm import _cuda_engine, _cuda_kernels

    monkeypatch.setattr(_engine, "NUMPY_ON_CUDA", True)
    monkeypatch.setattr(_cuda_engine, "TILES", _cuda_kernels.SMALL_TILES)
    # One image per cuBLAS tile: the tiled paths loop over several tiles.
    monkeypatch.setattr(_cuda_engine, "WORKSPACE_BYTES", 1)
    return _cuda_engine


def _numpy_path(function, *args, **kw):
    """The same call on the CPU, through the array-API path (the oracle here)."""
    before = _engine.NUMPY_ON_CUDA
    _engine.NUMPY_ON_CUDA = False
    try:
        return function(*args, method="im2col", **kw)
    finally:
        _engine.NUMPY_ON_CUDA = before


def _small_case(rng, transposed=False):
    while True:
        if transposed:
            cfg, x, w, b, kw = _transpose_case(rng)
            y = _numpy_path(convmm.conv_transpose, x, w, **kw)
        else:
            cfg = random_config(rng)
            x, w, b = make_conv_inputs(rng, cfg)
            kw = cfg.kwargs(padding_mode=cfg.padding_mode)
            y = _numpy_path(convmm.conv, x, w, **kw)
        if y.size <= MAX_OUTPUTS and x.size <= MAX_OUTPUTS:
            return cfg, x, w, b, kw, y


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", range(16))
def test_every_map_on_the_simulated_gpu(on_cuda, method, seed):
    """conv, conv_backward, conv_transpose and its backward: every kernel a method uses,
    on random ranks, strides, dilations, groups, padding modes, formats and dtypes."""
    rng = np.random.default_rng(7000 + seed)
    cfg, x, w, b, kw, y = _small_case(rng)
    kept = x.copy(), w.copy()
    assert_close(convmm.conv(x, w, b, method=method, **kw),
                 _numpy_path(convmm.conv, x, w, b, **kw), np, dtype=cfg.dtype)
    g = random_array(rng, y.shape, cfg.dtype)
    got = convmm.conv_backward(g, x, w, method=method, **kw)
    want = _numpy_path(convmm.conv_backward, g, x, w, **kw)
    for actual, desired in zip(got, want):
        assert_close(actual, desired, np, dtype=cfg.dtype)
    np.testing.assert_array_equal(x, kept[0])
    np.testing.assert_array_equal(w, kept[1])

    cfg, x, w, b, kw, y = _small_case(rng, transposed=True)
    assert_close(convmm.conv_transpose(x, w, b, method=method, **kw), y if b is None else
                 _numpy_path(convmm.conv_transpose, x, w, b, **kw), np, dtype=cfg.dtype)
    g = random_array(rng, y.shape, cfg.dtype)
    got = convmm.conv_transpose_backward(g, x, w, method=method, **kw)
    want = _numpy_path(convmm.conv_transpose_backward, g, x, w, **kw)
    for actual, desired in zip(got, want):
        assert_close(actual, desired, np, dtype=cfg.dtype)


@pytest.mark.parametrize("shape", [(1, 1, 1), (8, 4, 8), (13, 11, 19), (5, 9, 3)])
def test_gemm_kernel(on_cuda, shape):
    """The tiled GEMM: edge tiles in every dimension, K beyond one stage; c += a·b too."""
    from convmm import _cuda_kernels

    tiles = _cuda_kernels.SMALL_TILES
    m, k, n = shape
    rng = np.random.default_rng(m * k * n)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    c = np.full((m, n), np.nan, np.float32)
    gemm = _cuda_kernels.gemm_kernel(tiles, "float32")
    grid = (-(-n // tiles.bn), -(-m // tiles.bm))
    gemm[grid, tiles.gemm_threads](a, b, c, False)
    want = a.astype(np.float64) @ b
    np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-5 * np.sqrt(k))
    gemm[grid, tiles.gemm_threads](a, b, c, True)
    np.testing.assert_allclose(c, 2 * want, rtol=1e-5, atol=2e-5 * np.sqrt(k))


@pytest.mark.parametrize("method", METHODS)
def test_results_are_bitwise_repeatable(on_cuda, method):
    """col2im gathers and the weight gradient reduces in a fixed order: the same bits twice."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    kw = dict(stride=2, padding=1, groups=2, padding_mode="reflect", method=method)
    g = rng.standard_normal(convmm.conv(x, w, **kw).shape).astype(np.float32)
    first, second = (convmm.conv_backward(g, x, w, **kw) for _ in range(2))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_explain_says_the_gpu_runs_it(on_cuda):
    x = np.ones((1, 4, 6, 6), np.float32)
    w = np.ones((4, 4, 3, 3), np.float32)
    assert convmm.explain(convmm.conv, x, w).startswith(
        "conv: implicit_gemm (real floating point: one kernel, no patch tiles): on the GPU")
    depthwise = convmm.explain(convmm.conv, x, np.ones((4, 1, 3, 3), np.float32), groups=4)
    assert depthwise.startswith("conv: direct") and "on the GPU" in depthwise
    lines = convmm.explain(convmm.conv_backward, np.ones((1, 4, 3, 3), np.float32), x, w,
                           stride=2).splitlines()
    assert lines[0].startswith("input: tiled_blas") and "cuBLAS" in lines[0]
    assert lines[1].startswith("weight: tiled_blas") and "cuBLAS" in lines[1]
