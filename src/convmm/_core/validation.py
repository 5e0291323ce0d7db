"""Validation at the public boundary: arrays, dtypes, ranks and keywords checked once.

Every public function, the operator and upsampling call these helpers once and
get back canonical values (a batched input, one promoted dtype, a resolved
``ConvGeometry``, a layout class) or a ``Call`` holding them all; a ValueError
or TypeError names the offending parameter.  Everything below (``algorithms``,
``lowering``, ``index_tables``, the engines) trusts what it is given.

Whether an engine method can run on the arrays' device is the engines' to say
(``_engines.policy.check_method``): this module knows the method names only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import array_api_compat
import numpy as np

from .bounded_cache import BoundedCache
from .geometry import ConvGeometry, conv_geometry, transpose_geometry
from .layout import LAYOUTS, Layout
from .params import (CONV_METHODS, CONV_TRANSPOSE_METHODS, DATA_FORMATS, GRADIENT_NAMES,
                     as_int, choice, did_you_mean, groups_count, int_tuple,
                     padding_spec)
from .params import padding_mode as normalise_padding_mode


def library(a) -> str:
    """The name of the library an array comes from, for messages: its top-level module
    ("numpy", "cupy", "torch", "array_api_strict"), and "jax" for ``jaxlib`` arrays."""
    top = type(a).__module__.split(".")[0]
    return "jax" if top == "jaxlib" else top


def namespace(**arrays):
    """The one array namespace of the named arrays (None entries ignored); a TypeError
    names the array that is not one, or the mix of namespaces."""
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


def all_finite(xp, a) -> bool | None:
    """Whether every value of ``a`` is finite: True or False, or None where the values
    are not known at call time (a Dask array, a JAX array traced under ``jax.jit``).

    One sum over ``a``: any inf or NaN makes it non-finite; finite values whose sum
    overflows answer False too (the callers then take their exact, slower path)."""
    if array_api_compat.is_dask_array(a):
        return None
    total = xp.sum(a)
    if library(a) == "jax":
        import jax

        if isinstance(total, jax.core.Tracer):
            return None
    return bool(xp.all(xp.isfinite(total)))


def check_in_memory(a, name, why):
    """A TypeError naming ``name`` where ``a`` is a Dask array: ``why`` says what needs
    the whole array in memory."""
    if array_api_compat.is_dask_array(a):
        raise TypeError(f"{name} must be an array held in memory (NumPy, CuPy, ...), got a "
                        f"Dask array: {why}; pass {name}.compute()")


def check_dtype(xp, a, name):
    """A TypeError unless ``a`` is float32, float64, complex64 or complex128."""
    allowed = (xp.float32, xp.float64, xp.complex64, xp.complex128)
    if a.dtype not in allowed:
        raise TypeError(
            f"{name} has dtype {a.dtype}; convmm computes in float32, float64, complex64 or "
            f"complex128: cast it first, e.g. xp.astype({name}, xp.float32)"
        )


def itemsize(xp, dtype) -> int:
    """Bytes per element of a floating or complex dtype of any namespace."""
    parts = 2 if xp.isdtype(dtype, "complex floating") else 1
    return xp.finfo(dtype).bits // 8 * parts


def common_dtype(xp, **arrays):
    """Check each array's dtype and promote them all as the array API does."""
    present = {name: a for name, a in arrays.items() if a is not None}
    for name, a in present.items():
        check_dtype(xp, a, name)
    dtype = xp.result_type(*(a.dtype for a in present.values()))
    return {name: (a if a is None or a.dtype == dtype else xp.astype(a, dtype))
            for name, a in arrays.items()}


def spatial_rank(weight, expected=None, plain_hint=""):
    """The number of spatial dims the weight's rank fixes (1, 2 or 3; ``expected`` if given).

    ``plain_hint`` ends the message where the weight is a plain 1-d or 2-d array (no
    channel axes): what the caller's user should write instead."""
    nd = weight.ndim - 2
    if expected is not None and nd != expected:
        raise ValueError(
            f"weight must have {expected + 2} dimensions for {expected} spatial dim(s), "
            f"(C_out, C_in/groups, *K), got shape {tuple(weight.shape)}"
        )
    if nd not in (1, 2, 3):
        plain = f"; {plain_hint}" if plain_hint and weight.ndim in (1, 2) else ""
        raise ValueError(
            f"weight must have 3, 4 or 5 dimensions, (C_out, C_in/groups, *K) with 1, 2 or 3 "
            f"spatial dims, got shape {tuple(weight.shape)}{plain}"
        )
    return nd


