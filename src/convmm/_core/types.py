"""The types in convmm's public signatures.

Names (padding modes, data formats, methods, modes) are ``Literal`` types, as NumPy
types ``np.pad``'s ``mode``: a name held in a ``str`` variable needs the Literal as
its annotation for a type checker to accept it.

Arrays are typed as ``Any``: convmm takes arrays of every namespace that
array-api-compat recognises (NumPy, CuPy, PyTorch, JAX, array_api_strict, ...), and
these share no base class and, across the versions convmm supports, no common
protocol a type checker could verify.  The names below say what each argument
means; the docstrings give shapes and dtypes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, SupportsIndex, TypeAlias, Union

Array: TypeAlias = Any
"""An array of any array-API namespace (``numpy.ndarray``, ``cupy.ndarray``, ``torch.Tensor``, ...)."""

Int: TypeAlias = SupportsIndex
"""An integer: a Python int or a NumPy integer (anything ``operator.index`` takes)."""

IntOrTuple: TypeAlias = Union[SupportsIndex, Sequence[SupportsIndex]]
"""One int for every spatial dim, or one per spatial dim."""

Padding: TypeAlias = Union[SupportsIndex, str, Sequence[Union[SupportsIndex, Sequence[SupportsIndex]]]]
"""An int, one int or one (before, after) pair per spatial dim, or "valid", "same", "full"."""

PaddingPairs: TypeAlias = tuple[tuple[int, int], ...]
"""Resolved padding: one (before, after) pair per spatial dim."""

Shape: TypeAlias = tuple[int, ...]

PaddingMode: TypeAlias = Literal["zeros", "reflect", "replicate", "circular", "symmetric",
                                 "constant", "edge", "wrap"]
"""convmm's padding modes and np.pad's names for them ("constant", "edge", "wrap")."""

DataFormat: TypeAlias = Literal["channels_first", "channels_last"]

Method: TypeAlias = Literal["auto", "im2col", "fft", "tiled_blas", "implicit_gemm", "direct",
                            "winograd"]
"""The lowerings ``conv``, ``conv_backward`` and ``ConvOperator`` take."""

TransposeMethod: TypeAlias = Literal["auto", "im2col", "zero_insertion", "fft", "tiled_blas",
                                     "implicit_gemm", "direct", "winograd"]
"""The lowerings ``conv_transpose`` and ``conv_transpose_backward`` take."""

SignalMode: TypeAlias = Literal["full", "valid", "same"]

Needs: TypeAlias = Union[str, Sequence[str]]
"""The gradients a backward pass computes: "input", "weight", "bias" or a sequence of them."""
