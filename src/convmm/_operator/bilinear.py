"""Bilinear (linear, trilinear) upsampling as a depthwise transposed convolution."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import array_api_compat
import numpy as np
from array_api_compat import device as device_of

from .._core.layout import LAYOUTS
from .._core.params import DATA_FORMATS, as_int, choice, int_tuple
from .._core.validation import check_dtype, namespace, rank_from, unbatch, with_batch_axis
from .._chunked import arrays as chunked_arrays, is_dask
from .._chunked import maps as chunked_maps
from .._engines import eager
from .._core.types import Array, DataFormat, Int, IntOrTuple


def _factors(factor, nd):
    return int_tuple(factor, nd, "factor", minimum=1)


def _tent(factor):
    """1 − |j|/f for j = −(f − 1), …, f − 1: the 1-d interpolation kernel, 2f − 1 taps."""
    j = np.arange(1 - factor, factor)
    return 1.0 - np.abs(j) / factor


def bilinear_kernel(factor: IntOrTuple, channels: Int, *, dtype: Any = None,
                    data_format: DataFormat = "channels_first", xp: Any = None,
                    device: Any = None) -> Array:
    """The weight that makes ``conv_transpose`` a bilinear upsampler by ``factor``.

    Along each axis the kernel is the tent ``1 − |j|/f``, ``j = −(f−1), …, f−1``
    (2f − 1 taps); the N-d kernel is their outer product — for f = 2 in 2-d
    [[1/4, 1/2, 1/4], [1/2, 1, 1/2], [1/4, 1/2, 1/4]].  Used as
    ``conv_transpose(x, w, stride=f, padding=f − 1, groups=channels)``.

    Why it interpolates (one axis; the N-d kernel is separable): the
    transposed convolution places a copy of the tent, scaled by ``x_i``, centred
    at output ``i·f``.  At ``m = i·f + r`` with ``0 ≤ r < f`` only the tents of
    ``x_i`` and ``x_{i+1}`` reach, with heights ``1 − r/f`` and
    ``1 − (f − r)/f = r/f``, so ``y_m = (1 − r/f)·x_i + (r/f)·x_{i+1}``: the
    linear interpolation between neighbours with input sample i at output
    ``i·f``.  Padding f − 1 crops the half-tents hanging over both ends, which
    leaves ``f·(n − 1) + 1`` outputs: exactly ``interpolate(...,
    align_corners=True)`` to that size.

    Parameters
    ----------
    factor : int or sequence of ints
        The upsampling factor; an int means 2 spatial dims (bilinear), a
        sequence gives one factor per spatial dim (1 to 3 of them).
    channels : int
        The depthwise convolution's channel count.
    dtype : dtype, optional
        The weight's dtype (NumPy: float64 by default; another namespace: its
        default real floating dtype).
    data_format : "channels_first" or "channels_last"
        "channels_first" gives ``(C, 1, *K)``, "channels_last" ``(*K, 1, C)``.
    xp : array namespace, optional
        The namespace of the result (NumPy by default), e.g. ``torch`` or
        ``array_api_strict``.
    device : device, optional
        The device of the result, in ``xp``'s terms.

    Returns
    -------
    array
        ``(C, 1, *K)`` or ``(*K, 1, C)`` with K = 2f − 1 per axis.

    Raises
    ------
    TypeError
        ``factor`` or ``channels`` not integers.
    ValueError
        ``factor`` with other than 1 to 3 entries or < 1, ``channels`` < 1, an
        unknown ``data_format``.

    Examples
    --------
    >>> import convmm
    >>> convmm.bilinear_kernel(2, 1)[0, 0]
    array([[0.25, 0.5 , 0.25],
           [0.5 , 1.  , 0.5 ],
           [0.25, 0.5 , 0.25]])
    """
    nd = len(factor) if isinstance(factor, Sequence) and not isinstance(factor, str) else 2
    if nd not in (1, 2, 3):
        raise ValueError(f"factor must give 1, 2 or 3 spatial dims, got {nd}")
    factors = _factors(factor, nd)
    channels = as_int(channels, "channels")
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    layout = LAYOUTS[choice(data_format, DATA_FORMATS, "data_format")]
    kernel = _tent(factors[0])
    for f in factors[1:]:
        kernel = np.multiply.outer(kernel, _tent(f))
    if layout.name == "channels_first":
        weight = np.broadcast_to(kernel, (channels, 1, *kernel.shape))
    else:
        weight = np.broadcast_to(kernel[..., None, None], (*kernel.shape, 1, channels))
    weight = np.array(weight)   # a writable copy, never the read-only broadcast view
    xp = np if xp is None else array_api_compat.array_namespace(xp.asarray(0.0))
    if dtype is None and xp is not np:
        dtype = xp.__array_namespace_info__().default_dtypes(device=device)["real floating"]
    if xp is np:
        return weight if dtype is None else weight.astype(dtype, copy=False)
    return xp.asarray(weight, dtype=dtype, device=device)


def upsample_bilinear(x: Array, factor: IntOrTuple, *,
                      data_format: DataFormat = "channels_first") -> Array:
    """Bilinear (1-d: linear, 3-d: trilinear) upsampling of x by an integer factor per dim.

    Each spatial size n becomes ``f·(n − 1) + 1``, with input sample i at
    output i·f and linear interpolation between: equal to
    ``torch.nn.functional.interpolate(x, size=..., mode="bilinear",
    align_corners=True)``.  Computed as ``conv_transpose`` with
    ``bilinear_kernel(factor, C)``, stride f, padding f − 1, groups C.

    Parameters
    ----------
    x : array
        ``(N, C, *S)`` or ``(N, *S, C)``; an int ``factor`` means x is batched with
        ``x.ndim − 2`` spatial dims, a sequence of factors fixes the rank and x
        may then leave out the batch axis.
    factor : int or sequence of ints
        The factor f per spatial dim (>= 1).
    data_format : "channels_first" or "channels_last"
        Where x's channel axis is.

    Returns
    -------
    array
        ``(N, C, *O)`` or ``(N, *O, C)``, ``O = f·(S − 1) + 1``, x's namespace,
        device and dtype.

    Raises
    ------
    TypeError
        x not an array, an integer or bool dtype, a non-integer factor.
    ValueError
        x's rank does not match the factors (the message gives the shape
        expected), a factor < 1, an unknown ``data_format``.

    Examples
    --------
    >>> import numpy as np, convmm
    >>> convmm.upsample_bilinear(np.array([[[0., 3., 6.]]]), 3)
    array([[[0., 1., 2., 3., 4., 5., 6.]]])
    """
    chunk = chunked_arrays.stand_in(x)           # a Dask array's checks see its chunks' kind
    xp = namespace(x=chunk)
    check_dtype(xp, chunk, "x")
    nd = rank_from(factor, x.ndim - 2, "factor", x.shape)
    factors = _factors(factor, nd)
    layout = LAYOUTS[choice(data_format, DATA_FORMATS, "data_format")]
    batched, _ = with_batch_axis(xp, chunk, nd, "x")
    channels = layout.channels(batched.shape)
    real = xp.float32 if x.dtype in (xp.float32, xp.complex64) else xp.float64
    weight = bilinear_kernel(factors, channels, dtype=real, data_format=data_format, xp=xp,
                             device=device_of(chunk))
    keywords = dict(stride=factors, padding=[f - 1 for f in factors], dilation=1,
                    groups=channels, padding_mode="zeros", data_format=data_format,
                    method="auto")
    executor = chunked_maps if is_dask(x) else eager
    call, x, weight, _, _ = executor.prepare(x, weight, None, None, transposed=True, **keywords)
    return unbatch(executor.adjoint(call, x, weight, main=True), call.batched)
