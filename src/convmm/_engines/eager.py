"""The executor for arrays in memory: each map of a call planned and run at once.

``_api`` composes every public function (forward, transposes, backward passes, bias and
batch axis) over an executor with this interface; ``_chunked.maps`` is the other one,
for Dask arrays.

``prepare(x, weight, bias, grad_output, **keywords)``
    The validated call and its arrays, cast to one dtype and batched:
    ``(call, x, weight, bias, grad_output)``.
``grad_output(call, g, spatial)``
    grad_output checked against the output's shape (``spatial``) and batched like x.
``forward(call, x, weight, main=False)``, ``adjoint(call, y, weight, main=False)``
    C·x and Cᵀ·y without bias; ``main``: the public function's own map, where a method
    named that cannot run it is refused (``policy.main_plan``) rather than replaced.
``weight_grad(call, a, b, weight)``
    Σ_n A·P(b)ᵀ shaped like ``weight`` (no conjugation here).
"""

from __future__ import annotations

from .._core.validation import checked_grad_output, prepare as prepare_call
from . import dispatch, policy


def prepare(x, weight, bias, grad_output, **keywords):
    """The call checked once (``validation.prepare``) and its method against the engines
    its arrays can use (``policy.check_method``)."""
    call = prepare_call(x, weight, bias, grad_output, **keywords)
    policy.check_method(call)
    return call, call.x, call.weight, call.bias, call.grad_output


def grad_output(call, g, spatial):
    """The call's grad_output checked against the output's shape and batched like x
    (``g`` is the one ``prepare`` returned, which the call holds)."""
    return checked_grad_output(call, spatial)


def _plan_for(call, operation, main):
    return (policy.main_plan if main else policy.plan)(call, operation)


def forward(call, x, weight, main=False):
    """C·x without bias, by the call's plan for its forward map."""
    return dispatch.forward(call, _plan_for(call, "forward", main), x, weight)


def adjoint(call, y, weight, main=False):
    """Cᵀ·y without bias, by the call's plan for its adjoint."""
    return dispatch.adjoint(call, _plan_for(call, "adjoint", main), y, weight)


def weight_grad(call, a, b, weight):
    """Σ_n A·P(b)ᵀ shaped like the call's weight (``weight``, which the chunked executor
    needs for its blocks, is the call's here)."""
    return dispatch.weight_grad(call, policy.plan(call, "weight_grad"), a, b)
