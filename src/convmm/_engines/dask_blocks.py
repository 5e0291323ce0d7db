"""Convolutions of Dask arrays: every block run by convmm's own NumPy or CuPy engine.

A convolution is cut along the grid of the Dask array it is given (the data: x,
or grad_output), and nothing is computed twice or lost:

batch axis
    Blockwise: each batch chunk is convolved alone.
spatial axes
    The whole array is padded first (``dask.array.pad``, np.pad's modes for
    convmm's: constant, reflect, edge, symmetric, wrap), so that every padding
    mode reads across the global edges exactly as on one array.  The output's
    chunks along an axis follow the input's: output ``o`` goes with the input
    chunk that holds sample ``o·s``, so an input chunk boundary ``b`` becomes the
    output boundary ⌈b/s⌉ (input chunks of a multiple of the stride give output
    chunks of that multiple, as regular as the input's).  Output chunk
    ``[o₀, o₁)`` reads the padded window ``[o₀·s, (o₁ − 1)·s + d·(K − 1) + 1)``:
    its chunk and a halo of the kernel's reach d·(K − 1) (less where the stride
    skips samples).  The windows are cut from the padded array and rechunked to
    one chunk each, so a chunk smaller than its halo, or misaligned with the
    stride, costs a rechunk and never a wrong shape.  Each window is convolved
    with ``padding=0``: a "valid" convolution of exactly the block's outputs.
input channels (the contraction)
    With ``groups == 1`` each input-channel chunk gives a partial convolution
    (the weight's matching slice), and the partials are summed in a fixed
    pairwise tree.  With groups the channel axis is rechunked to one chunk.
transposed maps
    The transpose (``conv_transpose``, the input gradient of ``conv``) is
    computed onto the padded grid, cut at o·s + before for the chunk boundaries o
    of its input, each chunk ``[z₀, z₁)`` of it from the outputs that reach it, and the padding's adjoint then folds the padded
    samples back onto the samples they copy (``lowering.pad_adjoint``'s order):
    the exact adjoint, for every padding mode.
weight gradients
    One partial gradient per (batch, spatial) block, summed by Dask's tree
    reduction (a fixed order: the same bits on every run).

A block runs convmm's public functions on NumPy or CuPy chunks, with the
engine's threads: in a ``dask.distributed`` worker the block's convmm thread
count is the worker's ``nthreads`` (tasks running side by side share those
threads' slots, so a worker never computes on more), elsewhere convmm's own
setting (``convmm.set_num_threads``).
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from functools import reduce

import array_api_compat
import numpy as np

from .._core.algorithms import conj
from .._core.lowering import _padded_rows
from .._core.validation import checked_grad_output, gradient_needs, library, namespace, prepare
from . import dispatch, policy

PAD_MODES = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
             "symmetric": "symmetric", "circular": "wrap"}
"""convmm's padding modes by np.pad's (and ``dask.array.pad``'s) names."""


def is_dask(*arrays) -> bool:
    """Whether any of the arrays is a Dask array (Dask not imported: none is)."""
    return any(array_api_compat.is_dask_array(a) for a in arrays if a is not None)


# --------------------------------------------------------------------------- validation
def _chunk_module(a):
    """NumPy or CuPy: the module of a Dask array's chunks, or of a plain array."""
    meta = getattr(a, "_meta", a)
    if array_api_compat.is_cupy_array(meta):
        import cupy

        return cupy
    return np


def stand_in(a, name="x"):
    """An array of a Dask array's shape and dtype in its chunks' namespace that holds no
    memory (one zero broadcast): what the checks of a NumPy or CuPy call see of it.
    Anything else is returned as it is.  A ValueError names ``name`` where the array's
    chunk sizes are unknown (NaN, as after boolean indexing)."""
    if not is_dask(a):
        return a
    if any(math.isnan(n) for n in a.shape):
        raise ValueError(f"{name} is a Dask array of unknown chunk sizes (shape "
                         f"{tuple(a.shape)}); convmm cuts the work by the chunks: call "
                         f"{name}.compute_chunk_sizes() first")
    module = _chunk_module(a)
    return module.broadcast_to(module.zeros((), dtype=a.dtype), a.shape)


def _kind(a):
    """What an array is, for messages: "jax", or "a Dask array of numpy chunks"."""
    if is_dask(a):
        return f"a Dask array of {library(getattr(a, '_meta', a))} chunks"
    return library(a)


def checked_namespace(**arrays):
    """The one namespace of the named arrays as their blocks will see them (a Dask array
    counts as its chunks' namespace): ``validation.namespace`` on the stand-ins, with a
    TypeError that names a Dask array as such where the namespaces differ."""
    try:
        return namespace(**{name: stand_in(a, name) for name, a in arrays.items()})
    except TypeError as error:
        if "one array namespace" not in str(error):
            raise
        present = {name: a for name, a in arrays.items() if a is not None}
        kinds = ", ".join(f"{name}: {_kind(a)}" for name, a in present.items())
        raise TypeError(f"{' and '.join(present)} must come from one array namespace (a Dask "
                        f"array's is its chunks'), got {kinds}") from None


def as_dask(a):
    """A Dask array: ``a`` itself, or a plain array as one chunk."""
    if is_dask(a):
        return a
    import dask.array as da

    return da.from_array(a, chunks=a.shape)


def _validated(x, weight, bias, grad_output, **keywords):
    """(call, x, weight, bias, grad_output): the call checked as for its chunks' arrays
    (the same errors), the Dask arrays cast lazily to the common dtype and batched.

    The cast is made only where every array already has a dtype convmm computes in
    (float32, float64, complex64, complex128), so that an integer, bool or half-precision
    array is refused with the NumPy path's TypeError, never promoted silently."""
    checked_namespace(x=x, weight=weight, bias=bias, grad_output=grad_output)
    arrays = [x, weight, bias, grad_output]
    dtypes = [np.dtype(a.dtype) for a in arrays if a is not None]
    if all(d.kind in "fc" and d.itemsize >= 4 for d in dtypes):
        dtype = np.result_type(*dtypes)
        arrays = [a if a is None or a.dtype == dtype else a.astype(dtype) for a in arrays]
    stand_ins = [stand_in(a, name) for a, name in
                 zip(arrays, ("x", "weight", "bias", "grad_output"))]
    call = prepare(*stand_ins, **keywords)
    policy.check_method(call)
    x, weight, bias, grad_output = arrays
    x = as_dask(x)
    if not call.batched:
        x = x[None]
    if grad_output is not None:
        grad_output = as_dask(grad_output)
    return call, x, weight, bias, grad_output


# --------------------------------------------------------------------------- threads
def _task_threads():
    """The thread count a block task plans for: its ``dask.distributed`` worker's
    ``nthreads``, or None (convmm's own setting) outside a worker."""
    try:
        from distributed import get_worker

        return get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):
        return None


