"""The CUDA engine's kernels against the NumPy path: on a GPU, or under the CUDA simulator.

Where CuPy finds a GPU and numba-cuda its driver, the main ``python -m pytest``
runs these tests on CuPy arrays, with the default tiles and with tiny ones.
Without a GPU they run under numba-cuda's simulator, which must be chosen
before numba is first imported, so as a pytest run of its own (``.ci/run``
does this)::

    NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/test_cuda_engine.py

There NumPy arrays stand in for CuPy's (``Tunables.numpy_on_cuda``), and the
kernels are built with tiny tiles (``kernels.SMALL_TILES``: 16 threads
per GEMM block, 8 per element-wise block), so that every launch spans several
blocks and ends in partial tiles.  The simulator runs each thread in Python:
shapes stay tiny.
"""

import dataclasses
import json
import os
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from helpers import backend_names

SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def _gpu_engine():
    """True where CuPy has a GPU and the CUDA engine can run on it."""
    if "cupy" not in backend_names():
        return False
    from convmm._engines.cuda.engine import unavailable_reason

    return unavailable_reason() is None


pytestmark = pytest.mark.skipif(
    not SIMULATED and not _gpu_engine(),
    reason="no GPU for the CUDA engine; its kernels run under the simulator with "
           "NUMBA_ENABLE_CUDASIM=1 (a separate pytest run)")

import convmm  # noqa: E402
from convmm._engines import tunables  # noqa: E402
from helpers import (assert_close, make_conv_inputs, namespace, random_array,  # noqa: E402
                     random_config, to_numpy)
from helpers import random_transpose_case, tune  # noqa: E402

METHODS = ["tiled_blas", "implicit_gemm", "direct"]
MAX_OUTPUTS = 400     # samples of a case's output, to keep the simulator quick


class Device:
    """Where the engine's arrays live: ``xp`` (NumPy under the simulator, CuPy on a GPU)
    and ``put``, a NumPy array (or None) moved there."""

    def __init__(self, xp):
        self.xp = xp

    def put(self, *arrays):
        moved = [a if a is None or self.xp is np else self.xp.asarray(a) for a in arrays]
        return moved[0] if len(moved) == 1 else moved


@pytest.fixture(params=["small tiles"] if SIMULATED else ["small tiles", "default tiles"])
def on_cuda(request, monkeypatch):
    """The CUDA engine's device: NumPy arrays under the simulator, CuPy's on a GPU.

    With small tiles a cuBLAS tile holds one image, so the tiled paths loop over
    several tiles, and every kernel's grid spans several blocks."""
    pytest.importorskip("numba_cuda")
    from convmm._engines.cuda import engine as cuda_engine, kernels

    if request.param == "small tiles":
        monkeypatch.setattr(cuda_engine, "TILES", kernels.SMALL_TILES)
        tune(monkeypatch, cuda_workspace_bytes=1)
    if SIMULATED:
        tune(monkeypatch, numpy_on_cuda=True)
        return Device(np)
    return Device(namespace("cupy"))


def _numpy_path(function, *args, **kw):
    """The same call on the CPU, through the array-API path (the oracle here)."""
    before = tunables.TUNABLES
    tunables.TUNABLES = dataclasses.replace(before, numpy_on_cuda=False)
    try:
        return function(*args, method="im2col", **kw)
    finally:
        tunables.TUNABLES = before


def _small_case(rng, transposed=False):
    while True:
        if transposed:
            cfg, x, w, b, kw = random_transpose_case(rng)
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
def test_every_map_by_every_method(on_cuda, method, seed):
    """conv, conv_backward, conv_transpose and its backward: every kernel a method uses,
    on random ranks, strides, dilations, groups, padding modes, formats and dtypes;
    results on the engine's device, inputs untouched."""
    rng = np.random.default_rng(7000 + seed)
    xp = on_cuda.xp
    cfg, x, w, b, kw, y = _small_case(rng)
    g = random_array(rng, y.shape, cfg.dtype)
    dx, dw, db, dg = on_cuda.put(x, w, b, g)
    assert_close(convmm.conv(dx, dw, db, method=method, **kw),
                 _numpy_path(convmm.conv, x, w, b, **kw), xp, dtype=cfg.dtype)
    got = convmm.conv_backward(dg, dx, dw, method=method, **kw)
    want = _numpy_path(convmm.conv_backward, g, x, w, **kw)
    for actual, desired in zip(got, want):
        assert_close(actual, desired, xp, dtype=cfg.dtype)
    np.testing.assert_array_equal(to_numpy(dx), x)
    np.testing.assert_array_equal(to_numpy(dw), w)

    cfg, x, w, b, kw, y = _small_case(rng, transposed=True)
    g = random_array(rng, y.shape, cfg.dtype)
    dx, dw, db, dg = on_cuda.put(x, w, b, g)
    assert_close(convmm.conv_transpose(dx, dw, db, method=method, **kw), y if b is None else
                 _numpy_path(convmm.conv_transpose, x, w, b, **kw), xp, dtype=cfg.dtype)
    got = convmm.conv_transpose_backward(dg, dx, dw, method=method, **kw)
    want = _numpy_path(convmm.conv_transpose_backward, g, x, w, **kw)
    for actual, desired in zip(got, want):
        assert_close(actual, desired, xp, dtype=cfg.dtype)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed", range(4))
