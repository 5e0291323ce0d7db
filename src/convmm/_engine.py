"""The CPU engine for NumPy arrays: which path runs a call, with what tiles, and running it.

The array-API path (``_conv``) builds the whole patch matrix: simple, portable,
the oracle.  On NumPy input the engine runs the three maps every public
function is made of without ever building it:

    forward       Y = C·X           conv; conv_transpose's input gradient
    adjoint       X = Cᵀ·Y          conv_transpose; conv's input gradient
    weight_grad   ΔW = Σ_n A·Pᵀ     both weight gradients (P: patches of B)

by one of three methods (``explain`` says which, and why):

``tiled_blas``
    The (image, position) index is cut into tiles whose patch block fits a
    fixed workspace; worker threads fill a tile with a serial, GIL-free Numba
    kernel (``_numba_cpu``) and multiply it with a single-threaded BLAS GEMM,
    straight into the output.  The adjoint multiplies by Wᵀ and folds each tile
    back with ``col2im`` as a gather; the weight gradient accumulates one
    ΔW per worker, summed in a fixed order.  A 1×1 kernel without padding needs
    no patches at all: its (subsampled) input is the patch matrix, and one
    multi-threaded BLAS GEMM does the work.
``implicit_gemm``
    The forward map with its patches read in place: each image is padded once
    into a channels-last copy, from which the register-blocked micro-kernel
    reads MR output positions × the channels of one tap, tap after tap, against
    the weight packed once into NR-wide panels (``_numba_gemm``).  The weight
    gradient is a packed GEMM whose patch operand is packed straight from the
    image; the adjoint runs ``tiled_blas`` (or, at stride 1, is itself a
    forward map).
``direct``
    Convolutions with few channels per group (depthwise above all): no GEMM,
    each input plane padded once and swept tap by tap along its last spatial
    dim (``_numba_cpu.direct_*``).

Parallelism comes from our worker threads alone, with BLAS held to one thread
while they run (threadpoolctl), so Numba's, BLAS's and our threads never
compete for the cores (a pool of BLAS threads spinning between tiles, next to
a parallel Numba kernel, made an earlier version three times slower).
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ._plan import (direct_rows, gather_index, gather_index_adjoint, padded_source,
                    padded_taps, tile_pixel_ranges)

WORKSPACE_BYTES = 16 << 20
"""The patch tiles' size budget, all workers together (the tiles are the engine's extra memory)."""

ENGINE_METHODS = ("tiled_blas", "implicit_gemm", "direct")
"""Methods that run on NumPy arrays only (the array-API path serves every namespace)."""

OPERATIONS = ("forward", "adjoint", "weight_grad")


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
    device: str = "cpu"     # "cpu": the Numba engine; "cuda": the CUDA engine (_cuda_engine)

    def describe(self) -> str:
        mib = 2 ** 20
        why = f" ({self.reason})" if self.reason else ""
        if self.flipped is not None:
            return (f"{self.operation}: a stride-1 convolution with the flipped kernel{why}; "
                    + self.flipped.describe())
        full = f"the full patch matrix would take {self.patch_matrix_bytes / mib:.1f} MiB"
        if self.method in ("im2col", "zero_insertion"):
            return (f"{self.operation}: {self.method}, the array-API path{why}; whole patch "
                    f"matrix {self.rows}×{self.positions} per group, "
                    f"{self.patch_matrix_bytes / mib:.1f} MiB")
        if self.tile == 0:
            return (f"{self.operation}: {self.method}{why}: one multi-threaded BLAS GEMM on the "
                    f"input itself; workspace {self.workspace_bytes / mib:.2f} MiB ({full})")
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
        unit = "(image, group) pairs" if self.method == "direct" else "(image, position) pairs"
        return (f"{self.operation}: {self.method}{why}: tiles of {self.tile} {unit} "
                f"× {self.rows} patch rows on {self.threads} thread(s); workspace "
                f"{self.workspace_bytes / mib:.2f} MiB ({full})")


def itemsize(xp, dtype) -> int:
    """Bytes per element of a floating or complex dtype of any namespace."""
    parts = 2 if xp.isdtype(dtype, "complex floating") else 1
    return xp.finfo(dtype).bits // 8 * parts


# --------------------------------------------------------------------------- planning
def _pointwise(geometry) -> bool:
    """A 1×1 kernel without padding: the (strided) input is the patch matrix."""
    return all(k == 1 for k in geometry.kernel_size) and not any(
        b or a for b, a in geometry.padding)


DIRECT_MAX_CHANNEL_PAIRS = 8
"""``auto`` runs ``direct`` where a group pairs at most this many (input, output) channels."""

IMPLICIT_MIN_POSITIONS = 128
"""``auto`` runs ``implicit_gemm``'s forward map where an image has at least this many
output positions (measured: ResNet's 7×7 layer runs faster as BLAS on patch tiles)."""

SMALL_IMAGE_POSITIONS = 256
"""``implicit_gemm``'s forward map puts several whole images in a unit below this many
output positions per image, so that each weight panel serves more rows."""

PADDED_BATCH_BYTES = 4 * 2 ** 20
"""At most this much of padded images per worker in such a unit (at least one image)."""


NUMPY_ON_CUDA = False
"""Tests only: run NumPy arrays through the CUDA engine (under the CUDA simulator)."""


def device(weight) -> str | None:
    """The engine for an array: "cpu" (NumPy), "cuda" (CuPy, when the CUDA engine can
    run), or None (the array-API path alone)."""
    import array_api_compat

    if array_api_compat.is_numpy_array(weight):
        return "cuda" if NUMPY_ON_CUDA else "cpu"
    if array_api_compat.is_cupy_array(weight):
        from ._cuda_engine import unavailable_reason

        return "cuda" if unavailable_reason() is None else None
    return None


def _auto(call, operation, in_per_group, target):
    """The method "auto" runs, and why (thresholds measured with ``python -m convmm bench``)."""
    from ._conv import transposed_method

    if target is None:
        why = "not a NumPy array" if not _is_cupy(call.weight) else "no CUDA engine"
        if operation == "adjoint":
            return transposed_method("auto", call.geometry, call.mode), why
        return "im2col", why
    per_group = _forward_channels(call)[1] // call.groups
    if in_per_group * per_group <= DIRECT_MAX_CHANNEL_PAIRS:
        return "direct", f"{in_per_group}×{per_group} channels per group: too thin for a GEMM"
    if target == "cuda":
        if operation == "forward" and np.dtype(call.weight.dtype).kind == "f":
            return "implicit_gemm", "real floating point: one kernel, no patch tiles"
        return "tiled_blas", "patch tiles × cuBLAS"
    if _pointwise(call.geometry):
        return "tiled_blas", "1×1 kernel without padding: one BLAS GEMM on the input"
    real = np.dtype(call.weight.dtype).kind == "f"
    if operation == "forward" and real and call.geometry.n_positions >= IMPLICIT_MIN_POSITIONS:
        return "implicit_gemm", "real floating point, enough positions per image: patches read in place"
    if operation == "weight_grad" and call.weight.dtype == np.float32:
        return "implicit_gemm", "float32: patches packed straight into the GEMM"
    return "tiled_blas", "patch tiles × BLAS"


def plan(call, operation: str) -> ConvPlan:
    """The plan for one map of a validated call; "auto" is resolved here.

    ``call.method`` may be any of conv's or conv_transpose's methods; an engine
    method that does not apply is refused (``direct`` needs one input channel
    per group) or substituted (``implicit_gemm`` has no adjoint; on the GPU no
    weight gradient either).  CuPy arrays get the CUDA engine's plans.
    """
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
        method, reason = _auto(call, operation, in_per_group, target)
    if method == "zero_insertion" and operation != "adjoint":
        method, reason = "im2col", "zero insertion serves the adjoint only"
    if method not in ENGINE_METHODS:
        return ConvPlan(method, operation, rows, positions, positions, 1, patch_bytes,
                        patch_bytes, reason)
    if operation == "adjoint" and method != "direct" and _flippable(call):
        inner = plan(_flipped_call(call), "forward")
        return ConvPlan(inner.method, operation, rows, positions, inner.tile, inner.threads,
                        inner.workspace_bytes, patch_bytes, "stride 1, zero padding: no col2im",
                        inner, inner.device)
    if target == "cuda":
        return _cuda_plan(call, operation, method, reason, rows, positions, patch_bytes, size)
    if method == "implicit_gemm" and operation == "adjoint":
        method, reason = "tiled_blas", "implicit_gemm runs the forward map and the weight gradient"
    threads = _threads()
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
    partial_bytes = (threads * rows * _forward_channels(call)[1] * size
                     if operation == "weight_grad" else 0)
    if method == "implicit_gemm" and operation == "forward":
        from ._numba_gemm import MR, NR

        # Units of whole output rows, at least two per worker where the batch allows;
        # small images go several to a unit, so that a weight panel serves more rows
        # before the next is read.  Each worker holds its unit's padded channels-last
        # images; the weight is packed once.
        width = geometry.output_size[-1]
        in_channels, out_channels = _forward_channels(call)
        padded_image = math.prod(geometry.padded_size)
        if image < SMALL_IMAGE_POSITIONS:
            batch = max(1, min(-(-n // threads), PADDED_BATCH_BYTES // (padded_image * in_channels * size)))
            tile = batch * image
        else:
            output_rows = image // width
            tile = -(-output_rows // max(1, -(-2 * threads // n))) * width
            batch = 1
        padded = batch * padded_image + (MR - 1) * geometry.stride[-1]
        panels = call.groups * -(-out_channels // call.groups // NR) * NR
        work = (threads * padded * in_channels + rows * panels) * size
        return ConvPlan(method, operation, rows, positions, tile, threads, work, patch_bytes,
                        reason)
    if method == "implicit_gemm":
        from ._numba_gemm import KC, MC, NC

        tile = max(1, -(-image // max(1, -(-2 * threads // n))))
        work = threads * (KC * (MC + NC) + 256) * size + partial_bytes
        return ConvPlan(method, operation, rows, positions, tile, threads, work, patch_bytes,
                        reason)
    # Each worker's tile fits its share of the workspace; at least two tiles per
    # worker where the batch allows, for balance; tiles cut images evenly.  The
    # adjoint and the weight gradient keep each tile inside one image.
    tile = max(1, min(WORKSPACE_BYTES // (threads * rows * size), -(-positions // (2 * threads))))
    if operation != "forward":
        tile = min(tile, image)
    if tile >= image:
        tile = tile // image * image          # whole images
    else:
        pieces = -(-image // tile)
        tile = -(-image // pieces)            # equal pieces of one image
    return ConvPlan(method, operation, rows, positions, tile, threads,
                    threads * rows * tile * size + partial_bytes, patch_bytes, reason)


def _is_cupy(a):
    import array_api_compat

    return array_api_compat.is_cupy_array(a)


def _cuda_plan(call, operation, method, reason, rows, positions, patch_bytes, size):
    """The CUDA engine's plan: implicit GEMM for the forward map only; patch tiles of
    whole images within ``_cuda_engine.WORKSPACE_BYTES`` for cuBLAS."""
    from ._cuda_engine import WORKSPACE_BYTES as budget

    if method == "implicit_gemm" and operation != "forward":
        method, reason = "tiled_blas", "on the GPU implicit_gemm runs the forward map only"
    image = call.geometry.n_positions
    if method == "tiled_blas":
        images = max(1, min(budget // max(1, rows * image * size), positions // image))
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


def _flipped_call(call, weight=None):
    """The forward convolution that computes Cᵀ·y for a stride-1 call (the seeds' recipe):
    the kernel flipped and its channel axes swapped, padding d·(K − 1) − p."""
    import dataclasses

    from ._geometry import ConvGeometry

    geometry, layout = call.geometry, call.layout
    in_channels, _ = _forward_channels(call)
    flipped = ConvGeometry(geometry.output_size, geometry.kernel_size, geometry.stride,
                           geometry.dilation, _flipped_padding(geometry), geometry.input_size)
    weight = call.weight if weight is None else weight
    return dataclasses.replace(
        call, geometry=flipped, out_channels=in_channels,
        weight=layout.flipped_transpose_weight(call.xp, weight, call.groups, geometry.nd))


# --------------------------------------------------------------------------- threads
@lru_cache(maxsize=1)
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _threads() -> int:
    """The engine's workers: as many as BLAS may use (the user's limit is respected)."""
    counts = [lib.num_threads for lib in _blas_controller().select(user_api="blas").lib_controllers]
    return max(counts, default=os.cpu_count() or 1)


class _SLPVectorising:
    """Compile with LLVM's SLP vectoriser on while the engine runs.

    The micro-kernel keeps its MR×NR tile in scalar locals; only the SLP
    vectoriser turns them into vector registers and broadcast-FMAs (10 → 260
    GFLOP/s on one core here).  Numba leaves it off by default
    (``NUMBA_SLP_VECTORIZE``) but reads the flag at each compilation, so the
    engine switches it on around its kernel calls, where their first calls
    compile; every user of the guard shares one switch (counted, under a lock).
    The on-disk cache's key ignores the flag: a kernel compiled outside the
    guard would be cached scalar, so every call of a kernel goes through it.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._users = 0
        self._saved = 0

    def __enter__(self):
        from numba.core import config

        with self._lock:
            if self._users == 0:
                self._saved = config.SLP_VECTORIZE
                config.SLP_VECTORIZE = 1
            self._users += 1

    def __exit__(self, *exc):
        from numba.core import config

        with self._lock:
            self._users -= 1
            if self._users == 0:
                config.SLP_VECTORIZE = self._saved


slp_vectorising = _SLPVectorising()


_pool: ThreadPoolExecutor | None = None


def _run_workers(work, threads):
    """``work(k)`` for k < threads on a shared pool, with BLAS held to one thread and the
    kernels compiled (on first call) with the SLP vectoriser."""
    global _pool
    if threads == 1:
        with _blas_controller().limit(limits=1, user_api="blas"), slp_vectorising:
            work(0)
        return
    if _pool is None or _pool._max_workers < threads:
        _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="convmm")
    with _blas_controller().limit(limits=1, user_api="blas"), slp_vectorising:
        for future in [_pool.submit(work, k) for k in range(threads)]:
            future.result()


def _tiles(total, image, tile):
    """(start, count) tiles of the flat (image, position) range; none crosses an image
    boundary unless it holds whole images."""
    if tile >= image:
        return [(start, min(tile, total - start)) for start in range(0, total, tile)]
    per_image = [(offset, min(tile, image - offset)) for offset in range(0, image, tile)]
    return [(n * image + offset, count) for n in range(total // image) for offset, count in per_image]


def _image_ranges(n, positions, tile):
    """(image, first, stop) position ranges of at most ``tile`` positions, image by image."""
    return [(image, start, min(start + tile, positions))
            for image in range(n) for start in range(0, positions, tile)]


def _sum_in_order(partial):
    """Σ_k partial[k], the workers' partial sums added in a fixed order (the same bits on
    every run), into partial[0]."""
    total = partial[0]
    for k in range(1, partial.shape[0]):
        total += partial[k]
    return total


def _buffer(dtype, shape_size):
    """A worker's flat tile buffer; ``_view`` cuts contiguous blocks from it."""
    return np.empty(shape_size, dtype=dtype)


def _view(buffer, rows, columns):
    return buffer[:rows * columns].reshape(rows, columns)


# --------------------------------------------------------------------------- operands
def _weight_operand(call):
    """W as (G, O_g, C_g·T) channels-first or (G, T·C_g, O_g) channels-last, contiguous."""
    return np.ascontiguousarray(call.layout.weight_operand(np, call.weight, call.groups))


def _forward_channels(call):
    """(C_in, C_out) of the forward convolution whose maps the call uses."""
    out_channels, in_per_group, _ = call.layout.weight_parts(call.weight.shape, call.geometry.nd)
    return in_per_group * call.groups, out_channels


# --------------------------------------------------------------------------- forward
def forward(call, plan: ConvPlan, x, weight):
    """Y = C·x (no bias) for x (N, C_in, *S) or (N, *S, C_in), any engine method."""
    call = _with(call, weight)
    if plan.device == "cuda":
        from . import _cuda_engine

        return _cuda_engine.forward(call, plan, x)
    if plan.method == "direct":
        return _direct(call, plan, x, "forward")
    if plan.tile == 0:
        return _pointwise_forward(call, x)
    if plan.method == "implicit_gemm":
        return _implicit_forward(call, plan, x)
    return _tiled_forward(call, plan, x)


def _with(call, weight):
    import dataclasses

    return call if weight is None or weight is call.weight else dataclasses.replace(call, weight=weight)


def _subsampled(call, x):
    """The patch matrix of a 1×1 unpadded convolution: x at the strided positions, (N, C, L) or (N, L, C)."""
    geometry, layout = call.geometry, call.layout
    window = tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(geometry.output_size, geometry.stride))
    view = x[layout.at_spatial(window)]
    n, channels = x.shape[0], layout.channels(x.shape)
    shape = (n, channels, -1) if layout.name == "channels_first" else (n, -1, channels)
    return np.ascontiguousarray(view).reshape(shape)


def _pointwise_forward(call, x):
    layout, groups, geometry = call.layout, call.groups, call.geometry
    in_channels, out_channels = _forward_channels(call)
    p = _subsampled(call, x)
    n = x.shape[0]
    w = _weight_operand(call)                                         # (G, O_g, C_g) / (G, C_g, O_g)
    if layout.name == "channels_first":
        y = np.matmul(w, p.reshape(n, groups, in_channels // groups, -1))   # (N, G, O_g, L)
        return y.reshape(n, out_channels, *geometry.output_size)
    if groups == 1:
        y = p.reshape(-1, in_channels) @ w[0]
    else:
        y = np.matmul(p.reshape(-1, groups, in_channels // groups).transpose(1, 0, 2), w)
        y = y.transpose(1, 0, 2)
    return np.ascontiguousarray(y).reshape(n, *geometry.output_size, out_channels)


def _tiled_forward(call, plan, x):
    from . import _numba_cpu as kernels

    layout, groups, geometry = call.layout, call.groups, call.geometry
    n = x.shape[0]
    in_channels, out_channels = _forward_channels(call)
    in_per_group, per_group = in_channels // groups, out_channels // groups
    positions, pixels = geometry.n_positions, math.prod(geometry.input_size)
    index = gather_index(geometry, call.mode)
    tiles = _tiles(plan.positions, positions, plan.tile)
    w = _weight_operand(call)

    if layout.name == "channels_last":
        source = np.ascontiguousarray(x).reshape(n, pixels, in_channels)
        y = np.empty((plan.positions, out_channels), dtype=x.dtype)

        def work(k):
            buffer = _buffer(x.dtype, plan.tile * plan.rows)
            for start, count in tiles[k::plan.threads]:
                patches = _view(buffer, count, plan.rows)
                for g in range(groups):
                    kernels.patches_channels_last(source, index, start, count,
                                                  g * in_per_group, patches)
                    np.matmul(patches, w[g],
                              out=y[start:start + count, g * per_group:(g + 1) * per_group])

        _run_workers(work, plan.threads)
        return y.reshape(n, *geometry.output_size, out_channels)

    source = np.ascontiguousarray(x).reshape(n, in_channels, pixels)
    y = np.empty((n, out_channels, positions), dtype=x.dtype)

    def work(k):
        buffer = _buffer(x.dtype, plan.tile * plan.rows)
        for start, count in tiles[k::plan.threads]:
            first, offset = divmod(start, positions)
            patches = _view(buffer, plan.rows, count)
            for g in range(groups):
                kernels.patches_channels_first(source, index, start, count, g * in_per_group,
                                               patches)
                block = y[:, g * per_group:(g + 1) * per_group]
                if offset + count <= positions:           # the tile lies in one image
                    np.matmul(w[g], patches, out=block[first, :, offset:offset + count])
                    continue
                product = w[g] @ patches                  # whole images: (O_g, count)
                block[first:first + count // positions] = np.moveaxis(
                    product.reshape(per_group, count // positions, positions), 1, 0)

    _run_workers(work, plan.threads)
    return y.reshape(n, out_channels, *geometry.output_size)


def _weight_panels(call):
    """W as (G, ⌈O_g/NR⌉, T·C_g, NR) for ``conv_padded``: row t·C_g + c of panel p holds
    output channels p·NR … p·NR + NR − 1 of the group (zeros past O_g)."""
    from ._numba_gemm import NR

    w = call.layout.weight_operand(np, call.weight, call.groups)   # (G, O_g, C_g·T) / (G, T·C_g, O_g)
    groups, taps = call.groups, call.geometry.n_taps
    if call.layout.name == "channels_first":
        w = w.reshape(groups, w.shape[1], -1, taps).transpose(0, 3, 2, 1)   # (G, T, C_g, O_g)
    per_group = w.shape[-1]
    w = w.reshape(groups, -1, per_group)
    panels = -(-per_group // NR)
    packed = np.zeros((groups, w.shape[1], panels * NR), dtype=call.weight.dtype)
    packed[:, :, :per_group] = w
    return np.ascontiguousarray(packed.reshape(groups, -1, panels, NR).transpose(0, 2, 1, 3))


def _implicit_forward(call, plan, x):
    """Each image padded once into a channels-last copy, then every output row's patches
    read in place by ``microkernel_padded``: nothing but the weight is packed."""
    from . import _numba_gemm as kernels

    layout, geometry = call.layout, call.geometry
    n = x.shape[0]
    in_channels, out_channels = _forward_channels(call)
    pixels, positions = math.prod(geometry.input_size), geometry.n_positions
    source, _ = padded_source(geometry, call.mode)
    row_start, offsets = padded_taps(geometry)
    width, step = geometry.output_size[-1], geometry.stride[-1]
    panels = _weight_panels(call)
    channels_first = layout.name == "channels_first"
    images = np.ascontiguousarray(x).reshape(
        (n, in_channels, pixels) if channels_first else (n, pixels, in_channels))
    y = np.empty((n, out_channels, positions) if channels_first else (n, positions, out_channels),
                 dtype=x.dtype)
    image_rows = source.shape[0]
    if plan.tile >= positions:                 # several whole images per unit
        batch = plan.tile // positions
        units = [(first, min(first + batch, n), 0, row_start.shape[0]) for first in range(0, n, batch)]
    else:                                      # pieces of one image
        units = [(image, image + 1, first, stop)
                 for image, first, stop in _image_ranges(n, row_start.shape[0], plan.tile // width)]
    batch = max(stop - first for first, stop, _, _ in units)
    zero = np.zeros((), dtype=x.dtype)[()]

    def work(k):
        # The last row tile of an image reads up to MR − 1 samples past its row's end.
        padded = np.empty((batch * image_rows + (kernels.MR - 1) * step, in_channels), dtype=x.dtype)
        padded[batch * image_rows:] = 0
        current = None
        for first, stop, r0, r1 in units[k::plan.threads]:
            if (first, stop) != current:
                for b in range(stop - first):
                    kernels.pad_channels_last(images[first + b], source, channels_first,
                                              padded[b * image_rows:(b + 1) * image_rows])
                current = first, stop
            kernels.conv_padded(padded, image_rows, row_start, offsets, step, width, panels,
                                call.groups, not channels_first, r0, r1, zero, y[first:stop])

    _run_workers(work, plan.threads)
    return y.reshape((n, out_channels, *geometry.output_size) if channels_first
                     else (n, *geometry.output_size, out_channels))


# --------------------------------------------------------------------------- adjoint
def adjoint(call, plan: ConvPlan, y, weight):
    """X = Cᵀ·y (no bias) for y shaped like conv's output, any engine method."""
    if plan.flipped is not None:
        return forward(_flipped_call(call, weight), plan.flipped, y, None)
    call = _with(call, weight)
    if plan.device == "cuda":
        from . import _cuda_engine

        return _cuda_engine.adjoint(call, plan, y)
    if plan.method == "direct":
        return _direct(call, plan, y, "adjoint")
    if plan.tile == 0:
        return _pointwise_adjoint(call, y)
    return _tiled_adjoint(call, plan, y)


def _pointwise_adjoint(call, y):
    layout, groups, geometry = call.layout, call.groups, call.geometry
    in_channels, out_channels = _forward_channels(call)
    n = y.shape[0]
    w = _weight_operand(call)
    if layout.name == "channels_first":
        o = np.ascontiguousarray(y).reshape(n, groups, out_channels // groups, -1)
        cols = np.matmul(w.transpose(0, 2, 1), o).reshape(n, in_channels, *geometry.output_size)
    else:
        o = np.ascontiguousarray(y).reshape(-1, groups, out_channels // groups).transpose(1, 0, 2)
        cols = np.matmul(o, w.transpose(0, 2, 1)).transpose(1, 0, 2)
        cols = cols.reshape(n, *geometry.output_size, in_channels)
    if all(s == 1 for s in geometry.stride):
        return np.ascontiguousarray(cols)
    x = np.zeros(layout.image_shape(n, in_channels, geometry.input_size), dtype=cols.dtype)
    window = tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(geometry.output_size, geometry.stride))
    x[layout.at_spatial(window)] = cols
    return x


def _tiled_adjoint(call, plan, y):
    from . import _numba_cpu as kernels

    layout, groups, geometry = call.layout, call.groups, call.geometry
    n = y.shape[0]
    in_channels, out_channels = _forward_channels(call)
    in_per_group, per_group = in_channels // groups, out_channels // groups
    positions, pixels = geometry.n_positions, math.prod(geometry.input_size)
    inverse = gather_index_adjoint(geometry, call.mode)
    w_t = np.ascontiguousarray(_weight_operand(call).transpose(0, 2, 1))  # (G, rows, O_g) / (G, O_g, rows)
    offsets = range(0, positions, plan.tile)
    reads = tile_pixel_ranges(geometry, call.mode, plan.tile)
    cf = layout.name == "channels_first"
    grads = np.ascontiguousarray(y).reshape((n, out_channels, positions) if cf
                                            else (n, positions, out_channels))
    x = np.zeros((n, in_channels, pixels) if cf else (n, pixels, in_channels), dtype=y.dtype)

    def work(k):
        buffer = _buffer(y.dtype, plan.tile * plan.rows)
        for image in range(k, n, plan.threads):
            for start, pixels in zip(offsets, reads):
                count = min(plan.tile, positions - start)
                for g in range(groups):
                    channels = slice(g * per_group, (g + 1) * per_group)
                    if cf:
                        cols = _view(buffer, plan.rows, count)
                        np.matmul(w_t[g], grads[image, channels, start:start + count], out=cols)
                        kernels.col2im_channels_first(cols, inverse, start, count, pixels,
                                                      g * in_per_group, x[image])
                    else:
                        cols = _view(buffer, count, plan.rows)
                        np.matmul(grads[image, start:start + count, channels], w_t[g], out=cols)
                        kernels.col2im_channels_last(cols, inverse, start, count, pixels,
                                                     g * in_per_group, x[image])

    _run_workers(work, plan.threads)
    return x.reshape(layout.image_shape(n, in_channels, geometry.input_size))


# --------------------------------------------------------------------------- weight gradient
def weight_grad(call, plan: ConvPlan, a, b):
    """Σ_n A·P(b)ᵀ shaped like the weight: A shaped like conv's output, b like its input.

    No conjugation here: conv's weight gradient is ``weight_grad(G, conj(x))``,
    conv_transpose's ``weight_grad(conj(x), G)``.
    """
    if plan.device == "cuda":
        from . import _cuda_engine

        return _cuda_engine.weight_grad(call, plan, a, b)
    if plan.method == "direct":
        return _direct(call, plan, (a, b), "weight_grad")
    if plan.tile == 0:
        return _pointwise_weight_grad(call, a, b)
    if plan.method == "implicit_gemm":
        return _implicit_weight_grad(call, plan, a, b)
    return _tiled_weight_grad(call, plan, a, b)


def _pointwise_weight_grad(call, a, b):
    """Σ_n A_n·X_nᵀ one image at a time (an einsum over the batch copied both operands)."""
    layout, groups = call.layout, call.groups
    in_channels, out_channels = _forward_channels(call)
    n = a.shape[0]
    p = _subsampled(call, b)
    cf = layout.name == "channels_first"
    if cf:
        o = np.ascontiguousarray(a).reshape(n, groups, out_channels // groups, -1)
        pp = p.reshape(n, groups, in_channels // groups, -1).swapaxes(-1, -2)
    else:
        o = np.ascontiguousarray(a).reshape(n, -1, groups, out_channels // groups).swapaxes(1, 2)
        pp = p.reshape(n, -1, groups, in_channels // groups).transpose(0, 2, 3, 1)
    total = None
    for image in range(n):       # (G, O_g, C_g) channels-first, (G, C_g, O_g) channels-last
        term = np.matmul(o[image], pp[image]) if cf else np.matmul(pp[image], o[image])
        total = term if total is None else np.add(total, term, out=total)
    return layout.weight_from_operand(np, total, call.weight.shape)


def _implicit_weight_grad(call, plan, a, b):
    from . import _numba_gemm as kernels

    layout, groups, geometry = call.layout, call.groups, call.geometry
    n = a.shape[0]
    in_channels, out_channels = _forward_channels(call)
    positions, pixels = geometry.n_positions, math.prod(geometry.input_size)
    index = gather_index(geometry, call.mode)
    cf = layout.name == "channels_first"
    grads = np.ascontiguousarray(a).reshape((n, out_channels, positions) if cf
                                            else (n, positions, out_channels))
    source = np.ascontiguousarray(b).reshape((n, in_channels, pixels) if cf
                                             else (n, pixels, in_channels))
    partial = np.zeros((plan.threads, groups, plan.rows, out_channels // groups),
                       dtype=np.result_type(a, b))
    kernel = kernels.weight_grad_channels_first if cf else kernels.weight_grad_channels_last
    units = _image_ranges(n, positions, plan.tile)

    def work(k):
        for image, start, stop in units[k::plan.threads]:
            kernel(source[image], index, grads[image], groups, partial[k], start, stop)

    _run_workers(work, plan.threads)
    total = _sum_in_order(partial)
    if cf:
        total = total.transpose(0, 2, 1)
    return layout.weight_from_operand(np, total, call.weight.shape)


def _tiled_weight_grad(call, plan, a, b):
    from . import _numba_cpu as kernels

    layout, groups, geometry = call.layout, call.groups, call.geometry
    n = a.shape[0]
    in_channels, out_channels = _forward_channels(call)
    in_per_group, per_group = in_channels // groups, out_channels // groups
    positions, pixels = geometry.n_positions, math.prod(geometry.input_size)
    index = gather_index(geometry, call.mode)
    tiles = _tiles(plan.positions, positions, plan.tile)
    cf = layout.name == "channels_first"
    grads = np.ascontiguousarray(a).reshape((n, out_channels, positions) if cf
                                            else (n, positions, out_channels))
    source = np.ascontiguousarray(b).reshape((n, in_channels, pixels) if cf
                                             else (n, pixels, in_channels))
    shape = (groups, per_group, plan.rows) if cf else (groups, plan.rows, per_group)
    partial = np.zeros((plan.threads, *shape), dtype=np.result_type(a, b))

    def work(k):
        buffer = _buffer(partial.dtype, plan.tile * plan.rows)
        for start, count in tiles[k::plan.threads]:
            image, offset = divmod(start, positions)
            for g in range(groups):
                channels = slice(g * per_group, (g + 1) * per_group)
                if cf:
                    patches = _view(buffer, plan.rows, count)
                    kernels.patches_channels_first(source, index, start, count,
                                                   g * in_per_group, patches)
                    partial[k, g] += grads[image, channels, offset:offset + count] @ patches.T
                else:
                    patches = _view(buffer, count, plan.rows)
                    kernels.patches_channels_last(source, index, start, count,
                                                  g * in_per_group, patches)
                    partial[k, g] += patches.T @ grads[image, offset:offset + count, channels]

    _run_workers(work, plan.threads)
    total = _sum_in_order(partial)
    return layout.weight_from_operand(np, total, call.weight.shape)


# --------------------------------------------------------------------------- direct
def _direct(call, plan, operands, operation):
    """The direct kernels on channels-first planes (channels-last goes through a copy)."""
    from . import _numba_cpu as kernels

    layout, geometry, groups = call.layout, call.geometry, call.groups
    in_channels, out_channels = _forward_channels(call)
    positions, pixels = geometry.n_positions, math.prod(geometry.input_size)
    cf = layout.name == "channels_first"

    def planes(a, channels, samples):
        if not cf:
            a = np.moveaxis(a, -1, 1)
        return np.ascontiguousarray(a).reshape(-1, samples)

    def images(a, channels, spatial):
        a = a.reshape(-1, channels, *spatial)
        return a if cf else np.ascontiguousarray(np.moveaxis(a, 1, -1))

    if cf:
        w = np.ascontiguousarray(call.weight.reshape(out_channels, -1))
    else:   # (*K, C_g, C_out) → (C_out, C_g·T), the channels-first order
        w = call.weight.reshape(geometry.n_taps, in_channels // groups, out_channels)
        w = np.ascontiguousarray(w.transpose(2, 1, 0).reshape(out_channels, -1))
    source, adjoint_index = padded_source(geometry, call.mode)
    rows = direct_rows(geometry)
    sweep = (rows, geometry.output_size[-1], geometry.dilation[-1], geometry.stride[-1])
    n = operands[0].shape[0] if operation == "weight_grad" else operands.shape[0]
    units = n * groups
    chunks = [(first, min(first + plan.tile, units)) for first in range(0, units, plan.tile)]
    if operation == "forward":
        x = planes(operands, in_channels, pixels)
        y = np.empty((n * out_channels, positions), dtype=x.dtype)
        run = lambda first, stop, k: kernels.direct_forward(  # noqa: E731
            x, w, groups, source, *sweep, first, stop, y)
    elif operation == "adjoint":
        g = planes(operands, out_channels, positions)
        x = np.empty((n * in_channels, pixels), dtype=g.dtype)
        run = lambda first, stop, k: kernels.direct_adjoint(  # noqa: E731
            g, w, groups, adjoint_index, *sweep, source.size, first, stop, x)
    else:
        g = planes(operands[0], out_channels, positions)
        x = planes(operands[1], in_channels, pixels)
        partial = np.zeros((plan.threads, *w.shape), dtype=np.result_type(g, x))
        run = lambda first, stop, k: kernels.direct_weight_grad(  # noqa: E731
            g, x, groups, source, *sweep, first, stop, partial[k])

    def work(k):
        for first, stop in chunks[k::plan.threads]:
            run(first, stop, k)

    _run_workers(work, plan.threads)
    if operation == "forward":
        return images(y, out_channels, geometry.output_size)
    if operation == "adjoint":
        return images(x, in_channels, geometry.input_size)
    dw = _sum_in_order(partial)
    if cf:
        return dw.reshape(call.weight.shape)
    dw = dw.reshape(out_channels, in_channels // groups, geometry.n_taps).transpose(2, 1, 0)
    return np.ascontiguousarray(dw).reshape(call.weight.shape)
