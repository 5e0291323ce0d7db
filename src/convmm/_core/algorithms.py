"""Convolution, its transpose and its gradients as GEMMs over the patch matrix.

The array-API implementation: written once, run on any namespace.  Arguments
are validated and canonical (batched images, a resolved ``ConvGeometry``, a
padding mode, a layout class from ``layout``).  For a convolution with patch
matrix P (im2col of the input), weight matrix W and output Y:

    conv               Y = W·P                       (+ bias)
    conv_transpose     X = col2im(Wᵀ·Y)              — the transposed operator Cᵀ
                       or, equivalently, a stride-1 convolution of Y with
                       s − 1 zeros inserted, padded d·(K − 1) − p, with the
                       kernel flipped and its channel axes swapped
    input gradient     Cᴴ·G = col2im(Wᴴ·G)
    weight gradient    Σ_n G·Pᴴ
    bias gradient      Σ_{n, positions} G

Complex arrays follow PyTorch: the forward maps do not conjugate, gradients
are the conjugate (Wirtinger) ones that torch.autograd returns.
"""

from __future__ import annotations

import math

import array_api_extra as xpx
import numpy as np
from array_api_compat import device as device_of

from .geometry import ConvGeometry
from .lowering import col2im, im2col, pad, pad_adjoint
from .validation import itemsize

PATCH_BYTES = 128 << 20
"""The array-API path builds its patch matrix in pieces of at most this size (where one
position's patches fit): whole images where they fit, else slabs of output rows."""


def conj(xp, a):
    return xp.conj(a) if xp.isdtype(a.dtype, "complex floating") else a


def add_bias(xp, y, bias, layout, nd):
    if bias is None:
        return y
    return y + xp.reshape(bias, layout.bias_shape(bias.shape[0], nd))


def correlate_over_overlap(xp, in1, kernel, start, size):
    """``z[k] = Σ_l in1[k + l − (N − 1)]·kernel[l]`` over the l where in1's index lies in
    in1 (its overlap with the kernel: no zero of an extension is multiplied), for the
    "full" outputs ``k`` in ``[start, start + size)`` per axis; shapes (M...) and (N...).

    The sum correlate's definition has, as ``numpy.convolve`` makes it: an inf or NaN
    of the kernel reaches only the outputs it overlaps (a zero-padded in1 would turn
    it into NaN everywhere).  One shifted multiply-add per sample of the smaller array,
    each output's terms added in row-major order of l either way (k = j + N − 1 − l for
    in1's sample j): exact to the loop over l.
    """
    m, n = tuple(in1.shape), tuple(kernel.shape)
    dtype = xp.result_type(in1.dtype, kernel.dtype)
    z = xp.zeros(size, dtype=dtype, device=device_of(in1))
    in1, kernel = xp.astype(in1, dtype), xp.astype(kernel, dtype)
    if math.prod(n) <= math.prod(m):
        # tap l adds kernel[l]·in1 at the full outputs from N − 1 − l on
        moving, scales = in1, kernel
        def offsets(index): return [nk - 1 - t for nk, t in zip(n, index)]
    else:
        # in1's sample j adds in1[j]·flip(kernel) at the full outputs from j on
        moving, scales = xp.flip(kernel, axis=tuple(range(kernel.ndim))), in1
        def offsets(index): return list(index)
    for index in np.ndindex(*scales.shape):
        first = offsets(index)
        lo = [max(b, o) for b, o in zip(start, first)]
        hi = [min(b + c, o + e) for b, c, o, e in zip(start, size, first, moving.shape)]
        if any(h <= low for low, h in zip(lo, hi)):
            continue
        out = tuple(slice(low - b, h - b) for low, h, b in zip(lo, hi, start))
        read = tuple(slice(low - o, h - o) for low, h, o in zip(lo, hi, first))
        z = xpx.at(z, out).add(moving[read] * scales[index])
    return z


# --------------------------------------------------------------------------- pieces
def _images_per_piece(xp, a, channels, geometry):
    """Whole images whose patch matrix (channels·T × L each) fits ``PATCH_BYTES``: at least
    the whole batch where it fits, 0 where not even one image does."""
    per_image = channels * geometry.n_taps * geometry.n_positions * itemsize(xp, a.dtype)
    return max(a.shape[0], 1) if a.shape[0] * per_image <= PATCH_BYTES else \
        PATCH_BYTES // per_image


