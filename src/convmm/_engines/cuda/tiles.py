"""The CUDA engine's part of a plan: its tiles and workspace for one map.

Beside the kernels it sizes for (``kernels.py``, ``gemm.py``): the implicit GEMM runs the
forward map in one kernel; ``tiled_blas`` builds patch tiles of whole images within
``Tunables.cuda_workspace_bytes`` for cuBLAS; ``direct`` runs one thread per output
sample.  A pure function of the validated call, the map and the record of tunables.
"""

from __future__ import annotations

from ..plan import ConvPlan
from ..tunables import Tunables


KERNELS = {
    ("tiled_blas", "forward"): "im2col, cuBLAS",
    ("tiled_blas", "adjoint"): "cuBLAS, col2im",
    ("tiled_blas", "weight_grad"): "im2col, cuBLAS",
    ("implicit_gemm", "forward"): "implicit_conv_kernel",
    ("direct", "forward"): "direct_forward",
    ("direct", "adjoint"): "direct_adjoint",
    ("direct", "weight_grad"): "direct_weight_grad",
}
"""The CUDA kernels each (method, map) runs (``kernels.py``, ``gemm.py``); their tile sizes
are ``kernels.DEFAULT_TILES``, the same for every call."""


def cuda_plan(call, operation, method, reason, rows, positions, patch_bytes, size,
              tuned: Tunables) -> ConvPlan:
    """The CUDA engine's plan: the implicit GEMM's one kernel (the forward map only: the
    capability table has ``tiled_blas`` run its other maps); patch tiles of whole images
    within ``tuned.cuda_workspace_bytes`` for cuBLAS."""
    image = call.geometry.n_positions
    if method == "tiled_blas":
        images = max(1, min(tuned.cuda_workspace_bytes // max(1, rows * image * size),
                            positions // image))
        tile = images * image
        return ConvPlan(method, operation, rows, positions, tile, 1, rows * tile * size,
                        patch_bytes, reason, device="cuda", kernel=KERNELS[method, operation])
    return ConvPlan(method, operation, rows, positions, positions, 1, 0, patch_bytes, reason,
                    device="cuda", kernel=KERNELS[method, operation])
