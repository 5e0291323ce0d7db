"""CUDA GEMM kernels (numba-cuda): a shared-memory block-tiled GEMM with register
blocking, and the implicit-GEMM convolution built on the same block tiling, whose
patch tiles are gathered into shared memory straight from the image.

The CPU engine's twin is ``_engines/cpu/gemm.py``.  Like every kernel of the
CUDA engine they come from factories closed over a ``kernels.Tiles``
configuration (compile-time constants of the shared and local arrays) and the
element type, built once per pair; images are read through ``index_tables``'
``gather_index`` (see ``kernels``).  No atomics: each element of C is written
by one thread, so results are the same bits on every run.
"""

from __future__ import annotations

from functools import lru_cache

# A module global, not a local of the factories: the CUDA simulator swaps the
# kernels' global ``cuda`` for its own.
from numba import cuda

from .kernels import Tiles, numba_type


@lru_cache(maxsize=None)
def _block_tiling(tiles: Tiles):
    """The device functions both GEMM kernels are made of (one thread's view of a block).

    ``load_a(a_tile, a, row0, k0, thread)``: a[row0:row0+BM, k0:k0+BK] into
    shared memory as a_tile[k, i], zeros past a's edges.
    ``multiply(a_tile, b_tile, acc, a_reg, b_reg, thread)``: acc += the thread's
    TM×TN share of a_tile·b_tile: rows ty + i·BM/TM, columns tx + j·BN/TN
    (strided, so that neighbouring threads read neighbouring shared words).
    """
    bm, bn, bk, tm, tn = tiles.bm, tiles.bn, tiles.bk, tiles.tm, tiles.tn
    columns, rows = bn // tn, bm // tm
    block = columns * rows

    @cuda.jit(device=True)
    def load_a(a_tile, a, row0, k0, thread):
        m, k = a.shape
        for e in range(thread, bm * bk, block):
            r, kk = e // bk, e % bk
            if row0 + r < m and k0 + kk < k:
                a_tile[kk, r] = a[row0 + r, k0 + kk]
            else:
                a_tile[kk, r] = 0

    @cuda.jit(device=True)
    def multiply(a_tile, b_tile, acc, a_reg, b_reg, thread):
        tx, ty = thread % columns, thread // columns
        for kk in range(bk):
            for i in range(tm):
                a_reg[i] = a_tile[kk, ty + i * rows]
            for j in range(tn):
                b_reg[j] = b_tile[kk, tx + j * columns]
            for i in range(tm):
                for j in range(tn):
                    acc[i, j] += a_reg[i] * b_reg[j]

    return load_a, multiply


@lru_cache(maxsize=None)
def gemm_kernel(tiles: Tiles, dtype_name: str):
    """``gemm[grid, block](a, b, c, accumulate)``: c (=, or += if accumulate) a·b.

    a (M, K), b (K, N), c (M, N); grid (⌈N/BN⌉, ⌈M/BM⌉), block ``tiles.gemm_threads``.
    Each stage loads a BM×BK slice of a and a BK×BN slice of b into shared
    memory; each thread keeps a TM×TN tile of c in registers and updates it
    with outer products of TM values of a and TN values of b per k.
    """
    bm, bn, bk, tm, tn = tiles.bm, tiles.bn, tiles.bk, tiles.tm, tiles.tn
    columns, rows = bn // tn, bm // tm
    block = columns * rows
    dtype = numba_type(dtype_name)
    load_a, multiply = _block_tiling(tiles)

    @cuda.jit
    def gemm(a, b, c, accumulate):
        a_tile = cuda.shared.array((bk, bm), dtype)
        b_tile = cuda.shared.array((bk, bn), dtype)
        acc = cuda.local.array((tm, tn), dtype)
        a_reg = cuda.local.array(tm, dtype)
        b_reg = cuda.local.array(tn, dtype)
        m, k = a.shape
        n = b.shape[1]
        thread = cuda.threadIdx.x
        tx, ty = thread % columns, thread // columns
        for row0 in range(cuda.blockIdx.y * bm, m, cuda.gridDim.y * bm):
            for col0 in range(cuda.blockIdx.x * bn, n, cuda.gridDim.x * bn):
                for i in range(tm):
                    for j in range(tn):
                        acc[i, j] = 0
                for k0 in range(0, k, bk):
                    load_a(a_tile, a, row0, k0, thread)
                    for e in range(thread, bk * bn, block):
                        kk, cc = e // bn, e % bn
                        if k0 + kk < k and col0 + cc < n:
                            b_tile[kk, cc] = b[k0 + kk, col0 + cc]
                        else:
                            b_tile[kk, cc] = 0
                    cuda.syncthreads()
                    multiply(a_tile, b_tile, acc, a_reg, b_reg, thread)
                    cuda.syncthreads()
                for i in range(tm):
                    r = row0 + ty + i * rows
                    if r < m:
                        for j in range(tn):
                            cc = col0 + tx + j * columns
                            if cc < n:
                                if accumulate:
                                    c[r, cc] += acc[i, j]
                                else:
                                    c[r, cc] = acc[i, j]

    return gemm


