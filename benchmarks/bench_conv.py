"""Time and peak memory of conv, conv_transpose and conv_backward over the layer suite,
and each engine's GEMM against its BLAS.

Parameterised by layer (the bundled ``layers.json``), method and backend
(NumPy; CuPy where a GPU is present, the device synchronised inside the timed
call).  ``setup`` runs each call once, so the kernels are compiled (or loaded
from Numba's on-disk cache) before anything is timed.  A combination that does
not apply (CuPy without a GPU, an engine method on CuPy without the CUDA
engine) raises NotImplementedError in ``setup``, which asv reports as skipped.
"""

from __future__ import annotations

import math

import numpy as np

import convmm
from convmm._bench.cases import Layer, load_layers

LAYERS = {spec["name"]: spec for spec in load_layers()}
METHODS = ["auto", "im2col", "tiled_blas", "implicit_gemm", "direct"]
BACKENDS = ["numpy", "cupy"]


def _namespace(backend):
    if backend == "numpy":
        return np, lambda: None
    try:
        import cupy
        cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # no CuPy, or no GPU
        raise NotImplementedError(f"no CuPy GPU: {error}") from None
    return cupy, cupy.cuda.get_current_stream().synchronize


class _Suite:
    params = (list(LAYERS), METHODS, BACKENDS)
    param_names = ["layer", "method", "backend"]
    timeout = 300
    which = "forward"

    def setup(self, name, method, backend):
        xp, self.sync = _namespace(backend)
        if backend != "numpy" and method not in ("auto", "im2col"):
            from convmm._engines.cuda.engine import unavailable_reason

            if unavailable_reason() is not None:
                raise NotImplementedError(unavailable_reason())
        layer = Layer(LAYERS[name])
        rng = np.random.default_rng(0)
        x = rng.standard_normal((layer.n, layer.in_channels, *layer.spatial), dtype=np.float32)
        w = rng.standard_normal((layer.out_channels, layer.in_channels // layer.groups,
                                 *layer.kernel), dtype=np.float32)
        w /= math.sqrt(w[0].size)
        g = rng.standard_normal((layer.n, layer.out_channels, *layer.output), dtype=np.float32)
        self.x, self.w, self.g = (xp.asarray(a) for a in (x, w, g))
        self.layer, self.method = layer, method
        self.run()          # compile or load the kernels before timing

    def run(self):
        raise NotImplementedError

    def _timed(self):
        self.run()
        self.sync()


class Conv(_Suite):
    def run(self):
        return convmm.conv(self.x, self.w, method=self.method, **self.layer.keywords())

    def time_conv(self, *_):
        self._timed()

    def peakmem_conv(self, *_):
        self.run()


class ConvTranspose(_Suite):
    def run(self):
        return convmm.conv_transpose(self.g, self.w, output_size=self.layer.spatial,
                                     method=self.method, **self.layer.keywords())

    def time_conv_transpose(self, *_):
        self._timed()

    def peakmem_conv_transpose(self, *_):
        self.run()


class ConvBackward(_Suite):
    def run(self):
        return convmm.conv_backward(self.g, self.x, self.w, method=self.method,
                                    **self.layer.keywords())

    def time_conv_backward(self, *_):
        self._timed()

    def peakmem_conv_backward(self, *_):
        self.run()


class Gemm:
    """convmm's Numba GEMM (the implicit-GEMM kernel's core) against numpy.matmul, on the CPU."""

    params = ([1024, 2048], ["numba", "numpy"])
    param_names = ["size", "implementation"]

    def setup(self, size, implementation):
        from convmm._engines.cpu import engine

        rng = np.random.default_rng(0)
        a = rng.standard_normal((size, size), dtype=np.float32)
        b = rng.standard_normal((size, size), dtype=np.float32)
        c = np.empty((size, size), dtype=np.float32)
        if implementation == "numpy":
            self.run = lambda: np.matmul(a, b, out=c)
        else:
            self.run = lambda: engine.gemm(a, b, c)
        self.run()

    def time_gemm(self, *_):
        self.run()


class CudaGemm:
    """The CUDA engine's block-tiled GEMM against cupy.matmul (cuBLAS), float32, on the GPU
    (the device synchronised inside the timed call); skipped without a GPU."""

    params = ([4096], ["convmm", "cupy"])
    param_names = ["size", "implementation"]

    def setup(self, size, implementation):
        cupy, self.sync = _namespace("cupy")
        from convmm._engines.cuda import engine

        if implementation == "convmm" and engine.unavailable_reason() is not None:
            raise NotImplementedError(engine.unavailable_reason())
        rng = np.random.default_rng(0)
        a, b = (cupy.asarray(rng.standard_normal((size, size), dtype=np.float32))
                for _ in range(2))
        c = cupy.empty((size, size), cupy.float32)
        if implementation == "cupy":
            self.run = lambda: cupy.matmul(a, b, out=c)
        else:
            self.run = lambda: engine.gemm(a, b, c)
        self.run()
        self.sync()

    def time_gemm(self, *_):
        self.run()
        self.sync()


class Smoke:
    """One quick benchmark for CI: the strided, dilated RGB layer, forward, auto."""

    def setup(self):
        layer = Layer(LAYERS["rgb_stride3_dilated"], batch=2)
        rng = np.random.default_rng(0)
        self.x = rng.standard_normal((layer.n, layer.in_channels, *layer.spatial), dtype=np.float32)
        self.w = rng.standard_normal((layer.out_channels, layer.in_channels, *layer.kernel),
                                     dtype=np.float32)
        self.keywords = layer.keywords()
        convmm.conv(self.x, self.w, **self.keywords)

    def time_rgb_stride3_dilated_forward(self):
        convmm.conv(self.x, self.w, **self.keywords)
