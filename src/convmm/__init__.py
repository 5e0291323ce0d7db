"""convmm: convolution, transposed convolution and their gradients as matrix multiplication.

One implementation written against the Python array API standard runs on any
namespace that array-api-compat recognises (NumPy, CuPy, PyTorch, JAX, array_api_strict);
results come back in the input's namespace and on its device.
"""

from ._api import (
    ConvGrads,
    col2im,
    conv,
    conv1d,
    conv2d,
    conv3d,
    conv_backward,
    conv_output_shape,
    conv_transpose,
    conv_transpose1d,
    conv_transpose2d,
    conv_transpose3d,
    conv_transpose_backward,
    conv_transpose_output_shape,
    convolve,
    correlate,
    explain,
    im2col,
    resolve_padding,
)
from ._operator.bilinear import bilinear_kernel, upsample_bilinear
from ._operator.conv_operator import ConvOperator
from ._operator.toeplitz import toeplitz
from ._engines.cpu.threads import get_num_threads, set_num_threads
from . import reference

# Numba itself (no kernel: nothing compiles or loads here) is imported with the package
# rather than on the first engine call: it takes about 0.15 s, which a first call would
# otherwise add to its loading of the cached kernels (issue 4: import under 0.5 s, a
# first call under 0.3 s more than a later one).
import numba as _numba  # noqa: E402,F401

__version__ = "0.1.0"


def __getattr__(name: str):
    """``convmm.plot``, imported on first use: matplotlib is an optional extra, and importing
    convmm never imports it."""
    if name == "plot":
        import importlib

        return importlib.import_module(".plot", __name__)
    raise AttributeError(f"module 'convmm' has no attribute {name!r}")

__all__ = [
    "ConvGrads",
    "ConvOperator",
    "bilinear_kernel",
    "col2im",
    "conv",
    "conv1d",
    "conv2d",
    "conv3d",
    "conv_backward",
    "conv_output_shape",
    "conv_transpose",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "conv_transpose_backward",
    "conv_transpose_output_shape",
    "convolve",
    "correlate",
    "explain",
    "get_num_threads",
    "im2col",
    "reference",
    "resolve_padding",
    "set_num_threads",
    "toeplitz",
    "upsample_bilinear",
]
