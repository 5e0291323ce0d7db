"""Numba kernels of the Winograd lowering: tiles transformed in, transforms out.

Every call is seen as 3-d (a 1-d or 2-d one has leading axes of one sample,
with the identity transform F(1, 1)).  Images are padded into a channels-last
canvas (B, E0, E1, E2, C) holding everything a tile reads.  Along axis i a
tile ``q`` of the ``d_i·T_i`` tiles is phase ``φ = q // T_i`` (the dilation's
sub-grid) and index ``j = q % T_i`` within it: it reads the α_i samples
``φ + (j·m_i + a)·d_i`` and writes the m_i outputs ``φ + (j·m_i + i)·d_i`` that
lie below O_i.  Tiles are numbered row-major over (image, q0, q1, q2).

``winograd_input`` writes ``V[ξ, k, :] = (Bᵀ d B)[ξ]`` for tile ``first + k``
(ξ row-major over the α0·α1·α2 transform points); the engine multiplies
``M[ξ] = V[ξ]·U[ξ]`` with the engine's packed GEMM (``transform_products``); ``winograd_output`` writes ``y = Aᵀ M A``.  A
transform is applied one axis at a time, to lines of channels, by the
generated ``winograd_lines`` (axes with the identity transform are skipped).
All arrays are flat and contiguous; both kernels run serially, one per worker.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .gemm import gemm
from .winograd_lines import line


@njit(nogil=True, cache=True)
def _origin(q, tiles, m, d):
    """The first sample of tile ``q`` along an axis: phase q // tiles, then m·d per tile."""
    phase = q // tiles
    return phase + (q - phase * tiles) * m * d


@njit(nogil=True, cache=True)
def _tile(tile, tiles, m, d):
    """(image, origin along axes 0, 1, 2) of a tile; tiles, m, d: (3,) arrays."""
    q1n, q2n = d[1] * tiles[1], d[2] * tiles[2]
    per_image = d[0] * tiles[0] * q1n * q2n
    image = tile // per_image
    rest = tile - image * per_image
    q0 = rest // (q1n * q2n)
    rest -= q0 * q1n * q2n
    q1 = rest // q2n
    q2 = rest - q1 * q2n
    return (image, _origin(q0, tiles[0], m[0], d[0]), _origin(q1, tiles[1], m[1], d[1]),
            _origin(q2, tiles[2], m[2], d[2]))


@njit(nogil=True, cache=True)
def _passes(kinds):
    """The axes a transform runs along, last axis first; identity axes (kind 0) skipped,
    but at least one (a 1×1×1 kernel still copies)."""
    count = 0
    for axis in range(3):
        if kinds[axis] != 0:
            count += 1
    axes = np.empty(max(count, 1), dtype=np.int64)
    axes[0] = 2
    k = 0
    for axis in range(2, -1, -1):
        if kinds[axis] != 0:
            axes[k] = axis
            k += 1
    return axes


@njit(nogil=True, cache=True)
def _apply(kind, sizes, axis, src, s0, sstride, dst, d0, dstride, n):
    """One pass: ``line`` along ``axis`` for every index of the other two axes (``sizes``)."""
    r0 = 1 if axis == 0 else sizes[0]
    r1 = 1 if axis == 1 else sizes[1]
    r2 = 1 if axis == 2 else sizes[2]
    for i0 in range(r0):
        for i1 in range(r1):
            for i2 in range(r2):
                line(kind, src, s0 + i0 * sstride[0] + i1 * sstride[1] + i2 * sstride[2],
                     sstride[axis], dst, d0 + i0 * dstride[0] + i1 * dstride[1] + i2 * dstride[2],
                     dstride[axis], n)


@njit(nogil=True, cache=True)
def winograd_input(canvas, extent, kinds, alpha, m, d, tiles, first, stop, v, block, scratch):
    """v[ξ, k, :] = (Bᵀ d B)[ξ] of tile ``first + k`` for tiles first … stop − 1.

    canvas: flat (B, E0, E1, E2, C) with ``extent`` = (E0, E1, E2, C); kinds: each
    axis's index in ``LINES``; alpha, m, d, tiles: (3,) int arrays; v: flat
    (α0·α1·α2, block, C); scratch: flat (2, α0·α1·α2, C), the worker's.
    """
    channels = extent[3]
    points = alpha[0] * alpha[1] * alpha[2]
    image_size = extent[0] * extent[1] * extent[2] * channels
    step = np.array([d[0] * extent[1] * extent[2] * channels, d[1] * extent[2] * channels,
                     d[2] * channels])
    local = np.array([alpha[1] * alpha[2] * channels, alpha[2] * channels, channels])
    points_stride = np.array([alpha[1] * alpha[2] * block * channels,
                              alpha[2] * block * channels, block * channels])
    axes = _passes(kinds)
    for k in range(stop - first):
        image, o0, o1, o2 = _tile(first + k, tiles, m, d)
        base = image * image_size + ((o0 * extent[1] + o1) * extent[2] + o2) * channels
        for p in range(axes.shape[0]):
            axis = axes[p]
            if p == 0:
                src, s0, sstride = canvas, base, step
            else:
                src, s0, sstride = scratch, ((p - 1) % 2) * points * channels, local
            if p == axes.shape[0] - 1:
                dst, d0, dstride = v, k * channels, points_stride
            else:
                dst, d0, dstride = scratch, (p % 2) * points * channels, local
            _apply(2 * kinds[axis], alpha, axis, src, s0, sstride, dst, d0, dstride, channels)


