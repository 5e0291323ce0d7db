"""``toeplitz``: the explicit matrix of a convolution (its doubly-blocked Toeplitz matrix),
built from an index table.

For one sample, ``conv`` is ``y = C·x`` with x and y flattened in the data
format's order.  Channels-first, C has shape (C_out·L, C_in·P) — L output
positions, P input samples — and its block for output channel ``o`` and input
channel ``g·C_g + c`` of the same group ``g`` is the (L, P) matrix

    C_oc[l, p] = Σ W[o, c, t] over the taps t that read sample p at position l

(blocks of different groups are zero).  Channels-last, the rows are ordered
(l, o) and the columns (p, c).  Every block has the same non-zero pattern: the
``toeplitz_pairs`` of the geometry, a small plan of (l, p) entries with their
taps.  So the matrix is built with no loop over positions, by gathering the
weight with index arrays of the size of one row pattern, and

* channels-first CSR rows (o, l) hold, for each channel c, the entries of l's
  pattern: one gather ``W[o, pattern]`` for all rows at once;
* channels-last CSR rows (l, o) interleave a ragged l with a regular o, so its
  transpose is built instead — rows (p, c), each holding p's pattern entries
  times all o of the group, again one gather — and converted (``.T.tocsr()``,
  a linear-time transpose in compiled code).

The dense matrix gathers the weight through the (L, P) tap map of one block
and places the blocks with the layout's axis order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from array_api_compat import device as device_of
from array_api_compat import is_cupy_array, is_numpy_array

from .._core.index_tables import toeplitz_pairs
from .._core.lowering import index_array
from .._core.params import choice
from .._core.validation import itemsize, library, prepare_operator
from .._core.types import Array, DataFormat, Int, IntOrTuple, Padding, PaddingMode

DENSE_LIMIT_BYTES = 1 << 30
"""A ``format="dense"`` matrix larger than this is refused (use "csr")."""


def matrix_shape(call):
    """(rows, cols) of the Toeplitz matrix of a call (a ``Call`` without input)."""
    geometry = call.geometry
    _, in_per_group, _ = call.layout.weight_parts(call.weight.shape, geometry.nd)
    return (call.out_channels * geometry.n_positions,
            in_per_group * call.groups * math.prod(geometry.input_size))


def _ragged(counts, copies):
    """Entries of segments holding ``counts[s]`` items each, every segment repeated ``copies`` times.

    For entries ordered (segment, copy, item of the segment) returns the copy
    index and the global item index of each entry.
    """
    sizes = counts * copies
    segment = np.repeat(np.arange(counts.size), sizes)
    local = np.arange(int(sizes.sum())) - (np.cumsum(sizes) - sizes)[segment]
    per_segment = counts[segment]          # >= 1: empty segments have no entries
    copy = local // per_segment
    item = (np.cumsum(counts) - counts)[segment] + local % per_segment
    return copy, item


def _index_dtype(*extents):
    return np.int32 if max(extents) < 2 ** 31 else np.int64


def _gathered(xpm, table, first_row, taps, n_taps, axis):
    """Each entry's weight: ``Σ_r table[first_row + taps[r]]`` along ``axis``.

    ``taps[0]`` holds every entry's first tap; later rows (folded padding
    only) name the few entries that read more than one tap, the rest hold the
    sentinel ``n_taps`` and are skipped.
    """
    out = xpm.take(table, xpm.asarray(first_row + taps[0]), axis=axis)
    for extra in taps[1:]:
        where = np.flatnonzero(extra != n_taps)
        picked = xpm.take(table, xpm.asarray(first_row[where] + extra[where]), axis=axis)
        if axis == 0:
            out[xpm.asarray(where)] += picked
        else:
            out[:, xpm.asarray(where)] += picked
    return out


def _with_zero_tap(xpm, taps):
    """(…, T) → (…, T + 1): the sentinel tap T reads a zero weight."""
    zero = xpm.zeros((*taps.shape[:-1], 1), dtype=taps.dtype)
    return xpm.concatenate([taps, zero], axis=-1)


def _csr_channels_first(xpm, w, geometry, mode, groups):
    """(data, indices, indptr, shape) of C channels-first; w is (C_out, C_g, T) in xpm."""
    position, pixel, taps = toeplitz_pairs(geometry, mode)
    out_channels, in_per_group, n_taps = w.shape
    positions, pixels = geometry.n_positions, math.prod(geometry.input_size)
    shape = (out_channels * positions, groups * in_per_group * pixels)
    per_position = np.bincount(position, minlength=positions)
    channel, entry = _ragged(per_position, in_per_group)      # row pattern (l, c, entry of l)
    nnz = out_channels * channel.size
    index_dtype = _index_dtype(nnz, *shape)

    table = xpm.reshape(_with_zero_tap(xpm, w), (out_channels, in_per_group * (n_taps + 1)))
    data = _gathered(xpm, table, channel * (n_taps + 1), taps[:, entry], n_taps, axis=1)
    columns = (channel * pixels + pixel[entry]).astype(index_dtype)
    group_offset = np.arange(groups, dtype=index_dtype) * (in_per_group * pixels)
    indices = (xpm.asarray(columns)[None, None, :]
               + xpm.asarray(group_offset)[:, None, None])
    indices = xpm.broadcast_to(indices, (groups, out_channels // groups, columns.size))
    row_lengths = np.tile(per_position * in_per_group, out_channels)
    indptr = np.concatenate([[0], np.cumsum(row_lengths)]).astype(index_dtype)
    return xpm.reshape(data, (-1,)), xpm.reshape(indices, (-1,)), xpm.asarray(indptr), shape


def _csr_channels_last_transposed(xpm, w, geometry, mode, groups):
    """(data, indices, indptr, shape) of Cᵀ channels-last: rows (p, c), columns (l, o)."""
    position, pixel, taps = toeplitz_pairs(geometry, mode)
    out_channels, in_per_group, n_taps = w.shape
    per_group = out_channels // groups
    in_channels = in_per_group * groups
    positions, pixels = geometry.n_positions, math.prod(geometry.input_size)
    shape = (pixels * in_channels, positions * out_channels)
    by_pixel = np.argsort(pixel * positions + position, kind="stable")
    per_pixel = np.bincount(pixel, minlength=pixels)
    channel, entry = _ragged(per_pixel, in_channels)          # row pattern (p, c, entry of p)
    entry = by_pixel[entry]
    nnz = per_group * channel.size
    index_dtype = _index_dtype(nnz, *shape)

    # Rows (g, c, t) of the weight, each holding the group's O_g output channels.
    table = xpm.reshape(w, (groups, per_group, in_per_group, n_taps))
    table = _with_zero_tap(xpm, xpm.transpose(table, (0, 2, 1, 3)))     # (G, C_g, O_g, T+1)
    table = xpm.reshape(xpm.transpose(table, (0, 1, 3, 2)), (in_channels * (n_taps + 1), per_group))
    data = _gathered(xpm, table, channel * (n_taps + 1), taps[:, entry], n_taps, axis=0)
    first_column = (position[entry] * out_channels + (channel // in_per_group) * per_group)
    indices = (xpm.asarray(first_column.astype(index_dtype))[:, None]
               + xpm.arange(per_group, dtype=index_dtype)[None, :])
    row_lengths = np.repeat(per_pixel * per_group, in_channels)
    indptr = np.concatenate([[0], np.cumsum(row_lengths)]).astype(index_dtype)
    return xpm.reshape(data, (-1,)), xpm.reshape(indices, (-1,)), xpm.asarray(indptr), shape


def sparse(call, format):
    """C as a ``scipy.sparse`` array (NumPy weight) or a ``cupyx.scipy.sparse`` matrix (CuPy)."""
    weight = call.weight
    if is_cupy_array(weight):
        import cupy as xpm
        import cupyx.scipy.sparse as sparse_module

        csr = sparse_module.csr_matrix
    else:
        import scipy.sparse as sparse_module

        xpm, csr = np, sparse_module.csr_array
    w = xpm.ascontiguousarray(call.layout.weight_taps(call.xp, weight))
    if call.layout.name == "channels_first":
        data, indices, indptr, shape = _csr_channels_first(xpm, w, call.geometry, call.padding_mode,
                                                           call.groups)
        matrix = csr((data, indices, indptr), shape=shape)
    else:
        data, indices, indptr, shape = _csr_channels_last_transposed(xpm, w, call.geometry,
                                                                     call.padding_mode, call.groups)
        matrix = csr((data, indices, indptr), shape=shape).T.tocsr()
    if xpm is np:
        # Each row's columns are increasing and distinct by construction.
        matrix.has_sorted_indices = True
        matrix.has_canonical_format = True
    return matrix.tocoo() if format == "coo" else matrix


def gather_taps(xp, w, tap_rows):
    """``Σ_r w[..., tap_rows[r]]`` for w (…, T) in any namespace; tap T reads a zero.

    ``tap_rows`` is a NumPy (R, M) plan: row 0 gives each output's first tap,
    later rows the taps folded onto it (or T).  Returns (…, M).
    """
    zero = xp.zeros((*w.shape[:-1], 1), dtype=w.dtype, device=device_of(w))
    table = xp.concat([w, zero], axis=-1)
    out = xp.take(table, index_array(xp, tap_rows[0], w), axis=w.ndim - 1)
    for row in tap_rows[1:]:
        out = out + xp.take(table, index_array(xp, row, w), axis=w.ndim - 1)
    return out


def dense(call):
    """C as a dense array in the weight's namespace and on its device."""
    xp, geometry, layout, groups = call.xp, call.geometry, call.layout, call.groups
    position, pixel, taps = toeplitz_pairs(geometry, call.padding_mode)
    w = layout.weight_taps(xp, call.weight)
    out_channels, in_per_group, n_taps = w.shape
    per_group = out_channels // groups
    positions, pixels = geometry.n_positions, math.prod(geometry.input_size)

    # The tap that each (l, p) entry of a block reads, T (a zero) where none does.
    tap_map = np.full((taps.shape[0], positions * pixels), n_taps, dtype=np.int32)
    tap_map[:, position * pixels + pixel] = taps
    blocks = xp.reshape(gather_taps(xp, w, tap_map), (groups, per_group, in_per_group, positions, pixels))

    if layout.name == "channels_first":   # rows (g, o, l), columns (g', c, p)
        blocks = xp.expand_dims(xp.permute_dims(blocks, (0, 1, 3, 2, 4)), axis=3)
        same_group = (groups, 1, 1, groups, 1, 1)
    else:                                  # rows (l, g, o), columns (p, g', c)
        blocks = xp.expand_dims(xp.permute_dims(blocks, (3, 0, 1, 4, 2)), axis=4)
        same_group = (1, groups, 1, 1, groups, 1)
    if groups > 1:
        eye = xp.reshape(xp.eye(groups, dtype=xp.bool, device=device_of(w)), same_group)
        blocks = xp.where(eye, blocks, xp.zeros((), dtype=w.dtype, device=device_of(w)))
    return xp.reshape(blocks, (out_channels * positions, groups * in_per_group * pixels))


