"""A stride-1 adjoint as a forward convolution with the flipped kernel.

At stride 1 with zero padding no wider than the kernel's reach, ``Cᵀ·y`` is the
forward convolution of ``y`` with the kernel flipped and its channel axes swapped,
padded by ``d·(K − 1) − p`` (zero insertion with nothing to insert: Dumoulin & Visin,
"A guide to convolution arithmetic for deep learning", 2016, §4).  The engines then run
the adjoint as a forward map: no ``col2im``.
"""

from __future__ import annotations

import dataclasses

from .._core.geometry import ConvGeometry


def flipped_padding(geometry):
    """The padding of the stride-1 convolution that computes Cᵀ: d·(K − 1) − p before, and
    after whatever brings its output to the forward input size (output padding included)."""
    pairs = []
    for (b, _), k, d, i, o in zip(geometry.padding, geometry.kernel_size, geometry.dilation,
                                  geometry.input_size, geometry.output_size):
        before = d * (k - 1) - b
        pairs.append((before, i + d * (k - 1) - o - before))
    return tuple(pairs)


def flippable(call) -> bool:
    """Stride 1, zero padding no wider than the kernel: Cᵀ is a convolution (no col2im)."""
    geometry = call.geometry
    return (call.padding_mode == "zeros" and not geometry.pointwise
            and all(s == 1 for s in geometry.stride)
            and all(b >= 0 and a >= 0 for b, a in flipped_padding(geometry)))


def flipped_call(call, weight=None):
    """The forward convolution that computes Cᵀ·y for a stride-1 call (zero insertion with
    nothing to insert): the kernel flipped and its channel axes swapped, padding d·(K − 1) − p."""
    geometry, layout = call.geometry, call.layout
    in_channels, _ = call.forward_channels
    flipped = ConvGeometry(geometry.output_size, geometry.kernel_size, geometry.stride,
                           geometry.dilation, flipped_padding(geometry), geometry.input_size)
    weight = call.weight if weight is None else weight
    signature = None if call.signature is None else ("flipped", call.signature)
    return dataclasses.replace(
        call, geometry=flipped, out_channels=in_channels, signature=signature,
        weight=layout.flipped_transpose_weight(call.xp, weight, call.groups, geometry.nd))