def _threads_of_task():
    from .cpu import threads

    count = _task_threads()
    return nullcontext() if count is None else threads.calling_thread_setting(count)


# --------------------------------------------------------------------------- the grid
def _forward_cut(chunks, output, stride, reach):
    """(output chunks, windows) along one axis of the forward map: output boundaries at
    ⌈b/s⌉ for the input's chunk boundaries b, and each output chunk's window
    ``(start, stop)`` of the padded axis."""
    edges = {0, output}
    position = 0
    for chunk in chunks[:-1]:
        position += chunk
        edges.add(min(output, -(-position // stride)))
    edges = sorted(edges)
    sizes = tuple(b - a for a, b in zip(edges, edges[1:]))
    windows = tuple((a * stride, (b - 1) * stride + reach + 1) for a, b in zip(edges, edges[1:]))
    return sizes, windows


def _adjoint_cut(chunks, outputs, padded, before, stride, reach):
    """(padded chunks, windows, starts) along one axis of the transposed map: the padded
    axis cut at o·s + before for the outputs' chunk boundaries o (the result's chunk
    boundaries at o·s once the padding is folded away: as regular as the outputs');
    chunk ``[z₀, z₁)`` reads the outputs ``[⌈(z₀ − reach)/s⌉, ⌊(z₁ − 1)/s⌋ + 1)``
    (clipped; empty where none reach it)."""
    edges = {0, padded}
    position = 0
    for chunk in chunks[:-1]:
        position += chunk
        edges.add(min(padded, position * stride + before))
    edges = sorted(edges)
    windows = []
    for z0, z1 in zip(edges, edges[1:]):
        first = max(0, -(-(z0 - reach) // stride))
        last = min(outputs, (z1 - 1) // stride + 1)
        windows.append((first, max(first, last)))
    sizes = tuple(b - a for a, b in zip(edges, edges[1:]))
    return sizes, tuple(windows), tuple(edges[:-1])


def _windowed(a, cuts):
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
    module = _chunk_module(parts[0][0])
    blocks = [chunk[slices] for chunk, slices in parts]
    for axis in reversed(range(len(grid))):
        n = grid[axis]
        if n > 1:
            blocks = [module.concatenate(blocks[i:i + n], axis=axis)
                      for i in range(0, len(blocks), n)]
    return blocks[0]


def _one_chunk(a, axis):
    return a if len(a.chunks[axis]) == 1 else a.rechunk({axis: -1})


def _weight_argument(weight):
    """A Dask weight as one chunk (each block takes it whole); a plain weight as it is."""
    if is_dask(weight):
        return weight.rechunk(weight.shape)
    return weight


def _meta(module, ndim, dtype):
    return module.empty((0,) * ndim, dtype=dtype)


def _tree_sum(parts):
    """Σ parts in a fixed pairwise order: ((p₀ + p₁) + (p₂ + p₃)) + …"""
    while len(parts) > 1:
        parts = [parts[i] + parts[i + 1] if i + 1 < len(parts) else parts[i]
                 for i in range(0, len(parts), 2)]
    return parts[0]


def _keywords(call):
    geometry = call.geometry
    return dict(stride=geometry.stride, dilation=geometry.dilation, groups=call.groups,
                data_format=call.layout.name, method=call.method)


def _channel_weight(call, weight, first, stop):
    """The weight's slice for input channels [first, stop) (groups == 1)."""
    if call.layout.name == "channels_first":
        return weight[:, first:stop]
    return weight[..., first:stop, :]


# --------------------------------------------------------------------------- the three maps
def _padded_windows(call, b):
    """The forward map's input side cut for its blocks: ``(output chunks, windows)``, with
    ``b`` padded as a whole by the call's mode and cut into one window per output chunk
    (``_forward_cut`` on each spatial axis); the output chunks by spatial axis."""
    import dask.array as da

    geometry = call.geometry
    axes = call.layout.spatial_axes(geometry.nd)
    pads = [(0, 0)] * b.ndim
    for axis, pair in zip(axes, geometry.padding):
        pads[axis] = pair
    padded = da.pad(b, pads, mode=PAD_MODES[call.mode]) if any(map(any, pads)) else b
    sizes, cuts = {}, {}
    for axis, output, stride, kernel, dilation in zip(
            axes, geometry.output_size, geometry.stride, geometry.kernel_size, geometry.dilation):
        sizes[axis], cuts[axis] = _forward_cut(b.chunks[axis], output, stride,
                                               dilation * (kernel - 1))
    return sizes, _windowed(padded, cuts)


def forward(call, x, weight):
    """conv's map C·x (no bias) of a batched Dask x, block by block."""
    import dask.array as da

    channel_axis = call.layout.channel_axis(x.ndim)
    if call.groups > 1:
        x = _one_chunk(x, channel_axis)
    sizes, padded = _padded_windows(call, x)
    chunks = list(x.chunks)
    for axis, along in sizes.items():
        chunks[axis] = along
    in_channels, out_channels = call.forward_channels
    chunks[channel_axis] = (out_channels,)
    module = _chunk_module(x)
    keywords = _keywords(call)
    parts = []
    first = 0
    for size in padded.chunks[channel_axis]:
        index = [slice(None)] * x.ndim
        index[channel_axis] = slice(first, first + size)
        part_weight = weight if size == in_channels else _channel_weight(call, weight, first,
                                                                         first + size)
        parts.append(da.map_blocks(_forward_block, padded[tuple(index)],
                                   _weight_argument(part_weight), keywords=keywords,
                                   chunks=tuple(chunks), dtype=x.dtype,
                                   meta=_meta(module, x.ndim, x.dtype)))
        first += size
    return _tree_sum(parts)


def _block_call(x, weight, grad_output, transposed, keywords):
    """The validated call of one block: a "valid" convolution (padding 0) of its window."""
    return prepare(x, weight, None, grad_output, transposed=transposed, padding=0,
                   padding_mode="zeros", **keywords)


def _forward_block(window, weight, keywords):
    call = _block_call(window, weight, None, False, keywords)
    with _threads_of_task():
        return dispatch.forward(call, policy.plan(call, "forward"), call.x, call.weight)


def adjoint(call, y, weight):
    """The transposed map Cᵀ·y (no bias) of a batched Dask y, block by block: onto the
    padded grid, then the padding's adjoint."""
    import dask.array as da

    geometry, layout = call.geometry, call.layout
    axes = layout.spatial_axes(geometry.nd)
    channel_axis = layout.channel_axis(y.ndim)
    y = _one_chunk(y, channel_axis)
    chunks, cuts = list(y.chunks), {}
    placements = []
    for axis, outputs, padded_size, (before, _), stride, kernel, dilation in zip(
            axes, geometry.output_size, geometry.padded_size, geometry.padding,
            geometry.stride, geometry.kernel_size, geometry.dilation):
        sizes, windows, starts = _adjoint_cut(y.chunks[axis], outputs, padded_size, before,
                                              stride, dilation * (kernel - 1))
        cuts[axis], chunks[axis] = windows, sizes
        placements.append(tuple((first * stride, start, size)
                                for (first, _), start, size in zip(windows, starts, sizes)))
    y = _windowed(y, cuts)
    in_channels, _ = call.forward_channels
    chunks[channel_axis] = (in_channels,)
    module = _chunk_module(y)
    grid = da.map_blocks(_adjoint_block, y, _weight_argument(weight), keywords=_keywords(call),
                         axes=axes, placements=tuple(placements), chunks=tuple(chunks),
                         dtype=y.dtype, meta=_meta(module, y.ndim, y.dtype))
    return _pad_adjoint(grid, call)


def _adjoint_block(window, weight, keywords, axes, placements, block_info=None):
    """The padded grid's chunk: conv_transpose of the window (padding 0), which covers
    [first·s, first·s + its length) of each axis, placed into the chunk [start, start + size)."""
    location = block_info[None]["chunk-location"]
    shape = list(block_info[None]["chunk-shape"])
    module = _chunk_module(window)
    out = module.zeros(tuple(shape), dtype=window.dtype)
    if any(window.shape[axis] == 0 for axis in axes):
        return out
    call = _block_call(window, weight, None, True, keywords)
    with _threads_of_task():
        spread = dispatch.adjoint(call, policy.plan(call, "adjoint"), call.x, call.weight)
    source, target = [slice(None)] * out.ndim, [slice(None)] * out.ndim
    for axis, along in zip(axes, placements):
        origin, start, size = along[location[axis]]
        low, high = max(origin, start), min(origin + spread.shape[axis], start + size)
        if high <= low:
            return out
        source[axis], target[axis] = slice(low - origin, high - origin), slice(low - start,
                                                                               high - start)
    out[tuple(target)] = spread[tuple(source)]
    return out


def _pad_adjoint(grid, call):
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
        if call.mode == "zeros":
            grid = interior
            continue
        added = {}      # source sample → the padded positions that copy it
        for position, source in _padded_rows(size, before, after, call.mode):
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


def weight_grad(call, a, b, weight):
    """Σ a·P(conj(b))ᵀ over the batch and positions, shaped like the weight: conv_backward's
    weight gradient for a = grad_output, b = x; one partial per block, tree-summed."""
    import dask.array as da

    channel_axis = call.layout.channel_axis(b.ndim)
    b = _one_chunk(b, channel_axis)
    sizes, padded = _padded_windows(call, b)
    a = _one_chunk(a, channel_axis).rechunk({0: b.chunks[0], **sizes})
    module = _chunk_module(b)
    dtype = np.result_type(a.dtype, b.dtype)
    blocks = a.numblocks
    shape = tuple(weight.shape)
    # One partial per block, each as (1, …, 1, *weight.shape): summed over the block axes.
    partials = da.map_blocks(_weight_block, a, padded, _weight_argument(weight),
                             keywords=_keywords(call), new_axis=list(range(a.ndim, a.ndim + len(shape))),
                             chunks=tuple((1,) * n for n in blocks) + tuple((s,) for s in shape),
                             dtype=dtype, meta=_meta(module, a.ndim + len(shape), dtype))
    return partials.sum(axis=tuple(range(a.ndim)))


def _weight_block(grads, window, weight, keywords):
    call = _block_call(window, weight, grads, False, keywords)
    with _threads_of_task():
        partial = dispatch.weight_grad(call, policy.plan(call, "weight_grad"), call.grad_output,
                                       conj(call.xp, call.x))
    return partial.reshape((1,) * grads.ndim + tuple(partial.shape))


# --------------------------------------------------------------------------- the public maps
def _conj(a):
    return a.conj() if np.dtype(a.dtype).kind == "c" else a


def _bias_added(call, y, bias):
    if bias is None:
        return y
    return y + bias.reshape(call.layout.bias_shape(bias.shape[0], call.geometry.nd))


def _unbatched(call, a):
    return a if call.batched or a is None else a[0]


def conv(x, weight, bias, **keywords):
    """conv of a Dask x (or weight, or bias): C·x + bias, lazily."""
    call, x, weight, bias, _ = _validated(x, weight, bias, None, transposed=False, **keywords)
    return _unbatched(call, _bias_added(call, forward(call, x, weight), bias))


def conv_transpose(x, weight, bias, **keywords):
    """conv_transpose of a Dask x (or weight, or bias): Cᵀ·x + bias, lazily."""
    call, x, weight, bias, _ = _validated(x, weight, bias, None, transposed=True, **keywords)
    return _unbatched(call, _bias_added(call, adjoint(call, x, weight), bias))


def _bias_gradient(call, g):
    axes = tuple(axis for axis in range(g.ndim) if axis != call.layout.channel_axis(g.ndim))
    return g.sum(axis=axes)


def conv_backward(grad_output, x, weight, needs, **keywords):
    """(input, weight, bias) gradients of conv, each a Dask array or None."""
    call, x, weight, _, g = _validated(x, weight, None, grad_output, transposed=False,
                                       **keywords)
    needs = gradient_needs(needs)
    g = _batched_grad(call, g, call.geometry.output_size)
    gi = gw = gb = None
    if "input" in needs:
        gi = _unbatched(call, adjoint(call, g, _conj(weight)))
    if "weight" in needs:
        gw = weight_grad(call, g, x, weight)
    if "bias" in needs:
        gb = _bias_gradient(call, g)
    return gi, gw, gb


def conv_transpose_backward(grad_output, x, weight, needs, **keywords):
    """(input, weight, bias) gradients of conv_transpose, each a Dask array or None."""
    call, x, weight, _, g = _validated(x, weight, None, grad_output, transposed=True, **keywords)
    needs = gradient_needs(needs)
    g = _batched_grad(call, g, call.geometry.input_size)
    gi = gw = gb = None
    if "input" in needs:
        gi = _unbatched(call, forward(call, g, _conj(weight)))
    if "weight" in needs:
        gw = weight_grad(call, _conj(x), _conj(g), weight)
    if "bias" in needs:
        gb = _bias_gradient(call, g)
    return gi, gw, gb


def _batched_grad(call, g, spatial):
    """grad_output checked against the output's shape (on the call's stand-ins: the same
    error as for a NumPy call) and batched like x."""
    checked_grad_output(call, spatial)
    return g if call.batched else g[None]


# --------------------------------------------------------------------------- explain
CHUNK_NOTATION = "a×n+r: n chunks of a, then one of r"


def _chunk_text(chunks):
    """One axis's chunks: ``64×3`` for equal ones (the last may be shorter: ``64×2+10``)."""
    if len(chunks) == 1:
        return str(chunks[0])
    body, last = chunks[:-1], chunks[-1]
    if len(set(body)) == 1:
        text = f"{body[0]}×{len(body) + (last == body[0])}"
        return text if last == body[0] else f"{text}+{last}"
    return "(" + ", ".join(map(str, chunks)) + ")"


def _shape_text(chunks):
    return "(" + ", ".join(_chunk_text(c) for c in chunks) + ")"


def explain(transposed, maps, needs, result, x, weight, bias, grad_output, keywords):
    """``convmm.explain`` of a call on Dask arrays: how the graph is cut (chunks in and out,
    halos, rechunks, partial sums, tasks) and, per map, the plan of its largest block."""
    given = as_dask(x if grad_output is None else grad_output)   # as the caller shaped it
    call, x, weight, bias, g = _validated(x, weight, bias, grad_output, transposed=transposed,
                                          **keywords)
    geometry, layout = call.geometry, call.layout
    if isinstance(result, tuple):        # the gradients, by name
        names = getattr(result, "_fields", ("input", "weight", "bias"))
        results = [(f"{name} ", r) for name, r in zip(names, result) if r is not None]
    else:
        results = [("", result)]
    graph = {}
    for _, r in results:
        graph.update(r.__dask_graph__())
    tasks = len(graph)
    data = x if g is None else g
    halos = ", ".join(str(d * (k - 1)) for k, d in zip(geometry.kernel_size, geometry.dilation))
    pads = (f"padding ({', '.join(f'({a}, {b})' for a, b in geometry.padding)}) {call.mode} "
            f"on the whole array" if any(map(any, geometry.padding)) else "no padding")
    lines = [f"dask: {'grad_output' if g is not None else 'x'} chunks {_shape_text(given.chunks)}"
             f" → " + ", ".join(f"{name}{_shape_text(r.chunks)}" for name, r in results)
             + f"; {tasks} tasks ({CHUNK_NOTATION})",
             f"dask: each output chunk from its input chunk and a halo of d·(K−1) = ({halos}) "
             f"samples per spatial axis, windows cut and rechunked; {pads}"]
    channels = len(data.chunks[layout.channel_axis(data.ndim)])
    if channels > 1:
        forward_on_data = (maps[0][1] == "forward") == (g is None) != transposed
        how = ("partial convolutions summed in a fixed pairwise tree"
               if call.groups == 1 and forward_on_data else "rechunked to one")
        lines.append(f"dask: {channels} chunks along the channel axis: {how}")
    s_data, l_data = (x, g) if not transposed else (g, x)
    for label, operation in maps:
        if grad_output is not None and label not in needs:
            continue
        if operation == "weight_grad":
            lines.append("dask: weight gradient: one partial per (batch, spatial) block, "
                         "summed by Dask's tree reduction")
        block = _largest_block(call, operation, s_data, l_data)
        planner = policy.main_plan if label in ("conv", "conv_transpose") else policy.plan
        lines.append(f"{label}, the largest block: "
                     + planner(block, operation).describe().split(": ", 1)[1])
    return "\n".join(lines)


def _largest_block(call, operation, s_data, l_data):
    """The validated call of the largest block a map runs, on zero-memory stand-ins:
    ``s_data`` holds the forward convolution's input side, ``l_data`` its output side."""
    geometry, layout = call.geometry, call.layout
    axes = layout.spatial_axes(geometry.nd)
    keywords = _keywords(call)
    weight = stand_in(call.weight)
    if operation == "adjoint":
        shape = list(l_data.shape)
        for axis, outputs, padded, (before, _), stride, kernel, dilation in zip(
                axes, geometry.output_size, geometry.padded_size, geometry.padding,
                geometry.stride, geometry.kernel_size, geometry.dilation):
            _, windows, _ = _adjoint_cut(l_data.chunks[axis], outputs, padded, before, stride,
                                         dilation * (kernel - 1))
            shape[axis] = max(max(b - a for a, b in windows), 1)
        shape[0] = max(l_data.chunks[0])
        return _block_call(_stand_in_shape(l_data, shape), weight, None, True, keywords)
    shape, outputs = list(s_data.shape), []
    for axis, output, stride, kernel, dilation in zip(
            axes, geometry.output_size, geometry.stride, geometry.kernel_size,
            geometry.dilation):
        sizes, windows = _forward_cut(s_data.chunks[axis], output, stride,
                                      dilation * (kernel - 1))
        shape[axis] = max(b - a for a, b in windows)
        outputs.append(max(sizes))
    shape[0] = max(s_data.chunks[0])
    grads = None
    channel_axis = layout.channel_axis(s_data.ndim)
    if operation == "forward" and call.groups == 1:    # one partial per input-channel chunk
        shape[channel_axis] = max(s_data.chunks[channel_axis])
        weight = _channel_weight(call, weight, 0, shape[channel_axis])
    if operation == "weight_grad":
        grads = _stand_in_shape(l_data, layout.image_shape(shape[0], call.forward_channels[1],
                                                           outputs))
    return _block_call(_stand_in_shape(s_data, shape), weight, grads, False, keywords)


def _stand_in_shape(a, shape):
    module = _chunk_module(a)
    return module.broadcast_to(module.zeros((), dtype=a.dtype), tuple(shape))
