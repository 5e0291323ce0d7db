"""The public functions: validation at the boundary, then the array-API algorithms.

Every public function validates its arguments here, once, and raises a
ValueError or TypeError naming the offending parameter; everything below
(``_conv``, ``_lowering``, ``_plan``) trusts what it is given.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import array_api_compat
# NumPy's namespace wrapper costs 0.08 s to import (it probes every numpy
# attribute); paid here rather than inside a user's first timed call.
import array_api_compat.numpy  # noqa: F401

from . import _conv, _engine, _lowering
from ._geometry import ConvGeometry, conv_geometry, resolve_padding as _resolve, transpose_geometry
from ._layout import LAYOUTS
from ._lowering import col2im as _col2im, im2col as _im2col
from ._params import (DATA_FORMATS, PADDING_MODES, as_int, choice, groups_count, int_tuple,
                      padding_spec)

CONV_METHODS = ("auto", "im2col", *_engine.ENGINE_METHODS)
CONV_TRANSPOSE_METHODS = ("auto", "im2col", "zero_insertion", *_engine.ENGINE_METHODS)
GRADIENT_NAMES = ("input", "weight", "bias")


class ConvGrads(NamedTuple):
    """Gradients of a convolution's loss; ``None`` for what was not asked for."""

    input: Any
    weight: Any
    bias: Any


# --------------------------------------------------------------------------- arrays
def _namespace(**arrays):
    present = {name: a for name, a in arrays.items() if a is not None}
    for name, a in present.items():
        try:
            array_api_compat.array_namespace(a)
        except TypeError:
            raise TypeError(f"{name} must be an array, got {type(a).__name__}") from None
    try:
        return array_api_compat.array_namespace(*present.values())
    except TypeError:
        kinds = ", ".join(f"{n}: {type(a).__module__}.{type(a).__name__}" for n, a in present.items())
        raise TypeError(
            f"{' and '.join(present)} must come from one array namespace, got {kinds}"
        ) from None


def _check_dtype(xp, a, name):
    allowed = (xp.float32, xp.float64, xp.complex64, xp.complex128)
    if a.dtype not in allowed:
        raise TypeError(
            f"{name} has dtype {a.dtype}; convmm computes in float32, float64, complex64 or "
            f"complex128: cast it first, e.g. xp.astype({name}, xp.float32)"
        )


def _common_dtype(xp, **arrays):
    """Check each array's dtype and promote them all as the array API does."""
    present = {name: a for name, a in arrays.items() if a is not None}
    for name, a in present.items():
        _check_dtype(xp, a, name)
    dtype = xp.result_type(*(a.dtype for a in present.values()))
    return {name: (a if a is None or a.dtype == dtype else xp.astype(a, dtype))
            for name, a in arrays.items()}


def _spatial_rank(weight, expected=None):
    nd = weight.ndim - 2
    if nd not in (1, 2, 3):
        raise ValueError(
            f"weight must have 3, 4 or 5 dimensions (1, 2 or 3 spatial dims), got shape "
            f"{tuple(weight.shape)}"
        )
    if expected is not None and nd != expected:
        raise ValueError(
            f"weight must have {expected + 2} dimensions for a {expected}-d convolution, "
            f"got shape {tuple(weight.shape)}"
        )
    return nd


def _batched(xp, x, nd, name):
    """(x with a batch axis, whether it came with one)."""
    if x.ndim == nd + 2:
        return x, True
    if x.ndim == nd + 1:
        return xp.expand_dims(x, axis=0), False
    raise ValueError(
        f"{name} must have {nd + 2} dimensions (batched) or {nd + 1} (unbatched) for a "
        f"{nd}-d convolution, got shape {tuple(x.shape)}"
    )


def _unbatch(a, batched):
    return a if batched or a is None else a[0, ...]


def _kernel(kernel, nd, name="weight"):
    if any(k < 1 for k in kernel) or len(kernel) != nd:
        raise ValueError(f"{name} must have a kernel size >= 1 in every spatial dim, got {kernel}")
    return tuple(int(k) for k in kernel)


def _output_size(output_size, nd, layout):
    if output_size is None:
        return None
    if not isinstance(output_size, Sequence) or isinstance(output_size, str):
        raise TypeError(f"output_size must be a sequence of ints, got {output_size!r}")
    sizes = tuple(as_int(o, "output_size") for o in output_size)
    if len(sizes) == nd + 2:  # a full shape, as PyTorch accepts
        sizes = layout.spatial(sizes, nd)
    if len(sizes) != nd:
        raise ValueError(
            f"output_size must give the {nd} spatial sizes (or a full {nd + 2}-d shape), "
            f"got {tuple(output_size)}"
        )
    return sizes


