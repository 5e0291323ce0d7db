"""Numba CPU kernels: patch tiles, col2im as a gather, and the direct convolution.

Imported only when a NumPy call runs on the CPU engine (never by ``import
convmm``); compiled once per dtype and cached on disk (``cache=True``).  The
kernels are serial and release the GIL (``nogil=True``): the engine runs one
per worker thread, each followed by a single-threaded BLAS GEMM on the same
thread, so no two thread pools ever compete for the cores.

Both kernels apply the im2col table of ``index_tables.gather_index``: ``index[t, l]`` is
the flat input sample that tap ``t`` reads at output position ``l`` — every
stride, dilation, rank and padding mode folded into one table — or ``P`` (the
number of samples) where the tap reads a zero.  A tile covers the flat
(image, position) indices ``start … start + count − 1`` of the whole batch,
so small images share one tile and large ones are cut into several.

``col2im_*`` are the adjoint as a *gather* (``index_tables.gather_index_adjoint``):
every input sample sums, in a fixed order, the tile entries that read it, so
the transposed operator has no scatter, no races and no atomics, and gives
the same bits on every run.  ``direct_*`` compute convolutions with few channels per
group (depthwise above all) straight from a padded copy of one channel plane
(``index_tables.padded_source``), the inner loop running along the last spatial dim.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def patches_channels_last(x, index, start, count, first_channel, out):
    """out[r, t·C_g + c] = x[n, index[t, l], first_channel + c] for tile row r = (n, l).

    x: (N, P, C) contiguous; out: (≥ count, T·C_g) with C_g = out.shape[1] // T.
    """
    pixels = x.shape[1]
    taps, positions = index.shape
    channels = out.shape[1] // taps
    n = start // positions
    position = start - n * positions
    for r in range(count):
        for t in range(taps):
            source = index[t, position]
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
def patches_channels_first(x, index, start, count, first_channel, out):
    """out[c·T + t, r] = x[n, first_channel + c, index[t, l]] for tile column r = (n, l).

    x: (N, C, P) contiguous; out: (C_g·T, ≥ count).
    """
    pixels = x.shape[2]
    taps, positions = index.shape
    for row in range(out.shape[0]):
        c = row // taps
        t = row - c * taps
        channel = first_channel + c
        n = start // positions
        position = start - n * positions
        for r in range(count):
            source = index[t, position]
            out[row, r] = 0 if source == pixels else x[n, channel, source]
            position += 1
            if position == positions:
                position = 0
                n += 1


@njit(nogil=True, cache=True)
def col2im_channels_first(cols, inverse, taps, start, count, pixels, first_channel, y):
    """y[first_channel + c, p] += Σ_{(t, l)} cols[c·T + t, l − start] over positions l ∈ tile.

    One image: cols (C_g·T, ≥ count) holds positions ``start … start + count − 1``,
    which read only samples ``pixels[0] … pixels[1] − 1``; inverse (2, R, P)
    from ``gather_index_adjoint``, its (tap, position) pairs per sample, T = taps;
    y (C, P).
    """
    ranks = inverse.shape[1]
    lo, hi = pixels[0], pixels[1]
    stop = start + count
    # Pair by pair along the samples (unit stride through ``inverse`` and ``y``):
    # each sample receives its terms in increasing (t, l) order whatever the tile.
    for c in range(cols.shape[0] // taps):
        target = y[first_channel + c, lo:hi]
        for r in range(ranks):
            tap_of = inverse[0, r, lo:hi]
            position_of = inverse[1, r, lo:hi]
            for p in range(hi - lo):
                t, position = tap_of[p], position_of[p]
                if t < taps and start <= position < stop:
                    target[p] += cols[c * taps + t, position - start]


@njit(nogil=True, cache=True)
def col2im_channels_last(cols, inverse, taps, start, count, pixels, first_channel, y):
    """y[p, first_channel + c] += Σ_{(t, l)} cols[l − start, t·C_g + c] over positions l ∈ tile.

    One image: cols (≥ count, T·C_g); samples ``pixels[0] … pixels[1] − 1``;
    inverse (2, R, P), T = taps; y (P, C).
    """
    ranks = inverse.shape[1]
    channels = cols.shape[1] // taps
    stop = start + count
    for p in range(pixels[0], pixels[1]):
        target = y[p, first_channel:first_channel + channels]
        for r in range(ranks):
            t, position = inverse[0, r, p], inverse[1, r, p]
            if t < taps and start <= position < stop:
                source = cols[position - start, t * channels:(t + 1) * channels]
                for c in range(channels):
                    target[c] += source[c]


@njit(nogil=True, cache=True)
def pad_plane(x, source, padded):
    """padded[q] = x[source[q]], or 0 where source[q] == len(x)."""
    pixels = x.shape[0]
    for q in range(source.shape[0]):
        s = source[q]
        padded[q] = x[s] if s < pixels else 0


@njit(nogil=True, cache=True)
def widen_plane(values, crop, width, plane):
    """An output plane onto the padded grid (``index_tables.wide_table``): plane[crop[l]] =
    values[l], rows of ``width`` outputs contiguous there, zero at the other window
    starts up to the last output's."""
    plane[:crop[crop.shape[0] - 1] + 1] = 0
    for r in range(crop.shape[0] // width):
        start = crop[r * width]
        row = values[r * width:(r + 1) * width]
        for j in range(width):
            plane[start + j] = row[j]


@njit(nogil=True, cache=True)
def _direct_shape(weight_shape, in_planes, out_planes, groups, lead_taps):
    """(C_in, C_g, O_g, T, K_last) from a (C_out, C_g·T) weight and the plane counts."""
    out_channels, k_total = weight_shape
    in_channels = in_planes // (out_planes // out_channels)
    in_per_group = in_channels // groups
    taps = k_total // in_per_group
    return in_channels, in_per_group, out_channels // groups, taps, taps // lead_taps


REDUCTION_DEPTH = 64
"""Products per partial sum of a long float32 reduction, here and in ``gemm.conv_padded``:
a sum of C_g·T products (forward) or O_g·T (adjoint) is cut into blocks of about this
many, each summed on its own, and the blocks' sums added in order (as BLAS adds its
k-blocks), so the rounding error grows with the block depth plus the number of blocks,
not with C_g·T.  In the direct kernels a block is whole channels, summed in a scratch
plane."""

SCRATCH_SAMPLES = 1 << 16
"""At most this many samples of scratch planes per worker for those blocks."""


@njit(nogil=True, cache=True)
def _accumulate_forward(padded, w, o, c, taps, rows, width, last_taps, dilation, stride, t0, t1,
                        out):
    """out += taps t0 … t1 − 1 of weight row o, input channel c, swept over the padded plane."""
    for r in range(rows.shape[0]):
        target = out[r * width:(r + 1) * width]
        for t in range(t0, t1):
            tl, k = t // last_taps, t % last_taps
            weight = w[o, c * taps + t]
            src = padded[rows[r, tl] + k * dilation:]
            if stride == 1:
                for j in range(width):
                    target[j] += weight * src[j]
            else:
                for j in range(width):
                    target[j] += weight * src[j * stride]


@njit(nogil=True, cache=True)
def direct_forward(x, w, groups, source, rows, width, dilation, stride, first, stop, y):
    """Units ``first … stop − 1`` (unit = image·G + group) of a direct convolution, channels-first.

    x (N·C_in, P) input planes; w (C_out, C_g·T); y (N·C_out, L).  Each input
    plane of the unit is padded once, then every output plane of its group
    adds its taps: output row r, sample j under tap (t_lead, k) reads padded
    sample rows[r, t_lead] + k·dilation + j·stride; ``width`` is the output row length.
    Where C_g·T exceeds ``REDUCTION_DEPTH`` the sum goes in blocks (a few channels'
    taps, or pieces of one channel's), each summed in a scratch plane and added to y
    (a plane is then padded once per block of output planes).
    """
    in_channels, in_per_group, per_group, taps, last_taps = _direct_shape(
        w.shape, x.shape[0], y.shape[0], groups, rows.shape[1])
    out_channels = w.shape[0]
    positions = y.shape[1]
    padded = np.empty(source.shape[0], x.dtype)
    blocked = in_per_group * taps > REDUCTION_DEPTH
    outputs_per_block = per_group
    if blocked:
        outputs_per_block = max(1, min(per_group, SCRATCH_SAMPLES // positions))
    part = np.empty((outputs_per_block if blocked else 0, positions), y.dtype)
    for unit in range(first, stop):
        image, g = unit // groups, unit % groups
        for o in range(g * per_group, (g + 1) * per_group):
            y[image * out_channels + o, :] = 0
        if not blocked:
            for c in range(in_per_group):
                pad_plane(x[image * in_channels + g * in_per_group + c], source, padded)
                for o in range(g * per_group, (g + 1) * per_group):
                    _accumulate_forward(padded, w, o, c, taps, rows, width, last_taps,
                                        dilation, stride, 0, taps,
                                        y[image * out_channels + o])
            continue
        # Blocks of about REDUCTION_DEPTH products: whole taps of a few channels, or
        # pieces of one channel's taps; each summed in ``part``, then added to y.
        channel_step = max(1, REDUCTION_DEPTH // taps)
        tap_step = taps if taps < REDUCTION_DEPTH else REDUCTION_DEPTH
        for o0 in range(g * per_group, (g + 1) * per_group, outputs_per_block):
            o1 = min(o0 + outputs_per_block, (g + 1) * per_group)
            for c0 in range(0, in_per_group, channel_step):
                c1 = min(c0 + channel_step, in_per_group)
                for t0 in range(0, taps, tap_step):
                    part[:o1 - o0] = 0
                    for c in range(c0, c1):
                        if t0 == 0 or c1 - c0 > 1:
                            pad_plane(x[image * in_channels + g * in_per_group + c], source,
                                       padded)
                        for o in range(o0, o1):
                            _accumulate_forward(padded, w, o, c, taps, rows, width, last_taps,
                                                dilation, stride, t0, min(t0 + tap_step, taps),
                                                part[o - o0])
                    for o in range(o0, o1):
                        target = y[image * out_channels + o]
                        block = part[o - o0]
                        for q in range(positions):
                            target[q] += block[q]


@njit(nogil=True, cache=True)
def direct_forward_wide(x, w, groups, source, offsets, crop, width, first, stop, wide, y):
    """``direct_forward`` at stride 1 and C_g·T ≤ ``REDUCTION_DEPTH``, on the padded grid.

    Every output plane of a unit is first computed at every padded position q
    that could start a window (``wide[o, q] = Σ_{c, t} w[o, c·T + t]·x̃_c[q +
    offsets[t]]``), one long loop per tap, then cropped to the outputs
    (``y[o, l] = wide[o, crop[l]]``, rows of ``width`` outputs contiguous on the
    grid).  Rows of a few dozen samples made the
    per-row loops all overhead; the extra positions cost ∏P/∏O − 1 (15 % for a
    28×28 image and a 3×3 kernel).  The sums run in the order of
    ``direct_forward``'s (c, then t), so the bits are the same.
    wide: (≥ O_g, ≥ crop[-1] + 1) scratch.
    """
    in_channels, in_per_group, per_group, taps, _ = _direct_shape(
        w.shape, x.shape[0], y.shape[0], groups, 1)
    out_channels = w.shape[0]
    span = crop[crop.shape[0] - 1] + 1
    padded = np.empty(source.shape[0], x.dtype)
    for unit in range(first, stop):
        image, g = unit // groups, unit % groups
        for o in range(per_group):
            wide[o, :span] = 0
        for c in range(in_per_group):
            pad_plane(x[image * in_channels + g * in_per_group + c], source, padded)
            for o in range(per_group):
                target = wide[o, :span]
                for t in range(taps):
                    weight = w[g * per_group + o, c * taps + t]
                    src = padded[offsets[t]:offsets[t] + span]
                    for q in range(span):
                        target[q] += weight * src[q]
        # The crop, row by row (an output row is contiguous on the grid).
        for o in range(per_group):
            out = y[image * out_channels + g * per_group + o]
            plane = wide[o]
            for r in range(crop.shape[0] // width):
                row = out[r * width:(r + 1) * width]
                start = crop[r * width]
                source_row = plane[start:start + width]
                for j in range(width):
                    row[j] = source_row[j]


@njit(nogil=True, cache=True)
def _spread_adjoint(grad, w, o, c, taps, rows, width, last_taps, dilation, stride, t0, t1,
                    padded):
    """padded += output plane ``grad`` spread by taps t0 … t1 − 1 of weight row o, input
    channel c."""
    for r in range(rows.shape[0]):
        source = grad[r * width:(r + 1) * width]
        for t in range(t0, t1):
            tl, k = t // last_taps, t % last_taps
            weight = w[o, c * taps + t]
            dst = padded[rows[r, tl] + k * dilation:]
            if stride == 1:
                for j in range(width):
                    dst[j] += weight * source[j]
            else:
                for j in range(width):
                    dst[j * stride] += weight * source[j]


@njit(nogil=True, cache=True)
def direct_adjoint(y, w, groups, adjoint, rows, width, dilation, stride, padded_size, reach,
                   first, stop, x):
    """Units ``first … stop − 1`` of the direct convolution's transpose, channels-first.

    y (N·C_out, L); w (C_out, C_g·T); x (N·C_in, P) receives Cᵀ·y: for each
    input plane the taps spread every output plane of its group over a padded
    plane, and the padding's adjoint gathers it back (``adjoint`` from
    ``padded_source``), one plane at a time on one thread.  A padded sample sums
    O_g × ``reach`` products (``reach``: the taps that reach one sample, ∏⌈K/s⌉ when
    kernels do not overlap more); past ``REDUCTION_DEPTH`` the sum goes in blocks (a
    few output planes with all their taps, or, where ``reach`` alone is longer, pieces
    of one plane's taps), each spread over a scratch plane then added to the padded one.
    """
    in_channels, in_per_group, per_group, taps, last_taps = _direct_shape(
        w.shape, x.shape[0], y.shape[0], groups, rows.shape[1])
    out_channels = w.shape[0]
    padded = np.empty(padded_size + 1, y.dtype)
    # Blocks of about REDUCTION_DEPTH products: whole taps of a few output planes, or
    # pieces of one plane's taps; each spread over ``part``, then added to the plane.
    blocked = per_group * reach > REDUCTION_DEPTH
    output_step = max(1, REDUCTION_DEPTH // reach)
    tap_step = taps if reach <= REDUCTION_DEPTH else max(1, taps * REDUCTION_DEPTH // reach)
    part = np.empty(padded_size + 1 if blocked else 0, y.dtype)
    for unit in range(first, stop):
        image, g = unit // groups, unit % groups
        for c in range(in_per_group):
            padded[:] = 0
            if not blocked:
                for o in range(g * per_group, (g + 1) * per_group):
                    _spread_adjoint(y[image * out_channels + o], w, o, c, taps, rows, width,
                                    last_taps, dilation, stride, 0, taps, padded)
            else:
                for o0 in range(g * per_group, (g + 1) * per_group, output_step):
                    o1 = min(o0 + output_step, (g + 1) * per_group)
                    for t0 in range(0, taps, tap_step):
                        part[:] = 0
                        for o in range(o0, o1):
                            _spread_adjoint(y[image * out_channels + o], w, o, c, taps, rows,
                                            width, last_taps, dilation, stride, t0,
                                            min(t0 + tap_step, taps), part)
                        for q in range(padded_size):
                            padded[q] += part[q]
            target = x[image * in_channels + g * in_per_group + c]
            for p in range(target.shape[0]):
                total = padded[adjoint[0, p]]
                for r in range(1, adjoint.shape[0]):
                    total += padded[adjoint[r, p]]
                target[p] = total


@njit(nogil=True, cache=True)
def _row_piece(gr, src, stride, j0, j1):
    """Σ_{j0 ≤ j < j1} gr[j]·src[j·stride], one chain."""
    total = gr[j0] * src[j0 * stride]
    if stride == 1:
        for j in range(j0 + 1, j1):
            total += gr[j] * src[j]
    else:
        for j in range(j0 + 1, j1):
            total += gr[j] * src[j * stride]
    return total


LANES = 16
"""Interleaved partial sums of ``_dot``: lane j sums the products at positions ≡ j
(mod LANES), in scalar locals that LLVM's SLP vectoriser packs into a register (a
single running sum is a chain it must keep scalar; an array of lanes stayed in memory)."""


@njit(nogil=True, cache=True, fastmath={"contract"})
def _dot(a, b, n):
    """Σ_{q < n} a[q]·b[q] in LANES interleaved partial sums added in order, then the
    tail: the same bits on every run (n ≤ LANES·REDUCTION_DEPTH keeps each partial
    sum within REDUCTION_DEPTH products).  ``a`` must be finite (its first value gives
    the sums' zero)."""
    zero = a[0] * 0
    s0 = zero
    s1 = zero
    s2 = zero
    s3 = zero
    s4 = zero
    s5 = zero
    s6 = zero
    s7 = zero
    s8 = zero
    s9 = zero
    s10 = zero
    s11 = zero
    s12 = zero
    s13 = zero
    s14 = zero
    s15 = zero
    full = n // 16 * 16
    for q0 in range(0, full, 16):
        av, bv = a[q0:q0 + 16], b[q0:q0 + 16]
        s0 += av[0] * bv[0]
        s1 += av[1] * bv[1]
        s2 += av[2] * bv[2]
        s3 += av[3] * bv[3]
        s4 += av[4] * bv[4]
        s5 += av[5] * bv[5]
        s6 += av[6] * bv[6]
        s7 += av[7] * bv[7]
        s8 += av[8] * bv[8]
        s9 += av[9] * bv[9]
        s10 += av[10] * bv[10]
        s11 += av[11] * bv[11]
        s12 += av[12] * bv[12]
        s13 += av[13] * bv[13]
        s14 += av[14] * bv[14]
        s15 += av[15] * bv[15]
    total = ((((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)))
             + (((s8 + s9) + (s10 + s11)) + ((s12 + s13) + (s14 + s15))))
    for q in range(full, n):
        total += a[q] * b[q]
    return total


@njit(nogil=True, cache=True)
def direct_weight_grad_wide(g, x, groups, source, offsets, crop, width, first, stop, padded,
                            wide, dw):
    """``direct_weight_grad`` at stride 1 on the padded grid: dw[o, c·T + t] +=
    Σ_q x̃_c[q + offsets[t]]·ĝ_o[q] over units ``first … stop − 1``, ĝ_o the output
    gradient widened onto the grid (zero at window starts that are no output).

    Each dot product runs in blocks of LANES·REDUCTION_DEPTH positions (``_dot``:
    LANES interleaved partial sums of up to REDUCTION_DEPTH products each), the
    blocks' sums added in order (the same bits on every run).
    padded (≥ P̃,) and wide (≥ O_g, ≥ span) are the worker's scratch.
    """
    in_channels, in_per_group, per_group, taps, _ = _direct_shape(
        dw.shape, x.shape[0], g.shape[0], groups, 1)
    out_channels = dw.shape[0]
    span = crop[crop.shape[0] - 1] + 1
    block = LANES * REDUCTION_DEPTH
    for unit in range(first, stop):
        image, group = unit // groups, unit % groups
        for o in range(per_group):
            widen_plane(g[image * out_channels + group * per_group + o], crop, width, wide[o])
        for c in range(in_per_group):
            pad_plane(x[image * in_channels + group * in_per_group + c], source, padded)
            if not _finite(padded):
                # ĝ's zeros at the grid's other window starts would meet an inf or NaN of
                # the plane: this plane sums over the outputs alone, in order.
                for o in range(per_group):
                    gl = g[image * out_channels + group * per_group + o]
                    for t in range(taps):
                        total = padded[offsets[t] + crop[0]] * gl[0]
                        for q in range(1, crop.shape[0]):
                            total += padded[offsets[t] + crop[q]] * gl[q]
                        dw[group * per_group + o, c * taps + t] += total
                continue
            for o in range(per_group):
                gw = wide[o]
                for t in range(taps):
                    a = padded[offsets[t]:offsets[t] + span]
                    total = _dot(a, gw, min(block, span))
                    for b0 in range(block, span, block):
                        total += _dot(a[b0:], gw[b0:], min(block, span - b0))
                    dw[group * per_group + o, c * taps + t] += total


@njit(nogil=True, cache=True)
def _finite(plane):
    """Whether every value of ``plane`` is finite (one pass: a sum of v − v is NaN where
    any v is inf or NaN, and exactly zero otherwise)."""
    total = plane[0] - plane[0]
    for q in range(1, plane.shape[0]):
        total += plane[q] - plane[q]
    return total == total


@njit(nogil=True, cache=True)
def direct_weight_grad(g, x, groups, source, rows, width, dilation, stride, first, stop, dw):
    """dw[o, c·T + t] += Σ_l g[image, o, l] · x̃[image, c, …] over units ``first … stop − 1``.

    g (N·C_out, L) the output gradient; x (N·C_in, P) the input planes; dw (C_out, C_g·T).
    """
    in_channels, in_per_group, per_group, taps, last_taps = _direct_shape(
        dw.shape, x.shape[0], g.shape[0], groups, rows.shape[1])
    out_channels = dw.shape[0]
    n_rows, lead_taps = rows.shape
    padded = np.empty(source.shape[0], x.dtype)
    for unit in range(first, stop):
        image, group = unit // groups, unit % groups
        for c in range(in_per_group):
            pad_plane(x[image * in_channels + group * in_per_group + c], source, padded)
            for o in range(group * per_group, (group + 1) * per_group):
                grad = g[image * out_channels + o]
                for r in range(n_rows):
                    gr = grad[r * width:(r + 1) * width]
                    for tl in range(lead_taps):
                        for k in range(last_taps):
                            src = padded[rows[r, tl] + k * dilation:]
                            # A row's sum in pieces of REDUCTION_DEPTH products.
                            total = gr[0] * src[0]
                            if width <= REDUCTION_DEPTH:
                                if stride == 1:
                                    for j in range(1, width):
                                        total += gr[j] * src[j]
                                else:
                                    for j in range(1, width):
                                        total += gr[j] * src[j * stride]
                            else:
                                total = _row_piece(gr, src, stride, 0, REDUCTION_DEPTH)
                                for j0 in range(REDUCTION_DEPTH, width, REDUCTION_DEPTH):
                                    total += _row_piece(gr, src, stride, j0,
                                                        min(j0 + REDUCTION_DEPTH, width))
                            dw[o, c * taps + tl * last_taps + k] += total
