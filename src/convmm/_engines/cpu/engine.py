"""The CPU engine for NumPy arrays: the three maps run by Numba kernels and BLAS.

    forward       Y = C·X           conv; conv_transpose's input gradient
    adjoint       X = Cᵀ·Y          conv_transpose; conv's input gradient
    weight_grad   ΔW = Σ_n A·Pᵀ     both weight gradients (P: patches of B)

Each runs a ``ConvPlan`` (``_engines/plan.py``: the method from ``policy``, the tiles,
workspace and kernel from ``tiles.py``); this module only carries it out.  ``tiled_blas``
fills patch tiles with the serial, GIL-free kernels of ``kernels`` and
multiplies them with single-threaded BLAS; ``implicit_gemm`` runs the packed,
register-blocked GEMMs of ``gemm``; ``direct`` sweeps channel planes tap by tap
(``kernels.direct_*``).  The work is cut into units that ``threads.run_workers``
hands to the worker threads; partial sums are added in a fixed order, so the
results are the same bits on every run.
"""

from __future__ import annotations

import math

import numpy as np

from ..._core.index_tables import (canvas_source, direct_rows, gather_index, gather_index_adjoint,
                                  padded_source, padded_taps, tile_pixel_ranges, wide_table)
from ..._core.winograd import kernel_transform, tiling
from .threads import (get_num_threads, run_workers, single_threaded_blas, sum_in_order,
                      workspace)


