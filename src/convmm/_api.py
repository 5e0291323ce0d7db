"""The public functions: validated once at the boundary, then planned and run.

Every public function is written once here, over an executor: ``_engines.eager``
for arrays in memory, ``_chunked.maps`` for Dask arrays.  The executor's ``prepare``
checks the arguments once with ``_core.validation`` (a ValueError or TypeError naming
the offending parameter) and lets ``_engines.policy`` check that the method asked for
can run on those arrays; its maps (forward, adjoint, weight gradient) are then planned
and run.  Nothing below trusts less than it is given here.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Callable, NamedTuple, TypeVar

# NumPy's namespace wrapper costs 0.08 s to import (it probes every numpy
# attribute); paid here rather than inside a user's first timed call.
import array_api_compat
import array_api_compat.numpy  # noqa: F401

from ._core import lowering
from ._core.algorithms import add_bias, bias_gradient, conj, correlate_over_overlap
from ._core.geometry import conv_geometry, resolve_padding as _resolve, transpose_geometry
from ._core.layout import LAYOUTS
from ._core.params import DATA_FORMATS, GRADIENT_NAMES, choice, int_tuple, padding_spec
from ._core.params import padding_mode as normalise_padding_mode
from ._core.validation import (all_finite, check_dtype, check_in_memory, checked_grad_output,
                               gradient_needs, lowering_geometry, namespace, rank_from,
                               shape_args, spatial_rank, unbatch, with_batch_axis)
from ._chunked import arrays as chunked_arrays, explain as chunked_explain, is_dask
from ._chunked import maps as chunked_maps
from ._engines import eager, policy
from ._core.types import (Array, DataFormat, Int, IntOrTuple, Method, Needs, Padding,
                          PaddingMode, PaddingPairs, Shape, SignalMode, TransposeMethod)


class ConvGrads(NamedTuple):
    """Gradients of a convolution's loss; ``None`` for what was not asked for.

    A named tuple: ``grads.input`` or ``grads[0]``, or unpacked as
    ``gi, gw, gb = grads``.

    Parameters
    ----------
    input : array or None
        ∂L/∂x, shaped like x.
    weight : array or None
        ∂L/∂W, shaped like the weight.
    bias : array or None
        ∂L/∂b, shape (C_out,).

    Examples
    --------
    >>> import numpy as np, convmm
    >>> grads = convmm.conv_backward(np.ones((1, 1, 2)), np.ones((1, 1, 3)), np.ones((1, 1, 2)),
    ...                              needs=("weight", "bias"))
    >>> grads.input is None, grads.bias
    (True, array([2.]))
    """

    # Typed as arrays (Any), not Optional: ``grads.input.shape`` after asking for the
    # input gradient needs no None check to satisfy a type checker.
    input: Array
    weight: Array
    bias: Array


# --------------------------------------------------------------------------- conv
# Each public function is written once, over an executor: ``_engines.eager`` plans and
# runs each map of arrays in memory at once; ``_chunked.maps`` builds a Dask graph of
# blocks, each run eagerly.  Both take the same arguments and return the same results.
def _executor(*arrays):
    """The executor for a call's arrays: chunked where any is a Dask array."""
    return chunked_maps if is_dask(*arrays) else eager


def _prepare(x, weight, bias, grad_output, **keywords):
    """The validated call, its method checked against the engines the arrays can use."""
    return eager.prepare(x, weight, bias, grad_output, **keywords)[0]


def _owns_its_buffer(y):
    """A NumPy or CuPy result that is its buffer, no view into a larger one: the maps have
    just made it, so it is the caller's alone."""
    if not (array_api_compat.is_numpy_array(y) or array_api_compat.is_cupy_array(y)):
        return False
    writeable = getattr(getattr(y, "flags", None), "writeable", True)
    return writeable and (y.base is None or y.base.nbytes == y.nbytes)


def _with_bias(call, y, bias):
    """y + bias, broadcast along the channel axis: in place where the result owns its
    buffer (no second output-sized array), else a new array (which also leaves no view of
    a larger buffer, as an FFT's crop would be, to the caller)."""
    if bias is None:
        return y
    if _owns_its_buffer(y):
        y += bias.reshape(call.layout.bias_shape(bias.shape[0], call.geometry.nd))
        return y
    return add_bias(call.xp, y, bias, call.layout, call.geometry.nd)