def _needs(needs):
    if isinstance(needs, str):
        needs = (needs,)
    needs = tuple(needs)
    for name in needs:
        if name not in GRADIENT_NAMES:
            raise ValueError(f"needs must name some of {GRADIENT_NAMES}, got {name!r}")
    return frozenset(needs)


# --------------------------------------------------------------------------- calls
@dataclass(frozen=True)
class _Call:
    """A validated convolution call: batched input, promoted arrays, resolved geometry."""

    xp: Any
    layout: type
    x: Any
    weight: Any
    bias: Any
    geometry: ConvGeometry
    groups: int
    mode: str
    method: str
    batched: bool
    out_channels: int
    grad_output: Any = None  # the backward passes' ∂L/∂y, promoted like the rest


def _prepare(x, weight, bias, grad_output, *, transposed, stride, padding, dilation,
             groups, padding_mode, data_format, method, output_padding=0, output_size=None):
    xp = _namespace(x=x, weight=weight, bias=bias, grad_output=grad_output)
    arrays = _common_dtype(xp, x=x, weight=weight, bias=bias, grad_output=grad_output)
    nd = _spatial_rank(arrays["weight"])
    x, batched = _batched(xp, arrays["x"], nd, "x")
    return _configure(xp, x, tuple(x.shape), arrays["weight"], arrays["bias"],
                      arrays["grad_output"], batched, "x", transposed=transposed, stride=stride,
                      padding=padding, dilation=dilation, groups=groups,
                      padding_mode=padding_mode, data_format=data_format, method=method,
                      output_padding=output_padding, output_size=output_size)


def _configure(xp, x, x_shape, weight, bias, grad_output, batched, x_name, *, transposed, stride,
               padding, dilation, groups, padding_mode, data_format, method, output_padding=0,
               output_size=None):
    """The keywords checked against a batched input shape and the weight: a ``_Call``."""
    layout = LAYOUTS[choice(data_format, DATA_FORMATS, "data_format")]
    mode = choice(padding_mode, PADDING_MODES, "padding_mode")
    methods = CONV_TRANSPOSE_METHODS if transposed else CONV_METHODS
    method = choice(method, methods, "method")
    if method in _engine.ENGINE_METHODS and _engine.device(weight) is None:
        if array_api_compat.is_cupy_array(weight):
            from ._cuda_engine import unavailable_reason

            raise RuntimeError(f"method={method!r} on CuPy arrays needs the CUDA engine, "
                               f"which is not available: {unavailable_reason()}; 'auto' and "
                               f"'im2col' run on CuPy without it")
        raise ValueError(
            f"method={method!r} is the CPU engine's (NumPy) and the CUDA engine's (CuPy); "
            f"use 'auto' or 'im2col' for {type(weight).__module__} arrays"
        )
    nd = _spatial_rank(weight)
    stride = int_tuple(stride, nd, "stride", minimum=1)
    dilation = int_tuple(dilation, nd, "dilation", minimum=1)
    padding = padding_spec(padding, nd)

    # The forward convolution's channels: the weight is always the forward weight.
    fwd_out, fwd_in_per_group, kernel = layout.weight_parts(weight.shape, nd)
    kernel = _kernel(kernel, nd)
    if fwd_out < 1 or fwd_in_per_group < 1:
        raise ValueError(f"weight has no channels: shape {tuple(weight.shape)}")
    channels = layout.channels(x_shape)
    if transposed:  # x stands where the forward convolution's output was
        groups = groups_count(groups, channels, fwd_in_per_group * as_int(groups, "groups"))
        expected, out_channels = fwd_out, fwd_in_per_group * groups
    else:
        groups = groups_count(groups, channels, fwd_out)
        expected, out_channels = fwd_in_per_group * groups, fwd_out
    if channels != expected:
        raise ValueError(
            f"{x_name} has {channels} channels but weight of shape {tuple(weight.shape)} with "
            f"groups={groups} expects {expected} ({layout.name})"
        )
    if bias is not None and tuple(bias.shape) != (out_channels,):
        raise ValueError(f"bias must have shape ({out_channels},), got {tuple(bias.shape)}")

    spatial = layout.spatial(x_shape, nd)
    if transposed:
        geometry = transpose_geometry(
            spatial, kernel, stride, padding, dilation,
            int_tuple(output_padding, nd, "output_padding", minimum=0),
            _output_size(output_size, nd, layout), mode)
    else:
        geometry = conv_geometry(spatial, kernel, stride, padding, dilation, mode)
    return _Call(xp, layout, x, weight, bias, geometry, groups, mode, method, batched,
                 out_channels, grad_output)


