"""The CUDA engine for CuPy arrays: the three maps of ``_engines.policy`` run by CUDA kernels.

    forward       Y = C·X           conv; conv_transpose's input gradient
    adjoint       X = Cᵀ·Y          conv_transpose; conv's input gradient
    weight_grad   ΔW = Σ_n A·Pᵀ     both weight gradients

``tiled_blas``
    Patch tiles of whole images built by the ``im2col`` kernel, multiplied by
    cuBLAS (``cupy.matmul``); the adjoint multiplies by Wᵀ and folds each tile
    back with the ``col2im`` gather (one thread per input sample, no atomics).
``implicit_gemm``
    The forward map as one launch of the implicit-GEMM kernel: W·P with the
    patch tiles built in shared memory straight from the image.
``direct``
    Thin groups (depthwise above all): one thread per output sample for the
    forward and adjoint maps, one block per weight element for the gradient.

Everything stays on the device and runs on CuPy's current stream.  The same
code runs NumPy arrays through the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``),
which is how the tests check it without a GPU (``Tunables.numpy_on_cuda``).
The CPU engine's twin is ``_engines/cpu/engine.py``.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from functools import lru_cache

import array_api_compat
import numpy as np

from ..._core.index_tables import gather_index, gather_index_adjoint

TILES = None
"""The kernels' tile configuration: ``kernels.DEFAULT_TILES`` unless a test sets
``kernels.SMALL_TILES`` (tiny blocks, so the simulator crosses block edges)."""


@lru_cache(maxsize=1)
def unavailable_reason() -> str | None:
    """Why the CUDA engine cannot run here, or None where it can."""
    if importlib.util.find_spec("numba_cuda") is None:
        return ("numba-cuda is not installed: pip install 'convmm[cuda13]' (or "
                "'convmm[cuda12]') for the CUDA engine")
    try:
        from numba import cuda

        if cuda.is_available():
            return None
        return "numba-cuda finds no usable CUDA GPU or driver"
    except Exception as error:      # the driver or the bindings failed to load
        return f"numba-cuda cannot reach the CUDA driver: {error}"


def _tiles():
    from . import kernels

    return TILES or kernels.DEFAULT_TILES


def _module(a):
    """NumPy or CuPy itself (their shared API: ascontiguousarray, matmul, empty)."""
    if array_api_compat.is_numpy_array(a):
        return np
    import cupy

    return cupy


def _stream(a):
    """CuPy's current stream for numba's launches: 0 where that is the default stream
    (and for the simulator's NumPy), else the stream wrapped once per pointer."""
    if array_api_compat.is_numpy_array(a):
        return 0
    import cupy

    pointer = cupy.cuda.get_current_stream().ptr
    return _external_stream(pointer) if pointer else 0


@lru_cache(maxsize=16)
def _external_stream(pointer):
    from numba import cuda

    return cuda.external_stream(pointer)


def _on_device(a, table_of, geometry, mode):
    """The index table ``table_of(geometry, mode)`` on a's device, copied there once per
    device and plan (a fresh copy for the simulator, which copies kernel arguments back)."""
    if array_api_compat.is_numpy_array(a):
        return table_of(geometry, mode).copy()
    return _device_table(table_of, geometry, mode, a.device.id)


@lru_cache(maxsize=64)
def _device_table(table_of, geometry, mode, device_id):
    # Keyed by the table's hashable description: the NumPy table itself is not hashable.
    import cupy

    with cupy.cuda.Device(device_id):
        return cupy.asarray(table_of(geometry, mode))


def _grid(size, block):
    return max(1, -(-size // block))


MAX_GRID = (2 ** 31 - 1, 65535, 65535)
"""CUDA's limits on a grid's blocks in x, y and z (compute capability 3.0 onwards).
``_launch`` caps every grid at them; the kernels loop over their grid, so a capped
grid still covers every element (tests lower the caps to make the kernels loop)."""


def _launch(kernel, grid, block, stream, *args):
    """``kernel[grid, block, stream](*args)``: the grid capped at ``MAX_GRID``, CuPy's
    arrays handed over without a host round trip, no small-grid warning.

    numba-cuda reads a CuPy array through its CUDA array interface, and by default
    synchronises the stream the array names before every launch (the interface's
    version 3 asks consumers to): a host wait per kernel.  The launch goes on that
    same stream (``_stream``), which orders it after the array's producers, so the
    arrays are taken as device views without that wait.  numba-cuda warns
    (NumbaPerformanceWarning) whenever a grid has fewer than 128 blocks; here the grid
    follows the caller's array sizes, and a small convolution would warn on every
    call, with nothing the caller could change.
    """
    grid = tuple(min(blocks, limit) for blocks, limit in
                 zip(grid if isinstance(grid, tuple) else (grid,), MAX_GRID))
    args = tuple(_device_view(a) for a in args)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Grid size", category=Warning)
        configured = kernel[grid, block, stream]
    configured(*args)


def _device_view(a):
    """A CuPy array as numba-cuda's device array over the same memory, without the
    stream synchronisation of the CUDA array interface; anything else unchanged."""
    if not array_api_compat.is_cupy_array(a):
        return a
    from numba import cuda

    return cuda.as_cuda_array(a, sync=False)


# --------------------------------------------------------------------------- operands
def _parts(call):
    """(C_in, C_out, G, C_g, O_g, T, L, P) of the forward convolution."""
    geometry, groups = call.geometry, call.groups
    in_channels, out_channels = call.forward_channels
    return (in_channels, out_channels, groups, in_channels // groups, out_channels // groups,
            geometry.n_taps, geometry.n_positions, math.prod(geometry.input_size))


def _weight_rows(call, weight):
    """The weight as (C_out, C_g·T), k = c·T + t, for both data formats."""
    xp = _module(weight)
    _, out_channels, _, in_per_group, _, taps, _, _ = _parts(call)
    if call.layout.name == "channels_first":
        return xp.ascontiguousarray(weight.reshape(out_channels, in_per_group * taps))
    w = weight.reshape(taps, in_per_group, out_channels).transpose(2, 1, 0)
    return xp.ascontiguousarray(w).reshape(out_channels, in_per_group * taps)


def _weight_from_rows(call, rows):
    """The inverse of ``_weight_rows``: (C_out, C_g·T) back to the weight's shape."""
    xp = _module(rows)
    _, out_channels, _, in_per_group, _, taps, _, _ = _parts(call)
    if call.layout.name == "channels_first":
        return rows.reshape(call.weight.shape)
    w = rows.reshape(out_channels, in_per_group, taps).transpose(2, 1, 0)
    return xp.ascontiguousarray(w).reshape(call.weight.shape)


def _flat(call, a, channels, samples):
    """An image batch as (N, C, S) channels-first or (N, S, C) channels-last, contiguous."""
    xp = _module(a)
    n = a.shape[0]
    channels_last = call.layout.name == "channels_last"
    return xp.ascontiguousarray(a).reshape((n, samples, channels) if channels_last else (n, channels, samples))


def _kernels(dtype):
    from . import kernels

    return kernels.elementwise_kernels(_tiles(), np.dtype(dtype).name)


# --------------------------------------------------------------------------- the maps
def forward(call, plan, x):
    """Y = C·x (no bias) on the device, x (N, C_in, *S) or (N, *S, C_in)."""
    from . import gemm as gemm_kernels

    xp, stream, tiles = _module(x), _stream(x), _tiles()
    in_channels, out_channels, groups, in_per_group, per_group, taps, positions, pixels = _parts(call)
    channels_last = int(call.layout.name == "channels_last")
    n = x.shape[0]
    source = _flat(call, x, in_channels, pixels)
    index = _on_device(x, gather_index, call.geometry, call.padding_mode)
    w = _weight_rows(call, call.weight)
    y = xp.empty((n, positions, out_channels) if channels_last else (n, out_channels, positions), x.dtype)
    if plan.method == "direct":
        kernel = _kernels(x.dtype).direct_forward
        _launch(kernel, (_grid(positions, tiles.threads), out_channels, n), (tiles.threads, 1, 1),
                stream, source, index, w, channels_last, y)
    elif plan.method == "implicit_gemm":
        kernel = gemm_kernels.implicit_conv_kernel(tiles, np.dtype(x.dtype).name)
        grid = (_grid(positions, tiles.bn), _grid(per_group, tiles.bm), n * groups)
        _launch(kernel, grid, tiles.gemm_threads, stream,
                source, index, w.reshape(groups, per_group, -1), channels_last, y)
    else:
        w = w.reshape(groups, per_group, -1)
        for first, images, cols in _patch_tiles(call, plan, x):
            for g in range(groups):
                _im2col(source, index, channels_last, g * in_per_group, first * positions, cols, stream)
                product = xp.matmul(w[g], cols).reshape(per_group, images, positions)
                channels = slice(g * per_group, (g + 1) * per_group)
                if channels_last:
                    y[first:first + images, :, channels] = product.transpose(1, 2, 0)
                else:
                    y[first:first + images, channels] = product.transpose(1, 0, 2)
    return y.reshape(call.layout.image_shape(n, out_channels, call.geometry.output_size))


def adjoint(call, plan, y):
    """X = Cᵀ·y (no bias) on the device, y shaped like conv's output."""
    xp, stream, tiles = _module(y), _stream(y), _tiles()
    in_channels, out_channels, groups, in_per_group, per_group, taps, positions, pixels = _parts(call)
    channels_last = int(call.layout.name == "channels_last")
    n = y.shape[0]
    grads = _flat(call, y, out_channels, positions)
    inverse = _on_device(y, gather_index_adjoint, call.geometry, call.padding_mode)
    w = _weight_rows(call, call.weight)
    x = xp.empty((n, pixels, in_channels) if channels_last else (n, in_channels, pixels), y.dtype)
    kernels = _kernels(y.dtype)
    if plan.method == "direct":
        _launch(kernels.direct_adjoint, (_grid(pixels, tiles.threads), in_channels, n),
                (tiles.threads, 1, 1), stream, grads, inverse, taps, w, channels_last, x)
    else:
        w_t = xp.ascontiguousarray(w.reshape(groups, per_group, -1).transpose(0, 2, 1))
        for first, images, cols in _patch_tiles(call, plan, y):
            for g in range(groups):
                block = _output_block(grads, first, images, g, per_group, channels_last)
                xp.matmul(w_t[g], block, out=cols)
                grid = (_grid(pixels, tiles.threads), in_per_group, images)
                _launch(kernels.col2im, grid, (tiles.threads, 1, 1), stream,
                        cols, inverse, taps, positions, channels_last, g * in_per_group, first, x)
    return x.reshape(call.layout.image_shape(n, in_channels, call.geometry.input_size))


def weight_grad(call, plan, a, b):
    """Σ_n A·P(b)ᵀ shaped like the weight, on the device (no conjugation here)."""
    xp, stream, tiles = _module(a), _stream(a), _tiles()
    in_channels, out_channels, groups, in_per_group, per_group, taps, positions, pixels = _parts(call)
    channels_last = int(call.layout.name == "channels_last")
    grads = _flat(call, a, out_channels, positions)
    source = _flat(call, b, in_channels, pixels)
    index = _on_device(a, gather_index, call.geometry, call.padding_mode)
    dtype = np.result_type(a.dtype, b.dtype)
    dw = xp.zeros((out_channels, in_per_group * taps), dtype)
    if plan.method == "direct":
        _launch(_kernels(dtype).direct_weight_grad, (in_per_group * taps, out_channels),
                tiles.threads, stream, grads, source, index, channels_last, dw)
        return _weight_from_rows(call, dw)
    dw = dw.reshape(groups, per_group, -1)
    for first, images, cols in _patch_tiles(call, plan, b, dtype):
        for g in range(groups):
            _im2col(source, index, channels_last, g * in_per_group, first * positions, cols, stream)
            block = _output_block(grads, first, images, g, per_group, channels_last)
            dw[g] += xp.matmul(block, cols.T)
    return _weight_from_rows(call, dw.reshape(out_channels, -1))


def gemm(a, b, c, accumulate=False):
    """c = a·b (c += a·b if ``accumulate``) by the block-tiled GEMM kernel, on c's stream.

    a (M, K), b (K, N), c (M, N), all of one dtype and on one device; returns c.
    The engine's maps use cuBLAS or the implicit-GEMM kernel; this is the plain
    GEMM the benchmarks hold against cuBLAS (``cupy.matmul``).
    """
    from . import gemm as gemm_kernels

    tiles = _tiles()
    (m, k), (k_b, n) = a.shape, b.shape
    if c.shape != (m, n) or k_b != k or not a.dtype == b.dtype == c.dtype:
        raise ValueError(f"gemm: shapes {a.shape}·{b.shape} into {c.shape}, dtypes "
                         f"{a.dtype}, {b.dtype}, {c.dtype}: expected (M, K)·(K, N) into (M, N), "
                         "one dtype")
    kernel = gemm_kernels.gemm_kernel(tiles, np.dtype(c.dtype).name)
    _launch(kernel, (_grid(n, tiles.bn), _grid(m, tiles.bm)), tiles.gemm_threads, _stream(c),
            a, b, c, accumulate)
    return c


# --------------------------------------------------------------------------- tiles
def _patch_tiles(call, plan, a, dtype=None):
    """(first image, images, cols buffer) per tile of whole images (``plan.tile`` positions)."""
    xp = _module(a)
    positions = call.geometry.n_positions
    per_tile = max(1, plan.tile // positions)
    n = a.shape[0]
    buffer = xp.empty(plan.rows * per_tile * positions, dtype or a.dtype)
    for first in range(0, n, per_tile):
        images = min(per_tile, n - first)
        yield first, images, buffer[:plan.rows * images * positions].reshape(plan.rows, -1)


def _output_block(grads, first, images, g, per_group, channels_last):
    """Group g's output channels of images first … first + images − 1 as (O_g, images·L)."""
    channels = slice(g * per_group, (g + 1) * per_group)
    if channels_last:
        block = grads[first:first + images, :, channels].transpose(2, 0, 1)
    else:
        block = grads[first:first + images, channels].transpose(1, 0, 2)
    return block.reshape(per_group, -1)


def _im2col(source, index, channels_last, first_channel, start, cols, stream):
    tiles = _tiles()
    kernel = _kernels(cols.dtype).im2col
    rows, count = cols.shape
    _launch(kernel, (_grid(count, tiles.threads), rows), (tiles.threads, 1), stream,
            source, index, channels_last, first_channel, start, cols)