def conv(x: Array, weight: Array, bias: Array | None = None, *, stride: IntOrTuple = 1,
         padding: Padding = 0, dilation: IntOrTuple = 1, groups: Int = 1,
         padding_mode: PaddingMode = "zeros", data_format: DataFormat = "channels_first",
         method: Method = "auto") -> Array:
    """N-d convolution (cross-correlation, as in deep learning) lowered to a GEMM.

    ``y[n, o, l] = Σ_{c, t} W[o, c, t] · x̃[n, g·C_g + c, l·s + t·d] + b[o]`` with ``x̃``
    the padded input, ``g`` the group of output channel ``o``.  Computed as
    ``Y = W·P`` with ``P = im2col(x)`` of shape (N, C_in·∏K, L).

    Parameters
    ----------
    x : array
        ``(N, C_in, *S)`` channels-first or ``(N, *S, C_in)`` channels-last; the batch
        axis may be left out.  A Dask array gives a Dask array, computed block by
        block (the README's "Larger than memory" says how it is cut).
    weight : array
        ``(C_out, C_in/groups, *K)`` channels-first, ``(*K, C_in/groups, C_out)``
        channels-last; its rank fixes the number of spatial dims (1, 2 or 3).
    bias : array, optional
        (C_out,).
    stride, dilation : int or sequence of ints
        Per spatial dim, >= 1 (in samples of x).
    padding : int, sequence of ints, sequence of (before, after) pairs, "valid", "same" or "full"
        Samples added at each end of each spatial dim.  "same" gives ⌈S/s⌉
        outputs for any stride, the odd extra sample at the end; "full" pads
        d·(K − 1) at both ends.
    groups : int
        Channel groups: C_in and C_out divisible by it; C_in = groups gives a
        depthwise convolution.
    padding_mode : "zeros", "reflect", "replicate", "circular" or "symmetric"
        How x is extended (or np.pad's "constant", "edge", "wrap" for the
        first, third and fourth): "reflect" mirrors about the edge sample
        (np.pad's "reflect", scipy.ndimage's "mirror"), "symmetric" repeats it
        (np.pad's "symmetric", scipy.ndimage's "reflect"); the README's table
        maps every library's names.
    data_format : "channels_first" or "channels_last"
        Where the channel axes are, in x, the weight and the result.
    method : "auto", "im2col", "fft", "tiled_blas", "implicit_gemm", "direct" or "winograd"
        "im2col": the patch matrix (in pieces) and batched GEMMs (any namespace);
        "fft": one small matrix product per frequency in the Fourier basis (any
        namespace; its error is normwise, about ε·log₂ n of the largest values);
        "tiled_blas": patches extracted tile by tile, each tile multiplied with
        BLAS; "implicit_gemm": patches read in place by a packed GEMM; "direct":
        tap by tap, for few channels per group (these three on NumPy and CuPy);
        "winograd" (NumPy, stride 1, kernels of at most 5 taps per axis, else a
        ValueError): Winograd's F(2, r) minimal filtering (Lavin & Gray 2016);
        F(2×2, 3×3) makes 2.25× fewer multiplications at up to about twice the
        float32 rounding error of the GEMM methods, larger kernels more (5×5:
        about ten times), and an inf or NaN spreads as NaN over its tiles; "auto"
        picks (``explain`` says what and why), the FFT for NumPy arrays and kernels
        of 16 taps or more where a cost model of this machine puts it at least
        1.25× faster: its error is then normwise (outputs far smaller than the
        largest values that meet in their sums lose their relative accuracy), and
        any other method by name rules it out.

    Returns
    -------
    array
        ``(N, C_out, *O)`` or ``(N, *O, C_out)``, ``O = conv_output_shape(S, K, ...)``,
        in x's namespace and on its device; the dtype x, weight and bias
        promote to.

    Raises
    ------
    TypeError
        Arguments that are not arrays, arrays of mixed namespaces, an integer,
        bool or half dtype, a keyword of the wrong type.
    ValueError
        A weight of another rank than 3 to 5 (plain 1-d and 2-d arrays: use
        ``correlate``), x's rank or channels not matching the weight, an
        invalid stride, padding, dilation or groups, an empty output, a
        padding wider than the padding mode allows (reflect: < S; circular,
        symmetric: <= S), an unknown name (with a "did you mean"), or a
        ``method`` that cannot run on these arrays.

    See Also
    --------
    conv_transpose : the transpose (adjoint) of this map.
    conv_backward : its gradients.
    explain : which method ``auto`` picks, and why.
    correlate : the same for plain arrays, as ``scipy.signal.correlate``.

    Notes
    -----
    The padding of ``padding_mode="zeros"`` is a sample of value zero, as in PyTorch:
    an inf tap that reads it gives NaN (``convmm.reference``'s loops; the GEMM and
    direct methods make exactly the definition's products).

    The im2col lowering is Chellapilla, Puri & Simard, "High Performance
    Convolutional Neural Networks for Document Processing" (2006); the packed
    GEMM follows Goto & van de Geijn, "Anatomy of High-Performance Matrix
    Multiplication" (ACM TOMS 2008).

    Examples
    --------
    >>> import numpy as np, convmm
    >>> convmm.conv(np.array([[[1., 2, 4, 5, 3, 0]]]), np.array([[[5., 4]]]))
    array([[[13., 26., 40., 37., 15.]]])
    """
    executor = _executor(x, weight, bias)
    call, x, weight, bias, _ = executor.prepare(
        x, weight, bias, None, transposed=False, stride=stride, padding=padding,
        dilation=dilation, groups=groups, padding_mode=padding_mode, data_format=data_format,
        method=method)
    y = executor.forward(call, x, weight, main=True)
    return unbatch(_with_bias(call, y, bias), call.batched)


