"""Pictures of the lowering, drawn from the same index tables the engines run on.

Each function takes the arguments of the function it pictures and returns a
``matplotlib.figure.Figure`` (nothing is shown or saved: ``fig.savefig(...)``).
matplotlib is an optional extra (``pip install "convmm[plot]"``); importing
convmm never imports it, and importing this module without it raises an
ImportError that says how to install it.

The drawn data are convmm's own results: the coloured cells of ``toeplitz`` are
the non-zeros of ``convmm.toeplitz``, the columns of ``im2col`` are
``convmm.im2col``'s columns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

try:
    import matplotlib
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle
    from matplotlib.ticker import MaxNLocator
except ImportError as error:  # pragma: no cover - exercised without the extra
    raise ImportError(
        "convmm.plot draws with matplotlib, which is not installed: "
        "pip install 'convmm[plot]' (or pip install matplotlib)") from error

from . import _api
from ._core.index_tables import coordinate_source, toeplitz_pairs
from ._core.params import int_tuple
from ._core.params import padding_mode as padding_mode_name
from ._core.types import Array, DataFormat, Int, IntOrTuple, Padding, PaddingMode
from ._core.validation import prepare_operator
from ._operator.toeplitz import toeplitz as _toeplitz

__all__ = ["Arithmetic", "arithmetic", "conv_transpose_steps", "im2col", "spectrum", "toeplitz"]

DENSE_CELLS = 40_000
"""The largest matrix (rows × columns) the pictures draw cell by cell; ``toeplitz``
draws larger ones as a sparsity picture."""

SPARSITY_PIXELS = 512
"""A sparsity picture's pixels along each side at most: one pixel per cell up to this
many rows (columns), else one per run of ⌈rows/512⌉ (⌈columns/512⌉) cells."""

SPARSITY_ENTRIES = 4_000_000
"""The most structural non-zeros a sparsity picture places (larger matrices are refused)."""

VALUE_CELLS = 600
"""Matrices up to this many cells get each entry's value written in its cell."""

TAP_COLOURS = 20
"""Kernels of up to this many taps get one colour each (matplotlib's tab20); larger
ones a continuous colour map."""


def _tap_colours(taps: int):
    """One colour per tap, then black for cells where several taps fold together."""
    if taps <= TAP_COLOURS:
        base = [matplotlib.colormaps["tab20"](i / 20) for i in range(taps)]
    else:
        base = [matplotlib.colormaps["viridis"](i / max(taps - 1, 1)) for i in range(taps)]
    return base


def _ink(background) -> str:
    """Black or white text, whichever reads better on ``background`` (by its luma,
    ITU-R BT.601 weights)."""
    red, green, blue, _ = matplotlib.colors.to_rgba(background)
    return "white" if 0.299 * red + 0.587 * green + 0.114 * blue < 0.5 else "black"


def _tap_name(index: int, kernel: Sequence[int]) -> str:
    return "tap " + ",".join(str(i) for i in np.unravel_index(index, tuple(kernel)))


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(min(max(width, 7.0), 16.0), min(max(height, 3.5), 12.0)),
                  layout="constrained")


