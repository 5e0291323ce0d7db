"""The policy: which method runs one map of a convolution call, with what tiles and workspace.

Every public function is made of three maps:

    forward       Y = C·X           conv; conv_transpose's input gradient
    adjoint       X = Cᵀ·Y          conv_transpose; conv's input gradient
    weight_grad   ΔW = Σ_n A·Pᵀ     both weight gradients (P: patches of B)

``plan(call, operation)`` resolves ``method="auto"`` for one of them on the
call's device and asks the engine to size its tiles and workspace: a ``ConvPlan``
(``plan.py``), whose ``describe()`` is what ``convmm.explain`` prints.  The plan is a
pure function of the validated call's shapes and keywords, the map, the thread setting
and the record of tunables (``tunables.py``); nothing runs here.  What each method can
run is the capability table's (``capabilities.py``); the engines' tiles are sized beside
their kernels (``cpu/tiles.py``, ``cuda/tiles.py``), the FFT's cost model beside its
rates (``cpu/fft_cost.py``; its blocks: ``fft_blocks.py``), Winograd's blocks beside its
kernels (``cpu/winograd_plan.py``).

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

import array_api_compat
import numpy as np

from .._core import algorithms
from .._core.algorithms import transposed_method
from .._core.bounded_cache import BoundedCache
from .._core.index_tables import pairs_per_sample, padded_source_bytes
from .._core.params import ENGINE_METHODS
from .._core.validation import itemsize, library
from .._core.winograd import applies as winograd_applies
from . import tunables
from .capabilities import capability, namespace_of, refusal
from .cpu.fft_cost import fft_beats_gemm
from .cpu.threads import get_num_threads
from .cpu.tiles import cpu_plan, direct_on_grid, worker_threads
from .cpu.winograd_plan import winograd_plan
from .cuda.engine import unavailable_reason
from .cuda.tiles import cuda_plan
from .fft_blocks import fft_plan
from .flipped import flippable, flipped_call, flipped_padding
from .plan import OPERATIONS, ConvPlan

__all__ = ["OPERATIONS", "ConvPlan", "check_method", "device", "main_plan", "plan",
           "winograd_unserved"]


def device(weight) -> str | None:
    """The engine for an array: "cpu" (NumPy), "cuda" (CuPy, when the CUDA engine can
    run; NumPy too under ``Tunables.numpy_on_cuda``), or None (the array-API path alone)."""
    if array_api_compat.is_numpy_array(weight):
        return "cuda" if tunables.current().numpy_on_cuda else "cpu"
    if array_api_compat.is_cupy_array(weight):
        return "cuda" if unavailable_reason() is None else None
    return None


def check_method(call):
    """Refuse a method that runs nothing on the call's arrays (the capability table), and
    an engine method on CuPy arrays where the CUDA engine cannot run.

    Raises ValueError for a method the table refuses on this kind of array (an engine
    method on another namespace, ``fft`` without the fft extension, ``winograd`` off
    NumPy), RuntimeError for CuPy arrays where the CUDA engine cannot run (and why).
    """
    method, weight = call.method, call.weight
    why = refusal(method, namespace_of(call.xp, weight))
    if why:
        raise ValueError(f"{why} (the arrays here are {library(weight)}'s)")
    if method in ENGINE_METHODS and array_api_compat.is_cupy_array(weight) \
            and device(weight) is None:
        raise RuntimeError(f"method={method!r} on CuPy arrays needs the CUDA engine, "
                           f"which is not available: {unavailable_reason()}; 'auto' and "
                           f"'im2col' run on CuPy without it")


def _auto(call, operation, in_per_group, target, setting, tuned, fft_allowed=True):
    """The method "auto" runs, and why (thresholds measured with ``python -m convmm bench``;
    the FFT against the GEMM methods by a cost model of this machine's rates, which the
    reason then quotes, whichever wins)."""
    if target == "cpu" and fft_allowed:
        take, why = fft_beats_gemm(call, operation, setting, tuned)
        if take:
            return "fft", why
        if why:
            method, reason = _auto_without_fft(call, operation, in_per_group, target, tuned)
            return method, f"{reason}; {why}"
    return _auto_without_fft(call, operation, in_per_group, target, tuned)


def _auto_without_fft(call, operation, in_per_group, target, tuned):
    """The method "auto" runs among the GEMM methods and ``direct``, and why."""
    if target is None:
        why = "no CUDA engine" if array_api_compat.is_cupy_array(call.weight) else "not a NumPy array"
        if operation == "adjoint":
            return transposed_method("auto", call.geometry, call.padding_mode), why
        return "im2col", why
    per_group = call.forward_channels[1] // call.groups
    if in_per_group * per_group <= tuned.direct_max_channel_pairs:
        return "direct", f"{in_per_group}×{per_group} channels per group: too thin for a GEMM"
    if (target == "cpu" and operation == "forward"
            and in_per_group * per_group <= tuned.direct_grid_max_channel_pairs
            and direct_on_grid(call, in_per_group)):
        return "direct", (f"{in_per_group}×{per_group} channels per group, stride 1: swept on "
                          f"the padded grid")
    if target == "cuda":
        if operation == "forward" and np.dtype(call.weight.dtype).kind == "f":
            return "implicit_gemm", "real floating point: one kernel, no patch tiles"
        return "tiled_blas", "patch tiles × cuBLAS"
    if call.geometry.pointwise:
        return "tiled_blas", "1×1 kernel without padding: BLAS on the input itself"
    real = np.dtype(call.weight.dtype).kind == "f"
    if operation == "forward" and real and call.geometry.n_positions >= tuned.implicit_min_positions:
        return "implicit_gemm", "real floating point, enough positions per image: patches read in place"
    if operation == "weight_grad" and call.weight.dtype == np.float32:
        return "implicit_gemm", "float32: patches packed straight into the GEMM"
    return "tiled_blas", "patch tiles × BLAS"


PLAN_CACHE_SIZE = 512
"""How many plans ``plan`` remembers, by call signature, map, thread setting and tunables."""

_plans = BoundedCache(max_entries=PLAN_CACHE_SIZE)


def plan(call, operation: str) -> ConvPlan:
    """The plan for one map of a validated call; "auto" is resolved here.

    ``call.method`` may be any of conv's or conv_transpose's methods; an engine
    method that does not apply is refused (``direct`` needs one input channel
    per group) or substituted (the capability table: ``implicit_gemm`` has no adjoint;
    on the GPU no weight gradient either).  CuPy arrays get the CUDA engine's plans.
    For an empty batch the plan names the method and says that nothing runs (the maps
    return an empty result without calling an engine: ``dispatch``).

    A call with a signature (``validation.prepare``) is planned once per signature, map,
    thread setting and record of tunables: the plan is a pure function of them.
    """
    setting = get_num_threads()      # read once: the key and the plan must agree
    tuned = tunables.current()
    key = None
    if call.signature is not None:
        key = (call.signature, operation, setting, tuned, algorithms.PATCH_BYTES)
        cached = _plans.get(key)
        if cached is not None:
            return cached
    chosen = _planned(call, operation, setting, tuned)
    if key is not None:
        _plans.max_entries = PLAN_CACHE_SIZE
        _plans.put(key, chosen)
    return chosen


def _planned(call, operation, setting, tuned):
    """``plan`` without its cache, for ``setting`` threads."""
    chosen = _plan(call, operation, setting, tuned)
    if call.x is not None and call.x.shape[0] == 0:
        why = f"{chosen.reason}; " if chosen.reason else ""
        chosen = dataclasses.replace(chosen, reason=why + "an empty batch: nothing runs")
    return chosen


def _plan(call, operation, setting, tuned, fft_allowed=True, flip_allowed=True):
    """``plan`` without the empty batch's note (``fft_allowed``: whether ``auto`` may weigh
    the FFT; ``flip_allowed``: whether a stride-1 adjoint may run as the flipped forward
    map)."""
    geometry, layout = call.geometry, call.layout
    _, in_per_group, _ = layout.weight_parts(call.weight.shape, geometry.nd)
    rows = in_per_group * geometry.n_taps
    n = call.n_images
    positions = n * geometry.n_positions
    size = itemsize(call.xp, call.weight.dtype)
    patch_bytes = rows * call.groups * positions * size
    method, reason = call.method, ""
    target = device(call.weight)
    if method == "auto":
        method, reason = _auto(call, operation, in_per_group, target, setting, tuned,
                               fft_allowed)
        if method == "fft":
            # A NaN or inf would spread over a whole transform, and values near the
            # dtype's limit overflow its sums: for such inputs the GEMM methods' plan.
            chosen = fft_plan(call, operation, rows, positions, patch_bytes, reason, setting,
                              tuned)
            return dataclasses.replace(chosen, fallback=_plan(call, operation, setting, tuned,
                                                              fft_allowed=False,
                                                              flip_allowed=flip_allowed))
    if method == "fft":
        return fft_plan(call, operation, rows, positions, patch_bytes, reason, setting, tuned)
    if method == "zero_insertion" and operation != "adjoint":
        cell = capability(method, namespace_of(call.xp, call.weight), operation)
        method, reason = cell.instead, cell.why
    if method == "winograd":
        why = winograd_unserved(call, operation, target)
        if why:
            method, _ = _auto(call, operation, in_per_group, target, setting, tuned, False)
            reason = f"winograd: {why}"
    if (method in ENGINE_METHODS and method != "direct" and operation == "adjoint"
            and flip_allowed and flippable(call)):
        inner = _plan(flipped_call(call), "forward", setting, tuned)
        # On the CPU only the implicit GEMM, which sums its O·T products in blocks, and the
        # direct sweep where O_g·T fits one block: BLAS would sum them in one chain, where
        # col2im's sums are O long, then T.
        flipped_sums_fit = inner.method == "direct" and direct_on_grid(
            flipped_call(call), call.forward_channels[1] // call.groups)
        if (inner.method in ("implicit_gemm", "winograd") or flipped_sums_fit
                or (target == "cuda" and inner.method in ENGINE_METHODS)):
            # The flipped map pads y with zeros that Cᵀ never multiplies: a weight with an
            # inf or NaN runs the fallback, auto's choice among the maps that make only the
            # products Cᵀ has (Winograd spreads a non-finite value over its tiles anyway).
            pads = any(any(pair) for pair in flipped_padding(call.geometry))
            fallback = (_plan(dataclasses.replace(call, method="auto"), operation, setting, tuned,
                              fft_allowed=False, flip_allowed=False)
                        if pads and inner.method != "winograd" else None)
            return ConvPlan(inner.method, operation, rows, positions, inner.tile,
                            inner.threads, inner.workspace_bytes, patch_bytes,
                            "stride 1, zero padding: no col2im", inner, inner.device,
                            fallback=fallback)
    if method in ENGINE_METHODS:
        needed = _index_table_bytes(call, method, operation, target)
        if needed > tuned.index_table_bytes:
            method, reason = _without_index_table(call, method, operation, target, needed,
                                                 tuned)
    if method == "implicit_gemm" and operation == "forward" and target == "cpu":
        method, reason = _implicit_overhang(call, method, reason, size, tuned)
    if method not in ENGINE_METHODS:
        # The array-API path builds its patch matrix in pieces of PATCH_BYTES, but never
        # less than one row of output positions of one image (``algorithms._slabs``).
        one_row = patch_bytes // max(1, n * geometry.output_size[0])
        return ConvPlan(method, operation, rows, positions, positions, 1,
                        min(patch_bytes, max(algorithms.PATCH_BYTES, one_row)), patch_bytes, reason)
    namespace = "cupy" if target == "cuda" else "numpy"
    cell = capability(method, namespace, operation)
    if not cell.runs and cell.instead:         # implicit_gemm's adjoint (on the GPU: and
        method, reason = cell.instead, cell.why  # its weight gradient) run by tiled_blas
    if target == "cuda":
        return cuda_plan(call, operation, method, reason, rows, positions, patch_bytes, size,
                         tuned)
    threads = worker_threads(positions * rows * call.forward_channels[1], setting, tuned)
    if method == "winograd":
        return winograd_plan(call, operation, reason, rows, positions, patch_bytes, size,
                             threads, tuned)
    return cpu_plan(call, operation, method, reason, rows, positions, patch_bytes, size,
                    threads, tuned)


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


def winograd_unserved(call, operation, target):
    """Why ``method="winograd"`` cannot run this map of the call, or "" where it can.

    It runs stride-1 forward maps with kernels of at most ``MAX_TAPS`` taps per axis on
    NumPy arrays, and adjoints that are such a forward map with the flipped kernel."""
    cell = capability("winograd", "numpy" if target == "cpu" else "cupy", operation)
    if not cell.runs:
        return cell.why
    if operation == "adjoint" and not flippable(call):
        return ("this adjoint is no stride-1 convolution with the flipped kernel (a "
                "stride above 1, a padding mode other than zeros, padding wider than "
                "d·(K − 1), or a 1×1 kernel)")
    return winograd_applies(call.geometry)


def _implicit_overhang(call, method, reason, size, tuned):
    """(method, reason) where the implicit GEMM's padded copy would need more than
    ``tuned.implicit_overhang_bytes`` past an image's end: its last MR-row tile reads (MR − 1)·s
    samples beyond the last row, which a stride far wider than the image makes
    huge (a ValueError where ``implicit_gemm`` was asked for by name)."""
    from .cpu.gemm import MR

    overhang = (MR - 1) * call.geometry.stride[-1] * call.forward_channels[0] * size
    if overhang <= tuned.implicit_overhang_bytes:
        return method, reason
    text = (f"implicit_gemm would pad each image with {overhang / 2 ** 20:.0f} MiB "
            f"((MR − 1)·stride samples of every channel) for a stride of "
            f"{call.geometry.stride[-1]}")
    if call.method == "implicit_gemm":
        raise ValueError(f"method='implicit_gemm': {text}, over convmm's limit of "
                         f"{tuned.implicit_overhang_bytes >> 20} MiB; method='auto' takes one that "
                         f"does not ('tiled_blas' here)")
    return "tiled_blas", text


def _index_table_bytes(call, method, operation, target):
    """Bytes of the index tables ``method`` builds for one map of the call.

    The im2col table of ``index_tables.gather_index`` is T × L (taps × output
    positions); col2im's inverse 2 × R × P, R the most (tap, position) pairs
    reading one sample (``index_tables.pairs_per_sample`` bounds it).  The CPU
    engine's ``direct`` kernels and its implicit GEMM read the padded grid through
    ``index_tables.padded_source`` (a map of the padded grid and its adjoint) and,
    on the padded grid, ``wide_table``'s L window starts: tables as long as the image,
    which a long signal or a large volume makes large.
    """
    geometry = call.geometry
    taps, positions = geometry.n_taps, geometry.n_positions
    pixels = math.prod(geometry.input_size)
    if method == "winograd" or (method == "tiled_blas" and geometry.pointwise):
        return 0
    grid = ((padded_source_bytes(geometry, call.padding_mode) + 8 * positions)
            if target == "cpu" else 0)
    if method == "direct":
        return grid
    if method == "implicit_gemm" and operation == "forward" and target == "cpu":
        return grid
    needed = taps * positions * 8
    if operation == "adjoint":
        needed += 2 * pairs_per_sample(geometry, call.padding_mode) * pixels * 8
    if method == "implicit_gemm" and operation == "weight_grad":
        needed += grid
    return needed


def _without_index_table(call, method, operation, target, needed, tuned):
    """(method, reason) that needs no large index table, where ``auto`` chose ``method``;
    a ValueError naming the size and ``auto`` where ``method`` was asked for.

    The forward map on the CPU: ``implicit_gemm`` (patches read in place); the adjoint:
    zero insertion as a sub-pixel convolution (no patch matrix at all); the weight
    gradient: the array-API path in pieces."""
    if (operation == "forward" and target == "cpu" and np.dtype(call.weight.dtype).kind == "f"
            and _index_table_bytes(call, "implicit_gemm", operation, target)
            <= tuned.index_table_bytes):
        alternative = "implicit_gemm"
    elif operation == "adjoint":
        alternative = "zero_insertion"
    else:
        alternative = "im2col"
    size = f"{needed / 2 ** 20:.0f} MiB"
    if call.method == method:      # asked for by name (not "auto", not a substitute)
        raise ValueError(
            f"method={method!r} would build a {size} index table for one of this call's "
            f"maps ({operation}, {call.geometry.n_taps} kernel taps), over convmm's limit "
            f"of {tuned.index_table_bytes >> 20} MiB; method='auto' takes one that needs none "
            f"({alternative!r} here)")
    return alternative, f"{method} would need a {size} index table: {alternative} needs none"


