"""The CPU engine's tiles, threads, workspace and kernel for one map: its part of a plan.

Beside the kernels whose register tile (MR × NR, ``microkernel.py``), cache blocking
(KC, MC, NC, ``gemm.py``) and reduction block (``REDUCTION_DEPTH``, ``kernels.py``) it
sizes for.  ``policy.plan`` chooses the method; ``cpu_plan`` cuts its work and names
the kernel that runs, so that ``engine.py`` decides nothing the plan does not record.
Every function here is a pure function of the validated call, the map, the thread count
and the record of tunables.

The kernels are imported inside the functions: importing the policy must not import
Numba's compiled modules (``import convmm`` stays fast).
"""

from __future__ import annotations

import math

from ..plan import ConvPlan
from ..tunables import Tunables


def worker_threads(multiply_adds: int, setting: int, tuned: Tunables) -> int:
    """Worker threads for a map of this many multiply-adds: the thread ``setting``, or
    fewer where each would get less than ``tuned.work_per_thread``."""
    return max(1, min(setting, multiply_adds // tuned.work_per_thread))


def direct_on_grid(call, in_per_group: int) -> bool:
    """A stride-1 map whose sums ``direct`` runs on the padded grid in one block
    (C_g·T ≤ ``REDUCTION_DEPTH``)."""
    from .kernels import REDUCTION_DEPTH

    return (all(s == 1 for s in call.geometry.stride)
            and in_per_group * call.geometry.n_taps <= REDUCTION_DEPTH)


def _direct_kernel(call, operation, tuned):
    """The direct kernel for a map: on the padded grid (``…_wide``) where its window
    starts are at most twice the outputs and a worker's O_g planes of the grid hold at
    most ``tuned.wide_samples``; else the row sweep."""
    geometry = call.geometry
    if operation == "adjoint":
        return "direct_adjoint"
    name = "direct_forward" if operation == "forward" else "direct_weight_grad"
    span, per_group = geometry.padded_grid_span, call.forward_channels[1] // call.groups
    in_per_group = call.forward_channels[0] // call.groups
    wide = (all(s == 1 for s in geometry.stride) and span <= 2 * geometry.n_positions
            and per_group * span <= tuned.wide_samples
            and (operation != "forward" or direct_on_grid(call, in_per_group)))
    return f"{name}_wide" if wide else name


def _implicit_weight_grad_kernel(call, tuned):
    """The implicit GEMM's weight gradient: on the padded grid (``weight_grad_wide``) for a
    channels-first stride-1 call with at most ``tuned.wide_overhead`` window starts per
    output; else the packed GEMM over the im2col table of its layout."""
    geometry = call.geometry
    channels_first = call.layout.name == "channels_first"
    if (channels_first and all(s == 1 for s in geometry.stride)
            and geometry.padded_grid_span <= tuned.wide_overhead * geometry.n_positions):
        return "weight_grad_wide"
    return f"weight_grad_{call.layout.name}"


def cpu_plan(call, operation, method, reason, rows, positions, patch_bytes, size, threads,
             tuned: Tunables) -> ConvPlan:
    """The plan of ``method`` (``direct``, ``tiled_blas`` or ``implicit_gemm``) for one map
    on ``threads`` workers: its tiles, workspace (bytes, all workers) and kernel.

    ``direct``: units of (image, group) pairs, four per worker.  ``tiled_blas`` with a
    1×1 kernel and no padding: BLAS on the input itself.  ``implicit_gemm``'s forward map:
    units of whole output rows (small images several to a unit, within
    ``padded_batch_bytes``); its weight gradient: pieces of images.  ``tiled_blas``: patch
    tiles that fit a worker's share of ``workspace_bytes``, cutting images evenly.
    """
    geometry = call.geometry
    n = call.n_images
    layout = call.layout.name
    if method == "direct":
        units = n * call.groups                 # (image, group) pairs
        tile = max(1, -(-units // (4 * threads)))
        padded = math.prod(geometry.padded_size) + 1
        return ConvPlan(method, operation, rows, positions, tile, threads,
                        threads * padded * size, patch_bytes, reason,
                        kernel=_direct_kernel(call, operation, tuned))
    if method == "tiled_blas" and geometry.pointwise:
        subsampled = any(s > 1 for s in geometry.stride)
        work = patch_bytes if subsampled else 0
        return ConvPlan(method, operation, rows, positions, 0, threads, work, patch_bytes,
                        reason or "1×1 kernel without padding")
    image = geometry.n_positions
    # The weight gradient's workers each sum into a weight-sized partial.
    partial_bytes = (threads * rows * call.forward_channels[1] * size
                     if operation == "weight_grad" else 0)
    if method == "implicit_gemm" and operation == "forward":
        from .gemm import MR, NR

        # Units of whole output rows, at least two per worker where the batch allows;
        # small images go several to a unit, so that a weight panel serves more rows
        # before the next is read.  Each worker holds its unit's padded channels-last
        # images; the weight is packed once.
        width = geometry.output_size[-1]
        in_channels, out_channels = call.forward_channels
        padded_image = math.prod(geometry.padded_size)
        if image < tuned.small_image_positions:
            batch = max(1, min(-(-n // threads),
                               tuned.padded_batch_bytes // (padded_image * in_channels * size)))
            tile = batch * image
        else:
            output_rows = image // width
            tile = -(-output_rows // max(1, -(-2 * threads // max(n, 1)))) * width
            batch = 1
        padded = batch * padded_image + (MR - 1) * geometry.stride[-1]
        panels = call.groups * -(-out_channels // call.groups // NR) * NR
        work = (threads * padded * in_channels + rows * panels) * size
        return ConvPlan(method, operation, rows, positions, tile, threads, work, patch_bytes,
                        reason, kernel="conv_padded")
    if method == "implicit_gemm":
        from .gemm import KC, MC, NC

        tile = max(1, -(-image // max(1, -(-2 * threads // max(n, 1)))))
        work = threads * (KC * (MC + NC) + 256) * size + partial_bytes
        return ConvPlan(method, operation, rows, positions, tile, threads, work, patch_bytes,
                        reason, kernel=_implicit_weight_grad_kernel(call, tuned))
    # Each worker's tile fits its share of the workspace; at least two tiles per
    # worker where the batch allows, for balance; tiles cut images evenly.  The
    # adjoint and the weight gradient keep each tile inside one image.
    balanced = -(-positions // (2 * threads)) if threads > 1 else positions
    tile = max(1, min(tuned.workspace_bytes // (threads * rows * size), balanced))
    if operation == "weight_grad":
        tile = min(tile, image)
    if tile >= image:
        tile = tile // image * image          # whole images
    else:
        pieces = -(-image // tile)
        tile = -(-image // pieces)            # equal pieces of one image
    kernel = (f"BLAS, col2im_{layout}" if operation == "adjoint" else f"patches_{layout}, BLAS")
    return ConvPlan(method, operation, rows, positions, tile, threads,
                    threads * rows * tile * size + partial_bytes, patch_bytes, reason,
                    kernel=kernel)
