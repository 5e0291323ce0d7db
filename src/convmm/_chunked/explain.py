"""``convmm.explain`` of a call on Dask arrays: how the graph is cut, and the plan of
each map's largest block."""

from __future__ import annotations

from .._engines import policy
from .arrays import as_dask, stand_in, stand_in_shape
from .cuts import CHUNK_NOTATION, adjoint_cut, forward_cut, shape_text
from .maps import block_call, block_keywords, channel_weight, prepare

def explain(transposed, maps, needs, result, x, weight, bias, grad_output, keywords):
    """``convmm.explain`` of a call on Dask arrays: how the graph is cut (chunks in and out,
    halos, rechunks, partial sums, tasks) and, per map, the plan of its largest block."""
    given = as_dask(x if grad_output is None else grad_output)   # as the caller shaped it
    call, x, weight, bias, g = prepare(x, weight, bias, grad_output, transposed=transposed,
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
    pads = (f"padding ({', '.join(f'({a}, {b})' for a, b in geometry.padding)}) {call.padding_mode} "
            f"on the whole array" if any(map(any, geometry.padding)) else "no padding")
    lines = [f"dask: {'grad_output' if g is not None else 'x'} chunks {shape_text(given.chunks)}"
             f" → " + ", ".join(f"{name}{shape_text(r.chunks)}" for name, r in results)
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
        block = largest_block(call, operation, s_data, l_data)
        planner = policy.main_plan if label in ("conv", "conv_transpose") else policy.plan
        lines.append(f"{label}, the largest block: "
                     + planner(block, operation).describe().split(": ", 1)[1])
    return "\n".join(lines)


def largest_block(call, operation, s_data, l_data):
    """The validated call of the largest block a map runs, on zero-memory stand-ins:
    ``s_data`` holds the forward convolution's input side, ``l_data`` its output side."""
    geometry, layout = call.geometry, call.layout
    axes = layout.spatial_axes(geometry.nd)
    keywords = block_keywords(call)
    weight = stand_in(call.weight)
    if operation == "adjoint":
        shape = list(l_data.shape)
        for axis, outputs, padded, (before, _), stride, kernel, dilation in zip(
                axes, geometry.output_size, geometry.padded_size, geometry.padding,
                geometry.stride, geometry.kernel_size, geometry.dilation):
            _, windows, _ = adjoint_cut(l_data.chunks[axis], outputs, padded, before, stride,
                                        dilation * (kernel - 1))
            shape[axis] = max(max(b - a for a, b in windows), 1)
        shape[0] = max(l_data.chunks[0])
        return block_call(stand_in_shape(l_data, shape), weight, None, True, keywords)
    shape, outputs = list(s_data.shape), []
    for axis, output, stride, kernel, dilation in zip(
            axes, geometry.output_size, geometry.stride, geometry.kernel_size,
            geometry.dilation):
        sizes, windows = forward_cut(s_data.chunks[axis], output, stride,
                                     dilation * (kernel - 1))
        shape[axis] = max(b - a for a, b in windows)
        outputs.append(max(sizes))
    shape[0] = max(s_data.chunks[0])
    grads = None
    channel_axis = layout.channel_axis(s_data.ndim)
    if operation == "forward" and call.groups == 1:    # one partial per input-channel chunk
        shape[channel_axis] = max(s_data.chunks[channel_axis])
        weight = channel_weight(call, weight, 0, shape[channel_axis])
    if operation == "weight_grad":
        grads = stand_in_shape(l_data, layout.image_shape(shape[0], call.forward_channels[1],
                                                           outputs))
    return block_call(stand_in_shape(s_data, shape), weight, grads, False, keywords)
