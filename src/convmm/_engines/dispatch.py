"""Running a validated call: each map by its plan's method, on the engine of the plan's
device or by the array-API algorithms of ``_core``.

``forward``, ``adjoint`` and ``weight_grad`` take a ``ConvPlan`` from
``policy.plan`` and hand the call to ``cpu.engine`` (NumPy), ``cuda.engine``
(CuPy) or ``_core.algorithms`` (every namespace).  ``eager.py`` plans each map and
calls these; ``_api`` composes the public functions (bias, batch axis, gradients).
"""

from __future__ import annotations

import dataclasses

import array_api_compat

from .._core import algorithms, fft
from .._core.params import ENGINE_METHODS
from .._core.validation import all_finite
from .flipped import flipped_call


def _engine(plan):
    """The engine module that runs an engine plan (imported on first use: the kernels'
    modules load with it)."""
    if plan.device == "cuda":
        from .cuda import engine
    else:
        from .cpu import engine
    return engine


def _with(call, weight):
    """The call with another weight (the conjugated one of a gradient), or as it is."""
    if weight is None or weight is call.weight:
        return call
    return dataclasses.replace(call, weight=weight)


def _zeros(call, like, shape):
    return call.xp.zeros(shape, dtype=like.dtype, device=array_api_compat.device(like))


def _transforms(call, plan, like):
    """The FFTs of an "fft" plan: in the arrays' namespace, on the plan's threads."""
    return fft.Transforms(call.xp, like, workers=plan.threads)


def _checked(call, plan, a, b):
    """The plan to run on operands ``a`` and ``b``: an FFT plan that ``auto`` chose gives
    way to its GEMM fallback where an operand is not finite or large enough to overflow
    the transforms (``fft.transformable``); an adjoint run as the flipped forward map
    gives way to its fallback where the weight ``b`` holds an inf or NaN, which would
    meet the zeros the flipped map pads y with (Cᵀ multiplies none)."""
    if plan.fallback is None:
        return plan
    if plan.method == "fft" and not fft.transformable(call.xp, a, b, plan.fft):
        return _checked(call, plan.fallback, a, b)
    if plan.flipped is not None and not all_finite(call.xp, b):
        return plan.fallback
    return plan


def forward(call, plan, x, weight):
    """C·x without bias, by the plan's method (``weight`` stands in for the call's).

    An empty batch gives an empty result here: no engine sees one."""
    if x.shape[0] == 0:
        return _zeros(call, x, call.layout.image_shape(0, call.forward_channels[1],
                                                       call.geometry.output_size))
    weight = call.weight if weight is None else weight
    plan = _checked(call, plan, x, weight)
    if plan.method == "fft":
        return fft.forward(call.xp, _transforms(call, plan, x), x, weight, call.geometry,
                           call.padding_mode, call.groups, call.layout, plan.fft)
    if plan.method in ENGINE_METHODS:
        return _engine(plan).forward(_with(call, weight), plan, x)
    return algorithms.conv_forward(call.xp, x, weight, call.geometry, call.padding_mode,
                                   call.groups, call.layout)


def adjoint(call, plan, y, weight):
    """Cᵀ·y without bias, by the plan's method; at stride 1 the engines run it as the
    forward map of the flipped kernel (``flipped.flipped_call``)."""
    if y.shape[0] == 0:
        return _zeros(call, y, call.layout.image_shape(0, call.forward_channels[0],
                                                       call.geometry.input_size))
    plan = _checked(call, plan, y, weight)
    if plan.flipped is not None:
        return forward(flipped_call(call, weight), plan.flipped, y, None)
    if plan.method == "fft":
        return fft.adjoint(call.xp, _transforms(call, plan, y), y, weight, call.geometry,
                           call.padding_mode, call.groups, call.layout, plan.fft)
    if plan.method in ENGINE_METHODS:
        return _engine(plan).adjoint(_with(call, weight), plan, y)
    return algorithms.conv_adjoint(call.xp, y, weight, call.geometry, call.padding_mode,
                                   call.groups, call.layout, plan.method)


def weight_grad(call, plan, a, b):
    """Σ_n A·P(b)ᵀ shaped like the weight, by the plan's method (no conjugation here);
    zeros for an empty batch."""
    if a.shape[0] == 0:
        dtype = call.xp.result_type(a.dtype, b.dtype)
        return call.xp.zeros(call.weight.shape, dtype=dtype, device=array_api_compat.device(a))
    plan = _checked(call, plan, a, b)
    if plan.method == "fft":
        return fft.weight_gradient(call.xp, _transforms(call, plan, a), a, b, call.geometry,
                                   call.padding_mode, call.groups, call.layout, plan.fft)
    if plan.method in ENGINE_METHODS:
        return _engine(plan).weight_grad(call, plan, a, b)
    return algorithms.weight_gradient_of(call.xp, a, b, call.weight.shape, call.geometry,
                                         call.padding_mode, call.groups, call.layout)
