"""im2col, col2im and padding, written once against the array API standard.

These functions trust their arguments: the public boundary (``validation``) has
validated shapes, dtypes and parameters and resolved the geometry.  Images are
batched, in the layout's axis order; ``mode`` is a padding mode.

im2col has two implementations of the same gather:

* a zero-copy strided view where the namespace has ``as_strided`` (NumPy,
  CuPy): for a channels-last image padded to (N, H, W, C) with element strides
  (HWC, WC, C, 1) the view (N, H_o, W_o, K_h, K_w, C) has strides
  (HWC, s·WC, s·C, d·WC, d·C, 1) — (HWC, WC, C, WC, C, 1) for
  s = d = 1 — and one reshape turns it into the patch matrix;
* a ``take`` gather with the cached index table elsewhere, which also folds the
  padding into the indices, so no padded copy is made.

col2im is the exact adjoint: a loop over the kernel taps (never over pixels)
that adds each tap's block of columns onto a strided window of the padded
canvas, followed by the adjoint of the padding; or, for kernels with many taps
of which few read each sample (large strides), and always for JAX's immutable
arrays, a gather through the inverse table, one ``take`` per (tap, position) pair
of a sample.

Writes into the arrays allocated here go through array-api-extra's ``at``: in
place where the namespace allows it, a new array where arrays are immutable (JAX).
"""

from __future__ import annotations

import math

import array_api_extra as xpx
import numpy as np
from array_api_compat import device as device_of
from array_api_compat import is_cupy_array, is_jax_array, is_numpy_array

from .index_tables import gather_index, gather_index_adjoint, padding_sources, pairs_per_sample


def index_array(xp, table: np.ndarray, like):
    """A cached index table as an index array in x's namespace and on its device.

    Plans are frozen; namespaces that would share the NumPy buffer get a
    writable copy (PyTorch warns on read-only buffers).
    """
    if is_numpy_array(like):
        return table
    return xp.asarray(np.array(table), device=device_of(like))


def _interior(geometry, layout):
    window = tuple(slice(b, b + size) for (b, _), size in zip(geometry.padding, geometry.input_size))
    return layout.at_spatial(window)


def _has_padding(geometry) -> bool:
    return any(b or a for b, a in geometry.padding)


def _padded_rows(size: int, before: int, after: int, mode: str):
    """(padded position, the input sample it copies) pairs along one axis."""
    positions, sources = padding_sources(size, before, after, mode)
    return zip(positions.tolist(), sources.tolist())


def _at(axis: int, index: int):
    """The index of one position (kept as an axis of length 1) along ``axis``."""
    return (slice(None),) * axis + (slice(index, index + 1), ...)


def pad(xp, x, geometry, mode, layout):
    """The input padded to ``geometry.padded_size`` on its spatial axes.

    Zero padding writes the input into a zero canvas; the other modes, axis by axis,
    copy the interior and then each padded position's source sample (no index table
    as long as the axis: a long signal's padding costs its width, not its length)."""
    if not _has_padding(geometry):
        return x
    if mode == "zeros":
        shape = layout.image_shape(x.shape[0], layout.channels(x.shape), geometry.padded_size)
        out = xp.zeros(shape, dtype=x.dtype, device=device_of(x))
        return xpx.at(out, _interior(geometry, layout)).set(x)
    axes = layout.spatial_axes(geometry.nd)
    for axis, size, (before, after) in zip(axes, geometry.input_size, geometry.padding):
        if not (before or after):
            continue
        shape = list(x.shape)
        shape[axis] = before + size + after
        out = xp.empty(tuple(shape), dtype=x.dtype, device=device_of(x))
        out = xpx.at(out, (slice(None),) * axis + (slice(before, before + size), ...)).set(x)
        for position, source in _padded_rows(size, before, after, mode):
            out = xpx.at(out, _at(axis, position)).set(x[_at(axis, source)])
        x = out
    return x


def pad_adjoint(xp, g, geometry, mode, layout):
    """The transpose of ``pad``: each padded sample's value added back onto its source.

    Zero padding is a crop.  Otherwise, axis by axis, the interior is copied and each
    padded position's value added onto the sample it copies, in a fixed order (no
    scatter, no atomics, nothing data-dependent)."""
    if not _has_padding(geometry):
        return g
    if mode == "zeros":
        return g[_interior(geometry, layout)]
    axes = layout.spatial_axes(geometry.nd)
    for axis, size, (before, after) in zip(axes, geometry.input_size, geometry.padding):
        if not (before or after):
            continue
        interior = g[(slice(None),) * axis + (slice(before, before + size), ...)]
        total = xp.asarray(interior, copy=True)
        for position, source in _padded_rows(size, before, after, mode):
            total = xpx.at(total, _at(axis, source)).add(g[_at(axis, position)])
        g = total
    return g


def _strided_view_function(x):
    """``as_strided`` for namespaces that have it, else None."""
    if is_numpy_array(x):
        return lambda a, shape, strides: np.lib.stride_tricks.as_strided(
            a, shape, strides, writeable=False)
    if is_cupy_array(x):
        import cupy

        return cupy.lib.stride_tricks.as_strided
    return None