def _prepare_operator(weight, input_shape, *, stride, padding, dilation, groups, padding_mode,
                      data_format, method="auto"):
    """A ``_Call`` without an input, for the explicit operator on one sample of ``input_shape``."""
    xp = _namespace(weight=weight)
    _check_dtype(xp, weight, "weight")
    nd = _spatial_rank(weight)
    if not isinstance(input_shape, Sequence) or isinstance(input_shape, str):
        raise TypeError(f"input_shape must be a sequence of ints, got {input_shape!r}")
    if len(input_shape) != nd + 1:
        raise ValueError(
            f"input_shape must be one sample's shape, {nd + 1} ints (channels and {nd} spatial "
            f"sizes) for weight of shape {tuple(weight.shape)}, got {tuple(input_shape)}"
        )
    shape = tuple(as_int(s, "input_shape") for s in input_shape)
    if any(s < 1 for s in shape):
        raise ValueError(f"input_shape must be positive, got {shape}")
    return _configure(xp, None, (1, *shape), weight, None, None, True, "input_shape",
                      transposed=False, stride=stride, padding=padding, dilation=dilation,
                      groups=groups, padding_mode=padding_mode, data_format=data_format,
                      method=method)


def _checked_grad_output(call, spatial):
    """The call's grad_output, batched like x, checked against the shape of the output."""
    grad_output = call.grad_output
    expected = call.layout.image_shape(call.x.shape[0], call.out_channels, spatial)
    if not call.batched:
        expected = expected[1:]
    if tuple(grad_output.shape) != tuple(expected):
        raise ValueError(
            f"grad_output must have the output's shape {tuple(expected)}, "
            f"got {tuple(grad_output.shape)}"
        )
    return grad_output if call.batched else call.xp.expand_dims(grad_output, axis=0)


# --------------------------------------------------------------------------- conv
def conv(x, weight, bias=None, *, stride=1, padding=0, dilation=1, groups=1,
         padding_mode="zeros", data_format="channels_first", method="auto"):
    """N-d convolution (cross-correlation, as in deep learning) lowered to a GEMM.

    ``y[n, o, l] = Σ_{c, t} W[o, c, t] · x̃[n, g·C_g + c, l·s + t·d] + b[o]`` with ``x̃``
    the padded input, ``g`` the group of output channel ``o``.  Computed as
    ``Y = W·P`` with ``P = im2col(x)`` of shape (N, C_in·∏K, L).

    Parameters
    ----------
    x : array
        (N, C_in, *S) channels-first or (N, *S, C_in) channels-last; the batch
        axis may be left out.
    weight : array
        (C_out, C_in/groups, *K) channels-first, (*K, C_in/groups, C_out)
        channels-last; its rank fixes the number of spatial dims (1, 2 or 3).
    bias : array, optional
        (C_out,).
    stride, dilation : int or sequence of ints
    padding : int, sequence of ints, sequence of (before, after) pairs, "valid", "same" or "full"
        "same" gives ⌈S/s⌉ outputs for any stride, the odd extra sample at the end.
    groups : int
    padding_mode : "zeros", "reflect", "replicate" or "circular"
    data_format : "channels_first" or "channels_last"
    method : "auto", "im2col" or "tiled_blas"
        "im2col": the whole patch matrix and one batched GEMM (any namespace);
        "tiled_blas" (NumPy only): patches extracted tile by tile by a Numba
        kernel, each tile multiplied with BLAS; "auto" picks (``explain`` says what).

    Returns
    -------
    array in x's namespace and device: (N, C_out, *O) or (N, *O, C_out).

    Examples
    --------
    >>> import numpy as np, convmm
    >>> convmm.conv(np.array([[[1., 2, 4, 5, 3, 0]]]), np.array([[[5., 4]]]))
    array([[[13., 26., 40., 37., 15.]]])
    """
    call = _prepare(x, weight, bias, None, transposed=False, stride=stride,
                    padding=padding, dilation=dilation, groups=groups,
                    padding_mode=padding_mode, data_format=data_format, method=method)
    return _run_conv(call)


