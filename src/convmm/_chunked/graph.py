"""The graph layers of a chunked convolution: windows cut from an array by the cuts of
``cuts.py`` (one task per window), and the padding's adjoint on a Dask array."""

from __future__ import annotations

import numpy as np

from .._core.lowering import _padded_rows
from .arrays import chunk_module
from .cuts import PAD_MODES, forward_cut

def windowed(a, cuts):
    """``a`` cut into windows: block j along each axis of ``cuts`` ({axis: ((start, stop),
    …)}) is ``a[…, start_j:stop_j, …]``, the other axes keep a's chunks.

    One task per window, which slices the chunks of ``a`` it overlaps and joins them
    (cutting axis by axis with ``concatenate`` and ``rechunk`` took some thirty tasks
    per chunk of a volume, and the scheduler's time with them).
    """
    import itertools

    import dask.array as da
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    name = "convmm-window-" + tokenize(a, sorted(cuts.items()))
    sources, chunks = [], []
    for axis, along in enumerate(a.chunks):
        if axis not in cuts:
            sources.append([[(k, slice(None))] for k in range(len(along))])
            chunks.append(along)
            continue
        edges = np.concatenate([[0], np.cumsum(along)])
        per_window = []
        for start, stop in cuts[axis]:
            pieces = [(k, slice(max(start, lo) - lo, min(stop, hi) - lo))
                      for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:]))
                      if lo < stop and start < hi]
            per_window.append(pieces or [(0, slice(0, 0))])
        sources.append(per_window)
        chunks.append(tuple(stop - start for start, stop in cuts[axis]))
    graph = {}
    for index in itertools.product(*(range(len(s)) for s in sources)):
        lists = [sources[axis][j] for axis, j in enumerate(index)]
        grid = tuple(len(pieces) for pieces in lists)
        parts = [[(a.name, *(k for k, _ in combination)),
                  tuple(piece for _, piece in combination)]
                 for combination in itertools.product(*lists)]
        graph[(name, *index)] = (_join, parts, grid)
    layer = HighLevelGraph.from_collections(name, graph, dependencies=[a])
    return da.Array(layer, name, tuple(chunks), meta=a._meta)


def _join(parts, grid):
    """The window from its parts ([chunk, slices] in C order over ``grid``), joined axis
    by axis from the last."""
    module = chunk_module(parts[0][0])
    blocks = [chunk[slices] for chunk, slices in parts]
    for axis in reversed(range(len(grid))):
        n = grid[axis]
        if n > 1:
            blocks = [module.concatenate(blocks[i:i + n], axis=axis)
                      for i in range(0, len(blocks), n)]
    return blocks[0]


def padded_windows(call, b):
    """The forward map's input side cut for its blocks: ``(output chunks, windows)``, with
    ``b`` padded as a whole by the call's mode and cut into one window per output chunk
    (``forward_cut`` on each spatial axis); the output chunks by spatial axis."""
    import dask.array as da

    geometry = call.geometry
    axes = call.layout.spatial_axes(geometry.nd)
    pads = [(0, 0)] * b.ndim
    for axis, pair in zip(axes, geometry.padding):
        pads[axis] = pair
    padded = da.pad(b, pads, mode=PAD_MODES[call.padding_mode]) if any(map(any, pads)) else b
    sizes, cuts = {}, {}
    for axis, output, stride, kernel, dilation in zip(
            axes, geometry.output_size, geometry.stride, geometry.kernel_size, geometry.dilation):
        sizes[axis], cuts[axis] = forward_cut(b.chunks[axis], output, stride,
                                              dilation * (kernel - 1))
    return sizes, windowed(padded, cuts)


def pad_adjoint(grid, call):
    """``lowering.pad_adjoint`` on a Dask array: the interior, each padded sample added onto
    the sample it copies in the same order, by slices (no item assignment)."""
    import dask.array as da

    geometry = call.geometry
    axes = call.layout.spatial_axes(geometry.nd)
    for axis, size, (before, after) in zip(axes, geometry.input_size, geometry.padding):
        if not (before or after):
            continue

        def at(start, stop, axis=axis):
            return (slice(None),) * axis + (slice(start, stop), ...)

        interior = grid[at(before, before + size)]
        if call.padding_mode == "zeros":
            grid = interior
            continue
        added = {}      # source sample → the padded positions that copy it
        for position, source in _padded_rows(size, before, after, call.padding_mode):
            added.setdefault(int(source), []).append(int(position))
        pieces, done = [], 0
        for source in sorted(added):
            if source > done:
                pieces.append(interior[at(done, source)])
            total = interior[at(source, source + 1)]
            for position in added[source]:
                total = total + grid[at(position, position + 1)]
            pieces.append(total)
            done = source + 1
        if done < size:
            pieces.append(interior[at(done, size)])
        grid = da.concatenate(pieces, axis=axis).rechunk({axis: interior.chunks[axis]})
    return grid