def conv_transpose(x: Array, weight: Array, bias: Array | None = None, *,
                   stride: IntOrTuple = 1, padding: Padding = 0, output_padding: IntOrTuple = 0,
                   dilation: IntOrTuple = 1, groups: Int = 1,
                   output_size: Sequence[int] | None = None, padding_mode: PaddingMode = "zeros",
                   data_format: DataFormat = "channels_first",
                   method: TransposeMethod = "auto") -> Array:
    """The transposed convolution: exactly the adjoint (transpose) of ``conv``.

    With C the matrix of ``conv(·, weight, stride, padding, dilation, groups)``
    from inputs of the output size O to outputs of x's size, this returns
    ``Cᵀ·x`` (+ bias).  Along each dim ``O = (S − 1)·s − p_b − p_a + d·(K − 1) + 1 + a``
    with output padding ``a`` (smaller than the stride or the dilation), or
    ``O = output_size``.

    ``padding_mode`` is the forward convolution's: for "reflect", "replicate"
    and "circular" the result is still exactly ``Cᵀ·x``, the values that land
    in the padding added back onto the samples the padding copies (PyTorch's
    transposed convolutions have zero padding only).

    Parameters
    ----------
    x : array
        ``(N, C_in, *S)`` or ``(N, *S, C_in)``; the batch axis may be left out.  A Dask
        array gives a Dask array, computed block by block.
    weight : array
        The forward convolution's weight: ``(C_in, C_out/groups, *K)`` channels-first,
        ``(*K, C_out/groups, C_in)`` channels-last (PyTorch's and TensorFlow's conventions).
    bias : array, optional
        (C_out,), added to the result.
    stride, padding, dilation, groups
        The forward convolution's (see ``conv``); "same" padding gives O = S·s.
    output_padding : int or sequence of ints
        Extra samples ``a`` at the end of each dim, smaller than the stride or
        the dilation: which of the s input sizes that map to S this transposes.
    output_size : sequence of ints, optional
        The spatial output size, instead of ``output_padding``: one of the
        sizes the forward convolution maps to S.
    padding_mode : "zeros", "reflect", "replicate", "circular" or "symmetric"
        The forward convolution's (or np.pad's "constant", "edge", "wrap").
    data_format : "channels_first" or "channels_last"
        Where the channel axes are, in x, the weight and the result.
    method : "auto", "im2col" (GEMM with Wᵀ, then col2im) or "zero_insertion"
        (insert s − 1 zeros, flip the kernel, pad d·(K − 1) − p, convolve with stride 1,
        tap by tap so that no inserted or padded zero is multiplied: an inf or NaN
        reaches only the outputs the definition sends it to; for another padding
        mode, onto the padded canvas, then the padding's adjoint), "fft" (see
        ``conv``), or an engine's
        "tiled_blas", "implicit_gemm", "direct" or "winograd" (see ``conv``;
        "winograd" where the transpose is a stride-1 convolution with the flipped
        kernel: stride 1, zero padding no wider than d·(K − 1)).

    Returns
    -------
    array
        ``(N, C_out, *O)`` or ``(N, *O, C_out)``, in x's namespace and on its device.

    Raises
    ------
    TypeError, ValueError
        As ``conv``; a ValueError for an ``output_padding`` not below the
        stride or dilation, or an ``output_size`` the forward convolution
        does not map to x's size.

    See Also
    --------
    conv : the forward map; ``conv_transpose`` is its exact adjoint.
    conv_transpose_output_shape : O from S.
    upsample_bilinear : a transposed convolution with the tent kernel.

    Notes
    -----
    The zero-insertion recipe and the output-size arithmetic are those of
    Dumoulin & Visin, "A guide to convolution arithmetic for deep learning"
    (2016); run tap by tap, each tap adding a 1×1 transposed convolution at stride s,
    it makes the products of Shi et al.'s sub-pixel convolution (CVPR 2016) without
    the zero taps of its phases, so an inf or NaN reaches only the outputs the
    definition sends it to.

    Examples
    --------
    >>> import numpy as np, convmm
    >>> x = np.array([[[[1., 2], [3, 4]]]])
    >>> convmm.conv_transpose(x, np.array([[[[1., 0], [0, -1]]]]), stride=2)[0, 0]
    array([[ 1.,  0.,  2.,  0.],
           [ 0., -1.,  0., -2.],
           [ 3.,  0.,  4.,  0.],
           [ 0., -3.,  0., -4.]])
    """
    executor = _executor(x, weight, bias)
    call, x, weight, bias, _ = executor.prepare(
        x, weight, bias, None, transposed=True, stride=stride, padding=padding,
        dilation=dilation, groups=groups, padding_mode=padding_mode, data_format=data_format,
        method=method, output_padding=output_padding, output_size=output_size)
    y = executor.adjoint(call, x, weight, main=True)
    return unbatch(_with_bias(call, y, bias), call.batched)


def conv_backward(grad_output: Array, x: Array, weight: Array, *,
                  needs: Needs = GRADIENT_NAMES, stride: IntOrTuple = 1, padding: Padding = 0,
                  dilation: IntOrTuple = 1, groups: Int = 1, padding_mode: PaddingMode = "zeros",
                  data_format: DataFormat = "channels_first",
                  method: Method = "auto") -> ConvGrads:
    """Gradients of ``conv(x, weight, bias, ...)`` given ``grad_output`` = ∂L/∂y.

    input: ``Cᴴ·grad_output`` through the transposed operator (with the adjoint
    of the padding mode); weight: ``Σ_n G·Pᴴ`` with P the patch matrix of x;
    bias: the sum of grad_output over the batch and positions.  For complex
    arrays these are the conjugate gradients that torch.autograd returns.

    Parameters
    ----------
    grad_output : array
        ∂L/∂y, shaped like ``conv``'s output: ``(N, C_out, *O)`` or ``(N, *O, C_out)``,
        the batch axis left out where x leaves it out.  Dask arrays (here or in x)
        give Dask gradients, the weight's summed over blocks in a fixed tree.
    x, weight : array
        ``conv``'s input and weight (see ``conv``); one namespace and one promoted
        float or complex dtype with grad_output.
    needs : str or sequence of "input", "weight", "bias"
        The gradients to compute (default all three).
    stride, padding, dilation, groups, padding_mode, data_format, method
        As ``conv``'s: the forward call whose gradients these are.

    Returns
    -------
    ConvGrads
        (input, weight, bias), None for the names not in ``needs``: shaped
        like x, weight and (C_out,), in x's namespace.

    Raises
    ------
    TypeError, ValueError
        As ``conv``; a ValueError where grad_output's shape is not the output's
        or ``needs`` names something else.

    Examples
    --------
    >>> import numpy as np, convmm
    >>> x, w = np.arange(5.).reshape(1, 1, 5), np.array([[[1., -1]]])
    >>> convmm.conv_backward(np.ones((1, 1, 4)), x, w).weight
    array([[[ 6., 10.]]])
    """
    executor = _executor(grad_output, x, weight)
    call, x, weight, _, g = executor.prepare(
        x, weight, None, grad_output, transposed=False, stride=stride, padding=padding,
        dilation=dilation, groups=groups, padding_mode=padding_mode, data_format=data_format,
        method=method)
    needs = gradient_needs(needs)
    g = executor.grad_output(call, g, call.geometry.output_size)
    xp = call.xp
    gi = gw = gb = None
    if "input" in needs:
        gi = unbatch(executor.adjoint(call, g, conj(xp, weight)), call.batched)
    if "weight" in needs:
        gw = executor.weight_grad(call, g, conj(xp, x), weight)
    if "bias" in needs:
        gb = bias_gradient(xp, g, call.layout)
    return ConvGrads(gi, gw, gb)


