"""Normalisation of the public keyword arguments.

Every public function funnels its keywords through these helpers once, at the
boundary, so that the rest of the package sees only canonical values: tuples
of Python ints of the right length, padding as ``((before, after), ...)`` or one
of the strings ``"same"``/``"full"``/``"valid"``, and validated names.  Each
error names the parameter that caused it.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import TypeVar

PADDING_STRINGS = ("valid", "same", "full")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular", "symmetric")
DATA_FORMATS = ("channels_first", "channels_last")


def as_int(value, name: str) -> int:
    """``value`` as a Python int; bools and floats are refused."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, got a bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None


def int_tuple(value, nd: int, name: str, *, minimum: int) -> tuple[int, ...]:
    """An int or a sequence of ``nd`` ints, each at least ``minimum``."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        if len(value) != nd:
            raise ValueError(
                f"{name} must be an int or a sequence of {nd} ints (one per spatial "
                f"dimension), got {len(value)} values: {tuple(value)!r}"
            )
        values = tuple(as_int(v, name) for v in value)
    else:
        values = (as_int(value, name),) * nd
    if any(v < minimum for v in values):
        raise ValueError(f"{name} must be >= {minimum} in every dimension, got {values}")
    return values


def padding_spec(padding, nd: int, name: str = "padding"):
    """Canonical padding: a string of PADDING_STRINGS or ``((before, after),) * nd``.

    Accepts an int, one int per spatial dimension, or one ``(before, after)``
    pair per spatial dimension.
    """
    if isinstance(padding, str):
        if padding not in PADDING_STRINGS:
            raise ValueError(
                f"{name} must be an int, a sequence, or one of {PADDING_STRINGS}, got "
                f"{padding!r}{did_you_mean(padding, PADDING_STRINGS)}"
            )
        return padding
    if isinstance(padding, Sequence):
        if len(padding) != nd:
            raise ValueError(
                f"{name} must have one entry per spatial dimension ({nd}), got {len(padding)}"
            )
        listed: list[tuple[int, int]] = []
        for entry in padding:
            if isinstance(entry, Sequence) and not isinstance(entry, str):
                if len(entry) != 2:
                    raise ValueError(
                        f"each {name} pair must be (before, after), got {tuple(entry)!r}"
                    )
                listed.append((as_int(entry[0], name), as_int(entry[1], name)))
            else:
                p = as_int(entry, name)
                listed.append((p, p))
        pairs = tuple(listed)
    else:
        p = as_int(padding, name)
        pairs = ((p, p),) * nd
    if any(p < 0 for pair in pairs for p in pair):
        raise ValueError(f"{name} must be non-negative, got {pairs}")
    return pairs


PADDING_ALIASES = {"constant": "zeros", "edge": "replicate", "wrap": "circular"}
"""``np.pad``'s names for convmm's padding modes, accepted as well ("reflect" and
"symmetric" mean the same in both)."""

SYNONYMS = {
    # other libraries' names for convmm's padding modes (SciPy's ndimage and signal)
    "zero": "zeros", "nearest": "replicate", "mirror": "reflect", "symm": "symmetric",
    "fill": "zeros", "grid-wrap": "circular", "grid-mirror": "symmetric",
    "grid-constant": "zeros", "periodic": "circular",
}
"""Names other libraries use for a value convmm spells differently, for "did you mean"."""


def padding_mode(value, name: str = "padding_mode") -> str:
    """A padding mode as convmm names it: one of ``PADDING_MODES`` or an ``np.pad`` name
    for one (``PADDING_ALIASES``); else ``choice``'s ValueError, with a "did you mean"."""
    if isinstance(value, str) and value in PADDING_ALIASES:
        return PADDING_ALIASES[value]
    return choice(value, PADDING_MODES, name)


_Name = TypeVar("_Name", bound=str)


def choice(value: _Name, allowed: Sequence[str], name: str) -> _Name:
    """``value`` if it is one of ``allowed``; else a ValueError naming the parameter, the
    valid values and, for a near miss or another library's name, the likely one."""
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{name} must be one of {tuple(allowed)}, got {value!r}"
                         f"{did_you_mean(value, allowed)}")
    return value


def did_you_mean(value: object, allowed: Sequence[str]) -> str:
    """" (did you mean 'x'?)" for a string near one of ``allowed`` (in spelling, in case,
    or as another library's name for it), else ""."""
    if not isinstance(value, str):
        return ""
    import difflib

    guess = SYNONYMS.get(value.lower(), value.lower())
    if guess in allowed:
        return f" (did you mean {guess!r}?)"
    close = difflib.get_close_matches(value.lower(), allowed, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def groups_count(groups, in_channels: int, out_channels: int) -> int:
    g = as_int(groups, "groups")
    if g < 1:
        raise ValueError(f"groups must be >= 1, got {g}")
    if in_channels % g or out_channels % g:
        raise ValueError(
            f"groups={g} must divide both the input channels ({in_channels}) "
            f"and the output channels ({out_channels})"
        )
    return g


ENGINE_METHODS = ("tiled_blas", "implicit_gemm", "direct", "winograd")
"""The engines' methods: the CPU engine's on NumPy arrays, the CUDA engine's on CuPy arrays
(the array-API path, ``im2col``, serves every namespace); ``winograd`` is the CPU engine's
alone."""
CONV_METHODS = ("auto", "im2col", "fft", *ENGINE_METHODS)
CONV_TRANSPOSE_METHODS = ("auto", "im2col", "zero_insertion", "fft", *ENGINE_METHODS)
GRADIENT_NAMES = ("input", "weight", "bias")