def plain_array_hint(transposed, padding, padding_mode):
    """What a user holding plain arrays (no batch or channel axes) should call instead of
    ``conv`` or ``conv_transpose`` with these keywords."""
    axes = "or add the batch and channel axes: x[None, None] and weight[None, None]"
    if transposed:
        return ("for plain arrays without channel axes, convmm.convolve(x, weight, 'full') is "
                f"the transposed correlation at stride 1 with zero padding, {axes}")
    modes = {"valid": "valid", "full": "full", "same": "same"}
    mode = modes.get(padding) if isinstance(padding, str) else (
        "valid" if isinstance(padding, int) and not isinstance(padding, bool) and padding == 0
        else None)
    if mode is None:
        return axes.replace("or add", "add", 1)
    boundary = ("" if padding_mode in ("zeros", "constant")
                else f", boundary={padding_mode!r}")
    centring = (" (for even kernel sizes SciPy's 'same' puts the odd padding sample before, "
                "conv's after)" if mode == "same" else "")
    return (f"for plain arrays without channel axes, convmm.correlate(x, weight, "
            f"mode={mode!r}{boundary}) is the SciPy-style call{centring}, {axes}")


def with_batch_axis(xp, x, nd, name, rank_source=""):
    """(x with a batch axis, whether it came with one); ``rank_source`` says where ``nd``
    came from, for the error ("the weight of shape (3, 2, 3)")."""
    if x.ndim == nd + 2:
        return x, True
    if x.ndim == nd + 1:
        return xp.expand_dims(x, axis=0), False
    plain = (f"; a plain array needs a channel axis: {name}[None] (one channel, unbatched)"
             if x.ndim == nd else "")
    raise ValueError(
        f"{name} must have {nd + 2} dimensions (batched) or {nd + 1} (unbatched) for {nd} "
        f"spatial dim(s){f' ({rank_source})' if rank_source else ''}, got shape "
        f"{tuple(x.shape)}{plain}"
    )


def unbatch(a, batched):
    """``a`` without the batch axis ``with_batch_axis`` added (None stays None)."""
    return a if batched or a is None else a[0, ...]


def checked_kernel(kernel, nd, name="weight"):
    """The kernel size as ints, each at least 1, one per spatial dim."""
    if any(k < 1 for k in kernel) or len(kernel) != nd:
        raise ValueError(f"{name} must have a kernel size >= 1 in every spatial dim, got {kernel}")
    return tuple(int(k) for k in kernel)


def output_size_spec(output_size, nd, layout):
    """``conv_transpose``'s ``output_size`` as ``nd`` spatial sizes (or a full shape), or None."""
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


def gradient_needs(needs):
    """``needs`` of the backward passes as a frozenset of ``GRADIENT_NAMES``."""
    if isinstance(needs, str):
        needs = (needs,)
    needs = tuple(needs)
    for name in needs:
        if name not in GRADIENT_NAMES:
            raise ValueError(f"needs must name some of {GRADIENT_NAMES}, got {name!r}"
                             f"{did_you_mean(name, GRADIENT_NAMES)}")
    return frozenset(needs)


@dataclass(frozen=True)
class Call:
    """A validated convolution call: batched input, promoted arrays, resolved geometry."""

    xp: Any
    layout: Layout
    x: Any
    weight: Any
    bias: Any
    geometry: ConvGeometry
    groups: int
    padding_mode: str     # "zeros", "reflect", "replicate", "circular" or "symmetric"
    method: str
    batched: bool
    out_channels: int
    grad_output: Any = None  # the backward passes' ∂L/∂y, promoted like the rest
    # What the call's checks and plans depend on (``prepare``'s cache key), or None: plans
    # are cached under it (``_engines.policy.plan``).  A call derived with other shapes
    # or keywords must carry another signature or None.
    signature: Any = None

    @property
    def n_images(self) -> int:
        """The batch size N (1 for a call without its input)."""
        return self.x.shape[0] if self.x is not None else 1

    @property
    def forward_channels(self) -> tuple[int, int]:
        """(C_in, C_out) of the forward convolution whose maps the call uses (the weight
        is always the forward convolution's)."""
        out_channels, in_per_group, _ = self.layout.weight_parts(self.weight.shape,
                                                                  self.geometry.nd)
        return in_per_group * self.groups, out_channels


