"""Every CUDA kernel compiles for the GPU, checked without one.

The simulator runs the kernels as Python, so it cannot catch what only the
real compiler rejects (nopython typing, shared and local array shapes, device
function calls).  numba-cuda compiles to PTX with NVVM and NVRTC alone (the
``cuda-toolkit`` wheels of the ``test`` extra), with no GPU and no driver.

The engine runs every map by every method with NumPy arrays routed to the
CUDA engine and its launches recorded instead of made; each recorded kernel is
then compiled for the types of the arguments it was given, which are the types
CuPy's arrays of the same dtypes and layouts have.
"""

import os

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(os.environ.get("NUMBA_ENABLE_CUDASIM") == "1",
                                reason="the simulator replaces the compiler")

import convmm  # noqa: E402
from helpers import tune  # noqa: E402

HOPPER = (9, 0)     # the compute capability of the H100/H200 the engine is measured on


def _compiler_or_skip():
    pytest.importorskip("numba_cuda")
    from numba import cuda

    from convmm._engines.cuda.engine import unavailable_reason

    if unavailable_reason() is None:
        # The device functions compiled below would stay compiled for Hopper in this
        # process; on a GPU the engine's tests compile every kernel for it anyway.
        pytest.skip("a GPU is present: tests/test_cuda_engine.py compiles the kernels for it")

    def probe(a):
        a[0] = 1

    from numba import float32

    try:
        cuda.compile_ptx(probe, (float32[::1],), cc=HOPPER)
    except Exception as error:      # no NVVM or NVRTC library
        pytest.skip(f"numba-cuda cannot compile here: {error}")
    return cuda


@pytest.fixture(scope="module")
def launches():
    """(kernel, argument types) of every launch the engine makes over the maps, methods,
    dtypes and data formats below, with the kernels not run."""
    cuda = _compiler_or_skip()
    from convmm._engines.cuda import engine as cuda_engine

    recorded = set()

    def record(kernel, grid, block, stream, *args):
        from numba import typeof

        recorded.add((kernel, tuple(typeof(a) for a in args)))

    patches = pytest.MonkeyPatch()
    tune(patches, numpy_on_cuda=True)
    patches.setattr(cuda_engine, "_launch", record)
    try:
        rng = np.random.default_rng(0)
        for dtype in ("float32", "float64", "complex64", "complex128"):
            for data_format in ("channels_first", "channels_last"):
                x = rng.standard_normal((2, 4, 6, 5)).astype(dtype)
                w = rng.standard_normal((6, 2, 3, 2)).astype(dtype)
                depthwise = rng.standard_normal((4, 1, 3, 3)).astype(dtype)
                if data_format == "channels_last":
                    x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
                    w = np.ascontiguousarray(np.moveaxis(w, (0, 1), (-1, -2)))
                    depthwise = np.ascontiguousarray(np.moveaxis(depthwise, (0, 1), (-1, -2)))
                for method in ("tiled_blas", "implicit_gemm", "direct"):
                    for weight, groups in ((w, 2), (depthwise, 4)):
                        kw = dict(stride=(2, 1), padding=1, groups=groups, method=method,
                                  data_format=data_format)
                        # No kernel runs: the tiled paths' BLAS steps multiply
                        # uninitialised tiles.
                        with np.errstate(all="ignore"):
                            y = convmm.conv(x, weight, **kw)
                            convmm.conv_backward(y, x, weight, **kw)
                            convmm.conv_transpose(y, weight, output_size=(6, 5), **kw)
        from convmm._engines.cuda import gemm as gemm_kernels, kernels

        gemm = gemm_kernels.gemm_kernel(kernels.DEFAULT_TILES, "float32")
        a = np.ones((4, 4), np.float32)
        record(gemm, None, None, 0, a, a, a, False)
    finally:
        patches.undo()
    return cuda, recorded


def test_the_engine_launches_every_kernel(launches):
    _, recorded = launches
    names = {kernel.py_func.__name__ for kernel, _ in recorded}
    assert names >= {"gemm", "conv", "im2col", "col2im", "direct_forward", "direct_adjoint",
                     "direct_weight_grad"}, names


def test_every_kernel_compiles_to_ptx(launches, monkeypatch):
    cuda, recorded = launches
    # Device functions (the GEMM kernels' block-tiling steps) compile for the current
    # device's compute capability, which without a GPU means asking a driver there is
    # none of: name Hopper's for them too.
    from numba.cuda import dispatcher
    from types import SimpleNamespace

    monkeypatch.setattr(dispatcher, "get_current_device",
                        lambda: SimpleNamespace(compute_capability=HOPPER))
    failures = []
    for kernel, types in recorded:
        try:
            ptx, _ = cuda.compile_ptx(kernel.py_func, types, cc=HOPPER)
            assert ".entry" in ptx
        except Exception as error:
            failures.append(f"{kernel.py_func.__name__}{types}: {type(error).__name__}: "
                            f"{str(error)[:300]}")
    assert not failures, "\n".join(failures)


def test_launch_caps_every_grid_at_cudas_limits():
    """A grid beyond CUDA's limits (65535 blocks in y and z) fails to launch on a GPU,
    which the simulator does not check: ``_launch`` caps each dimension, and the kernels
    loop over their grid (tests/test_cuda_engine.py runs them under tiny caps)."""
    from convmm._engines.cuda import engine as cuda_engine

    grids = []

    class Kernel:
        def __getitem__(self, configuration):
            grids.append(configuration[0])
            return lambda *args: None

    cuda_engine._launch(Kernel(), (2 ** 40, 70000, 65535), (256, 1, 1), 0)
    cuda_engine._launch(Kernel(), (5, 3), (256, 1), 0)
    cuda_engine._launch(Kernel(), 2 ** 32, 256, 0)
    assert grids == [(2 ** 31 - 1, 65535, 65535), (5, 3), (2 ** 31 - 1,)]
