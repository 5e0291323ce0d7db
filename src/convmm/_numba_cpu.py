"""Numba CPU kernels: patch extraction into cache-sized tiles.

Imported only when a NumPy call runs on the CPU engine (never by ``import
convmm``); compiled once per dtype and cached on disk (``cache=True``).  The
kernels are serial and release the GIL (``nogil=True``): the engine runs one
per worker thread, each followed by a single-threaded BLAS GEMM on the same
thread, so no two thread pools ever compete for the cores.

Both kernels apply the im2col plan of ``_plan.gather_index``: ``plan[t, l]`` is
the flat input sample that tap ``t`` reads at output position ``l`` — every
stride, dilation, rank and padding mode folded into one table — or ``P`` (the
number of samples) where the tap reads a zero.  A tile covers the flat
(image, position) indices ``start … start + count − 1`` of the whole batch,
so small images share one tile and large ones are cut into several.
"""

from __future__ import annotations

from numba import njit


@njit(nogil=True, cache=True)
def patches_channels_last(x, plan, start, count, first_channel, out):
    """out[r, t·C_g + c] = x[n, plan[t, l], first_channel + c] for tile row r = (n, l).

    x: (N, P, C) contiguous; out: (≥ count, T·C_g) with C_g = out.shape[1] // T.
    """
    pixels = x.shape[1]
    taps, positions = plan.shape
    channels = out.shape[1] // taps
    n = start // positions
    position = start - n * positions
    for r in range(count):
        for t in range(taps):
            source = plan[t, position]
            row = out[r, t * channels:(t + 1) * channels]
            if source == pixels:
                row[:] = 0
            else:
                row[:] = x[n, source, first_channel:first_channel + channels]
        position += 1
        if position == positions:
            position = 0
            n += 1


@njit(nogil=True, cache=True)
def patches_channels_first(x, plan, start, count, first_channel, out):
    """out[c·T + t, r] = x[n, first_channel + c, plan[t, l]] for tile column r = (n, l).

    x: (N, C, P) contiguous; out: (C_g·T, ≥ count).
    """
    pixels = x.shape[2]
    taps, positions = plan.shape
    for row in range(out.shape[0]):
        c = row // taps
        t = row - c * taps
        channel = first_channel + c
        n = start // positions
        position = start - n * positions
        for r in range(count):
            source = plan[t, position]
            out[row, r] = 0 if source == pixels else x[n, channel, source]
            position += 1
            if position == positions:
                position = 0
                n += 1
