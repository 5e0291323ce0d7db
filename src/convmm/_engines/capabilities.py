"""What runs where: every method × array namespace × map, and why not.

One table answers, for a method asked for by name, a kind of array and one of the three
maps (forward, adjoint, weight gradient), whether that method runs it, and if not,
what runs instead or why the call is refused.  The refusals (``policy.check_method``),
the substitutions a plan makes and the reasons ``explain`` prints, the docs' table
(``markdown_table``) and the tests' choice of methods per backend all read it.

Two things it cannot know from the kinds alone are checked where they are decided:
whether the CUDA engine can run on this machine (``cuda.engine.unavailable_reason``),
and the geometries Winograd's transforms serve (``_core.winograd.applies``; its
stride-1 adjoints, ``flipped.flippable``).
"""

from __future__ import annotations

from dataclasses import dataclass

import array_api_compat

from .._core.params import CONV_TRANSPOSE_METHODS
from .plan import OPERATIONS

NAMESPACES = ("numpy", "cupy", "array API with fft", "array API")
"""The kinds of arrays: NumPy's (the CPU engine), CuPy's (the CUDA engine), and any other
array-API namespace (PyTorch, JAX, array_api_strict, …) with or without the array API's
``fft`` extension, on which the array-API algorithms run."""

METHODS = CONV_TRANSPOSE_METHODS
"""Every method name, conv's and conv_transpose's (``zero_insertion`` is the latter's)."""


@dataclass(frozen=True)
class Capability:
    """Whether a method runs one map on one kind of array.

    ``runs``: it does.  Otherwise ``instead`` names the method that runs the map in its
    place ("auto": ``auto``'s choice), or is empty where a call asking for the method is
    refused with a ValueError; ``why`` says why, in a user's words.
    """

    runs: bool
    instead: str = ""
    why: str = ""


RUNS = Capability(True)


def _capability(method: str, namespace: str, operation: str) -> Capability:
    """The table's rule for one cell."""
    engine = namespace in ("numpy", "cupy")
    if method in ("auto", "im2col"):
        return RUNS
    if method == "zero_insertion":
        return RUNS if operation == "adjoint" else Capability(
            False, "im2col", "zero insertion serves the adjoint only")
    if method == "fft":
        return RUNS if namespace != "array API" else Capability(
            False, why="method='fft' needs the array API's fft extension, which this "
                       "namespace lacks; use 'auto'")
    if method == "winograd":
        if namespace != "numpy":
            return Capability(False, why="method='winograd' runs on NumPy arrays (the CPU "
                                         "engine) only; use 'auto' or 'im2col'")
        if operation == "weight_grad":
            return Capability(False, "auto", "it runs forward maps and stride-1 adjoints, "
                                             "not weight gradients")
        return RUNS
    # tiled_blas, implicit_gemm, direct: the engines'
    if not engine:
        return Capability(False, why=f"method={method!r} is the CPU engine's (NumPy) and the "
                                     f"CUDA engine's (CuPy); use 'auto' or 'im2col'")
    if method == "implicit_gemm" and operation == "adjoint":
        why = ("implicit_gemm runs the forward map and the weight gradient" if
               namespace == "numpy" else "on the GPU implicit_gemm runs the forward map only")
        return Capability(False, "tiled_blas", why)
    if method == "implicit_gemm" and namespace == "cupy" and operation == "weight_grad":
        return Capability(False, "tiled_blas", "on the GPU implicit_gemm runs the forward map only")
    return RUNS


TABLE = {(method, namespace, operation): _capability(method, namespace, operation)
         for method in METHODS for namespace in NAMESPACES for operation in OPERATIONS}
"""``{(method, namespace, operation): Capability}`` for every cell."""


def capability(method: str, namespace: str, operation: str) -> Capability:
    """The table's cell (``NAMESPACES``' names, ``plan.OPERATIONS``' maps)."""
    return TABLE[method, namespace, operation]


def namespace_of(xp, array) -> str:
    """The kind of ``array`` (of namespace ``xp``) in ``NAMESPACES``."""
    if array_api_compat.is_numpy_array(array):
        return "numpy"
    if array_api_compat.is_cupy_array(array):
        return "cupy"
    return "array API with fft" if hasattr(xp, "fft") else "array API"


def refusal(method: str, namespace: str) -> str:
    """Why a call asking for ``method`` on this kind of array is refused ("" where it is
    not): a method that runs none of its maps there and names nothing to run instead."""
    cells = [capability(method, namespace, operation) for operation in OPERATIONS]
    if any(cell.runs or cell.instead for cell in cells):
        return ""
    return cells[0].why


def methods(namespace: str, operation: str = "forward", *, transposed: bool = False) -> tuple:
    """The methods a call may name on this kind of array for this map, in ``METHODS``'
    order: those that run it or name what runs instead (conv's names, or
    conv_transpose's where ``transposed``)."""
    names = METHODS if transposed else tuple(m for m in METHODS if m != "zero_insertion")
    return tuple(m for m in names if not refusal(m, namespace)
                 and (capability(m, namespace, operation).runs
                      or capability(m, namespace, operation).instead))


def markdown_table() -> str:
    """The table as the docs print it: a row per method, a column per kind of array, each
    cell the maps that run ("all", or their names), or "no"."""
    short = {"forward": "forward", "adjoint": "adjoint", "weight_grad": "weight gradient"}
    lines = ["| method | " + " | ".join(NAMESPACES) + " |",
             "|---" * (len(NAMESPACES) + 1) + "|"]
    for method in METHODS:
        cells = []
        for namespace in NAMESPACES:
            running = [short[op] for op in OPERATIONS
                       if capability(method, namespace, op).runs]
            cells.append("all" if len(running) == len(OPERATIONS) else
                         ", ".join(running) if running else "no")
        lines.append(f"| `{method}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)