def conv_transpose_backward(grad_output: Array, x: Array, weight: Array, *,
                            needs: Needs = GRADIENT_NAMES, stride: IntOrTuple = 1,
                            padding: Padding = 0, output_padding: IntOrTuple = 0,
                            dilation: IntOrTuple = 1, groups: Int = 1,
                            output_size: Sequence[int] | None = None,
                            padding_mode: PaddingMode = "zeros",
                            data_format: DataFormat = "channels_first",
                            method: TransposeMethod = "auto") -> ConvGrads:
    """Gradients of ``conv_transpose(x, weight, bias, ...)`` given ``grad_output``.

    input: ``conv(grad_output, conj(weight))`` (the transpose of the transpose);
    weight: ``Σ_n conj(X)·im2col(grad_output)ᵀ``; bias: the sum of grad_output.

    Parameters
    ----------
    grad_output : array
        ∂L/∂y, shaped like ``conv_transpose``'s output.  Dask arrays (here or in x)
        give Dask gradients.
    x, weight : array
        ``conv_transpose``'s input and (forward convolution's) weight.
    needs : str or sequence of "input", "weight", "bias"
        The gradients to compute (default all three).
    stride, padding, output_padding, dilation, groups, output_size, padding_mode, data_format, method
        As ``conv_transpose``'s.

    Returns
    -------
    ConvGrads
        (input, weight, bias), None for the names not in ``needs``: shaped
        like x, weight and (C_out,), in x's namespace.

    Raises
    ------
    TypeError, ValueError
        As ``conv_transpose``; a ValueError where grad_output's shape is not the
        output's.

    Examples
    --------
    >>> import numpy as np, convmm
    >>> x, w = np.ones((1, 1, 2)), np.array([[[1., 2]]])
    >>> convmm.conv_transpose_backward(np.arange(3.).reshape(1, 1, 3), x, w).input
    array([[[2., 5.]]])
    """
    executor = _executor(grad_output, x, weight)
    call, x, weight, _, g = executor.prepare(
        x, weight, None, grad_output, transposed=True, stride=stride, padding=padding,
        dilation=dilation, groups=groups, padding_mode=padding_mode, data_format=data_format,
        method=method, output_padding=output_padding, output_size=output_size)
    needs = gradient_needs(needs)
    g = executor.grad_output(call, g, call.geometry.input_size)
    xp = call.xp
    gi = gw = gb = None
    if "input" in needs:
        gi = unbatch(executor.forward(call, g, conj(xp, weight)), call.batched)
    if "weight" in needs:
        gw = executor.weight_grad(call, conj(xp, x), g, weight)
    if "bias" in needs:
        gb = bias_gradient(xp, g, call.layout)
    return ConvGrads(gi, gw, gb)


_Public = TypeVar("_Public", bound=Callable[..., Any])

_RANKED_DOC = """``convmm.{name}`` for {rank} spatial dim(s), the weight's rank checked.

Takes exactly ``{name}``'s parameters and returns what it returns; the only
difference is that a weight with another number of spatial dims is refused
(``{name}`` infers the rank from the weight).

Parameters
----------
{parameters}
    As ``convmm.{name}``'s.

Returns
-------
array
    As ``convmm.{name}``'s.

Raises
------
ValueError
    The weight does not have {rank} spatial dims ({rank} + 2 axes), or as ``{name}``.
TypeError
    As ``{name}``.

See Also
--------
{name} : the same map for 1, 2 or 3 spatial dims.

Examples
--------
>>> import numpy as np, convmm
{example}
"""

_RANKED_EXAMPLES = {
    ("conv", 1): ">>> convmm.conv1d(np.ones((1, 1, 5)), np.ones((1, 1, 3)))\n"
                 "array([[[3., 3., 3.]]])",
    ("conv", 2): ">>> convmm.conv2d(np.ones((1, 1, 4, 4)), np.ones((2, 1, 3, 3)), padding=\"same\").shape\n"
                 "(1, 2, 4, 4)",
    ("conv", 3): ">>> convmm.conv3d(np.ones((1, 2, 4, 4, 4)), np.ones((3, 2, 2, 2, 2)), stride=2).shape\n"
                 "(1, 3, 2, 2, 2)",
    ("conv_transpose", 1): ">>> convmm.conv_transpose1d(np.array([[[1., 2]]]), np.ones((1, 1, 3)), stride=2)\n"
                           "array([[[1., 1., 3., 2., 2.]]])",
    ("conv_transpose", 2): ">>> convmm.conv_transpose2d(np.ones((1, 1, 2, 2)), np.ones((1, 1, 2, 2)), stride=2).shape\n"
                           "(1, 1, 4, 4)",
    ("conv_transpose", 3): ">>> x, w = np.ones((1, 2, 2, 2, 2)), np.ones((2, 4, 3, 3, 3))\n"
                           ">>> convmm.conv_transpose3d(x, w, stride=2, padding=1, output_padding=1).shape\n"
                           "(1, 4, 4, 4, 4)",
}


def _check_rank(x: Array, weight: Array, bias: Array | None, rank: int) -> None:
    """conv2d's own check: the arrays of one namespace, and a weight of 2 spatial dims."""
    chunked_arrays.checked_namespace(x=x, weight=weight, bias=bias)
    spatial_rank(weight, rank)


def _ranked(function: _Public, rank: int) -> _Public:
    """``function`` with the weight's spatial rank checked: ``conv2d`` is ``conv`` for 2-d
    weights.  It keeps ``function``'s signature (for ``help`` and type checkers)."""
    def ranked(x: Array, weight: Array, bias: Array | None = None, **kwargs: Any) -> Array:
        _check_rank(x, weight, bias, rank)
        return function(x, weight, bias, **kwargs)

    ranked.__name__ = ranked.__qualname__ = f"{function.__name__}{rank}d"
    ranked.__signature__ = inspect.signature(function)  # type: ignore[attr-defined]
    ranked.__annotations__ = dict(function.__annotations__)
    parameters = ", ".join(inspect.signature(function).parameters)
    ranked.__doc__ = _RANKED_DOC.format(name=function.__name__, rank=rank, parameters=parameters,
                                        example=_RANKED_EXAMPLES[function.__name__, rank])
    return ranked  # type: ignore[return-value]


conv1d, conv2d, conv3d = (_ranked(conv, r) for r in (1, 2, 3))
conv_transpose1d, conv_transpose2d, conv_transpose3d = (_ranked(conv_transpose, r) for r in (1, 2, 3))


