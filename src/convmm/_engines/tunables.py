"""The one record of tunables every plan is a pure function of.

A plan (``policy.plan``) depends on the validated call, the map, the thread setting,
this record and the array-API path's ``algorithms.PATCH_BYTES`` (the core's, which
cannot import the engines): all of them are in every plan's cache key, so a plan made
under one setting (a test's tiny workspace) is never handed back under another.  The
FFT's cost model (``cpu/fft_cost.py``) also reads the calibration's rates, measured once
per machine and kept for the process; they are not in the key.

Every number here is a budget, a threshold or a size; where one was measured, its
docstring says on what.  ``TUNABLES`` is the record in force; ``current()`` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tunables:
    """Workspace budgets, thread work, tile sizes and method thresholds (bytes in bytes,
    counts in elements)."""

    workspace_bytes: int = 16 << 20
    """The CPU engine's patch tiles' size budget, all workers together (the tiles are the
    engine's extra memory)."""

    cuda_workspace_bytes: int = 256 << 20
    """The CUDA engine's patch tiles' budget on the device (a tile holds at least one
    whole image)."""

    index_table_bytes: int = 64 << 20
    """The index tables an engine method may build for one map (int64 entries; building
    one takes about three times its size).  Above it "auto" takes a method that needs
    none, and an engine method asked for by name is refused with a ValueError that
    names one."""

    direct_max_channel_pairs: int = 8
    """``auto`` runs ``direct`` where a group pairs at most this many (input, output)
    channels."""

    direct_grid_max_channel_pairs: int = 16
    """… and, for a stride-1 forward map whose sums fit one block (C_g·T ≤
    REDUCTION_DEPTH, run on the padded grid), up to this many: a ResNeXt layer (4
    channels per group, 28×28) by ``direct`` 0.98 ms, by ``implicit_gemm`` 2.43 ms (its
    NR-wide weight panels hold 4 real columns); at 8×8 channels ``implicit_gemm`` wins."""

    implicit_min_positions: int = 128
    """``auto`` runs ``implicit_gemm``'s forward map where an image has at least this many
    output positions (measured: ResNet's 7×7 layer runs faster as BLAS on patch tiles)."""

    small_image_positions: int = 256
    """``implicit_gemm``'s forward map puts several whole images in a unit below this many
    output positions per image, so that each weight panel serves more rows."""

    padded_batch_bytes: int = 4 << 20
    """At most this much of padded images per worker in such a unit (at least one
    image); Winograd's blocks of small images likewise."""

    work_per_thread: int = 2097152
    """The fewest multiply-adds worth a worker thread of their own (handing work to a
    pooled thread and waiting for it costs tens of microseconds, about a million
    multiply-adds).  A constant, not a measurement: the thread count decides how
    partial sums are split, so it must be a pure function of the call for its results
    to repeat bit for bit."""

    numpy_on_cuda: bool = False
    """Tests only: run NumPy arrays through the CUDA engine (under the CUDA simulator)."""

    fft_min_taps: int = 16
    """``auto`` weighs the FFT only for kernels of at least this many taps (4×4, 16 in
    1-d): below, its normwise error (ε·log₂ n of the largest values) would show beside
    the GEMM methods' elementwise one where outputs cancel, and it seldom wins."""

    fft_margin: float = 1.25
    """``auto`` takes the FFT where the cost model puts it at least this much faster."""

    fft_call_seconds: float = 100e-6
    """The cost model's fixed cost per chunk or block of an FFT map: the Python around
    its transforms, about ten calls of ten microseconds (measured here: a 1-d FFT map of
    a tiny signal takes 0.1 ms)."""

    fft_points_per_worker: int = 1 << 20
    """``scipy.fft`` gets one worker per this many points in a call's transforms: below,
    its threads cost more than they save (measured here, after the cores idled: a
    542×576 transform 0.66 ms on one worker and 0.64 on two; 256×13122 points 7.9 and
    5.2 ms)."""

    fft_workspace_bytes: int = 32 << 20
    """The FFT lowering's workspace is at most max(this, min(patch matrix / 8, 4 × the
    map's input and output)): chunks of the batch, then overlap-save blocks, are cut to
    fit."""

    winograd_tile: int = 2
    """The largest Winograd output tile per axis a plan asks for (0: ``OUTPUT_TILE``'s).

    2 gives F(2, r): F(2×2, 3×3) makes 2.25× fewer multiplications than the GEMM
    methods, at 1.2-2.3× PyTorch's float32 error (RMS against a float64 oracle, 64-256
    channels); 0 gives F(4×4, 3×3): 4× fewer, at 8-13× PyTorch's error
    (``tools/winograd_accuracy.py`` measures both)."""

    implicit_overhang_bytes: int = 4 << 20
    """The most the implicit GEMM's padded copy may hold past an image's end, per worker."""

    wide_overhead: float = 1.1
    """The CPU weight gradient runs on the padded grid where it has at most this many
    window starts per output (measured: 56×56 images, 1.05, 12 % faster; 14×14, 1.31,
    17 % slower)."""

    wide_samples: int = 1 << 20
    """The direct forward map and weight gradient run on the padded grid where a
    worker's O_g planes of it take at most this many samples."""


TUNABLES = Tunables()
"""The record in force (tests replace it with ``dataclasses.replace``)."""


def current() -> Tunables:
    """The record in force now."""
    return TUNABLES