def test_every_kernel_covers_its_work_from_a_capped_grid(on_cuda, method, seed, monkeypatch):
    """CUDA caps a grid at 65535 blocks in y and z (``engine.MAX_GRID``), where the
    engine puts channels, images and groups: a deep layer or a large batch would
    exceed it.  Under caps of two blocks per dimension every kernel must loop over
    its grid and still write every element once."""
    from convmm._engines.cuda import engine as cuda_engine

    monkeypatch.setattr(cuda_engine, "MAX_GRID", (2, 2, 2))
    test_every_map_by_every_method(on_cuda, method, 100 + seed)
    if method == "tiled_blas":
        test_gemm_kernel(on_cuda, (19, 9, 21), "float32")


@pytest.mark.parametrize("dtype", ["float32", "complex128"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (8, 4, 8), (13, 11, 19), (5, 9, 3)])
def test_gemm_kernel(on_cuda, shape, dtype):
    """The tiled GEMM: edge tiles in every dimension, K beyond one stage; c += a·b too."""
    from convmm._engines.cuda import engine as cuda_engine

    m, k, n = shape
    rng = np.random.default_rng(m * k * n)
    a = random_array(rng, (m, k), dtype)
    b = random_array(rng, (k, n), dtype)
    c = on_cuda.put(np.full((m, n), np.nan, dtype))
    want = a.astype(np.complex128) @ b
    tol = 1e-5 if dtype == "float32" else 1e-13
    assert cuda_engine.gemm(*on_cuda.put(a, b), c) is c
    np.testing.assert_allclose(to_numpy(c), want, rtol=tol, atol=tol * np.sqrt(k))
    cuda_engine.gemm(*on_cuda.put(a, b), c, accumulate=True)
    np.testing.assert_allclose(to_numpy(c), 2 * want, rtol=tol, atol=2 * tol * np.sqrt(k))
    with pytest.raises(ValueError, match="gemm"):
        cuda_engine.gemm(*on_cuda.put(a, b, np.empty((m + 1, n), dtype)))