def toeplitz(weight: Array, input_shape: Sequence[int], *, stride: IntOrTuple = 1,
             padding: Padding = 0, dilation: IntOrTuple = 1, groups: Int = 1,
             padding_mode: PaddingMode = "zeros",
             data_format: DataFormat = "channels_first") -> Figure:
    """The matrix C of ``conv`` on one sample, each non-zero coloured by the tap it carries.

    Rows are the output (channel, position) pairs and columns the input (channel,
    sample) pairs, both flattened in the data format's order, as
    ``convmm.toeplitz`` builds C.  A cell that several taps fold onto (reflect,
    replicate, circular and symmetric padding copy samples into the padding) is
    black.  Thick lines outline the channel blocks (channels-first) or the
    position blocks (channels-last); small matrices carry each entry's value.
    Matrices over ``DENSE_CELLS`` cells are drawn as a sparsity picture: one pixel
    per cell up to ``SPARSITY_PIXELS`` rows and columns, beyond that one pixel per
    run of cells, coloured by its taps (grey where cells of different taps share
    a pixel).  Each cell's taps come from the index table the engines run on
    (``index_tables.toeplitz_pairs``, the non-zero pattern of every channel block).

    Parameters
    ----------
    weight : array
        ``conv``'s weight, ``(C_out, C_in/groups, *K)`` or ``(*K, C_in/groups, C_out)``, any
        namespace (drawn from a NumPy copy).
    input_shape : sequence of ints
        One sample's shape: ``(C_in, *S)`` channels-first, ``(*S, C_in)`` channels-last.
    stride, padding, dilation, groups, padding_mode, data_format
        As ``conv``'s.

    Returns
    -------
    matplotlib.figure.Figure
        One axes; its image's array holds each cell's (pixel's) code: 0 empty, t + 1
        for tap t, ∏K + 1 where taps fold together, ∏K + 2 for a pixel of a sparsity
        picture whose cells carry different codes.

    Raises
    ------
    TypeError, ValueError
        As ``convmm.toeplitz``; a ValueError for a matrix of more than
        ``SPARSITY_ENTRIES`` structural non-zeros.

    Examples
    --------
    >>> import numpy as np
    >>> from convmm import plot
    >>> fig = plot.toeplitz(np.arange(1., 10).reshape(1, 1, 3, 3), (1, 4, 4))
    >>> fig.axes[0].get_title().splitlines()[0]
    'C of conv: 4×16 (1 output channel × 2×2 positions, 1 input channel × 4×4 samples)'
    """
    keywords: dict[str, Any] = dict(stride=stride, padding=padding, dilation=dilation,
                                    groups=groups, padding_mode=padding_mode,
                                    data_format=data_format)
    call = prepare_operator(weight, input_shape, **keywords)
    cell_rows, cell_columns, cell_codes, (rows, columns) = _cell_codes(call)
    w = _numpy(weight)
    nd = w.ndim - 2
    first = data_format == "channels_first"
    kernel = w.shape[2:] if first else w.shape[:nd]
    taps = math.prod(kernel)
    if rows * columns > DENSE_CELLS:
        return _sparsity_picture(call, cell_rows, cell_columns, cell_codes, (rows, columns),
                                 kernel, _toeplitz_title(call, rows, columns, kernel, keywords))
    values = np.asarray(_numpy(_toeplitz(weight, input_shape, format="dense", **keywords)))
    codes = np.zeros((rows, columns), dtype=int)
    codes[cell_rows, cell_columns] = cell_codes
    colours = ["white", *_tap_colours(taps), "black"]
    figure = _figure(columns * 0.3 + 3, rows * 0.3 + 1.5)
    axes = figure.add_subplot()
    axes.imshow(codes, cmap=ListedColormap(colours), vmin=0, vmax=taps + 1,
                interpolation="nearest", aspect="equal")
    out_shape, spatial_in = call.geometry.output_size, call.geometry.input_size
    in_channels, out_channels = call.forward_channels
    _outline(axes, rows, columns, out_channels, in_channels, math.prod(out_shape),
             math.prod(spatial_in), first)
    if first and len(out_shape) > 1:      # the doubly blocked structure: rows of the image
        for r in range(out_shape[-1], rows, out_shape[-1]):
            axes.axhline(r - 0.5, color="0.75", linewidth=0.6)
        for c in range(spatial_in[-1], columns, spatial_in[-1]):
            axes.axvline(c - 0.5, color="0.75", linewidth=0.6)
    if rows * columns <= VALUE_CELLS:
        for r, c in zip(*np.nonzero(values)):
            colour = _ink(colours[codes[r, c]])
            axes.text(c, r, f"{values[r, c]:.3g}", ha="center", va="center", fontsize=7,
                      color=colour)
    axes.set_title(_toeplitz_title(call, rows, columns, kernel, keywords), fontsize=9)
    _toeplitz_labels(axes, first, colours, kernel, codes)
    return figure


def _cell_codes(call):
    """(rows, columns, codes, shape) of C's structural non-zeros: code t + 1 for a cell
    that tap t alone reads, ∏K + 1 where several taps fold onto it.

    Every (output channel, input channel) block of one group has the non-zero
    pattern ``toeplitz_pairs`` (the engines' im2col plan, sorted by cell); the
    blocks are placed as ``convmm.toeplitz`` places them.
    """
    geometry, groups = call.geometry, call.groups
    position, pixel, taps = toeplitz_pairs(geometry, call.padding_mode)
    n_taps = geometry.n_taps
    code = np.where((taps[1:] == n_taps).all(axis=0), taps[0] + 1, n_taps + 1)
    in_channels, out_channels = call.forward_channels
    in_per_group, per_group = in_channels // groups, out_channels // groups
    positions, pixels = geometry.n_positions, math.prod(geometry.input_size)
    shape = (out_channels * positions, in_channels * pixels)
    entries = out_channels * in_per_group * code.size
    if entries > SPARSITY_ENTRIES:
        raise ValueError(f"plot.toeplitz places at most {SPARSITY_ENTRIES} non-zeros, C of "
                         f"this call ({shape[0]}×{shape[1]}) has {entries}; take a smaller "
                         f"input_shape or fewer channels")
    o = np.arange(out_channels)[:, None, None]
    c = (o // per_group) * in_per_group + np.arange(in_per_group)[None, :, None]
    if call.layout.name == "channels_first":
        row, column = o * positions + position, c * pixels + pixel
    else:
        row, column = position * out_channels + o, pixel * in_channels + c
    full = (out_channels, in_per_group, code.size)
    return (np.broadcast_to(row, full).ravel(), np.broadcast_to(column, full).ravel(),
            np.broadcast_to(code, full).ravel(), shape)


def _toeplitz_title(call, rows, columns, kernel, keywords):
    geometry = call.geometry
    in_channels, out_channels = call.forward_channels
    join = "×".join
    return (f"C of conv: {rows}×{columns} ({out_channels} output channel"
            f"{'s' if out_channels > 1 else ''} × {join(map(str, geometry.output_size))} "
            f"positions, {in_channels} input channel{'s' if in_channels > 1 else ''} × "
            f"{join(map(str, geometry.input_size))} samples)\n"
            f"kernel {join(map(str, kernel))}, stride {keywords['stride']}, padding "
            f"{keywords['padding']!r}, dilation {keywords['dilation']}, groups "
            f"{keywords['groups']}, {keywords['padding_mode']}, {keywords['data_format']}")


def _toeplitz_labels(axes, first, colours, kernel, codes):
    """Axis labels and the legend: the taps' colours, black (folded) and grey (mixed) if drawn."""
    taps = math.prod(kernel)
    axes.set_xlabel(f"input ({'channel, sample' if first else 'sample, channel'}), flattened")
    axes.set_ylabel(f"output ({'channel, position' if first else 'position, channel'})")
    handles = [Patch(color=colours[t + 1], label=_tap_name(t, kernel))
               for t in range(min(taps, TAP_COLOURS))]
    if int((codes == taps + 1).sum()):
        handles.append(Patch(color="black", label="several taps folded"))
    if int((codes == taps + 2).sum()):
        handles.append(Patch(color=colours[taps + 2], label="cells of several taps\nin one pixel"))
    axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7,
                frameon=False)