@njit(nogil=True, cache=True)
def winograd_output(mv, block, kinds, alpha, m, d, tiles, first, stop, y, output,
                    channels_first, scratch):
    """y at tile ``first + k``'s outputs = (Aᵀ M A) of M[:, k, :], for k < stop − first.

    mv: flat (α0·α1·α2, block, O); output = (O0, O1, O2, O); y: flat (B, O, O0, O1, O2)
    if ``channels_first`` else (B, O0, O1, O2, O); scratch: flat (2, α0·α1·α2, O).
    Outputs past O_i (a tile overhanging the last one) are not written.
    """
    channels = output[3]
    points = alpha[0] * alpha[1] * alpha[2]
    plane = output[0] * output[1] * output[2]
    local = np.array([alpha[1] * alpha[2] * channels, alpha[2] * channels, channels])
    points_stride = np.array([alpha[1] * alpha[2] * block * channels,
                              alpha[2] * block * channels, block * channels])
    out_step = np.array([d[0] * output[1] * output[2] * channels, d[1] * output[2] * channels,
                         d[2] * channels])
    axes = _passes(kinds)
    sizes = np.empty(3, dtype=np.int64)
    origin = np.empty(3, dtype=np.int64)
    for k in range(stop - first):
        image, origin[0], origin[1], origin[2] = _tile(first + k, tiles, m, d)
        inside = not channels_first
        for i in range(3):
            if origin[i] + (m[i] - 1) * d[i] >= output[i]:
                inside = False
        sizes[:] = alpha
        for p in range(axes.shape[0]):
            axis = axes[p]
            if p == 0:
                src, s0, sstride = mv, k * channels, points_stride
            else:
                src, s0, sstride = scratch, ((p - 1) % 2) * points * channels, local
            if p == axes.shape[0] - 1 and inside:     # straight into y
                dst, dstride = y, out_step
                d0 = (image * plane + (origin[0] * output[1] + origin[1]) * output[2]
                      + origin[2]) * channels
            else:
                dst, d0, dstride = scratch, (p % 2) * points * channels, local
            _apply(2 * kinds[axis] + 1, sizes, axis, src, s0, sstride, dst, d0, dstride,
                   channels)
            sizes[axis] = m[axis]
        if inside:
            continue
        # The last pass's scratch into the outputs that exist: channel by channel for
        # channels-first (rows of m2 samples written side by side, not one channel plane
        # per sample).
        last = ((axes.shape[0] - 1) % 2) * points * channels
        c0 = min(m[0], (output[0] - origin[0] + d[0] - 1) // d[0])
        c1 = min(m[1], (output[1] - origin[1] + d[1] - 1) // d[1])
        c2 = min(m[2], (output[2] - origin[2] + d[2] - 1) // d[2])
        if channels_first:
            for ch in range(channels):
                target = (image * channels + ch) * plane
                for h in range(c0):
                    for j in range(c1):
                        row = target + ((origin[0] + h * d[0]) * output[1]
                                        + origin[1] + j * d[1]) * output[2] + origin[2]
                        source = last + h * local[0] + j * local[1] + ch
                        for i in range(c2):
                            y[row + i * d[2]] = scratch[source + i * local[2]]
        else:
            for h in range(c0):
                for j in range(c1):
                    for i in range(c2):
                        source = last + h * local[0] + j * local[1] + i * local[2]
                        position = ((origin[0] + h * d[0]) * output[1] + origin[1]
                                    + j * d[1]) * output[2] + origin[2] + i * d[2]
                        target = (image * plane + position) * channels
                        for ch in range(channels):
                            y[target + ch] = scratch[source + ch]


@njit(nogil=True, cache=True)
def transform_products(v, u, mv, count, c0, c1, o0, o1):
    """mv[ξ, :count, o0:o1] = v[ξ, :count, c0:c1] · u[ξ] at every transform point ξ, by the
    engine's packed GEMM (one group's channels: u is (α0·α1·α2, c1 − c0, o1 − o0))."""
    for xi in range(v.shape[0]):
        gemm(v[xi, :count, c0:c1], u[xi], mv[xi, :count, o0:o1], 0, o1 - o0)