def im2col(xp, x, geometry, mode, layout):
    """The patch matrix of a batched image.

    channels_first: (N, C, *S) → (N, C·T, L), row ``c·T + t`` (``unfold``'s order);
    channels_last:  (N, *S, C) → (N, L, T·C), row ``t·C + c``;
    with ``T = ∏ kernel_size`` taps and ``L = ∏ output_size`` positions.
    """
    n, channels = x.shape[0], layout.channels(x.shape)
    taps, positions = geometry.n_taps, geometry.n_positions
    cols_shape = layout.cols_shape(n, channels, taps, positions)
    as_strided = _strided_view_function(x)
    if as_strided is not None:
        padded = pad(xp, x, geometry, mode, layout)
        axes = layout.spatial_axes(geometry.nd)
        spatial_strides = [padded.strides[a] for a in axes]
        tap_strides = [d * st for d, st in zip(geometry.dilation, spatial_strides)]
        step_strides = [s * st for s, st in zip(geometry.stride, spatial_strides)]
        if layout.name == "channels_first":
            shape = (n, channels, *geometry.kernel_size, *geometry.output_size)
            strides = (*padded.strides[:2], *tap_strides, *step_strides)
        else:
            shape = (n, *geometry.output_size, *geometry.kernel_size, channels)
            strides = (padded.strides[0], *step_strides, *tap_strides, padded.strides[-1])
        return xp.reshape(as_strided(padded, shape, strides), cols_shape)

    # Gather: one channel's samples flattened, a zero appended for the padding.
    table = gather_index(geometry, mode)
    pixels = math.prod(geometry.input_size)
    if layout.name == "channels_first":
        flat = xp.reshape(x, (n, channels, pixels))
        flat = xp.concat([flat, xp.zeros((n, channels, 1), dtype=x.dtype, device=device_of(x))], axis=2)
        cols = xp.take(flat, index_array(xp, np.reshape(table, -1), x), axis=2)
    else:
        flat = xp.reshape(x, (n, pixels, channels))
        flat = xp.concat([flat, xp.zeros((n, 1, channels), dtype=x.dtype, device=device_of(x))], axis=1)
        cols = xp.take(flat, index_array(xp, np.reshape(table.T, -1), x), axis=1)
    return xp.reshape(cols, cols_shape)


GATHER_MIN_TAPS = 32
"""``col2im`` gathers (one ``take`` per pair of a sample) instead of adding strided windows
tap by tap where a kernel has at least this many taps, four times more than the pairs
that read one sample (large strides: a Python loop over ∏K taps would dominate)."""

GATHER_PLAN_ENTRIES = 8 << 20
"""... and where the im2col table it inverts has at most this many entries."""


def col2im(xp, cols, geometry, mode, layout, channels):
    """The adjoint of ``im2col``: overlapping patch entries summed back into an image.

    ``cols`` has im2col's output shape; the result is (N, C, *input_size)
    channels-first or (N, *input_size, C) channels-last.  Tap by tap, each tap's
    block added to its strided window of the padded canvas, then the padding's
    adjoint; or, for kernels with many taps and few per sample (large strides),
    and for JAX arrays (no canvas rewritten tap by tap), as a gather through
    ``gather_index_adjoint``.
    """
    taps, positions = geometry.n_taps, geometry.n_positions
    if is_jax_array(cols) or (taps >= max(GATHER_MIN_TAPS, 4 * pairs_per_sample(geometry, mode))
                              and taps * positions <= GATHER_PLAN_ENTRIES):
        return _col2im_gather(xp, cols, geometry, layout, channels,
                              gather_index_adjoint(geometry, mode))
    n = cols.shape[0]
    canvas = xp.zeros(layout.image_shape(n, channels, geometry.padded_size),
                      dtype=cols.dtype, device=device_of(cols))
    blocks = layout.tap_blocks(xp, cols, channels, geometry)
    for tap in np.ndindex(*geometry.kernel_size):
        window = tuple(
            slice(t * d, t * d + s * (positions - 1) + 1, s)
            for t, d, s, positions in zip(tap, geometry.dilation, geometry.stride,
                                          geometry.output_size)
        )
        canvas = xpx.at(canvas, layout.at_spatial(window)).add(blocks[layout.at_tap(tap)])
    return pad_adjoint(xp, canvas, geometry, mode, layout)


def _col2im_gather(xp, cols, geometry, layout, channels, inverse):
    """col2im as a gather: x[c, p] = Σ_r cols[c·T + t_r, l_r] over the (tap, position)
    pairs (t_r, l_r) = inverse[:, r, p] that read sample p (in increasing order), every
    padding mode folded in by the table."""
    n = cols.shape[0]
    taps, positions = geometry.n_taps, geometry.n_positions
    pixels = math.prod(geometry.input_size)
    ranks = inverse.shape[1]
    channels_first = layout.name == "channels_first"
    axis = 2 if channels_first else 1
    # Each pair's entry along that axis: cols (N, C·T, L) has rows c·T + t, so t·L + l in
    # one channel's flat block; cols (N, L, T·C) flattens to (l·T + t, c).  The sentinel
    # tap T reads an appended zero.
    pair = inverse[0] * positions + inverse[1] if channels_first else inverse[1] * taps + inverse[0]
    flat = np.where(inverse[0] < taps, pair, taps * positions)
    source = xp.reshape(cols, (n, channels, taps * positions) if channels_first
                        else (n, positions * taps, channels))
    zero = xp.zeros((n, channels, 1) if channels_first else (n, 1, channels), dtype=cols.dtype,
                    device=device_of(cols))
    picked = xp.take(xp.concat([source, zero], axis=axis),
                     index_array(xp, np.reshape(flat, -1), cols), axis=axis)
    picked = xp.reshape(picked, (n, channels, ranks, pixels) if channels_first
                        else (n, ranks, pixels, channels))
    lead = (slice(None),) * axis
    total = picked[(*lead, 0, ...)]
    for r in range(1, ranks):           # the pairs added in order
        total = total + picked[(*lead, r, ...)]
    return xp.reshape(total, layout.image_shape(n, channels, geometry.input_size))