CALL_CACHE_SIZE = 256
"""How many call signatures ``prepare`` remembers (least recently used dropped first)."""

_calls = BoundedCache(max_entries=CALL_CACHE_SIZE)   # signature → Call without its arrays


_PLAIN = (int, bool, str, type(None))


def _typed(value):
    """A keyword's value with its type (1, 1.0 and True compare equal but are checked
    differently), nested for tuples; None for a value the checks must see each time."""
    kind = type(value)
    if kind is tuple:
        parts = tuple(_typed(v) for v in value)
        return None if None in parts else parts
    return (kind, value) if kind in _PLAIN else None


def _signature(arrays, keywords):
    """``prepare``'s cache key: NumPy arrays' shapes and dtypes and plain keywords (ints,
    strs, None and tuples of them), or None (another namespace, or another keyword)."""
    shapes = []
    for a in arrays:
        if a is None:
            shapes.append(None)
        elif type(a) is np.ndarray:
            shapes.append((a.shape, a.dtype))
        else:
            return None
    typed = []
    for name, value in keywords.items():
        key = _typed(value)
        if key is None:
            return None
        typed.append((name, key))
    return (tuple(shapes), tuple(typed))


def prepare(x, weight, bias, grad_output, **keywords):
    """A convolution call's arrays and keywords checked once: a ``Call``.

    ``x`` may leave out its batch axis; the arrays must share a namespace and are
    promoted to one float or complex dtype.  Raises TypeError (not an array, mixed
    namespaces, an integer/bool/half dtype) or ValueError naming the parameter.

    NumPy calls are checked once per signature (shapes, dtypes, keywords): a
    repeated call takes its checked values from a cache and only binds its arrays.
    """
    signature = _signature((x, weight, bias, grad_output), keywords)
    if signature is not None:
        template = _calls.get(signature)
        if template is not None:
            return _bind(template, x, weight, bias, grad_output)
    call = _checked(x, weight, bias, grad_output, **keywords)
    if signature is not None:
        template = Call(call.xp, call.layout, None, None, None, call.geometry, call.groups,
                        call.padding_mode, call.method, call.batched, call.out_channels, None,
                        signature)
        _calls.max_entries = CALL_CACHE_SIZE      # the constant, read at every put
        _calls.put(signature, template)
        call = _bind(template, x, weight, bias, grad_output)
    return call


def _bind(template, x, weight, bias, grad_output):
    """The template's checked values with this call's arrays (promoted, batched)."""
    dtype = np.result_type(*(a.dtype for a in (x, weight, bias, grad_output) if a is not None))
    x, weight, bias, grad_output = (a if a is None or a.dtype == dtype else a.astype(dtype)
                                    for a in (x, weight, bias, grad_output))
    if not template.batched:
        x = x[np.newaxis]
    return Call(template.xp, template.layout, x, weight, bias, template.geometry,
                template.groups, template.padding_mode, template.method, template.batched,
                template.out_channels, grad_output, template.signature)


def _checked(x, weight, bias, grad_output, *, transposed, stride, padding, dilation,
             groups, padding_mode, data_format, method, output_padding=0, output_size=None):
    """``prepare`` without its cache: every check."""
    xp = namespace(x=x, weight=weight, bias=bias, grad_output=grad_output)
    arrays = common_dtype(xp, x=x, weight=weight, bias=bias, grad_output=grad_output)
    nd = spatial_rank(arrays["weight"],
                      plain_hint=plain_array_hint(transposed, padding, padding_mode))
    x, batched = with_batch_axis(xp, arrays["x"], nd, "x",
                                 f"as the weight of shape {tuple(arrays['weight'].shape)} has")
    return configure(xp, x, tuple(x.shape), arrays["weight"], arrays["bias"],
                     arrays["grad_output"], batched, "x", transposed=transposed, stride=stride,
                     padding=padding, dilation=dilation, groups=groups,
                     padding_mode=padding_mode, data_format=data_format, method=method,
                     output_padding=output_padding, output_size=output_size)


