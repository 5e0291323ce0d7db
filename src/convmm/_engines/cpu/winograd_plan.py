"""Winograd's plan on the CPU: blocks of tiles for the kernels beside it.

``_core/winograd.py`` holds the transforms and which geometries they serve;
``winograd.py`` and ``winograd_lines.py`` the kernels that run them; this module cuts
one map into blocks of output tiles whose transforms fit a worker's share of the
workspace (``Tunables.workspace_bytes``), with the output tile per axis the record asks
for (``Tunables.winograd_tile``).
"""

from __future__ import annotations

import math

from ..._core.winograd import tiling
from ..plan import ConvPlan
from ..tunables import Tunables


def winograd_plan(call, operation, reason, rows, positions, patch_bytes, size, threads,
                  tuned: Tunables) -> ConvPlan:
    """Blocks of tiles whose transforms (V and M, α³ × block × channels) fit a worker's
    share of the workspace; at least two blocks per worker where the batch allows; small
    images several to a block, padded together within ``tuned.padded_batch_bytes``."""
    geometry = call.geometry
    cut = tiling(geometry, tuned.winograd_tile)
    in_channels, out_channels = call.forward_channels
    n = positions // max(1, geometry.n_positions)
    per_image, total = cut.tiles_per_image, n * cut.tiles_per_image
    transforms = cut.points * (in_channels + out_channels) * size    # bytes per tile
    block = max(1, tuned.workspace_bytes // threads // transforms)
    if threads > 1:
        block = min(block, -(-total // (2 * threads)))
    canvas_bytes = math.prod(cut.canvas) * in_channels * size
    if block >= per_image:
        batch = max(1, min(block // per_image, tuned.padded_batch_bytes // canvas_bytes, n))
        block = batch * per_image
    else:
        batch = 1
        block = -(-per_image // -(-per_image // block))     # equal pieces of one image
    work = threads * (batch * canvas_bytes + (block + 2) * transforms) \
        + cut.points * in_channels * out_channels * size
    return ConvPlan("winograd", operation, rows, positions, block, threads, work, patch_bytes,
                    reason, winograd_tile=tuned.winograd_tile, winograd_name=cut.name(geometry.nd),
                    kernel="winograd_input, transform_products, winograd_output")
