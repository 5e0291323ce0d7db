"""The FFT lowering's blocks for one map, on every namespace: a ``ConvPlan`` for
``method="fft"``.

The map is cut into chunks of the batch, then overlap-save blocks of one image's output
rows, within ``fft_budget`` (``Tunables.fft_workspace_bytes``, or more where the patch
matrix and the map's arrays are large); on NumPy arrays ``scipy.fft`` gets one worker
per ``Tunables.fft_points_per_worker`` points.  Whether ``auto`` takes the FFT is the
cost model's (``cpu/fft_cost.py``).
"""

from __future__ import annotations

import math

import array_api_compat

from .._core.fft import fft_blocks, fft_geometry
from .._core.validation import itemsize
from .plan import ConvPlan
from .tunables import Tunables


def fft_budget(call, patch_bytes: int, size: int, tuned: Tunables) -> int:
    """The bytes one map's FFT chunks or blocks may take (``tuned.fft_workspace_bytes``)."""
    geometry = call.geometry
    n = call.n_images
    in_channels, out_channels = call.forward_channels
    data = n * (in_channels * math.prod(geometry.input_size)
                + out_channels * math.prod(geometry.output_size)) * size
    return max(tuned.fft_workspace_bytes, min(patch_bytes // 8, 4 * data))


def fft_cut(call, operation: str, tuned: Tunables):
    """(the chunks or blocks of one map's FFT, the budget they must fit): ``fft_blocks``
    cut to ``tuned.fft_workspace_bytes`` where one block can be, else to ``fft_budget``."""
    n = call.n_images
    in_channels, out_channels = call.forward_channels
    size = itemsize(call.xp, call.weight.dtype)
    patch_bytes = in_channels * call.geometry.n_taps * n * call.geometry.n_positions * size
    complex_input = not call.xp.isdtype(call.weight.dtype, "real floating")
    budget = fft_budget(call, patch_bytes, size, tuned)
    return fft_blocks(call.geometry, operation, n, in_channels, out_channels, call.groups,
                      size, complex_input, budget, preferred=tuned.fft_workspace_bytes), budget


def fft_plan(call, operation, rows, positions, patch_bytes, reason, setting,
             tuned: Tunables) -> ConvPlan:
    """The FFT lowering's plan: its chunks or blocks within ``fft_budget``; a ValueError
    where even one block's transforms (the kernel's spectrum) would not fit."""
    in_channels, out_channels = call.forward_channels
    blocks, budget = fft_cut(call, operation, tuned)
    if blocks.workspace_bytes > budget:
        lengths = "×".join(str(length) for length in blocks.lengths)
        raise ValueError(
            f"method='fft' would need {blocks.workspace_bytes / 2 ** 20:.1f} MiB for the "
            f"smallest block of this call's {operation} map (transforms of {lengths} points; "
            f"the kernel's spectrum {blocks.spectrum_bytes / 2 ** 20:.1f} MiB of it, "
            f"{out_channels}×{in_channels // call.groups} channel pairs at every frequency), "
            f"over its limit of {budget / 2 ** 20:.1f} MiB; method='auto' takes a GEMM method")
    threads = 1
    if array_api_compat.is_numpy_array(call.weight):
        phases = fft_geometry(call.geometry)
        signals = blocks.images * max(in_channels * phases.n_phases, out_channels)
        points = signals * math.prod(blocks.lengths)
        threads = max(1, min(setting, points // tuned.fft_points_per_worker))
    return ConvPlan("fft", operation, rows, positions, positions, threads,
                    blocks.workspace_bytes, patch_bytes, reason, fft=blocks)
