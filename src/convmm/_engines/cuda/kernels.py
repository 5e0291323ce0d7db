"""CUDA kernels (numba-cuda) for the GPU engine: patch tiles, col2im as a gather and the
direct kernels, one thread per output element; the GEMMs are in ``gemm``.

Every kernel reads images through the im2col index of ``_core.index_tables`` (``gather_index``:
``index[t, l]`` is the flat input sample tap ``t`` reads at output position
``l``, ``P`` for a zero of the padding) or its inverse (``gather_index_adjoint``),
so strides, dilation and every padding mode cost nothing here.  Images are
flat: ``x[n, c, p]`` channels-first, ``x[n, p, c]`` channels-last (the flag
``channels_last``); a weight is the GEMM operand ``w[g, o, k]`` with ``k = c·T + t``.

The kernels come from factories closed over a ``Tiles`` configuration (block
and register tile sizes are compile-time constants for shared and local
arrays) and the element type, built once per pair.  The tests build them with
tiny tiles under the CUDA simulator, so that grids of several blocks and
partial edge tiles are exercised; the GPU runs the default tiles.

Every kernel loops over its grid (grid-stride loops in x, block loops in y and z),
so that ``engine._launch`` can cap a grid at CUDA's limits (``engine.MAX_GRID``:
2³¹ − 1 blocks in x, 65535 in y and z) and the kernel still covers every element.

No kernel uses atomics: each output element is written by one thread (the
weight gradient's by one block, reduced in a fixed order), so results are the
same bits on every run.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

# A module global, not a local of the factories: the CUDA simulator swaps the
# kernels' global ``cuda`` for its own.
from numba import cuda


class Tiles(NamedTuple):
    """Block tile BM×BN of C, depth BK per shared-memory stage, TM×TN per thread;
    ``threads``: the block size of the element-wise kernels (a power of two)."""

    bm: int = 128
    bn: int = 128
    bk: int = 8
    tm: int = 8
    tn: int = 8
    threads: int = 256

    @property
    def gemm_threads(self) -> int:
        return (self.bm // self.tm) * (self.bn // self.tn)


DEFAULT_TILES = Tiles()
SMALL_TILES = Tiles(bm=8, bn=8, bk=4, tm=2, tn=2, threads=8)
"""Tiny tiles for the simulator tests: 16 threads per GEMM block, 8 per element-wise block."""


def numba_type(dtype_name):
    from numba import types

    return {"float32": types.float32, "float64": types.float64,
            "complex64": types.complex64, "complex128": types.complex128}[dtype_name]


class Elementwise(NamedTuple):
    im2col: object
    col2im: object
    direct_forward: object
    direct_adjoint: object
    direct_weight_grad: object


@lru_cache(maxsize=None)
def elementwise_kernels(tiles: Tiles, dtype_name: str) -> Elementwise:
    """The kernels of one thread per output element (one block per weight element
    for the weight gradient), launched with ``tiles.threads`` threads per block:

    ``im2col[grid, block](x, index, channels_last, first_channel, start, cols)``
        cols[c·T + t, j] = x[n, first_channel + c, index[t, l]] for the flat
        (image, position) index q = start + j = n·L + l; cols (C_g·T, count);
        grid over (count, C_g·T).
    ``col2im[grid, block](cols, inverse, T, L, channels_last, first_channel, first_image, out)``
        out[n, first_channel + c, p] = Σ_r cols[c·T + t_r, (n − first_image)·L + l_r] over the
        (tap, position) pairs (t_r, l_r) = inverse[:, r, p] that read p (t_r < T)
        for the whole images the tile holds (a gather: no atomics); grid over
        (P, C_g, images).
    ``direct_forward[grid, block](x, index, w, channels_last, y)``
        y[n, o, l] = Σ_{c,t} w[o, c·T + t]·x[n, g·C_g + c, index[t, l]] with w
        (C_out, C_g·T), g = o // O_g; grid over (L, C_out, N).
    ``direct_adjoint[grid, block](gy, inverse, T, w, channels_last, out)``
        out[n, g·C_g + c, p] = Σ_{o ∈ g, r} w[o, c·T + t_r]·gy[n, o, l_r] over the same pairs;
        grid over (P, C_in, N).
    ``direct_weight_grad[grid, block](gy, x, index, channels_last, dw)``
        dw[o, c·T + t] = Σ_{n,l} gy[n, o, l]·x[n, g·C_g + c, index[t, l]]; one
        block per weight element, its threads' partial sums reduced in shared
        memory in a fixed order; grid (C_g·T, C_out).
    """
    threads = tiles.threads
    dtype = zero = numba_type(dtype_name)

    @cuda.jit
    def im2col(x, index, channels_last, first_channel, start, cols):
        rows, count = cols.shape
        taps, positions = index.shape
        pixels = x.shape[2] if channels_last == 0 else x.shape[1]
        for row in range(cuda.blockIdx.y, rows, cuda.gridDim.y):
            c, t = row // taps, row % taps
            for j in range(cuda.grid(1), count, cuda.gridsize(1)):
                q = start + j
                image, l = q // positions, q % positions
                s = index[t, l]
                value = zero(0)
                if s < pixels:
                    value = x[image, first_channel + c, s] if channels_last == 0 else x[image, s, first_channel + c]
                cols[row, j] = value

    @cuda.jit
    def col2im(cols, inverse, taps, positions, channels_last, first_channel, first_image, out):
        ranks, pixels = inverse.shape[1], inverse.shape[2]
        channels, images = cols.shape[0] // taps, cols.shape[1] // positions
        for local in range(cuda.blockIdx.z, images, cuda.gridDim.z):
            for c in range(cuda.blockIdx.y, channels, cuda.gridDim.y):
                for p in range(cuda.grid(1), pixels, cuda.gridsize(1)):
                    total = zero(0)
                    for r in range(ranks):
                        t = inverse[0, r, p]
                        if t < taps:
                            total += cols[c * taps + t, local * positions + inverse[1, r, p]]
                    if channels_last == 0:
                        out[first_image + local, first_channel + c, p] = total
                    else:
                        out[first_image + local, p, first_channel + c] = total

    @cuda.jit
    def direct_forward(x, index, w, channels_last, y):
        out_channels, k = w.shape
        taps, positions = index.shape
        pixels = x.shape[2] if channels_last == 0 else x.shape[1]
        in_channels = x.shape[1] if channels_last == 0 else x.shape[2]
        in_per_group = k // taps
        per_group = out_channels // (in_channels // in_per_group)
        for image in range(cuda.blockIdx.z, y.shape[0], cuda.gridDim.z):
            for o in range(cuda.blockIdx.y, out_channels, cuda.gridDim.y):
                first = (o // per_group) * in_per_group
                for l in range(cuda.grid(1), positions, cuda.gridsize(1)):
                    total = zero(0)
                    for t in range(taps):
                        s = index[t, l]
                        if s < pixels:
                            for c in range(in_per_group):
                                value = x[image, first + c, s] if channels_last == 0 else x[image, s, first + c]
                                total += w[o, c * taps + t] * value
                    if channels_last == 0:
                        y[image, o, l] = total
                    else:
                        y[image, l, o] = total

    @cuda.jit
    def direct_adjoint(gy, inverse, taps, w, channels_last, out):
        ranks, pixels = inverse.shape[1], inverse.shape[2]
        out_channels, k = w.shape
        in_channels = out.shape[1] if channels_last == 0 else out.shape[2]
        in_per_group = k // taps
        per_group = out_channels // (in_channels // in_per_group)
        for image in range(cuda.blockIdx.z, out.shape[0], cuda.gridDim.z):
            for channel in range(cuda.blockIdx.y, in_channels, cuda.gridDim.y):
                g, c = channel // in_per_group, channel % in_per_group
                for p in range(cuda.grid(1), pixels, cuda.gridsize(1)):
                    total = zero(0)
                    for r in range(ranks):
                        t, position = inverse[0, r, p], inverse[1, r, p]
                        if t < taps:
                            for o in range(g * per_group, (g + 1) * per_group):
                                value = gy[image, o, position] if channels_last == 0 else gy[image, position, o]
                                total += w[o, c * taps + t] * value
                    if channels_last == 0:
                        out[image, channel, p] = total
                    else:
                        out[image, p, channel] = total

    @cuda.jit
    def direct_weight_grad(gy, x, index, channels_last, dw):
        partial = cuda.shared.array(threads, dtype)
        thread = cuda.threadIdx.x
        out_channels, k = dw.shape
        taps, positions = index.shape
        n = x.shape[0]
        pixels = x.shape[2] if channels_last == 0 else x.shape[1]
        in_channels = x.shape[1] if channels_last == 0 else x.shape[2]
        in_per_group = k // taps
        per_group = out_channels // (in_channels // in_per_group)
        for o in range(cuda.blockIdx.y, out_channels, cuda.gridDim.y):
            for kr in range(cuda.blockIdx.x, k, cuda.gridDim.x):
                channel = (o // per_group) * in_per_group + kr // taps
                t = kr % taps
                total = zero(0)
                for q in range(thread, n * positions, threads):
                    image, l = q // positions, q % positions
                    s = index[t, l]
                    if s < pixels:
                        value = x[image, channel, s] if channels_last == 0 else x[image, s, channel]
                        grad = gy[image, o, l] if channels_last == 0 else gy[image, l, o]
                        total += grad * value
                partial[thread] = total
                cuda.syncthreads()
                half = threads // 2
                while half > 0:
                    if thread < half:
                        partial[thread] += partial[thread + half]
                    cuda.syncthreads()
                    half //= 2
                if thread == 0:
                    dw[o, kr] = partial[0]

    return Elementwise(im2col, col2im, direct_forward, direct_adjoint, direct_weight_grad)