# --------------------------------------------------------------------------- plain arrays
SIGNAL_MODES = ("full", "valid", "same")


def _plain_pair(in1, in2):
    """(namespace, in1, in2) checked as two plain 1-3-d arrays of one rank (both as Dask
    arrays where either is one)."""
    if is_dask(in1, in2):
        chunked_arrays.checked_namespace(in1=in1, in2=in2)
        in1, in2 = chunked_arrays.as_dask(in1), chunked_arrays.as_dask(in2)
    xp = namespace(in1=in1, in2=in2)
    for name, a in (("in1", in1), ("in2", in2)):
        if a.ndim not in (1, 2, 3):
            raise ValueError(f"{name} must be a plain 1-, 2- or 3-d array (no batch or "
                             f"channel axes; use conv for those), got shape {tuple(a.shape)}")
        if any(n < 1 for n in a.shape):
            raise ValueError(f"{name} must not be empty, got shape {tuple(a.shape)}")
        check_dtype(xp, a, name)
    if in1.ndim != in2.ndim:
        raise ValueError(f"in1 and in2 must have the same number of dimensions, got "
                         f"shapes {tuple(in1.shape)} and {tuple(in2.shape)}")
    return xp, in1, in2


def correlate(in1: Array, in2: Array, mode: SignalMode = "full", *,
              boundary: PaddingMode = "zeros", method: Method = "auto") -> Array:
    """Cross-correlate two plain 1-, 2- or 3-d arrays, as ``scipy.signal.correlate``.

    ``z[k] = Σ_l in1[l + k − p]·conj(in2[l])`` with ``p`` the padding ``mode`` implies:
    "full" (every overlap, size M + N − 1), "valid" (no padding: ``|M − N| + 1``; in1 or
    in2 must be at least as large as the other in every dimension), "same" (in1's
    size, centred on "full" as SciPy centres it: N // 2 before, (N − 1) // 2 after).
    Lowered to ``conv`` with one image of one channel and the kernel ``conj(in2)``.

    Parameters
    ----------
    in1, in2 : array
        Plain arrays of one rank (1, 2 or 3), float32, float64, complex64 or
        complex128 (promoted together), no batch or channel axes.
    mode : "full", "valid" or "same"
        Which outputs: every overlap, only full overlaps, or in1's size.
        "valid" with in2 the larger gives the outputs where in1 lies inside in2
        (SciPy swaps the inputs): no boundary extension enters them.
    boundary : "zeros", "reflect", "replicate", "circular" or "symmetric"
        How in1 is extended past its edges ("zeros" gives SciPy's results;
        otherwise ``np.pad(in1, padding, mode)`` with NumPy's "reflect", "edge",
        "wrap" or "symmetric", then "valid"; ``scipy.signal.correlate2d``'s
        "symm" is "symmetric", its "wrap" "circular", though its "same" centres
        an even kernel one sample later: see the README).
    method : str
        As ``conv``'s.  "auto" takes the FFT for NumPy arrays and kernels of 16
        taps or more where it models it at least 1.25× faster; its error is
        normwise, about ε·log₂(points) of the largest values that meet in a sum,
        so outputs far smaller than their neighbours (an input spanning many
        orders of magnitude) can lose every digit, as with SciPy's FFT.
        ``method="direct"`` (NumPy, CuPy; SciPy's name for it) or "im2col" (any
        namespace) rules the FFT out; ``explain`` on the ``conv`` call says
        which method "auto" takes.

    Returns
    -------
    array
        In in1's namespace, the promoted dtype; shape as ``mode`` says.

    Raises
    ------
    TypeError
        not arrays, mixed namespaces, an integer, bool or half dtype.
    ValueError
        another rank, an empty array, an unknown mode or boundary, "valid" with
        neither array the larger in every dimension, or a boundary wider than
        in1 allows (reflect: padding < size; circular, symmetric: padding ≤ size).

    Notes
    -----
    Each output sums the products of the overlap of in1 and in2, as
    ``numpy.correlate`` does: with ``boundary="zeros"`` an inf or NaN of in2 reaches
    only the outputs it overlaps (where in2 holds one and the mode extends in1,
    every method but "fft" sums over the overlap itself, one shifted multiply-add
    per sample of the smaller array; on Dask arrays and under ``jax.jit``, whose
    values are not known at the call, it meets the zero extension and spreads as
    NaN, as in SciPy's N-d path).  The transform methods spread a NaN or inf: "fft"
    over the whole output, "winograd" asked for by name over its tiles where no
    extension is involved ("valid").

    Examples
    --------
    >>> import numpy as np, convmm
    >>> convmm.correlate(np.array([1., 2, 3]), np.array([0., 1, 0.5]))
    array([0.5, 2. , 3.5, 3. , 0. ])
    """
    xp, in1, in2 = _plain_pair(in1, in2)
    return _correlate(xp, in1, conj(xp, in2), mode, boundary, method)


def convolve(in1: Array, in2: Array, mode: SignalMode = "full", *,
             boundary: PaddingMode = "zeros", method: Method = "auto") -> Array:
    """Convolve two plain 1-, 2- or 3-d arrays, as ``scipy.signal.convolve``.

    ``z[k] = Σ_l in1[k − l + p]·in2[l]``: ``correlate(in1, flip(in2))`` without the
    conjugate, so the same kernel flipped (as a convolution in signal
    processing, where ``conv`` is a cross-correlation as in deep learning).

    Parameters
    ----------
    in1, in2 : array
        Plain arrays of one rank (1, 2 or 3), float32, float64, complex64 or
        complex128 (promoted together), no batch or channel axes.
    mode : "full", "valid" or "same"
        As ``scipy.signal.convolve``'s (see ``correlate``).
    boundary : "zeros", "reflect", "replicate", "circular" or "symmetric"
        How in1 is extended past its edges (see ``correlate``).
    method : str
        As ``conv``'s; "auto" may take the FFT, whose error is normwise, and
        ``method="direct"`` or "im2col" rules it out (see ``correlate``).

    Returns
    -------
    array
        In in1's namespace, the promoted dtype; shape as ``mode`` says.

    Raises
    ------
    TypeError, ValueError
        As ``correlate``.

    See Also
    --------
    correlate : the cross-correlation, the kernel not flipped; its notes say how an
        inf or NaN propagates (as in ``numpy.convolve``).

    Examples
    --------
    >>> import numpy as np, convmm
    >>> convmm.convolve(np.array([1., 2, 3]), np.array([0., 1, 0.5]))
    array([0. , 1. , 2.5, 4. , 1.5])

    A 2-d box blur with SciPy's "same" centring and the edge sample repeated
    (``scipy.ndimage.uniform_filter(image, 3, mode="reflect")``):

    >>> image = np.arange(16.).reshape(4, 4)
    >>> convmm.convolve(image, np.full((3, 3), 1 / 9), "same", boundary="symmetric")[0]
    array([1.66666667, 2.33333333, 3.33333333, 4.        ])
    """
    xp, in1, in2 = _plain_pair(in1, in2)
    return _correlate(xp, in1, xp.flip(in2), mode, boundary, method)