def configure(xp, x, x_shape, weight, bias, grad_output, batched, x_name, *, transposed, stride,
              padding, dilation, groups, padding_mode, data_format, method, output_padding=0,
              output_size=None):
    """The keywords checked against a batched input shape and the weight: a ``Call``."""
    layout = LAYOUTS[choice(data_format, DATA_FORMATS, "data_format")]
    mode = normalise_padding_mode(padding_mode)
    methods = CONV_TRANSPOSE_METHODS if transposed else CONV_METHODS
    method = choice(method, methods, "method")
    nd = spatial_rank(weight)
    stride = int_tuple(stride, nd, "stride", minimum=1)
    dilation = int_tuple(dilation, nd, "dilation", minimum=1)
    padding = padding_spec(padding, nd)

    # The forward convolution's channels: the weight is always the forward weight.
    fwd_out, fwd_in_per_group, kernel = layout.weight_parts(weight.shape, nd)
    kernel = checked_kernel(kernel, nd)
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
            output_size_spec(output_size, nd, layout), mode)
    else:
        geometry = conv_geometry(spatial, kernel, stride, padding, dilation, mode)
    return Call(xp, layout, x, weight, bias, geometry, groups, mode, method, batched,
                out_channels, grad_output)


def prepare_operator(weight, input_shape, *, stride, padding, dilation, groups, padding_mode,
                     data_format, method="auto"):
    """A ``Call`` without an input, for the explicit operator on one sample of ``input_shape``."""
    check_in_memory(weight, "weight", "the Toeplitz matrix and ConvOperator hold the weight "
                                      "whole (ConvOperator applies to Dask vectors and matrices)")
    xp = namespace(weight=weight)
    check_dtype(xp, weight, "weight")
    nd = spatial_rank(weight, plain_hint="add the channel axes: weight[None, None], and "
                                         "input_shape (1, *S) for one plain channel")
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
    return configure(xp, None, (1, *shape), weight, None, None, True, "input_shape",
                     transposed=False, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, padding_mode=padding_mode, data_format=data_format,
                     method=method)


def checked_grad_output(call, spatial):
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



def lowering_geometry(spatial, kernel_size, nd, stride, padding, dilation, padding_mode,
                      data_format):
    """(layout, padding mode, geometry) of ``im2col`` / ``col2im``'s keywords."""
    layout = LAYOUTS[choice(data_format, DATA_FORMATS, "data_format")]
    mode = normalise_padding_mode(padding_mode)
    geometry = conv_geometry(tuple(spatial), int_tuple(kernel_size, nd, "kernel_size", minimum=1),
                             int_tuple(stride, nd, "stride", minimum=1), padding_spec(padding, nd),
                             int_tuple(dilation, nd, "dilation", minimum=1), mode)
    return layout, mode, geometry


def rank_from(kernel_size, fallback, name, x_shape=None):
    """The spatial rank a size argument fixes: its length, or ``fallback`` for an int
    (then the rank of x, of shape ``x_shape``, less its batch and channel axes: an x of
    the wrong rank is named as the problem)."""
    if isinstance(kernel_size, Sequence) and not isinstance(kernel_size, str):
        nd = len(kernel_size)
    else:
        size = as_int(kernel_size, name)
        nd = fallback
        if x_shape is not None and nd not in (1, 2, 3):
            plain_rank = len(x_shape) if len(x_shape) in (1, 2, 3) else 2
            raise ValueError(
                f"x must be (N, C, *S) or (N, *S, C) with 1, 2 or 3 spatial dims when {name} "
                f"is an int, got shape {tuple(x_shape)}; add the batch and channel axes "
                f"(x[None, None] for one plain image), or the channel axis alone and give "
                f"{name} as a sequence of one entry per spatial dim (x[None] with "
                f"{name}={(size,) * plain_rank})")
    if nd not in (1, 2, 3):
        raise ValueError(f"{name} must describe 1, 2 or 3 spatial dims, got {nd}")
    return nd



def shape_args(input_shape, kernel_size):
    """(nd, input sizes, kernel sizes) of the shape-arithmetic functions' arguments."""
    if not isinstance(input_shape, Sequence) or isinstance(input_shape, str):
        raise TypeError(f"input_shape must be a sequence of spatial sizes, got {input_shape!r}")
    nd = len(input_shape)
    if nd < 1:
        raise ValueError("input_shape must have at least one spatial size")
    return nd, int_tuple(input_shape, nd, "input_shape", minimum=1), \
        int_tuple(kernel_size, nd, "kernel_size", minimum=1)
