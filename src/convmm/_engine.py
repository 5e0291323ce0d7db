"""The CPU engine for NumPy arrays: which path runs a call, with what tiles, and running it.

The array-API path (``_conv``) builds the whole patch matrix: simple, portable,
the oracle.  On NumPy input the engine instead cuts the (image, position)
index of the whole batch into tiles whose patch block fits a fixed workspace
and hands them out to worker threads.  Each worker fills its tile with a
serial, GIL-free Numba kernel (``_numba_cpu``) and multiplies it by the weight
with a single-threaded BLAS GEMM (``numpy.matmul``), writing straight into the
output:

    channels_last   Y[tile, group] = P_tile (rows, T·C_g) · W_g (T·C_g, O_g)
    channels_first  Y[n, group, tile] = W_g (O_g, C_g·T) · P_tile (C_g·T, rows)

The extra memory is one tile per worker, never the patch matrix.  BLAS is held
to one thread for the duration of the call (threadpoolctl): parallelism comes
from the workers alone, so Numba's, BLAS's and our threads never compete for
the cores (a pool of BLAS threads spinning between tiles, next to a parallel
Numba kernel, made an earlier version three times slower).
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ._plan import gather_index

WORKSPACE_BYTES = 16 << 20
"""The patch tile's size budget (one tile is the engine's extra memory)."""

ENGINE_METHODS = ("tiled_blas",)
"""Methods that run on NumPy arrays only (the array-API path serves every namespace)."""


@dataclass(frozen=True)
class ConvPlan:
    """What runs a convolution: the method, and for the engine its tile and workspace."""

    method: str
    rows: int               # patch rows per group: C_g·T
    positions: int          # (image, position) pairs of the batch: N·L
    tile: int               # of them per tile
    threads: int            # worker threads
    workspace_bytes: int    # the tile buffers, one per thread
    patch_matrix_bytes: int  # what the full patch matrix would take

    def describe(self) -> str:
        if self.method == "im2col":
            return (f"im2col: the array-API path; patch matrix {self.rows}×{self.positions} per "
                    f"group, {self.patch_matrix_bytes / 2 ** 20:.1f} MiB")
        tiles = -(-self.positions // self.tile)
        return (f"{self.method}: {tiles} tile(s) of {self.tile} of {self.positions} "
                f"(image, position) pairs × {self.rows} patch rows on {self.threads} "
                f"thread(s); workspace "
                f"{self.workspace_bytes / 2 ** 20:.2f} MiB (the full patch matrix: "
                f"{self.patch_matrix_bytes / 2 ** 20:.1f} MiB)")


def itemsize(xp, dtype) -> int:
    """Bytes per element of a floating or complex dtype of any namespace."""
    parts = 2 if xp.isdtype(dtype, "complex floating") else 1
    return xp.finfo(dtype).bits // 8 * parts


def conv_plan(call) -> ConvPlan:
    """The plan for ``conv`` of a validated call (method "auto" resolved here)."""
    geometry, layout = call.geometry, call.layout
    _, in_per_group, _ = layout.weight_parts(call.weight.shape, geometry.nd)
    rows = in_per_group * geometry.n_taps
    positions = call.x.shape[0] * geometry.n_positions
    size = itemsize(call.xp, call.weight.dtype)
    patch_bytes = rows * call.groups * positions * size
    method = call.method
    if method == "auto":
        # The tiled engine is opt-in for now: measured on the layer suite it
        # still takes 1.0-3.7x the time of the whole-matrix path (one large
        # multi-threaded GEMM); "auto" moves to it once it wins.
        method = "im2col"
    if method == "im2col":
        return ConvPlan("im2col", rows, positions, positions, 1, patch_bytes, patch_bytes)
    threads = _threads()
    # Each worker's tile fits its share of the workspace; at least two tiles per
    # worker where the batch allows, for balance; tiles cut images evenly.
    tile = max(1, min(WORKSPACE_BYTES // (threads * rows * size), -(-positions // (2 * threads))))
    image = geometry.n_positions
    if tile >= image:
        tile = tile // image * image          # whole images
    else:
        pieces = -(-image // tile)
        tile = -(-image // pieces)            # equal pieces of one image
    return ConvPlan(method, rows, positions, tile, threads, threads * rows * tile * size,
                    patch_bytes)


@lru_cache(maxsize=1)
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _threads() -> int:
    """The engine's workers: as many as BLAS may use (the user's limit is respected)."""
    counts = [lib.num_threads for lib in _blas_controller().select(user_api="blas").lib_controllers]
    return max(counts, default=os.cpu_count() or 1)


_pool: ThreadPoolExecutor | None = None


def _run_workers(work, threads):
    """``work(k)`` for k < threads on a shared pool, with BLAS held to one thread."""
    global _pool
    if threads == 1:
        with _blas_controller().limit(limits=1, user_api="blas"):
            work(0)
        return
    if _pool is None or _pool._max_workers < threads:
        _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="convmm")
    with _blas_controller().limit(limits=1, user_api="blas"):
        for future in [_pool.submit(work, k) for k in range(threads)]:
            future.result()


def _tiles(total, image, tile):
    """(start, count) tiles of the flat (image, position) range; none crosses an image
    boundary unless it holds whole images."""
    if tile >= image:
        return [(start, min(tile, total - start)) for start in range(0, total, tile)]
    per_image = [(offset, min(tile, image - offset)) for offset in range(0, image, tile)]
    return [(n * image + offset, count) for n in range(total // image) for offset, count in per_image]


def conv_forward(call, plan: ConvPlan):
    """``conv`` without bias on NumPy arrays by the plan's engine method."""
    from . import _numba_cpu as kernels

    x, weight, geometry, layout, groups = call.x, call.weight, call.geometry, call.layout, call.groups
    n = x.shape[0]
    channels = layout.channels(x.shape)
    in_per_group = channels // groups
    out_channels, per_group = call.out_channels, call.out_channels // groups
    positions, pixels = geometry.n_positions, math.prod(geometry.input_size)
    index = gather_index(geometry, call.mode)
    tiles = _tiles(plan.positions, positions, plan.tile)
    w = np.ascontiguousarray(layout.weight_operand(np, weight, groups))

    if layout.name == "channels_last":
        source = np.ascontiguousarray(x).reshape(n, pixels, channels)
        y = np.empty((plan.positions, out_channels), dtype=x.dtype)

        def work(k):
            patches = np.empty((plan.tile, plan.rows), dtype=x.dtype)
            for start, count in tiles[k::plan.threads]:
                for g in range(groups):
                    kernels.patches_channels_last(source, index, start, count,
                                                  g * in_per_group, patches)
                    np.matmul(patches[:count], w[g],
                              out=y[start:start + count, g * per_group:(g + 1) * per_group])

        _run_workers(work, plan.threads)
        return y.reshape(n, *geometry.output_size, out_channels)

    source = np.ascontiguousarray(x).reshape(n, channels, pixels)
    y = np.empty((n, out_channels, positions), dtype=x.dtype)

    def work(k):
        patches = np.empty((plan.rows, plan.tile), dtype=x.dtype)
        for start, count in tiles[k::plan.threads]:
            first, offset = divmod(start, positions)
            for g in range(groups):
                kernels.patches_channels_first(source, index, start, count, g * in_per_group,
                                               patches)
                block = y[:, g * per_group:(g + 1) * per_group]
                if offset + count <= positions:           # the tile lies in one image
                    np.matmul(w[g], patches[:, :count],
                              out=block[first, :, offset:offset + count])
                    continue
                product = w[g] @ patches[:, :count]       # whole images: (O_g, count)
                block[first:first + count // positions] = np.moveaxis(
                    product.reshape(per_group, count // positions, positions), 1, 0)

    _run_workers(work, plan.threads)
    return y.reshape(n, out_channels, *geometry.output_size)
