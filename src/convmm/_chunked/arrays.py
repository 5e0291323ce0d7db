"""Dask arrays as convmm's checks see them: zero-memory stand-ins in the chunks'
namespace, one namespace for all the arrays of a call, and small graph helpers."""

from __future__ import annotations

import math

import array_api_compat
import numpy as np

from .._core.validation import library, namespace

def is_dask(*arrays) -> bool:
    """Whether any of the arrays is a Dask array (Dask not imported: none is)."""
    return any(array_api_compat.is_dask_array(a) for a in arrays if a is not None)


def chunk_module(a):
    """NumPy or CuPy: the module of a Dask array's chunks, or of a plain array."""
    meta = getattr(a, "_meta", a)
    if array_api_compat.is_cupy_array(meta):
        import cupy

        return cupy
    return np


def stand_in(a, name="x"):
    """An array of a Dask array's shape and dtype in its chunks' namespace that holds no
    memory (one zero broadcast): what the checks of a NumPy or CuPy call see of it.
    Anything else is returned as it is.  A ValueError names ``name`` where the array's
    chunk sizes are unknown (NaN, as after boolean indexing)."""
    if not is_dask(a):
        return a
    if any(math.isnan(n) for n in a.shape):
        raise ValueError(f"{name} is a Dask array of unknown chunk sizes (shape "
                         f"{tuple(a.shape)}); convmm cuts the work by the chunks: call "
                         f"{name}.compute_chunk_sizes() first")
    module = chunk_module(a)
    return module.broadcast_to(module.zeros((), dtype=a.dtype), a.shape)


def stand_in_shape(a, shape):
    module = chunk_module(a)
    return module.broadcast_to(module.zeros((), dtype=a.dtype), tuple(shape))


def kind(a):
    """What an array is, for messages: "jax", or "a Dask array of numpy chunks"."""
    if is_dask(a):
        return f"a Dask array of {library(getattr(a, '_meta', a))} chunks"
    return library(a)


def checked_namespace(**arrays):
    """The one namespace of the named arrays as their blocks will see them (a Dask array
    counts as its chunks' namespace): ``validation.namespace`` on the stand-ins, with a
    TypeError that names a Dask array as such where the namespaces differ."""
    try:
        return namespace(**{name: stand_in(a, name) for name, a in arrays.items()})
    except TypeError as error:
        if "one array namespace" not in str(error):
            raise
        present = {name: a for name, a in arrays.items() if a is not None}
        kinds = ", ".join(f"{name}: {kind(a)}" for name, a in present.items())
        raise TypeError(f"{' and '.join(present)} must come from one array namespace (a Dask "
                        f"array's is its chunks'), got {kinds}") from None


def as_dask(a):
    """A Dask array: ``a`` itself, or a plain array as one chunk."""
    if is_dask(a):
        return a
    import dask.array as da

    return da.from_array(a, chunks=a.shape)


def one_chunk(a, axis):
    return a if len(a.chunks[axis]) == 1 else a.rechunk({axis: -1})


def weight_argument(weight):
    """A Dask weight as one chunk (each block takes it whole); a plain weight as it is."""
    if is_dask(weight):
        return weight.rechunk(weight.shape)
    return weight


def empty_meta(module, ndim, dtype):
    """An empty chunk of this rank and dtype: what a Dask graph layer declares its chunks are."""
    return module.empty((0,) * ndim, dtype=dtype)