def _correlate(xp, in1, kernel, mode, boundary, method):
    """``correlate``'s lowering: conv of one image of one channel with ``kernel``, or the
    sum over the overlap where a zero extension would meet an inf or NaN of the kernel.

    Every output is a window of the "full" correlation, whose output k sums
    ``in1[k + l − (N − 1)]·kernel[l]``: from ``start`` (per axis, in full coordinates),
    ``size`` long.  "valid" with in2 the larger is the part of "full" where in1 lies
    inside in2: what lies beyond in1's edges there is outside the sum (SciPy swaps the
    inputs), so no boundary extension enters it."""
    choice(mode, SIGNAL_MODES, "mode")
    boundary = normalise_padding_mode(boundary, "boundary")
    sizes, taps = tuple(in1.shape), tuple(kernel.shape)
    full = tuple(m + n - 1 for m, n in zip(sizes, taps))
    if mode == "full":
        start, size = (0,) * len(sizes), full
    elif mode == "same":
        start, size = tuple((n - 1) // 2 for n in taps), sizes
    elif all(m >= n for m, n in zip(sizes, taps)):
        start, size = tuple(n - 1 for n in taps), tuple(m - n + 1 for m, n in zip(sizes, taps))
    elif all(m <= n for m, n in zip(sizes, taps)):
        start, size = tuple(m - 1 for m in sizes), tuple(n - m + 1 for m, n in zip(sizes, taps))
        boundary = "zeros"
    else:
        raise ValueError(f"mode='valid' needs in1 or in2 at least as large as the other in "
                         f"every dimension, got shapes {sizes} and {taps}")
    # conv's padding: what the window reads beyond in1, before and after (conv's output
    # i is the full output i + N − 1 − before, so the window starts at conv's first).
    padding = tuple((n - 1 - b, b + c - m) for n, b, c, m in zip(taps, start, size, sizes))
    extended = any(before or after for before, after in padding)
    if (extended and boundary == "zeros" and method != "fft"
            and all_finite(xp, kernel) is False):
        return correlate_over_overlap(xp, in1, kernel, start, size)
    try:
        y = conv(xp.reshape(in1, (1, 1, *sizes)), xp.reshape(kernel, (1, 1, *taps)),
                 padding=padding, padding_mode=boundary, method=method)
    except ValueError as error:     # name correlate's parameters, not conv's
        raise ValueError(str(error).replace("padding_mode", "boundary")) from None
    return y[0, 0, ...]


# --------------------------------------------------------------------------- im2col
def im2col(x: Array, kernel_size: IntOrTuple, *, stride: IntOrTuple = 1, padding: Padding = 0,
           dilation: IntOrTuple = 1, padding_mode: PaddingMode = "zeros",
           data_format: DataFormat = "channels_first") -> Array:
    """The patch matrix (``torch.nn.functional.unfold`` generalised to 1-3 spatial dims).

    channels_first: ``(N, C, *S)`` → (N, C·∏K, L), row ``c·∏K + t`` (unfold's order);
    channels_last: ``(N, *S, C)`` → (N, L, ∏K·C), row ``t·C + c`` (tap-major, TensorFlow's order);
    ``L = ∏ conv_output_shape(S, K, ...)``, ``t`` row-major over the kernel.
    An int ``kernel_size`` means x is batched with ``x.ndim − 2`` spatial dims;
    a sequence fixes the rank, and x may then leave out the batch axis.

    Parameters
    ----------
    x : array
        ``(N, C, *S)`` or ``(N, *S, C)``, the batch axis optional where ``kernel_size``
        is a sequence; float32, float64, complex64 or complex128.
    kernel_size : int or sequence of ints
        K, per spatial dim.
    stride, padding, dilation, padding_mode, data_format
        As ``conv``'s.

    Returns
    -------
    array
        (N, C·∏K, L) or (N, L, ∏K·C) (without N where x has none), x's
        namespace, device and dtype.

    Raises
    ------
    TypeError
        x not an array (or a Dask array), an integer, bool or half dtype, a keyword of the
        wrong type.
    ValueError
        x's rank does not fit ``kernel_size`` (the message gives the shape
        expected), an invalid stride, padding or dilation, an empty output,
        an unknown name.

    See Also
    --------
    col2im : its exact adjoint.

    Examples
    --------
    >>> import numpy as np, convmm
    >>> convmm.im2col(np.arange(9.).reshape(1, 1, 3, 3), 2)[0]
    array([[0., 1., 3., 4.],
           [1., 2., 4., 5.],
           [3., 4., 6., 7.],
           [4., 5., 7., 8.]])
    """
    check_in_memory(x, "x", "im2col builds the patch matrix of one array (∏K times its size); "
                            "conv and its gradients take Dask arrays")
    xp = namespace(x=x)
    check_dtype(xp, x, "x")
    nd = rank_from(kernel_size, x.ndim - 2, "kernel_size", x.shape)
    xb, batched = with_batch_axis(xp, x, nd, "x")
    spatial = LAYOUTS[choice(data_format, DATA_FORMATS, "data_format")].spatial(xb.shape, nd)
    layout, mode, geometry = lowering_geometry(spatial, kernel_size, nd, stride, padding,
                                                dilation, padding_mode, data_format)
    return unbatch(lowering.im2col(xp, xb, geometry, mode, layout), batched)


def col2im(cols: Array, output_size: IntOrTuple, kernel_size: IntOrTuple, *,
           stride: IntOrTuple = 1, padding: Padding = 0, dilation: IntOrTuple = 1,
           padding_mode: PaddingMode = "zeros",
           data_format: DataFormat = "channels_first") -> Array:
    """The exact adjoint of ``im2col`` (``torch.nn.functional.fold`` generalised to N-d).

    ``cols`` has ``im2col``'s output shape, (N, C·∏K, L) or (N, L, ∏K·C), the
    batch axis optional; ``output_size`` is the image's spatial size.  Entries
    of overlapping patches are summed; with a padding mode other than zeros the
    padding's samples are added back onto the samples they copy.  Both sizes
    as ints mean 2 spatial dims, as in ``fold``.

    Parameters
    ----------
    cols : array
        (N, C·∏K, L) or (N, L, ∏K·C), the batch axis optional.
    output_size : int or sequence of ints
        The image's spatial size S.
    kernel_size : int or sequence of ints
        K, per spatial dim.
    stride, padding, dilation, padding_mode, data_format
        As ``im2col``'s.

    Returns
    -------
    array
        ``(N, C, *S)`` or ``(N, *S, C)`` (without N where cols has none), cols'
        namespace, device and dtype.

    Raises
    ------
    TypeError
        cols not an array (or a Dask array), an integer, bool or half dtype, a keyword of
        the wrong type.
    ValueError
        cols' shape does not match the sizes (the message gives the number
        of positions and rows expected), or invalid keywords.

    Examples
    --------
    >>> import numpy as np, convmm
    >>> convmm.col2im(np.ones((1, 2, 3)), (4,), (2,))   # overlaps counted
    array([[[1., 2., 2., 1.]]])
    """
    check_in_memory(cols, "cols", "col2im folds one patch matrix; conv_transpose takes Dask "
                                  "arrays")
    xp = namespace(cols=cols)
    check_dtype(xp, cols, "cols")
    nd = rank_from(output_size, None, "output_size") if isinstance(output_size, Sequence) \
        else rank_from(kernel_size, 2, "kernel_size")
    spatial = int_tuple(output_size, nd, "output_size", minimum=1)
    layout, mode, geometry = lowering_geometry(spatial, kernel_size, nd, stride, padding,
                                                dilation, padding_mode, data_format)
    if cols.ndim not in (2, 3):
        raise ValueError(f"cols must have 3 dimensions (or 2 unbatched), got shape {tuple(cols.shape)}")
    batched = cols.ndim == 3
    cb = cols if batched else xp.expand_dims(cols, axis=0)
    taps, positions = geometry.n_taps, geometry.n_positions
    rows, count = layout.cols_rows_and_positions(cb.shape)
    if count != positions or rows % taps or rows == 0:
        ints = ("; ints mean 2 spatial dims, as in fold: give sequences, e.g. "
                f"output_size=({spatial[0]},) for 1-d"
                if not isinstance(output_size, Sequence) else "")
        raise ValueError(
            f"cols of shape {tuple(cols.shape)} does not match output_size {spatial} and "
            f"kernel_size {geometry.kernel_size}: expected {positions} positions and a "
            f"multiple of {taps} rows ({layout.name}){ints}"
        )
    return unbatch(lowering.col2im(xp, cb, geometry, mode, layout, rows // taps), batched)


# --------------------------------------------------------------------------- shapes
def conv_output_shape(input_shape: Sequence[int], kernel_size: IntOrTuple, *,
                      stride: IntOrTuple = 1, padding: Padding = 0,
                      dilation: IntOrTuple = 1) -> Shape:
    """Spatial output size of ``conv``: ``o = ⌊(i + p_b + p_a − d·(k − 1) − 1) / s⌋ + 1`` per dim.

    The formula is Dumoulin & Visin's (relationship 15 of "A guide to
    convolution arithmetic for deep learning", 2016) with dilation and
    uneven padding.

    Parameters
    ----------
    input_shape : sequence of ints
        The spatial size S (no batch or channel axes); its length fixes the rank.
    kernel_size : int or sequence of ints
        K, per spatial dim.
    stride, padding, dilation
        As ``conv``'s.

    Returns
    -------
    tuple of int
        The spatial output size O.

    Raises
    ------
    TypeError, ValueError
        As ``conv`` for these parameters; a ValueError where O would be empty.

    Examples
    --------
    >>> import convmm
    >>> convmm.conv_output_shape((256, 256), 3, stride=3, padding=1, dilation=2)
    (85, 85)
    >>> convmm.conv_output_shape((7,), 2, stride=2, padding="same")
    (4,)
    """
    nd, size, kernel = shape_args(input_shape, kernel_size)
    return conv_geometry(size, kernel, int_tuple(stride, nd, "stride", minimum=1),
                         padding_spec(padding, nd),
                         int_tuple(dilation, nd, "dilation", minimum=1)).output_size


def conv_transpose_output_shape(input_shape: Sequence[int], kernel_size: IntOrTuple, *,
                                stride: IntOrTuple = 1, padding: Padding = 0,
                                output_padding: IntOrTuple = 0,
                                dilation: IntOrTuple = 1) -> Shape:
    """Spatial output size of ``conv_transpose``: ``(i − 1)·s − p_b − p_a + d·(k − 1) + 1 + a``.

    Parameters
    ----------
    input_shape : sequence of ints
        The transposed convolution's input size S (spatial).
    kernel_size : int or sequence of ints
        K, per spatial dim.
    stride, padding, output_padding, dilation
        As ``conv_transpose``'s.

    Returns
    -------
    tuple of int
        The spatial output size O.

    Raises
    ------
    TypeError, ValueError
        As ``conv_transpose`` for these parameters.

    Examples
    --------
    >>> import convmm
    >>> convmm.conv_transpose_output_shape((2, 2), 2, stride=2)
    (4, 4)
    """
    nd, size, kernel = shape_args(input_shape, kernel_size)
    return transpose_geometry(size, kernel, int_tuple(stride, nd, "stride", minimum=1),
                              padding_spec(padding, nd),
                              int_tuple(dilation, nd, "dilation", minimum=1),
                              int_tuple(output_padding, nd, "output_padding", minimum=0),
                              None).input_size


def resolve_padding(input_shape: Sequence[int], kernel_size: IntOrTuple, *,
                    stride: IntOrTuple = 1, padding: Padding = "same",
                    dilation: IntOrTuple = 1) -> PaddingPairs:
    """The ``(before, after)`` pairs a padding spec means for this input.

    "same" pads ``max((⌈S/s⌉ − 1)·s + d·(K − 1) + 1 − S, 0)`` in all, the odd
    sample at the end (TensorFlow's rule, for every stride); "full" pads
    ``d·(K − 1)`` at both ends; "valid" nothing.

    Parameters
    ----------
    input_shape : sequence of ints
        The spatial size S.
    kernel_size : int or sequence of ints
        K, per spatial dim.
    stride, padding, dilation
        As ``conv``'s.

    Returns
    -------
    tuple of (int, int)
        One (before, after) pair per spatial dim.

    Raises
    ------
    TypeError, ValueError
        As ``conv`` for these parameters.

    Examples
    --------
    >>> import convmm
    >>> convmm.resolve_padding((7, 8), 2, stride=2, padding="same")
    ((0, 1), (0, 0))
    >>> convmm.resolve_padding((5,), 3, padding="full", dilation=2)
    ((4, 4),)
    """
    nd, size, kernel = shape_args(input_shape, kernel_size)
    return _resolve(padding_spec(padding, nd), size, kernel,
                    int_tuple(stride, nd, "stride", minimum=1),
                    int_tuple(dilation, nd, "dilation", minimum=1))


# --------------------------------------------------------------------------- explain
_EXPLAINED: dict[str, tuple[Callable[..., Any], bool, tuple[tuple[str, str], ...]]] = {
    # name: (the public function, transposed?, the maps it runs)
    "conv": (conv, False, (("conv", "forward"),)),
    "conv_transpose": (conv_transpose, True, (("conv_transpose", "adjoint"),)),
    "conv_backward": (conv_backward, False, (("input", "adjoint"), ("weight", "weight_grad"))),
    "conv_transpose_backward": (conv_transpose_backward, True,
                                (("input", "forward"), ("weight", "weight_grad"))),
}


def explain(function: Callable[..., Any] | str, *args: Any, **kwargs: Any) -> str:
    """Which path ``function(*args, **kwargs)`` runs, with what tiles and workspace; nothing runs.

    ``function`` is ``conv``, ``conv_transpose``, ``conv_backward`` or
    ``conv_transpose_backward`` (or their 1d/2d/3d forms, or a name); the
    arguments are the ones you would pass it.  On Dask arrays the first lines say
    how the graph is cut (chunks in and out, halos, rechunks, partial sums,
    tasks), then one line per map gives the plan of its largest block.  One line per
    map the call runs (a backward pass: one per input or weight gradient asked for; the bias
    gradient, a sum, has no line, so ``needs=("bias",)`` gives an empty string).
    Raises what the call would raise (a ValueError for a ``method`` that cannot
    run the call, a ``grad_output`` of the wrong shape, ...).

    Parameters
    ----------
    function : callable or str
        The function to explain (or its name).
    *args, **kwargs
        Its arguments.

    Returns
    -------
    str
        One line per map: the method, why it was chosen, its tiles, threads
        and workspace.

    Raises
    ------
    ValueError
        ``function`` is not one of those above; otherwise as the call.
    TypeError
        As the call (a missing or unknown argument included).

    Examples
    --------
    >>> import numpy as np, convmm
    >>> x, w = np.ones((8, 64, 56, 56), np.float32), np.ones((64, 64, 3, 3), np.float32)
    >>> print(convmm.explain(convmm.conv, x, w, padding=1))   # doctest: +ELLIPSIS
    conv: implicit_gemm (real floating point, enough positions per image: patches read in place): ...
    """
    name = function if isinstance(function, str) else getattr(function, "__name__", None)
    rank = None
    if isinstance(name, str) and name[-2:] in ("1d", "2d", "3d"):
        name, rank = name[:-2], int(name[-2])
    if name not in _EXPLAINED or (rank is not None and name not in ("conv", "conv_transpose")):
        raise ValueError(f"function must be one of {sorted(_EXPLAINED)} or conv1d … "
                         f"conv_transpose3d (for correlate, convolve or upsample_bilinear, "
                         f"explain the conv call they make), got {function!r}")
    public, transposed, maps = _EXPLAINED[name]
    bound = inspect.signature(public).bind(*args, **kwargs)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    needs = gradient_needs(arguments.pop("needs", ()))
    grad_output = arguments.pop("grad_output", None)
    x, weight, bias = arguments.pop("x"), arguments.pop("weight"), arguments.pop("bias", None)
    if rank is not None:
        _check_rank(x, weight, bias, rank)
    if is_dask(x, weight, bias, grad_output):    # how the graph is cut, block by block
        return chunked_explain.explain(transposed, maps, needs, public(*args, **kwargs), x, weight, bias,
                             grad_output, arguments)
    call = _prepare(x, weight, bias, grad_output, transposed=transposed, **arguments)
    if grad_output is not None:     # the shape the backward pass would check
        checked_grad_output(call, call.geometry.input_size if transposed
                            else call.geometry.output_size)
    lines = []
    for label, operation in maps:
        if "grad_output" in bound.arguments and label not in needs:
            continue
        planner = policy.main_plan if label in ("conv", "conv_transpose") else policy.plan
        lines.append(f"{label}: " + planner(call, operation).describe().split(": ", 1)[1])
    return "\n".join(lines)
