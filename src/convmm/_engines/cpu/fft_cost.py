"""The FFT lowering's cost model on NumPy arrays, beside the rates it is modelled at
(``calibration.py``, measured once per machine).

``auto`` weighs the FFT (``_core/fft.py``) against the GEMM methods for kernels of at
least ``fft_min_taps`` taps: ``fft_beats_gemm`` models both maps' times at this
machine's calibrated rates and takes the FFT where it is ``fft_margin`` times faster;
the reason it returns quotes the model, whichever wins.  The FFT's blocks, on every
namespace, are ``_engines/fft_blocks.py``'s.
"""

from __future__ import annotations

import math

import array_api_compat

from ..._core.fft import fft_geometry, transforms_shape, uses_matmul
from ..._core.validation import itemsize
from ..fft_blocks import fft_cut
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
    n = call.n_images
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
    n = call.n_images
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