@pytest.mark.parametrize("method", METHODS)
def test_results_are_bitwise_repeatable(on_cuda, method):
    """col2im gathers and the weight gradient reduces in a fixed order: the same bits twice."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 5, 5)).astype(np.float32)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    kw = dict(stride=2, padding=1, groups=2, padding_mode="reflect", method=method)
    g = rng.standard_normal((2, 4, 3, 3)).astype(np.float32)     # conv's output shape
    x, w, g = on_cuda.put(x, w, g)
    first, second = (convmm.conv_backward(g, x, w, **kw) for _ in range(2))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


def test_explain_says_the_gpu_runs_it(on_cuda):
    x, w, depthwise_w, g = on_cuda.put(np.ones((1, 4, 6, 6), np.float32),
                                       np.ones((4, 4, 3, 3), np.float32),
                                       np.ones((4, 1, 3, 3), np.float32),
                                       np.ones((1, 4, 2, 2), np.float32))
    assert convmm.explain(convmm.conv, x, w).startswith(
        "conv: implicit_gemm (real floating point: one kernel, no patch tiles): on the GPU")
    depthwise = convmm.explain(convmm.conv, x, depthwise_w, groups=4)
    assert depthwise.startswith("conv: direct") and "on the GPU" in depthwise
    lines = convmm.explain(convmm.conv_backward, g, x, w, stride=2).splitlines()
    assert lines[0].startswith("input: tiled_blas") and "cuBLAS" in lines[0]
    assert lines[1].startswith("weight: tiled_blas") and "cuBLAS" in lines[1]


# --------------------------------------------------------------------------- the GPU bench
class _Event:
    def record(self):
        self.at = time.perf_counter()

    def synchronize(self):
        pass


class _MemoryHook:
    name = "hook"

    def __enter__(self):
        return self

    def __exit__(self, *_):
        return False


# Just enough of CuPy's API, on NumPy arrays, for ``bench.Gpu`` under the simulator
# (where the engine takes NumPy arrays for CuPy's): it checks the command's plumbing,
# not CuPy, and its times and memory mean nothing.
_STAND_IN_CUPY = SimpleNamespace(
    __version__="stand-in", ndarray=type("ndarray", (), {}), asarray=np.asarray, empty=np.empty, matmul=np.matmul, abs=np.abs,
    float32=np.float32, float64=np.float64, random=SimpleNamespace(default_rng=np.random.default_rng),
    cuda=SimpleNamespace(
        runtime=SimpleNamespace(getDeviceCount=lambda: 1,
                                getDeviceProperties=lambda i: {"name": b"Simulated GPU"},
                                deviceSynchronize=lambda: None),
        Device=lambda: SimpleNamespace(id=0), Event=_Event, MemoryHook=_MemoryHook,
        get_elapsed_time=lambda start, end: (end.at - start.at) * 1e3,
        get_current_stream=lambda: SimpleNamespace(ptr=0)))


@pytest.mark.parametrize("tf32", [False, True])
def test_gpu_bench(on_cuda, tf32, tmp_path, monkeypatch, capsys):
    """``python -m convmm bench --backend cupy`` on a tiny layer: report, JSON and TF32 setting."""
    from convmm._bench import cases, measure
    from convmm.__main__ import main

    if SIMULATED:
        monkeypatch.setitem(sys.modules, "cupy", _STAND_IN_CUPY)
    monkeypatch.setattr(measure.Gpu, "GEMM_SIZE", 9)
    monkeypatch.setattr(cases, "LARGE_KERNELS", (
        dict(name="tiny_blur", dtype="float32", peer="torch", target=1.0,
             x=(1, 1, 9, 8), w=(1, 1, 4, 3), padding="same"),
        dict(name="tiny_fwd+bwd", dtype="float32", peer="torch", target=1.0,
             x=(1, 2, 5, 4), w=(2, 2, 3, 3), padding="same", backward=True)))
    monkeypatch.delenv("CUPY_TF32", raising=False)
    layers = tmp_path / "layers.json"
    layers.write_text('{"layers": [{"name": "tiny", "N": 2, "C": 2, "spatial": [4, 3], "K": 2, '
                      '"kernel": [3, 2], "stride": 1, "padding": 1, "dilation": 1}]}')
    out = tmp_path / "gpu.json"
    argv = ["bench", "--backend", "cupy", "--layers-file", str(layers), "--batch", "1",
            "--repeats", "1", "--no-startup", "--no-torch", "--json", str(out)]
    assert main(argv + (["--tf32"] if tf32 else [])) == 0
    report = json.loads(out.read_text())
    assert report["backend"] == "cupy" and report["batch"] == 1 and report["peer"] == "cuDNN"
    assert [r["which"] for r in report["results"]] == ["forward", "transpose", "backward"]
    assert all(r["seconds"] > 0 for r in report["results"])
    assert all(r["repeatable"] is True for r in report["results"])
    assert [(r["case"], r["method"]) for r in report["large"]] == [
        ("tiny_blur", "fft"), ("tiny_blur", "direct"),      # auto: too few channels for a GEMM
        ("tiny_fwd+bwd", "fft"), ("tiny_fwd+bwd", "direct")]
    assert all(r["seconds"] > 0 and r["peer"] == "cuDNN" for r in report["large"])
    assert os.environ["CUPY_TF32"] == ("1" if tf32 else "0")
    (gemm,) = report["gemm"]
    assert gemm["size"] == 9 and gemm["peer"] == "cupy.matmul (cuBLAS)"
    assert gemm["relative_error"] < 1e-5
    printed = capsys.readouterr().out
    assert f"TF32 {'allowed' if tf32 else 'off'} (CUPY_TF32={int(tf32)})" in printed
    assert "GEMM 9³ float32: convmm" in printed
    assert "same bits on a second run: 1 of 1 layers" in printed
    assert "large kernels (fft and auto against cuDNN)" in printed


@pytest.mark.parametrize("groups", [1, 4])
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_empty_batches(on_cuda, data_format, groups):
    """N = 0 through every map and method: empty results, zero weight and bias gradients."""
    from test_robustness import check_empty_batches

    methods = ("auto", "tiled_blas", "implicit_gemm") + (("direct",) if groups > 1 else ())
    check_empty_batches(on_cuda.xp, methods, 2, data_format, groups)
