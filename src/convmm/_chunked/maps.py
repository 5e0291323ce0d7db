"""The three maps of a convolution on Dask arrays, block by block, and the executor
interface the public functions are composed over (``_api``): ``prepare``,
``grad_output``, ``forward``, ``adjoint``, ``weight_grad``, as ``_engines.eager`` has
them for arrays in memory."""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np

from .._core.validation import checked_grad_output, prepare as prepare_call
from .._engines import dispatch, policy
from .arrays import (as_dask, checked_namespace, chunk_module, empty_meta, one_chunk, stand_in,
                     weight_argument)
from .cuts import adjoint_cut, tree_sum
from .graph import pad_adjoint, padded_windows, windowed

def prepare(x, weight, bias, grad_output, **keywords):
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
    call = prepare_call(*stand_ins, **keywords)
    policy.check_method(call)
    x, weight, bias, grad_output = arrays
    x = as_dask(x)
    if not call.batched:
        x = x[None]
    if grad_output is not None:
        grad_output = as_dask(grad_output)
    return call, x, weight, bias, grad_output


def grad_output(call, g, spatial):
    """grad_output checked against the output's shape (on the call's stand-ins: the same
    error as for a NumPy call) and batched like x."""
    checked_grad_output(call, spatial)
    return g if call.batched else g[None]


def _task_threads():
    """The thread count a block task plans for: its ``dask.distributed`` worker's
    ``nthreads``, or None (convmm's own setting) outside a worker."""
    try:
        from distributed import get_worker

        return get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):
        return None


def threads_of_task():
    from .._engines.cpu import threads

    count = _task_threads()
    return nullcontext() if count is None else threads.calling_thread_setting(count)


def block_keywords(call):
    geometry = call.geometry
    return dict(stride=geometry.stride, dilation=geometry.dilation, groups=call.groups,
                data_format=call.layout.name, method=call.method)


def channel_weight(call, weight, first, stop):
    """The weight's slice for input channels [first, stop) (groups == 1)."""
    if call.layout.name == "channels_first":
        return weight[:, first:stop]
    return weight[..., first:stop, :]


def block_call(x, weight, grad_output, transposed, keywords):
    """The validated call of one block: a "valid" convolution (padding 0) of its window."""
    return prepare_call(x, weight, None, grad_output, transposed=transposed, padding=0,
                        padding_mode="zeros", **keywords)


def forward(call, x, weight, main=False):
    """conv's map C·x (no bias) of a batched Dask x, block by block.  Each block is a
    "valid" convolution of its window, planned for itself (``policy.plan``): ``main``
    (the public function's own map) changes nothing here.  A method named that cannot run
    a block runs ``auto``'s choice there, as in a backward pass, and ``explain`` says so;
    the whole call's geometry is not the blocks' (they have no padding), so refusing by
    it would refuse blocks Winograd can run."""
    import dask.array as da

    channel_axis = call.layout.channel_axis(x.ndim)
    if call.groups > 1:
        x = one_chunk(x, channel_axis)
    sizes, padded = padded_windows(call, x)
    chunks = list(x.chunks)
    for axis, along in sizes.items():
        chunks[axis] = along
    in_channels, out_channels = call.forward_channels
    chunks[channel_axis] = (out_channels,)
    module = chunk_module(x)
    keywords = block_keywords(call)
    parts = []
    first = 0
    for size in padded.chunks[channel_axis]:
        index = [slice(None)] * x.ndim
        index[channel_axis] = slice(first, first + size)
        part_weight = weight if size == in_channels else channel_weight(call, weight, first,
                                                                         first + size)
        parts.append(da.map_blocks(_forward_block, padded[tuple(index)],
                                   weight_argument(part_weight), keywords=keywords,
                                   chunks=tuple(chunks), dtype=x.dtype,
                                   meta=empty_meta(module, x.ndim, x.dtype)))
        first += size
    return tree_sum(parts)