TOEPLITZ_FORMATS = ("csr", "coo", "dense")
def toeplitz_matrix(call, format):
    """The Toeplitz matrix of a validated call in ``format`` ("csr", "coo" or "dense"), the
    dense one refused over ``DENSE_LIMIT_BYTES`` and the sparse ones for NumPy and CuPy only."""
    if format == "dense":
        rows, cols = matrix_shape(call)
        size = rows * cols * itemsize(call.xp, call.weight.dtype)
        if size > DENSE_LIMIT_BYTES:
            raise ValueError(
                f"format='dense' would allocate a {rows}×{cols} matrix ({size / 2 ** 30:.2f} GiB, "
                f"over the limit of {DENSE_LIMIT_BYTES / 2 ** 30:g} GiB); "
                f"use format='csr'"
            )
        return dense(call)
    if not (is_numpy_array(call.weight) or is_cupy_array(call.weight)):
        raise TypeError(
            f"format={format!r} gives scipy.sparse (NumPy) or cupyx.scipy.sparse (CuPy) "
            f"matrices; for a {library(call.weight)} weight use format='dense' "
            f"(ConvOperator.todense())"
        )
    return sparse(call, format)


def toeplitz(weight: Array, input_shape: Sequence[int], *, stride: IntOrTuple = 1,
             padding: Padding = 0, dilation: IntOrTuple = 1, groups: Int = 1,
             padding_mode: PaddingMode = "zeros", data_format: DataFormat = "channels_first",
             format: Literal["csr", "coo", "dense"] = "csr") -> Any:
    """The matrix C of ``conv`` on one sample: ``conv(x)[n].reshape(-1) == C @ x[n].reshape(-1)``.

    The doubly-blocked Toeplitz matrix (in 2-d), for every rank, stride,
    padding, dilation, group count and padding mode that ``conv`` takes.  Its
    shape is (∏ output shape, ∏ input shape), both flattened in the data
    format's order; entry ``[(o, l), (c, p)]`` is the sum of the weights
    ``W[o, c, t]`` of the taps that read input sample ``p`` at output position
    ``l`` (reflect, replicate and circular padding fold several taps onto one
    sample).  Its transpose is ``conv_transpose`` with the same weight.

    Parameters
    ----------
    weight : array
        ``conv``'s weight, ``(C_out, C_in/groups, *K)`` or ``(*K, C_in/groups, C_out)``.
    input_shape : sequence of ints
        One sample's shape: ``(C_in, *S)`` channels-first, ``(*S, C_in)`` channels-last.
    stride, padding, dilation, groups, padding_mode, data_format
        As for ``conv``.
    format : "csr", "coo" or "dense"
        "csr"/"coo": a ``scipy.sparse`` array for a NumPy weight, a
        ``cupyx.scipy.sparse`` matrix for a CuPy weight.  "dense": an array in
        the weight's namespace (any namespace), refused over
        ``DENSE_LIMIT_BYTES`` (1 GiB).

    Returns
    -------
    scipy.sparse array, cupyx.scipy.sparse matrix or array
        (C_out·∏O, C_in·∏S), the weight's dtype.

    Raises
    ------
    TypeError
        A weight that is not an array (or is a Dask array) or has an integer or bool
        dtype; a sparse ``format`` for a weight that is neither NumPy nor CuPy.
    ValueError
        ``input_shape`` or the keywords invalid (as ``conv``), an unknown
        ``format``, or "dense" over ``DENSE_LIMIT_BYTES``.

    See Also
    --------
    ConvOperator : C applied matrix-free, with its adjoint and spectrum.

    Examples
    --------
    >>> import numpy as np, convmm
    >>> convmm.toeplitz(np.array([[[5., 4]]]), (1, 6), format="dense")
    array([[5., 4., 0., 0., 0., 0.],
           [0., 5., 4., 0., 0., 0.],
           [0., 0., 5., 4., 0., 0.],
           [0., 0., 0., 5., 4., 0.],
           [0., 0., 0., 0., 5., 4.]])
    """
    call = prepare_operator(weight, input_shape, stride=stride, padding=padding,
                            dilation=dilation, groups=groups, padding_mode=padding_mode,
                            data_format=data_format)
    return toeplitz_matrix(call, choice(format, TOEPLITZ_FORMATS, "format"))
