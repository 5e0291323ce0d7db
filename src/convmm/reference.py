"""The literal definitions, as plain loops: the oracle the tests check every method against.

A direct loop over every output and every tap, for 1-3 spatial dims,
strides, every padding form and mode, dilation, groups, bias and both data
formats.  It shares no code with the fast paths (its own padding resolution,
its own index remapping) so that a mistake there cannot hide here.  Inputs are
anything ``numpy.asarray`` accepts; results are NumPy arrays.  Slow by design:
keep shapes small.

IEEE values: every product a definition names is made, and no other.  The padding of
``padding_mode="zeros"`` is a sample of value zero in the padded input ``x̃``, as in
PyTorch and ``np.pad`` followed by a convolution, so ``0·inf`` is NaN where a padded
sample meets an inf tap of ``conv`` (or of a weight gradient's grad_output).  The
transposed maps scatter products and never read a padded sample.

Definitions (channels-first, one spatial dim shown, ``x̃`` the padded input)::

    conv            y[n, o, l] = Σ_{c, t} W[o, c, t] · x̃[n, g·C_g + c, l·s + t·d − p_b] + b[o]
    conv_transpose  z = Cᵀ·x: every product x[n, i, l]·W[i, o, t] is added at
                    position l·s + t·d − p_b of the output (or, for a padding
                    mode, at the input sample that padded position copies)
    im2col          cols[n, c·T + t, l] = x̃[n, c, l·s + t·d − p_b]
    col2im          its adjoint: cols[n, c·T + t, l] added at that position
    toeplitz        C[(o, l), (g·C_g + c, p)] = Σ of W[o, c, t] over the taps t
                    whose padded position l·s + t·d − p_b reads input sample p
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from ._core.types import Array, DataFormat, Int, IntOrTuple, Padding, PaddingMode

__all__ = ["conv", "conv_transpose", "im2col", "col2im", "conv_backward",
           "conv_transpose_backward", "toeplitz"]


def _tuple(value, nd):
    return tuple(int(v) for v in value) if np.ndim(value) else (int(value),) * nd


def _pairs(padding, size, kernel, stride, dilation):
    nd = len(kernel)
    span = [d * (k - 1) for k, d in zip(kernel, dilation)]
    if padding == "valid":
        return [(0, 0)] * nd
    if padding == "full":
        return [(e, e) for e in span]
    if padding == "same":
        out = []
        for i, e, s in zip(size, span, stride):
            total = max((math.ceil(i / s) - 1) * s + e + 1 - i, 0)
            out.append((total // 2, total - total // 2))
        return out
    if np.ndim(padding) == 0:
        return [(int(padding), int(padding))] * nd
    return [(int(p), int(p)) if np.ndim(p) == 0 else (int(p[0]), int(p[1])) for p in padding]


def _source(p, size, mode):
    """The input sample that padded coordinate p (may be < 0 or >= size) reads; None: a zero."""
    if 0 <= p < size:
        return p
    if mode == "zeros":
        return None
    if mode == "reflect":
        return -p if p < 0 else 2 * (size - 1) - p
    if mode == "replicate":
        return 0 if p < 0 else size - 1
    if mode == "circular":
        return p % size
    if mode == "symmetric":
        return -p - 1 if p < 0 else 2 * size - 1 - p
    raise ValueError(mode)


def _sources(position, size, mode):
    found = [_source(p, n, mode) for p, n in zip(position, size)]
    return None if None in found else tuple(found)


def _read(x, channels, src):
    """``x̃[:, channels, src]``: the samples at ``src``, or zeros where ``src`` is None (a
    position in the zero padding, multiplied as a sample like any other)."""
    if src is None:
        return np.zeros(x[:, channels].shape[:2], dtype=x.dtype)
    return x[(slice(None), channels, *src)]


def _products(a, b):
    """``a @ b`` with every product made: (m, k) × (k, n) summed over k in order, so that
    ``0·inf`` is NaN (a BLAS may skip a zero operand: the reference BLAS does)."""
    out = np.zeros((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    for k in range(a.shape[1]):
        out += a[:, k:k + 1] * b[k:k + 1, :]
    return out


def _first(x, data_format):
    """Move a channels-last image to channels-first."""
    if data_format == "channels_first":
        return x
    return np.moveaxis(x, -1, 1)


def _last(y, data_format):
    return y if data_format == "channels_first" else np.moveaxis(y, 1, -1)


def _weight_first(w, data_format):
    """``(*K, C_in/G, C_out)`` → ``(C_out, C_in/G, *K)``."""
    if data_format == "channels_first":
        return w
    return np.moveaxis(np.moveaxis(w, -1, 0), -1, 1)


def _weight_last(w, data_format):
    if data_format == "channels_first":
        return w
    return np.moveaxis(np.moveaxis(w, 1, -1), 0, -1)


def _prepare(x, weight, data_format):
    weight = np.asarray(weight)
    nd = weight.ndim - 2
    x = np.asarray(x)
    batched = x.ndim == nd + 2
    if not batched:
        x = x[None]
    return _first(x, data_format), _weight_first(weight, data_format), nd, batched


def _finish(y, data_format, batched):
    y = _last(y, data_format)
    return y if batched else y[0]


def conv(x: Array, weight: Array, bias: Array | None = None, *, stride: IntOrTuple = 1,
         padding: Padding = 0, dilation: IntOrTuple = 1, groups: Int = 1,
         padding_mode: PaddingMode = "zeros",
         data_format: DataFormat = "channels_first") -> np.ndarray:
    """``convmm.conv`` by its definition: a loop over output positions and kernel taps.

    ``y[n, o, l] = Σ_{c, t} W[o, c, t] · x̃[n, g·C_g + c, l·s + t·d − p_b] + b[o]``,
    the padded sample read through ``padding_mode``'s index remapping.

    Parameters
    ----------
    x, weight, bias : array_like
        As ``convmm.conv``'s (anything ``numpy.asarray`` takes).
    stride, padding, dilation, groups, padding_mode, data_format
        As ``convmm.conv``'s (np.pad's mode names are not taken here).

    Returns
    -------
    numpy.ndarray
        ``(N, C_out, *O)`` or ``(N, *O, C_out)``, without N where x has none; the
        dtype NumPy's promotion of x and the weight gives.

    Notes
    -----
    Nothing is checked: the arguments must be valid for ``convmm.conv`` (which
    checks them); anything else may give a wrong shape or an IndexError.

    Examples
    --------
    >>> import numpy as np
    >>> from convmm import reference
    >>> reference.conv(np.array([[[1., 2, 4, 5, 3, 0]]]), np.array([[[5., 4]]]))
    array([[[13., 26., 40., 37., 15.]]])
    """
    x, w, nd, batched = _prepare(x, weight, data_format)
    strides, dilations = _tuple(stride, nd), _tuple(dilation, nd)
    size, kernel = x.shape[2:], w.shape[2:]
    pads = _pairs(padding, size, kernel, strides, dilations)
    out_size = [(i + b + a - d * (k - 1) - 1) // s + 1
                for i, (b, a), k, s, d in zip(size, pads, kernel, strides, dilations)]
    c_out, c_g = w.shape[0], w.shape[1]
    o_g = c_out // groups
    y = np.zeros((x.shape[0], c_out, *out_size), dtype=np.result_type(x, w))
    for l in itertools.product(*map(range, out_size)):
        for t in itertools.product(*map(range, kernel)):
            src = _sources([li * s + ti * d - b for li, ti, s, d, (b, _)
                            in zip(l, t, strides, dilations, pads)], size, padding_mode)
            for g in range(groups):
                patch = _read(x, slice(g * c_g, (g + 1) * c_g), src)          # (N, C_g)
                taps = w[(slice(g * o_g, (g + 1) * o_g), slice(None), *t)]     # (O_g, C_g)
                outputs: tuple[slice | int, ...] = (slice(None), slice(g * o_g, (g + 1) * o_g), *l)
                y[outputs] += _products(patch, taps.T)
    if bias is not None:
        y = y + np.asarray(bias).reshape((-1,) + (1,) * nd)
    return _finish(y, data_format, batched)


def _transposed_size(size, kernel, stride, dilation, padding, output_padding, output_size):
    if output_size is not None:
        out = list(output_size)
        return out, _pairs(padding, out, kernel, stride, dilation)
    if padding == "same":
        out = [i * s for i, s in zip(size, stride)]
        return out, _pairs(padding, out, kernel, stride, dilation)
    pads = _pairs(padding, None, kernel, stride, dilation)
    out = [(i - 1) * s - b - a + d * (k - 1) + 1 + op
           for i, s, (b, a), d, k, op in zip(size, stride, pads, dilation, kernel, output_padding)]
    return out, pads


def conv_transpose(x: Array, weight: Array, bias: Array | None = None, *,
                   stride: IntOrTuple = 1, padding: Padding = 0, output_padding: IntOrTuple = 0,
                   dilation: IntOrTuple = 1, groups: Int = 1,
                   output_size: Sequence[int] | None = None, padding_mode: PaddingMode = "zeros",
                   data_format: DataFormat = "channels_first") -> np.ndarray:
    """``convmm.conv_transpose`` by its definition: every product scattered to its place.

    Each product ``x[n, i, l]·W[i, o, t]`` is added at output position
    ``l·s + t·d − p_b`` (for a padding mode other than zeros, at the sample that
    padded position copies): ``z = Cᵀ·x``.

    Parameters
    ----------
    x, weight, bias : array_like
        As ``convmm.conv_transpose``'s.
    stride, padding, output_padding, dilation, groups, output_size, padding_mode, data_format
        As ``convmm.conv_transpose``'s.

    Returns
    -------
    numpy.ndarray
        ``(N, C_out, *O)`` or ``(N, *O, C_out)``, without N where x has none.

    Notes
    -----
    Nothing is checked: the arguments must be valid for ``convmm.conv_transpose`` (which
    checks them); anything else may give a wrong shape or an IndexError.

    Examples
    --------
    >>> import numpy as np
    >>> from convmm import reference
    >>> reference.conv_transpose(np.array([[[1., 2]]]), np.ones((1, 1, 3)), stride=2)
    array([[[1., 1., 3., 2., 2.]]])
    """
    x, w, nd, batched = _prepare(x, weight, data_format)
    strides, dilations = _tuple(stride, nd), _tuple(dilation, nd)
    size, kernel = x.shape[2:], w.shape[2:]
    out_size, pads = _transposed_size(size, kernel, strides, dilations, padding,
                                      _tuple(output_padding, nd), output_size)
    c_in, o_g = w.shape[0], w.shape[1]
    i_g = c_in // groups
    z = np.zeros((x.shape[0], o_g * groups, *out_size), dtype=np.result_type(x, w))
    for l in itertools.product(*map(range, size)):
        for t in itertools.product(*map(range, kernel)):
            dst = _sources([li * s + ti * d - b for li, ti, s, d, (b, _)
                            in zip(l, t, strides, dilations, pads)], out_size, padding_mode)
            if dst is None:
                continue
            for g in range(groups):
                values = x[(slice(None), slice(g * i_g, (g + 1) * i_g), *l)]     # (N, I_g)
                taps = w[(slice(g * i_g, (g + 1) * i_g), slice(None), *t)]      # (I_g, O_g)
                z[(slice(None), slice(g * o_g, (g + 1) * o_g), *dst)] += _products(values, taps)
    if bias is not None:
        z = z + np.asarray(bias).reshape((-1,) + (1,) * nd)
    return _finish(z, data_format, batched)


def _patch_geometry(size, kernel, stride, padding, dilation):
    nd = len(kernel)
    stride, dilation = _tuple(stride, nd), _tuple(dilation, nd)
    pads = _pairs(padding, size, kernel, stride, dilation)
    out_size = [(i + b + a - d * (k - 1) - 1) // s + 1
                for i, (b, a), k, s, d in zip(size, pads, kernel, stride, dilation)]
    return stride, dilation, pads, out_size


def _patch_pairs(size, kernel, stride, padding, dilation, padding_mode):
    """Yield (tap, output position, source position or None) multi-indices of every patch entry."""
    stride, dilation, pads, out_size = _patch_geometry(size, kernel, stride, padding, dilation)
    for l in itertools.product(*map(range, out_size)):
        for t in itertools.product(*map(range, kernel)):
            yield t, l, _sources([a * s + b * d - p for a, b, s, d, (p, _)
                                  in zip(l, t, stride, dilation, pads)], size, padding_mode)


def im2col(x: Array, kernel_size: Sequence[int], *, stride: IntOrTuple = 1,
           padding: Padding = 0, dilation: IntOrTuple = 1, padding_mode: PaddingMode = "zeros",
           data_format: DataFormat = "channels_first") -> np.ndarray:
    """``convmm.im2col`` by its definition: ``cols[n, c·T + t, l] = x̃[n, c, l·s + t·d − p_b]``.

    Parameters
    ----------
    x : array_like
        ``(N, C, *S)`` or ``(N, *S, C)``, the batch axis optional.
    kernel_size : sequence of ints
        One size per spatial dim (it fixes the rank; an int is not taken here).
    stride, padding, dilation, padding_mode, data_format
        As ``convmm.im2col``'s.

    Returns
    -------
    numpy.ndarray
        (N, C·∏K, L) channels-first or (N, L, ∏K·C) channels-last, x's dtype.

    Notes
    -----
    Nothing is checked: the arguments must be valid for ``convmm.im2col`` (which
    checks them); anything else may give a wrong shape or an IndexError.

    Examples
    --------
    >>> import numpy as np
    >>> from convmm import reference
    >>> reference.im2col(np.array([[[1., 2, 4, 5]]]), (2,))
    array([[[1., 2., 4.],
            [2., 4., 5.]]])
    """
    x = np.asarray(x)
    nd = len(kernel_size)
    batched = x.ndim == nd + 2
    x = _first(x if batched else x[None], data_format)
    n, c, *size = x.shape
    taps = math.prod(kernel_size)
    _, _, _, out_size = _patch_geometry(size, kernel_size, stride, padding, dilation)
    cols = np.zeros((n, c, *kernel_size, *out_size), dtype=x.dtype)
    for t, l, src in _patch_pairs(size, kernel_size, stride, padding, dilation, padding_mode):
        if src is not None:
            cols[(slice(None), slice(None), *t, *l)] = x[(slice(None), slice(None), *src)]
    cols = cols.reshape(n, c, taps, -1)
    if data_format == "channels_first":
        cols = cols.reshape(n, c * taps, -1)
    else:  # (N, L, T·C), row t·C + c
        cols = cols.transpose(0, 3, 2, 1).reshape(n, -1, taps * c)
    return cols if batched else cols[0]


def col2im(cols: Array, output_size: Sequence[int], kernel_size: Sequence[int], *,
           stride: IntOrTuple = 1, padding: Padding = 0, dilation: IntOrTuple = 1,
           padding_mode: PaddingMode = "zeros",
           data_format: DataFormat = "channels_first") -> np.ndarray:
    """``convmm.col2im`` by its definition: each patch entry added back where it was read.

    Parameters
    ----------
    cols : array_like
        ``im2col``'s output shape, the batch axis optional.
    output_size, kernel_size : sequence of ints
        The image's spatial size and the kernel's, one entry per spatial dim.
    stride, padding, dilation, padding_mode, data_format
        As ``convmm.col2im``'s.

    Returns
    -------
    numpy.ndarray
        ``(N, C, *output_size)`` or ``(N, *output_size, C)``, cols' dtype.

    Notes
    -----
    Nothing is checked: the arguments must be valid for ``convmm.col2im`` (which
    checks them); anything else may give a wrong shape or an IndexError.

    Examples
    --------
    >>> import numpy as np
    >>> from convmm import reference
    >>> reference.col2im(np.ones((1, 2, 3)), (4,), (2,))
    array([[[1., 2., 2., 1.]]])
    """
    cols = np.asarray(cols)
    batched = cols.ndim == 3
    cols = cols if batched else cols[None]
    taps = math.prod(kernel_size)
    n = cols.shape[0]
    if data_format == "channels_first":
        blocks = cols.reshape(n, -1, taps, cols.shape[-1])
    else:
        blocks = cols.reshape(n, cols.shape[1], taps, -1).transpose(0, 3, 2, 1)
    _, _, _, out_size = _patch_geometry(output_size, kernel_size, stride, padding, dilation)
    blocks = blocks.reshape(n, blocks.shape[1], *kernel_size, *out_size)
    image = np.zeros((n, blocks.shape[1], *output_size), dtype=cols.dtype)
    for t, l, dst in _patch_pairs(output_size, kernel_size, stride, padding, dilation,
                                  padding_mode):
        if dst is not None:
            image[(slice(None), slice(None), *dst)] += blocks[(slice(None), slice(None), *t, *l)]
    image = _last(image, data_format)
    return image if batched else image[0]


def conv_backward(grad_output: Array, x: Array, weight: Array, *, stride: IntOrTuple = 1,
                  padding: Padding = 0, dilation: IntOrTuple = 1, groups: Int = 1,
                  padding_mode: PaddingMode = "zeros",
                  data_format: DataFormat = "channels_first",
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``convmm.conv_backward`` by its definitions: (input, weight, bias) gradients.

    input: ``reference.conv_transpose(grad_output, conj(W))``; weight: the loop
    ``∂W[o, c, t] = Σ_{n, l} g[n, o, l]·conj(x̃[n, c, l·s + t·d − p_b])``; bias: the
    sum of grad_output.  PyTorch's convention for complex (conjugate gradients).

    Parameters
    ----------
    grad_output, x, weight : array_like
        As ``convmm.conv_backward``'s.
    stride, padding, dilation, groups, padding_mode, data_format
        As ``convmm.conv_backward``'s.

    Returns
    -------
    tuple of numpy.ndarray
        (∂L/∂x shaped like x, ∂L/∂W shaped like the weight, ∂L/∂b of shape (C_out,)).

    Notes
    -----
    Nothing is checked: the arguments must be valid for ``convmm.conv_backward`` (which
    checks them); anything else may give a wrong shape or an IndexError.

    Examples
    --------
    >>> import numpy as np
    >>> from convmm import reference
    >>> reference.conv_backward(np.ones((1, 1, 4)), np.arange(5.).reshape(1, 1, 5),
    ...                         np.array([[[1., -1]]]))[1]
    array([[[ 6., 10.]]])
    """
    weight = np.asarray(weight)
    nd = weight.ndim - 2
    x = np.asarray(x)
    size = x.shape[-nd:] if data_format == "channels_first" else x.shape[-nd - 1:-1]
    grad_input = conv_transpose(grad_output, np.conj(weight), stride=stride, padding=padding,
                                dilation=dilation, groups=groups, output_size=size,
                                padding_mode=padding_mode, data_format=data_format)
    g, w, _, batched = _prepare(grad_output, weight, data_format)
    xf = _first(x if batched else x[None], data_format)
    kernel = w.shape[2:]
    c_g, o_g = w.shape[1], w.shape[0] // groups
    grad_w = np.zeros(w.shape, dtype=np.result_type(g, xf, w))
    for t, l, src in _patch_pairs(size, kernel, stride, padding, dilation, padding_mode):
        for grp in range(groups):
            gl = g[(slice(None), slice(grp * o_g, (grp + 1) * o_g), *l)]          # (N, O_g)
            xs = np.conj(_read(xf, slice(grp * c_g, (grp + 1) * c_g), src))       # (N, C_g)
            grad_w[(slice(grp * o_g, (grp + 1) * o_g), slice(None), *t)] += _products(gl.T, xs)
    grad_b = g.sum(axis=(0, *range(2, g.ndim)))
    return grad_input, _weight_last(grad_w, data_format), grad_b


