"""Numba CPU kernels: patch tiles, col2im as a gather, and the direct depthwise convolution.

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

``col2im_*`` are the adjoint as a *gather* (``_plan.gather_index_adjoint``):
every input sample sums, in a fixed order, the tile entries that read it, so
the transposed operator has no scatter, no races and no atomics, and gives
the same bits on every run.  ``depthwise_*`` compute convolutions with one
input channel per group straight from a padded copy of one channel plane
(``_plan.padded_source``), the inner loop running along the last spatial dim.
"""

from __future__ import annotations

import numpy as np
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


@njit(nogil=True, cache=True)
def col2im_channels_first(cols, inverse, start, count, first_channel, y):
    """y[first_channel + c, p] += Σ_{r,t} cols[c·T + t, l − start] over positions l ∈ tile.

    One image: cols (C_g·T, ≥ count) holds positions ``start … start + count − 1``;
    inverse (R, T, P) from ``gather_index_adjoint``; y (C, P).
    """
    ranks, taps, pixels = inverse.shape
    channels = cols.shape[0] // taps
    stop = start + count
    for c in range(channels):
        target = y[first_channel + c]
        for p in range(pixels):
            total = target[p]
            for r in range(ranks):
                for t in range(taps):
                    position = inverse[r, t, p]
                    if start <= position < stop:
                        total += cols[c * taps + t, position - start]
            target[p] = total


@njit(nogil=True, cache=True)
def col2im_channels_last(cols, inverse, start, count, first_channel, y):
    """y[p, first_channel + c] += Σ_{r,t} cols[l − start, t·C_g + c] over positions l ∈ tile.

    One image: cols (≥ count, T·C_g); inverse (R, T, P); y (P, C).
    """
    ranks, taps, pixels = inverse.shape
    channels = cols.shape[1] // taps
    stop = start + count
    for p in range(pixels):
        target = y[p, first_channel:first_channel + channels]
        for r in range(ranks):
            for t in range(taps):
                position = inverse[r, t, p]
                if start <= position < stop:
                    source = cols[position - start, t * channels:(t + 1) * channels]
                    for c in range(channels):
                        target[c] += source[c]


@njit(nogil=True, cache=True)
def _pad_plane(x, source, padded):
    """padded[q] = x[source[q]], or 0 where source[q] == len(x)."""
    pixels = x.shape[0]
    for q in range(source.shape[0]):
        s = source[q]
        padded[q] = x[s] if s < pixels else 0


@njit(nogil=True, cache=True)
def depthwise_forward(x, w, source, rows, width, dilation, stride, first, stop, y):
    """Planes ``first … stop − 1`` of a depthwise convolution, channels-first.

    x (N·C, P) input planes; w (C·m, T) with m output channels per input
    channel; y (N·C·m, L).  Output row r, sample j, tap (t_lead, k) reads padded
    sample rows[r, t_lead] + k·dilation + j·stride; ``width`` is the output row length.
    """
    multiplier = y.shape[0] // x.shape[0]
    channels = w.shape[0] // multiplier
    n_rows, lead_taps = rows.shape
    last_taps = w.shape[1] // lead_taps
    padded = np.empty(source.shape[0], x.dtype)
    for plane in range(first, stop):
        _pad_plane(x[plane], source, padded)
        c = plane % channels
        for m in range(multiplier):
            o = c * multiplier + m
            out = y[plane * multiplier + m]
            out[:] = 0
            for r in range(n_rows):
                target = out[r * width:(r + 1) * width]
                for tl in range(lead_taps):
                    for k in range(last_taps):
                        weight = w[o, tl * last_taps + k]
                        src = padded[rows[r, tl] + k * dilation:]
                        if stride == 1:
                            for j in range(width):
                                target[j] += weight * src[j]
                        else:
                            for j in range(width):
                                target[j] += weight * src[j * stride]


@njit(nogil=True, cache=True)
def depthwise_adjoint(y, w, adjoint, rows, width, dilation, stride, padded_size, first, stop, x):
    """Planes ``first … stop − 1`` of the depthwise convolution's transpose, channels-first.

    y (N·C·m, L); w (C·m, T); x (N·C, P) receives Cᵀ·y: the taps spread each
    output sample over a padded plane, and the padding's adjoint gathers the
    plane back (``adjoint`` from ``padded_source``), one plane per thread.
    """
    multiplier = y.shape[0] // x.shape[0]
    channels = w.shape[0] // multiplier
    n_rows, lead_taps = rows.shape
    last_taps = w.shape[1] // lead_taps
    padded = np.empty(padded_size + 1, y.dtype)
    for plane in range(first, stop):
        padded[:] = 0
        c = plane % channels
        for m in range(multiplier):
            o = c * multiplier + m
            grad = y[plane * multiplier + m]
            for r in range(n_rows):
                source = grad[r * width:(r + 1) * width]
                for tl in range(lead_taps):
                    for k in range(last_taps):
                        weight = w[o, tl * last_taps + k]
                        dst = padded[rows[r, tl] + k * dilation:]
                        if stride == 1:
                            for j in range(width):
                                dst[j] += weight * source[j]
                        else:
                            for j in range(width):
                                dst[j * stride] += weight * source[j]
        target = x[plane]
        for p in range(target.shape[0]):
            total = padded[adjoint[0, p]]
            for r in range(1, adjoint.shape[0]):
                total += padded[adjoint[r, p]]
            target[p] = total


@njit(nogil=True, cache=True)
def depthwise_weight_grad(g, x, source, rows, width, dilation, stride, first, stop, dw):
    """dw[o, t] += Σ_{l} g[plane·m + m', l] · x̃[plane, …] over planes ``first … stop − 1``.

    g (N·C·m, L) the output gradient; x (N·C, P) the input planes; dw (C·m, T).
    """
    multiplier = g.shape[0] // x.shape[0]
    channels = dw.shape[0] // multiplier
    n_rows, lead_taps = rows.shape
    last_taps = dw.shape[1] // lead_taps
    padded = np.empty(source.shape[0], x.dtype)
    for plane in range(first, stop):
        _pad_plane(x[plane], source, padded)
        c = plane % channels
        for m in range(multiplier):
            o = c * multiplier + m
            grad = g[plane * multiplier + m]
            for r in range(n_rows):
                gr = grad[r * width:(r + 1) * width]
                for tl in range(lead_taps):
                    for k in range(last_taps):
                        src = padded[rows[r, tl] + k * dilation:]
                        total = gr[0] * src[0]
                        if stride == 1:
                            for j in range(1, width):
                                total += gr[j] * src[j]
                        else:
                            for j in range(1, width):
                                total += gr[j] * src[j * stride]
                        dw[o, tl * last_taps + k] += total