def _slabs(xp, a, channels, geometry):
    """Slabs of output rows (along the first spatial dim) of one image whose patch matrix
    fits ``PATCH_BYTES``: ``(r0, r1, lo, hi, sub)`` — output rows [r0, r1) read padded input
    rows [lo, hi), and ``sub`` is that slab's geometry (unpadded: the slab is cut from
    the padded image)."""
    rows = geometry.output_size[0]
    per_row = (channels * geometry.n_taps * (geometry.n_positions // rows)
               * itemsize(xp, a.dtype))
    step = max(1, PATCH_BYTES // per_row)
    k, s, d = geometry.kernel_size[0], geometry.stride[0], geometry.dilation[0]
    nd = geometry.nd
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        lo, hi = r0 * s, (r1 - 1) * s + d * (k - 1) + 1
        sub = ConvGeometry((hi - lo, *geometry.padded_size[1:]), geometry.kernel_size,
                           geometry.stride, geometry.dilation, ((0, 0),) * nd,
                           (r1 - r0, *geometry.output_size[1:]))
        yield r0, r1, lo, hi, sub


def _at(layout, image, rows):
    """The index of one image's rows (a slice) along the first spatial dim."""
    axis = layout.spatial_axes(1)[0]      # 2 channels-first, 1 channels-last
    return (slice(image, image + 1), *(slice(None),) * (axis - 1), rows, ...)


def _empty_like_images(xp, like, layout, n, channels, spatial, zeros=False):
    make = xp.zeros if zeros else xp.empty
    return make(layout.image_shape(n, channels, spatial), dtype=like.dtype,
                device=device_of(like))


# --------------------------------------------------------------------------- the maps
def conv_forward(xp, x, weight, geometry, mode, groups, layout):
    """Y = W·P with P = im2col(x): (N, C_in, *S) → (N, C_out, *output_size) channels-first.

    P is built whole where it fits ``PATCH_BYTES``, else for pieces of the batch
    (whole images, or slabs of output rows of one image) in turn."""
    channels = layout.channels(x.shape)
    images = _images_per_piece(xp, x, channels, geometry)
    if images >= x.shape[0]:
        return _forward_whole(xp, x, weight, geometry, mode, groups, layout)
    out_channels = layout.weight_parts(weight.shape, geometry.nd)[0]
    y = _empty_like_images(xp, x, layout, x.shape[0], out_channels, geometry.output_size)
    for at, piece, piece_geometry, piece_mode in _input_pieces(xp, x, channels, geometry, mode,
                                                               layout, images):
        y = xpx.at(y, at).set(_forward_whole(xp, piece, weight, piece_geometry, piece_mode,
                                             groups, layout))
    return y


def _input_pieces(xp, x, channels, geometry, mode, layout, images):
    """The pieces of an input batch too large for one patch matrix: ``(at, piece, geometry,
    mode)``, with ``at`` the index of the outputs the piece gives.  ``images`` whole
    images at a time where that is at least one, else slabs of output rows cut from each
    image padded once (unpadded slab geometries)."""
    if images:
        for first in range(0, x.shape[0], images):
            at = (slice(first, first + images), ...)
            yield at, x[at], geometry, mode
        return
    for image in range(x.shape[0]):
        padded = pad(xp, x[image:image + 1, ...], geometry, mode, layout)
        for r0, r1, lo, hi, sub in _slabs(xp, x, channels, geometry):
            yield _at(layout, image, slice(r0, r1)), padded[_at(layout, 0, slice(lo, hi))], \
                sub, "zeros"


def _forward_whole(xp, x, weight, geometry, mode, groups, layout):
    cols = im2col(xp, x, geometry, mode, layout)
    p = layout.patch_operand(xp, cols, groups, geometry.n_taps)
    w = layout.weight_operand(xp, weight, groups)
    return layout.output_from_operand(xp, layout.forward(w, p), geometry.output_size)


def conv_adjoint_col2im(xp, y, weight, geometry, mode, groups, layout):
    """Cᵀ·y by the transposed operator: P = Wᵀ·Y, then col2im (with the padding's adjoint).

    P is made whole where it fits ``PATCH_BYTES``, else for pieces of the batch
    (whole images, or slabs of output rows of one image, each folded into its
    rows of the padded image) in turn."""
    _, in_per_group, _ = layout.weight_parts(weight.shape, geometry.nd)
    channels = in_per_group * groups
    images = _images_per_piece(xp, y, channels, geometry)
    if images >= y.shape[0]:
        return _adjoint_whole(xp, y, weight, geometry, mode, groups, layout)
    x = _empty_like_images(xp, y, layout, y.shape[0], channels, geometry.input_size)
    if images:
        for first in range(0, y.shape[0], images):
            x = xpx.at(x, (slice(first, first + images), ...)).set(_adjoint_whole(
                xp, y[first:first + images, ...], weight, geometry, mode, groups, layout))
        return x
    for image in range(y.shape[0]):
        canvas = _empty_like_images(xp, y, layout, 1, channels, geometry.padded_size, zeros=True)
        for r0, r1, lo, hi, sub in _slabs(xp, y, channels, geometry):
            rows = _at(layout, 0, slice(lo, hi))
            canvas = xpx.at(canvas, rows).add(_adjoint_whole(
                xp, y[_at(layout, image, slice(r0, r1))], weight, sub, "zeros", groups, layout))
        x = xpx.at(x, (slice(image, image + 1), ...)).set(
            pad_adjoint(xp, canvas, geometry, mode, layout))
    return x


def _adjoint_whole(xp, y, weight, geometry, mode, groups, layout):
    out_channels, in_per_group, _ = layout.weight_parts(weight.shape, geometry.nd)
    channels = in_per_group * groups
    o = layout.output_operand(xp, y, groups)
    w = layout.weight_operand(xp, weight, groups)
    cols = layout.cols_from_operand(xp, layout.transpose(w, o), channels, geometry)
    return col2im(xp, cols, geometry, mode, layout, channels)


def conv_adjoint_zero_insertion(xp, y, weight, geometry, groups, layout):
    """Cᵀ·y for zero padding by the textbook recipe (insert s − 1 zeros between y's
    samples, pad d·(K−1) − p, convolve with the flipped kernel at stride 1), making only
    the products of y's own samples: tap by tap.

    Along each dim, tap t sends y's sample l to output o = l·s + t·d − p_before; the
    recipe's other canvas samples are inserted or padded zeros, which the definition
    never multiplies (an inf or NaN tap would turn them into NaN).  So for each tap:
    X[o] += W_tᵀ·y[l] over the l with 0 ≤ o < O, a 1×1 transposed convolution of a
    window of y (a GEMM summing C_out/G products) added at stride s into the output
    (``xpx.at``).  The taps are added in order, each output receiving only its own
    ∏⌈K/s⌉ terms: the transposed convolution's cost, the products of the sub-pixel
    convolution of Shi et al. ("Real-time single image super-resolution using an
    efficient sub-pixel convolutional neural network", CVPR 2016) without its phases'
    zero taps.
    """
    nd = geometry.nd
    # (C_x, C_y/G, *K) channels-first, flipped: tap t of W is tap K − 1 − t of it.
    forward_weight = layout.flipped_transpose_weight(xp, weight, groups, nd)
    kernel_axes = (range(2, 2 + nd) if layout.name == "channels_first" else range(nd))
    channels = layout.weight_parts(forward_weight.shape, nd)[0]
    x = _empty_like_images(xp, y, layout, y.shape[0], channels, geometry.input_size,
                           zeros=True)
    if x.dtype != forward_weight.dtype:
        x = xp.astype(x, xp.result_type(x.dtype, forward_weight.dtype))
    for tap in np.ndindex(*geometry.kernel_size):
        reads, writes = [], []
        for t, s, d, (before, _), size, out_size in zip(
                tap, geometry.stride, geometry.dilation,
                geometry.padding, geometry.output_size, geometry.input_size):
            shift = t * d - before                     # o = l·s + shift
            first = max(0, -(shift // s))              # ⌈−shift/s⌉: the first o ≥ 0
            last = min(size - 1, (out_size - 1 - shift) // s)
            if last < first:
                break
            reads.append(slice(first, last + 1))
            writes.append(slice(first * s + shift, last * s + shift + 1, s))
        else:
            at_tap = [slice(None)] * forward_weight.ndim
            for axis, t, k in zip(kernel_axes, tap, geometry.kernel_size):
                at_tap[axis] = slice(k - 1 - t, k - t)
            window = y[layout.at_spatial(reads)]
            pointwise = ConvGeometry(tuple(window.shape[a] for a in layout.spatial_axes(nd)),
                                     (1,) * nd, (1,) * nd, (1,) * nd, ((0, 0),) * nd,
                                     tuple(window.shape[a] for a in layout.spatial_axes(nd)))
            term = _forward_whole(xp, window, forward_weight[tuple(at_tap)], pointwise,
                                  "zeros", groups, layout)
            x = xpx.at(x, layout.at_spatial(writes)).add(term)
    return x


def conv_adjoint(xp, y, weight, geometry, mode, groups, layout, method):
    """Cᵀ·y by the named method ("im2col": transposed operator; "zero_insertion").

    Zero insertion knows zero padding only; for another mode C = C₀·Pad, with
    C₀ the unpadded convolution of the padded image, so Cᵀ = Padᵀ·C₀ᵀ.
    """
    if method != "zero_insertion":
        return conv_adjoint_col2im(xp, y, weight, geometry, mode, groups, layout)
    if mode == "zeros":
        return conv_adjoint_zero_insertion(xp, y, weight, geometry, groups, layout)
    unpadded = ConvGeometry(geometry.padded_size, geometry.kernel_size, geometry.stride,
                            geometry.dilation, ((0, 0),) * geometry.nd, geometry.output_size)
    canvas = conv_adjoint_zero_insertion(xp, y, weight, unpadded, groups, layout)
    return pad_adjoint(xp, canvas, geometry, mode, layout)


def weight_gradient(xp, out_operand, cols, weight_shape, geometry, groups, layout):
    """Σ_n O·Pᵀ reshaped to the weight's shape (callers conjugate as the convention needs)."""
    p = layout.patch_operand(xp, cols, groups, geometry.n_taps)
    return layout.weight_from_operand(xp, layout.weight_grad(xp, out_operand, p), weight_shape)


def bias_gradient(xp, g, layout):
    channel_axis = layout.channel_axis(g.ndim)
    return xp.sum(g, axis=tuple(a for a in range(g.ndim) if a != channel_axis))


def weight_gradient_of(xp, a, b, weight_shape, geometry, mode, groups, layout):
    """Σ_n A·P(b)ᵀ shaped like the weight: A shaped like conv's output, b like its input
    (conv's weight gradient is this of (G, conj(x)), conv_transpose's of (conj(x), G)).

    P(b) is built whole where it fits ``PATCH_BYTES``, else for pieces of the
    batch (whole images, or slabs of output rows of one image), whose terms are
    added in order."""
    channels = layout.channels(b.shape)
    images = _images_per_piece(xp, b, channels, geometry)
    if images >= b.shape[0]:
        return _weight_gradient_whole(xp, a, b, weight_shape, geometry, mode, groups, layout)
    total = None
    for at, piece, piece_geometry, piece_mode in _input_pieces(xp, b, channels, geometry, mode,
                                                               layout, images):
        term = _weight_gradient_whole(xp, a[at], piece, weight_shape, piece_geometry,
                                      piece_mode, groups, layout)
        total = term if total is None else total + term
    return total


def _weight_gradient_whole(xp, a, b, weight_shape, geometry, mode, groups, layout):
    cols = im2col(xp, b, geometry, mode, layout)
    return weight_gradient(xp, layout.output_operand(xp, a, groups), cols, weight_shape,
                           geometry, groups, layout)


def transposed_method(method, geometry, mode):
    """What "auto" means for Cᵀ: zero insertion only where it wastes nothing (stride 1)."""
    if method != "auto":
        return method
    if mode == "zeros" and all(s == 1 for s in geometry.stride):
        return "zero_insertion"
    return "im2col"