def _forward_block(window, weight, keywords):
    call = block_call(window, weight, None, False, keywords)
    with threads_of_task():
        return dispatch.forward(call, policy.plan(call, "forward"), call.x, call.weight)


def adjoint(call, y, weight, main=False):
    """The transposed map Cᵀ·y (no bias) of a batched Dask y, block by block: onto the
    padded grid, then the padding's adjoint (``main``: as in ``forward``)."""
    import dask.array as da

    geometry, layout = call.geometry, call.layout
    axes = layout.spatial_axes(geometry.nd)
    channel_axis = layout.channel_axis(y.ndim)
    y = one_chunk(y, channel_axis)
    chunks, cuts = list(y.chunks), {}
    placements = []
    for axis, outputs, padded_size, (before, _), stride, kernel, dilation in zip(
            axes, geometry.output_size, geometry.padded_size, geometry.padding,
            geometry.stride, geometry.kernel_size, geometry.dilation):
        sizes, windows, starts = adjoint_cut(y.chunks[axis], outputs, padded_size, before,
                                              stride, dilation * (kernel - 1))
        cuts[axis], chunks[axis] = windows, sizes
        placements.append(tuple((first * stride, start, size)
                                for (first, _), start, size in zip(windows, starts, sizes)))
    y = windowed(y, cuts)
    in_channels, _ = call.forward_channels
    chunks[channel_axis] = (in_channels,)
    module = chunk_module(y)
    grid = da.map_blocks(_adjoint_block, y, weight_argument(weight),
                         keywords=block_keywords(call), axes=axes, placements=tuple(placements), chunks=tuple(chunks),
                         dtype=y.dtype, meta=empty_meta(module, y.ndim, y.dtype))
    return pad_adjoint(grid, call)


def _adjoint_block(window, weight, keywords, axes, placements, block_info=None):
    """The padded grid's chunk: conv_transpose of the window (padding 0), which covers
    [first·s, first·s + its length) of each axis, placed into the chunk [start, start + size)."""
    location = block_info[None]["chunk-location"]
    shape = list(block_info[None]["chunk-shape"])
    module = chunk_module(window)
    out = module.zeros(tuple(shape), dtype=window.dtype)
    if any(window.shape[axis] == 0 for axis in axes):
        return out
    call = block_call(window, weight, None, True, keywords)
    with threads_of_task():
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


def weight_grad(call, a, b, weight):
    """Σ a·P(b)ᵀ over the batch and positions, shaped like ``weight`` (no conjugation
    here, as in ``dispatch.weight_grad``): conv_backward's weight gradient for
    a = grad_output, b = conj(x); one partial per block, tree-summed."""
    import dask.array as da

    channel_axis = call.layout.channel_axis(b.ndim)
    b = one_chunk(b, channel_axis)
    sizes, padded = padded_windows(call, b)
    a = one_chunk(a, channel_axis).rechunk({0: b.chunks[0], **sizes})
    module = chunk_module(b)
    dtype = np.result_type(a.dtype, b.dtype)
    blocks = a.numblocks
    shape = tuple(weight.shape)
    # One partial per block, each as (1, …, 1, *weight.shape): summed over the block axes.
    partials = da.map_blocks(_weight_block, a, padded, weight_argument(weight),
                             keywords=block_keywords(call),
                             new_axis=list(range(a.ndim, a.ndim + len(shape))),
                             chunks=tuple((1,) * n for n in blocks) + tuple((s,) for s in shape),
                             dtype=dtype, meta=empty_meta(module, a.ndim + len(shape), dtype))
    return partials.sum(axis=tuple(range(a.ndim)))


def _weight_block(grads, window, weight, keywords):
    call = block_call(window, weight, grads, False, keywords)
    with threads_of_task():
        partial = dispatch.weight_grad(call, policy.plan(call, "weight_grad"), call.grad_output,
                                       call.x)
    return partial.reshape((1,) * grads.ndim + tuple(partial.shape))