def conv_transpose_backward(grad_output: Array, x: Array, weight: Array, *,
                            stride: IntOrTuple = 1, padding: Padding = 0,
                            output_padding: IntOrTuple = 0, dilation: IntOrTuple = 1,
                            groups: Int = 1, output_size: Sequence[int] | None = None,
                            padding_mode: PaddingMode = "zeros",
                            data_format: DataFormat = "channels_first",
                            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``convmm.conv_transpose_backward`` by its definitions: (input, weight, bias) gradients.

    input: ``reference.conv(grad_output, conj(W))``; weight: the loop
    ``∂W[i, o, t] = Σ_{n, l} conj(x[n, i, l])·g̃[n, o, l·s + t·d − p_b]``; bias: the
    sum of grad_output.

    Parameters
    ----------
    grad_output, x, weight : array_like
        As ``convmm.conv_transpose_backward``'s.
    stride, padding, output_padding, dilation, groups, output_size, padding_mode, data_format
        As ``convmm.conv_transpose_backward``'s.

    Returns
    -------
    tuple of numpy.ndarray
        (∂L/∂x shaped like x, ∂L/∂W shaped like the weight, ∂L/∂b of shape (C_out,)).

    Notes
    -----
    Nothing is checked: the arguments must be valid for ``convmm.conv_transpose_backward`` (which
    checks them); anything else may give a wrong shape or an IndexError.

    Examples
    --------
    >>> import numpy as np
    >>> from convmm import reference
    >>> reference.conv_transpose_backward(np.arange(3.).reshape(1, 1, 3), np.ones((1, 1, 2)),
    ...                                   np.array([[[1., 2]]]))[0]
    array([[[2., 5.]]])
    """
    weight = np.asarray(weight)
    nd = weight.ndim - 2
    g, w, _, batched = _prepare(grad_output, weight, data_format)
    xf = _first(np.asarray(x) if batched else np.asarray(x)[None], data_format)
    size = xf.shape[2:]
    out_size, pads = _transposed_size(size, w.shape[2:], _tuple(stride, nd), _tuple(dilation, nd),
                                      padding, _tuple(output_padding, nd), output_size)
    explicit = [tuple(p) for p in pads]
    grad_input = conv(g, np.conj(w), stride=stride, padding=explicit, dilation=dilation,
                      groups=groups, padding_mode=padding_mode)
    # With output padding >= stride the forward convolution of the padded
    # output has more positions than x: the transposed map reads only the first.
    grad_input = _finish(grad_input[(slice(None), slice(None), *(slice(0, i) for i in size))],
                         data_format, batched)
    kernel = w.shape[2:]
    i_g, o_g = w.shape[0] // groups, w.shape[1]
    grad_w = np.zeros(w.shape, dtype=np.result_type(g, xf, w))
    for t, l, src in _patch_pairs(out_size, kernel, stride, explicit, dilation, padding_mode):
        if any(a >= b for a, b in zip(l, size)):
            continue
        for grp in range(groups):
            xl = np.conj(xf[(slice(None), slice(grp * i_g, (grp + 1) * i_g), *l)])   # (N, I_g)
            gs = _read(g, slice(grp * o_g, (grp + 1) * o_g), src)                     # (N, O_g)
            grad_w[(slice(grp * i_g, (grp + 1) * i_g), slice(None), *t)] += _products(xl.T, gs)
    grad_b = g.sum(axis=(0, *range(2, g.ndim)))
    return grad_input, _weight_last(grad_w, data_format), grad_b


def toeplitz(weight: Array, input_shape: Sequence[int], *, stride: IntOrTuple = 1,
             padding: Padding = 0, dilation: IntOrTuple = 1, groups: Int = 1,
             padding_mode: PaddingMode = "zeros",
             data_format: DataFormat = "channels_first") -> np.ndarray:
    """The dense matrix C with ``conv(x)[n].reshape(-1) == C @ x[n].reshape(-1)``, by a loop.

    ``C[(o, l), (g·C_g + c, p)]`` is the sum of ``W[o, c, t]`` over the taps t whose
    padded position ``l·s + t·d − p_b`` reads input sample p.

    Parameters
    ----------
    weight : array_like
        ``convmm.conv``'s weight.
    input_shape : sequence of ints
        One sample's shape: ``(C_in, *S)`` or ``(*S, C_in)``.
    stride, padding, dilation, groups, padding_mode, data_format
        As ``convmm.toeplitz``'s.

    Returns
    -------
    numpy.ndarray
        (C_out·∏O, C_in·∏S), the weight's dtype, rows and columns in the data
        format's order.

    Notes
    -----
    Nothing is checked: the arguments must be valid for ``convmm.toeplitz`` (which
    checks them); anything else may give a wrong shape or an IndexError.

    Examples
    --------
    >>> import numpy as np
    >>> from convmm import reference
    >>> reference.toeplitz(np.array([[[5., 4]]]), (1, 3))
    array([[5., 4., 0.],
           [0., 5., 4.]])
    """
    w = _weight_first(np.asarray(weight), data_format)
    nd = w.ndim - 2
    if data_format == "channels_first":
        c_in, size = input_shape[0], tuple(input_shape[1:])
    else:
        c_in, size = input_shape[-1], tuple(input_shape[:-1])
    stride, dilation, pads, out_size = _patch_geometry(size, w.shape[2:], stride, padding,
                                                       dilation)
    c_out, c_g = w.shape[0], w.shape[1]
    o_g = c_out // groups
    matrix = np.zeros((c_out, *out_size, c_in, *size), dtype=w.dtype)
    for t, l, src in _patch_pairs(size, w.shape[2:], stride, pads, dilation, padding_mode):
        if src is None:
            continue
        for g in range(groups):
            rows = (slice(g * o_g, (g + 1) * o_g), *l)
            cols = (slice(g * c_g, (g + 1) * c_g), *src)
            matrix[(*rows, *cols)] += w[(slice(g * o_g, (g + 1) * o_g), slice(None), *t)]
    if data_format == "channels_last":
        matrix = np.moveaxis(np.moveaxis(matrix, 0, nd), nd + 1, 2 * nd + 1)
    return matrix.reshape(c_out * math.prod(out_size), c_in * math.prod(size))
