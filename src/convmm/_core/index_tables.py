"""Index tables: which input sample feeds which (kernel tap, output position).

Tables are NumPy integer arrays that depend only on a geometry and a padding
mode, never on data, so they are computed once, cached, frozen, and applied to
arrays of any namespace with ``take``.  Every padding mode is an index remap of
the padded coordinate onto the input (zero padding maps to a sentinel that
reads an appended zero), which is what lets one gather serve all modes, and
what the explicit Toeplitz matrix will be built from.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .bounded_cache import BoundedCache
from .geometry import ConvGeometry


def _frozen(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


TABLE_CACHE_BYTES = 64 << 20
"""The most bytes of index tables kept between calls, all tables together (least recently
used dropped first; a table larger than this is returned and not kept): as much as
one map may build (the tunables' ``index_table_bytes``).  A count
alone bounded nothing: a long-running process (a Dask worker convolving blocks of a
few shapes) kept 64 tables of every kind, tens of MiB each."""


def _nbytes(value) -> int:
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, tuple):
        return sum(_nbytes(v) for v in value)
    return 0


_kept = BoundedCache(max_bytes=TABLE_CACHE_BYTES, size_of=_nbytes)


def kept(function):
    """Remember ``function``'s tables by its arguments, in the one cache of this module,
    bounded by ``TABLE_CACHE_BYTES`` across every table (``bounded_cache.BoundedCache``)."""
    @functools.wraps(function)
    def cached(*args):
        key = (function.__qualname__, args)
        found = _kept.get(key)
        if found is None:
            _kept.max_bytes = TABLE_CACHE_BYTES
            found = _kept.put(key, function(*args))
        return found

    cached.cache_clear = clear_tables
    return cached


def clear_tables() -> None:
    """Forget every cached index table."""
    _kept.clear()


def cached_table_bytes() -> int:
    """The bytes of index tables kept now (at most ``TABLE_CACHE_BYTES``)."""
    return _kept.nbytes


@kept
def axis_source(size: int, before: int, after: int, mode: str) -> np.ndarray:
    """Input index read by each padded position along one axis; −1 reads a zero.

    Padded position ``j`` (``0 ≤ j < before + size + after``) stands for the
    input coordinate ``p = j − before``, which each mode maps back:
    zeros → p if inside else −1; reflect → mirror about the edge samples
    (``−p``, ``2(size−1) − p``); replicate → the nearest edge; circular → p mod size;
    symmetric → mirror about the edges themselves, repeating the edge sample
    (``−p − 1``, ``2·size − 1 − p``: NumPy's "symmetric", SciPy ndimage's "reflect").
    """
    return _frozen(coordinate_source(np.arange(-before, size + after, dtype=np.intp), size,
                                     mode))


def coordinate_source(p: np.ndarray, size: int, mode: str) -> np.ndarray:
    """``axis_source`` for any input coordinates ``p`` (at most one period past either
    edge, as the padding validated at the boundary allows): the sample each reads, −1
    for a zero."""
    if mode == "zeros":
        return np.where((p >= 0) & (p < size), p, -1)
    if mode == "reflect":
        return np.where(p < 0, -p, np.where(p >= size, 2 * (size - 1) - p, p))
    if mode == "replicate":
        return np.clip(p, 0, size - 1)
    if mode == "circular":
        return np.mod(p, size)
    if mode == "symmetric":
        return np.where(p < 0, -p - 1, np.where(p >= size, 2 * size - 1 - p, p))
    raise AssertionError(mode)  # validated at the boundary


@kept
def gather_index(geometry: ConvGeometry, mode: str) -> np.ndarray:
    """The im2col table: a (T, L) array of flat input indices, ``∏ input_size`` for a zero.

    Entry ``[t, l]`` is the row-major flat index into one channel of the
    *unpadded* input read by kernel tap ``t`` (row-major over ``kernel_size``)
    at output position ``l`` (row-major over ``output_size``):
    padded coordinate ``l_i·s_i + t_i·d_i`` along each dim, mapped by the mode.
    """
    nd = geometry.nd
    flat_strides = [math.prod(geometry.input_size[i + 1:]) for i in range(nd)]
    flat = np.zeros((1,) * (2 * nd), dtype=np.intp)
    outside = np.zeros((1,) * (2 * nd), dtype=bool)
    for i in range(nd):
        (before, after), size = geometry.padding[i], geometry.input_size[i]
        taps = np.arange(geometry.kernel_size[i]) * geometry.dilation[i]
        starts = np.arange(geometry.output_size[i]) * geometry.stride[i]
        src = axis_source(size, before, after, mode)[taps[:, None] + starts[None, :]]
        shape = [1] * (2 * nd)
        shape[i], shape[nd + i] = src.shape
        src = src.reshape(shape)
        flat = flat + src * flat_strides[i]
        outside = outside | (src < 0)
    flat = np.where(outside, math.prod(geometry.input_size), flat)
    return _frozen(flat.reshape(geometry.n_taps, geometry.n_positions))


@kept
def toeplitz_pairs(geometry: ConvGeometry, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The non-zero pattern of one (output channel, input channel) block of the Toeplitz matrix.

    Returns ``(position, pixel, taps)``: for each structurally non-zero entry
    ``(l, p)`` of the (L, P) block, sorted by ``(l, p)``, its output position
    ``l``, its flat input sample ``p``, and in ``taps[:, k]`` the kernel taps
    that read sample ``p`` at position ``l``.  With zero padding each entry has
    one tap; reflect, replicate and circular padding can fold several taps onto
    one sample (their weights add up), and shorter lists are filled with the
    sentinel ``T`` (a tap that reads a zero weight).
    """
    table = gather_index(geometry, mode)
    n_taps = table.shape[0]
    pixels = math.prod(geometry.input_size)
    tap, position = np.nonzero(table != pixels)         # tap-major, so ties keep tap order
    pixel = table[tap, position]
    order = np.argsort(position * pixels + pixel, kind="stable")
    tap, position, pixel = tap[order], position[order], pixel[order]
    new_entry = np.ones(tap.size, dtype=bool)
    new_entry[1:] = (position[1:] != position[:-1]) | (pixel[1:] != pixel[:-1])
    entry = np.cumsum(new_entry) - 1
    first = np.flatnonzero(new_entry)
    rank = np.arange(tap.size) - first[entry]
    taps = np.full((int(rank.max(initial=0)) + 1, first.size), n_taps, dtype=np.intp)
    taps[rank, entry] = tap
    return _frozen(position[first]), _frozen(pixel[first]), _frozen(taps)


def _ranked_table(keys: np.ndarray, values: np.ndarray, size: int, fill: int) -> np.ndarray:
    """An (R, size) table whose column ``p`` lists, in increasing order, the ``values``
    whose ``keys`` equal ``p``, padded with ``fill``: the gather form of a scatter."""
    order = np.lexsort((values, keys))
    keys, values = keys[order], values[order]
    counts = np.bincount(keys, minlength=size)
    first = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.arange(keys.size) - first[keys]
    table = np.full((int(counts.max(initial=1)), size), fill, dtype=np.intp)
    table[rank, keys] = values
    return table


def pairs_per_sample(geometry: ConvGeometry, mode: str) -> int:
    """An upper bound on the (tap, position) pairs that read one input sample
    (``gather_index_adjoint``'s R), from the geometry alone: per dim, the padded
    positions that copy a sample (1 for zero padding, more at the edges of the other
    modes) times the pairs that read one padded position, min(K, ⌈K·gcd(s, d)/s⌉)."""
    pairs = 1
    for size, (before, after), k, s, d in zip(geometry.input_size, geometry.padding,
                                              geometry.kernel_size, geometry.stride,
                                              geometry.dilation):
        source = axis_source(size, before, after, mode)
        copies = int(np.bincount(source[source >= 0], minlength=1).max())
        pairs *= copies * min(k, -(-k * math.gcd(s, d) // s))
    return pairs


@kept
def gather_index_adjoint(geometry: ConvGeometry, mode: str) -> np.ndarray:
    """The im2col table inverted for col2im as a gather: a (2, R, P) array.

    For input sample ``p``, the pairs ``(t, l) = ([0, r, p], [1, r, p])``,
    r = 0, 1, …, are the (kernel tap, output position) pairs whose tap reads
    ``p``, in increasing (t, l) order, then ``(T, 0)`` where fewer than
    ``r + 1`` do.  R is the most pairs any sample has: ∏⌈K/s⌉ for zero padding
    (at stride s a sample is read by that many taps, not by all ∏K), a few more
    at the edges for reflect, replicate and circular padding, which let a tap
    read an edge sample from several positions.  So the table grows with the
    samples and the reads, never with ∏K × P.
    ``col2im(cols)[c, p] = Σ_r cols[c·T + [0, r, p], [1, r, p]]`` (the zero tap T
    skipped).
    """
    table = gather_index(geometry, mode)
    n_taps, positions = table.shape
    pixels = math.prod(geometry.input_size)
    tap, position = np.nonzero(table != pixels)
    pairs = _ranked_table(table[tap, position], tap * positions + position, pixels,
                          n_taps * positions)
    return _frozen(np.stack((pairs // positions, pairs % positions)))


@kept
def tile_pixel_ranges(geometry: ConvGeometry, mode: str, tile: int) -> np.ndarray:
    """For each tile of ``tile`` output positions, the range [lo, hi) of input samples
    its taps read (zeros excluded): a (tiles, 2) array; col2im gathers only there."""
    table = gather_index(geometry, mode)
    pixels = math.prod(geometry.input_size)
    ranges = np.zeros((-(-table.shape[1] // tile), 2), dtype=np.intp)
    for k, start in enumerate(range(0, table.shape[1], tile)):
        read = table[:, start:start + tile]
        read = read[read < pixels]
        if read.size:
            ranges[k] = read.min(), read.max() + 1
    return _frozen(ranges)


@kept
def padded_source(geometry: ConvGeometry, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Padding as a gather and its adjoint, over flat (row-major) samples.

    Returns ``(source, adjoint)``: ``source[q]`` is the input sample copied to
    padded sample ``q`` (``P`` for a zero), of length ``P̃ = ∏ padded_size``;
    ``adjoint[r, p]`` is the ``r``-th padded sample that copies input sample
    ``p`` (``P̃`` past the last), so that the padding's adjoint is
    ``x[p] = Σ_r padded[adjoint[r, p]]`` with a zero appended to ``padded``.
    """
    nd = geometry.nd
    pixels = math.prod(geometry.input_size)
    flat = np.zeros((1,) * nd, dtype=np.intp)
    outside = np.zeros((1,) * nd, dtype=bool)
    for i in range(nd):
        (before, after), size = geometry.padding[i], geometry.input_size[i]
        src = axis_source(size, before, after, mode)
        shape = [1] * nd
        shape[i] = src.size
        src = src.reshape(shape)
        flat = flat * size + np.maximum(src, 0)
        outside = outside | (src < 0)
    source = np.where(outside, pixels, flat).reshape(-1)
    inside = np.flatnonzero(source != pixels)
    adjoint = _ranked_table(source[inside], inside, pixels, source.size)
    return _frozen(source), _frozen(adjoint)


def padding_sources(size: int, before: int, after: int, mode: str):
    """(padded positions, the input sample each copies, −1 for a zero) along one axis, for
    the padding's positions only: a mode copies samples into ``before + after`` of them."""
    positions = np.concatenate([np.arange(before), np.arange(before + size, before + size + after)])
    return positions, coordinate_source(positions - before, size, mode)


def padded_source_bytes(geometry: ConvGeometry, mode: str) -> int:
    """Bytes of ``padded_source``'s two tables, from the geometry alone: the padded grid's
    source map and the adjoint's R rows over the input, R the most padded positions that
    copy one sample (per axis, one plus the padding positions that fold onto it)."""
    folds = 1
    for size, (before, after) in zip(geometry.input_size, geometry.padding):
        _, sources = padding_sources(size, before, after, mode)
        sources = sources[sources >= 0]
        folds *= 1 + (int(np.bincount(sources).max()) if sources.size else 0)
    pixels = math.prod(geometry.input_size)
    return 8 * (math.prod(geometry.padded_size) + folds * pixels)


@kept
def direct_rows(geometry: ConvGeometry) -> np.ndarray:
    """Where each (output row, leading tap) starts in the flat padded input: (R, T_lead).

    An output "row" runs along the last spatial dim; rows and leading taps are
    row-major over the other dims.  Output sample ``j`` of row ``r`` under tap
    ``(t_lead, k)`` reads padded sample ``[r, t_lead] + k·d_last + j·s_last``.
    """
    nd = geometry.nd
    padded = geometry.padded_size
    strides = [math.prod(padded[i + 1:]) for i in range(nd)]
    offset = np.zeros((1,) * (2 * (nd - 1)), dtype=np.intp)
    for i in range(nd - 1):
        starts = np.arange(geometry.output_size[i]) * geometry.stride[i]
        taps = np.arange(geometry.kernel_size[i]) * geometry.dilation[i]
        shape = [1] * (2 * (nd - 1))
        shape[i], shape[nd - 1 + i] = geometry.output_size[i], geometry.kernel_size[i]
        offset = offset + (starts[:, None] + taps[None, :]).reshape(shape) * strides[i]
    rows = math.prod(geometry.output_size[:-1])
    return _frozen(offset.reshape(rows, math.prod(geometry.kernel_size[:-1])))


@kept
def padded_taps(geometry: ConvGeometry) -> tuple[np.ndarray, np.ndarray]:
    """``(row_start, offsets)`` over the flat padded input, for reading patches in place.

    Output sample ``j`` of output row ``r`` (rows as in ``direct_rows``) under kernel
    tap ``t`` (row-major over ``kernel_size``) reads padded sample
    ``row_start[r] + j·s_last + offsets[t]``.
    """
    rows = direct_rows(geometry)
    last = np.arange(geometry.kernel_size[-1]) * geometry.dilation[-1]
    offsets = (rows[0][:, None] + last[None, :]).reshape(-1)
    return _frozen(np.ascontiguousarray(rows[:, 0])), _frozen(offsets)


@kept
def canvas_source(geometry: ConvGeometry, mode: str, canvas: tuple[int, ...]) -> np.ndarray:
    """``padded_source`` on a larger canvas: the padded input (every padding mode) at the
    start of each axis of ``canvas`` (≥ ``padded_size``), zeros (``P``) past it.

    Flat over the row-major canvas; the Winograd lowering's last tiles read past the
    padded input into these zeros.
    """
    source, _ = padded_source(geometry, mode)
    pixels = math.prod(geometry.input_size)
    padded = source.reshape(geometry.padded_size)
    extra = [(0, c - p) for c, p in zip(canvas, geometry.padded_size)]
    return _frozen(np.pad(padded, extra, constant_values=pixels).reshape(-1))


@kept
def wide_table(geometry: ConvGeometry) -> tuple[np.ndarray, np.ndarray]:
    """A stride-1 convolution on the flat padded grid: ``(offsets, crop)``.

    ``offsets[t]`` is the flat padded offset of tap ``t`` (row-major over the
    kernel, Σ_i t_i·d_i·stride_i of the padded plane); ``crop[l]`` the flat
    padded index where output position ``l``'s window starts.  Output ``l`` is
    then ``Σ_t w_t·x̃[crop[l] + offsets[t]]``: every window start q of the grid
    can be computed by one loop over q per tap, and the outputs picked by ``crop``.
    """
    padded = geometry.padded_size
    strides = [math.prod(padded[i + 1:]) for i in range(geometry.nd)]
    offsets = np.zeros((1,) * geometry.nd, dtype=np.intp)
    crop = np.zeros((1,) * geometry.nd, dtype=np.intp)
    for i in range(geometry.nd):
        shape = [1] * geometry.nd
        shape[i] = -1
        taps = np.arange(geometry.kernel_size[i]) * geometry.dilation[i] * strides[i]
        offsets = offsets + taps.reshape(shape)
        crop = crop + (np.arange(geometry.output_size[i]) * strides[i]).reshape(shape)
    return _frozen(offsets.reshape(-1)), _frozen(crop.reshape(-1))