@lru_cache(maxsize=None)
def implicit_conv_kernel(tiles: Tiles, dtype_name: str):
    """``conv[grid, block](x, plan, w, channels_last, y)``: y = W_g·P_n for every image and group,
    the patch tile built in shared memory from the image (the patch matrix never exists).

    x (N, C_in, P) or (N, P, C_in); plan (T, L); w (G, O_g, C_g·T);
    y (N, C_out, L) or (N, L, C_out); grid (⌈L/BN⌉, ⌈O_g/BM⌉, N·G).
    """
    bm, bn, bk, tm, tn = tiles.bm, tiles.bn, tiles.bk, tiles.tm, tiles.tn
    columns, rows = bn // tn, bm // tm
    block = columns * rows
    dtype = zero = numba_type(dtype_name)
    load_a, multiply = _block_tiling(tiles)

    @cuda.jit
    def conv(x, plan, w, channels_last, y):
        w_tile = cuda.shared.array((bk, bm), dtype)
        p_tile = cuda.shared.array((bk, bn), dtype)
        acc = cuda.local.array((tm, tn), dtype)
        a_reg = cuda.local.array(tm, dtype)
        b_reg = cuda.local.array(tn, dtype)
        groups, per_group, k = w.shape
        taps, positions = plan.shape
        pixels = x.shape[2] if channels_last == 0 else x.shape[1]
        in_per_group = k // taps
        thread = cuda.threadIdx.x
        tx, ty = thread % columns, thread // columns
        for z in range(cuda.blockIdx.z, x.shape[0] * groups, cuda.gridDim.z):
            image, g = z // groups, z % groups
            for row0 in range(cuda.blockIdx.y * bm, per_group, cuda.gridDim.y * bm):
                for col0 in range(cuda.blockIdx.x * bn, positions, cuda.gridDim.x * bn):
                    for i in range(tm):
                        for j in range(tn):
                            acc[i, j] = 0
                    for k0 in range(0, k, bk):
                        load_a(w_tile, w[g], row0, k0, thread)
                        for e in range(thread, bk * bn, block):
                            kk, cc = e // bn, e % bn
                            kr, l = k0 + kk, col0 + cc
                            value = zero(0)
                            if kr < k and l < positions:
                                c, t = kr // taps, kr % taps
                                s = plan[t, l]
                                if s < pixels:
                                    channel = g * in_per_group + c
                                    value = x[image, channel, s] if channels_last == 0 else x[image, s, channel]
                            p_tile[kk, cc] = value
                        cuda.syncthreads()
                        multiply(w_tile, p_tile, acc, a_reg, b_reg, thread)
                        cuda.syncthreads()
                    for i in range(tm):
                        o = row0 + ty + i * rows
                        if o < per_group:
                            for j in range(tn):
                                l = col0 + tx + j * columns
                                if l < positions:
                                    if channels_last == 0:
                                        y[image, g * per_group + o, l] = acc[i, j]
                                    else:
                                        y[image, l, g * per_group + o] = acc[i, j]

    return conv
