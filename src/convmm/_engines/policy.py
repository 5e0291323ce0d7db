"""The policy: which method runs one map of a convolution call, with what tiles and workspace.

Every public function is made of three maps:

    forward       Y = C·X           conv; conv_transpose's input gradient
    adjoint       X = Cᵀ·Y          conv_transpose; conv's input gradient
    weight_grad   ΔW = Σ_n A·Pᵀ     both weight gradients (P: patches of B)

``plan(call, operation)`` resolves ``method="auto"`` for one of them on the
call's device and sizes the engine's tiles and workspace: a ``ConvPlan``,
whose ``describe()`` is what ``convmm.explain`` prints.  The plan is a pure
function of the validated call's shapes and keywords; nothing runs here.

On NumPy arrays the CPU engine (``cpu/``) offers three methods:

``tiled_blas``
    The (image, position) index is cut into tiles whose patch block fits a
    fixed workspace; worker threads fill a tile with a serial, GIL-free Numba
    kernel and multiply it with a single-threaded BLAS GEMM, straight into the
    output.  The adjoint multiplies by Wᵀ and folds each tile back with
    ``col2im`` as a gather; the weight gradient accumulates one ΔW per worker,
    summed in a fixed order.  A 1×1 kernel without padding needs no patches at
    all: its (subsampled) input is the patch matrix, and one multi-threaded
    BLAS GEMM does the work.
``implicit_gemm``
    The forward map with its patches read in place: each image is padded once
    into a channels-last copy, from which the register-blocked micro-kernel
    reads MR output positions × the channels of one tap, tap after tap, against
    the weight packed once into NR-wide panels.  The weight gradient is a
    packed GEMM whose patch operand is packed straight from the image; the
    adjoint runs ``tiled_blas`` (or, at stride 1, is itself a forward map).
``direct``
    Convolutions with few channels per group (depthwise above all): no GEMM,
    each input plane padded once and swept tap by tap along its last spatial dim.

On CuPy arrays the CUDA engine (``cuda/``) runs the same three names; on any
other namespace, or without an engine, the array-API algorithms of
``_core.algorithms`` (``im2col``, ``zero_insertion``) run.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import array_api_compat
import numpy as np

from .._core import algorithms
from .._core.algorithms import transposed_method
from .._core.fft import FFTBlocks, fft_blocks, fft_geometry, transforms_shape, uses_matmul
from .._core.geometry import ConvGeometry
from .._core.index_plans import pairs_per_sample, padded_source_bytes
from .._core.params import ENGINE_METHODS
from .._core.validation import itemsize, library
from .._core.winograd import applies as winograd_applies, tiling as winograd_tiling
from .cpu.threads import get_num_threads
from .cuda.engine import unavailable_reason

WORKSPACE_BYTES = 16 << 20
"""The CPU engine's patch tiles' size budget, all workers together (the tiles are the
engine's extra memory)."""

CUDA_WORKSPACE_BYTES = 256 << 20
"""The CUDA engine's patch tiles' budget on the device (a tile holds at least one whole image)."""

OPERATIONS = ("forward", "adjoint", "weight_grad")

PLAN_BYTES = 64 << 20
"""The index plans an engine method may build for one map (int64 entries; building one
takes about three times its size).  Above it "auto" takes a method that needs none, and
an engine method asked for by name is refused with a ValueError that names one."""


@dataclass(frozen=True)
class ConvPlan:
    """What runs one map of a convolution: the method, and for the engine its tiles and workspace."""

    method: str
    operation: str
    rows: int               # patch rows per group: C_g·T
    positions: int          # (image, position) pairs of the batch: N·L
    tile: int               # positions per tile (tiled_blas, implicit_gemm), planes (direct)
    threads: int            # worker threads
    workspace_bytes: int    # the engine's buffers, all workers together
    patch_matrix_bytes: int  # what the full patch matrix would take
    reason: str = ""        # why this method, where "auto" chose it or another was substituted
    flipped: ConvPlan | None = None  # the adjoint run as this forward plan (stride 1, zero padding)
    device: str = "cpu"     # "cpu": the Numba engine (cpu/); "cuda": the CUDA engine (cuda/)
    winograd_tile: int = 0  # winograd: the largest output tile per axis (0: OUTPUT_TILE's)
    winograd_name: str = ""  # winograd: "F(4×4, 3×3)"
    fft: FFTBlocks | None = None  # fft: chunks, blocks and transform lengths
    # fft chosen by auto: the plan for inputs it cannot take; flipped: the plan for a weight
    # that is not finite (the flipped map would multiply its padding's zeros)
    fallback: ConvPlan | None = None


    def describe(self) -> str:
        mib = 2 ** 20
        why = f" ({self.reason})" if self.reason else ""
        if self.flipped is not None:
            instead = ("" if self.fallback is None else
                       f"; a weight with an inf or NaN runs {self.fallback.method} instead, "
                       f"which multiplies no zero of the padding")
            return (f"{self.operation}: a stride-1 convolution with the flipped kernel{why}; "
                    + self.flipped.describe() + instead)
        full = f"the full patch matrix would take {self.patch_matrix_bytes / mib:.1f} MiB"
        if self.method == "fft" and self.fft is not None:
            blocks = self.fft
            cut = (f"whole images, {blocks.images} per chunk" if blocks.rows == 0 else
                   f"overlap-save blocks of {blocks.rows} output rows of one image")
            lengths = "×".join(str(n) for n in blocks.lengths)
            return (f"{self.operation}: fft{why}: transforms of {lengths} points, {cut}, "
                    f"the channels mixed by one small matrix product per frequency, on "
                    f"{self.threads} FFT worker(s); workspace {self.workspace_bytes / mib:.2f} "
                    f"MiB, the kernel's spectrum {blocks.spectrum_bytes / mib:.2f} MiB of it "
                    f"({full}); its error is normwise, about ε·log₂(points) of the largest "
                    f"values that meet in a sum, so outputs far smaller than their neighbours "
                    f"lose their relative accuracy: a GEMM method by name (method='im2col' or "
                    f"an engine's) rules the FFT out")
        if self.method == "zero_insertion":
            return (f"{self.operation}: zero_insertion, the array-API path{why}: tap by tap, "
                    f"each a 1×1 transposed convolution added at stride s, no inserted zero "
                    f"multiplied and no patch matrix ({full})")
        if self.method == "im2col":
            whole = (f"whole patch matrix {self.rows}×{self.positions} per group, "
                     f"{self.patch_matrix_bytes / mib:.1f} MiB")
            if self.workspace_bytes < self.patch_matrix_bytes:
                whole = (f"patch matrix in pieces of at most {self.workspace_bytes / mib:.1f} "
                         f"MiB (the {whole})")
            return f"{self.operation}: {self.method}, the array-API path{why}; {whole}"
        if self.tile == 0:
            return (f"{self.operation}: {self.method}{why}: BLAS GEMMs on the input itself, "
                    f"in units of positions on {self.threads} thread(s); workspace "
                    f"{self.workspace_bytes / mib:.2f} MiB ({full})")
        if self.device == "cuda":
            if self.method == "tiled_blas":
                what = (f"CUDA im2col tiles of {self.tile} (image, position) pairs × {self.rows} "
                        f"patch rows, cuBLAS")
            elif self.method == "implicit_gemm":
                what = "one implicit-GEMM CUDA kernel, patch tiles built in shared memory"
            else:
                what = "direct CUDA kernels, one thread per output sample"
            return (f"{self.operation}: {self.method}{why}: on the GPU, {what}; workspace "
                    f"{self.workspace_bytes / mib:.2f} MiB ({full})")
        if self.method == "winograd":
            return (f"{self.operation}: winograd{why}: {self.winograd_name}, blocks of "
                    f"{self.tile} tiles, one packed GEMM per transform point, on {self.threads} "
                    f"thread(s); workspace {self.workspace_bytes / mib:.2f} MiB ({full})")
        unit = "(image, group) pairs" if self.method == "direct" else "(image, position) pairs"
        return (f"{self.operation}: {self.method}{why}: tiles of {self.tile} {unit} "
                f"× {self.rows} patch rows on {self.threads} thread(s); workspace "
                f"{self.workspace_bytes / mib:.2f} MiB ({full})")


# --------------------------------------------------------------------------- planning
def _pointwise(geometry) -> bool:
    """A 1×1 kernel without padding: the (strided) input is the patch matrix."""
    return all(k == 1 for k in geometry.kernel_size) and not any(
        b or a for b, a in geometry.padding)


DIRECT_MAX_CHANNEL_PAIRS = 8
"""``auto`` runs ``direct`` where a group pairs at most this many (input, output) channels."""

DIRECT_GRID_MAX_CHANNEL_PAIRS = 16
"""… and, for a stride-1 forward map whose sums fit one block (C_g·T ≤ REDUCTION_DEPTH,
run on the padded grid), up to this many: a ResNeXt layer (4 channels per group,
28×28) by ``direct`` 0.98 ms, by ``implicit_gemm`` 2.43 ms (its NR-wide weight panels
hold 4 real columns); at 8×8 channels ``implicit_gemm`` wins."""


def _direct_on_grid(call, in_per_group):
    """A stride-1 map whose sums ``direct`` runs on the padded grid in one block."""
    from .cpu.kernels import REDUCTION_DEPTH

    return (all(s == 1 for s in call.geometry.stride)
            and in_per_group * call.geometry.n_taps <= REDUCTION_DEPTH)

IMPLICIT_MIN_POSITIONS = 128
"""``auto`` runs ``implicit_gemm``'s forward map where an image has at least this many
output positions (measured: ResNet's 7×7 layer runs faster as BLAS on patch tiles)."""

SMALL_IMAGE_POSITIONS = 256
"""``implicit_gemm``'s forward map puts several whole images in a unit below this many
output positions per image, so that each weight panel serves more rows."""

PADDED_BATCH_BYTES = 4 * 2 ** 20
"""At most this much of padded images per worker in such a unit (at least one image)."""


WORK_PER_THREAD = 2097152
"""The fewest multiply-adds worth a worker thread of their own (handing work to a pooled
thread and waiting for it costs tens of microseconds, about a million multiply-adds).
A constant, not a measurement: the thread count decides how partial sums are split, so
it must be a pure function of the call for its results to repeat bit for bit."""


def _threads(multiply_adds, setting):
    """Worker threads for a map of this many multiply-adds: the thread ``setting``, or
    fewer where each would get less than ``WORK_PER_THREAD``."""
    return max(1, min(setting, multiply_adds // WORK_PER_THREAD))


NUMPY_ON_CUDA = False
"""Tests only: run NumPy arrays through the CUDA engine (under the CUDA simulator)."""


def device(weight) -> str | None:
    """The engine for an array: "cpu" (NumPy), "cuda" (CuPy, when the CUDA engine can
    run), or None (the array-API path alone)."""
    if array_api_compat.is_numpy_array(weight):
        return "cuda" if NUMPY_ON_CUDA else "cpu"
    if array_api_compat.is_cupy_array(weight):
        return "cuda" if unavailable_reason() is None else None
    return None


def check_method(call):
    """Refuse an engine method where no engine runs on the call's arrays.

    Raises ValueError for a namespace no engine serves (use "auto" or "im2col"),
    RuntimeError for CuPy arrays where the CUDA engine cannot run (and why).
    """
    method, weight = call.method, call.weight
    if method == "fft" and not hasattr(call.xp, "fft"):
        raise ValueError(f"method='fft' needs the array API's fft extension, which the "
                         f"namespace of {library(weight)} arrays lacks; use 'auto'")
    if method == "winograd" and not array_api_compat.is_numpy_array(weight):
        raise ValueError(f"method='winograd' runs on NumPy arrays (the CPU engine) only; use "
                         f"'auto' or 'im2col' for {library(weight)} arrays")
    if method not in ENGINE_METHODS or device(weight) is not None:
        return
    if array_api_compat.is_cupy_array(weight):
        raise RuntimeError(f"method={method!r} on CuPy arrays needs the CUDA engine, "
                           f"which is not available: {unavailable_reason()}; 'auto' and "
                           f"'im2col' run on CuPy without it")
    raise ValueError(
        f"method={method!r} is the CPU engine's (NumPy) and the CUDA engine's (CuPy); "
        f"use 'auto' or 'im2col' for {library(weight)} arrays"
    )


def _auto(call, operation, in_per_group, target, setting, fft_allowed=True):
    """The method "auto" runs, and why (thresholds measured with ``python -m convmm bench``;
    the FFT against the GEMM methods by a cost model of this machine's rates, which the
    reason then quotes, whichever wins)."""
    if target == "cpu" and fft_allowed:
        take, why = _fft_beats_gemm(call, operation, setting)
        if take:
            return "fft", why
        if why:
            method, reason = _auto_without_fft(call, operation, in_per_group, target)
            return method, f"{reason}; {why}"
    return _auto_without_fft(call, operation, in_per_group, target)


def _auto_without_fft(call, operation, in_per_group, target):
    """The method "auto" runs among the GEMM methods and ``direct``, and why."""
    if target is None:
        why = "no CUDA engine" if array_api_compat.is_cupy_array(call.weight) else "not a NumPy array"
        if operation == "adjoint":
            return transposed_method("auto", call.geometry, call.mode), why
        return "im2col", why
    per_group = call.forward_channels[1] // call.groups
    if in_per_group * per_group <= DIRECT_MAX_CHANNEL_PAIRS:
        return "direct", f"{in_per_group}×{per_group} channels per group: too thin for a GEMM"
    if (target == "cpu" and operation == "forward"
            and in_per_group * per_group <= DIRECT_GRID_MAX_CHANNEL_PAIRS
            and _direct_on_grid(call, in_per_group)):
        return "direct", (f"{in_per_group}×{per_group} channels per group, stride 1: swept on "
                          f"the padded grid")
    if target == "cuda":
        if operation == "forward" and np.dtype(call.weight.dtype).kind == "f":
            return "implicit_gemm", "real floating point: one kernel, no patch tiles"
        return "tiled_blas", "patch tiles × cuBLAS"
    if _pointwise(call.geometry):
        return "tiled_blas", "1×1 kernel without padding: BLAS on the input itself"
    real = np.dtype(call.weight.dtype).kind == "f"
    if operation == "forward" and real and call.geometry.n_positions >= IMPLICIT_MIN_POSITIONS:
        return "implicit_gemm", "real floating point, enough positions per image: patches read in place"
    if operation == "weight_grad" and call.weight.dtype == np.float32:
        return "implicit_gemm", "float32: patches packed straight into the GEMM"
    return "tiled_blas", "patch tiles × BLAS"


PLAN_CACHE_SIZE = 512
"""How many plans ``plan`` remembers, by call signature, map and thread setting."""

_plans: OrderedDict = OrderedDict()
_plans_lock = threading.Lock()

TUNABLES = ("WORKSPACE_BYTES", "CUDA_WORKSPACE_BYTES", "PLAN_BYTES", "DIRECT_MAX_CHANNEL_PAIRS",
            "DIRECT_GRID_MAX_CHANNEL_PAIRS", "IMPLICIT_MIN_POSITIONS", "SMALL_IMAGE_POSITIONS",
            "PADDED_BATCH_BYTES", "WORK_PER_THREAD", "NUMPY_ON_CUDA", "FFT_MIN_TAPS",
            "FFT_MARGIN", "FFT_CALL_SECONDS", "FFT_POINTS_PER_WORKER", "FFT_WORKSPACE_BYTES",
            "WINOGRAD_TILE", "IMPLICIT_OVERHANG_BYTES")
"""The module's knobs a plan reads: their values are part of every plan's cache key, so a
plan made under one setting (a test's tiny workspace) is never handed back under another."""


def tunables() -> tuple:
    """The current values of ``TUNABLES`` and the array-API path's ``PATCH_BYTES``: the
    record of tunables a plan is a pure function of, beside the call and the threads
    (the calibration's rates, measured once per process, are not in it)."""
    module = globals()
    return (*(module[name] for name in TUNABLES), algorithms.PATCH_BYTES)


def plan(call, operation: str) -> ConvPlan:
    """The plan for one map of a validated call; "auto" is resolved here.

    ``call.method`` may be any of conv's or conv_transpose's methods; an engine
    method that does not apply is refused (``direct`` needs one input channel
    per group) or substituted (``implicit_gemm`` has no adjoint; on the GPU no
    weight gradient either).  CuPy arrays get the CUDA engine's plans.  For an
    empty batch the plan names the method and says that nothing runs (the maps
    return an empty result without calling an engine: ``dispatch``).

    A call with a signature (``validation.prepare``) is planned once per
    signature, map, thread setting and ``tunables()``: the plan is a pure function of them.
    """
    setting = get_num_threads()      # read once: the key and the plan must agree
    key = None
    if call.signature is not None:
        key = (call.signature, operation, setting, tunables())
        with _plans_lock:
            cached = _plans.get(key)
            if cached is not None:
                _plans.move_to_end(key)
                return cached
    chosen = _planned(call, operation, setting)
    if key is not None:
        with _plans_lock:
            _plans[key] = chosen
            while len(_plans) > PLAN_CACHE_SIZE:
                _plans.popitem(last=False)
    return chosen


def _planned(call, operation, setting):
    """``plan`` without its cache, for ``setting`` threads."""
    chosen = _plan(call, operation, setting)
    if call.x is not None and call.x.shape[0] == 0:
        why = f"{chosen.reason}; " if chosen.reason else ""
        chosen = dataclasses.replace(chosen, reason=why + "an empty batch: nothing runs")
    return chosen


def _plan(call, operation, setting, fft_allowed=True, flip_allowed=True):
    """``plan`` without the empty batch's note (``fft_allowed``: whether ``auto`` may weigh
    the FFT; ``flip_allowed``: whether a stride-1 adjoint may run as the flipped forward
    map)."""
    geometry, layout = call.geometry, call.layout
    _, in_per_group, _ = layout.weight_parts(call.weight.shape, geometry.nd)
    rows = in_per_group * geometry.n_taps
    n = call.x.shape[0] if call.x is not None else 1
    positions = n * geometry.n_positions
    size = itemsize(call.xp, call.weight.dtype)
    patch_bytes = rows * call.groups * positions * size
    method, reason = call.method, ""
    target = device(call.weight)
    if method == "auto":
        method, reason = _auto(call, operation, in_per_group, target, setting, fft_allowed)
        if method == "fft":
            # A NaN or inf would spread over a whole transform, and values near the
            # dtype's limit overflow its sums: for such inputs the GEMM methods' plan.
            chosen = _fft_plan(call, operation, rows, positions, patch_bytes, reason, setting)
            return dataclasses.replace(chosen, fallback=_plan(call, operation, setting,
                                                              fft_allowed=False,
                                                              flip_allowed=flip_allowed))
    if method == "fft":
        return _fft_plan(call, operation, rows, positions, patch_bytes, reason, setting)
    if method == "zero_insertion" and operation != "adjoint":
        method, reason = "im2col", "zero insertion serves the adjoint only"
    if method == "winograd":
        why = winograd_unserved(call, operation, target)
        if why:
            method, _ = _auto(call, operation, in_per_group, target, setting, False)
            reason = f"winograd: {why}"
    if (method in ENGINE_METHODS and method != "direct" and operation == "adjoint"
            and flip_allowed and _flippable(call)):
        inner = _plan(flipped_call(call), "forward", setting)
        # On the CPU only the implicit GEMM, which sums its O·T products in blocks, and the
        # direct sweep where O_g·T fits one block: BLAS would sum them in one chain, where
        # col2im's sums are O long, then T.
        flipped_sums_fit = inner.method == "direct" and _direct_on_grid(
            flipped_call(call), call.forward_channels[1] // call.groups)
        if (inner.method in ("implicit_gemm", "winograd") or flipped_sums_fit
                or (target == "cuda" and inner.method in ENGINE_METHODS)):
            # The flipped map pads y with zeros that Cᵀ never multiplies: a weight with an
            # inf or NaN runs the fallback, auto's choice among the maps that make only the
            # products Cᵀ has (Winograd spreads a non-finite value over its tiles anyway).
            pads = any(any(pair) for pair in _flipped_padding(call.geometry))
            fallback = (_plan(dataclasses.replace(call, method="auto"), operation, setting,
                              fft_allowed=False, flip_allowed=False)
                        if pads and inner.method != "winograd" else None)
            return ConvPlan(inner.method, operation, rows, positions, inner.tile,
                            inner.threads, inner.workspace_bytes, patch_bytes,
                            "stride 1, zero padding: no col2im", inner, inner.device,
                            fallback=fallback)
    if method in ENGINE_METHODS:
        needed = _index_plan_bytes(call, method, operation, target)
        if needed > PLAN_BYTES:
            method, reason = _without_index_plan(call, method, operation, target, needed)
    if method == "implicit_gemm" and operation == "forward" and target == "cpu":
        method, reason = _implicit_overhang(call, method, reason, size)
    if method not in ENGINE_METHODS:
        # The array-API path builds its patch matrix in pieces of PATCH_BYTES, but never
        # less than one row of output positions of one image (``algorithms._slabs``).
        one_row = patch_bytes // max(1, n * geometry.output_size[0])
        return ConvPlan(method, operation, rows, positions, positions, 1,
                        min(patch_bytes, max(algorithms.PATCH_BYTES, one_row)), patch_bytes, reason)
    if target == "cuda":
        return _cuda_plan(call, operation, method, reason, rows, positions, patch_bytes, size)
    if method == "implicit_gemm" and operation == "adjoint":
        method, reason = "tiled_blas", "implicit_gemm runs the forward map and the weight gradient"
    threads = _threads(positions * rows * call.forward_channels[1], setting)
    if method == "winograd":
        return _winograd_plan(call, operation, reason, rows, positions, patch_bytes, size,
                              threads)
    if method == "direct":
        units = n * call.groups                 # (image, group) pairs
        tile = max(1, -(-units // (4 * threads)))
        padded = math.prod(geometry.padded_size) + 1
        return ConvPlan(method, operation, rows, positions, tile, threads,
                        threads * padded * size, patch_bytes, reason)
    if method == "tiled_blas" and _pointwise(geometry):
        subsampled = any(s > 1 for s in geometry.stride)
        work = patch_bytes if subsampled else 0
        return ConvPlan(method, operation, rows, positions, 0, threads, work, patch_bytes,
                        reason or "1×1 kernel without padding")
    image = geometry.n_positions
    # The weight gradient's workers each sum into a weight-sized partial.
    partial_bytes = (threads * rows * call.forward_channels[1] * size
                     if operation == "weight_grad" else 0)
    if method == "implicit_gemm" and operation == "forward":
        from .cpu.gemm import MR, NR

        # Units of whole output rows, at least two per worker where the batch allows;
        # small images go several to a unit, so that a weight panel serves more rows
        # before the next is read.  Each worker holds its unit's padded channels-last
        # images; the weight is packed once.
        width = geometry.output_size[-1]
        in_channels, out_channels = call.forward_channels
        padded_image = math.prod(geometry.padded_size)
        if image < SMALL_IMAGE_POSITIONS:
            batch = max(1, min(-(-n // threads), PADDED_BATCH_BYTES // (padded_image * in_channels * size)))
            tile = batch * image
        else:
            output_rows = image // width
            tile = -(-output_rows // max(1, -(-2 * threads // max(n, 1)))) * width
            batch = 1
        padded = batch * padded_image + (MR - 1) * geometry.stride[-1]
        panels = call.groups * -(-out_channels // call.groups // NR) * NR
        work = (threads * padded * in_channels + rows * panels) * size
        return ConvPlan(method, operation, rows, positions, tile, threads, work, patch_bytes,
                        reason)
    if method == "implicit_gemm":
        from .cpu.gemm import KC, MC, NC

        tile = max(1, -(-image // max(1, -(-2 * threads // max(n, 1)))))
        work = threads * (KC * (MC + NC) + 256) * size + partial_bytes
        return ConvPlan(method, operation, rows, positions, tile, threads, work, patch_bytes,
                        reason)
    # Each worker's tile fits its share of the workspace; at least two tiles per
    # worker where the batch allows, for balance; tiles cut images evenly.  The
    # adjoint and the weight gradient keep each tile inside one image.
    balanced = -(-positions // (2 * threads)) if threads > 1 else positions
    tile = max(1, min(WORKSPACE_BYTES // (threads * rows * size), balanced))
    if operation == "weight_grad":
        tile = min(tile, image)
    if tile >= image:
        tile = tile // image * image          # whole images
    else:
        pieces = -(-image // tile)
        tile = -(-image // pieces)            # equal pieces of one image
    return ConvPlan(method, operation, rows, positions, tile, threads,
                    threads * rows * tile * size + partial_bytes, patch_bytes, reason)


FFT_MIN_TAPS = 16
"""``auto`` weighs the FFT only for kernels of at least this many taps (4×4, 16 in 1-d):
below, its normwise error (ε·log₂ n of the largest values) would show beside the GEMM
methods' elementwise one where outputs cancel, and it seldom wins."""

FFT_MARGIN = 1.25
"""``auto`` takes the FFT where the cost model puts it at least this much faster."""

FFT_CALL_SECONDS = 100e-6
"""The cost model's fixed cost per chunk or block of an FFT map: the Python around its
transforms, about ten calls of ten microseconds (measured here: a 1-d FFT map of a
tiny signal takes 0.1 ms)."""


def gemm_efficiency(pairs: int) -> float:
    """The GEMM methods' speed relative to ``calibration.rates``' BLAS rate for ``pairs``
    (input × output channels per group): 0.12·pairs^0.3, at most 1.5.  Fitted on large
    kernels here (thin groups run ``direct``, a tap at a time): 1→1 channels at 0.10-0.16
    of BLAS, 1→16 at 0.21, 8→8 at 0.39, 16→16 at 0.42, 64→64 at 1.4-1.6; a model of the
    engine against BLAS, which the calibration measures on each machine."""
    return min(1.5, 0.12 * pairs ** 0.3)


def _fft_seconds(call, operation, blocks, rate):
    """The FFT lowering's modelled time for one map at this machine's rates: the
    transforms (points·log₂ points; the kernel's pruned to about half), the memory
    they and the copies around them touch, and the per-frequency channel products."""
    geometry = call.geometry
    plan = fft_geometry(geometry)
    n = call.x.shape[0] if call.x is not None else 1
    in_channels, out_channels = call.forward_channels
    inner, groups = in_channels * plan.n_phases, call.groups
    real = call.xp.isdtype(call.weight.dtype, "real floating")
    size = itemsize(call.xp, call.weight.dtype)
    complex_size = 2 * size if real else size
    points = math.prod(blocks.lengths)
    transform = points * math.log2(max(points, 2)) * (1.0 if real else 2.0)
    first = geometry.output_size[0] if operation == "forward" else plan.phase_length[0]
    pieces = -(-first // blocks.rows) if blocks.rows else 1
    spectrum = math.prod(transforms_shape(blocks.lengths, real))
    signals = n * pieces * (inner + out_channels)         # transformed once each way
    kernels = out_channels * inner // groups
    touched = ((4 * signals + 3 * kernels) * spectrum * complex_size
               + 2 * n * inner * math.prod(plan.phase_length) * size)
    depth, rows, columns = {"forward": (inner // groups, blocks.images, out_channels // groups),
                            "adjoint": (out_channels // groups, blocks.images, inner // groups),
                            "weight_grad": (blocks.images, out_channels // groups,
                                            inner // groups)}[operation]
    products = n * pieces * inner * out_channels // groups * spectrum
    mix = rate["mix"] if uses_matmul(rows, depth, columns) else rate["mix_small"]
    calls = -(-n // blocks.images) * pieces + 1
    return ((signals + kernels / 2) * transform / rate["fft"] + touched / rate["bandwidth"]
            + products / mix + calls * FFT_CALL_SECONDS)


def _fft_beats_gemm(call, operation, setting):
    """(whether ``auto`` should take the FFT for this map, the reason): a NumPy call with
    a kernel of at least ``FFT_MIN_TAPS`` taps whose blocks fit, modelled at least
    ``FFT_MARGIN`` times faster than the GEMM methods."""
    geometry = call.geometry
    if geometry.n_taps < FFT_MIN_TAPS or not array_api_compat.is_numpy_array(call.weight):
        return False, ""
    from .cpu import calibration

    in_channels, out_channels = call.forward_channels
    per_group = in_channels // call.groups * (out_channels // call.groups)
    n = call.x.shape[0] if call.x is not None else 1
    complex_input = not call.xp.isdtype(call.weight.dtype, "real floating")
    blocks, budget = _fft_cut(call, operation)
    if blocks.workspace_bytes > budget:
        return False, ""
    measured = calibration.record(call.weight.dtype, setting)
    rate = measured["rates"]
    macs = n * geometry.n_positions * out_channels * in_channels // call.groups * geometry.n_taps
    gemm = macs * (1 if not complex_input else 4) / (rate["gemm"] * gemm_efficiency(per_group))
    fft = _fft_seconds(call, operation, blocks, rate)
    model = (f"modelled {fft * 1e3:.2g} ms by FFT against {gemm * 1e3:.2g} ms by GEMM at "
             f"this machine's calibrated {calibration.describe(measured)}")
    if fft * FFT_MARGIN > gemm:
        return False, f"not the FFT: {model}"
    return True, f"{geometry.n_taps}-tap kernel: {model}"


FFT_POINTS_PER_WORKER = 1 << 20
"""``scipy.fft`` gets one worker per this many points in a call's transforms: below, its
threads cost more than they save (measured here, after the cores idled: a 542×576
transform 0.66 ms on one worker and 0.64 on two; 256×13122 points 7.9 and 5.2 ms)."""

FFT_WORKSPACE_BYTES = 32 << 20
"""The FFT lowering's workspace is at most max(this, min(patch matrix / 8, 4 × the map's
input and output)): chunks of the batch, then overlap-save blocks, are cut to fit."""


def fft_budget(call, operation, patch_bytes, size):
    """The bytes one map's FFT chunks or blocks may take (``FFT_WORKSPACE_BYTES``)."""
    geometry = call.geometry
    n = call.x.shape[0] if call.x is not None else 1
    in_channels, out_channels = call.forward_channels
    data = n * (in_channels * math.prod(geometry.input_size)
                + out_channels * math.prod(geometry.output_size)) * size
    return max(FFT_WORKSPACE_BYTES, min(patch_bytes // 8, 4 * data))


def _fft_cut(call, operation):
    """(the chunks or blocks of one map's FFT, the budget they must fit): ``fft_blocks``
    cut to ``FFT_WORKSPACE_BYTES`` where one block can be, else to ``fft_budget``."""
    n = call.x.shape[0] if call.x is not None else 1
    in_channels, out_channels = call.forward_channels
    size = itemsize(call.xp, call.weight.dtype)
    patch_bytes = in_channels * call.geometry.n_taps * n * call.geometry.n_positions * size
    complex_input = not call.xp.isdtype(call.weight.dtype, "real floating")
    budget = fft_budget(call, operation, patch_bytes, size)
    return fft_blocks(call.geometry, operation, n, in_channels, out_channels, call.groups,
                      size, complex_input, budget, preferred=FFT_WORKSPACE_BYTES), budget


def _fft_plan(call, operation, rows, positions, patch_bytes, reason, setting):
    """The FFT lowering's plan: its chunks or blocks within ``fft_budget``; a ValueError
    where even one block's transforms (the kernel's spectrum) would not fit."""
    in_channels, out_channels = call.forward_channels
    blocks, budget = _fft_cut(call, operation)
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
        plan = fft_geometry(call.geometry)
        signals = blocks.images * max(in_channels * plan.n_phases, out_channels)
        points = signals * math.prod(blocks.lengths)
        threads = max(1, min(setting, points // FFT_POINTS_PER_WORKER))
    return ConvPlan("fft", operation, rows, positions, positions, threads,
                    blocks.workspace_bytes, patch_bytes, reason, fft=blocks)


WINOGRAD_TILE = 2
"""The largest Winograd output tile per axis ``plan`` asks for (0: ``OUTPUT_TILE``'s).

2 gives F(2, r): F(2×2, 3×3) makes 2.25× fewer multiplications than the GEMM
methods, at 1.2-2.3× PyTorch's float32 error (RMS against a float64 oracle,
64-256 channels); 0 gives F(4×4, 3×3): 4× fewer, at 8-13× PyTorch's error
(``tools/winograd_accuracy.py`` measures both)."""


def _winograd_plan(call, operation, reason, rows, positions, patch_bytes, size, threads):
    """Blocks of tiles whose transforms (V and M, α³ × block × channels) fit a worker's
    share of the workspace; at least two blocks per worker where the batch allows; small
    images several to a block, padded together within ``PADDED_BATCH_BYTES``."""
    geometry = call.geometry
    cut = winograd_tiling(geometry, WINOGRAD_TILE)
    in_channels, out_channels = call.forward_channels
    n = positions // max(1, geometry.n_positions)
    per_image, total = cut.tiles_per_image, n * cut.tiles_per_image
    transforms = cut.points * (in_channels + out_channels) * size    # bytes per tile
    block = max(1, WORKSPACE_BYTES // threads // transforms)
    if threads > 1:
        block = min(block, -(-total // (2 * threads)))
    canvas_bytes = math.prod(cut.canvas) * in_channels * size
    if block >= per_image:
        batch = max(1, min(block // per_image, PADDED_BATCH_BYTES // canvas_bytes, n))
        block = batch * per_image
    else:
        batch = 1
        block = -(-per_image // -(-per_image // block))     # equal pieces of one image
    work = threads * (batch * canvas_bytes + (block + 2) * transforms) \
        + cut.points * in_channels * out_channels * size
    return ConvPlan("winograd", operation, rows, positions, block, threads, work, patch_bytes,
                    reason, winograd_tile=WINOGRAD_TILE, winograd_name=cut.name(geometry.nd))


def winograd_unserved(call, operation, target):
    """Why ``method="winograd"`` cannot run this map of the call, or "" where it can.

    It runs stride-1 forward maps with kernels of at most ``MAX_TAPS`` taps per axis on
    NumPy arrays, and adjoints that are such a forward map with the flipped kernel."""
    if target != "cpu":
        return "it runs on NumPy arrays only"
    if operation == "weight_grad":
        return "it runs forward maps and stride-1 adjoints, not weight gradients"
    if operation == "adjoint":
        if not _flippable(call):
            return ("this adjoint is no stride-1 convolution with the flipped kernel (a "
                    "stride above 1, a padding mode other than zeros, padding wider than "
                    "d·(K − 1), or a 1×1 kernel)")
        return winograd_applies(call.geometry)
    return winograd_applies(call.geometry)


def main_plan(call, operation):
    """``plan`` for the map a ``conv`` (forward) or ``conv_transpose`` (adjoint) call is
    made of: ``method="winograd"`` asked for where it cannot run raises a ValueError
    that says why (backward passes, made of several maps, run another method for a map
    it cannot serve, and ``explain`` says so)."""
    chosen = plan(call, operation)
    if call.method == "winograd" and (chosen.flipped or chosen).method != "winograd":
        what = "convolution" if operation == "forward" else "transposed convolution"
        raise ValueError(f"method='winograd' cannot run this {what}: "
                         f"{winograd_unserved(call, operation, device(call.weight))}; "
                         f"method='auto' chooses one that can")
    return chosen


IMPLICIT_OVERHANG_BYTES = 4 << 20
"""The most the implicit GEMM's padded copy may hold past an image's end, per worker."""


def _implicit_overhang(call, method, reason, size):
    """(method, reason) where the implicit GEMM's padded copy would need more than
    ``IMPLICIT_OVERHANG_BYTES`` past an image's end: its last MR-row tile reads (MR − 1)·s
    samples beyond the last row, which a stride far wider than the image makes
    huge (a ValueError where ``implicit_gemm`` was asked for by name)."""
    from .cpu.gemm import MR

    overhang = (MR - 1) * call.geometry.stride[-1] * call.forward_channels[0] * size
    if overhang <= IMPLICIT_OVERHANG_BYTES:
        return method, reason
    text = (f"implicit_gemm would pad each image with {overhang / 2 ** 20:.0f} MiB "
            f"((MR − 1)·stride samples of every channel) for a stride of "
            f"{call.geometry.stride[-1]}")
    if call.method == "implicit_gemm":
        raise ValueError(f"method='implicit_gemm': {text}, over convmm's limit of "
                         f"{IMPLICIT_OVERHANG_BYTES >> 20} MiB; method='auto' takes one that "
                         f"does not ('tiled_blas' here)")
    return "tiled_blas", text


def _index_plan_bytes(call, method, operation, target):
    """Bytes of the index plans ``method`` builds for one map of the call.

    The im2col plan of ``index_plans.gather_index`` is T × L (taps × output
    positions); col2im's inverse 2 × R × P, R the most (tap, position) pairs
    reading one sample (``index_plans.pairs_per_sample`` bounds it).  The CPU
    engine's ``direct`` kernels and its implicit GEMM read the padded grid through
    ``index_plans.padded_source`` (a map of the padded grid and its adjoint) and,
    on the padded grid, ``wide_plan``'s L window starts: tables as long as the image,
    which a long signal or a large volume makes large.
    """
    geometry = call.geometry
    taps, positions = geometry.n_taps, geometry.n_positions
    pixels = math.prod(geometry.input_size)
    if method == "winograd" or (method == "tiled_blas" and _pointwise(geometry)):
        return 0
    grid = (padded_source_bytes(geometry, call.mode) + 8 * positions) if target == "cpu" else 0
    if method == "direct":
        return grid
    if method == "implicit_gemm" and operation == "forward" and target == "cpu":
        return grid
    needed = taps * positions * 8
    if operation == "adjoint":
        needed += 2 * pairs_per_sample(geometry, call.mode) * pixels * 8
    if method == "implicit_gemm" and operation == "weight_grad":
        needed += grid
    return needed


def _without_index_plan(call, method, operation, target, needed):
    """(method, reason) that needs no large index plan, where ``auto`` chose ``method``;
    a ValueError naming the size and ``auto`` where ``method`` was asked for.

    The forward map on the CPU: ``implicit_gemm`` (patches read in place); the adjoint:
    zero insertion as a sub-pixel convolution (no patch matrix at all); the weight
    gradient: the array-API path in pieces."""
    if (operation == "forward" and target == "cpu" and np.dtype(call.weight.dtype).kind == "f"
            and _index_plan_bytes(call, "implicit_gemm", operation, target) <= PLAN_BYTES):
        alternative = "implicit_gemm"
    elif operation == "adjoint":
        alternative = "zero_insertion"
    else:
        alternative = "im2col"
    size = f"{needed / 2 ** 20:.0f} MiB"
    if call.method == method:      # asked for by name (not "auto", not a substitute)
        raise ValueError(
            f"method={method!r} would build a {size} index plan for one of this call's "
            f"maps ({operation}, {call.geometry.n_taps} kernel taps), over convmm's limit "
            f"of {PLAN_BYTES >> 20} MiB; method='auto' takes one that needs none "
            f"({alternative!r} here)")
    return alternative, f"{method} would need a {size} index plan: {alternative} needs none"


def _cuda_plan(call, operation, method, reason, rows, positions, patch_bytes, size):
    """The CUDA engine's plan: implicit GEMM for the forward map only; patch tiles of
    whole images within ``CUDA_WORKSPACE_BYTES`` for cuBLAS."""
    if method == "implicit_gemm" and operation != "forward":
        method, reason = "tiled_blas", "on the GPU implicit_gemm runs the forward map only"
    image = call.geometry.n_positions
    if method == "tiled_blas":
        images = max(1, min(CUDA_WORKSPACE_BYTES // max(1, rows * image * size), positions // image))
        tile = images * image
        return ConvPlan(method, operation, rows, positions, tile, 1, rows * tile * size,
                        patch_bytes, reason, device="cuda")
    return ConvPlan(method, operation, rows, positions, positions, 1, 0, patch_bytes, reason,
                    device="cuda")


def _flipped_padding(geometry):
    """The padding of the stride-1 convolution that computes Cᵀ: d·(K − 1) − p before, and
    after whatever brings its output to the forward input size (output padding included)."""
    pairs = []
    for (b, _), k, d, i, o in zip(geometry.padding, geometry.kernel_size, geometry.dilation,
                                  geometry.input_size, geometry.output_size):
        before = d * (k - 1) - b
        pairs.append((before, i + d * (k - 1) - o - before))
    return tuple(pairs)


def _flippable(call):
    """Stride 1, zero padding no wider than the kernel: Cᵀ is a convolution (no col2im)."""
    geometry = call.geometry
    return (call.mode == "zeros" and not _pointwise(geometry)
            and all(s == 1 for s in geometry.stride)
            and all(b >= 0 and a >= 0 for b, a in _flipped_padding(geometry)))


def flipped_call(call, weight=None):
    """The forward convolution that computes Cᵀ·y for a stride-1 call (zero insertion with
    nothing to insert): the kernel flipped and its channel axes swapped, padding d·(K − 1) − p."""
    geometry, layout = call.geometry, call.layout
    in_channels, _ = call.forward_channels
    flipped = ConvGeometry(geometry.output_size, geometry.kernel_size, geometry.stride,
                           geometry.dilation, _flipped_padding(geometry), geometry.input_size)
    weight = call.weight if weight is None else weight
    signature = None if call.signature is None else ("flipped", call.signature)
    return dataclasses.replace(
        call, geometry=flipped, out_channels=in_channels, signature=signature,
        weight=layout.flipped_transpose_weight(call.xp, weight, call.groups, geometry.nd))
