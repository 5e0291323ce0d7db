"""Everything that depends on the data format, in one place.

Both layouts lower a convolution with ``G`` groups to one batched GEMM per
group.  With ``R = (C_in/G)·T`` patch rows, ``L`` output positions and
``O_g = C_out/G`` output channels per group, the operands are

    channels_first:  W (G, O_g, R)   P (N, G, R, L)   Y (N, G, O_g, L)   Y = W·P
    channels_last:   W (G, R, O_g)   P (N, G, L, R)   Y (N, G, L, O_g)   Y = P·W

(each the transpose of the other), so the forward pass, the transposed
operator and the weight gradient are the same three products in both:

    forward      Y = W·P            (channels_last: P·W)
    transpose    P = Wᵀ·Y           (channels_last: Y·Wᵀ)
    weight grad  W = Σ_n Y·Pᵀ       (channels_last: Σ_n Pᵀ·Y)

The patch-row order follows the layout: ``c·T + t`` channels-first (PyTorch's
``unfold``), ``t·C + c`` channels-last (NHWC im2col).
"""

from __future__ import annotations

import math


class ChannelsFirst:
    name = "channels_first"

    # --- shapes and axes of images and weights -------------------------------
    @staticmethod
    def spatial_axes(nd):
        return tuple(range(2, 2 + nd))

    @staticmethod
    def channel_axis(ndim):
        return 1

    @staticmethod
    def channels(shape):
        return shape[1]

    @staticmethod
    def spatial(shape, nd):
        return tuple(shape[2:2 + nd])

    @staticmethod
    def image_shape(n, channels, spatial):
        return (n, channels, *spatial)

    @staticmethod
    def at_spatial(window):
        """Index an image at a spatial window, all batch items and channels."""
        return (slice(None), slice(None), *window)

    @staticmethod
    def weight_parts(shape, nd):
        """(out channels, in channels per group, kernel size) of a weight."""
        return shape[0], shape[1], tuple(shape[2:])

    @staticmethod
    def bias_shape(channels, nd):
        return (channels,) + (1,) * nd

    @staticmethod
    def weight_taps(xp, weight):
        """The weight as (C_out, C_in/G, T), taps row-major over the kernel."""
        return xp.reshape(weight, (weight.shape[0], weight.shape[1], -1))

    # --- the patch matrix -----------------------------------------------------
    @staticmethod
    def cols_shape(n, channels, taps, positions):
        return (n, channels * taps, positions)

    @staticmethod
    def cols_rows_and_positions(shape):
        return shape[1], shape[2]

    @staticmethod
    def tap_blocks(xp, cols, channels, geometry):
        """cols (N, C·T, L) viewed as (N, C, *K, *L)."""
        return xp.reshape(cols, (cols.shape[0], channels, *geometry.kernel_size,
                                 *geometry.output_size))

    @staticmethod
    def at_tap(tap):
        return (slice(None), slice(None), *tap, ...)

    # --- GEMM operands ----------------------------------------------------------
    @staticmethod
    def patch_operand(xp, cols, groups, n_taps):
        n, rows, positions = cols.shape
        return xp.reshape(cols, (n, groups, rows // groups, positions))

    @staticmethod
    def cols_from_operand(xp, p, channels, geometry):
        n, groups, rows, positions = p.shape
        return xp.reshape(p, (n, groups * rows, positions))

    @staticmethod
    def weight_operand(xp, weight, groups):
        out_channels = weight.shape[0]
        return xp.reshape(weight, (groups, out_channels // groups, -1))

    @staticmethod
    def weight_from_operand(xp, w, weight_shape):
        return xp.reshape(w, weight_shape)

    @staticmethod
    def output_operand(xp, y, groups):
        n, channels = y.shape[:2]
        return xp.reshape(y, (n, groups, channels // groups, math.prod(y.shape[2:])))

    @staticmethod
    def output_from_operand(xp, o, spatial):
        n, groups, per_group, _ = o.shape
        return xp.reshape(o, (n, groups * per_group, *spatial))

    @staticmethod
    def forward(w, p):
        return w @ p

    @staticmethod
    def transpose(w, o):
        return w.mT @ o

    @staticmethod
    def weight_grad(xp, o, p):
        return xp.sum(o @ p.mT, axis=0)

    # --- the transposed convolution as a forward one ---------------------------
    @staticmethod
    def flipped_transpose_weight(xp, weight, groups, nd):
        """(C_in, C_out/G, *K) → the stride-1 forward weight (C_out, C_in/G, *K), flipped."""
        c_in, out_per_group, *kernel = weight.shape
        w = xp.reshape(weight, (groups, c_in // groups, out_per_group, *kernel))
        w = xp.permute_dims(w, (0, 2, 1, *range(3, 3 + nd)))
        w = xp.reshape(w, (groups * out_per_group, c_in // groups, *kernel))
        return xp.flip(w, axis=tuple(range(2, 2 + nd)))


class ChannelsLast:
    name = "channels_last"

    @staticmethod
    def spatial_axes(nd):
        return tuple(range(1, 1 + nd))

    @staticmethod
    def channel_axis(ndim):
        return ndim - 1

    @staticmethod
    def channels(shape):
        return shape[-1]

    @staticmethod
    def spatial(shape, nd):
        return tuple(shape[1:1 + nd])

    @staticmethod
    def image_shape(n, channels, spatial):
        return (n, *spatial, channels)

    @staticmethod
    def at_spatial(window):
        return (slice(None), *window, slice(None))

    @staticmethod
    def weight_parts(shape, nd):
        return shape[nd + 1], shape[nd], tuple(shape[:nd])

    @staticmethod
    def bias_shape(channels, nd):
        return (channels,)

    @staticmethod
    def weight_taps(xp, weight):
        """(*K, C_in/G, C_out) → (C_out, C_in/G, T), taps row-major over the kernel."""
        *kernel, in_per_group, out_channels = weight.shape
        w = xp.reshape(weight, (math.prod(kernel), in_per_group, out_channels))
        return xp.permute_dims(w, (2, 1, 0))

    @staticmethod
    def cols_shape(n, channels, taps, positions):
        return (n, positions, taps * channels)

    @staticmethod
    def cols_rows_and_positions(shape):
        return shape[2], shape[1]

    @staticmethod
    def tap_blocks(xp, cols, channels, geometry):
        """cols (N, L, T·C) viewed as (N, *L, *K, C)."""
        return xp.reshape(cols, (cols.shape[0], *geometry.output_size,
                                 *geometry.kernel_size, channels))

    @staticmethod
    def at_tap(tap):
        return (*(slice(None),) * (1 + len(tap)), *tap, ...)

    @staticmethod
    def patch_operand(xp, cols, groups, n_taps):
        n, positions, rows = cols.shape
        # rows are t·C + g·C_g + c: bring each group's channels together.
        p = xp.reshape(cols, (n, positions, n_taps, groups, rows // (n_taps * groups)))
        p = xp.permute_dims(p, (0, 3, 1, 2, 4))
        return xp.reshape(p, (n, groups, positions, rows // groups))

    @staticmethod
    def cols_from_operand(xp, p, channels, geometry):
        n, groups, positions, per_group = p.shape
        p = xp.reshape(p, (n, groups, positions, geometry.n_taps, channels // groups))
        p = xp.permute_dims(p, (0, 2, 3, 1, 4))
        return xp.reshape(p, (n, positions, geometry.n_taps * channels))

    @staticmethod
    def weight_operand(xp, weight, groups):
        *kernel, in_per_group, out_channels = weight.shape
        w = xp.reshape(weight, (math.prod(kernel), in_per_group, groups, out_channels // groups))
        w = xp.permute_dims(w, (2, 0, 1, 3))
        return xp.reshape(w, (groups, -1, out_channels // groups))

    @staticmethod
    def weight_from_operand(xp, w, weight_shape):
        *kernel, in_per_group, out_channels = weight_shape
        groups = w.shape[0]
        w = xp.reshape(w, (groups, math.prod(kernel), in_per_group, out_channels // groups))
        w = xp.permute_dims(w, (1, 2, 0, 3))
        return xp.reshape(w, weight_shape)

    @staticmethod
    def output_operand(xp, y, groups):
        n, channels = y.shape[0], y.shape[-1]
        o = xp.reshape(y, (n, math.prod(y.shape[1:-1]), groups, channels // groups))
        return xp.permute_dims(o, (0, 2, 1, 3))

    @staticmethod
    def output_from_operand(xp, o, spatial):
        n, groups, _, per_group = o.shape
        o = xp.permute_dims(o, (0, 2, 1, 3))
        return xp.reshape(o, (n, *spatial, groups * per_group))

    @staticmethod
    def forward(w, p):
        return p @ w

    @staticmethod
    def transpose(w, o):
        return o @ w.mT

    @staticmethod
    def weight_grad(xp, o, p):
        return xp.sum(p.mT @ o, axis=0)

    @staticmethod
    def flipped_transpose_weight(xp, weight, groups, nd):
        """(*K, C_out/G, C_in) → the stride-1 forward weight (*K, C_in/G, C_out), flipped."""
        *kernel, out_per_group, c_in = weight.shape
        w = xp.reshape(weight, (*kernel, out_per_group, groups, c_in // groups))
        w = xp.permute_dims(w, (*range(nd), nd + 2, nd + 1, nd))
        w = xp.reshape(w, (*kernel, c_in // groups, groups * out_per_group))
        return xp.flip(w, axis=tuple(range(nd)))


Layout = type[ChannelsFirst] | type[ChannelsLast]
"""A data format's index arithmetic (the classes are namespaces of static methods)."""

LAYOUTS: dict[str, Layout] = {"channels_first": ChannelsFirst, "channels_last": ChannelsLast}
