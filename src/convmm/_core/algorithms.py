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
from .layout import LAYOUTS
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


def conv_forward_by_taps(xp, x, weight, geometry, mode, groups, layout):
    """Y = Σ_t W_t·X̃_t, tap by tap: X̃_t the padded input's window read by tap t (its
    strided slice), W_t the weight's (C_out, C_in/G) matrix of that tap.

    The same map as ``conv_forward`` with no patch matrix (each term is a 1×1
    convolution of a window) and with the reduction in blocks: each GEMM sums C_g
    products, and the T terms are added in order, as col2im adds its taps.
    """
    nd = geometry.nd
    padded = pad(xp, x, geometry, mode, layout)
    pointwise = ConvGeometry(geometry.output_size, (1,) * nd, (1,) * nd, (1,) * nd,
                             ((0, 0),) * nd, geometry.output_size)
    kernel_axes = (range(2, 2 + nd) if layout.name == "channels_first" else range(nd))
    total = None
    for tap in np.ndindex(*geometry.kernel_size):
        window = tuple(slice(t * d, t * d + s * (o - 1) + 1, s) for t, d, s, o
                       in zip(tap, geometry.dilation, geometry.stride, geometry.output_size))
        at_tap = [slice(None)] * weight.ndim
        for axis, t in zip(kernel_axes, tap):
            at_tap[axis] = slice(t, t + 1)
        term = _forward_whole(xp, padded[layout.at_spatial(window)], weight[tuple(at_tap)],
                              pointwise, "zeros", groups, layout)
        total = term if total is None else total + term
    return total


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
    """Cᵀ·y for zero padding by the textbook recipe: insert s − 1 zeros between y's samples,
    pad d·(K−1) − p, convolve with the flipped kernel at stride 1 — phase by phase, so that
    no inserted zero is ever multiplied.

    Along each dim, y's sample j sits at ``first + j·s`` of the canvas (``first =
    d·(K−1) − p_before``) and output o is ``Σ_t F[t]·canvas[o + t·d]`` (F the
    flipped kernel).  Output o = φ + m·s of phase φ reads a sample of y only
    through the taps with ``φ + t·d − first ≡ 0 (mod s)``, at j = m + δ,
    ``δ = (φ + t·d − first)/s``: each phase is a stride-1 convolution of y itself
    with a sub-kernel of about K/s taps (Shi et al., "Real-time single image
    super-resolution using an efficient sub-pixel convolutional neural network",
    CVPR 2016).  All s^nd phases run as one convolution of y with the sub-kernels
    stacked as output channels, tap by tap (``conv_forward_by_taps``: sums of
    C_out/G products), and are interleaved into the output.  The cost is the
    transposed convolution's, not s^nd times more; at stride 1 this is the flipped
    convolution of the padded y.
    """
    nd = geometry.nd
    channels_last = layout.name == "channels_last"
    # Channels-first inside: the sub-kernels become output channels.
    cf = LAYOUTS["channels_first"]
    if channels_last:
        y = xp.permute_dims(y, (0, nd + 1, *range(1, nd + 1)))
        weight = xp.permute_dims(weight, (nd + 1, nd, *range(nd)))   # (C_y, C_x/G, *K)
    flipped = cf.flipped_transpose_weight(xp, weight, groups, nd)     # (C_x, C_y/G, *K)
    n, out_channels = y.shape[0], flipped.shape[0]
    phases, windows, maps, pads, crops, counts = [], [], [], [], [], []
    for axis in range(nd):
        k, s, d = geometry.kernel_size[axis], geometry.stride[axis], geometry.dilation[axis]
        size, out_size = geometry.output_size[axis], geometry.input_size[axis]
        first = d * (k - 1) - geometry.padding[axis][0]
        pairs = [(phi, t, (phi + t * d - first) // s) for phi in range(s) for t in range(k)
                 if (phi + t * d - first) % s == 0]
        low = min(delta for _, _, delta in pairs)
        window = max(delta for _, _, delta in pairs) - low + 1
        table = np.full((s, window), k, dtype=np.intp)      # tap k: the appended zero
        for phi, t, delta in pairs:
            table[phi, delta - low] = t
        count = -(-out_size // s)                           # outputs m per phase
        crop = max(0, low)
        before = max(0, -low)
        after = max(0, count + window - 1 - (before + size - crop))
        phases.append(s)
        windows.append(window)
        maps.append(table)
        pads.append((before, after))
        crops.append(slice(crop, min(size, crop + count + window - 1 - before)))
        counts.append(count)
    # The stacked sub-kernels: V[(c, φ), o, u] = F[c, o, t(φ, u)], zero where no tap.
    sub = flipped
    for axis in range(nd):
        zero_shape = list(sub.shape)
        zero_shape[2 + axis] = 1
        sub = xp.concat([sub, xp.zeros(zero_shape, dtype=sub.dtype, device=device_of(sub))],
                        axis=2 + axis)
        sub = xp.take(sub, xp.asarray(np.reshape(maps[axis], -1), device=device_of(sub)),
                      axis=2 + axis)
    sub = xp.reshape(sub, (*sub.shape[:2], *(v for s, w in zip(phases, windows)
                                             for v in (s, w))))
    order = (0, *(2 + 2 * a for a in range(nd)), 1, *(3 + 2 * a for a in range(nd)))
    sub = xp.reshape(xp.permute_dims(sub, order),
                     (out_channels * math.prod(phases), sub.shape[1], *windows))
    if any(c.stop <= c.start for c in crops):        # no sample of y reaches the output
        x = xp.zeros((n, out_channels, *geometry.input_size), dtype=flipped.dtype,
                     device=device_of(flipped))
    else:   # interleave the phases: (N, C_x, *φ, *m) → (N, C_x, m_1, φ_1, …) → crop to O
        y = y[(slice(None), slice(None), *crops)]
        inner = ConvGeometry(tuple(y.shape[2:]), tuple(windows), (1,) * nd, (1,) * nd,
                             tuple(pads), tuple(counts))
        z = conv_forward_by_taps(xp, y, sub, inner, "zeros", groups, cf)
        z = xp.reshape(z, (n, out_channels, *phases, *counts))
        z = xp.permute_dims(z, (0, 1, *(v for a in range(nd) for v in (2 + nd + a, 2 + a))))
        z = xp.reshape(z, (n, out_channels, *(c * s for c, s in zip(counts, phases))))
        x = z[(slice(None), slice(None), *(slice(0, o) for o in geometry.input_size))]
    if channels_last:
        x = xp.permute_dims(x, (0, *range(2, nd + 2), 1))
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