def _sparsity_picture(call, cell_rows, cell_columns, cell_codes, shape, kernel, title):
    """C over ``DENSE_CELLS`` cells: its cells binned into at most ``SPARSITY_PIXELS`` pixels
    a side, each pixel coloured by the code its cells share (``_cell_codes``), grey where
    they differ, white where it holds no non-zero."""
    rows, columns = shape
    taps = math.prod(kernel)
    height, width = min(rows, SPARSITY_PIXELS), min(columns, SPARSITY_PIXELS)
    pixel = (cell_rows * height // rows) * width + cell_columns * width // columns
    empty = taps + 3
    low = np.full(height * width, empty)
    high = np.zeros(height * width, dtype=int)
    np.minimum.at(low, pixel, cell_codes)
    np.maximum.at(high, pixel, cell_codes)
    codes = np.where(low == empty, 0, np.where(low == high, low, taps + 2)).reshape(height, width)
    colours = ["white", *_tap_colours(taps), "black", "0.6"]
    tall = rows / columns
    figure = _figure(9.0 / tall + 3.0, 9.0) if tall >= 1 else _figure(10.0, 7.0 * tall + 2.0)
    axes = figure.add_subplot()
    aspect = "equal" if 1 / 20 <= rows / columns <= 20 else "auto"
    axes.imshow(codes, cmap=ListedColormap(colours), vmin=0, vmax=taps + 2,
                interpolation="nearest", aspect=aspect,
                extent=(-0.5, columns - 0.5, rows - 0.5, -0.5))
    in_channels, out_channels = call.forward_channels
    first = call.layout.name == "channels_first"
    _outline(axes, rows, columns, out_channels, in_channels, call.geometry.n_positions,
             math.prod(call.geometry.input_size), first, max_lines=32)
    for axis in (axes.xaxis, axes.yaxis):      # a few round indices, not one per block
        axis.set_major_locator(MaxNLocator(8, integer=True))
    binned = ("one pixel per cell" if (height, width) == (rows, columns) else
              f"one pixel per {-(-rows // height)}×{-(-columns // width)} cells")
    axes.set_title(f"{title}\nsparsity picture, {binned}: {cell_codes.size} non-zeros, "
                   f"{cell_codes.size / (rows * columns):.2%} of the cells", fontsize=9)
    _toeplitz_labels(axes, first, colours, kernel, codes)
    return figure


def _outline(axes, rows, columns, out_channels, in_channels, positions, samples, first,
             max_lines=None):
    """Lines between the channel blocks (channels-first) or position blocks (channels-last),
    none in a direction that would take more than ``max_lines``."""
    if first:
        row_block, column_block = positions, samples
    else:
        row_block, column_block = out_channels, in_channels
    if max_lines is None or rows // row_block <= max_lines:
        for r in range(row_block, rows, row_block):
            axes.axhline(r - 0.5, color="0.3", linewidth=1.2)
    if max_lines is None or columns // column_block <= max_lines:
        for c in range(column_block, columns, column_block):
            axes.axvline(c - 0.5, color="0.3", linewidth=1.2)
    axes.set_xticks(range(0, columns, max(1, columns // 16)))
    axes.set_yticks(range(0, rows, max(1, rows // 16)))


def im2col(input_shape: Sequence[int], kernel_size: IntOrTuple, *, stride: IntOrTuple = 1,
           padding: Padding = 0, dilation: IntOrTuple = 1, padding_mode: PaddingMode = "zeros",
           data_format: DataFormat = "channels_first", highlight: int = 3) -> Figure:
    """The patch matrix of one sample beside the padded input it reads.

    Left: the input, each sample numbered, with the first ``highlight`` patches
    outlined (their taps marked).  Right: ``convmm.im2col`` of that numbered input,
    one column per output position, the outlined patches' columns coloured as
    their outlines; each entry is the number of the sample it copies (or a zero of
    the padding).  The title gives the element strides of the strided view that
    builds the channels-last patch matrix without a copy.

    Parameters
    ----------
    input_shape : sequence of ints
        One sample's shape: ``(C, *S)`` channels-first, ``(*S, C)`` channels-last, 1 or 2
        spatial dims.
    kernel_size : int or sequence of ints
        K, per spatial dim.
    stride, padding, dilation, padding_mode, data_format
        As ``im2col``'s.
    highlight : int
        How many patches to outline (the first ones, row-major).

    Returns
    -------
    matplotlib.figure.Figure
        Two axes: the input (its image the sample numbers) and the patch matrix (its
        image ``convmm.im2col`` of the numbered input, −1 for a zero of the padding).

    Raises
    ------
    TypeError, ValueError
        As ``convmm.im2col``; a ValueError for 3 spatial dims or a matrix over
        ``DENSE_CELLS`` cells.

    Examples
    --------
    >>> from convmm import plot
    >>> fig = plot.im2col((1, 4, 4), 3)
    >>> fig.axes[1].images[0].get_array().shape
    (9, 4)
    """
    first = data_format == "channels_first"
    spatial = tuple(input_shape[1:] if first else input_shape[:-1])
    channels = input_shape[0] if first else input_shape[-1]
    if len(spatial) not in (1, 2):
        raise ValueError(f"plot.im2col draws 1 or 2 spatial dims, got input_shape "
                         f"{tuple(input_shape)} ({len(spatial)} spatial dims)")
    numbered = np.arange(math.prod(input_shape), dtype=float).reshape(tuple(input_shape)) + 1
    keywords: dict[str, Any] = dict(stride=stride, padding=padding, dilation=dilation,
                                    padding_mode=padding_mode, data_format=data_format)
    kernel = kernel_size if isinstance(kernel_size, Sequence) else (kernel_size,) * len(spatial)
    cols = np.asarray(_api.im2col(numbered, tuple(kernel), **keywords)) - 1
    rows, columns = cols.shape
    if rows * columns > DENSE_CELLS:
        raise ValueError(f"plot.im2col draws matrices of at most {DENSE_CELLS} cells, this "
                         f"one has {rows}×{columns}; take a smaller input_shape")
    positions = columns if first else rows
    matrix = cols if first else cols.T          # one column per position, in the picture
    figure = _figure(spatial[-1] * 0.5 + matrix.shape[1] * 0.45 + 3,
                     max(matrix.shape[0] * 0.35, (spatial[0] if len(spatial) > 1 else 1) * 0.5)
                     + 2)
    left, right = figure.subplots(1, 2, width_ratios=[max(spatial[-1], 2),
                                                      max(matrix.shape[1], 2)])
    plane = numbered[0] if first else np.moveaxis(numbered, -1, 0)[0]
    plane = plane.reshape((1, -1)) if plane.ndim == 1 else plane
    left.imshow(np.zeros_like(plane), cmap=ListedColormap(["0.95"]), aspect="equal")
    for (i, j), value in np.ndenumerate(plane):
        left.text(j, i, f"{int(value) - 1}", ha="center", va="center", fontsize=7)
    colours = [matplotlib.colormaps["tab10"](k) for k in range(10)]
    out = _api.conv_output_shape(spatial, tuple(kernel), stride=stride, padding=padding,
                                 dilation=dilation)
    pairs = _api.resolve_padding(spatial, tuple(kernel), stride=stride, padding=padding,
                                 dilation=dilation)
    steps = int_tuple(stride, len(spatial), "stride", minimum=1)
    gaps = int_tuple(dilation, len(spatial), "dilation", minimum=1)
    for k in range(min(highlight, positions)):
        where = np.unravel_index(k, out)
        starts = [w * s - b for w, s, (b, _) in zip(where, steps, pairs)]
        for tap in np.ndindex(*kernel):
            at = [st + t * d for st, t, d in zip(starts, tap, gaps)]
            y, x = (0, at[0]) if len(at) == 1 else (at[0], at[1])
            left.add_patch(Rectangle((x - 0.45, y - 0.45), 0.9, 0.9, fill=False,
                                     edgecolor=colours[k % 10], linewidth=2 - 0.4 * k))
    # The padding: each padded cell labelled with the sample it copies (grey), or 0.
    grid = [np.arange(-b, n + a) for n, (b, a) in zip(spatial, pairs)]
    sources = [coordinate_source(g, n, padding_mode_name(padding_mode))
               for g, n in zip(grid, spatial)]
    if len(spatial) == 1:
        grid, sources = [np.zeros(1, dtype=int), grid[0]], [np.zeros(1, dtype=int), sources[0]]
    for i, row_source in zip(grid[0], sources[0]):
        for j, column_source in zip(grid[1], sources[1]):
            if 0 <= i < plane.shape[0] and 0 <= j < plane.shape[1]:
                continue
            copied = (row_source >= 0 and column_source >= 0)
            label = f"{int(plane[row_source, column_source]) - 1}" if copied else "0"
            left.add_patch(Rectangle((j - 0.45, i - 0.45), 0.9, 0.9, fill=False,
                                     edgecolor="0.7", linestyle=":", linewidth=0.8))
            left.text(j, i, label, ha="center", va="center", fontsize=7, color="0.55",
                      style="italic")
    left.set_xlim(-0.5 - pairs[-1][0], plane.shape[1] - 0.5 + pairs[-1][1])
    if len(spatial) > 1:
        left.set_ylim(plane.shape[0] - 0.5 + pairs[0][1], -0.5 - pairs[0][0])
    copies = ("zeros" if padding_mode_name(padding_mode) == "zeros"
              else "the sample it copies")
    left.set_title(f"input (channel 0 of {channels}), samples numbered;\n"
                   f"dotted: {padding_mode} padding, {copies}", fontsize=9)
    left.set_yticks(range(-pairs[0][0], plane.shape[0] + pairs[0][1]) if len(spatial) > 1
                    else [])
    right.imshow(matrix, cmap=ListedColormap(["0.95"]), aspect="equal",
                 interpolation="nearest")          # the drawn data: im2col's entries
    for k in range(min(highlight, positions)):
        right.add_patch(Rectangle((k - 0.5, -0.5), 1, matrix.shape[0], facecolor=colours[k % 10],
                                  alpha=0.35, edgecolor=colours[k % 10], linewidth=2))
    if matrix.size <= 4 * VALUE_CELLS:
        for (i, j), value in np.ndenumerate(matrix):
            right.text(j, i, "·" if value < 0 else f"{int(value)}", ha="center", va="center",
                       fontsize=7, color="0.5" if value < 0 else "black")
    right.set_xlabel("output position (one patch per column)")
    right.set_xticks(range(0, matrix.shape[1], max(1, matrix.shape[1] // 16)))
    right.set_yticks(range(0, matrix.shape[0], max(1, matrix.shape[0] // 16)))
    right.set_ylabel("(channel, tap)" if first else "(tap, channel)")
    padded = tuple(n + b + a for n, (b, a) in zip(spatial, pairs))
    strides = _strides(padded, channels, steps, gaps)
    zeros = ", · a zero of the padding" if (matrix < 0).any() else ""
    right.set_title(f"im2col: {rows}×{columns}" + ("" if first else " (shown transposed)") +
                    f"{zeros}\nas a strided view of the padded input (channels-last):\n"
                    f"element strides {strides}", fontsize=9)
    return figure


def conv_transpose_steps(x: Array, weight: Array, *, stride: IntOrTuple = 1,
                         padding: Padding = 0, output_padding: IntOrTuple = 0,
                         dilation: IntOrTuple = 1) -> Figure:
    """The transposed convolution by zero insertion, step by step, beside ``conv_transpose``.

    The recipe (Dumoulin & Visin, "A guide to convolution arithmetic for deep
    learning", 2016): insert s − 1 zeros between the input's samples, pad
    d·(K − 1) − p on each side (and the output padding at the end; a negative
    amount crops), flip the (dilated) kernel, and convolve at stride 1.  The last
    panel is ``convmm.conv_transpose`` itself, which computes Cᵀ·x without any of
    these zeros, and beside it the Cᵀ view: the forward convolution's matrix,
    transposed, applied to x; the title gives the largest difference.

    Parameters
    ----------
    x : array
        The transposed convolution's input, ``(N, 1, *S)`` or ``(1, *S)`` with 1 or 2
        spatial dims (the first image is drawn).
    weight : array
        The forward convolution's weight, ``(1, 1, *K)``: one channel in and out.
    stride, padding, output_padding, dilation
        As ``conv_transpose``'s (zero padding; explicit padding or "valid").

    Returns
    -------
    matplotlib.figure.Figure
        Eight axes: the input, the zeros inserted, the padded canvas, the flipped
        kernel, the stride-1 convolution, ``conv_transpose``'s result, the matrix
        Cᵀ (``toeplitz``'s, transposed) and Cᵀ·x (each image's array the values
        drawn).

    Raises
    ------
    TypeError, ValueError
        As ``conv_transpose``; a ValueError for more than one channel, 3 spatial
        dims, or "same" padding.

    Examples
    --------
    >>> import numpy as np
    >>> from convmm import plot
    >>> fig = plot.conv_transpose_steps(np.array([[[1., 2], [3, 4]]]),
    ...                                 np.array([[[[1., 0], [0, -1]]]]), stride=2)
    >>> fig.axes[5].images[0].get_array().shape
    (4, 4)
    """
    images, w = _numpy(x), _numpy(weight)
    if w.ndim not in (3, 4) or w.shape[:2] != (1, 1):
        raise ValueError(f"plot.conv_transpose_steps draws one channel in and out with 1 or 2 "
                         f"spatial dims: weight (1, 1, *K), got shape {w.shape}")
    if isinstance(padding, str) and padding != "valid":
        raise ValueError(f"plot.conv_transpose_steps draws explicit padding, got {padding!r}")
    nd = w.ndim - 2
    result = np.asarray(_api.conv_transpose(images, w, stride=stride, padding=padding,
                                            output_padding=output_padding, dilation=dilation))
    plane = images.reshape(images.shape[-nd:]) if images.size == math.prod(
        images.shape[-nd:]) else images.reshape((-1, *images.shape[-nd:]))[0]
    kernel = w.reshape(w.shape[2:])
    taps: tuple[int, ...] = tuple(int(size) for size in list(w.shape)[2:])
    steps = int_tuple(stride, nd, "stride", minimum=1)
    gaps = int_tuple(dilation, nd, "dilation", minimum=1)
    extra = int_tuple(output_padding, nd, "output_padding", minimum=0)
    pairs = _api.resolve_padding(tuple((n - 1) * s + 1 for n, s in zip(plane.shape, steps)),
                                 taps, padding=padding, dilation=gaps)
    inserted = np.zeros(tuple((n - 1) * s + 1 for n, s in zip(plane.shape, steps)))
    samples = tuple(slice(None, None, s) for s in steps)
    inserted[samples] = plane
    # Which cells hold x's samples (the rest are the recipe's zeros, drawn as dots, so
    # that a sample of value 0 is not taken for one of them).
    from_x = np.zeros(inserted.shape, dtype=bool)
    from_x[samples] = True
    canvas, canvas_from_x = inserted, from_x
    for axis, (k, d, (before, after), a) in enumerate(zip(taps, gaps, pairs, extra)):
        width = [(0, 0)] * nd
        low, high = d * (k - 1) - before, d * (k - 1) - after + a
        width[axis] = (max(low, 0), max(high, 0))
        crop = [slice(None)] * nd
        crop[axis] = slice(max(-low, 0), canvas.shape[axis] + sum(width[axis]) - max(-high, 0))
        canvas = np.pad(canvas, width)[tuple(crop)]
        canvas_from_x = np.pad(canvas_from_x, width)[tuple(crop)]
    dilated = np.zeros(tuple(d * (k - 1) + 1 for k, d in zip(taps, gaps)))
    kernel_taps = tuple(slice(None, None, d) for d in gaps)
    dilated[kernel_taps] = kernel
    from_weight = np.zeros(dilated.shape, dtype=bool)
    from_weight[kernel_taps] = True
    flipped = np.flip(dilated)
    stepped = np.asarray(_api.conv(canvas[None, None], flipped[None, None].copy()))[0, 0]
    shown = result.reshape(result.shape[-nd:]) if result.size == math.prod(
        result.shape[-nd:]) else result.reshape((-1, *result.shape[-nd:]))[0]
    difference = float(np.max(np.abs(stepped - shown))) if stepped.shape == shown.shape \
        else float("nan")
    panels = [("input x", plane, None),
              (f"1) s − 1 = {', '.join(str(s - 1) for s in steps)} zero(s) inserted between "
               f"samples (dots)", inserted, from_x),
              ("2) padded by d·(K − 1) − p (+ output padding)", canvas, canvas_from_x),
              ("3) the kernel, dilated and flipped", flipped, np.flip(from_weight)),
              ("4) stride-1 convolution of 2) with 3)", stepped, None),
              ("conv_transpose(x, weight): Cᵀ·x", shown, None)]
    # The Cᵀ view: the forward convolution's matrix C (from the output's size to x's),
    # transposed, applied to x flattened.
    matrix = np.asarray(_toeplitz(w, (1, *shown.shape), stride=stride, padding=padding,
                                  dilation=dilation, format="dense")).T
    product = (matrix @ plane.reshape(-1)).reshape(shown.shape)
    difference = max(difference, float(np.max(np.abs(product - shown))))
    panels += [(f"Cᵀ ({matrix.shape[0]}×{matrix.shape[1]}), C the forward convolution's "
                f"matrix", matrix, matrix != 0), ("Cᵀ · x, reshaped", product, None)]
    figure = _figure(16, 6 if nd == 2 else 3.5)
    for axes, (title, values, written) in zip(figure.subplots(2, 4).reshape(-1), panels):
        grid = values.reshape((1, -1)) if values.ndim == 1 else values
        axes.imshow(grid, cmap="RdBu_r", vmin=-np.max(np.abs(grid)) or -1,
                    vmax=np.max(np.abs(grid)) or 1, interpolation="nearest",
                    aspect="auto" if values is matrix else "equal")
        axes.images[0].set_array(values if values.ndim > 1 else grid)
        if grid.size <= (160 if values is matrix else 100):
            top = float(np.max(np.abs(grid))) or 1.0
            shown_values = np.ones(grid.shape, bool) if written is None else \
                written.reshape(grid.shape)
            for (i, j), value in np.ndenumerate(grid):
                axes.text(j, i, f"{value:.3g}" if shown_values[i, j] else "·", ha="center",
                          va="center", fontsize=6 if values is matrix else 8,
                          color="white" if abs(value) > 0.6 * top else
                          ("black" if shown_values[i, j] else "0.5"))
        axes.set_title(title, fontsize=9)
        axes.set_xticks([])
        axes.set_yticks([])
    figure.suptitle(f"transposed convolution by zero insertion: stride {stride}, padding "
                    f"{padding!r}, output padding {output_padding}, dilation {dilation}; "
                    f"4), conv_transpose and Cᵀ·x differ by at most {difference:.2g}",
                    fontsize=10)
    return figure


def spectrum(op: Any) -> Figure:
    """A ``ConvOperator``'s singular values and, in 2-d, its gain per frequency.

    Left: every singular value of C, largest first (``op.singular_values()``: exact
    from the transfer matrices for a circular convolution with stride 1, else a
    dense SVD), with ``op.norm()`` marked.  Right, for 2 spatial dims: the gain of
    the circular convolution with the same weight on the input's grid at each
    frequency f, σ_max(Ŵ(f)) of its C_out × C_in/groups transfer matrix (Sedghi,
    Gupta & Long, "The Singular Values of Convolutional Layers", ICLR 2019), zero
    frequency in the centre; its largest value is C's norm where C is circulant.

    Parameters
    ----------
    op : ConvOperator
        The operator (any weight namespace; drawn from NumPy copies).

    Returns
    -------
    matplotlib.figure.Figure
        One axes (two in 2-d); the first's line holds the singular values, the
        second's image the gain per frequency.

    Raises
    ------
    TypeError
        ``op`` is not a ``ConvOperator``.
    ValueError
        As ``op.singular_values()`` (an operator too large for a dense SVD that is
        not circulant).

    Examples
    --------
    >>> import numpy as np, convmm
    >>> from convmm import plot
    >>> op = convmm.ConvOperator(np.ones((1, 1, 3, 3)) / 9, (1, 8, 8), padding=1,
    ...                          padding_mode="circular")
    >>> plot.spectrum(op).axes[0].lines[0].get_ydata()[0]
    np.float64(1.0)
    """
    from ._operator.conv_operator import ConvOperator
    from ._operator.spectrum import transfer_matrices

    if not isinstance(op, ConvOperator):
        raise TypeError(f"op must be a ConvOperator, got {type(op).__name__}")
    values = np.sort(_numpy(op.singular_values()).astype(float))[::-1]
    norm = op.norm()
    call = op._call
    two_d = call.geometry.nd == 2
    figure = _figure(12 if two_d else 7, 4.5)
    axes = figure.subplots(1, 2 if two_d else 1, squeeze=False).reshape(-1)
    axes[0].plot(np.arange(values.size), values, marker="." if values.size <= 200 else None,
                 linewidth=1)
    axes[0].axhline(norm, color="0.4", linestyle="--", linewidth=0.8,
                    label=f"norm() = {norm:.4g}")
    axes[0].set_xlabel("index (largest first)")
    axes[0].set_ylabel("singular value")
    exact = ("exact, from the transfer matrices (circulant)" if op._circulant()
             else "dense SVD")
    axes[0].set_title(f"singular values of C ({op.shape[0]}×{op.shape[1]}), {exact}",
                      fontsize=9)
    axes[0].legend(fontsize=8, frameon=False)
    if two_d:
        size = call.geometry.input_size
        complex_dtype = np.complex128
        transfer = _numpy(transfer_matrices(call, size, call.xp.complex128
                                            if hasattr(call.xp, "complex128") else complex_dtype))
        gain = np.linalg.svd(transfer, compute_uv=False).max(axis=(-1, -2))
        gain = np.fft.fftshift(gain)
        extent = (-(size[1] // 2) - 0.5, (size[1] - 1) // 2 + 0.5,
                  (size[0] - 1) // 2 + 0.5, -(size[0] // 2) - 0.5)
        image = axes[1].imshow(gain, cmap="magma", extent=extent, interpolation="nearest")
        figure.colorbar(image, ax=axes[1], label="σ_max of the transfer matrix")
        axes[1].set_xlabel("frequency along the last axis (cycles per grid)")
        axes[1].set_ylabel("frequency along the first axis")
        axes[1].set_title(f"gain per frequency of the circular convolution on {size[0]}×"
                          f"{size[1]} (max {gain.max():.4g})", fontsize=9)
    return figure


def arithmetic(input_size: IntOrTuple, kernel_size: IntOrTuple, stride: IntOrTuple = 1,
               padding: Padding = 0, dilation: IntOrTuple = 1, transposed: bool = False,
               output_padding: IntOrTuple = 0, *, interval: int = 400) -> Any:
    """The sliding window of a 2-d convolution as an animation, one frame per output.

    In the manner of Dumoulin & Visin's convolution-arithmetic animations ("A guide
    to convolution arithmetic for deep learning", 2016): the input (blue) inside its
    padding (white), the kernel's taps (dark, d apart) at each output position in
    turn, and the output (green) filling in.  A transposed convolution is drawn as
    the stride-1 convolution it equals: s − 1 zeros inserted between the input's
    samples, padded by d·(K − 1) − p (the output padding added at the end).  Any
    stride, padding (pairs, "valid", "same", "full"), dilation and output padding.

    Parameters
    ----------
    input_size : int or sequence of two ints
        The (transposed) convolution's input size; an int means a square.
    kernel_size : int or sequence of two ints
        K.
    stride, padding, dilation, output_padding
        As ``conv``'s (``conv_transpose``'s where ``transposed``).
    transposed : bool
        Draw the transposed convolution.
    interval : int
        Milliseconds per frame.

    Returns
    -------
    Arithmetic
        ``.save("conv.gif")`` writes the animation (Pillow; an MP4 where ffmpeg is
        installed), ``.animation()`` gives matplotlib's ``FuncAnimation`` (to show in
        a notebook), ``.figure`` is the figure at the first frame and ``.frames``
        lists, per output position, the grid cells its taps cover.

    Raises
    ------
    TypeError, ValueError
        As ``conv_output_shape`` (``conv_transpose_output_shape`` where
        ``transposed``) for these sizes and keywords.

    Examples
    --------
    >>> from convmm import plot
    >>> animation = plot.arithmetic(5, 3, stride=2, padding=1)
    >>> len(animation.frames)
    9
    """
    size = int_tuple(input_size, 2, "input_size", minimum=1)
    kernel = int_tuple(kernel_size, 2, "kernel_size", minimum=1)
    steps = int_tuple(stride, 2, "stride", minimum=1)
    gaps = int_tuple(dilation, 2, "dilation", minimum=1)
    if transposed:
        out = _api.conv_transpose_output_shape(size, kernel, stride=steps, padding=padding,
                                               output_padding=output_padding, dilation=gaps)
        pairs = _api.resolve_padding(out, kernel, stride=steps, padding=padding,
                                     dilation=gaps)
        extra = int_tuple(output_padding, 2, "output_padding", minimum=0)
        before = [d * (k - 1) - b for k, d, (b, _) in zip(kernel, gaps, pairs)]
        grid = [o + d * (k - 1) for o, k, d in zip(out, kernel, gaps)]
        inputs = {(before[0] + i * steps[0], before[1] + j * steps[1])
                  for i in range(size[0]) for j in range(size[1])}
        window_step: tuple[int, ...] = (1, 1)
        del extra                     # the grid's size already holds it
    else:
        out = _api.conv_output_shape(size, kernel, stride=steps, padding=padding,
                                     dilation=gaps)
        pairs = _api.resolve_padding(size, kernel, stride=steps, padding=padding,
                                     dilation=gaps)
        grid = [n + b + a for n, (b, a) in zip(size, pairs)]
        inputs = {(pairs[0][0] + i, pairs[1][0] + j)
                  for i in range(size[0]) for j in range(size[1])}
        window_step = steps
    frames = []
    for r, c in np.ndindex(*out):
        frames.append({(r * window_step[0] + a * gaps[0], c * window_step[1] + b * gaps[1])
                       for a in range(kernel[0]) for b in range(kernel[1])})
    figure = _figure(grid[1] * 0.45 + out[1] * 0.45 + 1.5, max(grid[0], out[0]) * 0.45 + 1.2)
    left, right = figure.subplots(1, 2, width_ratios=[grid[1], max(out[1], 1)])
    cells = {}
    for i, j in np.ndindex(*grid):
        inside = (i, j) in inputs
        cells[i, j] = Rectangle((j, grid[0] - 1 - i), 0.95, 0.95,
                                facecolor="#9ecae1" if inside else "white",
                                edgecolor="0.6", linestyle="-" if inside else ":")
        left.add_patch(cells[i, j])
    outputs = {}
    for i, j in np.ndindex(*out):
        outputs[i, j] = Rectangle((j, out[0] - 1 - i), 0.95, 0.95, facecolor="white",
                                  edgecolor="0.6")
        right.add_patch(outputs[i, j])
    for axes, shape in ((left, grid), (right, out)):
        axes.set_xlim(-0.2, shape[1] + 0.2)
        axes.set_ylim(-0.2, shape[0] + 0.2)
        axes.set_aspect("equal")
        axes.axis("off")
    kind = "transposed convolution" if transposed else "convolution"
    inserted = (f"s − 1 = {steps[0] - 1}, {steps[1] - 1} zero(s) inserted, "
                if transposed else "")
    left.set_title(f"{kind} input {size[0]}×{size[1]}\n{inserted}padded to "
                   f"{grid[0]}×{grid[1]}", fontsize=9)
    right.set_title(f"output {out[0]}×{out[1]}", fontsize=9)
    figure.suptitle(f"kernel {kernel[0]}×{kernel[1]}, stride {stride}, padding {padding!r}, "
                    f"dilation {dilation}" +
                    (f", output padding {output_padding}" if transposed else ""), fontsize=10)

    def draw(k):
        for (i, j), cell in cells.items():
            inside = (i, j) in inputs
            cell.set_facecolor(("#08519c" if inside else "#6baed6") if (i, j) in frames[k]
                               else ("#9ecae1" if inside else "white"))
        for index, cell in enumerate(outputs.values()):
            cell.set_facecolor("#006d2c" if index == k else ("#a1d99b" if index < k
                                                             else "white"))
        return [*cells.values(), *outputs.values()]

    draw(0)
    return Arithmetic(figure, frames, draw, interval)


class Arithmetic:
    """``arithmetic``'s picture: the figure, its frames, and the animation made on demand.

    matplotlib warns about an animation dropped unsaved, so none exists until
    ``animation()`` or ``save()`` asks for one.

    Parameters
    ----------
    figure : matplotlib.figure.Figure
        The figure, drawn at the first frame.
    frames : list of set of (int, int)
        Per output position, the (row, column) grid cells its taps cover.
    draw : callable
        ``draw(k)`` redraws the figure at frame k.
    interval : int
        Milliseconds per frame.

    Examples
    --------
    >>> from convmm import plot
    >>> picture = plot.arithmetic(4, 3)
    >>> sorted(picture.frames[0])[:3]
    [(0, 0), (0, 1), (0, 2)]
    """

    def __init__(self, figure: Figure, frames: list, draw: Any, interval: int) -> None:
        self.figure, self.frames, self._draw, self.interval = figure, frames, draw, interval

    def animation(self) -> Any:
        """matplotlib's animation of the frames (keep a reference while it shows).

        Returns
        -------
        matplotlib.animation.FuncAnimation
            One frame per output position, ``interval`` milliseconds apart.

        Examples
        --------
        >>> import os, tempfile
        >>> from convmm import plot
        >>> animation = plot.arithmetic(3, 2).animation()
        >>> animation.save(os.path.join(tempfile.mkdtemp(), "conv.gif"), writer="pillow", dpi=30)
        """
        from matplotlib.animation import FuncAnimation

        return FuncAnimation(self.figure, self._draw, frames=len(self.frames),
                             interval=self.interval, blit=False)

    def save(self, path: Any, *, dpi: int = 80, writer: str | None = None) -> None:
        """Write the animation to ``path``.

        Parameters
        ----------
        path : str or os.PathLike
            The file; a ".gif" is written by Pillow unless ``writer`` says otherwise.
        dpi : int
            Resolution, dots per inch of the figure.
        writer : str, optional
            A matplotlib animation writer ("pillow", "ffmpeg" for an MP4, ...).

        Raises
        ------
        ValueError, RuntimeError
            As matplotlib's ``Animation.save`` (e.g. a writer that is not installed).

        Examples
        --------
        >>> import os, tempfile
        >>> from convmm import plot
        >>> path = os.path.join(tempfile.mkdtemp(), "conv.gif")
        >>> plot.arithmetic(3, 2).save(path, dpi=30)
        >>> os.path.getsize(path) > 0
        True
        """
        chosen = writer or ("pillow" if str(path).lower().endswith(".gif") else None)
        self.animation().save(path, writer=chosen, dpi=dpi)


def _strides(size, channels, steps, gaps):
    """The element strides of the channels-last patch view (N, *O, *K, C) of the padded
    input: (H·W·C, s·W·C, s·C, d·W·C, d·C, 1) in 2-d, H and W the padded sizes."""
    inner = [math.prod(size[i + 1:]) * channels for i in range(len(size))]
    return (math.prod(size) * channels, *(s * v for s, v in zip(steps, inner)),
            *(d * v for d, v in zip(gaps, inner)), 1)


def _numpy(a: Any) -> np.ndarray:
    """A NumPy copy of an array of any namespace (host memory)."""
    if isinstance(a, np.ndarray):
        return a
    try:
        return np.from_dlpack(a)
    except (TypeError, AttributeError, RuntimeError, BufferError):
        return np.asarray(a.get() if hasattr(a, "get") else a)