def _tiles(total, image, tile):
    """(start, count) tiles of the flat (image, position) range; none crosses an image
    boundary unless it holds whole images."""
    if tile >= image:
        return [(start, min(tile, total - start)) for start in range(0, total, tile)]
    per_image = [(offset, min(tile, image - offset)) for offset in range(0, image, tile)]
    return [(n * image + offset, count) for n in range(total // image) for offset, count in per_image]


def _image_ranges(n, positions, tile):
    """(image, first, stop) position ranges of at most ``tile`` positions, image by image."""
    return [(image, start, min(start + tile, positions))
            for image in range(n) for start in range(0, positions, tile)]


def _buffer(dtype, shape_size):
    """A worker's flat tile buffer (reused across calls); ``_view`` cuts contiguous blocks
    from it."""
    return workspace("tile", (shape_size,), dtype)


def _view(buffer, rows, columns):
    return buffer[:rows * columns].reshape(rows, columns)


def _product(a, b, out):
    """out = a·b for 2-d operands: the engine's packed GEMM for real dtypes (on the
    machines measured 1.1-1.4× OpenBLAS, whose dynamic-arch build picks AVX2 kernels
    here), BLAS for complex ones.  ``out`` may be a strided view."""
    if out.dtype.kind == "f":
        from . import gemm

        gemm.gemm(a, b, out, 0, out.shape[1])
    else:
        np.matmul(a, b, out=out)


# --------------------------------------------------------------------------- operands
def _weight_operand(call):
    """W as (G, O_g, C_g·T) channels-first or (G, T·C_g, O_g) channels-last, contiguous."""
    return np.ascontiguousarray(call.layout.weight_operand(np, call.weight, call.groups))


# --------------------------------------------------------------------------- forward
def forward(call, plan, x):
    """Y = C·x (no bias) for x (N, C_in, *S) or (N, *S, C_in), by the plan's method."""
    if plan.method == "direct":
        return _direct(call, plan, x, "forward")
    if plan.method == "winograd":
        return _winograd_forward(call, plan, x)
    if plan.tile == 0:
        return _pointwise_forward(call, plan, x)
    if plan.method == "implicit_gemm":
        return _implicit_forward(call, plan, x)
    return _tiled_forward(call, plan, x)


def _subsampled(call, x):
    """The patch matrix of a 1×1 unpadded convolution: x at the strided positions, (N, C, L) or (N, L, C)."""
    geometry, layout = call.geometry, call.layout
    window = tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(geometry.output_size, geometry.stride))
    view = x[layout.at_spatial(window)]
    n, channels = x.shape[0], layout.channels(x.shape)
    shape = (n, channels, -1) if layout.name == "channels_first" else (n, -1, channels)
    return np.ascontiguousarray(view).reshape(shape)


def _position_units(n, positions, threads, per_image):
    """Units of the flat (image, position) range for the 1×1 paths: about two per worker,
    each ``(image, first, stop)`` inside one image if ``per_image``, else ``(None, first,
    stop)`` over the flat range (rows of a channels-last operand)."""
    size = max(1, -(-n * positions // (2 * threads)))
    if not per_image:
        return [(None, first, min(first + size, n * positions))
                for first in range(0, n * positions, size)]
    return _image_ranges(n, positions, size)


def _pointwise_gemm(call, plan, operand, weights, n):
    """Per group, ``weights[g]·operand`` channels-first or ``operand·weights[g]`` channels-
    last, in units of positions on the workers, each a single-threaded GEMM (so the bits
    do not depend on other calls).  operand: (N, C, *O) or (N, *O, C) contiguous, C =
    G·weights.shape[2] channels-first, G·weights.shape[1] channels-last; returns
    (N, G, rows, L) or (N·L, G, columns)."""
    groups, positions = call.groups, call.geometry.n_positions
    channels_first = call.layout.name == "channels_first"
    if channels_first:
        a = operand.reshape(n, groups, weights.shape[2], positions)
        out = np.empty((n, groups, weights.shape[1], positions), dtype=operand.dtype)
    else:
        a = operand.reshape(n * positions, groups, weights.shape[1])
        out = np.empty((n * positions, groups, weights.shape[2]), dtype=operand.dtype)
    units = _position_units(n, positions, plan.threads, channels_first)

    def work(k):
        for image, first, stop in units[k::plan.threads]:
            for g in range(groups):
                if channels_first:
                    np.matmul(weights[g], a[image, g, :, first:stop],
                              out=out[image, g, :, first:stop])
                else:
                    np.matmul(a[first:stop, g], weights[g], out=out[first:stop, g])

    run_workers(work, plan.threads)
    return out


def _pointwise_forward(call, plan, x):
    """Y = W·X on the (subsampled) input."""
    w = _weight_operand(call)                                         # (G, O_g, C_g) / (G, C_g, O_g)
    y = _pointwise_gemm(call, plan, _subsampled(call, x), w, x.shape[0])
    return y.reshape(call.layout.image_shape(x.shape[0], call.forward_channels[1],
                                             call.geometry.output_size))


def _tiled_forward(call, plan, x):
    from . import kernels

    layout, groups, geometry = call.layout, call.groups, call.geometry
    n = x.shape[0]
    in_channels, out_channels = call.forward_channels
    in_per_group, per_group = in_channels // groups, out_channels // groups
    positions, pixels = geometry.n_positions, math.prod(geometry.input_size)
    index = gather_index(geometry, call.padding_mode)
    tiles = _tiles(plan.positions, positions, plan.tile)
    w = _weight_operand(call)

    if layout.name == "channels_last":
        source = np.ascontiguousarray(x).reshape(n, pixels, in_channels)
        y = np.empty((plan.positions, out_channels), dtype=x.dtype)

        def work(k):
            buffer = _buffer(x.dtype, plan.tile * plan.rows)
            for start, count in tiles[k::plan.threads]:
                patches = _view(buffer, count, plan.rows)
                for g in range(groups):
                    kernels.patches_channels_last(source, index, start, count,
                                                  g * in_per_group, patches)
                    _product(patches, w[g],
                             y[start:start + count, g * per_group:(g + 1) * per_group])

        run_workers(work, plan.threads, blas=x.dtype.kind == "c")
        return y.reshape(n, *geometry.output_size, out_channels)

    source = np.ascontiguousarray(x).reshape(n, in_channels, pixels)
    y = np.empty((n, out_channels, positions), dtype=x.dtype)

    def work(k):
        buffer = _buffer(x.dtype, plan.tile * plan.rows)
        for start, count in tiles[k::plan.threads]:
            first, offset = divmod(start, positions)
            patches = _view(buffer, plan.rows, count)
            for g in range(groups):
                kernels.patches_channels_first(source, index, start, count, g * in_per_group,
                                               patches)
                block = y[:, g * per_group:(g + 1) * per_group]
                if offset + count <= positions:           # the tile lies in one image
                    _product(w[g], patches, block[first, :, offset:offset + count])
                    continue
                product = np.empty((per_group, count), dtype=x.dtype)   # whole images
                _product(w[g], patches, product)
                block[first:first + count // positions] = np.moveaxis(
                    product.reshape(per_group, count // positions, positions), 1, 0)

    run_workers(work, plan.threads, blas=x.dtype.kind == "c")
    return y.reshape(n, out_channels, *geometry.output_size)


def _weight_panels(call):
    """W as (G, ⌈O_g/NR⌉, T·C_g, NR) for ``conv_padded``: row t·C_g + c of panel p holds
    output channels p·NR … p·NR + NR − 1 of the group (zeros past O_g)."""
    from .gemm import NR

    w = call.layout.weight_operand(np, call.weight, call.groups)   # (G, O_g, C_g·T) / (G, T·C_g, O_g)
    groups, taps = call.groups, call.geometry.n_taps
    if call.layout.name == "channels_first":
        w = w.reshape(groups, w.shape[1], -1, taps).transpose(0, 3, 2, 1)   # (G, T, C_g, O_g)
    per_group = w.shape[-1]
    w = w.reshape(groups, -1, per_group)
    panels = -(-per_group // NR)
    packed = np.zeros((groups, w.shape[1], panels * NR), dtype=call.weight.dtype)
    packed[:, :, :per_group] = w
    return np.ascontiguousarray(packed.reshape(groups, -1, panels, NR).transpose(0, 2, 1, 3))


def _implicit_forward(call, plan, x):
    """Each image padded once into a channels-last copy, then every output row's patches
    read in place by ``microkernel_padded``: nothing but the weight is packed."""
    from . import gemm

    layout, geometry = call.layout, call.geometry
    n = x.shape[0]
    in_channels, out_channels = call.forward_channels
    pixels, positions = math.prod(geometry.input_size), geometry.n_positions
    source, _ = padded_source(geometry, call.padding_mode)
    row_start, offsets = padded_taps(geometry)
    width, step = geometry.output_size[-1], geometry.stride[-1]
    panels = _weight_panels(call)
    channels_first = layout.name == "channels_first"
    images = np.ascontiguousarray(x).reshape(
        (n, in_channels, pixels) if channels_first else (n, pixels, in_channels))
    y = np.empty((n, out_channels, positions) if channels_first else (n, positions, out_channels),
                 dtype=x.dtype)
    image_rows = source.shape[0]
    if plan.tile >= positions:                 # several whole images per unit
        batch = plan.tile // positions
        units = [(first, min(first + batch, n), 0, row_start.shape[0]) for first in range(0, n, batch)]
    else:                                      # pieces of one image
        units = [(image, image + 1, first, stop)
                 for image, first, stop in _image_ranges(n, row_start.shape[0], plan.tile // width)]
    batch = max(stop - first for first, stop, _, _ in units)
    zero = np.zeros((), dtype=x.dtype)[()]

    def work(k):
        # The last row tile of an image reads up to MR − 1 samples past its row's end.
        padded = workspace("padded", (batch * image_rows + (gemm.MR - 1) * step, in_channels),
                           x.dtype)
        padded[batch * image_rows:] = 0
        current = None
        for first, stop, r0, r1 in units[k::plan.threads]:
            if (first, stop) != current:
                for b in range(stop - first):
                    gemm.pad_channels_last(images[first + b], source, channels_first,
                                           padded[b * image_rows:(b + 1) * image_rows])
                current = first, stop
            gemm.conv_padded(padded, image_rows, row_start, offsets, step, width, panels,
                             call.groups, not channels_first, r0, r1, zero, y[first:stop])

    run_workers(work, plan.threads, blas=False)
    return y.reshape((n, out_channels, *geometry.output_size) if channels_first
                     else (n, *geometry.output_size, out_channels))


def _winograd_forward(call, plan, x):
    """Y = C·x by Winograd's F(m, r) (stride 1): per unit of tiles, the input transforms
    V (α³ × tiles × C_in), one BLAS GEMM per transform point and group, the output
    transforms; each image padded once into a channels-last canvas."""
    from . import gemm, winograd

    layout, geometry, groups = call.layout, call.geometry, call.groups
    nd, n = geometry.nd, x.shape[0]
    in_channels, out_channels = call.forward_channels
    in_g, out_g = in_channels // groups, out_channels // groups
    cut = tiling(geometry, plan.winograd_tile)
    lead = (1,) * (3 - nd)
    source = canvas_source(geometry, call.padding_mode, cut.canvas[3 - nd:])
    channels_first = layout.name == "channels_first"
    images = np.ascontiguousarray(x).reshape(
        (n, in_channels, -1) if channels_first else (n, -1, in_channels))
    weight = call.weight if channels_first else np.moveaxis(call.weight, (-1, -2), (0, 1))
    with single_threaded_blas:
        u = kernel_transform(weight, cut.transforms[3 - nd:]).astype(x.dtype)   # (A, C_g, O)
    u = u.reshape(cut.points, in_g, groups, out_g).transpose(2, 0, 1, 3).copy()  # (G, A, C_g, O_g)
    flat = lambda *values: np.array(values, dtype=np.int64)  # noqa: E731
    kinds, alpha, m, d, tiles = (flat(*v) for v in (cut.kinds, cut.alpha, cut.m, cut.dilation,
                                                    cut.tiles))
    output = lead + tuple(geometry.output_size)
    y = np.empty((n, out_channels, *output) if channels_first else (n, *output, out_channels),
                 dtype=x.dtype)
    per_image, canvas = cut.tiles_per_image, math.prod(cut.canvas)
    if plan.tile >= per_image:                   # several whole images per unit
        batch = plan.tile // per_image
        units = [(first, min(first + batch, n)) for first in range(0, n, batch)]
        units = [(first, stop, 0, (stop - first) * per_image) for first, stop in units]
    else:                                        # pieces of one image
        units = [(image, image + 1, start, min(start + plan.tile, per_image))
                 for image in range(n) for start in range(0, per_image, plan.tile)]
    batch = max(stop - first for first, stop, _, _ in units)
    block = max(t1 - t0 for _, _, t0, t1 in units)
    extent, sizes = flat(*cut.canvas, in_channels), flat(*output, out_channels)
    image_out = y[0].size

    def work(k):
        padded = workspace("padded", (batch, canvas, in_channels), x.dtype)
        v = workspace("transforms_in", (cut.points, block, in_channels), x.dtype)
        mv = workspace("transforms_out", (cut.points, block, out_channels), x.dtype)
        scratch_in = workspace("line_in", (2 * cut.points * in_channels,), x.dtype)
        scratch_out = workspace("line_out", (2 * cut.points * out_channels,), x.dtype)
        current = None
        for first, stop, t0, t1 in units[k::plan.threads]:
            if (first, stop) != current:
                for b in range(stop - first):
                    gemm.pad_channels_last(images[first + b], source, channels_first, padded[b])
                current = first, stop
            count = t1 - t0
            winograd.winograd_input(padded.reshape(-1), extent, kinds, alpha, m, d, tiles, t0,
                                    t1, v.reshape(-1), block, scratch_in)
            for g in range(groups):
                winograd.transform_products(v, u[g], mv, count, g * in_g, (g + 1) * in_g,
                                            g * out_g, (g + 1) * out_g)
            out = y.reshape(-1)[first * image_out:stop * image_out]
            winograd.winograd_output(mv.reshape(-1), block, kinds, alpha, m, d, tiles, t0, t1,
                                     out, sizes, channels_first, scratch_out)

    run_workers(work, plan.threads, blas=False)
    return y.reshape((n, out_channels, *geometry.output_size) if channels_first
                     else (n, *geometry.output_size, out_channels))


# --------------------------------------------------------------------------- adjoint
def adjoint(call, plan, y):
    """X = Cᵀ·y (no bias) for y shaped like conv's output, by the plan's method (the
    stride-1 adjoints that are forward maps never reach here: see ``dispatch``)."""
    if plan.method == "direct":
        return _direct(call, plan, y, "adjoint")
    if plan.tile == 0:
        return _pointwise_adjoint(call, plan, y)
    return _tiled_adjoint(call, plan, y)


def _pointwise_adjoint(call, plan, y):
    """Cᵀ·y for a 1×1 unpadded kernel: Wᵀ·Y, placed at the strided positions."""
    layout, geometry = call.layout, call.geometry
    in_channels = call.forward_channels[0]
    n = y.shape[0]
    w_t = _weight_operand(call).transpose(0, 2, 1)                    # (G, C_g, O_g) / (G, O_g, C_g)
    cols = _pointwise_gemm(call, plan, np.ascontiguousarray(y), w_t, n)
    cols = cols.reshape(layout.image_shape(n, in_channels, geometry.output_size))
    if geometry.input_size == geometry.output_size:     # stride 1, every sample read
        return cols
    # Strided, or output padding past the last sample read (a dilated 1×1 kernel allows
    # output_padding < d): the samples no position reads stay zero.
    x = np.zeros(layout.image_shape(n, in_channels, geometry.input_size), dtype=cols.dtype)
    window = tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(geometry.output_size, geometry.stride))
    x[layout.at_spatial(window)] = cols
    return x


def _tiled_adjoint(call, plan, y):
    from . import kernels

    layout, groups, geometry = call.layout, call.groups, call.geometry
    n = y.shape[0]
    in_channels, out_channels = call.forward_channels
    in_per_group, per_group = in_channels // groups, out_channels // groups
    positions, pixels = geometry.n_positions, math.prod(geometry.input_size)
    inverse, taps = gather_index_adjoint(geometry, call.padding_mode), geometry.n_taps
    w_t = np.ascontiguousarray(_weight_operand(call).transpose(0, 2, 1))  # (G, rows, O_g) / (G, O_g, rows)
    offsets = range(0, positions, plan.tile)
    reads = tile_pixel_ranges(geometry, call.padding_mode, plan.tile)
    channels_first = layout.name == "channels_first"
    grads = np.ascontiguousarray(y).reshape((n, out_channels, positions) if channels_first
                                            else (n, positions, out_channels))
    x = np.zeros((n, in_channels, pixels) if channels_first else (n, pixels, in_channels), dtype=y.dtype)

    if plan.tile > positions:           # several whole images per GEMM, col2im image by image
        batch = plan.tile // positions
        blocks = [(first, min(first + batch, n)) for first in range(0, n, batch)]
        return _tiled_adjoint_images(call, plan, grads, w_t, inverse, blocks, x)

    def work(k):
        buffer = _buffer(y.dtype, plan.tile * plan.rows)
        for image in range(k, n, plan.threads):
            for start, pixels in zip(offsets, reads):
                count = min(plan.tile, positions - start)
                for g in range(groups):
                    channels = slice(g * per_group, (g + 1) * per_group)
                    if channels_first:
                        cols = _view(buffer, plan.rows, count)
                        _product(w_t[g], grads[image, channels, start:start + count], cols)
                        kernels.col2im_channels_first(cols, inverse, taps, start, count,
                                                      pixels, g * in_per_group, x[image])
                    else:
                        cols = _view(buffer, count, plan.rows)
                        _product(grads[image, start:start + count, channels], w_t[g], cols)
                        kernels.col2im_channels_last(cols, inverse, taps, start, count,
                                                     pixels, g * in_per_group, x[image])

    run_workers(work, plan.threads, blas=grads.dtype.kind == "c")
    return x.reshape(layout.image_shape(n, in_channels, geometry.input_size))


def _tiled_adjoint_images(call, plan, grads, w_t, inverse, blocks, x):
    """``_tiled_adjoint`` for small images: one GEMM for a block of whole images (a wider
    product, the weight packed once per block instead of once per image), then col2im
    image by image.  grads: (N, O, L) or (N, L, O); x: (N, C, P) or (N, P, C) zeros."""
    from . import kernels

    layout, groups, geometry = call.layout, call.groups, call.geometry
    in_channels, out_channels = call.forward_channels
    in_per_group, per_group = in_channels // groups, out_channels // groups
    positions, taps = geometry.n_positions, geometry.n_taps
    whole = np.array([0, x.shape[2] if layout.name == "channels_first" else x.shape[1]],
                     dtype=np.intp)
    channels_first = layout.name == "channels_first"

    def work(k):
        buffer = _buffer(grads.dtype, plan.tile * plan.rows)
        for first, stop in blocks[k::plan.threads]:
            count = (stop - first) * positions
            for g in range(groups):
                channels = slice(g * per_group, (g + 1) * per_group)
                if channels_first:      # (O_g, images·L): the block's output planes side by side
                    block = np.ascontiguousarray(grads[first:stop, channels].transpose(1, 0, 2))
                    cols = _view(buffer, plan.rows, count)
                    _product(w_t[g], block.reshape(per_group, count), cols)
                    # Image j's column of position l is j·L + l: col2im's ``start`` −j·L
                    # (its columns are position − start), with the whole buffer.
                    for image in range(first, stop):
                        offset = (image - first) * positions
                        kernels.col2im_channels_first(cols, inverse, taps, -offset,
                                                      offset + positions, whole,
                                                      g * in_per_group, x[image])
                else:       # rows of consecutive images are consecutive
                    cols = _view(buffer, count, plan.rows)
                    rows = grads[first:stop].reshape(count, out_channels)[:, channels]
                    _product(rows, w_t[g], cols)
                    for image in range(first, stop):
                        offset = (image - first) * positions
                        kernels.col2im_channels_last(cols, inverse, taps, -offset,
                                                     offset + positions, whole,
                                                     g * in_per_group, x[image])

    run_workers(work, plan.threads, blas=grads.dtype.kind == "c")
    return x.reshape(layout.image_shape(x.shape[0], in_channels, geometry.input_size))


# --------------------------------------------------------------------------- weight gradient
def weight_grad(call, plan, a, b):
    """Σ_n A·P(b)ᵀ shaped like the weight: A shaped like conv's output, b like its input.

    No conjugation here: conv's weight gradient is ``weight_grad(G, conj(x))``,
    conv_transpose's ``weight_grad(conj(x), G)``.
    """
    if plan.method == "direct":
        return _direct(call, plan, (a, b), "weight_grad")
    if plan.tile == 0:
        return _pointwise_weight_grad(call, plan, a, b)
    if plan.method == "implicit_gemm":
        return _implicit_weight_grad(call, plan, a, b)
    return _tiled_weight_grad(call, plan, a, b)


def _pointwise_weight_grad(call, plan, a, b):
    """Σ A·Xᵀ over the positions for a 1×1 unpadded kernel: each worker sums its units of
    positions into a partial, the partials added in a fixed order."""
    layout, groups, geometry = call.layout, call.groups, call.geometry
    in_channels, out_channels = call.forward_channels
    n, positions = a.shape[0], geometry.n_positions
    p = _subsampled(call, b)
    channels_first = layout.name == "channels_first"
    in_g, out_g = in_channels // groups, out_channels // groups
    if channels_first:      # partials (G, O_g, C_g)
        o = np.ascontiguousarray(a).reshape(n, groups, out_g, positions)
        p = p.reshape(n, groups, in_g, positions)
        partial = np.zeros((plan.threads, groups, out_g, in_g), dtype=np.result_type(a, b))
    else:       # partials (G, C_g, O_g)
        o = np.ascontiguousarray(a).reshape(n * positions, groups, out_g)
        p = p.reshape(n * positions, groups, in_g)
        partial = np.zeros((plan.threads, groups, in_g, out_g), dtype=np.result_type(a, b))
    units = _position_units(n, positions, plan.threads, channels_first)

    def work(k):
        for image, first, stop in units[k::plan.threads]:
            for g in range(groups):
                if channels_first:
                    partial[k, g] += o[image, g, :, first:stop] @ p[image, g, :, first:stop].T
                else:
                    partial[k, g] += p[first:stop, g].T @ o[first:stop, g]

    run_workers(work, plan.threads)
    return layout.weight_from_operand(np, sum_in_order(partial), call.weight.shape)


def _implicit_weight_grad(call, plan, a, b):
    from . import gemm

    layout, groups, geometry = call.layout, call.groups, call.geometry
    n = a.shape[0]
    in_channels, out_channels = call.forward_channels
    positions, pixels = geometry.n_positions, math.prod(geometry.input_size)
    index = gather_index(geometry, call.padding_mode)
    channels_first = layout.name == "channels_first"
    grads = np.ascontiguousarray(a).reshape((n, out_channels, positions) if channels_first
                                            else (n, positions, out_channels))
    source = np.ascontiguousarray(b).reshape((n, in_channels, pixels) if channels_first
                                             else (n, pixels, in_channels))
    partial = np.zeros((plan.threads, groups, plan.rows, out_channels // groups),
                       dtype=np.result_type(a, b))
    kernel = gemm.weight_grad_channels_first if channels_first else gemm.weight_grad_channels_last
    units = _image_ranges(n, positions, plan.tile)
    if plan.kernel == "weight_grad_wide":      # chosen by ``tiles.cpu_plan``
        return _wide_weight_grad(call, plan, grads, source, partial)

    def work(k):
        for image, start, stop in units[k::plan.threads]:
            kernel(source[image], index, grads[image], groups, partial[k], start, stop)

    run_workers(work, plan.threads, blas=False)
    total = sum_in_order(partial)
    if channels_first:
        total = total.transpose(0, 2, 1)
    return layout.weight_from_operand(np, total, call.weight.shape)


def _wide_weight_grad(call, plan, grads, source, partial):
    """The stride-1 channels-first weight gradient on each image's padded grid
    (``gemm.weight_grad_wide``): units of window starts, each worker widening the
    image it works on once."""
    from . import gemm

    geometry, groups = call.geometry, call.groups
    n, in_channels, out_channels = source.shape[0], source.shape[1], grads.shape[1]
    padded_source_map, _ = padded_source(geometry, call.padding_mode)
    offsets, crop = wide_table(geometry)
    span = int(crop[-1]) + 1
    units = _image_ranges(n, span, max(1, -(-span * plan.tile // geometry.n_positions)))

    def work(k):
        padded = workspace("padded", (in_channels, padded_source_map.shape[0]), source.dtype)
        wide = workspace("wide", (out_channels, span), grads.dtype)
        current = None
        for image, start, stop in units[k::plan.threads]:
            if image != current:
                gemm.widen(source[image], padded_source_map, grads[image], crop,
                           geometry.output_size[-1], padded, wide)
                current = image
            gemm.weight_grad_wide(padded, offsets, wide, groups, partial[k], start, stop)

    run_workers(work, plan.threads, blas=False)
    total = sum_in_order(partial).transpose(0, 2, 1)
    return call.layout.weight_from_operand(np, total, call.weight.shape)


def _tiled_weight_grad(call, plan, a, b):
    from . import kernels

    layout, groups, geometry = call.layout, call.groups, call.geometry
    n = a.shape[0]
    in_channels, out_channels = call.forward_channels
    in_per_group, per_group = in_channels // groups, out_channels // groups
    positions, pixels = geometry.n_positions, math.prod(geometry.input_size)
    index = gather_index(geometry, call.padding_mode)
    tiles = _tiles(plan.positions, positions, plan.tile)
    channels_first = layout.name == "channels_first"
    grads = np.ascontiguousarray(a).reshape((n, out_channels, positions) if channels_first
                                            else (n, positions, out_channels))
    source = np.ascontiguousarray(b).reshape((n, in_channels, pixels) if channels_first
                                             else (n, pixels, in_channels))
    shape = (groups, per_group, plan.rows) if channels_first else (groups, plan.rows, per_group)
    partial = np.zeros((plan.threads, *shape), dtype=np.result_type(a, b))

    def work(k):
        buffer = _buffer(partial.dtype, plan.tile * plan.rows)
        for start, count in tiles[k::plan.threads]:
            image, offset = divmod(start, positions)
            for g in range(groups):
                channels = slice(g * per_group, (g + 1) * per_group)
                if channels_first:
                    patches = _view(buffer, plan.rows, count)
                    kernels.patches_channels_first(source, index, start, count,
                                                   g * in_per_group, patches)
                    partial[k, g] += grads[image, channels, offset:offset + count] @ patches.T
                else:
                    patches = _view(buffer, count, plan.rows)
                    kernels.patches_channels_last(source, index, start, count,
                                                  g * in_per_group, patches)
                    partial[k, g] += patches.T @ grads[image, offset:offset + count, channels]

    run_workers(work, plan.threads)
    total = sum_in_order(partial)
    return layout.weight_from_operand(np, total, call.weight.shape)


# --------------------------------------------------------------------------- direct
def _direct(call, plan, operands, operation):
    """The direct kernels on channels-first planes (channels-last goes through a copy)."""
    from . import kernels

    layout, geometry, groups = call.layout, call.geometry, call.groups
    in_channels, out_channels = call.forward_channels
    positions, pixels = geometry.n_positions, math.prod(geometry.input_size)
    channels_first = layout.name == "channels_first"

    def planes(a, channels, samples):
        if not channels_first:
            a = np.moveaxis(a, -1, 1)
        return np.ascontiguousarray(a).reshape(-1, samples)

    def images(a, channels, spatial):
        a = a.reshape(-1, channels, *spatial)
        return a if channels_first else np.ascontiguousarray(np.moveaxis(a, 1, -1))

    if channels_first:
        w = np.ascontiguousarray(call.weight.reshape(out_channels, -1))
    else:   # (*K, C_g, C_out) → (C_out, C_g·T), the channels-first order
        w = call.weight.reshape(geometry.n_taps, in_channels // groups, out_channels)
        w = np.ascontiguousarray(w.transpose(2, 1, 0).reshape(out_channels, -1))
    source, adjoint_index = padded_source(geometry, call.padding_mode)
    rows = direct_rows(geometry)
    sweep = (rows, geometry.output_size[-1], geometry.dilation[-1], geometry.stride[-1])
    n = operands[0].shape[0] if operation == "weight_grad" else operands.shape[0]
    units = n * groups
    chunks = [(first, min(first + plan.tile, units)) for first in range(0, units, plan.tile)]
    if operation == "forward":
        x = planes(operands, in_channels, pixels)
        y = np.empty((n * out_channels, positions), dtype=x.dtype)
        offsets, crop = wide_table(geometry)
        span = int(crop[-1]) + 1
        per_group = out_channels // groups
        if plan.kernel == "direct_forward_wide":      # chosen by ``tiles.cpu_plan``
            run = lambda first, stop, k: kernels.direct_forward_wide(  # noqa: E731
                x, w, groups, source, offsets, crop, geometry.output_size[-1], first, stop,
                workspace("wide", (per_group, span), y.dtype), y)
        else:
            run = lambda first, stop, k: kernels.direct_forward(  # noqa: E731
                x, w, groups, source, *sweep, first, stop, y)
    elif operation == "adjoint":
        g = planes(operands, out_channels, positions)
        x = np.empty((n * in_channels, pixels), dtype=g.dtype)
        # A padded sample sums O_g × (the taps that reach it) products: long only where
        # kernels overlap, not for patches (kernel = stride).
        reach = math.prod(min(k, -(-k * math.gcd(s, d) // s)) for k, s, d in
                          zip(geometry.kernel_size, geometry.stride, geometry.dilation))
        run = lambda first, stop, k: kernels.direct_adjoint(  # noqa: E731
            g, w, groups, adjoint_index, *sweep, source.size, reach, first, stop, x)
    else:
        g = planes(operands[0], out_channels, positions)
        x = planes(operands[1], in_channels, pixels)
        partial = np.zeros((plan.threads, *w.shape), dtype=np.result_type(g, x))
        offsets, crop = wide_table(geometry)
        span = int(crop[-1]) + 1
        per_group = out_channels // groups
        if plan.kernel == "direct_weight_grad_wide":  # chosen by ``tiles.cpu_plan``
            run = lambda first, stop, k: kernels.direct_weight_grad_wide(  # noqa: E731
                g, x, groups, source, offsets, crop, geometry.output_size[-1], first, stop,
                workspace("padded", (source.size,), x.dtype),
                workspace("wide", (per_group, span), g.dtype), partial[k])
        else:
            run = lambda first, stop, k: kernels.direct_weight_grad(  # noqa: E731
                g, x, groups, source, *sweep, first, stop, partial[k])

    def work(k):
        for first, stop in chunks[k::plan.threads]:
            run(first, stop, k)

    run_workers(work, plan.threads, blas=False)
    if operation == "forward":
        return images(y, out_channels, geometry.output_size)
    if operation == "adjoint":
        return images(x, in_channels, geometry.input_size)
    dw = sum_in_order(partial)
    if channels_first:
        return dw.reshape(call.weight.shape)
    dw = dw.reshape(out_channels, in_channels // groups, geometry.n_taps).transpose(2, 1, 0)
    return np.ascontiguousarray(dw).reshape(call.weight.shape)


# --------------------------------------------------------------------------- plain GEMM
def gemm(a, b, c, threads=None):
    """c = a·b by the packed, register-blocked Numba GEMM; returns c.

    a (M, K), b (K, N), c (M, N): C-contiguous, one float dtype, K ≥ 1.  Column
    blocks of whole NR-wide panels go to the worker threads (``threads``, by
    default as many as BLAS may use).  The engine's maps run this GEMM's loop
    nest inside their own kernels; this is the plain GEMM the benchmarks hold
    against BLAS (the CUDA engine's ``gemm`` is its twin).
    """
    from . import gemm as packed

    threads = threads or get_num_threads()
    n = c.shape[1]
    step = max(1, -(-n // threads // packed.NR)) * packed.NR
    blocks = [(j, min(j + step, n)) for j in range(0, n, step)]
    run_workers(lambda k: [packed.gemm(a, b, c, j0, j1) for j0, j1 in blocks[k::threads]],
                threads)
    return c
