"""The FFT lowering's plan on NumPy arrays: its blocks, its workers, and its cost model.

Beside the rates it is modelled at (``calibration.py``, measured once per machine).
``auto`` weighs the FFT (``_core/fft.py``) against the GEMM methods for kernels of at
least ``fft_min_taps`` taps: ``fft_beats_gemm`` models both maps' times at this
machine's calibrated rates and takes the FFT where it is ``fft_margin`` times faster;
the reason it returns quotes the model, whichever wins.  ``fft_plan`` cuts a map into
chunks of the batch or overlap-save blocks within ``fft_budget`` and gives
``scipy.fft`` its workers.
"""

from __future__ import annotations

import math

import array_api_compat

from ..._core.fft import fft_blocks, fft_geometry, transforms_shape, uses_matmul
from ..._core.validation import itemsize
from ..plan import ConvPlan
from . import calibration


def gemm_efficiency(pairs: int) -> float:
    """The GEMM methods' speed relative to ``calibration.rates``' BLAS rate for ``pairs``
    (input × output channels per group): 0.12·pairs^0.3, at most 1.5.  Fitted on large
    kernels here (thin groups run ``direct``, a tap at a time): 1→1 channels at 0.10-0.16
    of BLAS, 1→16 at 0.21, 8→8 at 0.39, 16→16 at 0.42, 64→64 at 1.4-1.6; a model of the
    engine against BLAS, which the calibration measures on each machine."""
    return min(1.5, 0.12 * pairs ** 0.3)


def fft_seconds(call, operation, blocks, rate, tuned):
    """The FFT lowering's modelled time for one map at this machine's rates: the
    transforms (points·log₂ points; the kernel's pruned to about half), the memory
    they and the copies around them touch, and the per-frequency channel products."""
    geometry = call.geometry
    phases = fft_geometry(geometry)
    n = call.x.shape[0] if call.x is not None else 1
    in_channels, out_channels = call.forward_channels
    inner, groups = in_channels * phases.n_phases, call.groups
    real = call.xp.isdtype(call.weight.dtype, "real floating")
    size = itemsize(call.xp, call.weight.dtype)
    complex_size = 2 * size if real else size
    points = math.prod(blocks.lengths)
    transform = points * math.log2(max(points, 2)) * (1.0 if real else 2.0)
    first = geometry.output_size[0] if operation == "forward" else phases.phase_length[0]
    pieces = -(-first // blocks.rows) if blocks.rows else 1
    spectrum = math.prod(transforms_shape(blocks.lengths, real))
    signals = n * pieces * (inner + out_channels)         # transformed once each way
    kernels = out_channels * inner // groups
    touched = ((4 * signals + 3 * kernels) * spectrum * complex_size
               + 2 * n * inner * math.prod(phases.phase_length) * size)
    depth, rows, columns = {"forward": (inner // groups, blocks.images, out_channels // groups),
                            "adjoint": (out_channels // groups, blocks.images, inner // groups),
                            "weight_grad": (blocks.images, out_channels // groups,
                                            inner // groups)}[operation]
    products = n * pieces * inner * out_channels // groups * spectrum
    mix = rate["mix"] if uses_matmul(rows, depth, columns) else rate["mix_small"]
    calls = -(-n // blocks.images) * pieces + 1
    return ((signals + kernels / 2) * transform / rate["fft"] + touched / rate["bandwidth"]
            + products / mix + calls * tuned.fft_call_seconds)


def fft_beats_gemm(call, operation, setting, tuned):
    """(whether ``auto`` should take the FFT for this map, the reason): a NumPy call with
    a kernel of at least ``tuned.fft_min_taps`` taps whose blocks fit, modelled at least
    ``tuned.fft_margin`` times faster than the GEMM methods."""
    geometry = call.geometry
    if geometry.n_taps < tuned.fft_min_taps or not array_api_compat.is_numpy_array(call.weight):
        return False, ""
    in_channels, out_channels = call.forward_channels
    per_group = in_channels // call.groups * (out_channels // call.groups)
    n = call.x.shape[0] if call.x is not None else 1
    complex_input = not call.xp.isdtype(call.weight.dtype, "real floating")
    blocks, budget = fft_cut(call, operation, tuned)
    if blocks.workspace_bytes > budget:
        return False, ""
    measured = calibration.record(call.weight.dtype, setting)
    rate = measured["rates"]
    macs = n * geometry.n_positions * out_channels * in_channels // call.groups * geometry.n_taps
    gemm = macs * (1 if not complex_input else 4) / (rate["gemm"] * gemm_efficiency(per_group))
    fft = fft_seconds(call, operation, blocks, rate, tuned)
    model = (f"modelled {fft * 1e3:.2g} ms by FFT against {gemm * 1e3:.2g} ms by GEMM at "
             f"this machine's calibrated {calibration.describe(measured)}")
    if fft * tuned.fft_margin > gemm:
        return False, f"not the FFT: {model}"
    return True, f"{geometry.n_taps}-tap kernel: {model}"


def fft_budget(call, operation, patch_bytes, size, tuned):
    """The bytes one map's FFT chunks or blocks may take (``tuned.fft_workspace_bytes``)."""
    geometry = call.geometry
    n = call.x.shape[0] if call.x is not None else 1
    in_channels, out_channels = call.forward_channels
    data = n * (in_channels * math.prod(geometry.input_size)
                + out_channels * math.prod(geometry.output_size)) * size
    return max(tuned.fft_workspace_bytes, min(patch_bytes // 8, 4 * data))


def fft_cut(call, operation, tuned):
    """(the chunks or blocks of one map's FFT, the budget they must fit): ``fft_blocks``
    cut to ``tuned.fft_workspace_bytes`` where one block can be, else to ``fft_budget``."""
    n = call.x.shape[0] if call.x is not None else 1
    in_channels, out_channels = call.forward_channels
    size = itemsize(call.xp, call.weight.dtype)
    patch_bytes = in_channels * call.geometry.n_taps * n * call.geometry.n_positions * size
    complex_input = not call.xp.isdtype(call.weight.dtype, "real floating")
    budget = fft_budget(call, operation, patch_bytes, size, tuned)
    return fft_blocks(call.geometry, operation, n, in_channels, out_channels, call.groups,
                      size, complex_input, budget, preferred=tuned.fft_workspace_bytes), budget


def fft_plan(call, operation, rows, positions, patch_bytes, reason, setting, tuned):
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