def _run_conv(call):
    xp = call.xp
    plan = _engine.plan(call, "forward")
    if plan.method in _engine.ENGINE_METHODS:
        y = _engine.forward(call, plan, call.x, call.weight)
        if call.bias is not None:   # in place: no second output-sized array
            y += call.bias.reshape(call.layout.bias_shape(call.bias.shape[0], call.geometry.nd))
    else:
        y = _conv.conv_forward(xp, call.x, call.weight, call.geometry, call.mode, call.groups,
                               call.layout)
        y = _conv.add_bias(xp, y, call.bias, call.layout, call.geometry.nd)
    return _unbatch(y, call.batched)


def conv_transpose(x, weight, bias=None, *, stride=1, padding=0, output_padding=0, dilation=1,
                   groups=1, output_size=None, padding_mode="zeros", data_format="channels_first",
                   method="auto"):
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
        (N, C_in, *S) or (N, *S, C_in); the batch axis may be left out.
    weight : array
        The forward convolution's weight: (C_in, C_out/groups, *K) channels-first,
        (*K, C_out/groups, C_in) channels-last (PyTorch's and TensorFlow's conventions).
    padding_mode : "zeros", "reflect", "replicate" or "circular"
    method : "auto", "im2col" (GEMM with Wᵀ, then col2im) or "zero_insertion"
        (insert s − 1 zeros, flip the kernel, pad d·(K − 1) − p, convolve with stride 1;
        for another padding mode, onto the padded canvas, then the padding's adjoint).

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
    call = _prepare(x, weight, bias, None, transposed=True, stride=stride,
                    padding=padding, dilation=dilation, groups=groups, padding_mode=padding_mode,
                    data_format=data_format, method=method, output_padding=output_padding,
                    output_size=output_size)
    return _run_conv_transpose(call)


def _run_conv_transpose(call):
    xp = call.xp
    y = _adjoint(call, _engine.plan(call, "adjoint"), call.x, call.weight)
    if call.bias is not None and array_api_compat.is_numpy_array(y):
        y += call.bias.reshape(call.layout.bias_shape(call.bias.shape[0], call.geometry.nd))
    else:
        y = _conv.add_bias(xp, y, call.bias, call.layout, call.geometry.nd)
    return _unbatch(y, call.batched)


def _forward(call, plan, x, weight):
    """C·x without bias, by the plan's method."""
    if plan.method in _engine.ENGINE_METHODS:
        return _engine.forward(call, plan, x, weight)
    return _conv.conv_forward(call.xp, x, weight, call.geometry, call.mode, call.groups,
                              call.layout)


def _adjoint(call, plan, y, weight):
    """Cᵀ·y without bias, by the plan's method."""
    if plan.method in _engine.ENGINE_METHODS:
        return _engine.adjoint(call, plan, y, weight)
    return _conv.conv_adjoint(call.xp, y, weight, call.geometry, call.mode, call.groups,
                              call.layout, plan.method)


def _weight_grad(call, plan, a, b):
    """Σ_n A·P(b)ᵀ shaped like the weight, by the plan's method."""
    if plan.method in _engine.ENGINE_METHODS:
        return _engine.weight_grad(call, plan, a, b)
    xp, layout = call.xp, call.layout
    cols = _lowering.im2col(xp, b, call.geometry, call.mode, layout)
    return _conv.weight_gradient(xp, layout.output_operand(xp, a, call.groups), cols,
                                 call.weight.shape, call.geometry, call.groups, layout)


def _gradient_plans(call, needs, input_operation):
    """The plans a backward pass runs, by gradient name (explain shows them)."""
    plans = {}
    if "input" in needs:
        plans["input"] = _engine.plan(call, input_operation)
    if "weight" in needs:
        plans["weight"] = _engine.plan(call, "weight_grad")
    return plans


def conv_backward(grad_output, x, weight, *, needs=GRADIENT_NAMES, stride=1, padding=0,
                  dilation=1, groups=1, padding_mode="zeros", data_format="channels_first",
                  method="auto"):
    """Gradients of ``conv(x, weight, bias, ...)`` given ``grad_output`` = ∂L/∂y.

    input: ``Cᴴ·grad_output`` through the transposed operator (with the adjoint
    of the padding mode); weight: ``Σ_n G·Pᴴ`` with P the patch matrix of x;
    bias: the sum of grad_output over the batch and positions.  For complex
    arrays these are the conjugate gradients that torch.autograd returns.

    Returns
    -------
    ConvGrads(input, weight, bias), None for the names not in ``needs``.
    """
    call = _prepare(x, weight, None, grad_output, transposed=False, stride=stride,
                    padding=padding, dilation=dilation, groups=groups,
                    padding_mode=padding_mode, data_format=data_format, method=method)
    needs = _needs(needs)
    g = _checked_grad_output(call, call.geometry.output_size)
    plans = _gradient_plans(call, needs, "adjoint")
    xp = call.xp
    gi = gw = gb = None
    if "input" in needs:
        gi = _unbatch(_adjoint(call, plans["input"], g, _conv.conj(xp, call.weight)), call.batched)
    if "weight" in needs:
        gw = _weight_grad(call, plans["weight"], g, _conv.conj(xp, call.x))
    if "bias" in needs:
        gb = _conv.bias_gradient(xp, g, call.layout)
    return ConvGrads(gi, gw, gb)


def conv_transpose_backward(grad_output, x, weight, *, needs=GRADIENT_NAMES, stride=1, padding=0,
                            output_padding=0, dilation=1, groups=1, output_size=None,
                            padding_mode="zeros", data_format="channels_first", method="auto"):
    """Gradients of ``conv_transpose(x, weight, bias, ...)`` given ``grad_output``.

    input: ``conv(grad_output, conj(weight))`` (the transpose of the transpose);
    weight: ``Σ_n conj(X)·im2col(grad_output)ᵀ``; bias: the sum of grad_output.
    """
    call = _prepare(x, weight, None, grad_output, transposed=True, stride=stride,
                    padding=padding, dilation=dilation, groups=groups, padding_mode=padding_mode,
                    data_format=data_format, method=method, output_padding=output_padding,
                    output_size=output_size)
    needs = _needs(needs)
    g = _checked_grad_output(call, call.geometry.input_size)
    plans = _gradient_plans(call, needs, "forward")
    xp = call.xp
    gi = gw = gb = None
    if "input" in needs:
        gi = _unbatch(_forward(call, plans["input"], g, _conv.conj(xp, call.weight)), call.batched)
    if "weight" in needs:
        gw = _weight_grad(call, plans["weight"], _conv.conj(xp, call.x), g)
    if "bias" in needs:
        gb = _conv.bias_gradient(xp, g, call.layout)
    return ConvGrads(gi, gw, gb)


def _ranked(function, rank):
    def ranked(x, weight, bias=None, **kwargs):
        _namespace(x=x, weight=weight, bias=bias)
        _spatial_rank(weight, rank)
        return function(x, weight, bias, **kwargs)

    ranked.__name__ = ranked.__qualname__ = f"{function.__name__}{rank}d"
    ranked.__doc__ = f"``{function.__name__}`` with a {rank}-d weight (checked).\n\n" \
                     f"See ``convmm.{function.__name__}`` for the parameters."
    return ranked


conv1d, conv2d, conv3d = (_ranked(conv, r) for r in (1, 2, 3))
conv_transpose1d, conv_transpose2d, conv_transpose3d = (_ranked(conv_transpose, r) for r in (1, 2, 3))


# --------------------------------------------------------------------------- im2col
def _lowering_geometry(spatial, kernel_size, nd, stride, padding, dilation, padding_mode,
                       data_format):
    layout = LAYOUTS[choice(data_format, DATA_FORMATS, "data_format")]
    mode = choice(padding_mode, PADDING_MODES, "padding_mode")
    geometry = conv_geometry(tuple(spatial), int_tuple(kernel_size, nd, "kernel_size", minimum=1),
                             int_tuple(stride, nd, "stride", minimum=1), padding_spec(padding, nd),
                             int_tuple(dilation, nd, "dilation", minimum=1), mode)
    return layout, mode, geometry


def _rank_from(kernel_size, fallback, name):
    if isinstance(kernel_size, Sequence) and not isinstance(kernel_size, str):
        nd = len(kernel_size)
    else:
        as_int(kernel_size, name)
        nd = fallback
    if nd not in (1, 2, 3):
        raise ValueError(f"{name} must describe 1, 2 or 3 spatial dims, got {nd}")
    return nd


def im2col(x, kernel_size, *, stride=1, padding=0, dilation=1, padding_mode="zeros",
           data_format="channels_first"):
    """The patch matrix (``torch.nn.functional.unfold`` generalised to 1-3 spatial dims).

    channels_first: (N, C, *S) → (N, C·∏K, L), row ``c·∏K + t`` (unfold's order);
    channels_last: (N, *S, C) → (N, L, ∏K·C), row ``t·C + c`` (the seed's order);
    ``L = ∏ conv_output_shape(S, K, ...)``, ``t`` row-major over the kernel.
    An int ``kernel_size`` means x is batched with ``x.ndim − 2`` spatial dims;
    a sequence fixes the rank, and x may then leave out the batch axis.

    Examples
    --------
    >>> import numpy as np, convmm
    >>> convmm.im2col(np.arange(9.).reshape(1, 1, 3, 3), 2)[0]
    array([[0., 1., 3., 4.],
           [1., 2., 4., 5.],
           [3., 4., 6., 7.],
           [4., 5., 7., 8.]])
    """
    xp = _namespace(x=x)
    _check_dtype(xp, x, "x")
    nd = _rank_from(kernel_size, x.ndim - 2, "kernel_size")
    xb, batched = _batched(xp, x, nd, "x")
    spatial = LAYOUTS[choice(data_format, DATA_FORMATS, "data_format")].spatial(xb.shape, nd)
    layout, mode, geometry = _lowering_geometry(spatial, kernel_size, nd, stride, padding,
                                                dilation, padding_mode, data_format)
    return _unbatch(_im2col(xp, xb, geometry, mode, layout), batched)


def col2im(cols, output_size, kernel_size, *, stride=1, padding=0, dilation=1,
           padding_mode="zeros", data_format="channels_first"):
    """The exact adjoint of ``im2col`` (``torch.nn.functional.fold`` generalised to N-d).

    ``cols`` has ``im2col``'s output shape, (N, C·∏K, L) or (N, L, ∏K·C), the
    batch axis optional; ``output_size`` is the image's spatial size.  Entries
    of overlapping patches are summed; with a padding mode other than zeros the
    padding's samples are added back onto the samples they copy.  Both sizes
    as ints mean 2 spatial dims, as in ``fold``.
    """
    xp = _namespace(cols=cols)
    _check_dtype(xp, cols, "cols")
    nd = _rank_from(output_size, None, "output_size") if isinstance(output_size, Sequence) \
        else _rank_from(kernel_size, 2, "kernel_size")
    spatial = int_tuple(output_size, nd, "output_size", minimum=1)
    layout, mode, geometry = _lowering_geometry(spatial, kernel_size, nd, stride, padding,
                                                dilation, padding_mode, data_format)
    if cols.ndim not in (2, 3):
        raise ValueError(f"cols must have 3 dimensions (or 2 unbatched), got shape {tuple(cols.shape)}")
    batched = cols.ndim == 3
    cb = cols if batched else xp.expand_dims(cols, axis=0)
    taps, positions = geometry.n_taps, geometry.n_positions
    rows, count = layout.cols_rows_and_positions(cb.shape)
    if count != positions or rows % taps or rows == 0:
        raise ValueError(
            f"cols of shape {tuple(cols.shape)} does not match output_size {spatial} and "
            f"kernel_size {geometry.kernel_size}: expected {positions} positions and a "
            f"multiple of {taps} rows ({layout.name})"
        )
    return _unbatch(_col2im(xp, cb, geometry, mode, layout, rows // taps), batched)


# --------------------------------------------------------------------------- shapes
def _shape_args(input_shape, kernel_size):
    if not isinstance(input_shape, Sequence) or isinstance(input_shape, str):
        raise TypeError(f"input_shape must be a sequence of spatial sizes, got {input_shape!r}")
    nd = len(input_shape)
    if nd < 1:
        raise ValueError("input_shape must have at least one spatial size")
    return nd, int_tuple(input_shape, nd, "input_shape", minimum=1), \
        int_tuple(kernel_size, nd, "kernel_size", minimum=1)


def conv_output_shape(input_shape, kernel_size, *, stride=1, padding=0, dilation=1):
    """Spatial output size of ``conv``: ``o = ⌊(i + p_b + p_a − d·(k − 1) − 1) / s⌋ + 1`` per dim.

    >>> import convmm
    >>> convmm.conv_output_shape((256, 256), 3, stride=3, padding=1, dilation=2)
    (85, 85)
    >>> convmm.conv_output_shape((7,), 2, stride=2, padding="same")
    (4,)
    """
    nd, size, kernel = _shape_args(input_shape, kernel_size)
    return conv_geometry(size, kernel, int_tuple(stride, nd, "stride", minimum=1),
                         padding_spec(padding, nd),
                         int_tuple(dilation, nd, "dilation", minimum=1)).output_size


def conv_transpose_output_shape(input_shape, kernel_size, *, stride=1, padding=0,
                                output_padding=0, dilation=1):
    """Spatial output size of ``conv_transpose``: ``(i − 1)·s − p_b − p_a + d·(k − 1) + 1 + a``.

    >>> import convmm
    >>> convmm.conv_transpose_output_shape((2, 2), 2, stride=2)
    (4, 4)
    """
    nd, size, kernel = _shape_args(input_shape, kernel_size)
    return transpose_geometry(size, kernel, int_tuple(stride, nd, "stride", minimum=1),
                              padding_spec(padding, nd),
                              int_tuple(dilation, nd, "dilation", minimum=1),
                              int_tuple(output_padding, nd, "output_padding", minimum=0),
                              None).input_size


def resolve_padding(input_shape, kernel_size, *, stride=1, padding="same", dilation=1):
    """The ``(before, after)`` pairs a padding spec means for this input.

    >>> import convmm
    >>> convmm.resolve_padding((7, 8), 2, stride=2, padding="same")
    ((0, 1), (0, 0))
    >>> convmm.resolve_padding((5,), 3, padding="full", dilation=2)
    ((4, 4),)
    """
    nd, size, kernel = _shape_args(input_shape, kernel_size)
    return _resolve(padding_spec(padding, nd), size, kernel,
                    int_tuple(stride, nd, "stride", minimum=1),
                    int_tuple(dilation, nd, "dilation", minimum=1))


# --------------------------------------------------------------------------- explain
_EXPLAINED = {
    # name: (the public function, transposed?, the maps it runs)
    "conv": (conv, False, (("conv", "forward"),)),
    "conv_transpose": (conv_transpose, True, (("conv_transpose", "adjoint"),)),
    "conv_backward": (conv_backward, False, (("input", "adjoint"), ("weight", "weight_grad"))),
    "conv_transpose_backward": (conv_transpose_backward, True,
                                (("input", "forward"), ("weight", "weight_grad"))),
}


def explain(function, *args, **kwargs) -> str:
    """Which path ``function(*args, **kwargs)`` runs, with what tiles and workspace; nothing runs.

    ``function`` is ``conv``, ``conv_transpose``, ``conv_backward`` or
    ``conv_transpose_backward`` (or their 1d/2d/3d forms, or a name); the
    arguments are the ones you would pass it.  One line per map the call runs
    (a backward pass: one per gradient asked for, the bias gradient being a sum).

    Examples
    --------
    >>> import numpy as np, convmm
    >>> x, w = np.ones((8, 64, 56, 56), np.float32), np.ones((64, 64, 3, 3), np.float32)
    >>> print(convmm.explain(convmm.conv, x, w, padding=1))   # doctest: +ELLIPSIS
    conv: implicit_gemm (real floating point, enough positions per image: patches read in place): ...
    """
    name = function if isinstance(function, str) else getattr(function, "__name__", None)
    if isinstance(name, str) and name[-2:] in ("1d", "2d", "3d"):
        name = name[:-2]
    if name not in _EXPLAINED:
        raise ValueError(f"function must be one of {sorted(_EXPLAINED)}, got {function!r}")
    public, transposed, maps = _EXPLAINED[name]
    bound = inspect.signature(public).bind(*args, **kwargs)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    needs = _needs(arguments.pop("needs", ()))
    grad_output = arguments.pop("grad_output", None)
    x, weight, bias = arguments.pop("x"), arguments.pop("weight"), arguments.pop("bias", None)
    call = _prepare(x, weight, bias, grad_output, transposed=transposed, **arguments)
    lines = []
    for label, operation in maps:
        if "grad_output" in bound.arguments and label not in needs:
            continue
        lines.append(f"{label}: " + _engine.plan(call, operation).describe().split(": ", 1)[1])
    return "\n".join(lines)
