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

from array_api_compat import device as device_of

from .geometry import ConvGeometry
from .lowering import col2im, im2col, pad_adjoint


def conj(xp, a):
    return xp.conj(a) if xp.isdtype(a.dtype, "complex floating") else a


def add_bias(xp, y, bias, layout, nd):
    if bias is None:
        return y
    return y + xp.reshape(bias, layout.bias_shape(bias.shape[0], nd))


def conv_forward(xp, x, weight, geometry, mode, groups, layout):
    """Y = W·P with P = im2col(x): (N, C_in, *S) → (N, C_out, *output_size) channels-first."""
    cols = im2col(xp, x, geometry, mode, layout)
    p = layout.patch_operand(xp, cols, groups, geometry.n_taps)
    w = layout.weight_operand(xp, weight, groups)
    return layout.output_from_operand(xp, layout.forward(w, p), geometry.output_size)


def conv_adjoint_col2im(xp, y, weight, geometry, mode, groups, layout):
    """Cᵀ·y by the transposed operator: P = Wᵀ·Y, then col2im (with the padding's adjoint)."""
    out_channels, in_per_group, _ = layout.weight_parts(weight.shape, geometry.nd)
    channels = in_per_group * groups
    o = layout.output_operand(xp, y, groups)
    w = layout.weight_operand(xp, weight, groups)
    cols = layout.cols_from_operand(xp, layout.transpose(w, o), channels, geometry)
    return col2im(xp, cols, geometry, mode, layout, channels)


def conv_adjoint_zero_insertion(xp, y, weight, geometry, groups, layout):
    """Cᵀ·y for zero padding by the seeds' recipe, as a stride-1 forward convolution.

    Along each dim, y's sample j goes to position ``d·(K−1) − p_before + j·s`` of
    a zero canvas of size ``O + d·(K−1)`` (O: the transposed output size);
    samples that fall outside are dropped, which is the "negative padding"
    case p > d·(K−1).  Convolving the canvas with the flipped kernel, stride 1,
    dilation d, gives exactly O outputs.
    """
    nd = geometry.nd
    spread = [d * (k - 1) for k, d in zip(geometry.kernel_size, geometry.dilation)]
    canvas_size = [o + e for o, e in zip(geometry.input_size, spread)]
    first = [e - b for e, (b, _) in zip(spread, geometry.padding)]
    target, source = [], []
    for start, s, count, size in zip(first, geometry.stride, geometry.output_size, canvas_size):
        j_lo = -(-max(0, -start) // s)              # first sample at position >= 0
        j_hi = min(count, -(-(size - start) // s))  # one past the last sample inside
        kept = max(j_hi - j_lo, 0)
        lo = start + j_lo * s
        target.append(slice(lo, lo + (kept - 1) * s + 1 if kept else lo, s))
        source.append(slice(j_lo, j_lo + kept))
    n, channels = y.shape[0], layout.channels(y.shape)
    canvas = xp.zeros(layout.image_shape(n, channels, canvas_size), dtype=y.dtype,
                      device=device_of(y))
    canvas[layout.at_spatial(tuple(target))] = y[layout.at_spatial(tuple(source))]
    flipped = layout.flipped_transpose_weight(xp, weight, groups, nd)
    stride_one = ConvGeometry(tuple(canvas_size), geometry.kernel_size, (1,) * nd,
                              geometry.dilation, ((0, 0),) * nd, geometry.input_size)
    return conv_forward(xp, canvas, flipped, stride_one, "zeros", groups, layout)


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
    (conv's weight gradient is this of (G, conj(x)), conv_transpose's of (conj(x), G))."""
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

